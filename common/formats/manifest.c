#include "formats/manifest.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <sndfile.h>

#include "base/util.h"
#include "formats/json.h"
#include "formats/labels.h"

#define S_PATH_MAX 4096
/* A manifest is text; this bounds a corrupt or mistaken multi-GB input. */
#define S_MANIFEST_MAX_BYTES ((size_t)4 << 30)

/* One entry as read, before labels are resolved. */
typedef struct {
    char *path;  /* resolved path */
    char *label; /* label text as written, NULL when unlabeled */
    double duration;
    int line;
} s_raw_t;

typedef struct {
    s_raw_t *v;
    size_t n, cap;
} s_raws_t;

static void s_raws_free(s_raws_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].path);
        free(r->v[i].label);
    }
    free(r->v);
    memset(r, 0, sizeof *r);
}

/* Appends an entry, resolving path against dir. Takes nothing over on failure. */
static int s_raws_add(s_raws_t *r, const char *src, const char *dir, const char *path,
                      const char *label, double duration, int line, wisp_error_t *err)
{
    char full[S_PATH_MAX];
    if (!path[0])
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: empty path", src, line);
    /* "." as the manifest directory adds nothing but a "./" prefix. */
    int rc = strcmp(dir, ".") == 0 ? wisp_path_join(full, sizeof full, NULL, path)
                                   : wisp_path_join(full, sizeof full, dir, path);
    if (rc != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s:%d: path too long", src, line);
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        s_raw_t *v = realloc(r->v, cap * sizeof *v);
        if (!v)
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
        r->v = v;
        r->cap = cap;
    }
    s_raw_t *e = &r->v[r->n];
    e->path = strdup(full);
    e->label = (label && label[0]) ? strdup(label) : NULL;
    e->duration = duration;
    e->line = line;
    if (!e->path || (label && label[0] && !e->label)) {
        free(e->path);
        free(e->label);
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", src);
    }
    r->n++;
    return WISP_OK;
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
static int s_csv_next(const char *s, size_t len, size_t *pos, int *line, s_record_t *r,
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
        if (c == ',') {
            if (s_rec_putc(r, '\0') < 0 || s_rec_new_field(r) < 0)
                goto nomem;
            i++;
        } else if (c == '"' && !r->quoted[r->n - 1] && s_rec_field_blank(r)) {
            /* Opening quote (only blanks before it in this field): drop the blanks. */
            int qline = *line;
            r->len = r->off[r->n - 1];
            r->quoted[r->n - 1] = 1;
            i++;
            for (;;) {
                if (i >= len)
                    return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: unterminated quote", src,
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
                if (s_rec_putc(r, s[i]) < 0)
                    goto nomem;
                i++;
            }
            /* Blanks between the closing quote and the separator are tolerated. */
            while (i < len && (s[i] == ' ' || s[i] == '\t'))
                i++;
            if (i < len && s[i] != ',' && s[i] != '\n' && s[i] != '\r')
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "%s:%d: unexpected character after closing quote", src,
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

static int s_load_csv(s_raws_t *raws, const char *src, const char *dir, const char *text,
                      size_t len, wisp_error_t *err)
{
    int rc = WISP_OK;
    s_record_t r = {0};
    size_t pos = 0;
    int line = 1;
    int c_path = -1, c_label = -1, c_dur = -1, n_cols = 0, header_line = 0;
    /* A NUL byte would end a field's C string early, silently cutting a path. */
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        int nl = 1;
        for (const char *q = text; q < nul; q++)
            nl += *q == '\n';
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: NUL byte in the text", src, nl);
    }
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    for (;;) {
        int start = line;
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
                                    "%s:%d: header has no 'path' column (expected e.g. "
                                    "'path,label')",
                                    src, start);
                goto done;
            }
            continue;
        }
        (void)n_cols;
        if (c_path >= r.n) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: %d field(s), no path column", src,
                                start, r.n);
            goto done;
        }
        const char *p = s_rec_field(&r, c_path);
        const char *l = c_label >= 0 && c_label < r.n ? s_rec_field(&r, c_label) : NULL;
        double d = -1;
        if (c_dur >= 0 && c_dur < r.n && s_parse_duration(s_rec_field(&r, c_dur), &d) < 0) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: bad duration '%s'", src, start,
                                s_rec_field(&r, c_dur));
            goto done;
        }
        if ((rc = s_raws_add(raws, src, dir, p, l, d, start, err)) != WISP_OK)
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

