/* nn/ops.h: the stateless fp32 kernels of the encoder, classification head and
 * their backward passes, in the llm.c manner.
 *
 * Conventions (docs/STYLE.md):
 * - Row-major. Weights are (out, in) like torch.nn.Linear. Activations are
 *   (rows, channels); a batch of B clips of T positions is B*T rows.
 * - Argument order: outputs, saved tensors, inputs, weights, then dimensions.
 * - Backward functions ACCUMULATE (+=) into gradient buffers the caller zeroed.
 *   A NULL gradient pointer means "not wanted" (frozen weight, or no input
 *   gradient needed): that product is skipped, the others are still formed.
 * - Kernels never allocate and never fail; scratch space is passed in, sized by
 *   the matching *_scratch_floats() function.
 * - Every BLAS-backed kernel has a plain-loop twin (suffix _ref) used by tests.
 */
#ifndef WISP_NN_OPS_H
#define WISP_NN_OPS_H

#include <stddef.h>

#include "nn/pool.h"

/* ---- Linear ------------------------------------------------------------- */
/* out (N, OC) = inp (N, C) @ weight^T (OC, C) + bias (OC); bias may be NULL. */
void nn_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC);
/* out (N, OC) += alpha * inp (N, C) @ weight^T (OC, C). (LoRA's B(A z) term.) */
void nn_linear_forward_add(float *out, const float *inp, const float *weight, float alpha, int N,
                           int C, int OC);
/* dinp (N, C) += dout @ weight; dweight (OC, C) += dout^T @ inp; dbias (OC) += colsum(dout).
 * dout is scaled by alpha first (1 for a plain linear, LoRA's alpha/r otherwise). */
void nn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, float alpha, int N, int C, int OC);
void nn_linear_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int C, int OC);
void nn_linear_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, float alpha, int N, int C,
                            int OC);

/* ---- LayerNorm (torch.nn.LayerNorm over the last dim, eps 1e-5) --------- */
/* mean, rstd (N) are saved for backward; either may be NULL in inference. */
void nn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C);
void nn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C);

/* ---- Elementwise activations -------------------------------------------- */
typedef enum {
    NN_ACT_IDENTITY = 0, /* "linear", "identity" */
    NN_ACT_RELU,
    NN_ACT_SILU,      /* "swish", "silu": x * sigmoid(x) */
    NN_ACT_GELU,      /* exact erf form, torch.nn.functional.gelu */
    NN_ACT_GELU_TANH, /* "gelu_new": tanh approximation */
    NN_ACT_TANH,
    NN_ACT_SIGMOID,
    NN_ACT_LEAKYRELU, /* negative slope 0.01 */
} nn_act_t;
/* Parses an adapters-library non_linearity name; returns -1 when unknown. */
int nn_act_parse(const char *name);
const char *nn_act_name(nn_act_t act);
/* out = act(inp); out may alias inp. */
void nn_act_forward(float *out, const float *inp, size_t n, nn_act_t act);
/* GELU as nn_act_forward / nn_act_backward compute it on CPUs without AVX-512 (vector erf, the same
 * bits on every x86-64 CPU); exposed so tests can hold both versions to the same accuracy. */
void nn_gelu_forward_portable(float *out, const float *inp, size_t n);
void nn_gelu_backward_portable(float *dinp, const float *dout, const float *inp, size_t n);
/* dinp += dout * act'(inp) (inp is the pre-activation). */
void nn_act_backward(float *dinp, const float *dout, const float *inp, size_t n, nn_act_t act);

/* ---- Convolution front end ---------------------------------------------- */
/* 1-D convolution, kernel 3, padding 1, stride 1 or 2, on time-major data:
 * inp (Tin, Cin), weight (Cout, Cin, 3) in torch layout, bias (Cout) ->
 * out (Tout, Cout) with Tout = (Tin - 1) / stride + 1. col is scratch of
 * nn_conv1d_k3_scratch_floats(Tout, Cin) floats (im2col + one sgemm). */
void nn_conv1d_k3_forward(float *out, float *col, const float *inp, const float *weight,
                          const float *bias, int Tin, int Cin, int Cout, int stride);
