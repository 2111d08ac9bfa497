/* job_train.c: data-parallel adapter training over MPI ranks (a step job).
 *
 * Coordinator: loads the training manifest (labeled items; classes from the
 * given head or from the manifest, as `wisp train` does) and schedules every
 * optimizer step's global batch exactly like the local loop
 * (wisp_trainer_run): per-epoch order wisp_trainer_epoch_order(seed, epoch),
 * `global_batch` items per step (a partial last batch as is), evaluation at
 * each epoch end and at the end, checkpoints every N steps and at the end.
 * Each step's batch is cut into one contiguous slice per rank. The coordinator
 * writes OUTDIR/metrics.jsonl from rank 0's step reports.
 *
 * Workers: every rank builds the same trainer (same seed: identical initial
 * adapter and head, and rank 0's parameters are broadcast anyway), loads the
 * newest checkpoint when there is one, and per step computes its slice's
 * gradients; the trainer's reduce hook sums them over the ranks with one
 * MPI_Allreduce on the flat gradient buffer (plus the loss/weight sums), so
 * every rank applies the same AdamW update. Optional fixed-order reduction:
 * MPI_Allgather of the per-rank buffers, summed in rank order (bitwise
 * reproducible independent of MPI's reduction algorithm). Every
 * checksum_every steps the ranks compare a hash of their parameters. Rank 0
 * writes checkpoints and the final adapter/head directories.
 *
 * The schedule is train/schedule.h's, the one the local loop walks. A batch with no
 * usable clip is a skipped step (not an error); a whole epoch's worth of skipped
 * steps in a row ends the job with an error naming the manifest and the first
 * failures. The workers call the runtime's heartbeat between the pieces of a step
 * (each micro-batch of an evaluation), so a long step is not taken for a dead rank.
 *
 * STEP payload (per rank): u64 epoch, u64 pos_after, u32 n, n x u32 item ids.
 * READY payload: u64 step, u64 epoch, u64 pos (the checkpoint loaded, or 0s), u32 len,
 *   len bytes: the metrics lines written ahead into that checkpoint (metrics.h).
 * STEP_DONE payload (rank 0): u32 flags (the STEP's, | S_DONE_SKIPPED, | S_DONE_STOP
 *   when early stopping ends the run), u64 epoch, the trainer stats, val_loss, val_acc
 *   (NaN when not evaluated), u64 eval epoch, then u32 n failures of all ranks, each
 *   u32 split (0 train, 1 validation), u32 item id, u32 len, len bytes of reason. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/adamw.h"
#include "nn/adapter_config.h"
#include "formats/config.h"
#include "dist/job.h"
#include "base/log.h"
#include "formats/manifest.h"
#include "train/data.h"
#include "train/trainer.h"
#include "base/util.h"
#include "train/metrics.h"
#include "train/schedule.h"

#define S_DONE_SKIPPED    0x100u /* STEP_DONE flags: no usable clip, no update */
#define S_DONE_STOP       0x200u /* STEP_DONE flags: early stopping: end after this step */
#define S_READY_AHEAD_MAX ((uint32_t)64 << 20) /* metrics bytes in a READY */
#define S_FAIL_MAX        ((uint32_t)1 << 20)  /* failure records in a STEP_DONE */

/* ---- shared by both sides: the data, as `wisp train` reads it (train/data.h) ---- */

static int s_data_load(wisp_train_data_t *d, const wisp_jobcfg_t *cfg, wisp_error_t *err)
{
    wisp_train_data_opts_t o = {.head_dir = cfg->head,
                                .train = cfg->train_manifest,
                                .val = cfg->val_manifest,
                                .classes = cfg->train_classes,
                                .unlabeled = cfg->train_unlabeled};
    return wisp_train_data_load(d, &o, err);
}

static long s_ckpt_every(const wisp_jobcfg_t *cfg, int n)
{
    long per_epoch = (n + cfg->train_global_batch - 1) / cfg->train_global_batch;
    return cfg->train_checkpoint_every > 0 ? cfg->train_checkpoint_every : per_epoch;
}

static int s_sched_init(wisp_sched_t *sc, const wisp_jobcfg_t *cfg, int n, wisp_error_t *err)
{
    return wisp_sched_init(sc, n, cfg->train_global_batch, cfg->train_epochs,
                           cfg->train_max_steps > 0 ? (long)cfg->train_max_steps : -1,
                           s_ckpt_every(cfg, n), (uint64_t)cfg->seed, err);
}

/* ---- coordinator ---- */

typedef struct {
    const wisp_jobcfg_t *cfg;
    wisp_train_data_t d;
    wisp_sched_t sched;
    long done_steps; /* steps reported by rank 0 (skipped ones included) */
    long skipped, skipped_row;
    double last_loss, val_acc;
    long last_ckpt;
    wisp_trainer_failset_t fails, vfails;
    wisp_train_metrics_t metrics;
    char metrics_path[WISP_JOBCFG_PATH_MAX + 32];
} s_coord_t;

static void s_coord_close(void **state)
{
    s_coord_t *s = state ? *state : NULL;
    if (!s)
        return;
    wisp_sched_free(&s->sched);
    wisp_trainer_failset_free(&s->fails);
    wisp_trainer_failset_free(&s->vfails);
    wisp_train_metrics_close(&s->metrics);
    wisp_train_data_free(&s->d);
    free(s);
    *state = NULL;
}

