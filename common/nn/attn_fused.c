/* nn/attn_fused.c: fused attention core, hd = 64, AVX-512F with FMA (see attn_fused.h for
 * the layout; docs/NUMERICS.md §2 for the formulas).
 *
 * Why: through sgemm, attention ran at ~70 GFLOP/s against ~100 for the linears. Its
 * products are thin (K = 64, or N = 64), so OpenBLAS spent a large share of each call
 * packing operands, zeroing C for beta = 0 and on short panels, and the softmax was a
 * separate pass over the (block, T) scores. Here three register-tiled micro-kernels read
 * K, V, Q and dO where they lie (row-major, stride C) and only a block's 64x64 query or
 * gradient panel is transposed, once per block:
 *   k1  St (n keys, 64 lanes)  = A (n, 64) @ BT (64, 64 lanes)      scores, dP
 *   k2  OT (64, 64 lanes)     += A (n, 64)^T @ Et (n, 64 lanes)     P V, dS K
 *   k3  G (n, 64)             += Et (n, lanes) @ X (lanes, 64)      P^T dO, dS^T Q
 * A query block's scores (T x 64 floats, 384 KB at T = 1500) stay in L2 between the max,
 * the exp and the products; the exp and P V run chunk by chunk (64 keys, 16 KB) in L1.
 *
 * Arithmetic: every product is a chain of FMAs in a fixed order (the reduction index in
 * order, partial sums per block of 64 queries added to dK and dV block by block), so the
 * bits do not depend on how units are spread over threads. FMA makes the results differ
 * from the sgemm path in the last bits, as OpenBLAS's own kernels differ between CPUs. */
#include "nn/attn_fused.h"

#include <math.h>
#include <string.h>

#include "nn/simd.h"

#define AF_BQ NN_ATTN_FUSED_BQ
#ifndef AF_KC
#define AF_KC 48 /* keys per L1 chunk (a multiple of the 6-key tiles; 36-48 measured best) */
#endif
#define AF_P (64 * AF_BQ)

#if defined(S_HAVE_AVX512)

#define AF_T      S_T512
#define AF_INLINE S_INLINE512

int nn_attn_fused_ok(int hd)
{
    return hd == 64 && __builtin_cpu_supports("avx512f");
}

#define af_exp s_exp512

/* k1 tile: St[r][lanes] = sum_d A[r*lda + d] * BT[d][lanes] for r < R (R <= 6 keys x 4
 * lane vectors = 24 accumulators); vmax (4 vectors, may be NULL) takes the lane-wise max. */
