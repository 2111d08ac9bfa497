/* nn/model.c: the Whisper encoder, adapters, classification head; forward and
 * backward in fp32 on the kernels of ops.h. Semantics: NUMERICS.md sections 2-6.
 *
 * Layout of the data:
 * - Frozen base weights are fp32 views into the checkpoint mapping (wisp_st_get_f32:
 *   no copy for aligned F32; F16/BF16 converted once inside the st object).
 * - Trainable tensors are described ONCE by a spec table (s_spec_build) built from
 *   (whisper config, adapter config, head config). The table drives the flat
 *   parameter buffer, the gradient buffer (same offsets), the per-layer index
 *   tables the forward uses, the checkpoint names for save/load and test messages.
 * - Activations live in one arena planned by s_plan() from (config, max_batch,
 *   max_frames, training, adapter dims). In training every layer keeps its own
 *   saved tensors; in inference all layers share one set (the pointers alias).
 *   Forward and backward never allocate.
 *
 * Saved per layer for backward (N = B*T rows): the layer input x_i (N,d), LN
 * mean/rstd (N) x2, q k v as fed to attention (N,d) x3, attention output (N,d),
 * lse (B,H,T), h after the attention site (N,d), fc1 output u (N,F), and for
 * adapters: each site's input z (N,d) and bottleneck pre-activation (N,m), LoRA's
 * A z (N,r), IA3's unscaled projection (N,out). LayerNorm outputs and GELU / phi
 * outputs are recomputed from the saved statistics / pre-activations. Attention
 * probabilities (B, H, T, T) per layer are kept from the forward for as many of the
 * differentiated layers as opts.attn_keep_mb allows (trainers: 1024 MiB, top layers
 * first), which spares the backward one of its five (T, T) GEMMs per head and the
 * exps; the other layers recompute them from q, k and lse.
 * Planned totals: whisper-base, B = 8, T = 1500, seq_bn, training: 2603 MB with the
 * default (one layer kept), 2054 MB keeping none (inference: 468 MB).
 *
 * Head: mean pooling commutes with the (linear) weighted sum and projector, so
 * p = W_proj (sum_k w_k mean_t(hidden_k)) + b_proj: the projector runs on (B,d)
 * rows instead of (B*T,d), and backward broadcasts d(mean) over T.
 *
 * Backward stops at the lowest layer holding a trainable tensor, and inside that
 * layer below its lowest trainable site: below it no gradient is needed (NUMERICS
 * 5; nothing under layer 0 is differentiated). With only a head, the encoder is
 * not differentiated at all. */
#include "nn/model.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "nn/ops.h"
#include "formats/st.h"
#include "base/util.h"

enum { S_SITE_ATT = 0, S_SITE_OUT, S_NSITE };
enum { S_LIN_Q = 0, S_LIN_K, S_LIN_V, S_LIN_FC1, S_LIN_FC2, S_NLIN };

static const char *const s_site_key[S_NSITE] = {"attention_adapters", "output_adapters"};
static const char *const s_lin_key[S_NLIN] = {"self_attn.q_proj", "self_attn.k_proj",
                                              "self_attn.v_proj", "fc1", "fc2"};

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
    int site_m[S_NSITE]; /* bottleneck width m (0: no adapter at the site) */
    int site_p[S_NSITE]; /* spec index of adapter_down.0.weight; down.bias, up.weight,
                            up.bias follow in that order */
    int lin_p[S_NLIN];   /* LoRA: index of lora_A (lora_B follows); IA3: index of lora_B */
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
    int nthreads;    /* threads of the attention core (s_attn_threads) */
    nn_pool_t *pool; /* their pool; NULL for one thread (or plan_only) */
    int d, L, H, F, hd, n_mels, T_max;

    /* frozen */
    const float *conv1_w, *conv1_b; /* (d, n_mels, 3), (d) */
    const float *conv2_w, *conv2_b; /* (d, d, 3), (d) */
    const float *pos;               /* (T_max, d) */
    const float *lnf_w, *lnf_b;     /* (d) */
    s_layer_w_t *lw;                /* (L) */

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
    int head_p;                    /* spec index of projector.weight (then bias, classifier w, b,
                                      layer_weights when used); -1 without head */
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

/* ------------------------------------------------------------------ helpers */

static float *s_param(wisp_model_t *self, int idx)
{
    return self->params + self->spec[idx].offset;
}

static float *s_grad(wisp_model_t *self, int idx)
{
    return self->grads + self->spec[idx].offset;
}

static void s_spec_free(wisp_param_info_t *spec, int n)
{
    if (!spec)
        return;
    for (int i = 0; i < n; i++)
        free((char *)spec[i].name);
    free(spec);
}

/* Frees a head config this module copied (s_head_copy). */
static void s_head_free(wisp_head_config_t *h)
{
    if (h->id2label) {
        for (int i = 0; i < h->num_labels; i++)
            free(h->id2label[i]);
        free(h->id2label);
    }
    memset(h, 0, sizeof *h);
}

/* Frees an adapter config this module copied (s_adapter_copy). */
static void s_adapter_free(wisp_adapter_config_t *a)
{
    cJSON_Delete(a->full);
    memset(a, 0, sizeof *a);
}

static int s_head_copy(wisp_head_config_t *dst, const wisp_head_config_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->num_labels = src->num_labels;
    dst->classifier_proj_size = src->classifier_proj_size;
    dst->use_weighted_layer_sum = src->use_weighted_layer_sum;
    dst->num_hidden_layers = src->num_hidden_layers;
    dst->d_model = src->d_model;
    dst->id2label = calloc((size_t)(src->num_labels > 0 ? src->num_labels : 1), sizeof(char *));
    if (!dst->id2label)
        return WISP_ERR_NOMEM;
    for (int i = 0; i < src->num_labels; i++) {
        char buf[32];
        const char *s = src->id2label ? src->id2label[i] : NULL;
        if (!s) {
            snprintf(buf, sizeof buf, "LABEL_%d", i);
            s = buf;
        }
        dst->id2label[i] = strdup(s);
        if (!dst->id2label[i])
            return WISP_ERR_NOMEM;
    }
    return 0;
}

