/* bench_scale: how a run grows with the item count (issue 13's scale figures), at 10^6 and
 * 10^7 items, each size in a fresh process, for the null job (the dispatch core) and for
 * classify end to end with error rows (manifest lines naming files that do not exist: the
 * real coordinator, manifest, fingerprint and results writer, the real worker decode path,
 * only no audio to decode). Per kind and size:
 *   - run 1: the real wisp-coordinator binary as a child process (--fresh), 2 worker
 *     threads (the worker loop and job plug-in of wisp-worker, over tcp loopback, shards of
 *     256), started once the endpoint file appears; start-up = spawn to the first shard a
 *     worker starts (open: manifest, fingerprint, output, plan, shard cut; bind), also
 *     spawn to the endpoint file; kill -9 once the workers have run half the items;
 *   - run 2: the same command again (resume), fresh worker threads: spawn to the endpoint,
 *     to the first new shard a worker starts, and to completion; the
 *     summary must say complete, with every item once and the expected error rows;
 *   - peak resident memory of the coordinator process (each run's, from wait4; per item:
 *     the larger), its CPU time per item (both runs), the dispatch rate (run 2's committed
 *     items over the workers' time, and the workers' rate in run 1), the final output's
 *     bytes per item, the journal's bytes per committed row and every out.* file's bytes
 *     (output, journal, rollback log) at the kill.
 * The growth exponent of each time or memory is log10(x(10^7) / x(10^6)) of the total
 * (1 = linear); marginal_* is the extra per item from 10^6 to 10^7 (no fixed cost in it).
 * Also: 1 000 worker drops over 10^6 lease shards, and a 10^7-line manifest over 4 GiB
 * (440-byte paths) loaded by the real loader (`bench_scale manifest` alone). Prints key=value
 * lines; a failed check exits nonzero. `bench_scale ITEMS KEY DIR [KIND]` runs one size (one kind),
 * DIR holding the classify model. */
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/log.h"
#include "base/util.h"
#include "coordinator/lease.h"
#include "dist/job.h"
#include "formats/h5util.h"
#include "formats/manifest.h"
#include "worker/worker.h"

#define S_WORKERS 2

static double s_cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Worker-side timing: the plug-in interface passes no user context, so the wrapper of
 * worker_run keeps its counters here (one run at a time in this process). */
static const wisp_job_ops_t *s_base;
static atomic_long s_items_run;
static atomic_int s_started;
static double s_t_first; /* written once by the thread that set s_started */

static int s_timed_run(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                       wisp_wbuf_t *out, double *stage_seconds, const wisp_job_progress_t *progress,
                       wisp_error_t *err)
{
    if (atomic_exchange(&s_started, 1) == 0)
        s_t_first = wisp_now();
    int rc = s_base->worker_run(state, first, count, p, n, out, stage_seconds, progress, err);
    atomic_fetch_add(&s_items_run, (long)count);
    return rc;
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
    const char *kind;  /* "null" or "classify" */
    const char *coord; /* the wisp-coordinator binary */
    char dir[256];     /* job.json, ep, run logs, the output */
    long items;
    long want_errors;             /* error rows the summary must report */
    const char *output, *journal; /* file names in dir */
    wisp_job_ops_t ops;
    s_worker_t w[S_WORKERS];
    volatile sig_atomic_t stop;
    char endpoint[256];
} s_case_t;

static void s_workers_start(s_case_t *c)
{
    atomic_store(&s_items_run, 0);
    atomic_store(&s_started, 0);
    c->stop = 0;
    for (int i = 0; i < S_WORKERS; i++) {
        wisp_worker_default_params(&c->w[i].p);
        c->w[i].p.endpoint = c->endpoint;
        c->w[i].p.rank = i;
        c->w[i].p.size = S_WORKERS;
        c->w[i].p.ops = &c->ops;
        c->w[i].p.stop = &c->stop;
        pthread_create(&c->w[i].t, NULL, s_worker_main, &c->w[i]);
    }
}

static void s_workers_join(s_case_t *c, int stop)
{
    if (stop)
        c->stop = 1;
    for (int i = 0; i < S_WORKERS; i++)
        pthread_join(c->w[i].t, NULL);
}

