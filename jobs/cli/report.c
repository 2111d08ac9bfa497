#include "cli/report.h"

#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/results.h"
#include "base/util.h"

#define S_MAX_JSONL_BYTES ((size_t)1 << 30)
#define S_ATTR_TEXT_MAX   100

static char *s_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void s_free_strings(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- HDF5 readers: every one checks existence, rank, length and type class and
 * reports the file and dataset name. HDF5's own error printing is off while a file
 * is read (see wisp_report_results_load). ---- */

typedef struct {
    const char *file; /* for messages */
    hid_t fid;
    wisp_error_t *err;
} s_h5_t;

/* Opens a dataset into *out. An absent optional dataset is not an error: WISP_OK
 * with *out = -1; an absent required one is WISP_ERR_FORMAT naming it. */
static int s_open_dataset(s_h5_t *h, const char *name, int required, hid_t *out)
{
    *out = -1;
    htri_t ex = H5Lexists(h->fid, name, H5P_DEFAULT);
    if (ex <= 0)
        return required ? wisp_error_set(h->err, WISP_ERR_FORMAT, "%s: missing dataset '%s'",
                                         h->file, name)
                        : WISP_OK;
    *out = H5Dopen2(h->fid, name, H5P_DEFAULT);
    if (*out < 0)
        return wisp_error_set(h->err, WISP_ERR_FORMAT, "%s: '%s' is not a readable dataset",
                              h->file, name);
    return WISP_OK;
}

/* Rank and dims of a dataset; rank must be `rank`. */
static int s_dims(s_h5_t *h, hid_t d, const char *name, int rank, hsize_t *dims)
{
    hid_t sp = H5Dget_space(d);
    int r = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    int rc = WISP_OK;
    if (r != rank)
        rc = wisp_error_set(h->err, WISP_ERR_SHAPE,
                            "%s: dataset '%s' has %d dimensions, expected %d", h->file, name, r,
                            rank);
    else if (H5Sget_simple_extent_dims(sp, dims, NULL) < 0)
        rc = wisp_error_set(h->err, WISP_ERR_HDF5, "%s: cannot read the shape of '%s'", h->file,
                            name);
    if (sp >= 0)
        H5Sclose(sp);
    return rc;
}

/* The dataset's type class must be `want` (or `also`, e.g. integers where numbers
 * are expected; H5T_NO_CLASS for none). */
static int s_check_class(s_h5_t *h, hid_t d, const char *name, H5T_class_t want, H5T_class_t also)
{
    hid_t t = H5Dget_type(d);
    H5T_class_t c = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (t >= 0)
        H5Tclose(t);
    if (c == want || (also != H5T_NO_CLASS && c == also))
        return WISP_OK;
    const char *what = want == H5T_INTEGER ? "integers" : want == H5T_FLOAT ? "numbers" : "strings";
    return wisp_error_set(h->err, WISP_ERR_FORMAT, "%s: dataset '%s' does not hold %s", h->file,
                          name, what);
}

/* Length argument of the readers meaning "any length" (returned in *len). */
#define S_ANY_LEN ((size_t)-1)

/* Opens the 1-D dataset `name` of length n (S_ANY_LEN: any) into *d with its length in
 * dims[0]; an absent optional one is *d < 0 and WISP_OK. On an error nothing is left
 * open. */
static int s_open_1d(s_h5_t *h, const char *name, int required, size_t n, hid_t *d, hsize_t dims[1])
{
    int rc = s_open_dataset(h, name, required, d);
    if (rc != WISP_OK || *d < 0)
        return rc;
    if ((rc = s_dims(h, *d, name, 1, dims)) == WISP_OK && n != S_ANY_LEN && dims[0] != n)
        rc = wisp_error_set(h->err, WISP_ERR_SHAPE, "%s: dataset '%s' has %llu rows, expected %zu",
                            h->file, name, (unsigned long long)dims[0], n);
    if (rc != WISP_OK) {
        H5Dclose(*d);
        *d = -1;
    }
    return rc;
}

/* A 1-D numeric dataset of length n (S_ANY_LEN: any length, returned in *len) read
 * as int or double. Optional datasets that are absent leave *out NULL. */
static int s_read_1d(s_h5_t *h, const char *name, int required, size_t n, int as_int, void **out,
                     size_t *len)
{
    *out = NULL;
    hid_t d;
    hsize_t dims[1];
    int rc = s_open_1d(h, name, required, n, &d, dims);
    if (rc != WISP_OK || d < 0)
        return rc;
    if ((rc = s_check_class(h, d, name, as_int ? H5T_INTEGER : H5T_FLOAT,
                            as_int ? H5T_NO_CLASS : H5T_INTEGER)) != WISP_OK)
        goto done;
    size_t elem = as_int ? sizeof(int) : sizeof(double);
    void *buf = malloc(dims[0] ? dims[0] * elem : 1);
    if (!buf) {
        rc =
            wisp_error_set(h->err, WISP_ERR_NOMEM, "%s: out of memory reading '%s'", h->file, name);
        goto done;
    }
    if (dims[0] && H5Dread(d, as_int ? H5T_NATIVE_INT : H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL,
                           H5P_DEFAULT, buf) < 0) {
        free(buf);
        rc = wisp_error_set(h->err, WISP_ERR_HDF5, "%s: cannot read dataset '%s'", h->file, name);
        goto done;
    }
    *out = buf;
    if (len)
        *len = (size_t)dims[0];
done:
    H5Dclose(d);
    return rc;
}

/* Strings from an attribute or dataset of string type, n elements, into malloc'd
 * copies. The memory type follows the file's: variable length reads n char pointers
 * the library allocates (freed here), fixed length n NUL-terminated cells of the
 * file's width + 1; one read (H5Aread or H5Dread) and one copy loop serve both. */
static int s_read_string_buf(s_h5_t *h, const char *name, hid_t obj, int is_attr, hid_t ftype,
                             size_t n, char ***out)
{
    int rc = WISP_OK;
    const int var = H5Tis_variable_str(ftype) > 0;
    const size_t w = var ? sizeof(char *) : H5Tget_size(ftype) + 1; /* bytes per element */
    char **v = calloc(n ? n : 1, sizeof *v);
    char *buf = calloc(n ? n : 1, w);
    hid_t mt = H5Tcopy(H5T_C_S1);
    if (!v || !buf || mt < 0) {
        rc =
            wisp_error_set(h->err, WISP_ERR_NOMEM, "%s: out of memory reading '%s'", h->file, name);
        goto done;
    }
    H5Tset_cset(mt, H5Tget_cset(ftype));
    H5Tset_size(mt, var ? H5T_VARIABLE : w);
    if (!var)
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
    herr_t st = n == 0    ? 0
                : is_attr ? H5Aread(obj, mt, buf)
                          : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (st < 0) {
        rc =
            wisp_error_set(h->err, WISP_ERR_HDF5, "%s: cannot read strings of '%s'", h->file, name);
        goto done;
    }
    char **vl = (char **)(void *)buf; /* variable length: the library's pointers */
    for (size_t i = 0; i < n && rc == WISP_OK; i++) {
        const char *si = var ? vl[i] : buf + i * w;
        if (!(v[i] = s_strdup(si ? si : "")))
            rc = wisp_error_set(h->err, WISP_ERR_NOMEM, "%s: out of memory", h->file);
    }
    for (size_t i = 0; var && i < n; i++)
        H5free_memory(vl[i]);
done:
    if (rc != WISP_OK) {
        s_free_strings(v, n);
        v = NULL;
    }
    *out = v;
    free(buf);
    if (mt >= 0)
        H5Tclose(mt);
    return rc;
}

static int s_read_strings(s_h5_t *h, const char *name, int required, size_t n, char ***out,
                          size_t *len)
{
    *out = NULL;
    hid_t d, t = -1;
    hsize_t dims[1];
    int rc = s_open_1d(h, name, required, n, &d, dims);
    if (rc != WISP_OK || d < 0)
        return rc;
    if ((rc = s_check_class(h, d, name, H5T_STRING, H5T_NO_CLASS)) != WISP_OK)
        goto done;
    t = H5Dget_type(d);
    rc = s_read_string_buf(h, name, d, 0, t, (size_t)dims[0], out);
    if (rc == WISP_OK && len)
        *len = (size_t)dims[0];
done:
    if (t >= 0)
        H5Tclose(t);
    H5Dclose(d);
    return rc;
}

/* An optional 2-D dataset must be [rows, cols] (cols == 0: any width). */
static int s_check_2d(s_h5_t *h, const char *name, size_t rows, size_t cols)
{
    hid_t d;
    hsize_t dims[2];
    int rc = s_open_dataset(h, name, 0, &d);
    if (rc != WISP_OK || d < 0)
        return rc;
    if ((rc = s_dims(h, d, name, 2, dims)) == WISP_OK &&
        (dims[0] != rows || (cols && dims[1] != cols)))
        rc = wisp_error_set(h->err, WISP_ERR_SHAPE,
                            "%s: dataset '%s' is [%llu, %llu], expected [%zu, %s%zu]", h->file,
                            name, (unsigned long long)dims[0], (unsigned long long)dims[1], rows,
                            cols ? "" : ">=", cols ? cols : (size_t)1);
    H5Dclose(d);
    return rc;
}

/* Renders one root attribute as text (numbers, strings, short numeric arrays). */
typedef struct {
    s_h5_t *h;
    wisp_report_results_t *r;
    size_t cap;
    int rc;
} s_attr_ctx_t;

static void s_cut(char *s, size_t max)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    if (strlen(s) > max)
        strcpy(s + max - 3, "...");
}

