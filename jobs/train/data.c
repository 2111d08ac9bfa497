/* data.c: the data of a training run, as local and distributed training load it
 * (see data.h). */
#include "train/data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* "balanced" or C numbers into w (C floats). */
static int s_class_weights(const char *spec, const wisp_manifest_t *m, int C, float *w,
                           wisp_error_t *err)
{
    if (strcmp(spec, "balanced") == 0) {
        size_t n = 0;
        for (int c = 0; c < C; c++)
            w[c] = 0.0f;
        for (size_t i = 0; i < m->n_items; i++)
            if (m->items[i].label >= 0) {
                w[m->items[i].label] += 1.0f;
                n++;
            }
        for (int c = 0; c < C; c++)
            w[c] = w[c] > 0.0f ? (float)((double)n / ((double)C * w[c])) : 0.0f;
        return WISP_OK;
    }
    const char *p = spec;
    for (int c = 0; c < C; c++) {
        char *end = NULL;
        double x = strtod(p, &end);
        if (end == p || !(x >= 0) || !isfinite(x))
            return wisp_error_set(err, WISP_ERR_ARG, "--class-weights: bad weight %d in '%s'", c,
                                  spec);
        w[c] = (float)x;
        p = end;
        if (c + 1 < C) {
            if (*p != ',')
                return wisp_error_set(err, WISP_ERR_ARG,
                                      "--class-weights: %d classes need %d weights, '%s'", C, C,
                                      spec);
            p++;
        }
    }
    if (*p)
        return wisp_error_set(err, WISP_ERR_ARG, "--class-weights: more than %d weights in '%s'", C,
                              spec);
    return WISP_OK;
}

static int s_given(const char *s)
{
    return s && s[0];
}

static int s_load_head(wisp_train_data_t *d, const char *head_dir, wisp_error_t *err)
{
    char path[4096];
    if (wisp_path_join(path, sizeof path, head_dir, "head_config.json") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", head_dir);
    int rc = wisp_head_config_load(&d->head, path, err);
    if (rc == WISP_OK)
        d->have_head = 1;
    return rc;
}

int wisp_train_data_load(wisp_train_data_t *d, const wisp_train_data_opts_t *o, wisp_error_t *err)
{
    int rc;
    memset(d, 0, sizeof *d);
    if (!s_given(o->train))
        return wisp_error_set(err, WISP_ERR_ARG, "train: no training manifest");
    if (s_given(o->head_dir) && (rc = s_load_head(d, o->head_dir, err)) != WISP_OK)
        return rc;
    if ((rc = wisp_manifest_load_training(
             &d->train, o->train, d->have_head ? (const char *const *)d->head.id2label : NULL,
             d->have_head ? d->head.num_labels : 0, o->classes, o->unlabeled, err)) != WISP_OK)
        return rc;
    if (d->train.n_labeled == 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: no labeled item to train on", o->train);
    if (d->train.n_classes < 2)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: %d class(es); a classifier needs at least 2",
                              o->train, d->train.n_classes);
    if (s_given(o->val) &&
        (rc = wisp_manifest_load_training(&d->val, o->val, (const char *const *)d->train.classes,
                                          d->train.n_classes, NULL, o->unlabeled, err)) != WISP_OK)
        return rc;
    /* An absent validation set is an empty manifest: vitems is a valid empty list. */
    d->items = wisp_trainer_items(&d->train, &d->n);
    d->vitems = wisp_trainer_items(&d->val, &d->nv);
    if (!d->items || !d->vitems)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    if (o->class_weights) {
        d->class_weights = calloc((size_t)d->train.n_classes, sizeof(float));
        if (!d->class_weights)
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        if ((rc = s_class_weights(o->class_weights, &d->train, d->train.n_classes, d->class_weights,
                                  err)) != WISP_OK)
            return rc;
    }
    return WISP_OK;
}

void wisp_train_data_free(wisp_train_data_t *d)
{
    wisp_manifest_free(&d->train);
    wisp_manifest_free(&d->val);
    if (d->have_head)
        wisp_head_config_free(&d->head);
    free(d->items);
    free(d->vitems);
    free(d->class_weights);
    memset(d, 0, sizeof *d);
}

size_t wisp_train_data_unlabeled(const wisp_manifest_t *m)
{
    return m->n_skipped_unlabeled + (m->n_items - m->n_labeled);
}

void wisp_train_data_describe(const wisp_train_data_t *d, char *buf, size_t n)
{
    int k = snprintf(buf, n, "%d labeled clips (%zu unlabeled skipped), %d classes", d->n,
                     wisp_train_data_unlabeled(&d->train), d->train.n_classes);
    if (k < 0 || (size_t)k >= n)
        return;
    if (d->val.source)
        snprintf(buf + k, n - (size_t)k, "; validation: %d labeled clips (%zu unlabeled skipped)",
                 d->nv, wisp_train_data_unlabeled(&d->val));
    else
        snprintf(buf + k, n - (size_t)k, "; no validation set");
}
