#include "formats/results.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "formats/h5undo.h"
#include "formats/h5util.h"
#include "base/log.h"
#include "base/util.h"

#define S_JOURNAL_MAGIC   "WISPRJ02"  /* 8 bytes at the start of the journal (02: segments) */
#define S_BOM             0x01020304u /* byte-order mark after the magic */
#define S_RECORD_MAGIC    0x5257524Au /* "JRWR" little-endian: one commit record */
#define S_FRAME_BYTES     24          /* magic u32, n u32, payload_len u64, seq u64 */
#define S_ROW_FIXED       40          /* serialized row without strings and floats */
#define S_SEG_FIXED       24          /* serialized segment without its probs */
#define S_DEFAULT_PENDING 4096
#define S_MAX_PENDING     (1u << 20)
#define S_CHUNK_ROWS      1024
#define S_CHUNK_BYTES     (1u << 20)
#define S_CACHE_BYTES     ((size_t)16 << 20) /* chunk cache per dataset */
#define S_CACHE_SLOTS     4099

/* One row as the HDF5 writer and the journal see it. Pointers are either owned
 * copies (pending rows) or views into a journal record (replay); floats may be
 * unaligned, so they are only ever memcpy'd. */
typedef struct {
    size_t index;
    int32_t label;
    float score;
    float duration;
    int32_t true_label;
    int8_t status;
    const char *path;
    const char *error;
    const void *vals; /* (2C + P) floats: probs, logits, embedding */
    uint32_t n_seg;   /* windows of the row */
    const void *seg;  /* (n_seg) serialized segments: start f64, end f64, label i32,
                         score f32, C floats (S_SEG_FIXED + 4C bytes each) */
} s_row_t;

enum {
    S_COL_PATH,
    S_COL_LABEL,
    S_COL_SCORE,
    S_COL_PROBS,
    S_COL_LOGITS,
    S_COL_EMB,
    S_COL_DURATION,
    S_COL_STATUS,
    S_COL_ERROR,
    S_COL_TRUE,
    S_COL_LABEL_NAME,
    S_COL_TOPK_LABEL,
    S_COL_TOPK_PROB,
    S_COL_NOTE,
    S_NCOLS
};

static const char *const s_col_names[S_NCOLS] = {
    "path",   "label", "score",      "probs",      "logits",      "embedding",  "duration",
    "status", "error", "true_label", "label_name", "top_k_label", "top_k_prob", "note"};

struct wisp_results {
    char *path;          /* final OUT.h5 */
    char *partial;       /* OUT.h5.partial */
    char *journal;       /* OUT.h5.commit */
    char *undo_path;     /* OUT.h5.undo: rollback log of the .partial (h5undo.h) */
    wisp_h5undo_t *undo; /* the .partial's file driver */
    size_t n_rows;       /* N */
    int C;               /* classes */
    int P;               /* embedding size, 0 = none */
    int has_true;        /* true_label column + metrics */
    int K;               /* top_k columns, 0 none */
    int has_seg;         /* rows carry segments */
    char *fingerprint;
    char **classes;   /* (C) */
    char **attr_keys; /* (n_attrs) */
    char **attr_vals;
    int n_attrs;
    char created[32]; /* ISO 8601 UTC, from the journal header on resume */
    int64_t n_resumes;

    uint8_t *state;      /* (N) 0 not received, 1 pending, 2 committed */
    int32_t *label;      /* (N) received labels, for the metrics */
    int8_t *status;      /* (N) */
    int32_t *true_label; /* (N) */
    size_t n_done;       /* committed rows */
    size_t n_err;        /* received rows with status != 0 */

    /* Segments of the committed rows, in commit order, until finish writes them
     * sorted: each is the row index (u64) then a serialized segment. */
    uint8_t *segs;
    size_t n_segs, segs_bytes, segs_cap;

    s_row_t *pend;    /* (max_pending) received, not yet committed */
    float *pend_vals; /* (max_pending, 2C + P) */
    size_t n_pend, max_pend;

    int jfd;        /* journal, opened for appending, flock'd */
    uint64_t jsize; /* journal bytes known good */
    uint64_t seq;   /* next record sequence number */
    uint64_t jlast; /* the journal's last 8 bytes: checksum of its last record (or header) */

    hid_t file;
    hid_t dset[S_NCOLS]; /* -1 for absent columns */
    hid_t str_type;
    int h5_stale; /* a commit reached the journal but not the HDF5 file */
    int finished;
    double seconds; /* time spent in this module */
    wisp_results_stats_t stats;
};

/* The meta of a .partial checkpoint (h5undo.h): where the journal stood when the
 * file was flushed. Host byte order, like the journal. */
#define S_CKPT_MAGIC "WISPCK01"
typedef struct {
    char magic[8];
    uint64_t n_rows;
    uint64_t jsize; /* journal bytes the file holds the rows of */
    uint64_t seq;   /* sequence number of the next record */
    uint64_t jlast; /* the journal's 8 bytes before jsize (last record's checksum) */
    uint64_t n_done, n_err;
    int64_t n_resumes;
} s_ckpt_t;

/* ---------------------------------------------------------------- small helpers */

