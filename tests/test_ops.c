/* Tests of common/nn/ops: the fp32 kernels of the encoder and head.
 *
 * Three levels (docs/STYLE.md):
 * 1. every BLAS-backed kernel against its plain-loop _ref twin on odd shapes
 *    (rtol 1e-5 relative to the tensor's largest magnitude);
 * 2. every backward against double-precision central finite differences of a
 *    double-precision forward written here (loss = <R, out>, step 1e-4; the fp32
 *    analytic gradient must agree to 1e-3 of the gradient's largest magnitude);
 * 3. PyTorch goldens from tests/reference/ops_ref.py: inputs regenerated here with
 *    the same splitmix64 stream, outputs within 1e-5 and gradients within 1e-4 of
 *    the tensor's largest magnitude.
 */
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/attn_fused.h"
#include "nn/ops.h"
#include "base/util.h"

/* ---- helpers ------------------------------------------------------------ */

/* n floats 2u-1 in [-1, 1) times scale: the stream of ops_ref.py's Rng.sym. */
static void s_sym(wisp_rng_t *r, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (2.0f * wisp_rng_uniform(r) - 1.0f) * scale;
}

static float *s_rand(wisp_rng_t *r, size_t n, float scale)
{
    float *x = wisp_alloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    s_sym(r, x, n, scale);
    return x;
}

static float *s_zeros(size_t n)
{
    float *x = wisp_alloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    return x;
}

static double *s_to_double(const float *x, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* got vs want with a tolerance relative to want's largest magnitude. */
static void s_close_scaled(const float *got, const float *want, size_t n, double rel,
                           const char *label)
{
    double scale = wisp_max_abs(want, n);
    wisp_assert_close(got, want, n, rel * (scale > 1e-30 ? scale : 1.0), 0.0, label);
}

/* Golden file tests/data/ops/<name>.f32, checked to hold exactly n floats. */
static float *s_golden(const char *name, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/ops/%s.f32", wisp_test_data_dir(), name);
    size_t count = 0;
    float *g = wisp_test_read_f32(path, &count);
    if (count != n)
        fail_msg("%s: %zu floats, expected %zu", path, count, n);
    return g;
}

/* Finite differences: perturbs x[i] (double) by +-h and calls loss(ctx); compares
 * (L+ - L-) / 2h with the analytic gradient (fp32) to rel * max|fd|. */
typedef double (*s_loss_fn)(void *ctx);
#define FD_H   1e-4
#define FD_TOL 1e-3

static void s_check_fd(s_loss_fn loss, void *ctx, double *x, size_t n, const float *analytic,
                       const char *label)
{
    float *fd = s_zeros(n);
    for (size_t i = 0; i < n; i++) {
        double save = x[i];
        x[i] = save + FD_H;
        double lp = loss(ctx);
        x[i] = save - FD_H;
        double lm = loss(ctx);
        x[i] = save;
        fd[i] = (float)((lp - lm) / (2 * FD_H));
    }
    s_close_scaled(analytic, fd, n, FD_TOL, label);
    wisp_free(fd);
}

static double s_dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Backward kernels accumulate: a second call onto the same buffers doubles them. */
static float *s_dup(const float *x, size_t n)
{
    float *d = s_zeros(n);
    memcpy(d, x, n * sizeof *d);
    return d;
}

static void s_check_doubled(const float *after, float *before, size_t n, const char *label)
{
    for (size_t i = 0; i < n; i++)
        before[i] *= 2.0f;
    s_close_scaled(after, before, n, 1e-6, label); /* sums over rows round differently */
    wisp_free(before);
}

/* ---- double-precision forwards ------------------------------------------ */

static void d_linear(double *out, const double *inp, const double *w, const double *b, double alpha,
                     int N, int C, int OC)
{
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double acc = b ? b[o] : 0.0;
            for (int c = 0; c < C; c++)
                acc += inp[i * C + c] * w[o * C + c];
            out[i * OC + o] = alpha * acc;
        }
}

static void d_layernorm(double *out, const double *x, const double *w, const double *b, int N,
                        int C)
{
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++)
            m += x[i * C + c];
        m /= C;
        for (int c = 0; c < C; c++)
            v += (x[i * C + c] - m) * (x[i * C + c] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + 1e-5);
        for (int c = 0; c < C; c++)
            out[i * C + c] = (x[i * C + c] - m) * rs * w[c] + b[c];
    }
}

static double d_act(double x, nn_act_t act)
{
    switch (act) {
    case NN_ACT_IDENTITY: return x;
    case NN_ACT_RELU: return x > 0 ? x : 0;
    case NN_ACT_LEAKYRELU: return x > 0 ? x : 0.01 * x;
    case NN_ACT_SILU: return x / (1 + exp(-x));
    case NN_ACT_SIGMOID: return 1 / (1 + exp(-x));
    case NN_ACT_TANH: return tanh(x);
    case NN_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case NN_ACT_GELU_TANH:
        return 0.5 * x * (1 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    return NAN;
}

static void d_attention(double *out, const double *q, const double *k, const double *v, int B,
                        int T, int NH, int hd)
{
    int C = NH * hd;
    double *s = malloc(T * sizeof *s);
    assert_non_null(s);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const double *qi = q + (b * T + i) * C + h * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    s[j] = s_dot(qi, k + (b * T + j) * C + h * hd, hd);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < T; j++) {
                    s[j] = exp(s[j] - mx);
                    sum += s[j];
                }
                double *oi = out + (b * T + i) * C + h * hd;
                for (int d = 0; d < hd; d++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++)
                        acc += s[j] * v[(b * T + j) * C + h * hd + d];
                    oi[d] = acc / sum;
                }
            }
    free(s);
}

static void d_softmax(double *out, const double *x, int N, int C)
{
    for (int i = 0; i < N; i++) {
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++)
            mx = x[i * C + c] > mx ? x[i * C + c] : mx;
        for (int c = 0; c < C; c++)
            sum += exp(x[i * C + c] - mx);
        for (int c = 0; c < C; c++)
            out[i * C + c] = exp(x[i * C + c] - mx) / sum;
    }
}

/* ---- 1. BLAS kernels vs their loop twins -------------------------------- */

static void test_linear_matches_its_loop_twin_on_odd_shapes(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {33, 17, 65}, {130, 31, 9}};
    wisp_rng_t r;
    wisp_rng_seed(&r, 1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = s_rand(&r, (size_t)N * C, 1), *w = s_rand(&r, (size_t)OC * C, 1);
        float *b = s_rand(&r, OC, 1), *dout = s_rand(&r, (size_t)N * OC, 1);
        float *o1 = s_zeros((size_t)N * OC), *o2 = s_zeros((size_t)N * OC);
        nn_linear_forward(o1, x, w, b, N, C, OC);
        nn_linear_forward_ref(o2, x, w, b, N, C, OC);
        s_close_scaled(o1, o2, (size_t)N * OC, 1e-5, "linear forward (bias)");
        nn_linear_forward(o1, x, w, NULL, N, C, OC);
        nn_linear_forward_ref(o2, x, w, NULL, N, C, OC);
        s_close_scaled(o1, o2, (size_t)N * OC, 1e-5, "linear forward (no bias)");
        /* forward_add accumulates alpha * x W^T on top of what is there */
        nn_linear_forward_add(o1, x, w, 0.25f, N, C, OC);
        for (size_t i = 0; i < (size_t)N * OC; i++)
            o2[i] *= 1.25f;
        s_close_scaled(o1, o2, (size_t)N * OC, 1e-5, "linear forward_add");

        float *di1 = s_rand(&r, (size_t)N * C, 1), *dw1 = s_rand(&r, (size_t)OC * C, 1);
        float *db1 = s_rand(&r, OC, 1);
        float *di2 = s_zeros((size_t)N * C), *dw2 = s_zeros((size_t)OC * C), *db2 = s_zeros(OC);
        memcpy(di2, di1, (size_t)N * C * sizeof *di2); /* accumulation onto non-zero */
        memcpy(dw2, dw1, (size_t)OC * C * sizeof *dw2);
        memcpy(db2, db1, (size_t)OC * sizeof *db2);
        nn_linear_backward(di1, dw1, db1, dout, x, w, 0.5f, N, C, OC);
        nn_linear_backward_ref(di2, dw2, db2, dout, x, w, 0.5f, N, C, OC);
        s_close_scaled(di1, di2, (size_t)N * C, 1e-5, "linear dinp");
        s_close_scaled(dw1, dw2, (size_t)OC * C, 1e-5, "linear dweight");
        s_close_scaled(db1, db2, OC, 1e-5, "linear dbias");
        /* NULL gradients are skipped, the others still formed */
        nn_linear_backward(NULL, NULL, db1, dout, x, w, 0.5f, N, C, OC);
        nn_linear_backward_ref(NULL, NULL, db2, dout, x, w, 0.5f, N, C, OC);
        s_close_scaled(db1, db2, OC, 1e-5, "linear dbias alone");
        nn_linear_backward(di1, NULL, NULL, dout, x, w, 1.0f, N, C, OC);
        nn_linear_backward_ref(di2, NULL, NULL, dout, x, w, 1.0f, N, C, OC);
        s_close_scaled(di1, di2, (size_t)N * C, 1e-5, "linear dinp alone");
        wisp_free(x), wisp_free(w), wisp_free(b), wisp_free(dout), wisp_free(o1), wisp_free(o2);
        wisp_free(di1), wisp_free(dw1), wisp_free(db1), wisp_free(di2), wisp_free(dw2);
        wisp_free(db2);
    }
}

