/* Throughput of the data-I/O side of a classify run: manifest parsing, result rows
 * through the journaled HDF5 writer (put + periodic commit with fsync + finish), and
 * the resume replay. Prints key=value lines.
 *
 * Rows arrive as shards of 64 contiguous rows in a shuffled shard order, like the
 * coordinator receives them. The coordinator target is >= 20 000 items/s overall, so
 * the writer must be well above that. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "formats/h5util.h"
#include "base/log.h"
#include "formats/manifest.h"
#include "formats/results.h"
#include "base/util.h"

#define SHARD 64

/* Resident memory in kB ("VmRSS" of /proc/self/status), -1 when unknown. */
static long s_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    if (f)
        fclose(f);
    return v;
}

static long s_peak_kb;                     /* highest VmRSS sampled by s_write (every 256 shards) */
static wisp_results_stats_t s_last_stats;  /* of the last resumed open */
static wisp_results_stats_t s_write_stats; /* of the last run, before its finish or close */

static double s_write(const char *path, size_t n, int c, int p, size_t stop_after, int resume)
{
    const char *cls[64];
    char names[64][16];
    for (int k = 0; k < c; k++) {
        snprintf(names[k], sizeof names[k], "c%d", k);
        cls[k] = names[k];
    }
    wisp_results_opts_t o = wisp_results_default_opts();
    o.path = path;
    o.n_rows = n;
    o.n_classes = c;
    o.classes = cls;
    o.embed_dim = p;
    o.has_true_label = 1;
    o.fingerprint = "bench";
    o.resume = resume;
    o.max_pending_rows = 4096;
    wisp_error_t e = {0};
    float *v = malloc(sizeof(float) * (size_t)(2 * c + p));
    for (int k = 0; k < 2 * c + p; k++)
        v[k] = 1.0f / (float)(k + 1);
    size_t n_shards = (n + SHARD - 1) / SHARD;
    size_t *order = malloc(n_shards * sizeof *order);
    wisp_rng_t g;
    wisp_rng_seed(&g, 5);
    for (size_t s = 0; s < n_shards; s++)
        order[s] = s;
    for (size_t s = n_shards - 1; s > 0; s--) {
        size_t j = (size_t)(wisp_rng_u64(&g) % (s + 1)), t = order[s];
        order[s] = order[j];
        order[j] = t;
    }
    double t0 = wisp_now();
    wisp_results_t *r = wisp_results_open(&o, &e);
    if (!r) {
        fprintf(stderr, "open: %s\n", e.msg);
        exit(1);
    }
    double t_open = wisp_now() - t0;
    size_t done = 0;
    char path_buf[64];
    for (size_t s = 0; s < n_shards && done < stop_after; s++) {
        for (size_t i = order[s] * SHARD; i < n && i < (order[s] + 1) * SHARD; i++) {
            snprintf(path_buf, sizeof path_buf, "/data/set/clip_%07zu.flac", i);
            wisp_result_row_t row = {.index = i,
                                     .path = path_buf,
                                     .label = (int)(i % c),
                                     .score = 0.5f,
                                     .probs = v,
                                     .logits = v + c,
                                     .embedding = p ? v + 2 * c : NULL,
                                     .duration = 10,
                                     .true_label = (int)(i % 3)};
            if (i % 97 == 5) { /* an error row now and then, as undecodable files give */
                row = (wisp_result_row_t){.index = i,
                                          .path = path_buf,
                                          .label = -1,
                                          .duration = -1,
                                          .status = WISP_ERR_AUDIO,
                                          .error = "undecodable audio (bench)",
                                          .true_label = (int)(i % 3)};
            }
            int rc = wisp_results_put(r, &row, &e);
            if (rc < 0) {
                fprintf(stderr, "put: %s\n", e.msg);
                exit(1);
            }
            done++;
        }
        if (s % 256 == 0) {
            long kb = s_rss_kb();
            s_peak_kb = kb > s_peak_kb ? kb : s_peak_kb;
        }
    }
    if (resume)
        wisp_results_get_stats(r, &s_last_stats);
    if (stop_after < n && !resume)
        wisp_results_commit(r, &e);
    wisp_results_get_stats(r, &s_write_stats);
    if (stop_after < n) {
        wisp_results_commit(r, &e);
        wisp_results_destroy(&r); /* "crash" after a commit */
    } else if (wisp_results_finish(r, NULL, 0, &e) != 0) {
        fprintf(stderr, "finish: %s\n", e.msg);
        exit(1);
    }
    wisp_results_destroy(&r);
    free(v);
    free(order);
    double t = wisp_now() - t0;
    return resume ? t_open : t;
}

