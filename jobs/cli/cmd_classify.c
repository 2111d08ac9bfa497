/* wisp classify: label audio files with a model (+ adapter, head) into one HDF5 file,
 * in one process. Rows in input order; unreadable files become error rows; a killed
 * run continues with --resume (the results writer's journal). */
#include <cjson/cJSON.h>
#include <getopt.h>
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
} s_args_t;

static int s_parse(int argc, char **argv, s_args_t *a)
{
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},   {"adapter", required_argument, 0, 'a'},
        {"head", required_argument, 0, 'H'},    {"truncate", no_argument, 0, 't'},
        {"embeddings", no_argument, 0, 'e'},    {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 'j'}, {"manifest", required_argument, 0, 'M'},
        {"output", required_argument, 0, 'o'},  {"resume", no_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
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
        case 'h': s_usage(stdout); return -1;
        default: s_usage(stderr); return WISP_EXIT_USAGE;
        }
    }
    const char *missing = !a->model ? "--model" : !a->output ? "-o OUT.h5" : NULL;
    if (missing) {
        fprintf(stderr, "wisp classify: %s is required (wisp classify --help)\n", missing);
        return WISP_EXIT_USAGE;
    }
    if (!!a->manifest == (optind < argc)) {
        fprintf(stderr, "wisp classify: give either AUDIO files or --manifest FILE\n");
        return WISP_EXIT_USAGE;
    }
    return WISP_EXIT_OK;
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
        int k = snprintf(all, len, "%s|%s|%s|%d|%d|", model_sha, adapter_sha, head_sha, a.truncate,
                         a.embeddings);
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
