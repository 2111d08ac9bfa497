/* nn/ops.c: fp32 kernels of the encoder and head (see ops.h for the contracts,
 * docs/NUMERICS.md for the formulas).
 *
 * Matrix products go to OpenBLAS (cblas_sgemm) over all B*T rows at once. The
 * elementwise and row kernels on the encoder's hot path (GELU, the attention
 * softmax, LayerNorm, residual adds) are 16-float vector loops on the private layer
 * of nn/simd.h; the small head and adapter kernels are plain loops. Every BLAS- or
 * SIMD-backed kernel has a plain-loop twin (_ref) or a double-precision check that
 * the tests compare against. The thread pool the _mt kernels use is nn/pool.h.
 */
#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nn/attn_fused.h"
#include "nn/simd.h"

/* Query rows per attention block. At T = 1500, hd = 64 (whisper-base) 128 rows
 * beat 64 by ~10% (the products have K = hd or K = block, and OpenBLAS is more
 * efficient with larger panels) and match 256 while the (128, T) blocks (750 KB
 * each) still fit in L2; measured with bench/bench_ops.c (-DATTN_BLOCK=n). */
#ifndef ATTN_BLOCK
#define ATTN_BLOCK 128
#endif
/* Query rows per block of the sgemm-path backward. Its four products per block
 * (P^T dO, dO V^T, dS K, dS^T Q) have K = block or N = hd, and OpenBLAS packs every
 * operand on every call (V and K once per block), so larger blocks pack less: at
 * T = 1500, hd = 64 on a Zen 3 core 256 rows took 146-151 ms per layer against
 * 178-191 for 128 (512: 180, 1500: 205, past L2). */
#ifndef ATTN_BWD_BLOCK
#define ATTN_BWD_BLOCK 256
#endif

/* ---- AVX2 twin of the portable exp ----------------------------------------------- */
/* GCC lowers a comparison of the 16-float vectors of nn/simd.h one lane at a time on
 * any target without 512-bit compares, so the AVX2 clones of the portable exp and erf
 * ran ~30 scalar instructions per compare: GELU 16 ns per element and the attention
 * softmax's exp 14% of the whole whisper-base forward on a Zen 3 core. This exp is the
 * same arithmetic in 8-lane intrinsics, operation for operation (no FMA, the same
 * order), so it gives the portable code's bits (tests/test_ops.c checks it); GELU on
 * AVX2 runs the table version below (s_gelu_forward_avx2t). */
#if defined(__x86_64__) && defined(__GNUC__)
#define S_HAVE_AVX2  1
#define S_T256       __attribute__((target("avx2")))
#define S_INLINE256  static inline __attribute__((always_inline)) S_T256
#define S_T256F      __attribute__((target("avx2,fma")))
#define S_INLINE256F static inline __attribute__((always_inline)) S_T256F

S_INLINE256 __m256 s_sel256(__m256 m, __m256 a, __m256 b) /* m ? a : b */
{
    return _mm256_blendv_ps(b, a, m);
}
#define S_LT256(a, b)     _mm256_cmp_ps((a), (b), _CMP_LT_OQ)
#define S_GT256(a, b)     _mm256_cmp_ps((a), (b), _CMP_GT_OQ)
#define S_SET256(x)       _mm256_set1_ps(x)
#define S_MAD256(p, r, c) _mm256_add_ps(_mm256_mul_ps((p), (r)), S_SET256(c))

/* s_vexp_p of nn/simd.h on 8 lanes. */
S_INLINE256 __m256 s_exp256(__m256 x)
{
    const __m256 magic = S_SET256(0x1.8p23f);
    __m256 xc = s_sel256(S_LT256(x, S_SET256(-104.0f)), S_SET256(-104.0f), x);
    xc = s_sel256(S_GT256(xc, S_SET256(89.0f)), S_SET256(89.0f), xc);
    __m256 t = _mm256_add_ps(_mm256_mul_ps(xc, S_SET256(1.44269504088896341f)), magic);
    __m256 n = _mm256_sub_ps(t, magic);
    __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
    __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(n, S_SET256(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, S_SET256(-2.12194440e-4f)));
    __m256 p = S_SET256(1.9875691500e-4f);
    p = S_MAD256(p, r, 1.3981999507e-3f);
    p = S_MAD256(p, r, 8.3334519073e-3f);
    p = S_MAD256(p, r, 4.1665795894e-2f);
    p = S_MAD256(p, r, 1.6666665459e-1f);
    p = S_MAD256(p, r, 5.0000001201e-1f);
    p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), S_SET256(1.0f));
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return s_sel256(_mm256_cmp_ps(x, x, _CMP_NEQ_UQ), x, y); /* NaN stays NaN */
}

/* Lanes [0, n) of p, the others pad (n < 8). */
S_INLINE256 __m256 s_ld256_part(const float *p, int n, float pad)
{
    float tmp[8];
    for (int i = 0; i < 8; i++)
        tmp[i] = i < n ? p[i] : pad;
    return _mm256_loadu_ps(tmp);
}

S_INLINE256 void s_st256_part(float *p, __m256 v, int n)
{
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    for (int i = 0; i < n; i++)
        p[i] = tmp[i];
}

/* out (n) = exp(inp) with s_exp256. */
S_T256 static void s_exp_avx2(float *out, const float *inp, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, s_exp256(_mm256_loadu_ps(inp + i)));
    if (i < n)
        s_st256_part(out + i, s_exp256(s_ld256_part(inp + i, (int)(n - i), 0.0f)), (int)(n - i));
}
#endif

/* ---- exp, erf, GELU ------------------------------------------------------- */

/* out (n) = exp(inp); out may alias inp. */
S_CLONES static void s_exp_impl(float *out, const float *inp, size_t n)
{
    S_FLAT_LOOP(n, S_ST(out + j, s_vexp(S_LD(inp + j))));
}

#if defined(S_HAVE_AVX512)
/* out (n) = exp(inp) with the AVX-512 exp the attention softmax uses. */
S_T512 static void s_exp_avx512(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = s_mask512(n - i);
        _mm512_mask_storeu_ps(out + i, m, s_exp512(_mm512_maskz_loadu_ps(m, inp + i)));
    }
}
#endif

void nn_exp(float *out, const float *inp, size_t n)
{
#if defined(S_HAVE_AVX512)
    if (__builtin_cpu_supports("avx512f")) {
        s_exp_avx512(out, inp, n);
        return;
    }
#endif
#if defined(S_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2")) {
        s_exp_avx2(out, inp, n);
        return;
    }
