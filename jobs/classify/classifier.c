/* classifier.c: decode -> log-mel -> batched forward -> softmax (see classifier.h). */
#include "classify/classifier.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio.h"
#include "audio/features.h"
#include "audio/mel.h" /* WISP_N_FRAMES */
#include "base/log.h"
#include "base/util.h"
#include "formats/config.h"
#include "formats/results.h" /* WISP_RESULTS_MAX_SEGMENTS */

struct wisp_classifier {
    wisp_classifier_opts_t opts; /* copy; string members not used after _new */
    wisp_model_t *model;
    wisp_features_t *feat;
    int n_mels;
    int num_labels;              /* C */
    int embed_dim;               /* P */
    int max_frames;              /* longest clip in frames: min(3000, 2 * max_source_positions) */
    float *clip_mel;             /* (batch, n_mels, 3000) features queued for the forward (slots) */
    int *frames;                 /* (batch) frame count of each queued slot, 0: empty */
    size_t *slot_row;            /* (batch) the output row a slot's forward result goes to */
    wisp_features_clip_t *clips; /* (batch) the filled slots, label = slot index */
    int *order;                  /* (batch) clips by frame count (wisp_features_order) */
    int *batch_slot;             /* (batch) slot of each clip of the forward batch */
    float *batch_mel;            /* (batch, n_mels, frames) one equal-length forward batch */
    float *logits;               /* (batch, C) */
    float *embed;                /* (batch, P) */
    /* windows mode */
    size_t win_n, hop_n;                     /* window and hop in samples */
    wisp_classifier_window_t *win;           /* (win_cap) windows of the current run */
    float *win_probs, *win_logits, *win_emb; /* (win_cap, C), (win_cap, C), (win_cap, P) */
    size_t n_win, win_cap;
};

void wisp_classifier_default_opts(wisp_classifier_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->batch = 8;
}

/* The window options against the model: a window must fit its positions. */
static int s_check_window(wisp_classifier_t *self, wisp_error_t *err)
{
    int rc = wisp_windows_check(&self->opts.window, err);
    if (rc != WISP_OK || self->opts.window.seconds == 0)
        return rc;
    self->win_n = wisp_windows_samples(self->opts.window.seconds);
    self->hop_n = wisp_windows_samples(self->opts.window.hop);
    int frames = wisp_mel_num_frames(self->win_n, self->opts.truncate);
    if (frames > self->max_frames)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "window %g s needs %d frames; the model's %d positions allow "
                              "windows of at most %.2f s",
                              self->opts.window.seconds, frames, self->max_frames / 2,
                              self->max_frames / 100.0);
    return WISP_OK;
}

