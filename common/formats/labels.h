/* labels.h: the class list of a dataset and the mapping label text -> class id.
 *
 * A label is written as text (a CSV field, a JSON string or integer, an audiofolder
 * directory name). The class list is either given (e.g. a head's id2label: index =
 * class id) or derived from the labels themselves:
 *   - given: a label equal to a class name maps to its index; otherwise an integer
 *     label in [0, n_classes) is taken as the id; anything else is not found (-1);
 *   - derived, every label an integer: classes are "0".."K-1" with K = max id + 1;
 *   - derived, otherwise: classes are the sorted (byte order) unique label texts and
 *     integers are treated as names.
 * Lookups are O(log n_classes) (a sorted name index built once in _new). */
#ifndef WISP_LABELS_H
#define WISP_LABELS_H

#include <stddef.h>

#include "base/err.h"

typedef struct wisp_labels wisp_labels_t;

/* labels: (n) label texts as written, NULL or "" for an unlabeled entry (may be NULL
 * when n is 0). classes: (n_classes) fixed class list, or NULL / n_classes 0 to
 * derive it. src names the dataset in error messages. NULL on failure (out of
 * memory, bad arguments), with err filled once. With no labeled entry and no class
 * list the result has 0 classes. */
wisp_labels_t *wisp_labels_new(const char *const *labels, size_t n, const char *const *classes,
                               int n_classes, const char *src, wisp_error_t *err);
void wisp_labels_destroy(wisp_labels_t **self);

int wisp_labels_n_classes(const wisp_labels_t *self);

/* Name of class id in [0, n_classes) (owned by self), NULL outside. */
const char *wisp_labels_name(const wisp_labels_t *self, int id);

/* Class id of a label text (rules above), -1 when it is none of the classes. */
int wisp_labels_find(const wisp_labels_t *self, const char *label);

/* A non-negative decimal integer of at most 9 digits (so it fits an int), else -1. */
int wisp_labels_parse_id(const char *s);

#endif
