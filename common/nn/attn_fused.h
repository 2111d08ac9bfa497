/* nn/attn_fused.h: the fused, cache-blocked attention core for head size 64 (every
 * Whisper size has hd = 64) on AVX-512 CPUs. Private to common/nn/ops.c, which calls it
 * through the nn_attention_* contracts of nn/ops.h and falls back to its sgemm path when
 * nn_attn_fused_ok() is false.
 *
 * Layout shared by both directions: a unit works on one block of up to NN_ATTN_FUSED_BQ
 * (64) query rows of one (clip, head), the 64 queries held as the 16 lanes of 4 vectors.
 * Scores are kept key-major, St (T keys, 64 query lanes), so the softmax's max and sum
 * over keys are lane-wise (vertical) operations and every query's arithmetic is the same
 * whichever block or lane it sits in (bitwise independent of the thread count). Kept
 * probabilities use the same key-major blocks: see nn_attention_probs_index (nn/ops.h). */
#ifndef WISP_NN_ATTN_FUSED_H
#define WISP_NN_ATTN_FUSED_H

#include <stddef.h>

#define NN_ATTN_FUSED_BQ 64

/* 1 when the fused kernels run here: hd == 64 and the CPU has AVX-512F. */
int nn_attn_fused_ok(int hd);
/* Scratch floats of one fused unit (forward or backward, the larger). */
size_t nn_attn_fused_scratch_floats(int T);
/* Forward of query rows [i0, i0 + min(64, T - i0)) of head h of clip b (nn/ops.h shapes,
 * hd = 64). lse and probs may be NULL. */
void nn_attn_fused_fwd_block(float *out, float *lse, float *probs, const float *q, const float *k,
                             const float *v, float *scratch, int b, int h, int i0, int T, int NH);
/* Backward of head h of clip b, every query block in order (dK, dV accumulate over them).
 * Any of dq, dk, dv may be NULL; lse and probs as in nn_attention_backward. */
void nn_attn_fused_bwd_head(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *probs, const float *q, const float *k,
                            const float *v, float *scratch, int b, int h, int T, int NH);

#endif