static int s_load_jsonl(s_raws_t *raws, const char *src, const char *dir, const char *text,
                        size_t len, wisp_error_t *err)
{
    size_t pos = 0;
    int line = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    while (pos < len) {
        line++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *s = text + pos;
        size_t n = end - pos;
        pos = end + 1;
        size_t k = 0;
        while (k < n && isspace((unsigned char)s[k]))
            k++;
        if (k == n)
            continue;
        if (memchr(s, '\0', n))
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: NUL byte in the line", src, line);
        /* Python's json semantics: the last of duplicate keys, nothing after the object */
        cJSON *o = NULL;
        wisp_error_t je = {0};
        int rc = wisp_json_parse(s, n, "", &o, &je);
        if (rc != WISP_OK) /* je is ":1:COL: what" within the line */
            return wisp_error_set(err, rc, "%s:%d: not a JSON object: column %s", src, line,
                                  strncmp(je.msg, ":1:", 3) == 0 ? je.msg + 3 : je.msg);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: not a JSON object", src, line);
        }
        char num[32];
        const char *label = NULL;
        double d = -1;
        const cJSON *jp = cJSON_GetObjectItemCaseSensitive(o, "path");
        const cJSON *jl = cJSON_GetObjectItemCaseSensitive(o, "label");
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(o, "duration");
        int64_t id = 0;
        if (!cJSON_IsString(jp)) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d: no string \"path\" key", src, line);
        } else if (jl && cJSON_IsString(jl)) {
            label = jl->valuestring;
        } else if (jl && cJSON_IsNumber(jl)) {
            /* the range is checked on the double, before any cast */
            if (wisp_json_int(jl, 0, INT_MAX, &id) != 0)
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s:%d: label %g is not a class id (integer in [0, %d])", src,
                                    line, jl->valuedouble, INT_MAX);
            snprintf(num, sizeof num, "%lld", (long long)id);
            label = num;
        } else if (jl && !cJSON_IsNull(jl)) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                "%s:%d: \"label\" must be a string, an integer or null", src, line);
        }
        if (rc == WISP_OK && jd && !cJSON_IsNull(jd)) {
            if (!cJSON_IsNumber(jd) || !isfinite(jd->valuedouble))
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s:%d: bad duration (not a finite number)", src, line);
            else
                d = jd->valuedouble < 0 ? -1 : jd->valuedouble;
        }
        if (rc == WISP_OK)
            rc = s_raws_add(raws, src, dir, jp->valuestring, label, d, line, err);
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

static int s_cmp_raw_path(const void *a, const void *b)
{
    return strcmp(((const s_raw_t *)a)->path, ((const s_raw_t *)b)->path);
}

/* Files of one directory level; sub is NULL for root, else the label directory. */
static int s_scan_dir(s_raws_t *raws, const char *root, const char *sub, const s_exts_t *ex,
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
                rc = s_scan_dir(raws, root, de->d_name, ex, err);
        } else if (S_ISREG(st.st_mode) && s_is_audio(ex, de->d_name)) {
            /* Path relative to root for sorting; resolved after the sort. */
            rc = s_raws_add(raws, root, ".", rel, sub, -1, 0, err);
        }
    }
    closedir(d);
    return rc;
}

static int s_load_folder(s_raws_t *raws, const char *root_arg, wisp_error_t *err)
{
    /* "root/" and "root" give the same item paths. */
    char root[S_PATH_MAX];
    if (snprintf(root, sizeof root, "%s", root_arg) >= (int)sizeof root)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root_arg);
    for (size_t n = strlen(root); n > 1 && root[n - 1] == '/'; n--)
        root[n - 1] = '\0';
    s_exts_t ex;
    s_exts_init(&ex);
    int rc = s_scan_dir(raws, root, NULL, &ex, err);
    if (rc != WISP_OK)
        return rc;
    if (raws->n > 1) /* v is NULL when nothing was found: qsort(NULL, 0) is undefined */
        qsort(raws->v, raws->n, sizeof *raws->v, s_cmp_raw_path);
    for (size_t i = 0; i < raws->n; i++) {
        char full[S_PATH_MAX];
        if (wisp_path_join(full, sizeof full, root, raws->v[i].path) != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", root);
        char *p = strdup(full);
        if (!p)
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", root);
        free(raws->v[i].path);
        raws->v[i].path = p;
    }
    return WISP_OK;
}

/* ---------------------------------------------------------------- labels */

