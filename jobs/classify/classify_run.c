/* classify_run.c: the identity and the output of a classify run (classify_run.h). */
#include "classify/classify_run.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/log.h"
#include "base/util.h"
#include "formats/config.h"
#include "formats/h5util.h"

struct wisp_classify_run {
    wisp_manifest_t man;
    int have_man;
    const char *const *paths; /* (n) the caller's, when no manifest */
    size_t n;
    char **classes; /* (C) */
    int C, P, P_head;
    wisp_results_t *res;
    int complete;            /* skip_complete: OUT.h5 is this run's finished file */
    int64_t complete_errors; /* its n_error attribute */
    char fingerprint[65];
    size_t capped;
    wisp_result_segment_t *seg; /* scratch for one row's segments */
    size_t seg_cap;
};

/* Class names and embedding width from the head directory, else the checkpoint. */
static int s_classes(wisp_classify_run_t *s, const char *model, const char *head, wisp_error_t *err)
{
    char path[4096];
    char *const *src = NULL;
    int rc, n = 0;
    wisp_head_config_t h;
    wisp_whisper_config_t w;
    memset(&h, 0, sizeof h);
    memset(&w, 0, sizeof w);
    if (head) {
        if (wisp_path_join(path, sizeof path, head, "head_config.json") != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", head);
        if ((rc = wisp_head_config_load(&h, path, err)) != WISP_OK)
            return rc;
        n = h.num_labels;
        s->P_head = h.classifier_proj_size;
        src = h.id2label;
    } else {
        if (wisp_path_join(path, sizeof path, model, "config.json") != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", model);
        if ((rc = wisp_whisper_config_load(&w, path, err)) != WISP_OK)
            return rc;
        n = w.num_labels;
        s->P_head = w.classifier_proj_size;
        src = w.id2label;
    }
    rc = WISP_OK;
    s->classes = calloc(n > 0 ? (size_t)n : 1, sizeof *s->classes);
    for (int c = 0; s->classes && c < n; c++)
        if (!(s->classes[c] = strdup(src[c])))
            rc = WISP_ERR_NOMEM;
    if (!s->classes || rc)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    s->C = n;
    wisp_head_config_free(&h);
    wisp_whisper_config_free(&w);
    return rc;
}

/* sha256 of the first existing file among dir/names; "" when none (or no dir). */
static void s_dir_sha(const char *dir, const char *const *names, char hex[65])
{
    hex[0] = '\0';
    for (int i = 0; dir && names[i]; i++) {
        char path[4096];
        if (wisp_path_join(path, sizeof path, dir, names[i]) == WISP_OK &&
            access(path, R_OK) == 0 && wisp_sha256_file(path, hex, NULL) == WISP_OK)
            return;
    }
}

/* The features part of the identity, also the "features" attribute. */
static char *s_features_json(const wisp_classify_run_opts_t *o)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddBoolToObject(j, "truncate", o->truncate);
    cJSON_AddNumberToObject(j, "window_seconds", o->window.seconds);
    cJSON_AddNumberToObject(j, "hop_seconds", o->window.seconds > 0 ? o->window.hop : 0);
    cJSON_AddStringToObject(j, "aggregate", wisp_windows_aggregate_name(o->window.aggregate));
    cJSON_AddNumberToObject(j, "top_k", o->top_k);
    /* Only when not fp32, so fp32 runs keep the identity (and the resumable journals) they
     * had before precision was an option. */
    if (o->precision == WISP_PRECISION_INT8)
        cJSON_AddStringToObject(j, "precision", "int8");
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

/* fingerprint = sha256("model|adapter|head|features|P|C|" + classes + paths): what a
 * resume must match before it takes a journal's rows. The weights count by content
 * (sha[]: a moved checkpoint still resumes, a retrained one does not), then how the
 * features are made, the row shapes, the class names in id order ('\t' after each) and
 * the inputs in row order ('\n' after each). Hashed as a stream, piece by piece: the
 * same digest as of the concatenation, without a transient copy of every path (at
 * 10^7 items that copy was the start-up's peak) and without formatting each one. */
static void s_fingerprint(wisp_classify_run_t *s, const char *const sha[3], const char *features)
{
    wisp_sha256_t c;
    wisp_sha256_init(&c);
    for (int k = 0; k < 3; k++) {
        wisp_sha256_update(&c, sha[k], strlen(sha[k]));
        wisp_sha256_update(&c, "|", 1);
    }
    char nums[64];
    int len = snprintf(nums, sizeof nums, "|%d|%d|", s->P, s->C);
    wisp_sha256_update(&c, features, strlen(features));
    wisp_sha256_update(&c, nums, (size_t)len);
    for (int k = 0; k < s->C; k++) {
        wisp_sha256_update(&c, s->classes[k], strlen(s->classes[k]));
        wisp_sha256_update(&c, "\t", 1);
    }
    for (size_t i = 0; i < s->n; i++) {
        const char *p = wisp_classify_run_path(s, i);
        wisp_sha256_update(&c, p, strlen(p));
        wisp_sha256_update(&c, "\n", 1);
    }
    wisp_sha256_final(&c, s->fingerprint);
}

static int s_items(wisp_classify_run_t *s, const wisp_classify_run_opts_t *o, wisp_error_t *err)
{
    if (!o->manifest) {
        if (o->n_paths < 1 || !o->paths)
            return wisp_error_set(err, WISP_ERR_ARG, "classify: no input files");
        s->paths = o->paths;
        s->n = o->n_paths;
        return WISP_OK;
    }
    wisp_manifest_opts_t mo = wisp_manifest_default_opts();
    mo.classes = (const char *const *)s->classes;
    mo.n_classes = s->C;
    mo.probe_durations = o->probe_durations;
    int rc = wisp_manifest_load_opts(&s->man, o->manifest, &mo, err);
    if (rc != WISP_OK)
        return rc;
    s->have_man = 1;
    s->n = s->man.n_items;
    return WISP_OK;
}

static int s_open_results(wisp_classify_run_t *s, const wisp_classify_run_opts_t *o,
                          wisp_error_t *err)
{
    static const char *const model_files[] = {"model.safetensors", "model.safetensors.index.json",
                                              NULL};
    static const char *const adapter_files[] = {"adapter.safetensors", NULL};
    static const char *const head_files[] = {"model_head.safetensors", NULL};
    char msha[65], asha[65], hsha[65];
    s_dir_sha(o->model, model_files, msha);
    s_dir_sha(o->adapter, adapter_files, asha);
    s_dir_sha(o->head, head_files, hsha);
    char *features = s_features_json(o);
    if (!features)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    const char *const sha[3] = {msha, asha, hsha};
    s_fingerprint(s, sha, features);
    int rc = WISP_OK;
    if (o->resume && o->skip_complete && wisp_results_is_complete(o->output, s->fingerprint)) {
        /* A coordinator killed after finishing (in its linger) left the final file
         * and no journal: a rerun would start the whole job again. */
        s->complete = 1;
        hid_t f = H5Fopen(o->output, H5F_ACC_RDONLY, H5P_DEFAULT);
        wisp_error_t e = {0};
        if (f < 0 || wisp_h5_attr_get_i64(f, "n_error", &s->complete_errors, o->output, &e) != 0 ||
            s->complete_errors < 0)
            s->complete_errors = 0;
        if (f >= 0)
            H5Fclose(f);
        H5Eclear2(H5E_DEFAULT);
        WISP_LOGI("%s: already complete for this run (same models, features and items): "
                  "nothing to do (--fresh recomputes it)",
                  o->output);
        /* Killed between the final rename and the journal's removal: the journal only
         * repeats the final file's rows. */
        char journal[4096];
        if ((size_t)snprintf(journal, sizeof journal, "%s.commit", o->output) < sizeof journal &&
            unlink(journal) == 0)
            WISP_LOGI("%s: removed the journal of the finished file", journal);
    } else if (rc == WISP_OK) {
        wisp_results_attr_t attrs[5] = {{"config", o->config_json ? o->config_json : "{}"},
                                        {"model_sha256", msha},
                                        {"adapter_sha256", asha},
                                        {"head_sha256", hsha},
                                        {"features", features}};
        wisp_results_opts_t ro = wisp_results_default_opts();
        ro.path = o->output;
        ro.n_rows = s->n;
        ro.n_classes = s->C;
        ro.classes = (const char *const *)s->classes;
        ro.embed_dim = s->P;
        ro.has_true_label = s->have_man && s->man.n_labeled > 0;
        ro.fingerprint = s->fingerprint;
        ro.resume = o->resume;
        ro.attrs = attrs;
        ro.n_attrs = 5;
        ro.top_k = o->top_k;
        ro.segments = o->window.seconds > 0;
        s->res = wisp_results_open(&ro, err);
        if (!s->res)
            rc = err && err->code ? err->code : WISP_ERR_IO;
    }
    free(features);
    return rc;
}

wisp_classify_run_t *wisp_classify_run_open(const wisp_classify_run_opts_t *opts, wisp_error_t *err)
{
    wisp_classify_run_opts_t o = *opts;
    if (o.adapter && !o.adapter[0])
        o.adapter = NULL;
    if (o.head && !o.head[0])
        o.head = NULL;
    wisp_classify_run_t *s = calloc(1, sizeof *s);
    if (!s) {
        wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!o.model || !o.model[0] || !o.output || !o.output[0]) {
        wisp_error_set(err, WISP_ERR_ARG, "classify: a model and an output are required");
        goto fail;
    }
    /* The features mode a trained head expects: refused here, before any worker starts. */
    if (wisp_windows_check(&o.window, err) != WISP_OK ||
        wisp_feature_settings_check(o.head, o.truncate, err) != WISP_OK ||
        wisp_feature_settings_check(o.adapter, o.truncate, err) != WISP_OK ||
        wisp_feature_settings_check_window(o.head, o.window.seconds, err) != WISP_OK ||
        wisp_feature_settings_check_window(o.adapter, o.window.seconds, err) != WISP_OK ||
        s_classes(s, o.model, o.head, err) != 0)
        goto fail;
    if (o.top_k < 0 || o.top_k > s->C) {
        wisp_error_set(err, WISP_ERR_ARG, "top_k %d: the head has %d classes", o.top_k, s->C);
        goto fail;
    }
    s->P = o.embedding ? s->P_head : 0;
    if (s_items(s, &o, err) != WISP_OK || s_open_results(s, &o, err) != WISP_OK)
        goto fail;
    return s;
fail:
    wisp_classify_run_destroy(&s);
    return NULL;
}

void wisp_classify_run_destroy(wisp_classify_run_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_classify_run_t *s = *pself;
    wisp_results_destroy(&s->res);
    if (s->have_man)
        wisp_manifest_free(&s->man);
    for (int c = 0; s->classes && c < s->C; c++)
        free(s->classes[c]);
    free(s->classes);
    free(s->seg);
    free(s);
    *pself = NULL;
}

size_t wisp_classify_run_count(const wisp_classify_run_t *self)
{
    return self->n;
}

const char *wisp_classify_run_path(const wisp_classify_run_t *self, size_t item)
{
    if (item >= self->n)
        return NULL;
    return self->have_man ? self->man.items[item].path : self->paths[item];
}

const wisp_manifest_t *wisp_classify_run_manifest(const wisp_classify_run_t *self)
{
    return self->have_man ? &self->man : NULL;
}

int wisp_classify_run_num_classes(const wisp_classify_run_t *self)
{
    return self->C;
}

const char *const *wisp_classify_run_classes(const wisp_classify_run_t *self)
{
    return (const char *const *)self->classes;
}

int wisp_classify_run_embed_dim(const wisp_classify_run_t *self)
{
    return self->P;
}

int wisp_classify_run_head_embed_dim(const wisp_classify_run_t *self)
{
    return self->P_head;
}

wisp_results_t *wisp_classify_run_results(wisp_classify_run_t *self)
{
    return self->res;
}

int wisp_classify_run_complete(const wisp_classify_run_t *self, size_t *n_error)
{
    if (n_error)
        *n_error = self->complete ? (size_t)self->complete_errors : 0;
    return self->complete;
}

const char *wisp_classify_run_fingerprint(const wisp_classify_run_t *self)
{
    return self->fingerprint;
}

size_t wisp_classify_run_capped(const wisp_classify_run_t *self)
{
    return self->capped;
}

int wisp_classify_run_put(wisp_classify_run_t *self, size_t item, const wisp_classify_file_t *f,
                          wisp_error_t *err)
{
    if (item >= self->n)
        return wisp_error_set(err, WISP_ERR_ARG, "classify: item %zu of %zu", item, self->n);
    char note[160] = "";
    int ok = f->status == 0;
    if (ok && f->capped)
        snprintf(note, sizeof note,
                 "first 30 s of %.1f s classified (classify.window / --window covers all of it)",
                 f->duration);
    if (ok && f->n_windows > self->seg_cap) {
        wisp_result_segment_t *g = realloc(self->seg, f->n_windows * sizeof *g);
        if (!g)
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        self->seg = g;
        self->seg_cap = f->n_windows;
    }
    for (uint32_t k = 0; ok && k < f->n_windows; k++)
        self->seg[k] = (wisp_result_segment_t){.start = f->windows[k].start,
                                               .end = f->windows[k].end,
                                               .label = f->windows[k].label,
                                               .score = f->windows[k].score,
                                               .probs = f->window_probs + (size_t)k * self->C};
    wisp_result_row_t row = {
        .index = item,
        .path = wisp_classify_run_path(self, item),
        .label = f->label,
        .score = f->score,
        .probs = ok ? f->probs : NULL,
        .logits = ok ? f->logits : NULL,
        .embedding = ok && self->P ? f->embedding : NULL,
        .duration = (float)f->duration,
        .status = (int8_t)f->status,
        .error = f->error,
        .note = note,
        .true_label = self->have_man ? self->man.items[item].label : -1,
        .segments = ok ? self->seg : NULL,
        .n_segments = ok ? f->n_windows : 0,
    };
    int rc = wisp_results_put(self->res, &row, err);
    if (rc == WISP_OK && ok && f->capped)
        self->capped++;
    return rc;
}

wisp_classify_file_t wisp_classify_file_of(const wisp_classifier_t *cl,
                                           const wisp_classifier_result_t *results, int k,
                                           const float *probs, const float *logits,
                                           const float *embed)
{
    const wisp_classifier_result_t *r = &results[k];
    const size_t C = (size_t)wisp_classifier_num_classes(cl);
    const size_t P = (size_t)wisp_classifier_embed_dim(cl);
    const float *wprobs = NULL;
    size_t n_win = 0;
    const wisp_classifier_window_t *win = wisp_classifier_windows(cl, &wprobs, &n_win);
    int ok = r->status == 0;
    return (wisp_classify_file_t){
        .label = ok ? r->label : -1,
        .score = r->score,
        .duration = r->duration,
        .status = r->status,
        .error = r->error,
        .capped = r->capped,
        .probs = ok ? probs + (size_t)k * C : NULL,
        .logits = ok ? logits + (size_t)k * C : NULL,
        .embedding = ok && embed ? embed + (size_t)k * P : NULL,
        .windows = ok && r->n_windows ? win + r->first_window : NULL,
        .window_probs = ok && r->n_windows ? wprobs + r->first_window * C : NULL,
        .n_windows = ok ? r->n_windows : 0,
    };
}