static int s_coord_open(void **state, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                        wisp_error_t *err)
{
    /* Resuming is the workers' (they load the newest checkpoint, see coord_resume);
     * a fresh start (--fresh) moves the earlier run out of their way first, into
     * OUTDIR/previous/, which rank 0 removes after the new run's first checkpoint. */
    memset(plan, 0, sizeof *plan);
    s_coord_t *s = calloc(1, sizeof *s);
    if (!s)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    s->cfg = cfg;
    s->val_acc = NAN;
    int rc = s_data_load(&s->d, cfg, err);
    if (rc == 0)
        rc = wisp_mkdir_p(cfg->output, err);
    if (rc == 0 && !resume)
        rc = wisp_trainer_start_over(cfg->output, err);
    if (rc == 0)
        rc = s_sched_init(&s->sched, cfg, s->d.n, err);
    if (rc == 0 && (wisp_trainer_failset_init(&s->fails, s->d.items, s->d.n) ||
                    wisp_trainer_failset_init(&s->vfails, s->d.vitems, s->d.nv)))
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    if (rc) {
        s_coord_close((void **)&s);
        return rc;
    }
    snprintf(s->metrics_path, sizeof s->metrics_path, "%s/metrics.jsonl", cfg->output);
    char what[256];
    wisp_train_data_describe(&s->d, what, sizeof what);
    WISP_LOGI("train: %s; %ld steps of %d", what, s->sched.total, cfg->train_global_batch);
    *state = s;
    return WISP_OK;
}

static int s_coord_resume(void *state, const uint8_t *p, size_t n, wisp_error_t *err)
{
    s_coord_t *s = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    uint64_t step = wisp_rbuf_u64(&r), epoch = wisp_rbuf_u64(&r), pos = wisp_rbuf_u64(&r);
    uint32_t ahead_len = wisp_rbuf_u32(&r);
    if (r.failed || step > (uint64_t)s->sched.total || pos > (uint64_t)s->d.n ||
        epoch > (uint64_t)s->sched.total + 1 || ahead_len > S_READY_AHEAD_MAX ||
        ahead_len != r.left)
        return wisp_error_set(err, WISP_ERR_FORMAT, "train: READY with an impossible resume point");
    const char *ahead = (const char *)p + (n - ahead_len);
    wisp_sched_seek(&s->sched, (long)step, (long)epoch, (long)pos);
    s->done_steps = (long)step;
    s->last_ckpt = (long)step;
    s->skipped_row = 0;
    if (step)
        WISP_LOGI("train: the workers resume from the checkpoint of step %ld (epoch %ld, item %ld)",
                  (long)step, (long)epoch, (long)pos);
    wisp_train_metrics_close(&s->metrics);
    return wisp_train_metrics_open(&s->metrics, s->metrics_path, (long)step,
                                   ahead_len ? ahead : NULL, ahead_len, err);
}

static void s_slice(wisp_wbuf_t *out, int size, long epoch, long pos_after, const int *ids, int k)
{
    for (int r = 0; r < size; r++) {
        int b = (int)((long)k * r / size), e = (int)((long)k * (r + 1) / size);
        wisp_wbuf_reset(&out[r]);
        wisp_wbuf_u64(&out[r], (uint64_t)epoch);
        wisp_wbuf_u64(&out[r], (uint64_t)pos_after);
        wisp_wbuf_u32(&out[r], (uint32_t)(e - b));
        for (int i = b; i < e; i++)
            wisp_wbuf_u32(&out[r], (uint32_t)ids[i]);
    }
}

static int s_coord_step(void *state, int size, uint64_t *step, uint32_t *flags, wisp_wbuf_t *out,
                        wisp_error_t *err)
{
    (void)err;
    s_coord_t *s = state;
    wisp_sched_step_t e;
    if (!wisp_sched_next(&s->sched, s->d.nv > 0, &e))
        return 0;
    *flags = (e.eval_before ? WISP_STEP_F_EVAL : 0) | (e.checkpoint ? WISP_STEP_F_CHECKPOINT : 0) |
             (e.final ? WISP_STEP_F_FINAL : 0);
    *step = (uint64_t)e.step;
    s_slice(out, size, e.epoch, e.pos_after, e.ids, e.k);
    return 1;
}

/* A count or step of a frame: above 2^53 (not a real count) fails the reader. */
static long s_count(wisp_rbuf_t *r)
{
    uint64_t v = wisp_rbuf_u64(r);
    if (v > ((uint64_t)1 << 53)) {
        r->failed = 1;
        return 0;
    }
    return (long)v;
}

/* The failure records of a STEP_DONE into the run's failure sets. */
static int s_read_failures(s_coord_t *s, wisp_rbuf_t *r)
{
    uint32_t nf = wisp_rbuf_u32(r);
    if (r->failed || nf > S_FAIL_MAX)
        return WISP_ERR_FORMAT;
    for (uint32_t i = 0; i < nf; i++) {
        uint32_t split = wisp_rbuf_u32(r), id = wisp_rbuf_u32(r), len = wisp_rbuf_u32(r);
        char reason[WISP_TRAINER_REASON_MAX];
        if (r->failed || split > 1 || len > r->left)
            return WISP_ERR_FORMAT;
        size_t k = len < sizeof reason - 1 ? len : sizeof reason - 1;
        memcpy(reason, r->p, k);
        reason[k] = '\0';
        r->p += len;
        r->left -= len;
        if (id <= INT32_MAX)
            wisp_trainer_failset_add(split ? &s->vfails : &s->fails, (int)id, reason);
    }
    return WISP_OK;
}