static void test_conv1d_matches_its_loop_twin_for_both_strides(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 1, 1}, {10, 3, 7}, {17, 9, 5}, {64, 16, 24}};
    wisp_rng_t r;
    wisp_rng_seed(&r, 2);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int stride = 1; stride <= 2; stride++) {
            int Tin = shapes[s][0], Cin = shapes[s][1], Cout = shapes[s][2];
            int Tout = (Tin - 1) / stride + 1;
            float *x = s_rand(&r, (size_t)Tin * Cin, 1), *w = s_rand(&r, (size_t)Cout * Cin * 3, 1);
            float *b = s_rand(&r, Cout, 1);
            float *col = s_zeros(nn_conv1d_k3_scratch_floats(Tout, Cin));
            float *o1 = s_zeros((size_t)Tout * Cout), *o2 = s_zeros((size_t)Tout * Cout);
            nn_conv1d_k3_forward(o1, col, x, w, b, Tin, Cin, Cout, stride);
            nn_conv1d_k3_forward_ref(o2, x, w, b, Tin, Cin, Cout, stride);
            s_close_scaled(o1, o2, (size_t)Tout * Cout, 1e-5, "conv1d forward");
            wisp_free(x), wisp_free(w), wisp_free(b), wisp_free(col), wisp_free(o1), wisp_free(o2);
        }
    }
}

static void test_attention_matches_its_loop_twin_across_block_edges(void **state)
{
    (void)state;
    /* T below, at, and not a multiple of the query block; several heads and clips. */
    static const int shapes[][4] = {{1, 1, 1, 1},    {2, 5, 3, 4},   {1, 128, 2, 8}, {2, 131, 3, 5},
                                    {1, 300, 1, 16}, {1, 1, 1, 64},  {2, 7, 2, 64},  {1, 64, 1, 64},
                                    {2, 131, 3, 64}, {1, 203, 2, 64}};
    wisp_rng_t r;
    wisp_rng_seed(&r, 3);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], NH = shapes[s][2], hd = shapes[s][3];
        size_t n = (size_t)B * T * NH * hd, nl = (size_t)B * NH * T;
        float *q = s_rand(&r, n, 1.5f), *k = s_rand(&r, n, 1.5f), *v = s_rand(&r, n, 1);
        float *dout = s_rand(&r, n, 1);
        float *scratch = s_zeros(nn_attention_scratch_floats(T, hd));
        float *o1 = s_zeros(n), *o2 = s_zeros(n), *l1 = s_zeros(nl), *l2 = s_zeros(nl);
        nn_attention_forward(o1, l1, NULL, q, k, v, scratch, B, T, NH, hd);
        nn_attention_forward_ref(o2, l2, q, k, v, B, T, NH, hd);
        s_close_scaled(o1, o2, n, 1e-5, "attention out");
        s_close_scaled(l1, l2, nl, 1e-5, "attention lse");
        float *g1[3], *g2[3];
        for (int i = 0; i < 3; i++) {
            g1[i] = s_rand(&r, n, 1); /* accumulate onto non-zero buffers */
            g2[i] = s_zeros(n);
            memcpy(g2[i], g1[i], n * sizeof *g2[i]);
        }
        nn_attention_backward(g1[0], g1[1], g1[2], dout, o1, l1, NULL, q, k, v, scratch, B, T, NH,
                              hd);
        nn_attention_backward_ref(g2[0], g2[1], g2[2], dout, o2, l2, q, k, v, B, T, NH, hd);
        s_close_scaled(g1[0], g2[0], n, 1e-5, "attention dq");
        s_close_scaled(g1[1], g2[1], n, 1e-5, "attention dk");
        s_close_scaled(g1[2], g2[2], n, 1e-5, "attention dv");
        /* dv alone (q, k frozen upstream) still matches; dq alone too */
        nn_attention_backward(NULL, NULL, g1[2], dout, o1, l1, NULL, q, k, v, scratch, B, T, NH,
                              hd);
        nn_attention_backward_ref(NULL, NULL, g2[2], dout, o2, l2, q, k, v, B, T, NH, hd);
        s_close_scaled(g1[2], g2[2], n, 1e-5, "attention dv alone");
        nn_attention_backward(g1[0], NULL, NULL, dout, o1, l1, NULL, q, k, v, scratch, B, T, NH,
                              hd);
        nn_attention_backward_ref(g2[0], NULL, NULL, dout, o2, l2, q, k, v, B, T, NH, hd);
        s_close_scaled(g1[0], g2[0], n, 1e-5, "attention dq alone");
        /* neither lse nor probabilities passed: the backward redoes the forward's softmax */
        for (int i = 0; i < 3; i++)
            memcpy(g1[i], g2[i], n * sizeof *g1[i]);
        nn_attention_backward(g1[0], g1[1], g1[2], dout, o1, NULL, NULL, q, k, v, scratch, B, T, NH,
                              hd);
        nn_attention_backward_ref(g2[0], g2[1], g2[2], dout, o2, l2, q, k, v, B, T, NH, hd);
        s_close_scaled(g1[0], g2[0], n, 1e-5, "attention dq without lse");
        s_close_scaled(g1[1], g2[1], n, 1e-5, "attention dk without lse");
        s_close_scaled(g1[2], g2[2], n, 1e-5, "attention dv without lse");
        /* inference: lse NULL gives the same output */
        nn_attention_forward(o1, NULL, NULL, q, k, v, scratch, B, T, NH, hd);
        s_close_scaled(o1, o2, n, 1e-5, "attention out without lse");
        /* probabilities kept by the forward: out and lse the very same bits, every row a
         * distribution equal to exp(S - lse), and a backward on them that matches */
        size_t np = (size_t)B * NH * T * T;
        float *probs = s_zeros(np), *o3 = s_zeros(n), *l3 = s_zeros(nl);
        nn_attention_forward(o3, l3, probs, q, k, v, scratch, B, T, NH, hd);
        nn_attention_forward(o1, l1, NULL, q, k, v, scratch, B, T, NH, hd);
        assert_memory_equal(o3, o1, n * sizeof *o1);
        assert_memory_equal(l3, l1, nl * sizeof *l1);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < T; i++) {
                    const float *pr = probs + ((size_t)b * NH + h) * T * T;
                    const float *qi = q + ((size_t)b * T + i) * NH * hd + (size_t)h * hd;
                    double rowsum = 0;
                    for (int j = 0; j < T; j++) {
                        const float *kj = k + ((size_t)b * T + j) * NH * hd + (size_t)h * hd;
                        double sij = 0, sabs = 0;
                        for (int e = 0; e < hd; e++) {
                            sij += (double)qi[e] * kj[e];
                            sabs += fabs((double)qi[e] * kj[e]);
                        }
                        double want = exp(sij - l1[((size_t)b * NH + h) * T + i]);
                        float got = pr[nn_attention_probs_index(T, hd, i, j)];
                        /* a float score of hd terms is off by up to hd * 2^-24 * sum |q k|,
                         * and exp turns that absolute error into a relative one */
                        double tol = 1e-5 + 2.0 * hd * 0x1p-24 * sabs;
                        if (fabs(got - want) > 1e-6 + tol * want)
                            fail_msg("kept probability (%d,%d,%d,%d): %.9g, want %.9g", b, h, i, j,
                                     (double)got, want);
                        rowsum += got;
                    }
                    assert_true(fabs(rowsum - 1.0) < 1e-5);
                }
        for (int i = 0; i < 3; i++)
            memcpy(g1[i], g2[i], n * sizeof *g1[i]); /* both start where the reference is */
        nn_attention_backward(g1[0], g1[1], g1[2], dout, o1, l1, probs, q, k, v, scratch, B, T, NH,
                              hd);
        nn_attention_backward_ref(g2[0], g2[1], g2[2], dout, o2, l2, q, k, v, B, T, NH, hd);
        s_close_scaled(g1[0], g2[0], n, 1e-5, "attention dq from kept probabilities");
        s_close_scaled(g1[1], g2[1], n, 1e-5, "attention dk from kept probabilities");
        s_close_scaled(g1[2], g2[2], n, 1e-5, "attention dv from kept probabilities");
        wisp_free(probs), wisp_free(o3), wisp_free(l3);
        for (int i = 0; i < 3; i++)
            wisp_free(g1[i]), wisp_free(g2[i]);
        wisp_free(q), wisp_free(k), wisp_free(v), wisp_free(dout), wisp_free(scratch);
        wisp_free(o1), wisp_free(o2), wisp_free(l1), wisp_free(l2);
    }
}

/* Bitwise equality, reporting the first differing index. */
static void s_same_bits(const float *got, const float *want, size_t n, const char *label)
{
    if (memcmp(got, want, n * sizeof *got) == 0)
        return;
    size_t i = 0;
    while (i < n && memcmp(got + i, want + i, sizeof *got) == 0)
        i++;
    fail_msg("%s: not bitwise equal, first at %zu: %.9g vs %.9g", label, i, (double)got[i],
             (double)want[i]);
}

