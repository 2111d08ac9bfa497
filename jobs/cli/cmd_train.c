/* wisp train: train an adapter + classification head on a manifest, in one process. */
#include <getopt.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "formats/config.h"
#include "base/log.h"
#include "formats/manifest.h"
#include "train/data.h"
#include "train/trainer.h"
#include "base/util.h"

static volatile int s_stop = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: wisp train --model DIR (--adapter-config JSON | --preset NAME)\n"
            "                  --train MANIFEST [--val MANIFEST] -o OUTDIR [options]\n"
            "\n"
            "Trains an adapter and a classification head on a frozen Whisper encoder.\n"
            "Writes OUTDIR/adapter (adapters-library layout), OUTDIR/head,\n"
            "OUTDIR/metrics.jsonl and OUTDIR/checkpoints/.\n"
            "\n"
            "model and adapter:\n"
            "  --model DIR            Hugging Face Whisper checkpoint directory\n"
            "  --preset NAME          seq_bn | double_seq_bn | par_bn | lora | ia3\n"
            "  --adapter-config JSON  adapters-library config dict (or adapter_config.json)\n"
            "  --adapter DIR          start from this adapter instead of a fresh one\n"
            "  --adapter-name NAME    name of a fresh adapter (in its tensor keys)\n"
            "  --head DIR             start from this head (its labels map the manifest's)\n"
            "  --proj-size N          fresh head: classifier_proj_size (default: config.json)\n"
            "  --weighted-layer-sum   fresh head: softmax-weighted sum of all hidden states\n"
            "data:\n"
            "  --train MANIFEST       CSV (path,label), JSONL or audiofolder directory;\n"
            "                         labels are class names or integer ids\n"
            "  --val MANIFEST         evaluated after every epoch (val_acc, val_loss)\n"
            "  --truncate             features of each clip's own length, not padded to 30 s\n"
            "  --window S             long audio: each step takes a window of S seconds\n"
            "                         (<= 30) from each file, at a seeded random start per\n"
            "                         epoch (default 0: the first 30 s); classify with\n"
            "                         --window=S (features.json records it)\n"
            "optimisation:\n"
            "  --epochs N             passes over the data (default 3)\n"
            "  --steps N              total optimizer steps instead of epochs\n"
            "  --batch N              clips per forward/backward pass (default 8)\n"
            "  --accum N              passes accumulated per optimizer step (default 1)\n"
            "  --lr X                 peak learning rate (default 1e-3)\n"
            "  --weight-decay X       AdamW weight decay (default 0.01)\n"
            "  --warmup N             linear warmup steps (default 0)\n"
            "  --schedule S           constant | linear | cosine (default linear)\n"
            "  --clip X               max global gradient norm, 0 = off (default 1.0)\n"
            "  --class-weights W      comma-separated loss weight per class, or 'balanced'\n"
            "  --classes FILE         class list, one name per line: fixes the classes and\n"
            "                         their ids (line order); default: the labels' names\n"
            "  --unlabeled error|skip rows without a label: refused (default) or dropped\n"
            "                         and counted\n"
            "  --seed S               initialisation and data order (default 42)\n"
            "run:\n"
            "  --checkpoint-every N   steps between checkpoints (default: each epoch end)\n"
            "  --keep N               checkpoints kept (default 2)\n"
            "  --resume               continue from OUTDIR/checkpoints (same settings)\n"
            "  --force                OUTDIR holds an earlier run: start over (the old run\n"
            "                         is kept in OUTDIR/previous/ until the first checkpoint)\n"
            "  --keep-best            write OUTDIR/best/ (adapter, head) at each new best val_acc\n"
            "  --patience N           early stopping: end after N evaluations without a\n"
            "                         better val_acc (default 0: off)\n"
            "  --stop-after N         stop after step N with a checkpoint (resume later)\n"
            "  --dump-grads FILE      write the first step's mean gradients (safetensors);\n"
            "                         with --steps 0 nothing is trained\n"
            "  --threads N            OpenBLAS threads\n"
            "  --attn-keep-mb N       memory for attention probabilities kept from the\n"
            "                         forward, sparing the backward their recomputation\n"
            "                         (default 1024; 0 = always recompute, least memory)\n"
            "\n"
            "examples:\n"
            "  wisp train --model whisper-tiny --preset seq_bn --train data/train.csv \\\n"
            "      --val data/val.csv -o runs/emotion --epochs 5 --batch 8 --lr 1e-3\n"
            "  wisp train --model whisper-base --preset lora --train clips/ --truncate \\\n"
            "      -o runs/lang --steps 2000 --warmup 100 --schedule cosine --accum 4\n"
            "  wisp train ... -o runs/emotion --resume        # after an interruption\n");
}

