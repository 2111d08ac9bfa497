/* nn/pool.c: the model's compute threads (see pool.h).
 *
 * Workers sleep on a condition variable between jobs and wake on a new generation
 * number. Jobs are coarse (an attention pass over every head of a batch, GELU over
 * millions of floats), so a mutex and two condition variables cost nothing next to
 * them; no spinning, which matters on a machine shared with other processes. */
#include "nn/pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "nn/blas.h"

struct nn_pool {
    int n;                          /* threads, the caller included */
    pthread_t *th;                  /* (n - 1) workers */
    int started;                    /* workers actually started */
    pthread_mutex_t mu;             /* guards everything below */
    pthread_cond_t go;              /* a new job (gen changed) or quit */
    pthread_cond_t done;            /* pending reached 0 */
    unsigned long gen;              /* job generation */
    int pending;                    /* workers still inside the current job */
    int quit;                       /* set by nn_pool_destroy */
    void (*fn)(void *arg, int tid); /* current job */
    void *arg;
};

typedef struct {
    nn_pool_t *pool;
    int tid;
} s_worker_arg_t;

static void *s_worker(void *varg)
{
    nn_pool_t *p = ((s_worker_arg_t *)varg)->pool;
    int tid = ((s_worker_arg_t *)varg)->tid;
    free(varg);
    /* Flush subnormals here whatever the creating thread's mode: with small weights
     * (the demo's) they appear in activations and gradients and cost ~100 cycles per
     * operation; flushed, results differ only below 1.2e-38 (nn/blas.h). */
    wisp_blas_set_ftz_daz();
    /* Generation 0 is "no job yet": a job posted before this thread got here must
     * still be seen as new. */
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->gen == seen)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->quit)
            break;
        seen = p->gen;
        void (*fn)(void *, int) = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, tid);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int s_start_workers(nn_pool_t *p)
{
    p->th = calloc((size_t)p->n - 1, sizeof *p->th);
    if (!p->th)
        return -1;
    for (int t = 1; t < p->n; t++) {
        s_worker_arg_t *a = malloc(sizeof *a);
        if (!a)
            return -1;
        a->pool = p;
        a->tid = t;
        if (pthread_create(&p->th[t - 1], NULL, s_worker, a) != 0) {
            free(a);
            return -1;
        }
        p->started++;
    }
    return 0;
}

nn_pool_t *nn_pool_new(int nthreads)
{
    nn_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = nthreads < 1 ? 1 : nthreads;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->go, NULL) != 0 || pthread_cond_init(&p->done, NULL) != 0) {
        /* destroying a never-initialised cond is undefined: init both or neither */
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (p->n > 1 && s_start_workers(p) < 0)
        nn_pool_destroy(&p); /* joins the workers that did start */
    return p;
}

void nn_pool_destroy(nn_pool_t **pself)
{
    if (!pself || !*pself)
        return;
    nn_pool_t *p = *pself;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->started; t++)
        pthread_join(p->th[t], NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
    free(p);
    *pself = NULL;
}

int nn_pool_threads(const nn_pool_t *self)
{
    return self ? self->n : 1;
}

void nn_pool_run(nn_pool_t *p, void (*fn)(void *, int), void *arg)
{
    if (!p || p->n < 2) {
        fn(arg, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
