#include "formats/manifest.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdint.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sndfile.h>

#include "base/log.h"
#include "base/util.h"
#include "formats/json.h"
#include "formats/labels.h"

#define S_PATH_MAX 4096
#define S_BLOCK    ((size_t)1 << 24) /* path arena block: 16 MiB */
#define S_RELEASE  ((size_t)1 << 26) /* mapped manifest bytes dropped every 64 MiB parsed */

/* Path arena: strings packed in large blocks that never move, so items point into
 * them; one allocation per 16 MiB instead of one per path (malloc's 16 bytes of
 * overhead and rounding per path were a third of the per-item memory at 10^8). */
typedef struct s_block {
    struct s_block *next;
    size_t used, cap;
    char data[];
} s_block_t;

struct wisp_manifest_arena {
    s_block_t *head; /* newest block first */
};

static void s_arena_free(struct wisp_manifest_arena **pa)
{
    if (!*pa)
        return;
    for (s_block_t *b = (*pa)->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(*pa);
    *pa = NULL;
}

/* Copies s (n bytes + NUL) into the arena; NULL when out of memory. */
static char *s_arena_put(struct wisp_manifest_arena *a, const char *s, size_t n)
{
    s_block_t *b = a->head;
    if (!b || b->cap - b->used < n + 1) {
        size_t cap = n + 1 > S_BLOCK ? n + 1 : S_BLOCK;
        if (!(b = malloc(sizeof *b + cap)))
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    char *p = b->data + b->used;
    memcpy(p, s, n);
    p[n] = '\0';
    b->used += n + 1;
    return p;
}

/* Loader state: items grow in m->items; label texts are interned (a manifest has
 * few distinct labels and many items), each item's label holding the index of its
 * text in lab[] until s_resolve maps it to a class id. */
typedef struct {
    wisp_manifest_t *m;
    struct wisp_manifest_arena *arena; /* paths (moved to m at the end) */
    size_t cap;                        /* items allocated */
    char **lab;                        /* (n_lab) distinct label texts, malloc'd */
    long *lab_line;                    /* (n_lab) line of the first item with it */
    size_t n_lab, cap_lab;
    size_t *slot; /* (n_slot, a power of 2) open addressing: lab index + 1, 0 empty */
    size_t n_slot;
} s_load_t;

static void s_load_free(s_load_t *ld)
{
    for (size_t i = 0; i < ld->n_lab; i++)
        free(ld->lab[i]);
    free(ld->lab);
    free(ld->lab_line);
    free(ld->slot);
    s_arena_free(&ld->arena);
    memset(ld, 0, sizeof *ld);
}

static size_t s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (size_t)h;
}

/* Index of label text in lab[] (added when new), or -1 when out of memory. */
static long s_intern(s_load_t *ld, const char *label, long line)
{
    if (2 * (ld->n_lab + 1) > ld->n_slot) { /* keep the table at most half full */
        size_t n = ld->n_slot ? 2 * ld->n_slot : 64;
        size_t *t = calloc(n, sizeof *t);
        if (!t)
            return -1;
        for (size_t i = 0; i < ld->n_lab; i++) {
            size_t k = s_hash(ld->lab[i]) & (n - 1);
            while (t[k])
                k = (k + 1) & (n - 1);
            t[k] = i + 1;
        }
        free(ld->slot);
        ld->slot = t;
        ld->n_slot = n;
    }
    size_t k = s_hash(label) & (ld->n_slot - 1);
    for (; ld->slot[k]; k = (k + 1) & (ld->n_slot - 1))
        if (strcmp(ld->lab[ld->slot[k] - 1], label) == 0)
            return (long)(ld->slot[k] - 1);
    if (ld->n_lab == ld->cap_lab) {
        size_t cap = ld->cap_lab ? 2 * ld->cap_lab : 16;
        char **l = realloc(ld->lab, cap * sizeof *l);
        if (l)
            ld->lab = l;
        long *ln = l ? realloc(ld->lab_line, cap * sizeof *ln) : NULL;
        if (!ln)
            return -1;
        ld->lab_line = ln;
        ld->cap_lab = cap;
    }
    if (!(ld->lab[ld->n_lab] = strdup(label)))
        return -1;
    ld->lab_line[ld->n_lab] = line;
    ld->slot[k] = ++ld->n_lab;
    return (long)(ld->n_lab - 1);
}

/* Appends an item, resolving path against dir (NULL: keep path as given). */
static int s_add(s_load_t *ld, const char *src, const char *dir, const char *path,
                 const char *label, double duration, long line, wisp_error_t *err)
{
    char full[S_PATH_MAX];
    wisp_manifest_t *m = ld->m;
    if (!path[0])
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: empty path", src, line);
    /* "." as the manifest directory adds nothing but a "./" prefix. */
    int rc = !dir || strcmp(dir, ".") == 0 ? wisp_path_join(full, sizeof full, NULL, path)
                                           : wisp_path_join(full, sizeof full, dir, path);
    if (rc != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s:%ld: path too long", src, line);
    if (m->n_items == ld->cap) {
        /* x1.5: large blocks are mremap'd by malloc, so growth does not copy */
        size_t cap = ld->cap ? ld->cap + ld->cap / 2 : 1024;
        wisp_manifest_item_t *v = realloc(m->items, cap * sizeof *v);
        if (!v)
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
        m->items = v;
        ld->cap = cap;
    }
    wisp_manifest_item_t *it = &m->items[m->n_items];
    memset(it, 0, sizeof *it);
    it->path = s_arena_put(ld->arena, full, strlen(full));
    it->label = label && label[0] ? (int)s_intern(ld, label, line) : -1;
    it->duration = duration;
    it->line = line > INT_MAX ? INT_MAX : (int)line;
    if (!it->path || (label && label[0] && it->label < 0))
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
    if (label && label[0] && ld->n_lab > INT_MAX - 1)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: too many distinct labels", src, line);
    m->n_items++;
    return WISP_OK;
}

/* The manifest file, mapped read-only (no size limit, no copy); parsed pages are
 * dropped from the mapping as the parse moves on, so a manifest larger than memory
 * never has to be resident. */
typedef struct {
    const char *text;
    size_t len, released;
    void *map;
} s_text_t;

static int s_text_map(s_text_t *t, const char *path, wisp_error_t *err)
{
    memset(t, 0, sizeof *t);
    t->text = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return wisp_error_set(err, e == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO,
                              "%s: cannot open manifest: %s", path, strerror(e));
    }
    if (st.st_size > 0 && (uintmax_t)st.st_size <= SIZE_MAX) {
        t->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (t->map == MAP_FAILED) {
            int e = errno;
            close(fd);
            t->map = NULL;
            return wisp_error_set(err, WISP_ERR_IO, "%s: cannot map manifest: %s", path,
                                  strerror(e));
        }
        madvise(t->map, (size_t)st.st_size, MADV_SEQUENTIAL);
        t->text = t->map;
        t->len = (size_t)st.st_size;
    }
    close(fd);
    return WISP_OK;
}

/* Drops the mapped pages before pos once S_RELEASE bytes were parsed. */
static void s_text_release(s_text_t *t, size_t pos)
{
    if (!t || !t->map || pos - t->released < S_RELEASE)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), end = pos / page * page;
    madvise((char *)t->map + t->released, end - t->released, MADV_DONTNEED);
    t->released = end;
}

