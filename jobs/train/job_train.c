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
 * STEP payload (per rank): u64 epoch, u64 pos_after, u32 n, n x u32 item ids.
 * READY payload: u64 step, u64 epoch, u64 pos (the checkpoint loaded, or 0s).
 * STEP_DONE payload (rank 0): the trainer stats, then val_loss, val_acc (NaN
 * when not evaluated). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/adamw.h"
#include "formats/config.h"
#include "dist/job.h"
#include "base/log.h"
#include "formats/manifest.h"
#include "train/trainer.h"
#include "base/util.h"

/* ---- shared by both sides: the data, as `wisp train` reads it ---- */

typedef struct {
    wisp_manifest_t train, val;
    wisp_head_config_t head;
    int have_head;
    wisp_trainer_item_t *items, *vitems; /* labeled items only */
    int n, nv;
} s_data_t;

static void s_data_free(s_data_t *d)
{
    wisp_manifest_free(&d->train);
    wisp_manifest_free(&d->val);
    if (d->have_head)
        wisp_head_config_free(&d->head);
    free(d->items);
    free(d->vitems);
    memset(d, 0, sizeof *d);
}

static wisp_trainer_item_t *s_items(const wisp_manifest_t *m, int *n)
{
    wisp_trainer_item_t *items = calloc(m->n_items + 1, sizeof *items);
    *n = 0;
    for (size_t i = 0; items && i < m->n_items; i++)
        if (m->items[i].label >= 0) {
            items[*n].path = m->items[i].path;
            items[*n].label = m->items[i].label;
            (*n)++;
        }
    return items;
}

static int s_data_load(s_data_t *d, const wisp_jobcfg_t *cfg, wisp_error_t *err)
{
    int rc;
    memset(d, 0, sizeof *d);
    if (cfg->head[0]) {
        char path[WISP_JOBCFG_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/head_config.json", cfg->head);
        if ((rc = wisp_head_config_load(&d->head, path, err)) != 0)
            return rc;
        d->have_head = 1;
    }
    if ((rc = wisp_manifest_load(&d->train, cfg->train_manifest,
                                 d->have_head ? (const char *const *)d->head.id2label : NULL,
                                 d->have_head ? d->head.num_labels : 0, err)) != 0)
        return rc;
    if (d->train.n_labeled == 0 || d->train.n_classes < 2)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: needs labeled items of at least 2 classes",
                              cfg->train_manifest);
    if (cfg->val_manifest[0] &&
        (rc = wisp_manifest_load(&d->val, cfg->val_manifest, (const char *const *)d->train.classes,
                                 d->train.n_classes, err)) != 0)
        return rc;
    d->items = s_items(&d->train, &d->n);
    d->vitems = s_items(&d->val, &d->nv);
    if (!d->items || !d->vitems)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    return WISP_OK;
}

static long s_total_steps(const wisp_jobcfg_t *cfg, int n)
{
    long per_epoch = (n + cfg->train_global_batch - 1) / cfg->train_global_batch;
    return cfg->train_max_steps > 0 ? (long)cfg->train_max_steps
                                    : (long)cfg->train_epochs * per_epoch;
}

/* ---- coordinator ---- */

typedef struct {
    const wisp_jobcfg_t *cfg;
    s_data_t d;
    int *perm;             /* n: order of the current epoch */
    long step, epoch, pos; /* after the last issued step */
    long total, ckpt_every;
    int final_issued;
    long done_steps; /* steps reported by rank 0 */
    double last_loss;
    long last_ckpt;
    FILE *metrics;
    char metrics_path[WISP_JOBCFG_PATH_MAX + 32];
} s_coord_t;

static void s_coord_close(void **state)
{
    s_coord_t *s = state ? *state : NULL;
    if (!s)
        return;
    s_data_free(&s->d);
    free(s->perm);
    if (s->metrics)
        fclose(s->metrics);
    free(s);
    *state = NULL;
}