static int s_adapter_copy(wisp_adapter_config_t *dst, const wisp_adapter_config_t *src)
{
    *dst = *src;
    dst->full = NULL;
    if (src->full) {
        dst->full = cJSON_Duplicate(src->full, 1);
        if (!dst->full)
            return WISP_ERR_NOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------------ spec table */

typedef struct {
    wisp_param_info_t *v;
    int n, cap;
    size_t off;
} s_specvec_t;

static int s_spec_add(s_specvec_t *sv, const char *name, int ndim, int64_t d0, int64_t d1)
{
    if (sv->n == sv->cap) {
        int cap = sv->cap ? 2 * sv->cap : 64;
        wisp_param_info_t *v = realloc(sv->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        sv->v = v;
        sv->cap = cap;
    }
    wisp_param_info_t *p = &sv->v[sv->n];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    if (!p->name)
        return -1;
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    p->offset = sv->off;
    sv->off += p->numel;
    return sv->n++;
}

/* Builds the trainable-tensor table for (adapter, head) and the per-layer index
 * tables. The one place that knows names and shapes of trainables. */
static int s_spec_build(wisp_model_t *self, const wisp_adapter_config_t *a,
                        const wisp_head_config_t *hc, s_specvec_t *sv, s_layer_a_t *la, int *head_p,
                        wisp_error_t *err)
{
    const int d = self->d, F = self->F, L = self->L;
    char name[512];
    for (int i = 0; i < L; i++) {
        for (int s = 0; s < S_NSITE; s++)
            la[i].site_m[s] = 0, la[i].site_p[s] = -1;
        for (int j = 0; j < S_NLIN; j++)
            la[i].lin_p[j] = -1;
    }
    *head_p = -1;
    if (a && a->kind != WISP_ADAPTER_NONE) {
        for (int i = 0; i < L; i++) {
            if (a->leave_out[i])
                continue;
            if (a->kind == WISP_ADAPTER_BOTTLENECK) {
                int want[S_NSITE] = {a->mh_adapter, a->output_adapter};
                for (int s = 0; s < S_NSITE; s++) {
                    if (!want[s])
                        continue;
                    int m = wisp_adapter_config_bottleneck_dim(a, i, d);
                    if (m < 1)
                        return wisp_error_set(err, WISP_ERR_ARG,
                                              "adapter %s: bottleneck width %d in layer %d",
                                              a->name, m, i);
                    la[i].site_m[s] = m;
                    const char *pre = s_site_key[s];
                    snprintf(name, sizeof name,
                             "encoder.layers.%d.%s.adapters.%s.adapter_down.0.weight", i, pre,
                             a->name);
                    la[i].site_p[s] = s_spec_add(sv, name, 2, m, d);
                    snprintf(name, sizeof name,
                             "encoder.layers.%d.%s.adapters.%s.adapter_down.0.bias", i, pre,
                             a->name);
                    if (la[i].site_p[s] < 0 || s_spec_add(sv, name, 1, m, 0) < 0)
                        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
                    snprintf(name, sizeof name,
                             "encoder.layers.%d.%s.adapters.%s.adapter_up.weight", i, pre, a->name);
                    if (s_spec_add(sv, name, 2, d, m) < 0)
                        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
                    snprintf(name, sizeof name, "encoder.layers.%d.%s.adapters.%s.adapter_up.bias",
                             i, pre, a->name);
                    if (s_spec_add(sv, name, 1, d, 0) < 0)
                        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
                }
            } else {
                int want[S_NLIN] = {a->attn_q, a->attn_k, a->attn_v, a->intermediate_lora,
                                    a->output_lora};
                int fin[S_NLIN] = {d, d, d, d, F};
                int fout[S_NLIN] = {d, d, d, F, d};
                for (int j = 0; j < S_NLIN; j++) {
                    if (!want[j])
                        continue;
                    int idx;
                    if (a->kind == WISP_ADAPTER_IA3) {
                        snprintf(name, sizeof name, "encoder.layers.%d.%s.loras.%s.lora_B", i,
                                 s_lin_key[j], a->name);
                        idx = s_spec_add(sv, name, 2, fout[j], 1);
                    } else {
                        snprintf(name, sizeof name, "encoder.layers.%d.%s.loras.%s.lora_A", i,
                                 s_lin_key[j], a->name);
                        idx = s_spec_add(sv, name, 2, a->r, fin[j]);
                        snprintf(name, sizeof name, "encoder.layers.%d.%s.loras.%s.lora_B", i,
                                 s_lin_key[j], a->name);
                        if (idx >= 0 && s_spec_add(sv, name, 2, fout[j], a->r) < 0)
                            idx = -1;
                    }
                    if (idx < 0)
                        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
                    la[i].lin_p[j] = idx;
                }
            }
        }
    }
    if (hc) {
        int P = hc->classifier_proj_size, NL = hc->num_labels;
        *head_p = s_spec_add(sv, "projector.weight", 2, P, d);
        if (*head_p < 0 || s_spec_add(sv, "projector.bias", 1, P, 0) < 0 ||
            s_spec_add(sv, "classifier.weight", 2, NL, P) < 0 ||
            s_spec_add(sv, "classifier.bias", 1, NL, 0) < 0 ||
            (hc->use_weighted_layer_sum && s_spec_add(sv, "layer_weights", 1, L + 1, 0) < 0))
            return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    }
    return 0;
}

/* ------------------------------------------------------------------ memory plan */

typedef struct {
    float *base; /* NULL while sizing */
    size_t off;  /* floats used so far */
} s_arena_t;

static float *s_take(s_arena_t *a, size_t n)
{
    size_t o = a->off;
    a->off += (n + 15) & ~(size_t)15; /* keep every buffer 64-byte aligned */
    return a->base ? a->base + o : NULL;
}

/* Carves the arena (sizing pass when a->base is NULL). */
/* Whether the backward of layer i goes through its attention core: for the dq, dk,
 * dv of trainable q/k/v projections, or to pass the gradient below the layer. */
static int s_needs_attention_grad(const wisp_model_t *self, int i)
{
    const s_layer_a_t *la = &self->la[i];
    return i > self->lowest || la->lin_p[S_LIN_Q] >= 0 || la->lin_p[S_LIN_K] >= 0 ||
           la->lin_p[S_LIN_V] >= 0;
}

static void s_carve(wisp_model_t *self, s_arena_t *a)
{
    const int tr = self->opts.training;
    const size_t B = (size_t)self->opts.max_batch;
    const size_t Tm = (size_t)self->opts.max_frames / 2;
    const size_t N = B * Tm, d = (size_t)self->d, F = (size_t)self->F;
    const size_t L = (size_t)self->L, H = (size_t)self->H;
    const size_t P = (size_t)self->lay_P, NL = (size_t)self->lay_NL;
    const size_t fr = (size_t)self->opts.max_frames, nm = (size_t)self->n_mels;
    const size_t mm = (size_t)self->max_m, mr = (size_t)self->max_r;
    const size_t mi = (size_t)self->max_ia3_out;

    for (size_t i = 0; i <= L; i++)
        self->x[i] = (tr || i < 2) ? s_take(a, N * d) : self->x[i % 2];
    /* attention probabilities kept for backward: top layers first, within the budget */
    const size_t per_layer = B * H * Tm * Tm;
    const int keep_mb = self->opts.attn_keep_mb;
    size_t keep_left = tr && keep_mb > 0 ? ((size_t)keep_mb << 20) / sizeof(float) : 0;
    for (int i = (int)L - 1; i >= 0; i--) {
        self->acts[i].probs = NULL;
        if (keep_left >= per_layer && s_needs_attention_grad(self, i)) {
            self->acts[i].probs = s_take(a, per_layer);
            keep_left -= per_layer;
        }
    }
    for (size_t i = 0; i < L; i++) {
        s_acts_t *s = &self->acts[i];
        if (!tr && i > 0) {
            *s = self->acts[0];
            continue;
        }
        const s_layer_a_t *la = &self->la[i];
        s->ln1_mean = s_take(a, N);
        s->ln1_rstd = s_take(a, N);
        s->q = s_take(a, N * d);
        s->k = s_take(a, N * d);
        s->v = s_take(a, N * d);
        s->att = s_take(a, N * d);
        s->lse = tr ? s_take(a, B * H * Tm) : NULL;
        /* s->probs: planned above */
        s->h = s_take(a, N * d);
        s->ln2_mean = s_take(a, N);
        s->ln2_rstd = s_take(a, N);
        s->u = s_take(a, N * F);
        for (int j = 0; j < S_NSITE; j++) {
            size_t m = tr ? (size_t)la->site_m[j] : 0;
            s->site_z[j] = m ? s_take(a, N * d) : NULL;
            s->site_pre[j] = m ? s_take(a, N * m) : NULL;
        }
        for (int j = 0; j < S_NLIN; j++) {
            s->lin_t[j] = s->lin_pre[j] = NULL;
            if (!tr || la->lin_p[j] < 0)
                continue;
            if (self->lay_ia3)
                s->lin_pre[j] = s_take(a, N * (j == S_LIN_FC1 ? F : d));
            else
                s->lin_t[j] = s_take(a, N * (size_t)self->lay_r);
        }
    }
    self->lnf_mean = s_take(a, N);
    self->lnf_rstd = s_take(a, N);
    self->xf = s_take(a, N * d);
    self->xm = s_take(a, (L + 1) * B * d);
    self->sw = s_take(a, L + 1);
    self->hmean = s_take(a, B * d);
    self->pooled = s_take(a, B * P);
    self->logits = s_take(a, B * NL);
    self->probs = s_take(a, B * NL);

    size_t colf = nn_conv1d_k3_scratch_floats((int)fr, (int)nm);
    size_t col2 = nn_conv1d_k3_scratch_floats((int)Tm, (int)d);
    self->mel_t = s_take(a, fr * nm);
    self->c1 = s_take(a, fr * d);
    self->col = s_take(a, colf > col2 ? colf : col2);
    self->attn_scr = s_take(a, nn_attention_scratch_floats_mt((int)Tm, self->hd, self->nthreads));
    self->z = s_take(a, N * d);
    self->sf = s_take(a, N * d);
    self->zs = tr ? NULL : s_take(a, N * d);
    self->g = s_take(a, N * F);
    self->bott = s_take(a, N * (mm ? mm : 1));
    self->lt = s_take(a, N * (mr ? mr : 1));
    self->svec = s_take(a, d > F ? d : F);
    self->svec2 = s_take(a, d > F ? d : F);
    if (tr) {
        self->dx = s_take(a, N * d);
        self->dxp = s_take(a, N * d);
        self->dh = s_take(a, N * d);
        self->df = s_take(a, N * d);
        self->dz = s_take(a, N * d);
        self->dq = s_take(a, N * d);
        self->dk = s_take(a, N * d);
        self->dv = s_take(a, N * d);
        self->dg = s_take(a, N * F);
        self->dlin = mi ? s_take(a, N * mi) : NULL;
        self->dbott = s_take(a, N * (mm ? mm : 1));
        self->dpre = s_take(a, N * (mm ? mm : 1));
        self->dt = s_take(a, N * (mr ? mr : 1));
        self->dlogits = s_take(a, B * NL);
        self->dpooled = s_take(a, B * P);
        self->dhmean = s_take(a, B * d);
        self->dtmp = s_take(a, B * d);
        self->dsw = s_take(a, L + 1);
    }
}

static int s_nan_fill_wanted(void)
{
#ifdef WISP_NAN_FILL
    return 1;
#else
    const char *e = getenv("WISP_NAN_FILL");
    return e && *e && strcmp(e, "0") != 0;
#endif
}

/* (Re)plans the activation arena for the current adapter and head. */
static int s_plan(wisp_model_t *self, wisp_error_t *err)
{
    s_arena_t a = {NULL, 0};
    s_carve(self, &a);
    if (self->plan_only) {
        self->arena_floats = a.off;
        return 0;
    }
    if (a.off > self->arena_cap || !self->arena) {
        float *arena = wisp_alloc(a.off * sizeof(float));
        self->unusable = !arena;
        if (!arena)
            return wisp_error_set(err, WISP_ERR_NOMEM,
                                  "model: cannot allocate %zu MB of activations",
                                  a.off * sizeof(float) >> 20);
        wisp_free(self->arena);
        self->arena = arena;
        self->arena_cap = a.off;
    }
    self->arena_floats = a.off;
    if (s_nan_fill_wanted()) {
        for (size_t i = 0; i < a.off; i++)
            self->arena[i] = NAN;
    }
    a.base = self->arena;
    a.off = 0;
    s_carve(self, &a);
    return 0;
}

/* Installs a new trainable layout: builds the spec for (a, hc), allocates params and
 * grads, copies over the values of the old adapter tensors (keep_adapter) and head
 * tensors (keep_head) present under the same name and size, replans the arena. On
 * failure before the swap the trainables are unchanged; when only the arena cannot
 * be allocated, the model refuses to run until a later relayout succeeds. */
static int s_relayout(wisp_model_t *self, const wisp_adapter_config_t *a,
                      const wisp_head_config_t *hc, int keep_adapter, int keep_head,
                      wisp_error_t *err)
{
    s_specvec_t sv = {0};
    s_layer_a_t *la = calloc((size_t)self->L, sizeof *la);
    float *params = NULL, *grads = NULL;
    int head_p, rc;
    if (!la) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        goto done;
    }
    rc = s_spec_build(self, a, hc, &sv, la, &head_p, err);
    if (rc < 0)
        goto done;
    params = wisp_alloc((sv.off ? sv.off : 1) * sizeof(float));
    grads = wisp_alloc((sv.off ? sv.off : 1) * sizeof(float));
    if (!params || !grads) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        goto done;
    }
    for (int i = 0; i < sv.n; i++) {
        for (int j = 0; j < self->nspec; j++) {
            int is_head = self->head_p >= 0 && j >= self->head_p;
            if (!(is_head ? keep_head : keep_adapter))
                continue;
            if (strcmp(sv.v[i].name, self->spec[j].name) == 0 &&
                sv.v[i].numel == self->spec[j].numel) {
                memcpy(params + sv.v[i].offset, self->params + self->spec[j].offset,
                       sv.v[i].numel * sizeof(float));
                break;
            }
        }
    }
    s_spec_free(self->spec, self->nspec);
    wisp_free(self->params);
    wisp_free(self->grads);
    free(self->la);
    self->spec = sv.v;
    self->nspec = sv.n;
    self->nparams = sv.off;
    self->params = params;
    self->grads = grads;
    self->la = la;
    self->head_p = head_p;
    sv.v = NULL;
    params = grads = NULL;
    la = NULL;

    /* widths for scratch and the lowest trainable layer */
    self->max_m = self->max_r = self->max_ia3_out = 0;
    self->lay_ia3 = a && a->kind == WISP_ADAPTER_IA3;
    self->lay_r = a && a->kind == WISP_ADAPTER_LORA ? a->r : 0;
    self->lay_P = hc ? hc->classifier_proj_size : 1;
    self->lay_NL = hc ? hc->num_labels : 1;
    self->lowest = self->L;
    for (int i = 0; i < self->L; i++) {
        const s_layer_a_t *l = &self->la[i];
        int any = 0;
        for (int s = 0; s < S_NSITE; s++) {
            if (l->site_m[s] > self->max_m)
                self->max_m = l->site_m[s];
            any |= l->site_m[s] > 0;
        }
        for (int j = 0; j < S_NLIN; j++) {
            if (l->lin_p[j] < 0)
                continue;
            any = 1;
            if (self->lay_ia3) {
                int out = j == S_LIN_FC1 ? self->F : self->d;
                if (out > self->max_ia3_out)
                    self->max_ia3_out = out;
            } else if (a && a->r > self->max_r) {
                self->max_r = a->r;
            }
        }
        if (any && i < self->lowest)
            self->lowest = i;
    }
    rc = s_plan(self, err);
done:
    s_spec_free(sv.v, sv.n);
    wisp_free(params);
    wisp_free(grads);
    free(la);
    return rc;
}

/* ------------------------------------------------------------------ loading */

static int s_get(wisp_model_t *self, const char *prefix, const char *fmt, int layer, int ndim,
                 int64_t d0, int64_t d1, int64_t d2, const float **out, wisp_error_t *err)
{
    char name[256], suffix[200];
    snprintf(suffix, sizeof suffix, fmt, layer);
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    int64_t shape[3] = {d0, d1, d2};
    if (!wisp_st_find(self->st, name))
        return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: missing tensor %s", self->model_dir,
                              name);
    return wisp_st_get_f32(self->st, name, ndim, shape, out, err);
}