#endif
    s_exp_impl(out, inp, n);
}

void nn_exp_portable(float *out, const float *inp, size_t n)
{
    s_exp_impl(out, inp, n);
}

/* out (n) = erf(inp); out may alias inp. */
S_CLONES static void s_erf_impl(float *out, const float *inp, size_t n)
{
    S_FLAT_LOOP(n, {
        s_vf y;
        s_verf(S_LD(inp + j), &y, NULL);
        S_ST(out + j, y);
    });
}

void nn_erf(float *out, const float *inp, size_t n)
{
    s_erf_impl(out, inp, n);
}

int nn_exp_avx2(float *out, const float *inp, size_t n)
{
#if defined(S_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2")) {
        s_exp_avx2(out, inp, n);
        return 1;
    }
#endif
    (void)out, (void)inp, (void)n;
    return 0;
}

/* GELU (erf form, torch.nn.functional.gelu): out = 0.5 x (1 + erf(x / sqrt 2)), with
 * 1 + erf taken without cancellation for x << 0; out may alias inp. */
S_CLONES static void s_gelu_forward(float *out, const float *inp, size_t n)
{
    S_FLAT_LOOP(n, {
        s_vf x = S_LD(inp + j), c;
        s_verf(x * 0.70710678118654752440f, NULL, &c);
        S_ST(out + j, 0.5f * x * c);
    });
}

#if defined(S_HAVE_AVX512)
/* erfc(a) on [0, 4) as 16 degree-5 polynomials in t = a - (0.25 i + 0.125), one per
 * interval [0.25 i, 0.25 (i + 1)), highest power first: least-squares fits, see
 * tests/reference/gelu_fit.py (worst error 0.6 of the dense-grid test's tolerance). */
static const float s_gelu_tab[6][16] = {
    {-0.103527993, -0.045326151, 0.0270350482, 0.0667091832, 0.061061196, 0.0306439158, 0.002303252,
     -0.011328022, -0.0124442121, -0.00836057868, -0.0042364141, -0.00172770733, -0.000584262016,
     -0.000166579775, -4.04595812e-05, -8.43041653e-06},
    {-0.0681783259, -0.165413812, -0.175493687, -0.112152785, -0.0283348728, 0.029983025,
     0.0493812673, 0.0421630591, 0.0264029279, 0.0132059455, 0.00546693848, 0.00190853828,
     0.000568222604, 0.000145342943, 3.21036641e-05, 6.14645387e-06},
    {0.358718276, 0.234875023, 0.0556747913, -0.0929196477, -0.162450284, -0.157938004,
     -0.114841931, -0.0674421415, -0.0330378078, -0.0137305092, -0.00489028171, -0.0015024232,
     -0.000399962708, -9.25610002e-05, -1.86669549e-05, -3.28675355e-06},
    {0.138857558, 0.367625445, 0.477181554, 0.459150493, 0.35806033, 0.234247714, 0.130769402,
     0.0628989935, 0.0262239985, 0.00951495953, 0.00301286369, 0.000834249309, 0.000202308394,
     4.30168366e-05, 8.0272157e-06, 1.31555328e-06},
    {-1.11088526, -0.980352819, -0.763499558, -0.524745047, -0.318273962, -0.170359775,
     -0.0804722533, -0.0335458256, -0.0123408195, -0.004006478, -0.00114787545, -0.00029022849,
     -6.47587949e-05, -1.27517833e-05, -2.21593359e-06, -3.39825789e-07},
    {0.859683812, 0.595883071, 0.376759112, 0.215924934, 0.111611769, 0.0518299229, 0.0215562657,
     0.00800994225, 0.00265402952, 0.000782938616, 0.000205376011, 4.78549773e-05, 9.89678847e-06,
     1.81529902e-06, 2.95144957e-07, 4.25150404e-08},
};

/* GELU on AVX-512 with FMA: 0.5 x c, c = erfc(|x| / sqrt 2) for x < 0 (no cancellation
 * in the negative tail) and 2 - erfc otherwise, erfc from the table above, whose rows
 * are one register each so every coefficient is one vpermps on the interval index (no
 * exp, no division: ~16 instructions per 16 floats against ~70 for the portable erf,
 * which evaluates both of its branches and an exp). Bits differ from s_gelu_forward in
 * the last place; both are held to the same accuracy by tests/test_ops.c. */
/* c = 1 + erf(x / sqrt 2) = 2 Phi(x) from the table: erfc(|x| / sqrt 2) for x < 0, 2 - it
 * otherwise. */
S_INLINE512 __m512 s_gelu_c512(__m512 x, const __m512 *c)
{
    const __m512 four = _mm512_set1_ps(4.0f);
    const __m512 ctr =
        _mm512_set_ps(3.875f, 3.625f, 3.375f, 3.125f, 2.875f, 2.625f, 2.375f, 2.125f, 1.875f,
                      1.625f, 1.375f, 1.125f, 0.875f, 0.625f, 0.375f, 0.125f);
    __m512 a = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752440f)));
    __m512i idx =
        _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(a, four)), _mm512_set1_epi32(15));
    __m512 t = _mm512_sub_ps(a, _mm512_permutexvar_ps(idx, ctr));
    __m512 e = _mm512_permutexvar_ps(idx, c[0]);
    for (int k = 1; k < 6; k++)
        e = _mm512_fmadd_ps(e, t, _mm512_permutexvar_ps(idx, c[k]));
    e = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, four, _CMP_GE_OQ), e, _mm512_setzero_ps());
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ),
                                _mm512_sub_ps(_mm512_set1_ps(2.0f), e), e);
}

/* GELU on AVX-512 with FMA: 0.5 x c, c from the table above, whose rows are one register
 * each so every coefficient is one vpermps on the interval index (no exp, no division:
 * ~16 instructions per 16 floats against ~70 for the portable erf, which evaluates both
 * of its branches and an exp). Bits differ from s_gelu_forward in the last place; both
 * are held to the same accuracy by tests/test_ops.c. */
S_T512 static void s_gelu_forward_avx512(float *out, const float *inp, size_t n)
{
    __m512 c[6];
    for (int k = 0; k < 6; k++)
        c[k] = _mm512_loadu_ps(s_gelu_tab[k]);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = s_mask512(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, inp + i);
        __m512 y = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), s_gelu_c512(x, c));
        _mm512_mask_storeu_ps(out + i, m, y);
    }
}