size_t nn_conv1d_k3_scratch_floats(int Tout, int Cin);
void nn_conv1d_k3_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                              int Tin, int Cin, int Cout, int stride);

/* ---- Multi-head self-attention core ------------------------------------- */
/* Softmax(q k^T) v per head, no mask, no scaling (the caller pre-scales q).
 * q, k, v, out: (B, T, C), C = NH * hd, head h in columns [h*hd, (h+1)*hd).
 * lse (B, NH, T): per-row log-sum-exp of the scores, saved for backward (may be
 * NULL in inference). Blocked over query rows so the full (T, T) matrix is never
 * needed; scratch is nn_attention_scratch_floats(T, hd) floats. probs (B, NH, T, T),
 * when not NULL, receives the probabilities for a backward that then skips their
 * recomputation (a memory-for-time trade the caller makes), laid out as
 * nn_attention_probs_index says. With hd = 64 on an AVX-512 CPU the fused kernels of
 * nn/attn_fused.h run (no sgemm); with hd = 64 on an AVX2 + FMA CPU without AVX-512 the
 * forward runs register-tiled kernels of nn/ops.c (no sgemm; probabilities row-major,
 * the backward stays on sgemm); otherwise blocks of sgemm. */
void nn_attention_forward(float *out, float *lse, float *probs, const float *q, const float *k,
                          const float *v, float *scratch, int B, int T, int NH, int hd);
/* dq, dk, dv (B, T, C) += gradients. The probabilities are read from probs when it is
 * not NULL (as the forward stored them), else recomputed from q, k and lse (or, with
 * lse NULL too, by the softmax again). */
void nn_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *probs, const float *q, const float *k,
                           const float *v, float *scratch, int B, int T, int NH, int hd);
size_t nn_attention_scratch_floats(int T, int hd);
/* Where the kept probability of query i, key j of one (clip, head) lies in probs, from
 * that pair's (T, T) slab at ((b * NH + h) * T * T): the layout is the kernels' own (with
 * hd = 64 on AVX-512, key-major blocks of 64 query rows; otherwise row-major i * T + j). */
size_t nn_attention_probs_index(int T, int hd, int i, int j);
void nn_attention_forward_ref(float *out, float *lse, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int hd);
void nn_attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *out,
                               const float *lse, const float *q, const float *k, const float *v,
                               int B, int T, int NH, int hd);

/* ---- The attention core on the model's threads (nn/pool.h) -------------- */
/* The attention core split over the pool's threads, bitwise identical to
 * nn_attention_forward / nn_attention_backward run with OpenBLAS on one thread:
 * every work unit does exactly the serial kernel's arithmetic on its own scratch.
 * Forward units are (clip, head, 128-row query block); backward units are whole
 * (clip, head) pairs, because dK and dV of a head accumulate over its query blocks
 * in order and no two threads may write the same columns. Each unit's sgemm runs
 * single-threaded: while the pool works, OpenBLAS is set to 1 thread (a process-
 * global setting, restored on return), so the pool must not be shared by threads
 * calling BLAS concurrently. scratch is nn_attention_scratch_floats_mt(T, hd, n)
 * floats for a pool of n threads. pool NULL (or 1 thread) runs the units in order
 * on the caller (OpenBLAS still on 1 thread, so the bits never depend on the
 * thread count). Never fails. */
void nn_attention_forward_mt(float *out, float *lse, float *probs, const float *q, const float *k,
                             const float *v, float *scratch, int B, int T, int NH, int hd,
                             nn_pool_t *pool);
void nn_attention_backward_mt(float *dq, float *dk, float *dv, const float *dout, const float *out,
                              const float *lse, const float *probs, const float *q, const float *k,
                              const float *v, float *scratch, int B, int T, int NH, int hd,
                              nn_pool_t *pool);
size_t nn_attention_scratch_floats_mt(int T, int hd, int nthreads);

/* Elementwise work split over the pool's threads in chunks, bitwise identical to the
 * serial functions (each element's arithmetic is the same wherever a chunk starts):
 * x = 0, nn_act_forward, nn_act_backward. Small n, or no pool, runs on the caller. */
