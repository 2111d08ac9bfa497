/* json.c: parsing with Python's json semantics (json.h), canonical printing, typed
 * getters. */
#include "formats/json.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

/* ---- parse ------------------------------------------------------------------- */

/* 1-based line and column of byte offset `off` in text. */
static void s_line_col(const char *text, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Reports `what` at byte off of text as "where:line:col: what" (one line). */
static int s_error_at(const char *text, size_t off, const char *where, const char *what,
                      wisp_error_t *err)
{
    int line, col;
    s_line_col(text, off, &line, &col);
    return wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d:%d: %s", where, line, col, what);
}

/* Control characters inside strings (raw, or \u0000 escaped) that cJSON would accept
 * or cut a string at: the offset of the first, or len when there is none. */
static size_t s_find_bad_char(const char *text, size_t len, const char **what)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!in_string) {
            in_string = c == '"';
            continue;
        }
        if (c == '"') {
            in_string = 0;
        } else if (c < 0x20) {
            *what = "control character in a string (escape it)";
            return i;
        } else if (c == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 6 <= len && memcmp(text + i + 2, "0000", 4) == 0) {
                *what = "\\u0000 (NUL) in a string is not supported";
                return i;
            }
            i++; /* the escaped character */
        }
    }
    return len;
}

typedef struct {
    cJSON *node;
    size_t index; /* position in the object */
} s_member_t;

static const char *s_key(const cJSON *j)
{
    return j->string ? j->string : "";
}

/* By key, then by position: equal keys end up adjacent, in file order. */
static int s_cmp_member(const void *a, const void *b)
{
    const s_member_t *x = a, *y = b;
    int c = strcmp(s_key(x->node), s_key(y->node));
    if (c)
        return c;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Python's dict semantics for one object: for a key given several times, the last
 * value takes the first occurrence's place and the others go. O(n log n). */
static int s_dedupe_object(cJSON *obj)
{
    size_t n = 0;
    for (cJSON *c = obj->child; c; c = c->next)
        n++;
    if (n < 2)
        return 0;
    s_member_t *m = malloc(n * sizeof *m);
    if (!m)
        return WISP_ERR_NOMEM;
    size_t i = 0;
    for (cJSON *c = obj->child; c; c = c->next, i++)
        m[i] = (s_member_t){c, i};
    qsort(m, n, sizeof *m, s_cmp_member);
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && strcmp(s_key(m[a].node), s_key(m[b].node)) == 0)
            b++;
        if (b - a > 1) {
            for (size_t k = a + 1; k + 1 < b; k++)
                cJSON_Delete(cJSON_DetachItemViaPointer(obj, m[k].node));
            cJSON *last = cJSON_DetachItemViaPointer(obj, m[b - 1].node);
            cJSON_ReplaceItemViaPointer(obj, m[a].node, last); /* deletes the first */
        }
        a = b;
    }
    free(m);
    return 0;
}

/* s_dedupe_object on every object of the tree (depth <= cJSON's nesting limit). */
static int s_dedupe(cJSON *j)
{
    if (cJSON_IsObject(j) && s_dedupe_object(j) != 0)
        return WISP_ERR_NOMEM;
    if (cJSON_IsObject(j) || cJSON_IsArray(j))
        for (cJSON *c = j->child; c; c = c->next)
            if (s_dedupe(c) != 0)
                return WISP_ERR_NOMEM;
    return 0;
}