/* One writer run in a child process (so earlier runs' heap does not hide its growth):
 * prints results_<key>_items_per_s and results_<key>_growth_mb. */
static void s_mem_run(const char *path, size_t n, int p, const char *key)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        long rss0 = s_rss_kb();
        s_peak_kb = rss0;
        double t = s_write(path, n, 10, p, n, 0);
        printf("results_%s_items_per_s=%.0f\nresults_%s_growth_mb=%.0f\n", key, (double)n / t, key,
               (double)(s_peak_kb - rss0) / 1024);
        fflush(stdout);
        _exit(0);
    }
    int st = 0;
    if (pid > 0)
        waitpid(pid, &st, 0);
}

/* Loads a manifest in a child process and prints its time and memory per item:
 * manifest_<key>_items_per_s, manifest_<key>_bytes_per_item (steady, after the load)
 * and manifest_<key>_peak_bytes_per_item (the load's peak). */
static void s_manifest_mem(const char *csv, size_t n, const char *key)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        long rss0 = s_rss_kb();
        FILE *f = fopen("/proc/self/clear_refs", "w"); /* reset VmHWM to the current RSS */
        if (f) {
            fputs("5", f);
            fclose(f);
        }
        wisp_manifest_t m;
        wisp_error_t e = {0};
        double t0 = wisp_now();
        if (wisp_manifest_load(&m, csv, NULL, 0, &e) != 0) {
            fprintf(stderr, "%s\n", e.msg);
            _exit(1);
        }
        double t = wisp_now() - t0;
        long now = s_rss_kb(), hwm = -1;
        char line[256];
        if ((f = fopen("/proc/self/status", "r")) != NULL) {
            while (fgets(line, sizeof line, f))
                if (strncmp(line, "VmHWM:", 6) == 0)
                    hwm = atol(line + 6);
            fclose(f);
        }
        printf("manifest_%s_items_per_s=%.0f\nmanifest_%s_bytes_per_item=%.0f\n", key,
               (double)n / t, key, 1024.0 * (double)(now - rss0) / (double)n);
        if (hwm > 0)
            printf("manifest_%s_peak_bytes_per_item=%.0f\n", key,
                   1024.0 * (double)(hwm - rss0) / (double)n);
        fflush(stdout);
        wisp_manifest_free(&m);
        _exit(0);
    }
    int st = 0;
    if (pid > 0)
        waitpid(pid, &st, 0);
}

/* Resume figures at n rows (C = 10, P-float embeddings, an error row every 97th):
 *   resume_<key>_s         all rows committed, the writer gone before finish (the most
 *                          rows to keep): the resuming open, from the .partial's checkpoint
 *   resume_<key>_rebuild_s the same state without the rollback log: the full rebuild
 *                          from the journal (the fallback; what every resume cost before)
 *   resume_<key>_killed_s  the writer SIGKILLed at about half its run time
 * with the write time, the rollback log's bytes over the run and the file sizes. */
static void s_resume_case(const char *dir, size_t n, int p, const char *key)
{
    char path[256], undo[300], cmd[2048];
    snprintf(path, sizeof path, "%s/res_%s.h5", dir, key);
    snprintf(undo, sizeof undo, "%s.undo", path);
    double tw = s_write(path, n, 10, p, n - 1, 0);
    wisp_results_stats_t ws = s_write_stats;
    double t = s_write(path, n, 10, p, 0, 1);
    int tail = s_last_stats.resume_tail;
    snprintf(cmd, sizeof cmd, "stat -c '%%n %%s' %s.partial %s.commit %s.undo", path, path, path);
    fflush(stdout);
    if (system(cmd) != 0)
        fprintf(stderr, "resume case %s: no files\n", key);
    unlink(undo);
    double tf = s_write(path, n, 10, p, 0, 1);
    wisp_results_stats_t fs = s_last_stats;
    snprintf(cmd, sizeof cmd, "rm -f %s.partial %s.commit %s.undo", path, path, path);
    if (system(cmd) != 0)
        fprintf(stderr, "resume case %s: cleanup failed\n", key);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        s_write(path, n, 10, p, n, 0);
        _exit(0);
    }
    struct timespec ts = {(time_t)(tw / 2), (long)((tw / 2 - (double)(time_t)(tw / 2)) * 1e9)};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    double tk = s_write(path, n, 10, p, 0, 1);
    wisp_results_stats_t ks = s_last_stats;
    printf("resume_%s_rows=%zu\nresume_%s_write_s=%.2f\nresume_%s_undo_mb=%.1f\n", key, n, key, tw,
           key, (double)ws.undo_bytes / 1e6);
    printf("resume_%s_s=%.3f\nresume_%s_tail=%d\n", key, t, key, tail);
    printf("resume_%s_rebuild_s=%.3f\nresume_%s_rebuild_h5_s=%.3f\n", key, tf, key, fs.replay_h5_s);
    printf(
        "resume_%s_killed_s=%.3f\nresume_%s_killed_replayed_rows=%zu\nresume_%s_killed_tail=%d\n",
        key, tk, key, ks.replay_rows, key, ks.resume_tail);
    snprintf(cmd, sizeof cmd, "rm -f %s.partial %s.commit %s.undo", path, path, path);
    fflush(stdout);
    if (system(cmd) != 0)
        fprintf(stderr, "resume case %s: cleanup failed\n", key);
}

