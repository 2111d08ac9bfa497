/* nn/model.c: the Whisper encoder, adapters, classification head; the trainable
 * layout, the memory plan, forward and backward in fp32 on the kernels of ops.h.
 * Semantics: docs/NUMERICS.md sections 2-5. Loading and saving (the checkpoint, the
 * adapter and head directories) are in model_io.c; the struct is in model_priv.h.
 *
 * Layout of the data:
 * - Frozen base weights are fp32 views into the checkpoint mapping (wisp_st_get_f32:
 *   no copy for aligned F32; F16/BF16 converted once inside the st object).
 * - Trainable tensors are described ONCE by the tables of model_priv.h, walked by
 *   s_spec_build for (whisper config, adapter config, head config). The spec drives the
 *   flat parameter buffer, the gradient buffer (same offsets), the per-layer index
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
 * layer below its lowest trainable site: below it no gradient is needed
 * (docs/NUMERICS.md 5; nothing under layer 0 is differentiated). With only a head, the
 * encoder is not differentiated at all. */
#include "nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "nn/model_priv.h"
#include "nn/ops.h"
#include "nn/qlinear.h"

static const char *const s_site_key[S_NSITE] = {"attention_adapters", "output_adapters"};
static const char *const s_lin_key[S_NLIN] = {"self_attn.q_proj", "self_attn.k_proj",
                                              "self_attn.v_proj", "fc1", "fc2"};

/* ------------------------------------------------------------------ spec table */

/* One row of a tensor table: checkpoint suffix and symbolic (rows, cols); cols
 * S_DIM_0 makes the tensor 1-D. */
typedef struct {
    const char *suffix;
    int rows, cols;
} s_tdef_t;

#define S_TDEF_(e, suffix, rows, cols) {suffix, S_DIM_##rows, S_DIM_##cols},
static const s_tdef_t s_bn_defs[S_BN_N] = {S_BN_TENSORS(S_TDEF_)};
static const s_tdef_t s_lora_defs[S_LORA_N] = {S_LORA_TENSORS(S_TDEF_)};
static const s_tdef_t s_ia3_defs[S_IA3_N] = {S_IA3_TENSORS(S_TDEF_)};
static const s_tdef_t s_head_defs[S_HEAD_N] = {S_HEAD_TENSORS(S_TDEF_)};
#undef S_TDEF_
_Static_assert(S_HEAD_LAYER_W == S_HEAD_N - 1, "layer_weights, the optional one, comes last");

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

/* Appends the first n tensors of a table, named prefix + suffix with shapes from dims
 * (indexed by S_DIM_*), and records their spec indices in idx. -1: out of memory. */
static int s_spec_group(s_specvec_t *sv, const char *prefix, const s_tdef_t *defs, int n,
                        const int64_t *dims, int *idx)
{
    char name[512];
    for (int t = 0; t < n; t++) {
        snprintf(name, sizeof name, "%s%s", prefix, defs[t].suffix);
        int ndim = defs[t].cols == S_DIM_0 ? 1 : 2;
        idx[t] = s_spec_add(sv, name, ndim, dims[defs[t].rows], dims[defs[t].cols]);
        if (idx[t] < 0)
            return -1;
    }
    return 0;
}

/* The adapter tensors of layer i, in spec order: the bottleneck sites (attention,
 * output), or the adapted linears (q, k, v, fc1, fc2) with LoRA's A, B or IA3's l. */
