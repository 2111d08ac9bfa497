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

#include "formats/h5util.h"
#include "base/log.h"
#include "base/util.h"

#define S_JOURNAL_MAGIC   "WISPRJ01"  /* 8 bytes at the start of the journal */
#define S_BOM             0x01020304u /* byte-order mark after the magic */
#define S_RECORD_MAGIC    0x5257524Au /* "JRWR" little-endian: one commit record */
#define S_FRAME_BYTES     24          /* magic u32, n u32, payload_len u64, seq u64 */
#define S_ROW_FIXED       36          /* serialized row without strings and floats */
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
    S_NCOLS
};

static const char *const s_col_names[S_NCOLS] = {"path",   "label",     "score",    "probs",
                                                 "logits", "embedding", "duration", "status",
                                                 "error",  "true_label"};

struct wisp_results {
    char *path;    /* final OUT.h5 */
    char *partial; /* OUT.h5.partial */
    char *journal; /* OUT.h5.commit */
    size_t n_rows; /* N */
    int C;         /* classes */
    int P;         /* embedding size, 0 = none */
    int has_true;  /* true_label column + metrics */
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

    s_row_t *pend;    /* (max_pending) received, not yet committed */
    float *pend_vals; /* (max_pending, 2C + P) */
    size_t n_pend, max_pend;

    int jfd;        /* journal, opened for appending, flock'd */
    uint64_t jsize; /* journal bytes known good */
    uint64_t seq;   /* next record sequence number */

    hid_t file;
    hid_t dset[S_NCOLS]; /* -1 for absent columns */
    hid_t str_type;
    int h5_stale; /* a commit reached the journal but not the HDF5 file */
    int finished;
    double seconds; /* time spent in this module */
};

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

/* Creates OUT.h5.partial with every column at its fill value (the "missing row"
 * values), the classes and the identity attributes. */