/* Copies tensor spec[idx] from st, trying `prefix + spec name` for each prefix. */
static int s_load_tensor(wisp_model_t *self, wisp_st_t *st, const char *file,
                         const char *const *prefixes, int nprefix, int idx, wisp_error_t *err)
{
    const wisp_param_info_t *p = &self->spec[idx];
    char name[600];
    for (int k = 0; k < nprefix; k++) {
        snprintf(name, sizeof name, "%s%s", prefixes[k], p->name);
        if (!wisp_st_find(st, name))
            continue;
        const float *v;
        int rc = wisp_st_get_f32(st, name, p->ndim, p->shape, &v, err);
        if (rc < 0)
            return rc;
        memcpy(self->params + p->offset, v, p->numel * sizeof(float));
        return 0;
    }
    return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: missing tensor %s", file, p->name);
}

/* Threads for the attention core: opts.threads, or OpenBLAS's own count when the
 * options leave OpenBLAS as is. The attention core splits (clip, head, query
 * block) units over them, each unit's sgemm on one OpenBLAS thread, because its
 * thin sgemms (128 x 1500 x 64) scale poorly inside OpenBLAS. */
static int s_attn_threads(const wisp_model_opts_t *opts)
{
    int n = opts->threads > 0 ? opts->threads : openblas_get_num_threads();
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

wisp_model_t *wisp_model_new(const char *model_dir, const wisp_model_opts_t *opts,
                             wisp_error_t *err)
{
    wisp_model_t *self = calloc(1, sizeof *self);
    char path[4096];
    int rc = 0;
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        return NULL;
    }
    self->head_p = -1;
    if (!opts || opts->max_batch < 1 || opts->max_frames < 2 || opts->max_frames % 2) {
        wisp_error_set(err, WISP_ERR_ARG,
                       "%s: model options need max_batch >= 1 and an even max_frames >= 2",
                       model_dir);
        goto fail;
    }
    self->opts = *opts;
    if (opts->threads > 0)
        openblas_set_num_threads(opts->threads);
    self->nthreads = s_attn_threads(opts);
    if (self->nthreads > 1 && !(self->pool = nn_pool_new(self->nthreads))) {
        wisp_error_set(err, WISP_ERR_NOMEM, "%s: cannot start %d attention threads", model_dir,
                       self->nthreads);
        goto fail;
    }
    self->model_dir = strdup(model_dir);
    if (!self->model_dir || wisp_path_join(path, sizeof path, model_dir, "config.json") < 0) {
        wisp_error_set(err, WISP_ERR_ARG, "%s: bad model directory", model_dir);
        goto fail;
    }
    if (wisp_whisper_config_load(&self->cfg, path, err) < 0)
        goto fail;
    const wisp_whisper_config_t *c = &self->cfg;
    self->d = c->d_model;
    self->L = c->encoder_layers;
    self->H = c->encoder_attention_heads;
    self->F = c->encoder_ffn_dim;
    self->hd = self->d / self->H;
    self->n_mels = c->num_mel_bins;
    self->T_max = c->max_source_positions;
    if (self->L > WISP_MAX_LAYERS) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: %d encoder layers (at most %d)", path,
                       self->L, WISP_MAX_LAYERS);
        goto fail;
    }
    if (opts->max_frames / 2 > self->T_max) {
        wisp_error_set(err, WISP_ERR_ARG, "%s: max_frames %d exceeds 2 * max_source_positions %d",
                       model_dir, opts->max_frames, self->T_max);
        goto fail;
    }
    self->st = wisp_st_open(model_dir, err);
    if (!self->st)
        goto fail;
    const char *prefix;
    if (wisp_st_find(self->st, "model.encoder.conv1.weight"))
        prefix = "model.encoder.";
    else if (wisp_st_find(self->st, "encoder.conv1.weight"))
        prefix = "encoder.";
    else {
        wisp_error_set(err, WISP_ERR_NOTFOUND,
                       "%s: no Whisper encoder tensors (model.encoder.conv1.weight or "
                       "encoder.conv1.weight)",
                       model_dir);
        goto fail;
    }
    const int d = self->d, F = self->F;
    self->lw = calloc((size_t)self->L, sizeof *self->lw);
    self->acts = calloc((size_t)self->L, sizeof *self->acts);
    self->x = calloc((size_t)self->L + 1, sizeof *self->x);
    if (!self->lw || !self->acts || !self->x) {
        wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    rc = s_get(self, prefix, "conv1.weight", 0, 3, d, self->n_mels, 3, &self->conv1_w, err);
    if (!rc)
        rc = s_get(self, prefix, "conv1.bias", 0, 1, d, 0, 0, &self->conv1_b, err);
    if (!rc)
        rc = s_get(self, prefix, "conv2.weight", 0, 3, d, d, 3, &self->conv2_w, err);
    if (!rc)
        rc = s_get(self, prefix, "conv2.bias", 0, 1, d, 0, 0, &self->conv2_b, err);
    if (!rc)
        rc =
            s_get(self, prefix, "embed_positions.weight", 0, 2, self->T_max, d, 0, &self->pos, err);
    if (!rc)
        rc = s_get(self, prefix, "layer_norm.weight", 0, 1, d, 0, 0, &self->lnf_w, err);
    if (!rc)
        rc = s_get(self, prefix, "layer_norm.bias", 0, 1, d, 0, 0, &self->lnf_b, err);
    for (int i = 0; i < self->L && !rc; i++) {
        s_layer_w_t *w = &self->lw[i];
        struct {
            const char *fmt;
            int ndim;
            int d0, d1;
            const float **out;
        } t[] = {
            {"layers.%d.self_attn_layer_norm.weight", 1, d, 0, &w->ln1_w},
            {"layers.%d.self_attn_layer_norm.bias", 1, d, 0, &w->ln1_b},
            {"layers.%d.self_attn.q_proj.weight", 2, d, d, &w->q_w},
            {"layers.%d.self_attn.q_proj.bias", 1, d, 0, &w->q_b},
            {"layers.%d.self_attn.k_proj.weight", 2, d, d, &w->k_w},
            {"layers.%d.self_attn.v_proj.weight", 2, d, d, &w->v_w},
            {"layers.%d.self_attn.v_proj.bias", 1, d, 0, &w->v_b},
            {"layers.%d.self_attn.out_proj.weight", 2, d, d, &w->o_w},
            {"layers.%d.self_attn.out_proj.bias", 1, d, 0, &w->o_b},
            {"layers.%d.final_layer_norm.weight", 1, d, 0, &w->ln2_w},
            {"layers.%d.final_layer_norm.bias", 1, d, 0, &w->ln2_b},
            {"layers.%d.fc1.weight", 2, F, d, &w->fc1_w},
            {"layers.%d.fc1.bias", 1, F, 0, &w->fc1_b},
            {"layers.%d.fc2.weight", 2, d, F, &w->fc2_w},
            {"layers.%d.fc2.bias", 1, d, 0, &w->fc2_b},
        };
        for (size_t k = 0; k < sizeof t / sizeof t[0] && !rc; k++)
            rc = s_get(self, prefix, t[k].fmt, i, t[k].ndim, t[k].d0, t[k].d1, 0, t[k].out, err);
    }
    if (rc < 0)
        goto fail;
    /* A WhisperForAudioClassification checkpoint carries the head. */
    if (wisp_st_find(self->st, "projector.weight")) {
        wisp_head_config_t hc = {0};
        hc.num_labels = c->num_labels;
        hc.classifier_proj_size = c->classifier_proj_size;
        hc.use_weighted_layer_sum = c->use_weighted_layer_sum;
        hc.num_hidden_layers = self->L;
        hc.d_model = d;
        hc.id2label = c->id2label;
        if (s_head_copy(&self->head, &hc) < 0) {
            wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
            goto fail;
        }
        self->has_head = 1;
        if (s_relayout(self, NULL, &self->head, 0, 0, err) < 0)
            goto fail;
        const char *pre[] = {""};
        for (int k = 0; k < self->nspec; k++) {
            if (s_load_tensor(self, self->st, model_dir, pre, 1, k, err) < 0)
                goto fail;
        }
    } else if (s_relayout(self, NULL, NULL, 0, 0, err) < 0) {
        goto fail;
    }
    return self;
fail:
    wisp_model_destroy(&self);
    return NULL;
}

