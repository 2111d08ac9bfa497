/* nn/pool.h: a small pool of compute threads for the model's kernels.
 *
 * The caller owns the pool (the model creates one in wisp_model_new from opts.threads
 * and destroys it with the model). The calling thread is worker 0, so a pool of n
 * threads starts n - 1 pthreads; n <= 1 gives a pool that runs everything in the
 * caller. A job is one function run once by every thread; the kernels that use the
 * pool (nn_attention_*_mt, nn_*_mt in ops.h) split their work into units taken from a
 * shared counter, so which thread computes a unit never changes its bits.
 *
 * A pool is driven by one thread at a time (nn_pool_run is not reentrant). Its threads
 * run with FTZ+DAZ (subnormals flushed, nn/blas.h); the caller's mode is the caller's. */
#ifndef WISP_NN_POOL_H
#define WISP_NN_POOL_H

typedef struct nn_pool nn_pool_t;

/* NULL when a thread or the memory cannot be had. */
nn_pool_t *nn_pool_new(int nthreads);
/* Joins the threads; accepts NULL and nulls *pself. */
void nn_pool_destroy(nn_pool_t **pself);
/* Threads of the pool, the caller included (1 for NULL). */
int nn_pool_threads(const nn_pool_t *self);
/* Runs fn(arg, tid) on every thread of the pool, tid 0 on the caller, and returns when
 * all have returned. self NULL runs fn(arg, 0) on the caller alone. */
void nn_pool_run(nn_pool_t *self, void (*fn)(void *arg, int tid), void *arg);

#endif