static uint64_t s_fnv(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
#define S_FNV_INIT 0xcbf29ce484222325ull

static size_t s_row_floats(const wisp_results_t *r)
{
    return 2 * (size_t)r->C + (size_t)r->P;
}

static char *s_strcat2(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

static void s_iso_now(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int s_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync of the directory holding path, so a rename is durable. */
static void s_fsync_dir(const char *path)
{
    char dir[4096];
    if (wisp_path_dirname(dir, sizeof dir, path) != WISP_OK)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int s_unlink_quiet(const char *path, wisp_error_t *err)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return WISP_OK;
}

/* ---------------------------------------------------------------- byte buffer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} s_buf_t;

static int s_buf_put(s_buf_t *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return 0;
}

/* ---------------------------------------------------------------- HDF5 side */

static void s_h5_close(wisp_results_t *r)
{
    for (int c = 0; c < S_NCOLS; c++) {
        if (r->dset[c] >= 0)
            H5Dclose(r->dset[c]);
        r->dset[c] = -1;
    }
    if (r->str_type >= 0)
        H5Tclose(r->str_type);
    r->str_type = -1;
    if (r->file >= 0)
        H5Fclose(r->file);
    r->file = -1;
}

/* File access properties of the .partial: its chunk cache and the rollback driver.
 * Rows arrive in shard-sized runs in any order, so a chunk is usually written in
 * several pieces: a chunk cache of S_CACHE_BYTES per dataset keeps partial chunks
 * in memory instead of re-reading them for every piece. w0 = 0.75 prefers evicting
 * fully written chunks but still evicts partly written ones when the cache is full:
 * w0 = 1 never evicted them, so with shuffled shards the cache grew with the file
 * (~1 GB at 10^6 rows; tests/test_results.c bounds the growth). */
static hid_t s_h5_fapl(wisp_results_t *r, wisp_error_t *err)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_cache(fapl, 0, S_CACHE_SLOTS, S_CACHE_BYTES, 0.75) < 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        wisp_h5_fail(err, r->partial, "file access properties");
        return -1;
    }
    if (wisp_h5undo_set_fapl(r->undo, fapl, r->partial, err) != WISP_OK) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

/* 1 when column c is in this run's file. */
static int s_col_present(const wisp_results_t *r, int c)
{
    return !((c == S_COL_EMB && r->P == 0) || (c == S_COL_TRUE && !r->has_true) ||
             ((c == S_COL_TOPK_LABEL || c == S_COL_TOPK_PROB) && r->K == 0));
}

/* Width of a 2-D column (C, P or K), 0 for a 1-D one. */
static hsize_t s_col_width(const wisp_results_t *r, int c)
{
    switch (c) {
    case S_COL_PROBS:
    case S_COL_LOGITS: return (hsize_t)r->C;
    case S_COL_EMB: return (hsize_t)r->P;
    case S_COL_TOPK_LABEL:
    case S_COL_TOPK_PROB: return (hsize_t)r->K;
    default: return 0;
    }
}

/* Creates OUT.h5.partial with every column at its fill value (the "missing row"
 * values), the classes and the identity attributes. */
static int s_h5_create(wisp_results_t *r, wisp_error_t *err)
{
    int rc = WISP_OK;
    const char *f = r->partial;
    hid_t fapl = s_h5_fapl(r, err);
    if (fapl < 0)
        return WISP_ERR_HDF5;
    r->file = H5Fcreate(f, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    /* the failure's HDF5 error stack is read before H5Pclose, an API call, clears it */
    int open_rc = r->file < 0 ? wisp_h5_fail(err, f, "cannot create file") : WISP_OK;
    H5Pclose(fapl);
    if (open_rc != WISP_OK)
        return open_rc;
    if ((r->str_type = wisp_h5_str_type()) < 0)
        return wisp_h5_fail(err, f, "string type");
    int32_t minus1 = -1;
    float nanf_ = NAN, minus1f = -1.0f;
    int8_t st_missing = WISP_RESULTS_STATUS_MISSING;
    for (int c = 0; c < S_NCOLS; c++) {
        if (!s_col_present(r, c))
            continue;
        hsize_t dims[2] = {r->n_rows, 1};
        int rank = 1;
        hid_t type = H5T_NATIVE_FLOAT;
        const void *fill = &nanf_;
        size_t width = 1;
        switch (c) {
        /* Strings get no fill value (see wisp_h5_create_rows): unwritten = "". */
        case S_COL_PATH:
        case S_COL_ERROR:
        case S_COL_LABEL_NAME:
        case S_COL_NOTE:
            type = r->str_type;
            fill = NULL;
            break;
        case S_COL_LABEL:
        case S_COL_TRUE:
            type = H5T_NATIVE_INT32;
            fill = &minus1;
            break;
        case S_COL_STATUS:
            type = H5T_NATIVE_INT8;
            fill = &st_missing;
            break;
        case S_COL_DURATION: fill = &minus1f; break;
        case S_COL_PROBS:
        case S_COL_LOGITS:
            rank = 2;
            width = (size_t)r->C;
            break;
        case S_COL_EMB:
            rank = 2;
            width = (size_t)r->P;
            break;
        case S_COL_TOPK_LABEL:
            type = H5T_NATIVE_INT32;
            fill = &minus1;
            rank = 2;
            width = (size_t)r->K;
            break;
        case S_COL_TOPK_PROB:
            rank = 2;
            width = (size_t)r->K;
            break;
        default: break;
        }
        dims[1] = width;
        /* ~1 MB chunks for the matrices, S_CHUNK_ROWS rows for the columns. */
        hsize_t chunk = rank == 2 ? S_CHUNK_BYTES / (4 * width) : S_CHUNK_ROWS;
        if (chunk > S_CHUNK_ROWS)
            chunk = S_CHUNK_ROWS;
        r->dset[c] = wisp_h5_create_rows(r->file, s_col_names[c], type, rank, dims,
                                         chunk ? chunk : 1, fill, f, err);
        if (r->dset[c] < 0)
            return WISP_ERR_HDF5;
    }
    if ((rc = wisp_h5_write_strings(r->file, "classes", (const char *const *)r->classes,
                                    (size_t)r->C, f, err)) != WISP_OK)
        return rc;
    for (int a = 0; a < r->n_attrs && rc == WISP_OK; a++)
        rc = wisp_h5_attr_set_str(r->file, r->attr_keys[a], r->attr_vals[a], f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_str(r->file, "fingerprint", r->fingerprint, f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_str(r->file, "wisp_version", WISP_VERSION, f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_str(r->file, "created", r->created, f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_i64(r->file, "n_rows", (int64_t)r->n_rows, f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_i64(r->file, "n_classes", r->C, f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_i64(r->file, "embed_dim", r->P, f, err);
    if (rc == WISP_OK && H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        rc = wisp_h5_fail(err, f, "flush");
    return rc;
}

/* Opens the rolled-back .partial and its columns, checking they have this run's shape
 * and identity, and writes the attributes this run's caller passes now (as a rebuilt
 * file gets them). */
static int s_h5_open(wisp_results_t *r, wisp_error_t *err)
{
    const char *f = r->partial;
    int rc = WISP_OK;
    hid_t fapl = s_h5_fapl(r, err);
    if (fapl < 0)
        return WISP_ERR_HDF5;
    r->file = H5Fopen(f, H5F_ACC_RDWR, fapl);
    /* the failure's HDF5 error stack is read before H5Pclose, an API call, clears it */
    int open_rc = r->file < 0 ? wisp_h5_fail(err, f, "cannot open") : WISP_OK;
    H5Pclose(fapl);
    if (open_rc != WISP_OK)
        return open_rc;
    if ((r->str_type = wisp_h5_str_type()) < 0)
        return wisp_h5_fail(err, f, "string type");
    for (int c = 0; c < S_NCOLS; c++) {
        if (!s_col_present(r, c))
            continue;
        hsize_t dims[2] = {0, 0}, w = s_col_width(r, c);
        hid_t sp = -1;
        int rank = -1;
        if ((r->dset[c] = H5Dopen2(r->file, s_col_names[c], H5P_DEFAULT)) < 0 ||
            (sp = H5Dget_space(r->dset[c])) < 0 || H5Sget_simple_extent_ndims(sp) != (w ? 2 : 1))
            rank = -1;
        else
            rank = H5Sget_simple_extent_dims(sp, dims, NULL);
        if (sp >= 0)
            H5Sclose(sp);
        if (rank < 0 || dims[0] != r->n_rows || (w && dims[1] != w))
            return wisp_error_set(err, WISP_ERR_STATE,
                                  "%s: column '%s' is missing or of another "
                                  "shape",
                                  f, s_col_names[c]);
    }
    char *fp = NULL;
    if ((rc = wisp_h5_attr_get_str(r->file, "fingerprint", &fp, f, err)) != WISP_OK)
        return rc;
    int same = strcmp(fp, r->fingerprint) == 0;
    free(fp);
    if (!same)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: belongs to another run", f);
    for (int a = 0; a < r->n_attrs && rc == WISP_OK; a++)
        rc = wisp_h5_attr_set_str(r->file, r->attr_keys[a], r->attr_vals[a], f, err);
    return rc;
}

/* Reads rows [row0, row0 + n) of a 1-D column. */
static int s_read_col(const wisp_results_t *r, int c, hid_t mtype, size_t row0, size_t n, void *buf,
                      wisp_error_t *err)
{
    hsize_t start = row0, count = n;
    hid_t fs = H5Dget_space(r->dset[c]), ms = H5Screate_simple(1, &count, NULL);
    int ok = fs >= 0 && ms >= 0 &&
             H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0 &&
             H5Dread(r->dset[c], mtype, ms, fs, H5P_DEFAULT, buf) >= 0;
    if (fs >= 0)
        H5Sclose(fs);
    if (ms >= 0)
        H5Sclose(ms);
    return ok ? WISP_OK : wisp_h5_fail(err, r->partial, s_col_names[c]);
}

/* The committed rows of the rolled-back .partial: a row is committed exactly when its
 * status is not the fill WISP_RESULTS_STATUS_MISSING (every committed row is written
 * with its own status), with its label and true label for the metrics. Values are
 * range-checked (the file is input). */
static int s_load_state(wisp_results_t *r, wisp_error_t *err)
{
    const size_t B = (size_t)1 << 18;
    int rc = WISP_OK;
    int8_t *st = malloc(B);
    int32_t *lab = malloc(B * sizeof *lab), *tru = malloc(B * sizeof *tru);
    if (!st || !lab || !tru)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->partial);
    for (size_t i0 = 0; rc == WISP_OK && i0 < r->n_rows; i0 += B) {
        size_t n = r->n_rows - i0 < B ? r->n_rows - i0 : B;
        if ((rc = s_read_col(r, S_COL_STATUS, H5T_NATIVE_INT8, i0, n, st, err)) != WISP_OK ||
            (rc = s_read_col(r, S_COL_LABEL, H5T_NATIVE_INT32, i0, n, lab, err)) != WISP_OK ||
            (r->has_true &&
             (rc = s_read_col(r, S_COL_TRUE, H5T_NATIVE_INT32, i0, n, tru, err)) != WISP_OK))
            break;
        for (size_t k = 0; k < n; k++) {
            if (st[k] == WISP_RESULTS_STATUS_MISSING)
                continue;
            int32_t t = r->has_true ? tru[k] : -1;
            if (st[k] > 0 || lab[k] < -1 || lab[k] >= r->C || (st[k] == 0 && lab[k] < 0) ||
                t < -1 || t >= r->C) {
                rc = wisp_error_set(err, WISP_ERR_STATE,
                                    "%s: row %zu: status %d, label %d, "
                                    "true label %d are not a committed row",
                                    r->partial, i0 + k, st[k], lab[k], t);
                break;
            }
            r->state[i0 + k] = 2;
            r->n_done++;
            r->n_err += st[k] != 0;
            r->label[i0 + k] = lab[k];
            r->status[i0 + k] = st[k];
            r->true_label[i0 + k] = t;
        }
    }
    free(st);
    free(lab);
    free(tru);
    return rc;
}

/* Back to "nothing received" (before a full rebuild replaces a rejected tail resume). */
static void s_state_reset(wisp_results_t *r)
{
    memset(r->state, 0, r->n_rows);
    for (size_t i = 0; i < r->n_rows; i++) {
        r->label[i] = -1;
        r->status[i] = WISP_RESULTS_STATUS_MISSING;
        r->true_label[i] = -1;
    }
    r->n_done = r->n_err = 0;
    r->n_resumes = 0;
}

static int s_cmp_row(const void *a, const void *b)
{
    size_t x = ((const s_row_t *)a)->index, y = ((const s_row_t *)b)->index;
    return x < y ? -1 : x > y;
}

/* Column buffers for one contiguous run of rows (s_h5_write). */
typedef struct {
    const char **paths, **errs, **names, **notes;
    int32_t *lab, *tru, *topl;
    int8_t *st;
    float *score, *dur, *probs, *logits, *emb, *topp;
} s_cols_t;

static void s_cols_free(s_cols_t *c)
{
    free(c->paths);
    free(c->errs);
    free(c->names);
    free(c->notes);
    free(c->lab);
    free(c->tru);
    free(c->topl);
    free(c->st);
    free(c->score);
    free(c->dur);
    free(c->probs);
    free(c->logits);
    free(c->emb);
    free(c->topp);
}

/* Buffers for n rows (C classes, P embedding, K top classes; +1 keeps a zero width
 * from being a NULL that reads as a failed allocation). */
static int s_cols_alloc(s_cols_t *c, size_t n, size_t C, size_t P, size_t K)
{
    memset(c, 0, sizeof *c);
    c->paths = malloc(n * sizeof *c->paths);
    c->errs = malloc(n * sizeof *c->errs);
    c->names = malloc(n * sizeof *c->names);
    c->notes = malloc(n * sizeof *c->notes);
    c->lab = malloc(n * sizeof *c->lab);
    c->tru = malloc(n * sizeof *c->tru);
    c->topl = malloc((n * K + 1) * sizeof *c->topl);
    c->st = malloc(n);
    c->score = malloc(n * sizeof *c->score);
    c->dur = malloc(n * sizeof *c->dur);
    c->probs = malloc(n * C * sizeof *c->probs);
    c->logits = malloc(n * C * sizeof *c->logits);
    c->emb = malloc((n * P + 1) * sizeof *c->emb);
    c->topp = malloc((n * K + 1) * sizeof *c->topp);
    return c->paths && c->errs && c->names && c->notes && c->lab && c->tru && c->topl && c->st &&
                   c->score && c->dur && c->probs && c->logits && c->emb && c->topp
               ? 0
               : -1;
}

/* The K most probable classes of probs (C), most probable first, equal probabilities
 * in class-id order (each pick is the best strictly after the previous one in that
 * order: O(K C), no sort). Error rows (ok = 0) get -1 and NaN. */
static void s_top_k(const float *probs, int C, int K, int ok, int32_t *ids, float *p)
{
    int prev = -1;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int c = 0; ok && c < C; c++) {
            if (prev >= 0 && !(probs[c] < probs[prev] || (probs[c] == probs[prev] && c > prev)))
                continue;
            if (best < 0 || probs[c] > probs[best])
                best = c;
        }
        ids[k] = best;
        p[k] = best >= 0 ? probs[best] : NAN;
        prev = best;
    }
}

/* Gathers rows[0, m) into the column buffers. */
static void s_cols_fill(const wisp_results_t *r, s_cols_t *c, const s_row_t *rows, size_t m)
{
    size_t C = (size_t)r->C, P = (size_t)r->P, K = (size_t)r->K;
    for (size_t k = 0; k < m; k++) {
        const s_row_t *w = &rows[k];
        c->paths[k] = w->path;
        /* One message slot per row: the error of a failed row, the note of an ok one. */
        c->errs[k] = w->status ? w->error : "";
        c->notes[k] = w->status ? "" : w->error;
        c->names[k] = w->label >= 0 && w->label < r->C ? r->classes[w->label] : "";
        c->lab[k] = w->label;
        c->tru[k] = w->true_label;
        c->st[k] = w->status;
        c->score[k] = w->score;
        c->dur[k] = w->duration;
        const uint8_t *v = w->vals;
        memcpy(c->probs + k * C, v, C * sizeof(float));
        memcpy(c->logits + k * C, v + C * sizeof(float), C * sizeof(float));
        if (P)
            memcpy(c->emb + k * P, v + 2 * C * sizeof(float), P * sizeof(float));
        if (K)
            s_top_k(c->probs + k * C, r->C, r->K, w->status == 0, c->topl + k * K, c->topp + k * K);
    }
}

/* Writes rows (sorted by index, no duplicates) into the HDF5 file: one block write
 * per column per contiguous index run, then a flush. */
static int s_h5_write(wisp_results_t *r, const s_row_t *rows, size_t n, wisp_error_t *err)
{
    int rc = WISP_OK;
    if (n == 0)
        return WISP_OK;
    s_cols_t c;
    if (s_cols_alloc(&c, n, (size_t)r->C, (size_t)r->P, (size_t)r->K) < 0) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->partial);
        goto done;
    }
    const struct {
        int col;
        hid_t mtype;
        const void *buf;
    } cols[] = {
        {S_COL_PATH, r->str_type, c.paths},          {S_COL_ERROR, r->str_type, c.errs},
        {S_COL_LABEL, H5T_NATIVE_INT32, c.lab},      {S_COL_LABEL_NAME, r->str_type, c.names},
        {S_COL_STATUS, H5T_NATIVE_INT8, c.st},       {S_COL_SCORE, H5T_NATIVE_FLOAT, c.score},
        {S_COL_DURATION, H5T_NATIVE_FLOAT, c.dur},   {S_COL_PROBS, H5T_NATIVE_FLOAT, c.probs},
        {S_COL_LOGITS, H5T_NATIVE_FLOAT, c.logits},  {S_COL_EMB, H5T_NATIVE_FLOAT, c.emb},
        {S_COL_TRUE, H5T_NATIVE_INT32, c.tru},       {S_COL_TOPK_LABEL, H5T_NATIVE_INT32, c.topl},
        {S_COL_TOPK_PROB, H5T_NATIVE_FLOAT, c.topp}, {S_COL_NOTE, r->str_type, c.notes},
    };
    for (size_t i = 0; i < n && rc == WISP_OK;) {
        size_t j = i + 1;
        while (j < n && rows[j].index == rows[j - 1].index + 1)
            j++;
        s_cols_fill(r, &c, rows + i, j - i);
        for (size_t k = 0; k < sizeof cols / sizeof cols[0] && rc == WISP_OK; k++)
            if (r->dset[cols[k].col] >= 0)
                rc = wisp_h5_write_rows(r->dset[cols[k].col], cols[k].mtype, rows[i].index, j - i,
                                        cols[k].buf, r->partial, s_col_names[cols[k].col], err);
        i = j;
    }
    if (rc == WISP_OK && H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        rc = wisp_h5_fail(err, r->partial, "flush");
done:
    s_cols_free(&c);
    return rc;
}

/* ---------------------------------------------------------------- journal */

/* Bytes of one serialized segment. */
static size_t s_seg_bytes(const wisp_results_t *r)
{
    return S_SEG_FIXED + (size_t)r->C * sizeof(float);
}

/* Serialized row: index u64, label i32, score f32, duration f32, true_label i32,
 * status i8, 3 pad bytes, path_len u32, error_len u32 (both with the NUL), n_seg u32,
 * then the path, the error, the (2C + P) floats and the n_seg segments (seg_bytes
 * each, see s_row_t). Host byte order. */
static int s_ser_row(s_buf_t *b, const s_row_t *w, size_t nfloats, size_t seg_bytes)
{
    uint8_t fx[S_ROW_FIXED] = {0};
    uint64_t idx = w->index;
    uint32_t pl = (uint32_t)strlen(w->path) + 1, el = (uint32_t)strlen(w->error) + 1;
    memcpy(fx, &idx, 8);
    memcpy(fx + 8, &w->label, 4);
    memcpy(fx + 12, &w->score, 4);
    memcpy(fx + 16, &w->duration, 4);
    memcpy(fx + 20, &w->true_label, 4);
    memcpy(fx + 24, &w->status, 1);
    memcpy(fx + 28, &pl, 4);
    memcpy(fx + 32, &el, 4);
    memcpy(fx + 36, &w->n_seg, 4);
    if (s_buf_put(b, fx, sizeof fx) < 0 || s_buf_put(b, w->path, pl) < 0 ||
        s_buf_put(b, w->error, el) < 0 || s_buf_put(b, w->vals, nfloats * sizeof(float)) < 0 ||
        (w->n_seg && s_buf_put(b, w->seg, (size_t)w->n_seg * seg_bytes) < 0))
        return -1;
    return 0;
}

/* Parses one serialized row at *off of a payload; views point into the payload.
 * Returns -1 when the bytes do not form a row. */
static int s_deser_row(const uint8_t *p, size_t len, size_t *off, size_t nfloats, size_t seg_bytes,
                       s_row_t *w)
{
    size_t o = *off;
    if (len - o < S_ROW_FIXED)
        return -1;
    uint64_t idx;
    uint32_t pl, el;
    memcpy(&idx, p + o, 8);
    memcpy(&w->label, p + o + 8, 4);
    memcpy(&w->score, p + o + 12, 4);
    memcpy(&w->duration, p + o + 16, 4);
    memcpy(&w->true_label, p + o + 20, 4);
    memcpy(&w->status, p + o + 24, 1);
    memcpy(&pl, p + o + 28, 4);
    memcpy(&el, p + o + 32, 4);
    memcpy(&w->n_seg, p + o + 36, 4);
    o += S_ROW_FIXED;
    if (pl == 0 || el == 0 || len - o < (size_t)pl + el ||
        len - o - pl - el < nfloats * sizeof(float))
        return -1;
    w->index = (size_t)idx;
    w->path = (const char *)p + o;
    if (w->path[pl - 1] != '\0')
        return -1;
    o += pl;
    w->error = (const char *)p + o;
    if (w->error[el - 1] != '\0')
        return -1;
    o += el;
    w->vals = p + o;
    o += nfloats * sizeof(float);
    /* The count is checked against the bytes left before it sizes anything. */
    if (w->n_seg > WISP_RESULTS_MAX_SEGMENTS || (len - o) / seg_bytes < w->n_seg ||
        (w->n_seg && w->status != 0))
        return -1;
    w->seg = p + o;
    o += (size_t)w->n_seg * seg_bytes;
    *off = o;
    return 0;
}

/* Appends one record (frame + payload + checksum) and fsyncs. On failure the
 * journal is cut back to its last good size. */
static int s_journal_append(wisp_results_t *r, uint32_t n, const s_buf_t *payload,
                            wisp_error_t *err)
{
    uint8_t fr[S_FRAME_BYTES];
    uint32_t magic = S_RECORD_MAGIC;
    uint64_t plen = payload->n, seq = r->seq;
    memcpy(fr, &magic, 4);
    memcpy(fr + 4, &n, 4);
    memcpy(fr + 8, &plen, 8);
    memcpy(fr + 16, &seq, 8);
    uint64_t h = s_fnv(S_FNV_INIT, fr, sizeof fr);
    h = s_fnv(h, payload->p, payload->n);
    if (s_write_all(r->jfd, fr, sizeof fr) < 0 ||
        (payload->n && s_write_all(r->jfd, payload->p, payload->n) < 0) ||
        s_write_all(r->jfd, &h, sizeof h) < 0 || fsync(r->jfd) < 0) {
        int e = errno;
        if (ftruncate(r->jfd, (off_t)r->jsize) != 0)
            WISP_LOGE("%s: cannot cut back a failed commit: %s", r->journal, strerror(errno));
        return wisp_error_set(err, WISP_ERR_IO, "%s: commit failed: %s", r->journal, strerror(e));
    }
    r->jsize += sizeof fr + payload->n + sizeof h;
    r->jlast = h;
    r->seq++;
    return WISP_OK;
}

static char *s_header_json(const wisp_results_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "fingerprint", r->fingerprint);
    cJSON_AddNumberToObject(o, "n_rows", (double)r->n_rows);
    cJSON_AddNumberToObject(o, "n_classes", r->C);
    cJSON_AddNumberToObject(o, "embed_dim", r->P);
    cJSON_AddBoolToObject(o, "has_true_label", r->has_true);
    cJSON_AddBoolToObject(o, "segments", r->has_seg);
    cJSON_AddStringToObject(o, "created", r->created);
    cJSON *cl = cJSON_AddArrayToObject(o, "classes");
    for (int c = 0; cl && c < r->C; c++)
        cJSON_AddItemToArray(cl, cJSON_CreateString(r->classes[c]));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Writes the journal header atomically (tmp + fsync + rename): never torn. */
static int s_journal_create(wisp_results_t *r, wisp_error_t *err)
{
    int rc = WISP_OK;
    s_buf_t b = {0};
    char *js = s_header_json(r);
    if (!js)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->journal);
    uint32_t bom = S_BOM, jl = (uint32_t)strlen(js);
    if (s_buf_put(&b, S_JOURNAL_MAGIC, 8) < 0 || s_buf_put(&b, &bom, 4) < 0 ||
        s_buf_put(&b, &jl, 4) < 0 || s_buf_put(&b, js, jl) < 0) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->journal);
        goto done;
    }
    uint64_t h = s_fnv(S_FNV_INIT, b.p, b.n);
    if (s_buf_put(&b, &h, 8) < 0) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->journal);
        goto done;
    }
    if ((rc = wisp_write_file_atomic(r->journal, b.p, b.n, err)) != WISP_OK)
        goto done;
    s_fsync_dir(r->journal);
    r->jsize = b.n;
    r->jlast = h;
done:
    free(js);
    free(b.p);
    return rc;
}

/* Reads and checks the journal header against the run's identity. */
static int s_journal_check_header(wisp_results_t *r, FILE *fp, wisp_error_t *err)
{
    int rc = WISP_OK;
    char magic[8];
    uint32_t bom = 0, jl = 0;
    char *js = NULL;
    cJSON *o = NULL;
    const char *j = r->journal;
    if (fread(magic, 1, 8, fp) != 8 || memcmp(magic, S_JOURNAL_MAGIC, 8) != 0 ||
        fread(&bom, 4, 1, fp) != 1 || fread(&jl, 4, 1, fp) != 1) {
        /* An older wisp's journal has the same first 6 bytes. */
        return wisp_error_set(err, WISP_ERR_STATE, "%s: %s (remove it to start over)", j,
                              memcmp(magic, S_JOURNAL_MAGIC, 6) == 0
                                  ? "a commit journal of another wisp version"
                                  : "not a wisp commit journal");
    }
    if (bom != S_BOM)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: written on a machine of the other byte order", j);
    if (jl > (1u << 26) || !(js = malloc((size_t)jl + 1))) {
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: corrupt journal header", j);
        goto done;
    }
    uint64_t h_read = 0;
    if (fread(js, 1, jl, fp) != jl || fread(&h_read, 8, 1, fp) != 1) {
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: truncated journal header", j);
        goto done;
    }
    js[jl] = '\0';
    uint64_t h = s_fnv(S_FNV_INIT, S_JOURNAL_MAGIC, 8);
    h = s_fnv(h, &bom, 4);
    h = s_fnv(h, &jl, 4);
    h = s_fnv(h, js, jl);
    if (h != h_read || !(o = cJSON_Parse(js))) {
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: corrupt journal header (checksum)", j);
        goto done;
    }
    const cJSON *fp_ = cJSON_GetObjectItemCaseSensitive(o, "fingerprint");
    const cJSON *nr = cJSON_GetObjectItemCaseSensitive(o, "n_rows");
    const cJSON *nc = cJSON_GetObjectItemCaseSensitive(o, "n_classes");
    const cJSON *ed = cJSON_GetObjectItemCaseSensitive(o, "embed_dim");
    const cJSON *ht = cJSON_GetObjectItemCaseSensitive(o, "has_true_label");
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(o, "created");
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(o, "classes");
    const cJSON *sg = cJSON_GetObjectItemCaseSensitive(o, "segments");
    if (!cJSON_IsString(fp_) || !cJSON_IsNumber(nr) || !cJSON_IsNumber(nc) || !cJSON_IsNumber(ed) ||
        !cJSON_IsBool(ht) || !cJSON_IsString(cr) || !cJSON_IsArray(cl) || !cJSON_IsBool(sg)) {
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: incomplete journal header", j);
        goto done;
    }
    if (strcmp(fp_->valuestring, r->fingerprint) != 0) {
        rc = wisp_error_set(err, WISP_ERR_STATE,
                            "%s: belongs to another run (fingerprint %.80s, this run %.80s); "
                            "refusing to mix results: use the same config/model/adapter, or "
                            "start over without resume",
                            j, fp_->valuestring, r->fingerprint);
        goto done;
    }
    if ((size_t)nr->valuedouble != r->n_rows || nc->valueint != r->C || ed->valueint != r->P ||
        cJSON_IsTrue(ht) != !!r->has_true || cJSON_IsTrue(sg) != !!r->has_seg) {
        rc = wisp_error_set(err, WISP_ERR_STATE,
                            "%s: shape differs (journal rows=%.0f classes=%d embed=%d labels=%d "
                            "segments=%d, this run rows=%zu classes=%d embed=%d labels=%d "
                            "segments=%d)",
                            j, nr->valuedouble, nc->valueint, ed->valueint, cJSON_IsTrue(ht),
                            cJSON_IsTrue(sg), r->n_rows, r->C, r->P, r->has_true, r->has_seg);
        goto done;
    }
    if (cJSON_GetArraySize(cl) != r->C) {
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: class list differs", j);
        goto done;
    }
    for (int c = 0; c < r->C; c++) {
        const cJSON *e = cJSON_GetArrayItem(cl, c);
        if (!cJSON_IsString(e) || strcmp(e->valuestring, r->classes[c]) != 0) {
            rc = wisp_error_set(err, WISP_ERR_STATE, "%s: class %d differs ('%s' vs '%s')", j, c,
                                cJSON_IsString(e) ? e->valuestring : "?", r->classes[c]);
            goto done;
        }
    }
    snprintf(r->created, sizeof r->created, "%s", cr->valuestring);
    r->jsize = 8 + 4 + 4 + jl + 8;
    r->jlast = h_read;
done:
    cJSON_Delete(o);
    free(js);
    return rc;
}

static void s_mark_committed(wisp_results_t *r, const s_row_t *w)
{
    size_t i = w->index;
    if (r->state[i] != 2)
        r->n_done++;
    if (r->state[i] == 0 && w->status != 0)
        r->n_err++;
    r->state[i] = 2;
    r->label[i] = w->label;
    r->status[i] = w->status;
    r->true_label[i] = w->true_label;
}

/* Room for `rows` more segments in the store (u64 row + a serialized segment each). */
static int s_segs_reserve(wisp_results_t *r, size_t segs)
{
    size_t each = 8 + s_seg_bytes(r);
    if (segs > (SIZE_MAX - r->segs_bytes) / each)
        return -1;
    size_t need = r->segs_bytes + segs * each;
    if (need <= r->segs_cap)
        return 0;
    size_t cap = r->segs_cap ? r->segs_cap : 65536;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *q = realloc(r->segs, cap);
    if (!q)
        return -1;
    r->segs = q;
    r->segs_cap = cap;
    return 0;
}

/* Appends a committed row's segments to the store (room reserved by the caller). */
static void s_keep_segments(wisp_results_t *r, const s_row_t *w)
{
    size_t sb = s_seg_bytes(r);
    uint64_t row = w->index;
    for (uint32_t k = 0; k < w->n_seg; k++) {
        memcpy(r->segs + r->segs_bytes, &row, 8);
        memcpy(r->segs + r->segs_bytes + 8, (const uint8_t *)w->seg + k * sb, sb);
        r->segs_bytes += 8 + sb;
        r->n_segs++;
    }
}

/* The n rows of a record's payload (checksum good) as views into it, without the ones
 * already committed (first commit wins) and sorted by index: rows[0, *m). -1 when the
 * content is malformed (a bug, not a torn write: the caller stops as for a corrupt
 * record). */
static int s_parse_record(wisp_results_t *r, const uint8_t *payload, size_t plen, uint32_t n,
                          s_row_t *rows, size_t *m)
{
    size_t off = 0, nf = s_row_floats(r);
    int bad = 0;
    *m = 0;
    for (uint32_t k = 0; k < n; k++) {
        s_row_t w;
        if (s_deser_row(payload, plen, &off, nf, s_seg_bytes(r), &w) < 0 || w.index >= r->n_rows ||
            (w.n_seg && !r->has_seg)) {
            bad = 1;
            break;
        }
        if (r->state[w.index] == 2)
            continue;
        rows[(*m)++] = w;
        r->state[w.index] = 2; /* a duplicate inside the record is skipped too */
    }
    for (size_t k = 0; k < *m; k++)
        r->state[rows[k].index] = 0;
    if (bad || off != plen)
        return -1;
    qsort(rows, *m, sizeof *rows, s_cmp_row);
    return 0;
}

/* Writes a record's new rows (s_parse_record) into the HDF5 file and marks them
 * committed. */
static int s_apply_record(wisp_results_t *r, const s_row_t *rows, size_t m, wisp_error_t *err)
{
    double t_h5 = wisp_now();
    int rc = s_h5_write(r, rows, m, err);
    if (rc != WISP_OK)
        return rc;
    r->stats.replay_h5_s += wisp_now() - t_h5;
    r->stats.replay_rows += m;
    size_t n_seg = 0;
    for (size_t k = 0; k < m; k++)
        n_seg += rows[k].n_seg;
    if (s_segs_reserve(r, n_seg) < 0)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory for %zu segments", r->journal,
                              n_seg);
    for (size_t k = 0; k < m; k++) {
        s_mark_committed(r, &rows[k]);
        s_keep_segments(r, &rows[k]);
    }
    return WISP_OK;
}

