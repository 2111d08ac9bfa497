/* classify_run.h: one classify run's identity and output, the same for `wisp classify`
 * (one process) and the distributed classify job (its coordinator), so that both
 * write the same file for the same inputs and either can resume the other's journal:
 *   - the class names (the head's head_config.json, else the checkpoint's config.json);
 *   - the items (a manifest, or a list of paths) and their true labels;
 *   - the run fingerprint: sha256 over the model, adapter and head weights, the
 *     features mode (truncate, window, hop, aggregate), the precision of the frozen
 *     linears when it is not fp32, the columns (embedding width,
 *     classes, top_k) and every path in order; a resume must match it;
 *   - the results writer (formats/results.h) with its attributes, and the one
 *     function that turns a classified file into its row and window segments.
 *
 * Rows: a file classified without windows whose source is longer than 30 s gets the
 * note "first 30 s of N s classified (classify.window covers all of it)"; with
 * windows every ok file gets one segment per window. */
#ifndef WISP_CLASSIFY_RUN_H
#define WISP_CLASSIFY_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "audio/windows.h"
#include "base/err.h"
#include "classify/classifier.h"
#include "formats/manifest.h"
#include "formats/results.h"

typedef struct {
    const char *model;        /* HF checkpoint directory */
    const char *adapter;      /* adapter directory, NULL or "": none */
    const char *head;         /* head directory, NULL or "": the checkpoint's head */
    const char *manifest;     /* manifest (CSV, JSONL, audiofolder), or NULL: paths */
    const char *const *paths; /* (n_paths) when manifest is NULL */
    size_t n_paths;
    const char *output;  /* OUT.h5 */
    int truncate;        /* truncated log-mel */
    int precision;       /* WISP_PRECISION_*: int8 rows must not resume into fp32 ones */
    int embedding;       /* write the embedding column */
    int top_k;           /* top_k columns, 0 none (at most the class count) */
    int probe_durations; /* open every file's header for its duration */
    int resume;          /* continue OUT.h5.commit when present */
    int skip_complete;   /* with resume: when OUT.h5 is already this run's finished file,
                            open no writer (wisp_classify_run_complete says so) */
    wisp_windows_opts_t window;
    const char *config_json; /* the "config" attribute (what the user ran) */
} wisp_classify_run_opts_t;

typedef struct wisp_classify_run wisp_classify_run_t;

/* Loads classes and items, computes the identity and opens the writer. NULL on
 * failure with err (a bad head/config/manifest, a resume of another run, a top_k
 * above the class count, bad window options). */
wisp_classify_run_t *wisp_classify_run_open(const wisp_classify_run_opts_t *opts,
                                            wisp_error_t *err);
void wisp_classify_run_destroy(wisp_classify_run_t **self);

size_t wisp_classify_run_count(const wisp_classify_run_t *self);
const char *wisp_classify_run_path(const wisp_classify_run_t *self, size_t item);
/* The manifest (NULL when the run was given paths). */
const wisp_manifest_t *wisp_classify_run_manifest(const wisp_classify_run_t *self);
int wisp_classify_run_num_classes(const wisp_classify_run_t *self);
const char *const *wisp_classify_run_classes(const wisp_classify_run_t *self);
/* Embedding width written (0: no embedding column). */
int wisp_classify_run_embed_dim(const wisp_classify_run_t *self);
/* The embedding width of the head, written or not. */
int wisp_classify_run_head_embed_dim(const wisp_classify_run_t *self);
/* NULL when the run is complete already (skip_complete). */
wisp_results_t *wisp_classify_run_results(wisp_classify_run_t *self);
/* 1 when opts.skip_complete found OUT.h5 finished by this very run (same
 * fingerprint): nothing is left to do; *n_error gets the file's error rows. */
int wisp_classify_run_complete(const wisp_classify_run_t *self, size_t *n_error);
const char *wisp_classify_run_fingerprint(const wisp_classify_run_t *self);
/* Rows put in this run whose source was cut to 30 s (no windows). */
size_t wisp_classify_run_capped(const wisp_classify_run_t *self);

/* One classified file, as the classifier (or a worker's payload) gives it. */
typedef struct {
    int label; /* -1 on error */
    float score;
    double duration;    /* seconds, -1 unknown */
    int status;         /* 0 ok, else a negative WISP_ERR_* */
    const char *error;  /* when status != 0 */
    int capped;         /* only the first 30 s were classified */
    const float *probs; /* (C); NULL on error */
    const float *logits;
    const float *embedding;                  /* (P) when the run writes it */
    const wisp_classifier_window_t *windows; /* (n_windows) windows mode */
    const float *window_probs;               /* (n_windows, C) */
    uint32_t n_windows;
} wisp_classify_file_t;

/* Puts item's row (and its segments). Returns what wisp_results_put returns (0,
 * WISP_RESULTS_DUPLICATE, or a negative code). */
int wisp_classify_run_put(wisp_classify_run_t *self, size_t item, const wisp_classify_file_t *f,
                          wisp_error_t *err);

/* The file of results[k] of a wisp_classifier_run call (k-th row of its arrays). */
wisp_classify_file_t wisp_classify_file_of(const wisp_classifier_t *cl,
                                           const wisp_classifier_result_t *results, int k,
                                           const float *probs, const float *logits,
                                           const float *embed);

#endif