typedef struct {
    const char *model, *preset, *adapter_config, *adapter, *head, *train, *val, *output;
    const char *dump_grads, *class_weights, *schedule, *adapter_name, *classes, *unlabeled;
    long epochs, steps, warmup, checkpoint_every, stop_after;
    int batch, accum, threads, keep, truncate, resume, proj_size, wls, attn_keep_mb;
    int force, keep_best;
    long patience;
    double lr, wd, clip, window;
    unsigned long long seed;
} s_args_t;

enum {
    O_MODEL = 256,
    O_PRESET,
    O_ACFG,
    O_ADAPTER,
    O_HEAD,
    O_TRAIN,
    O_VAL,
    O_EPOCHS,
    O_STEPS,
    O_BATCH,
    O_ACCUM,
    O_LR,
    O_WD,
    O_WARMUP,
    O_SCHED,
    O_CLIP,
    O_SEED,
    O_TRUNC,
    O_WINDOW,
    O_RESUME,
    O_DUMP,
    O_CKPT,
    O_KEEP,
    O_THREADS,
    O_ATTN_KEEP,
    O_CW,
    O_CLASSES,
    O_UNLABELED,
    O_STOP,
    O_PROJ,
    O_WLS,
    O_HELP,
    O_ANAME,
    O_FORCE,
    O_KEEP_BEST,
    O_PATIENCE
};

static int s_num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double x = strtod(v, &end);
    if (!end || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "wisp train: --%s: bad value '%s' (expected %g..%g)\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static const struct option s_longs[] = {
    {"model", 1, 0, O_MODEL},
    {"preset", 1, 0, O_PRESET},
    {"adapter-config", 1, 0, O_ACFG},
    {"adapter", 1, 0, O_ADAPTER},
    {"head", 1, 0, O_HEAD},
    {"train", 1, 0, O_TRAIN},
    {"val", 1, 0, O_VAL},
    {"output", 1, 0, 'o'},
    {"epochs", 1, 0, O_EPOCHS},
    {"steps", 1, 0, O_STEPS},
    {"batch", 1, 0, O_BATCH},
    {"accum", 1, 0, O_ACCUM},
    {"lr", 1, 0, O_LR},
    {"weight-decay", 1, 0, O_WD},
    {"warmup", 1, 0, O_WARMUP},
    {"schedule", 1, 0, O_SCHED},
    {"clip", 1, 0, O_CLIP},
    {"seed", 1, 0, O_SEED},
    {"truncate", 0, 0, O_TRUNC},
    {"window", 1, 0, O_WINDOW},
    {"resume", 0, 0, O_RESUME},
    {"force", 0, 0, O_FORCE},
    {"keep-best", 0, 0, O_KEEP_BEST},
    {"patience", 1, 0, O_PATIENCE},
    {"dump-grads", 1, 0, O_DUMP},
    {"checkpoint-every", 1, 0, O_CKPT},
    {"keep", 1, 0, O_KEEP},
    {"threads", 1, 0, O_THREADS},
    {"attn-keep-mb", 1, 0, O_ATTN_KEEP},
    {"class-weights", 1, 0, O_CW},
    {"classes", 1, 0, O_CLASSES},
    {"unlabeled", 1, 0, O_UNLABELED},
    {"stop-after", 1, 0, O_STOP},
    {"proj-size", 1, 0, O_PROJ},
    {"weighted-layer-sum", 0, 0, O_WLS},
    {"help", 0, 0, O_HELP},
    {"adapter-name", 1, 0, O_ANAME},
    {0, 0, 0, 0},
};