void wisp_model_destroy(wisp_model_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_model_t *self = *pself;
    nn_pool_destroy(&self->pool);
    wisp_st_destroy(&self->st);
    if (self->has_adapter)
        s_adapter_free(&self->acfg);
    if (self->has_head)
        s_head_free(&self->head);
    s_spec_free(self->spec, self->nspec);
    wisp_free(self->params);
    wisp_free(self->grads);
    wisp_free(self->arena);
    free(self->la);
    free(self->lw);
    free(self->acts);
    free(self->x);
    free(self->model_dir);
    wisp_whisper_config_free(&self->cfg);
    free(self);
    *pself = NULL;
}

const wisp_whisper_config_t *wisp_model_config(const wisp_model_t *self)
{
    return &self->cfg;
}

/* ------------------------------------------------------------------ adapters */

static int s_check_adapter(const wisp_model_t *self, const wisp_adapter_config_t *cfg,
                           const char *where, wisp_error_t *err)
{
    if (cfg->kind == WISP_ADAPTER_NONE)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: adapter config has no architecture", where);
    if (!cfg->name[0] || strchr(cfg->name, '.'))
        return wisp_error_set(err, WISP_ERR_ARG, "%s: bad adapter name '%s'", where, cfg->name);
    if (cfg->kind == WISP_ADAPTER_BOTTLENECK) {
        if (cfg->non_linearity < NN_ACT_IDENTITY || cfg->non_linearity > NN_ACT_LEAKYRELU)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: bad non_linearity", where);
        for (int i = 0; i < self->L; i++) {
            if (!cfg->leave_out[i] && (cfg->mh_adapter || cfg->output_adapter) &&
                wisp_adapter_config_bottleneck_dim(cfg, i, self->d) < 1)
                return wisp_error_set(err, WISP_ERR_ARG,
                                      "%s: reduction_factor of layer %d gives no bottleneck", where,
                                      i);
        }
    } else {
        if (cfg->r < 1)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: r = %d", where, cfg->r);
        if (cfg->kind == WISP_ADAPTER_IA3 && cfg->r != 1)
            return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                  "%s: composition_mode 'scale' (IA3) needs r = 1, not %d", where,
                                  cfg->r);
    }
    return 0;
}

/* Truncated normal as torch.nn.init.trunc_normal_(std, a = -2 std, b = 2 std):
 * rejection sampling of a standard normal cut at +-2. */
static float s_trunc_normal(wisp_rng_t *rng, float std)
{
    for (;;) {
        float x = wisp_rng_normal(rng);
        if (x >= -2.0f && x <= 2.0f)
            return std * x;
    }
}

static void s_fill_uniform(wisp_rng_t *rng, float *p, size_t n, float bound)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (2.0f * wisp_rng_uniform(rng) - 1.0f) * bound;
}

static void s_fill_normal(wisp_rng_t *rng, float *p, size_t n, float std)
{
    for (size_t i = 0; i < n; i++)
        p[i] = std * wisp_rng_normal(rng);
}

/* Fresh adapter parameters by the config's init scheme (adapters library v1.2). */
static int s_init_adapter(wisp_model_t *self, uint64_t seed, wisp_error_t *err)
{
    const wisp_adapter_config_t *a = &self->acfg;
    const char *init = a->init_weights;
    wisp_rng_t rng;
    wisp_rng_seed(&rng, seed);
    for (int i = 0; i < self->L; i++) {
        const s_layer_a_t *la = &self->la[i];
        for (int s = 0; s < S_NSITE; s++) {
            if (!la->site_m[s])
                continue;
            int k = la->site_p[s];
            float *dw = s_param(self, k), *db = s_param(self, k + 1);
            float *uw = s_param(self, k + 2), *ub = s_param(self, k + 3);
            size_t nd = self->spec[k].numel, nu = self->spec[k + 2].numel;
            memset(db, 0, self->spec[k + 1].numel * sizeof(float));
            memset(ub, 0, self->spec[k + 3].numel * sizeof(float));
            if (!strcmp(init, "bert")) {
                s_fill_normal(&rng, dw, nd, 0.02f);
                s_fill_normal(&rng, uw, nu, 0.02f);
            } else if (!strcmp(init, "mam_adapter")) {
                /* kaiming_uniform_(a = sqrt(5)) on (m, d): bound 1/sqrt(d) */
                s_fill_uniform(&rng, dw, nd, (float)(1.0 / sqrt((double)self->d)));
                memset(uw, 0, nu * sizeof(float));
            } else if (!strcmp(init, "houlsby")) {
                for (size_t j = 0; j < nd; j++)
                    dw[j] = s_trunc_normal(&rng, 0.01f);
                for (size_t j = 0; j < nu; j++)
                    uw[j] = s_trunc_normal(&rng, 0.01f);
            } else {
                return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                      "adapter %s: init_weights '%s' for a bottleneck adapter",
                                      a->name, init);
            }
        }
        for (int j = 0; j < S_NLIN; j++) {
            int k = la->lin_p[j];
            if (k < 0)
                continue;
            if (a->kind == WISP_ADAPTER_IA3) {
                float *l = s_param(self, k);
                size_t n = self->spec[k].numel;
                if (!strcmp(init, "ia3"))
                    for (size_t q = 0; q < n; q++)
                        l[q] = 1.0f;
                else if (!strcmp(init, "lora"))
                    memset(l, 0, n * sizeof(float));
                else if (!strcmp(init, "bert"))
                    s_fill_normal(&rng, l, n, 0.02f);
                else
                    return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                                          "adapter %s: init_weights '%s'", a->name, init);
                continue;
            }
            float *A = s_param(self, k), *Bm = s_param(self, k + 1);
            size_t na = self->spec[k].numel, nb = self->spec[k + 1].numel;
            if (!strcmp(init, "lora")) {
                /* kaiming_uniform_(a = sqrt(5)) on A (r, in): bound 1/sqrt(in) */
                s_fill_uniform(&rng, A, na, (float)(1.0 / sqrt((double)self->spec[k].shape[1])));
                memset(Bm, 0, nb * sizeof(float));
            } else if (!strcmp(init, "bert")) {
                s_fill_normal(&rng, A, na, 0.02f);
                s_fill_normal(&rng, Bm, nb, 0.02f);
            } else if (!strcmp(init, "ia3")) {
                for (size_t q = 0; q < na; q++)
                    A[q] = 1.0f;
                for (size_t q = 0; q < nb; q++)
                    Bm[q] = 1.0f;
            } else {
                return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "adapter %s: init_weights '%s'",
                                      a->name, init);
            }
        }
    }
    return 0;
}