static int s_spec_layer(const wisp_model_t *self, const wisp_adapter_config_t *a, int i,
                        s_specvec_t *sv, s_layer_a_t *la, wisp_error_t *err)
{
    const int d = self->d, F = self->F;
    char prefix[400];
    int64_t dims[S_NDIM] = {[S_DIM_1] = 1, [S_DIM_D] = d, [S_DIM_R] = a->r};
    if (a->kind == WISP_ADAPTER_BOTTLENECK) {
        const int want[S_NSITE] = {a->mh_adapter, a->output_adapter};
        for (int s = 0; s < S_NSITE; s++) {
            if (!want[s])
                continue;
            int m = wisp_adapter_config_bottleneck_dim(a, i, d);
            if (m < 1)
                return wisp_error_set(err, WISP_ERR_ARG,
                                      "adapter %s: bottleneck width %d in layer %d", a->name, m, i);
            la->site_m[s] = m;
            dims[S_DIM_M] = m;
            snprintf(prefix, sizeof prefix, "encoder.layers.%d.%s.adapters.%s.", i, s_site_key[s],
                     a->name);
            if (s_spec_group(sv, prefix, s_bn_defs, S_BN_N, dims, la->site[s]) < 0)
                return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        }
        return 0;
    }
    const int want[S_NLIN] = {a->attn_q, a->attn_k, a->attn_v, a->intermediate_lora,
                              a->output_lora};
    const int fin[S_NLIN] = {d, d, d, d, F}, fout[S_NLIN] = {d, d, d, F, d};
    const int ia3 = a->kind == WISP_ADAPTER_IA3;
    for (int j = 0; j < S_NLIN; j++) {
        if (!want[j])
            continue;
        dims[S_DIM_IN] = fin[j];
        dims[S_DIM_OUT] = fout[j];
        snprintf(prefix, sizeof prefix, "encoder.layers.%d.%s.loras.%s.", i, s_lin_key[j], a->name);
        if (s_spec_group(sv, prefix, ia3 ? s_ia3_defs : s_lora_defs, ia3 ? S_IA3_N : S_LORA_N, dims,
                         la->lin[j]) < 0)
            return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    }
    return 0;
}

/* Builds the trainable-tensor table for (adapter, head) and the index tables: the
 * adapter's tensors layer by layer, then the head's. The one place that knows names
 * and shapes of trainables. */
static int s_spec_build(const wisp_model_t *self, const wisp_adapter_config_t *a,
                        const wisp_head_config_t *hc, s_specvec_t *sv, s_layer_a_t *la, int *head_t,
                        wisp_error_t *err)
{
    for (int i = 0; i < self->L; i++) {
        for (int s = 0; s < S_NSITE; s++) {
            la[i].site_m[s] = 0;
            for (int t = 0; t < S_BN_N; t++)
                la[i].site[s][t] = -1;
        }
        for (int j = 0; j < S_NLIN; j++)
            for (int t = 0; t < S_LIN_MAXT; t++)
                la[i].lin[j][t] = -1;
    }
    for (int t = 0; t < S_HEAD_N; t++)
        head_t[t] = -1;
    if (a && a->kind != WISP_ADAPTER_NONE) {
        for (int i = 0; i < self->L; i++) {
            int rc = a->leave_out[i] ? 0 : s_spec_layer(self, a, i, sv, &la[i], err);
            if (rc < 0)
                return rc;
        }
    }
    if (hc) {
        const int64_t dims[S_NDIM] = {[S_DIM_1] = 1,
                                      [S_DIM_D] = self->d,
                                      [S_DIM_P] = hc->classifier_proj_size,
                                      [S_DIM_NL] = hc->num_labels,
                                      [S_DIM_L1] = self->L + 1};
        int n = hc->use_weighted_layer_sum ? S_HEAD_N : S_HEAD_N - 1;
        if (s_spec_group(sv, "", s_head_defs, n, dims, head_t) < 0)
            return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    }
    return 0;
}

static void s_spec_free(wisp_param_info_t *spec, int n)
{
    if (!spec)
        return;
    for (int i = 0; i < n; i++)
        free((char *)spec[i].name);
    free(spec);
}