static int s_coord_step_done(void *state, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                             wisp_error_t *err)
{
    s_coord_t *s = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    wisp_trainer_stats_t st;
    uint32_t sflags = wisp_rbuf_u32(&r);
    long epoch = s_count(&r);
    st.step = s_count(&r);
    st.loss = wisp_rbuf_f64(&r);
    st.acc = wisp_rbuf_f64(&r);
    st.items = s_count(&r);
    st.failed = s_count(&r);
    st.lr = wisp_rbuf_f64(&r);
    st.grad_norm = wisp_rbuf_f64(&r);
    st.seconds = wisp_rbuf_f64(&r);
    double vloss = wisp_rbuf_f64(&r), vacc = wisp_rbuf_f64(&r);
    long eval_epoch = s_count(&r);
    if (r.failed || step > (uint64_t)s->sched.total + 1 || s_read_failures(s, &r) || r.left)
        return wisp_error_set(err, WISP_ERR_FORMAT, "train: malformed STEP_DONE for step %" PRIu64,
                              step);
    if (sflags & WISP_STEP_F_EVAL) {
        wisp_train_metrics_eval(&s->metrics, (long)step - 1, eval_epoch, vloss, vacc);
        s->val_acc = vacc;
    }
    if (!(sflags & WISP_STEP_F_FINAL)) {
        s->done_steps = (long)step;
        if (sflags & S_DONE_SKIPPED) {
            s->skipped++;
            if (++s->skipped_row >= s->sched.per_epoch)
                return wisp_trainer_nodata_error(&s->fails, s->cfg->train_manifest, epoch, err);
        } else {
            s->skipped_row = 0;
            wisp_train_metrics_step(&s->metrics, &st, epoch);
            s->last_loss = st.loss;
        }
        WISP_LOGD("step %" PRIu64 " loss=%.5f acc=%.3f lr=%.3g", step, st.loss, st.acc, st.lr);
    }
    if (sflags & S_DONE_STOP && s->sched.total > s->sched.step)
        s->sched.total = s->sched.step; /* early stopping: nothing after what is issued */
    if (flags & WISP_STEP_CHECKPOINTED)
        s->last_ckpt = (long)step;
    wisp_train_metrics_saved(&s->metrics); /* the workers write ahead, not the coordinator */
    return WISP_OK;
}

static void s_coord_progress(void *state, long *done, long *total, double *loss)
{
    s_coord_t *s = state;
    *done = s->done_steps;
    *total = s->sched.total;
    *loss = s->last_loss;
}

static void s_coord_progress_note(void *state, char *buf, size_t n)
{
    s_coord_t *s = state;
    if (isnan(s->val_acc))
        snprintf(buf, n, "failed=%ld", s->fails.count + s->vfails.count);
    else
        snprintf(buf, n, "val_acc=%.3f failed=%ld", s->val_acc, s->fails.count + s->vfails.count);
}

static int s_coord_finish(void *state, int complete, cJSON *summary, wisp_error_t *err)
{
    (void)err;
    s_coord_t *s = state;
    cJSON_AddNumberToObject(summary, "steps", (double)s->done_steps);
    cJSON_AddNumberToObject(summary, "steps_total", (double)s->sched.total);
    cJSON_AddNumberToObject(summary, "steps_skipped", (double)s->skipped);
    long ckpt = s->last_ckpt;
    if (!complete) { /* the newest on disk: a dropped world may have written one unheard */
        long latest = wisp_trainer_latest_step(s->cfg->output);
        ckpt = latest > ckpt ? latest : ckpt;
    }
    cJSON_AddNumberToObject(summary, "last_checkpoint_step", (double)ckpt);
    cJSON_AddNumberToObject(summary, "final_loss", s->last_loss);
    if (isnan(s->val_acc))
        cJSON_AddNullToObject(summary, "val_acc");
    else
        cJSON_AddNumberToObject(summary, "val_acc", s->val_acc);
    /* The clips trained on, those left out for want of a label, those that failed. */
    cJSON_AddNumberToObject(summary, "labeled_clips", (double)s->d.n);
    cJSON_AddNumberToObject(summary, "skipped_unlabeled",
                            (double)wisp_train_data_unlabeled(&s->d.train));
    wisp_trainer_failset_json(&s->fails, "", summary);
    cJSON_AddNumberToObject(summary, "val_labeled_clips", (double)s->d.nv);
    cJSON_AddNumberToObject(summary, "val_skipped_unlabeled",
                            (double)wisp_train_data_unlabeled(&s->d.val));
    wisp_trainer_failset_json(&s->vfails, "val_", summary);
    cJSON_AddStringToObject(summary, "output", s->cfg->output);
    if (!complete)
        WISP_LOGW("train: stopped at step %ld; the newest checkpoint so far is of step %ld (the "
                  "workers may still finish one)",
                  s->done_steps, ckpt);
    return WISP_OK;
}

