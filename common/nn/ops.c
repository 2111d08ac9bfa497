/* nn/ops.c: fp32 kernels of the encoder and head (see ops.h for the contracts).
 *
 * Matrix products go to OpenBLAS (cblas_sgemm) over all B*T rows at once. The
 * elementwise and row kernels on the encoder's hot path (GELU, the attention
 * softmax, LayerNorm, residual adds) are explicit 16-float vector loops (see
 * "Vector math"); the small head and adapter kernels are plain loops. Every
 * BLAS-backed kernel has a plain-loop twin (_ref) that the tests compare against.
 */
#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Query rows per attention block. At T = 1500, hd = 64 (whisper-base) 128 rows
 * beat 64 by ~10% (the products have K = hd or K = block, and OpenBLAS is more
 * efficient with larger panels) and match 256 while the (128, T) blocks (750 KB
 * each) still fit in L2; measured with bench/bench_ops.c (-DATTN_BLOCK=n). */
#ifndef ATTN_BLOCK
#define ATTN_BLOCK 128
#endif

/* ---- Vector math --------------------------------------------------------- */
/* The two transcendental hot spots of the encoder are exp in the attention
 * softmax (T*T per head and layer, forward and backward) and erf in GELU (T*F per
 * layer). glibc's scalar expf/erff cost 5-15 ns each, more than the GEMMs next to
 * them, and -O2 does not vectorise loops with unknown trip counts. So these few
 * loops are written with GCC vector extensions (16 floats) and compiled for
 * AVX-512, AVX2 and baseline x86-64 (target_clones picks one at load time). The
 * arithmetic is the same in every clone (no FMA contraction: GCC does none under
 * -std=c11, clang is told below), so these kernels give the same bits on every
 * x86-64 CPU. Accuracy is tested in tests/test_ops.c over dense grids: exp within
 * 2 ulp, erf within 1e-7 absolute of double precision. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#define S_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define S_CLONES
#endif

/* No helper passes or returns a vector by value: with 64-byte vectors that is an
 * ABI note in GCC and an error in clang for the clones without AVX-512. Helpers
 * take pointers and are wrapped in statement-expression macros, so call sites still
 * read as expressions (each macro has its own local names: they nest). */
#define S_INLINE static inline __attribute__((always_inline))
#define S_VW     16
typedef float s_vf __attribute__((vector_size(S_VW * 4)));
typedef int32_t s_vi __attribute__((vector_size(S_VW * 4)));

/* unaligned load and store */
#define s_vld(p)                                                                                   \
    ({                                                                                             \
        s_vf ld_;                                                                                  \
        memcpy(&ld_, (p), sizeof ld_);                                                             \
        ld_;                                                                                       \
    })
#define s_vst(p, v)                                                                                \
    ({                                                                                             \
        s_vf st_ = (v);                                                                            \
        memcpy((p), &st_, sizeof st_);                                                             \
    })
#define s_vsplat(x) ((s_vf){0} + (float)(x))
/* m ? a : b, lane-wise (m is all ones or all zeros per lane). */
#define s_vsel(m, a, b)                                                                            \
    ({                                                                                             \
        s_vi m_ = (m);                                                                             \
        (s_vf)((m_ & (s_vi)(a)) | (~m_ & (s_vi)(b)));                                              \
    })
#define s_vmax(a, b)                                                                               \
    ({                                                                                             \
        s_vf a_ = (a), b_ = (b);                                                                   \
        s_vsel(a_ > b_, a_, b_);                                                                   \
    })
#define s_hsum(v)                                                                                  \
    ({                                                                                             \
        s_vf h_ = (v);                                                                             \
        s_hsum_p(&h_);                                                                             \
    })
#define s_hmax(v)                                                                                  \
    ({                                                                                             \
        s_vf h_ = (v);                                                                             \
        s_hmax_p(&h_);                                                                             \
    })
#define s_vld_part(p, n, pad)                                                                      \
    ({                                                                                             \
        s_vf lp_;                                                                                  \
        s_vld_part_p((p), (n), (pad), &lp_);                                                       \
        lp_;                                                                                       \
    })
#define s_vst_part(p, v, n)                                                                        \
    ({                                                                                             \
        s_vf sp_ = (v);                                                                            \
        s_vst_part_p((p), &sp_, (n));                                                              \
    })
#define s_vexp(x)                                                                                  \
    ({                                                                                             \
        s_vf ex_ = (x), ey_;                                                                       \
        s_vexp_p(&ex_, &ey_);                                                                      \
        ey_;                                                                                       \
    })
#define s_verf(z, e, o)                                                                            \
    ({                                                                                             \
        s_vf ez_ = (z);                                                                            \
        s_verf_p(&ez_, (e), (o));                                                                  \
    })
#define s_gelu_grad(x)                                                                             \
    ({                                                                                             \
        s_vf gx_ = (x), gy_;                                                                       \
        s_gelu_grad_p(&gx_, &gy_);                                                                 \
        gy_;                                                                                       \
    })
