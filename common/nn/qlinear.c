/* nn/qlinear.c: int8 frozen linears on oneDNN's matmul (see qlinear.h).
 *
 * oneDNN computes dst (N, OC) s32 = src (N, C) s8 x weights (C, OC) s8. The weights'
 * logical (C, OC) matrix is the caller's Wq (OC, C) read with strides (1, C); it is
 * reordered once into the layout the primitive asks for. N is a run-time dimension,
 * so one primitive serves every batch and clip length. Quantising the rows and the
 * fp32 epilogue (scales, bias) are done here, so both paths share them and differ only
 * in who sums the integers. */
#include "nn/qlinear.h"

#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "nn/simd.h"

/* libgomp is loaded with oneDNN (its OpenMP runtime); weak so a build without it links. */
extern void omp_set_num_threads(int n) __attribute__((weak));

typedef struct {
    const float *key; /* the caller's fp32 weight pointer */
    int C, OC;
    float *sw;           /* (OC) weight scales */
    int32_t *wsum;       /* (OC) sum_c Wq[o,c], for the inputs' zero points */
    float *bias;         /* (OC) copy, or NULL */
    int8_t *wq;          /* (OC, C) for the loop twin */
    dnnl_memory_t wmem;  /* weights in the primitive's layout */
    dnnl_primitive_t mm; /* the matmul */
} s_qlin_t;

struct wisp_qlinears {
    int max_n, max_c, max_oc;
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    s_qlin_t *lin;
    int n, cap;
    uint8_t *xq;  /* (max_n, max_c) quantised rows */
    float *sx;    /* (max_n) row scales */
    int32_t *zx;  /* (max_n) row zero points */
    int32_t *acc; /* (max_n, max_oc) integer sums */
    float *mu;    /* (max_c) a clip's mean input row (s_mean_correct) */
    float *corr;  /* (max_oc) its correction */
    int group;    /* rows per clip (wisp_qlinears_set_group); 0: a call is one clip */
    int xmax;     /* largest input code: 127 on every host (s_choose_range) */
};

static int s_choose_range(wisp_qlinears_t *q, wisp_error_t *err);

static int s_dnnl_fail(wisp_error_t *err, const char *what, dnnl_status_t st)
{
    return wisp_error_set(err, WISP_ERR_UNSUPPORTED, "int8 linears: oneDNN %s failed (status %d)",
                          what, (int)st);
}

wisp_qlinears_t *wisp_qlinears_new(int max_n, int max_c, int max_oc, int threads, wisp_error_t *err)
{
    if (max_n < 1 || max_c < 1 || max_oc < 1 || (size_t)max_n > SIZE_MAX / 4 / (size_t)max_oc ||
        (size_t)max_n > SIZE_MAX / (size_t)max_c) {
        wisp_error_set(err, WISP_ERR_ARG, "int8 linears: bad sizes %d x %d / %d", max_n, max_c,
                       max_oc);
        return NULL;
    }
    wisp_qlinears_t *q = calloc(1, sizeof *q);
    if (!q) {
        wisp_error_set(err, WISP_ERR_NOMEM, "int8 linears: out of memory");
        return NULL;
    }
    q->max_n = max_n, q->max_c = max_c, q->max_oc = max_oc;
    dnnl_status_t st = dnnl_engine_create(&q->eng, dnnl_cpu, 0);
    if (st == dnnl_success)
        st = dnnl_stream_create(&q->stream, q->eng, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        s_dnnl_fail(err, "engine", st);
        wisp_qlinears_destroy(&q);
        return NULL;
    }
    q->xq = wisp_alloc((size_t)max_n * max_c);
    q->sx = wisp_alloc((size_t)max_n * sizeof *q->sx);
    q->zx = wisp_alloc((size_t)max_n * sizeof *q->zx);
    q->acc = wisp_alloc((size_t)max_n * max_oc * sizeof *q->acc);
    q->mu = wisp_alloc((size_t)max_c * sizeof *q->mu);
    q->corr = wisp_alloc((size_t)max_oc * sizeof *q->corr);
    if (!q->xq || !q->sx || !q->zx || !q->acc || !q->mu || !q->corr) {
        wisp_error_set(err, WISP_ERR_NOMEM, "int8 linears: out of memory (%d rows)", max_n);
        wisp_qlinears_destroy(&q);
        return NULL;
    }
    if (threads > 0 && omp_set_num_threads)
        omp_set_num_threads(threads);
    if (s_choose_range(q, err) < 0) {
        wisp_qlinears_destroy(&q);
        return NULL;
    }
    return q;
}