/* dinp += dout * GELU'(inp), GELU'(x) = 0.5 c + x exp(-x^2 / 2) / sqrt(2 pi), c from the
 * table and the exp of nn/simd.h's AVX-512 layer. */
S_T512 static void s_gelu_backward_avx512(float *dinp, const float *dout, const float *inp,
                                          size_t n)
{
    __m512 c[6];
    for (int k = 0; k < 6; k++)
        c[k] = _mm512_loadu_ps(s_gelu_tab[k]);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = s_mask512(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, inp + i);
        __m512 pdf =
            _mm512_mul_ps(_mm512_set1_ps(0.39894228040143267794f),
                          s_exp512(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-0.5f), x), x)));
        __m512 g = _mm512_fmadd_ps(x, pdf, _mm512_mul_ps(_mm512_set1_ps(0.5f), s_gelu_c512(x, c)));
        __m512 d = _mm512_maskz_loadu_ps(m, dinp + i);
        _mm512_mask_storeu_ps(dinp + i, m,
                              _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dout + i), g, d));
    }
}
/* One of 16 table entries per lane on AVX2: vpermps picks within each 8-float half by
 * the index's low 3 bits, its bit 3 (moved to the sign) chooses the half. */
S_INLINE256F __m256 s_lut16_256(__m256i idx, const __m256 *half)
{
    __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(half[0], idx),
                            _mm256_permutevar8x32_ps(half[1], idx), sel);
}

/* s_gelu_c512 on 8 lanes with the same operations (FMA included), so the same bits as
 * the AVX-512 GELU: c = 2 Phi(x) from the 16-interval table. */
S_INLINE256F __m256 s_gelu_c256(__m256 x, const __m256 (*c)[2], const __m256 *ctr)
{
    const __m256 four = S_SET256(4.0f);
    __m256 a =
        _mm256_andnot_ps(S_SET256(-0.0f), _mm256_mul_ps(x, S_SET256(0.70710678118654752440f)));
    __m256i idx =
        _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(a, four)), _mm256_set1_epi32(15));
    __m256 t = _mm256_sub_ps(a, s_lut16_256(idx, ctr));
    __m256 e = s_lut16_256(idx, c[0]);
    for (int k = 1; k < 6; k++)
        e = _mm256_fmadd_ps(e, t, s_lut16_256(idx, c[k]));
    e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(a, four, _CMP_GE_OQ));
    return _mm256_blendv_ps(_mm256_sub_ps(S_SET256(2.0f), e), e,
                            _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}

/* GELU on AVX2 + FMA CPUs without AVX-512: the AVX-512 table version's arithmetic on
 * 8 lanes (two vpermps and a blend per coefficient instead of one vpermps), ~4x
 * faster than the portable erf, which evaluates both branches and an exp. */
S_T256F static void s_gelu_forward_avx2t(float *out, const float *inp, size_t n)
{
    __m256 c[6][2], ctr[2];
    for (int k = 0; k < 6; k++)
        c[k][0] = _mm256_loadu_ps(s_gelu_tab[k]), c[k][1] = _mm256_loadu_ps(s_gelu_tab[k] + 8);
    ctr[0] = _mm256_setr_ps(0.125f, 0.375f, 0.625f, 0.875f, 1.125f, 1.375f, 1.625f, 1.875f);
    ctr[1] = _mm256_add_ps(ctr[0], S_SET256(2.0f));
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(inp + i);
        __m256 y = _mm256_mul_ps(_mm256_mul_ps(x, S_SET256(0.5f)), s_gelu_c256(x, c, ctr));
        _mm256_storeu_ps(out + i, y);
    }
    if (i < n) {
        __m256 x = s_ld256_part(inp + i, (int)(n - i), 0.0f);
        __m256 y = _mm256_mul_ps(_mm256_mul_ps(x, S_SET256(0.5f)), s_gelu_c256(x, c, ctr));
        s_st256_part(out + i, y, (int)(n - i));
    }
}
#endif

void nn_gelu_forward_portable(float *out, const float *inp, size_t n)
{
    s_gelu_forward(out, inp, n);
}

/* The GELU forward nn_act_forward runs: the table version on AVX-512 (its 8-lane copy
 * on AVX2 + FMA), else the portable arithmetic. */
static void s_gelu_dispatch(float *out, const float *inp, size_t n)
{
#if defined(S_HAVE_AVX512)
    if (__builtin_cpu_supports("avx512f")) {
        s_gelu_forward_avx512(out, inp, n);
        return;
    }
#endif
#if defined(S_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        s_gelu_forward_avx2t(out, inp, n);
        return;
    }
#endif
    s_gelu_forward(out, inp, n);
}

#define s_gelu_grad(x)                                                                             \
    ({                                                                                             \
        s_vf gx_ = (x), gy_;                                                                       \
        s_gelu_grad_p(&gx_, &gy_);                                                                 \
        gy_;                                                                                       \
    })
/* GELU'(x) = Phi(x) + x phi(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi). */
S_INLINE void s_gelu_grad_p(const s_vf *px, s_vf *out)
{
    s_vf x = *px;
    s_vf c;
    s_verf(x * 0.70710678118654752440f, NULL, &c);
    s_vf pdf = 0.39894228040143267794f * s_vexp(-0.5f * x * x);
    *out = 0.5f * c + x * pdf;
}

/* dinp (n) += dout * GELU'(inp). */
S_CLONES static void s_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n)
{
    S_FLAT_LOOP(n, S_ST(dinp + j, S_LD(dinp + j) + S_LD(dout + j) * s_gelu_grad(S_LD(inp + j))));
}

void nn_gelu_backward_portable(float *dinp, const float *dout, const float *inp, size_t n)
{
    s_gelu_backward(dinp, dout, inp, n);
}

static void s_gelu_backward_dispatch(float *dinp, const float *dout, const float *inp, size_t n)
{
#if defined(S_HAVE_AVX512)
    if (__builtin_cpu_supports("avx512f")) {
        s_gelu_backward_avx512(dinp, dout, inp, n);
        return;
    }
#endif
    s_gelu_backward(dinp, dout, inp, n);
}

/* ---- Small vector helpers ----------------------------------------------- */

S_CLONES static void s_add_impl(float *out, const float *a, const float *b, size_t n)
{
    S_FLAT_LOOP(n, S_ST(out + j, S_LD(a + j) + S_LD(b + j)));
}

void nn_add(float *out, const float *a, const float *b, size_t n)
{
    s_add_impl(out, a, b, n);
}