static void test_threaded_attention_is_bitwise_equal_to_the_serial_kernel(void **state)
{
    (void)state;
    /* Odd T across block edges, one unit only, more threads than (clip, head) pairs,
     * several clips; pools of 1, 2, 3 and 5 threads and no pool. The serial kernel
     * runs with OpenBLAS on one thread; the threaded one is called with OpenBLAS on
     * two and must restore that setting. */
    static const int shapes[][4] = {{1, 7, 1, 3},  {1, 131, 3, 5},  {2, 300, 2, 16}, {3, 257, 2, 8},
                                    {1, 7, 1, 64}, {2, 131, 3, 64}, {1, 300, 2, 64}};
    static const int threads[] = {0, 1, 2, 3, 5};
    wisp_rng_t r;
    wisp_rng_seed(&r, 11);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], NH = shapes[s][2], hd = shapes[s][3];
        size_t n = (size_t)B * T * NH * hd, nl = (size_t)B * NH * T;
        float *q = s_rand(&r, n, 1.5f), *k = s_rand(&r, n, 1.5f), *v = s_rand(&r, n, 1);
        float *dout = s_rand(&r, n, 1), *g0 = s_rand(&r, n, 1);
        float *o1 = s_zeros(n), *l1 = s_zeros(nl), *o2 = s_zeros(n), *l2 = s_zeros(nl);
        float *want[3], *got[3], *want1[3];
        float *scratch = s_zeros(nn_attention_scratch_floats(T, hd));
        openblas_set_num_threads(1);
        nn_attention_forward(o1, l1, NULL, q, k, v, scratch, B, T, NH, hd);
        for (int i = 0; i < 3; i++) {
            want[i] = s_dup(g0, n), got[i] = s_zeros(n);
            want1[i] = s_dup(g0, n);
        }
        nn_attention_backward(want[0], want[1], want[2], dout, o1, l1, NULL, q, k, v, scratch, B, T,
                              NH, hd);
        /* dq alone, without the saved lse (the recomputing branch) */
        nn_attention_backward(want1[0], NULL, NULL, dout, o1, NULL, NULL, q, k, v, scratch, B, T,
                              NH, hd);
        /* from kept probabilities */
        float *probs1 = s_zeros((size_t)B * NH * T * T), *wantp[3], *o4 = s_zeros(n);
        nn_attention_forward(o4, NULL, probs1, q, k, v, scratch, B, T, NH, hd);
        for (int i = 0; i < 3; i++)
            wantp[i] = s_dup(g0, n);
        nn_attention_backward(wantp[0], wantp[1], wantp[2], dout, o1, l1, probs1, q, k, v, scratch,
                              B, T, NH, hd);
        wisp_free(o4);
        wisp_free(scratch);
        for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
            nn_pool_t *pool = threads[t] ? nn_pool_new(threads[t]) : NULL;
            assert_true(!threads[t] || pool);
            int nt = nn_pool_threads(pool);
            assert_int_equal(nt, threads[t] ? threads[t] : 1);
            scratch = s_zeros(nn_attention_scratch_floats_mt(T, hd, nt));
            openblas_set_num_threads(2);
            memset(o2, 0, n * sizeof *o2);
            nn_attention_forward_mt(o2, l2, NULL, q, k, v, scratch, B, T, NH, hd, pool);
            assert_int_equal(openblas_get_num_threads(), 2);
            s_same_bits(o2, o1, n, "threaded attention out");
            s_same_bits(l2, l1, nl, "threaded attention lse");
            nn_attention_forward_mt(o2, NULL, NULL, q, k, v, scratch, B, T, NH, hd, pool);
            s_same_bits(o2, o1, n, "threaded attention out without lse");
            for (int i = 0; i < 3; i++)
                memcpy(got[i], g0, n * sizeof *g0);
            nn_attention_backward_mt(got[0], got[1], got[2], dout, o1, l1, NULL, q, k, v, scratch,
                                     B, T, NH, hd, pool);
            assert_int_equal(openblas_get_num_threads(), 2);
            s_same_bits(got[0], want[0], n, "threaded attention dq");
            s_same_bits(got[1], want[1], n, "threaded attention dk");
            s_same_bits(got[2], want[2], n, "threaded attention dv");
            memcpy(got[0], g0, n * sizeof *g0);
            nn_attention_backward_mt(got[0], NULL, NULL, dout, o1, NULL, NULL, q, k, v, scratch, B,
                                     T, NH, hd, pool);
            s_same_bits(got[0], want1[0], n, "threaded attention dq alone without lse");
            /* with kept probabilities */
            float *pm = s_zeros((size_t)B * NH * T * T);
            nn_attention_forward_mt(o2, l2, pm, q, k, v, scratch, B, T, NH, hd, pool);
            s_same_bits(pm, probs1, (size_t)B * NH * T * T, "threaded kept probabilities");
            for (int i = 0; i < 3; i++)
                memcpy(got[i], g0, n * sizeof *g0);
            nn_attention_backward_mt(got[0], got[1], got[2], dout, o1, l1, pm, q, k, v, scratch, B,
                                     T, NH, hd, pool);
            s_same_bits(got[0], wantp[0], n, "threaded attention dq, kept probabilities");
            s_same_bits(got[1], wantp[1], n, "threaded attention dk, kept probabilities");
            s_same_bits(got[2], wantp[2], n, "threaded attention dv, kept probabilities");
            wisp_free(pm);
            wisp_free(scratch);
            nn_pool_destroy(&pool);
            assert_null(pool);
        }
        for (int i = 0; i < 3; i++)
            wisp_free(want[i]), wisp_free(got[i]), wisp_free(want1[i]), wisp_free(wantp[i]);
        wisp_free(probs1);
        wisp_free(q), wisp_free(k), wisp_free(v), wisp_free(dout), wisp_free(g0);
        wisp_free(o1), wisp_free(o2), wisp_free(l1), wisp_free(l2);
    }
    nn_pool_destroy(NULL);
    assert_int_equal(nn_pool_threads(NULL), 1);
}

/* The forward's softmax (its own exp-row kernel: AVX2 intrinsics on AVX2 CPUs) and the
 * backward's recomputation without saved statistics (the portable rows) give the same
 * probabilities: the gradients from kept probabilities and from recomputed ones agree
 * bit for bit (for hd != 64: with hd = 64 the forward has kernels of its own). Odd T
 * leave every tail of a 16-float row vector. */
static void test_attention_kept_and_recomputed_probabilities_have_the_same_bits(void **state)
{
    (void)state;
    static const int shapes[][4] = {{1, 7, 1, 3},   {1, 131, 3, 16}, {2, 300, 2, 8},
                                    {1, 257, 2, 8}, {1, 137, 1, 64}, {1, 24, 2, 32}};
    wisp_rng_t r;
    wisp_rng_seed(&r, 17);
    openblas_set_num_threads(1);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], T = shapes[s][1], NH = shapes[s][2], hd = shapes[s][3];
        size_t n = (size_t)B * T * NH * hd, np = (size_t)B * NH * T * T;
        float *q = s_rand(&r, n, 1.5f), *k = s_rand(&r, n, 1.5f), *v = s_rand(&r, n, 1);
        float *dout = s_rand(&r, n, 1), *out = s_zeros(n), *probs = s_zeros(np);
        float *scratch = s_zeros(nn_attention_scratch_floats(T, hd)), *kept[3], *again[3];
        nn_attention_forward(out, NULL, probs, q, k, v, scratch, B, T, NH, hd);
        for (int i = 0; i < 3; i++)
            kept[i] = s_zeros(n), again[i] = s_zeros(n);
        nn_attention_backward(kept[0], kept[1], kept[2], dout, out, NULL, probs, q, k, v, scratch,
                              B, T, NH, hd);
        nn_attention_backward(again[0], again[1], again[2], dout, out, NULL, NULL, q, k, v, scratch,
                              B, T, NH, hd);
        if (hd != 64) /* hd = 64 runs a register-tiled forward (AVX-512 or AVX2) of its own */
            for (int i = 0; i < 3; i++)
                s_same_bits(again[i], kept[i], n, "gradient from recomputed probabilities");
        for (int i = 0; i < 3; i++) /* both finite and not all zero */
            for (size_t j = 0; j < n; j++)
                assert_true(isfinite(kept[i][j]));
        assert_true(kept[0][0] != 0.0f || kept[0][n - 1] != 0.0f);
        for (int i = 0; i < 3; i++)
            wisp_free(kept[i]), wisp_free(again[i]);
        wisp_free(q), wisp_free(k), wisp_free(v), wisp_free(dout), wisp_free(out);
        wisp_free(probs), wisp_free(scratch);
    }
}

static void test_threaded_elementwise_ops_are_bitwise_equal_to_the_serial_ones(void **state)
{
    (void)state;
    /* below the threading threshold, just above it, and odd lengths across chunks */
    static const size_t lengths[] = {1000, 65536, 100003, 1 << 20};
    static const int threads[] = {1, 2, 3};
    wisp_rng_t r;
    wisp_rng_seed(&r, 17);
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        size_t n = lengths[l];
        float *x = s_rand(&r, n, 4), *g = s_rand(&r, n, 1), *acc = s_rand(&r, n, 1);
        float *want = s_zeros(n), *got = s_zeros(n);
        for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
            nn_pool_t *pool = nn_pool_new(threads[t]);
            assert_non_null(pool);
            for (int a = NN_ACT_IDENTITY; a <= NN_ACT_LEAKYRELU; a++) {
                nn_act_forward(want, x, n, (nn_act_t)a);
                nn_act_forward_mt(got, x, n, (nn_act_t)a, pool);
                s_same_bits(got, want, n, "threaded activation forward");
                memcpy(want, acc, n * sizeof *acc);
                memcpy(got, acc, n * sizeof *acc);
                nn_act_backward(want, g, x, n, (nn_act_t)a);
                nn_act_backward_mt(got, g, x, n, (nn_act_t)a, pool);
                s_same_bits(got, want, n, "threaded activation backward");
            }
            nn_zero_mt(got, n, pool);
            for (size_t i = 0; i < n; i++)
                assert_true(got[i] == 0.0f);
            nn_pool_destroy(&pool);
        }
        wisp_free(x), wisp_free(g), wisp_free(acc), wisp_free(want), wisp_free(got);
    }
}