/* Replays the journal's records into the HDF5 file (fresh, or rolled back to the
 * checkpoint `from`: then only the records after it); stops at the first incomplete
 * or corrupt record and cuts the journal there. */
static int s_journal_replay(wisp_results_t *r, const s_ckpt_t *from, wisp_error_t *err)
{
    int rc = WISP_OK;
    FILE *fp = fopen(r->journal, "rb");
    uint8_t *payload = NULL;
    s_row_t *rows = NULL;
    size_t n_records = 0;
    if (!fp)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
    if ((rc = s_journal_check_header(r, fp, err)) != WISP_OK)
        goto done;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
        goto done;
    }
    if (from) {
        if (fseeko(fp, (off_t)from->jsize, SEEK_SET) != 0) {
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
            goto done;
        }
        r->jsize = from->jsize;
        r->seq = from->seq;
        r->jlast = from->jlast;
    }
    uint64_t fsize = (uint64_t)st.st_size, pos = r->jsize;
    const char *why = NULL;
    for (;;) {
        uint8_t fr[S_FRAME_BYTES];
        if (pos == fsize)
            break;
        if (fsize - pos < S_FRAME_BYTES + 8 || fread(fr, 1, sizeof fr, fp) != sizeof fr) {
            why = "incomplete record";
            break;
        }
        uint32_t magic, n;
        uint64_t plen, seq, h_read;
        memcpy(&magic, fr, 4);
        memcpy(&n, fr + 4, 4);
        memcpy(&plen, fr + 8, 8);
        memcpy(&seq, fr + 16, 8);
        if (magic != S_RECORD_MAGIC || seq != r->seq || n > r->n_rows) {
            why = "bad record frame";
            break;
        }
        if (plen > fsize - pos - S_FRAME_BYTES - 8) {
            why = "incomplete record";
            break;
        }
        uint8_t *q = realloc(payload, plen ? plen : 1);
        s_row_t *rw = realloc(rows, (n ? n : 1) * sizeof *rows);
        if (q)
            payload = q;
        if (rw)
            rows = rw;
        if (!q || !rw) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->journal);
            goto done;
        }
        if (fread(payload, 1, plen, fp) != plen || fread(&h_read, 8, 1, fp) != 1) {
            why = "incomplete record";
            break;
        }
        uint64_t h = s_fnv(S_FNV_INIT, fr, sizeof fr);
        h = s_fnv(h, payload, plen);
        if (h != h_read) {
            why = "checksum mismatch";
            break;
        }
        size_t m = 0;
        if (s_parse_record(r, payload, plen, n, rows, &m) < 0) {
            why = "malformed record";
            break;
        }
        if ((rc = s_apply_record(r, rows, m, err)) != WISP_OK)
            goto done;
        if (n == 0)
            r->n_resumes++;
        pos += S_FRAME_BYTES + plen + 8;
        r->jsize = pos;
        r->jlast = h_read;
        r->seq++;
        n_records++;
    }
    if (why) {
        WISP_LOGW("%s: %s at byte %llu (a crash during a commit, or damage); the %llu "
                  "byte(s) from there on are dropped",
                  r->journal, why, (unsigned long long)pos, (unsigned long long)(fsize - pos));
    }
    WISP_LOGI("%s: resumed %zu of %zu rows (%zu replayed from %zu commit(s)%s)", r->path, r->n_done,
              r->n_rows, r->stats.replay_rows, n_records,
              from ? " after the checkpoint of the .partial" : ", the file rebuilt");