/* Map-job callbacks a step job does not use. */
static int s_no_payload(void *state, uint64_t first, uint32_t count, wisp_wbuf_t *out,
                        wisp_error_t *err)
{
    (void)state, (void)first, (void)count, (void)out;
    return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "train is a step job");
}

static int s_no_commit(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                       uint32_t *n_errors, double *audio_s, wisp_error_t *err)
{
    (void)state, (void)first, (void)count, (void)p, (void)n, (void)n_errors, (void)audio_s;
    return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "train is a step job");
}

/* Metrics lines are flushed as they are written. */
static int s_no_flush(void *state, wisp_error_t *err)
{
    (void)state, (void)err;
    return WISP_OK;
}

/* ---- worker ---- */

typedef struct {
    const wisp_jobcfg_t *cfg;
    wisp_train_data_t d;
    wisp_trainer_t *tr;
    MPI_Comm comm;
    int have_mpi, rank, size;
    unsigned char *gather;      /* records of all ranks (fixed-order reduce) */
    size_t gather_cap;          /* bytes */
    int *counts, *displs;       /* (size) records per rank, offsets */
    wisp_trainer_item_t *batch; /* global_batch */
    wisp_ckpt_state_t st;
    char root[WISP_JOBCFG_PATH_MAX + 32];
    long epoch; /* epoch of the last step */
    wisp_job_env_t env;
    wisp_train_metrics_t metrics; /* rank 0: lines written ahead into checkpoints */
    wisp_trainer_best_t best;
    char *ahead; /* the loaded checkpoint's metrics lines (for READY) */
    size_t ahead_len;
    wisp_wbuf_t fails; /* rank 0: failure records of all ranks for this STEP_DONE */
    uint32_t n_fails;
    wisp_wbuf_t mine;       /* this rank's failure records */
    int *fcounts, *fdispls; /* (size) failure bytes per rank, offsets */
    unsigned char *fall;    /* rank 0: every rank's failure bytes */
    size_t fall_cap;
    int checkpointed; /* rank 0 wrote a checkpoint in this world */
} s_worker_t;

static int s_reduce(void *ctx, float *data, size_t n, double *scalars, int n_scalars)
{
    s_worker_t *w = ctx;
    if (n > 0 &&
        MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, w->comm) != MPI_SUCCESS)
        return WISP_ERR_MPI;
    if (n_scalars > 0) {
        /* scalars summed in rank order: the loss sums do not depend on MPI's reduction tree */
        double all[64 * 8];
        if (n_scalars > 8 || w->size > 64) {
            if (MPI_Allreduce(MPI_IN_PLACE, scalars, n_scalars, MPI_DOUBLE, MPI_SUM, w->comm) !=
                MPI_SUCCESS)
                return WISP_ERR_MPI;
            return WISP_OK;
        }
        if (MPI_Allgather(scalars, n_scalars, MPI_DOUBLE, all, n_scalars, MPI_DOUBLE, w->comm) !=
            MPI_SUCCESS)
            return WISP_ERR_MPI;
        for (int k = 0; k < n_scalars; k++) {
            double acc = all[k];
            for (int r = 1; r < w->size; r++)
                acc += all[r * n_scalars + k];
            scalars[k] = acc;
        }
    }
    return WISP_OK;
}

/* wisp_trainer_gather_fn: every rank's records in rank order (= global item order,
 * the coordinator slices a step's items consecutively by rank). Counts in records
 * through a contiguous datatype, so large records do not overflow int byte counts. */
static int s_gather_items(void *ctx, const void *mine, size_t n_mine, size_t rec, const void **all,
                          size_t *n_all)
{
    s_worker_t *w = ctx;
    int mine_n = (int)n_mine, rc = WISP_OK;
    if (!w->counts) {
        w->counts = calloc((size_t)w->size, sizeof(int));
        w->displs = calloc((size_t)w->size, sizeof(int));
        if (!w->counts || !w->displs)
            return WISP_ERR_NOMEM;
    }
    if (MPI_Allgather(&mine_n, 1, MPI_INT, w->counts, 1, MPI_INT, w->comm) != MPI_SUCCESS)
        return WISP_ERR_MPI;
    size_t total = 0;
    for (int r = 0; r < w->size; r++) {
        w->displs[r] = (int)total;
        total += (size_t)w->counts[r];
    }
    /* Every rank allocates the same sizes, so a failure here is (almost surely) shared;
     * a lone failing rank still ends the run through the worker's error path. */
    if (total * rec > w->gather_cap) {
        free(w->gather);
        w->gather = malloc(total * rec);
        w->gather_cap = w->gather ? total * rec : 0;
        if (!w->gather)
            return WISP_ERR_NOMEM;
    }
    MPI_Datatype t;
    if (MPI_Type_contiguous((int)rec, MPI_BYTE, &t) != MPI_SUCCESS ||
        MPI_Type_commit(&t) != MPI_SUCCESS)
        return WISP_ERR_MPI;
    if (MPI_Allgatherv(mine, mine_n, t, w->gather, w->counts, w->displs, t, w->comm) != MPI_SUCCESS)
        rc = WISP_ERR_MPI;
    MPI_Type_free(&t);
    *all = w->gather;
    *n_all = total;
    return rc;
}

