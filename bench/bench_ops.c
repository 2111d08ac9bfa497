/* bench_ops: sgemm peak and the cost of the encoder's non-GEMM kernels at
 * whisper-base size (T = 1500, d = 512, NH = 8, hd = 64, F = 2048), printing
 * key=value lines. bench/ops_ref.py prints the PyTorch counterparts (ref_*).
 *
 * Every figure is the best of a few repetitions (the machine is shared, the best
 * run is the least disturbed one). Usage: bench_ops [reps] (default 5).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops.h"
#include "util.h"

/* OpenBLAS extension (declared in its cblas.h, repeated for other headers). */
void openblas_set_num_threads(int num_threads);

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

static double s_sgemm_gflops(int n, int reps)
{
    wisp_rng_t r;
    wisp_rng_seed(&r, 1);
    float *a = s_buf((size_t)n * n, &r, 1), *b = s_buf((size_t)n * n, &r, 1);
    float *c = s_buf((size_t)n * n, &r, 0);
    double best = 1e30;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    for (int i = 0; i < reps; i++) {
        double t0 = wisp_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double dt = wisp_now() - t0;
        best = dt < best ? dt : best;
    }
    wisp_free(a), wisp_free(b), wisp_free(c);
    return 2.0 * n * n * (double)n / best * 1e-9;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1)
        reps = 1;
    const int n = 2048;
    openblas_set_num_threads(1);
    printf("sgemm_size=%d\n", n);
    printf("sgemm_peak_gflops_1t=%.1f\n", s_sgemm_gflops(n, reps));
    openblas_set_num_threads(2);
    printf("sgemm_peak_gflops_2t=%.1f\n", s_sgemm_gflops(n, reps));
    openblas_set_num_threads(1);

    /* Attention core at whisper-base size, one clip, single thread. */
    const int B = 1, T = 1500, NH = 8, hd = 64, C = NH * hd;
    const size_t nq = (size_t)B * T * C;
    wisp_rng_t r;
    wisp_rng_seed(&r, 2);
    float *q = s_buf(nq, &r, 0.125f), *k = s_buf(nq, &r, 1), *v = s_buf(nq, &r, 1);
    float *dout = s_buf(nq, &r, 1), *out = s_buf(nq, &r, 0), *lse = s_buf((size_t)B * NH * T, &r, 0);
    float *dq = s_buf(nq, &r, 0), *dk = s_buf(nq, &r, 0), *dv = s_buf(nq, &r, 0);
    float *scratch = s_buf(nn_attention_scratch_floats(T, hd), &r, 0);
    double fwd = 1e30, bwd = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = wisp_now();
        nn_attention_forward(out, lse, q, k, v, scratch, B, T, NH, hd);
        double t1 = wisp_now();
        nn_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, scratch, B, T, NH, hd);
        double t2 = wisp_now();
        fwd = t1 - t0 < fwd ? t1 - t0 : fwd;
        bwd = t2 - t1 < bwd ? t2 - t1 : bwd;
    }
    /* forward: 2 products of 2*T*T*hd flops per head; backward: 5 (incl. recompute) */
    double f_fl = 2.0 * 2.0 * T * (double)T * hd * NH * B, b_fl = 2.5 * f_fl;
    printf("attn_fwd_ms_base=%.2f\n", fwd * 1e3);
    printf("attn_bwd_ms_base=%.2f\n", bwd * 1e3);
    printf("attn_fwd_gflops_base=%.1f\n", f_fl / fwd * 1e-9);
    printf("attn_bwd_gflops_base=%.1f\n", b_fl / bwd * 1e-9);
    wisp_free(dq), wisp_free(dk), wisp_free(dv), wisp_free(scratch), wisp_free(dout);

    /* GELU over the fc1 output (T, F) and LayerNorm over (T, d), single thread. */
    const int F = 2048;
    const size_t nf = (size_t)T * F;
    float *h = s_buf(nf, &r, 4), *g = s_buf(nf, &r, 0), *dg = s_buf(nf, &r, 1);
    double gf = 1e30, gb = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = wisp_now();
        nn_act_forward(g, h, nf, NN_ACT_GELU);
        double t1 = wisp_now();
        nn_act_backward(g, dg, h, nf, NN_ACT_GELU);
        double t2 = wisp_now();
        gf = t1 - t0 < gf ? t1 - t0 : gf;
        gb = t2 - t1 < gb ? t2 - t1 : gb;
    }
    printf("gelu_fwd_ms_base=%.2f\n", gf * 1e3);
    printf("gelu_bwd_ms_base=%.2f\n", gb * 1e3);
    printf("gelu_fwd_ns_per_elem=%.2f\n", gf * 1e9 / (double)nf);

    float *w = s_buf(C, &r, 1), *bias = s_buf(C, &r, 1), *mean = s_buf(T, &r, 0);
    float *rstd = s_buf(T, &r, 0);
    double lf = 1e30, lb = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = wisp_now();
        nn_layernorm_forward(out, mean, rstd, k, w, bias, T, C);
        double t1 = wisp_now();
        nn_layernorm_backward(q, NULL, NULL, dout, k, w, mean, rstd, T, C);
        double t2 = wisp_now();
        lf = t1 - t0 < lf ? t1 - t0 : lf;
        lb = t2 - t1 < lb ? t2 - t1 : lb;
    }
    printf("layernorm_fwd_ms_base=%.3f\n", lf * 1e3);
    printf("layernorm_bwd_ms_base=%.3f\n", lb * 1e3);

    /* fc1 at base size: (T, d) @ (F, d)^T, for GELU's share of the MLP. */
    float *W1 = s_buf((size_t)F * C, &r, 0.05f), *b1 = s_buf(F, &r, 1);
    double lin = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = wisp_now();
        nn_linear_forward(g, out, W1, b1, T, C, F);
        double dt = wisp_now() - t0;
        lin = dt < lin ? dt : lin;
    }
    printf("fc1_fwd_ms_base=%.2f\n", lin * 1e3);
    printf("fc1_fwd_gflops_base=%.1f\n", 2.0 * T * (double)C * F / lin * 1e-9);

    wisp_free(q), wisp_free(k), wisp_free(v), wisp_free(out), wisp_free(lse), wisp_free(h);
    wisp_free(g), wisp_free(dg), wisp_free(w), wisp_free(bias), wisp_free(mean), wisp_free(rstd);
    wisp_free(W1), wisp_free(b1);
    return 0;
}