static int s_has_lin(const wisp_model_t *self, int i, int j)
{
    return self->la[i].lin[j][0] >= 0;
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

/* Whether the backward of layer i goes through its attention core: for the dq, dk,
 * dv of trainable q/k/v projections, or to pass the gradient below the layer. */
static int s_needs_attention_grad(const wisp_model_t *self, int i)
{
    return i > self->lowest || s_has_lin(self, i, S_LIN_Q) || s_has_lin(self, i, S_LIN_K) ||
           s_has_lin(self, i, S_LIN_V);
}

/* Attention probabilities kept for backward: top layers first, within the budget. */
static void s_carve_probs(wisp_model_t *self, s_arena_t *a, size_t B, size_t Tm)
{
    const size_t per_layer = B * (size_t)self->H * Tm * Tm;
    const int keep_mb = self->opts.attn_keep_mb;
    size_t keep_left =
        self->opts.training && keep_mb > 0 ? ((size_t)keep_mb << 20) / sizeof(float) : 0;
    for (int i = self->L - 1; i >= 0; i--) {
        self->acts[i].probs = NULL;
        if (keep_left >= per_layer && s_needs_attention_grad(self, i)) {
            self->acts[i].probs = s_take(a, per_layer);
            keep_left -= per_layer;
        }
    }
}

/* The saved tensors of layer i (N = B * Tm rows); in inference every layer i > 0
 * aliases layer 0's. */
static void s_carve_layer(wisp_model_t *self, s_arena_t *a, int i, size_t B, size_t Tm)
{
    const int tr = self->opts.training;
    const size_t N = B * Tm, d = (size_t)self->d, F = (size_t)self->F, H = (size_t)self->H;
    s_acts_t *s = &self->acts[i];
    if (!tr && i > 0) {
        *s = self->acts[0];
        return;
    }
    const s_layer_a_t *la = &self->la[i];
    s->ln1_mean = s_take(a, N);
    s->ln1_rstd = s_take(a, N);
    s->q = s_take(a, N * d);
    s->k = s_take(a, N * d);
    s->v = s_take(a, N * d);
    s->att = s_take(a, N * d);
    s->lse = tr ? s_take(a, B * H * Tm) : NULL;
    /* s->probs: s_carve_probs */
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
        if (!tr || !s_has_lin(self, i, j))
            continue;
        if (self->lay_ia3)
            s->lin_pre[j] = s_take(a, N * (j == S_LIN_FC1 ? F : d));
        else
            s->lin_t[j] = s_take(a, N * (size_t)self->lay_r);
    }
}

/* Backward scratch (training only). */
static void s_carve_backward(wisp_model_t *self, s_arena_t *a, size_t N, size_t B)
{
    const size_t d = (size_t)self->d, F = (size_t)self->F, L = (size_t)self->L;
    const size_t P = (size_t)self->lay_P, NL = (size_t)self->lay_NL;
    const size_t mm = (size_t)self->max_m, mr = (size_t)self->max_r;
    const size_t mi = (size_t)self->max_ia3_out;
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

/* Carves the arena (sizing pass when a->base is NULL): the one function that both
 * sizes and lays out every activation, so the plan cannot disagree with the use. */
static void s_carve(wisp_model_t *self, s_arena_t *a)
{
    const int tr = self->opts.training;
    const size_t B = (size_t)self->opts.max_batch;
    const size_t Tm = (size_t)self->opts.max_frames / 2;
    const size_t N = B * Tm, d = (size_t)self->d, F = (size_t)self->F;
    const size_t L = (size_t)self->L;
    const size_t P = (size_t)self->lay_P, NL = (size_t)self->lay_NL;
    const size_t fr = (size_t)self->opts.max_frames, nm = (size_t)self->n_mels;
    const size_t mm = (size_t)self->max_m, mr = (size_t)self->max_r;

    for (size_t i = 0; i <= L; i++)
        self->x[i] = (tr || i < 2) ? s_take(a, N * d) : self->x[i % 2];
    s_carve_probs(self, a, B, Tm);
    for (int i = 0; i < self->L; i++)
        s_carve_layer(self, a, i, B, Tm);
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
    if (tr)
        s_carve_backward(self, a, N, B);
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

/* ------------------------------------------------------------------ layout */

/* Copies into params the values of the current layout's tensors that the new spec
 * holds under the same name and size (adapter tensors when keep_adapter, head tensors
 * when keep_head). */
static void s_carry_values(const wisp_model_t *self, const s_specvec_t *sv, float *params,
                           int keep_adapter, int keep_head)
{
    const int head_first = nn_model_head_first(self);
    for (int i = 0; i < sv->n; i++) {
        for (int j = 0; j < self->nspec; j++) {
            if (!(j >= head_first ? keep_head : keep_adapter))
                continue;
            if (strcmp(sv->v[i].name, self->spec[j].name) == 0 &&
                sv->v[i].numel == self->spec[j].numel) {
                memcpy(params + sv->v[i].offset, self->params + self->spec[j].offset,
                       sv->v[i].numel * sizeof(float));
                break;
            }
        }
    }
}

/* Scratch widths of the installed layout and its lowest trainable layer. */
static void s_layout_widths(wisp_model_t *self, const wisp_adapter_config_t *a,
                            const wisp_head_config_t *hc)
{
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
            if (!s_has_lin(self, i, j))
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
}

void nn_model_free_layout(wisp_model_t *self)
{
    s_spec_free(self->spec, self->nspec);
    wisp_free(self->params);
    wisp_free(self->grads);
    free(self->la);
    self->spec = NULL;
    self->nspec = 0;
    self->params = self->grads = NULL;
    self->la = NULL;
}

int nn_model_relayout(wisp_model_t *self, const wisp_adapter_config_t *a,
                      const wisp_head_config_t *hc, int keep_adapter, int keep_head,
                      wisp_error_t *err)
{
    s_specvec_t sv = {0};
    s_layer_a_t *la = calloc((size_t)self->L, sizeof *la);
    float *params = NULL, *grads = NULL;
    int head_t[S_HEAD_N], rc;
    if (!la) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        goto done;
    }
    rc = s_spec_build(self, a, hc, &sv, la, head_t, err);
    if (rc < 0)
        goto done;
    params = wisp_alloc((sv.off ? sv.off : 1) * sizeof(float));
    grads = wisp_alloc((sv.off ? sv.off : 1) * sizeof(float));
    if (!params || !grads) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        goto done;
    }
    s_carry_values(self, &sv, params, keep_adapter, keep_head);
    nn_model_free_layout(self);
    self->spec = sv.v;
    self->nspec = sv.n;
    self->nparams = sv.off;
    self->params = params;
    self->grads = grads;
    self->la = la;
    memcpy(self->head_t, head_t, sizeof head_t);
    sv.v = NULL;
    params = grads = NULL;
    la = NULL;
    s_layout_widths(self, a, hc);
    rc = s_plan(self, err);
done:
    s_spec_free(sv.v, sv.n);
    wisp_free(params);
    wisp_free(grads);
    free(la);
    return rc;
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
    m.nthreads = nn_model_threads(opts);
    m.d = cfg->d_model;
    m.L = cfg->encoder_layers;
    m.H = cfg->encoder_attention_heads;
    m.F = cfg->encoder_ffn_dim;
    m.hd = m.H > 0 ? m.d / m.H : 0;
    m.n_mels = cfg->num_mel_bins;
    for (int t = 0; t < S_HEAD_N; t++)
        m.head_t[t] = -1;
    if (m.d < 1 || m.L < 1 || m.L > WISP_MAX_LAYERS || m.hd < 1 || opts->max_batch < 1 ||
        opts->max_frames < 2)
        return 0;
    m.acts = calloc((size_t)m.L, sizeof *m.acts);
    m.x = calloc((size_t)m.L + 1, sizeof *m.x);
    if (m.acts && m.x &&
        nn_model_relayout(&m, adapter && adapter->kind != WISP_ADAPTER_NONE ? adapter : NULL, head,
                          0, 0, NULL) == 0)
        bytes = wisp_model_planned_bytes(&m);
    nn_model_free_layout(&m);
    free(m.acts);
    free(m.x);
    return bytes;
}

