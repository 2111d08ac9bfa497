/* nn/model_io.c: the model's files. The encoder from a Hugging Face checkpoint
 * directory (config.json + safetensors, the frozen tensors of the base table below);
 * adapters as the adapters library writes them (adapter_config.json +
 * adapter.safetensors) and the head as head_config.json + model_head.safetensors
 * (docs/FORMATS.md); fresh adapter and head values by their libraries' init schemes.
 * The trainable layout and the forward and backward are in model.c. */
#include "nn/model.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "nn/model_priv.h"
#include "nn/qlinear.h"

/* ------------------------------------------------------------------ base table */

/* Symbolic dims: d d_model, f encoder_ffn_dim, m num_mel_bins, p max_source_positions,
 * 3 the convolution kernel. */
static const struct {
    const char *name; /* after the prefix; per-layer names after "layers.<i>." */
    wisp_base_init_t init;
    int ndim;
    char dim[3];
} s_base[WISP_BASE_N] = {
    [WISP_BASE_CONV1_W] = {"conv1.weight", WISP_BASE_INIT_NORMAL, 3, "dm3"},
    [WISP_BASE_CONV1_B] = {"conv1.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_CONV2_W] = {"conv2.weight", WISP_BASE_INIT_NORMAL, 3, "dd3"},
    [WISP_BASE_CONV2_B] = {"conv2.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_POS] = {"embed_positions.weight", WISP_BASE_INIT_SINUSOID, 2, "pd"},
    [WISP_BASE_K_W] = {"self_attn.k_proj.weight", WISP_BASE_INIT_NORMAL, 2, "dd"},
    [WISP_BASE_V_W] = {"self_attn.v_proj.weight", WISP_BASE_INIT_NORMAL, 2, "dd"},
    [WISP_BASE_V_B] = {"self_attn.v_proj.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_Q_W] = {"self_attn.q_proj.weight", WISP_BASE_INIT_NORMAL, 2, "dd"},
    [WISP_BASE_Q_B] = {"self_attn.q_proj.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_O_W] = {"self_attn.out_proj.weight", WISP_BASE_INIT_NORMAL, 2, "dd"},
    [WISP_BASE_O_B] = {"self_attn.out_proj.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_LN1_W] = {"self_attn_layer_norm.weight", WISP_BASE_INIT_ONE, 1, "d"},
    [WISP_BASE_LN1_B] = {"self_attn_layer_norm.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_FC1_W] = {"fc1.weight", WISP_BASE_INIT_NORMAL, 2, "fd"},
    [WISP_BASE_FC1_B] = {"fc1.bias", WISP_BASE_INIT_ZERO, 1, "f"},
    [WISP_BASE_FC2_W] = {"fc2.weight", WISP_BASE_INIT_NORMAL, 2, "df"},
    [WISP_BASE_FC2_B] = {"fc2.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_LN2_W] = {"final_layer_norm.weight", WISP_BASE_INIT_ONE, 1, "d"},
    [WISP_BASE_LN2_B] = {"final_layer_norm.bias", WISP_BASE_INIT_ZERO, 1, "d"},
    [WISP_BASE_LNF_W] = {"layer_norm.weight", WISP_BASE_INIT_ONE, 1, "d"},
    [WISP_BASE_LNF_B] = {"layer_norm.bias", WISP_BASE_INIT_ZERO, 1, "d"},
};
enum {
    S_BASE_STEM_N = WISP_BASE_K_W, /* ids [0, K_W) precede the layers */
    S_BASE_LAYER_N = WISP_BASE_LNF_W - WISP_BASE_K_W,
    S_BASE_FINAL_N = WISP_BASE_N - WISP_BASE_LNF_W,
};

static int s_base_is_layer(wisp_base_id_t id)
{
    return id >= WISP_BASE_K_W && id < WISP_BASE_LNF_W;
}

int wisp_model_base_count(const wisp_whisper_config_t *cfg)
{
    return S_BASE_STEM_N + S_BASE_LAYER_N * cfg->encoder_layers + S_BASE_FINAL_N;
}

int wisp_model_base_name(char *buf, size_t size, wisp_base_id_t id, int layer)
{
    if (s_base_is_layer(id))
        return snprintf(buf, size, "layers.%d.%s", layer, s_base[id].name);
    return snprintf(buf, size, "%s", s_base[id].name);
}

int wisp_model_base_at(const wisp_whisper_config_t *cfg, int i, wisp_model_base_t *out)
{
    const int nl = S_BASE_LAYER_N * cfg->encoder_layers;
    if (i < 0 || i >= wisp_model_base_count(cfg))
        return -1;
    memset(out, 0, sizeof *out);
    out->layer = -1;
    if (i < S_BASE_STEM_N) {
        out->id = (wisp_base_id_t)i;
    } else if (i < S_BASE_STEM_N + nl) {
        out->layer = (i - S_BASE_STEM_N) / S_BASE_LAYER_N;
        out->id = (wisp_base_id_t)(WISP_BASE_K_W + (i - S_BASE_STEM_N) % S_BASE_LAYER_N);
    } else {
        out->id = (wisp_base_id_t)(WISP_BASE_LNF_W + (i - S_BASE_STEM_N - nl));
    }
    out->init = s_base[out->id].init;
    out->ndim = s_base[out->id].ndim;
    for (int k = 0; k < out->ndim; k++) {
        switch (s_base[out->id].dim[k]) {
        case 'd': out->shape[k] = cfg->d_model; break;
        case 'f': out->shape[k] = cfg->encoder_ffn_dim; break;
        case 'm': out->shape[k] = cfg->num_mel_bins; break;
        case 'p': out->shape[k] = cfg->max_source_positions; break;
        default: out->shape[k] = 3; break;
        }
    }
    wisp_model_base_name(out->name, sizeof out->name, out->id, out->layer);
    return 0;
}

const char *wisp_model_base_prefix(const wisp_st_t *st)
{
    static const char *const prefixes[] = {"model.encoder.", "encoder."};
    char name[64];
    for (size_t k = 0; k < sizeof prefixes / sizeof prefixes[0]; k++) {
        snprintf(name, sizeof name, "%s%s", prefixes[k], s_base[WISP_BASE_CONV1_W].name);
        if (wisp_st_find(st, name))
            return prefixes[k];
    }
    return NULL;
}

/* Where the model keeps the view of base tensor t. */
static const float **s_base_slot(wisp_model_t *self, const wisp_model_base_t *t)
{
    s_layer_w_t *w = t->layer >= 0 ? &self->lw[t->layer] : NULL;
    switch (t->id) {
    case WISP_BASE_CONV1_W: return &self->conv1_w;
    case WISP_BASE_CONV1_B: return &self->conv1_b;
    case WISP_BASE_CONV2_W: return &self->conv2_w;
    case WISP_BASE_CONV2_B: return &self->conv2_b;
    case WISP_BASE_POS: return &self->pos;
    case WISP_BASE_K_W: return &w->k_w;
    case WISP_BASE_V_W: return &w->v_w;
    case WISP_BASE_V_B: return &w->v_b;
    case WISP_BASE_Q_W: return &w->q_w;
    case WISP_BASE_Q_B: return &w->q_b;
    case WISP_BASE_O_W: return &w->o_w;
    case WISP_BASE_O_B: return &w->o_b;
    case WISP_BASE_LN1_W: return &w->ln1_w;
    case WISP_BASE_LN1_B: return &w->ln1_b;
    case WISP_BASE_FC1_W: return &w->fc1_w;
    case WISP_BASE_FC1_B: return &w->fc1_b;
    case WISP_BASE_FC2_W: return &w->fc2_w;
    case WISP_BASE_FC2_B: return &w->fc2_b;
    case WISP_BASE_LN2_W: return &w->ln2_w;
    case WISP_BASE_LN2_B: return &w->ln2_b;
    case WISP_BASE_LNF_W: return &self->lnf_w;
    case WISP_BASE_LNF_B: return &self->lnf_b;
    case WISP_BASE_N: break;
    }
    return NULL;
}

/* Every base tensor of the table, as fp32 views, from self->st under prefix. */
static int s_load_base(wisp_model_t *self, const char *prefix, wisp_error_t *err)
{
    char name[256];
    wisp_model_base_t t;
    for (int i = 0; wisp_model_base_at(&self->cfg, i, &t) == 0; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, t.name);
        if (!wisp_st_find(self->st, name))
            return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: missing tensor %s", self->model_dir,
                                  name);
        int rc = wisp_st_get_f32(self->st, name, t.ndim, t.shape, s_base_slot(self, &t), err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ config copies */

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

/* ------------------------------------------------------------------ loading */

/* Copies trainable tensor spec[idx] from st, trying `prefix + spec name` for each
 * prefix in turn. */
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

/* Threads of the model's pool: opts.threads, or OpenBLAS's own count when the options
 * leave OpenBLAS as is. The attention core splits (clip, head, query block) units over
 * them, each unit's sgemm on one OpenBLAS thread, because its thin sgemms
 * (128 x 1500 x 64) scale poorly inside OpenBLAS. */
int nn_model_threads(const wisp_model_opts_t *opts)
{
    int n = opts->threads > 0 ? opts->threads : openblas_get_num_threads();
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

/* Options, threads, config.json and the sizes derived from it. */
static int s_open_config(wisp_model_t *self, const char *model_dir, const wisp_model_opts_t *opts,
                         wisp_error_t *err)
{
    char path[4096];
    if (!opts || opts->max_batch < 1 || opts->max_frames < 2 || opts->max_frames % 2)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: model options need max_batch >= 1 and an even max_frames >= 2",
                              model_dir);
    self->opts = *opts;
    if (opts->threads > 0)
        openblas_set_num_threads(opts->threads);
    self->nthreads = nn_model_threads(opts);
    if (self->nthreads > 1 && !(self->pool = nn_pool_new(self->nthreads)))
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: cannot start %d compute threads", model_dir,
                              self->nthreads);
    self->model_dir = strdup(model_dir);
    if (!self->model_dir || wisp_path_join(path, sizeof path, model_dir, "config.json") < 0)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: bad model directory", model_dir);
    int rc = wisp_whisper_config_load(&self->cfg, path, err);
    if (rc < 0)
        return rc;
    const wisp_whisper_config_t *c = &self->cfg;
    self->d = c->d_model;
    self->L = c->encoder_layers;
    self->H = c->encoder_attention_heads;
    self->F = c->encoder_ffn_dim;
    self->hd = self->d / self->H;
    self->n_mels = c->num_mel_bins;
    self->T_max = c->max_source_positions;
    if (self->L > WISP_MAX_LAYERS)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "%s: %d encoder layers (at most %d)", path,
                              self->L, WISP_MAX_LAYERS);
    if (opts->max_frames / 2 > self->T_max)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: max_frames %d exceeds 2 * max_source_positions %d", model_dir,
                              opts->max_frames, self->T_max);
    return 0;
}

/* A WhisperForAudioClassification checkpoint carries the head: its config keys from
 * config.json, its tensors under their own names. */
static int s_load_builtin_head(wisp_model_t *self, wisp_error_t *err)
{
    const wisp_whisper_config_t *c = &self->cfg;
    wisp_head_config_t hc = {0};
    hc.num_labels = c->num_labels;
    hc.classifier_proj_size = c->classifier_proj_size;
    hc.use_weighted_layer_sum = c->use_weighted_layer_sum;
    hc.num_hidden_layers = self->L;
    hc.d_model = self->d;
    hc.id2label = c->id2label;
    if (s_head_copy(&self->head, &hc) < 0)
        return wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
    self->has_head = 1;
    int rc = nn_model_relayout(self, NULL, &self->head, 0, 0, err);
    const char *pre[] = {""};
    for (int k = 0; k < self->nspec && rc == 0; k++)
        rc = s_load_tensor(self, self->st, self->model_dir, pre, 1, k, err);
    return rc;
}

/* opts.precision int8: every layer's frozen linears quantised once (nn/qlinear.h). */
static int s_quantise_base(wisp_model_t *self, wisp_error_t *err)
{
    if (self->opts.precision == WISP_PRECISION_FP32)
        return 0;
    if (self->opts.precision != WISP_PRECISION_INT8)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: unknown precision %d", self->model_dir,
                              self->opts.precision);
    if (self->opts.training)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "%s: int8 is for inference only; training runs in fp32",
                              self->model_dir);
    int wide = self->F > self->d ? self->F : self->d;
    self->q8 = wisp_qlinears_new(self->opts.max_batch * (self->opts.max_frames / 2), wide, wide,
                                 self->nthreads, err);
    int rc = self->q8 ? 0 : WISP_ERR_NOMEM;
    for (int i = 0; i < self->L && rc == 0; i++) {
        const s_layer_w_t *w = &self->lw[i];
        const int d = self->d, F = self->F;
        rc = wisp_qlinears_add(self->q8, w->q_w, w->q_b, d, d, err);
        rc = rc ? rc : wisp_qlinears_add(self->q8, w->k_w, NULL, d, d, err);
        rc = rc ? rc : wisp_qlinears_add(self->q8, w->v_w, w->v_b, d, d, err);
        rc = rc ? rc : wisp_qlinears_add(self->q8, w->o_w, w->o_b, d, d, err);
        rc = rc ? rc : wisp_qlinears_add(self->q8, w->fc1_w, w->fc1_b, d, F, err);
        rc = rc ? rc : wisp_qlinears_add(self->q8, w->fc2_w, w->fc2_b, F, d, err);
    }
    return rc;
}

wisp_model_t *wisp_model_new(const char *model_dir, const wisp_model_opts_t *opts,
                             wisp_error_t *err)
{
    wisp_model_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        return NULL;
    }
    for (int t = 0; t < S_HEAD_N; t++)
        self->head_t[t] = -1;
    if (s_open_config(self, model_dir, opts, err) < 0)
        goto fail;
    self->st = wisp_st_open(model_dir, err);
    if (!self->st)
        goto fail;
    const char *prefix = wisp_model_base_prefix(self->st);
    if (!prefix) {
        wisp_error_set(err, WISP_ERR_NOTFOUND,
                       "%s: no Whisper encoder tensors (model.encoder.conv1.weight or "
                       "encoder.conv1.weight)",
                       model_dir);
        goto fail;
    }
    self->lw = calloc((size_t)self->L, sizeof *self->lw);
    self->acts = calloc((size_t)self->L, sizeof *self->acts);
    self->x = calloc((size_t)self->L + 1, sizeof *self->x);
    if (!self->lw || !self->acts || !self->x) {
        wisp_error_set(err, WISP_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    if (s_load_base(self, prefix, err) < 0 || s_quantise_base(self, err) < 0)
        goto fail;
    if (wisp_st_find(self->st, "projector.weight")) {
        if (s_load_builtin_head(self, err) < 0)
            goto fail;
    } else if (nn_model_relayout(self, NULL, NULL, 0, 0, err) < 0) {
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
    wisp_qlinears_destroy(&self->q8);
    wisp_st_destroy(&self->st);
    if (self->has_adapter)
        s_adapter_free(&self->acfg);
    if (self->has_head)
        s_head_free(&self->head);
    nn_model_free_layout(self);
    wisp_free(self->arena);
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

/* One bottleneck site by init_weights: t are its spec indices (S_BN_*). */
static int s_init_site(wisp_model_t *self, const int *t, wisp_rng_t *rng, wisp_error_t *err)
{
    const wisp_adapter_config_t *a = &self->acfg;
    const char *init = a->init_weights;
    float *dw = nn_model_param(self, t[S_BN_DOWN_W]), *uw = nn_model_param(self, t[S_BN_UP_W]);
    size_t nd = self->spec[t[S_BN_DOWN_W]].numel, nu = self->spec[t[S_BN_UP_W]].numel;
    memset(nn_model_param(self, t[S_BN_DOWN_B]), 0,
           self->spec[t[S_BN_DOWN_B]].numel * sizeof(float));
    memset(nn_model_param(self, t[S_BN_UP_B]), 0, self->spec[t[S_BN_UP_B]].numel * sizeof(float));
    if (!strcmp(init, "bert")) {
        s_fill_normal(rng, dw, nd, 0.02f);
        s_fill_normal(rng, uw, nu, 0.02f);
    } else if (!strcmp(init, "mam_adapter")) {
        /* kaiming_uniform_(a = sqrt(5)) on (m, d): bound 1/sqrt(d) */
        s_fill_uniform(rng, dw, nd, (float)(1.0 / sqrt((double)self->d)));
        memset(uw, 0, nu * sizeof(float));
    } else if (!strcmp(init, "houlsby")) {
        for (size_t j = 0; j < nd; j++)
            dw[j] = s_trunc_normal(rng, 0.01f);
        for (size_t j = 0; j < nu; j++)
            uw[j] = s_trunc_normal(rng, 0.01f);
    } else {
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "adapter %s: init_weights '%s' for a bottleneck adapter", a->name,
                              init);
    }
    return 0;
}

static void s_fill_const(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        p[i] = v;
}

/* One adapted linear by init_weights: t are its spec indices (S_IA3_L or S_LORA_*). */
static int s_init_lin(wisp_model_t *self, const int *t, wisp_rng_t *rng, wisp_error_t *err)
{
    const wisp_adapter_config_t *a = &self->acfg;
    const char *init = a->init_weights;
    if (a->kind == WISP_ADAPTER_IA3) {
        float *l = nn_model_param(self, t[S_IA3_L]);
        size_t n = self->spec[t[S_IA3_L]].numel;
        if (!strcmp(init, "ia3"))
            s_fill_const(l, n, 1.0f);
        else if (!strcmp(init, "lora"))
            memset(l, 0, n * sizeof(float));
        else if (!strcmp(init, "bert"))
            s_fill_normal(rng, l, n, 0.02f);
        else
            return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "adapter %s: init_weights '%s'",
                                  a->name, init);
        return 0;
    }
    const wisp_param_info_t *pa = &self->spec[t[S_LORA_A]], *pb = &self->spec[t[S_LORA_B]];
    float *A = nn_model_param(self, t[S_LORA_A]), *Bm = nn_model_param(self, t[S_LORA_B]);
    if (!strcmp(init, "lora")) {
        /* kaiming_uniform_(a = sqrt(5)) on A (r, in): bound 1/sqrt(in) */
        s_fill_uniform(rng, A, pa->numel, (float)(1.0 / sqrt((double)pa->shape[1])));
        memset(Bm, 0, pb->numel * sizeof(float));
    } else if (!strcmp(init, "bert")) {
        s_fill_normal(rng, A, pa->numel, 0.02f);
        s_fill_normal(rng, Bm, pb->numel, 0.02f);
    } else if (!strcmp(init, "ia3")) {
        s_fill_const(A, pa->numel, 1.0f);
        s_fill_const(Bm, pb->numel, 1.0f);
    } else {
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "adapter %s: init_weights '%s'", a->name,
                              init);
    }
    return 0;
}

/* Fresh adapter parameters by the config's init scheme (adapters library v1.2), one
 * random stream in spec order. */
static int s_init_adapter(wisp_model_t *self, uint64_t seed, wisp_error_t *err)
{
    wisp_rng_t rng;
    wisp_rng_seed(&rng, seed);
    for (int i = 0; i < self->L; i++) {
        const s_layer_a_t *la = &self->la[i];
        for (int s = 0; s < S_NSITE; s++) {
            int rc = la->site_m[s] ? s_init_site(self, la->site[s], &rng, err) : 0;
            if (rc < 0)
                return rc;
        }
        for (int j = 0; j < S_NLIN; j++) {
            int rc = la->lin[j][0] >= 0 ? s_init_lin(self, la->lin[j], &rng, err) : 0;
            if (rc < 0)
                return rc;
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
    rc = nn_model_relayout(self, &copy, self->has_head ? &self->head : NULL, 0, 1, err);
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
        if (k >= nn_model_head_first(self))
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
        if (nn_model_relayout(self, NULL, self->has_head ? &self->head : NULL, 0, 1, NULL) == 0) {
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
    /* adapter tensors come first in the spec, the head's (if any) after them */
    int rc = s_save_tensors(self, 0, nn_model_head_first(self), dir, "adapter.safetensors", err);
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
    int rc = nn_model_relayout(self, self->has_adapter ? &self->acfg : NULL, &copy, 1, 0, err);
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
    const int *ht = self->head_t;
    /* HF _init_weights: Linear weights N(0, init_std 0.02), biases 0; layer_weights 1/(L+1) */
    s_fill_normal(&rng, nn_model_param(self, ht[S_HEAD_PROJ_W]),
                  self->spec[ht[S_HEAD_PROJ_W]].numel, 0.02f);
    memset(nn_model_param(self, ht[S_HEAD_PROJ_B]), 0,
           self->spec[ht[S_HEAD_PROJ_B]].numel * sizeof(float));
    s_fill_normal(&rng, nn_model_param(self, ht[S_HEAD_CLS_W]), self->spec[ht[S_HEAD_CLS_W]].numel,
                  0.02f);
    memset(nn_model_param(self, ht[S_HEAD_CLS_B]), 0,
           self->spec[ht[S_HEAD_CLS_B]].numel * sizeof(float));
    if (self->head.use_weighted_layer_sum)
        s_fill_const(nn_model_param(self, ht[S_HEAD_LAYER_W]), (size_t)self->L + 1,
                     1.0f / (float)(self->L + 1));
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
    for (int k = nn_model_head_first(self); k < self->nspec; k++) {
        if ((rc = s_load_tensor(self, st, path, pre, 1, k, err)) < 0)
            goto done;
    }
    rc = 0;
done:
    if (rc < 0 && installed) {
        /* no half-loaded head: the model is left without one */
        if (nn_model_relayout(self, self->has_adapter ? &self->acfg : NULL, NULL, 1, 0, NULL) ==
            0) {
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
    int rc = s_save_tensors(self, nn_model_head_first(self), self->nspec, dir,
                            "model_head.safetensors", err);
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
