/* nn/model_priv.h: the inside of wisp_model_t, shared by the two halves of the model
 * module and by nothing else: model.c (the trainable-tensor table, the memory plan,
 * forward and backward) and model_io.c (checkpoint loading, adapter and head
 * initialisation, load and save). Not part of any contract; include only from those.
 *
 * The trainable tensors are described once, by the tables below: each names a group's
 * tensors (an enum constant, the checkpoint suffix in the adapters library / HF layout,
 * the shape in symbolic dims). s_spec_build in model.c walks them to lay out the flat
 * parameter and gradient buffers and the checkpoint names; the per-layer index tables
 * (s_layer_a_t, wisp_model.head) record where each named tensor landed, so every use is
 * model_param(self, la->site[s][S_BN_UP_W]) and never an offset by position. */
#ifndef WISP_NN_MODEL_PRIV_H
#define WISP_NN_MODEL_PRIV_H

#include "formats/st.h"
#include "nn/model.h"
#include "nn/ops.h"

/* Symbolic dims of the tables: 0 (no second dim: a 1-D tensor), 1, d_model, the site's
 * bottleneck width m, the LoRA rank r, the adapted linear's in and out features,
 * classifier_proj_size, num_labels, encoder_layers + 1. */
enum {
    S_DIM_0,
    S_DIM_1,
    S_DIM_D,
    S_DIM_M,
    S_DIM_R,
    S_DIM_IN,
    S_DIM_OUT,
    S_DIM_P,
    S_DIM_NL,
    S_DIM_L1,
    S_NDIM
};

/* Bottleneck adapter of one site: "encoder.layers.<i>.<site>.adapters.<name>." + suffix.
 * o = scaling * (up_w phi(down_w z + down_b) + up_b) + residual (docs/NUMERICS.md 3). */
#define S_BN_TENSORS(X)                                                                            \
    X(BN_DOWN_W, "adapter_down.0.weight", M, D)                                                    \
    X(BN_DOWN_B, "adapter_down.0.bias", M, 0)                                                      \
    X(BN_UP_W, "adapter_up.weight", D, M)                                                          \
    X(BN_UP_B, "adapter_up.bias", D, 0)
/* LoRA of one linear: "encoder.layers.<i>.<linear>.loras.<name>." + suffix;
 * y = W z + b + (alpha / r) B (A z). */
#define S_LORA_TENSORS(X)                                                                          \
    X(LORA_A, "lora_A", R, IN)                                                                     \
    X(LORA_B, "lora_B", OUT, R)
/* IA3 of one linear (the adapters library stores the scale as lora_B, (out, 1));
 * y = (W z + b) * (alpha * l). */
#define S_IA3_TENSORS(X) X(IA3_L, "lora_B", OUT, 1)
/* The head (HF WhisperForAudioClassification names); layer_weights only with
 * use_weighted_layer_sum. */
#define S_HEAD_TENSORS(X)                                                                          \
    X(HEAD_PROJ_W, "projector.weight", P, D)                                                       \
    X(HEAD_PROJ_B, "projector.bias", P, 0)                                                         \
    X(HEAD_CLS_W, "classifier.weight", NL, P)                                                      \
    X(HEAD_CLS_B, "classifier.bias", NL, 0)                                                        \
    X(HEAD_LAYER_W, "layer_weights", L1, 0)

#define S_ENUM_(e, suffix, rows, cols) S_##e,
enum { S_BN_TENSORS(S_ENUM_) S_BN_N };
enum { S_LORA_TENSORS(S_ENUM_) S_LORA_N };
enum { S_IA3_TENSORS(S_ENUM_) S_IA3_N };
enum { S_HEAD_TENSORS(S_ENUM_) S_HEAD_N };
#undef S_ENUM_
/* a linear's adapter tensors: LoRA's A and B, or IA3's l at index 0 */
#define S_LIN_MAXT ((int)S_LORA_N > (int)S_IA3_N ? (int)S_LORA_N : (int)S_IA3_N)

