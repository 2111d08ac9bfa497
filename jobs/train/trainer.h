/* trainer.h: the building blocks of adapter training, shared by `wisp train` (one
 * process) and the distributed train job (MPI workers, coordinator).
 *
 * A trainer owns the model (frozen encoder + trainable adapter and head in one flat
 * buffer, see nn/model.h), the AdamW state and the feature extractor. One optimizer
 * step = wisp_trainer_step() over this process's share of the global batch:
 *   1. decode every item (bad files are skipped with a warning and counted) -> log-mel
 *      (padded 30 s, or truncated: each clip keeps its own frame count);
 *   2. weight sum of the usable items (1 per item, or class weights), summed over
 *      processes through the reduce hook when one is set;
 *   3. forward_backward in micro-batches of clips with equal frame counts, all
 *      accumulating into the same gradients with grad_scale = 1 / global weight sum
 *      (the loss is a sum, so grouping is exact: no clip is padded to another's length);
 *   4. reduce hook on the flat gradient buffer + loss/accuracy sums (MPI_Allreduce);
 *   5. global-norm clipping, learning rate from the schedule, AdamW update.
 * The global batch gradient is therefore the mean over all samples of all ranks
 * (NUMERICS.md 5), and a one-process run with the same items computes the same step.
 * Memory: the features of all n items of a step are held at once (n x n_mels x frames
 * floats, ~1 MB per padded 80-mel clip) besides the model's plan for micro_batch clips. */
#ifndef WISP_TRAINER_H
#define WISP_TRAINER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "nn/adamw.h"
#include "nn/ckpt.h"
#include "base/err.h"
#include "nn/model.h"
#include "formats/manifest.h"

/* One training or evaluation example. */
typedef struct {
    const char *path; /* audio file (already resolved against the manifest) */
    int label;        /* class id in [0, num_labels); -1: unlabeled (skipped) */
    int id;           /* index in its item list (names the item in failure records) */
} wisp_trainer_item_t;

/* The labeled items of a manifest in manifest order, id = index in the returned list
 * (unlabeled clips teach nothing). malloc'd (n + 1 entries), NULL when out of memory;
 * paths point into m. */
wisp_trainer_item_t *wisp_trainer_items(const wisp_manifest_t *m, int *n);

/* Identity of a data set: SHA-256 hex of every path and label in order. */
void wisp_trainer_data_id(const wisp_trainer_item_t *items, int n, char out[65]);

/* One clip that could not be used: its item id and why (the path is not repeated). */
#define WISP_TRAINER_REASON_MAX 160
typedef struct {
    int id;
    char reason[WISP_TRAINER_REASON_MAX];
} wisp_trainer_failure_t;

typedef struct {
    /* Model. */
    const char *model_dir;          /* HF checkpoint directory */
    const char *adapter_config;     /* JSON file: an adapter config dict or adapter_config.json */
    const char *preset;             /* seq_bn | double_seq_bn | par_bn | lora | ia3 (or NULL) */
    const char *adapter_dir;        /* start from this adapter instead of a fresh one (or NULL) */
    const char *head_dir;           /* start from this head (or NULL: fresh head) */
    int num_labels;                 /* fresh head: number of classes (> 1) */
    const char *const *class_names; /* fresh head: id2label (num_labels), NULL: "LABEL_i" */
    int proj_size;                  /* fresh head: classifier_proj_size, 0: from config.json */
    int weighted_layer_sum;         /* fresh head: -1 from config.json, 0 off, 1 on */
    /* Data. */
    int truncate;    /* truncated mel (NUMERICS 1.7) instead of padded 30 s */
    double window;   /* long audio: seconds of the window a training step takes from each
                        file, at a seeded random start per (epoch, item) (audio/windows.h);
                        an evaluation takes one fixed seeded window per item. 0: the
                        first 30 s. Recorded in features.json */
    int max_frames;  /* plan memory for clips up to this many frames (0: 3000) */
    int micro_batch; /* clips per forward_backward call (memory bound), >= 1 */
    /* Optimisation. */
    double lr;                  /* base learning rate (default 1e-3) */
    wisp_adamw_opts_t adamw;    /* betas, eps, weight decay (torch defaults) */
    wisp_schedule_t schedule;   /* default constant */
    long warmup_steps;          /* default 0 */
    long total_steps;           /* for linear/cosine decay */
    double clip;                /* max global grad norm, 0: no clipping (default 1.0) */
    const float *class_weights; /* num_labels loss weights, or NULL (copied) */
    uint64_t seed;              /* adapter/head initialisation and data order */
    int threads;                /* OpenBLAS threads (0: leave as is) */
    int attn_keep_mb;           /* wisp_model_opts_t.attn_keep_mb (0: none kept) */
    const char *adapter_name;   /* fresh adapter: name in its tensor keys (NULL: the
                                   preset's / config's name) */
} wisp_trainer_opts_t;

