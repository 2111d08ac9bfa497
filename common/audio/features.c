/* features.c: path -> 16 kHz signal -> log-mel, the one front end (contract in
 * features.h). */
#include "audio/features.h"

#include <stdlib.h>
#include <string.h>

#include "audio/mel.h"
#include "base/util.h"
#include "formats/config.h"

struct wisp_features {
    wisp_mel_t *mel;
    int n_mels;
    int truncate;
    int max_frames; /* in [1, WISP_N_FRAMES] */
};

wisp_features_t *wisp_features_new(int n_mels, int truncate, int max_frames, wisp_error_t *err)
{
    if (max_frames == 0)
        max_frames = WISP_N_FRAMES;
    if (max_frames < 1 || max_frames > WISP_N_FRAMES) {
        wisp_error_set(err, WISP_ERR_ARG, "features: max_frames %d outside [1, %d]", max_frames,
                       WISP_N_FRAMES);
        return NULL;
    }
    if (!truncate && max_frames < WISP_N_FRAMES) {
        wisp_error_set(err, WISP_ERR_ARG,
                       "features: padded mode needs %d frames per clip, only %d allowed",
                       WISP_N_FRAMES, max_frames);
        return NULL;
    }
    wisp_features_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "features: out of memory");
        return NULL;
    }
    self->n_mels = n_mels;
    self->truncate = truncate ? 1 : 0;
    self->max_frames = max_frames;
    if (!(self->mel = wisp_mel_new(n_mels, err))) {
        free(self);
        return NULL;
    }
    return self;
}

void wisp_features_destroy(wisp_features_t **self)
{
    if (!self || !*self)
        return;
    wisp_mel_destroy(&(*self)->mel);
    free(*self);
    *self = NULL;
}

int wisp_features_frame_limit(const char *model_dir, int truncate, int *frames, wisp_error_t *err)
{
    wisp_whisper_config_t wc;
    char cpath[4096];
    memset(&wc, 0, sizeof wc);
    *frames = 0;
    if (wisp_path_join(cpath, sizeof cpath, model_dir, "config.json") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", model_dir);
    int rc = wisp_whisper_config_load(&wc, cpath, err);
    if (rc != WISP_OK)
        return rc;
    /* max_source_positions >= 1 (config.c), so the limit is in [2, 3000] */
    int limit =
        wc.max_source_positions < WISP_N_FRAMES / 2 ? 2 * wc.max_source_positions : WISP_N_FRAMES;
    wisp_whisper_config_free(&wc);
    if (!truncate && limit < WISP_N_FRAMES)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: max_source_positions %d is too small for padded 30 s input; "
                              "use truncated mode (--truncate)",
                              cpath, limit / 2);
    *frames = limit;
    return WISP_OK;
}

int wisp_features_n_mels(const wisp_features_t *self)
{
    return self->n_mels;
}

int wisp_features_max_frames(const wisp_features_t *self)
{
    return self->max_frames;
}

int wisp_features_truncate(const wisp_features_t *self)
{
    return self->truncate;
}

int wisp_features_decode(const char *path, double max_seconds, wisp_audio_t *out, wisp_error_t *err)
{
    return wisp_audio_load(path, max_seconds, out, err);
}

/* Log-mel of n samples at x; the frame check comes first so out is untouched on error. */
static int s_compute(wisp_features_t *self, const float *x, size_t n, float *out, int *frames,
                     const char *what, double seconds, wisp_error_t *err)
{
    int f = wisp_mel_num_frames(n, self->truncate);
    if (f > self->max_frames)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: %.2f s is longer than the model's %d positions allow", what,
                              seconds, self->max_frames / 2);
    wisp_mel_compute(self->mel, x, n, self->truncate, out);
    *frames = f;
    return WISP_OK;
}

int wisp_features_file(wisp_features_t *self, const char *path, float *out,
                       wisp_features_info_t *info, wisp_error_t *err)
{
    wisp_audio_t audio;
    wisp_features_info_t tmp;
    if (!info)
        info = &tmp;
    memset(info, 0, sizeof *info);
    int rc = wisp_audio_load(path, WISP_FEATURES_DECODE_SECONDS, &audio, err);
    if (rc != WISP_OK)
        return rc;
    info->duration = audio.duration;
    info->source_rate = audio.source_rate;
    info->source_channels = audio.source_channels;
    info->capped = audio.duration > WISP_N_SAMPLES / (double)WISP_SAMPLE_RATE;
    /* the message names the source duration: that is what the user can check */
    rc = s_compute(self, audio.samples, audio.n, out, &info->frames, path, audio.duration, err);
    wisp_audio_free(&audio);
    return rc;
}

int wisp_features_window(wisp_features_t *self, const float *samples, size_t n_samples,
                         size_t start, size_t n, float *out, int *frames, wisp_error_t *err)
{
    *frames = 0;
    if (!samples || n < 1 || start > n_samples || n > n_samples - start)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "features: window [%zu, +%zu) outside the %zu-sample signal", start,
                              n, n_samples);
    return s_compute(self, samples + start, n, out, frames, "features window",
                     (double)n / WISP_SAMPLE_RATE, err);
}

void wisp_features_order(const wisp_features_clip_t *clips, int n, int *ord)
{
    for (int i = 0; i < n; i++)
        ord[i] = i;
    for (int i = 1; i < n; i++) { /* insertion sort: stable, and batches are small */
        int v = ord[i], j = i - 1;
        while (j >= 0 && clips[ord[j]].frames > clips[v].frames) {
            ord[j + 1] = ord[j];
            j--;
        }
        ord[j + 1] = v;
    }
}

int wisp_features_batch(const wisp_features_clip_t *clips, const int *ord, int n, int i, int max_b,
                        int n_mels, float *batch_mel, int *labels, int *frames)
{
    const size_t per = (size_t)n_mels;
    const int f = clips[ord ? ord[i] : i].frames;
    int B = 0;
    while (i + B < n && B < max_b && clips[ord ? ord[i + B] : i + B].frames == f) {
        const wisp_features_clip_t *c = &clips[ord ? ord[i + B] : i + B];
        /* clip b of the batch starts at b * n_mels * f: the (B, n_mels, f) layout */
        memcpy(batch_mel + (size_t)B * per * f, c->mel, per * f * sizeof(float));
        labels[B] = c->label;
        B++;
    }
    *frames = f;
    return B;
}