static int s_h5_create(wisp_results_t *r, wisp_error_t *err)
{
    int rc = WISP_OK;
    const char *f = r->partial;
    /* Rows arrive in shard-sized runs in any order, so a chunk is usually written in
     * several pieces: a chunk cache of S_CACHE_BYTES per dataset keeps partial chunks
     * in memory instead of re-reading them for every piece. w0 = 0.75 prefers evicting
     * fully written chunks but still evicts partly written ones when the cache is full:
     * w0 = 1 never evicted them, so with shuffled shards the cache grew with the file
     * (~1 GB at 10^6 rows; tests/test_results.c bounds the growth). */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_cache(fapl, 0, S_CACHE_SLOTS, S_CACHE_BYTES, 0.75) < 0) {
        if (fapl >= 0)
            H5Pclose(fapl);
        return wisp_h5_fail(err, f, "file access properties");
    }
    r->file = H5Fcreate(f, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (r->file < 0)
        return wisp_h5_fail(err, f, "cannot create file");
    if ((r->str_type = wisp_h5_str_type()) < 0)
        return wisp_h5_fail(err, f, "string type");
    int32_t minus1 = -1;
    float nanf_ = NAN, minus1f = -1.0f;
    int8_t st_missing = WISP_RESULTS_STATUS_MISSING;
    for (int c = 0; c < S_NCOLS; c++) {
        if ((c == S_COL_EMB && r->P == 0) || (c == S_COL_TRUE && !r->has_true))
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

static int s_cmp_row(const void *a, const void *b)
{
    size_t x = ((const s_row_t *)a)->index, y = ((const s_row_t *)b)->index;
    return x < y ? -1 : x > y;
}

/* Writes rows (sorted by index, no duplicates) into the HDF5 file: one block write
 * per column per contiguous index run, then a flush. */
static int s_h5_write(wisp_results_t *r, const s_row_t *rows, size_t n, wisp_error_t *err)
{
    int rc = WISP_OK;
    if (n == 0)
        return WISP_OK;
    size_t C = (size_t)r->C, P = (size_t)r->P;
    const char **paths = malloc(n * sizeof *paths);
    const char **errs = malloc(n * sizeof *errs);
    int32_t *lab = malloc(n * sizeof *lab), *tru = malloc(n * sizeof *tru);
    int8_t *st = malloc(n);
    float *score = malloc(n * sizeof *score), *dur = malloc(n * sizeof *dur);
    float *probs = malloc(n * C * sizeof *probs), *logits = malloc(n * C * sizeof *logits);
    float *emb = P ? malloc(n * P * sizeof *emb) : NULL;
    if (!paths || !errs || !lab || !tru || !st || !score || !dur || !probs || !logits ||
        (P && !emb)) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->partial);
        goto done;
    }
    for (size_t i = 0; i < n && rc == WISP_OK;) {
        size_t j = i + 1;
        while (j < n && rows[j].index == rows[j - 1].index + 1)
            j++;
        size_t m = j - i;
        for (size_t k = 0; k < m; k++) {
            const s_row_t *w = &rows[i + k];
            paths[k] = w->path;
            errs[k] = w->error;
            lab[k] = w->label;
            tru[k] = w->true_label;
            st[k] = w->status;
            score[k] = w->score;
            dur[k] = w->duration;
            const uint8_t *v = w->vals;
            memcpy(probs + k * C, v, C * sizeof(float));
            memcpy(logits + k * C, v + C * sizeof(float), C * sizeof(float));
            if (P)
                memcpy(emb + k * P, v + 2 * C * sizeof(float), P * sizeof(float));
        }
        size_t row0 = rows[i].index;
        const char *f = r->partial;
        rc = wisp_h5_write_rows(r->dset[S_COL_PATH], r->str_type, row0, m, paths, f, "path", err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_ERROR], r->str_type, row0, m, errs, f, "error",
                                    err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_LABEL], H5T_NATIVE_INT32, row0, m, lab, f,
                                    "label", err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_STATUS], H5T_NATIVE_INT8, row0, m, st, f,
                                    "status", err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_SCORE], H5T_NATIVE_FLOAT, row0, m, score, f,
                                    "score", err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_DURATION], H5T_NATIVE_FLOAT, row0, m, dur, f,
                                    "duration", err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_PROBS], H5T_NATIVE_FLOAT, row0, m, probs, f,
                                    "probs", err);
        if (rc == WISP_OK)
            rc = wisp_h5_write_rows(r->dset[S_COL_LOGITS], H5T_NATIVE_FLOAT, row0, m, logits, f,
                                    "logits", err);
        if (rc == WISP_OK && P)
            rc = wisp_h5_write_rows(r->dset[S_COL_EMB], H5T_NATIVE_FLOAT, row0, m, emb, f,
                                    "embedding", err);
        if (rc == WISP_OK && r->has_true)
            rc = wisp_h5_write_rows(r->dset[S_COL_TRUE], H5T_NATIVE_INT32, row0, m, tru, f,
                                    "true_label", err);
        i = j;
    }
    if (rc == WISP_OK && H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0)
        rc = wisp_h5_fail(err, r->partial, "flush");
done:
    free(paths);
    free(errs);
    free(lab);
    free(tru);
    free(st);
    free(score);
    free(dur);
    free(probs);
    free(logits);
    free(emb);
    return rc;
}

/* ---------------------------------------------------------------- journal */

/* Serialized row: index u64, label i32, score f32, duration f32, true_label i32,
 * status i8, 3 pad bytes, path_len u32, error_len u32 (both with the NUL), then the
 * path, the error and the (2C + P) floats. Host byte order. */
static int s_ser_row(s_buf_t *b, const s_row_t *w, size_t nfloats)
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
    if (s_buf_put(b, fx, sizeof fx) < 0 || s_buf_put(b, w->path, pl) < 0 ||
        s_buf_put(b, w->error, el) < 0 || s_buf_put(b, w->vals, nfloats * sizeof(float)) < 0)
        return -1;
    return 0;
}

