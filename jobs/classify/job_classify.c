/* job_classify.c: the distributed classify job.
 *
 * Coordinator: opens the run (jobs/classify/classify_run.h: classes, manifest, the
 * identity shared with `wisp classify`, the results writer with resume) and commits
 * each shard's rows. Workers: run the classify pipeline (jobs/classify/classifier.h:
 * decode -> log-mel -> batched forward -> softmax, or windows of long audio) on the
 * shard's paths. A bad file is an error row, never a failed shard.
 *
 * SHARD payload: u32 C, u32 P (what the coordinator expects), then count paths.
 * RESULT payload per item: i32 label, f32 score, f64 duration, i32 status,
 * str error, and when status == 0: C probs, C logits, P embedding (P = 0 when
 * the embedding column is off), u32 capped (0/1), u32 n_windows, then per window f64 start,
 * f64 end, i32 label, f32 score, C probs. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "classify/classifier.h"
#include "classify/classify_run.h"
#include "dist/job.h"
#include "formats/manifest.h"
#include "formats/results.h"

typedef struct {
    wisp_classify_run_t *run;
    const wisp_manifest_t *man;
    int C, P;
    const char *const *classes;
    int32_t *pred;                 /* n: predicted label of rows committed this run (-2 none) */
    float *scratch;                /* (2C + P) row buffer */
    wisp_classifier_window_t *win; /* (win_cap) windows of one item */
    float *win_probs;              /* (win_cap, C) */
    size_t win_cap;
    char *desc; /* config JSON attribute */
    char output[WISP_JOBCFG_PATH_MAX];
} s_coord_t;

typedef struct {
    wisp_classifier_t *cl;
    int C, P, embed, batch;
    wisp_classifier_result_t *rows; /* batch */
    float *probs, *logits, *emb;    /* (batch, C), (batch, C), (batch, P) */
    const char **paths;             /* batch */
    char (*pathbuf)[WISP_JOBCFG_PATH_MAX];
} s_worker_t;

/* The window options of a job config. */
static int s_window_opts(const wisp_jobcfg_t *cfg, wisp_windows_opts_t *w, wisp_error_t *err)
{
    memset(w, 0, sizeof *w);
    w->seconds = cfg->classify_window;
    w->hop = cfg->classify_hop;
    int rc = wisp_windows_parse_aggregate(cfg->classify_aggregate, &w->aggregate, err);
    return rc ? rc : wisp_windows_check(w, err);
}

/* classify.precision of the job config; checked by the coordinator before it looks at the
 * output (a complete file must not hide a bad setting) and by every worker. */
static int s_precision(const wisp_jobcfg_t *cfg, int *precision, wisp_error_t *err)
{
    if (strcmp(cfg->classify_precision, "fp32") && strcmp(cfg->classify_precision, "int8"))
        return wisp_error_set(err, WISP_ERR_ARG, "classify.precision: '%s' is not fp32 or int8",
                              cfg->classify_precision);
    *precision =
        strcmp(cfg->classify_precision, "int8") ? WISP_PRECISION_FP32 : WISP_PRECISION_INT8;
    return WISP_OK;
}

/* ---- coordinator ---- */

static void s_coord_close(void **state)
{
    s_coord_t *s = state ? *state : NULL;
    if (!s)
        return;
    wisp_classify_run_destroy(&s->run);
    free(s->pred);
    free(s->scratch);
    free(s->win);
    free(s->win_probs);
    free(s->desc);
    free(s);
    *state = NULL;
}

