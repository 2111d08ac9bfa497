/* bench_model: encoder + head forward per 30 s clip (padded, T = 1500) at whisper-tiny
 * and whisper-base dimensions with random weights, 1 and 2 OpenBLAS threads; GFLOP/s
 * (GEMMs + attention + convolutions) and the fraction of the sgemm peak measured in
 * the same run (2048^3); truncated mode on a 1 s clip; a seq_bn training step (zero
 * gradients, forward + backward, AdamW update) per clip over the forward of the same
 * seq_bn model (train_over_forward_*) and the peak resident memory the training model
 * adds (train_peak_rss_mb_*); planned bytes. Prints key=value lines.
 * Wall times are best of 5; *_cpu_s keys give the process CPU time (all threads) of
 * the best-CPU run, a figure that survives a machine shared with other jobs.
 * forward_*_gflop: the FLOPs of one clip (bench/run.sh divides them by the FMA peak
 * that bench_cpu measures). demo_ftz_*: the demo's model (configs/demo_model.json,
 * init_std 0.3) on a batch of 8 clips of 1.9 s at one thread, with the FTZ+DAZ mode
 * wisp runs in (nn/blas.h) and with it cleared on the (only) computing thread.
 * The process starts as every wisp binary does (wisp_blas_startup: BLAS core, FTZ+DAZ).
 * Counterpart: bench/model_ref.py (ref_* keys).
 * Usage: bench_model [--quick] [--forward] [--size tiny|base] [--threads 1|2]
 * (--forward: the plain forwards only, no demo, truncated or training figures; --size,
 * --threads: that one model size or thread count; for iterating on the kernels). */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xmmintrin.h>

#include "cli/commands.h"
#include "nn/adamw.h"
#include "nn/blas.h"
#include "formats/config.h"
#include "nn/model.h"
#include "formats/st.h"
#include "base/util.h"

static int s_reps = 5;

static void s_fill(float *v, size_t n, wisp_rng_t *r, float scale, float offset)
{
    for (size_t i = 0; i < n; i++)
        v[i] = offset + scale * (2.0f * wisp_rng_uniform(r) - 1.0f);
}

static int s_add(wisp_st_writer_t *w, wisp_rng_t *r, const char *name, int ndim, int64_t d0,
                 int64_t d1, int64_t d2, float scale, float offset)
{
    int64_t shape[3] = {d0, d1, d2};
    size_t n = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1) * (size_t)(ndim > 2 ? d2 : 1);
    float *v = malloc(n * sizeof(float));
    if (!v)
        return -1;
    s_fill(v, n, r, scale, offset);
    int rc = wisp_st_writer_add_f32(w, name, WISP_DT_F32, ndim, shape, v);
    free(v);
    return rc;
}

/* A random checkpoint of the named size in dir (config.json + model.safetensors). */
static int s_make_checkpoint(const char *dir, const char *size, wisp_whisper_config_t *cfg)
{
    wisp_error_t err = {0};
    char path[1200], name[256];
    if (wisp_whisper_config_preset(cfg, size, &err) < 0 || wisp_mkdir_p(dir, &err) < 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return -1;
    }
    cJSON *j = wisp_whisper_config_to_json(cfg);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!j || wisp_json_save(path, j, &err) < 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        cJSON_Delete(j);
        return -1;
    }
    cJSON_Delete(j);
    wisp_rng_t r;
    wisp_rng_seed(&r, 1234);
    wisp_st_writer_t *w = wisp_st_writer_new();
    int rc = 0;
    wisp_model_base_t t;
    for (int i = 0; wisp_model_base_at(cfg, i, &t) == 0; i++) {
        float scale = 0.1f, offset = 0.0f;   /* biases */
        if (t.init == WISP_BASE_INIT_NORMAL) /* 1 / sqrt(fan_in) */
            scale = 1.0f / sqrtf((float)(t.ndim == 3 ? t.shape[1] * t.shape[2] : t.shape[1]));
        else if (t.init == WISP_BASE_INIT_ONE)
            offset = 1.0f;
        else if (t.init == WISP_BASE_INIT_SINUSOID)
            scale = 0.5f;
        snprintf(name, sizeof name, "encoder.%s", t.name);
        rc |= s_add(w, &r, name, t.ndim, t.shape[0], t.shape[1], t.shape[2], scale, offset);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc || wisp_st_writer_save(w, path, &err) < 0) {
        fprintf(stderr, "bench_model: cannot write %s: %s\n", path, err.msg);
        rc = -1;
    }
    wisp_st_writer_destroy(&w);
    return rc;
}

