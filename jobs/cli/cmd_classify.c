/* wisp classify: label audio files with a model (+ adapter, head) into one HDF5 file,
 * in one process. Rows in input order; unreadable files become error rows; a killed
 * run continues with --resume (the results writer's journal). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify/classifier.h"
#include "cli/commands.h"
#include "formats/config.h"
#include "base/log.h"
#include "formats/manifest.h"
#include "formats/results.h"
#include "nn/blas.h"
#include "base/util.h"

static volatile sig_atomic_t s_interrupted = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: wisp classify --model DIR [--adapter DIR] [--head DIR] [--truncate]\n"
        "                     [--embeddings] [--batch N] [--threads N] [--resume]\n"
        "                     [--precision fp32|int8 [--compare-fp32 N]]\n"
        "                     -o OUT.h5 (AUDIO... | --manifest FILE)\n"
        "\n"
        "Labels audio files with a Whisper encoder + adapter + classification head and\n"
        "writes one HDF5 file, one row per input in input order: path, label, score,\n"
        "probs, logits, [embedding], duration, status, error, [true_label], classes.\n"
        "\n"
        "  --model DIR      Hugging Face Whisper checkpoint directory\n"
        "  --adapter DIR    adapter in the adapters-library layout (adapter_config.json)\n"
        "  --head DIR       classification head (head_config.json + model_head.safetensors);\n"
        "                   default: the checkpoint's own head (WhisperForAudioClassification)\n"
        "  --truncate       features of the clip's own length instead of padding to 30 s\n"
        "                   (much faster for short clips; results differ from HF by design)\n"
        "  --embeddings     also store the pooled projector output [N, P]\n"
        "  --batch N        clips per forward pass (default 8)\n"
        "  --threads N      OpenBLAS threads (default: all cores)\n"
        "  --manifest FILE  CSV (path[,label]), JSONL or audiofolder directory; labels\n"
        "                   become the true_label column and accuracy metrics\n"
        "  --resume         continue an interrupted run writing the same OUT.h5\n"
        "  --precision P    fp32 (default) or int8: the frozen encoder linears in int8\n"
        "                   (per-channel weights, per-token inputs; about 1.5x faster at\n"
        "                   whisper-base); attention, adapters and head stay fp32\n"
        "  --compare-fp32 N with int8: also run the first N inputs in fp32 and print the\n"
        "                   top-1 agreement and the logits' relative RMS difference (check\n"
        "                   your own checkpoint: trained weights can have outlier channels)\n"
        "  -o, --output F   the HDF5 file to write\n"
        "\n"
        "Exit status: 0 all files classified, 1 some files failed (see status/error),\n"
        "2 usage error, 3 could not run.\n"
        "\n"
        "examples:\n"
        "  wisp classify --model whisper-tiny --adapter out/adapter --head out/head \\\n"
        "      -o labels.h5 --manifest data/test.csv\n"
        "  wisp classify --model my-classifier --truncate -o out.h5 a.wav b.flac\n"
        "  python3 -c \"import h5py, pandas as pd; f = h5py.File('out.h5');\n"
        "      print(pd.DataFrame({k: f[k][:] for k in ('path', 'label', 'score')}))\"\n");
}

/* sha256 of the first existing file among DIR/name[i]; "" when none. */
static void s_dir_sha(const char *dir, const char *const *names, char hex[65])
{
    hex[0] = '\0';
    if (!dir)
        return;
    for (int i = 0; names[i]; i++) {
        char path[4096];
        if (wisp_path_join(path, sizeof path, dir, names[i]) != WISP_OK)
            continue;
        if (access(path, R_OK) == 0 && wisp_sha256_file(path, hex, NULL) == WISP_OK)
            return;
    }
}

typedef struct {
    const char *model, *adapter, *head, *manifest, *output;
    int truncate, embeddings, batch, threads, resume;
    int precision, compare; /* WISP_PRECISION_*, --compare-fp32 N */
} s_args_t;