static herr_t s_attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *vctx)
{
    (void)info;
    s_attr_ctx_t *c = vctx;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t npts = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    char text[S_ATTR_TEXT_MAX + 64] = "";
    if (npts >= 1 && npts <= 8 && (cls == H5T_INTEGER || cls == H5T_FLOAT)) {
        double vals[8];
        if (H5Aread(a, H5T_NATIVE_DOUBLE, vals) >= 0)
            for (hssize_t i = 0; i < npts; i++) {
                size_t l = strlen(text);
                snprintf(text + l, sizeof text - l, "%s%.6g", i ? ", " : "", vals[i]);
            }
    } else if (npts == 1 && cls == H5T_STRING) {
        char **s = NULL;
        wisp_error_t ignore = {0};
        s_h5_t quiet = *c->h;
        quiet.err = &ignore;
        if (s_read_string_buf(&quiet, name, a, 1, t, 1, &s) == WISP_OK) {
            snprintf(text, sizeof text, "%.*s", S_ATTR_TEXT_MAX + 10, s[0]);
            /* The run summary (JSON) is printed in full, key by key. */
            if (strcmp(name, "summary") == 0 && !c->r->summary_json) {
                c->r->summary_json = s[0];
                s[0] = NULL;
            }
            s_free_strings(s, 1);
        }
    } else if (npts >= 0) {
        snprintf(text, sizeof text, "<%lld values>", (long long)npts);
    }
    s_cut(text, S_ATTR_TEXT_MAX);
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    H5Aclose(a);
    wisp_report_results_t *r = c->r;
    if (r->n_attrs == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        char **nn = realloc(r->attr_names, cap * sizeof *nn);
        if (nn)
            r->attr_names = nn;
        char **vv = realloc(r->attr_values, cap * sizeof *vv);
        if (vv)
            r->attr_values = vv;
        if (!nn || !vv) {
            c->rc = WISP_ERR_NOMEM;
            return -1;
        }
        c->cap = cap;
    }
    r->attr_names[r->n_attrs] = s_strdup(name);
    r->attr_values[r->n_attrs] = s_strdup(text);
    r->n_attrs++;
    if (!r->attr_names[r->n_attrs - 1] || !r->attr_values[r->n_attrs - 1]) {
        c->rc = WISP_ERR_NOMEM;
        return -1;
    }
    return 0;
}

static double s_div(double a, double b)
{
    return b > 0 ? a / b : NAN;
}

/* Derived numbers: accuracy, confusion, per-class precision/recall/F1. Only ok rows
 * count, and only those with a known truth (>= 0) are scored. confusion is (C, C):
 * row = true class, column = predicted, so a column sum is what was predicted as c
 * (precision's denominator) and support[c] a row sum (recall's). An undefined ratio
 * (nothing predicted or true) is NaN, not 0; macro F1 averages the classes that
 * occur in the truth. Labels come from the file: range-checked before indexing. */
static int s_compute(wisp_report_results_t *r, const int *label, const int *status,
                     const int *truth, const double *score, const double *duration,
                     wisp_error_t *err)
{
    int C = r->n_classes;
    double score_sum = 0, dur_sum = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (status[i] != 0)
            continue;
        if (label[i] < 0 || label[i] >= C)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: row %zu has status ok but label %d outside 0..%d", r->file,
                                  i, label[i], C - 1);
        r->predicted[label[i]]++;
        if (score)
            score_sum += score[i];
        if (duration && duration[i] >= 0)
            dur_sum += duration[i];
        if (!truth)
            continue;
        if (truth[i] >= C)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: row %zu has true_label %d outside 0..%d (or -1 unknown)",
                                  r->file, i, truth[i], C - 1);
        if (truth[i] < 0)
            continue;
        r->n_scored++;
        r->n_correct += truth[i] == label[i];
        r->support[truth[i]]++;
        r->confusion[(size_t)truth[i] * C + label[i]]++;
    }
    r->accuracy = s_div((double)r->n_correct, (double)r->n_scored);
    r->mean_score = score ? s_div(score_sum, (double)r->n_ok) : NAN;
    r->total_duration = duration ? dur_sum : NAN;
    double f1_sum = 0;
    int f1_n = 0;
    for (int c = 0; c < C; c++) {
        double tp = (double)r->confusion[(size_t)c * C + c];
        size_t col = 0;
        for (int t = 0; t < C; t++)
            col += (size_t)r->confusion[(size_t)t * C + c];
        r->precision[c] = s_div(tp, (double)col);
        r->recall[c] = s_div(tp, (double)r->support[c]);
        double p = r->precision[c], q = r->recall[c];
        r->f1[c] = (isnan(p) || isnan(q)) ? NAN : (p + q > 0 ? 2 * p * q / (p + q) : 0);
        if (r->support[c] > 0) {
            f1_sum += isnan(r->f1[c]) ? 0 : r->f1[c];
            f1_n++;
        }
    }
    r->macro_f1 = f1_n ? f1_sum / f1_n : NAN;
    return WISP_OK;
}

/* The columns of a results file that the report reads (freed by s_rcols_free). */
typedef struct {
    char **classes; /* (n_classes), owned until moved out */
    int *label, *status, *truth;
    double *score, *duration;
    char **paths, **errors;
    size_t n, n_classes;
} s_rcols_t;