/* ---- 2. finite differences ---------------------------------------------- */

typedef struct {
    double *x, *w, *b, *R, *out;
    double alpha;
    int N, C, OC;
} s_lin_ctx;

static double s_lin_loss(void *p)
{
    s_lin_ctx *c = p;
    d_linear(c->out, c->x, c->w, c->b, c->alpha, c->N, c->C, c->OC);
    return s_dot(c->R, c->out, (size_t)c->N * c->OC);
}

static void test_linear_backward_matches_finite_differences(void **state)
{
    (void)state;
    const int N = 6, C = 5, OC = 4;
    wisp_rng_t r;
    wisp_rng_seed(&r, 10);
    float *x = s_rand(&r, N * C, 1), *w = s_rand(&r, OC * C, 1), *b = s_rand(&r, OC, 1);
    float *R = s_rand(&r, N * OC, 1);
    const float alphas[] = {1.0f, 0.375f};
    for (int a = 0; a < 2; a++) {
        float *dx = s_zeros(N * C), *dw = s_zeros(OC * C), *db = s_zeros(OC);
        nn_linear_backward(dx, dw, db, R, x, w, alphas[a], N, C, OC);
        double outd[N * OC];
        s_lin_ctx c = {s_to_double(x, N * C),
                       s_to_double(w, OC * C),
                       s_to_double(b, OC),
                       s_to_double(R, N * OC),
                       outd,
                       alphas[a],
                       N,
                       C,
                       OC};
        s_check_fd(s_lin_loss, &c, c.x, N * C, dx, "linear dinp vs FD");
        s_check_fd(s_lin_loss, &c, c.w, OC * C, dw, "linear dweight vs FD");
        s_check_fd(s_lin_loss, &c, c.b, OC, db, "linear dbias vs FD");
        free(c.x), free(c.w), free(c.b), free(c.R);
        wisp_free(dx), wisp_free(dw), wisp_free(db);
    }
    wisp_free(x), wisp_free(w), wisp_free(b), wisp_free(R);
}

typedef struct {
    double *x, *w, *b, *R, *out;
    int N, C;
} s_ln_ctx;

static double s_ln_loss(void *p)
{
    s_ln_ctx *c = p;
    d_layernorm(c->out, c->x, c->w, c->b, c->N, c->C);
    return s_dot(c->R, c->out, (size_t)c->N * c->C);
}

static void test_layernorm_forward_and_backward_match_double_precision(void **state)
{
    (void)state;
    const int N = 5, C = 37; /* two full vectors and a tail */
    wisp_rng_t r;
    wisp_rng_seed(&r, 11);
    float *x = s_rand(&r, N * C, 2), *w = s_rand(&r, C, 1), *b = s_rand(&r, C, 1);
    float *R = s_rand(&r, N * C, 1);
    for (int c = 0; c < C; c++) /* a row with variance ~ eps, where eps matters */
        x[c] *= 0.003f;
    float *out = s_zeros(N * C), *mean = s_zeros(N), *rstd = s_zeros(N);
    nn_layernorm_forward(out, mean, rstd, x, w, b, N, C);
    double outd[N * C];
    s_ln_ctx c = {s_to_double(x, N * C),
                  s_to_double(w, C),
                  s_to_double(b, C),
                  s_to_double(R, N * C),
                  outd,
                  N,
                  C};
    d_layernorm(outd, c.x, c.w, c.b, N, C);
    float want[N * C];
    for (int i = 0; i < N * C; i++)
        want[i] = (float)outd[i];
    s_close_scaled(out, want, N * C, 1e-5, "layernorm out vs double");

    float *dx = s_zeros(N * C), *dw = s_zeros(C), *db = s_zeros(C);
    nn_layernorm_backward(dx, dw, db, R, x, w, mean, rstd, N, C);
    s_check_fd(s_ln_loss, &c, c.x, N * C, dx, "layernorm dinp vs FD");
    s_check_fd(s_ln_loss, &c, c.w, C, dw, "layernorm dweight vs FD");
    s_check_fd(s_ln_loss, &c, c.b, C, db, "layernorm dbias vs FD");
    {
        float *dx0 = s_dup(dx, N * C), *dw0 = s_dup(dw, C), *db0 = s_dup(db, C);
        nn_layernorm_backward(dx, dw, db, R, x, w, mean, rstd, N, C);
        s_check_doubled(dx, dx0, N * C, "layernorm dinp accumulates");
        s_check_doubled(dw, dw0, C, "layernorm dweight accumulates");
        s_check_doubled(db, db0, C, "layernorm dbias accumulates");
        for (int i = 0; i < N * C; i++) /* back to one gradient for the check below */
            dx[i] *= 0.5f;
    }
    /* without saved statistics the backward recomputes them */
    float *dx2 = s_zeros(N * C);
    nn_layernorm_backward(dx2, NULL, NULL, R, x, w, NULL, NULL, N, C);
    s_close_scaled(dx2, dx, N * C, 1e-6, "layernorm dinp without saved stats");
    free(c.x), free(c.w), free(c.b), free(c.R);
    wisp_free(x), wisp_free(w), wisp_free(b), wisp_free(R), wisp_free(out), wisp_free(mean);
    wisp_free(rstd), wisp_free(dx), wisp_free(dw), wisp_free(db), wisp_free(dx2);
}

typedef struct {
    double *x, *R;
    size_t n;
    nn_act_t act;
} s_act_ctx;

static double s_act_loss(void *p)
{
    s_act_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++)
        s += c->R[i] * d_act(c->x[i], c->act);
    return s;
}

static void test_every_activation_matches_double_precision_and_finite_differences(void **state)
{
    (void)state;
    enum { n = 257 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 12);
    float *x = s_rand(&r, n, 6), *R = s_rand(&r, n, 1);
    for (size_t i = 0; i < n; i++) /* keep the kinks of relu/leakyrelu out of the FD step */
        if (fabsf(x[i]) < 1e-3f)
            x[i] = 0.5f;
    for (int a = NN_ACT_IDENTITY; a <= NN_ACT_LEAKYRELU; a++) {
        char label[64];
        float out[n], want[n], dx[n];
        nn_act_forward(out, x, n, (nn_act_t)a);
        for (size_t i = 0; i < n; i++)
            want[i] = (float)d_act(x[i], (nn_act_t)a);
        snprintf(label, sizeof label, "%s forward vs double", nn_act_name((nn_act_t)a));
        wisp_assert_close(out, want, n, 2e-7, 2e-6, label);
        /* in place */
        memcpy(dx, x, sizeof dx);
        nn_act_forward(dx, dx, n, (nn_act_t)a);
        snprintf(label, sizeof label, "%s forward in place", nn_act_name((nn_act_t)a));
        wisp_assert_close(dx, out, n, 0, 0, label);

        memset(dx, 0, sizeof dx);
        nn_act_backward(dx, R, x, n, (nn_act_t)a);
        s_act_ctx c = {s_to_double(x, n), s_to_double(R, n), n, (nn_act_t)a};
        snprintf(label, sizeof label, "%s backward vs FD", nn_act_name((nn_act_t)a));
        s_check_fd(s_act_loss, &c, c.x, n, dx, label);
        float *dx0 = s_dup(dx, n);
        nn_act_backward(dx, R, x, n, (nn_act_t)a);
        snprintf(label, sizeof label, "%s backward accumulates", nn_act_name((nn_act_t)a));
        s_check_doubled(dx, dx0, n, label);
        free(c.x), free(c.R);
    }
    wisp_free(x), wisp_free(R);
}

static void test_activation_names_round_trip_and_unknown_is_rejected(void **state)
{
    (void)state;
    for (int a = NN_ACT_IDENTITY; a <= NN_ACT_LEAKYRELU; a++)
        assert_int_equal(nn_act_parse(nn_act_name((nn_act_t)a)), a);
    assert_int_equal(nn_act_parse("swish"), NN_ACT_SILU);
    assert_int_equal(nn_act_parse("linear"), NN_ACT_IDENTITY);
    assert_int_equal(nn_act_parse("ReLU"), NN_ACT_RELU);
    assert_int_equal(nn_act_parse("gelu_new"), NN_ACT_GELU_TANH);
    assert_int_equal(nn_act_parse("softplus"), -1);
    assert_int_equal(nn_act_parse(""), -1);
    assert_int_equal(nn_act_parse(NULL), -1);
}

typedef struct {
    double *q, *k, *v, *R, *out;
    int B, T, NH, hd;
} s_attn_ctx;

static double s_attn_loss(void *p)
{
    s_attn_ctx *c = p;
    d_attention(c->out, c->q, c->k, c->v, c->B, c->T, c->NH, c->hd);
    return s_dot(c->R, c->out, (size_t)c->B * c->T * c->NH * c->hd);
}