void wisp_trainer_default_opts(wisp_trainer_opts_t *opts);

/* Sums element-wise across all processes, in place: data[0..n) (may be NULL with
 * n = 0) and scalars[0..n_scalars). Returns 0 or a negative WISP_ERR_*. When a hook
 * is set, wisp_trainer_step() is collective: every rank calls it once per step, in
 * the same order (with n = 0 items when a rank has nothing to contribute). The hook
 * is called twice per step: first (NULL, 0, {weight_sum, items}, 2) before the
 * backward pass, then (grads, num_params, {loss_sum, weight_sum, correct, items,
 * failed}, 5) after it. */
typedef int (*wisp_trainer_reduce_fn)(void *ctx, float *data, size_t n, double *scalars,
                                      int n_scalars);

typedef struct wisp_trainer wisp_trainer_t;

/* Concatenates records across all processes in rank order: this process gives
 * n_mine records of rec bytes at mine; *all (owned by the hook, valid until its next
 * call) receives every process's records, *n_all of them. Collective. 0 or a
 * negative WISP_ERR_*. */
typedef int (*wisp_trainer_gather_fn)(void *ctx, const void *mine, size_t n_mine, size_t rec,
                                      const void **all, size_t *n_all);

/* Loads the model, sets up the adapter (fresh from adapter_config/preset with the
 * seed, or adapter_dir) and the head (fresh or head_dir), the optimizer and the
 * feature extractor. NULL on failure (err says why). */
wisp_trainer_t *wisp_trainer_new(const wisp_trainer_opts_t *opts, wisp_error_t *err);
void wisp_trainer_destroy(wisp_trainer_t **self);

void wisp_trainer_set_reduce(wisp_trainer_t *self, wisp_trainer_reduce_fn fn, void *ctx);

/* The epoch of the items the next compute_grads / step is given (0 until set): with a
 * window, it draws each file's window (wisp_windows_random_start(n, win, seed, epoch,
 * item id)), so every process and a resumed run take the same windows. */
void wisp_trainer_set_epoch(wisp_trainer_t *self, long epoch);

/* Called between the pieces of a step or an evaluation (each decoded clip, each
 * micro-batch) with the clips done so far, so a distributed worker can send
 * heartbeats during a long pass. Its return value is ignored: a step is collective
 * and always runs to its end. */
typedef int (*wisp_trainer_tick_fn)(void *ctx, uint32_t done);
void wisp_trainer_set_tick(wisp_trainer_t *self, wisp_trainer_tick_fn fn, void *ctx);

/* Fixed-order mode (bitwise-identical steps for any number of processes holding
 * consecutive slices of the global batch, in rank order): each item's gradient is
 * computed alone (forward_backward with B = 1, so micro_batch is ignored), the
 * per-item gradients and loss sums of all processes are gathered through fn in
 * global item order and summed in that order; the reduce hook is then not used.
 * fn NULL: one process. Costs one record (wisp_trainer_item_record_bytes(), about
 * 4 x num_params bytes) per item of the global batch in every process, plus the
 * local items' records, and loses the micro-batch BLAS efficiency. Bitwise equality
 * also needs the same BLAS thread count in every run. */
