/* report.h: summaries people can read of a classify results file (HDF5, layout in
 * docs/OUTPUT.md) and of a training output directory (metrics.jsonl, adapter/,
 * head/), plus PNG plots drawn by gnuplot when it is installed. Used by
 * `wisp report` (jobs/cli/cmd_report.c) and by the tests.
 *
 * Loading validates everything it reads: a missing dataset, a wrong shape or type,
 * a label outside the class list or a malformed JSON line is an error naming the
 * file (and the dataset, row or line), never a crash. */
#ifndef WISP_REPORT_H
#define WISP_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "base/err.h"

/* ---- classify results ---------------------------------------------------- */

typedef struct {
    char *file;            /* the results file as given */
    size_t n;              /* N rows */
    size_t n_ok;           /* rows with status 0 */
    size_t n_error;        /* rows with status != 0 (missing rows included) */
    size_t n_missing;      /* rows never produced (status WISP_RESULTS_STATUS_MISSING) */
    int n_classes;         /* C */
    char **classes;        /* [C] class names, from the `classes` dataset */
    int has_truth;         /* the file has a `true_label` dataset */
    size_t n_scored;       /* ok rows whose true label is in [0, C) */
    size_t n_correct;      /* ... of which the predicted label is the true one */
    double accuracy;       /* n_correct / n_scored; NAN when n_scored == 0 */
    double mean_score;     /* mean `score` over ok rows; NAN without scores */
    double total_duration; /* sum of the known (>= 0) `duration` of ok rows (s); NAN without it */
    int64_t *confusion;    /* [C, C]: confusion[t * C + p] = scored rows of true t predicted p */
    size_t *support;       /* [C] scored rows per true class */
    size_t *predicted;     /* [C] ok rows per predicted class (labelled or not) */
    double *precision;     /* [C] NAN where nothing was predicted as the class */
    double *recall;        /* [C] NAN where the class has no support */
    double *f1;            /* [C] NAN where precision or recall is undefined */
    double macro_f1;       /* mean F1 over classes with support; NAN when none */
    size_t *error_rows;    /* [n_error] row indices of the failed rows */
    int *error_status;     /* [n_error] their status (a negative WISP_ERR_* code) */
    char **error_paths;    /* [n_error] their `path` */
    char **error_msgs;     /* [n_error] their `error` ("" without an error dataset) */
    size_t n_attrs;        /* root attributes, rendered as text */
    char **attr_names;     /* [n_attrs] */
    char **attr_values;    /* [n_attrs] (long strings are cut with "...") */
    int file_confusion;    /* 1: the file has a `confusion` dataset; -1: it disagrees */
    char *summary_json;    /* the "summary" root attribute in full (run totals, files/s);
                              NULL when absent */
} wisp_report_results_t;

/* Reads and checks a results file: required datasets path, label, status, classes
 * (strings may be variable- or fixed-length); optional true_label, score, duration,
 * error, probs/logits [N, C], embedding [N, P], confusion [C, C]. */
wisp_report_results_t *wisp_report_results_load(const char *path, wisp_error_t *err);
void wisp_report_results_destroy(wisp_report_results_t **self);
/* Prints the summary; at most max_errors failed rows are listed (0: all). */
void wisp_report_results_print(const wisp_report_results_t *self, FILE *out, size_t max_errors);

/* Writes the rows of a results file as CSV (RFC 4180, one header line) to out:
 *   row, path, label, label_name, score, true_label, true_label_name, status, error,
 *   note, duration, top_1, top_1_prob ... top_K, top_K_prob (class names; with
 *   top_k_label), prob_<class> for every class
 * (NaN and absent values are empty fields). With seg_out, also the segments group:
 *   row, path, start, end, label, label_name, score, prob_<class>...
 * (WISP_ERR_NOTFOUND when the file has none). */
int wisp_report_results_csv(const char *path, FILE *out, FILE *seg_out, wisp_error_t *err);

/* ---- training directory --------------------------------------------------- */

typedef struct {
    int64_t step;       /* optimizer step */
    double epoch;       /* as logged (integer or fractional) */
    double loss;        /* training loss; NAN when absent */
    double lr;          /* learning rate; NAN when absent */
    double acc;         /* training accuracy of the step's batch; NAN when absent */
    double clips_per_s; /* throughput; NAN when absent */
    double grad_norm;   /* gradient norm before clipping; NAN when absent */
    double failed;      /* clips of the step that failed to load; NAN when absent */
} wisp_report_step_t;

typedef struct {
    int64_t step; /* step after which the evaluation ran */
    double epoch;
    double val_loss; /* NAN when absent */
    double val_acc;  /* NAN when absent */
} wisp_report_eval_t;

typedef struct {
    char *dir;                 /* the training output directory */
    wisp_report_step_t *steps; /* [n_steps] in file order */
    size_t n_steps;
    wisp_report_eval_t *evals; /* [n_evals] in file order */
    size_t n_evals;
    size_t n_other;        /* lines with another "type" (ignored) */
    size_t n_superseded;   /* lines replaced by a resumed run re-logging their steps */
    cJSON *adapter_config; /* adapter/adapter_config.json; NULL when absent */
    cJSON *head_config;    /* head/head_config.json; NULL when absent */
    char **labels;         /* [n_labels] from the head config (labels or id2label) */
    int n_labels;
} wisp_report_train_t;

/* Reads DIR/metrics.jsonl (required; blank lines are skipped, every other line must
 * be a JSON object; "step" and "eval" lines need a numeric step; null values count as
 * absent) and the optional adapter and head configs (malformed ones are errors).
 * A resumed run appends to metrics.jsonl and re-logs steps after its checkpoint: a
 * step (eval) line whose step is not after the previous step (eval) line replaces
 * the earlier lines from that step on. */
wisp_report_train_t *wisp_report_train_load(const char *dir, wisp_error_t *err);
void wisp_report_train_destroy(wisp_report_train_t **self);
void wisp_report_train_print(const wisp_report_train_t *self, FILE *out);

/* ---- plots ---------------------------------------------------------------- */

/* 1 when a gnuplot executable is on PATH. */
int wisp_report_have_gnuplot(void);
/* Confusion-matrix heatmap (rows normalised, counts printed) into png_path.
 * WISP_ERR_UNSUPPORTED without true labels or without gnuplot. */
int wisp_report_plot_confusion(const wisp_report_results_t *r, const char *png_path,
                               wisp_error_t *err);
/* Loss and accuracy curves (train per step, validation per evaluation). */
int wisp_report_plot_train(const wisp_report_train_t *t, const char *png_path, wisp_error_t *err);

#endif
