/* wisp classify: label audio files with a model (+ adapter, head) into one HDF5 file,
 * in one process. Rows in input order; unreadable files become error rows; a killed
 * run continues with --resume (the results writer's journal). The run's identity and
 * rows are those of the distributed classify job (jobs/classify/classify_run.h), so the
 * two write the same file. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "classify/classifier.h"
#include "classify/classify_run.h"
#include "cli/commands.h"
#include "nn/blas.h"

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
        "                     [--window[=S]] [--hop S] [--aggregate mean|max] [--top-k K]\n"
        "                     [--embeddings] [--batch N] [--threads N] [--resume]\n"
        "                     [--precision fp32|int8 [--compare-fp32 N]]\n"
        "                     -o OUT.h5 (AUDIO... | --manifest FILE)\n"
        "\n"
        "Labels audio files with a Whisper encoder + adapter + classification head and\n"
        "writes one HDF5 file, one row per input in input order: path, label, label_name,\n"
        "score, probs, logits, [top_k_label, top_k_prob], [embedding], duration, status,\n"
        "error, note, [true_label], classes; with --window also the segments group.\n"
        "\n"
        "  --model DIR      Hugging Face Whisper checkpoint directory\n"
        "  --adapter DIR    adapter in the adapters-library layout (adapter_config.json)\n"
        "  --head DIR       classification head (head_config.json + model_head.safetensors);\n"
        "                   default: the checkpoint's own head (WhisperForAudioClassification)\n"
        "  --truncate       features of the clip's own length instead of padding to 30 s\n"
        "                   (much faster for short clips; results differ from HF by design;\n"
        "                   must match how the head was trained: its features.json)\n"
        "  --window[=S]     long audio: classify windows of S seconds (default 30) over the\n"
        "                   whole file, one row per window in segments/, the file row the\n"
        "                   aggregate of its windows. Without it only the first 30 s count\n"
        "                   (the row's note says so)\n"
        "  --hop S          seconds between window starts (default: the window)\n"
        "  --aggregate A    file row from its windows: mean (default) or max of the\n"
        "                   window probabilities\n"
        "  --top-k K        also store the K most probable classes and their probabilities\n"
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
        "2 usage error, 3 could not run, 130 interrupted (rerun with --resume).\n"
        "\n"
        "examples:\n"
        "  wisp classify --model whisper-tiny --adapter out/adapter --head out/head \\\n"
        "      -o labels.h5 --manifest data/test.csv --top-k 3\n"
        "  wisp classify --model my-classifier --truncate -o out.h5 a.wav b.flac\n"
        "  wisp classify --model my-classifier --window --hop 15 -o long.h5 meeting.flac\n"
        "  wisp report out.h5 --csv out.csv     # a CSV for tools without HDF5\n"
        "  python3 -c \"import h5py, pandas as pd; f = h5py.File('out.h5');\n"
        "      print(pd.DataFrame({k: f[k][:] for k in ('path', 'label', 'score')}))\"\n");
}

typedef struct {
    const char *model, *adapter, *head, *manifest, *output;
    int truncate, embeddings, batch, threads, resume, top_k;
    wisp_windows_opts_t window;
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

/* A number option in [lo, hi]; 0 when it parsed. */
static int s_number(const char *name, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    double x = strtod(v, &end);
    if (!end || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "wisp classify: --%s: bad value '%s' (%g..%g)\n", name, v, lo, hi);
        return WISP_EXIT_USAGE;
    }
    *out = x;
    return 0;
}

