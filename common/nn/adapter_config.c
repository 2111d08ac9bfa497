/* adapter_config.c: the adapters library's BnConfig / LoRAConfig dicts and
 * adapter_config.json (adapter_config.h).
 *
 * A user's dict is checked field by field against the class's table (s_bn_fields,
 * s_lora_fields) and merged over the class defaults, so cfg->full is what the
 * library's to_dict() gives; the typed fields are then read from the merged dict. */
#include "nn/adapter_config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "nn/ops.h"

/* The adapters library version whose config semantics wisp implements and writes. */
#define S_ADAPTERS_VERSION "adapters.1.2.0"

/* A JSON integer in [lo, hi] (range checked before the cast: formats/json.h). */
static int s_is_int(const cJSON *j, int64_t lo, int64_t hi)
{
    int64_t v;
    return wisp_json_int(j, lo, hi, &v) == 0;
}

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

/* How a field is handled. */
typedef enum {
    S_F_BOOL,        /* read into an int */
    S_F_ONLY,        /* accepted only when equal to the default (JSON equality) */
    S_F_ANY_BOOL,    /* ignored by wisp for a stated reason, any bool */
    S_F_ANY_NUM,     /* any number or null */
    S_F_ANY_INT,     /* any integer or null */
    S_F_ANY_STR,     /* any string or null */
    S_F_SPECIAL,     /* handled in code */
    S_F_NEWER_FALSE, /* added to the library after the version wisp writes: accepted only
                        false (its neutral value) or null, and never written back */
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
    /* the library's main branch (after v1.2.0) writes "use_dora": false everywhere */
    {"use_dora", S_F_NEWER_FALSE, "DoRA (weight-decomposed LoRA)"},
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

/* Drops the fields newer than the version wisp writes (S_F_NEWER_FALSE, checked
 * neutral): a saved config then loads in that version of the library too. */
static void s_drop_newer(cJSON *full, const s_field_t *fields)
{
    for (const s_field_t *f = fields; full && f->key; f++)
        if (f->type == S_F_NEWER_FALSE)
            cJSON_DeleteItemFromObjectCaseSensitive(full, f->key);
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
        int64_t layer;
        if (wisp_json_int(e, 0, WISP_MAX_LAYERS - 1, &layer) != 0)
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: field leave_out must hold layer indices 0..%d", where,
                                  WISP_MAX_LAYERS - 1);
        cfg->leave_out[layer] = 1;
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
                wisp_json_value_text(kv, val, sizeof val);
                wisp_json_value_text(def, want, sizeof want);
                return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                      "%s: field %s = %s is not supported by wisp (%s; only %s)",
                                      where, key, val, f->why, def ? want : "null");
            }
            break;
        }
        case S_F_NEWER_FALSE:
            if (!cJSON_IsFalse(kv) && !cJSON_IsNull(kv)) {
                wisp_json_value_text(kv, val, sizeof val);
                return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                      "%s: field %s = %s is not supported by wisp (%s; only false)",
                                      where, key, val, f->why);
            }
            break;
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
            if (!s_is_int(kv, -WISP_JSON_INT_MAX, WISP_JSON_INT_MAX) && !cJSON_IsNull(kv))
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

/* reduction_factor: a number, or {"<layer>": rf, ..., "default": rf}. */
static int s_bn_reduction_factor(wisp_adapter_config_t *cfg, const cJSON *full, const char *where,
                                 wisp_error_t *err)
{
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(full, "reduction_factor");
    if (!rf)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing field reduction_factor", where);
    if (cJSON_IsNumber(rf)) {
        if (!(rf->valuedouble > 0))
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s: field reduction_factor must be > 0",
                                  where);
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
            if (!is_default && (!kv->string[0] || *endp || layer < 0 || layer >= WISP_MAX_LAYERS))
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "%s: field reduction_factor has key \"%s\" (expected a layer "
                                      "index or \"default\")",
                                      where, kv->string);
            if (!cJSON_IsNumber(kv) || !(kv->valuedouble > 0))
                return wisp_error_set(err, WISP_ERR_FORMAT,
                                      "%s: field reduction_factor[\"%s\"] must be a number > 0",
                                      where, kv->string);
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
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: field reduction_factor must be a number or a {\"<layer>\": rf, "
                              "\"default\": rf} map",
                              where);
    }
    return 0;
}