static void s_text_unmap(s_text_t *t)
{
    if (t->map)
        munmap(t->map, t->len);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- CSV */

/* Fields of one CSV record: text concatenated in buf, NUL-separated. */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t *off; /* start of each field in buf */
    int *quoted; /* field was quoted (kept verbatim, not trimmed) */
    int n, ncap;
} s_record_t;

static int s_rec_putc(s_record_t *r, char c)
{
    if (r->len == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        char *b = realloc(r->buf, cap);
        if (!b)
            return -1;
        r->buf = b;
        r->cap = cap;
    }
    r->buf[r->len++] = c;
    return 0;
}

static int s_rec_new_field(s_record_t *r)
{
    if (r->n == r->ncap) {
        int cap = r->ncap ? 2 * r->ncap : 16;
        size_t *o = realloc(r->off, (size_t)cap * sizeof *o);
        if (!o)
            return -1;
        r->off = o;
        int *q = realloc(r->quoted, (size_t)cap * sizeof *q);
        if (!q)
            return -1;
        r->quoted = q;
        r->ncap = cap;
    }
    r->off[r->n] = r->len;
    r->quoted[r->n] = 0;
    r->n++;
    return 0;
}

/* Unquoted fields are trimmed of spaces and tabs ("path, label" headers are common);
 * quoted fields are taken verbatim. */
