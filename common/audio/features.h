/* features.h: the one path from an audio file to the encoder's input, shared by
 * training, classification and `wisp features` so that they cannot disagree:
 *   path -> decode + mono mix + 16 kHz resample (audio.h) -> Whisper log-mel (mel.h)
 *   of at most the first 30 s (WISP_N_SAMPLES), padded or truncated.
 *
 * Decoding stops a little past 30 s of source (WISP_FEATURES_DECODE_SECONDS), never
 * at 30 s exactly: the resampler's filter then sees the audio around the cut as it
 * would when the whole file is resampled, so the first 30 s are the same samples as
 * a whole-file decode cut at 480000 (what openai/whisper's pad_or_trim does).
 *
 * Long audio: wisp_features_decode returns the whole decoded signal and
 * wisp_features_window the log-mel of any window of it, so a caller can cover a
 * long recording with 30 s windows of its own choosing.
 *
 * A wisp_features_t owns one wisp_mel_t (FFTW plan + scratch): one object per thread. */
#ifndef WISP_FEATURES_H
#define WISP_FEATURES_H

#include <stddef.h>

#include "audio/audio.h"
#include "base/err.h"

/* Source seconds decoded for a 30 s clip (see above). */
#define WISP_FEATURES_DECODE_SECONDS 30.5

typedef struct wisp_features wisp_features_t;

/* What the decode of one file found. */
typedef struct {
    int frames;          /* log-mel columns written: wisp_mel_num_frames(n, truncate) */
    double duration;     /* seconds of the whole source (header length when known) */
    int source_rate;     /* Hz */
    int source_channels; /* channels mixed to mono */
    int capped;          /* 1 when the source is longer than 30 s: only its first 30 s are in
                            the features */
} wisp_features_info_t;

/* n_mels 80 or 128; truncate 0 pads every clip to 3000 frames, 1 keeps
 * wisp_mel_num_frames(n, 1) frames. max_frames in [1, 3000] is the most frames a
 * clip may have (the model's 2 * max_source_positions), 0 means 3000; padded mode
 * needs 3000. NULL on failure (bad argument, out of memory) with err filled. */
wisp_features_t *wisp_features_new(int n_mels, int truncate, int max_frames, wisp_error_t *err);
void wisp_features_destroy(wisp_features_t **self);

/* The most frames a clip may have for the checkpoint in model_dir: min(3000,
 * 2 * max_source_positions) from its config.json (tiny test models have fewer than the
 * 1500 positions of 30 s). With truncate 0 (every clip padded to 3000 frames) a smaller
 * limit is WISP_ERR_UNSUPPORTED naming config.json. The one copy of this rule for
 * training and classification. */
int wisp_features_frame_limit(const char *model_dir, int truncate, int *frames, wisp_error_t *err);

int wisp_features_n_mels(const wisp_features_t *self);
int wisp_features_max_frames(const wisp_features_t *self);
int wisp_features_truncate(const wisp_features_t *self);

/* path -> log-mel of its first 30 s into out, (n_mels, info->frames) row-major; out
 * holds at least n_mels * max_frames floats. info may be NULL. Errors: the decode's
 * (audio.h: missing, not audio, truncated, ...; the file is named) or
 * WISP_ERR_UNSUPPORTED when the clip needs more than max_frames frames. */
int wisp_features_file(wisp_features_t *self, const char *path, float *out,
                       wisp_features_info_t *info, wisp_error_t *err);

/* The decoded signal of path at 16 kHz: max_seconds > 0 stops after that much source
 * audio, 0 decodes the whole file. Release with wisp_audio_free. Same errors as
 * wisp_audio_load. */
int wisp_features_decode(const char *path, double max_seconds, wisp_audio_t *out,
                         wisp_error_t *err);

/* Log-mel of the window samples[start, start + n) of a decoded signal (the window is
 * cut at 30 s; padded or truncated as self) into out (n_mels, *frames), out as in
 * wisp_features_file. start + n must lie within the signal and n >= 1
 * (WISP_ERR_ARG otherwise); WISP_ERR_UNSUPPORTED when the window needs more than
 * max_frames frames. */
int wisp_features_window(wisp_features_t *self, const float *samples, size_t n_samples,
                         size_t start, size_t n, float *out, int *frames, wisp_error_t *err);

/* Batching of equal-length clips for the model, shared by the training step, the
 * evaluation and classification: the encoder takes B clips of one frame count per call
 * (model.h), so clips are grouped by length, never padded to one another. Each clip's
 * result depends only on its own features and on which clips share its call, and the
 * grouping is the same function everywhere. */
typedef struct {
    const float *mel; /* (n_mels, frames) row-major */
    int frames;       /* >= 1 */
    int label;        /* carried along to the batch: the trainer's class id, the
                         classifier's slot */
} wisp_features_clip_t;

/* ord[n] = 0..n-1 stably sorted by clips[].frames: clips of one length become adjacent
 * and keep their relative order. */
void wisp_features_order(const wisp_features_clip_t *clips, int n, int *ord);

/* The run of clips ord[i], ord[i+1], ... (ord NULL: i, i+1, ...) that have the frame
 * count of the first, at most max_b of them: their features are copied into batch_mel
 * (B, n_mels, frames), room for max_b clips of that length, and their labels into
 * labels[B]. Needs 0 <= i < n and max_b >= 1; returns B in [1, max_b] and sets *frames.
 * A caller walks i += B until n. */
int wisp_features_batch(const wisp_features_clip_t *clips, const int *ord, int n, int i, int max_b,
                        int n_mels, float *batch_mel, int *labels, int *frames);

#endif
