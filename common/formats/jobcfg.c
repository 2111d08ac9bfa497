#include "formats/jobcfg.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"
#include "formats/json.h"
#include "nn/adapter_config.h"

/* T_PRESET: an adapter preset name (nn/adapter_config.h) kept as is, anything else a path
 * (made absolute like T_PATH). */
typedef enum { T_OBJ, T_STR, T_PATH, T_PRESET, T_INT, T_I64, T_DBL, T_BOOL, T_PATHLIST } s_type_t;

/* Whether a string value of a key of this type is a path to make absolute. */
static int s_is_path(s_type_t type, const char *v)
{
    if (type == T_PATH)
        return 1;
    if (type != T_PRESET)
        return 0;
    return !wisp_adapter_is_preset(v);
}

typedef struct {
    const char *name; /* dotted key */
    s_type_t type;
    size_t off;       /* into wisp_jobcfg_t (unused for T_OBJ / T_PATHLIST) */
    size_t size;      /* char array size for T_STR / T_PATH */
    double lo, hi;    /* inclusive range for numbers */
    double def;       /* default for numbers and booleans */
    const char *sdef; /* default for strings */
} s_key_t;

#define F(field) offsetof(wisp_jobcfg_t, field), sizeof(((wisp_jobcfg_t *)0)->field)
#define N(field) offsetof(wisp_jobcfg_t, field), 0