static int s_coord_open(void **state, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                        wisp_error_t *err)
{
    (void)resume; /* resuming is the workers' checkpoint; see coord_resume */
    memset(plan, 0, sizeof *plan);
    s_coord_t *s = calloc(1, sizeof *s);
    if (!s)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    s->cfg = cfg;
    int rc = s_data_load(&s->d, cfg, err);
    if (rc == 0 && (rc = wisp_mkdir_p(cfg->output, err)) == 0) {
        s->perm = malloc((size_t)s->d.n * sizeof *s->perm);
        if (!s->perm)
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    }
    if (rc) {
        s_coord_close((void **)&s);
        return rc;
    }
    s->total = s_total_steps(cfg, s->d.n);
    long per_epoch = (s->d.n + cfg->train_global_batch - 1) / cfg->train_global_batch;
    s->ckpt_every = cfg->train_checkpoint_every > 0 ? cfg->train_checkpoint_every : per_epoch;
    snprintf(s->metrics_path, sizeof s->metrics_path, "%s/metrics.jsonl", cfg->output);
    WISP_LOGI("train: %d labeled clips, %d classes, %d validation clips, %ld steps of %d", s->d.n,
              s->d.train.n_classes, s->d.nv, s->total, cfg->train_global_batch);
    *state = s;
    return WISP_OK;
}

/* Keeps the metrics lines of steps <= step (a resumed run redoes the rest). */
static int s_metrics_rewind(s_coord_t *s, long step, wisp_error_t *err)
{
    if (s->metrics) {
        fclose(s->metrics);
        s->metrics = NULL;
    }
    return wisp_trainer_metrics_open(s->metrics_path, step, &s->metrics, err);
}

static int s_coord_resume(void *state, const uint8_t *p, size_t n, wisp_error_t *err)
{
    s_coord_t *s = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    long step = (long)wisp_rbuf_u64(&r), epoch = (long)wisp_rbuf_u64(&r),
         pos = (long)wisp_rbuf_u64(&r);
    if (r.failed || step < 0 || step > s->total || pos < 0 || pos > s->d.n || epoch < 0)
        return wisp_error_set(err, WISP_ERR_FORMAT, "train: READY with an impossible resume point");
    s->step = step;
    s->epoch = epoch;
    s->pos = pos;
    s->done_steps = step;
    s->last_ckpt = step;
    s->final_issued = 0;
    wisp_trainer_epoch_order((uint64_t)s->cfg->seed, s->epoch, s->d.n, s->perm);
    if (step)
        WISP_LOGI("train: the workers resume from the checkpoint of step %ld (epoch %ld, item %ld)",
                  step, epoch, pos);
    return s_metrics_rewind(s, step, err);
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
    *flags = 0;
    if (s->step >= s->total) {
        if (s->final_issued)
            return 0;
        s->final_issued = 1;
        *step = (uint64_t)s->step + 1; /* an id of its own; no optimizer step */
        *flags = WISP_STEP_F_FINAL | (s->d.nv ? WISP_STEP_F_EVAL : 0);
        s_slice(out, size, s->epoch, s->pos, NULL, 0);
        return 1;
    }
    if (s->pos >= s->d.n) { /* epoch boundary: evaluate, then the next order */
        if (s->d.nv)
            *flags |= WISP_STEP_F_EVAL;
        s->epoch++;
        s->pos = 0;
        wisp_trainer_epoch_order((uint64_t)s->cfg->seed, s->epoch, s->d.n, s->perm);
    }
    int k = (int)(s->d.n - s->pos < s->cfg->train_global_batch ? s->d.n - s->pos
                                                               : s->cfg->train_global_batch);
    s->pos += k;
    s->step++;
    if (s->step % s->ckpt_every == 0 || s->step == s->total)
        *flags |= WISP_STEP_F_CHECKPOINT;
    *step = (uint64_t)s->step;
    s_slice(out, size, s->epoch, s->pos, s->perm + s->pos - k, k);
    return 1;
}

