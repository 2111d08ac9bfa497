/* job_null.c: the "null" job kind — workers return a trivial value per item, so
 * the runtime (dispatch, leases, commit log, resume, shutdown) can be tested
 * and benchmarked without a model.
 *
 * Item i's result is (value, status): value = splitmix64 of (seed, i), status 1
 * (an error record) when fail_every > 0 and i % fail_every == fail_every - 1.
 * Output: a text file "item<TAB>value<TAB>status" with one row per item in
 * order, written atomically at completion. While running, committed rows go to
 * OUTPUT.journal (a header with the config fingerprint, then fixed 20-byte
 * records), which a rerun resumes from. */
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist/job.h"
#include "base/log.h"
#include "base/util.h"

#define S_REC 20 /* u64 item, u64 value, i32 status */
#define S_HDR 32 /* "WISPNULL1 fp=<16 hex>\n" padded with spaces */

typedef struct {
    size_t n;
    uint64_t *value; /* n */
    int32_t *status; /* n */
    uint8_t *have;   /* n */
    FILE *journal;
    char output[WISP_JOBCFG_PATH_MAX];
    char journal_path[WISP_JOBCFG_PATH_MAX + 16];
    uint64_t fp;
} s_coord_t;

typedef struct {
    uint64_t seed;
    int64_t fail_every;
    double work_ms;
} s_worker_t;

static uint64_t s_item_value(uint64_t seed, uint64_t item)
{
    wisp_rng_t r;
    wisp_rng_seed(&r, seed ^ (item * 0x9e3779b97f4a7c15ull));
    return wisp_rng_u64(&r);
}

static uint64_t s_fingerprint(const wisp_jobcfg_t *cfg)
{
    wisp_rng_t r;
    wisp_rng_seed(&r, (uint64_t)cfg->seed * 31u + (uint64_t)cfg->null_items * 7u +
                          (uint64_t)cfg->null_fail_every);
    return wisp_rng_u64(&r);
}

static void s_coord_close(void **state)
{
    s_coord_t *s = state ? *state : NULL;
    if (!s)
        return;
    if (s->journal)
        fclose(s->journal);
    free(s->value);
    free(s->status);
    free(s->have);
    free(s);
    *state = NULL;
}

/* Reads an earlier run's journal: marks its records, truncates a torn tail. */
static int s_resume(s_coord_t *s, size_t *n_done, wisp_error_t *err)
{
    FILE *f = fopen(s->journal_path, "rb");
    *n_done = 0;
    if (!f)
        return errno == ENOENT
                   ? WISP_OK
                   : wisp_error_set(err, WISP_ERR_IO, "%s: %s", s->journal_path, strerror(errno));
    char hdr[S_HDR + 1] = {0};
    char want[S_HDR + 1];
    snprintf(want, sizeof want, "WISPNULL1 fp=%016" PRIx64 "%*s\n", s->fp, S_HDR - 30, "");
    size_t got = fread(hdr, 1, S_HDR, f);
    if (got < S_HDR) {
        fclose(f);
        return WISP_OK; /* torn before the header was complete: nothing committed */
    }
    if (memcmp(hdr, want, S_HDR) != 0) {
        fclose(f);
        return wisp_error_set(err, WISP_ERR_STATE,
                              "%s: written by a run with a different config (seed, items); "
                              "remove it or run with --fresh",
                              s->journal_path);
    }
    uint8_t rec[S_REC];
    long good = S_HDR;
    while (fread(rec, 1, S_REC, f) == S_REC) {
        uint64_t item, value;
        int32_t status;
        memcpy(&item, rec, 8);
        memcpy(&value, rec + 8, 8);
        memcpy(&status, rec + 16, 4);
        if (item >= s->n) {
            fclose(f);
            return wisp_error_set(err, WISP_ERR_STATE, "%s: record for item %" PRIu64 " of %zu",
                                  s->journal_path, item, s->n);
        }
        if (!s->have[item]) {
            s->have[item] = 1;
            (*n_done)++;
        }
        s->value[item] = value;
        s->status[item] = status;
        good += S_REC;
    }
    fclose(f);
    if (truncate(s->journal_path, good) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: truncate: %s", s->journal_path,
                              strerror(errno));
    return WISP_OK;
}