/* --precision and --compare-fp32 (the two options of the int8 path). */
static int s_parse_precision(int c, const char *v, s_args_t *a)
{
    char *end = NULL;
    if (c == 'P' && (strcmp(v, "fp32") == 0 || strcmp(v, "int8") == 0)) {
        a->precision = strcmp(v, "int8") == 0 ? WISP_PRECISION_INT8 : WISP_PRECISION_FP32;
        return 0;
    }
    long n = c == 'C' ? strtol(v, &end, 10) : -1;
    if (c == 'C' && end && !*end && n >= 1 && n <= 1000000) {
        a->compare = (int)n;
        return 0;
    }
    fprintf(stderr, "wisp classify: --%s: bad value '%s'\n",
            c == 'P' ? "precision (fp32 or int8)" : "compare-fp32 (a count >= 1)", v);
    return WISP_EXIT_USAGE;
}

static int s_parse(int argc, char **argv, s_args_t *a)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},
        {"adapter", required_argument, 0, 'a'},
        {"head", required_argument, 0, 'H'},
        {"truncate", no_argument, 0, 't'},
        {"embeddings", no_argument, 0, 'e'},
        {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 'j'},
        {"manifest", required_argument, 0, 'M'},
        {"output", required_argument, 0, 'o'},
        {"resume", no_argument, 0, 'r'},
        {"precision", required_argument, 0, 'P'},
        {"compare-fp32", required_argument, 0, 'C'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->batch = 8;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", longs, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'a': a->adapter = optarg; break;
        case 'H': a->head = optarg; break;
        case 't': a->truncate = 1; break;
        case 'e': a->embeddings = 1; break;
        case 'M': a->manifest = optarg; break;
        case 'o': a->output = optarg; break;
        case 'r': a->resume = 1; break;
        case 'b':
        case 'j': {
            long v = strtol(optarg, &end, 10);
            if (!end || *end || v < (c == 'b' ? 1 : 0) || v > 4096) {
                fprintf(stderr, "wisp classify: --%s: bad value '%s'\n",
                        c == 'b' ? "batch" : "threads", optarg);
                return WISP_EXIT_USAGE;
            }
            *(c == 'b' ? &a->batch : &a->threads) = (int)v;
            break;
        }
        case 'P':
        case 'C':
            if (s_parse_precision(c, optarg, a))
                return WISP_EXIT_USAGE;
            break;
        case 'h': s_usage(stdout); return -1;
        default: s_usage(stderr); return WISP_EXIT_USAGE;
        }
    }
    const char *missing = !a->model ? "--model" : !a->output ? "-o OUT.h5" : NULL;
    if (missing) {
        fprintf(stderr, "wisp classify: %s is required (wisp classify --help)\n", missing);
        return WISP_EXIT_USAGE;
    }
    if (a->compare && a->precision != WISP_PRECISION_INT8) {
        fprintf(stderr, "wisp classify: --compare-fp32 compares --precision int8 with fp32\n");
        return WISP_EXIT_USAGE;
    }
    if (!!a->manifest == (optind < argc)) {
        fprintf(stderr, "wisp classify: give either AUDIO files or --manifest FILE\n");
        return WISP_EXIT_USAGE;
    }
    return WISP_EXIT_OK;
}

/* --compare-fp32 N: the first n inputs through the int8 classifier cl and an fp32 one
 * built from the same options; prints top-1 agreement and the logits' relative RMS
 * difference (sqrt(sum (l8 - l32)^2 / sum l32^2) over the clips both decoded). */
