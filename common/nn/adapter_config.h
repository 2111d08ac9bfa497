/* adapter_config.h: the Python `adapters` library's adapter configs (BnConfig for
 * bottleneck adapters, LoRAConfig for LoRA and IA3) and its adapter_config.json, as
 * far as wisp implements them; the model (nn/model.h) builds its adapters from this.
 * docs/FORMATS.md lists the supported fields. */
#ifndef WISP_ADAPTER_CONFIG_H
#define WISP_ADAPTER_CONFIG_H

#include "base/err.h"
#include "formats/config.h" /* WISP_MAX_LAYERS */
#include "formats/json.h"

typedef enum {
    WISP_ADAPTER_NONE = 0,
    WISP_ADAPTER_BOTTLENECK, /* architecture "bottleneck" (seq_bn, double_seq_bn, par_bn, ...) */
    WISP_ADAPTER_LORA,       /* architecture "lora", composition_mode "add" */
    WISP_ADAPTER_IA3,        /* architecture "lora", composition_mode "scale" */
} wisp_adapter_kind_t;

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
/* The i-th preset name (i from 0; NULL past the last): the one list of presets. */
const char *wisp_adapter_preset_name(int i);
/* 1 when name is a preset name, else 0. */
int wisp_adapter_is_preset(const char *name);
/* Reads DIR/adapter_config.json (keys config, hidden_size, model_class, model_name,
 * model_type, name, version). */
int wisp_adapter_config_load_dir(wisp_adapter_config_t *cfg, const char *dir, int *hidden_size,
                                 wisp_error_t *err);
/* The same from the parsed file (`path` names it in messages). */
int wisp_adapter_config_parse_file(wisp_adapter_config_t *cfg, const cJSON *root, const char *path,
                                   int *hidden_size, wisp_error_t *err);
/* Writes DIR/adapter_config.json as the adapters library does. */
int wisp_adapter_config_save_dir(const wisp_adapter_config_t *cfg, const char *dir, int hidden_size,
                                 const char *model_name, wisp_error_t *err);
/* Bottleneck width at layer i for hidden size d: max(1, floor(d / rf)) with
 * Python's float floor division (the library computes int(d // rf)); -1 when a
 * per-layer reduction_factor map has neither this layer nor "default". */
int wisp_adapter_config_bottleneck_dim(const wisp_adapter_config_t *cfg, int layer, int d);
void wisp_adapter_config_free(wisp_adapter_config_t *cfg);

#endif