/* wisp-coordinator DIR/job.json with stdout (summary) and stderr to DIR/runK.{json,log}. */
static pid_t s_spawn(const s_case_t *c, int run)
{
    char job[300], ep[300], out[300], log[300];
    snprintf(job, sizeof job, "%s/job.json", c->dir);
    snprintf(ep, sizeof ep, "%s/ep", c->dir);
    snprintf(out, sizeof out, "%s/run%d.json", c->dir, run);
    snprintf(log, sizeof log, "%s/run%d.log", c->dir, run);
    unlink(ep); /* so the poll below cannot see a previous run's endpoint */
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
        _exit(127);
    execl(c->coord, c->coord, job, "--no-progress", "--endpoint-file", ep,
          run == 1 ? "--fresh" : (char *)NULL, (char *)NULL);
    _exit(127);
}

/* Waits for the endpoint file of coordinator pid: 0, or -1 when it exited first. */
static int s_wait_endpoint(s_case_t *c, pid_t pid)
{
    char ep[300];
    snprintf(ep, sizeof ep, "%s/ep", c->dir);
    for (;;) {
        FILE *f = fopen(ep, "r");
        if (f) {
            size_t n = fread(c->endpoint, 1, sizeof c->endpoint - 1, f);
            fclose(f);
            c->endpoint[n] = '\0';
            if (n > 0)
                return 0;
        }
        if (waitpid(pid, NULL, WNOHANG) != 0) {
            fprintf(stderr,
                    "bench_scale: %s: the coordinator exited before binding (%s/run*.log)\n",
                    c->kind, c->dir);
            return -1;
        }
        usleep(500);
    }
}

static double s_file_bytes(const s_case_t *c, const char *name)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    return stat(path, &st) == 0 ? (double)st.st_size : -1;
}

/* Bytes of every out.* file (output, journal, rollback log) in c->dir. */
static double s_out_bytes(const s_case_t *c)
{
    DIR *d = opendir(c->dir);
    double sum = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strncmp(e->d_name, "out.", 4) == 0)
            sum += s_file_bytes(c, e->d_name);
    if (d)
        closedir(d);
    return sum;
}

static double s_cpu_s(const struct rusage *r)
{
    return (double)(r->ru_utime.tv_sec + r->ru_stime.tv_sec) +
           1e-6 * (double)(r->ru_utime.tv_usec + r->ru_stime.tv_usec);
}