static int s_option(int c, s_args_t *a)
{
    double x = 0;
    wisp_error_t e = {0};
    int rc = 0;
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
        if (!(rc = s_number("batch", optarg, 1, 4096, &x)))
            a->batch = (int)x;
        break;
    case 'j':
        if (!(rc = s_number("threads", optarg, 0, 4096, &x)))
            a->threads = (int)x;
        break;
    case 'k':
        if (!(rc = s_number("top-k", optarg, 0, 1000, &x)))
            a->top_k = (int)x;
        break;
    case 'w':
        a->window.seconds = 30;
        if (optarg && !(rc = s_number("window", optarg, 0.001, 30, &x)))
            a->window.seconds = x;
        break;
    case 'p':
        if (!(rc = s_number("hop", optarg, 0.001, 30, &x)))
            a->window.hop = x;
        break;
    case 'g':
        if (wisp_windows_parse_aggregate(optarg, &a->window.aggregate, &e) != WISP_OK) {
            fprintf(stderr, "wisp classify: --aggregate: %s\n", e.msg);
            rc = WISP_EXIT_USAGE;
        }
        break;
    case 'P':
    case 'C': rc = s_parse_precision(c, optarg, a); break;
    case 'h': s_usage(stdout); return -1;
    default: s_usage(stderr); return WISP_EXIT_USAGE;
    }
    return rc;
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
        {"top-k", required_argument, 0, 'k'},
        {"window", optional_argument, 0, 'w'},
        {"hop", required_argument, 0, 'p'},
        {"aggregate", required_argument, 0, 'g'},
        {"precision", required_argument, 0, 'P'},
        {"compare-fp32", required_argument, 0, 'C'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->batch = 8;
    optind = 1;
    int c, rc;
    while ((c = getopt_long(argc, argv, "o:h", longs, NULL)) != -1)
        if ((rc = s_option(c, a)) != 0)
            return rc;
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
    if ((a->window.hop > 0 || a->window.aggregate != WISP_WINDOWS_MEAN) && !a->window.seconds) {
        fprintf(stderr, "wisp classify: --hop and --aggregate need --window\n");
        return WISP_EXIT_USAGE;
    }
    return WISP_EXIT_OK;
}

/* The "config" attribute: what was run. */
static char *s_config_json(const s_args_t *a)
{
    cJSON *cfg = cJSON_CreateObject();
    if (!cfg)
        return NULL;
    cJSON_AddStringToObject(cfg, "command", "classify");
    cJSON_AddStringToObject(cfg, "model", a->model);
    cJSON_AddStringToObject(cfg, "adapter", a->adapter ? a->adapter : "");
    cJSON_AddStringToObject(cfg, "head", a->head ? a->head : "");
    cJSON_AddStringToObject(cfg, "manifest", a->manifest ? a->manifest : "");
    cJSON_AddBoolToObject(cfg, "truncate", a->truncate);
    cJSON_AddBoolToObject(cfg, "embeddings", a->embeddings);
    cJSON_AddNumberToObject(cfg, "batch", a->batch);
    cJSON_AddStringToObject(cfg, "precision", a->precision ? "int8" : "fp32");
    cJSON_AddNumberToObject(cfg, "top_k", a->top_k);
    cJSON_AddNumberToObject(cfg, "window", a->window.seconds);
    cJSON_AddNumberToObject(cfg, "hop", a->window.hop);
    cJSON_AddStringToObject(cfg, "aggregate", wisp_windows_aggregate_name(a->window.aggregate));
    char *s = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    return s;
}

/* Buffers for one chunk of `chunk` files. */
typedef struct {
    int chunk;
    wisp_classifier_result_t *rows;
    float *probs, *logits, *embed;
    const char **paths;
    size_t *items;
} s_chunk_t;

static void s_chunk_free(s_chunk_t *k)
{
    free(k->rows);
    free(k->probs);
    free(k->logits);
    free(k->embed);
    free(k->paths);
    free(k->items);
}

static int s_chunk_alloc(s_chunk_t *k, int chunk, int C, int P)
{
    memset(k, 0, sizeof *k);
    k->chunk = chunk;
    k->rows = calloc((size_t)chunk, sizeof *k->rows);
    k->probs = malloc((size_t)chunk * C * sizeof(float));
    k->logits = malloc((size_t)chunk * C * sizeof(float));
    k->embed = malloc((size_t)chunk * (P > 0 ? P : 1) * sizeof(float));
    k->paths = calloc((size_t)chunk, sizeof *k->paths);
    k->items = calloc((size_t)chunk, sizeof *k->items);
    return k->rows && k->probs && k->logits && k->embed && k->paths && k->items ? 0 : -1;
}

/* Classifies every row not done yet, committing chunk by chunk; stops early on an
 * interrupt (rows committed so far stay). */