/* Frames the model's positions allow (features.h has the rule). */
static int s_max_frames(wisp_classifier_t *self, const char *model_dir, wisp_error_t *err)
{
    return wisp_features_frame_limit(model_dir, self->opts.truncate, &self->max_frames, err);
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
    /* The features mode a trained head expects is checked before the model loads. */
    if (s_max_frames(self, opts->model_dir, err) != WISP_OK || s_check_window(self, err) != 0 ||
        wisp_feature_settings_check(opts->head_dir, opts->truncate, err) != WISP_OK ||
        wisp_feature_settings_check(opts->adapter_dir, opts->truncate, err) != WISP_OK)
        goto fail;
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
    self->slot_row = calloc(B, sizeof(size_t));
    self->clips = calloc(B, sizeof *self->clips);
    self->order = calloc(B, sizeof(int));
    self->batch_slot = calloc(B, sizeof(int));
    self->logits = calloc(B * (size_t)self->num_labels, sizeof(float));
    self->embed = calloc(B * (size_t)self->embed_dim, sizeof(float));
    if (!self->clip_mel || !self->batch_mel || !self->frames || !self->slot_row || !self->clips ||
        !self->order || !self->batch_slot || !self->logits || !self->embed) {
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
    free(self->slot_row);
    free(self->clips);
    free(self->order);
    free(self->batch_slot);
    free(self->logits);
    free(self->embed);
    free(self->win);
    free(self->win_probs);
    free(self->win_logits);
    free(self->win_emb);
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

const wisp_classifier_window_t *wisp_classifier_windows(const wisp_classifier_t *self,
                                                        const float **probs, size_t *n)
{
    *probs = self->win_probs;
    *n = self->n_win;
    return self->win;
}

static void s_fill_nan(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = NAN;
}

/* Softmax in double (the max subtracted first: exp never overflows, and the largest
 * term is exactly 1), label = argmax of the logits (the lowest id on ties, as
 * numpy/torch argmax), score = its prob. z, probs: (C). */
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

/* An error row: label -1, NaN values, the message (logged once here). */
static void s_error_row(wisp_classifier_t *self, wisp_classifier_result_t *r, int rc,
                        const wisp_error_t *e, float *probs, float *logits, float *emb)
{
    const size_t C = (size_t)self->num_labels, P = (size_t)self->embed_dim;
    r->label = -1;
    r->score = NAN;
    r->duration = -1.0;
    r->status = rc;
    r->n_windows = 0;
    snprintf(r->error, sizeof r->error, "%s", e->msg[0] ? e->msg : wisp_strerror(rc));
    s_fill_nan(probs, C);
    s_fill_nan(logits, C);
    if (emb)
        s_fill_nan(emb, P);
    WISP_LOGW("%s", r->error);
}

/* Forwards the `count` queued slots (frames 0: empty), equal-length clips together by
 * the shared batching (features.h; in padded mode all clips are 3000 frames: one call);
 * slot k's logits go to lbase + slot_row[k] * C and, when ebase is not NULL, its
 * embedding to ebase + slot_row[k] * P. Empties the slots. */
static int s_forward_slots(wisp_classifier_t *self, int count, float *lbase, float *ebase,
                           wisp_error_t *err)
{
    const size_t C = (size_t)self->num_labels, P = (size_t)self->embed_dim;
    const size_t per_clip = (size_t)self->n_mels * self->max_frames;
    int m = 0;
    for (int k = 0; k < count; k++) {
        if (self->frames[k] > 0)
            self->clips[m++] = (wisp_features_clip_t){.mel = self->clip_mel + (size_t)k * per_clip,
                                                      .frames = self->frames[k],
                                                      .label = k};
        self->frames[k] = 0;
    }
    wisp_features_order(self->clips, m, self->order);
    for (int i = 0; i < m;) {
        int frames,
            B = wisp_features_batch(self->clips, self->order, m, i, self->opts.batch, self->n_mels,
                                    self->batch_mel, self->batch_slot, &frames);
        int rc = wisp_model_forward(self->model, self->batch_mel, B, frames, self->logits,
                                    ebase ? self->embed : NULL);
        if (rc != WISP_OK)
            return wisp_error_set(err, rc, "classifier: forward failed (%s)", wisp_strerror(rc));
        for (int b = 0; b < B; b++) {
            size_t row = self->slot_row[self->batch_slot[b]];
            memcpy(lbase + row * C, self->logits + (size_t)b * C, C * sizeof(float));
            if (ebase)
                memcpy(ebase + row * P, self->embed + (size_t)b * P, P * sizeof(float));
        }
        i += B;
    }
    return WISP_OK;
}

/* Without windows: each file's first 30 s, one slot per file. The input goes in chunks
 * of `batch` files (the slots): decode all of a chunk, forward its slots, then the
 * softmax of its ok rows; probs/logits/emb_out are (n, C), (n, C), (n, P). */
static int s_run_files(wisp_classifier_t *self, const char *const *paths, int n,
                       wisp_classifier_result_t *results, float *probs, float *logits,
                       float *emb_out, wisp_error_t *err)
{
    const int C = self->num_labels, P = self->embed_dim, cap = self->opts.batch;
    const size_t per_clip = (size_t)self->n_mels * self->max_frames;
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
            self->slot_row[k] = (size_t)i;
            int rc = wisp_features_file(self->feat, paths[i], self->clip_mel + (size_t)k * per_clip,
                                        &info, &e);
            if (rc != WISP_OK) {
                s_error_row(self, r, rc, &e, probs + (size_t)i * C, logits + (size_t)i * C,
                            emb_out ? emb_out + (size_t)i * P : NULL);
                continue;
            }
            r->duration = info.duration;
            r->capped = info.capped;
            self->frames[k] = info.frames;
        }
        int rc = s_forward_slots(self, count, logits, emb_out, err);
        if (rc != WISP_OK)
            return rc;
        for (int k = 0; k < count; k++) {
            wisp_classifier_result_t *r = &results[start + k];
            if (r->status == WISP_OK)
                s_finish_row(logits + (size_t)(start + k) * C, C, probs + (size_t)(start + k) * C,
                             &r->label, &r->score);
        }
    }
    return WISP_OK;
}