/* non_linearity, scaling, residual_before_ln, init_weights. */
static int s_bn_options(wisp_adapter_config_t *cfg, const cJSON *full, const char *where,
                        wisp_error_t *err)
{
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(full, "non_linearity");
    if (!cJSON_IsString(nl))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing or non-string field non_linearity",
                              where);
    cfg->non_linearity = nn_act_parse(nl->valuestring); /* case-insensitive, like the library */
    if (cfg->non_linearity < 0)
        return wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field non_linearity = \"%s\" is not supported (relu, swish, silu, gelu, gelu_new, "
            "tanh, sigmoid, leakyrelu, linear)",
            where, nl->valuestring);

    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(full, "scaling");
    if (cJSON_IsString(sc))
        return wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field scaling = \"%s\" is not supported by wisp (learned scaling; only a number)",
            where, sc->valuestring);
    if (!cJSON_IsNumber(sc))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: field scaling must be a number", where);
    cfg->scaling = (float)sc->valuedouble;

    const cJSON *rbl = cJSON_GetObjectItemCaseSensitive(full, "residual_before_ln");
    if (cJSON_IsString(rbl)) {
        /* "post_add" picks the residual after the add but before the original LayerNorm;
         * Whisper's adapter sites pass no LayerNorm, where the library leaves it undefined. */
        return wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field residual_before_ln = \"%s\" is not supported by wisp (Whisper adapter sites "
            "have no LayerNorm; only true or false)",
            where, rbl->valuestring);
    }
    if (!cJSON_IsBool(rbl))
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: field residual_before_ln must be true or false", where);
    cfg->residual_before_ln = cJSON_IsTrue(rbl);

    const cJSON *iw = cJSON_GetObjectItemCaseSensitive(full, "init_weights");
    if (!cJSON_IsString(iw) ||
        (strcmp(iw->valuestring, "bert") != 0 && strcmp(iw->valuestring, "mam_adapter") != 0 &&
         strcmp(iw->valuestring, "houlsby") != 0)) {
        char val[64];
        wisp_json_value_text(iw, val, sizeof val);
        return wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field init_weights = %s is not supported (bert, mam_adapter, houlsby)", where,
            val);
    }
    snprintf(cfg->init_weights, sizeof cfg->init_weights, "%s", iw->valuestring);
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

    if ((rc = s_bn_reduction_factor(cfg, full, where, err)) != 0 ||
        (rc = s_bn_options(cfg, full, where, err)) != 0)
        goto done;
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

/* attn_matrices: which of q, k, v (only with selfattn_lora). */
static int s_lora_matrices(wisp_adapter_config_t *cfg, const cJSON *full, int selfattn,
                           const char *where, wisp_error_t *err)
{
    const cJSON *am = cJSON_GetObjectItemCaseSensitive(full, "attn_matrices");
    if (!cJSON_IsArray(am))
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: field attn_matrices must be a list of \"q\", \"k\", \"v\"",
                              where);
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
            wisp_json_value_text(e, val, sizeof val);
            return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                  "%s: field attn_matrices holds %s (only \"q\", \"k\", \"v\")",
                                  where, val);
        }
    }
    /* the library adapts an attention matrix only when selfattn_lora is set */
    cfg->attn_q = selfattn && q;
    cfg->attn_k = selfattn && k;
    cfg->attn_v = selfattn && v;
    return 0;
}