S_INLINE float s_hsum_p(const s_vf *pv)
{
    s_vf v = *pv;
    float s = 0.0f;
    for (int i = 0; i < S_VW; i++)
        s += v[i];
    return s;
}
S_INLINE float s_hmax_p(const s_vf *pv)
{
    s_vf v = *pv;
    float m = v[0];
    for (int i = 1; i < S_VW; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}
/* Loads n < S_VW floats, the other lanes set to pad. */
S_INLINE void s_vld_part_p(const float *p, int n, float pad, s_vf *out)
{
    float tmp[S_VW];
    for (int i = 0; i < S_VW; i++)
        tmp[i] = i < n ? p[i] : pad;
    memcpy(out, tmp, sizeof tmp);
}
S_INLINE void s_vst_part_p(float *p, const s_vf *pv, int n)
{
    s_vf v = *pv;
    for (int i = 0; i < n; i++)
        p[i] = v[i];
}

/* exp(x): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes' degree-6
 * polynomial for e^r, and 2^n applied as two halves so gradual underflow (down to
 * x ~ -104) and overflow to +inf (x > 88.72) come out right. */
S_INLINE void s_vexp_p(const s_vf *px, s_vf *out)
{
    s_vf x = *px;
    const s_vf magic = s_vsplat(0x1.8p23f); /* adding it rounds to an integer */
    s_vf xc = s_vsel(x < -104.0f, s_vsplat(-104.0f), x);
    xc = s_vsel(xc > 89.0f, s_vsplat(89.0f), xc);
    s_vf t = xc * 1.44269504088896341f + magic;
    s_vf n = t - magic;
    s_vi ni = (s_vi)t - (s_vi)magic; /* the integer n, read from the mantissa bits */
    s_vf r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    s_vf p = s_vsplat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    s_vi n1 = ni >> 1, n2 = ni - n1;
    s_vf y = p * (s_vf)((n1 + 127) << 23) * (s_vf)((n2 + 127) << 23);
    *out = s_vsel(x != x, x, y); /* NaN stays NaN */
}

/* erf(z) and 1 + erf(z) (the latter without cancellation for z << 0, which GELU
 * needs). For |z| < 0.875: erf(a) = a + a Q(a^2) (degree 6 fit); above:
 * erfc(a) = exp(R(a)) (degree 8 fit of log erfc on [0.875, 3.92]); erfc(a) is
 * taken as 0 beyond 3.92, where it is below half an ulp of 1. The coefficients
 * are least-squares fits, see tests/reference/erf_fit.py. */
S_INLINE void s_verf_p(const s_vf *pz, s_vf *erf_out, s_vf *onep_out)
{
    s_vf z = *pz;
    s_vi neg = z < 0.0f;
    s_vf a = s_vsel(neg, -z, z);
    s_vf a2 = a * a;
    s_vf q = s_vsplat(8.35702376e-05f);
    q = q * a2 + -0.000813449034f;
    q = q * a2 + 0.00519968849f;
    q = q * a2 + -0.0268584825f;
    q = q * a2 + 0.112836674f;
    q = q * a2 + -0.376126289f;
    q = q * a2 + 0.128379166f;
    s_vf sm = a * q + a;
    s_vf ac = s_vsel(a < 0.875f, s_vsplat(0.875f), a);
    ac = s_vsel(ac > 3.92f, s_vsplat(3.92f), ac);
    s_vf r = s_vsplat(-1.02358717e-06f);
    r = r * ac + -7.21290462e-06f;
    r = r * ac + 0.000353818439f;
    r = r * ac + -0.00390894152f;
    r = r * ac + 0.0245979372f;
    r = r * ac + -0.10762962f;
    r = r * ac + -0.633843839f;
    r = r * ac + -1.12930226f;
    r = r * ac + 0.000135614173f;
    s_vf e = s_vexp(r);
    e = s_vsel(a > 3.92f, s_vsplat(0.0f), e);
    s_vi small = a < 0.875f;
    s_vf erfa = s_vsel(small, sm, 1.0f - e);
    if (erf_out)
        *erf_out = s_vsel(neg, -erfa, erfa);
    if (onep_out)
        *onep_out = s_vsel(neg, s_vsel(small, 1.0f - sm, e), 1.0f + erfa);
}

S_CLONES static void s_exp_impl(float *out, const float *inp, size_t n)
{
    size_t i = 0;
    for (; i + S_VW <= n; i += S_VW)
        s_vst(out + i, s_vexp(s_vld(inp + i)));
    if (i < n)
        s_vst_part(out + i, s_vexp(s_vld_part(inp + i, (int)(n - i), 0.0f)), (int)(n - i));
}

void nn_exp(float *out, const float *inp, size_t n)
{
    s_exp_impl(out, inp, n);
}

S_CLONES static void s_erf_impl(float *out, const float *inp, size_t n)
{
    size_t i = 0;
    s_vf y;
    for (; i + S_VW <= n; i += S_VW) {
        s_verf(s_vld(inp + i), &y, NULL);
        s_vst(out + i, y);
    }
    if (i < n) {
        s_verf(s_vld_part(inp + i, (int)(n - i), 0.0f), &y, NULL);
        s_vst_part(out + i, y, (int)(n - i));
    }
}

void nn_erf(float *out, const float *inp, size_t n)
{
    s_erf_impl(out, inp, n);
}

/* GELU (erf form): out = 0.5 x (1 + erf(x / sqrt 2)); out may alias inp. */
S_CLONES static void s_gelu_forward(float *out, const float *inp, size_t n)
{
    size_t i = 0;
    s_vf c;
    for (; i + S_VW <= n; i += S_VW) {
        s_vf x = s_vld(inp + i);
        s_verf(x * 0.70710678118654752440f, NULL, &c);
        s_vst(out + i, 0.5f * x * c);
    }
    if (i < n) {
        s_vf x = s_vld_part(inp + i, (int)(n - i), 0.0f);
        s_verf(x * 0.70710678118654752440f, NULL, &c);
        s_vst_part(out + i, 0.5f * x * c, (int)(n - i));
    }
}

/* dinp += dout * (Phi(x) + x phi(x)). */
S_INLINE void s_gelu_grad_p(const s_vf *px, s_vf *out)
{
    s_vf x = *px;
    s_vf c;
    s_verf(x * 0.70710678118654752440f, NULL, &c);
    s_vf pdf = 0.39894228040143267794f * s_vexp(-0.5f * x * x);
    *out = 0.5f * c + x * pdf;
}

S_CLONES static void s_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n)
{
    size_t i = 0;
    for (; i + S_VW <= n; i += S_VW)
        s_vst(dinp + i, s_vld(dinp + i) + s_vld(dout + i) * s_gelu_grad(s_vld(inp + i)));
    if (i < n) {
        int m = (int)(n - i);
        s_vf g = s_vld_part(dinp + i, m, 0.0f) +
                 s_vld_part(dout + i, m, 0.0f) * s_gelu_grad(s_vld_part(inp + i, m, 0.0f));
        s_vst_part(dinp + i, g, m);
    }
}

/* Rows of C floats, vectorised: full vectors, then one padded vector for the tail
 * (lanes past C loaded as pad, stored back only up to C). */
#define S_ROW_LOOP(j, C, body_full, body_tail)                                                     \
    do {                                                                                           \
        int j = 0;                                                                                 \
        for (; j + S_VW <= (C); j += S_VW) {                                                       \
            int rem_ = S_VW;                                                                       \
            (void)rem_;                                                                            \
            body_full;                                                                             \
        }                                                                                          \
        if (j < (C)) {                                                                             \
            int rem_ = (C)-j;                                                                      \
            (void)rem_;                                                                            \
            body_tail;                                                                             \
        }                                                                                          \
    } while (0)

/* Flat loops as rows of one long row: the same vector code, with size_t lengths
 * split into int-sized pieces. */
#define S_FLAT_LOOP(n, body_full, body_tail)                                                       \
    do {                                                                                           \
        for (size_t base_ = 0; base_ < (n); base_ += (size_t)1 << 30) {                            \
            int len_ = (n)-base_ < ((size_t)1 << 30) ? (int)((n)-base_) : 1 << 30;                 \
            S_ROW_LOOP(                                                                            \
                j_, len_,                                                                          \
                {                                                                                  \
                    size_t j = base_ + (size_t)j_;                                                 \
                    body_full;                                                                     \
                },                                                                                 \
                {                                                                                  \
                    size_t j = base_ + (size_t)j_;                                                 \
                    body_tail;                                                                     \
                });                                                                                \
        }                                                                                          \
    } while (0)

/* ---- Small vector helpers ----------------------------------------------- */

S_CLONES static void s_add_impl(float *out, const float *a, const float *b, size_t n)
{
    S_FLAT_LOOP(n, s_vst(out + j, s_vld(a + j) + s_vld(b + j)),
                s_vst_part(out + j, s_vld_part(a + j, rem_, 0) + s_vld_part(b + j, rem_, 0), rem_));
}

void nn_add(float *out, const float *a, const float *b, size_t n)
{
    s_add_impl(out, a, b, n);
}

S_CLONES static void s_axpy_impl(float *y, float alpha, const float *x, size_t n)
{
    S_FLAT_LOOP(
        n, s_vst(y + j, s_vld(y + j) + alpha * s_vld(x + j)),
        s_vst_part(y + j, s_vld_part(y + j, rem_, 0) + alpha * s_vld_part(x + j, rem_, 0), rem_));
}

void nn_axpy(float *y, float alpha, const float *x, size_t n)
{
    s_axpy_impl(y, alpha, x, n);
}

S_CLONES static void s_scale_impl(float *x, float alpha, size_t n)
{
    S_FLAT_LOOP(n, s_vst(x + j, s_vld(x + j) * alpha),
                s_vst_part(x + j, s_vld_part(x + j, rem_, 0) * alpha, rem_));
}

void nn_scale(float *x, float alpha, size_t n)
{
    s_scale_impl(x, alpha, n);
}