static int s_compare_fp32(wisp_classifier_t *cl, const wisp_classifier_opts_t *co,
                          const char **paths, int n, wisp_error_t *err)
{
    wisp_classifier_opts_t o = *co;
    o.precision = WISP_PRECISION_FP32;
    o.embeddings = 0;
    const int C = wisp_classifier_num_classes(cl);
    wisp_classifier_t *ref = wisp_classifier_new(&o, err);
    wisp_classifier_result_t *r8 = calloc((size_t)n, sizeof *r8),
                             *r32 = calloc((size_t)n, sizeof *r32);
    float *p = malloc((size_t)n * C * sizeof *p), *l8 = malloc((size_t)n * C * sizeof *l8);
    float *l32 = malloc((size_t)n * C * sizeof *l32);
    int rc = !ref ? err->code
             : !r8 || !r32 || !p || !l8 || !l32
                 ? wisp_error_set(err, WISP_ERR_NOMEM, "out of memory")
                 : 0;
    if (rc == 0)
        rc = wisp_classifier_run(cl, paths, n, r8, p, l8, NULL, err);
    if (rc == 0)
        rc = wisp_classifier_run(ref, paths, n, r32, p, l32, NULL, err);
    if (rc == 0) {
        int both = 0, agree = 0;
        double se = 0, sr = 0;
        for (int i = 0; i < n; i++) {
            if (r8[i].status || r32[i].status)
                continue;
            both++;
            agree += r8[i].label == r32[i].label;
            for (int c = 0; c < C; c++) {
                double d = (double)l8[(size_t)i * C + c] - l32[(size_t)i * C + c];
                se += d * d;
                sr += (double)l32[(size_t)i * C + c] * l32[(size_t)i * C + c];
            }
        }
        printf("int8 vs fp32 on the first %d inputs (%d decoded): top-1 agreement %d/%d "
               "(%.2f%%), logits relative RMS %.3g\n",
               n, both, agree, both, both ? 100.0 * agree / both : 0.0,
               sr > 0 ? sqrt(se / sr) : 0.0);
    }
    wisp_classifier_destroy(&ref);
    free(r8), free(r32), free(p), free(l8), free(l32);
    return rc;
}