static void test_attention_backward_matches_finite_differences(void **state)
{
    (void)state;
    const int B = 2, T = 7, NH = 2, hd = 3;
    const size_t n = (size_t)B * T * NH * hd;
    wisp_rng_t r;
    wisp_rng_seed(&r, 13);
    float *q = s_rand(&r, n, 1.5f), *k = s_rand(&r, n, 1.5f), *v = s_rand(&r, n, 1);
    float *R = s_rand(&r, n, 1);
    float *out = s_zeros(n), *lse = s_zeros((size_t)B * NH * T);
    float *scratch = s_zeros(nn_attention_scratch_floats(T, hd));
    nn_attention_forward(out, lse, NULL, q, k, v, scratch, B, T, NH, hd);
    double *outd = malloc(n * sizeof *outd);
    s_attn_ctx c = {s_to_double(q, n),
                    s_to_double(k, n),
                    s_to_double(v, n),
                    s_to_double(R, n),
                    outd,
                    B,
                    T,
                    NH,
                    hd};
    d_attention(outd, c.q, c.k, c.v, B, T, NH, hd);
    float *want = s_zeros(n);
    for (size_t i = 0; i < n; i++)
        want[i] = (float)outd[i];
    s_close_scaled(out, want, n, 1e-5, "attention out vs double");
    float *dq = s_zeros(n), *dk = s_zeros(n), *dv = s_zeros(n);
    nn_attention_backward(dq, dk, dv, R, out, lse, NULL, q, k, v, scratch, B, T, NH, hd);
    s_check_fd(s_attn_loss, &c, c.q, n, dq, "attention dq vs FD");
    s_check_fd(s_attn_loss, &c, c.k, n, dk, "attention dk vs FD");
    s_check_fd(s_attn_loss, &c, c.v, n, dv, "attention dv vs FD");
    /* the backward on probabilities kept by the forward */
    float *probs = s_zeros((size_t)B * NH * T * T);
    nn_attention_forward(out, lse, probs, q, k, v, scratch, B, T, NH, hd);
    memset(dq, 0, n * sizeof *dq), memset(dk, 0, n * sizeof *dk), memset(dv, 0, n * sizeof *dv);
    nn_attention_backward(dq, dk, dv, R, out, lse, probs, q, k, v, scratch, B, T, NH, hd);
    s_check_fd(s_attn_loss, &c, c.q, n, dq, "attention dq (kept probabilities) vs FD");
    s_check_fd(s_attn_loss, &c, c.k, n, dk, "attention dk (kept probabilities) vs FD");
    s_check_fd(s_attn_loss, &c, c.v, n, dv, "attention dv (kept probabilities) vs FD");
    wisp_free(probs);
    free(c.q), free(c.k), free(c.v), free(c.R), free(outd);
    wisp_free(q), wisp_free(k), wisp_free(v), wisp_free(R), wisp_free(out), wisp_free(lse);
    wisp_free(scratch), wisp_free(want), wisp_free(dq), wisp_free(dk), wisp_free(dv);
}

typedef struct {
    double *x, *R, *out;
    int N, C;
} s_sm_ctx;

static double s_sm_loss(void *p)
{
    s_sm_ctx *c = p;
    d_softmax(c->out, c->x, c->N, c->C);
    return s_dot(c->R, c->out, (size_t)c->N * c->C);
}

static void test_softmax_backward_matches_finite_differences(void **state)
{
    (void)state;
    enum { N = 4, C = 9 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 14);
    float *x = s_rand(&r, N * C, 4), *R = s_rand(&r, N * C, 1);
    float out[N * C], want[N * C], dx[N * C] = {0};
    double outd[N * C];
    nn_softmax_forward(out, x, N, C);
    s_sm_ctx c = {s_to_double(x, N * C), s_to_double(R, N * C), outd, N, C};
    d_softmax(outd, c.x, N, C);
    for (int i = 0; i < N * C; i++)
        want[i] = (float)outd[i];
    wisp_assert_close(out, want, N * C, 1e-7, 1e-5, "softmax out vs double");
    nn_softmax_backward(dx, R, out, N, C);
    s_check_fd(s_sm_loss, &c, c.x, N * C, dx, "softmax dinp vs FD");
    float *dx0 = s_dup(dx, N * C);
    nn_softmax_backward(dx, R, out, N, C);
    s_check_doubled(dx, dx0, N * C, "softmax dinp accumulates");
    free(c.x), free(c.R);
    wisp_free(x), wisp_free(R);
}

typedef struct {
    double *x, *R;
    int B, T, C;
} s_mp_ctx;

static double s_mp_loss(void *p)
{
    s_mp_ctx *c = p;
    double s = 0;
    for (int b = 0; b < c->B; b++)
        for (int ch = 0; ch < c->C; ch++) {
            double m = 0;
            for (int t = 0; t < c->T; t++)
                m += c->x[(b * c->T + t) * c->C + ch];
            s += c->R[b * c->C + ch] * m / c->T;
        }
    return s;
}

static void test_meanpool_forward_and_backward_match_double_precision(void **state)
{
    (void)state;
    enum { B = 3, T = 7, C = 5 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 15);
    float *x = s_rand(&r, B * T * C, 1), *R = s_rand(&r, B * C, 1);
    float out[B * C], want[B * C], dx[B * T * C] = {0};
    nn_meanpool_forward(out, x, B, T, C);
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++) {
            double m = 0;
            for (int t = 0; t < T; t++)
                m += x[(b * T + t) * C + ch];
            want[b * C + ch] = (float)(m / T);
        }
    wisp_assert_close(out, want, B * C, 1e-6, 1e-5, "meanpool out vs double");
    nn_meanpool_backward(dx, R, B, T, C);
    s_mp_ctx c = {s_to_double(x, B * T * C), s_to_double(R, B * C), B, T, C};
    s_check_fd(s_mp_loss, &c, c.x, B * T * C, dx, "meanpool dinp vs FD");
    float *dx0 = s_dup(dx, B * T * C);
    nn_meanpool_backward(dx, R, B, T, C);
    s_check_doubled(dx, dx0, B * T * C, "meanpool dinp accumulates");
    free(c.x), free(c.R);
    wisp_free(x), wisp_free(R);
}

typedef struct {
    double *h, *w, *R;
    int K;
    size_t n;
} s_ws_ctx;

static double s_ws_loss(void *p)
{
    s_ws_ctx *c = p;
    double s = 0;
    for (size_t i = 0; i < c->n; i++) {
        double o = 0;
        for (int k = 0; k < c->K; k++)
            o += c->w[k] * c->h[k * c->n + i];
        s += c->R[i] * o;
    }
    return s;
}

static void test_wsum_forward_and_backward_match_double_precision(void **state)
{
    (void)state;
    enum { K = 5, n = 23 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 16);
    float *h = s_rand(&r, K * n, 1), *w = s_rand(&r, K, 1), *R = s_rand(&r, n, 1);
    const float *hp[K];
    float *dhp[K];
    float dh[K * n] = {0}, dw[K] = {0}, out[n], want[n];
    for (int k = 0; k < K; k++)
        hp[k] = h + k * n, dhp[k] = k == 2 ? NULL : dh + k * n; /* one frozen entry */
    nn_wsum_forward(out, hp, w, K, n);
    for (int i = 0; i < n; i++) {
        double o = 0;
        for (int k = 0; k < K; k++)
            o += (double)w[k] * h[k * n + i];
        want[i] = (float)o;
    }
    wisp_assert_close(out, want, n, 1e-6, 1e-5, "wsum out vs double");
    nn_wsum_backward(dhp, dw, R, hp, w, K, n);
    s_ws_ctx c = {s_to_double(h, K * n), s_to_double(w, K), s_to_double(R, n), K, n};
    for (int k = 0; k < K; k++)
        if (k != 2)
            s_check_fd(s_ws_loss, &c, c.h + k * n, n, dh + k * n, "wsum dhidden vs FD");
    s_check_fd(s_ws_loss, &c, c.w, K, dw, "wsum dw vs FD");
    float *dh0 = s_dup(dh, K * n), *dw0 = s_dup(dw, K);
    nn_wsum_backward(dhp, dw, R, hp, w, K, n);
    s_check_doubled(dh, dh0, K * n, "wsum dhidden accumulates");
    s_check_doubled(dw, dw0, K, "wsum dw accumulates");
    /* the NULL entry was left alone */
    for (int i = 0; i < n; i++)
        assert_true(dh[2 * n + i] == 0.0f);
    free(c.h), free(c.w), free(c.R);
    wisp_free(h), wisp_free(w), wisp_free(R);
}

typedef struct {
    double *x, *cw;
    const int *y;
    int B, NC;
} s_ce_ctx;

static double s_ce_loss(void *p)
{
    s_ce_ctx *c = p;
    double s = 0;
    for (int b = 0; b < c->B; b++) {
        const double *x = c->x + b * c->NC;
        double mx = -INFINITY, sum = 0;
        for (int k = 0; k < c->NC; k++)
            mx = x[k] > mx ? x[k] : mx;
        for (int k = 0; k < c->NC; k++)
            sum += exp(x[k] - mx);
        double wy = c->cw ? c->cw[c->y[b]] : 1.0;
        s += wy * (log(sum) + mx - x[c->y[b]]);
    }
    return s;
}

