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
#include "audio/windows.h"
#include "formats/config.h"
#include "nn/adapter_config.h"
#include "base/log.h"
#include "audio/mel.h" /* WISP_N_FRAMES */
#include "formats/st.h"
#include "base/util.h"
#include "train/metrics.h"
#include "train/schedule.h"

/* One decoded clip of a step: its features and label (the batching's clip). */
typedef wisp_features_clip_t s_clip_t;

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
    wisp_trainer_tick_fn tick;
    void *tick_ctx;
    wisp_trainer_failure_t *fails; /* (cap_fails) clips that failed, see trainer.h */
    int n_fails, cap_fails;
    long epoch; /* of the next step's items: draws their windows (opts.window > 0) */
};

/* The "epoch" of evaluation windows: one fixed seeded window per validation item, the
 * same in every evaluation (so val_acc of two evaluations compares the same audio). */
#define S_EVAL_EPOCH UINT64_MAX

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

/* A training window must be a classify window (windows.h) whose clip fits the frames
 * the model's positions allow (a window of a long file always has its full length). */
static int s_check_window(const wisp_trainer_t *self, wisp_error_t *err)
{
    wisp_windows_opts_t w = {.seconds = self->opts.window};
    if (self->opts.window == 0)
        return WISP_OK;
    wisp_error_t e = {0};
    if (wisp_windows_check(&w, &e) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "train.window (--window): %s", e.msg);
    int frames = wisp_mel_num_frames(wisp_windows_samples(w.seconds), self->opts.truncate);
    if (frames > self->max_frames)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "train.window (--window) %g s needs %d frames; the model allows %d "
                              "(%g s)",
                              w.seconds, frames, self->max_frames,
                              (double)self->max_frames * WISP_HOP / WISP_SAMPLE_RATE);
    return WISP_OK;
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
    /* Frames the model's positions allow (features.h has the rule). */
    int limit = 0;
    if (wisp_features_frame_limit(opts->model_dir, opts->truncate, &limit, err) != WISP_OK)
        goto fail;
    self->max_frames = opts->max_frames > 0 && opts->max_frames < limit ? opts->max_frames : limit;
    if (self->max_frames % 2)
        self->max_frames--;
    if (!opts->truncate && self->max_frames < WISP_N_FRAMES) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                       "max_frames %d is too small for padded 30 s input; use truncated mode "
                       "(--truncate)",
                       self->max_frames);
        goto fail;
    }
    if (s_check_window(self, err) != WISP_OK)
        goto fail;
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
    /* The arena is sized for the longest batch (micro_batch x max_frames) but its pages
     * become resident only as clips use them: a bound, not the memory the run takes. */
    WISP_LOGI("trainer: %zu trainable parameters in %d tensors, %d classes; at most %.1f MB "
              "of activations and gradients (%d clips x %d frames; shorter clips use less)",
              wisp_model_num_params(self->model), self->n_seg, self->num_labels,
              (double)wisp_model_planned_bytes(self->model) / 1e6, self->micro_batch,
              self->max_frames);
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
    free(self->fails);
    free(self);
    *pself = NULL;
}

void wisp_trainer_set_reduce(wisp_trainer_t *self, wisp_trainer_reduce_fn fn, void *ctx)
{
    self->reduce = fn;
    self->reduce_ctx = ctx;
}

void wisp_trainer_set_epoch(wisp_trainer_t *self, long epoch)
{
    self->epoch = epoch;
}

void wisp_trainer_set_tick(wisp_trainer_t *self, wisp_trainer_tick_fn fn, void *ctx)
{
    self->tick = fn;
    self->tick_ctx = ctx;
}