void wisp_qlinears_destroy(wisp_qlinears_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_qlinears_t *q = *pself;
    for (int i = 0; i < q->n; i++) {
        s_qlin_t *l = &q->lin[i];
        if (l->mm)
            dnnl_primitive_destroy(l->mm);
        if (l->wmem)
            dnnl_memory_destroy(l->wmem);
        free(l->sw), free(l->wsum), free(l->bias), free(l->wq);
    }
    free(q->lin);
    if (q->stream)
        dnnl_stream_destroy(q->stream);
    if (q->eng)
        dnnl_engine_destroy(q->eng);
    wisp_free(q->xq), wisp_free(q->sx), wisp_free(q->zx), wisp_free(q->acc);
    wisp_free(q->mu), wisp_free(q->corr);
    free(q);
    *pself = NULL;
}

int wisp_qlinears_count(const wisp_qlinears_t *self)
{
    return self ? self->n : 0;
}

int wisp_qlinears_input_max(const wisp_qlinears_t *self)
{
    return self ? self->xmax : 0;
}

/* Symmetric per-row quantisation of the weights W (rows, C): s = row max / 127 (0 for an
 * all-zero row, whose products are then 0), q = round(W / s) in [-127, 127]; sum = the
 * row sum of q. Once per linear. */
static void s_quantise_weights(int8_t *wq, float *s, int32_t *sum, const float *W, int rows, int C)
{
    const float fq = 127.0f;
    for (int n = 0; n < rows; n++) {
        const float *r = W + (size_t)n * C;
        float m = 0;
        for (int c = 0; c < C; c++)
            m = fmaxf(m, fabsf(r[c]));
        s[n] = m / fq;
        float inv = m > 0 ? fq / m : 0.0f;
        int8_t *o = wq + (size_t)n * C;
        int32_t t = 0;
        for (int c = 0; c < C; c++) {
            float v = nearbyintf(r[c] * inv);
            o[c] = (int8_t)(v > fq ? fq : v < -fq ? -fq : v);
            t += o[c];
        }
        sum[n] = t;
    }
}

/* Asymmetric per-row quantisation of the inputs x (rows, C) to u8, the operand VNNI
 * multiplies natively: [lo, hi] = [min(row, 0), max(row, 0)] (so 0 is exact),
 * s = (hi - lo) / xmax, z = round(-lo / s), q = clamp(round(x / s) + z, 0, xmax), and
 * x ~ s (q - z), xmax = 127 (s_choose_range). An asymmetric range keeps
 * the resolution of one-sided rows (the fc2 input is a GELU output, >= -0.17). Rounding
 * adds and subtracts 1.5 * 2^23 (round-to-nearest-even in the default mode,
 * |x / s| <= 255): the same in every clone. */
