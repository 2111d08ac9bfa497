/* job_classify.c: the distributed classify job.
 *
 * Coordinator: loads the manifest (item ids = manifest order; class names from
 * the head's head_config.json, else the checkpoint's config.json), opens the
 * results writer (common/formats/results.h: journal + HDF5, resume with a fingerprint
 * check), and commits each shard's rows. Workers: run the classify pipeline
 * (jobs/classify/classifier.h: decode -> log-mel -> batched forward -> softmax) on the
 * shard's paths. A bad file is an error row, never a failed shard.
 *
 * SHARD payload: u32 C, u32 P (what the coordinator expects), then count paths.
 * RESULT payload per item: i32 label, f32 score, f64 duration, i32 status,
 * str error, and when status == 0: C probs, C logits, P embedding (P = 0 when
 * the embedding column is off). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify/classifier.h"
#include "formats/config.h"
#include "dist/job.h"
#include "base/log.h"
#include "formats/manifest.h"
#include "formats/results.h"
#include "base/util.h"

typedef struct {
    wisp_manifest_t man;
    wisp_results_t *res;
    int C, P;       /* classes, embedding width written (0: no column) */
    char **classes; /* C names */
    int32_t *pred;  /* n: predicted label of rows committed this run (-2 none) */
    float *scratch; /* (2C + P) row buffer */
    char *desc;     /* config JSON attribute */
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

/* ---- coordinator ---- */

static void s_coord_close(void **state)
{
    s_coord_t *s = state ? *state : NULL;
    if (!s)
        return;
    wisp_results_destroy(&s->res);
    wisp_manifest_free(&s->man);
    for (int c = 0; s->classes && c < s->C; c++)
        free(s->classes[c]);
    free(s->classes);
    free(s->pred);
    free(s->scratch);
    free(s->desc);
    free(s);
    *state = NULL;
}

/* Class names and embedding width: what the classifier on the workers will use. */
static int s_classes(s_coord_t *s, const wisp_jobcfg_t *cfg, int *proj, wisp_error_t *err)
{
    char path[WISP_JOBCFG_PATH_MAX + 32];
    char **names = NULL;
    int n = 0, rc;
    if (cfg->head[0]) {
        wisp_head_config_t h;
        memset(&h, 0, sizeof h);
        snprintf(path, sizeof path, "%s/head_config.json", cfg->head);
        if ((rc = wisp_head_config_load(&h, path, err)) != 0)
            return rc;
        n = h.num_labels;
        *proj = h.classifier_proj_size;
        names = calloc((size_t)n, sizeof *names);
        for (int c = 0; names && c < n; c++)
            names[c] = strdup(h.id2label[c]);
        wisp_head_config_free(&h);
    } else {
        wisp_whisper_config_t w;
        memset(&w, 0, sizeof w);
        snprintf(path, sizeof path, "%s/config.json", cfg->model);
        if ((rc = wisp_whisper_config_load(&w, path, err)) != 0)
            return rc;
        n = w.num_labels;
        *proj = w.classifier_proj_size;
        names = calloc((size_t)n, sizeof *names);
        for (int c = 0; names && c < n; c++)
            names[c] = strdup(w.id2label[c]);
        wisp_whisper_config_free(&w);
    }
    for (int c = 0; names && c < n; c++)
        if (!names[c]) {
            for (int k = 0; k < n; k++)
                free(names[k]);
            free(names);
            names = NULL;
        }
    if (!names)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    s->classes = names;
    s->C = n;
    return WISP_OK;
}

static void s_sha(const char *dir, const char *name, char hex[65])
{
    char path[WISP_JOBCFG_PATH_MAX + 64];
    hex[0] = '\0';
    if (!dir[0])
        return;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (access(path, R_OK) == 0)
        wisp_sha256_file(path, hex, NULL);
}