static void s_rcols_free(s_rcols_t *c)
{
    if (c->classes)
        s_free_strings(c->classes, c->n_classes);
    if (c->paths)
        s_free_strings(c->paths, c->n);
    if (c->errors)
        s_free_strings(c->errors, c->n);
    free(c->label);
    free(c->status);
    free(c->truth);
    free(c->score);
    free(c->duration);
}

/* Opens an HDF5 file read-only, with messages for a missing or non-HDF5 file. */
static int s_open_h5(const char *path, hid_t *fid, wisp_error_t *err)
{
    struct stat st;
    *fid = -1;
    if (stat(path, &st) != 0)
        return wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO,
                              "%s: cannot open: %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: not an HDF5 file", path);
    *fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*fid < 0)
        return wisp_error_set(err, WISP_ERR_HDF5, "%s: HDF5 cannot open the file", path);
    return WISP_OK;
}

/* classes, label, status, path (required) and the optional columns, every one
 * checked against N and C. */
static int s_read_result_columns(s_h5_t *h, s_rcols_t *c)
{
    int rc = s_read_strings(h, "classes", 1, S_ANY_LEN, &c->classes, &c->n_classes);
    if (rc != WISP_OK)
        return rc;
    if (c->n_classes == 0 || c->n_classes > 1000000)
        return wisp_error_set(h->err, WISP_ERR_SHAPE, "%s: dataset 'classes' has %zu entries",
                              h->file, c->n_classes);
    if ((rc = s_read_1d(h, "label", 1, S_ANY_LEN, 1, (void **)&c->label, &c->n)) != WISP_OK)
        return rc;
    size_t n = c->n, C = c->n_classes;
    if ((rc = s_read_1d(h, "status", 1, n, 1, (void **)&c->status, NULL)) != WISP_OK ||
        (rc = s_read_strings(h, "path", 1, n, &c->paths, NULL)) != WISP_OK ||
        (rc = s_read_strings(h, "error", 0, n, &c->errors, NULL)) != WISP_OK ||
        (rc = s_read_1d(h, "true_label", 0, n, 1, (void **)&c->truth, NULL)) != WISP_OK ||
        (rc = s_read_1d(h, "score", 0, n, 0, (void **)&c->score, NULL)) != WISP_OK ||
        (rc = s_read_1d(h, "duration", 0, n, 0, (void **)&c->duration, NULL)) != WISP_OK ||
        (rc = s_check_2d(h, "probs", n, C)) != WISP_OK ||
        (rc = s_check_2d(h, "logits", n, C)) != WISP_OK ||
        (rc = s_check_2d(h, "embedding", n, 0)) != WISP_OK ||
        (rc = s_check_2d(h, "confusion", C, C)) != WISP_OK)
        return rc;
    return WISP_OK;
}

static int s_alloc_tables(wisp_report_results_t *r, size_t C, wisp_error_t *err)
{
    r->confusion = calloc(C * C, sizeof *r->confusion);
    r->support = calloc(C, sizeof *r->support);
    r->predicted = calloc(C, sizeof *r->predicted);
    r->precision = calloc(C, sizeof *r->precision);
    r->recall = calloc(C, sizeof *r->recall);
    r->f1 = calloc(C, sizeof *r->f1);
    if (!r->confusion || !r->support || !r->predicted || !r->precision || !r->recall || !r->f1)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory for %zu classes", r->file, C);
    return WISP_OK;
}

/* Moves the failed rows' path and error strings into r (N can be large: only those
 * are kept). */
static int s_keep_errors(wisp_report_results_t *r, s_rcols_t *c, wisp_error_t *err)
{
    for (size_t i = 0; i < c->n; i++)
        r->n_error += c->status[i] != 0;
    r->n_ok = c->n - r->n_error;
    size_t m = r->n_error ? r->n_error : 1;
    r->error_rows = calloc(m, sizeof *r->error_rows);
    r->error_status = calloc(m, sizeof *r->error_status);
    r->error_paths = calloc(m, sizeof *r->error_paths);
    r->error_msgs = calloc(m, sizeof *r->error_msgs);
    if (!r->error_rows || !r->error_status || !r->error_paths || !r->error_msgs)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->file);
    for (size_t i = 0, k = 0; i < c->n; i++) {
        if (c->status[i] == 0)
            continue;
        r->error_rows[k] = i;
        r->error_status[k] = c->status[i];
        r->n_missing += c->status[i] == WISP_RESULTS_STATUS_MISSING;
        r->error_paths[k] = c->paths[i];
        c->paths[i] = NULL;
        r->error_msgs[k] = c->errors ? c->errors[i] : s_strdup("");
        if (c->errors)
            c->errors[i] = NULL;
        if (!r->error_msgs[k])
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->file);
        k++;
    }
    return WISP_OK;
}

/* A stored confusion matrix (written by the writer) must agree with ours. */
static void s_check_file_confusion(wisp_report_results_t *r, hid_t fid)
{
    size_t C = (size_t)r->n_classes;
    hid_t cd;
    if (!r->has_truth || H5Lexists(fid, "confusion", H5P_DEFAULT) <= 0 ||
        (cd = H5Dopen2(fid, "confusion", H5P_DEFAULT)) < 0)
        return;
    int64_t *file_conf = calloc(C * C, sizeof *file_conf);
    r->file_confusion = 1;
    if (file_conf && H5Dread(cd, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, file_conf) >= 0 &&
        memcmp(file_conf, r->confusion, C * C * sizeof *file_conf) != 0)
        r->file_confusion = -1;
    free(file_conf);
    H5Dclose(cd);
}

static int s_read_attrs(s_h5_t *h, wisp_report_results_t *r)
{
    s_attr_ctx_t actx = {h, r, 0, WISP_OK};
    hsize_t idx = 0;
    if (H5Aiterate2(h->fid, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, s_attr_cb, &actx) < 0 &&
        actx.rc == WISP_OK) {
        idx = 0;
        H5Aiterate2(h->fid, H5_INDEX_NAME, H5_ITER_INC, &idx, s_attr_cb, &actx);
    }
    if (actx.rc != WISP_OK)
        return wisp_error_set(h->err, actx.rc, "%s: out of memory reading attributes", h->file);
    return WISP_OK;
}

wisp_report_results_t *wisp_report_results_load(const char *path, wisp_error_t *err)
{
    wisp_report_results_t *r = calloc(1, sizeof *r);
    s_rcols_t c;
    memset(&c, 0, sizeof c);
    int rc = WISP_OK;
    hid_t fid = -1;
    H5E_auto2_t old_func = NULL;
    void *old_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (!r || !(r->file = s_strdup(path))) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    r->accuracy = r->mean_score = r->total_duration = r->macro_f1 = NAN;
    if ((rc = s_open_h5(path, &fid, err)) != WISP_OK)
        goto done;
    s_h5_t h = {path, fid, err};
    if ((rc = s_read_result_columns(&h, &c)) != WISP_OK)
        goto done;
    r->classes = c.classes; /* r owns them from here (destroy frees n_classes of them) */
    c.classes = NULL;
    r->n_classes = (int)c.n_classes;
    r->n = c.n;
    r->has_truth = c.truth != NULL;
    if ((rc = s_alloc_tables(r, c.n_classes, err)) != WISP_OK ||
        (rc = s_keep_errors(r, &c, err)) != WISP_OK ||
        (rc = s_compute(r, c.label, c.status, c.truth, c.score, c.duration, err)) != WISP_OK)
        goto done;
    s_check_file_confusion(r, fid);
    rc = s_read_attrs(&h, r);
done:
    s_rcols_free(&c);
    if (fid >= 0)
        H5Fclose(fid);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    if (rc != WISP_OK)
        wisp_report_results_destroy(&r);
    return r;
}