/* Installs cfg as the active adapter (layout only; values zero). */
static int s_install_adapter(wisp_model_t *self, const wisp_adapter_config_t *cfg,
                             const char *where, wisp_error_t *err)
{
    wisp_adapter_config_t copy;
    int rc = s_check_adapter(self, cfg, where, err);
    if (rc < 0)
        return rc;
    if (s_adapter_copy(&copy, cfg) < 0)
        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    /* the old adapter's values never survive into a new config (keep_adapter 0) */
    rc = s_relayout(self, &copy, self->has_head ? &self->head : NULL, 0, 1, err);
    if (rc < 0) {
        s_adapter_free(&copy);
        return rc;
    }
    if (self->has_adapter)
        s_adapter_free(&self->acfg);
    self->acfg = copy;
    self->has_adapter = 1;
    return 0;
}

int wisp_model_set_adapter(wisp_model_t *self, const wisp_adapter_config_t *cfg, uint64_t seed,
                           wisp_error_t *err)
{
    int rc = s_install_adapter(self, cfg, cfg->name, err);
    if (rc < 0)
        return rc;
    return s_init_adapter(self, seed, err);
}

int wisp_model_load_adapter(wisp_model_t *self, const char *dir, wisp_error_t *err)
{
    wisp_adapter_config_t cfg;
    char path[4096];
    int hidden = 0, rc, installed = 0;
    wisp_st_t *st = NULL;
    memset(&cfg, 0, sizeof cfg);
    rc = wisp_adapter_config_load_dir(&cfg, dir, &hidden, err);
    if (rc < 0)
        return rc;
    if (hidden && hidden != self->d) {
        rc = wisp_error_set(err, WISP_ERR_SHAPE,
                            "%s/adapter_config.json: hidden_size %d, the model has d_model %d", dir,
                            hidden, self->d);
        goto done;
    }
    if ((rc = s_install_adapter(self, &cfg, dir, err)) < 0)
        goto done;
    installed = 1;
    if ((rc = wisp_path_join(path, sizeof path, dir, "adapter.safetensors")) < 0) {
        rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
        goto done;
    }
    st = wisp_st_open(path, err);
    if (!st) {
        rc = err && err->code ? err->code : WISP_ERR_IO;
        goto done;
    }
    const char *pre[] = {"", "model."};
    int used = 0;
    for (int k = 0; k < self->nspec; k++) {
        if (k >= self->head_p && self->head_p >= 0)
            break; /* head tensors come from the head directory */
        if ((rc = s_load_tensor(self, st, path, pre, 2, k, err)) < 0)
            goto done;
        used++;
    }
    if (wisp_st_count(st) != used) {
        /* a tensor the config does not explain (wrong name, leave_out layer, ...) */
        for (int i = 0; i < wisp_st_count(st); i++) {
            const char *n = wisp_st_at(st, i)->name;
            const char *m = strncmp(n, "model.", 6) == 0 ? n + 6 : n;
            int found = 0;
            for (int k = 0; k < self->nspec && !found; k++)
                found = strcmp(m, self->spec[k].name) == 0;
            if (!found) {
                rc = wisp_error_set(err, WISP_ERR_FORMAT,
                                    "%s: tensor %s does not belong to adapter '%s' as configured",
                                    path, n, self->acfg.name);
                goto done;
            }
        }
    }
    rc = 0;
done:
    if (rc < 0 && installed) {
        /* no half-loaded adapter: the model is left without one */
        if (s_relayout(self, NULL, self->has_head ? &self->head : NULL, 0, 1, NULL) == 0) {
            s_adapter_free(&self->acfg);
            self->has_adapter = 0;
        }
    }
    wisp_st_destroy(&st);
    wisp_adapter_config_free(&cfg);
    return rc;
}

/* Writes the trainable tensors spec[k0, k1) as F32 to DIR/FILE (mkdir -p DIR). */
static int s_save_tensors(const wisp_model_t *self, int k0, int k1, const char *dir,
                          const char *file, wisp_error_t *err)
{
    char path[4096];
    int rc;
    if ((rc = wisp_mkdir_p(dir, err)) < 0)
        return rc;
    if (wisp_path_join(path, sizeof path, dir, file) < 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    wisp_st_writer_t *w = wisp_st_writer_new();
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    for (int k = k0; k < k1; k++) {
        const wisp_param_info_t *p = &self->spec[k];
        rc = wisp_st_writer_add_f32(w, p->name, WISP_DT_F32, p->ndim, p->shape,
                                    self->params + p->offset);
        if (rc < 0) {
            rc = wisp_error_set(err, rc, "%s: cannot add tensor %s", dir, p->name);
            goto done;
        }
    }
    rc = wisp_st_writer_save(w, path, err);
done:
    wisp_st_writer_destroy(&w);
    return rc;
}

int wisp_model_save_adapter(const wisp_model_t *self, const char *dir, wisp_error_t *err)
{
    if (!self->has_adapter)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: the model has no adapter to save", dir);
    /* adapter tensors come first in the spec, the head's (if any) from head_p on */
    int end = self->head_p < 0 ? self->nspec : self->head_p;
    int rc = s_save_tensors(self, 0, end, dir, "adapter.safetensors", err);
    if (rc < 0)
        return rc;
    return wisp_adapter_config_save_dir(&self->acfg, dir, self->d, self->model_dir, err);
}

const wisp_adapter_config_t *wisp_model_adapter(const wisp_model_t *self)
{
    return self->has_adapter ? &self->acfg : NULL;
}

/* ------------------------------------------------------------------ head */

static int s_install_head(wisp_model_t *self, const wisp_head_config_t *cfg, const char *where,
                          wisp_error_t *err)
{
    wisp_head_config_t copy;
    if (cfg->num_labels < 1 || cfg->classifier_proj_size < 1)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: head needs num_labels >= 1 and classifier_proj_size >= 1",
                              where);
    if ((cfg->d_model && cfg->d_model != self->d) ||
        (cfg->num_hidden_layers && cfg->num_hidden_layers != self->L))
        return wisp_error_set(err, WISP_ERR_SHAPE,
                              "%s: head made for d_model %d with %d layers, the model has %d "
                              "and %d",
                              where, cfg->d_model, cfg->num_hidden_layers, self->d, self->L);
    if (s_head_copy(&copy, cfg) < 0) {
        s_head_free(&copy);
        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    }
    copy.d_model = self->d;
    copy.num_hidden_layers = self->L;
    /* the old head's values never survive into a new head (keep_head 0) */
    int rc = s_relayout(self, self->has_adapter ? &self->acfg : NULL, &copy, 1, 0, err);
    if (rc < 0) {
        s_head_free(&copy);
        return rc;
    }
    if (self->has_head)
        s_head_free(&self->head);
    self->head = copy;
    self->has_head = 1;
    return 0;
}

int wisp_model_init_head(wisp_model_t *self, const wisp_head_config_t *cfg, uint64_t seed,
                         wisp_error_t *err)
{
    int rc = s_install_head(self, cfg, "head config", err);
    if (rc < 0)
        return rc;
    wisp_rng_t rng;
    wisp_rng_seed(&rng, seed);
    int k = self->head_p;
    /* HF _init_weights: Linear weights N(0, init_std 0.02), biases 0; layer_weights 1/(L+1) */
    s_fill_normal(&rng, s_param(self, k), self->spec[k].numel, 0.02f);
    memset(s_param(self, k + 1), 0, self->spec[k + 1].numel * sizeof(float));
    s_fill_normal(&rng, s_param(self, k + 2), self->spec[k + 2].numel, 0.02f);
    memset(s_param(self, k + 3), 0, self->spec[k + 3].numel * sizeof(float));
    if (self->head.use_weighted_layer_sum) {
        float *lw = s_param(self, k + 4);
        for (int i = 0; i <= self->L; i++)
            lw[i] = 1.0f / (float)(self->L + 1);
    }
    return 0;
}

