/* audio.h: any audio file libsndfile reads -> mono float at 16 kHz.
 * Channels are mixed by the arithmetic mean; the rate is converted with libsoxr
 * (high quality); samples stay float in [-1, 1] (never quantized to 16 bit). */
#ifndef WISP_AUDIO_H
#define WISP_AUDIO_H

#include <stddef.h>

#include "base/err.h"

#define WISP_SAMPLE_RATE 16000

/* Largest |sample| accepted (60 dB above full scale): float files may exceed 1.0 (an
 * unnormalised mix), but NaN, inf or 1e30 are damage, and their power would overflow
 * the log-mel. */
#define WISP_AUDIO_MAX_ABS 1000.0f

typedef struct {
    float *samples; /* n mono samples at 16 kHz (wisp_alloc'd) */
    size_t n;
    double duration; /* seconds of the whole source (from the header when it gives the
                      * length, even when max_seconds stopped decoding early) */
    int source_rate; /* Hz */
    int source_channels;
} wisp_audio_t;

/* Decodes, mixes and resamples. max_seconds > 0 stops decoding past that much
 * source audio (the rest is never read); 0 decodes everything. On failure the
 * error names the file and the reason (missing, empty, not audio, truncated, ...)
 * and *out is left empty. A decoder error or fewer frames than the header promises
 * (a truncated FLAC) is a failure, never partial audio; so is a file too short to give
 * one 16 kHz sample, and a sample that is not finite or beyond WISP_AUDIO_MAX_ABS. Memory: the
 * output plus one read block; the resampler streams (libsoxr SOXR_HQ, soxr_process). Thread-safe:
 * no shared state. */
int wisp_audio_load(const char *path, double max_seconds, wisp_audio_t *out, wisp_error_t *err);
void wisp_audio_free(wisp_audio_t *audio);

#endif