void wisp_trainer_set_per_item(wisp_trainer_t *self, wisp_trainer_gather_fn fn, void *ctx);
size_t wisp_trainer_item_record_bytes(const wisp_trainer_t *self);

wisp_model_t *wisp_trainer_model(wisp_trainer_t *self);
wisp_adamw_t *wisp_trainer_optimizer(wisp_trainer_t *self);
int wisp_trainer_num_labels(const wisp_trainer_t *self);
/* Optimizer steps completed. */
long wisp_trainer_steps(const wisp_trainer_t *self);

typedef struct {
    long step;        /* steps completed after this one */
    double loss;      /* mean loss of the global batch (weighted like the gradient) */
    double acc;       /* fraction of the global batch predicted right */
    long items;       /* clips used in the global batch */
    long failed;      /* clips of the global batch that could not be decoded */
    double lr;        /* learning rate of this update */
    double grad_norm; /* global gradient norm before clipping */
    double seconds;   /* wall time of the step */
} wisp_trainer_stats_t;

/* Gradients only: steps 1-4 above, leaving the global mean gradient in
 * wisp_model_grads() (zeroed first). Fails with WISP_ERR_NODATA when no usable item
 * is left in the global batch (every process sees it: nothing is updated then, and
 * the caller skips the step). */
int wisp_trainer_compute_grads(wisp_trainer_t *self, const wisp_trainer_item_t *items, int n,
                               wisp_trainer_stats_t *stats, wisp_error_t *err);
/* compute_grads from features instead of files (tests, feature pipelines): B clips
 * of one frame count, mel (B, n_mels, frames), labels (B). Collective like
 * compute_grads when a reduce hook is set. */
int wisp_trainer_compute_grads_mel(wisp_trainer_t *self, const float *mel, int B, int frames,
                                   const int *labels, wisp_trainer_stats_t *stats,
                                   wisp_error_t *err);
/* The same for clips of different lengths: mel[i] (n_mels, frames[i]), labels (n). */
int wisp_trainer_compute_grads_clips(wisp_trainer_t *self, const float *const *mel,
                                     const int *frames, const int *labels, int n,
                                     wisp_trainer_stats_t *stats, wisp_error_t *err);
/* Step 5 on the gradients left by compute_grads: clip, AdamW at the scheduled lr. */
void wisp_trainer_apply(wisp_trainer_t *self, wisp_trainer_stats_t *stats);
/* compute_grads + apply. */
int wisp_trainer_step(wisp_trainer_t *self, const wisp_trainer_item_t *items, int n,
                      wisp_trainer_stats_t *stats, wisp_error_t *err);

/* Evaluation of this process's items (forward only, micro-batched): adds to the
 * running sums (the caller zeroes them and reduces them across processes).
 * Undecodable items are counted in *failed and otherwise skipped. */
int wisp_trainer_eval(wisp_trainer_t *self, const wisp_trainer_item_t *items, int n,
                      double *loss_sum, double *weight_sum, long *correct, long *count,
                      long *failed, wisp_error_t *err);

/* This process's clips that failed in the last compute_grads (reset by each call) and
 * the evaluations since wisp_trainer_clear_failures (*n of them; valid until the next
 * call). */
const wisp_trainer_failure_t *wisp_trainer_failures(const wisp_trainer_t *self, int *n);
void wisp_trainer_clear_failures(wisp_trainer_t *self);

/* The unique failed clips of a run over one item list: how many, and the first
 * WISP_TRAINER_FAIL_KEEP with their reasons (for the summary and error messages). */
