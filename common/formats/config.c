/* config.c: JSON configurations (HF Whisper config.json, adapters-library
 * adapter_config.json, wisp head_config.json), all through cJSON.
 *
 * Files are written the way the Python side writes them (json.dump with
 * indent=2, sort_keys=True), so a diff against a Python-saved file is small. */
#include "formats/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/ops.h"
#include "base/util.h"

#define S_JSON_MAX (16u << 20)
/* The adapters library version whose config semantics wisp implements and writes. */
#define S_ADAPTERS_VERSION "adapters.1.2.0"

/* ---- JSON load / save -------------------------------------------------------- */

/* 1-based line and column of byte offset `off` in text. */
static void s_line_col(const char *text, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

cJSON *wisp_json_load(const char *path, wisp_error_t *err)
{
    char *text = NULL;
    size_t len = 0;
    if (wisp_read_file(path, S_JSON_MAX, &text, &len, err) != 0)
        return NULL;
    const char *end = NULL;
    /* the thread-safe variant of cJSON_GetErrorPtr: the parse end is returned to us */
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
        int line, col;
        s_line_col(text, off, &line, &col);
        char near[24];
        size_t n = 0;
        for (size_t i = off; i < len && n < 16 && text[i] != '\n'; i++)
            near[n++] = isprint((unsigned char)text[i]) ? text[i] : '?';
        near[n] = 0;
        wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d:%d: invalid JSON near '%s'", path, line, col,
                       near);
        free(text);
        return NULL;
    }
    /* trailing garbage after the top-level value */
    for (const char *p = end; p && p < text + len; p++)
        if (!isspace((unsigned char)*p)) {
            int line, col;
            s_line_col(text, (size_t)(p - text), &line, &col);
            wisp_error_set(err, WISP_ERR_FORMAT, "%s:%d:%d: unexpected text after the JSON value",
                           path, line, col);
            cJSON_Delete(root);
            free(text);
            return NULL;
        }
    free(text);
    return root;
}

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
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string ? x->string : "", y->string ? y->string : "");
}

/* Sorts object keys recursively in place (json.dump(sort_keys=True)). */
static int s_sort_keys(cJSON *j)
{
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
        return 0;
    int n = 0;
    for (cJSON *c = j->child; c; c = c->next) {
        if (s_sort_keys(c) != 0)
            return WISP_ERR_NOMEM;
        n++;
    }
    if (!cJSON_IsObject(j) || n < 2)
        return 0;
    cJSON **items = malloc((size_t)n * sizeof *items);
    if (!items)
        return WISP_ERR_NOMEM;
    int i = 0;
    for (cJSON *c = j->child; c; c = c->next)
        items[i++] = c;
    qsort(items, (size_t)n, sizeof *items, s_cmp_items);
    for (i = 0; i < n; i++) {
        items[i]->prev = i > 0 ? items[i - 1] : items[n - 1]; /* cJSON: child->prev is the tail */
        items[i]->next = i + 1 < n ? items[i + 1] : NULL;
    }
    j->child = items[0];
    free(items);
    return 0;
}

/* wisp_json_load returning the error code too (details reported once). */
static cJSON *s_load(const char *path, wisp_error_t *err, int *rc)
{
    wisp_error_t local = {0};
    cJSON *root = wisp_json_load(path, err ? err : &local);
    if (root) {
        *rc = 0;
        return root;
    }
    if (!err)
        wisp_error_set(NULL, local.code, "%s", local.msg);
    *rc = err ? (err->code ? err->code : WISP_ERR_FORMAT) : local.code;
    return NULL;
}

/* ---- small typed getters ------------------------------------------------------ */

static int s_is_int(const cJSON *j)
{
    return cJSON_IsNumber(j) && floor(j->valuedouble) == j->valuedouble &&
           fabs(j->valuedouble) < 2e9;
}

/* Integer key `key` of obj into *out; when absent, *out = def (def < -1000 means required). */
static int s_get_int(const cJSON *obj, const char *key, int def, int min, int *out,
                     const char *where, wisp_error_t *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j || cJSON_IsNull(j)) {
        if (def < -1000)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing key \"%s\"", where, key);
        *out = def;
        return 0;
    }
    if (!s_is_int(j) || (int)j->valuedouble < min)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: key \"%s\" must be an integer >= %d",
                              where, key, min);
    *out = (int)j->valuedouble;
    return 0;
}

static int s_get_bool(const cJSON *obj, const char *key, int def, int *out, const char *where,
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

static void s_free_labels(char **labels, int n)
{
    if (!labels)
        return;
    for (int i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
}

/* Reads id2label ({"0": name, ...}, keys exactly 0..n-1) and checks label2id when
 * present. n_hint: num_labels from elsewhere or -1. Fills *labels and *n. */
static int s_parse_labels(const cJSON *obj, int n_hint, char ***labels, int *n, const char *where,
                          wisp_error_t *err)
{
    *labels = NULL;
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(obj, "id2label");
    const cJSON *label2id = cJSON_GetObjectItemCaseSensitive(obj, "label2id");
    int count;
    if (id2label && !cJSON_IsNull(id2label)) {
        if (!cJSON_IsObject(id2label))
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: \"id2label\" must be an object",
                                  where);
        count = cJSON_GetArraySize(id2label);
        if (count < 1)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: \"id2label\" is empty", where);
        if (n_hint >= 0 && n_hint != count)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: num_labels is %d but id2label has %d entries", where, n_hint,
                                  count);
    } else {
        count = n_hint >= 0 ? n_hint : 2;
        if (count < 1)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: num_labels must be at least 1", where);
    }
    char **out = calloc((size_t)count, sizeof *out);
    if (!out)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
    int rc = 0;
    if (id2label && !cJSON_IsNull(id2label)) {
        const cJSON *kv;
        cJSON_ArrayForEach(kv, id2label)
        {
            char *endp = NULL;
            const char *k = kv->string ? kv->string : "";
            long id = strtol(k, &endp, 10);
            if (!k[0] || *endp || id < 0 || id >= count) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: id2label key \"%s\" is not an id in 0..%d", where, k,
                                    count - 1);
                goto done;
            }
            if (!cJSON_IsString(kv)) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: id2label[\"%s\"] must be a string",
                                    where, k);
                goto done;
            }
            if (out[id]) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: id2label has id %ld twice", where,
                                    id);
                goto done;
            }
            out[id] = strdup(kv->valuestring);
            if (!out[id]) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
                goto done;
            }
        }
    } else {
        for (int i = 0; i < count; i++) {
            char name[32];
            snprintf(name, sizeof name, "LABEL_%d", i);
            out[i] = strdup(name);
            if (!out[i]) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
                goto done;
            }
        }
    }
    for (int i = 0; i < count; i++)
        for (int k = 0; k < i; k++)
            if (strcmp(out[i], out[k]) == 0) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: label \"%s\" appears twice in id2label", where, out[i]);
                goto done;
            }
    if (label2id && !cJSON_IsNull(label2id)) {
        if (!cJSON_IsObject(label2id) || cJSON_GetArraySize(label2id) != count) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                "%s: \"label2id\" must be an object with %d entries", where, count);
            goto done;
        }
        for (int i = 0; i < count; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(label2id, out[i]);
            /* HF writes integer ids; accept "3" too */
            long id = -1;
            if (s_is_int(v))
                id = (long)v->valuedouble;
            else if (cJSON_IsString(v))
                id = strtol(v->valuestring, NULL, 10);
            if (id != i) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: label2id[\"%s\"] disagrees with id2label (expected %d)",
                                    where, out[i], i);
                goto done;
            }
        }
    }