S_CLONES static void s_quantise_rows(uint8_t *xq, float *s, int32_t *z, const float *x, int rows,
                                     int C, int xmax)
{
    const float magic = 12582912.0f, fx = (float)xmax;
    const int full = C / S_VW * S_VW;
    for (int n = 0; n < rows; n++) {
        const float *r = x + (size_t)n * C;
        s_vf vlo = s_vsplat(0), vhi = s_vsplat(0);
        for (int c = 0; c < full; c += S_VW) {
            s_vf v = s_vld(r + c);
            vlo = s_vsel(v < vlo, v, vlo);
            vhi = s_vsel(v > vhi, v, vhi);
        }
        float lo = 0, hi = 0;
        for (int i = 0; i < S_VW; i++) {
            lo = vlo[i] < lo ? vlo[i] : lo;
            hi = vhi[i] > hi ? vhi[i] : hi;
        }
        for (int c = full; c < C; c++) {
            lo = r[c] < lo ? r[c] : lo;
            hi = r[c] > hi ? r[c] : hi;
        }
        float sc = (hi - lo) / fx, inv = sc > 0 ? 1.0f / sc : 0.0f;
        float zf = (-lo * inv + magic) - magic;
        zf = zf > fx ? fx : zf;
        s[n] = sc;
        z[n] = (int32_t)zf;
        uint8_t *o = xq + (size_t)n * C;
        const s_vf vinv = s_vsplat(inv), vz = s_vsplat(zf), vm = s_vsplat(magic);
        const s_vf v0 = s_vsplat(0), vmax = s_vsplat(fx);
        for (int c = 0; c < full; c += S_VW) {
            s_vf q = ((s_vld(r + c) * vinv + vm) - vm) + vz;
            q = s_vsel(q < v0, v0, q);
            q = s_vsel(q > vmax, vmax, q);
            s_vi qi = __builtin_convertvector(q, s_vi);
            for (int i = 0; i < S_VW; i++)
                o[c + i] = (uint8_t)qi[i];
        }
        for (int c = full; c < C; c++) {
            float q = ((r[c] * inv + magic) - magic) + zf;
            o[c] = (uint8_t)(q < 0 ? 0 : q > fx ? fx : q);
        }
    }
}

static dnnl_status_t s_exec(wisp_qlinears_t *q, const s_qlin_t *l, uint8_t *xq, int32_t *acc,
                            int N);

/* The matmul primitive for l and its weights in the layout it wants. */
static int s_build(wisp_qlinears_t *q, s_qlin_t *l, wisp_error_t *err)
{
    dnnl_memory_desc_t src, wuser, wany, dst;
    dnnl_dims_t sd = {DNNL_RUNTIME_DIM_VAL, l->C}, wd = {l->C, l->OC},
                dd = {DNNL_RUNTIME_DIM_VAL, l->OC};
    dnnl_dims_t ss = {l->C, 1}, ws = {1, l->C}, ds = {l->OC, 1};
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t wsrc = NULL;
    dnnl_matmul_desc_t md;
    const char *what = "matmul descriptor";
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(&src, 2, sd, dnnl_u8, ss);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_strides(&wuser, 2, wd, dnnl_s8, ws);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_tag(&wany, 2, wd, dnnl_s8, dnnl_format_tag_any);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_strides(&dst, 2, dd, dnnl_s32, ds);
    if (st == dnnl_success)
        st = dnnl_matmul_desc_init(&md, &src, &wany, NULL, &dst);
    if (st == dnnl_success && (what = "matmul", 1))
        st = dnnl_primitive_desc_create(&pd, &md, NULL, q->eng, NULL);
    if (st == dnnl_success)
        st = dnnl_primitive_create(&l->mm, pd);
    const dnnl_memory_desc_t *wmd =
        st == dnnl_success ? dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0) : NULL;
    if (st == dnnl_success && (what = "weight reorder", 1))
        st = dnnl_memory_create(&wsrc, &wuser, q->eng, l->wq);
    if (st == dnnl_success)
        st = dnnl_memory_create(&l->wmem, wmd, q->eng, DNNL_MEMORY_ALLOCATE);
    if (st == dnnl_success)
        st = dnnl_reorder_primitive_desc_create(&rpd, &wuser, q->eng, wmd, q->eng, NULL);
    if (st == dnnl_success)
        st = dnnl_primitive_create(&reorder, rpd);
    if (st == dnnl_success) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, wsrc}, {DNNL_ARG_TO, l->wmem}};
        st = dnnl_primitive_execute(reorder, q->stream, 2, a);
        if (st == dnnl_success)
            st = dnnl_stream_wait(q->stream);
    }
    if (reorder)
        dnnl_primitive_destroy(reorder);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (wsrc)
        dnnl_memory_destroy(wsrc);
    return st == dnnl_success ? 0 : s_dnnl_fail(err, what, st);
}

/* Whether oneDNN's sums are exact with input codes up to xmax: inputs xmax against
 * weights +-127, the largest sums the quantisers make, for one row and for a block of
 * rows (different kernels). Without VNNI, oneDNN multiplies u8 x s8 with vpmaddubsw,
 * which adds each pair of products in 16 bits with saturation: 2 * 255 * 127 = 64770
 * does not fit, 2 * 127 * 127 = 32258 does. 1 exact, 0 not, negative on failure. */