/* Room for `need` windows in this run's window arrays. */
static int s_win_reserve(wisp_classifier_t *self, size_t need)
{
    if (need <= self->win_cap)
        return 0;
    size_t cap = self->win_cap ? self->win_cap : 64;
    while (cap < need)
        cap *= 2;
    const size_t C = (size_t)self->num_labels, P = (size_t)self->embed_dim;
    wisp_classifier_window_t *w = realloc(self->win, cap * sizeof *w);
    if (w)
        self->win = w;
    float *p = realloc(self->win_probs, cap * C * sizeof *p);
    if (p)
        self->win_probs = p;
    float *l = realloc(self->win_logits, cap * C * sizeof *l);
    if (l)
        self->win_logits = l;
    float *e = realloc(self->win_emb, (cap * P + 1) * sizeof *e); /* + 1: P may be 0 */
    if (e)
        self->win_emb = e;
    if (!w || !p || !l || !e)
        return -1;
    self->win_cap = cap;
    return 0;
}

/* The file row from its windows (classifier.h): per class the mean (or max) of the
 * window probs and logits, the mean embedding, in double. */
static void s_aggregate(wisp_classifier_t *self, wisp_classifier_result_t *r, float *probs,
                        float *logits, float *emb)
{
    const size_t C = (size_t)self->num_labels, P = (size_t)self->embed_dim;
    const size_t w0 = r->first_window, W = r->n_windows;
    const int use_max = self->opts.window.aggregate == WISP_WINDOWS_MAX;
    for (size_t c = 0; c < C; c++) {
        double p = use_max ? -INFINITY : 0, z = use_max ? -INFINITY : 0;
        for (size_t w = w0; w < w0 + W; w++) {
            double pw = self->win_probs[w * C + c], zw = self->win_logits[w * C + c];
            p = use_max ? (pw > p ? pw : p) : p + pw;
            z = use_max ? (zw > z ? zw : z) : z + zw;
        }
        probs[c] = (float)(use_max ? p : p / (double)W);
        logits[c] = (float)(use_max ? z : z / (double)W);
    }
    for (size_t k = 0; emb && k < P; k++) {
        double s = 0;
        for (size_t w = w0; w < w0 + W; w++)
            s += self->win_emb[w * P + k];
        emb[k] = (float)(s / (double)W);
    }
    int best = 0;
    for (size_t c = 1; c < C; c++)
        if (probs[c] > probs[best])
            best = (int)c;
    r->label = best;
    r->score = probs[best];
}

/* Queues the windows of one decoded file (the slots are forwarded whenever full);
 * *used is the number of filled slots. Returns 0, a negative code for a failure of
 * the run (forward, memory), or a positive one after making r an error row. */
