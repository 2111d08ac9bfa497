/* fuzz_proto_coord: the coordinator's message handling (coordinator/coord.c)
 * driven without sockets: a script of frames from up to 8 peers and clock ticks
 * (tests/fuzz/fuzz_proto_frames.h) goes through wisp_coord_handle and
 * wisp_coord_tick, and everything the coordinator sends is captured.
 * The first byte picks the job: even = the null map job (50 items in shards of
 * 5, credit 2, lease 1 s), odd = a step job that does nothing (the training
 * protocol: worlds, READY, STEP/STEP_DONE) without a model.
 * Invariants: no frame is fatal, everything sent decodes and goes coordinator ->
 * worker, the counters stay consistent (results <= shards, live <= seen). */
#include <stdio.h>
#include <stdlib.h>

#include "coordinator/coord.h"
#include "fuzz_proto_frames.h"
#include "formats/jobcfg.h"

/* FUZZ_MAX_LEN: 4096 */

typedef struct {
    uint32_t slot;   /* last slot the coordinator addressed this peer as */
    wisp_msg_t last; /* last SHARD or STEP it was sent (header only) */
    int has_last;
} s_peer_t;

typedef struct {
    s_peer_t peer[FUZZ_PEERS];
    long sent;
} s_sink_t;

static int s_peer_of(const void *id, size_t id_len)
{
    return id_len == 2 && ((const char *)id)[0] == 'p' ? ((const char *)id)[1] - '0' : -1;
}

static int s_send(void *ctx, const void *id, size_t id_len, const wisp_msg_t *m)
{
    s_sink_t *k = ctx;
    fuzz_check_sent(m, 1);
    k->sent++;
    int p = s_peer_of(id, id_len);
    FUZZ_CHECK(p >= 0 && p < FUZZ_PEERS, "sent to a routing id no peer has");
    if (m->worker != WISP_PROTO_NO_WORKER)
        k->peer[p].slot = m->worker;
    if (m->type == WISP_MSG_SHARD || m->type == WISP_MSG_STEP) {
        k->peer[p].last = *m;
        k->peer[p].last.payload = NULL;
        k->peer[p].last.payload_len = 0;
        k->peer[p].has_last = 1;
    }
    return 0;
}

/* ---- a step job that does nothing ---- */

typedef struct {
    uint64_t issued;
} s_fake_t;

static int s_open(void **st, const wisp_jobcfg_t *cfg, int resume, wisp_job_plan_t *plan,
                  wisp_error_t *err)
{
    (void)cfg, (void)resume, (void)err;
    memset(plan, 0, sizeof *plan);
    *st = calloc(1, sizeof(s_fake_t));
    if (!*st)
        abort();
    return 0;
}
static int s_flush(void *st, wisp_error_t *err)
{
    (void)st, (void)err;
    return 0;
}
static int s_finish(void *st, int complete, cJSON *summary, wisp_error_t *err)
{
    (void)st, (void)complete, (void)summary, (void)err;
    return 0;
}
static void s_close(void **st)
{
    free(*st);
    *st = NULL;
}
/* READY payload: anything; a step job would refuse what it cannot resume from. */
static int s_resume(void *st, const uint8_t *ready, size_t n, wisp_error_t *err)
{
    (void)st, (void)ready, (void)n, (void)err;
    return 0;
}
static int s_step(void *st, int size, uint64_t *step, uint32_t *flags, wisp_wbuf_t *out,
                  wisp_error_t *err)
{
    (void)err;
    s_fake_t *f = st;
    if (f->issued >= 6)
        return 0;
    for (int k = 0; k < size; k++) {
        wisp_wbuf_reset(&out[k]);
        wisp_wbuf_u32(&out[k], (uint32_t)k);
    }
    *step = f->issued++;
    *flags = f->issued == 6 ? WISP_STEP_F_FINAL : 0;
    return 1;
}
static int s_step_done(void *st, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                       wisp_error_t *err)
{
    (void)st, (void)flags, (void)p;
    /* as the train job does: a report for a step never issued is malformed */
    if (step >= ((s_fake_t *)st)->issued || n > 64)
        return wisp_error_set(err, WISP_ERR_FORMAT, "STEP_DONE for step %llu",
                              (unsigned long long)step);
    return 0;
}
static void s_progress(void *st, long *done, long *total, double *loss)
{
    *done = (long)((s_fake_t *)st)->issued;
    *total = 6;
    *loss = 0;
}

