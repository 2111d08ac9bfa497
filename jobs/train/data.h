/* data.h: what a training run loads before its trainer, one copy for `wisp train`
 * and both sides of the distributed train job (its coordinator and every worker), so
 * that they read the same items with the same class ids:
 *   1. the class list: the given head's id2label (head_dir/head_config.json), else the
 *      class list file, else the labels of the training manifest;
 *   2. the training manifest, then the validation manifest mapped onto those classes
 *      (rows without a label refused or skipped, wisp_manifest_load_training);
 *   3. their labeled items in manifest order (wisp_trainer_items) and, when asked,
 *      the per-class loss weights. */
#ifndef WISP_TRAIN_DATA_H
#define WISP_TRAIN_DATA_H

#include <stddef.h>

#include "base/err.h"
#include "formats/config.h"
#include "formats/manifest.h"
#include "train/trainer.h"

typedef struct {
    const char *head_dir;      /* start from this head: its classes (NULL or "": none) */
    const char *train;         /* training manifest (required) */
    const char *val;           /* validation manifest (NULL or "": none) */
    const char *classes;       /* class list file (NULL or "": none) */
    const char *unlabeled;     /* rows without a label: "error" (NULL, "") or "skip" */
    const char *class_weights; /* "balanced" (n / (C * count_c), as sklearn), C
                                  comma-separated numbers >= 0, or NULL: none */
} wisp_train_data_opts_t;

typedef struct {
    wisp_manifest_t train, val;
    wisp_head_config_t head; /* valid when have_head */
    int have_head;
    wisp_trainer_item_t *items, *vitems; /* labeled items (n, nv); never NULL after _load */
    int n, nv;
    float *class_weights; /* (train.n_classes) or NULL */
} wisp_train_data_t;

/* Loads everything above into d (zeroed first; release with _free, also after an
 * error). Errors: the head's, the manifests' (named), WISP_ERR_ARG for a training set
 * without labeled items or with fewer than 2 classes and for bad class weights. */
int wisp_train_data_load(wisp_train_data_t *d, const wisp_train_data_opts_t *o, wisp_error_t *err);
void wisp_train_data_free(wisp_train_data_t *d);

/* Rows of a manifest without a label that are not trained on (skipped by
 * `unlabeled: skip`, or kept unlabeled and left out of the items). */
size_t wisp_train_data_unlabeled(const wisp_manifest_t *m);

/* One line for the logs and the summary: "N labeled clips (K unlabeled skipped), C
 * classes; validation: M labeled clips (J unlabeled skipped)" or "..., no validation
 * set". */
void wisp_train_data_describe(const wisp_train_data_t *d, char *buf, size_t n);

#endif