static int s_coord_step_done(void *state, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                             wisp_error_t *err)
{
    s_coord_t *s = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    wisp_trainer_stats_t st;
    uint32_t sflags = wisp_rbuf_u32(&r);
    long epoch = (long)wisp_rbuf_u64(&r);
    st.step = (long)wisp_rbuf_u64(&r);
    st.loss = wisp_rbuf_f64(&r);
    st.acc = wisp_rbuf_f64(&r);
    st.items = (long)wisp_rbuf_u64(&r);
    st.failed = (long)wisp_rbuf_u64(&r);
    st.lr = wisp_rbuf_f64(&r);
    st.grad_norm = wisp_rbuf_f64(&r);
    st.seconds = wisp_rbuf_f64(&r);
    double vloss = wisp_rbuf_f64(&r), vacc = wisp_rbuf_f64(&r);
    long eval_epoch = (long)wisp_rbuf_u64(&r);
    if (r.failed || r.left)
        return wisp_error_set(err, WISP_ERR_FORMAT, "train: malformed STEP_DONE for step %" PRIu64,
                              step);
    if (sflags & WISP_STEP_F_EVAL && s->metrics)
        wisp_trainer_log_eval(s->metrics, (long)step - 1, eval_epoch, vloss,
                              vacc); /* before this step */
    if (!(sflags & WISP_STEP_F_FINAL)) {
        if (s->metrics)
            wisp_trainer_log_step(s->metrics, &st, epoch);
        s->done_steps = (long)step;
        s->last_loss = st.loss;
        WISP_LOGD("step %" PRIu64 " loss=%.5f acc=%.3f lr=%.3g", step, st.loss, st.acc, st.lr);
    }
    if (flags & WISP_STEP_CHECKPOINTED)
        s->last_ckpt = (long)step;
    if (s->metrics)
        fflush(s->metrics);
    return WISP_OK;
}

static void s_coord_progress(void *state, long *done, long *total, double *loss)
{
    s_coord_t *s = state;
    *done = s->done_steps;
    *total = s->total;
    *loss = s->last_loss;
}