static void test_crossentropy_matches_double_precision_with_and_without_class_weights(void **state)
{
    (void)state;
    enum { B = 6, NC = 4 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 17);
    float *x = s_rand(&r, B * NC, 3), *cw = s_rand(&r, NC, 0.5f);
    const int y[B] = {0, 3, 1, 1, 2, 3};
    for (int k = 0; k < NC; k++)
        cw[k] += 1.0f;
    for (int weighted = 0; weighted <= 1; weighted++) {
        float probs[B * NC], want[B * NC], dx[B * NC] = {0};
        double wsum = -1;
        double loss = nn_crossentropy_forward(probs, &wsum, x, y, weighted ? cw : NULL, B, NC);
        s_ce_ctx c = {s_to_double(x, B * NC), weighted ? s_to_double(cw, NC) : NULL, y, B, NC};
        double want_loss = s_ce_loss(&c), want_wsum = 0;
        for (int b = 0; b < B; b++)
            want_wsum += weighted ? cw[y[b]] : 1.0;
        assert_true(fabs(loss - want_loss) <= 1e-6 * fabs(want_loss));
        assert_true(fabs(wsum - want_wsum) <= 1e-12 * want_wsum);
        double xd[B * NC], pd[B * NC];
        for (int i = 0; i < B * NC; i++)
            xd[i] = x[i];
        d_softmax(pd, xd, B, NC);
        for (int i = 0; i < B * NC; i++)
            want[i] = (float)pd[i];
        wisp_assert_close(probs, want, B * NC, 1e-7, 1e-5, "crossentropy probs vs double");
        nn_crossentropy_backward(dx, probs, y, weighted ? cw : NULL, 1.0f, B, NC);
        s_check_fd(s_ce_loss, &c, c.x, B * NC, dx,
                   weighted ? "crossentropy dlogits (weighted) vs FD"
                            : "crossentropy dlogits vs FD");
        /* scale multiplies the gradient (the caller's 1 / global weight sum) */
        float dx2[B * NC] = {0};
        nn_crossentropy_backward(dx2, probs, y, weighted ? cw : NULL, 0.25f, B, NC);
        for (int i = 0; i < B * NC; i++)
            dx[i] *= 0.25f;
        wisp_assert_close(dx2, dx, B * NC, 1e-7, 1e-6, "crossentropy scale");
        float *d0 = s_dup(dx2, B * NC);
        nn_crossentropy_backward(dx2, probs, y, weighted ? cw : NULL, 0.25f, B, NC);
        s_check_doubled(dx2, d0, B * NC, "crossentropy accumulates");
        free(c.x), free(c.cw);
    }
    wisp_free(x), wisp_free(cw);
}

static void test_crossentropy_ignores_rows_with_labels_out_of_range(void **state)
{
    (void)state;
    enum { B = 3, NC = 4 };
    const float x[B * NC] = {0.5f, -1, 2, 0.25f, 1, 1, -0.5f, 3, -2, 0, 0.75f, 1.5f};
    const float cw[NC] = {0.5f, 2, 1, 1.5f};
    const int y[B] = {2, -100, 3}, y_kept[2] = {2, 3};
    const float x_kept[2 * NC] = {0.5f, -1, 2, 0.25f, -2, 0, 0.75f, 1.5f};
    float probs[B * NC], probs_kept[2 * NC], dx[B * NC] = {0}, dx_kept[2 * NC] = {0};
    double ws, ws_kept;
    double loss = nn_crossentropy_forward(probs, &ws, x, y, cw, B, NC);
    double loss_kept = nn_crossentropy_forward(probs_kept, &ws_kept, x_kept, y_kept, cw, 2, NC);
    assert_true(loss == loss_kept && ws == ws_kept && ws == 2.5);
    nn_crossentropy_backward(dx, probs, y, cw, 1.0f, B, NC);
    nn_crossentropy_backward(dx_kept, probs_kept, y_kept, cw, 1.0f, 2, NC);
    for (int c = 0; c < NC; c++) {
        assert_true(dx[NC + c] == 0.0f); /* the ignored row gets no gradient */
        assert_true(dx[c] == dx_kept[c] && dx[2 * NC + c] == dx_kept[NC + c]);
    }
}

typedef struct {
    double *x, *s, *R;
    int N, C;
} s_cs_ctx;

static double s_cs_loss(void *p)
{
    s_cs_ctx *c = p;
    double s = 0;
    for (int i = 0; i < c->N; i++)
        for (int j = 0; j < c->C; j++)
            s += c->R[i * c->C + j] * c->x[i * c->C + j] * c->s[j];
    return s;
}

static void test_colscale_forward_and_backward_match_double_precision(void **state)
{
    (void)state;
    enum { N = 5, C = 21 }; /* a full vector and a tail */
    wisp_rng_t r;
    wisp_rng_seed(&r, 18);
    float *x = s_rand(&r, N * C, 1), *s = s_rand(&r, C, 1), *R = s_rand(&r, N * C, 1);
    float out[N * C], dx[N * C] = {0}, ds[C] = {0};
    nn_colscale_forward(out, x, s, N, C);
    for (int i = 0; i < N * C; i++)
        assert_true(out[i] == x[i] * s[i % C]);
    nn_colscale_backward(dx, ds, R, x, s, N, C);
    s_cs_ctx c = {s_to_double(x, N * C), s_to_double(s, C), s_to_double(R, N * C), N, C};
    s_check_fd(s_cs_loss, &c, c.x, N * C, dx, "colscale dinp vs FD");
    s_check_fd(s_cs_loss, &c, c.s, C, ds, "colscale ds vs FD");
    {
        float *dx0 = s_dup(dx, N * C), *ds0 = s_dup(ds, C);
        nn_colscale_backward(dx, ds, R, x, s, N, C);
        s_check_doubled(dx, dx0, N * C, "colscale dinp accumulates");
        s_check_doubled(ds, ds0, C, "colscale ds accumulates");
        for (int i = 0; i < C; i++) /* back to one gradient for the check below */
            ds[i] *= 0.5f;
    }
    /* either gradient may be NULL */
    float ds2[C] = {0};
    nn_colscale_backward(NULL, ds2, R, x, s, N, C);
    s_close_scaled(ds2, ds, C, 1e-6, "colscale ds alone");
    free(c.x), free(c.s), free(c.R);
    wisp_free(x), wisp_free(s), wisp_free(R);
}

static void test_vector_helpers_compute_what_they_say(void **state)
{
    (void)state;
    float a[5] = {1, 2, 3, 4, 5}, b[5] = {0.5f, -1, 2, 0, 3}, o[5];
    nn_add(o, a, b, 5);
    float want_add[5] = {1.5f, 1, 5, 4, 8};
    wisp_assert_close(o, want_add, 5, 0, 0, "nn_add");
    nn_axpy(o, 2.0f, b, 5);
    float want_axpy[5] = {2.5f, -1, 9, 4, 14};
    wisp_assert_close(o, want_axpy, 5, 0, 0, "nn_axpy");
    nn_scale(o, 0.5f, 5);
    float want_scale[5] = {1.25f, -0.5f, 4.5f, 2, 7};
    wisp_assert_close(o, want_scale, 5, 0, 0, "nn_scale");
    /* past the vector width, in place, element for element as the plain loop */
    enum { n = 37 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 19);
    float x[n], y[n], want[n];
    s_sym(&r, x, n, 1), s_sym(&r, y, n, 1);
    for (int i = 0; i < n; i++)
        want[i] = ((x[i] + y[i]) + 0.75f * x[i]) * -1.5f;
    nn_add(y, x, y, n);
    nn_axpy(y, 0.75f, x, n);
    nn_scale(y, -1.5f, n);
    wisp_assert_close(y, want, n, 0, 0, "nn_add, nn_axpy, nn_scale on 37 floats");
}

/* ---- vectorised exp and erf --------------------------------------------- */

/* Spacing of floats at |x| (ulp), the denormal spacing for tiny values. */
static double s_ulp(double x)
{
    float f = (float)fabs(x);
    if (f < 0x1p-126f)
        return 0x1p-149;
    return (double)nextafterf(f, INFINITY) - (double)f;
}

/* Both exps: the one this CPU runs (AVX-512 where it can) and the portable one. */
static void s_exp_within_2_ulp(void (*fn)(float *, const float *, size_t))
{
    enum { n = 1 << 20 };
    float *x = s_zeros(n), *y = s_zeros(n);
    for (int i = 0; i < n; i++) /* [-104, 89] in steps of ~1.8e-4, plus a few odd points */
        x[i] = -104.0f + 193.0f * (float)i / (float)(n - 1);
    fn(y, x, n);
    double worst = 0;
    int worst_i = 0;
    for (int i = 0; i < n; i++) {
        double want = exp((double)x[i]);
        if (want > 0x1.fffffep127) { /* beyond FLT_MAX: must overflow to +inf */
            assert_true(isinf(y[i]) && y[i] > 0);
            continue;
        }
        double e = fabs((double)y[i] - want) / s_ulp(want);
        if (e > worst)
            worst = e, worst_i = i;
    }
    if (worst > 2.0)
        fail_msg("exp(%.9g) = %.9g, want %.9g: %.2f ulp", (double)x[worst_i], (double)y[worst_i],
                 exp((double)x[worst_i]), worst);
    float sx[6] = {0.0f, -INFINITY, INFINITY, NAN, -1e30f, 1e30f}, sy[6];
    fn(sy, sx, 6);
    assert_true(sy[0] == 1.0f && sy[1] == 0.0f && isinf(sy[2]) && isnan(sy[3]) && sy[4] == 0.0f);
    assert_true(isinf(sy[5]) && sy[5] > 0);
    wisp_free(x), wisp_free(y);
}

static void test_vector_exp_is_within_2_ulp_of_double_on_a_dense_grid(void **state)
{
    (void)state;
    s_exp_within_2_ulp(nn_exp);
    s_exp_within_2_ulp(nn_exp_portable);
}

static void test_vector_erf_is_within_1e_7_of_double_on_a_dense_grid(void **state)
{
    (void)state;
    enum { n = 1 << 21 };
    float *x = s_zeros(n), *y = s_zeros(n);
    for (int i = 0; i < n; i++) /* [-6, 6] in steps of ~5.7e-6 (both branches, the cut, tails) */
        x[i] = -6.0f + 12.0f * (float)i / (float)(n - 1);
    nn_erf(y, x, n);
    double worst = 0;
    int worst_i = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)y[i] - erf((double)x[i]));
        if (e > worst)
            worst = e, worst_i = i;
    }
    if (worst > 1e-7)
        fail_msg("erf(%.9g) = %.9g, want %.9g: abs err %.3g", (double)x[worst_i],
                 (double)y[worst_i], erf((double)x[worst_i]), worst);
    /* tiny arguments keep their relative accuracy (erf(x) ~ 1.128 x) */
    for (int i = 0; i < 64; i++)
        x[i] = ldexpf(1.0f + (float)i / 64.0f, -i * 2 - 1) * (i % 2 ? -1.0f : 1.0f);
    nn_erf(y, x, 64);
    for (int i = 0; i < 64; i++) {
        double want = erf((double)x[i]);
        if (fabs((double)y[i] - want) > 2 * s_ulp(want))
            fail_msg("erf(%.9g) = %.9g, want %.9g", (double)x[i], (double)y[i], want);
    }
    wisp_free(x), wisp_free(y);
}

