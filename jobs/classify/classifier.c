/* classifier.c: decode -> log-mel -> batched forward -> softmax (see classifier.h). */
#include "classify/classifier.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/features.h"
#include "formats/config.h"
#include "base/log.h"
#include "audio/mel.h" /* WISP_N_FRAMES */
#include "base/util.h"

struct wisp_classifier {
    wisp_classifier_opts_t opts; /* copy; string members not used after _new */
    wisp_model_t *model;
    wisp_features_t *feat;
    int n_mels;
    int num_labels;   /* C */
    int embed_dim;    /* P */
    int max_frames;   /* longest clip in frames: min(3000, 2 * max_source_positions) */
    float *clip_mel;  /* (batch, n_mels, 3000) decoded features of the current chunk */
    int *frames;      /* (batch) frame count of each decoded clip, 0: failed */
    float *batch_mel; /* (batch, n_mels, 3000) one equal-length forward batch */
    float *logits;    /* (batch, C) */
    float *embed;     /* (batch, P) */
};

void wisp_classifier_default_opts(wisp_classifier_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 8;
}

wisp_classifier_t *wisp_classifier_new(const wisp_classifier_opts_t *opts, wisp_error_t *err)
{
    if (!opts || !opts->model_dir || opts->batch < 1) {
        wisp_error_set(err, WISP_ERR_ARG, "classifier: %s",
                       !opts || !opts->model_dir ? "no model directory" : "batch < 1");
        return NULL;
    }
    wisp_classifier_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    /* Frames the model's positions allow (tiny test models have fewer than 1500). */
    wisp_whisper_config_t wc;
    char cpath[4096];
    memset(&wc, 0, sizeof wc);
    if (wisp_path_join(cpath, sizeof cpath, opts->model_dir, "config.json") != WISP_OK ||
        wisp_whisper_config_load(&wc, cpath, err) != WISP_OK)
        goto fail;
    self->max_frames =
        2 * wc.max_source_positions < WISP_N_FRAMES ? 2 * wc.max_source_positions : WISP_N_FRAMES;
    wisp_whisper_config_free(&wc);
    if (!opts->truncate && self->max_frames < WISP_N_FRAMES) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                       "%s: max_source_positions %d is too small for padded 30 s input; use "
                       "truncated mode (--truncate)",
                       cpath, self->max_frames / 2);
        goto fail;
    }
    wisp_model_opts_t mo = {.max_batch = opts->batch,
                            .max_frames = self->max_frames,
                            .training = 0,
                            .threads = opts->threads,
                            .precision = opts->precision};
    self->model = wisp_model_new(opts->model_dir, &mo, err);
    if (!self->model)
        goto fail;
    if (opts->adapter_dir && wisp_model_load_adapter(self->model, opts->adapter_dir, err))
        goto fail;
    if (opts->head_dir && wisp_model_load_head(self->model, opts->head_dir, err))
        goto fail;
    const wisp_head_config_t *hc = wisp_model_head(self->model);
    if (!hc) {
        wisp_error_set(err, WISP_ERR_NOTFOUND,
                       "%s: no classification head in the checkpoint; give one with --head DIR",
                       opts->model_dir);
        goto fail;
    }
    self->num_labels = hc->num_labels;
    self->embed_dim = hc->classifier_proj_size;
    self->n_mels = wisp_model_config(self->model)->num_mel_bins;
    self->feat = wisp_features_new(self->n_mels, opts->truncate, self->max_frames, err);
    if (!self->feat)
        goto fail;
    size_t per_clip = (size_t)self->n_mels * self->max_frames;
    size_t B = (size_t)opts->batch;
    self->clip_mel = wisp_alloc(B * per_clip * sizeof(float));
    self->batch_mel = wisp_alloc(B * per_clip * sizeof(float));
    self->frames = calloc(B, sizeof(int));
    self->logits = calloc(B * (size_t)self->num_labels, sizeof(float));
    self->embed = calloc(B * (size_t)self->embed_dim, sizeof(float));
    if (!self->clip_mel || !self->batch_mel || !self->frames || !self->logits || !self->embed) {
        wisp_error_set(err, WISP_ERR_NOMEM, "classifier: out of memory");
        goto fail;
    }
    self->opts.model_dir = self->opts.adapter_dir = self->opts.head_dir = NULL;
    return self;
fail:
    wisp_classifier_destroy(&self);
    return NULL;
}

void wisp_classifier_destroy(wisp_classifier_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_classifier_t *self = *pself;
    wisp_model_destroy(&self->model);
    wisp_features_destroy(&self->feat);
    wisp_free(self->clip_mel);
    wisp_free(self->batch_mel);
    free(self->frames);
    free(self->logits);
    free(self->embed);
    free(self);
    *pself = NULL;
}