static int s_probe_exact(wisp_qlinears_t *q, int xmax, wisp_error_t *err)
{
    enum { PN = 32, PC = 128, POC = 32 };
    s_qlin_t t = {.C = PC, .OC = POC};
    uint8_t *xq = malloc((size_t)PN * PC);
    int32_t *acc = malloc((size_t)PN * POC * sizeof *acc);
    t.wq = malloc((size_t)POC * PC);
    int rc =
        xq && acc && t.wq ? 0 : wisp_error_set(err, WISP_ERR_NOMEM, "int8 linears: out of memory");
    if (rc == 0) {
        memset(xq, xmax, (size_t)PN * PC);
        for (int o = 0; o < POC; o++) /* channel o: +127, -127, or alternating in pairs */
            for (int c = 0; c < PC; c++)
                t.wq[o * PC + c] = (int8_t)(o % 3 == 0   ? 127
                                            : o % 3 == 1 ? -127
                                            : (c & 2)    ? 127
                                                         : -127);
        rc = s_build(q, &t, err);
    }
    for (int N = 1; rc == 0 && N <= PN; N += PN - 1) {
        if (s_exec(q, &t, xq, acc, N) != dnnl_success) {
            rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED, "int8 linears: oneDNN matmul failed");
            break;
        }
        for (int i = 0; i < N * POC && rc == 0; i++) {
            int o = i % POC;
            int32_t want = o % 3 == 2 ? 0 : xmax * PC * (o % 3 ? -127 : 127);
            rc = acc[i] == want ? 0 : 1;
        }
    }
    if (t.mm)
        dnnl_primitive_destroy(t.mm);
    if (t.wmem)
        dnnl_memory_destroy(t.wmem);
    free(xq), free(acc), free(t.wq);
    return rc < 0 ? rc : rc == 0;
}

/* Inputs are quantised to 7 bits (0..127) on every host. CPUs without VNNI (AVX2, AVX-512
 * before Cascade Lake) add pairs of u8 x s8 products in 16 bits with saturation
 * (2 * 255 * 127 > 32767), so 8-bit inputs would be summed wrongly there; with 8 bits on
 * VNNI hosts only, a mixed cluster (or a resume on another host) would label near-ties
 * differently depending on where a clip ran. One range everywhere keeps the int32 sums,
 * and so the rows, the same on every host. The inputs lose the bit rather than the
 * weights: a weight's rounding error is the same for every token and survives the head's
 * mean over time, an input's is independent per token and averages out (whisper-base,
 * 100 clips: 7-bit inputs 0.0133 logits relative RMS against 0.0131 with 8 bits, 7-bit
 * weights 0.034). The probe makes a wrong sum loud instead of silent; whether 8-bit sums
 * are exact tells whether the CPU has VNNI, which decides the speed note. */
static int s_choose_range(wisp_qlinears_t *q, wisp_error_t *err)
{
    int rc = s_probe_exact(q, 127, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "int8 linears: oneDNN's int8 matmul is not exact on this CPU; use "
                              "precision fp32");
    q->xmax = 127;
    rc = s_probe_exact(q, 255, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        WISP_LOGW("int8 linears: this CPU has no VNNI (oneDNN's int8 kernels add pairs of "
                  "products in 16 bits): expect about fp32 speed (bench_int8 on AMD Zen 3: 1.00x)");
    return 0;
}

int wisp_qlinears_add(wisp_qlinears_t *self, const float *W, const float *bias, int C, int OC,
                      wisp_error_t *err)
{
    if (!W || C < 1 || OC < 1 || C > self->max_c || OC > self->max_oc)
        return wisp_error_set(err, WISP_ERR_ARG, "int8 linears: a %d x %d linear exceeds %d x %d",
                              OC, C, self->max_oc, self->max_c);
    if (self->n == self->cap) {
        int cap = self->cap ? 2 * self->cap : 16;
        s_qlin_t *nl = realloc(self->lin, (size_t)cap * sizeof *nl);
        if (!nl)
            return wisp_error_set(err, WISP_ERR_NOMEM, "int8 linears: out of memory");
        self->lin = nl, self->cap = cap;
    }
    s_qlin_t *l = &self->lin[self->n];
    memset(l, 0, sizeof *l);
    l->key = W, l->C = C, l->OC = OC;
    l->sw = malloc((size_t)OC * sizeof *l->sw);
    l->wsum = malloc((size_t)OC * sizeof *l->wsum);
    l->wq = malloc((size_t)OC * C);
    l->bias = bias ? malloc((size_t)OC * sizeof *l->bias) : NULL;
    int rc = 0;
    if (!l->sw || !l->wsum || !l->wq || (bias && !l->bias))
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "int8 linears: out of memory");
    if (rc == 0) {
        /* per output channel = row */
        s_quantise_weights(l->wq, l->sw, l->wsum, W, OC, C);
        if (bias)
            memcpy(l->bias, bias, (size_t)OC * sizeof *bias);
        rc = s_build(self, l, err);
    }
    self->n++; /* counted either way, so destroy frees what was made */
    if (rc < 0)
        return rc;
    return 0;
}

