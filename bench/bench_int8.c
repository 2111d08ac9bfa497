/* bench_int8: `classify.precision: int8` (the frozen encoder linears in int8, nn/qlinear.h)
 * against fp32, at whisper-base dimensions, one thread:
 *   int8_forward_base_1t_cpu_s / fp32_forward_base_1t_cpu_s: one padded 30 s clip, process
 *     CPU time, best of 4 (int8_forward_speedup_base_1t = their ratio);
 *   int8_agree_top1_frac, int8_logits_rel_rms: 200 synthetic clips of varied audio (8
 *     kinds of sound, 0.5-8 s, mixed formats and rates, `wisp synth`) classified in
 *     truncated mode by both precisions: the share of equal top-1 labels and
 *     sqrt(sum (l8 - l32)^2 / sum l32^2) over all logits; int8_classify_speedup_trunc is
 *     the CPU-time ratio of the two 200-clip runs (decoding included);
 *   int8_agree_top1_margin_ge_<t>_rms, int8_clips_margin_ge_<t>_rms: the agreement on the
 *     clips whose fp32 top-1/top-2 margin is at least t times the logits' RMS
 *     (int8_logits_rms), and how many there are; int8_flip_max_margin_rel: the largest
 *     such relative margin among the clips that flipped (a random model has many
 *     near-ties; the acceptance figure is still the plain agreement on all clips).
 * The model is random (init_std 0.05, head of 10 classes): random weights have no outlier
 * channels, so real checkpoints must be checked (`wisp classify --compare-fp32 N`).
 * Prints key=value lines. Usage: bench_int8 (WISP_BENCH_INT8_KEEP=1 keeps the model, head
 * and clips and prints their directory, for bench/int8_error_sim.py). */
#include <cblas.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "classify/classifier.h"
#include "cli/commands.h"
#include "nn/blas.h"
#include "nn/model.h"

#define S_CLIPS 200

static double s_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs a `wisp` subcommand in-process with its stdout report silenced. */
static int s_quiet(int (*cmd)(int, char **), int argc, char **argv)
{
    fflush(stdout);
    int saved = dup(1), nul = open("/dev/null", O_WRONLY);
    if (saved >= 0 && nul >= 0)
        dup2(nul, 1);
    int rc = cmd(argc, argv);
    fflush(stdout);
    if (saved >= 0 && nul >= 0)
        dup2(saved, 1);
    if (saved >= 0)
        close(saved);
    if (nul >= 0)
        close(nul);
    return rc;
}

/* A random whisper-base checkpoint in root/model and a 10-class head in root/head. */
static int s_make_model(const char *root, char *model, char *head, size_t cap)
{
    snprintf(model, cap, "%s/model", root);
    snprintf(head, cap, "%s/head", root);
    char *args[] = {"init-model", "--size", "base", "--init-std", "0.05",
                    "--seed",     "1",      "-o",   model,        NULL};
    if (s_quiet(wisp_cmd_init_model, 9, args) != 0)
        return -1;
    wisp_error_t err = {0};
    wisp_model_opts_t o = {.max_batch = 1, .max_frames = 3000};
    wisp_model_t *m = wisp_model_new(model, &o, &err);
    const wisp_whisper_config_t *c = m ? wisp_model_config(m) : NULL;
    wisp_head_config_t hc = {.num_labels = 10,
                             .classifier_proj_size = 256,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = c ? c->encoder_layers : 0,
                             .d_model = c ? c->d_model : 0};
    int rc =
        m && wisp_model_init_head(m, &hc, 2, &err) == 0 && wisp_model_save_head(m, head, &err) == 0
            ? 0
            : -1;
    if (rc)
        fprintf(stderr, "bench_int8: %s\n", err.msg);
    wisp_model_destroy(&m);
    return rc;
}