done:
    free(payload);
    free(rows);
    if (fp)
        fclose(fp);
    return rc;
}

/* Records the .partial as holding every committed row (h5undo.h): flushed, then
 * checkpointed with the journal's position. Not for windowed runs (their segments
 * live in memory until finish: a resume reads them from the whole journal anyway)
 * nor after a failed HDF5 update (the file then lacks rows: the last checkpoint
 * stays, and a resume replays the journal from there). */
static int s_checkpoint(wisp_results_t *r, wisp_error_t *err)
{
    if (r->has_seg || r->h5_stale)
        return WISP_OK;
    if (H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        return wisp_h5_fail(err, r->partial, "flush");
    s_ckpt_t c;
    memset(&c, 0, sizeof c);
    memcpy(c.magic, S_CKPT_MAGIC, 8);
    c.n_rows = r->n_rows;
    c.jsize = r->jsize;
    c.seq = r->seq;
    c.jlast = r->jlast;
    c.n_done = r->n_done;
    c.n_err = r->n_err;
    c.n_resumes = r->n_resumes;
    return wisp_h5undo_checkpoint(r->undo, &c, sizeof c, err);
}

/* Checkpoints after a commit or a resume; a failure only costs the next resume more
 * replay (the previous checkpoint stays valid: its log still records every write). */
static void s_checkpoint_soft(wisp_results_t *r)
{
    wisp_error_t e = {0};
    if (s_checkpoint(r, &e) != WISP_OK)
        WISP_LOGW("%s: no checkpoint (%s): a resume replays more of the journal", r->partial,
                  e.msg);
}

/* The fast resume: the .partial rolled back to its last checkpoint (h5undo.h), checked
 * against the journal and this run's shape, its committed rows read back. The caller
 * then replays only the records after the checkpoint (*c). On any failure the caller
 * rebuilds the file from the whole journal instead. */
static int s_resume_tail(wisp_results_t *r, s_ckpt_t *c, wisp_error_t *err)
{
    uint8_t *meta = NULL;
    size_t n = 0;
    const uint64_t header_end = r->jsize; /* set by the header check */
    int rc = wisp_h5undo_rollback(r->undo, r->partial, &meta, &n, err);
    if (rc != WISP_OK)
        return rc;
    if (n == sizeof *c)
        memcpy(c, meta, n);
    free(meta);
    if (n != sizeof *c || memcmp(c->magic, S_CKPT_MAGIC, 8) != 0 || c->n_rows != r->n_rows ||
        c->jsize < header_end || c->n_done > r->n_rows || c->n_err > c->n_done)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: not a checkpoint of this run",
                              r->undo_path);
    /* The journal must still hold the checkpoint's records: the same checksum ends them. */
    uint64_t h = 0;
    struct stat st;
    int fd = open(r->journal, O_RDONLY | O_CLOEXEC);
    int ok = fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size >= c->jsize &&
             pread(fd, &h, 8, (off_t)(c->jsize - 8)) == 8 && h == c->jlast;
    if (fd >= 0)
        close(fd);
    if (!ok)
        return wisp_error_set(err, WISP_ERR_STATE, "%s: the checkpoint does not match %s",
                              r->undo_path, r->journal);
    if ((rc = s_h5_open(r, err)) != WISP_OK || (rc = s_load_state(r, err)) != WISP_OK)
        return rc;
    if (r->n_done != c->n_done || r->n_err != c->n_err)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: holds %zu committed rows (%zu errors), its checkpoint %llu "
                              "(%llu)",
                              r->partial, r->n_done, r->n_err, (unsigned long long)c->n_done,
                              (unsigned long long)c->n_err);
    r->n_resumes = c->n_resumes;
    return WISP_OK;
}

