/* bench_train: what a training step costs beyond the model's forward+backward
 * (bench_model covers that): AdamW update and gradient clipping per million
 * parameters, and the whole trainer step at whisper-tiny dimensions (30 s WAV ->
 * decode -> log-mel -> forward+backward (seq_bn) -> clip -> AdamW), next to the bare
 * forward_backward in the same run. Times are thread CPU seconds (1 thread).
 * Prints key=value lines.
 * Counterpart: bench/bench_train_ref.py (ref_adamw_* keys, torch.optim.AdamW).
 * Usage: bench_train [--quick] */
#include <cjson/cJSON.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nn/adamw.h"
#include "nn/blas.h"
#include "formats/config.h"
#include "nn/model.h"
#include "formats/st.h"
#include "train/trainer.h"
#include "base/util.h"

/* Thread CPU seconds: every measurement here runs on the calling thread (OpenBLAS
 * at 1 thread), so CPU time is robust to other processes sharing the cores. */
static double s_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int s_add(wisp_st_writer_t *w, wisp_rng_t *r, const char *name, int ndim, int64_t d0,
                 int64_t d1, int64_t d2, float scale, float offset)
{
    int64_t shape[3] = {d0, d1, d2};
    size_t n = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1) * (size_t)(ndim > 2 ? d2 : 1);
    float *v = malloc(n * sizeof(float));
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++)
        v[i] = offset + scale * (2.0f * wisp_rng_uniform(r) - 1.0f);
    int rc = wisp_st_writer_add_f32(w, name, WISP_DT_F32, ndim, shape, v);
    free(v);
    return rc;
}