static char *s_rec_field(s_record_t *r, int i)
{
    char *s = r->buf + r->off[i];
    if (r->quoted[i])
        return s;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* The field being read holds only blanks so far (its bytes are not yet
 * NUL-terminated). */
static int s_rec_field_blank(const s_record_t *r)
{
    for (size_t k = r->off[r->n - 1]; k < r->len; k++)
        if (r->buf[k] != ' ' && r->buf[k] != '\t')
            return 0;
    return 1;
}

/* Reads the record starting at *pos (RFC 4180). *line is the current 1-based line,
 * advanced past the record. Returns 1 for a record, 0 at the end of input, negative
 * on error (unterminated quote, reported with the line of the opening quote). */
static int s_csv_next(const char *s, size_t len, size_t *pos, long *line, s_record_t *r,
                      const char *src, wisp_error_t *err)
{
    size_t i = *pos;
    r->len = 0;
    r->n = 0;
    if (i >= len)
        return 0;
    if (s_rec_new_field(r) < 0)
        goto nomem;
    for (;;) {
        if (i >= len || s[i] == '\n' || (s[i] == '\r' && (i + 1 >= len || s[i + 1] == '\n'))) {
            if (s_rec_putc(r, '\0') < 0)
                goto nomem;
            if (i < len)
                i += s[i] == '\r' ? 2 : 1;
            (*line)++;
            break;
        }
        char c = s[i];
        if (c == '\0') /* it would end the field's C string early, silently cutting a path */
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: NUL byte in the text", src, *line);
        if (c == ',') {
            if (s_rec_putc(r, '\0') < 0 || s_rec_new_field(r) < 0)
                goto nomem;
            i++;
        } else if (c == '"' && !r->quoted[r->n - 1] && s_rec_field_blank(r)) {
            /* Opening quote (only blanks before it in this field): drop the blanks. */
            long qline = *line;
            r->len = r->off[r->n - 1];
            r->quoted[r->n - 1] = 1;
            i++;
            for (;;) {
                if (i >= len)
                    return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: unterminated quote", src,
                                          qline);
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        if (s_rec_putc(r, '"') < 0)
                            goto nomem;
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                if (s[i] == '\n')
                    (*line)++;
                if (s[i] == '\0')
                    return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: NUL byte in the text", src,
                                          *line);
                if (s_rec_putc(r, s[i]) < 0)
                    goto nomem;
                i++;
            }
            /* Blanks between the closing quote and the separator are tolerated. */
            while (i < len && (s[i] == ' ' || s[i] == '\t'))
                i++;
            if (i < len && s[i] != ',' && s[i] != '\n' && s[i] != '\r')
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "%s:%ld: unexpected character after closing quote", src,
                                      *line);
        } else {
            if (s_rec_putc(r, c) < 0)
                goto nomem;
            i++;
        }
    }
    *pos = i;
    return 1;
nomem:
    return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
}

static int s_rec_blank(s_record_t *r)
{
    return r->n == 1 && !r->quoted[0] && s_rec_field(r, 0)[0] == '\0';
}

/* Parses a duration field: empty means unknown (-1). */
static int s_parse_duration(const char *v, double *out)
{
    if (!v[0]) {
        *out = -1;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    /* inf, nan and overflow (1e999) are not durations */
    if (end == v || *end || errno || !isfinite(d))
        return -1;
    *out = d < 0 ? -1 : d;
    return 0;
}

static int s_load_csv(s_load_t *ld, const char *src, const char *dir, s_text_t *t,
                      wisp_error_t *err)
{
    int rc = WISP_OK;
    s_record_t r = {0};
    const char *text = t->text;
    size_t pos = 0, len = t->len;
    long line = 1, header_line = 0;
    int c_path = -1, c_label = -1, c_dur = -1, n_cols = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    for (;;) {
        long start = line;
        s_text_release(t, pos);
        int got = s_csv_next(text, len, &pos, &line, &r, src, err);
        if (got < 0) {
            rc = got;
            goto done;
        }
        if (got == 0)
            break;
        if (s_rec_blank(&r))
            continue;
        if (c_path < 0) {
            header_line = start;
            n_cols = r.n;
            int c_file_name = -1;
            for (int k = 0; k < r.n; k++) {
                const char *h = s_rec_field(&r, k);
                if (strcasecmp(h, "path") == 0 && c_path < 0)
                    c_path = k;
                else if (strcasecmp(h, "file_name") == 0 && c_file_name < 0)
                    c_file_name = k;
                else if (strcasecmp(h, "label") == 0 && c_label < 0)
                    c_label = k;
                else if (strcasecmp(h, "duration") == 0 && c_dur < 0)
                    c_dur = k;
            }
            if (c_path < 0) /* Hugging Face audiofolder metadata.csv naming */
                c_path = c_file_name;
            if (c_path < 0) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s:%ld: header has no 'path' column (expected e.g. "
                                    "'path,label')",
                                    src, start);
                goto done;
            }
            continue;
        }
        (void)n_cols;
        if (c_path >= r.n) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: %d field(s), no path column", src,
                                start, r.n);
            goto done;
        }
        const char *p = s_rec_field(&r, c_path);
        const char *l = c_label >= 0 && c_label < r.n ? s_rec_field(&r, c_label) : NULL;
        double d = -1;
        if (c_dur >= 0 && c_dur < r.n && s_parse_duration(s_rec_field(&r, c_dur), &d) < 0) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: bad duration '%s'", src, start,
                                s_rec_field(&r, c_dur));
            goto done;
        }
        if ((rc = s_add(ld, src, dir, p, l, d, start, err)) != WISP_OK)
            goto done;
    }
    if (c_path < 0 && header_line == 0)
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: empty manifest (no header)", src);
done:
    free(r.buf);
    free(r.off);
    free(r.quoted);
    return rc;
}

/* ---------------------------------------------------------------- JSONL */