/* Builds m->classes and the items from the raw entries (label rules in labels.h). */
static int s_resolve(wisp_manifest_t *m, s_raws_t *raws, const char *const *classes, int n_classes,
                     wisp_error_t *err)
{
    int rc = WISP_OK;
    wisp_labels_t *lab = NULL;
    const char **texts = malloc((raws->n ? raws->n : 1) * sizeof *texts);
    m->items = calloc(raws->n, sizeof *m->items);
    if (!texts || !m->items)
        goto nomem;
    for (size_t i = 0; i < raws->n; i++)
        texts[i] = raws->v[i].label;
    if (!(lab = wisp_labels_new(texts, raws->n, classes, n_classes, m->source, err))) {
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

    for (size_t i = 0; i < raws->n; i++) {
        s_raw_t *r = &raws->v[i];
        wisp_manifest_item_t *it = &m->items[i];
        it->path = r->path; /* ownership moves to the item */
        r->path = NULL;
        it->duration = r->duration;
        it->line = r->line;
        it->label = -1;
        m->n_items = i + 1;
        if (!r->label)
            continue;
        int c = wisp_labels_find(lab, r->label);
        if (c < 0) {
            if (r->line > 0)
                rc = wisp_error_set(err, WISP_ERR_NOTFOUND,
                                    "%s:%d: label '%s' is not one of the %d classes", m->source,
                                    r->line, r->label, m->n_classes);
            else
                rc = wisp_error_set(err, WISP_ERR_NOTFOUND,
                                    "%s: label directory '%s' is not one of the %d classes",
                                    m->source, r->label, m->n_classes);
            goto done;
        }
        it->label = c;
        if (!(it->label_name = strdup(m->classes[c])))
            goto nomem;
        m->n_labeled++;
    }
    goto done;
nomem:
    rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", m->source);
done:
    wisp_labels_destroy(&lab);
    free(texts);
    return rc;
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
    s_raws_t raws = {0};
    char *text = NULL;
    size_t len = 0;
    wisp_manifest_opts_t o = opts ? *opts : wisp_manifest_default_opts();
    memset(m, 0, sizeof *m);
    if (!path || !path[0])
        return wisp_error_set(err, WISP_ERR_ARG, "manifest: no path given");
    if (o.n_classes < 0 || (o.n_classes > 0 && !o.classes))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: bad class list", path);
    if (!(m->source = strdup(path)))
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);

    struct stat st;
    if (stat(path, &st) != 0) {
        rc = wisp_error_set(err, errno == ENOENT ? WISP_ERR_NOTFOUND : WISP_ERR_IO,
                            "%s: cannot open manifest: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        m->kind = WISP_MANIFEST_AUDIOFOLDER;
        rc = s_load_folder(&raws, path, err);
    } else {
        char dir[S_PATH_MAX];
        if (wisp_path_dirname(dir, sizeof dir, path) != WISP_OK) {
            rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", path);
            goto done;
        }
        if ((rc = wisp_read_file(path, S_MANIFEST_MAX_BYTES, &text, &len, err)) != WISP_OK)
            goto done;
        if (s_ends_with(path, ".jsonl") || s_ends_with(path, ".ndjson")) {
            m->kind = WISP_MANIFEST_JSONL;
            rc = s_load_jsonl(&raws, path, dir, text, len, err);
        } else {
            m->kind = WISP_MANIFEST_CSV;
            rc = s_load_csv(&raws, path, dir, text, len, err);
        }
    }
    if (rc != WISP_OK)
        goto done;
    if (raws.n == 0) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: empty manifest (no audio items)", path);
        goto done;
    }
    if ((rc = s_resolve(m, &raws, o.classes, o.n_classes, err)) != WISP_OK)
        goto done;
    if (o.probe_durations)
        wisp_manifest_probe_durations(m);
    s_update_totals(m);
done:
    s_raws_free(&raws);
    free(text);
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
    for (size_t i = 0; i < m->n_items; i++) {
        free(m->items[i].path);
        free(m->items[i].label_name);
    }
    free(m->items);
    for (int c = 0; c < m->n_classes; c++)
        free(m->classes[c]);
    free(m->classes);
    free(m->source);
    memset(m, 0, sizeof *m);
}

int wisp_manifest_class_index(const wisp_manifest_t *m, const char *name)
{
    for (int c = 0; c < m->n_classes; c++)
        if (strcmp(m->classes[c], name) == 0)
            return c;
    return -1;
}

int wisp_manifest_shards(const wisp_manifest_t *m, double target_seconds, size_t max_items,
                         wisp_shard_t **out, size_t *n_out, wisp_error_t *err)
{
    *out = NULL;
    *n_out = 0;
    if (max_items < 1)
        return wisp_error_set(err, WISP_ERR_ARG, "shards: max_items must be >= 1");
    if (m->n_items == 0)
        return WISP_OK;
    double known = 0;
    size_t n_known = 0;
    for (size_t i = 0; i < m->n_items; i++)
        if (m->items[i].duration >= 0) {
            known += m->items[i].duration;
            n_known++;
        }
    double mean = n_known ? known / (double)n_known : 0;
    int by_time = n_known > 0 && target_seconds > 0;
    /* Upper bound on the shard count: every item alone. Shrunk at the end. */
    wisp_shard_t *v = malloc(m->n_items * sizeof *v);
    if (!v)
        return wisp_error_set(err, WISP_ERR_NOMEM, "shards: out of memory");
    size_t n = 0, begin = 0;
    double sec = 0;
    for (size_t i = 0; i < m->n_items; i++) {
        double d = m->items[i].duration >= 0 ? m->items[i].duration : mean;
        /* Close the open shard first when this item would overshoot the target by
         * more than the shard now falls short of it (keeps shards near the target;
         * a very long item ends up alone). */
        if (by_time && i > begin && sec + d > target_seconds &&
            sec + d - target_seconds > target_seconds - sec) {
            v[n++] = (wisp_shard_t){begin, i, sec};
            begin = i;
            sec = 0;
        }
        sec += d;
        size_t count = i + 1 - begin;
        if (count >= max_items || (by_time && sec >= target_seconds) || i + 1 == m->n_items) {
            v[n++] = (wisp_shard_t){begin, i + 1, sec};
            begin = i + 1;
            sec = 0;
        }
    }
    wisp_shard_t *s = realloc(v, n * sizeof *v);
    *out = s ? s : v;
    *n_out = n;
    return WISP_OK;
}