AF_INLINE void af_k1_tile(float *St, const float *A, int lda, const float *BT, int R, __m512 *vmax)
{
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
#pragma GCC unroll 4
        for (int w = 0; w < 4; w++)
            acc[r][w] = _mm512_setzero_ps();
    for (int d = 0; d < 64; d++) {
        __m512 b0 = _mm512_loadu_ps(BT + d * AF_BQ), b1 = _mm512_loadu_ps(BT + d * AF_BQ + 16);
        __m512 b2 = _mm512_loadu_ps(BT + d * AF_BQ + 32), b3 = _mm512_loadu_ps(BT + d * AF_BQ + 48);
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            if (r < R) {
                __m512 a = _mm512_set1_ps(A[(size_t)r * lda + d]);
                acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
                acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
                acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R)
#pragma GCC unroll 4
            for (int w = 0; w < 4; w++) {
                _mm512_storeu_ps(St + r * AF_BQ + w * 16, acc[r][w]);
                if (vmax)
                    vmax[w] = _mm512_max_ps(vmax[w], acc[r][w]);
            }
}

/* k1 over n keys (rows of A, stride lda) into St (n, 64 lanes). */
AF_T static void af_k1(float *St, const float *A, int lda, const float *BT, int n, __m512 *vmax)
{
    int j = 0;
    for (; j + 6 <= n; j += 6) {
        for (int r = 6; r < 12 && j + r < n; r++) /* the next tile's K or V rows */
            for (int w = 0; w < 4; w++)
                _mm_prefetch((const char *)(A + (size_t)(j + r) * lda + 16 * w), _MM_HINT_T0);
        af_k1_tile(St + (size_t)j * AF_BQ, A + (size_t)j * lda, lda, BT, 6, vmax);
    }
    switch (n - j) {
    case 5: af_k1_tile(St + (size_t)j * AF_BQ, A + (size_t)j * lda, lda, BT, 5, vmax); break;
    case 4: af_k1_tile(St + (size_t)j * AF_BQ, A + (size_t)j * lda, lda, BT, 4, vmax); break;
    case 3: af_k1_tile(St + (size_t)j * AF_BQ, A + (size_t)j * lda, lda, BT, 3, vmax); break;
    case 2: af_k1_tile(St + (size_t)j * AF_BQ, A + (size_t)j * lda, lda, BT, 2, vmax); break;
    case 1: af_k1_tile(St + (size_t)j * AF_BQ, A + (size_t)j * lda, lda, BT, 1, vmax); break;
    default: break;
    }
}

/* k2 tile: OT[d0 + r][lanes] += sum_{j < n} A[j*lda + d0 + r] * Et[j][lanes], r < R. */
AF_INLINE void af_k2_tile(float *OT, const float *A, int lda, const float *Et, int n, int d0, int R)
{
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R)
#pragma GCC unroll 4
            for (int w = 0; w < 4; w++)
                acc[r][w] = _mm512_loadu_ps(OT + (d0 + r) * AF_BQ + w * 16);
    for (int j = 0; j < n; j++) {
        const float *e = Et + (size_t)j * AF_BQ, *a = A + (size_t)j * lda + d0;
        __m512 e0 = _mm512_loadu_ps(e), e1 = _mm512_loadu_ps(e + 16);
        __m512 e2 = _mm512_loadu_ps(e + 32), e3 = _mm512_loadu_ps(e + 48);
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            if (r < R) {
                __m512 s = _mm512_set1_ps(a[r]);
                acc[r][0] = _mm512_fmadd_ps(s, e0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(s, e1, acc[r][1]);
                acc[r][2] = _mm512_fmadd_ps(s, e2, acc[r][2]);
                acc[r][3] = _mm512_fmadd_ps(s, e3, acc[r][3]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R)
#pragma GCC unroll 4
            for (int w = 0; w < 4; w++)
                _mm512_storeu_ps(OT + (d0 + r) * AF_BQ + w * 16, acc[r][w]);
}

/* k2 over n keys: OT (64, 64 lanes) += A (n, 64)^T @ Et (n, 64 lanes); d in tiles of 6.
 * The next n rows of A (the next chunk's, when next is set) are prefetched meanwhile. */
AF_T static void af_k2(float *OT, const float *A, int lda, const float *Et, int n, int next)
{
    for (int j = 0; j < next; j++)
        for (int w = 0; w < 4; w++)
            _mm_prefetch((const char *)(A + (size_t)(n + j) * lda + 16 * w), _MM_HINT_T1);
    for (int d0 = 0; d0 < 60; d0 += 6)
        af_k2_tile(OT, A, lda, Et, n, d0, 6);
    af_k2_tile(OT, A, lda, Et, n, 60, 4);
}

/* k3 tile: G[r*ldg + 0:64] += sum_{i < ni} Et[r][i] * X[i*ldx + 0:64], r < R. */
AF_INLINE void af_k3_tile(float *G, int ldg, const float *Et, const float *X, int ldx, int ni,
                          int R)
{
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
#pragma GCC unroll 4
        for (int w = 0; w < 4; w++)
            acc[r][w] = _mm512_setzero_ps();
    for (int i = 0; i < ni; i++) {
        const float *x = X + (size_t)i * ldx;
        __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        __m512 x2 = _mm512_loadu_ps(x + 32), x3 = _mm512_loadu_ps(x + 48);
#pragma GCC unroll 6
        for (int r = 0; r < 6; r++) {
            if (r < R) {
                __m512 s = _mm512_set1_ps(Et[r * AF_BQ + i]);
                acc[r][0] = _mm512_fmadd_ps(s, x0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(s, x1, acc[r][1]);
                acc[r][2] = _mm512_fmadd_ps(s, x2, acc[r][2]);
                acc[r][3] = _mm512_fmadd_ps(s, x3, acc[r][3]);
            }
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < 6; r++)
        if (r < R)
#pragma GCC unroll 4
            for (int w = 0; w < 4; w++) {
                float *g = G + (size_t)r * ldg + w * 16;
                _mm512_storeu_ps(g, _mm512_add_ps(_mm512_loadu_ps(g), acc[r][w]));
            }
}

/* k3 over n keys: G (n rows, stride ldg) += Et (n, lanes < ni) @ X (ni rows, stride ldx). */
AF_T static void af_k3(float *G, int ldg, const float *Et, const float *X, int ldx, int ni, int n)
{
    int j = 0;
    for (; j + 6 <= n; j += 6) {
        /* G (dK, dV rows, stride C) is far from L1: fetch the next tile's rows now, the
         * 24 x ni FMAs of this one hide the wait */
        for (int r = 6; r < 12 && j + r < n; r++)
            for (int w = 0; w < 4; w++)
                _mm_prefetch((const char *)(G + (size_t)(j + r) * ldg + 16 * w), _MM_HINT_T0);
        af_k3_tile(G + (size_t)j * ldg, ldg, Et + (size_t)j * AF_BQ, X, ldx, ni, 6);
    }
    for (; j < n; j++)
        af_k3_tile(G + (size_t)j * ldg, ldg, Et + (size_t)j * AF_BQ, X, ldx, ni, 1);
}

/* PT (64, 64 lanes) = the transpose of rows X[i*ldx + 0:64], i < bq; lanes >= bq are 0. */
static void af_pack_t(float *PT, const float *X, int ldx, int bq)
{
    for (int d = 0; d < 64; d++)
        for (int i = 0; i < AF_BQ; i++)
            PT[d * AF_BQ + i] = i < bq ? X[(size_t)i * ldx + d] : 0.0f;
}

/* The lanes < bq of one vector w of a row: mask for masked loads and stores. */
static inline __mmask16 af_mask(int bq, int w)
{
    int rem = bq - 16 * w;
    return rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? (__mmask16)0 : (__mmask16)((1u << rem) - 1);
}

size_t nn_attn_fused_scratch_floats(int T)
{
    size_t t = (size_t)(T > 0 ? T : 0) * AF_BQ;
    size_t fwd = 2 * (size_t)AF_P + t + 3 * AF_BQ;
    size_t bwd = 3 * (size_t)AF_P + t + (size_t)AF_KC * AF_BQ + 3 * AF_BQ;
    return fwd > bwd ? fwd : bwd;
}

/* Pass 2 of the forward: St (T, 64 lanes) <- exp(St - m) in place, chunk by chunk, the
 * lane sums into vsum, and OT += V^T E over each chunk while it is in L1. */
AF_T static void af_fwd_exp_pv(float *OT, float *St, const float *vb, int C, int T,
                               const __m512 *vm, __m512 *vsum)
{
    for (int j0 = 0; j0 < T; j0 += AF_KC) {
        int nj = T - j0 < AF_KC ? T - j0 : AF_KC;
        for (int j = j0; j < j0 + nj; j++) {
            float *s = St + (size_t)j * AF_BQ;
#pragma GCC unroll 4
            for (int w = 0; w < 4; w++) {
                __m512 e = af_exp(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * w), vm[w]));
                _mm512_storeu_ps(s + 16 * w, e);
                vsum[w] = _mm512_add_ps(vsum[w], e);
            }
        }
        int nx = T - j0 - nj < AF_KC ? T - j0 - nj : AF_KC;
        af_k2(OT, vb + (size_t)j0 * C, C, St + (size_t)j0 * AF_BQ, nj, nx);
    }
}

/* probs block (T keys, bq lanes) = St * inv, streamed when 64-byte aligned (read only by
 * the backward, much later: no read-for-ownership, the block stays in cache). */
AF_T static void af_store_probs(float *pb, const float *St, const float *inv, int T, int bq)
{
    __m512 vi[4];
    for (int w = 0; w < 4; w++)
        vi[w] = _mm512_loadu_ps(inv + 16 * w);
    int stream = bq == AF_BQ && ((size_t)pb & 63) == 0;
    for (int j = 0; j < T; j++) {
        const float *s = St + (size_t)j * AF_BQ;
        float *p = pb + (size_t)j * bq;
        for (int w = 0; w < 4; w++) {
            __m512 x = _mm512_mul_ps(_mm512_loadu_ps(s + 16 * w), vi[w]);
            if (stream)
                _mm512_stream_ps(p + 16 * w, x);
            else
                _mm512_mask_storeu_ps(p + 16 * w, af_mask(bq, w), x);
        }
    }
    _mm_sfence();
}

AF_T void nn_attn_fused_fwd_block(float *out, float *lse, float *probs, const float *q,
                                  const float *k, const float *v, float *scratch, int b, int h,
                                  int i0, int T, int NH)
{
    const int C = NH * 64;
    const int bq = T - i0 < AF_BQ ? T - i0 : AF_BQ;
    float *QT = scratch, *OT = QT + AF_P, *St = OT + AF_P;
    float *mx = St + (size_t)T * AF_BQ, *sum = mx + AF_BQ, *inv = sum + AF_BQ;
    const size_t hoff = (size_t)b * T * C + (size_t)h * 64, boff = hoff + (size_t)i0 * C;
    af_pack_t(QT, q + boff, C, bq);
    /* pass 1: St = K Q^T, lane-wise max over the keys */
    __m512 vm[4], vs[4];
    for (int w = 0; w < 4; w++)
        vm[w] = _mm512_set1_ps(-INFINITY), vs[w] = _mm512_setzero_ps();
    af_k1(St, k + hoff, C, QT, T, vm);
    /* pass 2: E = exp(St - max), sums, OT = V^T E */
    memset(OT, 0, AF_P * sizeof *OT);
    af_fwd_exp_pv(OT, St, v + hoff, C, T, vm, vs);
    for (int w = 0; w < 4; w++) {
        _mm512_storeu_ps(mx + 16 * w, vm[w]);
        _mm512_storeu_ps(sum + 16 * w, vs[w]);
        _mm512_storeu_ps(inv + 16 * w, _mm512_div_ps(_mm512_set1_ps(1.0f), vs[w]));
    }
    /* out rows = (E V) / sum: normalising the (bq, 64) output, not the (bq, T) weights */
    float *ob = out + boff;
    for (int i = 0; i < bq; i++)
        for (int d = 0; d < 64; d++)
            ob[(size_t)i * C + d] = OT[d * AF_BQ + i] * inv[i];
    if (lse) {
        float *l = lse + ((size_t)b * NH + h) * T + i0;
        for (int i = 0; i < bq; i++)
            l[i] = mx[i] + logf(sum[i]);
    }
    if (probs)
        af_store_probs(probs + (((size_t)b * NH + h) * T + (size_t)i0) * T, St, inv, T, bq);
}

/* Pt (T, 64 lanes) = the probabilities of a block, recomputed from QT: exp(S - lse), or
 * with lse NULL the forward's softmax again (max, exp, times 1 / sum). */
AF_T static void af_bwd_probs(float *Pt, const float *kb, int C, const float *QT, const float *l,
                              int T, int bq)
{
    __m512 vm[4], vs[4];
    for (int w = 0; w < 4; w++)
        vm[w] = _mm512_set1_ps(-INFINITY), vs[w] = _mm512_setzero_ps();
    af_k1(Pt, kb, C, QT, T, l ? NULL : vm);
    if (l)
        for (int w = 0; w < 4; w++)
            vm[w] = _mm512_maskz_loadu_ps(af_mask(bq, w), l + 16 * w);
    for (int j = 0; j < T; j++)
        for (int w = 0; w < 4; w++) {
            float *s = Pt + (size_t)j * AF_BQ + 16 * w;
            __m512 e = af_exp(_mm512_sub_ps(_mm512_loadu_ps(s), vm[w]));
            _mm512_storeu_ps(s, e);
            vs[w] = _mm512_add_ps(vs[w], e);
        }
    if (l)
        return;
    for (int w = 0; w < 4; w++)
        vs[w] = _mm512_div_ps(_mm512_set1_ps(1.0f), vs[w]);
    for (int j = 0; j < T; j++)
        for (int w = 0; w < 4; w++) {
            float *s = Pt + (size_t)j * AF_BQ + 16 * w;
            _mm512_storeu_ps(s, _mm512_mul_ps(_mm512_loadu_ps(s), vs[w]));
        }
}

/* The key chunks of one backward block: dV += P^T dO; dP^T = V dO^T; dS = P (dP - D);
 * dQT += K^T dS; dK += dS^T Q. */
AF_T static void af_bwd_chunks(float *dQT, float *dkb, float *dvb, const float *Pt,
                               const float *dOT, float *dSt, const float *D, const float *kb,
                               const float *vb, const float *qb, const float *dob, int C, int T,
                               int bq, int want_dq, int want_dk)
{
    __m512 vd[4];
    for (int w = 0; w < 4; w++)
        vd[w] = _mm512_loadu_ps(D + 16 * w);
    for (int j0 = 0; j0 < T; j0 += AF_KC) {
        int nj = T - j0 < AF_KC ? T - j0 : AF_KC;
        const float *P = Pt + (size_t)j0 * AF_BQ;
        if (dvb)
            af_k3(dvb + (size_t)j0 * C, C, P, dob, C, bq, nj);
        if (!want_dq && !want_dk)
            continue;
        af_k1(dSt, vb + (size_t)j0 * C, C, dOT, nj, NULL);
        for (int j = 0; j < nj; j++)
            for (int w = 0; w < 4; w++) {
                float *s = dSt + (size_t)j * AF_BQ + 16 * w;
                __m512 p = _mm512_loadu_ps(P + (size_t)j * AF_BQ + 16 * w);
                _mm512_storeu_ps(s, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_loadu_ps(s), vd[w])));
            }
        if (want_dq)
            af_k2(dQT, kb + (size_t)j0 * C, C, dSt, nj, T - j0 - nj < AF_KC ? T - j0 - nj : AF_KC);
        if (want_dk)
            af_k3(dkb + (size_t)j0 * C, C, dSt, qb, C, bq, nj);
    }
}

AF_T void nn_attn_fused_bwd_head(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *probs,
                                 const float *q, const float *k, const float *v, float *scratch,
                                 int b, int h, int T, int NH)
{
    const int C = NH * 64;
    float *QT = scratch, *dOT = QT + AF_P, *dQT = dOT + AF_P, *Pt = dQT + AF_P;
    float *dSt = Pt + (size_t)T * AF_BQ, *D = dSt + (size_t)AF_KC * AF_BQ;
    const size_t hoff = (size_t)b * T * C + (size_t)h * 64;
    const float *kb = k + hoff, *vb = v + hoff;
    for (int i0 = 0; i0 < T; i0 += AF_BQ) {
        const int bq = T - i0 < AF_BQ ? T - i0 : AF_BQ;
        const size_t boff = hoff + (size_t)i0 * C;
        const float *qb = q + boff, *dob = dout + boff, *ob = out + boff, *P = Pt;
        if (probs && bq == AF_BQ) {
            P = probs + (((size_t)b * NH + h) * T + (size_t)i0) * T;
        } else if (probs) { /* the last, short block: its rows padded to 64 lanes */
            const float *pb = probs + (((size_t)b * NH + h) * T + (size_t)i0) * T;
            for (int j = 0; j < T; j++)
                for (int i = 0; i < AF_BQ; i++)
                    Pt[(size_t)j * AF_BQ + i] = i < bq ? pb[(size_t)j * bq + i] : 0.0f;
        } else {
            af_pack_t(QT, qb, C, bq);
            af_bwd_probs(Pt, kb, C, QT, lse ? lse + ((size_t)b * NH + h) * T + i0 : NULL, T, bq);
        }
        if (dq || dk) {
            af_pack_t(dOT, dob, C, bq);
            for (int i = 0; i < AF_BQ; i++) { /* D_i = sum_d dO_id O_id */
                float s = 0.0f;
                for (int d = 0; i < bq && d < 64; d++)
                    s += dob[(size_t)i * C + d] * ob[(size_t)i * C + d];
                D[i] = s;
            }
            memset(dQT, 0, AF_P * sizeof *dQT);
        }
        af_bwd_chunks(dQT, dk ? dk + hoff : NULL, dv ? dv + hoff : NULL, P, dOT, dSt, D, kb, vb, qb,
                      dob, C, T, bq, dq != NULL, dk != NULL);
        if (dq)
            for (int i = 0; i < bq; i++)
                for (int d = 0; d < 64; d++)
                    dq[boff + (size_t)i * C + d] += dQT[d * AF_BQ + i];
    }
}

#else /* not x86-64 GCC/clang: the sgemm path of nn/ops.c runs */

int nn_attn_fused_ok(int hd)
{
    (void)hd;
    return 0;
}
size_t nn_attn_fused_scratch_floats(int T)
{
    (void)T;
    return 0;
}
void nn_attn_fused_fwd_block(float *out, float *lse, float *probs, const float *q, const float *k,
                             const float *v, float *scratch, int b, int h, int i0, int T, int NH)
{
    (void)out, (void)lse, (void)probs, (void)q, (void)k, (void)v, (void)scratch;
    (void)b, (void)h, (void)i0, (void)T, (void)NH;
}
void nn_attn_fused_bwd_head(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *probs, const float *q, const float *k,
                            const float *v, float *scratch, int b, int h, int T, int NH)
{
    (void)dq, (void)dk, (void)dv, (void)dout, (void)out, (void)lse, (void)probs, (void)q;
    (void)k, (void)v, (void)scratch, (void)b, (void)h, (void)T, (void)NH;
}
#endif
