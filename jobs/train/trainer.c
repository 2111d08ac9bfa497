/* trainer.c: adapter training building blocks and the local loop (see trainer.h). */
#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audio/features.h"
#include "formats/config.h"
#include "nn/adapter_config.h"
#include "base/log.h"
#include "audio/mel.h" /* WISP_N_FRAMES */
#include "formats/st.h"
#include "base/util.h"

/* One decoded clip of a step: its features and label. */
typedef struct {
    const float *mel; /* (n_mels, frames) */
    int frames;
    int label;
} s_clip_t;

/* Per-item record of the fixed-order mode: 4 doubles (loss, weight, correct, 0) then
 * the item's gradient (num_params floats), padded to a multiple of 8 bytes so the
 * doubles of every record in a concatenation stay aligned. */
#define ITEM_HDR 4
static size_t s_item_rec_bytes(size_t num_params)
{
    size_t b = ITEM_HDR * sizeof(double) + num_params * sizeof(float);
    return (b + 7) & ~(size_t)7;
}

struct wisp_trainer {
    wisp_trainer_opts_t opts; /* copy; string members are not used after _new */
    wisp_model_t *model;
    wisp_adamw_t *opt;
    wisp_features_t *feat; /* feature extractor (this thread's) */
    int n_mels;
    int num_labels;
    int max_frames;       /* planned frames per clip */
    int micro_batch;      /* planned clips per forward_backward */
    float *class_weights; /* (num_labels) or NULL */
    size_t *seg_sizes;    /* (n_seg) element counts of the trainable tensors */
    int n_seg;
    char **class_names; /* (num_labels) owned copies given to a fresh head */
    wisp_trainer_reduce_fn reduce;
    void *reduce_ctx;
    int per_item;                  /* fixed-order mode (wisp_trainer_set_per_item) */
    wisp_trainer_gather_fn gather; /* its exchange (NULL: this process only) */
    void *gather_ctx;
    unsigned char *item_rec; /* (cap_item_rec) bytes: this process's item records */
    size_t cap_item_rec;
    /* Per-step scratch, grown on demand (decoding dominates its cost). */
    float *clip_mel; /* (cap_clips, n_mels, max_frames) decoded features */
    s_clip_t *clips; /* (cap_clips) */
    int *order;      /* (cap_clips) clip indices sorted by frame count */
    int cap_clips;
    float *batch_mel;  /* (micro_batch, n_mels, max_frames) */
    int *batch_labels; /* (micro_batch) */
    float *logits;     /* (micro_batch, num_labels) */
};

void wisp_trainer_default_opts(wisp_trainer_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->weighted_layer_sum = -1;
    o->micro_batch = 8;
    o->lr = 1e-3;
    o->adamw = wisp_adamw_default_opts();
    o->schedule = WISP_SCHEDULE_CONSTANT;
    o->clip = 1.0;
    o->seed = 42;
    o->attn_keep_mb = WISP_MODEL_ATTN_KEEP_MB_DEFAULT;
}

void wisp_trainer_default_run_opts(wisp_trainer_run_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 1;
    o->steps = -1;
    o->batch = 8;
    o->keep_checkpoints = 2;
    o->stop_after = -1;
}

/* ---- setup -------------------------------------------------------------- */

static int s_setup_adapter(wisp_trainer_t *self, const wisp_trainer_opts_t *o, wisp_error_t *err)
{
    wisp_adapter_config_t cfg;
    cJSON *json = NULL;
    int rc = WISP_OK;
    memset(&cfg, 0, sizeof cfg);
    if (o->adapter_dir)
        return wisp_model_load_adapter(self->model, o->adapter_dir, err);
    if (o->adapter_config) {
        if ((rc = wisp_json_load(o->adapter_config, &json, err)) != 0)
            return rc;
        /* Either a bare config dict or a whole adapter_config.json ({"config": {...}}). */
        const cJSON *dict = cJSON_GetObjectItemCaseSensitive(json, "config");
        if (!cJSON_IsObject(dict))
            dict = json;
        rc = wisp_adapter_config_parse(&cfg, dict, o->adapter_config, err);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(json, "name");
        if (rc == WISP_OK && cJSON_IsString(name) && name->valuestring[0])
            snprintf(cfg.name, sizeof cfg.name, "%s", name->valuestring);
    } else if (o->preset) {
        rc = wisp_adapter_config_preset(&cfg, o->preset, err);
    } else {
        return WISP_OK; /* head-only training */
    }
    if (rc == WISP_OK && o->adapter_name && o->adapter_name[0])
        snprintf(cfg.name, sizeof cfg.name, "%s", o->adapter_name);
    if (rc == WISP_OK)
        rc = wisp_model_set_adapter(self->model, &cfg, o->seed, err);
    wisp_adapter_config_free(&cfg);
    cJSON_Delete(json);
    return rc;
}