/* ---- CSV export ---------------------------------------------------------------- */

/* An optional 2-D dataset [rows, cols] (cols 0: any width, returned in *width) read
 * as int or float; absent leaves *out NULL. */
static int s_read_2d(s_h5_t *h, const char *name, size_t rows, size_t cols, int as_int, void **out,
                     size_t *width)
{
    *out = NULL;
    hid_t d;
    hsize_t dims[2];
    int rc = s_check_2d(h, name, rows, cols);
    if (rc != WISP_OK || (rc = s_open_dataset(h, name, 0, &d)) != WISP_OK || d < 0)
        return rc;
    if ((rc = s_dims(h, d, name, 2, dims)) == WISP_OK &&
        (rc = s_check_class(h, d, name, as_int ? H5T_INTEGER : H5T_FLOAT, H5T_NO_CLASS)) ==
            WISP_OK) {
        size_t cnt = (size_t)dims[0] * (size_t)dims[1];
        void *buf = malloc(cnt ? cnt * 4 : 1);
        if (!buf)
            rc = wisp_error_set(h->err, WISP_ERR_NOMEM, "%s: out of memory reading '%s'", h->file,
                                name);
        else if (cnt && H5Dread(d, as_int ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                H5P_DEFAULT, buf) < 0)
            rc = wisp_error_set(h->err, WISP_ERR_HDF5, "%s: cannot read dataset '%s'", h->file,
                                name);
        if (rc == WISP_OK) {
            *out = buf;
            *width = (size_t)dims[1];
        } else {
            free(buf);
        }
    }
    H5Dclose(d);
    return rc;
}