static int s_coord_open(void **state, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                        wisp_error_t *err)
{
    int rc = WISP_OK;
    memset(plan, 0, sizeof *plan);
    s_coord_t *s = calloc(1, sizeof *s);
    if (!s)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    snprintf(s->output, sizeof s->output, "%s", cfg->output);
    wisp_classify_run_opts_t ro = {
        .model = cfg->model,
        .adapter = cfg->adapter,
        .head = cfg->head,
        .manifest = cfg->manifest,
        .output = cfg->output,
        .truncate = cfg->classify_truncate,
        .embedding = cfg->classify_embedding,
        .top_k = cfg->classify_top_k,
        .probe_durations = cfg->classify_probe_durations,
        .resume = resume,
        .skip_complete = 1,
    };
    if ((rc = s_window_opts(cfg, &ro.window, err)) != WISP_OK ||
        (rc = s_precision(cfg, &ro.precision, err)) != WISP_OK)
        goto done;
    if (!(s->desc = wisp_jobcfg_to_string(cfg))) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        goto done;
    }
    ro.config_json = s->desc;
    if (!(s->run = wisp_classify_run_open(&ro, err))) {
        rc = err && err->code ? err->code : WISP_ERR_IO;
        goto done;
    }
    s->man = wisp_classify_run_manifest(s->run);
    s->C = wisp_classify_run_num_classes(s->run);
    s->P = wisp_classify_run_embed_dim(s->run);
    s->classes = wisp_classify_run_classes(s->run);
    size_t n = s->man->n_items;
    const wisp_manifest_t *m = s->man;
    s->pred = malloc((n ? n : 1) * sizeof *s->pred);
    s->scratch = malloc((size_t)(2 * s->C + s->P + 1) * sizeof(float));
    plan->done = calloc(n ? n : 1, 1);
    /* Durations: known ones as given, unknown ones as the mean of the known (a
     * shard plan by seconds), or none at all (a plan by count: no 8 B per item). */
    if (m->n_duration_known)
        plan->seconds = malloc((n ? n : 1) * sizeof *plan->seconds);
    if (!s->pred || !s->scratch || !plan->done || (m->n_duration_known && !plan->seconds)) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory for %zu items", n);
        goto done;
    }
    double mean = m->n_duration_known ? m->total_duration / (double)m->n_duration_known : 0;
    wisp_results_t *res = wisp_classify_run_results(s->run);
    /* The summary and the exit status cover the whole file: rows an earlier run
     * committed count with their errors (res NULL: the file is complete already). */
    if (!wisp_classify_run_complete(s->run, &plan->n_errors_done))
        plan->n_errors_done = wisp_results_error_count(res);
    for (size_t i = 0; i < n; i++) {
        s->pred[i] = -2;
        plan->done[i] = res ? (uint8_t)wisp_results_row_done(res, i) : 1;
        if (plan->seconds)
            plan->seconds[i] = m->items[i].duration >= 0 ? m->items[i].duration : mean;
    }
    plan->n_items = n;
    *state = s;
    s = NULL;
done:
    if (rc)
        wisp_job_plan_free(plan);
    s_coord_close((void **)&s);
    return rc;
}

/* SHARD payload (layout at the top): the shapes the coordinator's file expects, so a
 * worker whose model disagrees refuses the shard instead of sending rows of another
 * width, then the shard's paths in item order. */
static int s_coord_payload(void *state, uint64_t first, uint32_t count, wisp_wbuf_t *out,
                           wisp_error_t *err)
{
    (void)err;
    s_coord_t *s = state;
    wisp_wbuf_u32(out, (uint32_t)s->C);
    wisp_wbuf_u32(out, (uint32_t)s->P);
    for (uint32_t i = 0; i < count; i++)
        wisp_wbuf_str(out, s->man->items[first + i].path);
    return WISP_OK;
}

/* Reads one item's windows into s->win / s->win_probs; the count is checked against
 * the bytes left before it sizes anything. 0, or -1 when malformed. */
static int s_read_windows(s_coord_t *s, wisp_rbuf_t *r, uint32_t n)
{
    /* a window is f64 start, f64 end, i32 label, f32 score, C f32 probs: 24 + 4C bytes */
    const size_t C = (size_t)s->C, each = 24 + 4 * C;
    if (n > WISP_RESULTS_MAX_SEGMENTS || r->left / each < n)
        return -1;
    if (n > s->win_cap) {
        wisp_classifier_window_t *w = realloc(s->win, n * sizeof *w);
        if (w)
            s->win = w;
        float *p = realloc(s->win_probs, n * C * sizeof *p);
        if (p)
            s->win_probs = p;
        if (!w || !p)
            return -1;
        s->win_cap = n;
    }
    for (uint32_t k = 0; k < n; k++) {
        s->win[k].start = wisp_rbuf_f64(r);
        s->win[k].end = wisp_rbuf_f64(r);
        s->win[k].label = wisp_rbuf_i32(r);
        s->win[k].score = wisp_rbuf_f32(r);
        wisp_rbuf_f32s(r, s->win_probs + k * C, C);
    }
    return r->failed ? -1 : 0;
}