static int s_setup_head(wisp_trainer_t *self, const wisp_trainer_opts_t *o, wisp_error_t *err)
{
    if (o->head_dir)
        return wisp_model_load_head(self->model, o->head_dir, err);
    if (o->num_labels <= 0) {
        if (wisp_model_head(self->model))
            return WISP_OK; /* the checkpoint's own classification head */
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s: no head in the checkpoint and no number of classes given",
                              o->model_dir);
    }
    if (o->num_labels < 2)
        return wisp_error_set(err, WISP_ERR_ARG, "a classifier needs at least 2 classes, got %d",
                              o->num_labels);
    const wisp_whisper_config_t *mc = wisp_model_config(self->model);
    self->class_names = calloc((size_t)o->num_labels, sizeof(char *));
    if (!self->class_names)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < o->num_labels; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "LABEL_%d", i);
        self->class_names[i] =
            strdup(o->class_names && o->class_names[i] ? o->class_names[i] : buf);
        if (!self->class_names[i])
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    }
    wisp_head_config_t hc;
    memset(&hc, 0, sizeof hc);
    hc.num_labels = o->num_labels;
    hc.classifier_proj_size = o->proj_size > 0 ? o->proj_size : mc->classifier_proj_size;
    hc.use_weighted_layer_sum =
        o->weighted_layer_sum >= 0 ? o->weighted_layer_sum : mc->use_weighted_layer_sum;
    hc.num_hidden_layers = mc->encoder_layers;
    hc.d_model = mc->d_model;
    hc.id2label = self->class_names;
    /* A seed of its own, so the head does not repeat the adapter's draws. */
    return wisp_model_init_head(self->model, &hc, o->seed ^ 0x5eedbeadc0ffee11ull, err);
}

wisp_trainer_t *wisp_trainer_new(const wisp_trainer_opts_t *opts, wisp_error_t *err)
{
    if (!opts || !opts->model_dir) {
        wisp_error_set(err, WISP_ERR_ARG, "trainer: no model directory");
        return NULL;
    }
    if (opts->micro_batch < 1) {
        wisp_error_set(err, WISP_ERR_ARG, "trainer: micro batch %d < 1", opts->micro_batch);
        return NULL;
    }
    wisp_trainer_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    self->micro_batch = opts->micro_batch;
    /* Frames the model's positions allow (tiny test models have fewer than 1500). */
    wisp_whisper_config_t wc;
    char cpath[4096];
    memset(&wc, 0, sizeof wc);
    if (wisp_path_join(cpath, sizeof cpath, opts->model_dir, "config.json") != WISP_OK ||
        wisp_whisper_config_load(&wc, cpath, err) != WISP_OK)
        goto fail;
    int limit =
        2 * wc.max_source_positions < WISP_N_FRAMES ? 2 * wc.max_source_positions : WISP_N_FRAMES;
    wisp_whisper_config_free(&wc);
    self->max_frames = opts->max_frames > 0 && opts->max_frames < limit ? opts->max_frames : limit;
    if (self->max_frames % 2)
        self->max_frames--;
    if (!opts->truncate && self->max_frames < WISP_N_FRAMES) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                       "%s: %s for padded 30 s input; use truncated mode (--truncate)", cpath,
                       limit < WISP_N_FRAMES ? "max_source_positions is too small"
                                             : "max_frames is too small");
        goto fail;
    }
    wisp_model_opts_t mo = {.max_batch = self->micro_batch,
                            .max_frames = self->max_frames,
                            .training = 1,
                            .threads = opts->threads,
                            .attn_keep_mb = opts->attn_keep_mb};
    self->model = wisp_model_new(opts->model_dir, &mo, err);
    if (!self->model)
        goto fail;
    if (s_setup_adapter(self, opts, err) != WISP_OK || s_setup_head(self, opts, err) != WISP_OK)
        goto fail;
    self->num_labels = wisp_model_head(self->model)->num_labels;
    self->n_mels = wisp_model_config(self->model)->num_mel_bins;
    self->feat = wisp_features_new(self->n_mels, opts->truncate, self->max_frames, err);
    if (!self->feat)
        goto fail;
    self->opt = wisp_adamw_new(wisp_model_num_params(self->model), &opts->adamw);
    self->n_seg = wisp_model_num_param_tensors(self->model);
    self->seg_sizes = calloc((size_t)self->n_seg + 1, sizeof(size_t));
    self->batch_mel =
        wisp_alloc((size_t)self->micro_batch * self->n_mels * self->max_frames * sizeof(float));
    self->batch_labels = calloc((size_t)self->micro_batch, sizeof(int));
    self->logits = calloc((size_t)self->micro_batch * self->num_labels, sizeof(float));
    if (!self->opt || !self->seg_sizes || !self->batch_mel || !self->batch_labels ||
        !self->logits) {
        wisp_error_set(err, WISP_ERR_NOMEM, "trainer: out of memory");
        goto fail;
    }
    for (int i = 0; i < self->n_seg; i++)
        self->seg_sizes[i] = wisp_model_param_tensor(self->model, i)->numel;
    if (opts->class_weights) {
        self->class_weights = malloc((size_t)self->num_labels * sizeof(float));
        if (!self->class_weights) {
            wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
            goto fail;
        }
        memcpy(self->class_weights, opts->class_weights, (size_t)self->num_labels * sizeof(float));
        for (int i = 0; i < self->num_labels; i++)
            if (!(self->class_weights[i] >= 0.0f) || !isfinite(self->class_weights[i])) {
                wisp_error_set(err, WISP_ERR_ARG, "class weight %d is %g (must be >= 0)", i,
                               self->class_weights[i]);
                goto fail;
            }
    }
    self->opts.class_weights = self->class_weights;
    self->opts.model_dir = self->opts.adapter_config = self->opts.preset = NULL;
    self->opts.adapter_dir = self->opts.head_dir = NULL;
    self->opts.class_names = NULL;
    self->opts.adapter_name = NULL;
    WISP_LOGI("trainer: %zu trainable parameters in %d tensors, %d classes, %.1f MB planned",
              wisp_model_num_params(self->model), self->n_seg, self->num_labels,
              (double)wisp_model_planned_bytes(self->model) / 1e6);
    return self;
fail:
    wisp_trainer_destroy(&self);
    return NULL;
}

