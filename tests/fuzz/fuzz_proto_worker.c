/* fuzz_proto_worker: the worker's message handling (worker/worker.c) driven
 * without sockets through wisp_worker_feed: the script's frames
 * (tests/fuzz/fuzz_proto_frames.h; ticks and replies are skipped, every frame
 * is from the one coordinator) arrive in order and the worker runs what it is
 * given, sending into a sink.
 * A WELCOME's config is replaced by one of the harness's (its first payload byte
 * picks: the null map job, or a step job that does nothing): the job config is
 * trusted (docs/SECURITY.md) and fuzz_jobcfg covers its parser, while a fuzzed
 * config could ask for hours of null.work_ms.
 * Invariants: the worker ends with 0 or WISP_ERR_INTERRUPTED, never fatally;
 * everything it sends decodes and goes worker -> coordinator; every RESULT
 * answers a SHARD it was given, with the same shard, first and count. */
#include <stdio.h>
#include <stdlib.h>

#include "formats/jobcfg.h"
#include "fuzz_proto_frames.h"
#include "worker/worker.h"

/* FUZZ_MAX_LEN: 4096 */

#define S_MAX_FRAMES 64
#define S_MAX_ITEMS  200000 /* items over all SHARDs of one input (the null job is ~1 us each) */

typedef struct {
    wisp_msg_t shard[S_MAX_FRAMES]; /* SHARD headers fed */
    int n_shards;
    long results;
} s_sink_t;

static int s_send(void *ctx, const wisp_msg_t *m)
{
    s_sink_t *k = ctx;
    fuzz_check_sent(m, 0);
    if (m->type == WISP_MSG_RESULT) {
        int found = 0;
        for (int i = 0; i < k->n_shards && !found; i++)
            found = k->shard[i].shard == m->shard && k->shard[i].first == m->first &&
                    k->shard[i].count == m->count;
        FUZZ_CHECK(found, "RESULT for shard %llu (%llu+%u) it was never given",
                   (unsigned long long)m->shard, (unsigned long long)m->first, m->count);
        k->results++;
    }
    return 0;
}

/* ---- a step job that does nothing (worker side) ---- */

static int s_open(void **st, const wisp_jobcfg_t *cfg, const wisp_job_env_t *env, wisp_error_t *err)
{
    (void)cfg, (void)env, (void)err;
    *st = calloc(1, 1);
    if (!*st)
        abort();
    return 0;
}
static void s_close(void **st)
{
    free(*st);
    *st = NULL;
}
static int s_ready(void *st, wisp_wbuf_t *out, wisp_error_t *err)
{
    (void)st, (void)err;
    wisp_wbuf_u64(out, 0);
    return 0;
}
static int s_step(void *st, uint64_t step, uint32_t flags, const uint8_t *p, size_t n,
                  wisp_wbuf_t *out, uint32_t *out_flags, wisp_error_t *err)
{
    (void)st, (void)step, (void)p, (void)err;
    wisp_wbuf_u64(out, (uint64_t)n);
    *out_flags = flags & WISP_STEP_F_CHECKPOINT ? WISP_STEP_CHECKPOINTED : 0;
    return 0;
}

static const wisp_job_ops_t s_steps = {
    .name = "fake",
    .stages = {NULL},
    .steps = 1,
    .worker_open = s_open,
    .worker_close = s_close,
    .worker_ready = s_ready,
    .worker_step = s_step,
};

static const char *const S_CONFIGS[2] = {
    "{\"kind\":\"null\",\"output\":\"/nonexistent/out.tsv\",\"null\":{\"items\":1000,"
    "\"fail_every\":3},\"cluster\":{\"heartbeat\":0.01}}",
    "{\"kind\":\"null\",\"output\":\"/nonexistent/out.tsv\",\"cluster\":{\"heartbeat\":0.01}}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!getenv("WISP_FUZZ_LOG")) /* WISP_FUZZ_LOG=1: see what a script does */
        fuzz_quiet();
    static wisp_wbuf_t bufs[S_MAX_FRAMES];
    wisp_worker_frame_t frames[S_MAX_FRAMES];
    s_sink_t sink;
    memset(&sink, 0, sizeof sink);
    int steps = -1; /* the job the first WELCOME chose (-1: none yet) */
    size_t n = 0;
    uint64_t items = 0;
    fuzz_cursor_t in = {data, size};
    uint8_t op, peer;
    while (n < S_MAX_FRAMES && fuzz_u8(&in, &op)) {
        op %= 5;
        if (op == 3 || op == 4) { /* no clock or replies on this side */
            if (!fuzz_u8(&in, &peer) || (op == 4 && !fuzz_u8(&in, &peer)))
                break;
            continue;
        }
        if (!fuzz_u8(&in, &peer))
            break;
        uint8_t skip[4];
        if (op == 2) { /* HELLOs go the other way */
            if (!fuzz_take(&in, skip, 3))
                break;
            continue;
        }
        wisp_msg_t m;
        int raw = op == 0;
        if (raw) {
            uint16_t len;
            if (!fuzz_u16(&in, &len) || in.left < len)
                break;
            wisp_wbuf_reset(&bufs[n]);
            wisp_wbuf_bytes(&bufs[n], in.p, len);
            in.p += len;
            in.left -= len;
            /* raw bytes that decode are treated as the built frame below (a WELCOME
             * gets a harness config, a SHARD counts toward the work budget) */
            if (bufs[n].failed)
                abort();
            raw =
                wisp_proto_decode(bufs[n].data, bufs[n].len, WISP_PROTO_MAX_PAYLOAD, &m, NULL) != 0;
        } else if (!fuzz_built(&in, &m)) {
            break;
        }
        if (!raw) {
            int rebuild = op != 0;
            if (m.type == WISP_MSG_WELCOME) {
                rebuild = 1;
                int pick = m.payload_len ? m.payload[0] & 1 : 0;
                if (steps < 0)
                    steps = pick;
                m.payload = (const uint8_t *)S_CONFIGS[pick];
                m.payload_len = (uint32_t)strlen(S_CONFIGS[pick]);
            }
            if (m.type == WISP_MSG_SHARD && m.count <= WISP_PROTO_MAX_SHARD_ITEMS) {
                if (items + m.count > S_MAX_ITEMS)
                    break; /* bounded work per input, not a finding */
                items += m.count;
                sink.shard[sink.n_shards++] = m;
            }
            if (rebuild)
                fuzz_frame(&m, &bufs[n]);
        }
        if (bufs[n].failed)
            abort();
        frames[n].data = bufs[n].data;
        frames[n].len = bufs[n].len;
        n++;
    }
    wisp_worker_params_t p;
    wisp_worker_default_params(&p);
    p.endpoint = "fuzz";
    p.send = s_send;
    p.send_ctx = &sink;
    p.ops = steps == 1 ? &s_steps : NULL;
    wisp_error_t e = {0};
    int rc = wisp_worker_feed(&p, frames, n, NULL, &e);
    if (getenv("WISP_FUZZ_LOG"))
        fprintf(stderr, "%zu frames, rc %d, %ld results\n", n, rc, sink.results);
    FUZZ_CHECK(rc == 0 || rc == WISP_ERR_INTERRUPTED, "worker ended with %d: %s", rc, e.msg);
    return 0;
}