static const s_key_t s_keys[] = {
    {"kind", T_STR, F(kind), 0, 0, 0, ""},
    {"model", T_PATH, F(model), 0, 0, 0, ""},
    {"adapter", T_PATH, F(adapter), 0, 0, 0, ""},
    {"head", T_PATH, F(head), 0, 0, 0, ""},
    {"adapter_config", T_PRESET, F(adapter_config), 0, 0, 0, ""},
    {"manifest", T_PATH, F(manifest), 0, 0, 0, ""},
    {"train_manifest", T_PATH, F(train_manifest), 0, 0, 0, ""},
    {"val_manifest", T_PATH, F(val_manifest), 0, 0, 0, ""},
    {"output", T_PATH, F(output), 0, 0, 0, ""},
    {"seed", T_I64, N(seed), 0, 9.0e15, 0, NULL},
    {"null", T_OBJ, 0, 0, 0, 0, 0, NULL},
    {"null.items", T_I64, N(null_items), 0, 1.0e12, 1000, NULL},
    {"null.item_seconds", T_DBL, N(null_item_seconds), 0, 1.0e6, 1.0, NULL},
    {"null.fail_every", T_I64, N(null_fail_every), 0, 1.0e12, 0, NULL},
    {"null.work_ms", T_DBL, N(null_work_ms), 0, 1.0e6, 0, NULL},
    {"classify", T_OBJ, 0, 0, 0, 0, 0, NULL},
    {"classify.batch_size", T_INT, N(classify_batch_size), 1, 4096, 8, NULL},
    {"classify.embedding", T_BOOL, N(classify_embedding), 0, 1, 0, NULL},
    {"classify.truncate", T_BOOL, N(classify_truncate), 0, 1, 0, NULL},
    {"classify.probe_durations", T_BOOL, N(classify_probe_durations), 0, 1, 0, NULL},
    /* long audio: windows of classify.window seconds every classify.hop seconds (0: the
     * window), file row = classify.aggregate (mean | max) of the windows; 0 = off */
    {"classify.window", T_DBL, N(classify_window), 0, 30, 0, NULL},
    {"classify.hop", T_DBL, N(classify_hop), 0, 30, 0, NULL},
    {"classify.aggregate", T_STR, F(classify_aggregate), 0, 0, 0, "mean"},
    {"classify.top_k", T_INT, N(classify_top_k), 0, 1000, 0, NULL},
    {"classify.precision", T_STR, F(classify_precision), 0, 0, 0, "fp32"}, /* fp32 | int8 */
    {"train", T_OBJ, 0, 0, 0, 0, 0, NULL},
    {"train.epochs", T_INT, N(train_epochs), 1, 1.0e6, 1, NULL},
    {"train.global_batch", T_INT, N(train_global_batch), 1, 1.0e6, 16, NULL},
    {"train.lr", T_DBL, N(train_lr), 0, 10, 1e-3, NULL},
    {"train.weight_decay", T_DBL, N(train_weight_decay), 0, 10, 0.01, NULL},
    {"train.max_steps", T_I64, N(train_max_steps), 0, 1.0e12, 0, NULL},
    {"train.checkpoint_every", T_INT, N(train_checkpoint_every), 0, 1.0e9, 0, NULL},
    {"train.checksum_every", T_INT, N(train_checksum_every), 1, 1.0e9, 10, NULL},
    /* fixed_order_reduce: per-item gradients (B = 1, micro_batch ignored: slower) gathered
     * in global item order on every rank, bitwise-identical across world sizes; memory
     * global_batch x (4 x trainable params + 32) bytes per rank (x2 with > 1 rank),
     * refused above 2 GiB (job_train.c). */
    {"train.fixed_order_reduce", T_BOOL, N(train_fixed_order_reduce), 0, 1, 0, NULL},
    {"train.micro_batch", T_INT, N(train_micro_batch), 1, 4096, 8, NULL},
    /* default: WISP_MODEL_ATTN_KEEP_MB_DEFAULT (nn/model.h; test_jobcfg checks they agree) */
    {"train.attn_keep_mb", T_INT, N(train_attn_keep_mb), 0, 1 << 30, 1024, NULL},
    {"train.truncate", T_BOOL, N(train_truncate), 0, 1, 0, NULL},
    /* long audio: a seeded random window of train.window seconds per (epoch, item); 0: the
     * first 30 s (the range of classify.window, whose value a head trained so expects) */
    {"train.window", T_DBL, N(train_window), 0, 30, 0, NULL},
    {"train.schedule", T_STR, F(train_schedule), 0, 0, 0, "linear"},
    {"train.classes", T_PATH, F(train_classes), 0, 0, 0, ""},
    {"train.unlabeled", T_STR, F(train_unlabeled), 0, 0, 0, "error"},
    {"train.warmup", T_I64, N(train_warmup), 0, 1.0e12, 0, NULL},
    {"train.clip", T_DBL, N(train_clip), 0, 1.0e12, 1.0, NULL},
    {"train.keep", T_INT, N(train_keep), 0, 1000000, 2, NULL},
    {"train.keep_best", T_BOOL, N(train_keep_best), 0, 1, 0, NULL},
    {"train.patience", T_INT, N(train_patience), 0, 1000000, 0, NULL},
    {"train.dump_grads", T_PATH, F(train_dump_grads), 0, 0, 0, ""},
    {"cluster", T_OBJ, 0, 0, 0, 0, 0, NULL},
    {"cluster.endpoint", T_STR, F(endpoint), 0, 0, 0, "tcp://127.0.0.1:0"},
    {"cluster.shard_seconds", T_DBL, N(shard_seconds), 0.001, 1.0e9, 60, NULL},
    {"cluster.shard_size", T_INT, N(shard_size), 1, 1000000, 64, NULL},
    {"cluster.credit", T_INT, N(credit), 1, 64, 2, NULL},
    {"cluster.lease_timeout", T_DBL, N(lease_timeout), 0.1, 1.0e6, 60, NULL},
    {"cluster.heartbeat", T_DBL, N(heartbeat), 0.01, 1.0e5, 2, NULL},
    {"cluster.threads_per_worker", T_INT, N(threads_per_worker), 1, 1024, 1, NULL},
    {"cluster.max_message_mb", T_DBL, N(max_message_mb), 0.001, 4096, 256, NULL},
    {"cluster.progress_interval", T_DBL, N(progress_interval), 0.05, 1.0e6, 5, NULL},
    {"cluster.commit_interval", T_DBL, N(commit_interval), 0.01, 1.0e6, 5, NULL},
    {"cluster.curve", T_OBJ, 0, 0, 0, 0, 0, NULL},
    {"cluster.curve.server_secret", T_PATH, F(curve_server_secret), 0, 0, 0, ""},
    {"cluster.curve.client_keys", T_PATHLIST, 0, 0, 0, 0, 0, NULL},
};
#define S_NKEYS ((int)(sizeof s_keys / sizeof s_keys[0]))