/* FLOPs of one clip's forward: GEMMs, attention (QK^T and PV), convolutions. */
static double s_flops(const wisp_whisper_config_t *c, int frames)
{
    double d = c->d_model, F = c->encoder_ffn_dim, T = frames / 2, nm = c->num_mel_bins;
    double layer = 2.0 * T * (4.0 * d * d + 2.0 * d * F) + 4.0 * T * T * d;
    return c->encoder_layers * layer + 2.0 * frames * d * 3.0 * nm + 2.0 * T * d * 3.0 * d;
}

static double s_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A line of /proc/self/status in kB ("VmRSS", "VmHWM"), -1 if unknown. */
static long s_status_kb(const char *key)
{
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            v = atol(line + n + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Resets the peak RSS (VmHWM) to the current RSS (Linux clear_refs 5); 0 on success. */
static int s_reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* 1-minute load average (how shared the machine was), -1 if unknown. */
static double s_loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

/* sgemm GFLOP/s at 2048^3, best of 3; *cpu_gflops from process CPU time. */
static double s_sgemm_gflops(int threads, double *cpu_gflops)
{
    const int n = 2048;
    float *a = wisp_alloc((size_t)n * n * sizeof(float));
    float *b = wisp_alloc((size_t)n * n * sizeof(float));
    float *c = wisp_alloc((size_t)n * n * sizeof(float));
    wisp_rng_t r;
    wisp_rng_seed(&r, 1);
    s_fill(a, (size_t)n * n, &r, 1.0f, 0);
    s_fill(b, (size_t)n * n, &r, 1.0f, 0);
    openblas_set_num_threads(threads);
    double best = 1e30, bcpu = 1e30;
    for (int k = 0; k < 6; k++) { /* best of 6: a shared machine steals whole calls */
        double t0 = wisp_now(), c0 = s_cpu_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = wisp_now() - t0, cp = s_cpu_now() - c0;
        best = t < best ? t : best;
        bcpu = cp < bcpu ? cp : bcpu;
    }
    if (cpu_gflops)
        *cpu_gflops = 2.0 * n * n * (double)n / bcpu * 1e-9;
    wisp_free(a);
    wisp_free(b);
    wisp_free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

typedef struct {
    double wall, cpu; /* best of the timed runs, each minimised on its own */
} s_best_t;

/* One call of forward (opt NULL) or of a training step (zero the gradients, forward +
 * backward, AdamW update on opt); folds its times into *best. Returns rc < 0 on error. */
static int s_run(wisp_model_t *m, const float *mel, int B, int frames, wisp_adamw_t *opt,
                 s_best_t *best)
{
    int labels[8] = {0, 1, 0, 1, 0, 1, 0, 1};
    float logits[8 * 10];
    double ls, ws, t0 = wisp_now(), c0 = s_cpu_now();
    int rc;
    if (opt) {
        wisp_model_zero_grads(m);
        rc = wisp_model_forward_backward(m, mel, B, frames, labels, NULL, 1.0f / B, &ls, &ws,
                                         logits);
        wisp_adamw_step(opt, wisp_model_params(m), wisp_model_grads(m), 1e-4);
    } else {
        rc = wisp_model_forward(m, mel, B, frames, logits, NULL);
    }
    double t = wisp_now() - t0, c = s_cpu_now() - c0;
    if (best) {
        best->wall = t < best->wall ? t : best->wall;
        best->cpu = c < best->cpu ? c : best->cpu;
    }
    return rc;
}

/* Best-of-reps seconds per forward call: wall time returned, the best process CPU
 * time in *cpu. The first run warms up. */
static double s_time(wisp_model_t *m, const float *mel, int B, int frames, double *cpu)
{
    s_best_t best = {1e30, 1e30};
    int rc = 0;
    for (int k = 0; rc >= 0 && k < s_reps + 1; k++)
        rc = s_run(m, mel, B, frames, NULL, k > 0 || s_reps == 0 ? &best : NULL);
    if (cpu)
        *cpu = best.cpu;
    return rc < 0 ? -1 : best.wall;
}

/* The forward of fwd and a training step of train, alternated run by run so that both
 * minima come from the same stretch of time on a shared machine (their ratio is the
 * figure that matters). */
static int s_time_pair(wisp_model_t *fwd, wisp_model_t *train, const float *mel, s_best_t *f,
                       s_best_t *t)
{
    wisp_adamw_t *opt = wisp_adamw_new(wisp_model_num_params(train), NULL);
    *f = *t = (s_best_t){1e30, 1e30};
    int rc = opt ? 0 : -1;
    for (int k = 0; rc >= 0 && k < s_reps + 1; k++) {
        int timed = k > 0 || s_reps == 0;
        rc = s_run(fwd, mel, 1, 3000, NULL, timed ? f : NULL);
        if (rc >= 0)
            rc = s_run(train, mel, 1, 3000, opt, timed ? t : NULL);
    }
    wisp_adamw_destroy(&opt);
    return rc;
}

static wisp_model_t *s_model(const char *dir, const wisp_whisper_config_t *cfg, int training,
                             int threads, int adapter)
{
    wisp_error_t err = {0};
    wisp_model_opts_t o = {.max_batch = 1,
                           .max_frames = 3000,
                           .training = training,
                           .threads = threads,
                           .attn_keep_mb = WISP_MODEL_ATTN_KEEP_MB_DEFAULT};
    wisp_model_t *m = wisp_model_new(dir, &o, &err);
    wisp_head_config_t hc = {.num_labels = 10,
                             .classifier_proj_size = 256,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = cfg->encoder_layers,
                             .d_model = cfg->d_model};
    if (!m || wisp_model_init_head(m, &hc, 1, &err) < 0) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        wisp_model_destroy(&m);
        return NULL;
    }
    if (adapter) {
        wisp_adapter_config_t ac;
        if (wisp_adapter_config_preset(&ac, "seq_bn", &err) < 0 ||
            wisp_model_set_adapter(m, &ac, 1, &err) < 0) {
            fprintf(stderr, "bench_model: %s\n", err.msg);
            wisp_model_destroy(&m);
        }
        wisp_adapter_config_free(&ac);
    }
    return m;
}

/* The demo's checkpoint in dir, written by `wisp init-model` (its one-line report
 * would read as figures on stdout: silenced). */
static int s_make_demo(const char *dir, wisp_whisper_config_t *cfg)
{
    char *args[] = {"init-model", "--config",  "configs/demo_model.json",
                    "-o",         (char *)dir, "--seed",
                    "0",          NULL};
    fflush(stdout);
    int saved = dup(1), nul = open("/dev/null", O_WRONLY);
    if (saved >= 0 && nul >= 0)
        dup2(nul, 1);
    int rc = wisp_cmd_init_model(7, args);
    fflush(stdout);
    if (saved >= 0 && nul >= 0)
        dup2(saved, 1);
    if (saved >= 0)
        close(saved);
    if (nul >= 0)
        close(nul);
    char path[1200];
    wisp_error_t err = {0};
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rc != 0 || wisp_whisper_config_load(cfg, path, &err) < 0) {
        fprintf(stderr, "bench_model: demo model: %s\n", rc ? "init-model failed" : err.msg);
        return -1;
    }
    return 0;
}

/* The demo model's batch forward with and without FTZ+DAZ (one thread: the caller and
 * OpenBLAS's single thread are the only computing thread). */
static int s_bench_demo_ftz(const char *root)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/demo", root);
    wisp_whisper_config_t cfg;
    if (s_make_demo(dir, &cfg) < 0)
        return -1;
    const int B = 8, frames = 190; /* the demo's batch of 1.9 s clips, truncated mode */
    wisp_error_t err = {0};
    wisp_model_opts_t o = {.max_batch = B, .max_frames = frames, .threads = 1};
    wisp_model_t *m = wisp_model_new(dir, &o, &err);
    wisp_head_config_t hc = {.num_labels = 4,
                             .classifier_proj_size = 256,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = cfg.encoder_layers,
                             .d_model = cfg.d_model};
    int rc = m && wisp_model_init_head(m, &hc, 1, &err) == 0 ? 0 : -1;
    float *mel = malloc((size_t)B * cfg.num_mel_bins * frames * sizeof *mel);
    if (rc == 0 && mel) {
        wisp_rng_t r;
        wisp_rng_seed(&r, 11);
        s_fill(mel, (size_t)B * cfg.num_mel_bins * frames, &r, 1.0f, 0);
        unsigned csr = _mm_getcsr();
        /* alternated, best of 15 each: the two minima come from the same stretch of time */
        s_best_t bon = {1e30, 1e30}, boff = {1e30, 1e30};
        openblas_set_num_threads(1);
        for (int k = 0; k < 16 && rc == 0; k++) {
            _mm_setcsr(csr | 0x8040u);
            rc = s_run(m, mel, B, frames, NULL, k ? &bon : NULL);
            _mm_setcsr(csr & ~0x8040u);
            rc = rc ? rc : s_run(m, mel, B, frames, NULL, k ? &boff : NULL);
        }
        _mm_setcsr(csr);
        double on_cpu = bon.cpu, off_cpu = boff.cpu;
        printf("demo_ftz_batch8_1t_cpu_s=%.5f\n", on_cpu);
        printf("demo_noftz_batch8_1t_cpu_s=%.5f\n", off_cpu);
        printf("demo_ftz_speedup=%.2f\n", off_cpu / on_cpu);
        rc = rc < 0 ? -1 : 0;
    } else {
        fprintf(stderr, "bench_model: demo model: %s\n", err.msg[0] ? err.msg : "no memory");
        rc = -1;
    }
    free(mel);
    wisp_model_destroy(&m);
    wisp_whisper_config_free(&cfg);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    remove(dir);
    return rc;
}