int wisp_model_load_head(wisp_model_t *self, const char *dir, wisp_error_t *err)
{
    char path[4096];
    wisp_head_config_t hc;
    wisp_st_t *st = NULL;
    int rc, installed = 0;
    memset(&hc, 0, sizeof hc);
    if (wisp_path_join(path, sizeof path, dir, "head_config.json") < 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    if ((rc = wisp_head_config_load(&hc, path, err)) < 0)
        return rc;
    if ((rc = s_install_head(self, &hc, path, err)) < 0)
        goto done;
    installed = 1;
    if (wisp_path_join(path, sizeof path, dir, "model_head.safetensors") < 0) {
        rc = wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
        goto done;
    }
    st = wisp_st_open(path, err);
    if (!st) {
        rc = err && err->code ? err->code : WISP_ERR_IO;
        goto done;
    }
    const char *pre[] = {""};
    for (int k = self->head_p; k < self->nspec; k++) {
        if ((rc = s_load_tensor(self, st, path, pre, 1, k, err)) < 0)
            goto done;
    }
    rc = 0;
done:
    if (rc < 0 && installed) {
        /* no half-loaded head: the model is left without one */
        if (s_relayout(self, self->has_adapter ? &self->acfg : NULL, NULL, 1, 0, NULL) == 0) {
            s_head_free(&self->head);
            self->has_head = 0;
        }
    }
    wisp_st_destroy(&st);
    wisp_head_config_free(&hc);
    return rc;
}

int wisp_model_save_head(const wisp_model_t *self, const char *dir, wisp_error_t *err)
{
    char path[4096];
    if (!self->has_head)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: the model has no head to save", dir);
    int rc = s_save_tensors(self, self->head_p, self->nspec, dir, "model_head.safetensors", err);
    if (rc < 0)
        return rc;
    if (wisp_path_join(path, sizeof path, dir, "head_config.json") < 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", dir);
    return wisp_head_config_save(&self->head, path, err);
}

const wisp_head_config_t *wisp_model_head(const wisp_model_t *self)
{
    return self->has_head ? &self->head : NULL;
}

/* ------------------------------------------------------------------ params */

size_t wisp_model_num_params(const wisp_model_t *self)
{
    return self->nparams;
}
float *wisp_model_params(wisp_model_t *self)
{
    return self->params;
}
float *wisp_model_grads(wisp_model_t *self)
{
    return self->grads;
}
int wisp_model_num_param_tensors(const wisp_model_t *self)
{
    return self->nspec;
}

const wisp_param_info_t *wisp_model_param_tensor(const wisp_model_t *self, int i)
{
    return (i >= 0 && i < self->nspec) ? &self->spec[i] : NULL;
}

void wisp_model_zero_grads(wisp_model_t *self)
{
    memset(self->grads, 0, self->nparams * sizeof(float));
}

size_t wisp_model_planned_bytes(const wisp_model_t *self)
{
    return (self->arena_floats + 2 * self->nparams) * sizeof(float);
}

size_t wisp_model_plan_bytes(const wisp_whisper_config_t *cfg, const wisp_model_opts_t *opts,
                             const wisp_adapter_config_t *adapter, const wisp_head_config_t *head)
{
    wisp_model_t m;
    size_t bytes = 0;
    memset(&m, 0, sizeof m);
    m.plan_only = 1;
    m.opts = *opts;
    m.nthreads = s_attn_threads(opts);
    m.d = cfg->d_model;
    m.L = cfg->encoder_layers;
    m.H = cfg->encoder_attention_heads;
    m.F = cfg->encoder_ffn_dim;
    m.hd = m.H > 0 ? m.d / m.H : 0;
    m.n_mels = cfg->num_mel_bins;
    m.head_p = -1;
    if (m.d < 1 || m.L < 1 || m.L > WISP_MAX_LAYERS || m.hd < 1 || opts->max_batch < 1 ||
        opts->max_frames < 2)
        return 0;
    m.acts = calloc((size_t)m.L, sizeof *m.acts);
    m.x = calloc((size_t)m.L + 1, sizeof *m.x);
    if (m.acts && m.x &&
        s_relayout(&m, adapter && adapter->kind != WISP_ADAPTER_NONE ? adapter : NULL, head, 0, 0,
                   NULL) == 0)
        bytes = wisp_model_planned_bytes(&m);
    s_spec_free(m.spec, m.nspec);
    wisp_free(m.params);
    wisp_free(m.grads);
    free(m.la);
    free(m.acts);
    free(m.x);
    return bytes;
}

/* ------------------------------------------------------------------ forward */

/* out (N, OC) = LoRA/IA3-adapted linear of module `j` in layer i on z (N, C). */
static void s_lin_forward(wisp_model_t *self, int i, int j, float *out, const float *z,
                          const float *W, const float *b, int N, int C, int OC)
{
    const int k = self->la[i].lin_p[j];
    s_acts_t *A = &self->acts[i];
    if (k < 0) {
        nn_linear_forward(out, z, W, b, N, C, OC);
    } else if (self->acfg.kind == WISP_ADAPTER_IA3) {
        /* y = (W z + b) * (alpha * l) per output column */
        float *pre = A->lin_pre[j] ? A->lin_pre[j] : out;
        const float *l = s_param(self, k);
        for (int o = 0; o < OC; o++)
            self->svec[o] = self->acfg.alpha * l[o];
        nn_linear_forward(pre, z, W, b, N, C, OC);
        nn_colscale_forward(out, pre, self->svec, N, OC);
    } else {
        /* y = W z + b + (alpha / r) B (A z) */
        const int r = self->acfg.r;
        float *t = A->lin_t[j] ? A->lin_t[j] : self->lt;
        nn_linear_forward(out, z, W, b, N, C, OC);
        nn_linear_forward(t, z, s_param(self, k), NULL, N, C, r);
        nn_linear_forward_add(out, t, s_param(self, k + 1), self->acfg.alpha / (float)r, N, r, OC);
    }
}

/* out (N, d) = site(f, r) of NUMERICS 3; out is distinct from f and r. */
static void s_site_forward(wisp_model_t *self, int i, int s, float *out, const float *f,
                           const float *r, int N)
{
    const int d = self->d, m = self->la[i].site_m[s];
    const size_t n = (size_t)N * d;
    if (!m) {
        nn_add(out, f, r, n);
        return;
    }
    const wisp_adapter_config_t *a = &self->acfg;
    s_acts_t *A = &self->acts[i];
    const int k = self->la[i].site_p[s];
    const float *z;
    float *zbuf = A->site_z[s] ? A->site_z[s] : self->zs;
    if (a->is_parallel) {
        z = r;
    } else if (a->original_ln_before) {
        nn_add(zbuf, f, r, n);
        z = zbuf;
    } else {
        z = f;
    }
    if (A->site_z[s] && z != A->site_z[s]) {
        memcpy(A->site_z[s], z, n * sizeof(float));
        z = A->site_z[s];
    }
    float *pre = A->site_pre[s] ? A->site_pre[s] : self->bott;
    nn_linear_forward(pre, z, s_param(self, k), s_param(self, k + 1), N, d, m);
    nn_act_forward(self->bott, pre, (size_t)N * m, (nn_act_t)a->non_linearity);
    nn_linear_forward(out, self->bott, s_param(self, k + 2), s_param(self, k + 3), N, m, d);
    nn_scale(out, a->scaling, n);
    /* residual: f when residual_before_ln (or parallel), else the adapter input z */
    nn_axpy(out, 1.0f, (a->is_parallel || a->residual_before_ln) ? f : z, n);
    if (a->original_ln_after)
        nn_axpy(out, 1.0f, r, n);
}

static void s_layer_forward(wisp_model_t *self, int i, int B, int T, const float *x_in,
                            float *x_out)
{
    const int d = self->d, F = self->F, N = B * T;
    const s_layer_w_t *w = &self->lw[i];
    s_acts_t *A = &self->acts[i];
    nn_layernorm_forward(self->z, A->ln1_mean, A->ln1_rstd, x_in, w->ln1_w, w->ln1_b, N, d);
    s_lin_forward(self, i, S_LIN_Q, A->q, self->z, w->q_w, w->q_b, N, d, d);
    nn_scale(A->q, 1.0f / sqrtf((float)self->hd), (size_t)N * d);
    s_lin_forward(self, i, S_LIN_K, A->k, self->z, w->k_w, NULL, N, d, d);
    s_lin_forward(self, i, S_LIN_V, A->v, self->z, w->v_w, w->v_b, N, d, d);
    nn_attention_forward_mt(A->att, A->lse, self->keeping_probs ? A->probs : NULL, A->q, A->k, A->v,
                            self->attn_scr, B, T, self->H, self->hd, self->pool);
    nn_linear_forward(self->sf, A->att, w->o_w, w->o_b, N, d, d);
    s_site_forward(self, i, S_SITE_ATT, A->h, self->sf, x_in, N);
    nn_layernorm_forward(self->z, A->ln2_mean, A->ln2_rstd, A->h, w->ln2_w, w->ln2_b, N, d);
    s_lin_forward(self, i, S_LIN_FC1, A->u, self->z, w->fc1_w, w->fc1_b, N, d, F);
    nn_act_forward_mt(self->g, A->u, (size_t)N * F, NN_ACT_GELU, self->pool);
    s_lin_forward(self, i, S_LIN_FC2, self->sf, self->g, w->fc2_w, w->fc2_b, N, F, d);
    s_site_forward(self, i, S_SITE_OUT, x_out, self->sf, A->h, N);
}

static int s_check_input(const wisp_model_t *self, const float *mel, int B, int frames)
{
    if (self->unusable) {
        WISP_LOGE("%s: activations could not be allocated", self->model_dir);
        return WISP_ERR_NOMEM;
    }
    if (!self->has_head) {
        WISP_LOGE("%s: the model has no classification head (init or load one)", self->model_dir);
        return WISP_ERR_ARG;
    }
    if (!mel || B < 1 || B > self->opts.max_batch || frames < 2 || frames % 2 ||
        frames > self->opts.max_frames) {
        WISP_LOGE("%s: bad input batch %d x %d frames (max batch %d, max frames %d, even)",
                  self->model_dir, B, frames, self->opts.max_batch, self->opts.max_frames);
        return WISP_ERR_ARG;
    }
    return 0;
}

/* The whole forward: encoder, pooled hidden states, head; logits into self->logits. */
static void s_forward(wisp_model_t *self, const float *mel, int B, int frames)
{
    const int d = self->d, L = self->L, T = frames / 2, N = B * T, nm = self->n_mels;
    /* front end, one clip at a time (conv scratch is per clip) */
    for (int b = 0; b < B; b++) {
        const float *mb = mel + (size_t)b * nm * frames;
        for (int c = 0; c < nm; c++)
            for (int t = 0; t < frames; t++)
                self->mel_t[(size_t)t * nm + c] = mb[(size_t)c * frames + t];
        nn_conv1d_k3_forward(self->c1, self->col, self->mel_t, self->conv1_w, self->conv1_b, frames,
                             nm, d, 1);
        nn_act_forward_mt(self->c1, self->c1, (size_t)frames * d, NN_ACT_GELU, self->pool);
        float *xb = self->x[0] + (size_t)b * T * d;
        nn_conv1d_k3_forward(xb, self->col, self->c1, self->conv2_w, self->conv2_b, frames, d, d,
                             2);
        nn_act_forward_mt(xb, xb, (size_t)T * d, NN_ACT_GELU, self->pool);
        nn_add(xb, xb, self->pos, (size_t)T * d);
    }
    const int wsum = self->head.use_weighted_layer_sum;
    for (int i = 0; i < L; i++) {
        if (wsum)
            nn_meanpool_forward(self->xm + (size_t)i * B * d, self->x[i], B, T, d);
        s_layer_forward(self, i, B, T, self->x[i], self->x[i + 1]);
    }
    nn_layernorm_forward(self->xf, self->lnf_mean, self->lnf_rstd, self->x[L], self->lnf_w,
                         self->lnf_b, N, d);
    nn_meanpool_forward(self->xm + (size_t)L * B * d, self->xf, B, T, d);
    /* head: hmean = sum_k sw_k mean_t(hidden_k) (or the last), then projector, classifier */
    const int k = self->head_p, P = self->head.classifier_proj_size, NL = self->head.num_labels;
    if (wsum) {
        nn_softmax_forward(self->sw, s_param(self, k + 4), 1, L + 1);
        memset(self->hmean, 0, (size_t)B * d * sizeof(float));
        for (int j = 0; j <= L; j++)
            nn_axpy(self->hmean, self->sw[j], self->xm + (size_t)j * B * d, (size_t)B * d);
    } else {
        memcpy(self->hmean, self->xm + (size_t)L * B * d, (size_t)B * d * sizeof(float));
    }
    nn_linear_forward(self->pooled, self->hmean, s_param(self, k), s_param(self, k + 1), B, d, P);
    nn_linear_forward(self->logits, self->pooled, s_param(self, k + 2), s_param(self, k + 3), B, P,
                      NL);
}

int wisp_model_forward(wisp_model_t *self, const float *mel, int B, int frames, float *logits,
                       float *embed)
{
    int rc = s_check_input(self, mel, B, frames);
    if (rc < 0)
        return rc;
    s_forward(self, mel, B, frames);
    if (logits)
        memcpy(logits, self->logits, (size_t)B * self->head.num_labels * sizeof(float));
    if (embed)
        memcpy(embed, self->pooled, (size_t)B * self->head.classifier_proj_size * sizeof(float));
    return 0;
}

/* ------------------------------------------------------------------ backward */

/* Backward of s_lin_forward: adapter grads, and dinp (N, C) += d/dz when dinp.
 * inp: the linear's input z (needed for LoRA's dA only). */
static void s_lin_backward(wisp_model_t *self, int i, int j, float *dinp, const float *dout,
                           const float *inp, const float *W, int N, int C, int OC)
{
    const int k = self->la[i].lin_p[j];
    s_acts_t *A = &self->acts[i];
    if (k >= 0 && self->acfg.kind == WISP_ADAPTER_IA3) {
        const float alpha = self->acfg.alpha;
        const float *l = s_param(self, k);
        for (int o = 0; o < OC; o++) {
            self->svec[o] = alpha * l[o];
            self->svec2[o] = 0.0f;
        }
        float *dpre = NULL;
        if (dinp) {
            dpre = self->dlin;
            memset(dpre, 0, (size_t)N * OC * sizeof(float));
        }
        /* dscale[o] = sum_n dout * pre; dl = alpha * dscale */
        nn_colscale_backward(dpre, self->svec2, dout, A->lin_pre[j], self->svec, N, OC);
        nn_axpy(s_grad(self, k), alpha, self->svec2, (size_t)OC);
        if (dinp)
            nn_linear_backward(dinp, NULL, NULL, dpre, NULL, W, 1.0f, N, C, OC);
        return;
    }
    if (k >= 0) {
        const int r = self->acfg.r;
        memset(self->dt, 0, (size_t)N * r * sizeof(float));
        /* out += c B t, t = A z:  dt = c dout B, dB += c dout^T t; then dA, dz */
        nn_linear_backward(self->dt, s_grad(self, k + 1), NULL, dout, A->lin_t[j],
                           s_param(self, k + 1), self->acfg.alpha / (float)r, N, r, OC);
        nn_linear_backward(dinp, s_grad(self, k), NULL, self->dt, inp, s_param(self, k), 1.0f, N, C,
                           r);
    }
    if (dinp)
        nn_linear_backward(dinp, NULL, NULL, dout, NULL, W, 1.0f, N, C, OC);
}

/* Backward of s_site_forward: df += d/df, dr += d/dr (either may be NULL), adapter
 * grads. dout (N, d). Uses self->dz as scratch for d/dz. */
static void s_site_backward(wisp_model_t *self, int i, int s, float *df, float *dr,
                            const float *dout, int N)
{
    const int d = self->d, m = self->la[i].site_m[s];
    const size_t n = (size_t)N * d;
    if (!m) {
        if (df)
            nn_axpy(df, 1.0f, dout, n);
        if (dr)
            nn_axpy(dr, 1.0f, dout, n);
        return;
    }
    const wisp_adapter_config_t *a = &self->acfg;
    s_acts_t *A = &self->acts[i];
    const int k = self->la[i].site_p[s];
    const size_t nm = (size_t)N * m;
    /* o = s (W_up phi(W_down z + b_down) + b_up) + res (+ r) */
    if (dr && a->original_ln_after)
        nn_axpy(dr, 1.0f, dout, n);
    int res_is_f = a->is_parallel || a->residual_before_ln;
    if (res_is_f && df)
        nn_axpy(df, 1.0f, dout, n);
    nn_act_forward(self->bott, A->site_pre[s], nm, (nn_act_t)a->non_linearity);
    memset(self->dbott, 0, nm * sizeof(float));
    nn_linear_backward(self->dbott, s_grad(self, k + 2), s_grad(self, k + 3), dout, self->bott,
                       s_param(self, k + 2), a->scaling, N, m, d);
    memset(self->dpre, 0, nm * sizeof(float));
    nn_act_backward(self->dpre, self->dbott, A->site_pre[s], nm, (nn_act_t)a->non_linearity);
    /* dz: the adapter input's gradient (+ dout when z is also the residual) */
    float *dzb = self->dz;
    int need_dz = a->is_parallel ? dr != NULL : (df != NULL || (a->original_ln_before && dr));
    if (need_dz) {
        if (res_is_f)
            nn_zero_mt(dzb, n, self->pool);
        else
            memcpy(dzb, dout, n * sizeof(float));
    }
    nn_linear_backward(need_dz ? dzb : NULL, s_grad(self, k), s_grad(self, k + 1), self->dpre,
                       A->site_z[s], s_param(self, k), 1.0f, N, d, m);
    if (!need_dz)
        return;
    if (a->is_parallel) {
        nn_axpy(dr, 1.0f, dzb, n);
    } else {
        if (df)
            nn_axpy(df, 1.0f, dzb, n);
        if (a->original_ln_before && dr)
            nn_axpy(dr, 1.0f, dzb, n);
    }
}

static int s_has_lin(const wisp_model_t *self, int i, int j)
{
    return self->la[i].lin_p[j] >= 0;
}

/* Layer i backward: dx_out (N, d) is the gradient of the layer output; writes the
 * gradient of the layer input into dx_in when dx_in is not NULL. */
static void s_layer_backward(wisp_model_t *self, int i, int B, int T, const float *dx_out,
                             float *dx_in)
{
    const int d = self->d, F = self->F, N = B * T;
    const size_t n = (size_t)N * d, nf = (size_t)N * F;
    const s_layer_w_t *w = &self->lw[i];
    const s_layer_a_t *la = &self->la[i];
    s_acts_t *A = &self->acts[i];
    /* what is still needed below each point */
    const int need_att = dx_in != NULL || la->site_m[S_SITE_ATT] || s_has_lin(self, i, S_LIN_Q) ||
                         s_has_lin(self, i, S_LIN_K) || s_has_lin(self, i, S_LIN_V);
    const int need_fc1 = need_att || s_has_lin(self, i, S_LIN_FC1);
    const int need_ffn = need_fc1 || s_has_lin(self, i, S_LIN_FC2);

    nn_zero_mt(self->dh, n, self->pool);
    nn_zero_mt(self->df, n, self->pool);
    s_site_backward(self, i, S_SITE_OUT, need_ffn ? self->df : NULL, need_att ? self->dh : NULL,
                    dx_out, N);
    if (!need_ffn)
        return;
    /* f = fc2(g), g = GELU(u) */
    if (s_has_lin(self, i, S_LIN_FC2) && self->acfg.kind == WISP_ADAPTER_LORA)
        nn_act_forward_mt(self->g, A->u, nf, NN_ACT_GELU, self->pool);
    if (need_fc1)
        nn_zero_mt(self->dg, nf, self->pool);
    s_lin_backward(self, i, S_LIN_FC2, need_fc1 ? self->dg : NULL, self->df, self->g, w->fc2_w, N,
                   F, d);
    if (!need_fc1)
        return;
    float *du = self->g; /* g is free now */
    nn_zero_mt(du, nf, self->pool);
    nn_act_backward_mt(du, self->dg, A->u, nf, NN_ACT_GELU, self->pool);
    /* u = fc1(LN2(h)) */
    if (s_has_lin(self, i, S_LIN_FC1) && self->acfg.kind == WISP_ADAPTER_LORA)
        nn_layernorm_forward(self->z, NULL, NULL, A->h, w->ln2_w, w->ln2_b, N, d);
    if (need_att)
        nn_zero_mt(self->dz, n, self->pool);
    s_lin_backward(self, i, S_LIN_FC1, need_att ? self->dz : NULL, du, self->z, w->fc1_w, N, d, F);
    if (!need_att)
        return;
    nn_layernorm_backward(self->dh, NULL, NULL, self->dz, A->h, w->ln2_w, A->ln2_mean, A->ln2_rstd,
                          N, d);
    /* h = site_attn(a, x) */
    nn_zero_mt(self->df, n, self->pool);
    if (dx_in)
        nn_zero_mt(dx_in, n, self->pool);
    s_site_backward(self, i, S_SITE_ATT, self->df, dx_in, self->dh, N);
    if (!s_needs_attention_grad(self, i))
        return; /* an attention-site adapter was the lowest trainable */
    /* a = out_proj(att) */
    float *datt = self->dh; /* dh is consumed */
    nn_zero_mt(datt, n, self->pool);
    nn_linear_backward(datt, NULL, NULL, self->df, NULL, w->o_w, 1.0f, N, d, d);
    nn_zero_mt(self->dq, n, self->pool);
    nn_zero_mt(self->dk, n, self->pool);
    nn_zero_mt(self->dv, n, self->pool);
    nn_attention_backward_mt(self->dq, self->dk, self->dv, datt, A->att, A->lse, A->probs, A->q,
                             A->k, A->v, self->attn_scr, B, T, self->H, self->hd, self->pool);
    nn_scale(self->dq, 1.0f / sqrtf((float)self->hd), n);
    if (self->acfg.kind == WISP_ADAPTER_LORA &&
        (s_has_lin(self, i, S_LIN_Q) || s_has_lin(self, i, S_LIN_K) || s_has_lin(self, i, S_LIN_V)))
        nn_layernorm_forward(self->z, NULL, NULL, self->x[i], w->ln1_w, w->ln1_b, N, d);
    float *dz1 = dx_in ? self->dz : NULL;
    if (dz1)
        nn_zero_mt(dz1, n, self->pool);
    s_lin_backward(self, i, S_LIN_Q, dz1, self->dq, self->z, w->q_w, N, d, d);
    s_lin_backward(self, i, S_LIN_K, dz1, self->dk, self->z, w->k_w, N, d, d);
    s_lin_backward(self, i, S_LIN_V, dz1, self->dv, self->z, w->v_w, N, d, d);
    if (dx_in)
        nn_layernorm_backward(dx_in, NULL, NULL, dz1, self->x[i], w->ln1_w, A->ln1_mean,
                              A->ln1_rstd, N, d);
}

int wisp_model_forward_backward(wisp_model_t *self, const float *mel, int B, int frames,
                                const int *labels, const float *class_weights, float grad_scale,
                                double *loss_sum, double *weight_sum, float *logits)
{
    int rc = s_check_input(self, mel, B, frames);
    if (rc < 0)
        return rc;
    if (!self->opts.training) {
        WISP_LOGE("%s: forward_backward on a model planned without training", self->model_dir);
        return WISP_ERR_ARG;
    }
    const int NL = self->head.num_labels;
    for (int b = 0; b < B; b++) {
        if (!labels || labels[b] < 0 || labels[b] >= NL) {
            WISP_LOGE("%s: label %d of clip %d is outside 0..%d", self->model_dir,
                      labels ? labels[b] : -1, b, NL - 1);
            return WISP_ERR_ARG;
        }
    }
    self->keeping_probs = 1; /* this forward fills acts[i].probs for the backward below */
    s_forward(self, mel, B, frames);
    self->keeping_probs = 0;
    const int d = self->d, L = self->L, T = frames / 2, N = B * T;
    const int k = self->head_p, P = self->head.classifier_proj_size;
    const int wsum = self->head.use_weighted_layer_sum;
    double ws = 0.0;
    double loss =
        nn_crossentropy_forward(self->probs, &ws, self->logits, labels, class_weights, B, NL);
    if (loss_sum)
        *loss_sum = loss;
    if (weight_sum)
        *weight_sum = ws;
    if (logits)
        memcpy(logits, self->logits, (size_t)B * NL * sizeof(float));

    /* head */
    memset(self->dlogits, 0, (size_t)B * NL * sizeof(float));
    nn_crossentropy_backward(self->dlogits, self->probs, labels, class_weights, grad_scale, B, NL);
    memset(self->dpooled, 0, (size_t)B * P * sizeof(float));
    nn_linear_backward(self->dpooled, s_grad(self, k + 2), s_grad(self, k + 3), self->dlogits,
                       self->pooled, s_param(self, k + 2), 1.0f, B, P, NL);
    memset(self->dhmean, 0, (size_t)B * d * sizeof(float));
    nn_linear_backward(self->dhmean, s_grad(self, k), s_grad(self, k + 1), self->dpooled,
                       self->hmean, s_param(self, k), 1.0f, B, d, P);
    if (wsum) {
        const float *hid[WISP_MAX_LAYERS + 1];
        for (int j = 0; j <= L; j++)
            hid[j] = self->xm + (size_t)j * B * d;
        memset(self->dsw, 0, (size_t)(L + 1) * sizeof(float));
        nn_wsum_backward(NULL, self->dsw, self->dhmean, hid, self->sw, L + 1, (size_t)B * d);
        nn_softmax_backward(s_grad(self, k + 4), self->dsw, self->sw, 1, L + 1);
    }
    if (self->lowest >= L)
        return 0;

    /* into the encoder: d(hidden_k) = sw_k * dhmean / T broadcast over T */
    float *dx = self->dx, *dxp = self->dxp;
    const size_t n = (size_t)N * d, bd = (size_t)B * d;
    memcpy(self->dtmp, self->dhmean, bd * sizeof(float));
    if (wsum)
        nn_scale(self->dtmp, self->sw[L], bd);
    nn_zero_mt(self->z, n, self->pool);
    nn_meanpool_backward(self->z, self->dtmp, B, T, d);
    nn_zero_mt(dx, n, self->pool);
    nn_layernorm_backward(dx, NULL, NULL, self->z, self->x[L], self->lnf_w, self->lnf_mean,
                          self->lnf_rstd, N, d);
    for (int i = L - 1; i >= self->lowest; i--) {
        if (wsum && i + 1 < L) {
            memcpy(self->dtmp, self->dhmean, bd * sizeof(float));
            nn_scale(self->dtmp, self->sw[i + 1], bd);
            nn_meanpool_backward(dx, self->dtmp, B, T, d);
        }
        s_layer_backward(self, i, B, T, dx, i > self->lowest ? dxp : NULL);
        float *t = dx;
        dx = dxp;
        dxp = t;
    }
    return 0;
}