S_CLONES static void s_colscale_forward_impl(float *out, const float *inp, const float *s, int N,
                                             int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        S_ROW_LOOP(
            j, C, s_vst(y + j, s_vld(x + j) * s_vld(s + j)),
            s_vst_part(y + j, s_vld_part(x + j, rem_, 0) * s_vld_part(s + j, rem_, 0), rem_));
    }
}

void nn_colscale_forward(float *out, const float *inp, const float *s, int N, int C)
{
    s_colscale_forward_impl(out, inp, s, N, C);
}

S_CLONES static void s_colscale_backward_impl(float *dinp, float *ds, const float *dout,
                                              const float *inp, const float *s, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *g = dout + (size_t)i * C;
        if (dinp) {
            float *dx = dinp + (size_t)i * C;
            S_ROW_LOOP(j, C, s_vst(dx + j, s_vld(dx + j) + s_vld(g + j) * s_vld(s + j)),
                       s_vst_part(dx + j,
                                  s_vld_part(dx + j, rem_, 0) +
                                      s_vld_part(g + j, rem_, 0) * s_vld_part(s + j, rem_, 0),
                                  rem_));
        }
        if (ds) {
            const float *x = inp + (size_t)i * C;
            S_ROW_LOOP(j, C, s_vst(ds + j, s_vld(ds + j) + s_vld(g + j) * s_vld(x + j)),
                       s_vst_part(ds + j,
                                  s_vld_part(ds + j, rem_, 0) +
                                      s_vld_part(g + j, rem_, 0) * s_vld_part(x + j, rem_, 0),
                                  rem_));
        }
    }
}

void nn_colscale_backward(float *dinp, float *ds, const float *dout, const float *inp,
                          const float *s, int N, int C)
{
    s_colscale_backward_impl(dinp, ds, dout, inp, s, N, C);
}

/* ---- Linear ------------------------------------------------------------- */

/* db (C) += alpha * column sums of d (N, C). */
S_CLONES static void s_colsum_add(float *db, const float *d, float alpha, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *r = d + (size_t)i * C;
        S_ROW_LOOP(j, C, s_vst(db + j, s_vld(db + j) + alpha * s_vld(r + j)),
                   s_vst_part(db + j,
                              s_vld_part(db + j, rem_, 0) + alpha * s_vld_part(r + j, rem_, 0),
                              rem_));
    }
}

void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC)
{
    if (N <= 0 || OC <= 0)
        return;
    if (C <= 0) {
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++)
                out[(size_t)i * OC + o] = bias ? bias[o] : 0.0f;
        return;
    }
    float beta = 0.0f;
    if (bias) {
        /* Bias first, then accumulate the product: one pass less than adding after. */
        for (int i = 0; i < N; i++)
            memcpy(out + (size_t)i * OC, bias, (size_t)OC * sizeof *out);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, beta,
                out, OC);
}

void nn_linear_forward_add(float *out, const float *inp, const float *weight, float alpha, int N,
                           int C, int OC)
{
    if (N <= 0 || OC <= 0 || C <= 0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, alpha, inp, C, weight, C, 1.0f,
                out, OC);
}

void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, float alpha, int N, int C, int OC)
{
    if (N <= 0 || OC <= 0)
        return;
    if (dinp && C > 0) /* dinp (N, C) += alpha * dout (N, OC) @ weight (OC, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, alpha, dout, OC, weight, C,
                    1.0f, dinp, C);
    if (dweight && C > 0) /* dweight (OC, C) += alpha * dout^T (OC, N) @ inp (N, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, alpha, dout, OC, inp, C,
                    1.0f, dweight, C);
    if (dbias)
        s_colsum_add(dbias, dout, alpha, N, OC);
}

void nn_linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int C, int OC)
{
    for (int i = 0; i < N; i++) {
        for (int o = 0; o < OC; o++) {
            float acc = bias ? bias[o] : 0.0f;
            for (int c = 0; c < C; c++)
                acc += inp[(size_t)i * C + c] * weight[(size_t)o * C + c];
            out[(size_t)i * OC + o] = acc;
        }
    }
}

void nn_linear_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, float alpha, int N, int C,
                            int OC)
{
    for (int i = 0; i < N; i++) {
        for (int o = 0; o < OC; o++) {
            float d = alpha * dout[(size_t)i * OC + o];
            if (dbias)
                dbias[o] += d;
            for (int c = 0; c < C; c++) {
                if (dinp)
                    dinp[(size_t)i * C + c] += d * weight[(size_t)o * C + c];
                if (dweight)
                    dweight[(size_t)o * C + c] += d * inp[(size_t)i * C + c];
            }
        }
    }
}

/* ---- LayerNorm ---------------------------------------------------------- */

/* Mean and 1/sqrt(var + eps) of one row (biased variance, two passes, like torch). */
S_INLINE void s_row_stats(const float *x, int C, float *m_out, float *rs_out)
{
    s_vf acc = s_vsplat(0.0f);
    S_ROW_LOOP(j, C, acc += s_vld(x + j), acc += s_vld_part(x + j, rem_, 0.0f));
    float m = s_hsum(acc) / (float)C;
    s_vf vacc = s_vsplat(0.0f);
    S_ROW_LOOP(
        j, C,
        {
            s_vf d = s_vld(x + j) - m;
            vacc += d * d;
        },
        {
            s_vf d = s_vld_part(x + j, rem_, m) - m;
            vacc += d * d;
        });
    *m_out = m;
    *rs_out = 1.0f / sqrtf(s_hsum(vacc) / (float)C + 1e-5f);
}

S_CLONES static void s_layernorm_forward_impl(float *out, float *mean, float *rstd,
                                              const float *inp, const float *weight,
                                              const float *bias, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        float m, rs;
        s_row_stats(x, C, &m, &rs);
        S_ROW_LOOP(j, C,
                   s_vst(y + j, (s_vld(x + j) - m) * rs * s_vld(weight + j) + s_vld(bias + j)),
                   s_vst_part(y + j,
                              (s_vld_part(x + j, rem_, 0.0f) - m) * rs *
                                      s_vld_part(weight + j, rem_, 0.0f) +
                                  s_vld_part(bias + j, rem_, 0.0f),
                              rem_));
        if (mean)
            mean[i] = m;
        if (rstd)
            rstd[i] = rs;
    }
}

void nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C)
{
    s_layernorm_forward_impl(out, mean, rstd, inp, weight, bias, N, C);
}

