/* nn/model.h: the Whisper encoder + adapters + classification head, forward and
 * backward, fp32, batched over B clips (GEMMs on B*T rows).
 *
 * Semantics: docs/NUMERICS.md sections 2-6 (HF WhisperEncoder,
 * adapters library v1.2, WhisperForAudioClassification). Base weights are frozen
 * and read from the checkpoint mapping; trainable tensors (adapter, projector,
 * classifier, layer_weights) live in one flat buffer described by a table of
 * named tensors (adapters-library / HF names), with gradients in the same layout,
 * so the optimizer, the Allreduce and checkpoints each see one contiguous array.
 * All memory (activations saved for backward, scratch) is planned in
 * wisp_model_new() from (config, max_batch, max_frames); forward and backward
 * never allocate. With WISP_NAN_FILL=1 in the environment (or -DWISP_NAN_FILL) the
 * activation arena is filled with NaN whenever it is planned, so a read of memory
 * no kernel wrote shows up as NaN in a test. */
#ifndef WISP_NN_MODEL_H
#define WISP_NN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "formats/config.h"
#include "formats/st.h"
#include "nn/adapter_config.h"

typedef struct {
    int max_batch;  /* largest B passed to forward/backward */
    int max_frames; /* largest mel frame count (3000 in padded mode; even) */
    int training;   /* plan saved activations and gradients for backward */
    int threads;    /* OpenBLAS threads for this process (0: leave as is) */
    /* Training: MiB the attention probabilities of the differentiated layers may take
     * when kept from the forward, which spares the backward their recomputation (one
     * of its five (T, T) GEMMs per head, and the exps). Layers are kept from the top
     * down while they fit; the rest recompute. 0 (or negative): none kept, the least
     * memory. Trainers default to WISP_MODEL_ATTN_KEEP_MB_DEFAULT. */
    int attn_keep_mb;
    /* WISP_PRECISION_INT8: the frozen encoder linears (q, k, v, out_proj, fc1, fc2) run
     * in int8 (nn/qlinear.h), quantised at load; inference only. Attention, LayerNorm,
     * the convolutions, adapters and head stay fp32. 0 = WISP_PRECISION_FP32. */
    int precision;
} wisp_model_opts_t;

/* Room for a bf16/AMX path on hosts that have AMX (nothing measurable here). */
enum { WISP_PRECISION_FP32 = 0, WISP_PRECISION_INT8 = 1 };

#define WISP_MODEL_ATTN_KEEP_MB_DEFAULT 1024

typedef struct {
    const char *name; /* checkpoint key, e.g. "encoder.layers.0.output_adapters.adapters.
                         NAME.adapter_down.0.weight", "projector.weight", "layer_weights" */
    int ndim;
    int64_t shape[4];
    size_t offset; /* in floats, into wisp_model_params() / wisp_model_grads() */
    size_t numel;
} wisp_param_info_t;

typedef struct wisp_model wisp_model_t;

/* Loads config.json and the encoder weights of a HF checkpoint directory (prefix
 * "model.encoder." or "encoder."); a WhisperForAudioClassification checkpoint's
 * projector/classifier/layer_weights become the head. NULL on failure. */
wisp_model_t *wisp_model_new(const char *model_dir, const wisp_model_opts_t *opts,
                             wisp_error_t *err);
void wisp_model_destroy(wisp_model_t **self);

const wisp_whisper_config_t *wisp_model_config(const wisp_model_t *self);

/* One active adapter at most. set_adapter initialises it freshly by its config's
 * init scheme from seed; load reads an adapters-library directory (when the
 * tensors do not match the config the model is left without an adapter). */
int wisp_model_set_adapter(wisp_model_t *self, const wisp_adapter_config_t *cfg, uint64_t seed,
                           wisp_error_t *err);
int wisp_model_load_adapter(wisp_model_t *self, const char *dir, wisp_error_t *err);
int wisp_model_save_adapter(const wisp_model_t *self, const char *dir, wisp_error_t *err);
const wisp_adapter_config_t *wisp_model_adapter(const wisp_model_t *self); /* NULL: none */

/* Head: fresh (HF init: normal(0, 0.02) weights, zero biases, layer_weights 1/(L+1)),
 * or from a head directory (head_config.json + model_head.safetensors; when its
 * tensors do not match its config the model is left without a head). */
int wisp_model_init_head(wisp_model_t *self, const wisp_head_config_t *cfg, uint64_t seed,
                         wisp_error_t *err);
int wisp_model_load_head(wisp_model_t *self, const char *dir, wisp_error_t *err);
int wisp_model_save_head(const wisp_model_t *self, const char *dir, wisp_error_t *err);
const wisp_head_config_t *wisp_model_head(const wisp_model_t *self); /* NULL: none yet */

/* Trainable parameters and their gradients: one flat buffer each, same layout. */
size_t wisp_model_num_params(const wisp_model_t *self);
float *wisp_model_params(wisp_model_t *self);
float *wisp_model_grads(wisp_model_t *self);
int wisp_model_num_param_tensors(const wisp_model_t *self);
const wisp_param_info_t *wisp_model_param_tensor(const wisp_model_t *self, int i);
void wisp_model_zero_grads(wisp_model_t *self);

