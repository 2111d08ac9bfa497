/* nn/adamw.h: the optimizer of wisp's training, exactly torch.optim.AdamW (torch 1.13,
 * _single_tensor_adamw, amsgrad off) over one flat fp32 buffer, plus global-norm
 * gradient clipping (torch.nn.utils.clip_grad_norm_) and the learning-rate schedules
 * of Hugging Face transformers (get_{constant,linear,cosine}_schedule_with_warmup).
 *
 * Per step t (1-based), for every element, in torch's order and fp32 rounding:
 *   w  = w * (1 - lr*wd)
 *   m  = m*b1 + (1-b1)*g
 *   v  = v*b2 + (1-b2)*g*g
 *   d  = sqrt(v) / sqrt(1 - b2^t) + eps
 *   w  = w - (lr / (1 - b1^t)) * m / d
 * (scalars computed in double like Python, then applied as fp32 like torch's CPU
 * kernels). */
#ifndef WISP_NN_ADAMW_H
#define WISP_NN_ADAMW_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double beta1;        /* default 0.9 */
    double beta2;        /* default 0.999 */
    double eps;          /* default 1e-8 */
    double weight_decay; /* default 0.01 (torch.optim.AdamW's default) */
} wisp_adamw_opts_t;

/* torch.optim.AdamW's defaults. */
wisp_adamw_opts_t wisp_adamw_default_opts(void);

typedef struct wisp_adamw wisp_adamw_t;

/* State for n parameters (m = v = 0, t = 0). NULL on failure. */
wisp_adamw_t *wisp_adamw_new(size_t n, const wisp_adamw_opts_t *opts);
void wisp_adamw_destroy(wisp_adamw_t **self);

/* One update of params (n) from grads (n) at learning rate lr; t += 1. Cannot fail. */
void wisp_adamw_step(wisp_adamw_t *self, float *params, const float *grads, double lr);

size_t wisp_adamw_size(const wisp_adamw_t *self);
/* Steps taken so far (torch's state["step"]). */
long wisp_adamw_steps(const wisp_adamw_t *self);
/* First and second moments (exp_avg, exp_avg_sq), n floats each, same layout as
 * the parameters; writable so checkpoints can restore them. */
float *wisp_adamw_m(wisp_adamw_t *self);
float *wisp_adamw_v(wisp_adamw_t *self);
void wisp_adamw_set_steps(wisp_adamw_t *self, long t);

/* torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2) over the buffer as a set
 * of tensors: total = ||g||_2; when max_norm > 0, g *= min(1, max_norm/(total+1e-6)).
 * Returns the total norm before clipping. `seg_sizes` (n_seg sizes summing to n)
 * gives the tensors so the norm is formed per tensor then over tensors as torch
 * does; NULL treats the buffer as one tensor. */
double wisp_adamw_clip_grad_norm(float *grads, size_t n, const size_t *seg_sizes, int n_seg,
                                 double max_norm);

/* Learning-rate schedules (transformers.optimization). */
typedef enum {
    WISP_SCHEDULE_CONSTANT = 0, /* warmup then constant */
    WISP_SCHEDULE_LINEAR,       /* warmup then linear decay to 0 at total_steps */
    WISP_SCHEDULE_COSINE,       /* warmup then half-cosine decay to 0 at total_steps */
} wisp_schedule_t;

/* "constant" | "linear" | "cosine" -> schedule; -1 when unknown. */
int wisp_adamw_schedule_parse(const char *name);
const char *wisp_adamw_schedule_name(wisp_schedule_t s);

/* Learning rate of the optimizer step that follows `step` completed steps
 * (HF's LambdaLR: base_lr * lambda(step); the first update uses step 0). */
double wisp_adamw_lr(wisp_schedule_t schedule, double base_lr, long warmup_steps, long total_steps,
                     long step);

#endif