void wisp_trainer_destroy(wisp_trainer_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_trainer_t *self = *pself;
    wisp_model_destroy(&self->model);
    wisp_adamw_destroy(&self->opt);
    wisp_features_destroy(&self->feat);
    free(self->class_weights);
    free(self->seg_sizes);
    if (self->class_names)
        for (int i = 0; i < self->opts.num_labels; i++)
            free(self->class_names[i]);
    free(self->class_names);
    wisp_free(self->clip_mel);
    free(self->clips);
    free(self->order);
    wisp_free(self->batch_mel);
    free(self->batch_labels);
    free(self->logits);
    free(self->item_rec);
    free(self);
    *pself = NULL;
}

void wisp_trainer_set_reduce(wisp_trainer_t *self, wisp_trainer_reduce_fn fn, void *ctx)
{
    self->reduce = fn;
    self->reduce_ctx = ctx;
}

void wisp_trainer_set_per_item(wisp_trainer_t *self, wisp_trainer_gather_fn fn, void *ctx)
{
    self->per_item = 1;
    self->gather = fn;
    self->gather_ctx = ctx;
}

size_t wisp_trainer_item_record_bytes(const wisp_trainer_t *self)
{
    return s_item_rec_bytes(wisp_model_num_params(self->model));
}

wisp_model_t *wisp_trainer_model(wisp_trainer_t *self)
{
    return self->model;
}
wisp_adamw_t *wisp_trainer_optimizer(wisp_trainer_t *self)
{
    return self->opt;
}
int wisp_trainer_num_labels(const wisp_trainer_t *self)
{
    return self->num_labels;
}
long wisp_trainer_steps(const wisp_trainer_t *self)
{
    return wisp_adamw_steps(self->opt);
}

/* ---- one step ----------------------------------------------------------- */

static int s_reserve_clips(wisp_trainer_t *self, int n, wisp_error_t *err)
{
    if (n <= self->cap_clips)
        return WISP_OK;
    wisp_free(self->clip_mel);
    free(self->clips);
    free(self->order);
    self->clip_mel = wisp_alloc((size_t)n * self->n_mels * self->max_frames * sizeof(float));
    self->clips = calloc((size_t)n, sizeof(s_clip_t));
    self->order = calloc((size_t)n, sizeof(int));
    self->cap_clips = self->clip_mel && self->clips && self->order ? n : 0;
    if (!self->cap_clips)
        return wisp_error_set(err, WISP_ERR_NOMEM, "trainer: out of memory for %d clips", n);
    return WISP_OK;
}

/* Decodes item into clip slot k; 0, or a negative code with the reason logged. */
static int s_decode(wisp_trainer_t *self, const wisp_trainer_item_t *item, int k, s_clip_t *clip)
{
    wisp_error_t e = {0};
    wisp_features_info_t info;
    float *dst = self->clip_mel + (size_t)k * self->n_mels * self->max_frames;
    int rc = wisp_features_file(self->feat, item->path, dst, &info, &e);
    if (rc != WISP_OK) {
        WISP_LOGW("skipping %s", e.msg[0] ? e.msg : item->path);
        return rc;
    }
    clip->mel = dst;
    clip->frames = info.frames;
    clip->label = item->label;
    return WISP_OK;
}

static double s_weight(const wisp_trainer_t *self, int label)
{
    return self->class_weights ? (double)self->class_weights[label] : 1.0;
}

static int s_argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* Steps 2-4 of trainer.h over decoded clips: weight sum (reduced), grouped
 * forward_backward with grad_scale = 1/global weight sum, gradient reduction. */
static int s_accumulate_items(wisp_trainer_t *self, const s_clip_t *clips, int nc, long failed,
                              wisp_trainer_stats_t *stats, wisp_error_t *err);

static int s_accumulate(wisp_trainer_t *self, const s_clip_t *clips, int nc, long failed,
                        wisp_trainer_stats_t *stats, wisp_error_t *err)
{
    if (self->per_item)
        return s_accumulate_items(self, clips, nc, failed, stats, err);
    double t0 = wisp_now();
    double wsum_local = 0.0;
    for (int i = 0; i < nc; i++)
        wsum_local += s_weight(self, clips[i].label);
    double pre[2] = {wsum_local, (double)nc};
    if (self->reduce && self->reduce(self->reduce_ctx, NULL, 0, pre, 2) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_MPI, "trainer: reduction of the batch weight failed");
    double wsum = pre[0];
    wisp_model_zero_grads(self->model);
    if (!(wsum > 0.0)) {
        /* Keep collective calls balanced: the second reduction still happens. */
        if (self->reduce) {
            double post[5] = {0, 0, 0, 0, (double)failed};
            self->reduce(self->reduce_ctx, wisp_model_grads(self->model),
                         wisp_model_num_params(self->model), post, 5);
        }
        return wisp_error_set(err, WISP_ERR_ARG,
                              "trainer: no usable labeled clip in the batch (%ld failed)", failed);
    }
    float grad_scale = (float)(1.0 / wsum);

    /* Stable order by frame count: clips of one length share a forward_backward call. */
    int *ord = self->order;
    for (int i = 0; i < nc; i++)
        ord[i] = i;
    for (int i = 1; i < nc; i++) { /* insertion sort: batches are small */
        int v = ord[i], j = i - 1;
        while (j >= 0 && clips[ord[j]].frames > clips[v].frames) {
            ord[j + 1] = ord[j];
            j--;
        }
        ord[j + 1] = v;
    }
    double loss_sum = 0.0, weight_sum = 0.0, correct = 0.0;
    size_t per = (size_t)self->n_mels;
    for (int i = 0; i < nc;) {
        int frames = clips[ord[i]].frames, B = 0;
        while (i + B < nc && B < self->micro_batch && clips[ord[i + B]].frames == frames) {
            const s_clip_t *c = &clips[ord[i + B]];
            memcpy(self->batch_mel + (size_t)B * per * frames, c->mel,
                   per * frames * sizeof(float));
            self->batch_labels[B] = c->label;
            B++;
        }
        double ls = 0.0, ws = 0.0;
        int rc =
            wisp_model_forward_backward(self->model, self->batch_mel, B, frames, self->batch_labels,
                                        self->class_weights, grad_scale, &ls, &ws, self->logits);
        if (rc != WISP_OK)
            return wisp_error_set(err, rc, "trainer: forward/backward failed (%s)",
                                  wisp_strerror(rc));
        loss_sum += ls;
        weight_sum += ws;
        for (int b = 0; b < B; b++)
            correct += s_argmax(self->logits + (size_t)b * self->num_labels, self->num_labels) ==
                       self->batch_labels[b];
        i += B;
    }
    double post[5] = {loss_sum, weight_sum, correct, (double)nc, (double)failed};
    if (self->reduce && self->reduce(self->reduce_ctx, wisp_model_grads(self->model),
                                     wisp_model_num_params(self->model), post, 5) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_MPI, "trainer: gradient reduction failed");
    memset(stats, 0, sizeof *stats);
    stats->step = wisp_adamw_steps(self->opt);
    stats->loss = post[1] > 0.0 ? post[0] / post[1] : 0.0;
    stats->acc = post[3] > 0.0 ? post[2] / post[3] : 0.0;
    stats->items = (long)post[3];
    stats->failed = (long)post[4];
    stats->seconds = wisp_now() - t0;
    return WISP_OK;
}

