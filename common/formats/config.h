/* config.h: the Hugging Face Whisper config.json and wisp's head_config.json
 * (through formats/json.h; the adapters library's adapter_config.json is
 * nn/adapter_config.h). Every error names the file and the key. */
#ifndef WISP_CONFIG_H
#define WISP_CONFIG_H

#include <cjson/cJSON.h>

#include "base/err.h"
#include "formats/json.h"

/* Encoder depth limit (config.json encoder_layers; per-layer adapter tables). */
#define WISP_MAX_LAYERS 128

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
/* The same from a parsed object (`where` names its source in messages). */
int wisp_head_config_parse(wisp_head_config_t *cfg, const cJSON *root, const char *where,
                           wisp_error_t *err);
int wisp_head_config_save(const wisp_head_config_t *cfg, const char *path, wisp_error_t *err);
/* A head config matching a Whisper config's classification keys (deep copy of
 * id2label). 0 or WISP_ERR_NOMEM. */
int wisp_head_config_from_whisper(wisp_head_config_t *head, const wisp_whisper_config_t *cfg);
/* Index of a label name, or -1. */
int wisp_head_config_label_id(const wisp_head_config_t *cfg, const char *label);
void wisp_head_config_free(wisp_head_config_t *cfg);

#endif