S_CLONES static void s_axpy_impl(float *y, float alpha, const float *x, size_t n)
{
    S_FLAT_LOOP(n, S_ST(y + j, S_LD(y + j) + alpha * S_LD(x + j)));
}

void nn_axpy(float *y, float alpha, const float *x, size_t n)
{
    s_axpy_impl(y, alpha, x, n);
}

S_CLONES static void s_scale_impl(float *x, float alpha, size_t n)
{
    S_FLAT_LOOP(n, S_ST(x + j, S_LD(x + j) * alpha));
}

void nn_scale(float *x, float alpha, size_t n)
{
    s_scale_impl(x, alpha, n);
}

/* out (N, C) = inp (N, C) * s (C) per column (IA3's scale). */
S_CLONES static void s_colscale_forward_impl(float *out, const float *inp, const float *s, int N,
                                             int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        S_ROW_LOOP(j, C, S_ST(y + j, S_LD(x + j) * S_LD(s + j)));
    }
}

void nn_colscale_forward(float *out, const float *inp, const float *s, int N, int C)
{
    s_colscale_forward_impl(out, inp, s, N, C);
}

/* dinp (N, C) += dout * s; ds (C) += column sums of dout * inp, row by row in order. */
S_CLONES static void s_colscale_backward_impl(float *dinp, float *ds, const float *dout,
                                              const float *inp, const float *s, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *g = dout + (size_t)i * C;
        if (dinp) {
            float *dx = dinp + (size_t)i * C;
            S_ROW_LOOP(j, C, S_ST(dx + j, S_LD(dx + j) + S_LD(g + j) * S_LD(s + j)));
        }
        if (ds) {
            const float *x = inp + (size_t)i * C;
            S_ROW_LOOP(j, C, S_ST(ds + j, S_LD(ds + j) + S_LD(g + j) * S_LD(x + j)));
        }
    }
}

void nn_colscale_backward(float *dinp, float *ds, const float *dout, const float *inp,
                          const float *s, int N, int C)
{
    s_colscale_backward_impl(dinp, ds, dout, inp, s, N, C);
}

/* ---- Linear ------------------------------------------------------------- */

/* db (C) += alpha * column sums of d (N, C), row by row in order. */
S_CLONES static void s_colsum_add(float *db, const float *d, float alpha, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *r = d + (size_t)i * C;
        S_ROW_LOOP(j, C, S_ST(db + j, S_LD(db + j) + alpha * S_LD(r + j)));
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

/* Mean and 1/sqrt(var + eps) of one row of C (biased variance, two passes, eps 1e-5,
 * as torch.nn.LayerNorm). The variance pass pads with m, so padded lanes add 0. */
S_INLINE void s_row_stats(const float *x, int C, float *m_out, float *rs_out)
{
    s_vf acc = s_vsplat(0.0f);
    S_ROW_LOOP(j, C, acc += S_LD(x + j));
    float m = s_hsum(acc) / (float)C;
    s_vf vacc = s_vsplat(0.0f);
    S_ROW_LOOP(j, C, {
        s_vf d = S_LDP(x + j, m) - m;
        vacc += d * d;
    });
    *m_out = m;
    *rs_out = 1.0f / sqrtf(s_hsum(vacc) / (float)C + 1e-5f);
}

/* out (N, C) = (x - mean) * rstd * weight + bias per row; mean, rstd (N) saved. */
S_CLONES static void s_layernorm_forward_impl(float *out, float *mean, float *rstd,
                                              const float *inp, const float *weight,
                                              const float *bias, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        float m, rs;
        s_row_stats(x, C, &m, &rs);
        S_ROW_LOOP(j, C, S_ST(y + j, (S_LD(x + j) - m) * rs * S_LD(weight + j) + S_LD(bias + j)));
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

/* dx (C) += rs * (g - mean(g) - xhat * mean(g * xhat)), g = w * dy, xhat = (x - m) rs:
 * the LayerNorm input gradient of one row. Padded lanes have dy = 0, so g = 0 there
 * and they add nothing to the sums. */
S_INLINE void s_layernorm_dx_row(float *dx, const float *dy, const float *x, const float *weight,
                                 float m, float rs, int C)
{
    s_vf vg = s_vsplat(0.0f), vgx = s_vsplat(0.0f);
    S_ROW_LOOP(j, C, {
        s_vf g = S_LD(weight + j) * S_LD(dy + j);
        vg += g;
        vgx += g * ((S_LD(x + j) - m) * rs);
    });
    float sg = s_hsum(vg) / (float)C, sgx = s_hsum(vgx) / (float)C;
    S_ROW_LOOP(j, C,
               S_ST(dx + j, S_LD(dx + j) + rs * (S_LD(weight + j) * S_LD(dy + j) - sg -
                                                 (S_LD(x + j) - m) * rs * sgx)));
}

/* dweight (C) += xhat * dy and dbias (C) += dy over the rows in order; dinp (N, C) +=
 * the input gradient. mean/rstd NULL: recomputed per row (cheap next to the rest). */
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
            s_row_stats(x, C, &m, &rs);
        }
        if (dweight)
            S_ROW_LOOP(
                j, C, S_ST(dweight + j, S_LD(dweight + j) + (S_LD(x + j) - m) * rs * S_LD(dy + j)));
        if (dbias)
            S_ROW_LOOP(j, C, S_ST(dbias + j, S_LD(dbias + j) + S_LD(dy + j)));
        if (dinp)
            s_layernorm_dx_row(dinp + (size_t)i * C, dy, x, weight, m, rs, C);
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
    case NN_ACT_GELU: s_gelu_dispatch(out, inp, n); break;
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
    case NN_ACT_GELU: s_gelu_backward_dispatch(dinp, dout, inp, n); break;
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

#if defined(S_HAVE_AVX2)
/* The AVX2 attention forward (below, before s_attn_fwd_block): 32-query sub-blocks, L1
 * chunks of 48 keys; it runs for hd = 64 on CPUs with AVX2 and FMA but no AVX-512. */
#define AF2_BQ   32
#define AF2_KC   48
#define AF2_UNIT 512 /* query rows per work unit: the unit packs its head's K and V once */

static int s_attn_avx2_ok(int hd)
{
    return hd == 64 && !nn_attn_fused_ok(hd) && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
}

/* Scratch floats of one unit: the head's K and V packed (T, 64) each, then the
 * sub-block's QT and OT (64, 32), St (T, 32), max and sum (32). */
static size_t s_attn_avx2_scratch(int T)
{
    return 2 * (size_t)T * 64 + 2 * 64 * AF2_BQ + (size_t)T * AF2_BQ + 2 * AF2_BQ;
}
#endif

size_t nn_attention_scratch_floats(int T, int hd)
{
    if (T <= 0)
        return 0;
    if (nn_attn_fused_ok(hd))
        return nn_attn_fused_scratch_floats(T);
    size_t bq = (size_t)(T < ATTN_BLOCK ? T : ATTN_BLOCK);
    size_t bb = (size_t)(T < ATTN_BWD_BLOCK ? T : ATTN_BWD_BLOCK);
    /* Forward: E (bq, T), row max and sum (2 bq). Backward: P (bb, T), dP/dS (bb, T),
     * D (bb). The larger of the two; the AVX2 forward's sub-block may need more at
     * small T. */
    size_t fwd = bq * (size_t)T + 2 * bq, n = 2 * bb * (size_t)T + bb;
    if (fwd > n)
        n = fwd;
#if defined(S_HAVE_AVX2)
    if (s_attn_avx2_ok(hd) && s_attn_avx2_scratch(T) > n)
        n = s_attn_avx2_scratch(T);
#endif
    return n;
}

/* Query rows per unit: the fused kernels' block, or the sgemm path's. */
static int s_attn_bq(int hd)
{
#if defined(S_HAVE_AVX2)
    if (s_attn_avx2_ok(hd))
        return AF2_UNIT;
#endif
    return nn_attn_fused_ok(hd) ? NN_ATTN_FUSED_BQ : ATTN_BLOCK;
}

size_t nn_attention_probs_index(int T, int hd, int i, int j)
{
    if (!nn_attn_fused_ok(hd))
        return (size_t)i * T + j;
    /* key-major blocks of NN_ATTN_FUSED_BQ query rows (the last one shorter) */
    int i0 = i / NN_ATTN_FUSED_BQ * NN_ATTN_FUSED_BQ;
    int bq = T - i0 < NN_ATTN_FUSED_BQ ? T - i0 : NN_ATTN_FUSED_BQ;
    return (size_t)i0 * T + (size_t)j * bq + (size_t)(i - i0);
}

/* Rows of S (rows, T) in place: s <- exp(s - max_j s); mx[r] = max, sum[r] = sum
 * of the exponentials. One pass for the max (pad -inf), one for exp and sum (pad
 * -inf again, so padded lanes add exp(-inf) = 0). */
S_CLONES static void s_exp_rows(float *S, float *mx, float *sum, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *s = S + (size_t)r * T;
        s_vf vm = s_vsplat(-INFINITY);
        S_ROW_LOOP(j, T, vm = s_vmax(vm, S_LDP(s + j, -INFINITY)));
        float m = s_hmax(vm);
        s_vf vs = s_vsplat(0.0f);
        S_ROW_LOOP(j, T, {
            s_vf e = s_vexp(S_LDP(s + j, -INFINITY) - m);
            S_ST(s + j, e);
            vs += e;
        });
        mx[r] = m;
        sum[r] = s_hsum(vs);
    }
}