done:
    if (rc != 0) {
        s_free_labels(out, count);
        return rc;
    }
    *labels = out;
    *n = count;
    return 0;
}

static int s_add_labels(cJSON *obj, char *const *labels, int n)
{
    cJSON *i2l = cJSON_AddObjectToObject(obj, "id2label");
    cJSON *l2i = cJSON_AddObjectToObject(obj, "label2id");
    if (!i2l || !l2i)
        return WISP_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        if (!cJSON_AddStringToObject(i2l, key, labels[i]))
            return WISP_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++)
        if (!cJSON_AddNumberToObject(l2i, labels[i], i))
            return WISP_ERR_NOMEM;
    return 0;
}

static char **s_copy_labels(char *const *labels, int n)
{
    char **out = calloc((size_t)(n > 0 ? n : 1), sizeof *out);
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        out[i] = strdup(labels[i]);
        if (!out[i]) {
            s_free_labels(out, n);
            return NULL;
        }
    }
    return out;
}

/* ---- Whisper config.json -------------------------------------------------------- */

static int s_whisper_validate(const wisp_whisper_config_t *c, const char *where, wisp_error_t *err)
{
    if (strcmp(c->model_type, "whisper") != 0)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: model_type is \"%s\", wisp needs \"whisper\"", where,
                              c->model_type);
    if (c->encoder_attention_heads < 1 || c->d_model % c->encoder_attention_heads != 0)
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: d_model %d is not divisible by encoder_attention_heads %d",
                              where, c->d_model, c->encoder_attention_heads);
    if (c->encoder_layers > WISP_MAX_LAYERS)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: encoder_layers %d exceeds wisp's limit of %d", where,
                              c->encoder_layers, WISP_MAX_LAYERS);
    return 0;
}

int wisp_whisper_config_parse(wisp_whisper_config_t *cfg, const cJSON *root, const char *path,
                              wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: missing key \"model_type\" (expected \"whisper\")", path);
        goto done;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt->valuestring);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "gelu") != 0)) {
        rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                            "%s: activation_function %s%s%s is not supported (only \"gelu\")", path,
                            cJSON_IsString(act) ? "\"" : "",
                            cJSON_IsString(act) ? act->valuestring : "(not a string)",
                            cJSON_IsString(act) ? "\"" : "");
        goto done;
    }
    int n_hint = -1;
    if ((rc = s_get_int(root, "d_model", -9999, 1, &cfg->d_model, path, err)) != 0 ||
        (rc = s_get_int(root, "encoder_layers", -9999, 1, &cfg->encoder_layers, path, err)) != 0 ||
        (rc = s_get_int(root, "encoder_attention_heads", -9999, 1, &cfg->encoder_attention_heads,
                        path, err)) != 0 ||
        (rc = s_get_int(root, "encoder_ffn_dim", -9999, 1, &cfg->encoder_ffn_dim, path, err)) !=
            0 ||
        (rc = s_get_int(root, "num_mel_bins", 80, 1, &cfg->num_mel_bins, path, err)) != 0 ||
        (rc = s_get_int(root, "max_source_positions", 1500, 1, &cfg->max_source_positions, path,
                        err)) != 0 ||
        (rc = s_get_int(root, "classifier_proj_size", 256, 1, &cfg->classifier_proj_size, path,
                        err)) != 0 ||
        (rc = s_get_bool(root, "use_weighted_layer_sum", 0, &cfg->use_weighted_layer_sum, path,
                         err)) != 0 ||
        (rc = s_get_int(root, "num_labels", -1, 1, &n_hint, path, err)) != 0)
        goto done;
    if ((rc = s_whisper_validate(cfg, path, err)) != 0)
        goto done;
    rc = s_parse_labels(root, n_hint, &cfg->id2label, &cfg->num_labels, path, err);
done:
    if (rc != 0)
        wisp_whisper_config_free(cfg);
    return rc;
}

int wisp_whisper_config_load(wisp_whisper_config_t *cfg, const char *path, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    int rc = 0;
    cJSON *root = s_load(path, err, &rc);
    if (!root)
        return rc;
    rc = wisp_whisper_config_parse(cfg, root, path, err);
    cJSON_Delete(root);
    return rc;
}

static const struct {
    const char *name;
    int d, layers, heads, ffn, mels;
} s_sizes[] = {
    {"tiny", 384, 4, 6, 1536, 80},     {"base", 512, 6, 8, 2048, 80},
    {"small", 768, 12, 12, 3072, 80},  {"medium", 1024, 24, 16, 4096, 80},
    {"large", 1280, 32, 20, 5120, 80}, {"large-v3", 1280, 32, 20, 5120, 128},
};

int wisp_whisper_config_preset(wisp_whisper_config_t *cfg, const char *size, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < sizeof s_sizes / sizeof s_sizes[0]; i++) {
        if (strcmp(s_sizes[i].name, size) != 0)
            continue;
        cfg->d_model = s_sizes[i].d;
        cfg->encoder_layers = s_sizes[i].layers;
        cfg->encoder_attention_heads = s_sizes[i].heads;
        cfg->encoder_ffn_dim = s_sizes[i].ffn;
        cfg->num_mel_bins = s_sizes[i].mels;
        cfg->max_source_positions = 1500;
        cfg->classifier_proj_size = 256;
        cfg->use_weighted_layer_sum = 0;
        snprintf(cfg->model_type, sizeof cfg->model_type, "whisper");
        return s_parse_labels(NULL, 2, &cfg->id2label, &cfg->num_labels, size, err);
    }
    return wisp_error_set(err, WISP_ERR_ARG,
                          "unknown model size \"%s\" (tiny, base, small, medium, large, large-v3)",
                          size);
}