/* Gathers n_mine records of rec bytes from every process in rank order (which is the
 * global item order: ranks hold consecutive slices of the step's items). */
static int s_gather(wisp_trainer_t *self, const void *mine, size_t n_mine, size_t rec,
                    const void **all, size_t *n_all)
{
    if (!self->gather) {
        *all = mine;
        *n_all = n_mine;
        return WISP_OK;
    }
    return self->gather(self->gather_ctx, mine, n_mine, rec, all, n_all);
}

/* The fixed-order variant of s_accumulate: every item's gradient is computed alone
 * (B = 1 into zeroed gradients, so it does not depend on which items share a process
 * or a micro-batch), all items' gradients are gathered in global item order and
 * summed in that order, and so are the weights, losses and hits. The sum is then
 * the same bits for any number of processes. */
static int s_accumulate_items(wisp_trainer_t *self, const s_clip_t *clips, int nc, long failed,
                              wisp_trainer_stats_t *stats, wisp_error_t *err)
{
    double t0 = wisp_now();
    size_t np = wisp_model_num_params(self->model);
    size_t rec = s_item_rec_bytes(np);
    size_t nl = (size_t)nc + (size_t)failed; /* phase 1 records (2 doubles each) */
    size_t need =
        (size_t)nc * rec > nl * 2 * sizeof(double) ? (size_t)nc * rec : nl * 2 * sizeof(double);
    if (need > self->cap_item_rec) {
        free(self->item_rec);
        self->item_rec = malloc(need ? need : 1);
        self->cap_item_rec = self->item_rec ? need : 0;
        if (!self->item_rec)
            return wisp_error_set(err, WISP_ERR_NOMEM,
                                  "trainer: out of memory for %d per-item gradients (%zu bytes)",
                                  nc, need);
    }
    /* 1. Weight sum in global item order: records (weight, failed) per labeled item. */
    double *wr = (double *)self->item_rec;
    for (int i = 0; i < nc; i++) {
        wr[2 * i] = s_weight(self, clips[i].label);
        wr[2 * i + 1] = 0.0;
    }
    for (long f = 0; f < failed; f++) { /* a zero weight leaves the sum's bits alone */
        wr[2 * (nc + f)] = 0.0;
        wr[2 * (nc + f) + 1] = 1.0;
    }
    const void *all;
    size_t n_all;
    if (s_gather(self, wr, nl, 2 * sizeof(double), &all, &n_all) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_MPI, "trainer: exchange of the item weights failed");
    double wsum = 0.0;
    long failed_all = 0;
    for (size_t i = 0; i < n_all; i++) {
        wsum += ((const double *)all)[2 * i];
        failed_all += ((const double *)all)[2 * i + 1] != 0.0;
    }
    /* Every process computed the same wsum, so all of them stop here together. */
    if (!(wsum > 0.0))
        return wisp_error_set(err, WISP_ERR_ARG,
                              "trainer: no usable labeled clip in the batch (%ld failed)",
                              failed_all);
    float grad_scale = (float)(1.0 / wsum);

    /* 2. One forward_backward per item into its own record. */
    float *g = wisp_model_grads(self->model);
    for (int i = 0; i < nc; i++) {
        unsigned char *r = self->item_rec + (size_t)i * rec;
        double *hdr = (double *)r;
        double ls = 0.0, ws = 0.0;
        int label = clips[i].label;
        wisp_model_zero_grads(self->model);
        int rc =
            wisp_model_forward_backward(self->model, clips[i].mel, 1, clips[i].frames, &label,
                                        self->class_weights, grad_scale, &ls, &ws, self->logits);
        if (rc != WISP_OK)
            return wisp_error_set(err, rc, "trainer: forward/backward failed (%s)",
                                  wisp_strerror(rc));
        hdr[0] = ls;
        hdr[1] = ws;
        hdr[2] = s_argmax(self->logits, self->num_labels) == label;
        hdr[3] = 0.0;
        memcpy(r + ITEM_HDR * sizeof(double), g, np * sizeof(float));
    }
    /* 3. All records in global item order, summed in that order. */
    if (s_gather(self, self->item_rec, (size_t)nc, rec, &all, &n_all) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_MPI,
                              "trainer: exchange of the per-item gradients failed");
    wisp_model_zero_grads(self->model);
    double loss_sum = 0.0, weight_sum = 0.0, correct = 0.0;
    for (size_t i = 0; i < n_all; i++) {
        const unsigned char *r = (const unsigned char *)all + i * rec;
        const double *hdr = (const double *)r;
        const float *gi = (const float *)(r + ITEM_HDR * sizeof(double));
        loss_sum += hdr[0];
        weight_sum += hdr[1];
        correct += hdr[2];
        for (size_t j = 0; j < np; j++)
            g[j] += gi[j];
    }
    memset(stats, 0, sizeof *stats);
    stats->step = wisp_adamw_steps(self->opt);
    stats->loss = weight_sum > 0.0 ? loss_sum / weight_sum : 0.0;
    stats->acc = n_all > 0 ? correct / (double)n_all : 0.0;
    stats->items = (long)n_all;
    stats->failed = failed_all;
    stats->seconds = wisp_now() - t0;
    return WISP_OK;
}

