/* bench_scale: how the coordinator grows with the item count (issue 13's scale
 * figures), at 10^6 and 10^7 items, each size in a fresh process:
 *   - null job (the dispatch core): coordinator start-up (wisp_coord_new: plan, shard
 *     cut, lease table, bind), resident memory per item after start-up, dispatch rate
 *     with 4 worker threads over tcp loopback (shards of 256), and the resume: a run
 *     stopped at half, then the start-up of the rerun that replays its journal;
 *   - classify's coordinator side: a manifest of ~60-byte paths loaded (time, bytes
 *     per item after the load and at its peak) and the results writer's journal
 *     replay after a crash at half (error rows: status and message only, as the
 *     unreadable files of a large corpus give).
 * The growth exponent of each time or memory is log10(x(10^7) / x(10^6)) (1 = linear).
 * Prints key=value lines. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "coordinator/coord.h"
#include "coordinator/lease.h"
#include "formats/h5util.h"
#include "formats/jobcfg.h"
#include "formats/manifest.h"
#include "formats/results.h"
#include "worker/worker.h"

#define S_WORKERS 4

static long s_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    if (f)
        fclose(f);
    return v;
}

static double s_cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void s_reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

typedef struct {
    wisp_worker_params_t p;
    pthread_t t;
} s_worker_t;

static void *s_worker_main(void *arg)
{
    s_worker_t *w = arg;
    wisp_error_t e = {0};
    wisp_worker_run(&w->p, NULL, &e);
    return NULL;
}

typedef struct {
    wisp_coord_t *c;
    int rc;
    pthread_t t;
} s_coord_t;

static void *s_coord_main(void *arg)
{
    s_coord_t *c = arg;
    wisp_error_t e = {0};
    c->rc = wisp_coord_run(c->c, &e);
    return NULL;
}

static double s_num(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* One null run: start-up, memory, dispatch; stop_at > 0 stops it once that many items
 * are done (polled from the summary-free counter: a time estimate is enough). */