static int s_load_jsonl(s_load_t *ld, const char *src, const char *dir, s_text_t *t,
                        wisp_error_t *err)
{
    const char *text = t->text;
    size_t pos = 0, len = t->len;
    long line = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    while (pos < len) {
        line++;
        s_text_release(t, pos);
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *s = text + pos;
        size_t n = end - pos;
        pos = end + 1;
        /* blank: whitespace, or NUL bytes only (a zero-filled preallocated tail) */
        size_t k = 0;
        while (k < n && (isspace((unsigned char)s[k]) || s[k] == '\0'))
            k++;
        if (k == n)
            continue;
        if (memchr(s, '\0', n))
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: NUL byte in the line", src, line);
        /* Python's json semantics: the last of duplicate keys, nothing after the object */
        cJSON *o = NULL;
        wisp_error_t je = {0};
        int rc = wisp_json_parse(s, n, "", &o, &je);
        if (rc != WISP_OK) /* je is ":1:COL: what" within the line */
            return wisp_error_set(err, rc, "%s:%ld: not a JSON object: column %s", src, line,
                                  strncmp(je.msg, ":1:", 3) == 0 ? je.msg + 3 : je.msg);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: not a JSON object", src, line);
        }
        char num[32];
        const char *label = NULL;
        double d = -1;
        const cJSON *jp = cJSON_GetObjectItemCaseSensitive(o, "path");
        const cJSON *jl = cJSON_GetObjectItemCaseSensitive(o, "label");
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(o, "duration");
        int64_t id = 0;
        if (!cJSON_IsString(jp)) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%ld: no string \"path\" key", src, line);
        } else if (jl && cJSON_IsString(jl)) {
            label = jl->valuestring;
        } else if (jl && cJSON_IsNumber(jl)) {
            /* the range is checked on the double, before any cast */
            if (wisp_json_int(jl, 0, INT_MAX, &id) != 0)
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s:%ld: label %g is not a class id (integer in [0, %d])", src,
                                    line, jl->valuedouble, INT_MAX);
            snprintf(num, sizeof num, "%lld", (long long)id);
            label = num;
        } else if (jl && !cJSON_IsNull(jl)) {
            rc =
                wisp_error_set(err, WISP_ERR_FORMAT,
                               "%s:%ld: \"label\" must be a string, an integer or null", src, line);
        }
        if (rc == WISP_OK && jd && !cJSON_IsNull(jd)) {
            if (!cJSON_IsNumber(jd) || !isfinite(jd->valuedouble))
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s:%ld: bad duration (not a finite number)", src, line);
            else
                d = jd->valuedouble < 0 ? -1 : jd->valuedouble;
        }
        if (rc == WISP_OK)
            rc = s_add(ld, src, dir, jp->valuestring, label, d, line, err);
        cJSON_Delete(o);
        if (rc != WISP_OK)
            return rc;
    }
    return WISP_OK;
}

/* ---------------------------------------------------------------- audiofolder */

/* Extensions libsndfile reads, asked from the library (so a newer libsndfile adds its
 * formats), plus aliases its format table does not list. */
typedef struct {
    char ext[64][16];
    int n;
} s_exts_t;

static void s_exts_add(s_exts_t *e, const char *x)
{
    if (!x || !x[0] || e->n >= 64 || strlen(x) >= sizeof e->ext[0])
        return;
    for (int i = 0; i < e->n; i++)
        if (strcasecmp(e->ext[i], x) == 0)
            return;
    snprintf(e->ext[e->n++], sizeof e->ext[0], "%s", x);
}

static void s_exts_init(s_exts_t *e)
{
    e->n = 0;
    int count = 0;
    sf_command(NULL, SFC_GET_FORMAT_MAJOR_COUNT, &count, sizeof count);
    for (int i = 0; i < count; i++) {
        SF_FORMAT_INFO info = {.format = i};
        if (sf_command(NULL, SFC_GET_FORMAT_MAJOR, &info, sizeof info) == 0)
            s_exts_add(e, info.extension);
    }
    static const char *const aliases[] = {"wav", "flac", "ogg",  "oga",  "opus",
                                          "mp3", "aif",  "aiff", "aifc", "au",
                                          "snd", "caf",  "w64",  "rf64", "wave"};
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        s_exts_add(e, aliases[i]);
}

static int s_is_audio(const s_exts_t *e, const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return 0;
    for (int i = 0; i < e->n; i++)
        if (strcasecmp(dot + 1, e->ext[i]) == 0)
            return 1;
    return 0;
}

static int s_cmp_item_path(const void *a, const void *b)
{
    return strcmp(((const wisp_manifest_item_t *)a)->path, ((const wisp_manifest_item_t *)b)->path);
}