#if defined(S_HAVE_AVX2)
/* s_exp_rows in AVX2 intrinsics with the same bits: the 16-lane max and sum
 * accumulators of the portable loop as two 8-lane halves (lo = lanes 0-7), the same
 * -inf padding of the row's tail, and both reduced in the portable lane order. */
S_T256 static void s_exp_rows_avx2(float *S, float *mx, float *sum, int rows, int T)
{
    const int full = T / 16 * 16, rem = T - full;
    for (int r = 0; r < rows; r++) {
        float *s = S + (size_t)r * T;
        __m256 mlo = S_SET256(-INFINITY), mhi = mlo;
        for (int j = 0; j < full; j += 16) {
            mlo = _mm256_max_ps(mlo, _mm256_loadu_ps(s + j)); /* a > b ? a : b */
            mhi = _mm256_max_ps(mhi, _mm256_loadu_ps(s + j + 8));
        }
        if (rem) {
            mlo = _mm256_max_ps(mlo, s_ld256_part(s + full, rem, -INFINITY));
            mhi = _mm256_max_ps(mhi, s_ld256_part(s + full + 8, rem - 8, -INFINITY));
        }
        float lanes[16];
        _mm256_storeu_ps(lanes, mlo);
        _mm256_storeu_ps(lanes + 8, mhi);
        float m = lanes[0];
        for (int i = 1; i < 16; i++)
            m = lanes[i] > m ? lanes[i] : m;
        const __m256 vm = S_SET256(m);
        __m256 slo = S_SET256(0.0f), shi = slo;
        for (int j = 0; j < full; j += 16) {
            __m256 elo = s_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
            __m256 ehi = s_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), vm));
            _mm256_storeu_ps(s + j, elo);
            _mm256_storeu_ps(s + j + 8, ehi);
            slo = _mm256_add_ps(slo, elo);
            shi = _mm256_add_ps(shi, ehi);
        }
        if (rem) {
            __m256 elo = s_exp256(_mm256_sub_ps(s_ld256_part(s + full, rem, -INFINITY), vm));
            __m256 ehi =
                s_exp256(_mm256_sub_ps(s_ld256_part(s + full + 8, rem - 8, -INFINITY), vm));
            s_st256_part(s + full, elo, rem < 8 ? rem : 8);
            if (rem > 8)
                s_st256_part(s + full + 8, ehi, rem - 8);
            slo = _mm256_add_ps(slo, elo);
            shi = _mm256_add_ps(shi, ehi);
        }
        _mm256_storeu_ps(lanes, slo);
        _mm256_storeu_ps(lanes + 8, shi);
        float t = 0.0f;
        for (int i = 0; i < 16; i++)
            t += lanes[i];
        mx[r] = m;
        sum[r] = t;
    }
}
#endif

/* s_exp_rows as the attention forward runs it: the AVX2 twin where it can. */
static void s_exp_rows_dispatch(float *S, float *mx, float *sum, int rows, int T)
{
#if defined(S_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2")) {
        s_exp_rows_avx2(S, mx, sum, rows, T);
        return;
    }
#endif
    s_exp_rows(S, mx, sum, rows, T);
}

/* P (rows, T) in place: p <- exp(p - lse[r]) (the normalised probabilities). */
S_CLONES static void s_exp_shift_rows(float *P, const float *lse, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *p = P + (size_t)r * T;
        float l = lse[r];
        S_ROW_LOOP(j, T, S_ST(p + j, s_vexp(S_LD(p + j) - l)));
    }
}

