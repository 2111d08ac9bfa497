/* wisp train: train an adapter + classification head on a manifest, in one process. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "formats/config.h"
#include "base/log.h"
#include "formats/manifest.h"
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
            "  --seed S               initialisation and data order (default 42)\n"
            "run:\n"
            "  --checkpoint-every N   steps between checkpoints (default: each epoch end)\n"
            "  --keep N               checkpoints kept (default 2)\n"
            "  --resume               continue from OUTDIR/checkpoints (same settings)\n"
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
    const char *dump_grads, *class_weights, *schedule, *adapter_name;
    long epochs, steps, warmup, checkpoint_every, stop_after;
    int batch, accum, threads, keep, truncate, resume, proj_size, wls, attn_keep_mb;
    double lr, wd, clip;
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
    O_RESUME,
    O_DUMP,
    O_CKPT,
    O_KEEP,
    O_THREADS,
    O_ATTN_KEEP,
    O_CW,
    O_STOP,
    O_PROJ,
    O_WLS,
    O_HELP,
    O_ANAME
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

static int s_parse(int argc, char **argv, s_args_t *a)
{
    static const struct option longs[] = {
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
        {"resume", 0, 0, O_RESUME},
        {"dump-grads", 1, 0, O_DUMP},
        {"checkpoint-every", 1, 0, O_CKPT},
        {"keep", 1, 0, O_KEEP},
        {"threads", 1, 0, O_THREADS},
        {"attn-keep-mb", 1, 0, O_ATTN_KEEP},
        {"class-weights", 1, 0, O_CW},
        {"stop-after", 1, 0, O_STOP},
        {"proj-size", 1, 0, O_PROJ},
        {"weighted-layer-sum", 0, 0, O_WLS},
        {"help", 0, 0, O_HELP},
        {"adapter-name", 1, 0, O_ANAME},
        {0, 0, 0, 0},
    };
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
    optind = 1;
    int c;
    double x;
    while ((c = getopt_long(argc, argv, "o:h", longs, NULL)) != -1) {
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
        case O_TRUNC: a->truncate = 1; break;
        case O_RESUME: a->resume = 1; break;
        case O_WLS: a->wls = 1; break;
        case O_EPOCHS:
            if (s_num("epochs", optarg, 1, 1e9, &x))
                return WISP_EXIT_USAGE;
            a->epochs = (long)x;
            break;
        case O_STEPS:
            if (s_num("steps", optarg, 0, 1e12, &x))
                return WISP_EXIT_USAGE;
            a->steps = (long)x;
            break;
        case O_BATCH:
            if (s_num("batch", optarg, 1, 4096, &x))
                return WISP_EXIT_USAGE;
            a->batch = (int)x;
            break;
        case O_ACCUM:
            if (s_num("accum", optarg, 1, 65536, &x))
                return WISP_EXIT_USAGE;
            a->accum = (int)x;
            break;
        case O_LR:
            if (s_num("lr", optarg, 0, 10, &x))
                return WISP_EXIT_USAGE;
            a->lr = x;
            break;
        case O_WD:
            if (s_num("weight-decay", optarg, 0, 10, &x))
                return WISP_EXIT_USAGE;
            a->wd = x;
            break;
        case O_WARMUP:
            if (s_num("warmup", optarg, 0, 1e12, &x))
                return WISP_EXIT_USAGE;
            a->warmup = (long)x;
            break;
        case O_CLIP:
            if (s_num("clip", optarg, 0, 1e12, &x))
                return WISP_EXIT_USAGE;
            a->clip = x;
            break;
        case O_CKPT:
            if (s_num("checkpoint-every", optarg, 0, 1e12, &x))
                return WISP_EXIT_USAGE;
            a->checkpoint_every = (long)x;
            break;
        case O_KEEP:
            if (s_num("keep", optarg, 1, 1e6, &x))
                return WISP_EXIT_USAGE;
            a->keep = (int)x;
            break;
        case O_THREADS:
            if (s_num("threads", optarg, 0, 4096, &x))
                return WISP_EXIT_USAGE;
            a->threads = (int)x;
            break;
        case O_ATTN_KEEP:
            if (s_num("attn-keep-mb", optarg, 0, 1 << 30, &x))
                return WISP_EXIT_USAGE;
            a->attn_keep_mb = (int)x;
            break;
        case O_STOP:
            if (s_num("stop-after", optarg, 0, 1e12, &x))
                return WISP_EXIT_USAGE;
            a->stop_after = (long)x;
            break;
        case O_PROJ:
            if (s_num("proj-size", optarg, 1, 1 << 20, &x))
                return WISP_EXIT_USAGE;
            a->proj_size = (int)x;
            break;
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
    return WISP_EXIT_OK;
}

/* --class-weights: "balanced" (n / (C * count_c), as sklearn) or C numbers. */
static int s_class_weights(const char *spec, const wisp_manifest_t *m, int C, float *w,
                           wisp_error_t *err)
{
    if (strcmp(spec, "balanced") == 0) {
        size_t n = 0;
        for (int c = 0; c < C; c++)
            w[c] = 0.0f;
        for (size_t i = 0; i < m->n_items; i++)
            if (m->items[i].label >= 0) {
                w[m->items[i].label] += 1.0f;
                n++;
            }
        for (int c = 0; c < C; c++)
            w[c] = w[c] > 0.0f ? (float)((double)n / ((double)C * w[c])) : 0.0f;
        return WISP_OK;
    }
    const char *p = spec;
    for (int c = 0; c < C; c++) {
        char *end = NULL;
        double x = strtod(p, &end);
        if (end == p || !(x >= 0) || !isfinite(x))
            return wisp_error_set(err, WISP_ERR_ARG, "--class-weights: bad weight %d in '%s'", c,
                                  spec);
        w[c] = (float)x;
        p = end;
        if (c + 1 < C) {
            if (*p != ',')
                return wisp_error_set(err, WISP_ERR_ARG,
                                      "--class-weights: %d classes need %d weights, '%s'", C, C,
                                      spec);
            p++;
        }
    }
    if (*p)
        return wisp_error_set(err, WISP_ERR_ARG, "--class-weights: more than %d weights in '%s'", C,
                              spec);
    return WISP_OK;
}