S_CLONES static void s_layernorm_backward_impl(float *dinp, float *dweight, float *dbias,
                                               const float *dout, const float *inp,
                                               const float *weight, const float *mean,
                                               const float *rstd, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        const float *dy = dout + (size_t)i * C;
        float m, rs;
        if (mean && rstd) {
            m = mean[i];
            rs = rstd[i];
        } else {
            s_row_stats(x, C, &m, &rs); /* not saved: recompute (cheap next to the rest) */
        }
        if (dweight) /* dweight += xhat * dy */
            S_ROW_LOOP(
                j, C,
                s_vst(dweight + j, s_vld(dweight + j) + (s_vld(x + j) - m) * rs * s_vld(dy + j)),
                s_vst_part(dweight + j,
                           s_vld_part(dweight + j, rem_, 0.0f) +
                               (s_vld_part(x + j, rem_, 0.0f) - m) * rs *
                                   s_vld_part(dy + j, rem_, 0.0f),
                           rem_));
        if (dbias)
            S_ROW_LOOP(
                j, C, s_vst(dbias + j, s_vld(dbias + j) + s_vld(dy + j)),
                s_vst_part(dbias + j,
                           s_vld_part(dbias + j, rem_, 0.0f) + s_vld_part(dy + j, rem_, 0.0f),
                           rem_));
        if (dinp) {
            /* dx = rs * (g - mean(g) - xhat * mean(g * xhat)), g = w * dy; padded lanes
             * have dy = 0, so g = 0 there and they add nothing to the sums. */
            s_vf vg = s_vsplat(0.0f), vgx = s_vsplat(0.0f);
            S_ROW_LOOP(
                j, C,
                {
                    s_vf g = s_vld(weight + j) * s_vld(dy + j);
                    vg += g;
                    vgx += g * ((s_vld(x + j) - m) * rs);
                },
                {
                    s_vf g = s_vld_part(weight + j, rem_, 0.0f) * s_vld_part(dy + j, rem_, 0.0f);
                    vg += g;
                    vgx += g * ((s_vld_part(x + j, rem_, 0.0f) - m) * rs);
                });
            float sg = s_hsum(vg) / (float)C, sgx = s_hsum(vgx) / (float)C;
            float *dx = dinp + (size_t)i * C;
            S_ROW_LOOP(j, C,
                       s_vst(dx + j, s_vld(dx + j) + rs * (s_vld(weight + j) * s_vld(dy + j) - sg -
                                                           (s_vld(x + j) - m) * rs * sgx)),
                       s_vst_part(dx + j,
                                  s_vld_part(dx + j, rem_, 0.0f) +
                                      rs * (s_vld_part(weight + j, rem_, 0.0f) *
                                                s_vld_part(dy + j, rem_, 0.0f) -
                                            sg - (s_vld_part(x + j, rem_, 0.0f) - m) * rs * sgx),
                                  rem_));
        }
    }
}

void nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C)
{
    s_layernorm_backward_impl(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}

/* ---- Activations -------------------------------------------------------- */

static const struct {
    const char *name;
    nn_act_t act;
} s_act_names[] = {
    {"linear", NN_ACT_IDENTITY},     {"identity", NN_ACT_IDENTITY}, {"relu", NN_ACT_RELU},
    {"swish", NN_ACT_SILU},          {"silu", NN_ACT_SILU},         {"gelu", NN_ACT_GELU},
    {"gelu_new", NN_ACT_GELU_TANH},  {"tanh", NN_ACT_TANH},         {"sigmoid", NN_ACT_SIGMOID},
    {"leakyrelu", NN_ACT_LEAKYRELU},
};

int nn_act_parse(const char *name)
{
    if (!name)
        return -1;
    /* The adapters library lower-cases non_linearity before matching. */
    for (size_t i = 0; i < sizeof s_act_names / sizeof s_act_names[0]; i++)
        if (strcasecmp(name, s_act_names[i].name) == 0)
            return (int)s_act_names[i].act;
    return -1;
}

const char *nn_act_name(nn_act_t act)
{
    switch (act) {
    case NN_ACT_IDENTITY: return "identity";
    case NN_ACT_RELU: return "relu";
    case NN_ACT_SILU: return "silu";
    case NN_ACT_GELU: return "gelu";
    case NN_ACT_GELU_TANH: return "gelu_new";
    case NN_ACT_TANH: return "tanh";
    case NN_ACT_SIGMOID: return "sigmoid";
    case NN_ACT_LEAKYRELU: return "leakyrelu";
    }
    return "unknown";
}

#define S_SQRT_2_PI 0.79788456080286535588f
#define S_GELU_C    0.044715f

static inline float s_sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

void nn_act_forward(float *out, const float *inp, size_t n, nn_act_t act)
{
    /* out may alias inp: no restrict here, element i only reads inp[i]. */
    switch (act) {
    case NN_ACT_IDENTITY:
        if (out != inp)
            memmove(out, inp, n * sizeof *out);
        break;
    case NN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
        break;
    case NN_ACT_LEAKYRELU:
        for (size_t i = 0; i < n; i++)
            out[i] = inp[i] > 0.0f ? inp[i] : 0.01f * inp[i];
        break;
    case NN_ACT_SILU:
        for (size_t i = 0; i < n; i++)
            out[i] = inp[i] * s_sigmoid(inp[i]);
        break;
    case NN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            out[i] = s_sigmoid(inp[i]);
        break;
    case NN_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            out[i] = tanhf(inp[i]);
        break;
    case NN_ACT_GELU: s_gelu_forward(out, inp, n); break;
    case NN_ACT_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            out[i] = 0.5f * x * (1.0f + tanhf(S_SQRT_2_PI * (x + S_GELU_C * x * x * x)));
        }
        break;
    }
}

void nn_act_backward(float *dinp, const float *dout, const float *inp, size_t n, nn_act_t act)
{
    switch (act) {
    case NN_ACT_IDENTITY:
        for (size_t i = 0; i < n; i++)
            dinp[i] += dout[i];
        break;
    case NN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dinp[i] += inp[i] > 0.0f ? dout[i] : 0.0f;
        break;
    case NN_ACT_LEAKYRELU: /* torch: slope applies at x <= 0 */
        for (size_t i = 0; i < n; i++)
            dinp[i] += inp[i] > 0.0f ? dout[i] : 0.01f * dout[i];
        break;
    case NN_ACT_SILU:
        for (size_t i = 0; i < n; i++) {
            float s = s_sigmoid(inp[i]);
            dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
        }
        break;
    case NN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) {
            float s = s_sigmoid(inp[i]);
            dinp[i] += dout[i] * s * (1.0f - s);
        }
        break;
    case NN_ACT_TANH:
        for (size_t i = 0; i < n; i++) {
            float t = tanhf(inp[i]);
            dinp[i] += dout[i] * (1.0f - t * t);
        }
        break;
    case NN_ACT_GELU: s_gelu_backward(dinp, dout, inp, n); break;
    case NN_ACT_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            float t = tanhf(S_SQRT_2_PI * (x + S_GELU_C * x * x * x));
            float du = S_SQRT_2_PI * (1.0f + 3.0f * S_GELU_C * x * x);
            dinp[i] += dout[i] * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
        }
        break;
    }
}

/* ---- Convolution front end ---------------------------------------------- */

size_t nn_conv1d_k3_scratch_floats(int Tout, int Cin)
{
    return (size_t)(Tout > 0 ? Tout : 0) * (size_t)(Cin > 0 ? Cin : 0) * 3;
}

void nn_conv1d_k3_forward(float *out, float *col, const float *inp, const float *weight,
                          const float *bias, int Tin, int Cin, int Cout, int stride)
{
    if (Tin <= 0 || Cout <= 0 || stride <= 0)
        return;
    int Tout = (Tin - 1) / stride + 1;
    int K = Cin * 3;
    /* im2col: col[t, c*3 + k] = inp[t*stride + k - 1, c], zero outside [0, Tin). This
     * matches the torch weight layout (Cout, Cin, 3) read as (Cout, Cin*3). */
    for (int t = 0; t < Tout; t++) {
        float *restrict row = col + (size_t)t * K;
        int t0 = t * stride - 1; /* the three input rows t0, t0+1, t0+2 (t0+1 < Tin always) */
        const float *x1 = inp + (size_t)(t0 + 1) * Cin;
        const float *x0 = t0 >= 0 ? x1 - Cin : NULL;
        const float *x2 = t0 + 2 < Tin ? x1 + Cin : NULL;
        for (int c = 0; c < Cin; c++) { /* sequential stores, three streaming reads */
            row[c * 3 + 0] = x0 ? x0[c] : 0.0f;
            row[c * 3 + 1] = x1[c];
            row[c * 3 + 2] = x2 ? x2[c] : 0.0f;
        }
    }
    nn_linear_forward(out, col, weight, bias, Tout, K, Cout);
}

