/* schedule.h: the step schedule of a training run, one copy for `wisp train` (the
 * local loop in trainer.c) and the distributed train job's coordinator (job_train.c),
 * so both issue the same batches, evaluations and checkpoints in the same order.
 *
 * A run of `total` steps walks the training items epoch by epoch, each epoch in the
 * order wisp_trainer_epoch_order(seed, epoch); a step takes the next `batch` items of
 * the epoch (the last step of an epoch takes what is left). Before the first step of
 * an epoch after the first, the validation set is evaluated (eval_before). A
 * checkpoint follows every ckpt_every-th step and the last one. After the last step
 * one more entry, final, carries no items: the final evaluation and the outputs.
 * Skipped steps (a batch with no usable clip) still count: the schedule never waits
 * for a batch, so a run over unreadable data ends. */
#ifndef WISP_TRAIN_SCHEDULE_H
#define WISP_TRAIN_SCHEDULE_H

#include <stdint.h>

#include "base/err.h"

typedef struct {
    int n;           /* training items, >= 1 */
    int batch;       /* items per step, >= 1 */
    long total;      /* steps of the whole run, >= 0 */
    long per_epoch;  /* steps per epoch: ceil(n / batch) */
    long ckpt_every; /* checkpoint after every this-many steps; <= 0: only after the last */
    uint64_t seed;   /* data order */
    /* Position after the last issued step (a checkpoint's step, epoch, item). */
    long step, epoch, pos;
    int final_issued;
    int *perm; /* (n) order of the current epoch */
} wisp_sched_t;

typedef struct {
    long step;      /* 1-based step number; total + 1 for the final entry */
    long epoch;     /* epoch of the step's items */
    const int *ids; /* k indices into the training items (NULL for the final entry) */
    int k;
    long pos_after;  /* item position in the epoch after this step */
    int eval_before; /* evaluate the validation set before this step */
    int checkpoint;  /* checkpoint after this step */
    int final;       /* no training: final evaluation, then the outputs */
} wisp_sched_step_t;

/* steps >= 0: that many steps; otherwise epochs * per_epoch. Fails with WISP_ERR_ARG
 * for n < 1 or batch < 1, WISP_ERR_NOMEM. */
int wisp_sched_init(wisp_sched_t *s, int n, int batch, long epochs, long steps, long ckpt_every,
                    uint64_t seed, wisp_error_t *err);
void wisp_sched_free(wisp_sched_t *s);
/* Continues after a checkpoint of (step, epoch, pos); the caller range-checks them. */
void wisp_sched_seek(wisp_sched_t *s, long step, long epoch, long pos);
/* The next entry: 1 when one was filled in, 0 when the run is over (after final). */
int wisp_sched_next(wisp_sched_t *s, int have_val, wisp_sched_step_t *out);

#endif