/* Files of one directory level; sub is NULL for root, else the label directory. */
static int s_scan_dir(s_load_t *ld, const char *root, const char *sub, const s_exts_t *ex,
                      wisp_error_t *err)
{
    char dpath[S_PATH_MAX];
    if (wisp_path_join(dpath, sizeof dpath, root, sub ? sub : "") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root);
    DIR *d = opendir(dpath);
    if (!d)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot list directory: %s", dpath,
                              strerror(errno));
    int rc = WISP_OK;
    struct dirent *de;
    while (rc == WISP_OK && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char full[S_PATH_MAX], rel[S_PATH_MAX];
        if (wisp_path_join(full, sizeof full, dpath, de->d_name) != WISP_OK ||
            wisp_path_join(rel, sizeof rel, sub, de->d_name) != WISP_OK) {
            rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dpath);
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0)
            continue; /* dangling link: not an input */
        if (S_ISDIR(st.st_mode)) {
            if (!sub)
                rc = s_scan_dir(ld, root, de->d_name, ex, err);
        } else if (S_ISREG(st.st_mode) && s_is_audio(ex, de->d_name)) {
            /* Path relative to root for sorting; resolved after the sort. */
            rc = s_add(ld, root, ".", rel, sub, -1, 0, err);
        }
    }
    closedir(d);
    return rc;
}

/* Hugging Face's split folder names (datasets' audiofolder). */
static int s_is_split_name(const char *name)
{
    static const char *const splits[] = {"train", "test", "validation", "valid",
                                         "val",   "dev",  "eval"};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++)
        if (strcmp(name, splits[i]) == 0)
            return 1;
    return 0;
}

/* When root holds only Hugging Face split folders (root/train/<label>/...,
 * root/test/...), its label folders would be the split names: refuse, saying which
 * folder to give instead. WISP_OK for any other layout. */
static int s_check_splits(const char *root, wisp_error_t *err)
{
    char names[256] = "";
    size_t len = 0;
    int n = 0, others = 0;
    DIR *d = opendir(root);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char full[S_PATH_MAX];
        struct stat st;
        int is_dir = wisp_path_join(full, sizeof full, root, de->d_name) == WISP_OK &&
                     stat(full, &st) == 0 && S_ISDIR(st.st_mode);
        if (!is_dir || !s_is_split_name(de->d_name)) {
            others++;
            continue;
        }
        if (len + strlen(de->d_name) + 3 < sizeof names)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", n ? ", " : "",
                                    de->d_name);
        n++;
    }
    if (d)
        closedir(d);
    if (n > 0 && others == 0)
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: a Hugging Face split layout (%s): give one split's folder, "
                              "e.g. %s/%s",
                              root, names, root, strstr(names, "train") ? "train" : names);
    return WISP_OK;
}

static int s_load_folder(s_load_t *ld, const char *root_arg, wisp_error_t *err)
{
    /* "root/" and "root" give the same item paths. */
    char root[S_PATH_MAX];
    if (snprintf(root, sizeof root, "%s", root_arg) >= (int)sizeof root)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root_arg);
    for (size_t n = strlen(root); n > 1 && root[n - 1] == '/'; n--)
        root[n - 1] = '\0';
    s_exts_t ex;
    s_exts_init(&ex);
    int rc = s_check_splits(root, err);
    if (rc == WISP_OK)
        rc = s_scan_dir(ld, root, NULL, &ex, err);
    if (rc != WISP_OK)
        return rc;
    wisp_manifest_t *m = ld->m;
    if (m->n_items > 1) /* items is NULL when nothing was found: qsort(NULL, 0) is undefined */
        qsort(m->items, m->n_items, sizeof *m->items, s_cmp_item_path);
    /* Relative paths sorted; the items get root/rel in a fresh arena. */
    struct wisp_manifest_arena *rel = ld->arena;
    if (!(ld->arena = calloc(1, sizeof *ld->arena))) {
        ld->arena = rel;
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", root);
    }
    for (size_t i = 0; i < m->n_items && rc == WISP_OK; i++) {
        char full[S_PATH_MAX];
        if (wisp_path_join(full, sizeof full, root, m->items[i].path) != WISP_OK)
            rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root);
        else if (!(m->items[i].path = s_arena_put(ld->arena, full, strlen(full))))
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", root);
    }
    s_arena_free(&rel);
    return rc;
}

/* ---------------------------------------------------------------- labels */

/* Builds m->classes from the distinct label texts (rules in labels.h) and maps every
 * item's label text index to its class id. */