static const wisp_job_ops_t s_steps = {
    .name = "fake",
    .stages = {NULL},
    .steps = 1,
    .coord_open = s_open,
    .coord_flush = s_flush,
    .coord_finish = s_finish,
    .coord_close = s_close,
    .coord_resume = s_resume,
    .coord_step = s_step,
    .coord_step_done = s_step_done,
    .coord_progress = s_progress,
};

/* The null job's output directory: in memory (a journal is opened and removed per
 * input; on disk that was 10x slower), removed at exit. */
static char s_dirname[64];

static void s_rmdir(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/out.tsv.journal", s_dirname);
    unlink(path);
    rmdir(s_dirname);
}

static const char *s_dir(void)
{
    if (!s_dirname[0]) {
        snprintf(s_dirname, sizeof s_dirname, "/dev/shm/wisp-fuzz-coord-XXXXXX");
        if (!mkdtemp(s_dirname))
            abort();
        atexit(s_rmdir);
    }
    return s_dirname;
}

/* The harness's own answer to the last SHARD (a null-job RESULT) or STEP. */
static void s_reply(wisp_coord_t *c, s_sink_t *k, int p, uint8_t mode, double now)
{
    if (!k->peer[p].has_last)
        return;
    const wisp_msg_t *last = &k->peer[p].last;
    wisp_wbuf_t pl = {0}, frame = {0};
    wisp_msg_t m;
    double st[WISP_PROTO_MAX_STAGES] = {0.001};
    if (last->type == WISP_MSG_SHARD) {
        wisp_proto_result_begin(&pl);
        uint32_t n = last->count + (mode & 4 ? 1 : 0); /* 4: one row too many */
        for (uint32_t i = 0; i < n; i++) {
            wisp_wbuf_u64(&pl, i);
            wisp_wbuf_i32(&pl, mode & 8 ? 7 : (int32_t)(i & mode & 1)); /* 8: bad status */
        }
        if (wisp_proto_result(&m, &pl, last->shard, last->first + (mode & 2 ? 1 : 0), last->count,
                              st) != 0)
            abort();
    } else {
        if (wisp_proto_step_done(&m, last->shard + (mode & 2 ? 1 : 0), mode & 0x10 ? 1 : 0, NULL) !=
            0)
            abort();
    }
    m.worker = mode & 0x80 ? (uint32_t)(mode & 7) : k->peer[p].slot;
    fuzz_frame(&m, &frame);
    char id[3] = {'p', (char)('0' + p), 0};
    wisp_error_t e = {0};
    int rc = wisp_coord_handle(c, id, 2, frame.data, frame.len, now, &e);
    FUZZ_CHECK(rc == 0, "a reply frame was fatal: %s", e.msg);
    wisp_wbuf_free(&pl);
    wisp_wbuf_free(&frame);
}