int wisp_json_parse(const char *text, size_t len, const char *where, cJSON **out, wisp_error_t *err)
{
    *out = NULL;
    if (!where)
        where = "JSON";
    const char *what = NULL;
    size_t bad = s_find_bad_char(text, len, &what);
    if (bad < len)
        return s_error_at(text, bad, where, what, err);
    const char *end = NULL;
    /* the thread-safe variant of cJSON_GetErrorPtr: the parse end is returned to us */
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
        char msg[64], near[24];
        size_t n = 0;
        for (size_t i = off; i < len && n < 16 && text[i] != '\n'; i++)
            near[n++] = isprint((unsigned char)text[i]) ? text[i] : '?';
        near[n] = 0;
        snprintf(msg, sizeof msg, "invalid JSON near '%s'", n ? near : "(end of text)");
        return s_error_at(text, off, where, msg, err);
    }
    for (const char *p = end; p && p < text + len; p++)
        if (!isspace((unsigned char)*p)) {
            cJSON_Delete(root);
            return s_error_at(text, (size_t)(p - text), where,
                              "unexpected text after the JSON value", err);
        }
    if (s_dedupe(root) != 0) {
        cJSON_Delete(root);
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
    }
    *out = root;
    return 0;
}

int wisp_json_load(const char *path, cJSON **out, wisp_error_t *err)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = wisp_read_file(path, WISP_JSON_MAX_BYTES, &text, &len, err);
    if (rc != 0)
        return rc;
    rc = wisp_json_parse(text, len, path, out, err);
    free(text);
    return rc;
}

/* ---- print / save -------------------------------------------------------------- */

typedef struct {
    char *buf; /* NUL-terminated */
    size_t len;
    size_t cap;
    int oom; /* an allocation failed; result is unusable */
} s_sb_t;

static void s_sb_put(s_sb_t *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *b = realloc(sb->buf, cap);
        if (!b) {
            sb->oom = 1;
            return;
        }
        sb->buf = b;
        sb->cap = cap;
    }
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = 0;
}

static void s_sb_str(s_sb_t *sb, const char *s)
{
    s_sb_put(sb, s, strlen(s));
}

static void s_sb_indent(s_sb_t *sb, int depth)
{
    for (int i = 0; i < depth; i++)
        s_sb_put(sb, "  ", 2);
}

static void s_sb_quoted(s_sb_t *sb, const char *s)
{
    s_sb_put(sb, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': s_sb_put(sb, "\\\"", 2); break;
        case '\\': s_sb_put(sb, "\\\\", 2); break;
        case '\n': s_sb_put(sb, "\\n", 2); break;
        case '\r': s_sb_put(sb, "\\r", 2); break;
        case '\t': s_sb_put(sb, "\\t", 2); break;
        case '\b': s_sb_put(sb, "\\b", 2); break;
        case '\f': s_sb_put(sb, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                s_sb_str(sb, esc);
            } else {
                s_sb_put(sb, (const char *)p, 1);
            }
        }
    }
    s_sb_put(sb, "\"", 1);
}

/* Integers without a fraction; other numbers with the shortest %g that round-trips. */
static void s_sb_number(s_sb_t *sb, double v)
{
    char num[40];
    if (!isfinite(v)) {
        s_sb_str(sb, "null");
        return;
    }
    if (floor(v) == v && fabs(v) < 1e16) {
        snprintf(num, sizeof num, "%.0f", v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, v);
            if (strtod(num, NULL) == v)
                break;
        }
    }
    s_sb_str(sb, num);
}

static void s_sb_json(s_sb_t *sb, const cJSON *j, int depth)
{
    if (cJSON_IsObject(j) || cJSON_IsArray(j)) {
        int obj = cJSON_IsObject(j);
        if (!j->child) {
            s_sb_str(sb, obj ? "{}" : "[]");
            return;
        }
        s_sb_str(sb, obj ? "{\n" : "[\n");
        for (const cJSON *c = j->child; c; c = c->next) {
            s_sb_indent(sb, depth + 1);
            if (obj) {
                s_sb_quoted(sb, c->string ? c->string : "");
                s_sb_str(sb, ": ");
            }
            s_sb_json(sb, c, depth + 1);
            s_sb_str(sb, c->next ? ",\n" : "\n");
        }
        s_sb_indent(sb, depth);
        s_sb_str(sb, obj ? "}" : "]");
    } else if (cJSON_IsString(j)) {
        s_sb_quoted(sb, j->valuestring);
    } else if (cJSON_IsNumber(j)) {
        s_sb_number(sb, j->valuedouble);
    } else if (cJSON_IsTrue(j)) {
        s_sb_str(sb, "true");
    } else if (cJSON_IsFalse(j)) {
        s_sb_str(sb, "false");
    } else if (cJSON_IsRaw(j)) {
        s_sb_str(sb, j->valuestring);
    } else {
        s_sb_str(sb, "null");
    }
}