static int s_coord_open(void **state, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                        wisp_error_t *err)
{
    int rc = WISP_OK, proj = 0;
    char *all = NULL;
    memset(plan, 0, sizeof *plan);
    s_coord_t *s = calloc(1, sizeof *s);
    if (!s)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    snprintf(s->output, sizeof s->output, "%s", cfg->output);
    if ((rc = s_classes(s, cfg, &proj, err)) != 0)
        goto done;
    s->P = cfg->classify_embedding ? proj : 0;
    wisp_manifest_opts_t mo = wisp_manifest_default_opts();
    mo.classes = (const char *const *)s->classes;
    mo.n_classes = s->C;
    mo.probe_durations = cfg->classify_probe_durations;
    if ((rc = wisp_manifest_load_opts(&s->man, cfg->manifest, &mo, err)) != 0)
        goto done;
    size_t n = s->man.n_items;
    char msha[65], asha[65], hsha[65], fp[65];
    s_sha(cfg->model, "model.safetensors", msha);
    if (!msha[0])
        s_sha(cfg->model, "model.safetensors.index.json", msha);
    s_sha(cfg->adapter, "adapter.safetensors", asha);
    s_sha(cfg->head, "model_head.safetensors", hsha);
    size_t len = 4 * 65 + 64;
    for (size_t i = 0; i < n; i++)
        len += strlen(s->man.items[i].path) + 1;
    all = malloc(len);
    s->desc = wisp_jobcfg_to_string(cfg);
    s->pred = malloc((n ? n : 1) * sizeof *s->pred);
    s->scratch = malloc((size_t)(2 * s->C + s->P + 1) * sizeof(float));
    plan->done = calloc(n ? n : 1, 1);
    plan->seconds = malloc((n ? n : 1) * sizeof *plan->seconds);
    if (!all || !s->desc || !s->pred || !s->scratch || !plan->done || !plan->seconds) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory for %zu items", n);
        goto done;
    }
    size_t off = (size_t)snprintf(all, len, "%s|%s|%s|%d|%d|%d|", msha, asha, hsha,
                                  cfg->classify_truncate, s->P, s->C);
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(all + off, len - off, "%s\n", s->man.items[i].path);
    wisp_sha256_hex(all, strlen(all), fp);
    wisp_results_attr_t attrs[4] = {{"config", s->desc},
                                    {"model_sha256", msha},
                                    {"adapter_sha256", asha},
                                    {"head_sha256", hsha}};
    wisp_results_opts_t ro = wisp_results_default_opts();
    ro.path = cfg->output;
    ro.n_rows = n;
    ro.n_classes = s->C;
    ro.classes = (const char *const *)s->classes;
    ro.embed_dim = s->P;
    ro.has_true_label = s->man.n_labeled > 0;
    ro.fingerprint = fp;
    ro.resume = resume;
    ro.attrs = attrs;
    ro.n_attrs = 4;
    s->res = wisp_results_open(&ro, err);
    if (!s->res) {
        rc = err && err->code ? err->code : WISP_ERR_IO;
        goto done;
    }
    /* Durations: known ones as given, unknown ones as the mean of the known (a
     * shard plan by seconds), or none at all (a plan by count). */
    double mean =
        s->man.n_duration_known ? s->man.total_duration / (double)s->man.n_duration_known : 0;
    for (size_t i = 0; i < n; i++) {
        s->pred[i] = -2;
        plan->done[i] = (uint8_t)wisp_results_row_done(s->res, i);
        plan->seconds[i] = s->man.items[i].duration >= 0 ? s->man.items[i].duration : mean;
    }
    if (!s->man.n_duration_known) {
        free(plan->seconds);
        plan->seconds = NULL;
    }
    plan->n_items = n;
    *state = s;
    s = NULL;
done:
    free(all);
    if (rc)
        wisp_job_plan_free(plan);
    s_coord_close((void **)&s);
    return rc;
}

static int s_coord_payload(void *state, uint64_t first, uint32_t count, wisp_wbuf_t *out,
                           wisp_error_t *err)
{
    (void)err;
    s_coord_t *s = state;
    wisp_wbuf_u32(out, (uint32_t)s->C);
    wisp_wbuf_u32(out, (uint32_t)s->P);
    for (uint32_t i = 0; i < count; i++)
        wisp_wbuf_str(out, s->man.items[first + i].path);
    return WISP_OK;
}

