/* labels.c: class lists and label lookup (contract in labels.h). */
#include "formats/labels.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wisp_labels {
    char **names; /* (n) class names, index = class id, malloc'd */
    int n;
    /* (n) the same names sorted by strcmp, each with its id: the lookup index */
    struct s_named *index;
};

typedef struct s_named {
    const char *name;
    int id;
} s_named_t;

int wisp_labels_parse_id(const char *s)
{
    if (!s || !s[0] || strlen(s) > 9)
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    return atoi(s);
}

static int s_cmp_named(const void *a, const void *b)
{
    return strcmp(((const s_named_t *)a)->name, ((const s_named_t *)b)->name);
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int s_labeled(const char *s)
{
    return s && s[0];
}

/* self->names = a copy of the n names. */
static int s_set_names(wisp_labels_t *self, const char *const *names, int n)
{
    self->names = calloc(n > 0 ? (size_t)n : 1, sizeof *self->names);
    if (!self->names)
        return WISP_ERR_NOMEM;
    self->n = n;
    for (int c = 0; c < n; c++)
        if (!(self->names[c] = strdup(names[c] ? names[c] : "")))
            return WISP_ERR_NOMEM;
    return WISP_OK;
}

/* Classes "0".."max_id". */
static int s_set_integer_names(wisp_labels_t *self, int max_id)
{
    self->names = calloc((size_t)max_id + 1, sizeof *self->names);
    if (!self->names)
        return WISP_ERR_NOMEM;
    self->n = max_id + 1;
    for (int c = 0; c <= max_id; c++) {
        char b[16];
        snprintf(b, sizeof b, "%d", c);
        if (!(self->names[c] = strdup(b)))
            return WISP_ERR_NOMEM;
    }
    return WISP_OK;
}

/* Classes = the sorted unique labeled texts. */
static int s_set_sorted_names(wisp_labels_t *self, const char *const *labels, size_t n)
{
    const char **v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return WISP_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s_labeled(labels[i]))
            v[k++] = labels[i];
    if (k > 1)
        qsort(v, k, sizeof *v, s_cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
            v[u++] = v[i];
    int rc = u > INT_MAX ? WISP_ERR_NOMEM : s_set_names(self, v, (int)u);
    free(v);
    return rc;
}

static int s_build_index(wisp_labels_t *self)
{
    self->index = malloc((self->n > 0 ? (size_t)self->n : 1) * sizeof *self->index);
    if (!self->index)
        return WISP_ERR_NOMEM;
    for (int c = 0; c < self->n; c++)
        self->index[c] = (s_named_t){self->names[c], c};
    if (self->n > 1)
        qsort(self->index, (size_t)self->n, sizeof *self->index, s_cmp_named);
    return WISP_OK;
}

wisp_labels_t *wisp_labels_new(const char *const *labels, size_t n, const char *const *classes,
                               int n_classes, const char *src, wisp_error_t *err)
{
    if (!src)
        src = "labels";
    if ((n > 0 && !labels) || n_classes < 0 || (n_classes > 0 && !classes)) {
        wisp_error_set(err, WISP_ERR_ARG, "%s: bad label or class list", src);
        return NULL;
    }
    wisp_labels_t *self = calloc(1, sizeof *self);
    if (!self)
        goto nomem;
    int all_int = 1, max_id = -1, any = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s_labeled(labels[i]))
            continue;
        any = 1;
        int id = wisp_labels_parse_id(labels[i]);
        if (id < 0)
            all_int = 0;
        else if (id > max_id)
            max_id = id;
    }
    int rc = WISP_OK;
    if (classes && n_classes > 0)
        rc = s_set_names(self, classes, n_classes);
    else if (any && all_int)
        rc = s_set_integer_names(self, max_id);
    else if (any)
        rc = s_set_sorted_names(self, labels, n);
    if (rc == WISP_OK)
        rc = s_build_index(self);
    if (rc != WISP_OK)
        goto nomem;
    return self;
nomem:
    wisp_labels_destroy(&self);
    wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
    return NULL;
}

void wisp_labels_destroy(wisp_labels_t **self)
{
    if (!self || !*self)
        return;
    wisp_labels_t *l = *self;
    if (l->names)
        for (int c = 0; c < l->n; c++)
            free(l->names[c]);
    free(l->names);
    free(l->index);
    free(l);
    *self = NULL;
}

int wisp_labels_n_classes(const wisp_labels_t *self)
{
    return self->n;
}

const char *wisp_labels_name(const wisp_labels_t *self, int id)
{
    return id >= 0 && id < self->n ? self->names[id] : NULL;
}

int wisp_labels_find(const wisp_labels_t *self, const char *label)
{
    if (!s_labeled(label))
        return -1;
    s_named_t key = {label, 0};
    const s_named_t *hit =
        self->n > 0 ? bsearch(&key, self->index, (size_t)self->n, sizeof key, s_cmp_named) : NULL;
    if (hit)
        return hit->id;
    int id = wisp_labels_parse_id(label);
    return id >= 0 && id < self->n ? id : -1;
}