static void s_worker_close(void **state)
{
    s_worker_t *w = state ? *state : NULL;
    if (!w)
        return;
    wisp_trainer_destroy(&w->tr);
    wisp_train_data_free(&w->d);
    free(w->gather);
    free(w->counts);
    free(w->displs);
    free(w->batch);
    wisp_train_metrics_close(&w->metrics);
    free(w->ahead);
    wisp_wbuf_free(&w->fails);
    wisp_wbuf_free(&w->mine);
    free(w->fcounts);
    free(w->fdispls);
    free(w->fall);
    free(w);
    *state = NULL;
}

/* A preset name (the adapter config module's list), not a JSON file. */
static int s_is_preset(const char *name)
{
    wisp_adapter_config_t c;
    wisp_error_t e = {0};
    memset(&c, 0, sizeof c);
    if (!name[0] || wisp_adapter_config_preset(&c, name, &e) != WISP_OK)
        return 0;
    wisp_adapter_config_free(&c);
    return 1;
}

/* The trainer options of the job config (the same settings `wisp train` takes). */
static int s_worker_opts(const s_worker_t *w, const wisp_job_env_t *env, wisp_trainer_opts_t *o,
                         wisp_error_t *err)
{
    const wisp_jobcfg_t *cfg = w->cfg;
    if (!cfg->adapter[0] && !cfg->adapter_config[0])
        return wisp_error_set(err, WISP_ERR_ARG,
                              "train: set 'adapter_config' (a preset or a JSON file) or 'adapter'");
    int sched = wisp_adamw_schedule_parse(cfg->train_schedule);
    if (sched < 0)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "train.schedule: '%s' is not constant, linear or cosine",
                              cfg->train_schedule);
    int is_preset = s_is_preset(cfg->adapter_config);
    wisp_trainer_default_opts(o);
    o->model_dir = cfg->model;
    o->preset = cfg->adapter[0] ? NULL : is_preset ? cfg->adapter_config : NULL;
    o->adapter_config = cfg->adapter[0] || is_preset ? NULL : cfg->adapter_config;
    o->adapter_dir = cfg->adapter[0] ? cfg->adapter : NULL;
    o->head_dir = cfg->head[0] ? cfg->head : NULL;
    o->num_labels = w->d.train.n_classes;
    o->class_names = (const char *const *)w->d.train.classes;
    o->truncate = cfg->train_truncate;
    o->window = cfg->train_window;
    o->micro_batch = cfg->train_micro_batch;
    o->attn_keep_mb = cfg->train_attn_keep_mb;
    o->lr = cfg->train_lr;
    o->adamw.weight_decay = cfg->train_weight_decay;
    o->schedule = (wisp_schedule_t)sched;
    o->warmup_steps = (long)cfg->train_warmup;
    o->clip = cfg->train_clip;
    o->seed = (uint64_t)cfg->seed;
    o->threads = env->threads;
    return WISP_OK;
}

/* The reduction: fixed-order (per-item records gathered) or one allreduce. */
static int s_worker_reduction(s_worker_t *w, wisp_error_t *err)
{
    const wisp_jobcfg_t *cfg = w->cfg;
    wisp_model_t *m = wisp_trainer_model(w->tr);
    if (cfg->train_fixed_order_reduce) {
        /* The gathered per-item records of a whole global batch live in every rank. */
        double bytes = (double)cfg->train_global_batch *
                       (double)wisp_trainer_item_record_bytes(w->tr) * (w->size > 1 ? 2.0 : 1.0);
        if (bytes > 2.0 * 1024 * 1024 * 1024)
            return wisp_error_set(
                err, WISP_ERR_ARG,
                "train.fixed_order_reduce: %d items x %zu trainable parameters of per-item "
                "gradients need %.1f GiB per rank (limit 2 GiB); lower train.global_batch, "
                "use a smaller adapter (adapter_config) or set train.fixed_order_reduce=false",
                cfg->train_global_batch, wisp_model_num_params(m), bytes / (1024.0 * 1024 * 1024));
        wisp_trainer_set_per_item(w->tr, w->have_mpi && w->size > 1 ? s_gather_items : NULL, w);
    } else if (w->size > 1) {
        wisp_trainer_set_reduce(w->tr, s_reduce, w);
    }
    /* Every rank starts from rank 0's weights. */
    if (w->have_mpi && w->size > 1 &&
        MPI_Bcast(wisp_model_params(m), (int)wisp_model_num_params(m), MPI_FLOAT, 0, w->comm) !=
            MPI_SUCCESS)
        return wisp_error_set(err, WISP_ERR_MPI, "train: MPI_Bcast of the initial weights failed");
    return WISP_OK;
}

