/* windows.h: fixed windows over long audio, and the feature settings a trained head
 * expects.
 *
 * The encoder sees at most 30 s (WISP_N_SAMPLES). A longer recording is covered by
 * windows of `win` samples whose starts are `hop` samples apart; the last window is
 * moved back so that it ends where the signal ends, so every window of a signal longer
 * than `win` is a full window (no 0.1 s tail weighing as much as 30 s of audio in a
 * mean). A signal of at most `win` samples is one window: the whole signal.
 *
 *   n = 45 s, win = 30 s, hop = 30 s  ->  [0, 30) [15, 45)
 *   n = 70 s, win = 30 s, hop = 20 s  ->  [0, 30) [20, 50) [40, 70)
 *
 * Training on long files takes one window per epoch at a seeded random start
 * (wisp_windows_random_start), so a run is reproducible and every part of a long
 * file is seen over the epochs.
 *
 * Settings file: a trained adapter/head directory (and its copies in each checkpoint)
 * holds features.json {"truncate": bool, "window_seconds": number} written by the
 * trainer, so that classification can refuse the features mode the head was not
 * trained on: the other truncate mode, or clips of another length. A head trained with
 * window_seconds W > 0 saw windows of W s; one trained with 0 saw the first 30 s of
 * each file, which is what classification without windows or with 30 s windows shows. */
#ifndef WISP_WINDOWS_H
#define WISP_WINDOWS_H

#include <stddef.h>
#include <stdint.h>

#include "audio/features.h"
#include "base/err.h"

/* How a file row is made from its windows. */
typedef enum {
    WISP_WINDOWS_MEAN = 0, /* mean of the window probabilities (and logits, embeddings) */
    WISP_WINDOWS_MAX = 1,  /* per class the max over windows (probs do not sum to 1) */
} wisp_windows_agg_t;

typedef struct {
    double seconds;               /* window length, 0 = no windows (the first 30 s) */
    double hop;                   /* seconds between starts; 0 = seconds (no overlap) */
    wisp_windows_agg_t aggregate; /* file row from the windows */
} wisp_windows_opts_t;

/* "mean" or "max" into *out; WISP_ERR_ARG naming the value otherwise. */
int wisp_windows_parse_aggregate(const char *name, wisp_windows_agg_t *out, wisp_error_t *err);
const char *wisp_windows_aggregate_name(wisp_windows_agg_t agg);

/* Checks opts (0 < seconds <= 30, 0 <= hop <= seconds: a hop longer than the window
 * would leave audio unlabelled) and resolves hop 0 to seconds. seconds 0 is valid
 * (windows off). WISP_ERR_ARG with the reason. */
int wisp_windows_check(wisp_windows_opts_t *opts, wisp_error_t *err);

/* Samples of a window length at 16 kHz (rounded, at least 1). */
size_t wisp_windows_samples(double seconds);

/* Windows covering n samples (n >= 1, 1 <= hop <= win): 1 when n <= win, else
 * 1 + ceil((n - win) / hop). */
size_t wisp_windows_count(size_t n, size_t win, size_t hop);

/* Window k < wisp_windows_count(n, win, hop): *start and *len in samples
 * (k * hop, or n - win for the last; len = min(win, n)). */
void wisp_windows_at(size_t n, size_t win, size_t hop, size_t k, size_t *start, size_t *len);

/* Training: the start of a window of win samples in a signal of n samples, uniform
 * over [0, n - win] from (seed, epoch, item) alone (0 when n <= win). */
size_t wisp_windows_random_start(size_t n, size_t win, uint64_t seed, uint64_t epoch,
                                 uint64_t item);

/* Training on long files: the log-mel of one window of window_seconds at the seeded
 * random start of wisp_windows_random_start(n, win, seed, epoch, item) into out (as
 * wisp_features_file; info->capped stays 0: the window is what was asked for). A file
 * no longer than the window is all of it; window_seconds 0 is wisp_features_file (the
 * first 30 s). Errors: the decode's, or the window's (audio/features.h). */
int wisp_windows_train_clip(wisp_features_t *feat, const char *path, double window_seconds,
                            uint64_t seed, uint64_t epoch, uint64_t item, float *out,
                            wisp_features_info_t *info, wisp_error_t *err);

/* ---- features.json beside a trained adapter/head ---- */

typedef struct {
    int truncate;          /* 1: truncated log-mel, 0: padded to 30 s */
    double window_seconds; /* training windows of long files, 0: the first 30 s */
} wisp_feature_settings_t;

/* The text of features.json (malloc'd, NULL when out of memory): the one format,
 * written by _save and into checkpoints. */
char *wisp_feature_settings_text(const wisp_feature_settings_t *s);
/* Writes DIR/features.json (atomically). */
int wisp_feature_settings_save(const char *dir, const wisp_feature_settings_t *s,
                               wisp_error_t *err);
/* Reads DIR/features.json: 1 when found (into *s), 0 when absent (a head made
 * before, or by Python), negative WISP_ERR_* when malformed. */
int wisp_feature_settings_load(const char *dir, wisp_feature_settings_t *s, wisp_error_t *err);

/* Refuses (WISP_ERR_STATE, naming dir and the option to use) a classification whose
 * truncate differs from what DIR/features.json says the head was trained with.
 * 0 when they agree or DIR has no features.json. */
int wisp_feature_settings_check(const char *dir, int truncate, wisp_error_t *err);

/* Refuses (WISP_ERR_STATE, naming dir and the classify.window / --window value to use)
 * a classification whose clip length differs from the one the head was trained on: the
 * window length, where window_seconds 0 means the first 30 s on either side (see
 * above), compared in samples. 0 when they agree or DIR has no features.json. */
int wisp_feature_settings_check_window(const char *dir, double window_seconds, wisp_error_t *err);

#endif