/* The AVX2 twin of the portable exp (what AVX2 CPUs without AVX-512 run) gives the
 * portable code's bits, on a dense grid over the clamps, the special values, and lengths
 * with every tail of an 8-float vector. */
static void test_avx2_exp_gives_the_portable_bits(void **state)
{
    (void)state;
    enum { n = (1 << 20) + 13 };
    float *x = s_zeros(n), *want = s_zeros(n), *got = s_zeros(n);
    const float special[] = {0.0f,   -0.0f,  INFINITY, -INFINITY, NAN,   1e-40f, -1e-40f, 88.72f,
                             88.73f, -87.4f, -103.9f,  -104.1f,   89.1f, 1e30f,  -1e30f};
    const int ns = (int)(sizeof special / sizeof special[0]);
    for (int i = 0; i < n; i++)
        x[i] = i < ns ? special[i] : -110.0f + 205.0f * (float)i / (float)(n - 1);
    for (size_t len = n - 9; len <= (size_t)n; len++) {
        memset(got, 0, n * sizeof *got);
        nn_exp_portable(want, x, len);
        if (!nn_exp_avx2(got, x, len))
            skip();
        s_same_bits(got, want, len, "AVX2 exp");
        for (size_t i = len; i < (size_t)n; i++)
            assert_true(got[i] == 0.0f); /* nothing written past the end */
    }
    wisp_free(x), wisp_free(want), wisp_free(got);
}

static void test_gelu_is_accurate_on_a_dense_grid_including_the_negative_tail(void **state)
{
    (void)state;
    enum { n = 1 << 20 };
    float *x = s_zeros(n), *y = s_zeros(n), *dy = s_zeros(n), *ones = s_zeros(n);
    for (int i = 0; i < n; i++) {
        x[i] = -12.0f + 24.0f * (float)i / (float)(n - 1);
        ones[i] = 1.0f;
    }
    nn_act_forward(y, x, n, NN_ACT_GELU);
    nn_act_backward(dy, ones, x, n, NN_ACT_GELU);
    /* both forwards: the one this CPU runs (the table version on AVX-512 and on AVX2 +
     * FMA) and the portable */
    float *yp = s_zeros(n), *dyp = s_zeros(n);
    nn_gelu_forward_portable(yp, x, n);
    nn_gelu_backward_portable(dyp, ones, x, n);
    for (int i = 0; i < n; i++) {
        double xd = x[i], cdf = 0.5 * erfc(-xd / sqrt(2.0)), want = xd * cdf;
        double dwant = cdf + xd * exp(-0.5 * xd * xd) / sqrt(2.0 * M_PI);
        double tol = 0.5e-7 * fabs(xd) + 2 * s_ulp(want) + 1e-30;
        if (!(fabs((double)yp[i] - want) <= tol))
            fail_msg("portable gelu(%.9g) = %.9g, want %.9g", xd, (double)yp[i], want);
        double dtol = 1e-7 * (1 + fabs(xd)) + 2 * s_ulp(dwant);
        if (!(fabs((double)dyp[i] - dwant) <= dtol))
            fail_msg("portable gelu'(%.9g) = %.9g, want %.9g", xd, (double)dyp[i], dwant);
    }
    wisp_free(dyp);
    /* odd lengths reach the masked tail: the same bits as in the long run, nothing
     * written past the end; out may alias inp */
    for (int len = 1; len < 40; len += 3) {
        const int off = 1000 * len + 5;
        for (int i = 0; i < 64; i++)
            yp[i] = -7.0f;
        nn_act_forward(yp, x + off, (size_t)len, NN_ACT_GELU);
        assert_memory_equal(yp, y + off, (size_t)len * sizeof *yp);
        for (int i = len; i < 64; i++)
            assert_true(yp[i] == -7.0f);
        memcpy(yp, x + off, (size_t)len * sizeof *yp);
        nn_act_forward(yp, yp, (size_t)len, NN_ACT_GELU);
        assert_memory_equal(yp, y + off, (size_t)len * sizeof *yp);
    }
    wisp_free(yp);
    for (int i = 0; i < n; i++) {
        double xd = x[i], cdf = 0.5 * erfc(-xd / sqrt(2.0));
        double want = xd * cdf, dwant = cdf + xd * exp(-0.5 * xd * xd) / sqrt(2.0 * M_PI);
        /* erf's 1e-7 scaled by 0.5 |x|, plus rounding of the result */
        double tol = 0.5e-7 * fabs(xd) + 2 * s_ulp(want) + 1e-30;
        if (!(fabs((double)y[i] - want) <= tol))
            fail_msg("gelu(%.9g) = %.9g, want %.9g", xd, (double)y[i], want);
        double dtol = 1e-7 * (1 + fabs(xd)) + 2 * s_ulp(dwant);
        if (!(fabs((double)dy[i] - dwant) <= dtol))
            fail_msg("gelu'(%.9g) = %.9g, want %.9g", xd, (double)dy[i], dwant);
    }
    wisp_free(x), wisp_free(y), wisp_free(dy), wisp_free(ones);
}

/* ---- 3. PyTorch goldens ------------------------------------------------- */

static void test_linear_matches_pytorch(void **state)
{
    (void)state;
    enum { N = 5, C = 7, OC = 3 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 101);
    float x[N * C], w[OC * C], b[OC], R[N * OC];
    s_sym(&r, x, N * C, 1), s_sym(&r, w, OC * C, 1), s_sym(&r, b, OC, 1), s_sym(&r, R, N * OC, 1);
    float *g = s_golden("linear", N * OC + N * C + OC * C + OC);
    float out[N * OC], dx[N * C] = {0}, dw[OC * C] = {0}, db[OC] = {0};
    nn_linear_forward(out, x, w, b, N, C, OC);
    nn_linear_backward(dx, dw, db, R, x, w, 1.0f, N, C, OC);
    s_close_scaled(out, g, N * OC, 1e-5, "linear out vs torch");
    s_close_scaled(dx, g + N * OC, N * C, 1e-4, "linear dinp vs torch");
    s_close_scaled(dw, g + N * OC + N * C, OC * C, 1e-4, "linear dweight vs torch");
    s_close_scaled(db, g + N * OC + N * C + OC * C, OC, 1e-4, "linear dbias vs torch");
    free(g);
}

static void test_layernorm_matches_pytorch(void **state)
{
    (void)state;
    enum { N = 4, C = 9 };
    wisp_rng_t r;
    wisp_rng_seed(&r, 102);
    float x[N * C], w[C], b[C], R[N * C];
    s_sym(&r, x, N * C, 2), s_sym(&r, w, C, 1), s_sym(&r, b, C, 1), s_sym(&r, R, N * C, 1);
    float *g = s_golden("layernorm", 2 * N * C + 2 * N + 2 * C);
    float out[N * C], mean[N], rstd[N], dx[N * C] = {0}, dw[C] = {0}, db[C] = {0};
    nn_layernorm_forward(out, mean, rstd, x, w, b, N, C);
    nn_layernorm_backward(dx, dw, db, R, x, w, mean, rstd, N, C);
    const float *p = g;
    s_close_scaled(out, p, N * C, 1e-5, "layernorm out vs torch"), p += N * C;
    s_close_scaled(mean, p, N, 1e-5, "layernorm mean vs torch"), p += N;
    s_close_scaled(rstd, p, N, 1e-5, "layernorm rstd vs torch"), p += N;
    s_close_scaled(dx, p, N * C, 1e-4, "layernorm dinp vs torch"), p += N * C;
    s_close_scaled(dw, p, C, 1e-4, "layernorm dweight vs torch"), p += C;
    s_close_scaled(db, p, C, 1e-4, "layernorm dbias vs torch");
    free(g);
}

static void test_every_activation_matches_pytorch(void **state)
{
    (void)state;
    enum { n = 64 };
    for (int a = NN_ACT_IDENTITY; a <= NN_ACT_LEAKYRELU; a++) {
        wisp_rng_t r;
        wisp_rng_seed(&r, 200 + (uint64_t)a); /* ops_ref.py's ACTS order = enum order */
        float x[n], R[n], out[n], dx[n] = {0};
        s_sym(&r, x, n, 4), s_sym(&r, R, n, 1);
        char name[64], label[96];
        snprintf(name, sizeof name, "act_%s", nn_act_name((nn_act_t)a));
        float *g = s_golden(name, 2 * n);
        nn_act_forward(out, x, n, (nn_act_t)a);
        nn_act_backward(dx, R, x, n, (nn_act_t)a);
        snprintf(label, sizeof label, "%s out vs torch", name);
        s_close_scaled(out, g, n, 1e-5, label);
        snprintf(label, sizeof label, "%s dinp vs torch", name);
        s_close_scaled(dx, g + n, n, 1e-4, label);
        free(g);
    }
}