cJSON *wisp_whisper_config_to_json(const wisp_whisper_config_t *cfg)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int ok = 1;
    int v3 = cfg->num_mel_bins == 128; /* large-v3 adds one language token */
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    ok = ok && arch &&
         cJSON_AddItemToArray(arch, cJSON_CreateString("WhisperForAudioClassification"));
    /* Token ids and the spec-augment / generation keys of openai/whisper-* configs;
     * they do not affect the encoder but let transformers load the file unchanged. */
    cJSON *bst = cJSON_AddArrayToObject(o, "begin_suppress_tokens");
    ok = ok && bst && cJSON_AddItemToArray(bst, cJSON_CreateNumber(220)) &&
         cJSON_AddItemToArray(bst, cJSON_CreateNumber(50257));
    ok = ok && cJSON_AddNumberToObject(o, "activation_dropout", 0.0) &&
         cJSON_AddStringToObject(o, "activation_function", "gelu") &&
         cJSON_AddFalseToObject(o, "apply_spec_augment") &&
         cJSON_AddNumberToObject(o, "attention_dropout", 0.0) &&
         cJSON_AddNumberToObject(o, "bos_token_id", 50257) &&
         cJSON_AddNumberToObject(o, "classifier_proj_size", cfg->classifier_proj_size) &&
         cJSON_AddNumberToObject(o, "d_model", cfg->d_model) &&
         cJSON_AddNumberToObject(o, "decoder_attention_heads", cfg->encoder_attention_heads) &&
         cJSON_AddNumberToObject(o, "decoder_ffn_dim", cfg->encoder_ffn_dim) &&
         cJSON_AddNumberToObject(o, "decoder_layerdrop", 0.0) &&
         cJSON_AddNumberToObject(o, "decoder_layers", cfg->encoder_layers) &&
         cJSON_AddNumberToObject(o, "decoder_start_token_id", 50258) &&
         cJSON_AddNumberToObject(o, "dropout", 0.0) &&
         cJSON_AddNumberToObject(o, "encoder_attention_heads", cfg->encoder_attention_heads) &&
         cJSON_AddNumberToObject(o, "encoder_ffn_dim", cfg->encoder_ffn_dim) &&
         cJSON_AddNumberToObject(o, "encoder_layerdrop", 0.0) &&
         cJSON_AddNumberToObject(o, "encoder_layers", cfg->encoder_layers) &&
         cJSON_AddNumberToObject(o, "eos_token_id", 50257) &&
         cJSON_AddNumberToObject(o, "init_std", 0.02) &&
         cJSON_AddTrueToObject(o, "is_encoder_decoder") &&
         cJSON_AddNumberToObject(o, "mask_feature_length", 10) &&
         cJSON_AddNumberToObject(o, "mask_feature_min_masks", 0) &&
         cJSON_AddNumberToObject(o, "mask_feature_prob", 0.0) &&
         cJSON_AddNumberToObject(o, "mask_time_length", 10) &&
         cJSON_AddNumberToObject(o, "mask_time_min_masks", 2) &&
         cJSON_AddNumberToObject(o, "mask_time_prob", 0.05) &&
         cJSON_AddNumberToObject(o, "max_length", 448) &&
         cJSON_AddNumberToObject(o, "max_source_positions", cfg->max_source_positions) &&
         cJSON_AddNumberToObject(o, "max_target_positions", 448) &&
         cJSON_AddNumberToObject(o, "median_filter_width", 7) &&
         cJSON_AddStringToObject(o, "model_type", "whisper") &&
         cJSON_AddNumberToObject(o, "num_hidden_layers", cfg->encoder_layers) &&
         cJSON_AddNumberToObject(o, "num_mel_bins", cfg->num_mel_bins) &&
         cJSON_AddNumberToObject(o, "pad_token_id", 50257) &&
         cJSON_AddFalseToObject(o, "scale_embedding") &&
         cJSON_AddStringToObject(o, "torch_dtype", "float32") &&
         cJSON_AddTrueToObject(o, "use_cache") &&
         cJSON_AddBoolToObject(o, "use_weighted_layer_sum", cfg->use_weighted_layer_sum) &&
         cJSON_AddNumberToObject(o, "vocab_size", v3 ? 51866 : 51865);
    if (ok && cfg->id2label)
        ok = s_add_labels(o, cfg->id2label, cfg->num_labels) == 0;
    if (!ok || s_sort_keys(o) != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

void wisp_whisper_config_free(wisp_whisper_config_t *cfg)
{
    if (!cfg)
        return;
    s_free_labels(cfg->id2label, cfg->num_labels);
    cfg->id2label = NULL;
    cfg->num_labels = 0;
}

/* ---- adapters library configs ------------------------------------------------------ */

/* The library's dataclass defaults (adapters v1.2, adapter_config.py). Fields that
 * BnConfig requires (mh_adapter, output_adapter, reduction_factor, non_linearity)
 * come from the subclass tables. */
static const char *s_bn_defaults =
    "{\"original_ln_before\":false,\"original_ln_after\":true,\"ln_before\":false,\"ln_after\":"
    "false,"
    "\"init_weights\":\"bert\",\"init_weights_seed\":null,\"is_parallel\":false,\"scaling\":1.0,"
    "\"use_gating\":false,\"residual_before_ln\":true,\"adapter_residual_before_ln\":false,"
    "\"inv_adapter\":null,\"inv_adapter_reduction_factor\":null,\"cross_adapter\":false,\"leave_"
    "out\":[],"
    "\"dropout\":0.0,\"phm_layer\":false,\"phm_dim\":4,\"factorized_phm_W\":true,\"shared_W_phm\":"
    "false,"
    "\"shared_phm_rule\":true,\"factorized_phm_rule\":false,\"phm_c_init\":\"normal\","
    "\"phm_init_range\":0.0001,\"learn_phm\":true,\"hypercomplex_nonlinearity\":\"glorot-uniform\","
    "\"phm_rank\":1,\"phm_bias\":true,\"stochastic_depth\":0.0}";
static const char *s_lora_defaults =
    "{\"architecture\":\"lora\",\"selfattn_lora\":true,\"intermediate_lora\":false,\"output_lora\":"
    "false,"
    "\"leave_out\":[],\"r\":8,\"alpha\":8,\"dropout\":0.0,\"attn_matrices\":[\"q\",\"v\"],"
    "\"composition_mode\":\"add\",\"init_weights\":\"lora\",\"init_weights_seed\":null,\"use_"
    "gating\":false,"
    "\"vera_d\":null,\"vera_b\":null,\"dtype\":null}";

static const struct {
    const char *name;
    const char *base;      /* class defaults */
    const char *overrides; /* the subclass's own defaults */
} s_presets[] = {
    {"seq_bn", NULL,
     "{\"original_ln_before\":true,\"original_ln_after\":true,\"residual_before_ln\":true,"
     "\"mh_adapter\":false,\"output_adapter\":true,\"non_linearity\":\"relu\",\"reduction_factor\":"
     "16}"},
    {"double_seq_bn", NULL,
     "{\"original_ln_before\":false,\"original_ln_after\":true,\"residual_before_ln\":true,"
     "\"mh_adapter\":true,\"output_adapter\":true,\"non_linearity\":\"swish\",\"reduction_factor\":"
     "16}"},
    {"par_bn", NULL,
     "{\"original_ln_before\":false,\"original_ln_after\":true,\"mh_adapter\":false,\"output_"
     "adapter\":true,"
     "\"non_linearity\":\"relu\",\"reduction_factor\":2,\"init_weights\":\"mam_adapter\",\"is_"
     "parallel\":true,"
     "\"scaling\":4.0}"},
    {"lora", "lora", "{}"},
    {"ia3", "lora",
     "{\"selfattn_lora\":true,\"intermediate_lora\":true,\"output_lora\":false,\"r\":1,\"alpha\":1,"
     "\"attn_matrices\":[\"k\",\"v\"],\"composition_mode\":\"scale\",\"init_weights\":\"ia3\"}"},
};

const char *wisp_adapter_kind_name(wisp_adapter_kind_t kind)
{
    switch (kind) {
    case WISP_ADAPTER_BOTTLENECK: return "bottleneck";
    case WISP_ADAPTER_LORA: return "lora";
    case WISP_ADAPTER_IA3: return "ia3";
    default: return "none";
    }
}

/* Short text of a JSON value for messages. */
static void s_value_text(const cJSON *j, char *buf, size_t size)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    snprintf(buf, size, "%s", t ? t : "(absent)");
    if (strlen(buf) == size - 1 && size > 4)
        memcpy(buf + size - 4, "...", 4);
    free(t);
}