void nn_conv1d_k3_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                              int Tin, int Cin, int Cout, int stride)
{
    if (Tin <= 0 || stride <= 0)
        return;
    int Tout = (Tin - 1) / stride + 1;
    for (int t = 0; t < Tout; t++) {
        for (int o = 0; o < Cout; o++) {
            float acc = bias ? bias[o] : 0.0f;
            for (int c = 0; c < Cin; c++) {
                for (int k = 0; k < 3; k++) {
                    int ti = t * stride + k - 1;
                    if (ti >= 0 && ti < Tin)
                        acc += weight[((size_t)o * Cin + c) * 3 + k] * inp[(size_t)ti * Cin + c];
                }
            }
            out[(size_t)t * Cout + o] = acc;
        }
    }
}

/* ---- Attention ---------------------------------------------------------- */

size_t nn_attention_scratch_floats(int T, int hd)
{
    (void)hd;
    if (T <= 0)
        return 0;
    size_t bq = (size_t)(T < ATTN_BLOCK ? T : ATTN_BLOCK);
    /* Forward: E (bq, T), row max and sum (2 bq). Backward: P (bq, T), dP/dS (bq, T),
     * D (bq). The backward need is the larger one. */
    return 2 * bq * (size_t)T + bq;
}

/* Rows of S (rows, T) in place: s <- exp(s - max_j s); mx[r] = max, sum[r] = sum
 * of the exponentials. One pass for the max, one for exp and sum. */
S_CLONES static void s_exp_rows(float *S, float *mx, float *sum, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *s = S + (size_t)r * T;
        s_vf vm = s_vsplat(-INFINITY);
        int j = 0;
        for (; j + S_VW <= T; j += S_VW)
            vm = s_vmax(vm, s_vld(s + j));
        if (j < T)
            vm = s_vmax(vm, s_vld_part(s + j, T - j, -INFINITY));
        float m = s_hmax(vm);
        s_vf vs = s_vsplat(0.0f);
        for (j = 0; j + S_VW <= T; j += S_VW) {
            s_vf e = s_vexp(s_vld(s + j) - m);
            s_vst(s + j, e);
            vs += e;
        }
        if (j < T) {
            s_vf e = s_vexp(s_vld_part(s + j, T - j, -INFINITY) - m); /* pad lanes -> 0 */
            s_vst_part(s + j, e, T - j);
            vs += e;
        }
        mx[r] = m;
        sum[r] = s_hsum(vs);
    }
}

/* P (rows, T) in place: p <- exp(p - lse[r]) (the normalised probabilities). */
S_CLONES static void s_exp_shift_rows(float *P, const float *lse, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *p = P + (size_t)r * T;
        float l = lse[r];
        int j = 0;
        for (; j + S_VW <= T; j += S_VW)
            s_vst(p + j, s_vexp(s_vld(p + j) - l));
        if (j < T)
            s_vst_part(p + j, s_vexp(s_vld_part(p + j, T - j, 0.0f) - l), T - j);
    }
}

/* dS (rows, T) in place: ds <- p * (ds - D[r]). */
S_CLONES static void s_dsoftmax_rows(float *dS, const float *P, const float *D, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *ds = dS + (size_t)r * T;
        const float *p = P + (size_t)r * T;
        float d = D[r];
        int j = 0;
        for (; j + S_VW <= T; j += S_VW)
            s_vst(ds + j, s_vld(p + j) * (s_vld(ds + j) - d));
        for (; j < T; j++)
            ds[j] = p[j] * (ds[j] - d);
    }
}

/* dst (rows, T) = src * (1 / sum[r]): exp rows to probabilities, written with
 * streaming (non-temporal) stores where aligned. The kept probabilities are read only
 * by the backward, long after: streaming them out spares the read-for-ownership of
 * every line and keeps the block being computed in cache. Same arithmetic as
 * p * inv anywhere else. */
static void s_stream_probs(float *dst, const float *src, const float *sum, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *d = dst + (size_t)r * T;
        const float *p = src + (size_t)r * T;
        float inv = 1.0f / sum[r];
        int j = 0;
#if defined(__x86_64__)
        /* SSE (baseline x86-64) streaming stores: 16-byte aligned destinations */
        for (; j < T && ((uintptr_t)(d + j) & 15); j++)
            d[j] = p[j] * inv;
        __m128 vinv = _mm_set1_ps(inv);
        for (; j + 4 <= T; j += 4)
            _mm_stream_ps(d + j, _mm_mul_ps(_mm_loadu_ps(p + j), vinv));
#endif
        for (; j < T; j++)
            d[j] = p[j] * inv;
    }
#if defined(__x86_64__)
    _mm_sfence(); /* order the streamed lines before anything that follows */
#endif
}

/* One forward work unit: query rows [i0, i0 + bq) of head h of clip b. S is
 * (bq, T) scratch, mx and sum (bq). Units write disjoint rows/columns of out and
 * disjoint entries of lse. */
static void s_attn_fwd_block(float *out, float *lse, float *probs, const float *q, const float *k,
                             const float *v, float *S, float *mx, float *sum, int b, int h, int i0,
                             int T, int NH, int hd)
{
    const int C = NH * hd;
    const int bq = T - i0 < ATTN_BLOCK ? T - i0 : ATTN_BLOCK;
    const float *kb = k + (size_t)b * T * C + (size_t)h * hd;
    const float *vb = v + (size_t)b * T * C + (size_t)h * hd;
    size_t row0 = (size_t)b * T + (size_t)i0;
    const float *qb = q + row0 * C + (size_t)h * hd;
    float *ob = out + row0 * C + (size_t)h * hd;
    /* S (bq, T) = Q_blk (bq, hd) @ K^T (hd, T) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, T, hd, 1.0f, qb, C, kb, C, 0.0f, S, T);
    s_exp_rows(S, mx, sum, bq, T);
    /* O_blk (bq, hd) = E (bq, T) @ V (T, hd), then rows / sum: normalising the
     * (bq, hd) output is cheaper than the (bq, T) probabilities. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, T, 1.0f, S, T, vb, C, 0.0f, ob,
                C);
    for (int r = 0; r < bq; r++) {
        float inv = 1.0f / sum[r];
        float *restrict o = ob + (size_t)r * C;
        for (int d = 0; d < hd; d++)
            o[d] *= inv;
    }
    if (probs)
        s_stream_probs(probs + (((size_t)b * NH + h) * T + (size_t)i0) * T, S, sum, bq, T);
    if (lse) {
        float *l = lse + ((size_t)b * NH + h) * T + i0;
        for (int r = 0; r < bq; r++)
            l[r] = mx[r] + logf(sum[r]);
    }
}

void nn_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                          const float *v, float *scratch, int B, int T, int NH, int hd)
{
    if (B <= 0 || T <= 0 || NH <= 0 || hd <= 0)
        return;
    const int bqmax = T < ATTN_BLOCK ? T : ATTN_BLOCK;
    float *S = scratch;                      /* (bq, T) */
    float *mx = scratch + (size_t)bqmax * T; /* (bq) row max */
    float *sum = mx + bqmax;                 /* (bq) row sum of exp */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK)
                s_attn_fwd_block(out, lse, probs, q, k, v, S, mx, sum, b, h, i0, T, NH, hd);
}