/* Rows per clip for a call of N rows (the whole call unless the group divides it). */
static int s_group(const wisp_qlinears_t *q, int N)
{
    return q->group > 0 && N % q->group == 0 ? q->group : N;
}

void wisp_qlinears_set_group(wisp_qlinears_t *self, int rows)
{
    if (self)
        self->group = rows > 0 ? rows : 0;
}

static s_qlin_t *s_find(wisp_qlinears_t *self, const float *W)
{
    for (int i = 0; i < self->n; i++)
        if (self->lin[i].key == W && self->lin[i].mm)
            return &self->lin[i];
    return NULL;
}

/* out[n,o] = (acc[n,o] - zx[n] wsum[o]) * (sx[n] sw[o]) + b[o], shared by both paths
 * (the integer part is exact: |zx wsum| <= 255 * 127 * C). */
S_CLONES static void s_epilogue(float *out, const int32_t *acc, const float *sx, const int32_t *zx,
                                const s_qlin_t *l, int N)
{
    const int OC = l->OC, full = OC / S_VW * S_VW;
    for (int n = 0; n < N; n++) {
        const int32_t *a = acc + (size_t)n * OC;
        float *o = out + (size_t)n * OC;
        const s_vi vz = (s_vi){0} + zx[n];
        const s_vf vs = s_vsplat(sx[n]);
        for (int c = 0; c < full; c += S_VW) {
            s_vi ai, wi;
            memcpy(&ai, a + c, sizeof ai);
            memcpy(&wi, l->wsum + c, sizeof wi);
            s_vf b = l->bias ? s_vld(l->bias + c) : s_vsplat(0);
            s_vf v = __builtin_convertvector(ai - vz * wi, s_vf);
            s_vst(o + c, v * (vs * s_vld(l->sw + c)) + b);
        }
        for (int c = full; c < OC; c++)
            o[c] = (float)(a[c] - zx[n] * l->wsum[c]) * (sx[n] * l->sw[c]) +
                   (l->bias ? l->bias[c] : 0.0f);
    }
}

/* Mean correction, per clip (each block of G rows): out += mu W^T + b - mean_n out[n,:],
 * mu = the clip's mean input row. Afterwards the clip's mean output row is the fp32
 * linear's (up to fp32 rounding), and only the deviations from it carry quantisation
 * error. Why: a weight's rounding error is the same in every token, so the head's mean
 * over time keeps it whole (an input's is independent per token and averages out); the
 * mean row takes it out of the mean over time, at the cost of one fp32 row per clip
 * (C x OC, against the G x C x OC of the product). Plain loops in a fixed order, shared
 * by both paths, so the twins still give the same bits. */