static int s_journal_open_append(wisp_results_t *r, wisp_error_t *err)
{
    r->jfd = open(r->journal, O_WRONLY | O_CLOEXEC);
    if (r->jfd < 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
    if (flock(r->jfd, LOCK_EX | LOCK_NB) != 0)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: another writer holds this output (lock: %s)", r->journal,
                              strerror(errno));
    /* Cut a torn tail left by a crash, so appends follow the last good commit. */
    if (ftruncate(r->jfd, (off_t)r->jsize) != 0 || lseek(r->jfd, 0, SEEK_END) < 0 ||
        fsync(r->jfd) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
    return WISP_OK;
}

/* Refuses to touch the files of an output another live writer holds (its journal
 * is flock'd for the writer's lifetime). */
static int s_check_unlocked(wisp_results_t *r, wisp_error_t *err)
{
    int fd = open(r->journal, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return WISP_OK;
    int rc = WISP_OK;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        rc = wisp_error_set(err, WISP_ERR_STATE, "%s: another writer holds this output (%s)",
                            r->journal, strerror(errno));
    close(fd); /* releases the probe lock */
    return rc;
}

/* The output's directory must exist and be writable: checked up front so that the
 * message names the file the user asked for, not the journal's temporary file. */
static int s_check_output_dir(const char *path, wisp_error_t *err)
{
    char dir[4096];
    struct stat st;
    if (wisp_path_dirname(dir, sizeof dir, path) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: output path too long", path);
    if (stat(dir, &st) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot write the results: directory %s: %s",
                              path, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return wisp_error_set(err, WISP_ERR_IO,
                              "%s: cannot write the results: %s is not a "
                              "directory",
                              path, dir);
    if (access(dir, W_OK) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot write the results: directory %s: %s",
                              path, dir, strerror(errno));
    struct stat so;
    if (stat(path, &so) == 0 && S_ISDIR(so.st_mode))
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot write the results: it is a directory",
                              path);
    return WISP_OK;
}

/* The resume part of open: identity first (before touching the .partial of somebody
 * else's run), then the tail resume from the .partial's checkpoint, or, when that is
 * not possible (no or an untrusted rollback log, a windowed run, any mismatch), the
 * full rebuild from the whole journal. */
static int s_open_resume(wisp_results_t *r, wisp_error_t *err)
{
    FILE *fp = fopen(r->journal, "rb");
    if (!fp)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
    int rc = s_journal_check_header(r, fp, err);
    fclose(fp);
    if (rc != WISP_OK)
        return rc;
    s_ckpt_t ck;
    wisp_error_t te = {0};
    int tail = !r->has_seg && access(r->undo_path, F_OK) == 0 && s_resume_tail(r, &ck, &te) == 0;
    if (!tail) {
        if (!r->has_seg)
            WISP_LOGW("%s: %s; rebuilding it from the whole journal", r->partial,
                      te.code ? te.msg : "no rollback log");
        s_h5_close(r);
        s_state_reset(r);
        if ((rc = s_unlink_quiet(r->undo_path, err)) != WISP_OK ||
            (rc = s_unlink_quiet(r->partial, err)) != WISP_OK ||
            (rc = s_h5_create(r, err)) != WISP_OK)
            return rc;
    }
    r->stats.resume_tail = tail;
    return s_journal_replay(r, tail ? &ck : NULL, err);
}

/* ---------------------------------------------------------------- public */

wisp_results_opts_t wisp_results_default_opts(void)
{
    wisp_results_opts_t o = {0};
    return o;
}

static int s_check_opts(const wisp_results_opts_t *o, wisp_error_t *err)
{
    const char *p = o && o->path ? o->path : "(results)";
    if (!o || !o->path || !o->path[0])
        return wisp_error_set(err, WISP_ERR_ARG, "results: no output path");
    if (o->n_rows < 1)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: no rows", p);
    if (o->n_classes < 1 || !o->classes)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: no classes", p);
    for (int c = 0; c < o->n_classes; c++)
        if (!o->classes[c])
            return wisp_error_set(err, WISP_ERR_ARG, "%s: class %d has no name", p, c);
    if (o->embed_dim < 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: negative embed_dim", p);
    if (o->top_k < 0 || o->top_k > o->n_classes)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: top_k %d is outside [0, %d classes]", p,
                              o->top_k, o->n_classes);
    if (!o->fingerprint || !o->fingerprint[0])
        return wisp_error_set(err, WISP_ERR_ARG, "%s: a fingerprint is required", p);
    if (o->n_attrs < 0 || (o->n_attrs > 0 && !o->attrs))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: bad attribute list", p);
    static const char *const reserved[] = {
        "fingerprint", "wisp_version", "created",     "finished",  "n_rows",    "n_ok",
        "n_error",     "n_missing",    "n_classes",   "embed_dim", "n_resumes", "writer_seconds",
        "summary",     "accuracy",     "n_evaluated", "n_segments"};
    for (int a = 0; a < o->n_attrs; a++) {
        if (!o->attrs[a].key || !o->attrs[a].key[0])
            return wisp_error_set(err, WISP_ERR_ARG, "%s: attribute %d has no name", p, a);
        for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++)
            if (strcmp(o->attrs[a].key, reserved[k]) == 0)
                return wisp_error_set(err, WISP_ERR_ARG, "%s: attribute '%s' is set by the writer",
                                      p, o->attrs[a].key);
    }
    return WISP_OK;
}

wisp_results_t *wisp_results_open(const wisp_results_opts_t *opts, wisp_error_t *err)
{
    double t0 = wisp_now();
    if (s_check_opts(opts, err) != WISP_OK)
        return NULL;
    wisp_h5_quiet();
    int rc = WISP_OK;
    wisp_results_t *r = calloc(1, sizeof *r);
    if (!r) {
        wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", opts->path);
        return NULL;
    }
    r->jfd = -1;
    r->file = -1;
    r->str_type = -1;
    for (int c = 0; c < S_NCOLS; c++)
        r->dset[c] = -1;
    r->n_rows = opts->n_rows;
    r->C = opts->n_classes;
    r->P = opts->embed_dim;
    r->has_true = !!opts->has_true_label;
    r->K = opts->top_k;
    r->has_seg = !!opts->segments;
    r->max_pend = opts->max_pending_rows ? opts->max_pending_rows : S_DEFAULT_PENDING;
    if (r->max_pend > S_MAX_PENDING)
        r->max_pend = S_MAX_PENDING;
    r->path = strdup(opts->path);
    r->partial = s_strcat2(opts->path, ".partial");
    r->journal = s_strcat2(opts->path, ".commit");
    r->undo_path = s_strcat2(opts->path, ".undo");
    r->fingerprint = strdup(opts->fingerprint);
    r->classes = calloc((size_t)r->C, sizeof *r->classes);
    r->attr_keys = calloc((size_t)opts->n_attrs + 1, sizeof *r->attr_keys);
    r->attr_vals = calloc((size_t)opts->n_attrs + 1, sizeof *r->attr_vals);
    r->state = calloc(r->n_rows, 1);
    r->label = malloc(r->n_rows * sizeof *r->label);
    r->status = malloc(r->n_rows);
    r->true_label = malloc(r->n_rows * sizeof *r->true_label);
    r->pend = calloc(r->max_pend, sizeof *r->pend);
    r->pend_vals = malloc(r->max_pend * s_row_floats(r) * sizeof(float) + 1);
    if (!r->path || !r->partial || !r->journal || !r->undo_path || !r->fingerprint || !r->classes ||
        !r->attr_keys || !r->attr_vals || !r->state || !r->label || !r->status || !r->true_label ||
        !r->pend || !r->pend_vals)
        goto nomem;
    for (int c = 0; c < r->C; c++)
        if (!(r->classes[c] = strdup(opts->classes[c])))
            goto nomem;
    for (int a = 0; a < opts->n_attrs; a++) {
        r->attr_keys[a] = strdup(opts->attrs[a].key);
        r->attr_vals[a] = strdup(opts->attrs[a].value ? opts->attrs[a].value : "");
        r->n_attrs = a + 1;
        if (!r->attr_keys[a] || !r->attr_vals[a])
            goto nomem;
    }
    for (size_t i = 0; i < r->n_rows; i++) {
        r->label[i] = -1;
        r->status[i] = WISP_RESULTS_STATUS_MISSING;
        r->true_label[i] = -1;
    }
    s_iso_now(r->created);

    int resuming = opts->resume && access(r->journal, F_OK) == 0;
    if ((rc = s_check_output_dir(r->path, err)) != WISP_OK ||
        (rc = s_check_unlocked(r, err)) != WISP_OK ||
        !(r->undo = wisp_h5undo_new(r->undo_path, err)))
        goto fail;
    if (!resuming) {
        if (access(r->journal, F_OK) == 0 || access(r->partial, F_OK) == 0)
            WISP_LOGW("%s: starting over, removing the partial results of an earlier run", r->path);
        if ((rc = s_unlink_quiet(r->journal, err)) != WISP_OK ||
            (rc = s_unlink_quiet(r->undo_path, err)) != WISP_OK ||
            (rc = s_unlink_quiet(r->partial, err)) != WISP_OK ||
            (rc = s_journal_create(r, err)) != WISP_OK || (rc = s_h5_create(r, err)) != WISP_OK)
            goto fail;
    } else if ((rc = s_open_resume(r, err)) != WISP_OK) {
        goto fail;
    }
    if ((rc = s_journal_open_append(r, err)) != WISP_OK)
        goto fail;
    if (resuming) {
        /* An empty record marks the resume (counted into n_resumes on replay). */
        s_buf_t none = {0};
        if ((rc = s_journal_append(r, 0, &none, err)) != WISP_OK)
            goto fail;
        r->n_resumes++;
    }
    s_checkpoint_soft(r);
    r->seconds += wisp_now() - t0;
    r->stats.open_s = wisp_now() - t0;
    return r;
nomem:
    wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", opts->path);
fail:
    wisp_results_destroy(&r);
    return NULL;
}

/* A row's segments: only with opts.segments, only on ok rows, each with a label in
 * range, probs and finite start < end. */
static int s_check_segments(const wisp_results_t *r, const wisp_result_row_t *row,
                            wisp_error_t *err)
{
    if (row->n_segments == 0)
        return WISP_OK;
    if (!r->has_seg || row->status != 0 || !row->segments ||
        row->n_segments > WISP_RESULTS_MAX_SEGMENTS)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: row %zu: %u segments (%s)", r->path,
                              row->index, row->n_segments,
                              !r->has_seg        ? "the file has no segments group"
                              : row->status != 0 ? "an error row has none"
                              : !row->segments   ? "no segment array"
                                                 : "too many");
    for (uint32_t k = 0; k < row->n_segments; k++) {
        const wisp_result_segment_t *g = &row->segments[k];
        if (g->label < 0 || g->label >= r->C || !g->probs || !isfinite(g->start) ||
            !isfinite(g->end) || !(g->start >= 0 && g->start < g->end))
            return wisp_error_set(err, WISP_ERR_ARG,
                                  "%s: row %zu: segment %u needs a label in [0, %d), probs and "
                                  "0 <= start < end (got %d, %g..%g)",
                                  r->path, row->index, k, r->C, g->label, g->start, g->end);
    }
    return WISP_OK;
}

/* The row's segments serialized as in the journal (malloc'd; NULL when none or out
 * of memory). */
static uint8_t *s_ser_segments(const wisp_results_t *r, const wisp_result_row_t *row)
{
    size_t sb = s_seg_bytes(r), C = (size_t)r->C;
    if (row->n_segments == 0)
        return NULL;
    uint8_t *p = malloc((size_t)row->n_segments * sb);
    for (uint32_t k = 0; p && k < row->n_segments; k++) {
        const wisp_result_segment_t *g = &row->segments[k];
        uint8_t *q = p + k * sb;
        memcpy(q, &g->start, 8);
        memcpy(q + 8, &g->end, 8);
        memcpy(q + 16, &g->label, 4);
        memcpy(q + 20, &g->score, 4);
        memcpy(q + S_SEG_FIXED, g->probs, C * sizeof(float));
    }
    return p;
}

int wisp_results_put(wisp_results_t *r, const wisp_result_row_t *row, wisp_error_t *err)
{
    if (r->finished)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: put after finish", r->path);
    if (row->index >= r->n_rows)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: row %zu out of range (%zu rows)", r->path,
                              row->index, r->n_rows);
    if (r->state[row->index] != 0)
        return WISP_RESULTS_DUPLICATE;
    if (row->status == 0 && (row->label < 0 || row->label >= r->C || !row->probs || !row->logits ||
                             (r->P > 0 && !row->embedding)))
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: row %zu: status ok needs a label in [0, %d), probs, logits%s",
                              r->path, row->index, r->C, r->P ? " and an embedding" : "");
    if (row->status > 0 || row->status == WISP_RESULTS_STATUS_MISSING)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: row %zu: status %d is not a wisp error",
                              r->path, row->index, row->status);
    if (r->has_true && (row->true_label < -1 || row->true_label >= r->C))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: row %zu: true_label %d out of range", r->path,
                              row->index, row->true_label);
    int rc = s_check_segments(r, row, err);
    if (rc != WISP_OK)
        return rc;
    if (r->n_pend == r->max_pend && (rc = wisp_results_commit(r, err)) != WISP_OK)
        return rc;
    double t0 = wisp_now();
    size_t C = (size_t)r->C, P = (size_t)r->P, nf = s_row_floats(r);
    s_row_t *w = &r->pend[r->n_pend];
    float *v = r->pend_vals + r->n_pend * nf;
    char *path = strdup(row->path ? row->path : "");
    const char *text = row->status != 0 ? row->error : row->note;
    char *msg = strdup(text ? text : "");
    uint8_t *seg = s_ser_segments(r, row);
    if (!path || !msg || (row->n_segments && !seg)) {
        free(path);
        free(msg);
        free(seg);
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->path);
    }
    for (size_t k = 0; k < C; k++) {
        v[k] = row->probs ? row->probs[k] : NAN;
        v[C + k] = row->logits ? row->logits[k] : NAN;
    }
    for (size_t k = 0; k < P; k++)
        v[2 * C + k] = row->embedding ? row->embedding[k] : NAN;
    *w = (s_row_t){
        .index = row->index,
        .label = row->status == 0 ? row->label : -1,
        .score = row->status == 0 || row->probs ? row->score : NAN,
        .duration = row->duration,
        .true_label = r->has_true ? row->true_label : -1,
        .status = row->status,
        .path = path,
        .error = msg,
        .vals = v,
        .n_seg = row->n_segments,
        .seg = seg,
    };
    r->state[row->index] = 1;
    if (row->status != 0)
        r->n_err++;
    r->n_pend++;
    r->seconds += wisp_now() - t0;
    return WISP_OK;
}

