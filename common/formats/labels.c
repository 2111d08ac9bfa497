/* labels.c: class lists and label lookup (contract in labels.h). */
#include "formats/labels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

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

/* *v grown to twice *cap names (at least 64); -1 (v untouched) when out of memory. */
static int s_grow(char ***v, int *cap)
{
    int c = *cap ? 2 * *cap : 64;
    char **w = realloc(*v, (size_t)c * sizeof *w);
    if (!w)
        return -1;
    *v = w;
    *cap = c;
    return 0;
}

static int s_cmp_named(const void *a, const void *b)
{
    return strcmp(((const s_named_t *)a)->name, ((const s_named_t *)b)->name);
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int s_all_digits(const char *s)
{
    if (!s[0])
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Digit strings by numeric value (any length: leading zeros dropped, then the longer
 * is larger, then digit order), equal values by text ("7" before "07"). */
static int s_cmp_numeric(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    const char *px = x, *py = y;
    while (px[0] == '0' && px[1])
        px++;
    while (py[0] == '0' && py[1])
        py++;
    size_t nx = strlen(px), ny = strlen(py);
    if (nx != ny)
        return nx < ny ? -1 : 1;
    int c = strcmp(px, py);
    return c ? c : strcmp(x, y);
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

/* Classes = the unique labeled texts, sorted by numeric value when every one is a
 * digit string, else in byte order. More than WISP_LABELS_MAX is an error. */
static int s_set_sorted_names(wisp_labels_t *self, const char *const *labels, size_t n, int numeric,
                              const char *src, wisp_error_t *err)
{
    const char **v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return WISP_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (s_labeled(labels[i]))
            v[k++] = labels[i];
    if (k > 1)
        qsort(v, k, sizeof *v, numeric ? s_cmp_numeric : s_cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0)
            v[u++] = v[i];
    int rc;
    if (u > WISP_LABELS_MAX)
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: %zu distinct labels, more than the %d classes wisp supports", src,
                            u, WISP_LABELS_MAX);
    else if ((rc = s_set_names(self, v, (int)u)) != WISP_OK)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
    free(v);
    return rc;
}

/* The sorted name index; a name twice is an error (a given list can have it). */
static int s_build_index(wisp_labels_t *self, const char *src, wisp_error_t *err)
{
    self->index = malloc((self->n > 0 ? (size_t)self->n : 1) * sizeof *self->index);
    if (!self->index)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
    for (int c = 0; c < self->n; c++)
        self->index[c] = (s_named_t){self->names[c], c};
    if (self->n > 1)
        qsort(self->index, (size_t)self->n, sizeof *self->index, s_cmp_named);
    for (int c = 1; c < self->n; c++)
        if (strcmp(self->index[c - 1].name, self->index[c].name) == 0)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: class \"%s\" appears twice", src,
                                  self->index[c].name);
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
    if (n_classes > WISP_LABELS_MAX) {
        wisp_error_set(err, WISP_ERR_FORMAT, "%s: %d classes, more than the %d wisp supports", src,
                       n_classes, WISP_LABELS_MAX);
        return NULL;
    }
    wisp_labels_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
        return NULL;
    }
    int all_digits = 1, any = 0;
    for (size_t i = 0; i < n; i++)
        if (s_labeled(labels[i])) {
            any = 1;
            all_digits = all_digits && s_all_digits(labels[i]);
        }
    int rc = WISP_OK;
    if (classes && n_classes > 0) {
        if (s_set_names(self, classes, n_classes) != WISP_OK)
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
    } else if (any) {
        rc = s_set_sorted_names(self, labels, n, all_digits, src, err);
    }
    if (rc == WISP_OK)
        rc = s_build_index(self, src, err);
    if (rc != WISP_OK)
        wisp_labels_destroy(&self);
    return self;
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

int wisp_labels_find_name(const wisp_labels_t *self, const char *name)
{
    if (!name || self->n < 1)
        return -1;
    s_named_t key = {name, 0};
    const s_named_t *hit = bsearch(&key, self->index, (size_t)self->n, sizeof key, s_cmp_named);
    return hit ? hit->id : -1;
}

int wisp_labels_find(const wisp_labels_t *self, const char *label)
{
    if (!s_labeled(label))
        return -1;
    int c = wisp_labels_find_name(self, label);
    if (c >= 0)
        return c;
    int id = wisp_labels_parse_id(label);
    return id >= 0 && id < self->n ? id : -1;
}

void wisp_labels_free_list(char ***names, int n)
{
    if (!names || !*names)
        return;
    for (int i = 0; i < n; i++)
        free((*names)[i]);
    free(*names);
    *names = NULL;
}

int wisp_labels_read_list(const char *path, char ***names, int *n, wisp_error_t *err)
{
    *names = NULL;
    *n = 0;
    char *text = NULL;
    size_t len = 0;
    /* 64 KiB names of up to ~1 KiB: far above any class list */
    int rc = wisp_read_file(path, (size_t)64 << 20, &text, &len, err);
    if (rc != WISP_OK)
        return rc;
    char **v = NULL;
    int k = 0, cap = 0;
    long line = 0;
    for (size_t pos = 0; pos < len && rc == WISP_OK;) {
        line++;
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t m = nl ? (size_t)(nl - s) : len - pos;
        pos += m + 1;
        while (m > 0 && (s[m - 1] == '\r' || s[m - 1] == ' ' || s[m - 1] == '\t'))
            m--;
        while (m > 0 && (*s == ' ' || *s == '\t'))
            s++, m--;
        if (m == 0)
            continue;
        if (memchr(s, '\0', m))
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: NUL byte", path, line);
        else if (k >= WISP_LABELS_MAX)
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: more than %d classes", path,
                                WISP_LABELS_MAX);
        else if (k == cap && s_grow(&v, &cap) != 0)
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        else if (!(v[k] = strndup(s, m)))
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        else
            k++;
    }
    free(text);
    if (rc == WISP_OK && k == 0)
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: no class name in the file", path);
    if (rc == WISP_OK) { /* each name once: the checks of wisp_labels_new */
        wisp_labels_t *l = wisp_labels_new(NULL, 0, (const char *const *)v, k, path, err);
        if (!l)
            rc = err && err->code ? err->code : WISP_ERR_FORMAT;
        wisp_labels_destroy(&l);
    }
    if (rc != WISP_OK) {
        wisp_labels_free_list(&v, k);
        return rc;
    }
    *names = v;
    *n = k;
    return WISP_OK;
}