/* The numeric options: name (for messages), range, and where the value goes. */
typedef struct {
    int id;
    const char *name;
    double lo, hi;
    size_t off;
    char kind; /* 'l' long, 'i' int, 'd' double */
} s_numopt_t;

#define S_NUM(id, name, lo, hi, field, kind)                                                       \
    {                                                                                              \
        id, name, lo, hi, offsetof(s_args_t, field), kind                                          \
    }
static const s_numopt_t s_numopts[] = {
    S_NUM(O_EPOCHS, "epochs", 1, 1e9, epochs, 'l'),
    S_NUM(O_STEPS, "steps", 0, 1e12, steps, 'l'),
    S_NUM(O_BATCH, "batch", 1, 4096, batch, 'i'),
    S_NUM(O_ACCUM, "accum", 1, 65536, accum, 'i'),
    S_NUM(O_LR, "lr", 0, 10, lr, 'd'),
    S_NUM(O_WD, "weight-decay", 0, 10, wd, 'd'),
    S_NUM(O_WARMUP, "warmup", 0, 1e12, warmup, 'l'),
    S_NUM(O_CLIP, "clip", 0, 1e12, clip, 'd'),
    S_NUM(O_CKPT, "checkpoint-every", 0, 1e12, checkpoint_every, 'l'),
    S_NUM(O_KEEP, "keep", 1, 1e6, keep, 'i'),
    S_NUM(O_THREADS, "threads", 0, 4096, threads, 'i'),
    S_NUM(O_ATTN_KEEP, "attn-keep-mb", 0, 1 << 30, attn_keep_mb, 'i'),
    S_NUM(O_STOP, "stop-after", 0, 1e12, stop_after, 'l'),
    S_NUM(O_PROJ, "proj-size", 1, 1 << 20, proj_size, 'i'),
    S_NUM(O_PATIENCE, "patience", 0, 1e6, patience, 'l'),
    S_NUM(O_WINDOW, "window", 0, 30, window, 'd'),
};

/* 1 when c is a numeric option (stored, or -1 after a message for a bad value), 0 if not. */
static int s_parse_num(int c, const char *v, s_args_t *a)
{
    for (size_t i = 0; i < sizeof s_numopts / sizeof *s_numopts; i++) {
        const s_numopt_t *o = &s_numopts[i];
        if (o->id != c)
            continue;
        double x;
        if (s_num(o->name, v, o->lo, o->hi, &x))
            return -1;
        char *field = (char *)a + o->off;
        if (o->kind == 'l')
            *(long *)field = (long)x;
        else if (o->kind == 'i')
            *(int *)field = (int)x;
        else
            *(double *)field = x;
        return 1;
    }
    return 0;
}

static void s_defaults(s_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->epochs = 3;
    a->steps = -1;
    a->batch = 8;
    a->accum = 1;
    a->lr = 1e-3;
    a->wd = 0.01;
    a->clip = 1.0;
    a->seed = 42;
    a->keep = 2;
    a->attn_keep_mb = WISP_MODEL_ATTN_KEEP_MB_DEFAULT;
    a->stop_after = -1;
    a->wls = -1;
    a->schedule = "linear";
}