static void s_pend_clear(wisp_results_t *r)
{
    for (size_t k = 0; k < r->n_pend; k++) {
        free((char *)r->pend[k].path);
        free((char *)r->pend[k].error);
        free((void *)r->pend[k].seg);
    }
    r->n_pend = 0;
}

int wisp_results_commit(wisp_results_t *r, wisp_error_t *err)
{
    if (r->finished)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: commit after finish", r->path);
    if (r->n_pend == 0)
        return WISP_OK;
    double t0 = wisp_now();
    int rc = WISP_OK;
    s_buf_t b = {0};
    size_t nf = s_row_floats(r), n_seg = 0;
    /* Sorted rows: the journal replays in the same order the HDF5 file is written. */
    qsort(r->pend, r->n_pend, sizeof *r->pend, s_cmp_row);
    for (size_t k = 0; k < r->n_pend; k++) {
        n_seg += r->pend[k].n_seg;
        if (s_ser_row(&b, &r->pend[k], nf, s_seg_bytes(r)) < 0) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->journal);
            goto done;
        }
    }
    /* Room for the segments first: once the record is durable nothing may fail. */
    if (s_segs_reserve(r, n_seg) < 0) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory for %zu segments", r->journal,
                            n_seg);
        goto done;
    }
    if ((rc = s_journal_append(r, (uint32_t)r->n_pend, &b, err)) != WISP_OK)
        goto done;
    /* Durable from here on: the rows are committed whatever happens to the HDF5. */
    for (size_t k = 0; k < r->n_pend; k++) {
        if (r->pend[k].status != 0)
            r->n_err--; /* s_mark_committed counts it again */
        r->state[r->pend[k].index] = 0;
        s_mark_committed(r, &r->pend[k]);
        s_keep_segments(r, &r->pend[k]);
    }
    if (!r->h5_stale && (rc = s_h5_write(r, r->pend, r->n_pend, err)) != WISP_OK) {
        r->h5_stale = 1;
        WISP_LOGE("%s: rows are safe in %s but the HDF5 file could not be updated; "
                  "reopen with resume to rebuild it",
                  r->partial, r->journal);
    }
    if (rc == WISP_OK)
        s_checkpoint_soft(r);
    s_pend_clear(r);