int wisp_jobcfg_keys(const char *const **names)
{
    static const char *list[sizeof s_keys / sizeof s_keys[0]];
    for (int i = 0; i < S_NKEYS; i++)
        list[i] = s_keys[i].name;
    *names = list;
    return S_NKEYS;
}

static const s_key_t *s_find(const char *name)
{
    for (int i = 0; i < S_NKEYS; i++)
        if (strcmp(s_keys[i].name, name) == 0)
            return &s_keys[i];
    return NULL;
}

static void s_defaults(wisp_jobcfg_t *cfg)
{
    for (int i = 0; i < S_NKEYS; i++) {
        const s_key_t *k = &s_keys[i];
        char *base = (char *)cfg + k->off;
        switch (k->type) {
        case T_STR:
        case T_PATH:
        case T_PRESET: snprintf(base, k->size, "%s", k->sdef ? k->sdef : ""); break;
        case T_INT:
        case T_BOOL: *(int *)base = (int)k->def; break;
        case T_I64: *(int64_t *)base = (int64_t)k->def; break;
        case T_DBL: *(double *)base = k->def; break;
        default: break;
        }
    }
}

static int s_abspath_raw(char *dst, size_t n, const char *dir, const char *p);

/* Lexical clean-up of an absolute path in place: "//", "/./" and "name/.."
 * go (symlinks are not resolved: the file may not exist yet). */
static void s_normalize(char *path)
{
    char *out = path, *seg = path;
    size_t len = 0;
    while (*seg) {
        while (*seg == '/')
            seg++;
        char *end = seg;
        while (*end && *end != '/')
            end++;
        size_t sl = (size_t)(end - seg);
        if (sl == 0 || (sl == 1 && seg[0] == '.')) {
            /* skip */
        } else if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
            while (len > 0 && out[len - 1] != '/')
                len--;
            if (len > 0)
                len--; /* the slash before the removed name */
        } else {
            out[len++] = '/';
            memmove(out + len, seg, sl);
            len += sl;
        }
        seg = end;
    }
    if (len == 0)
        out[len++] = '/';
    out[len] = '\0';
}

/* Absolute form of p: against dir when relative (dir itself made absolute
 * against the current directory), normalised. */
static int s_abspath(char *dst, size_t n, const char *dir, const char *p)
{
    int rc = s_abspath_raw(dst, n, dir, p);
    if (rc == 0 && dst[0] == '/')
        s_normalize(dst);
    return rc;
}

static int s_abspath_raw(char *dst, size_t n, const char *dir, const char *p)
{
    char cwd[PATH_MAX], d[2 * PATH_MAX];
    if (p[0] == '/' || p[0] == '\0')
        return snprintf(dst, n, "%s", p) >= (int)n ? WISP_ERR_ARG : WISP_OK;
    if (!dir || !dir[0] || dir[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            return WISP_ERR_IO;
        if (dir && dir[0] && strcmp(dir, ".") != 0)
            snprintf(d, sizeof d, "%s/%s", cwd, dir);
        else
            snprintf(d, sizeof d, "%s", cwd);
    } else {
        snprintf(d, sizeof d, "%s", dir);
    }
    return wisp_path_join(dst, n, d, p);
}

/* Sets a string value into cfg->json at the dotted name, creating parents. */
static int s_json_put(cJSON *root, const char *name, cJSON *value, const char *where,
                      wisp_error_t *err)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", name);
    cJSON *obj = root;
    char *save = NULL;
    char *tok = strtok_r(buf, ".", &save);
    while (tok) {
        char *next = strtok_r(NULL, ".", &save);
        if (!next) {
            if (cJSON_GetObjectItemCaseSensitive(obj, tok))
                cJSON_ReplaceItemInObjectCaseSensitive(obj, tok, value);
            else
                cJSON_AddItemToObject(obj, tok, value);
            return WISP_OK;
        }
        cJSON *child = cJSON_GetObjectItemCaseSensitive(obj, tok);
        if (!child) {
            child = cJSON_AddObjectToObject(obj, tok);
            if (!child)
                break;
        } else if (!cJSON_IsObject(child)) {
            cJSON_Delete(value);
            return wisp_error_set(err, WISP_ERR_ARG, "%s: key '%s' is not an object", where, tok);
        }
        obj = child;
        tok = next;
    }
    cJSON_Delete(value);
    return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
}