int wisp_trainer_compute_grads(wisp_trainer_t *self, const wisp_trainer_item_t *items, int n,
                               wisp_trainer_stats_t *stats, wisp_error_t *err)
{
    double t0 = wisp_now();
    int rc = s_reserve_clips(self, n > 0 ? n : 1, err);
    if (rc)
        return rc;
    int nc = 0;
    long failed = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].label < 0)
            continue; /* unlabeled: nothing to learn from */
        if (items[i].label >= self->num_labels) {
            /* Counted as failed, not returned: the reductions below are collective. */
            WISP_LOGW("skipping %s: label %d out of range (%d classes)", items[i].path,
                      items[i].label, self->num_labels);
            failed++;
            continue;
        }
        if (s_decode(self, &items[i], nc, &self->clips[nc]) == WISP_OK)
            nc++;
        else
            failed++;
    }
    rc = s_accumulate(self, self->clips, nc, failed, stats, err);
    if (rc == WISP_OK)
        stats->seconds = wisp_now() - t0;
    return rc;
}

int wisp_trainer_compute_grads_clips(wisp_trainer_t *self, const float *const *mel,
                                     const int *frames, const int *labels, int n,
                                     wisp_trainer_stats_t *stats, wisp_error_t *err)
{
    int rc = s_reserve_clips(self, n > 0 ? n : 1, err);
    if (rc)
        return rc;
    int nc = 0;
    long failed = 0;
    for (int b = 0; b < n; b++) {
        if (labels[b] < 0)
            continue;
        if (labels[b] >= self->num_labels || frames[b] < 2 || frames[b] % 2 ||
            frames[b] > self->max_frames) {
            /* Counted, not returned: the reductions that follow are collective. */
            WISP_LOGW("skipping clip %d: label %d / %d frames out of range", b, labels[b],
                      frames[b]);
            failed++;
            continue;
        }
        self->clips[nc].mel = mel[b];
        self->clips[nc].frames = frames[b];
        self->clips[nc].label = labels[b];
        nc++;
    }
    return s_accumulate(self, self->clips, nc, failed, stats, err);
}

int wisp_trainer_compute_grads_mel(wisp_trainer_t *self, const float *mel, int B, int frames,
                                   const int *labels, wisp_trainer_stats_t *stats,
                                   wisp_error_t *err)
{
    if (B < 0 || B > 1 << 20)
        return wisp_error_set(err, WISP_ERR_ARG, "trainer: bad batch size %d", B);
    const float **mels = malloc((size_t)(B > 0 ? B : 1) * sizeof *mels);
    int *fr = malloc((size_t)(B > 0 ? B : 1) * sizeof *fr);
    int rc;
    if (!mels || !fr) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    } else {
        for (int b = 0; b < B; b++) {
            mels[b] = mel + (size_t)b * self->n_mels * frames;
            fr[b] = frames;
        }
        rc = wisp_trainer_compute_grads_clips(self, mels, fr, labels, B, stats, err);
    }
    free(mels);
    free(fr);
    return rc;
}

void wisp_trainer_apply(wisp_trainer_t *self, wisp_trainer_stats_t *stats)
{
    double t0 = wisp_now();
    long step = wisp_adamw_steps(self->opt);
    double lr = wisp_adamw_lr(self->opts.schedule, self->opts.lr, self->opts.warmup_steps,
                              self->opts.total_steps, step);
    float *g = wisp_model_grads(self->model);
    size_t n = wisp_model_num_params(self->model);
    double norm = wisp_adamw_clip_grad_norm(g, n, self->seg_sizes, self->n_seg, self->opts.clip);
    wisp_adamw_step(self->opt, wisp_model_params(self->model), g, lr);
    if (stats) {
        stats->lr = lr;
        stats->grad_norm = norm;
        stats->step = wisp_adamw_steps(self->opt);
        stats->seconds += wisp_now() - t0;
    }
}

int wisp_trainer_step(wisp_trainer_t *self, const wisp_trainer_item_t *items, int n,
                      wisp_trainer_stats_t *stats, wisp_error_t *err)
{
    int rc = wisp_trainer_compute_grads(self, items, n, stats, err);
    if (rc == WISP_OK)
        wisp_trainer_apply(self, stats);
    return rc;
}

/* ---- evaluation --------------------------------------------------------- */