/* One CSV field (RFC 4180: quoted when it holds a comma, quote or line break). */
static void s_csv_str(FILE *out, const char *s, int first)
{
    if (!first)
        fputc(',', out);
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

/* A number field: "" for NaN, 9 significant digits (a float round-trips). */
static void s_csv_num(FILE *out, double v)
{
    if (isnan(v))
        fputs(",", out);
    else
        fprintf(out, ",%.9g", v);
}

static const char *s_class_name(char **classes, size_t C, long id)
{
    return id >= 0 && (size_t)id < C ? classes[id] : "";
}

/* The header: fixed columns, top_<k> / top_<k>_prob, prob_<class>. */
static void s_csv_header(FILE *out, char **classes, size_t C, size_t K, int segments)
{
    fputs(segments ? "row,path,start,end,label,label_name,score"
                   : "row,path,label,label_name,score,true_label,true_label_name,status,error,"
                     "note,duration",
          out);
    for (size_t k = 0; k < K; k++)
        fprintf(out, ",top_%zu,top_%zu_prob", k + 1, k + 1);
    for (size_t c = 0; c < C; c++) {
        char name[1100];
        snprintf(name, sizeof name, "prob_%s", classes[c]);
        s_csv_str(out, name, 0);
    }
    fputc('\n', out);
}

/* Everything the CSV writers read (freed by s_csv_free). */
typedef struct {
    s_rcols_t c;
    char **notes;
    float *probs, *topp;
    int *topl;
    size_t K;
} s_csv_t;

static void s_csv_free(s_csv_t *x)
{
    s_rcols_t *c = &x->c;
    if (x->notes)
        s_free_strings(x->notes, c->n);
    s_rcols_free(c);
    free(x->probs);
    free(x->topp);
    free(x->topl);
}

static void s_csv_rows(FILE *out, const s_csv_t *x)
{
    const s_rcols_t *c = &x->c;
    const size_t C = c->n_classes;
    s_csv_header(out, x->c.classes, C, x->K, 0);
    for (size_t i = 0; i < c->n; i++) {
        fprintf(out, "%zu", i);
        s_csv_str(out, c->paths[i], 0);
        fprintf(out, ",%d", c->label[i]);
        s_csv_str(out, s_class_name(x->c.classes, C, c->label[i]), 0);
        s_csv_num(out, c->score ? c->score[i] : NAN);
        fprintf(out, ",%d", c->truth ? c->truth[i] : -1);
        s_csv_str(out, c->truth ? s_class_name(x->c.classes, C, c->truth[i]) : "", 0);
        fprintf(out, ",%d", c->status[i]);
        s_csv_str(out, c->errors ? c->errors[i] : "", 0);
        s_csv_str(out, x->notes ? x->notes[i] : "", 0);
        s_csv_num(out, c->duration ? c->duration[i] : NAN);
        for (size_t k = 0; k < x->K; k++) {
            s_csv_str(out, s_class_name(x->c.classes, C, x->topl[i * x->K + k]), 0);
            s_csv_num(out, x->topp[i * x->K + k]);
        }
        for (size_t k = 0; k < C; k++)
            s_csv_num(out, x->probs ? x->probs[i * C + k] : NAN);
        fputc('\n', out);
    }
}

/* The segments group as CSV (row, the file's path, window, label, probs). */
static int s_csv_segments(s_h5_t *h, FILE *out, const s_csv_t *x)
{
    const size_t C = x->c.n_classes;
    double *row = NULL, *start = NULL, *end = NULL, *score = NULL;
    int *label = NULL;
    float *probs = NULL;
    size_t M = 0, w = 0;
    int rc = s_read_1d(h, "segments/row", 1, S_ANY_LEN, 0, (void **)&row, &M);
    if (rc == WISP_OK &&
        (rc = s_read_1d(h, "segments/start", 1, M, 0, (void **)&start, NULL)) == WISP_OK &&
        (rc = s_read_1d(h, "segments/end", 1, M, 0, (void **)&end, NULL)) == WISP_OK &&
        (rc = s_read_1d(h, "segments/label", 1, M, 1, (void **)&label, NULL)) == WISP_OK &&
        (rc = s_read_1d(h, "segments/score", 1, M, 0, (void **)&score, NULL)) == WISP_OK &&
        (rc = s_read_2d(h, "segments/probs", M, C, 0, (void **)&probs, &w)) == WISP_OK) {
        s_csv_header(out, x->c.classes, C, 0, 1);
        for (size_t k = 0; k < M; k++) {
            /* The row id indexes the file table: checked before use. */
            if (!(row[k] >= 0 && row[k] < (double)x->c.n)) {
                rc = wisp_error_set(h->err, WISP_ERR_FORMAT,
                                    "%s: segments/row %zu is %g, outside the %zu rows", h->file, k,
                                    row[k], x->c.n);
                break;
            }
            size_t i = (size_t)row[k];
            fprintf(out, "%zu", i);
            s_csv_str(out, x->c.paths[i], 0);
            fprintf(out, ",%.6f,%.6f,%d", start[k], end[k], label[k]);
            s_csv_str(out, s_class_name(x->c.classes, C, label[k]), 0);
            s_csv_num(out, score[k]);
            for (size_t c = 0; c < C; c++)
                s_csv_num(out, probs ? probs[k * C + c] : NAN);
            fputc('\n', out);
        }
    }
    free(row);
    free(start);
    free(end);
    free(score);
    free(label);
    free(probs);
    return rc;
}

int wisp_report_results_csv(const char *path, FILE *out, FILE *seg_out, wisp_error_t *err)
{
    s_csv_t x;
    memset(&x, 0, sizeof x);
    hid_t fid = -1;
    size_t w = 0;
    H5E_auto2_t old_func = NULL;
    void *old_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = s_open_h5(path, &fid, err);
    s_h5_t h = {path, fid, err};
    if (rc != WISP_OK || (rc = s_read_result_columns(&h, &x.c)) != WISP_OK ||
        (rc = s_read_strings(&h, "note", 0, x.c.n, &x.notes, NULL)) != WISP_OK ||
        (rc = s_read_2d(&h, "probs", x.c.n, x.c.n_classes, 0, (void **)&x.probs, &w)) != 0 ||
        (rc = s_read_2d(&h, "top_k_label", x.c.n, 0, 1, (void **)&x.topl, &x.K)) != WISP_OK ||
        (rc = s_read_2d(&h, "top_k_prob", x.c.n, x.K, 0, (void **)&x.topp, &w)) != WISP_OK)
        goto done;
    if (!x.topp)
        x.K = 0;
    s_csv_rows(out, &x);
    if (seg_out) {
        if (H5Lexists(fid, "segments", H5P_DEFAULT) <= 0)
            rc = wisp_error_set(err, WISP_ERR_NOTFOUND,
                                "%s: no segments group (the run had no classify.window)", path);
        else
            rc = s_csv_segments(&h, seg_out, &x);
    }
done:
    s_csv_free(&x);
    if (fid >= 0)
        H5Fclose(fid);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    return rc;
}

void wisp_report_results_destroy(wisp_report_results_t **self)
{
    if (!self || !*self)
        return;
    wisp_report_results_t *r = *self;
    free(r->file);
    s_free_strings(r->classes, (size_t)r->n_classes);
    free(r->confusion);
    free(r->support);
    free(r->predicted);
    free(r->precision);
    free(r->recall);
    free(r->f1);
    free(r->error_rows);
    free(r->error_status);
    free(r->summary_json);
    s_free_strings(r->error_paths, r->error_paths ? r->n_error : 0);
    s_free_strings(r->error_msgs, r->error_msgs ? r->n_error : 0);
    s_free_strings(r->attr_names, r->n_attrs);
    s_free_strings(r->attr_values, r->n_attrs);
    free(r);
    *self = NULL;
}

static void s_print_json_scalars(FILE *out, const cJSON *obj, const char *indent);

static void s_print_num(FILE *out, double v, int width)
{
    if (isnan(v))
        fprintf(out, " %*s", width, "-");
    else
        fprintf(out, " %*.3f", width, v);
}

void wisp_report_results_print(const wisp_report_results_t *r, FILE *out, size_t max_errors)
{
    int C = r->n_classes;
    fprintf(out, "results: %s\n", r->file);
    fprintf(out, "rows: %zu (ok %zu, error %zu", r->n, r->n_ok, r->n_error);
    if (r->n_missing)
        fprintf(out, ", of which %zu missing: never produced", r->n_missing);
    fprintf(out, "), classes: %d\n", C);
    if (!isnan(r->total_duration))
        fprintf(out, "audio: %.1f s in ok rows\n", r->total_duration);
    if (r->has_truth && r->n_scored > 0)
        fprintf(out, "accuracy: %.4f (%zu of %zu ok rows with a known label), macro F1 %.4f\n",
                r->accuracy, r->n_correct, r->n_scored, r->macro_f1);
    else if (r->has_truth)
        fprintf(out, "accuracy: - (no ok row has a known label)\n");
    else
        fprintf(out, "accuracy: - (no true_label dataset: labels unknown)\n");
    if (!isnan(r->mean_score))
        fprintf(out, "mean score: %.4f\n", r->mean_score);

    int name_w = 5;
    for (int c = 0; c < C; c++) {
        int l = (int)strlen(r->classes[c]);
        name_w = l > name_w ? l : name_w;
    }
    name_w = name_w > 24 ? 24 : name_w;
    fprintf(out, "\nper class:\n  %3s %-*s %9s %9s %9s %9s %9s\n", "#", name_w, "class", "support",
            "predicted", "precision", "recall", "f1");
    for (int c = 0; c < C; c++) {
        fprintf(out, "  %3d %-*.*s %9zu %9zu", c, name_w, name_w, r->classes[c], r->support[c],
                r->predicted[c]);
        s_print_num(out, r->precision[c], 9);
        s_print_num(out, r->recall[c], 9);
        s_print_num(out, r->f1[c], 9);
        fputc('\n', out);
    }

    if (r->has_truth && r->n_scored > 0) {
        /* Columns are class indices (names may be long); rows repeat the name. */
        int w = 5;
        for (int t = 0; t < C; t++)
            for (int p = 0; p < C; p++) {
                int digits = snprintf(NULL, 0, "%lld", (long long)r->confusion[(size_t)t * C + p]);
                w = digits + 1 > w ? digits + 1 : w;
            }
        if (C <= 40) {
            fprintf(out, "\nconfusion (rows: true class, columns: predicted class #):\n  %3s %-*s",
                    "#", name_w, "");
            for (int p = 0; p < C; p++)
                fprintf(out, " %*d", w, p);
            fputc('\n', out);
            for (int t = 0; t < C; t++) {
                fprintf(out, "  %3d %-*.*s", t, name_w, name_w, r->classes[t]);
                for (int p = 0; p < C; p++)
                    fprintf(out, " %*lld", w, (long long)r->confusion[(size_t)t * C + p]);
                fputc('\n', out);
            }
        } else {
            fprintf(out, "\nconfusion: %d classes, too many to print (see the plot)\n", C);
        }
        if (r->file_confusion < 0)
            fprintf(out,
                    "warning: the file's own 'confusion' dataset differs from the one computed "
                    "from label and true_label\n");
    }

    if (r->n_error > 0) {
        size_t show = max_errors && max_errors < r->n_error ? max_errors : r->n_error;
        fprintf(out, "\nerrors (%zu):", r->n_error);
        /* Counts per kind first (status codes are few), then the rows. */
        int kinds[64];
        size_t counts[64], n_kinds = 0;
        for (size_t k = 0; k < r->n_error; k++) {
            size_t j = 0;
            while (j < n_kinds && kinds[j] != r->error_status[k])
                j++;
            if (j == n_kinds && n_kinds < 64) {
                kinds[n_kinds] = r->error_status[k];
                counts[n_kinds++] = 0;
            }
            if (j < n_kinds)
                counts[j]++;
        }
        for (size_t j = 0; j < n_kinds; j++)
            fprintf(out, "%s %s %zu", j ? "," : "",
                    kinds[j] == WISP_RESULTS_STATUS_MISSING ? "missing" : wisp_strerror(kinds[j]),
                    counts[j]);
        fputc('\n', out);
        for (size_t k = 0; k < show; k++) {
            const char *msg = r->error_msgs[k][0] ? r->error_msgs[k] : "(no message)";
            if (r->error_paths[k][0])
                fprintf(out, "  %s: %s\n", r->error_paths[k], msg);
            else
                fprintf(out, "  row %zu: %s\n", r->error_rows[k], msg);
        }
        if (show < r->n_error)
            fprintf(out, "  ... and %zu more (--max-errors 0 lists all)\n", r->n_error - show);
    }
    cJSON *summary = r->summary_json ? cJSON_Parse(r->summary_json) : NULL;
    if (cJSON_IsObject(summary)) {
        fprintf(out, "\nrun summary:\n");
        s_print_json_scalars(out, summary, "  ");
    }
    cJSON_Delete(summary);
    if (r->n_attrs > 0) {
        fprintf(out, "\nrun attributes:\n");
        for (size_t i = 0; i < r->n_attrs; i++)
            fprintf(out, "  %s = %s\n", r->attr_names[i], r->attr_values[i]);
    }
}

/* ---- training directory ---- */

static double s_num(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Loads an optional JSON config; absent -> *out NULL and OK; malformed -> error. */
static int s_load_json(const char *path, cJSON **out, wisp_error_t *err)
{
    *out = NULL;
    if (access(path, F_OK) != 0)
        return WISP_OK;
    char *text = NULL;
    int rc = wisp_read_file(path, 16u << 20, &text, NULL, err);
    if (rc != WISP_OK)
        return rc;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
    if (!j || !cJSON_IsObject(j)) {
        size_t line = 1;
        for (const char *p = text; end && p < end; p++)
            line += *p == '\n';
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%zu: %s", path, line,
                            j ? "not a JSON object" : "invalid JSON");
        cJSON_Delete(j);
    } else {
        *out = j;
    }
    free(text);
    return rc;
}

/* Labels from a head config: "labels": [..] or "id2label": {"0": .., ...} / [..]. */
static int s_head_labels(wisp_report_train_t *t, const char *path, wisp_error_t *err)
{
    const cJSON *h = t->head_config;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(h, "labels");
    if (!cJSON_IsArray(arr))
        arr = cJSON_GetObjectItemCaseSensitive(h, "id2label");
    if (!arr)
        return WISP_OK;
    int n = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) && !cJSON_IsObject(arr))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: labels/id2label must be a list or object",
                              path);
    t->labels = calloc(n ? (size_t)n : 1, sizeof *t->labels);
    if (!t->labels)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    t->n_labels = n;
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        int slot = i++;
        if (cJSON_IsObject(arr)) {
            /* id2label keys are the indices. */
            char *end;
            long k = strtol(it->string, &end, 10);
            if (*end || k < 0 || k >= n)
                return wisp_error_set(err, WISP_ERR_FORMAT, "%s: id2label key '%s' is not 0..%d",
                                      path, it->string, n - 1);
            slot = (int)k;
        }
        if (!cJSON_IsString(it))
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: label %d is not a string", path, slot);
        free(t->labels[slot]);
        if (!(t->labels[slot] = s_strdup(it->valuestring)))
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int k = 0; k < n; k++)
        if (!t->labels[k])
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: id2label lacks index %d", path, k);
    return WISP_OK;
}