static int s_apply_set(cJSON *root, const char *assignment, wisp_error_t *err)
{
    const char *eq = strchr(assignment, '=');
    char name[256];
    if (!eq || eq == assignment || (size_t)(eq - assignment) >= sizeof name)
        return wisp_error_set(err, WISP_ERR_ARG, "--set '%s': expected key=value", assignment);
    snprintf(name, sizeof name, "%.*s", (int)(eq - assignment), assignment);
    const char *v = eq + 1;
    const s_key_t *k = s_find(name);
    if (!k)
        return wisp_error_set(err, WISP_ERR_ARG, "--set: unknown key '%s'", name);
    cJSON *value = NULL;
    char *end = NULL;
    switch (k->type) {
    case T_OBJ:
        return wisp_error_set(err, WISP_ERR_ARG, "--set: '%s' is a section, set its keys", name);
    case T_STR:
    case T_PATH:
    case T_PRESET: {
        if (!s_is_path(k->type, v)) {
            value = cJSON_CreateString(v);
            break;
        }
        char abs[WISP_JOBCFG_PATH_MAX];
        if (s_abspath(abs, sizeof abs, NULL, v) != 0)
            return wisp_error_set(err, WISP_ERR_ARG, "--set %s: path too long", name);
        value = cJSON_CreateString(abs);
        break;
    }
    case T_INT:
    case T_I64:
    case T_DBL: {
        errno = 0;
        double d = strtod(v, &end);
        if (!v[0] || *end || errno)
            return wisp_error_set(err, WISP_ERR_ARG, "--set %s: '%s' is not a number", name, v);
        value = cJSON_CreateNumber(d);
        break;
    }
    case T_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1"))
            value = cJSON_CreateTrue();
        else if (!strcmp(v, "false") || !strcmp(v, "0"))
            value = cJSON_CreateFalse();
        else
            return wisp_error_set(err, WISP_ERR_ARG, "--set %s: '%s' is not true/false", name, v);
        break;
    case T_PATHLIST: {
        value = cJSON_CreateArray();
        char buf[8192];
        snprintf(buf, sizeof buf, "%s", v);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t && value; t = strtok_r(NULL, ",", &save)) {
            char abs[WISP_JOBCFG_PATH_MAX];
            if (s_abspath(abs, sizeof abs, NULL, t) != 0) {
                cJSON_Delete(value);
                return wisp_error_set(err, WISP_ERR_ARG, "--set %s: path too long", name);
            }
            cJSON_AddItemToArray(value, cJSON_CreateString(abs));
        }
        break;
    }
    }
    if (!value)
        return wisp_error_set(err, WISP_ERR_NOMEM, "--set %s: out of memory", name);
    return s_json_put(root, name, value, "--set", err);
}