static int s_coord_open(void **state, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                        wisp_error_t *err)
{
    int rc = WISP_OK;
    s_coord_t *s = calloc(1, sizeof *s);
    memset(plan, 0, sizeof *plan);
    if (!s)
        return wisp_error_set(err, WISP_ERR_NOMEM, "null job: out of memory");
    s->n = (size_t)cfg->null_items;
    s->fp = s_fingerprint(cfg);
    snprintf(s->output, sizeof s->output, "%s", cfg->output);
    snprintf(s->journal_path, sizeof s->journal_path, "%s.journal", cfg->output);
    size_t n1 = s->n ? s->n : 1;
    s->value = calloc(n1, sizeof *s->value);
    s->status = calloc(n1, sizeof *s->status);
    s->have = calloc(n1, 1);
    plan->seconds = malloc(n1 * sizeof *plan->seconds);
    plan->done = calloc(n1, 1);
    if (!s->value || !s->status || !s->have || !plan->seconds || !plan->done) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "null job: out of memory for %zu items", s->n);
        goto done;
    }
    size_t n_done = 0;
    if (!resume)
        unlink(s->journal_path);
    else if ((rc = s_resume(s, &n_done, err)) != 0)
        goto done;
    s->journal =
        fopen(s->journal_path, n_done || access(s->journal_path, F_OK) == 0 ? "r+b" : "w+b");
    if (!s->journal) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", s->journal_path, strerror(errno));
        goto done;
    }
    fseek(s->journal, 0, SEEK_END);
    if (ftell(s->journal) < S_HDR) {
        /* fresh (or torn before its header): start the journal over */
        if (ftruncate(fileno(s->journal), 0) != 0 || fseek(s->journal, 0, SEEK_SET) != 0) {
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: %s", s->journal_path, strerror(errno));
            goto done;
        }
        fprintf(s->journal, "WISPNULL1 fp=%016" PRIx64 "%*s\n", s->fp, S_HDR - 30, "");
    }
    if (n_done)
        WISP_LOGI("resuming: %zu of %zu items already committed in %s", n_done, s->n,
                  s->journal_path);
    plan->n_items = s->n;
    for (size_t i = 0; i < s->n; i++) {
        plan->seconds[i] = cfg->null_item_seconds;
        plan->done[i] = s->have[i];
        plan->n_errors_done += s->have[i] && s->status[i] != 0;
    }
    *state = s;
    s = NULL;
done:
    if (rc)
        wisp_job_plan_free(plan);
    s_coord_close((void **)&s);
    return rc;
}

static int s_coord_payload(void *state, uint64_t first, uint32_t count, wisp_wbuf_t *out,
                           wisp_error_t *err)
{
    (void)state, (void)first, (void)count, (void)out, (void)err;
    return WISP_OK; /* the item ids in the header say everything */
}

static int s_coord_commit(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                          uint32_t *n_errors, double *audio_s, wisp_error_t *err)
{
    s_coord_t *s = state;
    *n_errors = 0;
    *audio_s = -1;
    if (first > s->n || count > s->n - first)
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "null result: items %" PRIu64 "+%u outside 0..%zu", first, count,
                              s->n);
    if (n != (size_t)count * 12)
        return wisp_error_set(err, WISP_ERR_FORMAT, "null result: %zu bytes for %u items", n,
                              count);
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, p, n);
    for (uint32_t i = 0; i < count; i++) {
        (void)wisp_rbuf_u64(&r);
        int32_t st = wisp_rbuf_i32(&r);
        if (st != 0 && st != 1)
            return wisp_error_set(err, WISP_ERR_FORMAT, "null result: status %d for item %" PRIu64,
                                  st, first + i);
    }
    wisp_rbuf_init(&r, p, n);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t item = first + i;
        uint8_t rec[S_REC];
        s->value[item] = wisp_rbuf_u64(&r);
        s->status[item] = wisp_rbuf_i32(&r);
        s->have[item] = 1;
        *n_errors += s->status[item] != 0;
        memcpy(rec, &item, 8);
        memcpy(rec + 8, &s->value[item], 8);
        memcpy(rec + 16, &s->status[item], 4);
        if (fwrite(rec, 1, S_REC, s->journal) != S_REC)
            return wisp_error_set(err, WISP_ERR_IO, "%s: write: %s", s->journal_path,
                                  strerror(errno));
    }
    return WISP_OK;
}