int main(int argc, char **argv)
{
    wisp_log_init('L', 0, WISP_LOG_WARN);
    wisp_h5_quiet();
    char dir[] = "/tmp/wisp-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[256], csv[256];
    /* bench_results resume N P: only the resume case (N rows, P-float embeddings). */
    if (argc == 4 && strcmp(argv[1], "resume") == 0) {
        char key[64];
        snprintf(key, sizeof key, "c10_p%d_n%s", atoi(argv[3]), argv[2]);
        s_resume_case(dir, (size_t)atoll(argv[2]), atoi(argv[3]), key);
        return rmdir(dir) == 0 ? 0 : 1;
    }

    /* Manifest: 200k CSV lines with labels and durations. */
    snprintf(csv, sizeof csv, "%s/m.csv", dir);
    FILE *f = fopen(csv, "w");
    fprintf(f, "path,label,duration\n");
    size_t n_man = 200000;
    for (size_t i = 0; i < n_man; i++)
        fprintf(f, "audio/spk%03zu/clip_%07zu.flac,class_%zu,%.2f\n", i % 500, i, i % 7,
                3.0 + (double)(i % 11));
    fclose(f);
    wisp_manifest_t m;
    wisp_error_t e = {0};
    double t0 = wisp_now();
    if (wisp_manifest_load(&m, csv, NULL, 0, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    double t_man = wisp_now() - t0;
    wisp_shard_t *sh;
    size_t n_sh;
    t0 = wisp_now();
    wisp_manifest_shards(&m, 600, 256, &sh, &n_sh, &e);
    double t_sh = wisp_now() - t0;
    printf("manifest_csv_rows=%zu\nmanifest_csv_rows_per_s=%.0f\n", n_man, n_man / t_man);
    printf("shard_plan_items_per_s=%.0f\nshards=%zu\n", n_man / t_sh, n_sh);
    free(sh);
    wisp_manifest_free(&m);
    /* Memory per item: 10^6 classify lines of ~60 bytes (the path dominates). */
    snprintf(csv, sizeof csv, "%s/m6.csv", dir);
    f = fopen(csv, "w");
    fprintf(f, "path,label,duration\n");
    for (size_t i = 0; i < 1000000; i++)
        fprintf(f, "/data/corpus/spk%03zu/clip_%07zu.flac,class_%zu,%.2f\n", i % 500, i, i % 7,
                3.0 + (double)(i % 11));
    fclose(f);
    s_manifest_mem(csv, 1000000, "1e6");

    size_t n = 100000;
    snprintf(path, sizeof path, "%s/r10.h5", dir);
    double t = s_write(path, n, 10, 0, n, 0);
    printf("results_c10_rows=%zu\nresults_c10_items_per_s=%.0f\n", n, n / t);

    size_t n2 = 20000;
    snprintf(path, sizeof path, "%s/r384.h5", dir);
    t = s_write(path, n2, 10, 384, n2, 0);
    printf("results_c10_emb384_rows=%zu\nresults_c10_emb384_items_per_s=%.0f\n", n2, n2 / t);

    /* Memory of the writer with shuffled shards (partly written chunks stay in the
     * chunk cache until evicted): RSS growth over the run, each in a fresh process. */
    snprintf(path, sizeof path, "%s/rm.h5", dir);
    s_mem_run(path, 1000000, 0, "c10_1e6");
    snprintf(path, sizeof path, "%s/rme.h5", dir);
    s_mem_run(path, 200000, 384, "emb384_2e5");

    /* Resume after a crash: from the checkpoint, by the full rebuild, after a kill. */
    s_resume_case(dir, 100000, 0, "c10_1e5");

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