/* How a field is handled. */
typedef enum {
    S_F_BOOL,     /* read into an int */
    S_F_ONLY,     /* accepted only when equal to the default (JSON equality) */
    S_F_ANY_BOOL, /* ignored by wisp for a stated reason, any bool */
    S_F_ANY_NUM,  /* any number or null */
    S_F_ANY_INT,  /* any integer or null */
    S_F_ANY_STR,  /* any string or null */
    S_F_SPECIAL,  /* handled in code */
} s_ftype_t;

typedef struct {
    const char *key;
    s_ftype_t type;
    const char *why; /* for S_F_ONLY: what wisp lacks */
} s_field_t;

static const s_field_t s_bn_fields[] = {
    {"architecture", S_F_SPECIAL, NULL},
    {"mh_adapter", S_F_SPECIAL, NULL},
    {"output_adapter", S_F_SPECIAL, NULL},
    {"reduction_factor", S_F_SPECIAL, NULL},
    {"non_linearity", S_F_SPECIAL, NULL},
    {"original_ln_before", S_F_SPECIAL, NULL},
    {"original_ln_after", S_F_SPECIAL, NULL},
    {"ln_before", S_F_ONLY, "a new LayerNorm before the adapter"},
    {"ln_after", S_F_ONLY, "a new LayerNorm after the adapter"},
    {"init_weights", S_F_SPECIAL, NULL},
    /* only seeds Python's initialisation; wisp seeds its own */
    {"init_weights_seed", S_F_ANY_INT, NULL},
    {"is_parallel", S_F_SPECIAL, NULL},
    {"scaling", S_F_SPECIAL, NULL},
    {"use_gating", S_F_ONLY, "gating modules"},
    {"residual_before_ln", S_F_SPECIAL, NULL},
    {"adapter_residual_before_ln", S_F_ONLY, "adapter-internal LayerNorms"},
    {"inv_adapter", S_F_ONLY, "invertible adapters"},
    /* meaningful only with inv_adapter, which must be null */
    {"inv_adapter_reduction_factor", S_F_ANY_NUM, NULL},
    {"invertible_adapter", S_F_ONLY, "invertible adapters"},
    {"cross_adapter", S_F_ONLY, "decoder cross-attention adapters (wisp runs the encoder only)"},
    {"leave_out", S_F_SPECIAL, NULL},
    {"dropout", S_F_ONLY, "adapter dropout (training-time noise)"},
    {"phm_layer", S_F_ONLY, "PHM (Compacter) layers"},
    /* the phm_* options only matter when phm_layer is true, which is refused */
    {"phm_dim", S_F_ANY_INT, NULL},
    {"factorized_phm_W", S_F_ANY_BOOL, NULL},
    {"shared_W_phm", S_F_ANY_BOOL, NULL},
    {"shared_phm_rule", S_F_ANY_BOOL, NULL},
    {"factorized_phm_rule", S_F_ANY_BOOL, NULL},
    {"phm_c_init", S_F_ANY_STR, NULL},
    {"phm_init_range", S_F_ANY_NUM, NULL},
    {"learn_phm", S_F_ANY_BOOL, NULL},
    {"hypercomplex_nonlinearity", S_F_ANY_STR, NULL},
    {"phm_rank", S_F_ANY_INT, NULL},
    {"phm_bias", S_F_ANY_BOOL, NULL},
    {"stochastic_depth", S_F_ONLY, "stochastic depth (training-time layer dropping)"},
    {NULL, 0, NULL},
};