static int s_null(const char *dir, long items, int resume, double stop_frac, double *startup,
                  double *kb_per_item, double *rate, double *done_frac)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"kind\":\"null\",\"output\":\"%s/out.tsv\",\"null\":{\"items\":%ld,"
             "\"fail_every\":1000},\"cluster\":{\"endpoint\":\"tcp://127.0.0.1:0\","
             "\"shard_size\":256,\"shard_seconds\":1e9,\"credit\":2,\"lease_timeout\":30,"
             "\"heartbeat\":1,\"progress_interval\":1000,\"commit_interval\":1}}",
             dir, items);
    wisp_jobcfg_t cfg;
    wisp_error_t e = {0};
    if (wisp_jobcfg_parse(&cfg, json, NULL, "bench", NULL, 0, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    wisp_coord_params_t cp;
    wisp_coord_default_params(&cp);
    cp.resume = resume;
    cp.summary_out = NULL;
    cp.progress_tty = 0;
    cp.linger = 0.2;
    long rss0 = s_status_kb("VmRSS");
    double t0 = wisp_now();
    s_coord_t c = {wisp_coord_new(&cfg, &cp, &e), 0, 0};
    *startup = wisp_now() - t0;
    if (!c.c) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    *kb_per_item = (double)(s_status_kb("VmRSS") - rss0) / (double)items;
    pthread_create(&c.t, NULL, s_coord_main, &c);
    s_worker_t w[S_WORKERS];
    for (int i = 0; i < S_WORKERS; i++) {
        wisp_worker_default_params(&w[i].p);
        w[i].p.endpoint = wisp_coord_endpoint(c.c);
        w[i].p.rank = i;
        w[i].p.size = S_WORKERS;
        pthread_create(&w[i].t, NULL, s_worker_main, &w[i]);
    }
    if (stop_frac > 0) {
        /* the rate of a full run is ~1-2 M items/s: stop after the time for stop_frac */
        usleep((useconds_t)(1e6 * stop_frac * (double)items / 1.5e6));
        wisp_coord_request_stop(c.c);
    }
    pthread_join(c.t, NULL);
    for (int i = 0; i < S_WORKERS; i++)
        pthread_join(w[i].t, NULL);
    const cJSON *s = wisp_coord_summary(c.c);
    double wall = s_num(s, "wall_s");
    *rate = wall > 0 ? s_num(s, "items_this_run") / wall : 0;
    *done_frac = s_num(s, "items_done") / (double)items;
    wisp_coord_destroy(&c.c);
    wisp_jobcfg_free(&cfg);
    return 0;
}

/* Results writer: n rows, crash after half (commit + destroy), then the reopen. */
static double s_results_resume(const char *dir, size_t n)
{
    const char *cls[2] = {"a", "b"};
    char path[512];
    snprintf(path, sizeof path, "%s/r.h5", dir);
    wisp_results_opts_t o = wisp_results_default_opts();
    o.path = path;
    o.n_rows = n;
    o.n_classes = 2;
    o.classes = cls;
    o.fingerprint = "bench-scale";
    o.max_pending_rows = 1 << 16;
    wisp_error_t e = {0};
    wisp_results_t *r = wisp_results_open(&o, &e);
    if (!r)
        return -1;
    char p[96], msg[192];
    for (size_t i = 0; i < n / 2; i++) {
        snprintf(p, sizeof p, "/data/corpus/spk%03zu/clip_%08zu.flac", i % 500, i);
        snprintf(msg, sizeof msg, "%s: cannot decode (format not recognised)", p);
        wisp_result_row_t row = {
            .index = i, .path = p, .label = -1, .status = -8, .error = msg, .duration = -1};
        if (wisp_results_put(r, &row, &e) < 0)
            return -1;
    }
    wisp_results_commit(r, &e);
    wisp_results_destroy(&r);
    o.resume = 1;
    double t0 = wisp_now();
    r = wisp_results_open(&o, &e);
    double t = wisp_now() - t0;
    wisp_results_destroy(&r);
    return r || t < 0 ? -1 : t;
}

static int s_size(long items, const char *key)
{
    char dir[] = "/tmp/wisp-bench-scale-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    double startup, kb, rate, frac, rstartup, rkb, rrate, rfrac, x;
    /* a full run (its rate), one stopped about half-way (by that rate), its resume */
    if (s_null(dir, items, 0, 0, &startup, &kb, &rate, &frac) != 0 ||
        s_null(dir, items, 0, 0.5 * 1.5e6 / rate, &x, &x, &x, &frac) != 0 ||
        s_null(dir, items, 1, 0, &rstartup, &rkb, &rrate, &rfrac) != 0)
        return 1;
    printf("scale_null_%s_startup_s=%.3f\nscale_null_%s_bytes_per_item=%.1f\n", key, startup, key,
           1024 * kb);
    printf("scale_null_%s_items_per_s=%.0f\nscale_null_%s_resume_startup_s=%.3f\n", key, rate, key,
           rstartup);
    printf("scale_null_%s_resumed_frac=%.2f\n", key, frac);
    (void)rkb, (void)rrate, (void)rfrac;
    char csv[512];
    snprintf(csv, sizeof csv, "%s/m.csv", dir);
    FILE *f = fopen(csv, "w");
    fprintf(f, "path,label,duration\n");
    for (long i = 0; i < items; i++)
        fprintf(f, "/data/corpus/spk%03ld/clip_%08ld.flac,class_%ld,%.2f\n", i % 500, i, i % 7,
                3.0 + (double)(i % 11));
    fclose(f);
    long rss0 = s_status_kb("VmRSS");
    s_reset_peak();
    wisp_manifest_t m;
    wisp_error_t e = {0};
    double t0 = wisp_now();
    if (wisp_manifest_load(&m, csv, NULL, 0, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    double tm = wisp_now() - t0;
    long now = s_status_kb("VmRSS"), hwm = s_status_kb("VmHWM");
    wisp_manifest_free(&m);
    unlink(csv);
    printf("scale_manifest_%s_load_s=%.3f\nscale_manifest_%s_bytes_per_item=%.1f\n", key, tm, key,
           1024.0 * (double)(now - rss0) / (double)items);
    printf("scale_manifest_%s_peak_bytes_per_item=%.1f\n", key,
           1024.0 * (double)(hwm - rss0) / (double)items);
    printf("scale_results_%s_resume_s=%.3f\n", key, s_results_resume(dir, (size_t)items));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}

/* The lease table's worker drop (issue 13): 1 000 workers, each holding 2 shards just past
 * 500 000 done ones of 10^6, are dropped one by one (a world lost at once). CPU time of the
 * drops, and of re-leasing the 2 000 re-queued shards. */
static int s_lease_drops(void)
{
    enum { N = 1000000, DONE = 500000, W = 1000 };
    wisp_lease_shard_t *sh = malloc(N * sizeof *sh);
    if (!sh)
        return 1;
    for (long i = 0; i < N; i++)
        sh[i] = (wisp_lease_shard_t){(uint64_t)i * 256, 256, 0};
    wisp_lease_t *l = wisp_lease_new(sh, N, 2, 30);
    free(sh);
    if (!l)
        return 1;
    int first = wisp_lease_add_worker(l, 0), w0 = first + 1;
    for (long i = 0; i < DONE; i++)
        wisp_lease_complete(l, first, wisp_lease_next(l, first, 0));
    for (int w = 0; w < W; w++) {
        wisp_lease_add_worker(l, 0);
        wisp_lease_next(l, w0 + w, 0);
        wisp_lease_next(l, w0 + w, 0);
    }
    double t0 = s_cpu_now();
    size_t requeued = 0;
    for (int w = 0; w < W; w++)
        requeued += wisp_lease_drop_worker(l, w0 + w);
    double t1 = s_cpu_now();
    for (size_t i = 0; i < requeued; i++)
        wisp_lease_complete(l, first, wisp_lease_next(l, first, 0));
    double t2 = s_cpu_now();
    int ok = requeued == 2 * W && wisp_lease_done_count(l) == DONE + 2 * W;
    wisp_lease_destroy(&l);
    if (!ok) {
        fprintf(stderr, "bench_scale: lease drops re-queued %zu shards, expected %d\n", requeued,
                2 * W);
        return 1;
    }
    printf("scale_lease_drop_1000_workers_1e6_shards_cpu_s=%.6f\n", t1 - t0);
    printf("scale_lease_drop_us_per_worker=%.3f\n", 1e6 * (t1 - t0) / W);
    printf("scale_lease_relet_2000_shards_cpu_s=%.6f\n", t2 - t1);
    return 0;
}

int main(int argc, char **argv)
{
    wisp_log_init('B', 0, WISP_LOG_ERROR);
    wisp_h5_quiet();
    if (argc == 3) /* one size, in this process: bench_scale ITEMS KEY */
        return s_size(atol(argv[1]), argv[2]);
    if (argc == 2 && strcmp(argv[1], "lease") == 0) /* the lease figures alone */
        return s_lease_drops();
    /* each size in a fresh process, so the smaller run's heap does not hide growth;
     * the growth exponents come from both sizes' lines */
    char self[512];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return 1;
    self[len] = '\0';
    if (s_lease_drops() != 0)
        return 1;
    enum { MAXK = 32 };
    char names[MAXK][96];
    double v6[MAXK], v7[MAXK];
    int nk = 0;
    for (int k = 0; k < 2; k++) {
        char cmd[600], line[256];
        snprintf(cmd, sizeof cmd, "%s %s %s", self, k ? "10000000" : "1000000", k ? "1e7" : "1e6");
        FILE *f = popen(cmd, "r");
        if (!f)
            return 1;
        while (fgets(line, sizeof line, f)) {
            fputs(line, stdout);
            char *eq = strchr(line, '='), *tag = strstr(line, k ? "_1e7_" : "_1e6_");
            if (!eq || !tag || tag > eq)
                continue;
            char name[96];
            snprintf(name, sizeof name, "%.*s_%.*s", (int)(tag - line), line, (int)(eq - tag - 5),
                     tag + 5);
            int i = 0;
            while (i < nk && strcmp(names[i], name) != 0)
                i++;
            if (i == nk && nk < MAXK) {
                snprintf(names[nk], sizeof names[nk], "%s", name);
                v6[nk] = v7[nk] = NAN;
                nk++;
            }
            if (i < nk)
                *(k ? &v7[i] : &v6[i]) = atof(eq + 1);
        }
        if (pclose(f) != 0)
            return 1;
    }
    /* exponents of the totals: time, memory, or time = items / rate */
    for (int i = 0; i < nk; i++) {
        if (!(v6[i] > 0) || !(v7[i] > 0) || strstr(names[i], "frac"))
            continue;
        double g = log10(v7[i] / v6[i]);
        if (strstr(names[i], "per_item")) /* memory per item -> total memory */
            g += 1;
        else if (strstr(names[i], "per_s")) /* rate -> total time */
            g = 1 - g;
        printf("scale_growth_%s=%.2f\n", names[i] + (strncmp(names[i], "scale_", 6) ? 0 : 6), g);
    }
    return 0;
}