/* What the options must say together (after getopt). */
static int s_check(int argc, char **argv, const s_args_t *a)
{
    const char *missing = !a->model    ? "--model"
                          : !a->train  ? "--train MANIFEST"
                          : !a->output ? "-o OUTDIR"
                                       : NULL;
    if (missing) {
        fprintf(stderr, "wisp train: %s is required (wisp train --help)\n", missing);
        return WISP_EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "wisp train: unexpected argument '%s'\n", argv[optind]);
        return WISP_EXIT_USAGE;
    }
    int sources = !!a->preset + !!a->adapter_config + !!a->adapter;
    if (sources != 1) {
        fprintf(stderr, "wisp train: give exactly one of --preset, --adapter-config, --adapter\n");
        return WISP_EXIT_USAGE;
    }
    if (wisp_adamw_schedule_parse(a->schedule) < 0) {
        fprintf(stderr, "wisp train: --schedule: '%s' is not constant, linear or cosine\n",
                a->schedule);
        return WISP_EXIT_USAGE;
    }
    if (a->resume && a->force) {
        fprintf(stderr, "wisp train: --resume continues the run in OUTDIR, --force starts it "
                        "over: give one\n");
        return WISP_EXIT_USAGE;
    }
    return WISP_EXIT_OK;
}

static int s_parse(int argc, char **argv, s_args_t *a)
{
    s_defaults(a);
    optind = 1;
    int c, k;
    while ((c = getopt_long(argc, argv, "o:h", s_longs, NULL)) != -1) {
        if ((k = s_parse_num(c, optarg, a)) != 0) {
            if (k < 0)
                return WISP_EXIT_USAGE;
            continue;
        }
        switch (c) {
        case O_MODEL: a->model = optarg; break;
        case O_PRESET: a->preset = optarg; break;
        case O_ACFG: a->adapter_config = optarg; break;
        case O_ADAPTER: a->adapter = optarg; break;
        case O_HEAD: a->head = optarg; break;
        case O_ANAME: a->adapter_name = optarg; break;
        case O_TRAIN: a->train = optarg; break;
        case O_VAL: a->val = optarg; break;
        case 'o': a->output = optarg; break;
        case O_SCHED: a->schedule = optarg; break;
        case O_DUMP: a->dump_grads = optarg; break;
        case O_CW: a->class_weights = optarg; break;
        case O_CLASSES: a->classes = optarg; break;
        case O_UNLABELED: a->unlabeled = optarg; break;
        case O_TRUNC: a->truncate = 1; break;
        case O_RESUME: a->resume = 1; break;
        case O_FORCE: a->force = 1; break;
        case O_KEEP_BEST: a->keep_best = 1; break;
        case O_WLS: a->wls = 1; break;
        case O_SEED: {
            char *end = NULL;
            a->seed = strtoull(optarg, &end, 0);
            if (!end || *end) {
                fprintf(stderr, "wisp train: --seed: bad value '%s'\n", optarg);
                return WISP_EXIT_USAGE;
            }
            break;
        }
        case 'h':
        case O_HELP: s_usage(stdout); return -1;
        default: s_usage(stderr); return WISP_EXIT_USAGE;
        }
    }
    return s_check(argc, argv, a);
}

/* The data of the run, loaded as the distributed train job loads it (train/data.h). */
static int s_data_load(const s_args_t *a, wisp_train_data_t *d, wisp_error_t *err)
{
    wisp_train_data_opts_t o = {.head_dir = a->head,
                                .train = a->train,
                                .val = a->val,
                                .classes = a->classes,
                                .unlabeled = a->unlabeled,
                                .class_weights = a->class_weights};
    int rc = wisp_train_data_load(d, &o, err);
    if (rc == WISP_OK) {
        char what[256];
        wisp_train_data_describe(d, what, sizeof what);
        WISP_LOGI("%s: %s", a->train, what);
    }
    return rc;
}