/* init_weights (lora/bert, or ia3 with composition_mode "scale") and dtype. */
static int s_lora_init_dtype(wisp_adapter_config_t *cfg, const cJSON *full, int scale,
                             const char *where, wisp_error_t *err)
{
    const cJSON *iw = cJSON_GetObjectItemCaseSensitive(full, "init_weights");
    int iw_ok =
        cJSON_IsString(iw) &&
        (scale ? strcmp(iw->valuestring, "ia3") == 0
               : (strcmp(iw->valuestring, "lora") == 0 || strcmp(iw->valuestring, "bert") == 0));
    if (!iw_ok) {
        char val[64];
        wisp_json_value_text(iw, val, sizeof val);
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: field init_weights = %s is not supported for %s (%s)", where,
                              val, scale ? "composition_mode \"scale\"" : "LoRA",
                              scale ? "ia3" : "lora, bert");
    }
    snprintf(cfg->init_weights, sizeof cfg->init_weights, "%s", iw->valuestring);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(full, "dtype");
    if (dt && !cJSON_IsNull(dt) &&
        !(cJSON_IsString(dt) && strcmp(dt->valuestring, "float32") == 0)) {
        char val[64];
        wisp_json_value_text(dt, val, sizeof val);
        return wisp_error_set(
            err, WISP_ERR_UNSUPPORTED,
            "%s: field dtype = %s is not supported by wisp (adapters run in fp32; only null)",
            where, val);
    }
    return 0;
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
    s_drop_newer(cfg->full, s_lora_fields);
    if (!cfg->full) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", where);
        goto done;
    }
    const cJSON *full = cfg->full;
    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(full, "composition_mode");
    if (!cJSON_IsString(cm) ||
        (strcmp(cm->valuestring, "add") != 0 && strcmp(cm->valuestring, "scale") != 0)) {
        char val[64];
        wisp_json_value_text(cm, val, sizeof val);
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
    int64_t r = 0;
    if (wisp_json_int(cJSON_GetObjectItemCaseSensitive(full, "r"), 1, INT_MAX, &r) != 0) {
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s: field r must be an integer >= 1", where);
        goto done;
    }
    cfg->r = (int)r;
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

    if ((rc = s_lora_matrices(cfg, full, selfattn, where, err)) != 0 ||
        (rc = s_lora_init_dtype(cfg, full, scale, where, err)) != 0)
        goto done;
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
        wisp_json_value_text(arch, val, sizeof val);
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
    char names[128] = "";
    size_t len = 0;
    for (int i = 0; wisp_adapter_preset_name(i) && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "",
                                wisp_adapter_preset_name(i));
    return wisp_error_set(err, WISP_ERR_ARG, "unknown adapter preset \"%s\" (%s)", preset, names);
}

const char *wisp_adapter_preset_name(int i)
{
    int n = (int)(sizeof s_presets / sizeof s_presets[0]);
    return i >= 0 && i < n ? s_presets[i].name : NULL;
}

int wisp_adapter_is_preset(const char *name)
{
    for (int i = 0; name && wisp_adapter_preset_name(i); i++)
        if (strcmp(name, wisp_adapter_preset_name(i)) == 0)
            return 1;
    return 0;
}

int wisp_adapter_config_parse_file(wisp_adapter_config_t *cfg, const cJSON *root, const char *path,
                                   int *hidden_size, wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (!cJSON_IsObject(root))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !cJSON_IsNull(mt) &&
        !(cJSON_IsString(mt) && strcmp(mt->valuestring, "whisper") == 0)) {
        char val[64];
        wisp_json_value_text(mt, val, sizeof val);
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: model_type is %s; wisp loads adapters made for \"whisper\"",
                              path, val);
    }
    const cJSON *conf = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (!cJSON_IsObject(conf))
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s: missing \"config\" object", path);
    int64_t hs = -1, no_hs = -1;
    int rc = wisp_json_key_int(root, "hidden_size", 1, INT_MAX, &no_hs, &hs, path, err);
    if (rc != 0 || (rc = wisp_adapter_config_parse(cfg, conf, path, err)) != 0)
        return rc;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (name && !cJSON_IsNull(name)) {
        if (!cJSON_IsString(name) || !name->valuestring[0] ||
            strlen(name->valuestring) >= sizeof cfg->name || strchr(name->valuestring, '.')) {
            wisp_adapter_config_free(cfg);
            return wisp_error_set(err, WISP_ERR_FORMAT,
                                  "%s: \"name\" must be a non-empty string without dots", path);
        }
        snprintf(cfg->name, sizeof cfg->name, "%s", name->valuestring);
    }
    if (hidden_size)
        *hidden_size = (int)hs;
    return 0;
}

int wisp_adapter_config_load_dir(wisp_adapter_config_t *cfg, const char *dir, int *hidden_size,
                                 wisp_error_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    if (wisp_path_join(path, sizeof path, dir, "adapter_config.json") != 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    cJSON *root = NULL;
    int rc = wisp_json_load(path, &root, err);
    if (rc == 0)
        rc = wisp_adapter_config_parse_file(cfg, root, path, hidden_size, err);
    cJSON_Delete(root);
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
    return wisp_json_save_sorted(path, root, ok, err);
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
