/* worker.h: one worker process's loop (a DEALER talking to the coordinator).
 *
 * Connects, announces itself (HELLO with rank, size, host, pid), receives the
 * job config (WELCOME), then pulls shards: the coordinator pushes up to
 * `credit` of them; the worker runs each through the job plug-in and returns a
 * RESULT. Heartbeats go out between items and while idle, so a stuck worker
 * falls silent and loses its leases. STOP ends the loop (aux 2: the coordinator
 * declared this worker dead; it rejoins with a new HELLO). A coordinator silent
 * for longer than the timeout ends the loop with WISP_ERR_NET.
 *
 * MPI is the caller's business (worker_main.c): the loop itself needs none,
 * so tests and benchmarks run workers as threads. */
#ifndef WISP_WORKER_H
#define WISP_WORKER_H

#include <signal.h>
#include <stdint.h>

#include "base/err.h"
#include "dist/job.h"
#include "dist/proto.h"

typedef struct {
    const char *endpoint;            /* coordinator, e.g. tcp://127.0.0.1:45123 */
    void *zmq_ctx;                   /* shared context (inproc), NULL = own */
    int rank, size;                  /* MPI rank and world size (0, 1 without MPI) */
    void *mpi_comm;                  /* pointer to the workers' MPI_Comm, NULL without MPI */
    const char *curve_server_public; /* coordinator public key file; NULL = no CURVE */
    const char *curve_key;           /* PREFIX of this worker's PREFIX.public / PREFIX.secret */
    double timeout;                  /* s of coordinator silence before giving up (default 60) */
    volatile sig_atomic_t *stop;     /* external stop flag (signal handler), may be NULL */
    int set_blas_threads;            /* 1: apply cluster.threads_per_worker to OpenBLAS */
    uint64_t world; /* id shared by the ranks of one mpirun (step jobs group by it) */
    /* Tests and fuzzing (wisp_worker_feed): every outgoing message goes to
     * send(send_ctx, m) instead of a socket; nonzero means it could not be sent. */
    int (*send)(void *send_ctx, const wisp_msg_t *m);
    void *send_ctx;
    const wisp_job_ops_t *ops; /* job plug-in instead of the config kind's (tests), or NULL */
} wisp_worker_params_t;

typedef struct {
    long shards;   /* shards completed */
    long items;    /* items completed */
    double busy_s; /* time inside the job plug-in */
    int step_job;  /* the job was a step job: its ranks share collectives, so a rank that
                      leaves early must take the world down (MPI_Abort), never Finalize */
} wisp_worker_stats_t;

void wisp_worker_default_params(wisp_worker_params_t *p);

/* Runs until STOP. 0 when the job is complete, WISP_ERR_INTERRUPTED when
 * stopped early (signal or coordinator shutdown), another code on failure. */
int wisp_worker_run(const wisp_worker_params_t *params, wisp_worker_stats_t *stats,
                    wisp_error_t *err);

/* One received frame (bytes as they came off the socket). */
typedef struct {
    const void *data;
    size_t len;
} wisp_worker_frame_t;

/* The same loop without a socket (tests, fuzzing): sends HELLO, then handles
 * frames[0..n) in order as if received, running every queued shard or step
 * after each frame as the loop does, until the frames run out or a STOP; then
 * leaves as wisp_worker_run does (BYE). params->send is required. Returns as
 * wisp_worker_run (WISP_ERR_INTERRUPTED when the frames end before a STOP). */
int wisp_worker_feed(const wisp_worker_params_t *params, const wisp_worker_frame_t *frames,
                     size_t n, wisp_worker_stats_t *stats, wisp_error_t *err);

#endif