/* P (rows, T) in place: p <- p * (1 / sum[r]), exponentials to probabilities with the
 * arithmetic of s_stream_probs (so a backward that recomputes them gets the bits the
 * forward kept). */
S_CLONES static void s_norm_rows(float *P, const float *sum, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *p = P + (size_t)r * T;
        float inv = 1.0f / sum[r];
        S_ROW_LOOP(j, T, S_ST(p + j, S_LD(p + j) * inv));
    }
}

/* dS (rows, T): every element of row r set to -D[r], so that the product dO V^T
 * accumulated onto it (beta = 1) gives dP - D without OpenBLAS's own zeroing pass
 * for beta = 0 and without a subtraction pass. */
S_CLONES static void s_negfill_rows(float *dS, const float *D, int rows, int T)
{
    for (int r = 0; r < rows; r++) {
        float *ds = dS + (size_t)r * T;
        s_vf d = s_vsplat(-D[r]);
        S_ROW_LOOP(j, T, S_ST(ds + j, d));
    }
}

/* dS (n) *= P (n): dS = P * (dP - D), the softmax backward of a block (rows of T, P and
 * dS both with stride T, so the block is one flat range). */
S_CLONES static void s_mul_flat(float *dS, const float *P, size_t n)
{
    S_FLAT_LOOP(n, S_ST(dS + j, S_LD(dS + j) * S_LD(P + j)));
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

#if defined(S_HAVE_AVX2)
/* ---- The attention forward on AVX2 + FMA, hd = 64 --------------------------------- */
/* Through sgemm the two thin products of a block (S = Q K^T with K = 64, O = E V with
 * N = 64) ran at ~50 GFLOP/s on a Zen 3 core against ~90 for the linears: OpenBLAS
 * packs K or V again for every block and zeroes S for beta = 0. Here, on CPUs with
 * AVX2 and FMA but no AVX-512 (which run nn/attn_fused.h), a sub-block of AF2_BQ = 32
 * queries is computed with register-tiled FMA kernels that read K and V in place: only
 * the sub-block's (64, 32) query panel is transposed. Scores are kept key-major,
 * St (T keys, 32 query lanes: 192 KB at T = 1500, in L2), so the max and sum over keys
 * are lane-wise; the exp and P V run on chunks of AF2_KC keys in L1. Each query's
 * arithmetic is a fixed chain (d, then keys, in order) whatever sub-block or lane it
 * sits in, so the bits do not depend on the thread count. Probabilities, when kept, are
 * written row-major as the sgemm path's backward reads them. */

/* exp(x) for the attention's x = s - max <= 0, in FMAs: Cody-Waite reduction and the
 * degree-6 polynomial of s_vexp_p, with x clamped to [-87, 88] so 2^n is one exponent
 * field (exp(-87) = 1.6e-38 stands for the smaller terms, each below 2^-125 of the
 * row's sum, which holds exp(0) = 1). Half the instructions of s_exp256, whose clamps,
 * split scale and NaN test are for arbitrary input. NaN stays NaN (vmaxps and vminps
 * return their second operand when one is NaN). */
S_INLINE256F __m256 s_exp256f(__m256 x)
{
    x = _mm256_min_ps(S_SET256(88.0f), _mm256_max_ps(S_SET256(-87.0f), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, S_SET256(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, S_SET256(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, S_SET256(-2.12194440e-4f), r);
    __m256 p = S_SET256(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, S_SET256(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, S_SET256(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, S_SET256(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, S_SET256(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, S_SET256(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), S_SET256(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* St[r][g*16 .. g*16 + 16) = sum_d A[r*lda + d] QT[d][g*16 ..] for r < R (R <= 6 keys,
 * 2 lane vectors: 12 accumulators); vmax[0..1] takes the lane-wise max. */
S_INLINE256F void s_af2_k1_tile(float *St, const float *A, int lda, const float *QT, int R,
                                __m256 *vmax)
{
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int d = 0; d < 64; d++) {
        __m256 b0 = _mm256_loadu_ps(QT + d * AF2_BQ), b1 = _mm256_loadu_ps(QT + d * AF2_BQ + 8);
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            if (r < R) {
                __m256 a = _mm256_broadcast_ss(A + (size_t)r * lda + d);
                acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R) {
            _mm256_storeu_ps(St + r * AF2_BQ, acc[r][0]);
            _mm256_storeu_ps(St + r * AF2_BQ + 8, acc[r][1]);
            vmax[0] = _mm256_max_ps(vmax[0], acc[r][0]);
            vmax[1] = _mm256_max_ps(vmax[1], acc[r][1]);
        }
}

/* St (T, 32 lanes) = K (T, 64; stride C) QT, and the lane-wise max of every column. */
S_T256F static void s_af2_scores(float *St, const float *kb, int C, const float *QT, int T,
                                 __m256 *vmax)
{
    for (int w = 0; w < 4; w++)
        vmax[w] = _mm256_set1_ps(-INFINITY);
    for (int j = 0; j < T; j += 6) {
        int R = T - j < 6 ? T - j : 6;
        for (int g = 0; g < 2; g++) {
            float *st = St + (size_t)j * AF2_BQ + g * 16;
            const float *qt = QT + g * 16;
            const float *a = kb + (size_t)j * C;
            switch (R) { /* constant R per call: the tile unrolls without the tests */
            case 6: s_af2_k1_tile(st, a, C, qt, 6, vmax + 2 * g); break;
            case 5: s_af2_k1_tile(st, a, C, qt, 5, vmax + 2 * g); break;
            case 4: s_af2_k1_tile(st, a, C, qt, 4, vmax + 2 * g); break;
            case 3: s_af2_k1_tile(st, a, C, qt, 3, vmax + 2 * g); break;
            case 2: s_af2_k1_tile(st, a, C, qt, 2, vmax + 2 * g); break;
            default: s_af2_k1_tile(st, a, C, qt, 1, vmax + 2 * g); break;
            }
        }
    }
}

/* OT[d0 + r][g*16 ..] += sum_{j < n} A[j*lda + d0 + r] Et[j][g*16 ..], r < R (R <= 6). */
S_INLINE256F void s_af2_k2_tile(float *OT, const float *A, int lda, const float *Et, int n, int d0,
                                int R)
{
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R) {
            acc[r][0] = _mm256_loadu_ps(OT + (d0 + r) * AF2_BQ);
            acc[r][1] = _mm256_loadu_ps(OT + (d0 + r) * AF2_BQ + 8);
        }
    for (int j = 0; j < n; j++) {
        const float *e = Et + (size_t)j * AF2_BQ, *a = A + (size_t)j * lda + d0;
        __m256 e0 = _mm256_loadu_ps(e), e1 = _mm256_loadu_ps(e + 8);
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            if (r < R) {
                __m256 s = _mm256_broadcast_ss(a + r);
                acc[r][0] = _mm256_fmadd_ps(s, e0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(s, e1, acc[r][1]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R) {
            _mm256_storeu_ps(OT + (d0 + r) * AF2_BQ, acc[r][0]);
            _mm256_storeu_ps(OT + (d0 + r) * AF2_BQ + 8, acc[r][1]);
        }
}

/* St <- exp(St - m) chunk by chunk, the lane sums into vsum (keys in order), and
 * OT (64, 32 lanes) += V^T E over each chunk while it is in L1 (V packed, (T, 64)). */
S_T256F static void s_af2_exp_pv(float *OT, float *St, const float *Vp, int T, const __m256 *vm,
                                 __m256 *vsum)
{
    for (int j0 = 0; j0 < T; j0 += AF2_KC) {
        int nj = T - j0 < AF2_KC ? T - j0 : AF2_KC;
        for (int j = j0; j < j0 + nj; j++) {
            float *s = St + (size_t)j * AF2_BQ;
            for (int w = 0; w < 4; w++) {
                __m256 e = s_exp256f(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * w), vm[w]));
                _mm256_storeu_ps(s + 8 * w, e);
                vsum[w] = _mm256_add_ps(vsum[w], e);
            }
        }
        const float *a = Vp + (size_t)j0 * 64, *et = St + (size_t)j0 * AF2_BQ;
        for (int g = 0; g < 2; g++) {
            for (int d0 = 0; d0 < 60; d0 += 6)
                s_af2_k2_tile(OT + g * 16, a, 64, et + g * 16, nj, d0, 6);
            s_af2_k2_tile(OT + g * 16, a, 64, et + g * 16, nj, 60, 4);
        }
    }
}

/* Queries [r0, r0 + nb) (nb <= 32) of head h of clip b against the head's K and V
 * packed (T, 64) in Kp, Vp: out rows, and lse and the probabilities when wanted
 * (nn_attention_forward's contract). */
S_T256F static void s_attn_fwd_sub_avx2(float *out, float *lse, float *probs, const float *q,
                                        const float *Kp, const float *Vp, float *scr, int b, int h,
                                        int r0, int nb, int T, int NH)
{
    const int C = NH * 64;
    float *QT = scr, *OT = QT + 64 * AF2_BQ, *St = OT + 64 * AF2_BQ;
    float *mx = St + (size_t)T * AF2_BQ, *sum = mx + AF2_BQ;
    const float *qb = q + ((size_t)b * T + r0) * C + (size_t)h * 64;
    for (int d = 0; d < 64; d++)
        for (int i = 0; i < AF2_BQ; i++)
            QT[d * AF2_BQ + i] = i < nb ? qb[(size_t)i * C + d] : 0.0f;
    memset(OT, 0, 64 * AF2_BQ * sizeof *OT);
    __m256 vm[4], vs[4];
    s_af2_scores(St, Kp, 64, QT, T, vm);
    for (int w = 0; w < 4; w++)
        vs[w] = _mm256_setzero_ps();
    s_af2_exp_pv(OT, St, Vp, T, vm, vs);
    for (int w = 0; w < 4; w++) {
        _mm256_storeu_ps(mx + 8 * w, vm[w]);
        _mm256_storeu_ps(sum + 8 * w, vs[w]);
    }
    float *ob = out + ((size_t)b * T + r0) * C + (size_t)h * 64;
    for (int i = 0; i < nb; i++) {
        float inv = 1.0f / sum[i];
        for (int d = 0; d < 64; d++)
            ob[(size_t)i * C + d] = OT[d * AF2_BQ + i] * inv;
    }
    if (lse)
        for (int i = 0; i < nb; i++)
            lse[((size_t)b * NH + h) * T + r0 + i] = mx[i] + logf(sum[i]);
    if (probs)
        for (int i = 0; i < nb; i++) {
            float inv = 1.0f / sum[i], *p = probs + (((size_t)b * NH + h) * T + r0 + i) * T;
            for (int j = 0; j < T; j++)
                p[j] = St[(size_t)j * AF2_BQ + i] * inv;
        }
}
#endif

/* One forward work unit: query rows [i0, i0 + bq) of head h of clip b. S is
 * (bq, T) scratch, mx and sum (bq). Units write disjoint rows/columns of out and
 * disjoint entries of lse. */
static void s_attn_fwd_block(float *out, float *lse, float *probs, const float *q, const float *k,
                             const float *v, float *S, float *mx, float *sum, int b, int h, int i0,
                             int T, int NH, int hd)
{
    const int C = NH * hd;
    const int bq = T - i0 < s_attn_bq(hd) ? T - i0 : s_attn_bq(hd);
#if defined(S_HAVE_AVX2)
    if (s_attn_avx2_ok(hd)) {
        /* S holds s_attn_avx2_scratch(T): the head's K and V packed contiguous once per
         * unit (rows 2 KB apart in q/k/v stream poorly and crowd few L1 sets), then the
         * sub-blocks' own scratch */
        float *Kp = S, *Vp = S + (size_t)T * 64;
        const float *kh = k + (size_t)b * T * C + (size_t)h * 64;
        const float *vh = v + (size_t)b * T * C + (size_t)h * 64;
        for (int j = 0; j < T; j++) {
            memcpy(Kp + (size_t)j * 64, kh + (size_t)j * C, 64 * sizeof *Kp);
            memcpy(Vp + (size_t)j * 64, vh + (size_t)j * C, 64 * sizeof *Vp);
        }
        for (int r = 0; r < bq; r += AF2_BQ)
            s_attn_fwd_sub_avx2(out, lse, probs, q, Kp, Vp, Vp + (size_t)T * 64, b, h, i0 + r,
                                bq - r < AF2_BQ ? bq - r : AF2_BQ, T, NH);
        return;
    }
#endif
    const float *kb = k + (size_t)b * T * C + (size_t)h * hd;
    const float *vb = v + (size_t)b * T * C + (size_t)h * hd;
    size_t row0 = (size_t)b * T + (size_t)i0;
    const float *qb = q + row0 * C + (size_t)h * hd;
    float *ob = out + row0 * C + (size_t)h * hd;
    /* S (bq, T) = Q_blk (bq, hd) @ K^T (hd, T) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, T, hd, 1.0f, qb, C, kb, C, 0.0f, S, T);
    s_exp_rows_dispatch(S, mx, sum, bq, T);
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
    if (nn_attn_fused_ok(hd)) {
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i0 = 0; i0 < T; i0 += NN_ATTN_FUSED_BQ)
                    nn_attn_fused_fwd_block(out, lse, probs, q, k, v, scratch, b, h, i0, T, NH);
        return;
    }
    const int bqmax = T < ATTN_BLOCK ? T : ATTN_BLOCK;
    float *S = scratch;                      /* (bq, T) */
    float *mx = scratch + (size_t)bqmax * T; /* (bq) row max */
    float *sum = mx + bqmax;                 /* (bq) row sum of exp */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i0 = 0; i0 < T; i0 += s_attn_bq(hd))
                s_attn_fwd_block(out, lse, probs, q, k, v, S, mx, sum, b, h, i0, T, NH, hd);
}

_Static_assert(ATTN_BWD_BLOCK % ATTN_BLOCK == 0, "backward blocks are whole forward blocks");

/* P (bq, T) of a backward block recomputed: exp(Q_blk K^T - lse), or with lse NULL the
 * forward's softmax again (mx, sum: bq floats of scratch). Formed in the forward's
 * blocks of ATTN_BLOCK rows (a backward block starts on one), so every score is the
 * product of an sgemm call of the forward's shape and the bits are the forward's. */
static void s_attn_bwd_probs(float *P, float *mx, float *sum, const float *lse, const float *qb,
                             const float *kb, int bq, int T, int C, int hd)
{
    for (int r0 = 0; r0 < bq; r0 += ATTN_BLOCK) {
        int rows = bq - r0 < ATTN_BLOCK ? bq - r0 : ATTN_BLOCK;
        float *Pr = P + (size_t)r0 * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, T, hd, 1.0f, qb + (size_t)r0 * C,
                    C, kb, C, 0.0f, Pr, T);
        if (lse) {
            s_exp_shift_rows(Pr, lse + r0, rows, T);
        } else {
            s_exp_rows(Pr, mx, sum, rows, T);
            s_norm_rows(Pr, sum, rows, T);
        }
    }
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
    for (int i0 = 0; i0 < T; i0 += ATTN_BWD_BLOCK) {
        int bq = T - i0 < ATTN_BWD_BLOCK ? T - i0 : ATTN_BWD_BLOCK;
        size_t boff = hoff + (size_t)i0 * C;
        const float *qb = q + boff, *dob = dout + boff, *ob = out + boff;
        const float *P = Pscr;
        if (probs) {
            P = probs + (((size_t)b * NH + h) * T + (size_t)i0) * T;
        } else {
            s_attn_bwd_probs(Pscr, D, dS, lse ? lse + ((size_t)b * NH + h) * T + i0 : NULL, qb, kb,
                             bq, T, C, hd);
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
        /* dS (bq, T) = -D + dO_blk (bq, hd) @ V^T (hd, T) = dP - D; then dS *= P */
        s_negfill_rows(dS, D, bq, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, T, hd, 1.0f, dob, C, vb, C, 1.0f,
                    dS, T);
        s_mul_flat(dS, P, (size_t)bq * T);
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
    if (nn_attn_fused_ok(hd)) {
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                nn_attn_fused_bwd_head(dq, dk, dv, dout, out, lse, probs, q, k, v, scratch, b, h, T,
                                       NH);
        return;
    }
    const int bqmax = T < ATTN_BWD_BLOCK ? T : ATTN_BWD_BLOCK;
    float *P = scratch;                         /* (bq, T) */
    float *dS = scratch + (size_t)bqmax * T;    /* (bq, T) */
    float *D = scratch + 2 * (size_t)bqmax * T; /* (bq) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            s_attn_bwd_head(dq, dk, dv, dout, out, lse, probs, q, k, v, P, dS, D, b, h, T, NH, hd);
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
    const int nt = nn_pool_threads(pool);
    if (nt < 2 || j->n < 4 * min_chunk)
        return 0;
    size_t chunk = j->n / ((size_t)nt * 4);
    chunk = chunk < min_chunk ? min_chunk : (chunk + 63) / 64 * 64;
    j->chunk = chunk;
    j->nunits = (int)((j->n + chunk - 1) / chunk);
    atomic_init(&j->next, 0);
    nn_pool_run(pool, s_ew_job, j);
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
    int fused;       /* the fused kernels (nn/attn_fused.h) run the units */
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
        if (j->fused)
            nn_attn_fused_fwd_block(j->out, j->lse, j->probs, j->q, j->k, j->v, S, bh / j->NH,
                                    bh % j->NH, blk * NN_ATTN_FUSED_BQ, j->T, j->NH);
        else
            s_attn_fwd_block(j->out, j->lse, j->probs, j->q, j->k, j->v, S, mx, sum, bh / j->NH,
                             bh % j->NH, blk * s_attn_bq(j->hd), j->T, j->NH, j->hd);
    }
}

static void s_attn_bwd_job(void *varg, int tid)
{
    s_attn_job_t *j = varg;
    const int bqmax = j->T < ATTN_BWD_BLOCK ? j->T : ATTN_BWD_BLOCK;
    float *P = j->scratch + (size_t)tid * j->stride;
    float *dS = P + (size_t)bqmax * j->T, *D = dS + (size_t)bqmax * j->T;
    int u;
    while ((u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nunits)
        if (j->fused)
            nn_attn_fused_bwd_head(j->dq, j->dk, j->dv, j->dout, j->o, j->lse_in, j->probs_in, j->q,
                                   j->k, j->v, P, u / j->NH, u % j->NH, j->T, j->NH);
        else
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
    if (nn_pool_threads(pool) > 1 && j->nunits > 1)
        nn_pool_run(pool, fn, j);
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
                      .fused = nn_attn_fused_ok(hd),
                      .nblk = (T + s_attn_bq(hd) - 1) / s_attn_bq(hd)};
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
                      .fused = nn_attn_fused_ok(hd),
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
    S_FLAT_LOOP(n, S_ST(out + j, w0 * S_LD(h0 + j)));
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
        S_ROW_LOOP(j, len, acc += S_LD(x + j) * S_LD(y + j));
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