static void s_trainer_opts(const s_args_t *a, const wisp_train_data_t *d, wisp_trainer_opts_t *o)
{
    wisp_trainer_default_opts(o);
    o->model_dir = a->model;
    o->adapter_config = a->adapter_config;
    o->preset = a->preset;
    o->adapter_dir = a->adapter;
    o->adapter_name = a->adapter_name;
    o->head_dir = a->head;
    o->num_labels = d->train.n_classes;
    o->class_names = (const char *const *)d->train.classes;
    o->proj_size = a->proj_size;
    o->weighted_layer_sum = a->wls;
    o->truncate = a->truncate;
    o->window = a->window;
    o->micro_batch = a->batch;
    o->lr = a->lr;
    o->adamw.weight_decay = a->wd;
    o->schedule = (wisp_schedule_t)wisp_adamw_schedule_parse(a->schedule);
    o->warmup_steps = a->warmup;
    o->clip = a->clip;
    o->class_weights = d->class_weights;
    o->seed = a->seed;
    o->threads = a->threads;
    o->attn_keep_mb = a->attn_keep_mb;
}

static void s_run_opts(const s_args_t *a, const wisp_train_data_t *d, wisp_trainer_run_opts_t *ro)
{
    wisp_trainer_default_run_opts(ro);
    ro->outdir = a->output;
    ro->epochs = a->epochs;
    ro->steps = a->steps;
    ro->batch = a->batch * a->accum;
    long per_epoch = (d->n + ro->batch - 1) / ro->batch;
    ro->checkpoint_every = a->checkpoint_every > 0 ? a->checkpoint_every : per_epoch;
    ro->keep_checkpoints = a->keep;
    ro->resume = a->resume;
    ro->stop_after = a->stop_after;
    ro->dump_grads = a->dump_grads;
    ro->progress = isatty(2);
    ro->stop = &s_stop;
    ro->train_name = a->train;
    ro->keep_best = a->keep_best;
    ro->patience = a->patience;
    ro->train_unlabeled = (long)wisp_train_data_unlabeled(&d->train);
    ro->val_unlabeled = (long)wisp_train_data_unlabeled(&d->val);
}

/* An existing run in OUTDIR is continued (--resume) or started over (--force), never
 * silently overwritten. */
static int s_outdir(const s_args_t *a, wisp_trainer_run_opts_t *ro, wisp_error_t *err)
{
    if (a->resume || !wisp_trainer_outdir_used(a->output))
        return WISP_OK;
    if (!a->force)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "%s holds an earlier training run: continue it with --resume, "
                              "start over with --force, or choose another -o",
                              a->output);
    ro->started_over = 1;
    return wisp_trainer_start_over(a->output, err);
}

int wisp_cmd_train(int argc, char **argv)
{
    s_args_t a;
    int rc = s_parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? WISP_EXIT_OK : rc;

    /* Early, so an interrupt while loading still ends with a checkpoint or cleanly. */
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    int exit_code = WISP_EXIT_FAILURE;
    wisp_error_t err = {0};
    wisp_train_data_t d;
    wisp_trainer_t *tr = NULL;
    wisp_trainer_opts_t o;
    wisp_trainer_run_opts_t ro;
    if (s_data_load(&a, &d, &err) != WISP_OK)
        goto done;
    s_run_opts(&a, &d, &ro);
    if (s_outdir(&a, &ro, &err) != WISP_OK) {
        exit_code = err.code == WISP_ERR_ARG ? WISP_EXIT_USAGE : WISP_EXIT_FAILURE;
        goto done;
    }
    s_trainer_opts(&a, &d, &o);
    tr = wisp_trainer_new(&o, &err);
    if (!tr)
        goto done;
    rc = wisp_trainer_run(tr, d.items, d.n, d.vitems, d.nv, &ro, &err);
    if (rc == WISP_ERR_INTERRUPTED) {
        fprintf(stderr, "wisp train: %s; rerun with --resume to continue\n", err.msg);
        wisp_error_clear(&err);
        exit_code = WISP_EXIT_INTERRUPTED;
        goto done;
    }
    if (rc != WISP_OK)
        goto done;
    exit_code = WISP_EXIT_OK;
done:
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (err.code)
        fprintf(stderr, "wisp train: %s\n", err.msg);
    wisp_trainer_destroy(&tr);
    wisp_train_data_free(&d);
    return exit_code;
}