/* Parses one item of a RESULT payload into f (views into s's buffers). The payload
 * comes off the network: every label must be -1 or in [0, C), a status 0 or a
 * negative WISP_ERR_* code (> -128), an ok row must carry a label, capped is 0/1. */
static int s_read_item(s_coord_t *s, wisp_rbuf_t *r, char *msg, size_t msg_size,
                       wisp_classify_file_t *f)
{
    const int C = s->C, P = s->P;
    memset(f, 0, sizeof *f);
    f->label = wisp_rbuf_i32(r);
    f->score = wisp_rbuf_f32(r);
    f->duration = wisp_rbuf_f64(r);
    f->status = wisp_rbuf_i32(r);
    wisp_rbuf_str(r, msg, msg_size);
    f->error = msg;
    if (f->status == 0 && !r->failed) {
        wisp_rbuf_f32s(r, s->scratch, (size_t)(2 * C + P));
        f->probs = s->scratch;
        f->logits = s->scratch + C;
        f->embedding = P ? s->scratch + 2 * C : NULL;
        uint32_t capped = wisp_rbuf_u32(r);
        f->capped = capped == 1;
        f->n_windows = wisp_rbuf_u32(r);
        if (r->failed || capped > 1 || s_read_windows(s, r, f->n_windows) != 0)
            return -1;
        f->windows = s->win;
        f->window_probs = s->win_probs;
        for (uint32_t k = 0; k < f->n_windows; k++)
            if (s->win[k].label < 0 || s->win[k].label >= C)
                return -1;
    }
    if (r->failed || f->label < -1 || f->label >= C || f->status > 0 || f->status < -127 ||
        (f->status == 0 && f->label < 0))
        return -1;
    return 0;
}

static int s_coord_commit(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                          uint32_t *n_errors, double *audio_s, wisp_error_t *err)
{
    s_coord_t *s = state;
    *n_errors = 0;
    *audio_s = 0;
    if (first > s->man->n_items || count > s->man->n_items - first)
        return wisp_error_set(err, WISP_ERR_FORMAT, "classify result: items outside the manifest");
    /* Validate the whole payload before storing anything: pass 0 only parses, pass 1
     * parses again and stores, so a malformed payload commits none of its rows (the
     * shard is re-leased whole) instead of some of them. */
    wisp_rbuf_t r;
    char msg[WISP_ERROR_MSG_MAX];
    for (int pass = 0; pass < 2; pass++) {
        wisp_rbuf_init(&r, p, n);
        for (uint32_t i = 0; i < count; i++) {
            wisp_classify_file_t f;
            if (s_read_item(s, &r, msg, sizeof msg, &f) != 0)
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "classify result: bad row for item %" PRIu64, first + i);
            if (pass == 0)
                continue;
            size_t item = (size_t)(first + i);
            int rc = wisp_classify_run_put(s->run, item, &f, err);
            if (rc < 0)
                return rc;
            s->pred[item] = f.status ? -1 : f.label;
            if (f.duration > 0)
                *audio_s += f.duration;
            *n_errors += f.status != 0;
        }
        if (r.left)
            return wisp_error_set(err, WISP_ERR_FORMAT, "classify result: %zu trailing bytes",
                                  r.left);
    }
    return WISP_OK;
}

static int s_coord_flush(void *state, wisp_error_t *err)
{
    s_coord_t *s = state;
    wisp_results_t *res = wisp_classify_run_results(s->run);
    return res ? wisp_results_commit(res, err) : WISP_OK;
}

/* Accuracy, per-class precision/recall and the confusion matrix over the rows
 * committed in this run (the HDF5 file's own metrics cover every row). */
