/* metrics.h: the training metrics log OUTDIR/metrics.jsonl, one JSON object a line:
 *   {"type":"step","step":N,"epoch":E,"loss":x,"lr":x,"acc":x,"clips_per_s":x,
 *    "grad_norm":x,"clips":n,"failed":n}
 *   {"type":"eval","step":N,"epoch":E,"val_loss":x,"val_acc":x}
 * An eval line with step N is the evaluation of the weights after step N (it runs
 * before step N + 1, or at the end).
 *
 * Lines are never lost across an interruption: every line is also kept in a pending
 * buffer that is written into the next checkpoint (file "metrics.jsonl" of the step
 * directory, wisp_ckpt_save's extra files), and a resume from the checkpoint of
 * step S rebuilds the log as: the step lines <= S and eval lines < S already in the
 * file, plus those of the checkpoint that are missing (a process that wrote the
 * checkpoint may have died before the log saw its lines). Lines after that point
 * are redone by the resumed run, so none appears twice. */
#ifndef WISP_TRAIN_METRICS_H
#define WISP_TRAIN_METRICS_H

#include <stddef.h>
#include <stdio.h>

#include "base/err.h"
#include "train/trainer.h"

#define WISP_TRAIN_METRICS_CKPT_FILE "metrics.jsonl"
#define WISP_TRAIN_METRICS_MAX       ((size_t)1 << 30) /* bytes read back from a log */

typedef struct {
    FILE *f;       /* the log, or NULL (a worker rank keeps only the pending lines) */
    char *pending; /* lines since the last checkpoint (NUL-terminated) */
    size_t len, cap;
    int keep_tail; /* lines kept pending past a checkpoint (see _saved) */
} wisp_train_metrics_t;

/* Opens path for appending (path NULL: pending lines only). resume_step 0 without
 * ahead: an empty log. Otherwise the log is rewound to resume_step and completed
 * with the lines of `ahead` (a checkpoint's metrics file, ahead_len bytes; may be
 * NULL) as described above. */
int wisp_train_metrics_open(wisp_train_metrics_t *m, const char *path, long resume_step,
                            const char *ahead, size_t ahead_len, wisp_error_t *err);
void wisp_train_metrics_close(wisp_train_metrics_t *m);

void wisp_train_metrics_step(wisp_train_metrics_t *m, const wisp_trainer_stats_t *s, long epoch);
void wisp_train_metrics_eval(wisp_train_metrics_t *m, long step, long epoch, double val_loss,
                             double val_acc);
/* The checkpoint file of the pending lines; after a successful save call _saved, which
 * drops them but the last keep_tail. A distributed world may run a few steps (the
 * coordinator's credit) past the last one its coordinator heard of, so a worker keeps
 * 2 x (credit + 1) lines: the next checkpoint then still holds every line the log may
 * lack (the merge on resume drops the ones it already has). */
wisp_ckpt_file_t wisp_train_metrics_ckpt_file(const wisp_train_metrics_t *m);
void wisp_train_metrics_saved(wisp_train_metrics_t *m);

#endif
