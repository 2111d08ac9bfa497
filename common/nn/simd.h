/* nn/simd.h: the private 16-float vector layer of the nn/ kernels. Included only by
 * common/nn/ .c files; nothing here is part of any contract.
 *
 * Why: the transcendental hot spots of the encoder (exp in the attention softmax, T*T
 * per head and layer; erf in GELU, T*F per layer) and the row kernels next to the GEMMs
 * (LayerNorm, residual adds) cost more than the GEMMs beside them as glibc scalar code,
 * and -O2 does not vectorise loops with unknown trip counts. So they are written with
 * GCC vector extensions (16 floats) and compiled for AVX-512, AVX2 and baseline x86-64
 * (S_CLONES: target_clones picks one at load time). The arithmetic is the same in every
 * clone (no FMA contraction: GCC does none under -std=c11, clang is told below), so the
 * kernels give the same bits on every x86-64 CPU.
 *
 * No helper passes or returns a vector by value: with 64-byte vectors that is an ABI
 * note in GCC and an error in clang for the clones without AVX-512. Helpers take
 * pointers and are wrapped in statement-expression macros, so call sites still read as
 * expressions (each macro has its own local names: they nest). */
#ifndef WISP_NN_SIMD_H
#define WISP_NN_SIMD_H

#include <stdint.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
#if defined(__GNUC__) && defined(__x86_64__)
#define S_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define S_CLONES
#endif

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
/* Lane-wise comparison a OP b as a mask (all ones or all zeros per lane); b may be a
 * scalar. Formed on 8-float halves: GCC lowers a comparison of 16-float vectors lane by
 * lane (vcomiss and cmov, ~10x slower) for targets without 512-bit compares, the AVX2
 * clone included, while an 8-float compare is one vcmpps there (and on AVX-512). The
 * result is the same mask either way. tests/lint/simd.sh checks the AVX2 clones. */
typedef float s_vf8 __attribute__((vector_size(32)));
typedef int32_t s_vi8 __attribute__((vector_size(32)));
#define s_vcmp_(a, b, OP)                                                                          \
    ({                                                                                             \
        s_vf ca_ = (a), cb_ = (s_vf){0} + (b);                                                     \
        s_vf8 ha_[2], hb_[2];                                                                      \
        s_vi8 hm_[2];                                                                              \
        s_vi cm_;                                                                                  \
        memcpy(ha_, &ca_, sizeof ca_);                                                             \
        memcpy(hb_, &cb_, sizeof cb_);                                                             \
        hm_[0] = ha_[0] OP hb_[0];                                                                 \
        hm_[1] = ha_[1] OP hb_[1];                                                                 \
        memcpy(&cm_, hm_, sizeof cm_);                                                             \
        cm_;                                                                                       \
    })