/* Walks obj (the section named prefix), refusing unknown keys and filling cfg. */
static int s_walk(wisp_jobcfg_t *cfg, cJSON *obj, const char *prefix, const char *base_dir,
                  const char *where, wisp_error_t *err)
{
    cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        char name[256];
        if (!it->string)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: unnamed value", where);
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        const s_key_t *k = s_find(name);
        if (!k)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: unknown key '%s'", where, name);
        char *base = (char *)cfg + k->off;
        switch (k->type) {
        case T_OBJ:
            if (!cJSON_IsObject(it))
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' must be an object", where, name);
            int rc = s_walk(cfg, it, name, base_dir, where, err);
            if (rc)
                return rc;
            break;
        case T_STR:
        case T_PATH:
        case T_PRESET:
            if (!cJSON_IsString(it))
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' must be a string", where, name);
            if (s_is_path(k->type, it->valuestring)) {
                char abs[WISP_JOBCFG_PATH_MAX];
                if (s_abspath(abs, sizeof abs, base_dir, it->valuestring) != 0)
                    return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' path too long", where, name);
                if (strcmp(abs, it->valuestring) != 0 && !cJSON_SetValuestring(it, abs))
                    return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
            }
            if (strlen(it->valuestring) >= k->size)
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' is too long", where, name);
            snprintf(base, k->size, "%s", it->valuestring);
            break;
        case T_BOOL:
            if (!cJSON_IsBool(it))
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' must be true or false", where,
                                      name);
            *(int *)base = cJSON_IsTrue(it);
            break;
        case T_INT:
        case T_I64:
        case T_DBL: {
            if (!cJSON_IsNumber(it))
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' must be a number", where, name);
            double d = it->valuedouble;
            if (!isfinite(d) || d < k->lo || d > k->hi)
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' = %g is outside [%g, %g]", where,
                                      name, d, k->lo, k->hi);
            if (k->type != T_DBL && d != floor(d))
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' must be an integer", where,
                                      name);
            if (k->type == T_INT)
                *(int *)base = (int)d;
            else if (k->type == T_I64)
                *(int64_t *)base = (int64_t)d;
            else
                *(double *)base = d;
            break;
        }
        case T_PATHLIST: {
            if (!cJSON_IsArray(it))
                return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' must be a list of files", where,
                                      name);
            cfg->n_client_keys = 0;
            cJSON *e;
            cJSON_ArrayForEach(e, it)
            {
                if (!cJSON_IsString(e))
                    return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' entries must be strings",
                                          where, name);
                if (cfg->n_client_keys >= WISP_JOBCFG_MAX_CLIENT_KEYS)
                    return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' lists more than %d keys",
                                          where, name, WISP_JOBCFG_MAX_CLIENT_KEYS);
                char *dst = cfg->client_keys[cfg->n_client_keys++];
                if (s_abspath(dst, WISP_JOBCFG_PATH_MAX, base_dir, e->valuestring) != 0)
                    return wisp_error_set(err, WISP_ERR_ARG, "%s: '%s' path too long", where, name);
                if (strcmp(dst, e->valuestring) != 0 && !cJSON_SetValuestring(e, dst))
                    return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
            }
            break;
        }
        }
    }
    return WISP_OK;
}

static int s_check(const wisp_jobcfg_t *cfg, const char *where, wisp_error_t *err)
{
    if (!strcmp(cfg->kind, "null")) {
        if (!cfg->output[0])
            return wisp_error_set(err, WISP_ERR_ARG, "%s: kind 'null' needs 'output'", where);
    } else if (!strcmp(cfg->kind, "classify")) {
        if (!cfg->model[0] || !cfg->manifest[0] || !cfg->output[0])
            return wisp_error_set(err, WISP_ERR_ARG,
                                  "%s: kind 'classify' needs 'model', 'manifest' and 'output'",
                                  where);
    } else if (!strcmp(cfg->kind, "train")) {
        if (!cfg->model[0] || !cfg->train_manifest[0] || !cfg->output[0])
            return wisp_error_set(err, WISP_ERR_ARG,
                                  "%s: kind 'train' needs 'model', 'train_manifest' and 'output'",
                                  where);
    } else {
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: 'kind' must be null, classify or train (got '%s')", where,
                              cfg->kind);
    }
    /* string choices are refused here, by the coordinator, before any worker starts */
    if (strcmp(cfg->classify_precision, "fp32") != 0 &&
        strcmp(cfg->classify_precision, "int8") != 0)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: 'classify.precision' must be fp32 or int8 (got '%s')", where,
                              cfg->classify_precision);
    if (strcmp(cfg->train_unlabeled, "error") != 0 && strcmp(cfg->train_unlabeled, "skip") != 0)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: 'train.unlabeled' must be error or skip (got '%s')", where,
                              cfg->train_unlabeled);
    if (strncmp(cfg->endpoint, "tcp://", 6) != 0 && strncmp(cfg->endpoint, "ipc://", 6) != 0 &&
        strncmp(cfg->endpoint, "inproc://", 9) != 0)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: 'cluster.endpoint' '%s' is not tcp://, ipc:// or inproc://",
                              where, cfg->endpoint);
    if (cfg->curve_server_secret[0] && cfg->n_client_keys == 0)
        return wisp_error_set(
            err, WISP_ERR_ARG,
            "%s: 'cluster.curve.server_secret' needs 'cluster.curve.client_keys' (the allowlist)",
            where);
    return WISP_OK;
}