/* One backward work unit: every query block of head h of clip b, in order (dK and
 * dV of the head accumulate over the blocks). P and dS are (bqmax, T) scratch, D
 * (bqmax). Units write disjoint columns of dq, dk and dv. */
static void s_attn_bwd_head(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *probs, const float *q, const float *k,
                            const float *v, float *Pscr, float *dS, float *D, int b, int h, int T,
                            int NH, int hd)
{
    const int C = NH * hd;
    size_t hoff = (size_t)b * T * C + (size_t)h * hd;
    const float *kb = k + hoff, *vb = v + hoff;
    for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
        int bq = T - i0 < ATTN_BLOCK ? T - i0 : ATTN_BLOCK;
        size_t boff = hoff + (size_t)i0 * C;
        const float *qb = q + boff, *dob = dout + boff, *ob = out + boff;
        const float *P = Pscr;
        if (probs) {
            P = probs + (((size_t)b * NH + h) * T + (size_t)i0) * T;
        } else { /* recompute P (bq, T) = exp(Q_blk K^T - lse) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, T, hd, 1.0f, qb, C, kb, C,
                        0.0f, Pscr, T);
            if (lse) {
                s_exp_shift_rows(Pscr, lse + ((size_t)b * NH + h) * T + i0, bq, T);
            } else { /* not saved: the softmax again, D as scratch for max and sum */
                s_exp_rows(Pscr, D, dS, bq, T);
                for (int r = 0; r < bq; r++) {
                    float l = D[r] + logf(dS[r]);
                    D[r] = l;
                }
                s_exp_shift_rows(Pscr, D, bq, T);
            }
        }
        /* dV (T, hd) += P^T (T, bq) @ dO_blk (bq, hd) */
        if (dv)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, bq, 1.0f, P, T, dob, C,
                        1.0f, dv + hoff, C);
        if (!dq && !dk)
            continue;
        /* D_i = sum_d dO_id O_id */
        for (int r = 0; r < bq; r++) {
            const float *restrict a = dob + (size_t)r * C, *restrict o = ob + (size_t)r * C;
            float s = 0.0f;
            for (int d = 0; d < hd; d++)
                s += a[d] * o[d];
            D[r] = s;
        }
        /* dP (bq, T) = dO_blk (bq, hd) @ V^T (hd, T); dS = P * (dP - D) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, T, hd, 1.0f, dob, C, vb, C, 0.0f,
                    dS, T);
        s_dsoftmax_rows(dS, P, D, bq, T);
        /* dQ_blk (bq, hd) += dS (bq, T) @ K (T, hd) */
        if (dq)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, T, 1.0f, dS, T, kb, C,
                        1.0f, dq + boff, C);
        /* dK (T, hd) += dS^T (T, bq) @ Q_blk (bq, hd) */
        if (dk)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, bq, 1.0f, dS, T, qb, C,
                        1.0f, dk + hoff, C);
    }
}

void nn_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *probs, const float *q, const float *k,
                           const float *v, float *scratch, int B, int T, int NH, int hd)
{
    if (B <= 0 || T <= 0 || NH <= 0 || hd <= 0 || (!dq && !dk && !dv))
        return;
    const int bqmax = T < ATTN_BLOCK ? T : ATTN_BLOCK;
    float *P = scratch;                         /* (bq, T) */
    float *dS = scratch + (size_t)bqmax * T;    /* (bq, T) */
    float *D = scratch + 2 * (size_t)bqmax * T; /* (bq) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            s_attn_bwd_head(dq, dk, dv, dout, out, lse, probs, q, k, v, P, dS, D, b, h, T, NH, hd);
}

/* ---- Thread pool --------------------------------------------------------- */
/* Workers sleep on a condition variable between jobs; a job is a function run once
 * by every thread (the caller included) that takes work units from a shared atomic
 * counter until none are left. Dynamic take-up keeps both cores busy on a shared
 * machine where one thread may be descheduled for a while; which thread computes a
 * unit never changes its bits. */
struct nn_pool {
    int n;                          /* threads, the caller included */
    pthread_t *th;                  /* (n - 1) workers */
    int started;                    /* workers actually started */
    pthread_mutex_t mu;             /* guards everything below */
    pthread_cond_t go;              /* a new job (gen changed) or quit */
    pthread_cond_t done;            /* pending reached 0 */
    unsigned long gen;              /* job generation */
    int pending;                    /* workers still inside the current job */
    int quit;                       /* set by nn_pool_destroy */
    void (*fn)(void *arg, int tid); /* current job */
    void *arg;
};

typedef struct {
    nn_pool_t *pool;
    int tid;
} s_worker_arg_t;

static void *s_worker(void *varg)
{
    nn_pool_t *p = ((s_worker_arg_t *)varg)->pool;
    int tid = ((s_worker_arg_t *)varg)->tid;
    free(varg);
    /* Generation 0 is "no job yet": a job posted before this thread got here must
     * still be seen as new. */
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->gen == seen)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->quit)
            break;
        seen = p->gen;
        void (*fn)(void *, int) = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, tid);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

nn_pool_t *nn_pool_new(int nthreads)
{
    nn_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = nthreads < 1 ? 1 : nthreads;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->go, NULL) != 0 || pthread_cond_init(&p->done, NULL) != 0) {
        /* destroying a never-initialised cond is undefined: init both or neither */
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (p->n > 1) {
        p->th = calloc((size_t)p->n - 1, sizeof *p->th);
        if (!p->th)
            goto fail;
        for (int t = 1; t < p->n; t++) {
            s_worker_arg_t *a = malloc(sizeof *a);
            if (!a)
                goto fail;
            a->pool = p;
            a->tid = t;
            if (pthread_create(&p->th[t - 1], NULL, s_worker, a) != 0) {
                free(a);
                goto fail;
            }
            p->started++;
        }
    }
    return p;
fail:
    nn_pool_destroy(&p);
    return NULL;
}

void nn_pool_destroy(nn_pool_t **pself)
{
    if (!pself || !*pself)
        return;
    nn_pool_t *p = *pself;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->started; t++)
        pthread_join(p->th[t], NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
    free(p);
    *pself = NULL;
}

int nn_pool_threads(const nn_pool_t *self)
{
    return self ? self->n : 1;
}

/* Runs fn(arg, tid) on every thread of the pool (tid 0 is the caller) and returns
 * when all have returned. */