/* ------------------------------------------------------------------ forward */

/* out (N, OC) = z W^T + b, a frozen encoder linear: its int8 copy when the model was
 * loaded with precision int8 (nn/qlinear.h), else fp32. */
static void s_base_linear(wisp_model_t *self, float *out, const float *z, const float *W,
                          const float *b, int N, int C, int OC)
{
    int rc = self->q8 ? wisp_qlinears_forward(self->q8, W, out, z, N) : 1;
    if (rc < 0)
        WISP_LOGW("int8 linear failed (%d); this product runs in fp32", rc);
    if (rc != 0)
        nn_linear_forward(out, z, W, b, N, C, OC);
}

/* out (N, OC) = LoRA/IA3-adapted linear of module `j` in layer i on z (N, C). */
static void s_lin_forward(wisp_model_t *self, int i, int j, float *out, const float *z,
                          const float *W, const float *b, int N, int C, int OC)
{
    const int *t = self->la[i].lin[j];
    s_acts_t *A = &self->acts[i];
    if (!s_has_lin(self, i, j)) {
        s_base_linear(self, out, z, W, b, N, C, OC);
    } else if (self->acfg.kind == WISP_ADAPTER_IA3) {
        /* y = (W z + b) * (alpha * l) per output column */
        float *pre = A->lin_pre[j] ? A->lin_pre[j] : out;
        const float *l = nn_model_param(self, t[S_IA3_L]);
        for (int o = 0; o < OC; o++)
            self->svec[o] = self->acfg.alpha * l[o];
        s_base_linear(self, pre, z, W, b, N, C, OC);
        nn_colscale_forward(out, pre, self->svec, N, OC);
    } else {
        /* y = W z + b + (alpha / r) B (A z) */
        const int r = self->acfg.r;
        float *tz = A->lin_t[j] ? A->lin_t[j] : self->lt;
        s_base_linear(self, out, z, W, b, N, C, OC);
        nn_linear_forward(tz, z, nn_model_param(self, t[S_LORA_A]), NULL, N, C, r);
        nn_linear_forward_add(out, tz, nn_model_param(self, t[S_LORA_B]),
                              self->acfg.alpha / (float)r, N, r, OC);
    }
}

