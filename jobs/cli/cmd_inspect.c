/* cmd_inspect.c: `wisp inspect PATH` shows what a checkpoint, adapter or head
 * directory (or a bare .safetensors file) holds: the configuration, every tensor
 * with dtype and shape, parameter counts by part, and the problems a load would
 * hit (missing or mis-shaped encoder tensors, refused config fields, bad files). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audio/windows.h"
#include "cli/commands.h"
#include "formats/json.h"
#include "formats/config.h"
#include "nn/adapter_config.h"
#include "formats/st.h"
#include "base/util.h"
#include "nn/blas.h"
#include "nn/model.h"

typedef struct {
    int list_tensors; /* print the tensor table */
    int problems;     /* count of problems found */
} s_ctx_t;

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: wisp inspect [--summary] PATH\n"
        "\n"
        "Shows what PATH holds and whether wisp can load it:\n"
        "  checkpoint dir  config.json + model.safetensors (or a sharded index)\n"
        "  adapter dir     adapter_config.json + adapter.safetensors (adapters library layout)\n"
        "  head dir        head_config.json + model_head.safetensors (+ features.json)\n"
        "  training run    wisp train / wisp run output: metrics.jsonl, checkpoints/LATEST,\n"
        "                  and its adapter/ and head/\n"
        "  checkpoint dir  OUTDIR/checkpoints/step-N: state.json, params.safetensors,\n"
        "                  adamw.safetensors, adapter/, head/\n"
        "  file            any .safetensors file\n"
        "Prints the configuration, each tensor (name, dtype, shape) and parameter counts\n"
        "(total, encoder, decoder, head, adapter). Exit status 0 when everything loads,\n"
        "3 when a problem was found (each one is printed).\n"
        "\n"
        "options:\n"
        "  --summary   skip the tensor table\n"
        "\n"
        "examples:\n"
        "  wisp inspect models/whisper-tiny\n"
        "  wisp inspect runs/exp1/adapter\n"
        "  wisp inspect --summary runs/exp1/head\n"
        "  wisp inspect model.safetensors\n");
}