/* Adapter sites of a layer (adapters-library names) and the linears LoRA / IA3 adapt. */
enum { S_SITE_ATT = 0, S_SITE_OUT, S_NSITE };
enum { S_LIN_Q = 0, S_LIN_K, S_LIN_V, S_LIN_FC1, S_LIN_FC2, S_NLIN };

/* Frozen weights of one encoder layer (fp32 views into the checkpoint). */
typedef struct {
    const float *ln1_w, *ln1_b; /* self_attn_layer_norm (d) */
    const float *q_w, *q_b;     /* (d, d), (d) */
    const float *k_w;           /* (d, d), no bias */
    const float *v_w, *v_b;     /* (d, d), (d) */
    const float *o_w, *o_b;     /* out_proj (d, d), (d) */
    const float *ln2_w, *ln2_b; /* final_layer_norm (d) */
    const float *fc1_w, *fc1_b; /* (F, d), (F) */
    const float *fc2_w, *fc2_b; /* (d, F), (d) */
} s_layer_w_t;

/* Where a layer's trainable tensors are in the spec table (-1: absent). */
typedef struct {
    int site_m[S_NSITE];         /* bottleneck width m (0: no adapter at the site) */
    int site[S_NSITE][S_BN_N];   /* spec index of each S_BN_* tensor of the site */
    int lin[S_NLIN][S_LIN_MAXT]; /* LoRA: S_LORA_A, S_LORA_B; IA3: S_IA3_L */
} s_layer_a_t;

/* Activation pointers of one layer (aliases of one shared set in inference). */
typedef struct {
    float *ln1_mean, *ln1_rstd; /* (N) */
    float *q, *k, *v;           /* (N, d) as fed to attention (q pre-scaled by hd^-0.5) */
    float *att;                 /* (N, d) attention output before out_proj */
    float *lse;                 /* (B, H, T) log-sum-exp of the score rows (training) */
    float *probs;               /* (B, H, T, T) attention probabilities kept for backward
                                   (training, within opts.attn_keep_mb; else NULL) */
    float *h;                   /* (N, d) output of the attention site */
    float *ln2_mean, *ln2_rstd; /* (N) */
    float *u;                   /* (N, F) fc1 output = GELU input */
    float *site_z[S_NSITE];     /* (N, d) bottleneck input */
    float *site_pre[S_NSITE];   /* (N, m) bottleneck pre-activation */
    float *lin_t[S_NLIN];       /* (N, r) LoRA A z */
    float *lin_pre[S_NLIN];     /* (N, out) IA3: W z + b before scaling */
} s_acts_t;

struct wisp_model {
    wisp_whisper_config_t cfg; /* config.json */
    char *model_dir;           /* as given (adapter_config.json model_name) */
    wisp_st_t *st;             /* the checkpoint mapping; owns converted copies */
    wisp_model_opts_t opts;
    int plan_only;   /* wisp_model_plan_bytes: size the arena, allocate nothing */
    int nthreads;    /* threads of the model's pool (nn_model_threads) */
    nn_pool_t *pool; /* their pool; NULL for one thread (or plan_only) */
    int d, L, H, F, hd, n_mels, T_max;

    /* frozen */
    const float *conv1_w, *conv1_b; /* (d, n_mels, 3), (d) */
    const float *conv2_w, *conv2_b; /* (d, d, 3), (d) */
    const float *pos;               /* (T_max, d) */
    const float *lnf_w, *lnf_b;     /* (d) */
    s_layer_w_t *lw;                /* (L) */
    struct wisp_qlinears *q8;       /* int8 copies of lw's linears (opts.precision), or NULL */

    /* trainables: spec table + flat buffers */
    int has_adapter;
    wisp_adapter_config_t acfg;
    int has_head;
    wisp_head_config_t head;
    int nspec;
    wisp_param_info_t *spec;
    size_t nparams;
    float *params, *grads;         /* (nparams) each, 64-byte aligned */
    s_layer_a_t *la;               /* (L) */
    int head_t[S_HEAD_N];          /* spec index of each S_HEAD_* tensor (-1: absent); the
                                      head's tensors follow the adapter's in the spec */
    int lowest;                    /* lowest layer holding trainables (L: none) */
    int keeping_probs;             /* inside forward_backward: the forward keeps probs */
    int lay_ia3, lay_r;            /* adapter kind IA3 / LoRA rank of the current layout */
    int lay_P, lay_NL;             /* head sizes of the current layout (1 without head) */
    int max_m, max_r, max_ia3_out; /* widths for scratch planning */