int wisp_trainer_eval(wisp_trainer_t *self, const wisp_trainer_item_t *items, int n,
                      double *loss_sum, double *weight_sum, long *correct, long *count,
                      long *failed, wisp_error_t *err)
{
    int rc = s_reserve_clips(self, self->micro_batch, err);
    if (rc)
        return rc;
    size_t per = (size_t)self->n_mels;
    int i = 0;
    while (i < n) {
        /* Decode up to micro_batch labeled items, then forward them in equal-length runs. */
        int nc = 0;
        while (i < n && nc < self->micro_batch) {
            const wisp_trainer_item_t *it = &items[i++];
            if (it->label < 0 || it->label >= self->num_labels)
                continue;
            if (s_decode(self, it, nc, &self->clips[nc]) == WISP_OK)
                nc++;
            else
                (*failed)++;
        }
        for (int a = 0; a < nc;) {
            int frames = self->clips[a].frames, B = 0;
            while (a + B < nc && self->clips[a + B].frames == frames) {
                memcpy(self->batch_mel + (size_t)B * per * frames, self->clips[a + B].mel,
                       per * frames * sizeof(float));
                B++;
            }
            rc = wisp_model_forward(self->model, self->batch_mel, B, frames, self->logits, NULL);
            if (rc != WISP_OK)
                return wisp_error_set(err, rc, "trainer: forward failed (%s)", wisp_strerror(rc));
            for (int b = 0; b < B; b++) {
                const float *z = self->logits + (size_t)b * self->num_labels;
                int y = self->clips[a + b].label;
                double mx = z[s_argmax(z, self->num_labels)], se = 0.0;
                for (int c = 0; c < self->num_labels; c++)
                    se += exp((double)z[c] - mx);
                double w = s_weight(self, y);
                *loss_sum += w * (log(se) + mx - (double)z[y]);
                *weight_sum += w;
                *correct += s_argmax(z, self->num_labels) == y;
                (*count)++;
            }
            a += B;
        }
    }
    return WISP_OK;
}

/* ---- data order, identity ----------------------------------------------- */

void wisp_trainer_epoch_order(uint64_t seed, long epoch, int n, int *perm)
{
    wisp_rng_t r;
    wisp_rng_seed(&r, seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(epoch + 1)));
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(wisp_rng_u64(&r) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static void s_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void s_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (!*buf)
            return;
        va_start(ap, fmt);
        int k = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (k < 0)
            return;
        if (*len + (size_t)k < *cap) {
            *len += (size_t)k;
            return;
        }
        char *nb = realloc(*buf, 2 * (*cap + (size_t)k));
        if (!nb) {
            free(*buf);
            *buf = NULL;
            return;
        }
        *buf = nb;
        *cap = 2 * (*cap + (size_t)k);
    }
}

void wisp_trainer_fingerprint(const wisp_trainer_t *self, const char *extra, char out[65])
{
    size_t len = 0, cap = 1024;
    char *s = malloc(cap);
    const wisp_whisper_config_t *mc = wisp_model_config(self->model);
    const wisp_adapter_config_t *ac = wisp_model_adapter(self->model);
    const wisp_head_config_t *hc = wisp_model_head(self->model);
    const wisp_trainer_opts_t *o = &self->opts;
    if (s)
        s[0] = '\0';
    s_appendf(&s, &len, &cap, "model d=%d L=%d H=%d F=%d mels=%d;", mc->d_model, mc->encoder_layers,
              mc->encoder_attention_heads, mc->encoder_ffn_dim, mc->num_mel_bins);
    if (ac && ac->full) {
        char *j = cJSON_PrintUnformatted(ac->full);
        s_appendf(&s, &len, &cap, "adapter %s %s;", ac->name, j ? j : "?");
        free(j);
    }
    s_appendf(&s, &len, &cap, "head %d %d %d:", hc->num_labels, hc->classifier_proj_size,
              hc->use_weighted_layer_sum);
    for (int i = 0; i < hc->num_labels; i++)
        s_appendf(&s, &len, &cap, "%s,", hc->id2label ? hc->id2label[i] : "");
    s_appendf(&s, &len, &cap,
              ";opt lr=%.17g b1=%.17g b2=%.17g eps=%.17g wd=%.17g sched=%d warm=%ld total=%ld "
              "clip=%.17g seed=%" PRIu64 " trunc=%d mb=%d;",
              o->lr, o->adamw.beta1, o->adamw.beta2, o->adamw.eps, o->adamw.weight_decay,
              (int)o->schedule, o->warmup_steps, o->total_steps, o->clip, o->seed, o->truncate,
              o->micro_batch);
    if (self->class_weights)
        for (int i = 0; i < self->num_labels; i++)
            s_appendf(&s, &len, &cap, "cw%.9g,", self->class_weights[i]);
    s_appendf(&s, &len, &cap, ";extra %s", extra ? extra : "");
    const char *desc = s ? s : "out of memory";
    wisp_sha256_hex(desc, strlen(desc), out);
    free(s);
}

/* ---- checkpoints, outputs ----------------------------------------------- */

int wisp_trainer_save_checkpoint(wisp_trainer_t *self, const char *root,
                                 const wisp_ckpt_state_t *state, int keep, wisp_error_t *err)
{
    return wisp_ckpt_save(root, state, self->model, self->opt, keep, NULL, 0, err);
}

int wisp_trainer_load_checkpoint(wisp_trainer_t *self, const char *dir,
                                 const char *expect_fingerprint, wisp_ckpt_state_t *state,
                                 wisp_error_t *err)
{
    return wisp_ckpt_load(dir, expect_fingerprint, state, self->model, self->opt, err);
}