static int s_classify_rows(wisp_classify_run_t *run, wisp_classifier_t *cl, int batch,
                           size_t *done_rows, wisp_error_t *err)
{
    const size_t n = wisp_classify_run_count(run);
    wisp_results_t *res = wisp_classify_run_results(run);
    s_chunk_t ck;
    int rc = WISP_OK;
    if (s_chunk_alloc(&ck, batch * 4, wisp_classify_run_num_classes(run),
                      wisp_classifier_embed_dim(cl)) < 0) {
        s_chunk_free(&ck);
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    }
    size_t n_todo = 0, next = 0;
    for (size_t i = 0; i < n; i++)
        n_todo += !wisp_results_row_done(res, i);
    if (n_todo < n)
        WISP_LOGI("resuming: %zu of %zu rows already done", n - n_todo, n);
    double t0 = wisp_now();
    while (rc == WISP_OK && !s_interrupted) {
        int k = 0;
        for (; next < n && k < ck.chunk; next++)
            if (!wisp_results_row_done(res, next)) {
                ck.items[k] = next;
                ck.paths[k++] = wisp_classify_run_path(run, next);
            }
        if (k == 0)
            break;
        rc = wisp_classifier_run(cl, ck.paths, k, ck.rows, ck.probs, ck.logits, ck.embed, err);
        for (int j = 0; j < k && rc == WISP_OK; j++) {
            wisp_classify_file_t f =
                wisp_classify_file_of(cl, ck.rows, j, ck.probs, ck.logits, ck.embed);
            int pr = wisp_classify_run_put(run, ck.items[j], &f, err);
            rc = pr < 0 ? pr : WISP_OK;
        }
        if (rc == WISP_OK)
            rc = wisp_results_commit(res, err);
        if (rc == WISP_OK)
            *done_rows += (size_t)k;
        double el = wisp_now() - t0, rate = el > 0 ? (double)*done_rows / el : 0;
        double eta = rate > 0 ? (double)(n_todo - *done_rows) / rate : 0;
        wisp_log_progress("%zu/%zu files  %.1f files/s  %zu failed  ETA %d:%02d",
                          n - n_todo + *done_rows, n, rate, wisp_results_error_count(res),
                          (int)(eta / 60), (int)eta % 60);
    }
    wisp_log_progress_end();
    s_chunk_free(&ck);
    return rc;
}

/* The run summary (the "summary" attribute) and the final log line. */
static int s_finish(wisp_classify_run_t *run, const char *output, size_t done_rows, double t0,
                    double t_run, wisp_error_t *err)
{
    wisp_results_t *res = wisp_classify_run_results(run);
    size_t n = wisp_classify_run_count(run), failed = wisp_results_error_count(res);
    size_t capped = wisp_classify_run_capped(run);
    char summary[512];
    double secs = wisp_now() - t0;
    snprintf(summary, sizeof summary,
             "{\"files\":%zu,\"ok\":%zu,\"failed\":%zu,\"capped_at_30s\":%zu,\"seconds\":%.3f,"
             "\"files_per_s\":%.3f,\"blas\":\"%s\"}", /* nn/blas.h: no quote or backslash */
             n, n - failed, failed, capped, secs, (double)done_rows / (wisp_now() - t_run + 1e-9),
             wisp_blas_summary());
    int rc = wisp_results_finish(res, summary, 0, err);
    if (rc != WISP_OK)
        return rc;
    if (capped)
        WISP_LOGW("%zu file(s) longer than 30 s: only their first 30 s were classified (see the "
                  "note column; --window classifies all of it)",
                  capped);
    WISP_LOGI("%zu files: %zu ok, %zu failed, %.1f s -> %s", n, n - failed, failed, secs, output);
    return failed ? WISP_EXIT_PARTIAL : WISP_EXIT_OK;
}

static wisp_classifier_t *s_classifier(const s_args_t *a, int precision, wisp_error_t *err)
{
    wisp_classifier_opts_t co;
    wisp_classifier_default_opts(&co);
    co.model_dir = a->model;
    co.adapter_dir = a->adapter;
    co.head_dir = a->head;
    co.truncate = a->truncate;
    co.embeddings = a->embeddings;
    co.batch = a->batch;
    co.threads = a->threads;
    co.window = a->window;
    co.precision = precision;
    return wisp_classifier_new(&co, err);
}

/* --compare-fp32 N: the first n inputs of run through the int8 classifier cl and an
 * fp32 one built from the same options; prints top-1 agreement and the logits' relative
 * RMS difference (sqrt(sum (l8 - l32)^2 / sum l32^2) over the clips both decoded). */