/* A resumed run re-logs the steps after its checkpoint: the records [0, *n) of an
 * array (stride bytes apart; step0 the first record's step member) whose step is not
 * before `step` are dropped from the end and counted in *superseded. */
static void s_supersede(const int64_t *step0, size_t stride, size_t *n, int64_t step,
                        size_t *superseded)
{
    const char *base = (const char *)step0;
    while (*n > 0 && *(const int64_t *)(base + (*n - 1) * stride) >= step) {
        (*n)--;
        (*superseded)++;
    }
}

/* arr (n records of size bytes, room for *cap) with room for one more: the same
 * pointer, or a larger copy (capacity doubled, `first` at the start), or NULL with
 * arr untouched when out of memory. */
static void *s_grow(void *arr, size_t size, size_t n, size_t *cap, size_t first)
{
    if (n < *cap)
        return arr;
    size_t c = *cap ? 2 * *cap : first;
    void *a = realloc(arr, c * size);
    if (a)
        *cap = c;
    return a;
}

static int s_parse_metrics(wisp_report_train_t *t, const char *path, char *text, wisp_error_t *err)
{
    size_t cap_s = 0, cap_e = 0, line_no = 0;
    char *save = NULL;
    for (char *p = text; p; p = save) {
        char *nl = strchr(p, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        line_no++;
        char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r')
            q++;
        if (!*q)
            continue;
        cJSON *j = cJSON_Parse(q);
        if (!j || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%zu: %s", path, line_no,
                                  j ? "not a JSON object" : "invalid JSON");
        }
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
        const char *ty = cJSON_IsString(type) ? type->valuestring : "";
        int rc = WISP_OK;
        double step = s_num(j, "step");
        if ((strcmp(ty, "step") == 0 || strcmp(ty, "eval") == 0) &&
            (isnan(step) || step < 0 || step > 9e15)) {
            rc =
                wisp_error_set(err, WISP_ERR_FORMAT,
                               "%s:%zu: \"%s\" line without a numeric \"step\"", path, line_no, ty);
        } else if (strcmp(ty, "step") == 0) {
            s_supersede(t->n_steps ? &t->steps[0].step : NULL, sizeof *t->steps, &t->n_steps,
                        (int64_t)step, &t->n_superseded);
            wisp_report_step_t *s = s_grow(t->steps, sizeof *s, t->n_steps, &cap_s, 256);
            if (!s) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
            } else {
                t->steps = s;
                s[t->n_steps++] = (wisp_report_step_t){
                    (int64_t)step,         s_num(j, "epoch"), s_num(j, "loss"),
                    s_num(j, "lr"),        s_num(j, "acc"),   s_num(j, "clips_per_s"),
                    s_num(j, "grad_norm"), s_num(j, "failed")};
            }
        } else if (strcmp(ty, "eval") == 0) {
            s_supersede(t->n_evals ? &t->evals[0].step : NULL, sizeof *t->evals, &t->n_evals,
                        (int64_t)step, &t->n_superseded);
            wisp_report_eval_t *e = s_grow(t->evals, sizeof *e, t->n_evals, &cap_e, 64);
            if (!e) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
            } else {
                t->evals = e;
                e[t->n_evals++] = (wisp_report_eval_t){(int64_t)step, s_num(j, "epoch"),
                                                       s_num(j, "val_loss"), s_num(j, "val_acc")};
            }
        } else {
            t->n_other++;
        }
        cJSON_Delete(j);
        if (rc != WISP_OK)
            return rc;
    }
    return WISP_OK;
}

wisp_report_train_t *wisp_report_train_load(const char *dir, wisp_error_t *err)
{
    wisp_report_train_t *t = calloc(1, sizeof *t);
    char *text = NULL;
    char path[4096];
    int rc = WISP_OK;
    if (!t || !(t->dir = s_strdup(dir))) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    if (wisp_path_join(path, sizeof path, dir, "metrics.jsonl") != WISP_OK) {
        rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
        goto done;
    }
    if (access(path, F_OK) != 0) {
        rc = wisp_error_set(err, WISP_ERR_NOTFOUND,
                            "%s: no metrics.jsonl (not a training output directory)", dir);
        goto done;
    }
    if ((rc = wisp_read_file(path, S_MAX_JSONL_BYTES, &text, NULL, err)) != WISP_OK ||
        (rc = s_parse_metrics(t, path, text, err)) != WISP_OK)
        goto done;
    if (wisp_path_join(path, sizeof path, dir, "adapter/adapter_config.json") != WISP_OK ||
        (rc = s_load_json(path, &t->adapter_config, err)) != WISP_OK)
        goto done;
    if (wisp_path_join(path, sizeof path, dir, "head/head_config.json") != WISP_OK ||
        (rc = s_load_json(path, &t->head_config, err)) != WISP_OK)
        goto done;
    if (t->head_config && (rc = s_head_labels(t, path, err)) != WISP_OK)
        goto done;
done:
    free(text);
    if (rc != WISP_OK)
        wisp_report_train_destroy(&t);
    return t;
}