/* One padded 30 s clip: best process CPU seconds of 4 forwards after a warm-up. */
static double s_forward_cpu(const char *model, const char *head, int precision)
{
    wisp_error_t err = {0};
    wisp_model_opts_t o = {
        .max_batch = 1, .max_frames = 3000, .threads = 1, .precision = precision};
    wisp_model_t *m = wisp_model_new(model, &o, &err);
    if (!m || wisp_model_load_head(m, head, &err) != 0) {
        fprintf(stderr, "bench_int8: %s\n", err.msg);
        wisp_model_destroy(&m);
        return -1;
    }
    float *mel = malloc((size_t)80 * 3000 * sizeof *mel), logits[10];
    wisp_rng_t r;
    wisp_rng_seed(&r, 7);
    for (size_t i = 0; mel && i < (size_t)80 * 3000; i++)
        mel[i] = 2.0f * wisp_rng_uniform(&r) - 1.0f;
    double best = 1e30;
    for (int k = 0; mel && k < 5; k++) {
        double c0 = s_cpu_now();
        if (wisp_model_forward(m, mel, 1, 3000, logits, NULL) != 0)
            break;
        double dt = s_cpu_now() - c0;
        best = k && dt < best ? dt : best;
    }
    free(mel);
    wisp_model_destroy(&m);
    return best < 1e30 ? best : -1;
}

/* The 200 clips' paths from root/data/all.csv ("path,label" lines after a header). */
static int s_clip_paths(const char *root, char **paths, int cap)
{
    char csv[1200], line[1024];
    snprintf(csv, sizeof csv, "%s/data/all.csv", root);
    FILE *f = fopen(csv, "r");
    int n = 0;
    if (!f)
        return -1;
    for (int ln = 0; fgets(line, sizeof line, f) && n < cap; ln++) {
        char *comma = strchr(line, ',');
        if (ln == 0 || !comma)
            continue;
        *comma = '\0';
        size_t len = strlen(root) + strlen(line) + 8;
        paths[n] = malloc(len);
        if (!paths[n])
            break;
        snprintf(paths[n++], len, "%s/data/%s", root, line);
    }
    fclose(f);
    return n;
}

/* fp32 top-1 minus top-2 logit of one clip's C logits. */
static double s_margin(const float *l, int C)
{
    float a = -INFINITY, b = -INFINITY;
    for (int c = 0; c < C; c++) {
        if (l[c] > a)
            b = a, a = l[c];
        else if (l[c] > b)
            b = l[c];
    }
    return (double)a - b;
}

/* Top-1 agreement as a function of the fp32 top-1/top-2 margin: a random model maps
 * different clips to nearly the same logits, and a clip whose two best classes are a
 * hair apart flips under any perturbation. For each threshold t: the agreement on the
 * clips whose margin is >= t (t relative to the logits' RMS over all clips), and the
 * largest margin among the clips that flipped. */
static void s_margins(const float *l32, const int *agree, const int *ok, int n, int C)
{
    static const double ts[] = {0.01, 0.03, 0.1, 0.3};
    double ss = 0, worst = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; ok[i] && c < C; c++, cnt++)
            ss += (double)l32[(size_t)i * C + c] * l32[(size_t)i * C + c];
    const double rms = cnt ? sqrt(ss / cnt) : 0;
    for (int i = 0; i < n; i++)
        if (ok[i] && !agree[i] && s_margin(l32 + (size_t)i * C, C) > worst)
            worst = s_margin(l32 + (size_t)i * C, C);
    printf("int8_logits_rms=%.5f\n", rms);
    printf("int8_flip_max_margin_rel=%.4f\n", rms > 0 ? worst / rms : 0.0);
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        int m = 0, a = 0;
        for (int i = 0; i < n; i++)
            if (ok[i] && s_margin(l32 + (size_t)i * C, C) >= ts[k] * rms)
                m++, a += agree[i];
        printf("int8_agree_top1_margin_ge_%g_rms=%.4f\n", ts[k], m ? (double)a / m : 0.0);
        printf("int8_clips_margin_ge_%g_rms=%d\n", ts[k], m);
    }
}

