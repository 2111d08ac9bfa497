/* job.h: the job-kind plug-in interface shared by the coordinator and the workers.
 *
 * A job kind (null, classify, train) is a table of callbacks. The runtime
 * (coordinator/, worker/) owns sockets, leases, heartbeats and shutdown; the
 * plug-in owns meaning: what an item is, what a worker computes for a shard,
 * and how the coordinator commits results (the single writer of the output).
 *
 * Map jobs (null, classify): the coordinator asks coord_open for the item
 * list (count, per-item seconds when cheap to know, items already committed
 * by an earlier run), cuts shards of consecutive not-done items, and for each
 * shard sends coord_payload's bytes; a worker runs worker_run on it and the
 * coordinator passes the reply to coord_commit exactly once per shard (first
 * result wins; duplicates never reach the plug-in). coord_flush makes committed
 * results durable (commit log); coord_finish(complete=1) writes the final
 * output, coord_finish(complete=0) leaves a state a rerun resumes from.
 *
 * Step jobs (train) add the step callbacks below: the coordinator drives
 * steps, every worker rank takes part in each one (collectives over MPI). */
#ifndef WISP_JOB_H
#define WISP_JOB_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/err.h"
#include "formats/jobcfg.h"
#include "dist/proto.h"

#define WISP_JOB_MAX_STAGES WISP_PROTO_MAX_STAGES

/* What a worker's plug-in knows about its process. */
typedef struct {
    int rank;       /* MPI rank (0 without MPI) */
    int size;       /* MPI world size (1 without MPI) */
    void *mpi_comm; /* pointer to the MPI_Comm of the worker ranks, NULL without MPI */
    int threads;    /* BLAS threads this rank may use */
    /* Step jobs: called between pieces of a long step (every micro-batch of a
     * validation pass, ...) so the runtime can send heartbeats and read STOP; it
     * returns nonzero when the worker has been asked to stop. NULL fn: none. */
    struct {
        int (*fn)(void *ctx, uint32_t items_done);
        void *ctx;
    } heartbeat;
} wisp_job_env_t;

/* The coordinator's view of a map job's items, filled by coord_open. */
typedef struct {
    size_t n_items;       /* items, ids 0..n_items-1 in manifest order */
    double *seconds;      /* n_items audio durations (malloc'd), or NULL when unknown */
    uint8_t *done;        /* n_items flags, 1 = committed by an earlier run (malloc'd), or NULL */
    size_t n_errors_done; /* error records among the done items: the summary's "errors"
                             and the exit status cover the whole output, not one run */
} wisp_job_plan_t;

void wisp_job_plan_free(wisp_job_plan_t *plan);

/* Called by worker_run between items; returns nonzero when the worker must stop
 * (then worker_run returns WISP_ERR_INTERRUPTED). */
typedef struct {
    int (*fn)(void *ctx, uint32_t items_done);
    void *ctx;
} wisp_job_progress_t;

typedef struct {
    const char *name;                            /* config "kind" */
    const char *stages[WISP_JOB_MAX_STAGES + 1]; /* stage names for timings, NULL-terminated */
    int steps;                                   /* 0 map job, 1 step job (train) */

    /* ---- coordinator side ---- */
    /* Opens the job: reads the manifest, opens/resumes the output (resume=0
     * discards earlier state), fills plan. */
    int (*coord_open)(void **state, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                      wisp_error_t *err);
    /* Bytes that tell a worker what items first..first+count-1 are. */
    int (*coord_payload)(void *state, uint64_t first, uint32_t count, wisp_wbuf_t *out,
                         wisp_error_t *err);
    /* Validates and stores one shard's results (the bytes worker_run wrote). A
     * malformed payload returns WISP_ERR_FORMAT and changes nothing. *n_errors
     * counts items recorded as errors; *audio_s is the audio seconds the shard
     * really held (decoded durations), or negative when the plan's figure stands. */
    int (*coord_commit)(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                        uint32_t *n_errors, double *audio_s, wisp_error_t *err);
    /* Makes everything committed so far durable. */
    int (*coord_flush)(void *state, wisp_error_t *err);
    /* complete=1: writes the final output; 0: leaves resumable state. Adds
     * job-specific fields (accuracy, ...) to summary. */
    int (*coord_finish)(void *state, int complete, cJSON *summary, wisp_error_t *err);
    void (*coord_close)(void **state);

    /* ---- worker side ---- */
    int (*worker_open)(void **state, const wisp_jobcfg_t *cfg, const wisp_job_env_t *env,
                       wisp_error_t *err);
    /* Runs one shard. stage_seconds[i] += time spent in stage i. Per-item
     * failures are results (error records), not errors: the return value is
     * nonzero only when the worker cannot go on. */
    int (*worker_run)(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                      wisp_wbuf_t *out, double *stage_seconds, const wisp_job_progress_t *progress,
                      wisp_error_t *err);
    void (*worker_close)(void **state);

    /* ---- step jobs (steps = 1) ----
     * The coordinator waits for every rank of one mpirun world (HELLO carries
     * the world id and size), each rank opens the job (loading the newest
     * checkpoint when there is one) and reports READY (STEP_DONE with aux
     * WISP_STEP_READY and worker_ready's payload). With the world complete,
     * coord_resume gets rank 0's READY payload (where the run continues); then
     * coord_step issues steps, each with one payload per rank, up to `credit`
     * ahead; every rank runs worker_step (collectives inside) and rank 0's
     * STEP_DONE goes to coord_step_done. If any rank of the world is lost the
     * world is dropped (Open MPI ends it anyway); a relaunched world resumes
     * from the newest checkpoint through the same READY/coord_resume path. */
    int (*coord_resume)(void *state, const uint8_t *ready, size_t n, wisp_error_t *err);
    /* Fills out[0..size), step and flags; returns 1 when a step was issued, 0
     * when the run is complete (after the step flagged WISP_STEP_F_FINAL). */
    int (*coord_step)(void *state, int size, uint64_t *step, uint32_t *flags, wisp_wbuf_t *out,
                      wisp_error_t *err);
    int (*coord_step_done)(void *state, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                           wisp_error_t *err);
    /* Progress figures: steps done and total. */
    void (*coord_progress)(void *state, long *done, long *total, double *loss);
    /* Optional: more of the progress line ("val_acc 0.83  failed 2"), NUL-terminated. */
    void (*coord_progress_note)(void *state, char *buf, size_t n);
    int (*worker_ready)(void *state, wisp_wbuf_t *out, wisp_error_t *err);
    int (*worker_step)(void *state, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                       wisp_wbuf_t *out, uint32_t *out_flags, wisp_error_t *err);
} wisp_job_ops_t;

#define WISP_STEP_READY        0x100u /* STEP_DONE aux: set up, payload = resume point */
#define WISP_STEP_CHECKPOINTED 0x1u   /* STEP_DONE aux: rank 0 wrote a checkpoint after the step */
#define WISP_STEP_F_CHECKPOINT 0x1u   /* STEP aux: checkpoint after this step */
#define WISP_STEP_F_EVAL       0x2u   /* STEP aux: evaluate the validation set before the step */
#define WISP_STEP_F_FINAL      0x4u   /* STEP aux: no training; final eval, write the outputs */

/* The plug-in for a config "kind", or NULL. */
const wisp_job_ops_t *wisp_job_find(const char *kind);

extern const wisp_job_ops_t wisp_job_null;
extern const wisp_job_ops_t wisp_job_classify;
extern const wisp_job_ops_t wisp_job_train;

#endif