static int s_coord_commit(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                          uint32_t *n_errors, double *audio_s, wisp_error_t *err)
{
    s_coord_t *s = state;
    const int C = s->C, P = s->P;
    *n_errors = 0;
    *audio_s = 0;
    if (first > s->man.n_items || count > s->man.n_items - first)
        return wisp_error_set(err, WISP_ERR_FORMAT, "classify result: items outside the manifest");
    /* Validate the whole payload before storing anything. */
    wisp_rbuf_t r;
    char msg[WISP_ERROR_MSG_MAX];
    for (int pass = 0; pass < 2; pass++) {
        wisp_rbuf_init(&r, p, n);
        for (uint32_t i = 0; i < count; i++) {
            int32_t label = wisp_rbuf_i32(&r);
            float score = wisp_rbuf_f32(&r);
            double duration = wisp_rbuf_f64(&r);
            int32_t status = wisp_rbuf_i32(&r);
            wisp_rbuf_str(&r, msg, sizeof msg);
            if (status == 0)
                wisp_rbuf_f32s(&r, s->scratch, (size_t)(2 * C + P));
            if (r.failed || label < -1 || label >= C || status > 0 || status < -127 ||
                (status == 0 && label < 0))
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "classify result: bad row for item %" PRIu64, first + i);
            if (pass == 0)
                continue;
            size_t item = (size_t)(first + i);
            wisp_result_row_t row = {
                .index = item,
                .path = s->man.items[item].path,
                .label = label,
                .score = score,
                .probs = status ? NULL : s->scratch,
                .logits = status ? NULL : s->scratch + C,
                .embedding = status || !P ? NULL : s->scratch + 2 * C,
                .duration = (float)duration,
                .status = (int8_t)status,
                .error = msg,
                .true_label = s->man.items[item].label,
            };
            int rc = wisp_results_put(s->res, &row, err);
            if (rc < 0)
                return rc;
            s->pred[item] = status ? -1 : label;
            if (duration > 0)
                *audio_s += duration;
            *n_errors += status != 0;
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
    return wisp_results_commit(s->res, err);
}

/* Accuracy, per-class precision/recall and the confusion matrix over the rows
 * committed in this run (the HDF5 file's own metrics cover every row). */
static void s_metrics(const s_coord_t *s, cJSON *summary)
{
    const int C = s->C;
    long *conf = calloc((size_t)C * (size_t)C, sizeof *conf);
    if (!conf)
        return;
    long evaluated = 0, correct = 0;
    for (size_t i = 0; i < s->man.n_items; i++) {
        int t = s->man.items[i].label, p = s->pred[i];
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
    if (!complete)
        return wisp_results_commit(s->res, err);
    if (s->man.n_labeled)
        s_metrics(s, summary);
    cJSON_AddStringToObject(summary, "output", s->output);
    char *text = cJSON_PrintUnformatted(summary);
    int rc = wisp_results_finish(s->res, text, 0, err);
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
    if (strcmp(cfg->classify_precision, "fp32") && strcmp(cfg->classify_precision, "int8")) {
        free(w);
        return wisp_error_set(err, WISP_ERR_ARG, "classify.precision: '%s' is not fp32 or int8",
                              cfg->classify_precision);
    }
    o.precision =
        strcmp(cfg->classify_precision, "int8") ? WISP_PRECISION_FP32 : WISP_PRECISION_INT8;
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
        for (int j = 0; j < k; j++) {
            const wisp_classifier_result_t *res = &w->rows[j];
            wisp_wbuf_i32(out, res->status ? -1 : res->label);
            wisp_wbuf_f32(out, res->score);
            wisp_wbuf_f64(out, res->duration);
            wisp_wbuf_i32(out, res->status);
            wisp_wbuf_str(out, res->status ? res->error : "");
            if (res->status == 0) {
                wisp_wbuf_f32s(out, w->probs + (size_t)j * C, C);
                wisp_wbuf_f32s(out, w->logits + (size_t)j * C, C);
                if (P)
                    wisp_wbuf_f32s(out, w->emb + (size_t)j * P, P);
            }
        }
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