static int s_compare_fp32(wisp_classifier_t *cl, const s_args_t *a, wisp_classify_run_t *run,
                          wisp_error_t *err)
{
    size_t total = wisp_classify_run_count(run);
    int n = total < (size_t)a->compare ? (int)total : a->compare;
    s_args_t o = *a;
    o.embeddings = 0;
    const int C = wisp_classifier_num_classes(cl);
    wisp_classifier_t *ref = n > 0 ? s_classifier(&o, WISP_PRECISION_FP32, err) : NULL;
    const char **paths = calloc((size_t)n + 1, sizeof *paths);
    wisp_classifier_result_t *r8 = calloc((size_t)n + 1, sizeof *r8);
    wisp_classifier_result_t *r32 = calloc((size_t)n + 1, sizeof *r32);
    float *p = malloc(((size_t)n + 1) * C * sizeof *p), *l8 = malloc(((size_t)n + 1) * C * 4);
    float *l32 = malloc(((size_t)n + 1) * C * sizeof *l32);
    int rc = n > 0 && !ref ? err->code
             : !paths || !r8 || !r32 || !p || !l8 || !l32
                 ? wisp_error_set(err, WISP_ERR_NOMEM, "out of memory")
                 : 0;
    for (int i = 0; rc == 0 && i < n; i++)
        paths[i] = wisp_classify_run_path(run, (size_t)i);
    if (rc == 0 && n > 0)
        rc = wisp_classifier_run(cl, paths, n, r8, p, l8, NULL, err);
    if (rc == 0 && n > 0)
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
    free(paths), free(r8), free(r32), free(p), free(l8), free(l32);
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
    wisp_classify_run_t *run = NULL;
    size_t done_rows = 0;
    double t0 = wisp_now();
    /* Early, so an interrupt during loading also ends the run cleanly. */
    signal(SIGINT, s_on_signal);
    signal(SIGTERM, s_on_signal);
    wisp_classifier_t *cl = s_classifier(&a, a.precision, &err);
    char *desc = s_config_json(&a);
    if (!cl || !desc) {
        if (cl)
            wisp_error_set(&err, WISP_ERR_NOMEM, "out of memory");
        goto done;
    }
    wisp_classify_run_opts_t ro = {
        .model = a.model,
        .adapter = a.adapter,
        .head = a.head,
        .manifest = a.manifest,
        .paths = (const char *const *)argv + optind,
        .n_paths = a.manifest ? 0 : (size_t)(argc - optind),
        .output = a.output,
        .truncate = a.truncate,
        .precision = a.precision,
        .embedding = a.embeddings,
        .top_k = a.top_k,
        .resume = a.resume,
        .window = a.window,
        .config_json = desc,
    };
    run = wisp_classify_run_open(&ro, &err);
    if (!run || s_interrupted)
        goto done;
    if (wisp_classify_run_num_classes(run) != wisp_classifier_num_classes(cl)) {
        wisp_error_set(&err, WISP_ERR_SHAPE, "%s: the head has %d classes, its config says %d",
                       a.head ? a.head : a.model, wisp_classifier_num_classes(cl),
                       wisp_classify_run_num_classes(run));
        goto done;
    }
    double t_run = wisp_now();
    if (s_classify_rows(run, cl, a.batch, &done_rows, &err) != WISP_OK)
        goto done;
    if (s_interrupted) {
        WISP_LOGW("interrupted: %zu rows committed; rerun with --resume to finish",
                  wisp_results_done_count(wisp_classify_run_results(run)));
        exit_code = WISP_EXIT_INTERRUPTED;
        goto done;
    }
    rc = s_finish(run, a.output, done_rows, t0, t_run, &err);
    if (rc >= 0 && a.compare && s_compare_fp32(cl, &a, run, &err) != WISP_OK)
        goto done;
    if (rc >= 0)
        exit_code = rc;
done:
    if (s_interrupted && exit_code == WISP_EXIT_FAILURE && !err.code)
        exit_code = WISP_EXIT_INTERRUPTED;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (err.code)
        fprintf(stderr, "wisp classify: %s\n", err.msg);
    wisp_classify_run_destroy(&run);
    wisp_classifier_destroy(&cl);
    free(desc);
    return exit_code;
}