static void s_metrics(const s_coord_t *s, cJSON *summary)
{
    const int C = s->C;
    /* conf (C, C): row = true class, column = predicted class */
    long *conf = calloc((size_t)C * (size_t)C, sizeof *conf);
    if (!conf)
        return;
    long evaluated = 0, correct = 0;
    for (size_t i = 0; i < s->man->n_items; i++) {
        int t = s->man->items[i].label, p = s->pred[i];
        if (t < 0 || p < 0)
            continue;
        evaluated++;
        correct += p == t;
        conf[(size_t)t * C + p]++;
    }
    cJSON_AddNumberToObject(summary, "evaluated", (double)evaluated);
    if (evaluated) {
        cJSON_AddNumberToObject(summary, "accuracy", (double)correct / (double)evaluated);
        cJSON *pc = cJSON_AddObjectToObject(summary, "per_class");
        cJSON *cm = cJSON_AddArrayToObject(summary, "confusion");
        for (int c = 0; pc && cm && c < C; c++) {
            long tp = conf[(size_t)c * C + c], pred = 0, truth = 0;
            cJSON *row = cJSON_CreateArray();
            for (int k = 0; k < C; k++) {
                pred += conf[(size_t)k * C + c];
                truth += conf[(size_t)c * C + k];
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)conf[(size_t)c * C + k]));
            }
            cJSON_AddItemToArray(cm, row);
            cJSON *o = cJSON_AddObjectToObject(pc, s->classes[c]);
            cJSON_AddNumberToObject(o, "precision", pred ? (double)tp / (double)pred : 0);
            cJSON_AddNumberToObject(o, "recall", truth ? (double)tp / (double)truth : 0);
        }
    }
    free(conf);
}

static int s_coord_finish(void *state, int complete, cJSON *summary, wisp_error_t *err)
{
    s_coord_t *s = state;
    wisp_results_t *res = wisp_classify_run_results(s->run);
    if (!res) { /* complete before this run started: the file stays as it is */
        cJSON_AddStringToObject(summary, "output", s->output);
        return WISP_OK;
    }
    if (!complete)
        return wisp_results_commit(res, err);
    if (s->man->n_labeled)
        s_metrics(s, summary);
    size_t capped = wisp_classify_run_capped(s->run);
    cJSON_AddNumberToObject(summary, "capped_at_30s", (double)capped);
    if (capped)
        WISP_LOGW("%zu file(s) longer than 30 s: only their first 30 s were classified (see the "
                  "note column; classify.window classifies all of it)",
                  capped);
    cJSON_AddStringToObject(summary, "output", s->output);
    char *text = cJSON_PrintUnformatted(summary);
    int rc = wisp_results_finish(res, text, 0, err);
    free(text);
    return rc;
}

/* ---- worker ---- */

static void s_worker_close(void **state)
{
    s_worker_t *w = state ? *state : NULL;
    if (!w)
        return;
    wisp_classifier_destroy(&w->cl);
    free(w->rows);
    free(w->probs);
    free(w->logits);
    free(w->emb);
    free(w->paths);
    free(w->pathbuf);
    free(w);
    *state = NULL;
}

static int s_worker_open(void **state, const wisp_jobcfg_t *cfg, const wisp_job_env_t *env,
                         wisp_error_t *err)
{
    s_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    wisp_classifier_opts_t o;
    wisp_classifier_default_opts(&o);
    o.model_dir = cfg->model;
    o.adapter_dir = cfg->adapter[0] ? cfg->adapter : NULL;
    o.head_dir = cfg->head[0] ? cfg->head : NULL;
    o.truncate = cfg->classify_truncate;
    o.embeddings = cfg->classify_embedding;
    o.batch = cfg->classify_batch_size;
    o.threads = env->threads;
    int rc = s_window_opts(cfg, &o.window, err);
    if (rc != WISP_OK) {
        s_worker_close((void **)&w);
        return rc;
    }
    if ((rc = s_precision(cfg, &o.precision, err)) != WISP_OK) {
        s_worker_close((void **)&w);
        return rc;
    }
    w->batch = o.batch;
    w->embed = o.embeddings;
    w->cl = wisp_classifier_new(&o, err);
    if (!w->cl) {
        s_worker_close((void **)&w);
        return err && err->code ? err->code : WISP_ERR_ARG;
    }
    w->C = wisp_classifier_num_classes(w->cl);
    w->P = wisp_classifier_embed_dim(w->cl);
    size_t B = (size_t)w->batch;
    w->rows = calloc(B, sizeof *w->rows);
    w->probs = malloc(B * (size_t)w->C * sizeof(float));
    w->logits = malloc(B * (size_t)w->C * sizeof(float));
    w->emb = malloc(B * (size_t)(w->P > 0 ? w->P : 1) * sizeof(float));
    w->paths = calloc(B, sizeof *w->paths);
    w->pathbuf = malloc(B * sizeof *w->pathbuf);
    if (!w->rows || !w->probs || !w->logits || !w->emb || !w->paths || !w->pathbuf) {
        s_worker_close((void **)&w);
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    }
    *state = w;
    return WISP_OK;
}