/* The newest checkpoint (when there is one), its metrics lines and best-model state. */
static int s_worker_resume(s_worker_t *w, wisp_error_t *err)
{
    const wisp_jobcfg_t *cfg = w->cfg;
    int rc;
    wisp_trainer_run_fingerprint(w->tr, cfg->train_global_batch, w->d.items, w->d.n,
                                 w->st.fingerprint);
    w->st.data_seed = (uint64_t)cfg->seed;
    snprintf(w->root, sizeof w->root, "%s/checkpoints", cfg->output);
    char dir[WISP_JOBCFG_PATH_MAX + 64] = "";
    wisp_error_t e = {0};
    if (wisp_ckpt_latest(w->root, dir, sizeof dir, &e) == WISP_OK) {
        char fp[65];
        memcpy(fp, w->st.fingerprint, sizeof fp);
        if ((rc = wisp_trainer_load_checkpoint(w->tr, dir, fp, &w->st, err)) != 0)
            return rc;
        if (w->rank == 0)
            WISP_LOGI("train: resuming from %s (step %ld)", dir, w->st.step);
        rc = wisp_ckpt_read_file(dir, WISP_TRAIN_METRICS_CKPT_FILE, S_READY_AHEAD_MAX, &w->ahead,
                                 &w->ahead_len, &e);
        if (rc && rc != WISP_ERR_NOTFOUND)
            return wisp_error_set(err, rc, "%s", e.msg);
    } else if (e.code != WISP_ERR_NOTFOUND) {
        return wisp_error_set(err, e.code, "%s", e.msg);
    } else {
        dir[0] = '\0';
    }
    w->epoch = w->st.epoch;
    if ((rc = wisp_trainer_best_open(&w->best, cfg->output, cfg->train_keep_best,
                                     cfg->train_patience, dir[0] ? dir : NULL, err)))
        return rc;
    rc = wisp_train_metrics_open(&w->metrics, NULL, 0, NULL, 0, err);
    w->metrics.keep_tail = 2 * (cfg->credit + 1);
    return rc;
}

static int s_worker_open(void **state, const wisp_jobcfg_t *cfg, const wisp_job_env_t *env,
                         wisp_error_t *err)
{
    int rc;
    s_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    w->cfg = cfg;
    w->env = *env;
    w->rank = env->rank;
    w->size = env->size;
    w->have_mpi = env->mpi_comm != NULL;
    if (w->have_mpi)
        w->comm = *(MPI_Comm *)env->mpi_comm;
    else if (env->size > 1) {
        free(w);
        return wisp_error_set(err, WISP_ERR_ARG, "train: %d ranks without an MPI communicator",
                              env->size);
    }
    wisp_trainer_opts_t o;
    if ((rc = s_data_load(&w->d, cfg, err)) != 0 || (rc = s_worker_opts(w, env, &o, err)) != 0)
        goto fail;
    wisp_sched_t sc;
    if ((rc = s_sched_init(&sc, cfg, w->d.n, err)) != 0)
        goto fail;
    o.total_steps = sc.total;
    wisp_sched_free(&sc);
    w->tr = wisp_trainer_new(&o, err);
    w->batch = malloc((size_t)cfg->train_global_batch * sizeof *w->batch);
    if (!w->tr || !w->batch) {
        rc = w->tr ? wisp_error_set(err, WISP_ERR_NOMEM, "out of memory")
                   : (err && err->code ? err->code : WISP_ERR_ARG);
        goto fail;
    }
    if (env->heartbeat.fn)
        wisp_trainer_set_tick(w->tr, env->heartbeat.fn, env->heartbeat.ctx);
    if ((rc = s_worker_reduction(w, err)) != 0 || (rc = s_worker_resume(w, err)) != 0)
        goto fail;
    *state = w;
    return WISP_OK;
fail:
    s_worker_close((void **)&w);
    return rc ? rc : WISP_ERR_ARG;
}

static int s_worker_ready(void *state, wisp_wbuf_t *out, wisp_error_t *err)
{
    (void)err;
    s_worker_t *w = state;
    wisp_wbuf_u64(out, (uint64_t)w->st.step);
    wisp_wbuf_u64(out, (uint64_t)w->st.epoch);
    wisp_wbuf_u64(out, (uint64_t)w->st.pos);
    wisp_wbuf_u32(out, (uint32_t)w->ahead_len);
    wisp_wbuf_bytes(out, w->ahead, w->ahead_len);
    return WISP_OK;
}

/* FNV-1a over the parameter bytes: equal on every rank or the ranks drifted. */
static int s_checksum(s_worker_t *w, long step, wisp_error_t *err)
{
    wisp_model_t *m = wisp_trainer_model(w->tr);
    const unsigned char *p = (const unsigned char *)wisp_model_params(m);
    size_t n = wisp_model_num_params(m) * sizeof(float);
    uint64_t h = 0xcbf29ce484222325ull, lo, hi;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    if (MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, w->comm) != MPI_SUCCESS ||
        MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, w->comm) != MPI_SUCCESS)
        return wisp_error_set(err, WISP_ERR_MPI, "train: parameter checksum exchange failed");
    if (lo != hi)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "train: parameters differ across ranks after step %ld", step);
    return WISP_OK;
}

/* This rank's failures of the last trainer call (split 0 train, 1 validation) join
 * rank 0's records for the next STEP_DONE. Collective (two gathers). */