static int s_coord_flush(void *state, wisp_error_t *err)
{
    s_coord_t *s = state;
    if (fflush(s->journal) != 0 || fdatasync(fileno(s->journal)) != 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: flush: %s", s->journal_path, strerror(errno));
    return WISP_OK;
}

static int s_coord_finish(void *state, int complete, cJSON *summary, wisp_error_t *err)
{
    s_coord_t *s = state;
    int rc = s_coord_flush(s, err);
    if (rc || !complete)
        return rc;
    size_t errors = 0;
    wisp_wbuf_t b = {0};
    char line[96];
    wisp_wbuf_bytes(&b, "item\tvalue\tstatus\n", 18);
    for (size_t i = 0; i < s->n; i++) {
        if (!s->have[i]) {
            wisp_wbuf_free(&b);
            return wisp_error_set(err, WISP_ERR_STATE, "%s: item %zu has no result", s->output, i);
        }
        int k =
            snprintf(line, sizeof line, "%zu\t%016" PRIx64 "\t%d\n", i, s->value[i], s->status[i]);
        wisp_wbuf_bytes(&b, line, (size_t)k);
        errors += s->status[i] != 0;
    }
    if (b.failed)
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", s->output);
    else
        rc = wisp_write_file_atomic(s->output, b.data, b.len, err);
    wisp_wbuf_free(&b);
    if (rc)
        return rc;
    fclose(s->journal);
    s->journal = NULL;
    unlink(s->journal_path);
    cJSON_AddNumberToObject(summary, "rows_written", (double)s->n);
    cJSON_AddNumberToObject(summary, "error_rows", (double)errors);
    cJSON_AddStringToObject(summary, "output", s->output);
    return WISP_OK;
}

static int s_worker_open(void **state, const wisp_jobcfg_t *cfg, const wisp_job_env_t *env,
                         wisp_error_t *err)
{
    (void)env;
    s_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return wisp_error_set(err, WISP_ERR_NOMEM, "null job: out of memory");
    w->seed = (uint64_t)cfg->seed;
    w->fail_every = cfg->null_fail_every;
    w->work_ms = cfg->null_work_ms;
    *state = w;
    return WISP_OK;
}

static int s_worker_run(void *state, uint64_t first, uint32_t count, const uint8_t *p, size_t n,
                        wisp_wbuf_t *out, double *stage_seconds,
                        const wisp_job_progress_t *progress, wisp_error_t *err)
{
    (void)p, (void)n, (void)err;
    s_worker_t *w = state;
    double t0 = wisp_now();
    for (uint32_t i = 0; i < count; i++) {
        if (progress && progress->fn && progress->fn(progress->ctx, i))
            return WISP_ERR_INTERRUPTED;
        uint64_t item = first + i;
        if (w->work_ms > 0) {
            struct timespec ts = {(time_t)(w->work_ms / 1000),
                                  (long)(fmod(w->work_ms, 1000.0) * 1e6)};
            nanosleep(&ts, NULL);
        }
        int failed =
            w->fail_every > 0 && item % (uint64_t)w->fail_every == (uint64_t)w->fail_every - 1;
        wisp_wbuf_u64(out, failed ? 0 : s_item_value(w->seed, item));
        wisp_wbuf_i32(out, failed);
    }
    stage_seconds[0] += wisp_now() - t0;
    return WISP_OK;
}

static void s_worker_close(void **state)
{
    if (!state || !*state)
        return;
    free(*state);
    *state = NULL;
}

const wisp_job_ops_t wisp_job_null = {
    .name = "null",
    .stages = {"work", NULL},
    .steps = 0,
    .coord_open = s_coord_open,
    .coord_payload = s_coord_payload,
    .coord_commit = s_coord_commit,
    .coord_flush = s_coord_flush,
    .coord_finish = s_coord_finish,
    .coord_close = s_coord_close,
    .worker_open = s_worker_open,
    .worker_run = s_worker_run,
    .worker_close = s_worker_close,
};