static void test_conv1d_matches_pytorch_for_both_strides(void **state)
{
    (void)state;
    enum { Tin = 9, Cin = 4, Cout = 5 };
    for (int stride = 1; stride <= 2; stride++) {
        int Tout = (Tin - 1) / stride + 1;
        wisp_rng_t r;
        wisp_rng_seed(&r, 300 + (uint64_t)stride);
        float x[Tin * Cin], w[Cout * Cin * 3], b[Cout], out[Tin * Cout], col[Tin * Cin * 3];
        s_sym(&r, x, Tin * Cin, 1), s_sym(&r, w, Cout * Cin * 3, 1), s_sym(&r, b, Cout, 1);
        float *g = s_golden(stride == 1 ? "conv_s1" : "conv_s2", (size_t)Tout * Cout);
        nn_conv1d_k3_forward(out, col, x, w, b, Tin, Cin, Cout, stride);
        s_close_scaled(out, g, (size_t)Tout * Cout, 1e-5, "conv1d out vs torch");
        free(g);
    }
}

static void test_attention_matches_pytorch(void **state)
{
    (void)state;
    enum { B = 2, T = 11, NH = 2, hd = 4, n = B * T * NH * hd, nl = B * NH * T };
    wisp_rng_t r;
    wisp_rng_seed(&r, 400);
    float q[n], k[n], v[n], R[n], out[n], lse[nl], dq[n] = {0}, dk[n] = {0}, dv[n] = {0};
    s_sym(&r, q, n, 1.5f), s_sym(&r, k, n, 1.5f), s_sym(&r, v, n, 1.5f), s_sym(&r, R, n, 1);
    float *scratch = s_zeros(nn_attention_scratch_floats(T, hd));
    float *g = s_golden("attention", 4 * n + nl);
    nn_attention_forward(out, lse, NULL, q, k, v, scratch, B, T, NH, hd);
    nn_attention_backward(dq, dk, dv, R, out, lse, NULL, q, k, v, scratch, B, T, NH, hd);
    const float *p = g;
    s_close_scaled(out, p, n, 1e-5, "attention out vs torch"), p += n;
    s_close_scaled(lse, p, nl, 1e-5, "attention lse vs torch"), p += nl;
    s_close_scaled(dq, p, n, 1e-4, "attention dq vs torch"), p += n;
    s_close_scaled(dk, p, n, 1e-4, "attention dk vs torch"), p += n;
    s_close_scaled(dv, p, n, 1e-4, "attention dv vs torch");
    free(g);
    wisp_free(scratch);
}

static void test_head_pieces_match_pytorch(void **state)
{
    (void)state;
    wisp_rng_t r;
    { /* softmax (3, 6) */
        enum { N = 3, C = 6 };
        wisp_rng_seed(&r, 500);
        float x[N * C], R[N * C], out[N * C], dx[N * C] = {0};
        s_sym(&r, x, N * C, 3), s_sym(&r, R, N * C, 1);
        float *g = s_golden("softmax", 2 * N * C);
        nn_softmax_forward(out, x, N, C);
        nn_softmax_backward(dx, R, out, N, C);
        s_close_scaled(out, g, N * C, 1e-5, "softmax out vs torch");
        s_close_scaled(dx, g + N * C, N * C, 1e-4, "softmax dinp vs torch");
        free(g);
    }
    { /* meanpool (2, 5, 3) */
        enum { B = 2, T = 5, C = 3 };
        wisp_rng_seed(&r, 600);
        float x[B * T * C], R[B * C], out[B * C], dx[B * T * C] = {0};
        s_sym(&r, x, B * T * C, 1), s_sym(&r, R, B * C, 1);
        float *g = s_golden("meanpool", B * C + B * T * C);
        nn_meanpool_forward(out, x, B, T, C);
        nn_meanpool_backward(dx, R, B, T, C);
        s_close_scaled(out, g, B * C, 1e-5, "meanpool out vs torch");
        s_close_scaled(dx, g + B * C, B * T * C, 1e-4, "meanpool dinp vs torch");
        free(g);
    }
    { /* wsum K = 4, n = 10 */
        enum { K = 4, n = 10 };
        wisp_rng_seed(&r, 700);
        float h[K * n], w[K], R[n], out[n], dh[K * n] = {0}, dw[K] = {0};
        s_sym(&r, h, K * n, 1), s_sym(&r, w, K, 1), s_sym(&r, R, n, 1);
        const float *hp[K];
        float *dhp[K];
        for (int k = 0; k < K; k++)
            hp[k] = h + k * n, dhp[k] = dh + k * n;
        float *g = s_golden("wsum", n + K * n + K);
        nn_wsum_forward(out, hp, w, K, n);
        nn_wsum_backward(dhp, dw, R, hp, w, K, n);
        s_close_scaled(out, g, n, 1e-5, "wsum out vs torch");
        s_close_scaled(dh, g + n, K * n, 1e-4, "wsum dhidden vs torch");
        s_close_scaled(dw, g + n + K * n, K, 1e-4, "wsum dw vs torch");
        free(g);
    }
    { /* colscale (4, 5) */
        enum { N = 4, C = 5 };
        wisp_rng_seed(&r, 900);
        float x[N * C], s[C], R[N * C], out[N * C], dx[N * C] = {0}, ds[C] = {0};
        s_sym(&r, x, N * C, 1), s_sym(&r, s, C, 1), s_sym(&r, R, N * C, 1);
        float *g = s_golden("colscale", 2 * N * C + C);
        nn_colscale_forward(out, x, s, N, C);
        nn_colscale_backward(dx, ds, R, x, s, N, C);
        s_close_scaled(out, g, N * C, 1e-5, "colscale out vs torch");
        s_close_scaled(dx, g + N * C, N * C, 1e-4, "colscale dinp vs torch");
        s_close_scaled(ds, g + 2 * N * C, C, 1e-4, "colscale ds vs torch");
        free(g);
    }
}

static void test_crossentropy_matches_pytorch_with_and_without_class_weights(void **state)
{
    (void)state;
    enum { B = 6, NC = 5 };
    for (int weighted = 0; weighted <= 1; weighted++) {
        wisp_rng_t r;
        wisp_rng_seed(&r, 800 + (uint64_t)weighted);
        float x[B * NC], cw[NC], probs[B * NC], dx[B * NC] = {0};
        int y[B];
        s_sym(&r, x, B * NC, 3);
        for (int b = 0; b < B; b++)
            y[b] = (int)((wisp_rng_u64(&r) >> 33) % NC);
        if (weighted) {
            s_sym(&r, cw, NC, 1);
            for (int k = 0; k < NC; k++)
                cw[k] = cw[k] * 0.5f + 1.0f;
        }
        float *g = s_golden(weighted ? "ce_w" : "ce", 2 * B * NC + 2);
        double wsum = 0;
        double loss = nn_crossentropy_forward(probs, &wsum, x, y, weighted ? cw : NULL, B, NC);
        nn_crossentropy_backward(dx, probs, y, weighted ? cw : NULL, 1.0f, B, NC);
        s_close_scaled(probs, g, B * NC, 1e-5, "crossentropy probs vs torch");
        float lw[2] = {(float)loss, (float)wsum};
        wisp_assert_close(lw, g + B * NC, 2, 0, 1e-5, "crossentropy loss and weight sum vs torch");
        s_close_scaled(dx, g + B * NC + 2, B * NC, 1e-4, "crossentropy dlogits vs torch");
        free(g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_matches_its_loop_twin_on_odd_shapes),
        cmocka_unit_test(test_conv1d_matches_its_loop_twin_for_both_strides),
        cmocka_unit_test(test_attention_matches_its_loop_twin_across_block_edges),
        cmocka_unit_test(test_threaded_attention_is_bitwise_equal_to_the_serial_kernel),
        cmocka_unit_test(test_attention_kept_and_recomputed_probabilities_have_the_same_bits),
        cmocka_unit_test(test_threaded_elementwise_ops_are_bitwise_equal_to_the_serial_ones),
        cmocka_unit_test(test_linear_backward_matches_finite_differences),
        cmocka_unit_test(test_layernorm_forward_and_backward_match_double_precision),
        cmocka_unit_test(test_every_activation_matches_double_precision_and_finite_differences),
        cmocka_unit_test(test_activation_names_round_trip_and_unknown_is_rejected),
        cmocka_unit_test(test_attention_backward_matches_finite_differences),
        cmocka_unit_test(test_softmax_backward_matches_finite_differences),
        cmocka_unit_test(test_meanpool_forward_and_backward_match_double_precision),
        cmocka_unit_test(test_wsum_forward_and_backward_match_double_precision),
        cmocka_unit_test(test_crossentropy_matches_double_precision_with_and_without_class_weights),
        cmocka_unit_test(test_crossentropy_ignores_rows_with_labels_out_of_range),
        cmocka_unit_test(test_colscale_forward_and_backward_match_double_precision),
        cmocka_unit_test(test_vector_helpers_compute_what_they_say),
        cmocka_unit_test(test_vector_exp_is_within_2_ulp_of_double_on_a_dense_grid),
        cmocka_unit_test(test_vector_erf_is_within_1e_7_of_double_on_a_dense_grid),
        cmocka_unit_test(test_gelu_is_accurate_on_a_dense_grid_including_the_negative_tail),
        cmocka_unit_test(test_avx2_exp_gives_the_portable_bits),
        cmocka_unit_test(test_linear_matches_pytorch),
        cmocka_unit_test(test_layernorm_matches_pytorch),
        cmocka_unit_test(test_every_activation_matches_pytorch),
        cmocka_unit_test(test_conv1d_matches_pytorch_for_both_strides),
        cmocka_unit_test(test_attention_matches_pytorch),
        cmocka_unit_test(test_head_pieces_match_pytorch),
        cmocka_unit_test(test_crossentropy_matches_pytorch_with_and_without_class_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