S_CLONES static void s_mean_correct(float *out, const float *inp, const s_qlin_t *l, float *mu,
                                    float *corr, int N, int G)
{
    const int C = l->C, OC = l->OC, fc = C / S_VW * S_VW, fo = OC / S_VW * S_VW;
    for (int g0 = 0; g0 < N; g0 += G) {
        const float inv = 1.0f / (float)G;
        memset(mu, 0, (size_t)C * sizeof *mu);
        memset(corr, 0, (size_t)OC * sizeof *corr);
        for (int n = g0; n < g0 + G; n++) {
            const float *x = inp + (size_t)n * C, *y = out + (size_t)n * OC;
            for (int c = 0; c < C; c++)
                mu[c] += x[c];
            for (int o = 0; o < OC; o++)
                corr[o] -= y[o];
        }
        for (int c = 0; c < C; c++)
            mu[c] *= inv;
        for (int o = 0; o < OC; o++) {
            const float *w = l->key + (size_t)o * C;
            s_vf acc = s_vsplat(0);
            for (int c = 0; c < fc; c += S_VW)
                acc += s_vld(w + c) * s_vld(mu + c);
            float d = 0;
            for (int i = 0; i < S_VW; i++)
                d += acc[i];
            for (int c = fc; c < C; c++)
                d += w[c] * mu[c];
            corr[o] = corr[o] * inv + d + (l->bias ? l->bias[o] : 0.0f);
        }
        for (int n = g0; n < g0 + G; n++) {
            float *y = out + (size_t)n * OC;
            for (int o = 0; o < fo; o += S_VW)
                s_vst(y + o, s_vld(y + o) + s_vld(corr + o));
            for (int o = fo; o < OC; o++)
                y[o] += corr[o];
        }
    }
}

/* acc (N, OC) = xq (N, C) x Wq^T on oneDNN (the integer part of the linear l). */
static dnnl_status_t s_exec(wisp_qlinears_t *q, const s_qlin_t *l, uint8_t *xq, int32_t *acc, int N)
{
    dnnl_memory_desc_t smd, dmd;
    dnnl_dims_t sd = {N, l->C}, dd = {N, l->OC}, ss = {l->C, 1}, ds = {l->OC, 1};
    dnnl_memory_t sm = NULL, dm = NULL;
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(&smd, 2, sd, dnnl_u8, ss);
    if (st == dnnl_success)
        st = dnnl_memory_desc_init_by_strides(&dmd, 2, dd, dnnl_s32, ds);
    if (st == dnnl_success)
        st = dnnl_memory_create(&sm, &smd, q->eng, xq);
    if (st == dnnl_success)
        st = dnnl_memory_create(&dm, &dmd, q->eng, acc);
    if (st == dnnl_success) {
        dnnl_exec_arg_t a[3] = {
            {DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, l->wmem}, {DNNL_ARG_DST, dm}};
        st = dnnl_primitive_execute(l->mm, q->stream, 3, a);
        if (st == dnnl_success)
            st = dnnl_stream_wait(q->stream);
    }
    if (sm)
        dnnl_memory_destroy(sm);
    if (dm)
        dnnl_memory_destroy(dm);
    return st;
}

int wisp_qlinears_forward(wisp_qlinears_t *self, const float *W, float *out, const float *inp,
                          int N)
{
    s_qlin_t *l = s_find(self, W);
    if (!l)
        return 1;
    if (N < 1 || N > self->max_n)
        return WISP_ERR_ARG;
    s_quantise_rows(self->xq, self->sx, self->zx, inp, N, l->C, self->xmax);
    if (s_exec(self, l, self->xq, self->acc, N) != dnnl_success)
        return WISP_ERR_UNSUPPORTED;
    s_epilogue(out, self->acc, self->sx, self->zx, l, N);
    s_mean_correct(out, inp, l, self->mu, self->corr, N, s_group(self, N));
    return 0;
}

int wisp_qlinears_forward_ref(wisp_qlinears_t *self, const float *W, float *out, const float *inp,
                              int N)
{
    s_qlin_t *l = s_find(self, W);
    if (!l)
        return 1;
    if (N < 1 || N > self->max_n)
        return WISP_ERR_ARG;
    s_quantise_rows(self->xq, self->sx, self->zx, inp, N, l->C, self->xmax);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < l->OC; o++) {
            int32_t s = 0;
            for (int c = 0; c < l->C; c++)
                s += (int32_t)self->xq[(size_t)n * l->C + c] * l->wq[(size_t)o * l->C + c];
            self->acc[(size_t)n * l->OC + o] = s;
        }
    s_epilogue(out, self->acc, self->sx, self->zx, l, N);
    s_mean_correct(out, inp, l, self->mu, self->corr, N, s_group(self, N));
    return 0;
}