void nn_zero_mt(float *x, size_t n, nn_pool_t *pool);
void nn_act_forward_mt(float *out, const float *inp, size_t n, nn_act_t act, nn_pool_t *pool);
void nn_act_backward_mt(float *dinp, const float *dout, const float *inp, size_t n, nn_act_t act,
                        nn_pool_t *pool);

/* ---- Head pieces -------------------------------------------------------- */
/* out (B, C) = mean over T of inp (B, T, C); backward: dinp += dout / T. */
void nn_meanpool_forward(float *out, const float *inp, int B, int T, int C);
void nn_meanpool_backward(float *dinp, const float *dout, int B, int T, int C);

/* Row softmax of (N, C); backward dinp += p * (dout - sum(dout * p)). */
void nn_softmax_forward(float *out, const float *inp, int N, int C);
void nn_softmax_backward(float *dinp, const float *dout, const float *out, int N, int C);

/* Weighted layer sum: out (n) = sum_k w[k] * hidden[k] (each n floats);
 * w = softmax(layer_weights), computed by the caller. Backward:
 * dhidden[k] += w[k] * dout (entries may be NULL), dw[k] += <dout, hidden[k]>. */
void nn_wsum_forward(float *out, const float *const *hidden, const float *w, int K, size_t n);
void nn_wsum_backward(float *const *dhidden, float *dw, const float *dout,
                      const float *const *hidden, const float *w, int K, size_t n);

/* Cross-entropy like torch.nn.functional.cross_entropy with optional class
 * weights (NULL = all 1). Writes probs (B, NC); returns the SUM over the batch of
 * w[y_b] * -log p_b[y_b] and sets *weight_sum = sum of w[y_b], so a caller forms
 * the mean over any (global) batch by dividing. A label outside [0, NC) marks an
 * ignored row (like torch's ignore_index): probs are written, no loss, no weight,
 * no gradient. */
double nn_crossentropy_forward(float *probs, double *weight_sum, const float *logits,
                               const int *labels, const float *class_weights, int B, int NC);
/* dlogits (B, NC) += scale * w[y_b] * (probs_b - onehot(y_b)); scale = 1 / global weight sum. */
void nn_crossentropy_backward(float *dlogits, const float *probs, const int *labels,
                              const float *class_weights, float scale, int B, int NC);

/* ---- Small vector helpers ----------------------------------------------- */
void nn_add(float *out, const float *a, const float *b, size_t n); /* out = a + b (may alias) */
void nn_axpy(float *y, float alpha, const float *x, size_t n);     /* y += alpha * x */
void nn_scale(float *x, float alpha, size_t n);                    /* x *= alpha */
/* Vectorised exp and erf (the ones GELU and the attention softmax use), exposed so
 * tests can check them: exp within 2 ulp of exp in double (gradual underflow below
 * -87.3, +inf above 88.72), erf within 1e-7 absolute. out may alias inp. */
void nn_exp(float *out, const float *inp, size_t n);
/* nn_exp on CPUs without AVX-512 (nn_exp runs the AVX-512 exp of the attention softmax
 * where it can); the same bounds, tested on both. */
void nn_exp_portable(float *out, const float *inp, size_t n);
void nn_erf(float *out, const float *inp, size_t n);
/* The AVX2 intrinsics twin of nn_exp_portable that nn_exp (and the sgemm-path attention
 * softmax) run on AVX2 CPUs without AVX-512 (the portable vector code compiles to scalar
 * compares there); the same bits, exposed so tests can check that. Returns 1 when it
 * ran, 0 (out untouched) on a CPU without AVX2. */
int nn_exp_avx2(float *out, const float *inp, size_t n);
/* Column scaling of (N, C) rows: out[i, j] = inp[i, j] * s[j]  (IA3; may alias). */
void nn_colscale_forward(float *out, const float *inp, const float *s, int N, int C);
/* dinp += dout * s[j]; ds[j] += sum_i dout[i, j] * inp[i, j]. Either may be NULL. */
void nn_colscale_backward(float *dinp, float *ds, const float *dout, const float *inp,
                          const float *s, int N, int C);

#endif