static int s_resolve(wisp_manifest_t *m, s_load_t *ld, const char *const *classes, int n_classes,
                     wisp_error_t *err)
{
    int rc = WISP_OK;
    wisp_labels_t *lab = NULL;
    int *cls = malloc((ld->n_lab ? ld->n_lab : 1) * sizeof *cls);
    if (!cls)
        goto nomem;
    if (!(lab = wisp_labels_new((const char *const *)ld->lab, ld->n_lab, classes, n_classes,
                                m->source, err))) {
        rc = err && err->code ? err->code : WISP_ERR_NOMEM;
        goto done;
    }
    int n_cls = wisp_labels_n_classes(lab);
    if (n_cls > 0) {
        if (!(m->classes = calloc((size_t)n_cls, sizeof *m->classes)))
            goto nomem;
        m->n_classes = n_cls;
        for (int c = 0; c < n_cls; c++)
            if (!(m->classes[c] = strdup(wisp_labels_name(lab, c))))
                goto nomem;
    }
    /* lab[] is in order of first use, so the first unknown label found here is the
     * one of the earliest item. */
    for (size_t k = 0; k < ld->n_lab; k++) {
        if ((cls[k] = wisp_labels_find(lab, ld->lab[k])) >= 0)
            continue;
        if (ld->lab_line[k] > 0)
            rc = wisp_error_set(err, WISP_ERR_NOTFOUND,
                                "%s:%ld: label '%s' is not one of the %d classes", m->source,
                                ld->lab_line[k], ld->lab[k], m->n_classes);
        else
            rc = wisp_error_set(err, WISP_ERR_NOTFOUND,
                                "%s: label directory '%s' is not one of the %d classes", m->source,
                                ld->lab[k], m->n_classes);
        goto done;
    }
    for (size_t i = 0; i < m->n_items; i++) {
        wisp_manifest_item_t *it = &m->items[i];
        if (it->label < 0)
            continue;
        it->label = cls[it->label];
        m->n_labeled++;
    }
    goto done;
nomem:
    rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", m->source);
done:
    wisp_labels_destroy(&lab);
    free(cls);
    return rc;
}

/* Applies the unlabeled-item policy (manifest.h): keep, refuse naming the first
 * one, or drop them counting n_skipped_unlabeled (items keep their order). */
static int s_unlabeled(wisp_manifest_t *m, int policy, wisp_error_t *err)
{
    if (policy == WISP_MANIFEST_UNLABELED_KEEP || m->n_labeled == m->n_items)
        return WISP_OK;
    if (policy == WISP_MANIFEST_UNLABELED_ERROR) {
        for (size_t i = 0; i < m->n_items; i++) {
            const wisp_manifest_item_t *it = &m->items[i];
            if (it->label >= 0)
                continue;
            if (it->line > 0)
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "%s:%d: %s has no label (%zu of %zu items are unlabeled; "
                                      "to drop them, set the unlabeled option to skip)",
                                      m->source, it->line, it->path, m->n_items - m->n_labeled,
                                      m->n_items);
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: %s is not in a label folder (%zu of %zu items are "
                                  "unlabeled; to drop them, set the unlabeled option to skip)",
                                  m->source, it->path, m->n_items - m->n_labeled, m->n_items);
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < m->n_items; i++)
        if (m->items[i].label >= 0)
            m->items[k++] = m->items[i];
    m->n_skipped_unlabeled = m->n_items - k;
    m->n_items = k;
    if (k == 0)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: no labeled item", m->source);
    return WISP_OK;
}

/* ---------------------------------------------------------------- public */

wisp_manifest_opts_t wisp_manifest_default_opts(void)
{
    wisp_manifest_opts_t o = {0};
    return o;
}

static int s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static void s_update_totals(wisp_manifest_t *m)
{
    m->n_duration_known = 0;
    m->total_duration = 0;
    for (size_t i = 0; i < m->n_items; i++)
        if (m->items[i].duration >= 0) {
            m->n_duration_known++;
            m->total_duration += m->items[i].duration;
        }
}