void wisp_report_train_destroy(wisp_report_train_t **self)
{
    if (!self || !*self)
        return;
    wisp_report_train_t *t = *self;
    free(t->dir);
    free(t->steps);
    free(t->evals);
    cJSON_Delete(t->adapter_config);
    cJSON_Delete(t->head_config);
    s_free_strings(t->labels, (size_t)t->n_labels);
    free(t);
    *self = NULL;
}

/* The double field at byte offset `off` (offsetof in wisp_report_step_t) of step i:
 * one accessor, so the series printers take any column. */
static double s_field(const wisp_report_step_t *s, size_t i, size_t off)
{
    return *(const double *)((const char *)&s[i] + off);
}

/* Mean of a step field over rows [a, b), skipping NANs. */
static double s_mean(const wisp_report_step_t *s, size_t a, size_t b, size_t field_offset)
{
    double sum = 0;
    size_t n = 0;
    for (size_t i = a; i < b; i++) {
        double v = s_field(s, i, field_offset);
        if (!isnan(v)) {
            sum += v;
            n++;
        }
    }
    return n ? sum / n : NAN;
}

/* Prints first / last / best of a step field; best = min or max. */
static void s_print_series(FILE *out, const char *name, const wisp_report_step_t *s, size_t n,
                           size_t off, int best_is_max)
{
    size_t first = n, last = n, best = n;
    for (size_t i = 0; i < n; i++) {
        double v = s_field(s, i, off);
        if (isnan(v))
            continue;
        if (first == n)
            first = i;
        last = i;
        double b = best < n ? s_field(s, best, off) : 0;
        if (best == n || (best_is_max ? v > b : v < b))
            best = i;
    }
    if (first == n)
        return;
    /* Smoothed ends: the mean of the first and last tenth of the run. */
    size_t tenth = n / 10 ? n / 10 : 1;
    fprintf(out,
            "  %-10s first %.4g (step %lld), last %.4g (step %lld), %s %.4g (step %lld); "
            "mean of first/last 10%%: %.4g -> %.4g\n",
            name, s_field(s, first, off), (long long)s[first].step, s_field(s, last, off),
            (long long)s[last].step, best_is_max ? "max" : "min", s_field(s, best, off),
            (long long)s[best].step, s_mean(s, 0, tenth, off), s_mean(s, n - tenth, n, off));
}

static void s_print_json_scalars(FILE *out, const cJSON *obj, const char *indent)
{
    const cJSON *it;
    int col = 0;
    cJSON_ArrayForEach(it, obj)
    {
        char val[128];
        if (cJSON_IsString(it))
            snprintf(val, sizeof val, "%s", it->valuestring);
        else if (cJSON_IsNumber(it))
            snprintf(val, sizeof val, "%g", it->valuedouble);
        else if (cJSON_IsBool(it))
            snprintf(val, sizeof val, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else if (cJSON_IsNull(it))
            snprintf(val, sizeof val, "null");
        else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) <= 8) {
            char *s = cJSON_PrintUnformatted(it);
            snprintf(val, sizeof val, "%s", s ? s : "[...]");
            free(s);
        } else
            continue;
        s_cut(val, 60);
        int len = (int)(strlen(it->string) + strlen(val) + 2);
        if (col && col + len > 88) {
            fprintf(out, "\n");
            col = 0;
        }
        col += fprintf(out, "%s%s=%s", col ? ", " : indent, it->string, val);
    }
    if (col)
        fprintf(out, "\n");
}

void wisp_report_train_print(const wisp_report_train_t *t, FILE *out)
{
    const wisp_report_step_t *s = t->steps;
    size_t n = t->n_steps;
    fprintf(out, "training run: %s\n", t->dir);
    if (n == 0) {
        fprintf(out, "steps: none logged yet\n");
    } else {
        fprintf(out, "steps: %zu logged (step %lld .. %lld), epochs %g .. %g\n", n,
                (long long)s[0].step, (long long)s[n - 1].step, s[0].epoch, s[n - 1].epoch);
        s_print_series(out, "loss", s, n, offsetof(wisp_report_step_t, loss), 0);
        s_print_series(out, "train acc", s, n, offsetof(wisp_report_step_t, acc), 1);
        s_print_series(out, "lr", s, n, offsetof(wisp_report_step_t, lr), 1);
        s_print_series(out, "grad norm", s, n, offsetof(wisp_report_step_t, grad_norm), 1);
        double cps = s_mean(s, 0, n, offsetof(wisp_report_step_t, clips_per_s));
        if (!isnan(cps))
            fprintf(out, "  throughput mean %.1f clips/s\n", cps);
        double failed = 0;
        for (size_t i = 0; i < n; i++)
            failed += isnan(s[i].failed) ? 0 : s[i].failed;
        if (failed > 0)
            fprintf(out, "  clips that failed to load: %.0f\n", failed);
    }
    if (t->n_evals > 0) {
        size_t best = 0;
        for (size_t i = 1; i < t->n_evals; i++)
            if (!isnan(t->evals[i].val_acc) &&
                (isnan(t->evals[best].val_acc) || t->evals[i].val_acc > t->evals[best].val_acc))
                best = i;
        const wisp_report_eval_t *l = &t->evals[t->n_evals - 1];
        fprintf(out, "validation: %zu evaluations; last val_acc %.4f val_loss %.4f (step %lld)",
                t->n_evals, l->val_acc, l->val_loss, (long long)l->step);
        if (!isnan(t->evals[best].val_acc))
            fprintf(out, "; best val_acc %.4f (step %lld)", t->evals[best].val_acc,
                    (long long)t->evals[best].step);
        fputc('\n', out);
    }
    /* Per-epoch table: steps grouped by floor(epoch); each evaluation belongs to the
     * epoch of the last step logged at or before it (so both 0- and 1-based and
     * fractional epoch conventions line up). */
    if (n > 0 && !isnan(s[0].epoch)) {
        fprintf(out, "\nper epoch:\n  %6s %7s %10s %10s %10s %10s %10s\n", "epoch", "steps", "loss",
                "train_acc", "clips/s", "val_loss", "val_acc");
        size_t a = 0, shown = 0;
        while (a < n) {
            double e = floor(s[a].epoch);
            size_t b = a;
            while (b < n && (floor(s[b].epoch) == e || isnan(s[b].epoch)))
                b++;
            double vl = NAN, va = NAN;
            for (size_t k = 0; k < t->n_evals; k++) {
                int64_t st = t->evals[k].step;
                int64_t next = b < n ? s[b].step : INT64_MAX;
                if (st >= s[a].step && st < next) {
                    vl = t->evals[k].val_loss;
                    va = t->evals[k].val_acc;
                }
            }
            if (shown++ < 200) {
                fprintf(out, "  %6g %7zu", e, b - a);
                s_print_num(out, s_mean(s, a, b, offsetof(wisp_report_step_t, loss)), 10);
                s_print_num(out, s_mean(s, a, b, offsetof(wisp_report_step_t, acc)), 10);
                double c = s_mean(s, a, b, offsetof(wisp_report_step_t, clips_per_s));
                if (isnan(c))
                    fprintf(out, " %10s", "-");
                else
                    fprintf(out, " %10.1f", c);
                s_print_num(out, vl, 10);
                s_print_num(out, va, 10);
                fputc('\n', out);
            }
            a = b;
        }
        if (shown > 200)
            fprintf(out, "  ... %zu epochs in all\n", shown);
    }
    if (t->n_other)
        fprintf(out, "(%zu lines of other types ignored)\n", t->n_other);
    if (t->n_superseded)
        fprintf(out, "(%zu lines replaced by a resumed run)\n", t->n_superseded);

    fprintf(out, "\nadapter: ");
    if (!t->adapter_config) {
        fprintf(out, "none (no adapter/adapter_config.json)\n");
    } else {
        fprintf(out, "adapter/adapter_config.json\n");
        s_print_json_scalars(out, t->adapter_config, "  ");
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(t->adapter_config, "config");
        if (cJSON_IsObject(cfg)) {
            fprintf(out, "  config:\n");
            s_print_json_scalars(out, cfg, "    ");
        }
    }
    fprintf(out, "head: ");
    if (!t->head_config) {
        fprintf(out, "none (no head/head_config.json)\n");
    } else {
        fprintf(out, "head/head_config.json\n");
        s_print_json_scalars(out, t->head_config, "  ");
        if (t->n_labels > 0) {
            fprintf(out, "  labels (%d):", t->n_labels);
            for (int i = 0; i < t->n_labels; i++)
                fprintf(out, " %d=%s", i, t->labels[i]);
            fputc('\n', out);
        }
    }
}

