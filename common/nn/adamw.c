/* nn/adamw.c: torch.optim.AdamW, clip_grad_norm_ and HF learning-rate schedules. */
#include "nn/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

struct wisp_adamw {
    wisp_adamw_opts_t opts; /* hyper-parameters except lr */
    size_t n;               /* parameters */
    float *m;               /* (n) exp_avg */
    float *v;               /* (n) exp_avg_sq */
    long t;                 /* steps taken */
};

wisp_adamw_opts_t wisp_adamw_default_opts(void)
{
    wisp_adamw_opts_t o = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    return o;
}

wisp_adamw_t *wisp_adamw_new(size_t n, const wisp_adamw_opts_t *opts)
{
    wisp_adamw_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->opts = opts ? *opts : wisp_adamw_default_opts();
    self->n = n;
    self->m = wisp_alloc(n * sizeof(float));
    self->v = wisp_alloc(n * sizeof(float));
    if (!self->m || !self->v) {
        wisp_adamw_destroy(&self);
        return NULL;
    }
    return self;
}

void wisp_adamw_destroy(wisp_adamw_t **self)
{
    if (!self || !*self)
        return;
    wisp_free((*self)->m);
    wisp_free((*self)->v);
    free(*self);
    *self = NULL;
}

/* torch's CPU kernels take Python scalars as fp32 (opmath of float is float) and
 * its vectorised add_(x, alpha) is a fused multiply-add. */
void wisp_adamw_step(wisp_adamw_t *self, float *params, const float *grads, double lr)
{
    const wisp_adamw_opts_t *o = &self->opts;
    self->t += 1;
    double step = (double)self->t;
    double bc1 = 1.0 - pow(o->beta1, step);
    double bc2 = 1.0 - pow(o->beta2, step);
    const float decay = (float)(1.0 - lr * o->weight_decay);
    const float b1 = (float)o->beta1, one_minus_b1 = (float)(1.0 - o->beta1);
    const float b2 = (float)o->beta2, one_minus_b2 = (float)(1.0 - o->beta2);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float eps = (float)o->eps;
    const float neg_step_size = (float)(-(lr / bc1));
    float *m = self->m, *v = self->v;
    for (size_t i = 0; i < self->n; i++) {
        float g = grads[i];
        float w = params[i] * decay; /* param.mul_(1 - lr*wd) */
        /* exp_avg.mul_(b1).add_(g, alpha=1-b1), fused: the fp32 product is exact in
         * double, so one rounding of the double sum equals fmaf (bar double rounding in
         * rare ties) without a libm call per element. */
        m[i] = (float)((double)g * (double)one_minus_b1 + (double)(m[i] * b1));
        v[i] = v[i] * b2 + one_minus_b2 * g * g;      /* exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2) */
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;   /* (sqrt(v) / sqrt(bc2)).add_(eps) */
        params[i] = w + neg_step_size * m[i] / denom; /* addcdiv_: self + value*t1/t2 */
    }
}

size_t wisp_adamw_size(const wisp_adamw_t *self)
{
    return self->n;
}
long wisp_adamw_steps(const wisp_adamw_t *self)
{
    return self->t;
}
float *wisp_adamw_m(wisp_adamw_t *self)
{
    return self->m;
}
float *wisp_adamw_v(wisp_adamw_t *self)
{
    return self->v;
}
void wisp_adamw_set_steps(wisp_adamw_t *self, long t)
{
    self->t = t;
}

/* Per tensor: torch.norm in fp32 (accumulated wider, rounded to fp32); then the
 * norm of the stacked norms; clip_coef = max_norm / (total + 1e-6) in fp32. */
double wisp_adamw_clip_grad_norm(float *grads, size_t n, const size_t *seg_sizes, int n_seg,
                                 double max_norm)
{
    size_t one = n;
    if (!seg_sizes) {
        seg_sizes = &one;
        n_seg = 1;
    }
    double total_sq = 0.0;
    size_t off = 0;
    for (int s = 0; s < n_seg; s++) {
        double sq = 0.0;
        for (size_t i = 0; i < seg_sizes[s]; i++) {
            double g = grads[off + i];
            sq += g * g;
        }
        float norm = (float)sqrt(sq);
        total_sq += (double)norm * (double)norm;
        off += seg_sizes[s];
    }
    float total = (float)sqrt(total_sq);
    if (max_norm > 0.0) {
        float coef = (float)max_norm / (total + 1e-6f);
        if (coef < 1.0f)
            for (size_t i = 0; i < n; i++)
                grads[i] *= coef;
    }
    return total;
}

int wisp_adamw_schedule_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, "constant") == 0)
        return WISP_SCHEDULE_CONSTANT;
    if (strcmp(name, "linear") == 0)
        return WISP_SCHEDULE_LINEAR;
    if (strcmp(name, "cosine") == 0)
        return WISP_SCHEDULE_COSINE;
    return -1;
}

const char *wisp_adamw_schedule_name(wisp_schedule_t s)
{
    switch (s) {
    case WISP_SCHEDULE_CONSTANT: return "constant";
    case WISP_SCHEDULE_LINEAR: return "linear";
    case WISP_SCHEDULE_COSINE: return "cosine";
    }
    return "unknown";
}

/* transformers.optimization: get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup (num_cycles 0.5). */
double wisp_adamw_lr(wisp_schedule_t schedule, double base_lr, long warmup_steps, long total_steps,
                     long step)
{
    if (step < warmup_steps)
        return base_lr * (double)step / (double)(warmup_steps > 1 ? warmup_steps : 1);
    double span = (double)(total_steps - warmup_steps > 1 ? total_steps - warmup_steps : 1);
    switch (schedule) {
    case WISP_SCHEDULE_CONSTANT: return base_lr;
    case WISP_SCHEDULE_LINEAR: {
        double f = (double)(total_steps - step) / span;
        return base_lr * (f > 0.0 ? f : 0.0);
    }
    case WISP_SCHEDULE_COSINE: {
        double progress = (double)(step - warmup_steps) / span;
        double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        return base_lr * (f > 0.0 ? f : 0.0);
    }
    }
    return base_lr;
}
