/* mel.h: Whisper log-mel features exactly as openai/whisper audio.py and HF's
 * WhisperFeatureExtractor (NUMERICS.md section 1), with FFTW.
 *
 * A wisp_mel_t holds the filterbank, the window and the FFTW plan (made once in
 * _new, under a process-wide lock since FFTW's planner is not thread-safe) plus
 * its own scratch: use one object per thread. */
#ifndef WISP_MEL_H
#define WISP_MEL_H

#include <stddef.h>

#include "base/err.h"

#define WISP_N_FFT     400
#define WISP_HOP       160
#define WISP_N_SAMPLES 480000 /* 30 s at 16 kHz */
#define WISP_N_FRAMES  3000

typedef struct wisp_mel wisp_mel_t;

/* n_mels: 80 or 128. NULL on failure. */
wisp_mel_t *wisp_mel_new(int n_mels, wisp_error_t *err);
void wisp_mel_destroy(wisp_mel_t **self);

int wisp_mel_n_mels(const wisp_mel_t *self);

/* Frames produced for n samples: 3000 in padded mode; in truncated mode n is
 * zero-padded to the next multiple of 320 (at least 320, at most 480000), giving
 * padded_n / 160 frames (always even). */
int wisp_mel_num_frames(size_t n, int truncate);

/* out (n_mels, frames) row-major, frames = wisp_mel_num_frames(n, truncate).
 * Audio longer than 30 s is cut at 30 s in both modes. Never fails for valid
 * arguments. */
void wisp_mel_compute(wisp_mel_t *self, const float *samples, size_t n, int truncate, float *out);

/* The (n_mels, 201) Slaney filterbank (librosa.filters.mel, norm="slaney"). */
const float *wisp_mel_filters(const wisp_mel_t *self);

/* Working length in samples: 480000 in padded mode; in truncated mode n rounded up to
 * a multiple of 320 (at least 320, at most 480000). frames = length / 160. */
size_t wisp_mel_padded_length(size_t n, int truncate);

/* Steps 2-4 only: the power spectra |X_k|^2 of every kept frame, power (frames, 201)
 * row-major. For tests and benchmarks. */
void wisp_mel_power(wisp_mel_t *self, const float *samples, size_t n, int truncate, float *power);

/* x = log10(x) in place for positive normal floats, within a few ulp of log10f: a
 * branch-free form the compiler vectorises (scalar log10f was a third of the time). */
void wisp_mel_log10(float *x, size_t n);

/* Steps 5-6 from power (frames, 201) with the dense filterbank through cblas_sgemm:
 * the plain twin of the banded kernel inside wisp_mel_compute. out (n_mels, frames). */
void wisp_mel_apply_dense(const wisp_mel_t *self, const float *power, int frames, float *out);

#endif