int wisp_manifest_load_opts(wisp_manifest_t *m, const char *path, const wisp_manifest_opts_t *opts,
                            wisp_error_t *err)
{
    int rc = WISP_OK;
    s_load_t ld = {.m = m};
    s_text_t text = {0};
    wisp_manifest_opts_t o = opts ? *opts : wisp_manifest_default_opts();
    memset(m, 0, sizeof *m);
    if (!path || !path[0])
        return wisp_error_set(err, WISP_ERR_ARG, "manifest: no path given");
    if (o.n_classes < 0 || (o.n_classes > 0 && !o.classes))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: bad class list", path);
    if (!(m->source = strdup(path)) || !(ld.arena = calloc(1, sizeof *ld.arena))) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        rc = wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO,
                            "%s: cannot open manifest: %s", path, strerror(errno));
        goto done;
    }
    /* A Hugging Face audiofolder's metadata.csv / metadata.jsonl (file_name relative to
     * the folder) lists the files and their labels instead of the label folders. */
    char meta[S_PATH_MAX] = "";
    if (S_ISDIR(st.st_mode)) {
        const char *names[] = {"metadata.csv", "metadata.jsonl"};
        for (int k = 0; k < 2 && !meta[0]; k++) {
            struct stat ms;
            if (wisp_path_join(meta, sizeof meta, path, names[k]) != WISP_OK ||
                stat(meta, &ms) != 0 || !S_ISREG(ms.st_mode))
                meta[0] = '\0';
        }
    }
    if (S_ISDIR(st.st_mode) && !meta[0]) {
        m->kind = WISP_MANIFEST_AUDIOFOLDER;
        rc = s_load_folder(&ld, path, err);
    } else if (meta[0]) {
        m->kind = WISP_MANIFEST_AUDIOFOLDER;
        if ((rc = s_text_map(&text, meta, err)) != WISP_OK)
            goto done;
        rc = s_ends_with(meta, ".jsonl") ? s_load_jsonl(&ld, meta, path, &text, err)
                                         : s_load_csv(&ld, meta, path, &text, err);
    } else {
        char dir[S_PATH_MAX];
        if (wisp_path_dirname(dir, sizeof dir, path) != WISP_OK) {
            rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", path);
            goto done;
        }
        if ((rc = s_text_map(&text, path, err)) != WISP_OK)
            goto done;
        if (s_ends_with(path, ".jsonl") || s_ends_with(path, ".ndjson")) {
            m->kind = WISP_MANIFEST_JSONL;
            rc = s_load_jsonl(&ld, path, dir, &text, err);
        } else {
            m->kind = WISP_MANIFEST_CSV;
            rc = s_load_csv(&ld, path, dir, &text, err);
        }
    }
    if (rc != WISP_OK)
        goto done;
    if (m->n_items == 0) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: empty manifest (no audio items)", path);
        goto done;
    }
    if ((rc = s_resolve(m, &ld, o.classes, o.n_classes, err)) != WISP_OK)
        goto done;
    if ((rc = s_unlabeled(m, o.unlabeled, err)) != WISP_OK)
        goto done;
    if (m->n_items < ld.cap) { /* give back the growth slack */
        wisp_manifest_item_t *v = realloc(m->items, m->n_items * sizeof *v);
        if (v)
            m->items = v;
    }
    m->arena = ld.arena;
    ld.arena = NULL;
    if (o.probe_durations)
        wisp_manifest_probe_durations(m);
    s_update_totals(m);
done:
    s_text_unmap(&text);
    s_load_free(&ld);
    if (rc != WISP_OK)
        wisp_manifest_free(m);
    return rc;
}

int wisp_manifest_load(wisp_manifest_t *m, const char *path, const char *const *classes,
                       int n_classes, wisp_error_t *err)
{
    wisp_manifest_opts_t o = wisp_manifest_default_opts();
    o.classes = classes;
    o.n_classes = classes ? n_classes : 0;
    return wisp_manifest_load_opts(m, path, &o, err);
}

int wisp_manifest_probe_durations(wisp_manifest_t *m)
{
    for (size_t i = 0; i < m->n_items; i++) {
        wisp_manifest_item_t *it = &m->items[i];
        if (it->duration >= 0)
            continue;
        SF_INFO info = {0};
        SNDFILE *sf = sf_open(it->path, SFM_READ, &info);
        if (!sf)
            continue;
        if (info.samplerate > 0 && info.frames >= 0)
            it->duration = (double)info.frames / info.samplerate;
        sf_close(sf);
    }
    s_update_totals(m);
    return WISP_OK;
}

void wisp_manifest_free(wisp_manifest_t *m)
{
    if (!m)
        return;
    s_arena_free(&m->arena);
    free(m->items);
    for (int c = 0; c < m->n_classes; c++)
        free(m->classes[c]);
    free(m->classes);
    free(m->source);
    memset(m, 0, sizeof *m);
}

const char *wisp_manifest_label_name(const wisp_manifest_t *m, size_t i)
{
    if (!m || i >= m->n_items || m->items[i].label < 0 || m->items[i].label >= m->n_classes)
        return NULL;
    return m->classes[m->items[i].label];
}

int wisp_manifest_class_index(const wisp_manifest_t *m, const char *name)
{
    for (int c = 0; c < m->n_classes; c++)
        if (strcmp(m->classes[c], name) == 0)
            return c;
    return -1;
}

/* seconds[i] read through a byte stride (the manifest's items or a plain array). */
static double s_sec(const double *seconds, size_t stride, size_t i)
{
    return *(const double *)((const char *)seconds + i * stride);
}

/* Appends a shard, growing *v (x2) as needed. */
static int s_push_shard(wisp_shard_t **v, size_t *n, size_t *cap, wisp_shard_t sh)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        wisp_shard_t *g = realloc(*v, c * sizeof *g);
        if (!g)
            return -1;
        *v = g;
        *cap = c;
    }
    (*v)[(*n)++] = sh;
    return 0;
}