/* Items of a manifest: labeled ones only (unlabeled clips teach nothing). */
static wisp_trainer_item_t *s_items(const wisp_manifest_t *m, int *n)
{
    wisp_trainer_item_t *items = calloc(m->n_items + 1, sizeof *items);
    *n = 0;
    if (!items)
        return NULL;
    for (size_t i = 0; i < m->n_items; i++)
        if (m->items[i].label >= 0) {
            items[*n].path = m->items[i].path;
            items[*n].label = m->items[i].label;
            (*n)++;
        }
    return items;
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
    wisp_manifest_t train, val;
    wisp_head_config_t head;
    memset(&train, 0, sizeof train);
    memset(&val, 0, sizeof val);
    memset(&head, 0, sizeof head);
    int have_head = 0;
    wisp_trainer_t *tr = NULL;
    wisp_trainer_item_t *titems = NULL, *vitems = NULL;
    float *cw = NULL;
    int nt = 0, nv = 0;

    /* Class list: the given head's labels, else the training manifest's. */
    if (a.head) {
        char path[4096];
        if (wisp_path_join(path, sizeof path, a.head, "head_config.json") != WISP_OK) {
            wisp_error_set(&err, WISP_ERR_ARG, "%s: path too long", a.head);
            goto done;
        }
        if (wisp_head_config_load(&head, path, &err) != WISP_OK)
            goto done;
        have_head = 1;
    }
    if (wisp_manifest_load(&train, a.train, have_head ? (const char *const *)head.id2label : NULL,
                           have_head ? head.num_labels : 0, &err) != WISP_OK)
        goto done;
    if (train.n_labeled == 0) {
        wisp_error_set(&err, WISP_ERR_ARG, "%s: no labeled item to train on", a.train);
        goto done;
    }
    if (train.n_classes < 2) {
        wisp_error_set(&err, WISP_ERR_ARG, "%s: %d class(es); a classifier needs at least 2",
                       a.train, train.n_classes);
        goto done;
    }
    if (a.val && wisp_manifest_load(&val, a.val, (const char *const *)train.classes,
                                    train.n_classes, &err) != WISP_OK)
        goto done;
    titems = s_items(&train, &nt);
    vitems = a.val ? s_items(&val, &nv) : NULL;
    if (!titems || (a.val && !vitems)) {
        wisp_error_set(&err, WISP_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (a.class_weights) {
        cw = calloc((size_t)train.n_classes, sizeof(float));
        if (!cw || s_class_weights(a.class_weights, &train, train.n_classes, cw, &err))
            goto done;
    }
    WISP_LOGI("%s: %d labeled clips, %d classes%s", a.train, nt, train.n_classes,
              a.val ? "" : " (no validation set)");

    wisp_trainer_opts_t o;
    wisp_trainer_default_opts(&o);
    o.model_dir = a.model;
    o.adapter_config = a.adapter_config;
    o.preset = a.preset;
    o.adapter_dir = a.adapter;
    o.adapter_name = a.adapter_name;
    o.head_dir = a.head;
    o.num_labels = train.n_classes;
    o.class_names = (const char *const *)train.classes;
    o.proj_size = a.proj_size;
    o.weighted_layer_sum = a.wls;
    o.truncate = a.truncate;
    o.micro_batch = a.batch;
    o.lr = a.lr;
    o.adamw.weight_decay = a.wd;
    o.schedule = (wisp_schedule_t)wisp_adamw_schedule_parse(a.schedule);
    o.warmup_steps = a.warmup;
    o.clip = a.clip;
    o.class_weights = cw;
    o.seed = a.seed;
    o.threads = a.threads;
    o.attn_keep_mb = a.attn_keep_mb;
    tr = wisp_trainer_new(&o, &err);
    if (!tr)
        goto done;

    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = a.output;
    ro.epochs = a.epochs;
    ro.steps = a.steps;
    ro.batch = a.batch * a.accum;
    long per_epoch = (nt + ro.batch - 1) / ro.batch;
    ro.checkpoint_every = a.checkpoint_every > 0 ? a.checkpoint_every : per_epoch;
    ro.keep_checkpoints = a.keep;
    ro.resume = a.resume;
    ro.stop_after = a.stop_after;
    ro.dump_grads = a.dump_grads;
    ro.progress = isatty(2);
    /* The data identity in the fingerprint: every path and label in order. */
    char data_id[65] = "";
    {
        size_t len = 64;
        for (int i = 0; i < nt; i++)
            len += strlen(titems[i].path) + 16;
        char *s = malloc(len), *p = s;
        if (s) {
            for (int i = 0; i < nt; i++)
                p += sprintf(p, "%s|%d\n", titems[i].path, titems[i].label);
            *p = '\0';
            wisp_trainer_fingerprint(tr, s, data_id);
            free(s);
        }
    }
    ro.fingerprint_extra = data_id;
    ro.stop = &s_stop;
    rc = wisp_trainer_run(tr, titems, nt, vitems, nv, &ro, &err);
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
    wisp_manifest_free(&train);
    wisp_manifest_free(&val);
    if (have_head)
        wisp_head_config_free(&head);
    free(titems);
    free(vitems);
    free(cw);
    return exit_code;
}
