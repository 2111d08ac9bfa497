/* bench_dispatch: coordinator dispatch rate with the null pipeline.
 *
 * The coordinator runs in a thread; N workers (threads, each its own DEALER
 * running the real worker loop) pull shards over tcp loopback (or inproc with
 * --inproc). Workers do no work per item, so the figure is the runtime's own
 * ceiling: shards/s and items/s through leases, sends, results and the commit
 * log. Prints key=value lines.
 * The join run (default set, or --fd-soft L) lowers this process's soft RLIMIT_NOFILE
 * to L (1024, the usual default) before the coordinator starts and runs 1 100 workers
 * on one shared worker context, each item sleeping 5 ms so the job outlasts the joins:
 * every worker must join (the coordinator raises the soft limit to the hard one
 * itself; workers_seen, workers_refused).
 *   bench_dispatch [--workers N] [--items N] [--shard-size N] [--credit K] [--inproc]
 *                  [--fd-soft L] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <zmq.h>

#include "coordinator/coord.h"
#include "formats/jobcfg.h"
#include "base/log.h"
#include "base/util.h"
#include "worker/worker.h"

typedef struct {
    wisp_worker_params_t p;
    int rc;
    pthread_t t;
} s_worker_t;

static void *s_worker_main(void *arg)
{
    s_worker_t *w = arg;
    wisp_error_t e = {0};
    w->rc = wisp_worker_run(&w->p, NULL, &e);
    if (w->rc)
        fprintf(stderr, "worker: %s\n", e.msg);
    return NULL;
}

/* fd_soft > 0: the join run (soft descriptor limit lowered first, workers on one
 * shared context so the threads do not each bring a context's descriptors). */
static int s_run(int workers, long items, int shard_size, int credit, int inproc, long fd_soft)
{
    if (fd_soft > 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)fd_soft < rl.rlim_max) {
            rl.rlim_cur = (rlim_t)fd_soft;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    char dir[] = "/tmp/wisp-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char json[1024];
    snprintf(
        json, sizeof json,
        "{\"kind\":\"null\",\"output\":\"%s/out.tsv\",\"null\":{\"items\":%ld,\"work_ms\":%g},"
        "\"cluster\":{\"endpoint\":\"%s\",\"shard_size\":%d,\"credit\":%d,\"lease_timeout\":30,"
        "\"heartbeat\":1,\"progress_interval\":1000,\"commit_interval\":1}}",
        dir, items, fd_soft > 0 ? 5.0 : 0.0, inproc ? "inproc://wisp-bench" : "tcp://127.0.0.1:0",
        shard_size, credit);
    wisp_jobcfg_t cfg;
    wisp_error_t e = {0};
    if (wisp_jobcfg_parse(&cfg, json, NULL, "bench", NULL, 0, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    void *ctx = inproc ? zmq_ctx_new() : NULL;
    void *wctx = ctx;
    if (!inproc && fd_soft > 0) {
        wctx = zmq_ctx_new();
        zmq_ctx_set(wctx, ZMQ_MAX_SOCKETS, workers + 16);
        zmq_ctx_set(wctx, ZMQ_IO_THREADS, 2);
    }
    wisp_coord_params_t cp;
    wisp_coord_default_params(&cp);
    cp.resume = 0;
    cp.summary_out = NULL;
    cp.progress_tty = 0;
    cp.linger = 0.2;
    cp.zmq_ctx = ctx;
    wisp_coord_t *c = wisp_coord_new(&cfg, &cp, &e);
    if (!c) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    s_worker_t *w = calloc((size_t)workers, sizeof *w);
    for (int i = 0; i < workers; i++) {
        wisp_worker_default_params(&w[i].p);
        w[i].p.endpoint = wisp_coord_endpoint(c);
        w[i].p.zmq_ctx = wctx;
        w[i].p.rank = i;
        w[i].p.size = workers;
        pthread_create(&w[i].t, NULL, s_worker_main, &w[i]);
    }
    int rc = wisp_coord_run(c, &e);
    for (int i = 0; i < workers; i++)
        pthread_join(w[i].t, NULL);
    const cJSON *s = wisp_coord_summary(c);
    double shards = cJSON_GetObjectItemCaseSensitive(s, "shards")->valuedouble;
    /* the coordinator's own clock: first poll to last commit (not the final
     * output write or the linger for late workers) */
    double wall = cJSON_GetObjectItemCaseSensitive(s, "wall_s")->valuedouble;
    if (fd_soft > 0)
        printf("transport=join workers=%d fd_soft=%ld workers_seen=%.0f workers_refused=%.0f "
               "wall_s=%.3f items_per_s=%.0f status=%s\n",
               workers, fd_soft, cJSON_GetObjectItemCaseSensitive(s, "workers_seen")->valuedouble,
               cJSON_GetObjectItemCaseSensitive(s, "workers_refused")->valuedouble, wall,
               (double)items / wall, rc ? "failed" : "ok");
    else
        printf("transport=%s workers=%d items=%ld shard_size=%d credit=%d wall_s=%.3f "
               "items_per_s=%.0f shards_per_s=%.0f status=%s\n",
               inproc ? "inproc" : "tcp", workers, items, shard_size, credit, wall,
               (double)items / wall, shards / wall, rc ? "failed" : "ok");
    wisp_coord_destroy(&c);
    if (wctx && wctx != ctx)
        zmq_ctx_term(wctx);
    if (ctx)
        zmq_ctx_term(ctx);
    wisp_jobcfg_free(&cfg);
    free(w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    wisp_log_init('B', 0, WISP_LOG_WARN);
    int workers = 4, shard_size = 0, credit = 2, inproc = 0;
    long items = 0, fd_soft = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--items") && i + 1 < argc)
            items = atol(argv[++i]);
        else if (!strcmp(argv[i], "--shard-size") && i + 1 < argc)
            shard_size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--credit") && i + 1 < argc)
            credit = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--inproc"))
            inproc = 1;
        else if (!strcmp(argv[i], "--fd-soft") && i + 1 < argc)
            fd_soft = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_dispatch [--workers N] [--items N] [--shard-size N] "
                            "[--credit K] [--inproc] [--fd-soft L]\n");
            return 2;
        }
    }
    if (fd_soft > 0)
        return s_run(workers, items > 0 ? items : 200000, shard_size > 0 ? shard_size : 8, credit,
                     0, fd_soft);
    if (shard_size > 0)
        return s_run(workers, items > 0 ? items : 200000, shard_size, credit, inproc, 0);
    /* default set: message-rate bound (1 item per shard) and typical shards, then
     * 1 100 workers joining under a soft descriptor limit of 1024 */
    int rc = s_run(workers, items > 0 ? items : 20000, 1, credit, inproc, 0);
    rc |= s_run(workers, items > 0 ? items : 400000, 64, credit, inproc, 0);
    rc |= s_run(1100, 400000, 8, credit, 0, 1024);
    return rc;
}