/* Both precisions over the clips: agreement, relative RMS and the CPU-time ratio. */
static int s_agreement(const char *model, const char *head, char **paths, int n)
{
    wisp_classifier_opts_t o;
    wisp_classifier_default_opts(&o);
    o.model_dir = model, o.head_dir = head, o.truncate = 1, o.threads = 1;
    const int C = 10;
    float *p = malloc((size_t)n * C * sizeof *p), *l[2];
    l[0] = malloc((size_t)n * C * sizeof *l[0]), l[1] = malloc((size_t)n * C * sizeof *l[1]);
    wisp_classifier_result_t *res[2] = {calloc((size_t)n, sizeof *res[0]),
                                        calloc((size_t)n, sizeof *res[1])};
    double secs[2] = {0, 0};
    int rc = p && l[0] && l[1] && res[0] && res[1] ? 0 : -1;
    for (int k = 0; k < 2 && rc == 0; k++) {
        wisp_error_t err = {0};
        o.precision = k ? WISP_PRECISION_INT8 : WISP_PRECISION_FP32;
        wisp_classifier_t *cl = wisp_classifier_new(&o, &err);
        double c0 = s_cpu_now();
        rc =
            cl ? wisp_classifier_run(cl, (const char *const *)paths, n, res[k], p, l[k], NULL, &err)
               : -1;
        secs[k] = s_cpu_now() - c0;
        if (rc)
            fprintf(stderr, "bench_int8: %s\n", err.msg);
        wisp_classifier_destroy(&cl);
    }
    int *same = calloc((size_t)n, sizeof *same), *ok = calloc((size_t)n, sizeof *ok);
    if (rc == 0 && same && ok) {
        int both = 0, agree = 0;
        double se = 0, sr = 0;
        for (int i = 0; i < n; i++) {
            if (res[0][i].status || res[1][i].status)
                continue;
            both++;
            ok[i] = 1;
            same[i] = res[0][i].label == res[1][i].label;
            agree += same[i];
            for (int c = 0; c < C; c++) {
                double d = (double)l[1][(size_t)i * C + c] - l[0][(size_t)i * C + c];
                se += d * d;
                sr += (double)l[0][(size_t)i * C + c] * l[0][(size_t)i * C + c];
            }
        }
        printf("int8_clips=%d\n", both);
        printf("int8_agree_top1_frac=%.4f\n", both ? (double)agree / both : 0.0);
        printf("int8_logits_rel_rms=%.5f\n", sr > 0 ? sqrt(se / sr) : 0.0);
        printf("fp32_classify_200_trunc_cpu_s=%.3f\n", secs[0]);
        printf("int8_classify_200_trunc_cpu_s=%.3f\n", secs[1]);
        printf("int8_classify_speedup_trunc=%.2f\n", secs[0] / secs[1]);
        s_margins(l[0], same, ok, n, C);
    }
    free(same), free(ok);
    free(p), free(l[0]), free(l[1]), free(res[0]), free(res[1]);
    return rc;
}

int main(int argc, char **argv)
{
    (void)argc;
    wisp_blas_startup('L', argv); /* as every wisp binary (nn/blas.h) */
    openblas_set_num_threads(1);
    char tmpl[] = "/tmp/wisp-bench-int8-XXXXXX";
    char *root = mkdtemp(tmpl);
    char model[1100], head[1100], data[1100], cmd[1200];
    if (!root || s_make_model(root, model, head, sizeof model) < 0)
        return 1;
    double f32 = s_forward_cpu(model, head, WISP_PRECISION_FP32);
    double i8 = s_forward_cpu(model, head, WISP_PRECISION_INT8);
    if (f32 < 0 || i8 < 0)
        return 1;
    printf("fp32_forward_base_1t_cpu_s=%.4f\n", f32);
    printf("int8_forward_base_1t_cpu_s=%.4f\n", i8);
    printf("int8_forward_speedup_base_1t=%.2f\n", f32 / i8);
    snprintf(data, sizeof data, "%s/data", root);
    char *sargs[] = {"synth", "-o",      data, "--classes",     "8",   "--per-class",
                     "25",    "--seed",  "3",  "--min-seconds", "0.5", "--max-seconds",
                     "8",     "--quiet", NULL};
    char *paths[S_CLIPS];
    int n = s_quiet(wisp_cmd_synth, 14, sargs) == 0 ? s_clip_paths(root, paths, S_CLIPS) : -1;
    int rc = n > 0 ? s_agreement(model, head, paths, n) : -1;
    for (int i = 0; i < n; i++)
        free(paths[i]);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);    /* the model, head and clips */
    const char *keep = getenv("WISP_BENCH_INT8_KEEP"); /* bench/int8_error_sim.py reads them */
    if (keep && *keep)
        printf("# kept %s\n", root);
    else if (system(cmd) != 0)
        fprintf(stderr, "bench_int8: could not remove %s\n", root);
    return rc ? 1 : 0;
}