/* ---- plots through gnuplot ---- */

int wisp_report_have_gnuplot(void)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char dir[4096];
    for (const char *p = path; *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        if (len > 0 && len < sizeof dir - 16) {
            memcpy(dir, p, len);
            strcpy(dir + len, "/gnuplot");
            if (access(dir, X_OK) == 0)
                return 1;
        }
        p += len + (colon ? 1 : 0);
    }
    return 0;
}

/* gnuplot single-quoted string: only ' needs escaping (as ''). */
static void s_gp_quote(FILE *gp, const char *s)
{
    fputc('\'', gp);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', gp);
        fputc(*s, gp);
    }
    fputc('\'', gp);
}

static FILE *s_gp_open(const char *png_path, int width, int height, wisp_error_t *err)
{
    if (!wisp_report_have_gnuplot()) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: gnuplot is not installed", png_path);
        return NULL;
    }
    FILE *gp = popen("gnuplot", "w");
    if (!gp) {
        wisp_error_set(err, WISP_ERR_IO, "%s: cannot start gnuplot: %s", png_path, strerror(errno));
        return NULL;
    }
    /* pngcairo draws antialiased text; plain png (libgd) is the fallback. */
    fprintf(gp,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) "
            "{ set terminal pngcairo size %d,%d noenhanced font ',10' } "
            "else { set terminal png size %d,%d noenhanced }\n",
            width, height, width, height);
    fprintf(gp, "set output ");
    s_gp_quote(gp, png_path);
    fprintf(gp, "\n");
    return gp;
}

static int s_gp_close(FILE *gp, const char *png_path, wisp_error_t *err)
{
    int st = pclose(gp);
    if (st != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: gnuplot failed (status %d)", png_path, st);
    if (access(png_path, F_OK) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: gnuplot wrote no file", png_path);
    return WISP_OK;
}

int wisp_report_plot_confusion(const wisp_report_results_t *r, const char *png_path,
                               wisp_error_t *err)
{
    if (!r->has_truth || r->n_scored == 0)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: no true labels, no confusion plot",
                              r->file);
    int C = r->n_classes;
    int side = 140 + 40 * C;
    side = side < 500 ? 500 : side > 2000 ? 2000 : side;
    FILE *gp = s_gp_open(png_path, side + 160, side, err);
    if (!gp)
        return err ? err->code : WISP_ERR_IO;
    fprintf(gp, "set title 'Confusion matrix (rows normalised), accuracy %.3f on %zu clips'\n",
            r->accuracy, r->n_scored);
    fprintf(gp,
            "set xlabel 'predicted'\nset ylabel 'true'\nset size ratio -1\n"
            "set xrange [-0.5:%d.5]\nset yrange [%d.5:-0.5]\nset cbrange [0:1]\n"
            "set palette defined (0 'white', 1 '#08519c')\nset tics scale 0\n"
            "set xtics rotate by 45 right\n",
            C - 1, C - 1);
    fprintf(gp, "set xtics (");
    for (int c = 0; c < C; c++) {
        fprintf(gp, "%s", c ? ", " : "");
        s_gp_quote(gp, r->classes[c]);
        fprintf(gp, " %d", c);
    }
    fprintf(gp, ")\nset ytics (");
    for (int c = 0; c < C; c++) {
        fprintf(gp, "%s", c ? ", " : "");
        s_gp_quote(gp, r->classes[c]);
        fprintf(gp, " %d", c);
    }
    fprintf(gp, ")\n$conf << EOD\n");
    for (int t = 0; t < C; t++)
        for (int p = 0; p < C; p++) {
            long long v = (long long)r->confusion[(size_t)t * C + p];
            fprintf(gp, "%d %d %.6f %lld\n", p, t,
                    r->support[t] ? (double)v / (double)r->support[t] : 0.0, v);
        }
    fprintf(gp, "EOD\n");
    if (C <= 25)
        fprintf(gp, "plot $conf using 1:2:3 with image notitle, "
                    "$conf using 1:2:(sprintf('%%d', $4)):($3 > 0.5 ? 0xffffff : 0) "
                    "with labels tc rgb variable notitle\n");
    else
        fprintf(gp, "plot $conf using 1:2:3 with image notitle\n");
    return s_gp_close(gp, png_path, err);
}

int wisp_report_plot_train(const wisp_report_train_t *t, const char *png_path, wisp_error_t *err)
{
    if (t->n_steps == 0 && t->n_evals == 0)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: no steps logged, nothing to plot",
                              t->dir);
    FILE *gp = s_gp_open(png_path, 1000, 800, err);
    if (!gp)
        return err ? err->code : WISP_ERR_IO;
    /* NaN (absent) values are written as "NaN", which gnuplot skips. */
    fprintf(gp, "$steps << EOD\n");
    for (size_t i = 0; i < t->n_steps; i++)
        fprintf(gp, "%lld %.8g %.8g\n", (long long)t->steps[i].step, t->steps[i].loss,
                t->steps[i].acc);
    fprintf(gp, "EOD\n$evals << EOD\n");
    for (size_t i = 0; i < t->n_evals; i++)
        fprintf(gp, "%lld %.8g %.8g\n", (long long)t->evals[i].step, t->evals[i].val_loss,
                t->evals[i].val_acc);
    fprintf(gp, "EOD\n");
    fprintf(gp, "set datafile missing NaN\nset multiplot layout 2,1 title ");
    s_gp_quote(gp, t->dir);
    fprintf(gp, "\nset grid\nset key top right\nset xlabel 'step'\nset ylabel 'loss'\n");
    fprintf(gp, "plot $steps using 1:2 with lines lw 1 lc rgb '#9ecae1' title 'train loss'%s\n",
            t->n_evals ? ", $evals using 1:2 with linespoints lw 2 pt 7 lc rgb '#d62728' "
                         "title 'val loss'"
                       : "");
    fprintf(gp, "set key bottom right\nset ylabel 'accuracy'\nset yrange [0:1.05]\n");
    fprintf(gp, "plot $steps using 1:3 with lines lw 1 lc rgb '#a1d99b' title 'train acc'%s\n",
            t->n_evals ? ", $evals using 1:3 with linespoints lw 2 pt 7 lc rgb '#d62728' "
                         "title 'val acc'"
                       : "");
    fprintf(gp, "unset multiplot\n");
    return s_gp_close(gp, png_path, err);
}