static double s_num(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Run 2's summary: complete, every item once, the expected error rows. */
static int s_check_summary(const s_case_t *c, double *resumed, double *rate)
{
    char path[300], *text = NULL;
    snprintf(path, sizeof path, "%s/run2.json", c->dir);
    if (wisp_read_file(path, 1 << 24, &text, NULL, NULL) != 0)
        return -1;
    char *brace = strchr(text, '{'); /* after the endpoint= line */
    cJSON *j = brace ? cJSON_Parse(brace) : NULL;
    free(text);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    *resumed = s_num(j, "items_resumed");
    *rate = s_num(j, "files_per_s");
    int ok = cJSON_IsString(st) && strcmp(st->valuestring, "complete") == 0 &&
             s_num(j, "items_total") == (double)c->items &&
             *resumed + s_num(j, "items_this_run") == (double)c->items && *resumed > 0 &&
             s_num(j, "errors") == (double)c->want_errors;
    cJSON_Delete(j);
    if (!ok)
        fprintf(stderr, "bench_scale: %s: the resumed run's summary is wrong (%s)\n", c->kind,
                path);
    return ok ? 0 : -1;
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

/* A manifest over 4 GiB (issue 13's acceptance): 10^7 CSV lines of 440-byte paths (4.41 GB,
 * past every 32-bit offset), loaded by the coordinator's loader (wisp_manifest_load_opts, as
 * jobs/classify/classify_run.c calls it) in a child process, so its peak RSS (wait4) holds
 * the load alone. Checks the count and the first, middle and last paths and lines. */
enum { S_BIG_N = 10000000, S_BIG_PATH = 440 };

/* Path of item i: S_BIG_PATH bytes, the 8-digit id just before ".flac". */
static void s_big_path(char *p, long i)
{
    static const char head[] = "/nonexistent/corpus/";
    memcpy(p, head, sizeof head - 1);
    memset(p + sizeof head - 1, 'd', S_BIG_PATH - (sizeof head - 1));
    for (size_t k = sizeof head + 20; k < S_BIG_PATH - 20; k += 64)
        p[k] = '/'; /* directories of 63 bytes, as deep trees have */
    snprintf(p + S_BIG_PATH - 19, 20, "/clip_%08ld.flac", i);
}

static int s_big_write(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    char line[S_BIG_PATH + 2];
    s_big_path(line, 0);
    line[S_BIG_PATH] = '\n';
    fputs("path\n", f);
    for (long i = 0; i < S_BIG_N; i++) {
        char id[24]; /* 8 digits (i < 10^7); sized for any long, as -O1 -Wformat-truncation wants */
        snprintf(id, sizeof id, "%08ld", i);
        memcpy(line + S_BIG_PATH - 13, id, 8); /* "clip_" + id + ".flac" */
        fwrite(line, 1, S_BIG_PATH + 1, f);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* The child: load, check, print the load time; exit status 0 when right. */
static int s_big_load(const char *path)
{
    wisp_manifest_t m;
    wisp_manifest_opts_t mo = wisp_manifest_default_opts();
    wisp_error_t e = {0};
    double t0 = wisp_now();
    int rc = wisp_manifest_load_opts(&m, path, &mo, &e);
    double t = wisp_now() - t0;
    if (rc != 0) {
        fprintf(stderr, "bench_scale: the >4 GiB manifest did not load: %s\n", e.msg);
        return 1;
    }
    int ok = m.n_items == S_BIG_N;
    const long probe[3] = {0, S_BIG_N / 2, S_BIG_N - 1};
    for (int k = 0; ok && k < 3; k++) {
        char want[S_BIG_PATH + 1];
        s_big_path(want, probe[k]);
        ok = strcmp(m.items[probe[k]].path, want) == 0 && m.items[probe[k]].line == probe[k] + 2;
    }
    printf("scale_manifest_4g_load_s=%.3f\n", t);
    printf("scale_manifest_4g_items=%zu\n", m.n_items);
    fflush(stdout);
    wisp_manifest_free(&m);
    if (!ok)
        fprintf(stderr, "bench_scale: the >4 GiB manifest loaded wrong items\n");
    return ok ? 0 : 1;
}

static int s_big_manifest(void)
{
    char dir[] = "/tmp/wisp-bench-scale-big-XXXXXX", path[300], cmd[300];
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/m.csv", dir);
    double t0 = wisp_now();
    int rc = s_big_write(path) == 0 ? 0 : 1;
    double t_write = wisp_now() - t0;
    struct stat st;
    if (rc == 0 && (stat(path, &st) != 0 || st.st_size <= (off_t)4 << 30)) {
        fprintf(stderr, "bench_scale: %s is not over 4 GiB\n", path);
        rc = 1;
    }
    fflush(stdout);
    pid_t pid = rc == 0 ? fork() : -1;
    if (pid == 0)
        _exit(s_big_load(path));
    struct rusage ru;
    int status = 0;
    if (pid < 0 || wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        rc = 1;
    if (rc == 0) {
        printf("scale_manifest_4g_file_gb=%.3f\n", (double)st.st_size / 1e9);
        printf("scale_manifest_4g_write_s=%.3f\n", t_write);
        printf("scale_manifest_4g_peak_rss_mb=%.1f\n", ru.ru_maxrss / 1024.0);
        printf("scale_manifest_4g_peak_bytes_per_item=%.1f\n", 1024.0 * ru.ru_maxrss / S_BIG_N);
        printf("scale_manifest_4g_cpu_us_per_item=%.3f\n", 1e6 * s_cpu_s(&ru) / S_BIG_N);
        fflush(stdout);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? rc : 1;
}

/* Run 1 (killed at half), run 2 (resume to completion); prints the figures. */
static int s_case(s_case_t *c, const char *key)
{
    struct rusage ru1, ru2;
    int status;
    double t0 = wisp_now(), t_spawn1 = t0;
    pid_t pid = s_spawn(c, 1);
    if (pid < 0 || s_wait_endpoint(c, pid) != 0)
        return -1;
    double endpoint = wisp_now() - t0;
    s_workers_start(c);
    while (atomic_load(&s_items_run) < c->items / 2 && waitpid(pid, NULL, WNOHANG) == 0)
        usleep(200);
    kill(pid, SIGKILL);
    double t_kill = wisp_now();
    long at_kill = atomic_load(&s_items_run);
    pid_t got = wait4(pid, &status, 0, &ru1);
    s_workers_join(c, 1);
    if (got != pid || !WIFSIGNALED(status)) {
        fprintf(stderr, "bench_scale: %s: run 1 ended before the kill (%s/run1.log)\n", c->kind,
                c->dir);
        return -1;
    }
    double first1 = s_t_first, rate1 = at_kill / (t_kill - first1);
    double journal = s_file_bytes(c, c->journal), disk = s_out_bytes(c);
    t0 = wisp_now();
    if ((pid = s_spawn(c, 2)) < 0 || s_wait_endpoint(c, pid) != 0)
        return -1;
    double rendpoint = wisp_now() - t0;
    s_workers_start(c);
    got = wait4(pid, &status, 0, &ru2);
    double rdone = wisp_now() - t0;
    s_workers_join(c, 0);
    double rfirst = atomic_load(&s_started) ? s_t_first - t0 : -1, resumed, rate;
    if (got != pid || !WIFEXITED(status) || s_check_summary(c, &resumed, &rate) != 0)
        return -1;
    long peak_kb = ru1.ru_maxrss > ru2.ru_maxrss ? ru1.ru_maxrss : ru2.ru_maxrss;
    const char *k = c->kind;
    printf("scale_%s_%s_startup_s=%.3f\n", k, key, first1 - t_spawn1);
    printf("scale_%s_%s_endpoint_s=%.3f\n", k, key, endpoint);
    printf("scale_%s_%s_run1_peak_rss_mb=%.1f\n", k, key, ru1.ru_maxrss / 1024.0);
    printf("scale_%s_%s_resume_peak_rss_mb=%.1f\n", k, key, ru2.ru_maxrss / 1024.0);
    printf("scale_%s_%s_peak_bytes_per_item=%.1f\n", k, key, 1024.0 * peak_kb / c->items);
    printf("scale_%s_%s_coord_cpu_us_per_item=%.2f\n", k, key,
           1e6 * (s_cpu_s(&ru1) + s_cpu_s(&ru2)) / c->items);
    printf("scale_%s_%s_output_bytes_per_item=%.1f\n", k, key,
           s_file_bytes(c, c->output) / c->items);
    printf("scale_%s_%s_journal_bytes_per_row=%.1f\n", k, key, journal / resumed);
    printf("scale_%s_%s_disk_at_kill_mb=%.1f\n", k, key, disk / 1048576);
    printf("scale_%s_%s_items_per_s=%.0f\n", k, key, rate);
    printf("scale_%s_%s_run1_items_per_s=%.0f\n", k, key, rate1);
    printf("scale_%s_%s_resume_endpoint_s=%.3f\n", k, key, rendpoint);
    printf("scale_%s_%s_resume_first_shard_s=%.3f\n", k, key, rfirst);
    printf("scale_%s_%s_resume_complete_s=%.3f\n", k, key, rdone);
    printf("scale_%s_%s_resumed_frac=%.3f\n", k, key, resumed / c->items);
    fflush(stdout);
    return 0;
}

/* job.json of one kind in c->dir; classify: a manifest of c->items ~65-byte paths that do
 * not exist, and the model, adapter and head under model_dir. */
static int s_write_job(s_case_t *c, const char *model_dir)
{
    char path[300];
    snprintf(path, sizeof path, "%s/job.json", c->dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const char *cluster = "\"cluster\":{\"shard_size\":256,\"credit\":2,\"lease_timeout\":30,"
                          "\"heartbeat\":1,\"progress_interval\":1000,\"commit_interval\":1}";
    if (strcmp(c->kind, "null") == 0) {
        fprintf(f,
                "{\"kind\":\"null\",\"output\":\"%s/out.tsv\",\"null\":{\"items\":%ld,"
                "\"fail_every\":1000},%s}\n",
                c->dir, c->items, cluster);
        c->want_errors = c->items / 1000;
        c->output = "out.tsv";
        c->journal = "out.tsv.journal";
        return fclose(f) == 0 ? 0 : -1;
    }
    fprintf(f,
            "{\"kind\":\"classify\",\"model\":\"%s/model\",\"adapter\":\"%s/trained/adapter\","
            "\"head\":\"%s/trained/head\",\"manifest\":\"%s/m.csv\",\"output\":\"%s/out.h5\","
            "\"classify\":{\"batch_size\":8,\"truncate\":true},%s}\n",
            model_dir, model_dir, model_dir, c->dir, c->dir, cluster);
    c->want_errors = c->items;
    c->output = "out.h5";
    c->journal = "out.h5.commit";
    if (fclose(f) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/m.csv", c->dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fprintf(f, "path\n");
    for (long i = 0; i < c->items; i++)
        fprintf(f, "/nonexistent/corpus/speakers/spk%03ld/session_%02ld/clip_%08ld.flac\n", i % 500,
                i / 500 % 100, i);
    return fclose(f) == 0 ? 0 : -1;
}

static int s_size(long items, const char *key, const char *model_dir, const char *only)
{
    char self[512], coord[600];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return 1;
    self[len] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(coord, sizeof coord, "%s/../bin/wisp-coordinator", self);
    const char *kinds[2] = {"null", "classify"};
    for (int k = 0; k < 2; k++) {
        if (only && strcmp(only, kinds[k]) != 0)
            continue;
        s_case_t *c = calloc(1, sizeof *c);
        if (!c)
            return 1;
        c->kind = kinds[k];
        c->coord = coord;
        c->items = items;
        c->ops = *wisp_job_find(c->kind);
        s_base = wisp_job_find(c->kind);
        c->ops.worker_run = s_timed_run;
        snprintf(c->dir, sizeof c->dir, "/tmp/wisp-bench-scale-XXXXXX");
        int rc = mkdtemp(c->dir) ? 0 : -1;
        fprintf(stderr, "bench_scale: %s %s\n", kinds[k], key);
        if (rc == 0 && (rc = s_write_job(c, model_dir)) != 0)
            fprintf(stderr, "bench_scale: cannot write the job in %s\n", c->dir);
        if (rc == 0)
            rc = s_case(c, key);
        /* a failed run keeps its logs and summaries (run*.log, run*.json), not gigabytes */
        char cmd[600];
        if (rc == 0)
            snprintf(cmd, sizeof cmd, "rm -rf %s", c->dir);
        else
            snprintf(cmd, sizeof cmd, "rm -f %s/m.csv %s/out.*", c->dir, c->dir);
        if (system(cmd) != 0)
            rc = -1;
        free(c);
        if (rc)
            return 1;
    }
    return 0;
}

/* A tiny classify model (d_model 64, 2 layers) with a seq_bn adapter and a head from one
 * training step on synthetic clips, in dir (wisp init-model, synth, train). */
static int s_model(const char *bin, const char *dir)
{
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "cat > %s/tiny.json <<'EOF'\n"
        "{\"model_type\": \"whisper\", \"architectures\": [\"WhisperForAudioClassification\"], "
        "\"d_model\": 64, \"encoder_layers\": 2, \"encoder_attention_heads\": 4, "
        "\"encoder_ffn_dim\": 128, \"num_mel_bins\": 80, \"max_source_positions\": 1500, "
        "\"activation_function\": \"gelu\", \"classifier_proj_size\": 32, \"num_labels\": 4, "
        "\"decoder_layers\": 1, \"decoder_attention_heads\": 4, \"decoder_ffn_dim\": 64}\n"
        "EOF\n"
        "%s/wisp init-model --config %s/tiny.json -o %s/model --seed 3 >/dev/null 2>&1 && "
        "%s/wisp synth -o %s/data --classes 4 --per-class 2 --max-seconds 1 -q >/dev/null 2>&1 "
        "&& %s/wisp train --model %s/model --preset seq_bn --train %s/data/train.csv "
        "--truncate -o %s/trained --steps 1 --threads 1 >/dev/null 2>&1",
        dir, bin, dir, dir, bin, dir, bin, dir, dir, dir);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "bench_scale: the classify model could not be made in %s\n", dir);
    return rc;
}

/* Runs `self ITEMS KEY DIR` and echoes its lines; collects name -> value per size. */
static int s_run_size(const char *self, const char *dir, int k, char (*names)[96], double *v,
                      int *nk, int maxk)
{
    static const char *items[2] = {"1000000", "10000000"}, *keys[2] = {"1e6", "1e7"};
    char cmd[1200], line[256], tag[8];
    snprintf(cmd, sizeof cmd, "%s %s %s %s", self, items[k], keys[k], dir);
    snprintf(tag, sizeof tag, "_%s_", keys[k]);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        fflush(stdout);
        char *eq = strchr(line, '='), *t = strstr(line, tag);
        if (!eq || !t || t > eq)
            continue;
        char name[96]; /* the key without its size: scale_null_startup_s */
        snprintf(name, sizeof name, "%.*s_%.*s", (int)(t - line), line, (int)(eq - t - 5), t + 5);
        int i = 0;
        while (i < *nk && strcmp(names[i], name) != 0)
            i++;
        if (i == *nk && *nk < maxk) {
            snprintf(names[i], sizeof names[i], "%s", name);
            v[2 * i] = v[2 * i + 1] = NAN;
            (*nk)++;
        }
        if (i < *nk)
            v[2 * i + k] = atof(eq + 1);
    }
    return pclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    wisp_log_init('B', 0, WISP_LOG_ERROR);
    wisp_h5_quiet();
    if (argc == 4 || argc == 5) /* one size, in this process: bench_scale ITEMS KEY DIR [KIND] */
        return s_size(atol(argv[1]), argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    if (argc == 2 && strcmp(argv[1], "lease") == 0) /* the lease figures alone */
        return s_lease_drops();
    if (argc == 2 && strcmp(argv[1], "manifest") == 0) /* the >4 GiB manifest alone */
        return s_big_manifest();
    /* each size in a fresh process, so the smaller run's heap does not hide growth;
     * the growth exponents come from both sizes' lines */
    char self[512], bin[600], dir[] = "/tmp/wisp-bench-scale-model-XXXXXX";
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || !mkdtemp(dir))
        return 1;
    self[len] = '\0';
    snprintf(bin, sizeof bin, "%.*s/../bin", (int)(strrchr(self, '/') - self), self);
    if (s_lease_drops() != 0 || s_big_manifest() != 0 || s_model(bin, dir) != 0)
        return 1;
    enum { MAXK = 32 };
    char names[MAXK][96];
    double v[2 * MAXK]; /* (name, size) */
    int nk = 0;
    for (int k = 0; k < 2; k++)
        if (s_run_size(self, dir, k, names, v, &nk, MAXK) != 0)
            return 1;
    /* exponents of the totals: time, memory, or time = items / rate */
    for (int i = 0; i < nk; i++) {
        double a = v[2 * i], b = v[2 * i + 1];
        if (!(a > 0) || !(b > 0) || strstr(names[i], "frac") || strstr(names[i], "_mb"))
            continue;
        double g = log10(b / a);
        const char *n = names[i] + (strncmp(names[i], "scale_", 6) ? 0 : 6);
        if (strstr(names[i], "per_item")) { /* memory per item -> total memory */
            g += 1;
            printf("scale_marginal_%s=%.1f\n", n, (1e7 * b - 1e6 * a) / 9e6);
        } else if (strstr(names[i], "per_s")) { /* rate -> total time */
            g = 1 - g;
        }
        printf("scale_growth_%s=%.2f\n", n, g);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