/* out (N, d) = site(f, r) of docs/NUMERICS.md 3: f the sub-block output, r the
 * residual stream; out is distinct from f and r. */
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
    const int *t = self->la[i].site[s];
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
    nn_linear_forward(pre, z, nn_model_param(self, t[S_BN_DOWN_W]),
                      nn_model_param(self, t[S_BN_DOWN_B]), N, d, m);
    nn_act_forward(self->bott, pre, (size_t)N * m, (nn_act_t)a->non_linearity);
    nn_linear_forward(out, self->bott, nn_model_param(self, t[S_BN_UP_W]),
                      nn_model_param(self, t[S_BN_UP_B]), N, m, d);
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
    wisp_qlinears_set_group(self->q8, T); /* int8: mean correction per clip (nn/qlinear.h) */
    nn_layernorm_forward(self->z, A->ln1_mean, A->ln1_rstd, x_in, w->ln1_w, w->ln1_b, N, d);
    s_lin_forward(self, i, S_LIN_Q, A->q, self->z, w->q_w, w->q_b, N, d, d);
    nn_scale(A->q, 1.0f / sqrtf((float)self->hd), (size_t)N * d);
    s_lin_forward(self, i, S_LIN_K, A->k, self->z, w->k_w, NULL, N, d, d);
    s_lin_forward(self, i, S_LIN_V, A->v, self->z, w->v_w, w->v_b, N, d, d);
    nn_attention_forward_mt(A->att, A->lse, self->keeping_probs ? A->probs : NULL, A->q, A->k, A->v,
                            self->attn_scr, B, T, self->H, self->hd, self->pool);
    s_base_linear(self, self->sf, A->att, w->o_w, w->o_b, N, d, d);
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
    const int *ht = self->head_t, P = self->head.classifier_proj_size;
    const int NL = self->head.num_labels;
    if (wsum) {
        nn_softmax_forward(self->sw, nn_model_param(self, ht[S_HEAD_LAYER_W]), 1, L + 1);
        memset(self->hmean, 0, (size_t)B * d * sizeof(float));
        for (int j = 0; j <= L; j++)
            nn_axpy(self->hmean, self->sw[j], self->xm + (size_t)j * B * d, (size_t)B * d);
    } else {
        memcpy(self->hmean, self->xm + (size_t)L * B * d, (size_t)B * d * sizeof(float));
    }
    nn_linear_forward(self->pooled, self->hmean, nn_model_param(self, ht[S_HEAD_PROJ_W]),
                      nn_model_param(self, ht[S_HEAD_PROJ_B]), B, d, P);
    nn_linear_forward(self->logits, self->pooled, nn_model_param(self, ht[S_HEAD_CLS_W]),
                      nn_model_param(self, ht[S_HEAD_CLS_B]), B, P, NL);
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
    const int *t = self->la[i].lin[j];
    s_acts_t *A = &self->acts[i];
    if (s_has_lin(self, i, j) && self->acfg.kind == WISP_ADAPTER_IA3) {
        const float alpha = self->acfg.alpha;
        const float *l = nn_model_param(self, t[S_IA3_L]);
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
        nn_axpy(nn_model_grad(self, t[S_IA3_L]), alpha, self->svec2, (size_t)OC);
        if (dinp)
            nn_linear_backward(dinp, NULL, NULL, dpre, NULL, W, 1.0f, N, C, OC);
        return;
    }
    if (s_has_lin(self, i, j)) {
        const int r = self->acfg.r;
        memset(self->dt, 0, (size_t)N * r * sizeof(float));
        /* out += c B t, t = A z:  dt = c dout B, dB += c dout^T t; then dA, dz */
        nn_linear_backward(self->dt, nn_model_grad(self, t[S_LORA_B]), NULL, dout, A->lin_t[j],
                           nn_model_param(self, t[S_LORA_B]), self->acfg.alpha / (float)r, N, r,
                           OC);
        nn_linear_backward(dinp, nn_model_grad(self, t[S_LORA_A]), NULL, self->dt, inp,
                           nn_model_param(self, t[S_LORA_A]), 1.0f, N, C, r);
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
    const int *t = self->la[i].site[s];
    const size_t nm = (size_t)N * m;
    /* o = s (W_up phi(W_down z + b_down) + b_up) + res (+ r) */
    if (dr && a->original_ln_after)
        nn_axpy(dr, 1.0f, dout, n);
    int res_is_f = a->is_parallel || a->residual_before_ln;
    if (res_is_f && df)
        nn_axpy(df, 1.0f, dout, n);
    nn_act_forward(self->bott, A->site_pre[s], nm, (nn_act_t)a->non_linearity);
    memset(self->dbott, 0, nm * sizeof(float));
    nn_linear_backward(self->dbott, nn_model_grad(self, t[S_BN_UP_W]),
                       nn_model_grad(self, t[S_BN_UP_B]), dout, self->bott,
                       nn_model_param(self, t[S_BN_UP_W]), a->scaling, N, m, d);
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
    nn_linear_backward(need_dz ? dzb : NULL, nn_model_grad(self, t[S_BN_DOWN_W]),
                       nn_model_grad(self, t[S_BN_DOWN_B]), self->dpre, A->site_z[s],
                       nn_model_param(self, t[S_BN_DOWN_W]), 1.0f, N, d, m);
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

/* Backward of the head: cross-entropy, classifier, projector and softmax(layer_weights)
 * into their gradients; leaves dhmean (B, d), the gradient of the pooled hidden state. */
static void s_head_backward(wisp_model_t *self, const int *labels, const float *class_weights,
                            float grad_scale, int B)
{
    const int d = self->d, L = self->L, NL = self->head.num_labels;
    const int *ht = self->head_t, P = self->head.classifier_proj_size;
    memset(self->dlogits, 0, (size_t)B * NL * sizeof(float));
    nn_crossentropy_backward(self->dlogits, self->probs, labels, class_weights, grad_scale, B, NL);
    memset(self->dpooled, 0, (size_t)B * P * sizeof(float));
    nn_linear_backward(self->dpooled, nn_model_grad(self, ht[S_HEAD_CLS_W]),
                       nn_model_grad(self, ht[S_HEAD_CLS_B]), self->dlogits, self->pooled,
                       nn_model_param(self, ht[S_HEAD_CLS_W]), 1.0f, B, P, NL);
    memset(self->dhmean, 0, (size_t)B * d * sizeof(float));
    nn_linear_backward(self->dhmean, nn_model_grad(self, ht[S_HEAD_PROJ_W]),
                       nn_model_grad(self, ht[S_HEAD_PROJ_B]), self->dpooled, self->hmean,
                       nn_model_param(self, ht[S_HEAD_PROJ_W]), 1.0f, B, d, P);
    if (self->head.use_weighted_layer_sum) {
        const float *hid[WISP_MAX_LAYERS + 1];
        for (int j = 0; j <= L; j++)
            hid[j] = self->xm + (size_t)j * B * d;
        memset(self->dsw, 0, (size_t)(L + 1) * sizeof(float));
        nn_wsum_backward(NULL, self->dsw, self->dhmean, hid, self->sw, L + 1, (size_t)B * d);
        nn_softmax_backward(nn_model_grad(self, ht[S_HEAD_LAYER_W]), self->dsw, self->sw, 1, L + 1);
    }
}

/* Backward of the encoder from dhmean down to the lowest trainable layer: hidden state
 * k receives sw_k * dhmean / T broadcast over T (the last one through the final
 * LayerNorm), then the layers in reverse. */
static void s_encoder_backward(wisp_model_t *self, int B, int T)
{
    const int d = self->d, L = self->L, N = B * T;
    const int wsum = self->head.use_weighted_layer_sum;
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
    double ws = 0.0;
    double loss =
        nn_crossentropy_forward(self->probs, &ws, self->logits, labels, class_weights, B, NL);
    if (loss_sum)
        *loss_sum = loss;
    if (weight_sum)
        *weight_sum = ws;
    if (logits)
        memcpy(logits, self->logits, (size_t)B * NL * sizeof(float));
    s_head_backward(self, labels, class_weights, grad_scale, B);
    if (self->lowest < self->L)
        s_encoder_backward(self, B, frames / 2);
    return 0;
}