/* Parses one serialized row at *off of a payload; views point into the payload.
 * Returns -1 when the bytes do not form a row. */
static int s_deser_row(const uint8_t *p, size_t len, size_t *off, size_t nfloats, s_row_t *w)
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
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: not a wisp commit journal (remove it to start over)", j);
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
    if (!cJSON_IsString(fp_) || !cJSON_IsNumber(nr) || !cJSON_IsNumber(nc) || !cJSON_IsNumber(ed) ||
        !cJSON_IsBool(ht) || !cJSON_IsString(cr) || !cJSON_IsArray(cl)) {
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
        cJSON_IsTrue(ht) != !!r->has_true) {
        rc = wisp_error_set(err, WISP_ERR_STATE,
                            "%s: shape differs (journal rows=%.0f classes=%d embed=%d labels=%d,"
                            " this run rows=%zu classes=%d embed=%d labels=%d)",
                            j, nr->valuedouble, nc->valueint, ed->valueint, cJSON_IsTrue(ht),
                            r->n_rows, r->C, r->P, r->has_true);
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

/* Replays the journal's records into the (fresh) HDF5 file; stops at the first
 * incomplete or corrupt record and cuts the journal there. */
static int s_journal_replay(wisp_results_t *r, wisp_error_t *err)
{
    int rc = WISP_OK;
    FILE *fp = fopen(r->journal, "rb");
    uint8_t *payload = NULL;
    s_row_t *rows = NULL;
    size_t nf = s_row_floats(r), n_records = 0;
    if (!fp)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
    if ((rc = s_journal_check_header(r, fp, err)) != WISP_OK)
        goto done;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
        goto done;
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
        size_t off = 0, m = 0;
        int bad = 0;
        for (uint32_t k = 0; k < n; k++) {
            s_row_t w;
            if (s_deser_row(payload, plen, &off, nf, &w) < 0 || w.index >= r->n_rows) {
                bad = 1;
                break;
            }
            if (r->state[w.index] == 2)
                continue; /* first commit wins */
            rows[m++] = w;
            r->state[w.index] = 2;
        }
        if (bad || off != plen) {
            /* Checksum good but content malformed: a bug, not a torn write. Undo the
             * marks of this record and stop, like for a corrupt record. */
            for (size_t k = 0; k < m; k++)
                r->state[rows[k].index] = 0;
            why = "malformed record";
            break;
        }
        for (size_t k = 0; k < m; k++)
            r->state[rows[k].index] = 0;
        qsort(rows, m, sizeof *rows, s_cmp_row);
        if ((rc = s_h5_write(r, rows, m, err)) != WISP_OK)
            goto done;
        for (size_t k = 0; k < m; k++)
            s_mark_committed(r, &rows[k]);
        if (n == 0)
            r->n_resumes++;
        pos += S_FRAME_BYTES + plen + 8;
        r->jsize = pos;
        r->seq++;
        n_records++;
    }
    if (why) {
        WISP_LOGW("%s: %s at byte %llu (a crash during a commit, or damage); the %llu "
                  "byte(s) from there on are dropped",
                  r->journal, why, (unsigned long long)pos, (unsigned long long)(fsize - pos));
    }
    WISP_LOGI("%s: resumed %zu of %zu rows from %zu commit(s)", r->path, r->n_done, r->n_rows,
              n_records);
done:
    free(payload);
    free(rows);
    if (fp)
        fclose(fp);
    return rc;
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
    if (!o->fingerprint || !o->fingerprint[0])
        return wisp_error_set(err, WISP_ERR_ARG, "%s: a fingerprint is required", p);
    if (o->n_attrs < 0 || (o->n_attrs > 0 && !o->attrs))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: bad attribute list", p);
    static const char *const reserved[] = {
        "fingerprint", "wisp_version",   "created",   "finished",  "n_rows",
        "n_ok",        "n_error",        "n_missing", "n_classes", "embed_dim",
        "n_resumes",   "writer_seconds", "summary",   "accuracy",  "n_evaluated"};
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
    r->max_pend = opts->max_pending_rows ? opts->max_pending_rows : S_DEFAULT_PENDING;
    if (r->max_pend > S_MAX_PENDING)
        r->max_pend = S_MAX_PENDING;
    r->path = strdup(opts->path);
    r->partial = s_strcat2(opts->path, ".partial");
    r->journal = s_strcat2(opts->path, ".commit");
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
    if (!r->path || !r->partial || !r->journal || !r->fingerprint || !r->classes || !r->attr_keys ||
        !r->attr_vals || !r->state || !r->label || !r->status || !r->true_label || !r->pend ||
        !r->pend_vals)
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
    if ((rc = s_check_unlocked(r, err)) != WISP_OK)
        goto fail;
    if (!resuming) {
        if (access(r->journal, F_OK) == 0 || access(r->partial, F_OK) == 0)
            WISP_LOGW("%s: starting over, removing the partial results of an earlier run", r->path);
        if ((rc = s_unlink_quiet(r->journal, err)) != WISP_OK ||
            (rc = s_unlink_quiet(r->partial, err)) != WISP_OK ||
            (rc = s_journal_create(r, err)) != WISP_OK)
            goto fail;
    } else {
        /* Check identity before deleting the .partial of somebody else's run. */
        FILE *fp = fopen(r->journal, "rb");
        if (!fp) {
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", r->journal, strerror(errno));
            goto fail;
        }
        rc = s_journal_check_header(r, fp, err);
        fclose(fp);
        if (rc != WISP_OK)
            goto fail;
        if ((rc = s_unlink_quiet(r->partial, err)) != WISP_OK)
            goto fail;
    }
    if ((rc = s_h5_create(r, err)) != WISP_OK)
        goto fail;
    if (resuming && (rc = s_journal_replay(r, err)) != WISP_OK)
        goto fail;
    if ((rc = s_journal_open_append(r, err)) != WISP_OK)
        goto fail;
    if (resuming) {
        /* An empty record marks the resume (counted into n_resumes on replay). */
        s_buf_t none = {0};
        if ((rc = s_journal_append(r, 0, &none, err)) != WISP_OK)
            goto fail;
        r->n_resumes++;
    }
    r->seconds += wisp_now() - t0;
    return r;
nomem:
    wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", opts->path);
fail:
    wisp_results_destroy(&r);
    return NULL;
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
    if (r->n_pend == r->max_pend) {
        int rc = wisp_results_commit(r, err);
        if (rc != WISP_OK)
            return rc;
    }
    double t0 = wisp_now();
    size_t C = (size_t)r->C, P = (size_t)r->P, nf = s_row_floats(r);
    s_row_t *w = &r->pend[r->n_pend];
    float *v = r->pend_vals + r->n_pend * nf;
    char *path = strdup(row->path ? row->path : "");
    char *msg = strdup(row->status != 0 && row->error ? row->error : "");
    if (!path || !msg) {
        free(path);
        free(msg);
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
    size_t nf = s_row_floats(r);
    /* Sorted rows: the journal replays in the same order the HDF5 file is written. */
    qsort(r->pend, r->n_pend, sizeof *r->pend, s_cmp_row);
    for (size_t k = 0; k < r->n_pend; k++)
        if (s_ser_row(&b, &r->pend[k], nf) < 0) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", r->journal);
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
    }
    if (!r->h5_stale && (rc = s_h5_write(r, r->pend, r->n_pend, err)) != WISP_OK) {
        r->h5_stale = 1;
        WISP_LOGE("%s: rows are safe in %s but the HDF5 file could not be updated; "
                  "reopen with resume to rebuild it",
                  r->partial, r->journal);
    }
    s_pend_clear(r);
done:
    free(b.p);
    r->seconds += wisp_now() - t0;
    return rc;
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
    if (r->jfd >= 0)
        close(r->jfd);
    free(r->path);
    free(r->partial);
    free(r->journal);
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
    free(r);
    *rp = NULL;
}
