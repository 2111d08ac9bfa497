/* config.h: the JSON configurations wisp reads and writes (one cJSON parser for
 * all of them): Hugging Face Whisper config.json, the `adapters` library's
 * adapter_config.json, wisp's head_config.json.
 * Every error names the file and the key. */
#ifndef WISP_CONFIG_H
#define WISP_CONFIG_H

#include <cjson/cJSON.h>

#include "base/err.h"

/* Parses a JSON file (size limit 16 MiB); errors give file, line and column. */
cJSON *wisp_json_load(const char *path, wisp_error_t *err);
/* Writes pretty JSON atomically, formatted like Python's json.dump(indent=2):
 * keys in the object's order, integral numbers without a fraction. */
int wisp_json_save(const char *path, const cJSON *json, wisp_error_t *err);
/* The same text as a malloc'd string (free() it), NULL when out of memory. */
char *wisp_json_print(const cJSON *json);

/* ---- Hugging Face Whisper config.json ---------------------------------- */
typedef struct {
    int d_model;                 /* hidden size d */
    int encoder_layers;          /* L */
    int encoder_attention_heads; /* H; d % H == 0 */
    int encoder_ffn_dim;         /* F */
    int num_mel_bins;            /* 80 or 128 */
    int max_source_positions;    /* 1500 */
    /* Classification head keys (WhisperForAudioClassification); defaults when absent. */
    int num_labels;             /* from num_labels or id2label size; 2 when neither */
    int classifier_proj_size;   /* default 256 */
    int use_weighted_layer_sum; /* default false */
    char **id2label;            /* num_labels strings ("LABEL_i" when absent) */
    char model_type[32];        /* must be "whisper" */
} wisp_whisper_config_t;

/* Loads and validates (positive sizes, divisibility, activation "gelu"). */
int wisp_whisper_config_load(wisp_whisper_config_t *cfg, const char *path, wisp_error_t *err);
/* The same from a parsed object; `where` names its source in messages. */
int wisp_whisper_config_parse(wisp_whisper_config_t *cfg, const cJSON *config_json,
                              const char *where, wisp_error_t *err);
/* Named sizes for init-model and benchmarks: tiny, base, small, medium, large, large-v3. */
int wisp_whisper_config_preset(wisp_whisper_config_t *cfg, const char *size, wisp_error_t *err);
/* An HF config.json object (architectures, model_type, every key above, plus
 * the decoder keys HF needs to load it), for init-model. */
cJSON *wisp_whisper_config_to_json(const wisp_whisper_config_t *cfg);
void wisp_whisper_config_free(wisp_whisper_config_t *cfg);

/* ---- adapters library configs ------------------------------------------- */
typedef enum {
    WISP_ADAPTER_NONE = 0,
    WISP_ADAPTER_BOTTLENECK, /* architecture "bottleneck" (seq_bn, double_seq_bn, par_bn, ...) */
    WISP_ADAPTER_LORA,       /* architecture "lora", composition_mode "add" */
    WISP_ADAPTER_IA3,        /* architecture "lora", composition_mode "scale" */
} wisp_adapter_kind_t;

#define WISP_MAX_LAYERS 128

typedef struct {
    wisp_adapter_kind_t kind;
    char name[128]; /* adapter name (keys use it: ...adapters.<name>...) */
    /* bottleneck */
    int mh_adapter;                          /* adapter at the attention site */
    int output_adapter;                      /* adapter at the output (FFN) site */
    float reduction_factor[WISP_MAX_LAYERS]; /* per layer, from a number or a {"<i>"|"default": rf}
                                                map */
    int non_linearity;                       /* nn_act_t */
    float scaling;                           /* numeric "scaling" */
    int is_parallel;
    int original_ln_before;
    int original_ln_after;
    int residual_before_ln;
    char init_weights[32]; /* bert | mam_adapter | houlsby (bottleneck); lora | ia3 */
    /* lora / ia3 */
    int r;
    float alpha;
    int attn_q, attn_k, attn_v; /* attn_matrices */
    int intermediate_lora;      /* fc1 */
    int output_lora;            /* fc2 */
    /* both */
    int leave_out[WISP_MAX_LAYERS]; /* 1 = no adapter in this layer */
    cJSON *full;                    /* the full config dict, as written to adapter_config.json */
} wisp_adapter_config_t;

/* From an adapters-library config dict (the "config" value of adapter_config.json,
 * or a user's JSON). Fields wisp does not implement at a non-default value
 * (ln_before, use_gating, phm_layer, prefix tuning, ...) are refused naming the field;
 * unknown fields are refused too. `where` names the source in messages.
 * cfg is overwritten (release a previous one with _free first); cfg->name is set
 * to "adapter" (load_dir and presets set the real name). Missing fields take the
 * library's class defaults (BnConfig / LoRAConfig), so cfg->full is the dict the
 * library's to_dict() would give. Accepted but ignored (no effect on inference):
 * init_weights_seed (wisp seeds its own init), phm_* sub-options while phm_layer is
 * false, inv_adapter_reduction_factor while inv_adapter is null. */
int wisp_adapter_config_parse(wisp_adapter_config_t *cfg, const cJSON *config_dict,
                              const char *where, wisp_error_t *err);
/* "bottleneck", "lora", "ia3" or "none". */
const char *wisp_adapter_kind_name(wisp_adapter_kind_t kind);
/* Presets: seq_bn, double_seq_bn, par_bn, lora, ia3 (the adapters library v1.2 defaults). */
int wisp_adapter_config_preset(wisp_adapter_config_t *cfg, const char *preset, wisp_error_t *err);
/* Reads DIR/adapter_config.json (keys config, hidden_size, model_class, model_name,
 * model_type, name, version). */
int wisp_adapter_config_load_dir(wisp_adapter_config_t *cfg, const char *dir, int *hidden_size,
                                 wisp_error_t *err);
/* Writes DIR/adapter_config.json as the adapters library does. */
int wisp_adapter_config_save_dir(const wisp_adapter_config_t *cfg, const char *dir, int hidden_size,
                                 const char *model_name, wisp_error_t *err);
/* Bottleneck width at layer i for hidden size d: max(1, floor(d / rf)) with
 * Python's float floor division (the library computes int(d // rf)); -1 when a
 * per-layer reduction_factor map has neither this layer nor "default". */
int wisp_adapter_config_bottleneck_dim(const wisp_adapter_config_t *cfg, int layer, int d);
void wisp_adapter_config_free(wisp_adapter_config_t *cfg);

/* ---- wisp head_config.json ---------------------------------------------- */
typedef struct {
    int num_labels;
    int classifier_proj_size;
    int use_weighted_layer_sum;
    int num_hidden_layers; /* encoder layers L (layer_weights has L+1 entries) */
    int d_model;
    char **id2label; /* num_labels strings */
} wisp_head_config_t;

int wisp_head_config_load(wisp_head_config_t *cfg, const char *path, wisp_error_t *err);
int wisp_head_config_save(const wisp_head_config_t *cfg, const char *path, wisp_error_t *err);
/* A head config matching a Whisper config's classification keys (deep copy of
 * id2label). 0 or WISP_ERR_NOMEM. */
int wisp_head_config_from_whisper(wisp_head_config_t *head, const wisp_whisper_config_t *cfg);
/* Index of a label name, or -1. */
int wisp_head_config_label_id(const wisp_head_config_t *cfg, const char *label);
void wisp_head_config_free(wisp_head_config_t *cfg);

#endif