    /* activation arena */
    float *arena;
    size_t arena_floats;        /* planned (what planned_bytes reports) */
    size_t arena_cap;           /* allocated; only grows, so relayouts rarely reallocate */
    int unusable;               /* the last plan failed (out of memory): forward refuses */
    s_acts_t *acts;             /* (L) */
    float **x;                  /* (L+1) layer inputs / final output, (N, d) each */
    float *lnf_mean, *lnf_rstd; /* (N) */
    float *xf;                  /* (N, d) final LayerNorm output */
    float *xm;                  /* (L+1, B, d) means over T of the hidden states */
    float *sw;                  /* (L+1) softmax(layer_weights) */
    float *hmean;               /* (B, d) pooled (weighted) hidden state */
    float *pooled;              /* (B, P) */
    float *logits;              /* (B, NL) */
    float *probs;               /* (B, NL) */
    /* scratch */
    float *mel_t;    /* (max_frames, n_mels) one clip, time-major */
    float *c1;       /* (max_frames, d) conv1 output of one clip */
    float *col;      /* im2col */
    float *attn_scr; /* attention kernel scratch */
    float *z;        /* (N, d) LayerNorm output */
    float *sf;       /* (N, d) sub-block output (out_proj / fc2) */
    float *zs;       /* (N, d) site input in inference */
    float *g;        /* (N, F) GELU output; du in backward */
    float *bott;     /* (N, max_m) phi(pre) */
    float *lt;       /* (N, max_r) LoRA A z in inference */
    float *svec;     /* (max(d, F)) IA3 scale alpha * l */
    float *svec2;    /* (max(d, F)) IA3 d(scale) */
    /* backward scratch (training) */
    float *dx, *dxp, *dh, *df, *dz, *dq, *dk, *dv; /* (N, d) */
    float *dg;                                     /* (N, F) */
    float *dlin;                                   /* (N, max_ia3_out) IA3 d(W z + b) */
    float *dbott, *dpre;                           /* (N, max_m) */
    float *dt;                                     /* (N, max_r) */
    float *dlogits;                                /* (B, NL) */
    float *dpooled;                                /* (B, P) */
    float *dhmean;                                 /* (B, d) */
    float *dtmp;                                   /* (B, d) */
    float *dsw;                                    /* (L+1) */
};

/* The values and the gradient of spec tensor idx (an index from the tables above). */
static inline float *nn_model_param(wisp_model_t *self, int idx)
{
    return self->params + self->spec[idx].offset;
}
static inline float *nn_model_grad(wisp_model_t *self, int idx)
{
    return self->grads + self->spec[idx].offset;
}
/* Spec index of the first head tensor (nspec without a head): the adapter's tensors are
 * spec[0, head_first), the head's spec[head_first, nspec). */
static inline int nn_model_head_first(const wisp_model_t *self)
{
    return self->head_t[S_HEAD_PROJ_W] >= 0 ? self->head_t[S_HEAD_PROJ_W] : self->nspec;
}

/* Installs a new trainable layout for adapter a and head hc (either NULL: none): builds
 * the spec, allocates params and grads, copies over the values of the old adapter tensors
 * (keep_adapter) and head tensors (keep_head) present under the same name and size, and
 * replans the arena. On failure before the swap the trainables are unchanged; when only
 * the arena cannot be allocated, the model refuses to run until a later relayout
 * succeeds. */
int nn_model_relayout(wisp_model_t *self, const wisp_adapter_config_t *a,
                      const wisp_head_config_t *hc, int keep_adapter, int keep_head,
                      wisp_error_t *err);
/* Threads of the model's pool for these options (see model_io.c). */
int nn_model_threads(const wisp_model_opts_t *opts);
/* Frees the trainable layout (spec, params, grads, la) of a model. */
void nn_model_free_layout(wisp_model_t *self);

#endif