int wisp_classifier_num_classes(const wisp_classifier_t *self)
{
    return self->num_labels;
}

const char *wisp_classifier_class_name(const wisp_classifier_t *self, int i)
{
    const wisp_head_config_t *hc = wisp_model_head(self->model);
    if (i < 0 || i >= hc->num_labels || !hc->id2label)
        return NULL;
    return hc->id2label[i];
}

int wisp_classifier_embed_dim(const wisp_classifier_t *self)
{
    return self->embed_dim;
}
wisp_model_t *wisp_classifier_model(wisp_classifier_t *self)
{
    return self->model;
}

static void s_fill_nan(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = NAN;
}

/* Softmax in double (the max subtracted first), label = argmax, score = its prob. */
static void s_finish_row(const float *z, int C, float *probs, int *label, float *score)
{
    int best = 0;
    for (int c = 1; c < C; c++)
        if (z[c] > z[best])
            best = c;
    double mx = z[best], se = 0.0;
    for (int c = 0; c < C; c++)
        se += exp((double)z[c] - mx);
    for (int c = 0; c < C; c++)
        probs[c] = (float)(exp((double)z[c] - mx) / se);
    *label = best;
    *score = probs[best];
}

int wisp_classifier_run(wisp_classifier_t *self, const char *const *paths, int n,
                        wisp_classifier_result_t *results, float *probs, float *logits,
                        float *embed, wisp_error_t *err)
{
    const int C = self->num_labels, P = self->embed_dim, cap = self->opts.batch;
    const size_t per_clip = (size_t)self->n_mels * self->max_frames;
    float *emb_out = self->opts.embeddings ? embed : NULL;
    for (int start = 0; start < n; start += cap) {
        int count = n - start < cap ? n - start : cap;
        /* Decode the chunk; failures become error rows right away. */
        for (int k = 0; k < count; k++) {
            int i = start + k;
            wisp_classifier_result_t *r = &results[i];
            wisp_features_info_t info;
            wisp_error_t e = {0};
            memset(r, 0, sizeof *r);
            self->frames[k] = 0;
            int rc = wisp_features_file(self->feat, paths[i], self->clip_mel + (size_t)k * per_clip,
                                        &info, &e);
            if (rc != WISP_OK) {
                r->label = -1;
                r->score = NAN;
                r->duration = -1.0;
                r->status = rc;
                snprintf(r->error, sizeof r->error, "%s", e.msg[0] ? e.msg : wisp_strerror(rc));
                s_fill_nan(probs + (size_t)i * C, (size_t)C);
                s_fill_nan(logits + (size_t)i * C, (size_t)C);
                if (emb_out)
                    s_fill_nan(emb_out + (size_t)i * P, (size_t)P);
                WISP_LOGW("%s", r->error);
                continue;
            }
            r->duration = info.duration;
            self->frames[k] = info.frames;
        }
        /* Forward equal-length clips together (all of them in padded mode). */
        for (int k = 0; k < count; k++) {
            int frames = self->frames[k];
            if (frames == 0)
                continue;
            int B = 0;
            for (int j = k; j < count; j++) {
                if (self->frames[j] != frames)
                    continue;
                memcpy(self->batch_mel + (size_t)B * self->n_mels * frames,
                       self->clip_mel + (size_t)j * per_clip,
                       (size_t)self->n_mels * frames * sizeof(float));
                self->frames[j] = -frames; /* taken; restored to 0 below */
                B++;
            }
            int rc = wisp_model_forward(self->model, self->batch_mel, B, frames, self->logits,
                                        emb_out ? self->embed : NULL);
            if (rc != WISP_OK)
                return wisp_error_set(err, rc, "classifier: forward failed (%s)",
                                      wisp_strerror(rc));
            int b = 0;
            for (int j = k; j < count; j++) {
                if (self->frames[j] != -frames)
                    continue;
                int i = start + j;
                wisp_classifier_result_t *r = &results[i];
                const float *z = self->logits + (size_t)b * C;
                memcpy(logits + (size_t)i * C, z, (size_t)C * sizeof(float));
                s_finish_row(z, C, probs + (size_t)i * C, &r->label, &r->score);
                if (emb_out)
                    memcpy(emb_out + (size_t)i * P, self->embed + (size_t)b * P,
                           (size_t)P * sizeof(float));
                r->status = WISP_OK;
                r->error[0] = '\0';
                self->frames[j] = 0;
                b++;
            }
        }
    }
    return WISP_OK;
}