#define WISP_TRAINER_FAIL_KEEP 20
typedef struct {
    const wisp_trainer_item_t *items; /* the list the ids index */
    int n_items;
    unsigned char *seen; /* (n_items) 1 = counted */
    long count;
    int n_kept;
    wisp_trainer_failure_t kept[WISP_TRAINER_FAIL_KEEP];
} wisp_trainer_failset_t;

int wisp_trainer_failset_init(wisp_trainer_failset_t *s, const wisp_trainer_item_t *items, int n);
void wisp_trainer_failset_free(wisp_trainer_failset_t *s);
/* Counts f once per item; ids outside [0, n_items) are ignored (from a frame). */
void wisp_trainer_failset_add(wisp_trainer_failset_t *s, int id, const char *reason);
/* "path: reason; path: reason; ..." of the first max kept failures into buf. */
void wisp_trainer_failset_describe(const wisp_trainer_failset_t *s, int max, char *buf, size_t n);
/* Adds "failed_clips" (count) and "failed_files" ([{"path","reason"}], the kept ones)
 * under the given key prefix ("" or "val_") to a summary object. */
void wisp_trainer_failset_json(const wisp_trainer_failset_t *s, const char *prefix, cJSON *obj);

/* The data order of an epoch: perm[0..n) is a permutation of 0..n-1 drawn from
 * (seed, epoch) alone (Fisher-Yates with splitmix64), identical in every process. */
void wisp_trainer_epoch_order(uint64_t seed, long epoch, int n, int *perm);

/* Identity of a run configuration (model config, adapter config, head, optimiser
 * settings, batch, seed, data): lowercase hex, 64 chars + NUL. `extra` is mixed in
 * (e.g. the manifest's paths and labels; may be NULL). */
void wisp_trainer_fingerprint(const wisp_trainer_t *self, const char *extra, char out[65]);
/* The fingerprint of a training run, the one `wisp train` and the distributed job
 * store in checkpoints: the trainer's, the global batch and the data identity. */
void wisp_trainer_run_fingerprint(const wisp_trainer_t *self, int batch,
                                  const wisp_trainer_item_t *items, int n, char out[65]);

/* Checkpoints (ckpt.h) of this trainer's parameters and optimizer, with the
 * caller's extra files (metrics written ahead, best-model state). */
int wisp_trainer_save_checkpoint(wisp_trainer_t *self, const char *root,
                                 const wisp_ckpt_state_t *state, int keep,
                                 const wisp_ckpt_file_t *files, int n_files, wisp_error_t *err);
int wisp_trainer_load_checkpoint(wisp_trainer_t *self, const char *dir,
                                 const char *expect_fingerprint, wisp_ckpt_state_t *state,
                                 wisp_error_t *err);

/* Final outputs: OUTDIR/adapter (adapters library layout) and OUTDIR/head. */
int wisp_trainer_save_outputs(wisp_trainer_t *self, const char *outdir, wisp_error_t *err);

/* Gradients currently in the model as safetensors keyed by parameter name (F32). */
int wisp_trainer_dump_grads(wisp_trainer_t *self, const char *path, wisp_error_t *err);

/* The error of a run where no clip can be used: WISP_ERR_NODATA naming the manifest
 * (or "training data"), the epoch and the first failures of fs. */
int wisp_trainer_nodata_error(const wisp_trainer_failset_t *fs, const char *manifest, long epoch,
                              wisp_error_t *err);

/* Best-model selection on val_acc and early stopping, the same in the local loop
 * and the distributed job. Each evaluation with a val_acc above the best so far is a
 * new best: with keep, the adapter and head are written to OUTDIR/best/ (with
 * best.json: step, val_acc). With patience > 0, `patience` evaluations in a row
 * without a new best stop the run (after the step that carried the evaluation; the
 * final evaluation and outputs follow). The state goes into every checkpoint
 * (file best.json) so a resumed run continues it. */
typedef struct {
    int keep;
    long patience;
    double acc; /* best val_acc so far, -1 none */
    long step;  /* its step, -1 none */
    long since; /* evaluations since the best */
    char dir[4096];
    char ckpt_text[160]; /* the checkpoint file's contents, see _ckpt_file */
} wisp_trainer_best_t;