int main(int argc, char **argv)
{
    wisp_blas_startup('L', argv);
    int forward_only = 0, only_threads = 0;
    const char *only_size = NULL;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--quick") == 0)
            s_reps = 1;
        else if (strcmp(argv[a], "--forward") == 0)
            forward_only = 1;
        else if (strcmp(argv[a], "--size") == 0 && a + 1 < argc)
            only_size = argv[++a];
        else if (strcmp(argv[a], "--threads") == 0 && a + 1 < argc)
            only_threads = atoi(argv[++a]);
    }
    const char *sizes[] = {"tiny", "base"};
    double peak_cpu1;
    double peak[3] = {0, s_sgemm_gflops(1, &peak_cpu1), s_sgemm_gflops(2, NULL)};
    printf("loadavg_1m_start=%.2f\n", s_loadavg());
    printf("sgemm_2048_gflops_1t=%.1f\n", peak[1]);
    printf("sgemm_2048_gflops_1t_cpu=%.1f\n", peak_cpu1);
    printf("sgemm_2048_gflops_2t=%.1f\n", peak[2]);
    char tmpl[] = "/tmp/wisp-bench-model-XXXXXX";
    char *root = mkdtemp(tmpl);
    if (!root)
        return 1;
    float *mel = malloc((size_t)80 * 3000 * sizeof(float));
    wisp_rng_t r;
    wisp_rng_seed(&r, 7);
    s_fill(mel, (size_t)80 * 3000, &r, 1.0f, 0);
    if (!forward_only && s_bench_demo_ftz(root) < 0)
        return 1;
    for (int s = 0; s < 2; s++) {
        if (only_size && strcmp(only_size, sizes[s]) != 0)
            continue;
        char dir[1100];
        wisp_whisper_config_t cfg;
        snprintf(dir, sizeof dir, "%s/%s", root, sizes[s]);
        if (s_make_checkpoint(dir, sizes[s], &cfg) < 0)
            return 1;
        double fl = s_flops(&cfg, 3000);
        printf("forward_%s_gflop=%.2f\n", sizes[s], fl * 1e-9);
        for (int th = 1; th <= 2; th++) {
            if (only_threads && th != only_threads)
                continue;
            wisp_model_t *m = s_model(dir, &cfg, 0, th, 0);
            if (!m)
                return 1;
            double cpu, t = s_time(m, mel, 1, 3000, &cpu);
            printf("forward_%s_%dt_s=%.4f\n", sizes[s], th, t);
            /* process CPU time (all threads): at 1 thread the uncontended time; at
             * 2 threads it shows how much CPU the threading costs, since wall time
             * on a loaded machine mostly shows the load */
            printf("forward_%s_%dt_cpu_s=%.4f\n", sizes[s], th, cpu);
            if (th == 1)
                printf("forward_%s_1t_cpu_peak_frac=%.3f\n", sizes[s], fl / cpu * 1e-9 / peak_cpu1);
            printf("forward_%s_%dt_gflops=%.1f\n", sizes[s], th, fl / t * 1e-9);
            printf("forward_%s_%dt_peak_frac=%.3f\n", sizes[s], th, fl / t * 1e-9 / peak[th]);
            if (th == 2 && !forward_only) {
                /* truncated mode: a 1 s clip is 100 frames, T = 50 */
                double tt = s_time(m, mel, 1, 100, NULL);
                printf("forward_%s_trunc1s_2t_s=%.5f\n", sizes[s], tt);
                printf("forward_%s_trunc1s_speedup=%.1f\n", sizes[s], t / tt);
                printf("planned_bytes_infer_%s_b1=%zu\n", sizes[s], wisp_model_planned_bytes(m));
            }
            wisp_model_destroy(&m);
            if (forward_only)
                continue;
            /* a seq_bn training step (zero gradients, forward + backward, AdamW) on the
             * same clip, against the forward of the same seq_bn model planned for
             * inference, alternated; at one thread also the peak resident memory the
             * training model adds (mapping, plan, optimizer) */
            wisp_model_t *fm = s_model(dir, &cfg, 0, th, 1);
            if (!fm || s_run(fm, mel, 1, 3000, NULL, NULL) < 0) /* its pages in before the reset */
                return 1;
            long rss0 = th == 1 && s_reset_peak_rss() == 0 ? s_status_kb("VmRSS") : -1;
            m = s_model(dir, &cfg, 1, th, 1);
            s_best_t fb, tb;
            if (!m || s_time_pair(fm, m, mel, &fb, &tb) < 0)
                return 1;
            long hwm = rss0 >= 0 ? s_status_kb("VmHWM") : -1;
            wisp_model_destroy(&fm);
            if (hwm >= 0)
                printf("train_peak_rss_mb_%s_b1=%.1f\n", sizes[s], (double)(hwm - rss0) / 1024.0);
            printf("forward_seqbn_%s_%dt_s=%.4f\n", sizes[s], th, fb.wall);
            printf("train_step_%s_%dt_s=%.4f\n", sizes[s], th, tb.wall);
            printf("train_over_forward_%s_%dt=%.2f\n", sizes[s], th, tb.wall / fb.wall);
            printf("train_step_%s_%dt_cpu_s=%.4f\n", sizes[s], th, tb.cpu);
            printf("train_over_forward_%s_%dt_cpu=%.2f\n", sizes[s], th, tb.cpu / fb.cpu);
            if (th == 2) {
                printf("planned_bytes_train_%s_b1=%zu\n", sizes[s], wisp_model_planned_bytes(m));
            }
            wisp_model_destroy(&m);
        }
        wisp_whisper_config_free(&cfg);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "%s/model.safetensors", dir);
        remove(cmd);
        snprintf(cmd, sizeof cmd, "%s/config.json", dir);
        remove(cmd);
        remove(dir);
    }
    remove(root);
    free(mel);
    printf("loadavg_1m_end=%.2f\n", s_loadavg());
    return 0;
}