static int s_gather_failures(s_worker_t *w, uint32_t split, wisp_error_t *err)
{
    int nf;
    const wisp_trainer_failure_t *f = wisp_trainer_failures(w->tr, &nf);
    wisp_wbuf_reset(&w->mine);
    for (int i = 0; i < nf; i++) {
        uint32_t len = (uint32_t)strlen(f[i].reason);
        wisp_wbuf_u32(&w->mine, split);
        wisp_wbuf_u32(&w->mine, (uint32_t)f[i].id);
        wisp_wbuf_u32(&w->mine, len);
        wisp_wbuf_bytes(&w->mine, f[i].reason, len);
    }
    if (w->mine.failed)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    int mine = (int)w->mine.len, total = 0;
    if (!w->have_mpi || w->size == 1) {
        wisp_wbuf_bytes(&w->fails, w->mine.data, w->mine.len);
        w->n_fails += (uint32_t)nf;
        return WISP_OK;
    }
    if (!w->fcounts) {
        w->fcounts = calloc((size_t)w->size, sizeof(int));
        w->fdispls = calloc((size_t)w->size, sizeof(int));
        if (!w->fcounts || !w->fdispls)
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    }
    if (MPI_Gather(&mine, 1, MPI_INT, w->fcounts, 1, MPI_INT, 0, w->comm) != MPI_SUCCESS)
        return wisp_error_set(err, WISP_ERR_MPI, "train: gathering the failed clips failed");
    if (w->rank == 0) {
        for (int r = 0; r < w->size; r++) {
            w->fdispls[r] = total;
            total += w->fcounts[r];
        }
        if ((size_t)total > w->fall_cap) {
            free(w->fall);
            w->fall = malloc((size_t)total);
            w->fall_cap = w->fall ? (size_t)total : 0;
            /* The other ranks wait in the gather below: this error ends the world. */
            if (!w->fall)
                return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        }
    }
    if (MPI_Gatherv(w->mine.data, mine, MPI_BYTE, w->fall, w->fcounts, w->fdispls, MPI_BYTE, 0,
                    w->comm) != MPI_SUCCESS)
        return wisp_error_set(err, WISP_ERR_MPI, "train: gathering the failed clips failed");
    if (w->rank == 0) {
        wisp_wbuf_bytes(&w->fails, w->fall, (size_t)total);
        wisp_rbuf_t r;
        wisp_rbuf_init(&r, w->fall, (size_t)total);
        while (r.left && !r.failed) { /* count the records */
            wisp_rbuf_u32(&r);
            wisp_rbuf_u32(&r);
            uint32_t len = wisp_rbuf_u32(&r);
            if (len > r.left)
                break;
            r.p += len;
            r.left -= len;
            w->n_fails++;
        }
    }
    return WISP_OK;
}

static int s_eval(s_worker_t *w, double *vloss, double *vacc, wisp_error_t *err)
{
    int b = (int)((long)w->d.nv * w->rank / w->size),
        e = (int)((long)w->d.nv * (w->rank + 1) / w->size);
    double sums[4] = {0, 0, 0, 0}; /* loss, weight, correct, count */
    long correct = 0, count = 0, failed = 0;
    wisp_trainer_clear_failures(w->tr);
    int rc = wisp_trainer_eval(w->tr, w->d.vitems + b, e - b, &sums[0], &sums[1], &correct, &count,
                               &failed, err);
    if (rc)
        return rc;
    sums[2] = (double)correct;
    sums[3] = (double)count;
    if (w->size > 1 &&
        MPI_Allreduce(MPI_IN_PLACE, sums, 4, MPI_DOUBLE, MPI_SUM, w->comm) != MPI_SUCCESS)
        return wisp_error_set(err, WISP_ERR_MPI, "train: evaluation reduce failed");
    *vloss = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    *vacc = sums[3] > 0 ? sums[2] / sums[3] : NAN;
    return s_gather_failures(w, 1, err);
}

/* One training step of the STEP's items; a batch with no usable clip on any rank is
 * skipped (*skipped = 1), which every rank learns from the same reduction. */
static int s_train(s_worker_t *w, uint64_t step, int k, wisp_trainer_stats_t *st, int *skipped,
                   wisp_error_t *err)
{
    int rc;
    if (w->cfg->train_dump_grads[0] && w->st.step == 0 && step == 1) {
        rc = wisp_trainer_compute_grads(w->tr, w->batch, k, st, err);
        if (rc == 0 && w->rank == 0)
            rc = wisp_trainer_dump_grads(w->tr, w->cfg->train_dump_grads, err);
        if (rc == 0)
            wisp_trainer_apply(w->tr, st);
    } else {
        rc = wisp_trainer_step(w->tr, w->batch, k, st, err);
    }
    *skipped = rc == WISP_ERR_NODATA;
    if (*skipped) {
        wisp_error_clear(err);
        memset(st, 0, sizeof *st);
        st->failed = k;
        rc = WISP_OK;
        if (w->rank == 0)
            WISP_LOGW("train: step %" PRIu64 ": no usable clip in the batch; skipped", step);
    }
    if (rc == 0)
        rc = s_gather_failures(w, 0, err);
    st->step = (long)step;
    return rc;
}

/* After a training step: cross-rank checksum, metrics line (rank 0, written ahead),
 * checkpoint when asked. */