static void s_problem(s_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_problem(s_ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    c->problems++;
    printf("  PROBLEM: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static void s_human(char *buf, size_t size, long long n)
{
    if (n >= 1000000000LL)
        snprintf(buf, size, "%lld (%.2fB)", n, (double)n / 1e9);
    else if (n >= 1000000)
        snprintf(buf, size, "%lld (%.2fM)", n, (double)n / 1e6);
    else if (n >= 1000)
        snprintf(buf, size, "%lld (%.1fK)", n, (double)n / 1e3);
    else
        snprintf(buf, size, "%lld", n);
}

static void s_shape(char *buf, size_t size, const wisp_st_tensor_t *t)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

/* Which part of a model a tensor belongs to, by the naming of HF checkpoints and the
 * adapters library: adapter tensors sit inside encoder layers, so they are tested
 * before "encoder." (the head's are bare: projector., classifier., layer_weights). */
static const char *s_part(const char *name)
{
    if (strstr(name, ".adapters.") || strstr(name, ".loras.") || strstr(name, "adapter_"))
        return "adapter";
    if (strncmp(name, "projector.", 10) == 0 || strncmp(name, "classifier.", 11) == 0 ||
        strcmp(name, "layer_weights") == 0)
        return "head";
    if (strstr(name, "encoder."))
        return "encoder";
    if (strstr(name, "decoder.") || strcmp(name, "proj_out.weight") == 0)
        return "decoder";
    return "other";
}

/* Lists tensors and parameter counts of an opened checkpoint. */
static void s_tensors(s_ctx_t *c, const wisp_st_t *st)
{
    static const char *parts[] = {"encoder", "decoder", "head", "adapter", "other"};
    long long count[5] = {0}, total = 0;
    int dtypes[16] = {0}; /* tensors per wisp_dtype_t (st.h has fewer than 16 kinds) */
    size_t width = 4;
    for (int i = 0; i < wisp_st_count(st); i++) {
        size_t n = strlen(wisp_st_at(st, i)->name);
        width = n > width ? n : width;
    }
    if (c->list_tensors && wisp_st_count(st) > 0)
        printf("  %-*s  %-5s  %s\n", (int)width, "name", "dtype", "shape");
    for (int i = 0; i < wisp_st_count(st); i++) {
        const wisp_st_tensor_t *t = wisp_st_at(st, i);
        const char *part = s_part(t->name);
        for (int p = 0; p < 5; p++)
            if (strcmp(part, parts[p]) == 0)
                count[p] += (long long)t->numel;
        total += (long long)t->numel;
        dtypes[t->dtype & 15]++;
        if (c->list_tensors) {
            char shape[160];
            s_shape(shape, sizeof shape, t);
            printf("  %-*s  %-5s  %s\n", (int)width, t->name, wisp_dtype_name(t->dtype), shape);
        }
    }
    printf("  dtypes:");
    for (int d = 0; d < 16; d++)
        if (dtypes[d])
            printf(" %s x%d", wisp_dtype_name((wisp_dtype_t)d), dtypes[d]);
    printf("\n");
    char buf[64];
    s_human(buf, sizeof buf, total);
    printf("  parameters: total %s", buf);
    for (int p = 0; p < 5; p++)
        if (count[p]) {
            s_human(buf, sizeof buf, count[p]);
            printf(", %s %s", parts[p], buf);
        }
    printf("\n");
}

/* Opens the safetensors of a directory or file and prints them. In a directory,
 * `preferred` (e.g. adapter.safetensors) is used when it exists, so an adapter and a
 * head saved side by side are told apart. */
static wisp_st_t *s_open_weights(s_ctx_t *c, const char *path, const char *preferred)
{
    wisp_error_t err = {0};
    char pref[4096];
    struct stat sb;
    if (preferred && wisp_path_join(pref, sizeof pref, path, preferred) == 0 &&
        stat(pref, &sb) == 0)
        path = pref;
    wisp_st_t *st = wisp_st_open(path, &err);
    if (!st) {
        s_problem(c, "%s", err.msg);
        return NULL;
    }
    int nfiles = 0;
    const char *prev = NULL;
    for (int i = 0; i < wisp_st_count(st); i++) {
        const char *f = wisp_st_at(st, i)->file;
        if (!prev || strcmp(prev, f) != 0) {
            int seen = 0;
            for (int k = 0; k < i && !seen; k++)
                seen = strcmp(wisp_st_at(st, k)->file, f) == 0;
            nfiles += !seen;
        }
        prev = f;
    }
    printf("  weights: %d tensors in %d file%s", wisp_st_count(st), nfiles, nfiles == 1 ? "" : "s");
    if (nfiles == 1)
        printf(" (%s)", wisp_st_at(st, 0)->file);
    const char *fmt = wisp_st_metadata(st, "format");
    if (fmt)
        printf(", format=%s", fmt);
    printf("\n");
    return st;
}

/* Checks a tensor's presence and shape; returns 1 when fine. */
static int s_expect(s_ctx_t *c, const wisp_st_t *st, const char *name, int ndim, int64_t a,
                    int64_t b, int64_t d2)
{
    const wisp_st_tensor_t *t = wisp_st_find(st, name);
    if (!t) {
        s_problem(c, "tensor %s is missing", name);
        return 0;
    }
    int64_t want[3] = {a, b, d2};
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == want[i];
    if (!ok) {
        char got[160], exp[160];
        s_shape(got, sizeof got, t);
        wisp_st_tensor_t tmp = {.ndim = ndim};
        for (int i = 0; i < ndim; i++)
            tmp.shape[i] = want[i];
        s_shape(exp, sizeof exp, &tmp);
        c->problems++;
        printf("  PROBLEM: tensor %s has shape %s, the config implies %s\n", name, got, exp);
        return 0;
    }
    if (t->dtype != WISP_DT_F32 && t->dtype != WISP_DT_F16 && t->dtype != WISP_DT_BF16 &&
        t->dtype != WISP_DT_F64) {
        s_problem(c, "tensor %s has dtype %s (wisp needs a float type)", name,
                  wisp_dtype_name(t->dtype));
        return 0;
    }
    return 1;
}

/* Encoder tensors implied by config.json (docs/NUMERICS.md section 6). */
static void s_check_encoder(s_ctx_t *c, const wisp_st_t *st, const wisp_whisper_config_t *cfg)
{
    const char *prefix = wisp_model_base_prefix(st);
    if (!prefix) {
        s_problem(
            c, "no encoder tensors (neither model.encoder.conv1.weight nor encoder.conv1.weight)");
        return;
    }
    printf("  encoder prefix: %s\n", prefix);
    int checked = 0, good = 0;
    char n[256], rest[64];
    wisp_model_base_t t;
    for (int i = 0; wisp_model_base_at(cfg, i, &t) == 0; i++, checked++) {
        snprintf(n, sizeof n, "%s%s", prefix, t.name);
        good += s_expect(c, st, n, t.ndim, t.shape[0], t.shape[1], t.shape[2]);
    }
    wisp_model_base_name(rest, sizeof rest, WISP_BASE_FC1_W, cfg->encoder_layers);
    snprintf(n, sizeof n, "%s%s", prefix, rest);
    if (wisp_st_find(st, n)) {
        c->problems++;
        printf("  PROBLEM: the checkpoint has more encoder layers than encoder_layers=%d in "
               "config.json\n",
               cfg->encoder_layers);
    }
    printf("  encoder check: %d of %d expected tensors present with the right shape\n", good,
           checked);
    if (wisp_st_find(st, "projector.weight")) {
        const wisp_st_tensor_t *p = wisp_st_find(st, "projector.weight");
        const wisp_st_tensor_t *k = wisp_st_find(st, "classifier.weight");
        printf("  classification head in the checkpoint: projector %lldx%lld, classifier %s\n",
               (long long)p->shape[0], p->ndim > 1 ? (long long)p->shape[1] : 0LL,
               k ? "present" : "MISSING");
    }
}

static void s_labels(const char *const *labels, int n)
{
    printf("  labels (%d):", n);
    for (int i = 0; i < n && i < 12; i++)
        printf(" %d=%s", i, labels[i]);
    if (n > 12)
        printf(" ...");
    printf("\n");
}

static void s_checkpoint(s_ctx_t *c, const char *dir, const char *cfg_path)
{
    printf("checkpoint: %s\n", dir);
    wisp_whisper_config_t cfg;
    wisp_error_t err = {0};
    int have_cfg = wisp_whisper_config_load(&cfg, cfg_path, &err) == 0;
    if (have_cfg) {
        printf("  config.json: whisper d_model=%d encoder_layers=%d encoder_attention_heads=%d "
               "encoder_ffn_dim=%d "
               "num_mel_bins=%d max_source_positions=%d\n",
               cfg.d_model, cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim,
               cfg.num_mel_bins, cfg.max_source_positions);
        printf("  head config: classifier_proj_size=%d use_weighted_layer_sum=%s\n",
               cfg.classifier_proj_size, cfg.use_weighted_layer_sum ? "true" : "false");
        s_labels((const char *const *)cfg.id2label, cfg.num_labels);
    } else {
        s_problem(c, "%s", err.msg);
    }
    wisp_st_t *st = s_open_weights(c, dir, NULL);
    if (st) {
        if (have_cfg)
            s_check_encoder(c, st, &cfg);
        s_tensors(c, st);
    }
    wisp_st_destroy(&st);
    if (have_cfg)
        wisp_whisper_config_free(&cfg);
}

/* Encoder layers an adapter's weights cover: 1 + the highest i of a tensor
 * [model.]encoder.layers.<i>.* or of a leave_out entry. adapter_config.json fits any
 * depth, so the weights are what says how deep this adapter is (0: nothing names a
 * layer). An index from the file is range-checked before use. */
static int s_adapter_layers(s_ctx_t *c, const wisp_st_t *st, const wisp_adapter_config_t *a)
{
    int n = 0;
    for (int l = 0; l < WISP_MAX_LAYERS; l++)
        if (a->leave_out[l])
            n = l + 1;
    for (int i = 0; st && i < wisp_st_count(st); i++) {
        const char *name = wisp_st_at(st, i)->name;
        const char *rest = strncmp(name, "model.", 6) == 0 ? name + 6 : name;
        if (strncmp(rest, "encoder.layers.", 15) != 0 || rest[15] < '0' || rest[15] > '9')
            continue;
        char *end;
        long l = strtol(rest + 15, &end, 10);
        if (*end != '.' || l >= WISP_MAX_LAYERS) {
            s_problem(c, "tensor %s: layer index outside [0, %d)", name, WISP_MAX_LAYERS);
            continue;
        }
        n = (int)l + 1 > n ? (int)l + 1 : n;
    }
    return n;
}

/* The bottleneck width of each of the n layers (0 = left out) by the config's rule
 * (hidden size / the layer's reduction_factor), and each adapter_down weight
 * (m, hidden) checked against it: the shapes a load would insist on. */
static void s_bn_widths(s_ctx_t *c, const wisp_st_t *st, const wisp_adapter_config_t *a, int hs,
                        int n)
{
    static const char *const site[2] = {"attention_adapters", "output_adapters"};
    const int want[2] = {a->mh_adapter, a->output_adapter};
    printf("  bottleneck width per layer (%d layer%s):", n, n == 1 ? "" : "s");
    for (int l = 0; l < n; l++)
        printf(" %d", a->leave_out[l] ? 0 : wisp_adapter_config_bottleneck_dim(a, l, hs));
    printf("%s\n", n ? " (0 = left out)" : " none");
    for (int l = 0; st && l < n; l++) {
        int m = wisp_adapter_config_bottleneck_dim(a, l, hs);
        if (m < 1 && !a->leave_out[l])
            s_problem(c, "layer %d: reduction_factor has neither this layer nor \"default\"", l);
        for (int k = 0; k < 2 && m >= 1 && !a->leave_out[l]; k++) {
            char name[400], full[408];
            snprintf(name, sizeof name, "encoder.layers.%d.%s.adapters.%s.adapter_down.0.weight", l,
                     site[k], a->name);
            snprintf(full, sizeof full, "model.%s", name);
            if (want[k])
                s_expect(c, st, wisp_st_find(st, full) ? full : name, 2, m, hs, 0);
        }
    }
}

static void s_adapter(s_ctx_t *c, const char *dir)
{
    printf("adapter: %s\n", dir);
    wisp_adapter_config_t a;
    wisp_error_t err = {0};
    int hs = -1, have_cfg = wisp_adapter_config_load_dir(&a, dir, &hs, &err) == 0;
    if (!have_cfg) {
        s_problem(c, "%s", err.msg);
    } else {
        printf("  name: %s, kind: %s, hidden_size: %d\n", a.name, wisp_adapter_kind_name(a.kind),
               hs);
        if (a.kind == WISP_ADAPTER_BOTTLENECK) {
            printf("  sites:%s%s%s, non_linearity=%s, scaling=%g, original_ln_before=%d "
                   "original_ln_after=%d "
                   "residual_before_ln=%d, init=%s\n",
                   a.mh_adapter ? " attention" : "", a.output_adapter ? " output" : "",
                   a.is_parallel ? " (parallel)" : "",
                   cJSON_GetStringValue(cJSON_GetObjectItem(a.full, "non_linearity")),
                   (double)a.scaling, a.original_ln_before, a.original_ln_after,
                   a.residual_before_ln, a.init_weights);
        } else {
            printf("  r=%d alpha=%g matrices:%s%s%s%s%s init=%s\n", a.r, (double)a.alpha,
                   a.attn_q ? " q" : "", a.attn_k ? " k" : "", a.attn_v ? " v" : "",
                   a.intermediate_lora ? " fc1" : "", a.output_lora ? " fc2" : "", a.init_weights);
        }
        int nleft = 0;
        for (int l = 0; l < WISP_MAX_LAYERS; l++)
            nleft += a.leave_out[l];
        if (nleft) {
            printf("  leave_out:");
            for (int l = 0; l < WISP_MAX_LAYERS; l++)
                if (a.leave_out[l])
                    printf(" %d", l);
            printf("\n");
        }
    }
    wisp_st_t *st = s_open_weights(c, dir, "adapter.safetensors");
    if (have_cfg && a.kind == WISP_ADAPTER_BOTTLENECK && hs > 0)
        s_bn_widths(c, st, &a, hs, s_adapter_layers(c, st, &a));
    if (st)
        s_tensors(c, st);
    wisp_st_destroy(&st);
    if (have_cfg)
        wisp_adapter_config_free(&a);
}

static void s_head(s_ctx_t *c, const char *dir, const char *cfg_path)
{
    printf("head: %s\n", dir);
    wisp_head_config_t h;
    wisp_error_t err = {0};
    if (wisp_head_config_load(&h, cfg_path, &err) != 0) {
        s_problem(c, "%s", err.msg);
    } else {
        printf(
            "  d_model=%d num_hidden_layers=%d classifier_proj_size=%d use_weighted_layer_sum=%s\n",
            h.d_model, h.num_hidden_layers, h.classifier_proj_size,
            h.use_weighted_layer_sum ? "true" : "false");
        s_labels((const char *const *)h.id2label, h.num_labels);
    }
    wisp_st_t *st = s_open_weights(c, dir, "model_head.safetensors");
    if (st) {
        if (err.code == 0) {
            s_expect(c, st, "projector.weight", 2, h.classifier_proj_size, h.d_model, 0);
            s_expect(c, st, "projector.bias", 1, h.classifier_proj_size, 0, 0);
            s_expect(c, st, "classifier.weight", 2, h.num_labels, h.classifier_proj_size, 0);
            s_expect(c, st, "classifier.bias", 1, h.num_labels, 0, 0);
            if (h.use_weighted_layer_sum)
                s_expect(c, st, "layer_weights", 1, h.num_hidden_layers + 1, 0, 0);
        }
        s_tensors(c, st);
    }
    wisp_st_destroy(&st);
    if (err.code == 0)
        wisp_head_config_free(&h);
}

static int s_has(const char *dir, const char *name, int want_dir)
{
    char p[4096];
    struct stat sb;
    return wisp_path_join(p, sizeof p, dir, name) == WISP_OK && stat(p, &sb) == 0 &&
           (S_ISDIR(sb.st_mode) ? 1 : 0) == want_dir;
}

/* features.json beside a trained adapter/head (audio/windows.h). */
static void s_features(s_ctx_t *c, const char *dir)
{
    wisp_feature_settings_t fs;
    wisp_error_t err = {0};
    int rc = wisp_feature_settings_load(dir, &fs, &err);
    if (rc < 0)
        s_problem(c, "%s", err.msg);
    else if (rc > 0 && fs.window_seconds > 0)
        printf("  features.json: trained on %s log-mel of %g s windows of long files (classify "
               "with%s --truncate, --window=%g)\n",
               fs.truncate ? "truncated" : "padded", fs.window_seconds, fs.truncate ? "" : "out",
               fs.window_seconds);
    else if (rc > 0)
        printf("  features.json: trained on %s log-mel (classify with%s --truncate)\n",
               fs.truncate ? "truncated" : "padded 30 s", fs.truncate ? "" : "out");
}

static void s_inspect_dir(s_ctx_t *c, const char *path, int depth);

/* Inspects DIR/name when it is a directory (adapter/, head/ of a run or checkpoint). */
static void s_sub(s_ctx_t *c, const char *dir, const char *name, int depth)
{
    char p[4096];
    if (s_has(dir, name, 1) && wisp_path_join(p, sizeof p, dir, name) == WISP_OK) {
        printf("\n");
        s_inspect_dir(c, p, depth + 1);
    }
}

/* A checkpoint directory (nn/ckpt.h): state.json, params and optimizer tensors, the
 * loadable adapter/ and head/ copies. */
static void s_ckpt(s_ctx_t *c, const char *dir, int depth)
{
    char p[4096];
    printf("checkpoint: %s\n", dir);
    cJSON *state = NULL;
    wisp_error_t err = {0};
    if (wisp_path_join(p, sizeof p, dir, "state.json") != WISP_OK ||
        wisp_json_load(p, &state, &err) != WISP_OK) {
        s_problem(c, "%s", err.msg[0] ? err.msg : "state.json: path too long");
    } else {
        char *text = cJSON_PrintUnformatted(state);
        printf("  state.json: %.300s%s\n", text ? text : "?",
               text && strlen(text) > 300 ? "..." : "");
        free(text);
    }
    cJSON_Delete(state);
    if (wisp_path_join(p, sizeof p, dir, "params.safetensors") == WISP_OK) {
        wisp_st_t *st = s_open_weights(c, p, NULL);
        if (st)
            s_tensors(c, st);
        wisp_st_destroy(&st);
    }
    if (!s_has(dir, "adamw.safetensors", 0))
        s_problem(c, "%s: no adamw.safetensors (the optimizer state a resume needs)", dir);
    s_sub(c, dir, "adapter", depth);
    s_sub(c, dir, "head", depth);
}

/* A training output directory (docs/OUTPUT.md): metrics, checkpoints, adapter/, head/. */
static void s_run(s_ctx_t *c, const char *dir, int depth)
{
    char p[4096];
    printf("training run: %s\n", dir);
    char *text = NULL;
    size_t len = 0, lines = 0;
    wisp_error_t err = {0};
    if (wisp_path_join(p, sizeof p, dir, "metrics.jsonl") == WISP_OK && access(p, R_OK) == 0 &&
        wisp_read_file(p, (size_t)1 << 30, &text, &len, &err) == WISP_OK) {
        for (size_t i = 0; i < len; i++)
            lines += text[i] == '\n';
        printf("  metrics.jsonl: %zu lines (wisp report %s: the curves)\n", lines, dir);
    }
    free(text);
    text = NULL;
    if (s_has(dir, "checkpoints", 1) &&
        wisp_path_join(p, sizeof p, dir, "checkpoints/LATEST") == 0 && access(p, R_OK) == 0 &&
        wisp_read_file(p, 4096, &text, &len, &err) == WISP_OK) {
        while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
            text[--len] = '\0';
        char ck[4096];
        printf("  checkpoints/LATEST: %s\n", text);
        if (snprintf(ck, sizeof ck, "%s/checkpoints/%s", dir, text) >= (int)sizeof ck ||
            strchr(text, '/') || !text[0] || access(ck, F_OK) != 0)
            s_problem(c, "%s: LATEST names '%s', which is not a checkpoint directory there", dir,
                      text);
    }
    free(text);
    if (!s_has(dir, "adapter", 1) && !s_has(dir, "head", 1))
        printf("  (no adapter/ or head/ yet: the run has not finished)\n");
    s_sub(c, dir, "adapter", depth);
    s_sub(c, dir, "head", depth);
}

/* What a directory is, by the files it holds (depth bounds the recursion into the
 * adapter/ and head/ of runs and checkpoints). */
static void s_inspect_dir(s_ctx_t *c, const char *path, int depth)
{
    char p_model[4096], p_adapter[4096], p_head[4096];
    struct stat sb;
    if (wisp_path_join(p_model, sizeof p_model, path, "config.json") != 0 ||
        wisp_path_join(p_adapter, sizeof p_adapter, path, "adapter_config.json") != 0 ||
        wisp_path_join(p_head, sizeof p_head, path, "head_config.json") != 0) {
        s_problem(c, "%s: path too long", path);
        return;
    }
    int found = 0;
    if (stat(p_model, &sb) == 0) {
        s_checkpoint(c, path, p_model);
        found = 1;
    }
    if (stat(p_adapter, &sb) == 0) {
        s_adapter(c, path);
        found = 1;
    }
    if (stat(p_head, &sb) == 0) {
        s_head(c, path, p_head);
        found = 1;
    }
    if (found) {
        s_features(c, path);
    } else if (depth < 2 && s_has(path, "state.json", 0) && s_has(path, "params.safetensors", 0)) {
        s_ckpt(c, path, depth);
    } else if (depth < 2 && (s_has(path, "metrics.jsonl", 0) || s_has(path, "checkpoints", 1))) {
        s_run(c, path, depth);
    } else {
        printf("directory: %s (no config.json, adapter_config.json or head_config.json)\n", path);
        wisp_st_t *st = s_open_weights(c, path, NULL);
        if (st)
            s_tensors(c, st);
        wisp_st_destroy(&st);
    }
}

int wisp_cmd_inspect(int argc, char **argv)
{
    s_ctx_t c = {.list_tensors = 1};
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            s_usage(stdout);
            return WISP_EXIT_OK;
        } else if (strcmp(argv[i], "--summary") == 0) {
            c.list_tensors = 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "wisp inspect: unknown option '%s' (see --help)\n", argv[i]);
            return WISP_EXIT_USAGE;
        } else if (path) {
            fprintf(stderr, "wisp inspect: one PATH only (see --help)\n");
            return WISP_EXIT_USAGE;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        s_usage(stderr);
        return WISP_EXIT_USAGE;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "wisp inspect: %s: no such file or directory\n", path);
        return WISP_EXIT_FAILURE;
    }
    if (!S_ISDIR(sb.st_mode)) {
        printf("file: %s\n", path);
        wisp_st_t *st = s_open_weights(&c, path, NULL);
        if (st)
            s_tensors(&c, st);
        wisp_st_destroy(&st);
    } else {
        s_inspect_dir(&c, path, 0);
    }
    printf("blas: %s\n", wisp_blas_summary()); /* the kernels a load here would run on */
    if (c.problems) {
        fprintf(stderr, "wisp inspect: %d problem%s found in %s (see PROBLEM lines)\n", c.problems,
                c.problems == 1 ? "" : "s", path);
        return WISP_EXIT_FAILURE;
    }
    return WISP_EXIT_OK;
}