int wisp_jobcfg_parse(wisp_jobcfg_t *cfg, const char *text, const char *base_dir, const char *where,
                      char *const *sets, int n_sets, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    s_defaults(cfg);
    /* Python's json semantics (last of duplicate keys, nothing after the object) and
     * one-line errors with line and column */
    cJSON *root = NULL;
    int rc = wisp_json_parse(text, strlen(text), where, &root, err);
    if (rc != WISP_OK)
        return rc;
    if (!cJSON_IsObject(root)) {
        rc =
            wisp_error_set(err, WISP_ERR_FORMAT, "%s: the job config must be a JSON object", where);
        goto done;
    }
    for (int i = 0; i < n_sets; i++)
        if ((rc = s_apply_set(root, sets[i], err)) != 0)
            goto done;
    if ((rc = s_walk(cfg, root, "", base_dir, where, err)) != 0)
        goto done;
    if ((rc = s_check(cfg, where, err)) != 0)
        goto done;
    cfg->json = root;
    root = NULL;
done:
    cJSON_Delete(root);
    if (rc) {
        memset(cfg, 0, sizeof *cfg);
    }
    return rc;
}

int wisp_jobcfg_load(wisp_jobcfg_t *cfg, const char *path, char *const *sets, int n_sets,
                     wisp_error_t *err)
{
    char *text = NULL;
    char dir[WISP_JOBCFG_PATH_MAX];
    memset(cfg, 0, sizeof *cfg);
    int rc = wisp_read_file(path, 16u << 20, &text, NULL, err);
    if (rc)
        return rc;
    wisp_path_dirname(dir, sizeof dir, path);
    rc = wisp_jobcfg_parse(cfg, text, dir, path, sets, n_sets, err);
    free(text);
    if (rc == 0)
        snprintf(cfg->path, sizeof cfg->path, "%s", path);
    return rc;
}

int wisp_jobcfg_set(wisp_jobcfg_t *cfg, const char *assignment, wisp_error_t *err)
{
    char *text = wisp_jobcfg_to_string(cfg);
    if (!text)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    char path[WISP_JOBCFG_PATH_MAX];
    snprintf(path, sizeof path, "%s", cfg->path);
    wisp_jobcfg_t next;
    char *sets[1] = {(char *)assignment};
    int rc = wisp_jobcfg_parse(&next, text, NULL, path[0] ? path : "job config", sets, 1, err);
    free(text);
    if (rc)
        return rc;
    wisp_jobcfg_free(cfg);
    *cfg = next;
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    return WISP_OK;
}

char *wisp_jobcfg_to_string(const wisp_jobcfg_t *cfg)
{
    return cfg->json ? cJSON_PrintUnformatted(cfg->json) : NULL;
}

void wisp_jobcfg_free(wisp_jobcfg_t *cfg)
{
    if (!cfg)
        return;
    cJSON_Delete(cfg->json);
    cfg->json = NULL;
}
