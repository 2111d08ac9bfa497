/* classifier.h: the classify pipeline, shared by `wisp classify` (one process) and
 * the distributed classify job: model + adapter + head, then per file
 * decode -> log-mel -> batched forward -> softmax, one result row per input.
 *
 * A file that cannot be read or decoded becomes an error row (status, message);
 * it never stops the run. Rows come back in input order.
 *
 * Long audio. Without windows a file's first 30 s are classified (result.capped says
 * when more was there). With opts.window.seconds > 0 every file is decoded whole and
 * cut into windows (audio/windows.h: starts hop apart, the last one ending at the
 * end); each window is one forward row, and the file row is the aggregate of its
 * windows: probs and logits the per-class mean (or max) over windows, the embedding
 * the mean, label = argmax of the aggregated probs (the lower id on ties), score =
 * its value. A file of at most one window is one window: the file itself.
 * Memory: a file is decoded whole (64 kB per second of audio, 230 MB an hour). */
#ifndef WISP_CLASSIFIER_H
#define WISP_CLASSIFIER_H

#include <stddef.h>

#include "audio/windows.h"
#include "base/err.h"
#include "nn/model.h"

typedef struct {
    const char *model_dir;      /* HF checkpoint directory */
    const char *adapter_dir;    /* adapters-library directory, or NULL: no adapter */
    const char *head_dir;       /* head directory, or NULL: the checkpoint's own head
                                   (WhisperForAudioClassification) */
    int truncate;               /* truncated mel (NUMERICS 1.7) instead of padded 30 s */
    int embeddings;             /* also return the pooled projector output */
    int batch;                  /* clips per forward call (default 8) */
    int threads;                /* OpenBLAS threads (0: leave as is) */
    wisp_windows_opts_t window; /* seconds 0: no windows */
    int precision;              /* WISP_PRECISION_FP32 (0) or _INT8 (nn/model.h) */
} wisp_classifier_opts_t;

void wisp_classifier_default_opts(wisp_classifier_opts_t *opts);

typedef struct {
    int label;                      /* argmax class, -1 on error */
    float score;                    /* probs[label]; NaN on error */
    double duration;                /* seconds of source audio; -1 when unreadable */
    int status;                     /* 0 ok, else the negative WISP_ERR_* code */
    char error[WISP_ERROR_MSG_MAX]; /* "" when ok, else "path: reason" */
    int capped;                     /* no windows and the source is longer than 30 s:
                                       only its first 30 s were classified */
    size_t first_window;            /* windows: this file's windows are */
    uint32_t n_windows;             /* [first_window, + n_windows) of wisp_classifier_windows */
} wisp_classifier_result_t;

/* One window of a file (windows mode). */
typedef struct {
    double start, end; /* seconds of the source */
    int label;         /* argmax of the window's probs */
    float score;       /* probs[label] */
} wisp_classifier_window_t;

typedef struct wisp_classifier wisp_classifier_t;

/* NULL on failure (err names the file and problem: model, adapter or head). A model
 * without a head (no --head and none in the checkpoint) is refused. */
wisp_classifier_t *wisp_classifier_new(const wisp_classifier_opts_t *opts, wisp_error_t *err);
void wisp_classifier_destroy(wisp_classifier_t **self);

int wisp_classifier_num_classes(const wisp_classifier_t *self);
/* id2label of the head. */
const char *wisp_classifier_class_name(const wisp_classifier_t *self, int i);
/* P = classifier_proj_size (the embedding width). */
int wisp_classifier_embed_dim(const wisp_classifier_t *self);
wisp_model_t *wisp_classifier_model(wisp_classifier_t *self);

/* Classifies n files. results[n]; probs and logits (n, C) and embed (n, P; may be
 * NULL, used only with opts.embeddings) are filled row by row; failed rows get
 * label -1, NaN scores/probs/logits/embedding, status and error. Returns 0 (also
 * when some files failed: see results[i].status), or a negative code when the run
 * itself failed (out of memory), with err set. */
int wisp_classifier_run(wisp_classifier_t *self, const char *const *paths, int n,
                        wisp_classifier_result_t *results, float *probs, float *logits,
                        float *embed, wisp_error_t *err);

/* The windows of the last wisp_classifier_run (windows mode; none otherwise): *n of
 * them and their softmax rows *probs (n, C). Valid until the next run or destroy. */
const wisp_classifier_window_t *wisp_classifier_windows(const wisp_classifier_t *self,
                                                        const float **probs, size_t *n);

#endif
