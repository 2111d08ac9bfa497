/* bench_dispatch: coordinator dispatch rate with the null pipeline.
 *
 * The coordinator runs in a thread; N workers (threads, each its own DEALER
 * running the real worker loop) pull shards over tcp loopback (or inproc with
 * --inproc). Workers do no work per item, so the figure is the runtime's own
 * ceiling: shards/s and items/s through leases, sends, results and the commit
 * log. Prints key=value lines.
 *   bench_dispatch [--workers N] [--items N] [--shard-size N] [--credit K] [--inproc] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int s_run(int workers, long items, int shard_size, int credit, int inproc)
{
    char dir[] = "/tmp/wisp-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char json[1024];
    snprintf(
        json, sizeof json,
        "{\"kind\":\"null\",\"output\":\"%s/out.tsv\",\"null\":{\"items\":%ld},"
        "\"cluster\":{\"endpoint\":\"%s\",\"shard_size\":%d,\"credit\":%d,\"lease_timeout\":30,"
        "\"heartbeat\":1,\"progress_interval\":1000,\"commit_interval\":1}}",
        dir, items, inproc ? "inproc://wisp-bench" : "tcp://127.0.0.1:0", shard_size, credit);
    wisp_jobcfg_t cfg;
    wisp_error_t e = {0};
    if (wisp_jobcfg_parse(&cfg, json, NULL, "bench", NULL, 0, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    void *ctx = inproc ? zmq_ctx_new() : NULL;
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
        w[i].p.zmq_ctx = ctx;
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
    printf("transport=%s workers=%d items=%ld shard_size=%d credit=%d wall_s=%.3f items_per_s=%.0f "
           "shards_per_s=%.0f status=%s\n",
           inproc ? "inproc" : "tcp", workers, items, shard_size, credit, wall,
           (double)items / wall, shards / wall, rc ? "failed" : "ok");
    wisp_coord_destroy(&c);
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
    long items = 0;
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
        else {
            fprintf(stderr, "usage: bench_dispatch [--workers N] [--items N] [--shard-size N] "
                            "[--credit K] [--inproc]\n");
            return 2;
        }
    }
    if (shard_size > 0)
        return s_run(workers, items > 0 ? items : 200000, shard_size, credit, inproc);
    /* default set: message-rate bound (1 item per shard) and typical shards */
    int rc = s_run(workers, items > 0 ? items : 20000, 1, credit, inproc);
    rc |= s_run(workers, items > 0 ? items : 400000, 64, credit, inproc);
    return rc;
}