static int s_after_train(s_worker_t *w, uint64_t step, uint32_t flags,
                         const wisp_trainer_stats_t *st, int skipped, long epoch,
                         uint32_t *out_flags, wisp_error_t *err)
{
    int rc;
    if (w->size > 1 && w->cfg->train_checksum_every > 0 &&
        step % (uint64_t)w->cfg->train_checksum_every == 0 &&
        (rc = s_checksum(w, (long)step, err)) != 0)
        return rc;
    if (w->rank != 0)
        return WISP_OK;
    if (!skipped)
        wisp_train_metrics_step(&w->metrics, st, epoch);
    if (flags & WISP_STEP_F_CHECKPOINT) {
        wisp_ckpt_file_t files[2] = {wisp_train_metrics_ckpt_file(&w->metrics),
                                     wisp_trainer_best_ckpt_file(&w->best)};
        if ((rc = wisp_trainer_save_checkpoint(w->tr, w->root, &w->st, w->cfg->train_keep, files, 2,
                                               err)) != 0)
            return rc;
        wisp_train_metrics_saved(&w->metrics);
        *out_flags |= WISP_STEP_CHECKPOINTED;
        if (!w->checkpointed) /* a run started over keeps the old one until now */
            wisp_trainer_drop_previous(w->cfg->output);
        w->checkpointed = 1;
    }
    return WISP_OK;
}

static int s_worker_step(void *state, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                         wisp_wbuf_t *out, uint32_t *out_flags, wisp_error_t *err)
{
    s_worker_t *w = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    long epoch = s_count(&r), pos_after = s_count(&r);
    uint32_t k = wisp_rbuf_u32(&r);
    if (r.failed || k > (uint32_t)w->cfg->train_global_batch || pos_after > w->d.n)
        return wisp_error_set(err, WISP_ERR_FORMAT, "train: malformed STEP %" PRIu64, step);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id = wisp_rbuf_u32(&r);
        if (r.failed || id >= (uint32_t)w->d.n)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "train: STEP %" PRIu64 " names item %u of %d", step, id, w->d.n);
        w->batch[i] = w->d.items[id];
    }
    *out_flags = 0;
    wisp_wbuf_reset(&w->fails);
    w->n_fails = 0;
    double vloss = NAN, vacc = NAN;
    long eval_epoch = w->epoch;
    int rc, stop_early = 0, skipped = 0;
    if (flags & WISP_STEP_F_EVAL) {
        if ((rc = s_eval(w, &vloss, &vacc, err)) != 0 ||
            (rc = wisp_trainer_best_update(&w->best, w->tr, (long)step - 1, vacc, w->rank == 0,
                                           &stop_early, err)) != 0)
            return rc;
        if (w->rank == 0)
            wisp_train_metrics_eval(&w->metrics, (long)step - 1, eval_epoch, vloss, vacc);
    }
    wisp_trainer_stats_t st;
    memset(&st, 0, sizeof st);
    if (!(flags & WISP_STEP_F_FINAL)) {
        wisp_trainer_set_epoch(w->tr, epoch); /* the windows of the step's items */
        if ((rc = s_train(w, step, (int)k, &st, &skipped, err)) != 0)
            return rc;
        w->st.step = (long)step;
        w->st.epoch = epoch;
        w->st.pos = pos_after;
        w->epoch = epoch;
        if ((rc = s_after_train(w, step, flags, &st, skipped, epoch, out_flags, err)) != 0)
            return rc;
    } else if (w->rank == 0) {
        if ((rc = wisp_trainer_save_outputs(w->tr, w->cfg->output, err)) != 0)
            return rc;
        WISP_LOGI("train: adapter and head written under %s", w->cfg->output);
    }
    wisp_wbuf_u32(out, flags | (skipped ? S_DONE_SKIPPED : 0) | (stop_early ? S_DONE_STOP : 0));
    wisp_wbuf_u64(out, (uint64_t)epoch);
    wisp_wbuf_u64(out, (uint64_t)st.step);
    wisp_wbuf_f64(out, st.loss);
    wisp_wbuf_f64(out, st.acc);
    wisp_wbuf_u64(out, (uint64_t)st.items);
    wisp_wbuf_u64(out, (uint64_t)st.failed);
    wisp_wbuf_f64(out, st.lr);
    wisp_wbuf_f64(out, st.grad_norm);
    wisp_wbuf_f64(out, st.seconds);
    wisp_wbuf_f64(out, vloss);
    wisp_wbuf_f64(out, vacc);
    wisp_wbuf_u64(out, (uint64_t)eval_epoch);
    wisp_wbuf_u32(out, w->n_fails);
    wisp_wbuf_bytes(out, w->fails.data, w->fails.len);
    return WISP_OK;
}

static int s_no_run(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                    wisp_wbuf_t *out, double *stage_seconds, const wisp_job_progress_t *progress,
                    wisp_error_t *err)
{
    (void)state, (void)first, (void)count, (void)p, (void)n, (void)out, (void)stage_seconds,
        (void)progress;
    return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "train is a step job");
}

const wisp_job_ops_t wisp_job_train = {
    .name = "train",
    .stages = {NULL},
    .steps = 1,
    .coord_open = s_coord_open,
    .coord_payload = s_no_payload,
    .coord_commit = s_no_commit,
    .coord_flush = s_no_flush,
    .coord_finish = s_coord_finish,
    .coord_close = s_coord_close,
    .worker_open = s_worker_open,
    .worker_run = s_no_run,
    .worker_close = s_worker_close,
    .coord_resume = s_coord_resume,
    .coord_step = s_coord_step,
    .coord_step_done = s_coord_step_done,
    .coord_progress = s_coord_progress,
    .coord_progress_note = s_coord_progress_note,
    .worker_ready = s_worker_ready,
    .worker_step = s_worker_step,
};