static void s_pool_run(nn_pool_t *p, void (*fn)(void *, int), void *arg)
{
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---- Elementwise work split over the pool --------------------------------- */
/* Contiguous chunks of a length-n range, multiples of 64 floats (whole vectors, whole
 * cache lines), taken from an atomic counter. The per-element arithmetic does not
 * depend on where a chunk starts, so the result is bitwise the serial one. */
typedef struct {
    int kind; /* 0 zero, 1 act forward, 2 act backward */
    float *out;
    const float *a, *b;
    nn_act_t act;
    size_t n, chunk;
    int nunits;
    atomic_int next;
} s_ew_job_t;

static void s_ew_job(void *varg, int tid)
{
    (void)tid;
    s_ew_job_t *j = varg;
    int u;
    while ((u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nunits) {
        size_t lo = (size_t)u * j->chunk, len = j->n - lo < j->chunk ? j->n - lo : j->chunk;
        if (j->kind == 0)
            memset(j->out + lo, 0, len * sizeof(float));
        else if (j->kind == 1)
            nn_act_forward(j->out + lo, j->a + lo, len, j->act);
        else
            nn_act_backward(j->out + lo, j->a + lo, j->b + lo, len, j->act);
    }
}

/* Runs the job on the pool when it is worth it (>= 64K floats, >= 2 threads). */
static int s_ew_run(nn_pool_t *pool, s_ew_job_t *j)
{
    const size_t min_chunk = 16384;
    if (!pool || pool->n < 2 || j->n < 4 * min_chunk)
        return 0;
    size_t chunk = j->n / ((size_t)pool->n * 4);
    chunk = chunk < min_chunk ? min_chunk : (chunk + 63) / 64 * 64;
    j->chunk = chunk;
    j->nunits = (int)((j->n + chunk - 1) / chunk);
    atomic_init(&j->next, 0);
    s_pool_run(pool, s_ew_job, j);
    return 1;
}

void nn_zero_mt(float *x, size_t n, nn_pool_t *pool)
{
    s_ew_job_t j = {.kind = 0, .out = x, .n = n};
    if (!s_ew_run(pool, &j))
        memset(x, 0, n * sizeof *x);
}

void nn_act_forward_mt(float *out, const float *inp, size_t n, nn_act_t act, nn_pool_t *pool)
{
    s_ew_job_t j = {.kind = 1, .out = out, .a = inp, .act = act, .n = n};
    if (!s_ew_run(pool, &j))
        nn_act_forward(out, inp, n, act);
}

void nn_act_backward_mt(float *dinp, const float *dout, const float *inp, size_t n, nn_act_t act,
                        nn_pool_t *pool)
{
    s_ew_job_t j = {.kind = 2, .out = dinp, .a = dout, .b = inp, .act = act, .n = n};
    if (!s_ew_run(pool, &j))
        nn_act_backward(dinp, dout, inp, n, act);
}

/* Per-thread scratch stride, rounded to 16 floats so threads' slices start on
 * their own 64-byte lines. */
static size_t s_attn_stride(int T, int hd)
{
    return (nn_attention_scratch_floats(T, hd) + 15) / 16 * 16;
}

size_t nn_attention_scratch_floats_mt(int T, int hd, int nthreads)
{
    return s_attn_stride(T, hd) * (size_t)(nthreads < 1 ? 1 : nthreads);
}

typedef struct {
    float *out, *lse, *dq, *dk, *dv;   /* outputs */
    float *probs;                      /* forward: probabilities to store (may be NULL) */
    const float *probs_in;             /* backward: the stored probabilities (may be NULL) */
    const float *dout, *o, *q, *k, *v; /* inputs (o: the forward output) */
    const float *lse_in;               /* backward: the saved lse (may be NULL) */
    float *scratch;                    /* s_attn_stride floats per thread */
    size_t stride;
    int B, T, NH, hd, nblk, nunits;
    atomic_int next; /* next unit to take */
} s_attn_job_t;

static void s_attn_fwd_job(void *varg, int tid)
{
    s_attn_job_t *j = varg;
    const int bqmax = j->T < ATTN_BLOCK ? j->T : ATTN_BLOCK;
    float *S = j->scratch + (size_t)tid * j->stride;
    float *mx = S + (size_t)bqmax * j->T, *sum = mx + bqmax;
    int u;
    while ((u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nunits) {
        int blk = u % j->nblk, bh = u / j->nblk;
        s_attn_fwd_block(j->out, j->lse, j->probs, j->q, j->k, j->v, S, mx, sum, bh / j->NH,
                         bh % j->NH, blk * ATTN_BLOCK, j->T, j->NH, j->hd);
    }
}

static void s_attn_bwd_job(void *varg, int tid)
{
    s_attn_job_t *j = varg;
    const int bqmax = j->T < ATTN_BLOCK ? j->T : ATTN_BLOCK;
    float *P = j->scratch + (size_t)tid * j->stride;
    float *dS = P + (size_t)bqmax * j->T, *D = dS + (size_t)bqmax * j->T;
    int u;
    while ((u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nunits)
        s_attn_bwd_head(j->dq, j->dk, j->dv, j->dout, j->o, j->lse_in, j->probs_in, j->q, j->k,
                        j->v, P, dS, D, u / j->NH, u % j->NH, j->T, j->NH, j->hd);
}

/* Runs the job on the pool, or on the caller alone, with OpenBLAS on one thread
 * either way: the bits then do not depend on the pool size or on the OpenBLAS
 * setting the caller left (OpenBLAS's threaded and serial sgemm may round
 * differently). */
static void s_attn_run(nn_pool_t *pool, void (*fn)(void *, int), s_attn_job_t *j)
{
    int blas_threads = openblas_get_num_threads();
    if (blas_threads != 1)
        openblas_set_num_threads(1);
    if (pool && pool->n > 1 && j->nunits > 1)
        s_pool_run(pool, fn, j);
    else
        fn(j, 0);
    if (blas_threads != 1)
        openblas_set_num_threads(blas_threads);
}

void nn_attention_forward_mt(float *out, float *lse, float *probs, const float *q, const float *k,
                             const float *v, float *scratch, int B, int T, int NH, int hd,
                             nn_pool_t *pool)
{
    if (B <= 0 || T <= 0 || NH <= 0 || hd <= 0)
        return;
    s_attn_job_t j = {.out = out,
                      .lse = lse,
                      .probs = probs,
                      .q = q,
                      .k = k,
                      .v = v,
                      .scratch = scratch,
                      .stride = s_attn_stride(T, hd),
                      .B = B,
                      .T = T,
                      .NH = NH,
                      .hd = hd,
                      .nblk = (T + ATTN_BLOCK - 1) / ATTN_BLOCK};
    j.nunits = B * NH * j.nblk;
    atomic_init(&j.next, 0);
    s_attn_run(pool, s_attn_fwd_job, &j);
}

void nn_attention_backward_mt(float *dq, float *dk, float *dv, const float *dout, const float *out,
                              const float *lse, const float *probs, const float *q, const float *k,
                              const float *v, float *scratch, int B, int T, int NH, int hd,
                              nn_pool_t *pool)
{
    if (B <= 0 || T <= 0 || NH <= 0 || hd <= 0 || (!dq && !dk && !dv))
        return;
    s_attn_job_t j = {.dq = dq,
                      .dk = dk,
                      .dv = dv,
                      .dout = dout,
                      .o = out,
                      .lse_in = lse,
                      .probs_in = probs,
                      .q = q,
                      .k = k,
                      .v = v,
                      .scratch = scratch,
                      .stride = s_attn_stride(T, hd),
                      .B = B,
                      .T = T,
                      .NH = NH,
                      .hd = hd,
                      .nblk = 0,
                      .nunits = B * NH};
    atomic_init(&j.next, 0);
    s_attn_run(pool, s_attn_bwd_job, &j);
}

void nn_attention_forward_ref(float *out, float *lse, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int hd)
{
    const int C = NH * hd;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < T; i++) {
                const float *qi = q + ((size_t)b * T + i) * C + (size_t)h * hd;
                float mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    const float *kj = k + ((size_t)b * T + j) * C + (size_t)h * hd;
                    float s = 0.0f;
                    for (int d = 0; d < hd; d++)
                        s += qi[d] * kj[d];
                    mx = s > mx ? s : mx;
                }
                float sum = 0.0f;
                float *oi = out + ((size_t)b * T + i) * C + (size_t)h * hd;
                for (int d = 0; d < hd; d++)
                    oi[d] = 0.0f;
                for (int j = 0; j < T; j++) {
                    const float *kj = k + ((size_t)b * T + j) * C + (size_t)h * hd;
                    const float *vj = v + ((size_t)b * T + j) * C + (size_t)h * hd;
                    float s = 0.0f;
                    for (int d = 0; d < hd; d++)
                        s += qi[d] * kj[d];
                    float e = expf(s - mx);
                    sum += e;
                    for (int d = 0; d < hd; d++)
                        oi[d] += e * vj[d];
                }
                for (int d = 0; d < hd; d++)
                    oi[d] /= sum;
                if (lse)
                    lse[((size_t)b * NH + h) * T + i] = mx + logf(sum);
            }
        }
    }
}