#define WISP_TRAINER_BEST_CKPT_FILE "best.json"
/* ckpt_dir: the checkpoint resumed from (NULL: a fresh run). */
int wisp_trainer_best_open(wisp_trainer_best_t *b, const char *outdir, int keep, long patience,
                           const char *ckpt_dir, wisp_error_t *err);
/* After an evaluation of the weights after `step`; write: this process writes
 * OUTDIR/best (rank 0). *stop becomes 1 when the patience is spent. */
int wisp_trainer_best_update(wisp_trainer_best_t *b, wisp_trainer_t *tr, long step, double val_acc,
                             int write, int *stop, wisp_error_t *err);
wisp_ckpt_file_t wisp_trainer_best_ckpt_file(wisp_trainer_best_t *b);

/* Safe reruns. wisp_trainer_outdir_used: 1 when outdir holds a training run
 * (metrics.jsonl, checkpoints/, adapter/, head/ or best/), else 0. Starting over
 * moves those into OUTDIR/previous/ (replacing an older one) so nothing of the old
 * run is mixed into the new one, and nothing is lost before the new run has a
 * checkpoint; wisp_trainer_drop_previous removes it then. */
int wisp_trainer_outdir_used(const char *outdir);
/* The step of the newest checkpoint under OUTDIR/checkpoints (what a rerun resumes
 * from), -1 when there is none or it cannot be read. */
long wisp_trainer_latest_step(const char *outdir);
int wisp_trainer_start_over(const char *outdir, wisp_error_t *err);
void wisp_trainer_drop_previous(const char *outdir);

/* ---- The whole local loop (wisp train) --------------------------------- */
typedef struct {
    const char *outdir;       /* metrics.jsonl, checkpoints/, adapter/, head/ */
    long epochs;              /* default 1 (ignored when steps >= 0) */
    long steps;               /* total optimizer steps, -1: epochs * steps per epoch */
    int batch;                /* clips per optimizer step (micro_batch * accum) */
    long checkpoint_every;    /* steps between checkpoints (0: only at the end) */
    int keep_checkpoints;     /* newest checkpoints kept (default 2) */
    int resume;               /* continue from OUTDIR/checkpoints/LATEST */
    int started_over;         /* OUTDIR/previous/ holds the old run: removed after the
                                 first checkpoint (wisp_trainer_start_over) */
    long stop_after;          /* stop (with a checkpoint) after this many steps in total,
                                 -1: run to the end (tests of resume) */
    const char *dump_grads;   /* write the first step's gradients here (or NULL) */
    int progress;             /* \r progress line on stderr */
    const volatile int *stop; /* when it becomes non-zero (a signal handler), the run
                                 checkpoints after the current step and returns
                                 WISP_ERR_INTERRUPTED; NULL: not watched */
    const char *train_name;   /* the training manifest, named in errors */
    int keep_best;            /* OUTDIR/best on each new best val_acc */
    long patience;            /* early stopping, 0: off (see wisp_trainer_best_t) */
    long train_unlabeled;     /* rows of the manifests left out for want of a label */
    long val_unlabeled;       /* (wisp_train_data_unlabeled): for the summary */
} wisp_trainer_run_opts_t;

void wisp_trainer_default_run_opts(wisp_trainer_run_opts_t *opts);

/* Trains on `train` (shuffled per epoch from the seed; a partial last batch of an
 * epoch is used as is), evaluates on `val` after each epoch (when nv > 0), writes
 * the metrics log, checkpoints and the final adapter and head. With dump_grads
 * and steps == 0 only the gradients are written. */
int wisp_trainer_run(wisp_trainer_t *self, const wisp_trainer_item_t *train, int n,
                     const wisp_trainer_item_t *val, int nv, const wisp_trainer_run_opts_t *opts,
                     wisp_error_t *err);

#endif