static const s_field_t s_lora_fields[] = {
    {"architecture", S_F_SPECIAL, NULL},
    {"selfattn_lora", S_F_SPECIAL, NULL},
    {"intermediate_lora", S_F_SPECIAL, NULL},
    {"output_lora", S_F_SPECIAL, NULL},
    {"leave_out", S_F_SPECIAL, NULL},
    {"r", S_F_SPECIAL, NULL},
    {"alpha", S_F_SPECIAL, NULL},
    {"dropout", S_F_ONLY, "LoRA dropout (training-time noise)"},
    {"attn_matrices", S_F_SPECIAL, NULL},
    {"composition_mode", S_F_SPECIAL, NULL},
    {"init_weights", S_F_SPECIAL, NULL},
    {"init_weights_seed", S_F_ANY_INT, NULL},
    {"use_gating", S_F_ONLY, "gating modules"},
    {"vera_d", S_F_ONLY, "VeRA"},
    {"vera_b", S_F_ONLY, "VeRA"},
    {"dtype", S_F_SPECIAL, NULL},
    {NULL, 0, NULL},
};

static const s_field_t *s_find_field(const s_field_t *fields, const char *key)
{
    for (const s_field_t *f = fields; f->key; f++)
        if (strcmp(f->key, key) == 0)
            return f;
    return NULL;
}

/* Parses the JSON text of a built-in table (cannot fail except for memory). */
static cJSON *s_parse_builtin(const char *text)
{
    return cJSON_Parse(text);
}

/* full = copy of defaults, with every key of user replacing or adding. */
static cJSON *s_merge(const cJSON *defaults, const cJSON *user)
{
    cJSON *full = cJSON_Duplicate(defaults, 1);
    if (!full)
        return NULL;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, user)
    {
        cJSON *v = cJSON_Duplicate(kv, 1);
        if (!v) {
            cJSON_Delete(full);
            return NULL;
        }
        if (cJSON_GetObjectItemCaseSensitive(full, kv->string))
            cJSON_ReplaceItemInObjectCaseSensitive(full, kv->string, v);
        else
            cJSON_AddItemToObject(full, kv->string, v);
    }
    return full;
}

static int s_leave_out(wisp_adapter_config_t *cfg, const cJSON *j, const char *where,
                       wisp_error_t *err)
{
    if (!cJSON_IsArray(j))
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: field leave_out must be a list of layer indices", where);
    const cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        if (!s_is_int(e) || e->valuedouble < 0 || e->valuedouble >= WISP_MAX_LAYERS)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: field leave_out must hold layer indices 0..%d", where,
                                  WISP_MAX_LAYERS - 1);
        cfg->leave_out[(int)e->valuedouble] = 1;
    }
    return 0;
}

static int s_bool_field(const cJSON *full, const char *key, int *out, const char *where,
                        wisp_error_t *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(full, key);
    if (!j)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing field %s", where, key);
    if (!cJSON_IsBool(j))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: field %s must be true or false", where,
                              key);
    *out = cJSON_IsTrue(j);
    return 0;
}

/* Checks every key of `user` against the class's field table and defaults. */
static int s_check_fields(const cJSON *user, const cJSON *defaults, const s_field_t *fields,
                          const char *arch, const char *where, wisp_error_t *err)
{
    const cJSON *kv;
    cJSON_ArrayForEach(kv, user)
    {
        const char *key = kv->string;
        const s_field_t *f = s_find_field(fields, key);
        char val[96];
        if (!f)
            return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                  "%s: unknown field %s for a %s adapter config", where, key, arch);
        switch (f->type) {
        case S_F_ONLY: {
            const cJSON *def = cJSON_GetObjectItemCaseSensitive(defaults, key);
            /* a field without a default (legacy keys) is accepted only as null */
            if (def ? !cJSON_Compare(kv, def, 1) : !cJSON_IsNull(kv)) {
                char want[64];
                s_value_text(kv, val, sizeof val);
                s_value_text(def, want, sizeof want);
                return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                      "%s: field %s = %s is not supported by wisp (%s; only %s)",
                                      where, key, val, f->why, def ? want : "null");
            }
            break;
        }
        case S_F_ANY_BOOL:
            if (!cJSON_IsBool(kv) && !cJSON_IsNull(kv))
                return wisp_error_set(err, WISP_ERR_FORMAT, "%s: field %s must be true or false",
                                      where, key);
            break;
        case S_F_ANY_NUM:
            if (!cJSON_IsNumber(kv) && !cJSON_IsNull(kv))
                return wisp_error_set(err, WISP_ERR_FORMAT, "%s: field %s must be a number or null",
                                      where, key);
            break;
        case S_F_ANY_INT:
            if (!s_is_int(kv) && !cJSON_IsNull(kv))
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "%s: field %s must be an integer or null", where, key);
            break;
        case S_F_ANY_STR:
            if (!cJSON_IsString(kv) && !cJSON_IsNull(kv))
                return wisp_error_set(err, WISP_ERR_FORMAT, "%s: field %s must be a string or null",
                                      where, key);
            break;
        default: break;
        }
    }
    return 0;
}