int wisp_manifest_cut(const double *seconds, size_t stride, const uint8_t *skip, size_t n_items,
                      double target_seconds, size_t max_items, wisp_shard_t **out, size_t *n_out,
                      wisp_error_t *err)
{
    *out = NULL;
    *n_out = 0;
    if (max_items < 1)
        return wisp_error_set(err, WISP_ERR_ARG, "shards: max_items must be >= 1");
    if (!stride)
        stride = sizeof *seconds;
    double known = 0;
    size_t n_known = 0;
    for (size_t i = 0; seconds && i < n_items; i++)
        if (s_sec(seconds, stride, i) >= 0) {
            known += s_sec(seconds, stride, i);
            n_known++;
        }
    double mean = n_known ? known / (double)n_known : 0;
    int by_time = n_known > 0 && target_seconds > 0;
    wisp_shard_t *v = NULL;
    size_t n = 0, cap = 0, begin = 0;
    double sec = 0;
    for (size_t i = 0; i <= n_items; i++) {
        if (i == n_items || (skip && skip[i])) { /* the end, or an item left out */
            if (i > begin && s_push_shard(&v, &n, &cap, (wisp_shard_t){begin, i, sec}) < 0)
                goto nomem;
            begin = i + 1;
            sec = 0;
            continue;
        }
        double d = seconds && s_sec(seconds, stride, i) >= 0 ? s_sec(seconds, stride, i) : mean;
        /* Close the open shard first when this item would overshoot the target by
         * more than the shard now falls short of it (keeps shards near the target;
         * a very long item ends up alone). */
        if (by_time && i > begin && sec + d > target_seconds &&
            sec + d - target_seconds > target_seconds - sec) {
            if (s_push_shard(&v, &n, &cap, (wisp_shard_t){begin, i, sec}) < 0)
                goto nomem;
            begin = i;
            sec = 0;
        }
        sec += d;
        if (i + 1 - begin >= max_items || (by_time && sec >= target_seconds)) {
            if (s_push_shard(&v, &n, &cap, (wisp_shard_t){begin, i + 1, sec}) < 0)
                goto nomem;
            begin = i + 1;
            sec = 0;
        }
    }
    wisp_shard_t *sh = n ? realloc(v, n * sizeof *v) : v;
    *out = sh ? sh : v;
    *n_out = n;
    return WISP_OK;
nomem:
    free(v);
    return wisp_error_set(err, WISP_ERR_NOMEM, "shards: out of memory");
}

int wisp_manifest_shards(const wisp_manifest_t *m, double target_seconds, size_t max_items,
                         wisp_shard_t **out, size_t *n_out, wisp_error_t *err)
{
    return wisp_manifest_cut(m->n_items ? &m->items[0].duration : NULL, sizeof *m->items, NULL,
                             m->n_items, target_seconds, max_items, out, n_out, err);
}

int wisp_manifest_unlabeled_policy(const char *name)
{
    if (!name || !strcmp(name, "keep"))
        return WISP_MANIFEST_UNLABELED_KEEP;
    if (!strcmp(name, "error"))
        return WISP_MANIFEST_UNLABELED_ERROR;
    if (!strcmp(name, "skip"))
        return WISP_MANIFEST_UNLABELED_SKIP;
    return -1;
}

int wisp_manifest_load_training(wisp_manifest_t *m, const char *path, const char *const *classes,
                                int n_classes, const char *classes_file, const char *unlabeled,
                                wisp_error_t *err)
{
    memset(m, 0, sizeof *m);
    wisp_manifest_opts_t o = wisp_manifest_default_opts();
    o.unlabeled = unlabeled && unlabeled[0] ? wisp_manifest_unlabeled_policy(unlabeled)
                                            : WISP_MANIFEST_UNLABELED_ERROR;
    if (o.unlabeled < 0)
        return wisp_error_set(err, WISP_ERR_ARG, "unlabeled: '%s' is not error, skip or keep",
                              unlabeled);
    char **list = NULL;
    int n_list = 0, rc;
    if (classes_file && classes_file[0] &&
        (rc = wisp_labels_read_list(classes_file, &list, &n_list, err)) != WISP_OK)
        return rc;
    if (list && classes && n_classes > 0) { /* a head's classes and a list: must agree */
        int same = n_list == n_classes;
        for (int c = 0; same && c < n_classes; c++)
            same = classes[c] && strcmp(classes[c], list[c]) == 0;
        if (!same) {
            wisp_labels_free_list(&list, n_list);
            return wisp_error_set(err, WISP_ERR_ARG,
                                  "%s: the class list differs from the head's %d classes (same "
                                  "names in the same order, or leave one out)",
                                  classes_file, n_classes);
        }
    }
    o.classes = list ? (const char *const *)list : classes;
    o.n_classes = list ? n_list : (classes ? n_classes : 0);
    rc = wisp_manifest_load_opts(m, path, &o, err);
    wisp_labels_free_list(&list, n_list);
    if (rc == WISP_OK && m->n_skipped_unlabeled)
        WISP_LOGW("%s: %zu unlabeled items skipped", path, m->n_skipped_unlabeled);
    return rc;
}
