/* config.c: the Hugging Face Whisper config.json and wisp's head_config.json.
 *
 * Files are written the way the Python side writes them (json.dump with
 * indent=2, sort_keys=True), so a diff against a Python-saved file is small. */
#include "formats/config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "formats/labels.h"

/* ---- small typed getters ------------------------------------------------------ */

/* Integer key into an int in [min, max]; absent -> def, def < -1000 means required. */
static int s_get_int_in(const cJSON *obj, const char *key, int def, int min, int max, int *out,
                        const char *where, wisp_error_t *err)
{
    int64_t v = 0, d = def;
    int rc = wisp_json_key_int(obj, key, min, max, def < -1000 ? NULL : &d, &v, where, err);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

static int s_get_int(const cJSON *obj, const char *key, int def, int min, int *out,
                     const char *where, wisp_error_t *err)
{
    return s_get_int_in(obj, key, def, min, INT_MAX, out, where, err);
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
        if (count > WISP_LABELS_MAX)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: id2label has %d entries, more than the %d labels wisp "
                                  "supports",
                                  where, count, WISP_LABELS_MAX);
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
    wisp_labels_t *lab = NULL;
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
    /* duplicates and label2id through a sorted index: O(n log n) for n labels */
    char src[600];
    snprintf(src, sizeof src, "%s: id2label", where);
    lab = wisp_labels_new(NULL, 0, (const char *const *)out, count, src, err);
    if (!lab) {
        rc = err && err->code ? err->code : WISP_ERR_FORMAT;
        goto done;
    }
    if (label2id && !cJSON_IsNull(label2id)) {
        if (!cJSON_IsObject(label2id) || cJSON_GetArraySize(label2id) != count) {
            rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                "%s: \"label2id\" must be an object with %d entries", where, count);
            goto done;
        }
        /* count distinct keys (the parser keeps the last of duplicates), each naming
         * its own id: label2id is then exactly the inverse of id2label */
        const cJSON *v;
        cJSON_ArrayForEach(v, label2id)
        {
            const char *name = v->string ? v->string : "";
            int want = wisp_labels_find_name(lab, name);
            /* HF writes integer ids; accept "3" too */
            int64_t id = -1;
            if (cJSON_IsNumber(v))
                wisp_json_int(v, 0, INT_MAX, &id);
            else if (cJSON_IsString(v))
                id = wisp_labels_parse_id(v->valuestring);
            if (want < 0) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: label2id[\"%s\"] is not a label of id2label", where, name);
                goto done;
            }
            if (id != want) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: label2id[\"%s\"] disagrees with id2label (expected %d)",
                                    where, name, want);
                goto done;
            }
        }
    }
done:
    wisp_labels_destroy(&lab);
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
        (rc = wisp_json_key_bool(root, "use_weighted_layer_sum", 0, &cfg->use_weighted_layer_sum,
                                 path, err)) != 0 ||
        (rc = s_get_int_in(root, "num_labels", -1, 1, WISP_LABELS_MAX, &n_hint, path, err)) != 0)
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
    cJSON *root = NULL;
    int rc = wisp_json_load(path, &root, err);
    if (rc != 0)
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
    if (!ok || wisp_json_sort_keys(o) != 0) {
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

/* ---- head_config.json ------------------------------------------------------------- */

int wisp_head_config_parse(wisp_head_config_t *cfg, const cJSON *root, const char *path,
                           wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    int n_hint = -1, rc = 0;
    if (!cJSON_IsObject(root))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a JSON object", path);
    if ((rc = s_get_int_in(root, "num_labels", -9999, 1, WISP_LABELS_MAX, &n_hint, path, err)) !=
            0 ||
        (rc = s_get_int(root, "classifier_proj_size", -9999, 1, &cfg->classifier_proj_size, path,
                        err)) != 0 ||
        (rc = wisp_json_key_bool(root, "use_weighted_layer_sum", 0, &cfg->use_weighted_layer_sum,
                                 path, err)) != 0 ||
        (rc = s_get_int(root, "num_hidden_layers", -9999, 1, &cfg->num_hidden_layers, path, err)) !=
            0 ||
        (rc = s_get_int(root, "d_model", -9999, 1, &cfg->d_model, path, err)) != 0)
        return rc;
    return s_parse_labels(root, n_hint, &cfg->id2label, &cfg->num_labels, path, err);
}

int wisp_head_config_load(wisp_head_config_t *cfg, const char *path, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = NULL;
    int rc = wisp_json_load(path, &root, err);
    if (rc == 0)
        rc = wisp_head_config_parse(cfg, root, path, err);
    cJSON_Delete(root);
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
    return wisp_json_save_sorted(path, root, ok, err);
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
