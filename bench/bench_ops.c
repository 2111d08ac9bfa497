/* bench_ops: sgemm peak and the cost of the encoder's non-GEMM kernels at
 * whisper-base size (T = 1500, d = 512, NH = 8, hd = 64, F = 2048), printing
 * key=value lines. bench/ops_ref.py prints the PyTorch counterparts (ref_*).
 *
 * Every figure is the best of a few repetitions. Single-thread figures are the
 * calling thread's CPU time (OpenBLAS pinned to 1 thread runs in the caller), so
 * other work on a shared machine inflates them less; sgemm_peak_gflops_2t is wall
 * time. bench/ops_ref.py measures the same way. Usage: bench_ops [reps] (default 5).
 *
 * OpenBLAS picks its kernels by CPU model unless OPENBLAS_CORETYPE forces a core;
 * blas_core shows which it runs (on an AVX-512 CPU, Haswell kernels reach about
 * half of what SkylakeX/Cooperlake kernels do).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nn/ops.h"
#include "base/util.h"

/* CPU time of the calling thread, seconds. */
static double s_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of the whole process (all threads), seconds. */
static double s_proc_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

static float *s_buf(size_t n, wisp_rng_t *r, float scale)
{
    float *x = wisp_alloc(n * sizeof *x);
    if (!x) {
        fprintf(stderr, "bench_ops: out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = (2.0f * wisp_rng_uniform(r) - 1.0f) * scale;
    return x;
}

static double s_sgemm_gflops(int n, int reps, double (*now)(void))
{
    wisp_rng_t r;
    wisp_rng_seed(&r, 1);
    float *a = s_buf((size_t)n * n, &r, 1), *b = s_buf((size_t)n * n, &r, 1);
    float *c = s_buf((size_t)n * n, &r, 0);
    double best = 1e30;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    wisp_free(a), wisp_free(b), wisp_free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

/* Shapes and buffers shared by the sections: one clip at whisper-base size. */
typedef struct {
    int reps;
    int B, T, NH, hd, C, F;
    size_t nq;               /* B * T * C */
    float *q, *k, *v, *dout; /* (T, C) */
    float *out, *lse;        /* (T, C), (NH, T) */
    float *scratch;          /* serial attention scratch */
    float *w, *bias;         /* (C) LayerNorm weight and a bias */
    double attn_fwd_flops;   /* QK^T and PV of every head */
    double peak1;            /* sgemm GFLOP/s on one thread */
    wisp_rng_t r;
} s_ctx_t;

#define S_BEST(best, stmt)                                                                         \
    do {                                                                                           \
        double t0_ = s_cpu_now();                                                                  \
        stmt;                                                                                      \
        double dt_ = s_cpu_now() - t0_;                                                            \
        best = dt_ < best ? dt_ : best;                                                            \
    } while (0)

static void s_bench_sgemm(s_ctx_t *x)
{
    const int n = 2048;
    openblas_set_num_threads(1);
    printf("blas_core=%s\n", openblas_get_corename());
    printf("sgemm_size=%d\n", n);
    x->peak1 = s_sgemm_gflops(n, x->reps, s_cpu_now);
    printf("sgemm_peak_gflops_1t=%.1f\n", x->peak1);
    openblas_set_num_threads(2);
    printf("sgemm_peak_gflops_2t=%.1f\n", s_sgemm_gflops(n, x->reps, wisp_now));
    openblas_set_num_threads(1);
}

/* Attention core, one clip, single thread (thread CPU time). */
static void s_bench_attention(s_ctx_t *x)
{
    const int B = x->B, T = x->T, NH = x->NH, hd = x->hd;
    float *dq = s_buf(x->nq, &x->r, 0), *dk = s_buf(x->nq, &x->r, 0);
    float *dv = s_buf(x->nq, &x->r, 0);
    double fwd = 1e30, bwd = 1e30;
    for (int i = 0; i < x->reps; i++) {
        S_BEST(fwd, nn_attention_forward(x->out, x->lse, NULL, x->q, x->k, x->v, x->scratch, B, T,
                                         NH, hd));
        S_BEST(bwd, nn_attention_backward(dq, dk, dv, x->dout, x->out, x->lse, NULL, x->q, x->k,
                                          x->v, x->scratch, B, T, NH, hd));
    }
    /* forward: 2 products of 2*T*T*hd flops per head; backward: 5 (incl. recompute) */
    double f_fl = x->attn_fwd_flops, b_fl = 2.5 * f_fl;
    printf("attn_fwd_ms_base=%.2f\n", fwd * 1e3);
    printf("attn_bwd_ms_base=%.2f\n", bwd * 1e3);
    printf("attn_fwd_gflops_base=%.1f\n", f_fl / fwd * 1e-9);
    printf("attn_bwd_gflops_base=%.1f\n", b_fl / bwd * 1e-9);
    wisp_free(dq), wisp_free(dk), wisp_free(dv);
}

/* One round of mode m: (0) the serial kernel, OpenBLAS on 1 thread; (1) the serial
 * kernel with OpenBLAS on 2 threads; (2) nn_attention_*_mt on a pool of 2 threads. Wall
 * and process CPU time of forward and backward into w, c ([fwd, bwd]), keeping the best. */
static void s_attn_round(s_ctx_t *x, int m, nn_pool_t *pool, float *scr2, float **g, double *w,
                         double *c)
{
    const int B = x->B, T = x->T, NH = x->NH, hd = x->hd;
    openblas_set_num_threads(m == 1 ? 2 : 1);
    double t0 = wisp_now(), c0 = s_proc_cpu_now();
    if (m < 2)
        nn_attention_forward(x->out, x->lse, NULL, x->q, x->k, x->v, x->scratch, B, T, NH, hd);
    else
        nn_attention_forward_mt(x->out, x->lse, NULL, x->q, x->k, x->v, scr2, B, T, NH, hd, pool);
    double t1 = wisp_now(), c1 = s_proc_cpu_now();
    if (m < 2)
        nn_attention_backward(g[0], g[1], g[2], x->dout, x->out, x->lse, NULL, x->q, x->k, x->v,
                              x->scratch, B, T, NH, hd);
    else
        nn_attention_backward_mt(g[0], g[1], g[2], x->dout, x->out, x->lse, NULL, x->q, x->k, x->v,
                                 scr2, B, T, NH, hd, pool);
    double t2 = wisp_now(), c2 = s_proc_cpu_now();
    w[0] = t1 - t0 < w[0] ? t1 - t0 : w[0];
    w[1] = t2 - t1 < w[1] ? t2 - t1 : w[1];
    c[0] = c1 - c0 < c[0] ? c1 - c0 : c[0];
    c[1] = c2 - c1 < c[1] ? c2 - c1 : c[1];
}

/* Wall time and process CPU time, best of 2 * reps rounds, the three modes of
 * s_attn_round interleaved round by round so a load swing on the shared machine hits
 * all alike. */
static int s_bench_attention_threads(s_ctx_t *x)
{
    nn_pool_t *pool = nn_pool_new(2);
    if (!pool) {
        fprintf(stderr, "bench_ops: cannot start 2 threads\n");
        return -1;
    }
    float *scr2 = s_buf(nn_attention_scratch_floats_mt(x->T, x->hd, 2), &x->r, 0);
    float *g[3] = {s_buf(x->nq, &x->r, 0), s_buf(x->nq, &x->r, 0), s_buf(x->nq, &x->r, 0)};
    double w[3][2], c[3][2]; /* [mode][fwd, bwd] */
    for (int m = 0; m < 3; m++)
        w[m][0] = w[m][1] = c[m][0] = c[m][1] = 1e30;
    for (int i = 0; i < 2 * x->reps; i++)
        for (int m = 0; m < 3; m++)
            s_attn_round(x, m, pool, scr2, g, w[m], c[m]);
    openblas_set_num_threads(1);
    const double f_fl = x->attn_fwd_flops, b_fl = 2.5 * f_fl;
    static const char *const mode[3] = {"1t_wall", "2t_blas", "2t"};
    for (int m = 0; m < 3; m++) {
        printf("attn_fwd_ms_base_%s=%.2f\n", mode[m], w[m][0] * 1e3);
        printf("attn_bwd_ms_base_%s=%.2f\n", mode[m], w[m][1] * 1e3);
        printf("attn_fwd_cpu_ms_base_%s=%.2f\n", mode[m], c[m][0] * 1e3);
        printf("attn_bwd_cpu_ms_base_%s=%.2f\n", mode[m], c[m][1] * 1e3);
        printf("attn_fwd_gflops_base_%s=%.1f\n", mode[m], f_fl / w[m][0] * 1e-9);
        printf("attn_bwd_gflops_base_%s=%.1f\n", mode[m], b_fl / w[m][1] * 1e-9);
    }
    /* wall-time speedups over the 1-thread kernel, same rounds */
    printf("attn_fwd_speedup_2t=%.2f\n", w[0][0] / w[2][0]);
    printf("attn_bwd_speedup_2t=%.2f\n", w[0][1] / w[2][1]);
    printf("attn_fwd_speedup_2t_blas=%.2f\n", w[0][0] / w[1][0]);
    printf("attn_bwd_speedup_2t_blas=%.2f\n", w[0][1] / w[1][1]);
    wisp_free(scr2), wisp_free(g[0]), wisp_free(g[1]), wisp_free(g[2]);
    nn_pool_destroy(&pool);
    return 0;
}

/* GELU over the fc1 output (T, F), single thread. */
static void s_bench_gelu(s_ctx_t *x)
{
    const size_t nf = (size_t)x->T * x->F;
    float *h = s_buf(nf, &x->r, 4), *g = s_buf(nf, &x->r, 0), *dg = s_buf(nf, &x->r, 1);
    double gf = 1e30, gb = 1e30;
    for (int i = 0; i < x->reps; i++) {
        S_BEST(gf, nn_act_forward(g, h, nf, NN_ACT_GELU));
        S_BEST(gb, nn_act_backward(g, dg, h, nf, NN_ACT_GELU));
    }
    printf("gelu_fwd_ms_base=%.2f\n", gf * 1e3);
    printf("gelu_bwd_ms_base=%.2f\n", gb * 1e3);
    printf("gelu_fwd_ns_per_elem=%.2f\n", gf * 1e9 / (double)nf);
    wisp_free(h), wisp_free(g), wisp_free(dg);
}

/* LayerNorm over (T, d), single thread. */
static void s_bench_layernorm(s_ctx_t *x)
{
    float *mean = s_buf(x->T, &x->r, 0), *rstd = s_buf(x->T, &x->r, 0);
    float *dx = s_buf(x->nq, &x->r, 0);
    double lf = 1e30, lb = 1e30;
    for (int i = 0; i < x->reps; i++) {
        S_BEST(lf, nn_layernorm_forward(x->out, mean, rstd, x->k, x->w, x->bias, x->T, x->C));
        S_BEST(lb,
               nn_layernorm_backward(dx, NULL, NULL, x->dout, x->k, x->w, mean, rstd, x->T, x->C));
    }
    printf("layernorm_fwd_ms_base=%.3f\n", lf * 1e3);
    printf("layernorm_bwd_ms_base=%.3f\n", lb * 1e3);
    wisp_free(mean), wisp_free(rstd), wisp_free(dx);
}

/* fc1 at base size: (T, d) @ (F, d)^T, for GELU's share of the MLP. */
static void s_bench_fc1(s_ctx_t *x)
{
    const int T = x->T, C = x->C, F = x->F;
    float *W1 = s_buf((size_t)F * C, &x->r, 0.05f), *b1 = s_buf(F, &x->r, 1);
    float *y = s_buf((size_t)T * F, &x->r, 0);
    double lin = 1e30;
    for (int i = 0; i < x->reps; i++)
        S_BEST(lin, nn_linear_forward(y, x->out, W1, b1, T, C, F));
    printf("fc1_fwd_ms_base=%.2f\n", lin * 1e3);
    printf("fc1_fwd_gflops_base=%.1f\n", 2.0 * T * (double)C * F / lin * 1e-9);
    wisp_free(W1), wisp_free(b1), wisp_free(y);
}

/* One pre-LN encoder layer forward at base size out of these kernels (what nn/model.c
 * does per layer, no adapters): the share of sgemm peak it reaches. */
static void s_bench_layer(s_ctx_t *x)
{
    const int B = x->B, T = x->T, NH = x->NH, hd = x->hd, C = x->C, F = x->F;
    const size_t nq = x->nq, nf = (size_t)T * F;
    wisp_rng_t *r = &x->r;
    float *h = s_buf(nq, r, 1), *z = s_buf(nq, r, 0), *a = s_buf(nq, r, 0);
    float *q = s_buf(nq, r, 0), *k = s_buf(nq, r, 0), *v = s_buf(nq, r, 0);
    float *g = s_buf(nf, r, 0), *b1 = s_buf(F, r, 1);
    float *Wq = s_buf((size_t)C * C, r, 0.05f), *Wk = s_buf((size_t)C * C, r, 0.05f);
    float *Wv = s_buf((size_t)C * C, r, 0.05f), *Wo = s_buf((size_t)C * C, r, 0.05f);
    float *W1 = s_buf((size_t)F * C, r, 0.05f), *W2 = s_buf((size_t)F * C, r, 0.05f);
    const float *w = x->w, *bias = x->bias;
    double best = 1e30;
    for (int i = 0; i < x->reps; i++) {
        double t0 = s_cpu_now();
        nn_layernorm_forward(z, NULL, NULL, h, w, bias, T, C);
        nn_linear_forward(q, z, Wq, bias, T, C, C);
        nn_scale(q, 0.125f, nq);
        nn_linear_forward(k, z, Wk, NULL, T, C, C);
        nn_linear_forward(v, z, Wv, bias, T, C, C);
        nn_attention_forward(a, NULL, NULL, q, k, v, x->scratch, B, T, NH, hd);
        nn_linear_forward(z, a, Wo, bias, T, C, C);
        nn_add(h, h, z, nq);
        nn_layernorm_forward(z, NULL, NULL, h, w, bias, T, C);
        nn_linear_forward(g, z, W1, b1, T, C, F);
        nn_act_forward(g, g, nf, NN_ACT_GELU);
        nn_linear_forward(z, g, W2, bias, T, F, C);
        nn_add(h, h, z, nq);
        double dt = s_cpu_now() - t0;
        best = dt < best ? dt : best;
    }
    double fl = 2.0 * T * C * C * 4 + 2.0 * 2.0 * T * (double)C * F + x->attn_fwd_flops;
    printf("encoder_layer_fwd_ms_base=%.2f\n", best * 1e3);
    printf("encoder_layer_fwd_gflops_base=%.1f\n", fl / best * 1e-9);
    printf("encoder_layer_fwd_pct_of_sgemm_peak_1t=%.0f\n", 100.0 * fl / best * 1e-9 / x->peak1);
    wisp_free(h), wisp_free(z), wisp_free(a), wisp_free(q), wisp_free(k), wisp_free(v);
    wisp_free(g), wisp_free(b1), wisp_free(Wq), wisp_free(Wk), wisp_free(Wv), wisp_free(Wo);
    wisp_free(W1), wisp_free(W2);
}

/* conv2 of the front end: (3000, 512) -> (1500, 512), stride 2, im2col + sgemm. */
static void s_bench_conv2(s_ctx_t *x)
{
    const int T = x->T, C = x->C, Tin = 2 * T;
    float *xin = s_buf((size_t)Tin * C, &x->r, 1), *Wc = s_buf((size_t)C * C * 3, &x->r, 0.05f);
    float *col = s_buf(nn_conv1d_k3_scratch_floats(T, C), &x->r, 0);
    double best = 1e30;
    for (int i = 0; i < x->reps; i++)
        S_BEST(best, nn_conv1d_k3_forward(x->out, col, xin, Wc, x->bias, Tin, C, C, 2));
    printf("conv2_fwd_ms_base=%.2f\n", best * 1e3);
    printf("conv2_fwd_gflops_base=%.1f\n", 2.0 * T * (double)C * C * 3 / best * 1e-9);
    wisp_free(xin), wisp_free(Wc), wisp_free(col);
}

/* conv1 of the front end: (3000, 80 mel bins) -> (3000, 512), stride 1. */
static void s_bench_conv1(s_ctx_t *x)
{
    const int C = x->C, Tin = 2 * x->T, nm = 80;
    float *xin = s_buf((size_t)Tin * nm, &x->r, 1), *Wc = s_buf((size_t)C * nm * 3, &x->r, 0.05f);
    float *col = s_buf(nn_conv1d_k3_scratch_floats(Tin, nm), &x->r, 0);
    float *y = s_buf((size_t)Tin * C, &x->r, 0);
    double best = 1e30;
    for (int i = 0; i < x->reps; i++)
        S_BEST(best, nn_conv1d_k3_forward(y, col, xin, Wc, x->bias, Tin, nm, C, 1));
    printf("conv1_fwd_ms_base=%.2f\n", best * 1e3);
    printf("conv1_fwd_gflops_base=%.1f\n", 2.0 * Tin * (double)C * nm * 3 / best * 1e-9);
    wisp_free(xin), wisp_free(Wc), wisp_free(col), wisp_free(y);
}

int main(int argc, char **argv)
{
    s_ctx_t x = {
        .reps = argc > 1 ? atoi(argv[1]) : 5, .B = 1, .T = 1500, .NH = 8, .hd = 64, .F = 2048};
    if (x.reps < 1)
        x.reps = 1;
    x.C = x.NH * x.hd;
    x.nq = (size_t)x.B * x.T * x.C;
    x.attn_fwd_flops = 2.0 * 2.0 * x.T * (double)x.T * x.hd * x.NH * x.B;
    printf("loadavg_1m_start=%.2f\n", s_loadavg());
    s_bench_sgemm(&x);
    wisp_rng_seed(&x.r, 2);
    x.q = s_buf(x.nq, &x.r, 0.125f), x.k = s_buf(x.nq, &x.r, 1), x.v = s_buf(x.nq, &x.r, 1);
    x.dout = s_buf(x.nq, &x.r, 1), x.out = s_buf(x.nq, &x.r, 0);
    x.lse = s_buf((size_t)x.B * x.NH * x.T, &x.r, 0);
    x.scratch = s_buf(nn_attention_scratch_floats(x.T, x.hd), &x.r, 0);
    x.w = s_buf(x.C, &x.r, 1), x.bias = s_buf(x.C, &x.r, 1);
    s_bench_attention(&x);
    int rc = s_bench_attention_threads(&x);
    s_bench_gelu(&x);
    s_bench_layernorm(&x);
    s_bench_fc1(&x);
    s_bench_layer(&x);
    s_bench_conv2(&x);
    s_bench_conv1(&x);
    wisp_free(x.q), wisp_free(x.k), wisp_free(x.v), wisp_free(x.dout), wisp_free(x.out);
    wisp_free(x.lse), wisp_free(x.scratch), wisp_free(x.w), wisp_free(x.bias);
    printf("loadavg_1m_end=%.2f\n", s_loadavg());
    return rc < 0 ? 1 : 0;
}
