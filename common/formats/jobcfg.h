/* jobcfg.h: the job config of a distributed run (JSON file + --set overrides).
 *
 * One schema table drives parsing, overrides, validation and documentation:
 * every accepted key is listed in wisp_jobcfg_keys() with its type and range.
 * An unknown key (in the file or in --set) is refused naming the dotted key.
 * Relative paths in the file resolve against the file's directory; relative
 * paths given with --set resolve against the current directory. After a
 * successful load every path is absolute, so the config can be shipped to
 * workers (WELCOME) and mean the same thing on a shared filesystem.
 *
 * Example (see configs/):
 *   {"kind": "classify", "model": "tiny", "adapter": "adapter", "head": "head",
 *    "manifest": "data.csv", "output": "out.h5",
 *    "cluster": {"endpoint": "tcp://127.0.0.1:0", "shard_seconds": 60, "credit": 2}} */
#ifndef WISP_JOBCFG_H
#define WISP_JOBCFG_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/err.h"

#define WISP_JOBCFG_PATH_MAX        1024
#define WISP_JOBCFG_MAX_CLIENT_KEYS 64

typedef struct {
    /* job */
    char kind[16];                      /* "null", "classify", "train" */
    char model[WISP_JOBCFG_PATH_MAX];   /* HF checkpoint directory */
    char adapter[WISP_JOBCFG_PATH_MAX]; /* trained adapter directory (classify; train init) */
    char head[WISP_JOBCFG_PATH_MAX];    /* trained head directory (classify) */
    char adapter_config[WISP_JOBCFG_PATH_MAX]; /* train: preset name (seq_bn, lora, ...) or JSON
                                                  file */
    char manifest[WISP_JOBCFG_PATH_MAX];       /* classify data (CSV, JSONL or audiofolder) */
    char train_manifest[WISP_JOBCFG_PATH_MAX]; /* train data */
    char val_manifest[WISP_JOBCFG_PATH_MAX];   /* train validation data (optional) */
    char output[WISP_JOBCFG_PATH_MAX];         /* classify: HDF5 file; train: output directory */
    int64_t seed;                              /* everything random derives from it */
    /* null job: the machinery without a model */
    int64_t null_items;       /* items to generate */
    double null_item_seconds; /* pretend duration of each item */
    int64_t null_fail_every;  /* item i reports an error when i % n == n-1 (0 never) */
    double null_work_ms;      /* simulated work per item */
    /* classify */
    int classify_batch_size; /* files per forward batch on a worker */
    int classify_embedding;  /* write the pooled embedding column */
    int classify_truncate;   /* truncated mel instead of padded 30 s (faster, differs from HF) */
    int classify_probe_durations; /* open every file's header for its duration (shards by seconds)
                                   */
    double classify_window;       /* seconds per window of long audio, 0: no windows (the
                                     first 30 s) */
    double classify_hop;          /* seconds between window starts, 0: the window */
    char classify_aggregate[8];   /* file row from its windows: mean | max */
    int classify_top_k;           /* top_k_label/top_k_prob columns, 0: none */
    char classify_precision[8];   /* fp32 | int8 (frozen encoder linears, nn/qlinear.h) */
    /* train */
    int train_epochs;
    int train_global_batch; /* examples per optimizer step over all ranks */
    double train_lr;
    double train_weight_decay;
    int64_t train_max_steps;      /* 0: epochs decide */
    int train_checkpoint_every;   /* steps between checkpoints */
    int train_checksum_every;     /* steps between cross-rank parameter checksums */
    int train_fixed_order_reduce; /* allgather gradients and sum them in rank order */
    int train_micro_batch;        /* clips per forward/backward call on a rank */
    int train_attn_keep_mb;       /* MiB of attention probabilities kept (0: recompute) */
    int train_truncate;           /* truncated mel instead of padded 30 s */
    double train_window;          /* seconds of a seeded random window per epoch of long
                                     files, 0: the first 30 s */
    char train_schedule[16];      /* constant | linear | cosine */
    char train_classes[WISP_JOBCFG_PATH_MAX]; /* class list file (one name per line), "" none */
    char train_unlabeled[8];                  /* rows without a label: error | skip */
    int64_t train_warmup;                     /* warmup steps */
    double train_clip;                        /* max global gradient norm, 0 off */
    int train_keep;                           /* checkpoints kept */
    int train_keep_best; /* OUTDIR/best holds the weights of the best val_acc */
    int train_patience;  /* early stopping after this many evaluations, 0 off */
    char train_dump_grads[WISP_JOBCFG_PATH_MAX]; /* rank 0 writes the first step's gradients here */
    /* cluster */
    char endpoint[256];       /* coordinator bind address; port 0 = ephemeral */
    double shard_seconds;     /* audio seconds per shard (when durations are known) */
    int shard_size;           /* files per shard (cap; the only rule when durations are unknown) */
    int credit;               /* shards a worker may hold at once (K) */
    double lease_timeout;     /* s of worker silence before its shards are re-leased */
    double heartbeat;         /* s between worker heartbeats */
    int threads_per_worker;   /* OpenBLAS threads per rank */
    double max_message_mb;    /* ZMQ_MAXMSGSIZE and payload bound */
    double progress_interval; /* s between progress lines */
    double commit_interval;   /* s between output flushes (commit log) */
    char
        curve_server_secret[WISP_JOBCFG_PATH_MAX]; /* coordinator secret key file ("" = no CURVE) */
    int n_client_keys;                             /* allowed worker public key files */
    char client_keys[WISP_JOBCFG_MAX_CLIENT_KEYS][WISP_JOBCFG_PATH_MAX];

    char path[WISP_JOBCFG_PATH_MAX]; /* the config file ("" when from a string) */
    cJSON *json;                     /* the effective config (overrides applied, paths absolute) */
} wisp_jobcfg_t;

/* Loads path, applies overrides ("dotted.key=value", n_sets of them), validates.
 * On failure cfg holds nothing to free and err names the file and key. */
int wisp_jobcfg_load(wisp_jobcfg_t *cfg, const char *path, char *const *sets, int n_sets,
                     wisp_error_t *err);
/* The same from a JSON text (what workers receive in WELCOME). base_dir resolves
 * relative paths (NULL: current directory); where names the source in messages. */
int wisp_jobcfg_parse(wisp_jobcfg_t *cfg, const char *text, const char *base_dir, const char *where,
                      char *const *sets, int n_sets, wisp_error_t *err);
/* Applies one "key=value" override to a loaded cfg and re-validates. */
int wisp_jobcfg_set(wisp_jobcfg_t *cfg, const char *assignment, wisp_error_t *err);
/* The effective config as compact JSON text (malloc'd, free()). NULL on OOM. */
char *wisp_jobcfg_to_string(const wisp_jobcfg_t *cfg);
void wisp_jobcfg_free(wisp_jobcfg_t *cfg);

/* The schema, for `--help` listings: returns the number of keys and sets
 * *names to a static array of dotted names. */
int wisp_jobcfg_keys(const char *const **names);

#endif