static int s_parse_bottleneck(wisp_adapter_config_t *cfg, const cJSON *user, const char *where,
                              wisp_error_t *err)
{
    int rc = 0;
    cJSON *defaults = s_parse_builtin(s_bn_defaults);
    if (!defaults)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
    if ((rc = s_check_fields(user, defaults, s_bn_fields, "bottleneck", where, err)) != 0)
        goto done;
    cfg->full = s_merge(defaults, user);
    if (!cfg->full) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
        goto done;
    }
    /* the library's BnConfig has no "architecture" field: drop an explicit one */
    cJSON_DeleteItemFromObjectCaseSensitive(cfg->full, "architecture");
    const cJSON *full = cfg->full;
    cfg->kind = WISP_ADAPTER_BOTTLENECK;
    if ((rc = s_bool_field(full, "mh_adapter", &cfg->mh_adapter, where, err)) != 0 ||
        (rc = s_bool_field(full, "output_adapter", &cfg->output_adapter, where, err)) != 0 ||
        (rc = s_bool_field(full, "original_ln_before", &cfg->original_ln_before, where, err)) !=
            0 ||
        (rc = s_bool_field(full, "original_ln_after", &cfg->original_ln_after, where, err)) != 0 ||
        (rc = s_bool_field(full, "is_parallel", &cfg->is_parallel, where, err)) != 0)
        goto done;

    /* reduction_factor: a number, or {"<layer>": rf, ..., "default": rf} */
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(full, "reduction_factor");
    if (!rf) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing field reduction_factor", where);
        goto done;
    }
    if (cJSON_IsNumber(rf)) {
        if (!(rf->valuedouble > 0)) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: field reduction_factor must be > 0",
                                where);
            goto done;
        }
        for (int i = 0; i < WISP_MAX_LAYERS; i++)
            cfg->reduction_factor[i] = (float)rf->valuedouble;
    } else if (cJSON_IsObject(rf)) {
        const cJSON *def = cJSON_GetObjectItemCaseSensitive(rf, "default");
        const cJSON *kv;
        cJSON_ArrayForEach(kv, rf)
        {
            char *endp = NULL;
            long layer = strtol(kv->string, &endp, 10);
            int is_default = strcmp(kv->string, "default") == 0;
            if (!is_default && (!kv->string[0] || *endp || layer < 0 || layer >= WISP_MAX_LAYERS)) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: field reduction_factor has key \"%s\" (expected a layer "
                                    "index or \"default\")",
                                    where, kv->string);
                goto done;
            }
            if (!cJSON_IsNumber(kv) || !(kv->valuedouble > 0)) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: field reduction_factor[\"%s\"] must be a number > 0",
                                    where, kv->string);
                goto done;
            }
        }
        for (int i = 0; i < WISP_MAX_LAYERS; i++) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(rf, key);
            /* 0 marks "no factor for this layer": bottleneck_dim reports it */
            cfg->reduction_factor[i] = v     ? (float)v->valuedouble
                                       : def ? (float)def->valuedouble
                                             : 0.0f;
        }
    } else {
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: field reduction_factor must be a number or a {\"<layer>\": rf, "
                            "\"default\": rf} map",
                            where);
        goto done;
    }

    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(full, "non_linearity");
    if (!cJSON_IsString(nl)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing or non-string field non_linearity",
                            where);
        goto done;
    }
    cfg->non_linearity = nn_act_parse(nl->valuestring); /* case-insensitive, like the library */
    if (cfg->non_linearity < 0) {
        rc = wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field non_linearity = \"%s\" is not supported (relu, swish, silu, gelu, gelu_new, "
            "tanh, sigmoid, leakyrelu, linear)",
            where, nl->valuestring);
        goto done;
    }

    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(full, "scaling");
    if (cJSON_IsString(sc)) {
        rc = wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field scaling = \"%s\" is not supported by wisp (learned scaling; only a number)",
            where, sc->valuestring);
        goto done;
    }
    if (!cJSON_IsNumber(sc)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: field scaling must be a number", where);
        goto done;
    }
    cfg->scaling = (float)sc->valuedouble;

    const cJSON *rbl = cJSON_GetObjectItemCaseSensitive(full, "residual_before_ln");
    if (cJSON_IsString(rbl)) {
        /* "post_add" picks the residual after the add but before the original LayerNorm;
         * Whisper's adapter sites pass no LayerNorm, where the library leaves it undefined. */
        rc = wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field residual_before_ln = \"%s\" is not supported by wisp (Whisper adapter sites "
            "have no LayerNorm; only true or false)",
            where, rbl->valuestring);
        goto done;
    }
    if (!cJSON_IsBool(rbl)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: field residual_before_ln must be true or false", where);
        goto done;
    }
    cfg->residual_before_ln = cJSON_IsTrue(rbl);

    const cJSON *iw = cJSON_GetObjectItemCaseSensitive(full, "init_weights");
    if (!cJSON_IsString(iw) ||
        (strcmp(iw->valuestring, "bert") != 0 && strcmp(iw->valuestring, "mam_adapter") != 0 &&
         strcmp(iw->valuestring, "houlsby") != 0)) {
        char val[64];
        s_value_text(iw, val, sizeof val);
        rc = wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field init_weights = %s is not supported (bert, mam_adapter, houlsby)", where,
            val);
        goto done;
    }
    snprintf(cfg->init_weights, sizeof cfg->init_weights, "%s", iw->valuestring);
    if ((rc = s_leave_out(cfg, cJSON_GetObjectItemCaseSensitive(full, "leave_out"), where, err)) !=
        0)
        goto done;
    if (!cfg->mh_adapter && !cfg->output_adapter) {
        rc = wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: fields mh_adapter and output_adapter are both false: the adapter would do nothing",
            where);
        goto done;
    }
done:
    cJSON_Delete(defaults);
    return rc;
}