int wisp_trainer_save_outputs(wisp_trainer_t *self, const char *outdir, wisp_error_t *err)
{
    char path[4096];
    int rc;
    if (wisp_model_adapter(self->model)) {
        if (wisp_path_join(path, sizeof path, outdir, "adapter") != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
        if ((rc = wisp_model_save_adapter(self->model, path, err)))
            return rc;
    }
    if (wisp_path_join(path, sizeof path, outdir, "head") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
    return wisp_model_save_head(self->model, path, err);
}

int wisp_trainer_dump_grads(wisp_trainer_t *self, const char *path, wisp_error_t *err)
{
    wisp_st_writer_t *w = wisp_st_writer_new();
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
    const float *g = wisp_model_grads(self->model);
    int rc = WISP_OK;
    for (int i = 0; i < self->n_seg && rc == WISP_OK; i++) {
        const wisp_param_info_t *p = wisp_model_param_tensor(self->model, i);
        rc = wisp_st_writer_add_f32(w, p->name, WISP_DT_F32, p->ndim, p->shape, g + p->offset);
    }
    if (rc != WISP_OK)
        wisp_error_set(err, rc, "%s: cannot add gradient tensors", path);
    else
        rc = wisp_st_writer_save(w, path, err);
    wisp_st_writer_destroy(&w);
    return rc;
}

/* ---- metrics ------------------------------------------------------------ */

/* JSON has no NaN/Inf: write null for them. */
static void s_num(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.9g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

void wisp_trainer_log_step(FILE *f, const wisp_trainer_stats_t *s, long epoch)
{
    if (!f)
        return;
    fprintf(f, "{\"type\":\"step\",\"step\":%ld,\"epoch\":%ld", s->step, epoch);
    s_num(f, "loss", s->loss);
    s_num(f, "lr", s->lr);
    s_num(f, "acc", s->acc);
    s_num(f, "clips_per_s", s->seconds > 0 ? (double)s->items / s->seconds : 0.0);
    s_num(f, "grad_norm", s->grad_norm);
    fprintf(f, ",\"clips\":%ld,\"failed\":%ld}\n", s->items, s->failed);
    fflush(f);
}

void wisp_trainer_log_eval(FILE *f, long step, long epoch, double val_loss, double val_acc)
{
    if (!f)
        return;
    fprintf(f, "{\"type\":\"eval\",\"step\":%ld,\"epoch\":%ld", step, epoch);
    s_num(f, "val_loss", val_loss);
    s_num(f, "val_acc", val_acc);
    fprintf(f, "}\n");
    fflush(f);
}

int wisp_trainer_metrics_open(const char *path, long keep_through_step, FILE **out,
                              wisp_error_t *err)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0, kept = 0;
    if (keep_through_step > 0) {
        wisp_error_t e = {0};
        int rc = wisp_read_file(path, (size_t)1 << 30, &text, &len, &e);
        if (rc && rc != WISP_ERR_NOTFOUND)
            return wisp_error_set(err, rc, "%s", e.msg);
    }
    /* Filter in place: kept lines are copied towards the front of text. */
    char *save = NULL;
    for (char *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "step");
        if (cJSON_IsNumber(st) && st->valuedouble <= (double)keep_through_step) {
            size_t n = strlen(line);
            memmove(text + kept, line, n);
            text[kept + n] = '\n';
            kept += n + 1;
        }
        cJSON_Delete(j);
    }
    int rc = wisp_write_file_atomic(path, text ? text : "", kept, err);
    free(text);
    if (rc)
        return rc;
    *out = fopen(path, "a");
    if (!*out)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", path, strerror(errno));
    return WISP_OK;
}

/* ---- the local loop ----------------------------------------------------- */

static void s_progress(long step, long total, const wisp_trainer_stats_t *s, double rate,
                       double eta)
{
    int m = (int)(eta / 60.0), sec = (int)eta % 60;
    fprintf(stderr, "\rstep %ld/%ld  loss %.4f  acc %.3f  %.1f clips/s  ETA %d:%02d   ", step,
            total, s->loss, s->acc, rate, m, sec);
    fflush(stderr);
}

static int s_evaluate(wisp_trainer_t *self, const wisp_trainer_item_t *val, int nv, long step,
                      long epoch, FILE *metrics, int progress, wisp_error_t *err)
{
    double loss = 0.0, wsum = 0.0;
    long correct = 0, count = 0, failed = 0;
    int rc = wisp_trainer_eval(self, val, nv, &loss, &wsum, &correct, &count, &failed, err);
    if (rc)
        return rc;
    double vl = wsum > 0 ? loss / wsum : NAN, va = count > 0 ? (double)correct / count : NAN;
    if (progress)
        fprintf(stderr, "\n");
    WISP_LOGI("epoch %ld step %ld: val_acc=%.4f val_loss=%.4f (%ld clips, %ld failed)", epoch, step,
              va, vl, count, failed);
    wisp_trainer_log_eval(metrics, step, epoch, vl, va);
    return WISP_OK;
}

int wisp_trainer_run(wisp_trainer_t *self, const wisp_trainer_item_t *train, int n,
                     const wisp_trainer_item_t *val, int nv, const wisp_trainer_run_opts_t *ro,
                     wisp_error_t *err)
{
    int rc = WISP_OK;
    FILE *metrics = NULL;
    int *perm = NULL;
    wisp_trainer_item_t *batch = NULL;
    char root[4096], path[4096], extra[1024];
    const char *outdir = ro->outdir ? ro->outdir : ".";
    if (n <= 0 || ro->batch < 1)
        return wisp_error_set(err, WISP_ERR_ARG, "train: %s",
                              n <= 0 ? "no training items" : "batch size < 1");
    long per_epoch = (n + ro->batch - 1) / ro->batch;
    long total = ro->steps >= 0 ? ro->steps : ro->epochs * per_epoch;
    if (self->opts.total_steps <= 0)
        self->opts.total_steps = total;
    if ((rc = wisp_mkdir_p(outdir, err)))
        return rc;
    if (wisp_path_join(root, sizeof root, outdir, "checkpoints") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);

    wisp_ckpt_state_t st;
    memset(&st, 0, sizeof st);
    st.data_seed = self->opts.seed;
    snprintf(extra, sizeof extra, "batch=%d n=%d data=%s", ro->batch, n,
             ro->fingerprint_extra ? ro->fingerprint_extra : "");
    wisp_trainer_fingerprint(self, extra, st.fingerprint);

    int resumed = 0;
    if (ro->resume) {
        char dir[4096];
        wisp_error_t e = {0};
        if (wisp_ckpt_latest(root, dir, sizeof dir, &e) == WISP_OK) {
            char fp[65];
            memcpy(fp, st.fingerprint, sizeof fp);
            if ((rc = wisp_trainer_load_checkpoint(self, dir, fp, &st, err)))
                return rc;
            resumed = 1;
            WISP_LOGI("resuming from %s: step %ld, epoch %ld, item %ld", dir, st.step, st.epoch,
                      st.pos);
        } else if (e.code != WISP_ERR_NOTFOUND) {
            return wisp_error_set(err, e.code, "%s", e.msg);
        } else {
            WISP_LOGI("no checkpoint under %s: starting fresh", root);
        }
    }
    if (wisp_path_join(path, sizeof path, outdir, "metrics.jsonl") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
    if ((rc = wisp_trainer_metrics_open(path, resumed ? st.step : 0, &metrics, err)))
        return rc;
    perm = malloc((size_t)n * sizeof(int));
    batch = malloc((size_t)ro->batch * sizeof *batch);
    if (!perm || !batch) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        goto done;
    }
    wisp_trainer_epoch_order(st.data_seed, st.epoch, n, perm);

    if (ro->dump_grads && st.step == 0) {
        int k = n < ro->batch ? n : ro->batch;
        for (int i = 0; i < k; i++)
            batch[i] = train[perm[i]];
        wisp_trainer_stats_t s;
        if ((rc = wisp_trainer_compute_grads(self, batch, k, &s, err)) ||
            (rc = wisp_trainer_dump_grads(self, ro->dump_grads, err)))
            goto done;
        WISP_LOGI("wrote the gradients of the first step (%ld clips, loss %.6f) to %s", s.items,
                  s.loss, ro->dump_grads);
        if (total == 0)
            goto done;
    }

    double t_start = wisp_now();
    long steps_done_here = 0;
    while (st.step < total) {
        if (st.pos >= n) { /* epoch boundary */
            if (nv > 0 &&
                (rc = s_evaluate(self, val, nv, st.step, st.epoch, metrics, ro->progress, err)))
                goto done;
            st.epoch++;
            st.pos = 0;
            wisp_trainer_epoch_order(st.data_seed, st.epoch, n, perm);
        }
        int k = (int)(n - st.pos < ro->batch ? n - st.pos : ro->batch);
        for (int i = 0; i < k; i++)
            batch[i] = train[perm[st.pos + i]];
        wisp_trainer_stats_t s;
        rc = wisp_trainer_step(self, batch, k, &s, err);
        if (rc == WISP_ERR_ARG && err && strstr(err->msg, "no usable")) {
            WISP_LOGW("step %ld: %s; batch skipped", st.step, err->msg);
            wisp_error_clear(err);
            rc = WISP_OK;
            st.pos += k;
            continue;
        }
        if (rc)
            goto done;
        st.pos += k;
        st.step = s.step;
        steps_done_here++;
        wisp_trainer_log_step(metrics, &s, st.epoch);
        if (ro->progress) {
            double el = wisp_now() - t_start;
            double rate = el > 0 ? (double)steps_done_here * ro->batch / el : 0.0;
            double eta = steps_done_here ? el / steps_done_here * (double)(total - st.step) : 0;
            s_progress(st.step, total, &s, rate, eta);
        } else {
            /* Not a terminal (batch job logs): about 20 lines over the run. */
            long every = total / 20 > 0 ? total / 20 : 1;
            if (st.step % every == 0 || st.step == total)
                WISP_LOGI("step %ld/%ld epoch %ld loss=%.5f acc=%.3f lr=%.3g grad_norm=%.4g "
                          "clips_per_s=%.1f",
                          st.step, total, st.epoch, s.loss, s.acc, s.lr, s.grad_norm,
                          s.seconds > 0 ? (double)s.items / s.seconds : 0.0);
        }
        int interrupted = ro->stop && *ro->stop;
        int stop = (ro->stop_after >= 0 && st.step >= ro->stop_after) || interrupted;
        if ((ro->checkpoint_every > 0 && st.step % ro->checkpoint_every == 0) || stop ||
            st.step == total) {
            if ((rc = wisp_trainer_save_checkpoint(self, root, &st, ro->keep_checkpoints, err)))
                goto done;
        }
        if (stop) {
            if (ro->progress)
                fprintf(stderr, "\n");
            WISP_LOGI("stopped after step %ld (checkpoint written; continue with --resume)",
                      st.step);
            if (interrupted)
                rc = wisp_error_set(err, WISP_ERR_INTERRUPTED, "interrupted after step %ld",
                                    st.step);
            goto done;
        }
    }
    if (ro->progress && steps_done_here)
        fprintf(stderr, "\n");
    /* Final evaluation (epoch-end evaluations run before the next epoch's first step). */
    if (nv > 0 && (rc = s_evaluate(self, val, nv, st.step, st.epoch, metrics, 0, err)))
        goto done;
    if ((rc = wisp_trainer_save_outputs(self, outdir, err)))
        goto done;
    WISP_LOGI("training done: %ld steps; adapter and head written under %s", st.step, outdir);
done:
    if (metrics)
        fclose(metrics);
    free(perm);
    free(batch);
    return rc;
}