static int s_queue_windows(wisp_classifier_t *self, const wisp_audio_t *a,
                           wisp_classifier_result_t *r, int *used, float *emb_out,
                           wisp_error_t *err)
{
    const size_t per_clip = (size_t)self->n_mels * self->max_frames;
    size_t W = wisp_windows_count(a->n, self->win_n, self->hop_n);
    if (W > WISP_RESULTS_MAX_SEGMENTS)
        return 1;
    if (s_win_reserve(self, self->n_win + W) < 0)
        return wisp_error_set(err, WISP_ERR_NOMEM, "classifier: out of memory for %zu windows",
                              self->n_win + W);
    /* the file's windows are [n_win, n_win + W) of this run's window arrays; slots fill
     * across files and are forwarded whenever all `batch` of them are in use */
    r->first_window = self->n_win;
    r->n_windows = (uint32_t)W;
    for (size_t k = 0; k < W; k++) {
        size_t st, len;
        wisp_windows_at(a->n, self->win_n, self->hop_n, k, &st, &len);
        size_t w = self->n_win++;
        self->win[w].start = (double)st / WISP_SAMPLE_RATE;
        self->win[w].end = (double)(st + len) / WISP_SAMPLE_RATE;
        int s = *used;
        /* Cannot fail: the window is inside the signal and fits the model (_new). */
        int rc = wisp_features_window(self->feat, a->samples, a->n, st, len,
                                      self->clip_mel + (size_t)s * per_clip, &self->frames[s], err);
        if (rc != WISP_OK)
            return rc;
        self->slot_row[s] = w;
        if (++*used == self->opts.batch) {
            if ((rc = s_forward_slots(self, *used, self->win_logits, emb_out ? self->win_emb : NULL,
                                      err)) != WISP_OK)
                return rc;
            *used = 0;
        }
    }
    return WISP_OK;
}

/* Windows mode: every file decoded whole and cut into windows; the windows of
 * consecutive files share forward batches. */
static int s_run_windows(wisp_classifier_t *self, const char *const *paths, int n,
                         wisp_classifier_result_t *results, float *probs, float *logits,
                         float *emb_out, wisp_error_t *err)
{
    const int C = self->num_labels, P = self->embed_dim;
    int used = 0, rc = WISP_OK;
    self->n_win = 0;
    for (int i = 0; i < n; i++) {
        wisp_classifier_result_t *r = &results[i];
        wisp_audio_t audio;
        wisp_error_t e = {0};
        memset(r, 0, sizeof *r);
        memset(&audio, 0, sizeof audio);
        float *pi = probs + (size_t)i * C, *li = logits + (size_t)i * C;
        float *ei = emb_out ? emb_out + (size_t)i * P : NULL;
        rc = wisp_features_decode(paths[i], 0, &audio, &e);
        if (rc != WISP_OK) {
            s_error_row(self, r, rc, &e, pi, li, ei);
            continue;
        }
        r->duration = audio.duration;
        rc = s_queue_windows(self, &audio, r, &used, emb_out, err);
        wisp_audio_free(&audio);
        if (rc > 0) {
            wisp_error_set(&e, WISP_ERR_UNSUPPORTED, "%s: %.0f s makes more than %u windows",
                           paths[i], r->duration, WISP_RESULTS_MAX_SEGMENTS);
            s_error_row(self, r, WISP_ERR_UNSUPPORTED, &e, pi, li, ei);
        } else if (rc < 0) {
            return rc;
        }
    }
    if (used && (rc = s_forward_slots(self, used, self->win_logits, emb_out ? self->win_emb : NULL,
                                      err)) != WISP_OK)
        return rc;
    for (size_t w = 0; w < self->n_win; w++)
        s_finish_row(self->win_logits + w * (size_t)C, C, self->win_probs + w * (size_t)C,
                     &self->win[w].label, &self->win[w].score);
    for (int i = 0; i < n; i++)
        if (results[i].status == WISP_OK)
            s_aggregate(self, &results[i], probs + (size_t)i * C, logits + (size_t)i * C,
                        emb_out ? emb_out + (size_t)i * P : NULL);
    return WISP_OK;
}

int wisp_classifier_run(wisp_classifier_t *self, const char *const *paths, int n,
                        wisp_classifier_result_t *results, float *probs, float *logits,
                        float *embed, wisp_error_t *err)
{
    float *emb_out = self->opts.embeddings ? embed : NULL;
    self->n_win = 0;
    if (self->opts.window.seconds > 0)
        return s_run_windows(self, paths, n, results, probs, logits, emb_out, err);
    return s_run_files(self, paths, n, results, probs, logits, emb_out, err);
}