static int s_parse_lora(wisp_adapter_config_t *cfg, const cJSON *user, const char *where,
                        wisp_error_t *err)
{
    int rc = 0;
    cJSON *defaults = s_parse_builtin(s_lora_defaults);
    if (!defaults)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
    if ((rc = s_check_fields(user, defaults, s_lora_fields, "lora", where, err)) != 0)
        goto done;
    cfg->full = s_merge(defaults, user);
    if (!cfg->full) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
        goto done;
    }
    const cJSON *full = cfg->full;
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(full, "composition_mode");
    if (!cJSON_IsString(cm) ||
        (strcmp(cm->valuestring, "add") != 0 && strcmp(cm->valuestring, "scale") != 0)) {
        char val[64];
        s_value_text(cm, val, sizeof val);
        rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                            "%s: field composition_mode = %s is not supported (add, scale)", where,
                            val);
        goto done;
    }
    int scale = strcmp(cm->valuestring, "scale") == 0;
    cfg->kind = scale ? WISP_ADAPTER_IA3 : WISP_ADAPTER_LORA;

    int selfattn = 0;
    if ((rc = s_bool_field(full, "selfattn_lora", &selfattn, where, err)) != 0 ||
        (rc = s_bool_field(full, "intermediate_lora", &cfg->intermediate_lora, where, err)) != 0 ||
        (rc = s_bool_field(full, "output_lora", &cfg->output_lora, where, err)) != 0)
        goto done;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(full, "r");
    if (!s_is_int(r) || r->valuedouble < 1) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: field r must be an integer >= 1", where);
        goto done;
    }
    cfg->r = (int)r->valuedouble;
    if (scale && cfg->r != 1) {
        rc = wisp_error_set(
            err, WISP_ERR_FORMAT,
            "%s: field r = %d with composition_mode \"scale\" (IA3 needs r = 1, as in the library)",
            where, cfg->r);
        goto done;
    }
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(full, "alpha");
    if (!cJSON_IsNumber(alpha) || !isfinite(alpha->valuedouble)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: field alpha must be a number", where);
        goto done;
    }
    cfg->alpha = (float)alpha->valuedouble;

    const cJSON *am = cJSON_GetObjectItemCaseSensitive(full, "attn_matrices");
    if (!cJSON_IsArray(am)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: field attn_matrices must be a list of \"q\", \"k\", \"v\"", where);
        goto done;
    }
    const cJSON *e;
    int q = 0, k = 0, v = 0;
    cJSON_ArrayForEach(e, am)
    {
        if (cJSON_IsString(e) && strcmp(e->valuestring, "q") == 0)
            q = 1;
        else if (cJSON_IsString(e) && strcmp(e->valuestring, "k") == 0)
            k = 1;
        else if (cJSON_IsString(e) && strcmp(e->valuestring, "v") == 0)
            v = 1;
        else {
            char val[64];
            s_value_text(e, val, sizeof val);
            rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                "%s: field attn_matrices holds %s (only \"q\", \"k\", \"v\")",
                                where, val);
            goto done;
        }
    }
    /* the library adapts an attention matrix only when selfattn_lora is set */
    cfg->attn_q = selfattn && q;
    cfg->attn_k = selfattn && k;
    cfg->attn_v = selfattn && v;

    const cJSON *iw = cJSON_GetObjectItemCaseSensitive(full, "init_weights");
    int iw_ok =
        cJSON_IsString(iw) &&
        (scale ? strcmp(iw->valuestring, "ia3") == 0
               : (strcmp(iw->valuestring, "lora") == 0 || strcmp(iw->valuestring, "bert") == 0));
    if (!iw_ok) {
        char val[64];
        s_value_text(iw, val, sizeof val);
        rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                            "%s: field init_weights = %s is not supported for %s (%s)", where, val,
                            scale ? "composition_mode \"scale\"" : "LoRA",
                            scale ? "ia3" : "lora, bert");
        goto done;
    }
    snprintf(cfg->init_weights, sizeof cfg->init_weights, "%s", iw->valuestring);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(full, "dtype");
    if (dt && !cJSON_IsNull(dt) &&
        !(cJSON_IsString(dt) && strcmp(dt->valuestring, "float32") == 0)) {
        char val[64];
        s_value_text(dt, val, sizeof val);
        rc = wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field dtype = %s is not supported by wisp (adapters run in fp32; only null)",
            where, val);
        goto done;
    }
    if ((rc = s_leave_out(cfg, cJSON_GetObjectItemCaseSensitive(full, "leave_out"), where, err)) !=
        0)
        goto done;
    if (!cfg->attn_q && !cfg->attn_k && !cfg->attn_v && !cfg->intermediate_lora &&
        !cfg->output_lora) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT,
                            "%s: the config adapts no matrix (attn_matrices, selfattn_lora, "
                            "intermediate_lora and output_lora select nothing)",
                            where);
        goto done;
    }
done:
    cJSON_Delete(defaults);
    return rc;
}

int wisp_adapter_config_parse(wisp_adapter_config_t *cfg, const cJSON *config_dict,
                              const char *where, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "adapter");
    if (!where)
        where = "adapter config";
    if (!cJSON_IsObject(config_dict))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: the adapter config must be a JSON object",
                              where);
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(config_dict, "architecture");
    int rc;
    if (!arch || cJSON_IsNull(arch) ||
        (cJSON_IsString(arch) && strcmp(arch->valuestring, "bottleneck") == 0)) {
        rc = s_parse_bottleneck(cfg, config_dict, where, err);
    } else if (cJSON_IsString(arch) && strcmp(arch->valuestring, "lora") == 0) {
        rc = s_parse_lora(cfg, config_dict, where, err);
    } else {
        char val[64];
        s_value_text(arch, val, sizeof val);
        rc = wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field architecture = %s is not supported by wisp (bottleneck or lora only)", where,
            val);
    }
    if (rc != 0)
        wisp_adapter_config_free(cfg);
    return rc;
}

int wisp_adapter_config_preset(wisp_adapter_config_t *cfg, const char *preset, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < sizeof s_presets / sizeof s_presets[0]; i++) {
        if (strcmp(s_presets[i].name, preset) != 0)
            continue;
        int rc = 0;
        cJSON *base = s_parse_builtin(s_presets[i].base ? s_lora_defaults : s_bn_defaults);
        cJSON *over = s_parse_builtin(s_presets[i].overrides);
        cJSON *dict = (base && over) ? s_merge(base, over) : NULL;
        if (!dict)
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "preset %s: out of memory", preset);
        else
            rc = wisp_adapter_config_parse(cfg, dict, preset, err);
        cJSON_Delete(dict);
        cJSON_Delete(over);
        cJSON_Delete(base);
        if (rc == 0)
            snprintf(cfg->name, sizeof cfg->name, "%s", preset);
        return rc;
    }
    return wisp_error_set(
        err, WISP_ERR_ARG,
        "unknown adapter preset \"%s\" (seq_bn, double_seq_bn, par_bn, lora, ia3)", preset);
}

int wisp_adapter_config_load_dir(wisp_adapter_config_t *cfg, const char *dir, int *hidden_size,
                                 wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    if (wisp_path_join(path, sizeof path, dir, "adapter_config.json") != 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    int rc = 0;
    cJSON *root = s_load(path, err, &rc);
    if (!root)
        return rc;
    if (!cJSON_IsObject(root)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !cJSON_IsNull(mt) &&
        !(cJSON_IsString(mt) && strcmp(mt->valuestring, "whisper") == 0)) {
        char val[64];
        s_value_text(mt, val, sizeof val);
        rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                            "%s: model_type is %s; wisp loads adapters made for \"whisper\"", path,
                            val);
        goto done;
    }
    const cJSON *conf = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (!cJSON_IsObject(conf)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing \"config\" object", path);
        goto done;
    }
    int hs = -1;
    if ((rc = s_get_int(root, "hidden_size", -1, 1, &hs, path, err)) != 0)
        goto done;
    if ((rc = wisp_adapter_config_parse(cfg, conf, path, err)) != 0)
        goto done;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (name && !cJSON_IsNull(name)) {
        if (!cJSON_IsString(name) || !name->valuestring[0] ||
            strlen(name->valuestring) >= sizeof cfg->name || strchr(name->valuestring, '.')) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                "%s: \"name\" must be a non-empty string without dots", path);
            goto done;
        }
        snprintf(cfg->name, sizeof cfg->name, "%s", name->valuestring);
    }
    if (hidden_size)
        *hidden_size = hs;
done:
    cJSON_Delete(root);
    if (rc != 0)
        wisp_adapter_config_free(cfg);
    return rc;
}