/* Random whisper-tiny checkpoint (HF names) in dir. */
static int s_checkpoint(const char *dir)
{
    wisp_whisper_config_t c;
    wisp_error_t err = {0};
    char path[1200], name[256];
    memset(&c, 0, sizeof c);
    if (wisp_whisper_config_preset(&c, "tiny", &err) < 0 || wisp_mkdir_p(dir, &err) < 0)
        return -1;
    cJSON *j = wisp_whisper_config_to_json(&c);
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = !j || wisp_json_save(path, j, &err) < 0;
    cJSON_Delete(j);
    wisp_rng_t r;
    wisp_rng_seed(&r, 7);
    wisp_st_writer_t *w = wisp_st_writer_new();
    wisp_model_base_t t;
    for (int i = 0; wisp_model_base_at(&c, i, &t) == 0; i++) {
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
    if (rc || wisp_st_writer_save(w, path, &err) < 0)
        rc = -1;
    wisp_st_writer_destroy(&w);
    wisp_whisper_config_free(&c);
    if (rc)
        fprintf(stderr, "bench_train: cannot write the checkpoint in %s: %s\n", dir, err.msg);
    return rc;
}

static int s_wav(const char *path, double seconds)
{
    int n = (int)(seconds * 16000);
    float *x = malloc((size_t)n * sizeof(float));
    wisp_rng_t r;
    wisp_rng_seed(&r, 3);
    for (int i = 0; i < n; i++)
        x[i] = 0.3f * sinf(0.05f * (float)i) + 0.05f * (2.0f * wisp_rng_uniform(&r) - 1.0f);
    SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    int ok = f && sf_writef_float(f, x, n) == n;
    if (f)
        sf_close(f);
    free(x);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    wisp_blas_startup('L', argv); /* as every wisp binary: BLAS core, FTZ+DAZ (nn/blas.h) */
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int reps = quick ? 1 : 3;

    /* Optimizer cost per million parameters (LoRA on whisper-large is ~ a few M). */
    const size_t n = 1000000;
    float *p = wisp_alloc(n * sizeof(float)), *g = wisp_alloc(n * sizeof(float));
    wisp_rng_t r;
    wisp_rng_seed(&r, 1);
    for (size_t i = 0; i < n; i++) {
        p[i] = wisp_rng_uniform(&r) - 0.5f;
        g[i] = 0.01f * (wisp_rng_uniform(&r) - 0.5f);
    }
    wisp_adamw_t *opt = wisp_adamw_new(n, NULL);
    double best_step = 1e30, best_clip = 1e30;
    for (int k = 0; k < 5; k++) {
        double t0 = s_cpu();
        wisp_adamw_step(opt, p, g, 1e-3);
        double t1 = s_cpu();
        wisp_adamw_clip_grad_norm(g, n, NULL, 0, 1e9);
        double t2 = s_cpu();
        best_step = fmin(best_step, t1 - t0);
        best_clip = fmin(best_clip, t2 - t1);
    }
    printf("adamw_update_ms_1m=%.3f\n", best_step * 1e3);
    printf("clip_grad_norm_ms_1m=%.3f\n", best_clip * 1e3);
    wisp_adamw_destroy(&opt);
    wisp_free(p);
    wisp_free(g);

    /* Whole trainer step at whisper-tiny dims, 30 s padded, B = 1, 1 thread. */
    char dir[64] = "/tmp/wisp_bench_train_XXXXXX", model[128], wav[128];
    if (!mkdtemp(dir))
        return 1;
    snprintf(model, sizeof model, "%s/model", dir);
    snprintf(wav, sizeof wav, "%s/clip.wav", dir);
    if (s_checkpoint(model) || s_wav(wav, 30.0))
        return 1;
    wisp_trainer_opts_t o;
    wisp_trainer_default_opts(&o);
    o.model_dir = model;
    o.preset = "seq_bn";
    o.num_labels = 4;
    o.micro_batch = 1;
    o.threads = 1;
    wisp_error_t err = {0};
    wisp_trainer_t *t = wisp_trainer_new(&o, &err);
    if (!t) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    wisp_model_t *m = wisp_trainer_model(t);
    const int nm = wisp_model_config(m)->num_mel_bins;
    float *mel = wisp_alloc((size_t)nm * 3000 * sizeof(float));
    for (size_t i = 0; i < (size_t)nm * 3000; i++)
        mel[i] = wisp_rng_uniform(&r) - 0.5f;
    wisp_trainer_item_t item = {.path = wav, .label = 2};
    int label = 2;
    double best_full = 1e30, best_mel = 1e30, best_fb = 1e30;
    for (int k = 0; k < reps; k++) {
        wisp_trainer_stats_t st;
        double t0 = s_cpu();
        if (wisp_trainer_step(t, &item, 1, &st, &err)) {
            fprintf(stderr, "bench_train: %s\n", err.msg);
            return 1;
        }
        double t1 = s_cpu();
        wisp_trainer_compute_grads_mel(t, mel, 1, 3000, &label, &st, &err);
        wisp_trainer_apply(t, &st);
        double t2 = s_cpu();
        double ls, ws;
        wisp_model_zero_grads(m);
        wisp_model_forward_backward(m, mel, 1, 3000, &label, NULL, 1.0f, &ls, &ws, NULL);
        double t3 = s_cpu();
        best_full = fmin(best_full, t1 - t0);
        best_mel = fmin(best_mel, t2 - t1);
        best_fb = fmin(best_fb, t3 - t2);
    }
    printf("trainer_step_tiny_1t_s=%.4f\n", best_full);
    printf("trainer_step_from_mel_tiny_1t_s=%.4f\n", best_mel);
    printf("forward_backward_tiny_1t_s=%.4f\n", best_fb);
    printf("decode_mel_30s_ms=%.1f\n", (best_full - best_mel) * 1e3);
    printf("trainer_overhead_pct=%.2f\n", 100.0 * (best_mel - best_fb) / best_fb);
    wisp_free(mel);
    wisp_trainer_destroy(&t);
    snprintf(wav, sizeof wav, "rm -rf %s", dir);
    return system(wav) == 0 ? 0 : 1;
}
