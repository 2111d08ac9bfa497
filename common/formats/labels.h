/* labels.h: the class list of a dataset and the mapping label text -> class id.
 *
 * A label is written as text (a CSV field, a JSON string or integer, an audiofolder
 * directory name). The class list is either given (e.g. a head's id2label: index =
 * class id) or derived from the labels themselves:
 *   - given: a label equal to a class name maps to its index; otherwise an integer
 *     label in [0, n_classes) is taken as the id; anything else is not found (-1);
 *   - derived: classes are the unique label texts, by name: sorted by numeric value
 *     when every label is a digit string ("2" < "10"; labels 10..15 are 6 classes,
 *     10 -> 0 ... 15 -> 5, as Hugging Face's ClassLabel from the sorted names), else
 *     in byte order. An integer label is never taken as a count of classes.
 * A class list has at most WISP_LABELS_MAX names, each once.
 * Lookups are O(log n_classes) (a sorted name index built once in _new). */
#ifndef WISP_LABELS_H
#define WISP_LABELS_H

#include <stddef.h>

#include "base/err.h"

/* Most classes a dataset or a head may have: far above any audio classification set
 * (AudioSet has 527) and small enough that per-class tables stay in megabytes. Every
 * count read from a file (num_labels, id2label, distinct labels) is checked against it. */
#define WISP_LABELS_MAX 65536

typedef struct wisp_labels wisp_labels_t;

/* labels: (n) label texts as written, NULL or "" for an unlabeled entry (may be NULL
 * when n is 0). classes: (n_classes) fixed class list, or NULL / n_classes 0 to
 * derive it. src names the dataset in error messages. NULL on failure with err
 * filled once: a name twice in classes or more than WISP_LABELS_MAX classes
 * (WISP_ERR_FORMAT), bad arguments, out of memory. With no labeled entry and no class
 * list the result has 0 classes. */
wisp_labels_t *wisp_labels_new(const char *const *labels, size_t n, const char *const *classes,
                               int n_classes, const char *src, wisp_error_t *err);
void wisp_labels_destroy(wisp_labels_t **self);

int wisp_labels_n_classes(const wisp_labels_t *self);

/* Name of class id in [0, n_classes) (owned by self), NULL outside. */
const char *wisp_labels_name(const wisp_labels_t *self, int id);

/* Class id of exactly the name, -1 when no class has it. */
int wisp_labels_find_name(const wisp_labels_t *self, const char *name);

/* Class id of a label text (rules above), -1 when it is none of the classes. */
int wisp_labels_find(const wisp_labels_t *self, const char *label);

/* A non-negative decimal integer of at most 9 digits (so it fits an int), else -1. */
int wisp_labels_parse_id(const char *s);

/* Reads a class list file: one class name per line, in class-id order (line k = id k
 * among the non-blank lines); blank lines skipped, trailing CR and blanks dropped.
 * *names (malloc'd, free with wisp_labels_free_list) and *n. Errors: unreadable file,
 * no name, more than WISP_LABELS_MAX names, a name twice (naming file and line). */
int wisp_labels_read_list(const char *path, char ***names, int *n, wisp_error_t *err);
void wisp_labels_free_list(char ***names, int n);

#endif