int wisp_cmd_classify(int argc, char **argv)
{
    s_args_t a;
    int rc = s_parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? WISP_EXIT_OK : rc;

    int exit_code = WISP_EXIT_FAILURE;
    wisp_error_t err = {0};
    wisp_classifier_t *cl = NULL;
    wisp_results_t *res = NULL;
    wisp_manifest_t man;
    memset(&man, 0, sizeof man);
    const char **paths = NULL;
    const char **classes = NULL;
    wisp_classifier_result_t *rows = NULL;
    float *probs = NULL, *logits = NULL, *embed = NULL;
    size_t *todo = NULL;
    char *desc = NULL;
    size_t n = 0;
    double t0 = wisp_now();

    /* Early, so an interrupt during loading also ends the run cleanly. */
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    wisp_classifier_opts_t co;
    wisp_classifier_default_opts(&co);
    co.model_dir = a.model;
    co.adapter_dir = a.adapter;
    co.head_dir = a.head;
    co.truncate = a.truncate;
    co.embeddings = a.embeddings;
    co.batch = a.batch;
    co.threads = a.threads;
    co.precision = a.precision;
    cl = wisp_classifier_new(&co, &err);
    if (!cl)
        goto done;
    const int C = wisp_classifier_num_classes(cl), P = wisp_classifier_embed_dim(cl);
    classes = calloc((size_t)C, sizeof *classes);
    if (!classes)
        goto nomem;
    for (int c = 0; c < C; c++)
        classes[c] = wisp_classifier_class_name(cl, c);

    if (a.manifest) {
        if (wisp_manifest_load(&man, a.manifest, classes, C, &err) != WISP_OK)
            goto done;
        n = man.n_items;
    } else {
        n = (size_t)(argc - optind);
    }
    paths = calloc(n, sizeof *paths);
    todo = calloc(n, sizeof *todo);
    if (!paths || !todo)
        goto nomem;
    for (size_t i = 0; i < n; i++)
        paths[i] = a.manifest ? man.items[i].path : argv[optind + (int)i];

    /* Identities and the run fingerprint (what must match to resume). */
    static const char *const model_files[] = {"model.safetensors", "model.safetensors.index.json",
                                              NULL};
    static const char *const adapter_files[] = {"adapter.safetensors", NULL};
    static const char *const head_files[] = {"model_head.safetensors", NULL};
    char model_sha[65], adapter_sha[65], head_sha[65], fingerprint[65];
    s_dir_sha(a.model, model_files, model_sha);
    s_dir_sha(a.adapter, adapter_files, adapter_sha);
    s_dir_sha(a.head, head_files, head_sha);
    cJSON *cfg = cJSON_CreateObject();
    if (!cfg)
        goto nomem;
    cJSON_AddStringToObject(cfg, "command", "classify");
    cJSON_AddStringToObject(cfg, "model", a.model);
    cJSON_AddStringToObject(cfg, "adapter", a.adapter ? a.adapter : "");
    cJSON_AddStringToObject(cfg, "head", a.head ? a.head : "");
    cJSON_AddStringToObject(cfg, "manifest", a.manifest ? a.manifest : "");
    cJSON_AddBoolToObject(cfg, "truncate", a.truncate);
    cJSON_AddBoolToObject(cfg, "embeddings", a.embeddings);
    cJSON_AddNumberToObject(cfg, "batch", a.batch);
    cJSON_AddStringToObject(cfg, "precision", a.precision ? "int8" : "fp32");
    desc = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    if (!desc)
        goto nomem;
    {
        size_t len = strlen(desc) + 3 * 65 + 64;
        for (size_t i = 0; i < n; i++)
            len += strlen(paths[i]) + 1;
        char *all = malloc(len);
        if (!all)
            goto nomem;
        /* int8 rows differ from fp32 ones: a resume must not mix them (fp32 keeps the
                         old fingerprint) */
        int k = snprintf(all, len, "%s|%s|%s|%d|%d|%s", model_sha, adapter_sha, head_sha,
                         a.truncate, a.embeddings, a.precision ? "int8|" : "");
        size_t off = (size_t)k;
        for (size_t i = 0; i < n; i++)
            off += (size_t)snprintf(all + off, len - off, "%s\n", paths[i]);
        wisp_sha256_hex(all, strlen(all), fingerprint);
        free(all);
    }
    wisp_results_attr_t attrs[4] = {{"config", desc},
                                    {"model_sha256", model_sha},
                                    {"adapter_sha256", adapter_sha},
                                    {"head_sha256", head_sha}};
    wisp_results_opts_t ro = wisp_results_default_opts();
    ro.path = a.output;
    ro.n_rows = n;
    ro.n_classes = C;
    ro.classes = classes;
    ro.embed_dim = a.embeddings ? P : 0;
    ro.has_true_label = a.manifest && man.n_labeled > 0;
    ro.fingerprint = fingerprint;
    ro.resume = a.resume;
    ro.attrs = attrs;
    ro.n_attrs = 4;
    res = wisp_results_open(&ro, &err);
    if (!res || s_interrupted)
        goto done;

    size_t n_todo = 0;
    for (size_t i = 0; i < n; i++)
        if (!wisp_results_row_done(res, i))
            todo[n_todo++] = i;
    if (n_todo < n)
        WISP_LOGI("resuming: %zu of %zu rows already done", n - n_todo, n);

    const int chunk = a.batch * 4;
    rows = calloc((size_t)chunk, sizeof *rows);
    probs = malloc((size_t)chunk * C * sizeof(float));
    logits = malloc((size_t)chunk * C * sizeof(float));
    embed = malloc((size_t)chunk * (P > 0 ? P : 1) * sizeof(float));
    const char **cpaths = calloc((size_t)chunk, sizeof *cpaths);
    if (!rows || !probs || !logits || !embed || !cpaths) {
        free(cpaths);
        goto nomem;
    }
    int tty = isatty(2);
    size_t done_rows = 0;
    double t_run = wisp_now();
    for (size_t s = 0; s < n_todo && !s_interrupted; s += (size_t)chunk) {
        int k = (int)(n_todo - s < (size_t)chunk ? n_todo - s : (size_t)chunk);
        for (int j = 0; j < k; j++)
            cpaths[j] = paths[todo[s + j]];
        if (wisp_classifier_run(cl, cpaths, k, rows, probs, logits, embed, &err) != WISP_OK)
            break;
        for (int j = 0; j < k && rc == WISP_OK; j++) {
            size_t i = todo[s + j];
            const wisp_classifier_result_t *r = &rows[j];
            wisp_result_row_t row = {
                .index = i,
                .path = paths[i],
                .label = r->label,
                .score = r->score,
                .probs = r->status ? NULL : probs + (size_t)j * C,
                .logits = r->status ? NULL : logits + (size_t)j * C,
                .embedding = r->status || !a.embeddings ? NULL : embed + (size_t)j * P,
                .duration = (float)r->duration,
                .status = (int8_t)r->status,
                .error = r->error,
                .true_label = a.manifest ? man.items[i].label : -1,
            };
            int pr = wisp_results_put(res, &row, &err);
            if (pr < 0)
                rc = pr;
        }
        if (rc != WISP_OK || wisp_results_commit(res, &err) != WISP_OK)
            break;
        done_rows += (size_t)k;
        if (tty) {
            double el = wisp_now() - t_run, rate = el > 0 ? done_rows / el : 0;
            double eta = rate > 0 ? (double)(n_todo - done_rows) / rate : 0;
            fprintf(stderr, "\r%zu/%zu files  %.1f files/s  %zu failed  ETA %d:%02d   ",
                    n - n_todo + done_rows, n, rate, wisp_results_error_count(res), (int)(eta / 60),
                    (int)eta % 60);
        }
    }
    free(cpaths);
    if (tty && done_rows)
        fprintf(stderr, "\n");
    if (err.code)
        goto done;
    if (s_interrupted) {
        WISP_LOGW("interrupted: %zu rows committed; rerun with --resume to finish",
                  wisp_results_done_count(res));
        exit_code = WISP_EXIT_INTERRUPTED;
        goto done;
    }
    size_t failed = wisp_results_error_count(res);
    char summary[512];
    double secs = wisp_now() - t0;
    snprintf(summary, sizeof summary,
             "{\"files\":%zu,\"ok\":%zu,\"failed\":%zu,\"seconds\":%.3f,\"files_per_s\":%.3f,"
             "\"blas\":\"%s\"}", /* nn/blas.h: no quote or backslash in it */
             n, n - failed, failed, secs, done_rows / (wisp_now() - t_run + 1e-9),
             wisp_blas_summary());
    if (wisp_results_finish(res, summary, 0, &err) != WISP_OK)
        goto done;
    WISP_LOGI("%zu files: %zu ok, %zu failed, %.1f s -> %s", n, n - failed, failed, secs, a.output);
    if (a.compare &&
        s_compare_fp32(cl, &co, paths, n < (size_t)a.compare ? (int)n : a.compare, &err) != WISP_OK)
        goto done;
    exit_code = failed ? WISP_EXIT_PARTIAL : WISP_EXIT_OK;
    goto done;
nomem:
    wisp_error_set(&err, WISP_ERR_NOMEM, "out of memory");
done:
    if (s_interrupted && exit_code == WISP_EXIT_FAILURE && !err.code)
        exit_code = WISP_EXIT_INTERRUPTED;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (err.code)
        fprintf(stderr, "wisp classify: %s\n", err.msg);
    wisp_results_destroy(&res);
    wisp_classifier_destroy(&cl);
    wisp_manifest_free(&man);
    free(paths);
    free(classes);
    free(rows);
    free(probs);
    free(logits);
    free(embed);
    free(todo);
    free(desc);
    return exit_code;
}