static int s_coord_finish(void *state, int complete, cJSON *summary, wisp_error_t *err)
{
    (void)err;
    s_coord_t *s = state;
    cJSON_AddNumberToObject(summary, "steps", (double)s->done_steps);
    cJSON_AddNumberToObject(summary, "steps_total", (double)s->total);
    cJSON_AddNumberToObject(summary, "last_checkpoint_step", (double)s->last_ckpt);
    cJSON_AddNumberToObject(summary, "final_loss", s->last_loss);
    cJSON_AddStringToObject(summary, "output", s->cfg->output);
    if (!complete)
        WISP_LOGW("train: stopped at step %ld; relaunch to resume from the checkpoint of step %ld",
                  s->done_steps, s->last_ckpt);
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

static int s_no_flush(void *state, wisp_error_t *err)
{
    s_coord_t *s = state;
    (void)err;
    if (s->metrics)
        fflush(s->metrics);
    return WISP_OK;
}

/* ---- worker ---- */

typedef struct {
    const wisp_jobcfg_t *cfg;
    s_data_t d;
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
    s_data_free(&w->d);
    free(w->gather);
    free(w->counts);
    free(w->displs);
    free(w->batch);
    free(w);
    *state = NULL;
}

static int s_worker_open(void **state, const wisp_jobcfg_t *cfg, const wisp_job_env_t *env,
                         wisp_error_t *err)
{
    int rc;
    s_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    w->cfg = cfg;
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
    if ((rc = s_data_load(&w->d, cfg, err)) != 0)
        goto fail;
    const char *presets[] = {"seq_bn", "double_seq_bn", "par_bn", "lora", "ia3", NULL};
    int is_preset = 0;
    for (int i = 0; presets[i]; i++)
        is_preset |= strcmp(cfg->adapter_config, presets[i]) == 0;
    if (!cfg->adapter[0] && !cfg->adapter_config[0]) {
        rc = wisp_error_set(err, WISP_ERR_ARG,
                            "train: set 'adapter_config' (a preset or a JSON file) or 'adapter'");
        goto fail;
    }
    int sched = wisp_adamw_schedule_parse(cfg->train_schedule);
    if (sched < 0) {
        rc = wisp_error_set(err, WISP_ERR_ARG,
                            "train.schedule: '%s' is not constant, linear or cosine",
                            cfg->train_schedule);
        goto fail;
    }
    wisp_trainer_opts_t o;
    wisp_trainer_default_opts(&o);
    o.model_dir = cfg->model;
    o.preset = cfg->adapter[0] ? NULL : is_preset ? cfg->adapter_config : NULL;
    o.adapter_config = cfg->adapter[0] || is_preset ? NULL : cfg->adapter_config;
    o.adapter_dir = cfg->adapter[0] ? cfg->adapter : NULL;
    o.head_dir = cfg->head[0] ? cfg->head : NULL;
    o.num_labels = w->d.train.n_classes;
    o.class_names = (const char *const *)w->d.train.classes;
    o.truncate = cfg->train_truncate;
    o.micro_batch = cfg->train_micro_batch;
    o.attn_keep_mb = cfg->train_attn_keep_mb;
    o.lr = cfg->train_lr;
    o.adamw.weight_decay = cfg->train_weight_decay;
    o.schedule = (wisp_schedule_t)sched;
    o.warmup_steps = (long)cfg->train_warmup;
    o.total_steps = s_total_steps(cfg, w->d.n);
    o.clip = cfg->train_clip;
    o.seed = (uint64_t)cfg->seed;
    o.threads = env->threads;
    w->tr = wisp_trainer_new(&o, err);
    w->batch = malloc((size_t)cfg->train_global_batch * sizeof *w->batch);
    if (!w->tr || !w->batch) {
        rc = w->tr ? wisp_error_set(err, WISP_ERR_NOMEM, "out of memory")
                   : (err && err->code ? err->code : WISP_ERR_ARG);
        goto fail;
    }
    wisp_model_t *m = wisp_trainer_model(w->tr);
    if (cfg->train_fixed_order_reduce) {
        /* The gathered per-item records of a whole global batch live in every rank. */
        double bytes = (double)cfg->train_global_batch *
                       (double)wisp_trainer_item_record_bytes(w->tr) * (w->size > 1 ? 2.0 : 1.0);
        if (bytes > 2.0 * 1024 * 1024 * 1024) {
            rc = wisp_error_set(
                err, WISP_ERR_ARG,
                "train.fixed_order_reduce: %d items x %zu trainable parameters of per-item "
                "gradients need %.1f GiB per rank (limit 2 GiB); lower train.global_batch, "
                "use a smaller adapter (adapter_config) or set train.fixed_order_reduce=false",
                cfg->train_global_batch, wisp_model_num_params(m), bytes / (1024.0 * 1024 * 1024));
            goto fail;
        }
        wisp_trainer_set_per_item(w->tr, w->have_mpi && w->size > 1 ? s_gather_items : NULL, w);
    } else if (w->size > 1) {
        wisp_trainer_set_reduce(w->tr, s_reduce, w);
    }
    /* Every rank starts from rank 0's weights. */
    if (w->have_mpi && w->size > 1 &&
        MPI_Bcast(wisp_model_params(m), (int)wisp_model_num_params(m), MPI_FLOAT, 0, w->comm) !=
            MPI_SUCCESS) {
        rc = wisp_error_set(err, WISP_ERR_MPI, "train: MPI_Bcast of the initial weights failed");
        goto fail;
    }
    /* The run's identity: the trainer's configuration and the data, as `wisp train`. */
    {
        size_t len = 64;
        for (int i = 0; i < w->d.n; i++)
            len += strlen(w->d.items[i].path) + 16;
        char *s = malloc(len), *p = s, data_id[65], extra[256];
        if (!s) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < w->d.n; i++)
            p += sprintf(p, "%s|%d\n", w->d.items[i].path, w->d.items[i].label);
        *p = '\0';
        wisp_trainer_fingerprint(w->tr, s, data_id);
        free(s);
        snprintf(extra, sizeof extra, "batch=%d n=%d data=%s", cfg->train_global_batch, w->d.n,
                 data_id);
        wisp_trainer_fingerprint(w->tr, extra, w->st.fingerprint);
    }
    w->st.data_seed = (uint64_t)cfg->seed;
    snprintf(w->root, sizeof w->root, "%s/checkpoints", cfg->output);
    char dir[WISP_JOBCFG_PATH_MAX + 64];
    wisp_error_t e = {0};
    if (wisp_ckpt_latest(w->root, dir, sizeof dir, &e) == WISP_OK) {
        char fp[65];
        memcpy(fp, w->st.fingerprint, sizeof fp);
        if ((rc = wisp_trainer_load_checkpoint(w->tr, dir, fp, &w->st, err)) != 0)
            goto fail;
        if (w->rank == 0)
            WISP_LOGI("train: resuming from %s (step %ld)", dir, w->st.step);
    } else if (e.code != WISP_ERR_NOTFOUND) {
        rc = wisp_error_set(err, e.code, "%s", e.msg);
        goto fail;
    }
    w->epoch = w->st.epoch;
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

static int s_eval(s_worker_t *w, double *vloss, double *vacc, wisp_error_t *err)
{
    int b = (int)((long)w->d.nv * w->rank / w->size),
        e = (int)((long)w->d.nv * (w->rank + 1) / w->size);
    double sums[4] = {0, 0, 0, 0}; /* loss, weight, correct, count */
    long correct = 0, count = 0, failed = 0;
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
    return WISP_OK;
}

static int s_worker_step(void *state, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                         wisp_wbuf_t *out, uint32_t *out_flags, wisp_error_t *err)
{
    s_worker_t *w = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    long epoch = (long)wisp_rbuf_u64(&r), pos_after = (long)wisp_rbuf_u64(&r);
    uint32_t k = wisp_rbuf_u32(&r);
    if (r.failed || k > (uint32_t)w->cfg->train_global_batch)
        return wisp_error_set(err, WISP_ERR_FORMAT, "train: malformed STEP %" PRIu64, step);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id = wisp_rbuf_u32(&r);
        if (r.failed || id >= (uint32_t)w->d.n)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "train: STEP %" PRIu64 " names item %u of %d", step, id, w->d.n);
        w->batch[i] = w->d.items[id];
    }
    *out_flags = 0;
    double vloss = NAN, vacc = NAN;
    long eval_epoch = w->epoch;
    int rc;
    if (flags & WISP_STEP_F_EVAL && (rc = s_eval(w, &vloss, &vacc, err)) != 0)
        return rc;
    wisp_trainer_stats_t st;
    memset(&st, 0, sizeof st);
    if (!(flags & WISP_STEP_F_FINAL)) {
        if (w->cfg->train_dump_grads[0] && w->st.step == 0 && step == 1) {
            rc = wisp_trainer_compute_grads(w->tr, w->batch, (int)k, &st, err);
            if (rc == 0 && w->rank == 0)
                rc = wisp_trainer_dump_grads(w->tr, w->cfg->train_dump_grads, err);
            if (rc == 0)
                wisp_trainer_apply(w->tr, &st);
        } else {
            rc = wisp_trainer_step(w->tr, w->batch, (int)k, &st, err);
        }
        if (rc)
            return rc;
        w->st.step = (long)step;
        w->st.epoch = epoch;
        w->st.pos = pos_after;
        w->epoch = epoch;
        if (w->size > 1 && w->cfg->train_checksum_every > 0 &&
            step % (uint64_t)w->cfg->train_checksum_every == 0 &&
            (rc = s_checksum(w, (long)step, err)) != 0)
            return rc;
        if (flags & WISP_STEP_F_CHECKPOINT && w->rank == 0) {
            if ((rc = wisp_trainer_save_checkpoint(w->tr, w->root, &w->st, w->cfg->train_keep,
                                                   err)) != 0)
                return rc;
            *out_flags |= WISP_STEP_CHECKPOINTED;
        }
    } else if (w->rank == 0) {
        if ((rc = wisp_trainer_save_outputs(w->tr, w->cfg->output, err)) != 0)
            return rc;
        WISP_LOGI("train: adapter and head written under %s", w->cfg->output);
    }
    wisp_wbuf_u32(out, flags);
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
    .worker_ready = s_worker_ready,
    .worker_step = s_worker_step,
};