/* mel: (B, n_mels, frames) row-major, frames even and <= max_frames, B <= max_batch.
 * logits (B, num_labels); embed (B, classifier_proj_size) = pooled projector output,
 * may be NULL. */
int wisp_model_forward(wisp_model_t *self, const float *mel, int B, int frames, float *logits,
                       float *embed);

/* Forward, cross-entropy and backward: ACCUMULATES into the gradients
 *   d/dparams [ grad_scale * sum_b w[y_b] * CE(logits_b, y_b) ]
 * (grad_scale = 1 / the global batch's weight sum gives the global mean loss).
 * class_weights may be NULL. Returns the batch's loss sum and weight sum; logits
 * (B, num_labels) may be NULL. Requires opts.training. */
int wisp_model_forward_backward(wisp_model_t *self, const float *mel, int B, int frames,
                                const int *labels, const float *class_weights, float grad_scale,
                                double *loss_sum, double *weight_sum, float *logits);

/* Peak bytes of planned buffers (activations + scratch + parameters + gradients). */
size_t wisp_model_planned_bytes(const wisp_model_t *self);

/* The same figure without a checkpoint, for choosing a batch size: what
 * wisp_model_planned_bytes() would report for a model of `cfg` with `opts`, the
 * adapter (NULL: none) and the head (NULL: none). 0 for an invalid config. */
size_t wisp_model_plan_bytes(const wisp_whisper_config_t *cfg, const wisp_model_opts_t *opts,
                             const wisp_adapter_config_t *adapter, const wisp_head_config_t *head);

/* ---- The frozen encoder tensors ------------------------------------------ */
/* The one table of a Whisper checkpoint's encoder tensors, behind loading
 * (wisp_model_new), writing random checkpoints (`wisp init-model`), checking them
 * (`wisp inspect`) and the test and benchmark fixtures. Names are HF WhisperEncoder
 * state-dict keys after the prefix (wisp_model_base_prefix), enumerated in HF's
 * state-dict order: the stem (conv1, conv2, embed_positions), every layer's tensors,
 * the final layer_norm (docs/NUMERICS.md 6). */
typedef enum {
    WISP_BASE_CONV1_W, /* (d, n_mels, 3) */
    WISP_BASE_CONV1_B, /* (d) */
    WISP_BASE_CONV2_W, /* (d, d, 3) */
    WISP_BASE_CONV2_B, /* (d) */
    WISP_BASE_POS,     /* embed_positions (max_source_positions, d) */
    WISP_BASE_K_W,     /* layer: self_attn.k_proj.weight (d, d); k_proj has no bias */
    WISP_BASE_V_W,     /* layer: (d, d) */
    WISP_BASE_V_B,     /* layer: (d) */
    WISP_BASE_Q_W,     /* layer: (d, d) */
    WISP_BASE_Q_B,     /* layer: (d) */
    WISP_BASE_O_W,     /* layer: self_attn.out_proj.weight (d, d) */
    WISP_BASE_O_B,     /* layer: (d) */
    WISP_BASE_LN1_W,   /* layer: self_attn_layer_norm (d) */
    WISP_BASE_LN1_B,   /* layer: (d) */
    WISP_BASE_FC1_W,   /* layer: (F, d) */
    WISP_BASE_FC1_B,   /* layer: (F) */
    WISP_BASE_FC2_W,   /* layer: (d, F) */
    WISP_BASE_FC2_B,   /* layer: (d) */
    WISP_BASE_LN2_W,   /* layer: final_layer_norm (d) */
    WISP_BASE_LN2_B,   /* layer: (d) */
    WISP_BASE_LNF_W,   /* the encoder's final layer_norm (d) */
    WISP_BASE_LNF_B,   /* (d) */
    WISP_BASE_N
} wisp_base_id_t;

/* How HF's _init_weights initialises the tensor (and `wisp init-model` with it). */
typedef enum {
    WISP_BASE_INIT_NORMAL,   /* Linear / Conv1d weight: normal(0, init_std) */
    WISP_BASE_INIT_ZERO,     /* biases, LayerNorm bias */
    WISP_BASE_INIT_ONE,      /* LayerNorm weight */
    WISP_BASE_INIT_SINUSOID, /* embed_positions: Whisper's sinusoids */
} wisp_base_init_t;

typedef struct {
    wisp_base_id_t id;
    int layer; /* encoder layer; -1 for the stem and the final layer_norm */
    wisp_base_init_t init;
    int ndim;
    int64_t shape[3]; /* unused dims 0 */
    char name[64];    /* after the prefix: "conv1.weight", "layers.3.fc1.weight" */
} wisp_model_base_t;

/* Encoder tensors of a checkpoint of cfg: 5 + 15 * encoder_layers + 2. */
int wisp_model_base_count(const wisp_whisper_config_t *cfg);
/* The i-th encoder tensor of cfg in state-dict order; -1 when i is out of range. */
int wisp_model_base_at(const wisp_whisper_config_t *cfg, int i, wisp_model_base_t *out);
/* The name (after the prefix) of tensor id in encoder layer `layer` (ignored for the
 * stem and final tensors); snprintf's return value. */
int wisp_model_base_name(char *buf, size_t size, wisp_base_id_t id, int layer);
/* "model.encoder." or "encoder.": the prefix under which st holds conv1.weight; NULL
 * when it holds neither. */
const char *wisp_model_base_prefix(const wisp_st_t *st);

#endif