/* The library's float-typed fields: json.dump writes 1.0 where cJSON would give 1. */
static int s_floatify(cJSON *full)
{
    static const char *keys[] = {
        "scaling", "dropout", "phm_init_range", "stochastic_depth", "inv_adapter_reduction_factor",
        "vera_d",  "vera_b"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(full, keys[i]);
        if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble ||
            fabs(v->valuedouble) > 1e15)
            continue;
        char num[40];
        snprintf(num, sizeof num, "%.1f", v->valuedouble);
        cJSON *raw = cJSON_CreateRaw(num);
        if (!raw || !cJSON_ReplaceItemInObjectCaseSensitive(full, keys[i], raw)) {
            cJSON_Delete(raw);
            return WISP_ERR_NOMEM;
        }
    }
    return 0;
}

int wisp_adapter_config_save_dir(const wisp_adapter_config_t *cfg, const char *dir, int hidden_size,
                                 const char *model_name, wisp_error_t *err)
{
    char path[4096];
    if (wisp_path_join(path, sizeof path, dir, "adapter_config.json") != 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    if (!cfg->full)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: adapter config has no full dict", path);
    int rc = wisp_mkdir_p(dir, err);
    if (rc != 0)
        return rc;
    cJSON *root = cJSON_CreateObject();
    cJSON *full = cJSON_Duplicate(cfg->full, 1);
    int ok = root && full && s_floatify(full) == 0 && cJSON_AddItemToObject(root, "config", full);
    if (!ok)
        cJSON_Delete(full);
    ok = ok && cJSON_AddNumberToObject(root, "hidden_size", hidden_size) &&
         cJSON_AddStringToObject(root, "model_class", "WhisperForAudioClassification") &&
         (model_name ? cJSON_AddStringToObject(root, "model_name", model_name) != NULL
                     : cJSON_AddNullToObject(root, "model_name") != NULL) &&
         cJSON_AddStringToObject(root, "model_type", "whisper") &&
         cJSON_AddStringToObject(root, "name", cfg->name) &&
         cJSON_AddStringToObject(root, "version", S_ADAPTERS_VERSION);
    if (!ok || s_sort_keys(root) != 0)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    else
        rc = wisp_json_save(path, root, err);
    cJSON_Delete(root);
    return rc;
}

/* Python's float floor division a // b (the library computes int(d // rf)). */
static double s_py_floordiv(double a, double b)
{
    double mod = fmod(a, b);
    double div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0)))
        div -= 1.0;
    double fl = floor(div);
    if (div - fl > 0.5)
        fl += 1.0;
    return fl;
}

int wisp_adapter_config_bottleneck_dim(const wisp_adapter_config_t *cfg, int layer, int d)
{
    if (layer < 0 || layer >= WISP_MAX_LAYERS || !(cfg->reduction_factor[layer] > 0))
        return -1;
    double m = s_py_floordiv((double)d, (double)cfg->reduction_factor[layer]);
    if (m < 1)
        return 1;
    return m > 1e9 ? -1 : (int)m;
}

void wisp_adapter_config_free(wisp_adapter_config_t *cfg)
{
    if (!cfg)
        return;
    cJSON_Delete(cfg->full);
    cfg->full = NULL;
}

/* ---- head_config.json ------------------------------------------------------------- */

int wisp_head_config_load(wisp_head_config_t *cfg, const char *path, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    int rc = 0;
    cJSON *root = s_load(path, err, &rc);
    if (!root)
        return rc;
    int n_hint = -1;
    if (!cJSON_IsObject(root)) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    if ((rc = s_get_int(root, "num_labels", -9999, 1, &n_hint, path, err)) != 0 ||
        (rc = s_get_int(root, "classifier_proj_size", -9999, 1, &cfg->classifier_proj_size, path,
                        err)) != 0 ||
        (rc = s_get_bool(root, "use_weighted_layer_sum", 0, &cfg->use_weighted_layer_sum, path,
                         err)) != 0 ||
        (rc = s_get_int(root, "num_hidden_layers", -9999, 1, &cfg->num_hidden_layers, path, err)) !=
            0 ||
        (rc = s_get_int(root, "d_model", -9999, 1, &cfg->d_model, path, err)) != 0)
        goto done;
    rc = s_parse_labels(root, n_hint, &cfg->id2label, &cfg->num_labels, path, err);
done:
    cJSON_Delete(root);
    if (rc != 0)
        wisp_head_config_free(cfg);
    return rc;
}

int wisp_head_config_save(const wisp_head_config_t *cfg, const char *path, wisp_error_t *err)
{
    if (cfg->num_labels < 1 || !cfg->id2label)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: head config has no labels", path);
    cJSON *root = cJSON_CreateObject();
    int ok = root && cJSON_AddNumberToObject(root, "num_labels", cfg->num_labels) &&
             cJSON_AddNumberToObject(root, "classifier_proj_size", cfg->classifier_proj_size) &&
             cJSON_AddBoolToObject(root, "use_weighted_layer_sum", cfg->use_weighted_layer_sum) &&
             cJSON_AddNumberToObject(root, "num_hidden_layers", cfg->num_hidden_layers) &&
             cJSON_AddNumberToObject(root, "d_model", cfg->d_model) &&
             s_add_labels(root, cfg->id2label, cfg->num_labels) == 0;
    int rc;
    if (!ok || s_sort_keys(root) != 0)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    else
        rc = wisp_json_save(path, root, err);
    cJSON_Delete(root);
    return rc;
}

int wisp_head_config_label_id(const wisp_head_config_t *cfg, const char *label)
{
    if (!cfg || !label)
        return -1;
    for (int i = 0; i < cfg->num_labels; i++)
        if (strcmp(cfg->id2label[i], label) == 0)
            return i;
    return -1;
}

void wisp_head_config_free(wisp_head_config_t *cfg)
{
    if (!cfg)
        return;
    s_free_labels(cfg->id2label, cfg->num_labels);
    cfg->id2label = NULL;
    cfg->num_labels = 0;
}

/* Deep copy helper for callers that build a head config from a Whisper config. */
int wisp_head_config_from_whisper(wisp_head_config_t *head, const wisp_whisper_config_t *cfg)
{
    memset(head, 0, sizeof *head);
    head->id2label = s_copy_labels(cfg->id2label, cfg->num_labels);
    if (!head->id2label)
        return WISP_ERR_NOMEM;
    head->num_labels = cfg->num_labels;
    head->classifier_proj_size = cfg->classifier_proj_size;
    head->use_weighted_layer_sum = cfg->use_weighted_layer_sum;
    head->num_hidden_layers = cfg->encoder_layers;
    head->d_model = cfg->d_model;
    return 0;
}