void nn_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v,
                               int B, int T, int NH, int hd)
{
    const int C = NH * hd;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int i = 0; i < T; i++) {
                size_t ri = ((size_t)b * T + i) * C + (size_t)h * hd;
                float l = lse[((size_t)b * NH + h) * T + i];
                float Di = 0.0f;
                for (int d = 0; d < hd; d++)
                    Di += dout[ri + d] * out[ri + d];
                for (int j = 0; j < T; j++) {
                    size_t rj = ((size_t)b * T + j) * C + (size_t)h * hd;
                    float s = 0.0f, dp = 0.0f;
                    for (int d = 0; d < hd; d++) {
                        s += q[ri + d] * k[rj + d];
                        dp += dout[ri + d] * v[rj + d];
                    }
                    float p = expf(s - l);
                    float ds = p * (dp - Di);
                    for (int d = 0; d < hd; d++) {
                        if (dv)
                            dv[rj + d] += p * dout[ri + d];
                        if (dq)
                            dq[ri + d] += ds * k[rj + d];
                        if (dk)
                            dk[rj + d] += ds * q[ri + d];
                    }
                }
            }
        }
    }
}

/* ---- Head pieces -------------------------------------------------------- */

void nn_meanpool_forward(float *out, const float *inp, int B, int T, int C)
{
    float inv = T > 0 ? 1.0f / (float)T : 0.0f;
    for (int b = 0; b < B; b++) {
        float *restrict o = out + (size_t)b * C;
        for (int c = 0; c < C; c++)
            o[c] = 0.0f;
        for (int t = 0; t < T; t++) {
            const float *restrict x = inp + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++)
                o[c] += x[c];
        }
        for (int c = 0; c < C; c++)
            o[c] *= inv;
    }
}

void nn_meanpool_backward(float *dinp, const float *dout, int B, int T, int C)
{
    if (T <= 0)
        return;
    float inv = 1.0f / (float)T;
    for (int b = 0; b < B; b++) {
        const float *restrict g = dout + (size_t)b * C;
        for (int t = 0; t < T; t++) {
            float *restrict dx = dinp + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++)
                dx[c] += g[c] * inv;
        }
    }
}

void nn_softmax_forward(float *out, const float *inp, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        float mx = -INFINITY;
        for (int c = 0; c < C; c++)
            mx = x[c] > mx ? x[c] : mx;
        float sum = 0.0f;
        for (int c = 0; c < C; c++) {
            y[c] = expf(x[c] - mx);
            sum += y[c];
        }
        float inv = 1.0f / sum;
        for (int c = 0; c < C; c++)
            y[c] *= inv;
    }
}

void nn_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *restrict g = dout + (size_t)i * C;
        const float *restrict p = out + (size_t)i * C;
        float *restrict dx = dinp + (size_t)i * C;
        float s = 0.0f;
        for (int c = 0; c < C; c++)
            s += g[c] * p[c];
        for (int c = 0; c < C; c++)
            dx[c] += p[c] * (g[c] - s);
    }
}

S_CLONES static void s_wsum_forward_impl(float *out, const float *const *hidden, const float *w,
                                         int K, size_t n)
{
    if (K <= 0) {
        memset(out, 0, n * sizeof *out);
        return;
    }
    const float *h0 = hidden[0];
    float w0 = w[0];
    S_FLAT_LOOP(n, s_vst(out + j, w0 * s_vld(h0 + j)),
                s_vst_part(out + j, w0 * s_vld_part(h0 + j, rem_, 0), rem_));
    for (int k = 1; k < K; k++)
        nn_axpy(out, w[k], hidden[k], n);
}

void nn_wsum_forward(float *out, const float *const *hidden, const float *w, int K, size_t n)
{
    s_wsum_forward_impl(out, hidden, w, K, n);
}

/* <a, b> over n floats: float vector partial sums over blocks of 4096, added up in
 * double (n is B*T*C, millions of terms). */
S_CLONES static double s_dot_long(const float *a, const float *b, size_t n)
{
    double total = 0.0;
    for (size_t base = 0; base < n; base += 4096) {
        int len = n - base < 4096 ? (int)(n - base) : 4096;
        const float *x = a + base, *y = b + base;
        s_vf acc = s_vsplat(0.0f);
        S_ROW_LOOP(j, len, acc += s_vld(x + j) * s_vld(y + j),
                   acc += s_vld_part(x + j, rem_, 0) * s_vld_part(y + j, rem_, 0));
        total += (double)s_hsum(acc);
    }
    return total;
}

void nn_wsum_backward(float *const *dhidden, float *dw, const float *dout,
                      const float *const *hidden, const float *w, int K, size_t n)
{
    for (int k = 0; k < K; k++) {
        if (dhidden && dhidden[k])
            nn_axpy(dhidden[k], w[k], dout, n);
        if (dw)
            dw[k] += (float)s_dot_long(dout, hidden[k], n);
    }
}

double nn_crossentropy_forward(float *probs, double *weight_sum, const float *logits,
                               const int *labels, const float *class_weights, int B, int NC)
{
    double loss = 0.0, wsum = 0.0;
    for (int b = 0; b < B; b++) {
        const float *x = logits + (size_t)b * NC;
        float *p = probs + (size_t)b * NC;
        float mx = -INFINITY;
        for (int c = 0; c < NC; c++)
            mx = x[c] > mx ? x[c] : mx;
        double sum = 0.0;
        for (int c = 0; c < NC; c++) {
            float e = expf(x[c] - mx);
            p[c] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int c = 0; c < NC; c++)
            p[c] *= inv;
        int y = labels[b];
        if (y < 0 || y >= NC)
            continue; /* ignored row (torch's ignore_index): no loss, no weight */
        double wy = class_weights ? class_weights[y] : 1.0;
        /* -log p_y = log(sum) + mx - x_y, in double (no log of a rounded probability). */
        loss += wy * (log(sum) + (double)mx - (double)x[y]);
        wsum += wy;
    }
    if (weight_sum)
        *weight_sum = wsum;
    return loss;
}

void nn_crossentropy_backward(float *dlogits, const float *probs, const int *labels,
                              const float *class_weights, float scale, int B, int NC)
{
    for (int b = 0; b < B; b++) {
        int y = labels[b];
        if (y < 0 || y >= NC)
            continue;
        float g = scale * (class_weights ? class_weights[y] : 1.0f);
        const float *p = probs + (size_t)b * NC;
        float *d = dlogits + (size_t)b * NC;
        for (int c = 0; c < NC; c++)
            d[c] += g * p[c];
        d[y] -= g;
    }
}