char *wisp_json_print(const cJSON *json)
{
    s_sb_t sb = {0};
    s_sb_json(&sb, json, 0);
    s_sb_str(&sb, "\n");
    if (sb.oom) {
        free(sb.buf);
        return NULL;
    }
    return sb.buf;
}

int wisp_json_save(const char *path, const cJSON *json, wisp_error_t *err)
{
    char *text = wisp_json_print(json);
    if (!text)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    int rc = wisp_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

static int s_cmp_items(const void *a, const void *b)
{
    return strcmp(s_key(*(const cJSON *const *)a), s_key(*(const cJSON *const *)b));
}

int wisp_json_sort_keys(cJSON *j)
{
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
        return 0;
    size_t n = 0;
    for (cJSON *c = j->child; c; c = c->next) {
        if (wisp_json_sort_keys(c) != 0)
            return WISP_ERR_NOMEM;
        n++;
    }
    if (!cJSON_IsObject(j) || n < 2)
        return 0;
    cJSON **items = malloc(n * sizeof *items);
    if (!items)
        return WISP_ERR_NOMEM;
    size_t i = 0;
    for (cJSON *c = j->child; c; c = c->next)
        items[i++] = c;
    qsort(items, n, sizeof *items, s_cmp_items);
    for (i = 0; i < n; i++) {
        items[i]->prev = i > 0 ? items[i - 1] : items[n - 1]; /* cJSON: child->prev is the tail */
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    j->child = items[0];
    free(items);
    return 0;
}

int wisp_json_save_sorted(const char *path, cJSON *root, int built, wisp_error_t *err)
{
    int rc;
    if (!root || !built || wisp_json_sort_keys(root) != 0)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    else
        rc = wisp_json_save(path, root, err);
    cJSON_Delete(root);
    return rc;
}

/* ---- typed getters ---------------------------------------------------------------- */

int wisp_json_int(const cJSON *j, int64_t min, int64_t max, int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return WISP_ERR_FORMAT;
    double v = j->valuedouble;
    /* the comparisons reject NaN and +-inf too; only then is the cast defined */
    if (!(v >= (double)min && v <= (double)max) || floor(v) != v)
        return WISP_ERR_FORMAT;
    *out = (int64_t)v;
    return 0;
}

int wisp_json_key_int(const cJSON *obj, const char *key, int64_t min, int64_t max,
                      const int64_t *def, int64_t *out, const char *where, wisp_error_t *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        if (!def)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing key \"%s\"", where, key);
        *out = *def;
        return 0;
    }
    if (wisp_json_int(j, min, max, out) == 0)
        return 0;
    char got[48];
    wisp_json_value_text(j, got, sizeof got);
    return wisp_error_set(err, WISP_ERR_FORMAT,
                          "%s: key \"%s\" must be an integer in [%lld, %lld], not %s", where, key,
                          (long long)min, (long long)max, got);
}

int wisp_json_key_bool(const cJSON *obj, const char *key, int def, int *out, const char *where,
                       wisp_error_t *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(j))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: key \"%s\" must be true or false", where,
                              key);
    *out = cJSON_IsTrue(j);
    return 0;
}

void wisp_json_value_text(const cJSON *j, char *buf, size_t size)
{
    if (size == 0)
        return;
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    snprintf(buf, size, "%s", t ? t : j ? "(unprintable)" : "(absent)");
    if (strlen(buf) == size - 1 && size > 4)
        memcpy(buf + size - 4, "...", 4);
    free(t);
}