static void s_tick(wisp_trainer_t *self, int done)
{
    if (self->tick)
        (void)self->tick(self->tick_ctx, (uint32_t)done);
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

/* Records that item could not be used: logged once here, kept for the caller
 * (wisp_trainer_failures) with the path prefix of the message dropped. */
static void s_fail(wisp_trainer_t *self, const wisp_trainer_item_t *item, const char *why)
{
    WISP_LOGW("skipping %s: %s", item->path, why);
    if (self->n_fails == self->cap_fails) {
        int cap = self->cap_fails ? 2 * self->cap_fails : 16;
        wisp_trainer_failure_t *f = realloc(self->fails, (size_t)cap * sizeof *f);
        if (!f)
            return; /* the count in the stats stays right; only the record is lost */
        self->fails = f;
        self->cap_fails = cap;
    }
    wisp_trainer_failure_t *f = &self->fails[self->n_fails++];
    f->id = item->id;
    snprintf(f->reason, sizeof f->reason, "%s", why);
}

/* The reason of a load error without the "path: " its message starts with. */
static const char *s_reason(const wisp_error_t *e, const char *path)
{
    size_t n = strlen(path);
    if (strncmp(e->msg, path, n) == 0 && e->msg[n] == ':' && e->msg[n + 1] == ' ')
        return e->msg + n + 2;
    return e->msg[0] ? e->msg : "cannot be read";
}

/* Decodes item into clip slot k: its window of `epoch` when training on windows, else
 * its first 30 s. 0, or a negative code with the failure recorded. */
static int s_decode(wisp_trainer_t *self, const wisp_trainer_item_t *item, uint64_t epoch, int k,
                    s_clip_t *clip)
{
    wisp_error_t e = {0};
    wisp_features_info_t info;
    float *dst = self->clip_mel + (size_t)k * self->n_mels * self->max_frames;
    int rc = wisp_windows_train_clip(self->feat, item->path, self->opts.window, self->opts.seed,
                                     epoch, (uint64_t)item->id, dst, &info, &e);
    if (rc != WISP_OK) {
        s_fail(self, item, s_reason(&e, item->path));
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

/* The one batching of equal-length clips (features.h; training and evaluation, as the
 * classifier): the run of clips ord[i], ... (ord NULL: i, ...) with the frame count of
 * the first, at most micro_batch, into batch_mel (B, n_mels, frames) and batch_labels
 * (B). Returns B >= 1; *frames their frame count. The loss is a sum over clips, so
 * grouping never changes what is computed, only how many clips share a model call. */
static int s_batch(wisp_trainer_t *self, const s_clip_t *clips, const int *ord, int n, int i,
                   int *frames)
{
    return wisp_features_batch(clips, ord, n, i, self->micro_batch, self->n_mels, self->batch_mel,
                               self->batch_labels, frames);
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
        return wisp_error_set(err, WISP_ERR_NODATA,
                              "trainer: no usable labeled clip in the batch (%ld failed)", failed);
    }
    float grad_scale = (float)(1.0 / wsum);

    /* Stable order by frame count: clips of one length share a forward_backward call. */
    int *ord = self->order;
    wisp_features_order(clips, nc, ord);
    double loss_sum = 0.0, weight_sum = 0.0, correct = 0.0;
    for (int i = 0; i < nc;) {
        int frames, B = s_batch(self, clips, ord, nc, i, &frames);
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
        s_tick(self, i);
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
        return wisp_error_set(err, WISP_ERR_NODATA,
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
    self->n_fails = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].label < 0)
            continue; /* unlabeled: nothing to learn from */
        if (items[i].label >= self->num_labels) {
            /* Counted as failed, not returned: the reductions below are collective. */
            char why[96];
            snprintf(why, sizeof why, "label %d out of range (%d classes)", items[i].label,
                     self->num_labels);
            s_fail(self, &items[i], why);
            failed++;
            continue;
        }
        if (s_decode(self, &items[i], (uint64_t)self->epoch, nc, &self->clips[nc]) == WISP_OK)
            nc++;
        else
            failed++;
        s_tick(self, i + 1);
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
    int i = 0;
    while (i < n) {
        /* Decode up to micro_batch labeled items, then forward them in equal-length runs. */
        int nc = 0;
        while (i < n && nc < self->micro_batch) {
            const wisp_trainer_item_t *it = &items[i++];
            if (it->label < 0 || it->label >= self->num_labels)
                continue;
            if (s_decode(self, it, S_EVAL_EPOCH, nc, &self->clips[nc]) == WISP_OK)
                nc++;
            else
                (*failed)++;
            s_tick(self, i);
        }
        for (int a = 0; a < nc;) {
            int frames, B = s_batch(self, self->clips, NULL, nc, a, &frames);
            s_tick(self, i);
            rc = wisp_model_forward(self->model, self->batch_mel, B, frames, self->logits, NULL);
            if (rc != WISP_OK)
                return wisp_error_set(err, rc, "trainer: forward failed (%s)", wisp_strerror(rc));
            for (int b = 0; b < B; b++) {
                const float *z = self->logits + (size_t)b * self->num_labels;
                int y = self->batch_labels[b];
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
    if (o->window > 0) /* only then: the runs from before windows keep their identity */
        s_appendf(&s, &len, &cap, "win=%.17g;", o->window);
    s_appendf(&s, &len, &cap, ";extra %s", extra ? extra : "");
    const char *desc = s ? s : "out of memory";
    wisp_sha256_hex(desc, strlen(desc), out);
    free(s);
}

void wisp_trainer_run_fingerprint(const wisp_trainer_t *self, int batch,
                                  const wisp_trainer_item_t *items, int n, char out[65])
{
    char data_id[65], extra[256];
    wisp_trainer_data_id(items, n, data_id);
    snprintf(extra, sizeof extra, "batch=%d n=%d data=%s", batch, n, data_id);
    wisp_trainer_fingerprint(self, extra, out);
}

/* ---- checkpoints, outputs ----------------------------------------------- */

int wisp_trainer_save_checkpoint(wisp_trainer_t *self, const char *root,
                                 const wisp_ckpt_state_t *state, int keep,
                                 const wisp_ckpt_file_t *files, int n_files, wisp_error_t *err)
{
    /* The caller's files, then features.json beside the checkpoint's adapter and head
     * copies: a head classified from a checkpoint is checked like the final one. */
    wisp_feature_settings_t fs = {.truncate = self->opts.truncate,
                                  .window_seconds = self->opts.window};
    char *text = wisp_feature_settings_text(&fs);
    wisp_ckpt_file_t *all = calloc((size_t)(n_files > 0 ? n_files : 0) + 2, sizeof *all);
    int rc, k = 0;
    if (!text || !all) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", root);
    } else {
        for (int i = 0; i < n_files; i++)
            all[k++] = files[i];
        if (wisp_model_adapter(self->model))
            all[k++] = (wisp_ckpt_file_t){"adapter/features.json", text, strlen(text)};
        all[k++] = (wisp_ckpt_file_t){"head/features.json", text, strlen(text)};
        rc = wisp_ckpt_save(root, state, self->model, self->opt, keep, all, k, NULL, 0, err);
    }
    free(all);
    free(text);
    return rc;
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
    /* features.json beside both: classification refuses the other features mode. */
    wisp_feature_settings_t fs = {.truncate = self->opts.truncate,
                                  .window_seconds = self->opts.window};
    if (wisp_model_adapter(self->model)) {
        if (wisp_path_join(path, sizeof path, outdir, "adapter") != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
        if ((rc = wisp_model_save_adapter(self->model, path, err)) ||
            (rc = wisp_feature_settings_save(path, &fs, err)))
            return rc;
    }
    if (wisp_path_join(path, sizeof path, outdir, "head") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
    if ((rc = wisp_model_save_head(self->model, path, err)))
        return rc;
    return wisp_feature_settings_save(path, &fs, err);
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

/* ---- best model, early stopping ---------------------------------------- */

int wisp_trainer_best_open(wisp_trainer_best_t *b, const char *outdir, int keep, long patience,
                           const char *ckpt_dir, wisp_error_t *err)
{
    memset(b, 0, sizeof *b);
    b->keep = keep;
    b->patience = patience;
    b->acc = -1.0;
    b->step = -1;
    if (wisp_path_join(b->dir, sizeof b->dir, outdir, "best") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
    if (!ckpt_dir)
        return WISP_OK;
    char *text = NULL;
    size_t len = 0;
    wisp_error_t e = {0};
    int rc = wisp_ckpt_read_file(ckpt_dir, WISP_TRAINER_BEST_CKPT_FILE, 4096, &text, &len, &e);
    if (rc == WISP_ERR_NOTFOUND)
        return WISP_OK; /* a checkpoint of a run without evaluations */
    if (rc)
        return wisp_error_set(err, rc, "%s", e.msg);
    cJSON *j = cJSON_Parse(text);
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(j, "val_acc");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "step");
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(j, "since");
    if (!cJSON_IsNumber(acc) || !cJSON_IsNumber(st) || !cJSON_IsNumber(since) ||
        !(acc->valuedouble >= -1.0 && acc->valuedouble <= 1.0) ||
        !(st->valuedouble >= -1.0 && st->valuedouble < 1e15) ||
        !(since->valuedouble >= 0.0 && since->valuedouble < 1e15))
        rc = wisp_error_set(err, WISP_ERR_FORMAT, "%s/%s: not a best-model state", ckpt_dir,
                            WISP_TRAINER_BEST_CKPT_FILE);
    else {
        b->acc = acc->valuedouble;
        b->step = (long)st->valuedouble;
        b->since = (long)since->valuedouble;
    }
    cJSON_Delete(j);
    free(text);
    return rc;
}

int wisp_trainer_best_update(wisp_trainer_best_t *b, wisp_trainer_t *tr, long step, double val_acc,
                             int write, int *stop, wisp_error_t *err)
{
    if (val_acc > b->acc) { /* NaN (nothing evaluated) never is */
        b->acc = val_acc;
        b->step = step;
        b->since = 0;
        if (b->keep && write) {
            char text[128], path[4200];
            int rc = wisp_trainer_save_outputs(tr, b->dir, err);
            if (rc)
                return rc;
            int n =
                snprintf(text, sizeof text, "{\"step\": %ld, \"val_acc\": %.9g}\n", step, val_acc);
            snprintf(path, sizeof path, "%s/best.json", b->dir);
            if ((rc = wisp_write_file_atomic(path, text, (size_t)n, err)))
                return rc;
            WISP_LOGI("new best val_acc %.4f at step %ld: written to %s", val_acc, step, b->dir);
        }
    } else {
        b->since++;
    }
    if (b->patience > 0 && b->since >= b->patience) {
        if (b->since == b->patience && write)
            WISP_LOGI("early stopping: %ld evaluations without a better val_acc than %.4f (step "
                      "%ld)",
                      b->since, b->acc, b->step);
        *stop = 1;
    }
    return WISP_OK;
}

wisp_ckpt_file_t wisp_trainer_best_ckpt_file(wisp_trainer_best_t *b)
{
    int n = snprintf(b->ckpt_text, sizeof b->ckpt_text,
                     "{\"val_acc\": %.17g, \"step\": %ld, \"since\": %ld}\n", b->acc, b->step,
                     b->since);
    wisp_ckpt_file_t f = {WISP_TRAINER_BEST_CKPT_FILE, b->ckpt_text, (size_t)n};
    return f;
}

/* ---- items, data identity, failures ------------------------------------ */

wisp_trainer_item_t *wisp_trainer_items(const wisp_manifest_t *m, int *n)
{
    wisp_trainer_item_t *items = calloc(m->n_items + 1, sizeof *items);
    *n = 0;
    if (!items)
        return NULL;
    for (size_t i = 0; i < m->n_items; i++)
        if (m->items[i].label >= 0) {
            items[*n].path = m->items[i].path;
            items[*n].label = m->items[i].label;
            items[*n].id = *n;
            (*n)++;
        }
    return items;
}

void wisp_trainer_data_id(const wisp_trainer_item_t *items, int n, char out[65])
{
    size_t len = 0, cap = 1024;
    char *s = malloc(cap);
    if (s)
        s[0] = '\0';
    for (int i = 0; i < n; i++)
        s_appendf(&s, &len, &cap, "%s|%d\n", items[i].path, items[i].label);
    const char *desc = s ? s : "out of memory";
    wisp_sha256_hex(desc, strlen(desc), out);
    free(s);
}

const wisp_trainer_failure_t *wisp_trainer_failures(const wisp_trainer_t *self, int *n)
{
    *n = self->n_fails;
    return self->fails;
}

void wisp_trainer_clear_failures(wisp_trainer_t *self)
{
    self->n_fails = 0;
}

int wisp_trainer_failset_init(wisp_trainer_failset_t *s, const wisp_trainer_item_t *items, int n)
{
    memset(s, 0, sizeof *s);
    s->items = items;
    s->n_items = n > 0 ? n : 0;
    s->seen = calloc((size_t)s->n_items + 1, 1);
    return s->seen ? WISP_OK : WISP_ERR_NOMEM;
}

void wisp_trainer_failset_free(wisp_trainer_failset_t *s)
{
    free(s->seen);
    memset(s, 0, sizeof *s);
}

void wisp_trainer_failset_add(wisp_trainer_failset_t *s, int id, const char *reason)
{
    if (!s->seen || id < 0 || id >= s->n_items || s->seen[id])
        return;
    s->seen[id] = 1;
    s->count++;
    if (s->n_kept < WISP_TRAINER_FAIL_KEEP) {
        wisp_trainer_failure_t *f = &s->kept[s->n_kept++];
        f->id = id;
        snprintf(f->reason, sizeof f->reason, "%s", reason ? reason : "");
    }
}

void wisp_trainer_failset_describe(const wisp_trainer_failset_t *s, int max, char *buf, size_t n)
{
    size_t len = 0;
    if (n)
        buf[0] = '\0';
    for (int i = 0; i < s->n_kept && i < max && len + 1 < n; i++) {
        int k = snprintf(buf + len, n - len, "%s%s: %s", i ? "; " : "",
                         s->items[s->kept[i].id].path, s->kept[i].reason);
        if (k < 0)
            break;
        len += (size_t)k < n - len ? (size_t)k : n - len - 1;
    }
}

void wisp_trainer_failset_json(const wisp_trainer_failset_t *s, const char *prefix, cJSON *obj)
{
    char key[64];
    snprintf(key, sizeof key, "%sfailed_clips", prefix);
    cJSON_AddNumberToObject(obj, key, (double)s->count);
    snprintf(key, sizeof key, "%sfailed_files", prefix);
    cJSON *a = cJSON_AddArrayToObject(obj, key);
    for (int i = 0; a && i < s->n_kept; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddStringToObject(o, "path", s->items[s->kept[i].id].path);
        cJSON_AddStringToObject(o, "reason", s->kept[i].reason);
        cJSON_AddItemToArray(a, o);
    }
}

int wisp_trainer_nodata_error(const wisp_trainer_failset_t *fs, const char *manifest, long epoch,
                              wisp_error_t *err)
{
    char first[320];
    wisp_trainer_failset_describe(fs, 3, first, sizeof first);
    return wisp_error_set(err, WISP_ERR_NODATA,
                          "%s: no usable clip in a whole epoch (%ld): %ld of %d clips failed "
                          "(first: %s)",
                          manifest ? manifest : "training data", epoch, fs->count, fs->n_items,
                          first[0] ? first : "none recorded");
}

/* ---- safe reruns ------------------------------------------------------- */

static const char *const s_run_entries[] = {"metrics.jsonl", "checkpoints", "adapter",
                                            "head",          "best",        NULL};

int wisp_trainer_outdir_used(const char *outdir)
{
    char path[4096];
    for (int i = 0; s_run_entries[i]; i++)
        if (wisp_path_join(path, sizeof path, outdir, s_run_entries[i]) == WISP_OK &&
            access(path, F_OK) == 0)
            return 1;
    return 0;
}

long wisp_trainer_latest_step(const char *outdir)
{
    char root[4096], dir[4200], *text = NULL;
    size_t len = 0;
    wisp_ckpt_state_t st;
    long opt_steps = 0, np = 0, step = -1;
    wisp_error_t e = {0};
    if (wisp_path_join(root, sizeof root, outdir, "checkpoints") == WISP_OK &&
        wisp_ckpt_latest(root, dir, sizeof dir, &e) == WISP_OK &&
        wisp_ckpt_read_file(dir, "state.json", 1 << 20, &text, &len, &e) == WISP_OK &&
        wisp_ckpt_state_parse(text, len, dir, &st, &opt_steps, &np, &e) == WISP_OK)
        step = st.step;
    free(text);
    return step;
}

int wisp_trainer_start_over(const char *outdir, wisp_error_t *err)
{
    char prev[4096], from[4096], to[4200];
    if (wisp_path_join(prev, sizeof prev, outdir, "previous") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
    if (!wisp_trainer_outdir_used(outdir))
        return WISP_OK;
    if (wisp_ckpt_rmtree(prev) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot remove: %s", prev, strerror(errno));
    int rc = wisp_mkdir_p(prev, err);
    for (int i = 0; rc == WISP_OK && s_run_entries[i]; i++) {
        wisp_path_join(from, sizeof from, outdir, s_run_entries[i]);
        snprintf(to, sizeof to, "%s/%s", prev, s_run_entries[i]);
        if (access(from, F_OK) == 0 && rename(from, to) != 0)
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: cannot move to %s: %s", from, to,
                                strerror(errno));
    }
    if (rc == WISP_OK)
        WISP_LOGI("starting over: the earlier run in %s moved to %s (removed once this run has "
                  "its first checkpoint)",
                  outdir, prev);
    return rc;
}

void wisp_trainer_drop_previous(const char *outdir)
{
    char prev[4096];
    if (wisp_path_join(prev, sizeof prev, outdir, "previous") == WISP_OK &&
        access(prev, F_OK) == 0 && wisp_ckpt_rmtree(prev) != 0)
        WISP_LOGW("%s: cannot remove: %s", prev, strerror(errno));
}

/* ---- the local loop ----------------------------------------------------- */

/* The live line of a terminal, drawn by the progress printer every command shares
 * (base/log.h): log lines written meanwhile erase it and draw it again below them. */
static void s_progress(long step, long total, const wisp_trainer_stats_t *s, double rate,
                       double eta, long failed, double val_acc)
{
    int m = (int)(eta / 60.0), sec = (int)eta % 60;
    char va[32] = "";
    if (!isnan(val_acc))
        snprintf(va, sizeof va, "  val_acc %.3f", val_acc);
    wisp_log_progress("step %ld/%ld  loss %.4f  acc %.3f%s  failed %ld  %.1f clips/s  ETA %d:%02d",
                      step, total, s->loss, s->acc, va, failed, rate, m, sec);
}

/* The state of one wisp_trainer_run. */
typedef struct {
    wisp_trainer_t *tr;
    const wisp_trainer_run_opts_t *ro;
    const wisp_trainer_item_t *train, *val;
    int n, nv;
    wisp_sched_t sched;
    wisp_ckpt_state_t st;
    wisp_trainer_failset_t fails, vfails;
    wisp_trainer_item_t *batch;
    wisp_train_metrics_t metrics;
    char root[4096];
    double t_start, val_acc;
    long steps_here, skipped_row;
    int dropped_previous;
    wisp_trainer_best_t best;
} s_run_t;

static int s_run_eval(s_run_t *r, long step, long epoch, int *stop_early, wisp_error_t *err)
{
    double loss = 0.0, wsum = 0.0;
    long correct = 0, count = 0, failed = 0;
    wisp_trainer_clear_failures(r->tr);
    int rc = wisp_trainer_eval(r->tr, r->val, r->nv, &loss, &wsum, &correct, &count, &failed, err);
    int nf;
    const wisp_trainer_failure_t *f = wisp_trainer_failures(r->tr, &nf);
    for (int i = 0; i < nf; i++)
        wisp_trainer_failset_add(&r->vfails, f[i].id, f[i].reason);
    if (rc)
        return rc;
    double vl = wsum > 0 ? loss / wsum : NAN, va = count > 0 ? (double)correct / count : NAN;
    r->val_acc = va;
    WISP_LOGI("epoch %ld step %ld: val_acc=%.4f val_loss=%.4f (%ld clips, %ld failed)", epoch, step,
              va, vl, count, failed);
    wisp_train_metrics_eval(&r->metrics, step, epoch, vl, va);
    return wisp_trainer_best_update(&r->best, r->tr, step, va, 1, stop_early, err);
}

/* One scheduled training step: a batch with no usable clip is skipped (it still
 * counts: the schedule moves on), and a whole epoch's worth of skips in a row is
 * the end (no item of the data can be used). */
static int s_run_train_step(s_run_t *r, const wisp_sched_step_t *e, wisp_error_t *err)
{
    for (int i = 0; i < e->k; i++)
        r->batch[i] = r->train[e->ids[i]];
    wisp_trainer_stats_t s;
    wisp_trainer_set_epoch(r->tr, e->epoch);
    int rc = wisp_trainer_step(r->tr, r->batch, e->k, &s, err);
    int nf;
    const wisp_trainer_failure_t *f = wisp_trainer_failures(r->tr, &nf);
    for (int i = 0; i < nf; i++)
        wisp_trainer_failset_add(&r->fails, f[i].id, f[i].reason);
    if (rc == WISP_ERR_NODATA) {
        wisp_error_clear(err);
        WISP_LOGW("step %ld: no usable clip in its %d; skipped", e->step, e->k);
        if (++r->skipped_row >= r->sched.per_epoch)
            return wisp_trainer_nodata_error(&r->fails, r->ro->train_name, e->epoch, err);
        memset(&s, 0, sizeof s);
        s.failed = e->k;
    } else if (rc) {
        return rc;
    } else {
        r->skipped_row = 0;
        r->steps_here++;
        s.step = e->step;
        wisp_train_metrics_step(&r->metrics, &s, e->epoch);
    }
    r->st.step = e->step;
    r->st.epoch = e->epoch;
    r->st.pos = e->pos_after;
    long total = r->sched.total;
    if (r->ro->progress) {
        double el = wisp_now() - r->t_start;
        double rate = el > 0 ? (double)r->steps_here * r->ro->batch / el : 0.0;
        double eta = r->steps_here ? el / r->steps_here * (double)(total - e->step) : 0;
        s_progress(e->step, total, &s, rate, eta, r->fails.count, r->val_acc);
    } else {
        /* Not a terminal (batch job logs): about 20 lines over the run. */
        long every = total / 20 > 0 ? total / 20 : 1;
        if (e->step % every == 0 || e->step == total)
            WISP_LOGI("step %ld/%ld epoch %ld loss=%.5f acc=%.3f lr=%.3g grad_norm=%.4g "
                      "clips_per_s=%.1f failed=%ld",
                      e->step, total, e->epoch, s.loss, s.acc, s.lr, s.grad_norm,
                      s.seconds > 0 ? (double)s.items / s.seconds : 0.0, r->fails.count);
    }
    return WISP_OK;
}

/* Resume (when asked and a checkpoint exists) and the metrics log. */
static int s_run_open(s_run_t *r, const char *outdir, wisp_error_t *err)
{
    const wisp_trainer_run_opts_t *ro = r->ro;
    char path[4096];
    int rc;
    if ((rc = wisp_mkdir_p(outdir, err)))
        return rc;
    if (wisp_path_join(r->root, sizeof r->root, outdir, "checkpoints") != WISP_OK ||
        wisp_path_join(path, sizeof path, outdir, "metrics.jsonl") != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: path too long", outdir);
    r->st.data_seed = r->tr->opts.seed;
    wisp_trainer_run_fingerprint(r->tr, ro->batch, r->train, r->n, r->st.fingerprint);
    char dir[4096] = "";
    if (ro->resume) {
        wisp_error_t e = {0};
        if (wisp_ckpt_latest(r->root, dir, sizeof dir, &e) == WISP_OK) {
            char fp[65];
            memcpy(fp, r->st.fingerprint, sizeof fp);
            if ((rc = wisp_trainer_load_checkpoint(r->tr, dir, fp, &r->st, err)))
                return rc;
            if (r->st.step > r->sched.total || r->st.pos > r->n)
                return wisp_error_set(err, WISP_ERR_STATE,
                                      "%s: step %ld / item %ld is past this run (%ld steps, %d "
                                      "items)",
                                      dir, r->st.step, r->st.pos, r->sched.total, r->n);
            wisp_sched_seek(&r->sched, r->st.step, r->st.epoch, r->st.pos);
            WISP_LOGI("resuming from %s: step %ld, epoch %ld, item %ld", dir, r->st.step,
                      r->st.epoch, r->st.pos);
        } else if (e.code != WISP_ERR_NOTFOUND) {
            return wisp_error_set(err, e.code, "%s", e.msg);
        } else {
            dir[0] = '\0';
            WISP_LOGI("no checkpoint under %s: starting fresh", r->root);
        }
    }
    if ((rc = wisp_trainer_best_open(&r->best, outdir, ro->keep_best, ro->patience,
                                     dir[0] ? dir : NULL, err)))
        return rc;
    char *ahead = NULL;
    size_t ahead_len = 0;
    if (dir[0]) {
        wisp_error_t e = {0};
        rc = wisp_ckpt_read_file(dir, WISP_TRAIN_METRICS_CKPT_FILE, WISP_TRAIN_METRICS_MAX, &ahead,
                                 &ahead_len, &e);
        if (rc && rc != WISP_ERR_NOTFOUND)
            return wisp_error_set(err, rc, "%s", e.msg);
    }
    rc = wisp_train_metrics_open(&r->metrics, path, dir[0] ? r->st.step : 0, ahead, ahead_len, err);
    free(ahead);
    return rc;
}

static int s_run_dump(s_run_t *r, wisp_error_t *err)
{
    int k = r->n < r->ro->batch ? r->n : r->ro->batch;
    for (int i = 0; i < k; i++)
        r->batch[i] = r->train[r->sched.perm[i]];
    wisp_trainer_stats_t s;
    int rc;
    wisp_trainer_set_epoch(r->tr, 0); /* the first step's items, of epoch 0 */
    if ((rc = wisp_trainer_compute_grads(r->tr, r->batch, k, &s, err)) ||
        (rc = wisp_trainer_dump_grads(r->tr, r->ro->dump_grads, err)))
        return rc;
    WISP_LOGI("wrote the gradients of the first step (%ld clips, loss %.6f) to %s", s.items, s.loss,
              r->ro->dump_grads);
    return WISP_OK;
}

static void s_run_close(s_run_t *r)
{
    wisp_log_progress_end(); /* an error message must not land on the progress line */
    wisp_train_metrics_close(&r->metrics);
    wisp_sched_free(&r->sched);
    wisp_trainer_failset_free(&r->fails);
    wisp_trainer_failset_free(&r->vfails);
    free(r->batch);
}

/* After a step: checkpoint when due or stopping; 1 = stop now (rc in *rc). */
static int s_run_after_step(s_run_t *r, const wisp_sched_step_t *e, int stop_early, int *rc,
                            wisp_error_t *err)
{
    const wisp_trainer_run_opts_t *ro = r->ro;
    int interrupted = ro->stop && *ro->stop;
    int stop = (ro->stop_after >= 0 && e->step >= ro->stop_after) || interrupted;
    if (e->checkpoint || stop || stop_early) {
        wisp_ckpt_file_t files[2] = {wisp_train_metrics_ckpt_file(&r->metrics),
                                     wisp_trainer_best_ckpt_file(&r->best)};
        *rc = wisp_trainer_save_checkpoint(r->tr, r->root, &r->st, ro->keep_checkpoints, files, 2,
                                           err);
        if (*rc)
            return 1;
        wisp_train_metrics_saved(&r->metrics);
        if (ro->started_over && !r->dropped_previous) {
            wisp_trainer_drop_previous(ro->outdir ? ro->outdir : ".");
            r->dropped_previous = 1;
        }
    }
    if (!stop)
        return 0;
    wisp_log_progress_end();
    WISP_LOGI("stopped after step %ld (checkpoint of step %ld written; continue with --resume)",
              e->step, r->st.step);
    if (interrupted)
        *rc = wisp_error_set(err, WISP_ERR_INTERRUPTED,
                             "interrupted after step %ld (checkpoint of step %ld)", e->step,
                             r->st.step);
    return 1;
}

static void s_run_summary(s_run_t *r)
{
    char first[400];
    wisp_trainer_failset_describe(&r->fails, 3, first, sizeof first);
    WISP_LOGI("training done: %ld steps, val_acc=%.4f; training: %d labeled clips, %ld unlabeled "
              "skipped, %ld failed; validation: %d labeled clips, %ld unlabeled skipped, %ld "
              "failed%s%s",
              r->st.step, r->val_acc, r->n, r->ro->train_unlabeled, r->fails.count, r->nv,
              r->ro->val_unlabeled, r->vfails.count, first[0] ? " (first: " : "",
              first[0] ? first : "");
    if (first[0])
        WISP_LOGI("(end of the list of failures)");
}

int wisp_trainer_run(wisp_trainer_t *self, const wisp_trainer_item_t *train, int n,
                     const wisp_trainer_item_t *val, int nv, const wisp_trainer_run_opts_t *ro,
                     wisp_error_t *err)
{
    s_run_t r;
    memset(&r, 0, sizeof r);
    r.tr = self;
    r.ro = ro;
    r.train = train;
    r.val = val;
    r.n = n;
    r.nv = nv;
    r.val_acc = NAN;
    const char *outdir = ro->outdir ? ro->outdir : ".";
    int rc = wisp_sched_init(&r.sched, n, ro->batch, ro->epochs, ro->steps, ro->checkpoint_every,
                             self->opts.seed, err);
    if (rc)
        return rc;
    if (self->opts.total_steps <= 0)
        self->opts.total_steps = r.sched.total;
    r.batch = malloc((size_t)ro->batch * sizeof *r.batch);
    if (!r.batch || wisp_trainer_failset_init(&r.fails, train, n) ||
        wisp_trainer_failset_init(&r.vfails, val, nv)) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = s_run_open(&r, outdir, err)))
        goto done;
    if (ro->dump_grads && r.st.step == 0 && ((rc = s_run_dump(&r, err)) || r.sched.total == 0))
        goto done;
    r.t_start = wisp_now();
    wisp_sched_step_t e;
    int stop_early = 0;
    while (wisp_sched_next(&r.sched, nv > 0, &e)) {
        if (e.eval_before &&
            (rc = s_run_eval(&r, e.step - 1, e.epoch - !e.final, &stop_early, err)))
            goto done;
        if (e.final)
            break;
        if ((rc = s_run_train_step(&r, &e, err)))
            goto done;
        if (s_run_after_step(&r, &e, stop_early, &rc, err))
            goto done;
        if (stop_early)
            r.sched.total = e.step; /* patience spent: the final entry comes next */
    }
    wisp_log_progress_end();
    if (r.steps_here == 0 && r.skipped_row > 0) {
        rc = wisp_trainer_nodata_error(&r.fails, ro->train_name, r.st.epoch, err);
        goto done;
    }
    if ((rc = wisp_trainer_save_outputs(self, outdir, err)))
        goto done;
    s_run_summary(&r);
done:
    s_run_close(&r);
    return rc;
}
