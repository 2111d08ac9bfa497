/* nn/qlinear.h: int8 versions of the frozen encoder linears (inference only).
 *
 * For a linear y = x W^T + b with W (OC, C) as in torch.nn.Linear:
 *   weights, once:   sw[o] = max_c |W[o,c]| / 127,  Wq[o,c] = round(W[o,c] / sw[o])
 *                    (per output channel, symmetric, s8 in [-127, 127]);
 *   input, per call: per row n (per token), [lo, hi] = [min(x[n,:], 0), max(x[n,:], 0)],
 *                    sx[n] = (hi - lo) / xmax, zx[n] = round(-lo / sx[n]),
 *                    xq[n,c] = clamp(round(x[n,c] / sx[n]) + zx[n], 0, xmax) (u8, dynamic);
 *   y[n,o] = (float)(sum_c xq[n,c] Wq[o,c] - zx[n] sum_c Wq[o,c]) * (sx[n] sw[o]) + b[o];
 *   then per clip (G rows, wisp_qlinears_set_group), with mu = the clip's mean input row:
 *   y[n,:] += mu W^T + b - mean_n y[n,:]  (the clip's mean output row becomes fp32's).
 * The last step is why W must stay valid while the set is used: a rounded weight errs
 * the same way in every token, which the head's mean over time keeps whole, while the
 * inputs' rounding averages out; correcting the mean row removes most of the logits'
 * error (see s_mean_correct).
 * The int32 sums come from oneDNN's matmul (VNNI dot products where the CPU has them);
 * they are exact, so wisp_qlinears_forward_ref (plain loops) gives the same bits.
 * xmax is 127 on every host: CPUs without VNNI (AVX2, AVX-512 before Cascade Lake)
 * multiply with vpmaddubsw, which adds each pair of u8 x s8 products in 16 bits with
 * saturation (2 * 255 * 127 > 32767), and one range everywhere keeps int8 rows the same
 * whichever host of a mixed cluster ran a clip. wisp_qlinears_new checks the sums by
 * running oneDNN on the largest codes (a wrong sum would be silent) and fails if they
 * are not exact. The
 * rounding error per product is what the user trades for speed: callers report the
 * agreement with fp32 (`wisp classify --compare-fp32 N`).
 *
 * One set holds every quantised linear of a model and the scratch they share
 * (quantised rows and int32 sums for up to max_n rows). A set is used by one thread at
 * a time; oneDNN runs its own threads (OpenMP) inside a call. */
#ifndef WISP_NN_QLINEAR_H
#define WISP_NN_QLINEAR_H

#include "base/err.h"

typedef struct wisp_qlinears wisp_qlinears_t;

/* Scratch for calls of up to max_n rows, inputs up to max_c wide, outputs up to max_oc;
 * threads: oneDNN's thread count (0: leave as is). NULL with err set on failure. */
wisp_qlinears_t *wisp_qlinears_new(int max_n, int max_c, int max_oc, int threads,
                                   wisp_error_t *err);
void wisp_qlinears_destroy(wisp_qlinears_t **pself);

/* Quantises W (OC, C) and keeps bias (OC, may be NULL) under the key W (the caller's
 * pointer, which must stay unique in the set and valid while the set is used: the mean
 * correction reads it). 0 or a negative WISP_ERR_*. */
int wisp_qlinears_add(wisp_qlinears_t *self, const float *W, const float *bias, int C, int OC,
                      wisp_error_t *err);

/* out (N, OC) = the int8 linear keyed W applied to inp (N, C), N <= max_n. Returns 0,
 * 1 when no linear has the key W (nothing written), or a negative WISP_ERR_* when oneDNN
 * fails. */
int wisp_qlinears_forward(wisp_qlinears_t *self, const float *W, float *out, const float *inp,
                          int N);
/* The same with plain loops (the tests' twin); same return values. */
int wisp_qlinears_forward_ref(wisp_qlinears_t *self, const float *W, float *out, const float *inp,
                              int N);

/* Rows per clip of the following calls (T of a (B, T, C) input; N must be a multiple
 * of it, else a call is taken as one clip). 0 (the default): every call is one clip. */
void wisp_qlinears_set_group(wisp_qlinears_t *self, int rows);

/* Linears in the set. */
int wisp_qlinears_count(const wisp_qlinears_t *self);
/* The inputs' largest code on this host: 255, or 127 where the kernels saturate. */
int wisp_qlinears_input_max(const wisp_qlinears_t *self);

#endif
