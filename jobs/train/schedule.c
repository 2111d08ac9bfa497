/* schedule.c: the step schedule shared by the local and the distributed trainer
 * (see schedule.h). */
#include "train/schedule.h"

#include <stdlib.h>
#include <string.h>

#include "train/trainer.h"

int wisp_sched_init(wisp_sched_t *s, int n, int batch, long epochs, long steps, long ckpt_every,
                    uint64_t seed, wisp_error_t *err)
{
    memset(s, 0, sizeof *s);
    if (n < 1 || batch < 1)
        return wisp_error_set(err, WISP_ERR_ARG, "train: %s",
                              n < 1 ? "no training items" : "batch size < 1");
    s->n = n;
    s->batch = batch;
    s->per_epoch = (n + batch - 1) / batch;
    s->total = steps >= 0 ? steps : epochs * s->per_epoch;
    s->ckpt_every = ckpt_every;
    s->seed = seed;
    s->perm = malloc((size_t)n * sizeof *s->perm);
    if (!s->perm)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    wisp_sched_seek(s, 0, 0, 0);
    return WISP_OK;
}

void wisp_sched_free(wisp_sched_t *s)
{
    free(s->perm);
    memset(s, 0, sizeof *s);
}

void wisp_sched_seek(wisp_sched_t *s, long step, long epoch, long pos)
{
    s->step = step;
    s->epoch = epoch;
    s->pos = pos;
    s->final_issued = 0;
    wisp_trainer_epoch_order(s->seed, s->epoch, s->n, s->perm);
}

int wisp_sched_next(wisp_sched_t *s, int have_val, wisp_sched_step_t *out)
{
    memset(out, 0, sizeof *out);
    if (s->step >= s->total) {
        if (s->final_issued)
            return 0;
        s->final_issued = 1;
        out->step = s->step + 1; /* an id of its own; no optimizer step */
        out->epoch = s->epoch;
        out->pos_after = s->pos;
        out->final = 1;
        out->eval_before = have_val;
        return 1;
    }
    if (s->pos >= s->n) { /* epoch boundary: evaluate, then the next order */
        out->eval_before = have_val;
        s->epoch++;
        s->pos = 0;
        wisp_trainer_epoch_order(s->seed, s->epoch, s->n, s->perm);
    }
    int k = (int)(s->n - s->pos < s->batch ? s->n - s->pos : s->batch);
    out->ids = s->perm + s->pos;
    out->k = k;
    s->pos += k;
    s->step++;
    out->step = s->step;
    out->epoch = s->epoch;
    out->pos_after = s->pos;
    out->checkpoint = (s->ckpt_every > 0 && s->step % s->ckpt_every == 0) || s->step == s->total;
    return 1;
}