#define s_vlt(a, b) s_vcmp_((a), (b), <)
#define s_vgt(a, b) s_vcmp_((a), (b), >)
#define s_vne(a, b) s_vcmp_((a), (b), !=)
#define s_vmax(a, b)                                                                               \
    ({                                                                                             \
        s_vf a_ = (a), b_ = (b);                                                                   \
        s_vsel(s_vgt(a_, b_), a_, b_);                                                             \
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
/* erf(z) into *e and 1 + erf(z) into *o; either pointer may be NULL. */
#define s_verf(z, e, o)                                                                            \
    ({                                                                                             \
        s_vf ez_ = (z);                                                                            \
        s_verf_p(&ez_, (e), (o));                                                                  \
    })

/* Horizontal sum in lane order (a fixed order: the bits do not depend on the clone). */
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
 * x ~ -104) and overflow to +inf (x > 88.72) come out right. Within 2 ulp of exp in
 * double (tests/test_ops.c checks a dense grid). */
S_INLINE void s_vexp_p(const s_vf *px, s_vf *out)
{
    s_vf x = *px;
    const s_vf magic = s_vsplat(0x1.8p23f); /* adding it rounds to an integer */
    s_vf xc = s_vsel(s_vlt(x, -104.0f), s_vsplat(-104.0f), x);
    xc = s_vsel(s_vgt(xc, 89.0f), s_vsplat(89.0f), xc);
    s_vf t = xc * 1.44269504088896341f + magic;
    s_vf n = t - magic;
    s_vi ni = (s_vi)t - (s_vi)magic; /* the integer n, read from the mantissa bits */
    s_vf r = xc - n * 0.693359375f;  /* ln2 in two parts: hi exact in 9 bits */
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
    *out = s_vsel(s_vne(x, x), x, y); /* NaN stays NaN */
}

/* erf(z) and 1 + erf(z) (the latter without cancellation for z << 0, which GELU
 * needs). For |z| < 0.875: erf(a) = a + a Q(a^2) (degree 6 fit); above:
 * erfc(a) = exp(R(a)) (degree 8 fit of log erfc on [0.875, 3.92]); erfc(a) is
 * taken as 0 beyond 3.92, where it is below half an ulp of 1. The coefficients
 * are least-squares fits, see tests/reference/erf_fit.py. Within 1e-7 absolute. */
S_INLINE void s_verf_p(const s_vf *pz, s_vf *erf_out, s_vf *onep_out)
{
    s_vf z = *pz;
    s_vi neg = s_vlt(z, 0.0f);
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
    s_vf ac = s_vsel(s_vlt(a, 0.875f), s_vsplat(0.875f), a);
    ac = s_vsel(s_vgt(ac, 3.92f), s_vsplat(3.92f), ac);
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
    e = s_vsel(s_vgt(a, 3.92f), s_vsplat(0.0f), e);
    s_vi small = s_vlt(a, 0.875f);
    s_vf erfa = s_vsel(small, sm, 1.0f - e);
    if (erf_out)
        *erf_out = s_vsel(neg, -erfa, erfa);
    if (onep_out)
        *onep_out = s_vsel(neg, s_vsel(small, 1.0f - sm, e), 1.0f + erfa);
}

/* ---- Row loops ------------------------------------------------------------ */
/* S_ROW_LOOP(j, C, body...) runs body over a row of C floats, one vector at a time:
 * the full vectors, then one tail vector whose lanes past C are padding. body is
 * written once; the macro expands it for both branches. Inside body, j is the index
 * of the vector's first float, and loads and stores go through
 *   S_LD(p)         the vector at p (p already offset by j); tail lanes 0
 *   S_LDP(p, pad)   the same, tail lanes set to pad (e.g. -INFINITY for a max)
 *   S_ST(p, v)      stores v at p; in the tail only the lanes before C
 * which test s_full_, a constant in each branch, so the full-vector branch compiles to
 * plain vector loads and stores. A padded lane's value never reaches memory; bodies
 * that reduce over lanes choose a pad that is neutral for the reduction. */
#define S_ROW_LOOP(j, C, ...)                                                                      \
    do {                                                                                           \
        const int s_n_ = (C);                                                                      \
        int j = 0;                                                                                 \
        for (; j + S_VW <= s_n_; j += S_VW) {                                                      \
            const int s_full_ = 1, s_rem_ = S_VW;                                                  \
            (void)s_full_;                                                                         \
            (void)s_rem_;                                                                          \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
        if (j < s_n_) {                                                                            \
            const int s_full_ = 0, s_rem_ = s_n_ - j;                                              \
            (void)s_full_;                                                                         \
            (void)s_rem_;                                                                          \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
    } while (0)

#define S_LDP(p, pad)                                                                              \
    ({                                                                                             \
        s_vf rl_;                                                                                  \
        if (s_full_)                                                                               \
            rl_ = s_vld(p);                                                                        \
        else                                                                                       \
            rl_ = s_vld_part((p), s_rem_, (pad));                                                  \
        rl_;                                                                                       \
    })
#define S_LD(p) S_LDP((p), 0.0f)
#define S_ST(p, v)                                                                                 \
    ({                                                                                             \
        s_vf rs_ = (v);                                                                            \
        if (s_full_)                                                                               \
            s_vst((p), rs_);                                                                       \
        else                                                                                       \
            s_vst_part((p), rs_, s_rem_);                                                          \
    })

/* Flat loops of n floats (size_t) as rows of at most 2^30: the same vector code,
 * with j a size_t index inside body. */
#define S_FLAT_LOOP(n, ...)                                                                        \
    do {                                                                                           \
        const size_t s_total_ = (n);                                                               \
        for (size_t s_base_ = 0; s_base_ < s_total_; s_base_ += (size_t)1 << 30) {                 \
            int s_len_ =                                                                           \
                s_total_ - s_base_ < ((size_t)1 << 30) ? (int)(s_total_ - s_base_) : 1 << 30;      \
            S_ROW_LOOP(s_j_, s_len_, {                                                             \
                size_t j = s_base_ + (size_t)s_j_;                                                 \
                __VA_ARGS__;                                                                       \
            });                                                                                    \
        }                                                                                          \
    } while (0)

/* ---- AVX-512 with FMA ------------------------------------------------------ */
/* For the kernels that dispatch at run time on __builtin_cpu_supports("avx512f") (the
 * attention core, GELU): FMA and vscalefps change the bits against the portable code in
 * the last place, as OpenBLAS's kernels do between CPUs; tests hold both to the same
 * accuracy. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define S_HAVE_AVX512 1
#define S_T512        __attribute__((target("avx512f,fma")))
#define S_INLINE512   static inline __attribute__((always_inline)) S_T512

/* exp(x): Cody-Waite reduction x = n ln2 + r, the degree-6 polynomial of s_vexp_p in
 * FMAs, and 2^n applied by vscalefps, which rounds gradual underflow and overflow itself
 * (no split of n). x is clamped to [-104, 89] (exp is 0 in float below, +inf above);
 * NaN stays NaN (vmaxps/vminps return their second operand when either is NaN). */
S_INLINE512 __m512 s_exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* Lanes [0, n) of a 16-float vector (n may exceed 16). */
static inline __mmask16 s_mask512(size_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}
#endif

#endif