done:
    free(b.p);
    r->seconds += wisp_now() - t0;
    return rc;
}

void wisp_results_get_stats(const wisp_results_t *r, wisp_results_stats_t *out)
{
    *out = r->stats;
    if (r->undo) {
        wisp_h5undo_stats_t u;
        wisp_h5undo_get_stats(r->undo, &u);
        out->undo_bytes = u.total_bytes;
        out->checkpoints = u.checkpoints;
    }
}

size_t wisp_results_done_count(const wisp_results_t *r)
{
    return r->n_done;
}

int wisp_results_row_done(const wisp_results_t *r, size_t i)
{
    return i < r->n_rows && r->state[i] == 2;
}

int wisp_results_row_received(const wisp_results_t *r, size_t i)
{
    return i < r->n_rows && r->state[i] != 0;
}

size_t wisp_results_error_count(const wisp_results_t *r)
{
    return r->n_err;
}

/* Metrics over the evaluated rows (committed, status 0, known true label). */
static int s_write_metrics(wisp_results_t *r, wisp_error_t *err)
{
    int rc = WISP_OK;
    size_t C = (size_t)r->C;
    int64_t *conf = calloc(C * C, sizeof *conf);
    float *prec = malloc(C * sizeof *prec), *rec = malloc(C * sizeof *rec);
    hid_t d = -1;
    const char *f = r->partial;
    if (!conf || !prec || !rec) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", f);
        goto done;
    }
    int64_t n_eval = 0, n_correct = 0;
    for (size_t i = 0; i < r->n_rows; i++) {
        if (r->state[i] != 2 || r->status[i] != 0 || r->true_label[i] < 0)
            continue;
        conf[(size_t)r->true_label[i] * C + (size_t)r->label[i]]++;
        n_eval++;
        n_correct += r->true_label[i] == r->label[i];
    }
    for (size_t c = 0; c < C; c++) {
        int64_t tp = conf[c * C + c], pred = 0, tru = 0;
        for (size_t k = 0; k < C; k++) {
            pred += conf[k * C + c];
            tru += conf[c * C + k];
        }
        prec[c] = pred ? (float)((double)tp / (double)pred) : 0.0f;
        rec[c] = tru ? (float)((double)tp / (double)tru) : 0.0f;
    }
    hsize_t dims[2] = {C, C};
    if ((d = wisp_h5_create_rows(r->file, "confusion", H5T_STD_I64LE, 2, dims, C, NULL, f, err)) <
        0) {
        rc = WISP_ERR_HDF5;
        goto done;
    }
    if ((rc = wisp_h5_write_rows(d, H5T_NATIVE_INT64, 0, C, conf, f, "confusion", err)) != 0)
        goto done;
    H5Dclose(d);
    if ((d = wisp_h5_create_rows(r->file, "precision", H5T_IEEE_F32LE, 1, dims, C, NULL, f, err)) <
        0) {
        rc = WISP_ERR_HDF5;
        goto done;
    }
    if ((rc = wisp_h5_write_rows(d, H5T_NATIVE_FLOAT, 0, C, prec, f, "precision", err)) != 0)
        goto done;
    H5Dclose(d);
    if ((d = wisp_h5_create_rows(r->file, "recall", H5T_IEEE_F32LE, 1, dims, C, NULL, f, err)) <
        0) {
        rc = WISP_ERR_HDF5;
        goto done;
    }
    if ((rc = wisp_h5_write_rows(d, H5T_NATIVE_FLOAT, 0, C, rec, f, "recall", err)) != 0)
        goto done;
    rc = wisp_h5_attr_set_f64(r->file, "accuracy",
                              n_eval ? (double)n_correct / (double)n_eval : NAN, f, err);
    if (rc == WISP_OK)
        rc = wisp_h5_attr_set_i64(r->file, "n_evaluated", n_eval, f, err);
done:
    if (d >= 0)
        H5Dclose(d);
    free(conf);
    free(prec);
    free(rec);
    return rc;
}

/* Error text "missing" for the rows never committed (the other columns of those
 * rows already hold their fill values). */
static int s_write_missing(wisp_results_t *r, size_t missing, wisp_error_t *err)
{
    const char **msg = malloc(missing * sizeof *msg);
    if (!msg)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->partial);
    for (size_t k = 0; k < missing; k++)
        msg[k] = "missing";
    int rc = WISP_OK;
    for (size_t i = 0; i < r->n_rows && rc == WISP_OK;) {
        if (r->state[i] == 2) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < r->n_rows && r->state[j] != 2)
            j++;
        rc = wisp_h5_write_rows(r->dset[S_COL_ERROR], r->str_type, i, j - i, msg, r->partial,
                                "error", err);
        i = j;
    }
    free(msg);
    return rc;
}

/* A stored segment, for sorting by (row, start); ties keep commit order. */
typedef struct {
    uint64_t row;
    double start;
    size_t order;
    const uint8_t *seg;
} s_seg_ref_t;

