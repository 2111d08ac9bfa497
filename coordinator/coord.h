/* coord.h: the coordinator — the job's single brain and single writer.
 *
 * Binds a ZeroMQ ROUTER (loopback by default; port 0 = ephemeral, the bound
 * endpoint is reported), answers HELLO with WELCOME (the effective job config),
 * hands shards to workers under a credit limit, tracks leases and heartbeats
 * (coordinator/lease.h), commits each shard's first result through the job
 * plug-in, flushes the commit log periodically, prints progress, and ends with
 * a JSON summary. Optional CURVE with a ZAP allowlist of worker public keys.
 *
 * Shutdown: wisp_coord_request_stop() (async-signal-safe: it only sets a flag)
 * stops leasing, commits what has arrived, tells workers to exit and leaves
 * the plug-in's resumable state. */
#ifndef WISP_COORD_H
#define WISP_COORD_H

#include <signal.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "base/err.h"
#include "dist/job.h"
#include "dist/proto.h"
#include "formats/jobcfg.h"

/* File descriptors kept for the job's own files (output, journal, manifest, model),
 * ZeroMQ's internal descriptors and the logs; the rest is for worker connections. */
#define WISP_COORD_FD_RESERVE 64

typedef struct {
    int resume;                  /* 1: continue from an earlier run's committed state (default) */
    const char *endpoint_file;   /* when set, the bound endpoint is written there atomically */
    void *zmq_ctx;               /* shared ZeroMQ context (inproc tests/bench), NULL = own */
    volatile sig_atomic_t *stop; /* external stop flag (signal handler), may be NULL */
    int progress_tty;  /* 1 redraw a progress line, 0 key=value log lines, -1 auto (isatty) */
    FILE *summary_out; /* where the final JSON summary goes (NULL: nowhere) */
    double linger;     /* s to keep answering late workers with STOP after the end (default 1) */
    int max_workers;   /* connected workers accepted at once; 0 (default) = what the file
                          descriptor limit allows (see wisp_coord_new) */
    /* Tests and fuzzing: when send is set, no socket is created or bound, every
     * outgoing message goes to send(send_ctx, routing id, message) (nonzero = the
     * peer is unreachable) and frames come in through wisp_coord_handle(). */
    int (*send)(void *send_ctx, const void *id, size_t id_len, const wisp_msg_t *m);
    void *send_ctx;
    const wisp_job_ops_t *ops; /* job plug-in to use instead of cfg->kind's (tests), or NULL */
} wisp_coord_params_t;

typedef struct wisp_coord wisp_coord_t;

void wisp_coord_default_params(wisp_coord_params_t *p);

/* Opens the job (manifest, output/resume) and binds the socket. NULL on failure
 * with err filled. cfg must outlive the coordinator.
 * Start-up order: a stale params->endpoint_file is removed first (so no worker reads
 * an earlier run's endpoint while this one loads and replays), the endpoint file is
 * written once bound. Every connected worker costs this process one file descriptor:
 * the soft RLIMIT_NOFILE is raised to the hard limit (process-wide, logged) and the
 * coordinator accepts at most limit - WISP_COORD_FD_RESERVE workers at once; a HELLO
 * beyond that is refused with a logged reason and STOP (WISP_STOP_FULL), counted as
 * workers_refused in the summary, instead of ZeroMQ failing to accept silently. */
wisp_coord_t *wisp_coord_new(const wisp_jobcfg_t *cfg, const wisp_coord_params_t *params,
                             wisp_error_t *err);
/* The bound endpoint, e.g. "tcp://127.0.0.1:45123". */
const char *wisp_coord_endpoint(const wisp_coord_t *self);
/* Runs until every shard is committed (0), a stop request (WISP_ERR_INTERRUPTED,
 * state left resumable) or a fatal error. */
int wisp_coord_run(wisp_coord_t *self, wisp_error_t *err);
/* Handles one frame received from routing id `id` at time `now` as the run loop
 * does (the socket-less entry point of tests and fuzzing). A malformed or
 * unexpected frame is dropped and counted; the return value is nonzero only for
 * a fatal error (the plug-in could not commit, out of memory). */
int wisp_coord_handle(wisp_coord_t *self, const void *id, size_t id_len, const void *frame,
                      size_t len, double now, wisp_error_t *err);
/* One periodic tick at time now: expires silent workers (their shards re-queued),
 * starts a complete training world, fills credit. Nonzero only on a fatal error. */
int wisp_coord_tick(wisp_coord_t *self, double now, wisp_error_t *err);
/* What the summary reports about the message traffic, readable at any time. */
typedef struct {
    uint64_t dropped;      /* frames refused (malformed, unexpected, from unknown slots) */
    uint64_t duplicates;   /* late copies of committed results */
    uint64_t workers_seen; /* HELLOs accepted */
    uint64_t workers_lost; /* slots dropped for silence or unreachability */
    uint64_t requeued;     /* shards put back in the queue (shards_requeued) */
    uint64_t results;      /* results or step reports committed */
    int live_workers;
    int active_world;     /* step jobs: 1 while a complete world runs steps */
    uint64_t early_bytes; /* frame bytes kept while the job opened (bounded, coord.c) */
} wisp_coord_counters_t;

void wisp_coord_counters(const wisp_coord_t *self, wisp_coord_counters_t *out);

/* Async-signal-safe and thread-safe stop request. */
void wisp_coord_request_stop(wisp_coord_t *self);
/* The final summary (owned by the coordinator; valid after run). */
const cJSON *wisp_coord_summary(const wisp_coord_t *self);
void wisp_coord_destroy(wisp_coord_t **self);

#endif
