/* ckpt.h: resumable training checkpoints.
 *
 * A checkpoint is a directory ROOT/step-NNNNNNNN holding
 *   params.safetensors  the trainable tensors by name (wisp_model_param_tensor names), F32
 *   adamw.safetensors   "exp_avg.<name>" and "exp_avg_sq.<name>" for each of them, F32
 *   state.json          step, epoch, position in the epoch, data-order seed, RNG state,
 *                       optimizer step count, run fingerprint, format version
 *   adapter/, head/     the adapter and head as exported (loadable on their own)
 * written into a temporary directory first and renamed into place, then ROOT/LATEST
 * (the directory's name) replaced atomically. Everything is fp32 bit-exact, so a
 * resumed run continues bitwise identically in one process.
 *
 * Loading validates every tensor (present, F32, shape as the model's table) and
 * every state key; errors name the file and the problem. */
#ifndef WISP_CKPT_H
#define WISP_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "nn/adamw.h"
#include "base/err.h"
#include "nn/model.h"

typedef struct {
    long step;            /* optimizer steps completed */
    long epoch;           /* epoch in progress (0-based) */
    long pos;             /* items of this epoch's order already consumed */
    uint64_t data_seed;   /* seed of the per-epoch shuffles */
    uint64_t rng_state;   /* trainer RNG state (splitmix64) */
    char fingerprint[65]; /* identity of the run configuration; resume refuses another */
} wisp_ckpt_state_t;

/* A file the caller stores with a checkpoint (the trainer's metrics lines written
 * ahead, its best-model state, the features.json of the adapter/head copies): name is
 * a plain file name, not one of the above, or "adapter/NAME" / "head/NAME" for a plain
 * NAME beside the copy the checkpoint holds (refused when it holds none). */
typedef struct {
    const char *name;
    const char *data;
    size_t len;
} wisp_ckpt_file_t;

/* Writes ROOT/step-<state->step> (with the n_files extra files), updates ROOT/LATEST,
 * then deletes older step-* directories beyond the newest `keep` (keep <= 0: keep
 * all). The checkpoint directory written is returned in out_dir when not NULL. */
int wisp_ckpt_save(const char *root, const wisp_ckpt_state_t *state, wisp_model_t *model,
                   wisp_adamw_t *opt, int keep, const wisp_ckpt_file_t *files, int n_files,
                   char *out_dir, size_t out_dir_size, wisp_error_t *err);

/* Reads extra file `name` of checkpoint directory dir (at most max bytes) into a
 * malloc'd NUL-terminated *text; WISP_ERR_NOTFOUND when the checkpoint has none. */
int wisp_ckpt_read_file(const char *dir, const char *name, size_t max, char **text, size_t *len,
                        wisp_error_t *err);

/* The newest checkpoint under ROOT (from LATEST) into dir; WISP_ERR_NOTFOUND when none. */
int wisp_ckpt_latest(const char *root, char *dir, size_t dir_size, wisp_error_t *err);

/* Restores parameters, AdamW moments and step count, and state from checkpoint
 * directory `dir` (one step-* directory). When expect_fingerprint is not NULL a
 * different stored fingerprint is WISP_ERR_STATE. On failure model and opt may be
 * partly overwritten. */
int wisp_ckpt_load(const char *dir, const char *expect_fingerprint, wisp_ckpt_state_t *state,
                   wisp_model_t *model, wisp_adamw_t *opt, wisp_error_t *err);

/* Parses a state.json text (len bytes; `where` names it in messages) into *state and
 * the optimizer step and trainable parameter counts. Every key is required and
 * range-checked; the format and version must be this build's. */
int wisp_ckpt_state_parse(const char *text, size_t len, const char *where, wisp_ckpt_state_t *state,
                          long *opt_steps, long *num_params, wisp_error_t *err);

/* rm -rf of a directory tree (symlinks are removed, never followed); 0 or -1 with errno.
 * A missing path is 0. */
int wisp_ckpt_rmtree(const char *path);

#endif