static int s_cmp_seg(const void *a, const void *b)
{
    const s_seg_ref_t *x = a, *y = b;
    if (x->row != y->row)
        return x->row < y->row ? -1 : 1;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* One dataset of the segments group: M rows (chunked), or an empty contiguous one
 * (HDF5 refuses chunks larger than a fixed zero extent). */
static int s_seg_dataset(hid_t g, const char *name, hid_t type, int width, size_t M,
                         const void *buf, const char *f, wisp_error_t *err)
{
    hsize_t dims[2] = {M, (hsize_t)width};
    int rank = width > 1 ? 2 : 1, rc = WISP_OK;
    hid_t d;
    if (M == 0) {
        hid_t sp = H5Screate_simple(rank, dims, NULL);
        d = sp < 0 ? -1 : H5Dcreate2(g, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sp >= 0)
            H5Sclose(sp);
        if (d < 0)
            return wisp_h5_fail(err, f, name);
        H5Dclose(d);
        return WISP_OK;
    }
    hsize_t chunk = width > 1 ? S_CHUNK_BYTES / (4 * (size_t)width) : S_CHUNK_ROWS;
    if ((d = wisp_h5_create_rows(g, name, type, rank, dims, chunk ? chunk : 1, NULL, f, err)) < 0)
        return WISP_ERR_HDF5;
    rc = wisp_h5_write_rows(d, type, 0, M, buf, f, name, err);
    H5Dclose(d);
    return rc;
}

/* The segments group (layout in results.h), sorted by (row, start). */
static int s_write_segments(wisp_results_t *r, wisp_error_t *err)
{
    int rc = WISP_OK;
    const size_t M = r->n_segs, C = (size_t)r->C, each = 8 + s_seg_bytes(r);
    const char *f = r->partial;
    s_seg_ref_t *ref = malloc((M + 1) * sizeof *ref);
    int64_t *row = malloc((M + 1) * sizeof *row);
    double *start = malloc((M + 1) * sizeof *start), *end = malloc((M + 1) * sizeof *end);
    int32_t *label = malloc((M + 1) * sizeof *label);
    float *score = malloc((M + 1) * sizeof *score), *probs = malloc((M * C + 1) * sizeof *probs);
    const char **names = malloc((M + 1) * sizeof *names);
    hid_t g = -1;
    if (!ref || !row || !start || !end || !label || !score || !probs || !names) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory for %zu segments", f, M);
        goto done;
    }
    for (size_t k = 0; k < M; k++) {
        const uint8_t *p = r->segs + k * each;
        memcpy(&ref[k].row, p, 8);
        memcpy(&ref[k].start, p + 8, 8);
        ref[k].order = k;
        ref[k].seg = p + 8;
    }
    qsort(ref, M, sizeof *ref, s_cmp_seg);
    for (size_t k = 0; k < M; k++) {
        const uint8_t *q = ref[k].seg;
        row[k] = (int64_t)ref[k].row;
        start[k] = ref[k].start;
        memcpy(&end[k], q + 8, 8);
        memcpy(&label[k], q + 16, 4);
        memcpy(&score[k], q + 20, 4);
        memcpy(probs + k * C, q + S_SEG_FIXED, C * sizeof(float));
        names[k] = label[k] >= 0 && label[k] < r->C ? r->classes[label[k]] : "";
    }
    if ((g = H5Gcreate2(r->file, "segments", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
        rc = wisp_h5_fail(err, f, "creating group 'segments'");
        goto done;
    }
    if ((rc = s_seg_dataset(g, "row", H5T_NATIVE_INT64, 1, M, row, f, err)) != 0 ||
        (rc = s_seg_dataset(g, "start", H5T_NATIVE_DOUBLE, 1, M, start, f, err)) != 0 ||
        (rc = s_seg_dataset(g, "end", H5T_NATIVE_DOUBLE, 1, M, end, f, err)) != 0 ||
        (rc = s_seg_dataset(g, "label", H5T_NATIVE_INT32, 1, M, label, f, err)) != 0 ||
        (rc = s_seg_dataset(g, "label_name", r->str_type, 1, M, names, f, err)) != 0 ||
        (rc = s_seg_dataset(g, "score", H5T_NATIVE_FLOAT, 1, M, score, f, err)) != 0 ||
        (rc = s_seg_dataset(g, "probs", H5T_NATIVE_FLOAT, (int)C, M, probs, f, err)) != 0)
        goto done;
    rc = wisp_h5_attr_set_i64(r->file, "n_segments", (int64_t)M, f, err);
done:
    if (g >= 0)
        H5Gclose(g);
    free(ref);
    free(row);
    free(start);
    free(end);
    free(label);
    free(score);
    free(probs);
    free(names);
    return rc;
}

int wisp_results_finish(wisp_results_t *r, const char *summary_json, unsigned flags,
                        wisp_error_t *err)
{
    int rc;
    if (r->finished)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: already finished", r->path);
    if ((rc = wisp_results_commit(r, err)) != WISP_OK)
        return rc;
    double t0 = wisp_now();
    if (r->h5_stale)
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: the HDF5 file missed a commit; reopen with resume to "
                              "rebuild it from %s",
                              r->partial, r->journal);
    size_t missing = r->n_rows - r->n_done;
    if (missing > 0 && !(flags & WISP_RESULTS_FINISH_ALLOW_MISSING)) {
        size_t first = 0;
        while (first < r->n_rows && r->state[first] == 2)
            first++;
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: %zu of %zu rows missing (first: row %zu); not finishing",
                              r->path, missing, r->n_rows, first);
    }
    const char *f = r->partial;
    char finished[32];
    s_iso_now(finished);
    int64_t n_ok = 0, n_error = 0;
    for (size_t i = 0; i < r->n_rows; i++)
        if (r->state[i] == 2) {
            if (r->status[i] == 0)
                n_ok++;
            else
                n_error++;
        }
    if (missing > 0 && (rc = s_write_missing(r, missing, err)) != WISP_OK)
        return rc;
    if (r->has_true && (rc = s_write_metrics(r, err)) != WISP_OK)
        return rc;
    if (r->has_seg && (rc = s_write_segments(r, err)) != WISP_OK)
        return rc;
    if ((rc = wisp_h5_attr_set_i64(r->file, "n_ok", n_ok, f, err)) != WISP_OK ||
        (rc = wisp_h5_attr_set_i64(r->file, "n_error", n_error, f, err)) != WISP_OK ||
        (rc = wisp_h5_attr_set_i64(r->file, "n_missing", (int64_t)missing, f, err)) != 0 ||
        (rc = wisp_h5_attr_set_i64(r->file, "n_resumes", r->n_resumes, f, err)) != 0 ||
        (rc = wisp_h5_attr_set_str(r->file, "finished", finished, f, err)) != WISP_OK ||
        (summary_json &&
         (rc = wisp_h5_attr_set_str(r->file, "summary", summary_json, f, err)) != WISP_OK))
        return rc;
    r->seconds += wisp_now() - t0;
    if ((rc = wisp_h5_attr_set_f64(r->file, "writer_seconds", r->seconds, f, err)) != 0)
        return rc;
    for (int c = 0; c < S_NCOLS; c++) {
        if (r->dset[c] >= 0)
            H5Dclose(r->dset[c]);
        r->dset[c] = -1;
    }
    herr_t hc = H5Fclose(r->file);
    r->file = -1;
    if (hc < 0)
        return wisp_h5_fail(err, f, "close");
    int fd = open(f, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: fsync: %s", f, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    close(fd);
    /* The log goes first: dying before the rename then costs a full rebuild, never a
     * log left beside a finished file. */
    if (unlink(r->undo_path) != 0 && errno != ENOENT)
        WISP_LOGW("%s: cannot remove the rollback log: %s", r->undo_path, strerror(errno));
    if (rename(f, r->path) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot rename to %s: %s", f, r->path,
                              strerror(errno));
    s_fsync_dir(r->path);
    r->finished = 1;
    if (unlink(r->journal) != 0)
        WISP_LOGW("%s: cannot remove the journal: %s", r->journal, strerror(errno));
    WISP_LOGI("%s: %zu rows (%lld ok, %lld errors, %zu missing)", r->path, r->n_rows,
              (long long)n_ok, (long long)n_error, missing);
    return WISP_OK;
}

int wisp_results_is_complete(const char *path, const char *fingerprint)
{
    if (!path || !fingerprint || access(path, R_OK) != 0)
        return 0;
    wisp_h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    char *fp = NULL;
    int64_t n_missing = -1;
    wisp_error_t e = {0}; /* absorbs the messages: "not complete" is an answer */
    int ok = wisp_h5_attr_get_str(f, "fingerprint", &fp, path, &e) == WISP_OK &&
             wisp_h5_attr_get_i64(f, "n_missing", &n_missing, path, &e) == WISP_OK &&
             strcmp(fp, fingerprint) == 0 && n_missing == 0;
    free(fp);
    H5Fclose(f);
    return ok;
}

void wisp_results_destroy(wisp_results_t **rp)
{
    if (!rp || !*rp)
        return;
    wisp_results_t *r = *rp;
    s_pend_clear(r);
    s_h5_close(r);
    wisp_h5undo_destroy(&r->undo); /* after the file: the driver must be unused */
    if (r->jfd >= 0)
        close(r->jfd);
    free(r->path);
    free(r->partial);
    free(r->journal);
    free(r->undo_path);
    free(r->fingerprint);
    if (r->classes)
        for (int c = 0; c < r->C; c++)
            free(r->classes[c]);
    free(r->classes);
    for (int a = 0; a < r->n_attrs; a++) {
        free(r->attr_keys[a]);
        free(r->attr_vals[a]);
    }
    free(r->attr_keys);
    free(r->attr_vals);
    free(r->state);
    free(r->label);
    free(r->status);
    free(r->true_label);
    free(r->pend);
    free(r->pend_vals);
    free(r->segs);
    free(r);
    *rp = NULL;
}