/* One item of the RESULT payload (layout at the top). */
static void s_write_item(wisp_wbuf_t *out, const s_worker_t *w, int j, uint32_t C, uint32_t P)
{
    wisp_classify_file_t f = wisp_classify_file_of(w->cl, w->rows, j, w->probs, w->logits, w->emb);
    wisp_wbuf_i32(out, f.status ? -1 : f.label);
    wisp_wbuf_f32(out, f.score);
    wisp_wbuf_f64(out, f.duration);
    wisp_wbuf_i32(out, f.status);
    wisp_wbuf_str(out, f.status ? f.error : "");
    if (f.status != 0)
        return;
    wisp_wbuf_f32s(out, f.probs, C);
    wisp_wbuf_f32s(out, f.logits, C);
    if (P)
        wisp_wbuf_f32s(out, f.embedding, P);
    wisp_wbuf_u32(out, f.capped ? 1 : 0);
    wisp_wbuf_u32(out, f.n_windows);
    for (uint32_t k = 0; k < f.n_windows; k++) {
        wisp_wbuf_f64(out, f.windows[k].start);
        wisp_wbuf_f64(out, f.windows[k].end);
        wisp_wbuf_i32(out, f.windows[k].label);
        wisp_wbuf_f32(out, f.windows[k].score);
        wisp_wbuf_f32s(out, f.window_probs + (size_t)k * C, C);
    }
}

static int s_worker_run(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                        wisp_wbuf_t *out, double *stage_seconds,
                        const wisp_job_progress_t *progress, wisp_error_t *err)
{
    s_worker_t *w = state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    uint32_t C = wisp_rbuf_u32(&r), P = wisp_rbuf_u32(&r);
    if (r.failed || (int)C != w->C || (P != 0 && (int)P != w->P) || (P != 0) != (w->embed != 0))
        return wisp_error_set(err, WISP_ERR_SHAPE,
                              "shard %" PRIu64
                              ": the coordinator expects %u classes and embedding %u, "
                              "this worker's model has %d and %d",
                              first, C, P, w->C, w->embed ? w->P : 0);
    /* The shard in pieces of at most `batch` files: the classifier's buffers hold one
     * piece (rows, probs, logits, emb: batch rows), and the progress callback between
     * pieces keeps the lease alive on long shards. */
    for (uint32_t done = 0; done < count;) {
        if (progress && progress->fn && progress->fn(progress->ctx, done))
            return WISP_ERR_INTERRUPTED;
        int k = count - done < (uint32_t)w->batch ? (int)(count - done) : w->batch;
        for (int j = 0; j < k; j++) {
            if (wisp_rbuf_str(&r, w->pathbuf[j], sizeof w->pathbuf[j]) != 0)
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "shard %" PRIu64 ": malformed path list", first);
            w->paths[j] = w->pathbuf[j];
        }
        double t0 = wisp_now();
        int rc = wisp_classifier_run(w->cl, w->paths, k, w->rows, w->probs, w->logits, w->emb, err);
        stage_seconds[0] += wisp_now() - t0;
        if (rc)
            return rc;
        for (int j = 0; j < k; j++)
            s_write_item(out, w, j, C, P);
        done += (uint32_t)k;
    }
    return WISP_OK;
}

const wisp_job_ops_t wisp_job_classify = {
    .name = "classify",
    .stages = {"classify", NULL},
    .steps = 0,
    .coord_open = s_coord_open,
    .coord_payload = s_coord_payload,
    .coord_commit = s_coord_commit,
    .coord_flush = s_coord_flush,
    .coord_finish = s_coord_finish,
    .coord_close = s_coord_close,
    .worker_open = s_worker_open,
    .worker_run = s_worker_run,
    .worker_close = s_worker_close,
};