static void s_run(wisp_coord_t *c, s_sink_t *k, fuzz_cursor_t *in)
{
    double now = 1.0;
    wisp_wbuf_t frame = {0}, hb = {0};
    wisp_error_t e = {0};
    uint8_t op, peer = 0;
    while (fuzz_u8(in, &op)) {
        int rc = 0;
        op %= 5;
        if (op != 3 && !fuzz_u8(in, &peer))
            break;
        peer %= FUZZ_PEERS;
        char id[3] = {'p', (char)('0' + peer), 0};
        if (op == 0) {
            uint16_t len;
            if (!fuzz_u16(in, &len) || in->left < len)
                break;
            rc = wisp_coord_handle(c, id, 2, in->p, len, now, &e);
            in->p += len;
            in->left -= len;
        } else if (op == 1) {
            wisp_msg_t m;
            if (!fuzz_built(in, &m))
                break;
            fuzz_frame(&m, &frame);
            rc = wisp_coord_handle(c, id, 2, frame.data, frame.len, now, &e);
        } else if (op == 2) {
            uint8_t b[4];
            if (!fuzz_take(in, b, 4))
                break;
            wisp_proto_hello_t h = {.rank = b[0],
                                    .size = b[1],
                                    .world = b[2] % 3,
                                    .pid = b[3] ? b[3] : UINT64_MAX,
                                    .host = "fuzz"};
            wisp_msg_t m;
            if (wisp_proto_hello(&m, &hb, &h) != 0)
                abort();
            fuzz_frame(&m, &frame);
            rc = wisp_coord_handle(c, id, 2, frame.data, frame.len, now, &e);
        } else if (op == 3) {
            uint8_t dt;
            if (!fuzz_u8(in, &dt))
                break;
            now += dt * 0.05;
            rc = wisp_coord_tick(c, now, &e);
        } else {
            uint8_t mode;
            if (!fuzz_u8(in, &mode))
                break;
            s_reply(c, k, peer, mode, now);
        }
        FUZZ_CHECK(rc == 0, "a frame or tick was fatal: %s", e.msg);
    }
    wisp_wbuf_free(&frame);
    wisp_wbuf_free(&hb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!getenv("WISP_FUZZ_LOG")) /* WISP_FUZZ_LOG=1: see what a script does */
        fuzz_quiet();
    if (size < 1)
        return 0;
    static wisp_jobcfg_t cfg;
    static int have_cfg;
    if (!have_cfg) {
        char json[512];
        snprintf(json, sizeof json,
                 "{\"kind\":\"null\",\"output\":\"%s/out.tsv\",\"null\":{\"items\":50,"
                 "\"fail_every\":7},\"cluster\":{\"shard_size\":5,\"credit\":2,"
                 "\"lease_timeout\":1,\"heartbeat\":0.1}}",
                 s_dir());
        wisp_error_t e = {0};
        if (wisp_jobcfg_parse(&cfg, json, NULL, "fuzz", NULL, 0, &e) != 0)
            abort();
        have_cfg = 1;
    }
    s_sink_t sink;
    memset(&sink, 0, sizeof sink);
    wisp_coord_params_t p;
    wisp_coord_default_params(&p);
    p.resume = 0;
    p.summary_out = NULL;
    p.progress_tty = 0;
    p.send = s_send;
    p.send_ctx = &sink;
    p.ops = data[0] & 1 ? &s_steps : NULL;
    p.max_workers = 6; /* so the descriptor-limit refusal is reachable too */
    wisp_error_t e = {0};
    wisp_coord_t *c = wisp_coord_new(&cfg, &p, &e);
    FUZZ_CHECK(c != NULL, "coordinator: %s", e.msg);
    fuzz_cursor_t in = {data + 1, size - 1};
    s_run(c, &sink, &in);
    wisp_coord_counters_t k;
    wisp_coord_counters(c, &k);
    if (getenv("WISP_FUZZ_LOG"))
        fprintf(stderr, "sent %ld, results %llu, dropped %llu, requeued %llu, seen %llu\n",
                sink.sent, (unsigned long long)k.results, (unsigned long long)k.dropped,
                (unsigned long long)k.requeued, (unsigned long long)k.workers_seen);
    FUZZ_CHECK(data[0] & 1 || k.results <= 10, "%llu results for 10 shards",
               (unsigned long long)k.results);
    FUZZ_CHECK(k.live_workers >= 0 && (uint64_t)k.live_workers <= k.workers_seen,
               "%d live of %llu seen", k.live_workers, (unsigned long long)k.workers_seen);
    wisp_coord_destroy(&c);
    return 0;
}
