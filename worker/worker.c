#include "worker.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/job.h"
#include "formats/jobcfg.h"
#include "base/log.h"
#include "dist/proto.h"
#include "base/util.h"

#define S_QUEUE    128        /* shards held locally (credit is at most 64) */
#define S_MAX_RECV (1u << 30) /* ZMQ_MAXMSGSIZE before the config is known */

typedef struct {
    const wisp_worker_params_t *p;
    void *sock;
    uint32_t slot; /* from WELCOME */
    int welcomed;
    int stop;                 /* 0 running, 1 STOP done, 2 STOP interrupted */
    int running;              /* inside the plug-in on queue[q_head] (which must stay put) */
    int rejoin;               /* STOP REJOIN heard while running: rejoin once it returns */
    zmq_msg_t queue[S_QUEUE]; /* SHARD frames waiting, ring */
    int q_head, q_len;
    double last_heard, last_sent, heartbeat;
    wisp_jobcfg_t cfg;
    int have_cfg;
    const wisp_job_ops_t *ops;
    void *job;
    wisp_wbuf_t out;
    int fatal; /* a fatal error recorded in err */
    wisp_error_t *err;
} s_worker_t;

void wisp_worker_default_params(wisp_worker_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->size = 1;
    p->timeout = 60;
}

static int s_send(s_worker_t *w, wisp_msg_t *m)
{
    m->worker = w->welcomed ? w->slot : WISP_PROTO_NO_WORKER;
    int rc;
    if (w->p->send)
        rc = w->p->send(w->p->send_ctx, m) ? WISP_ERR_NET : WISP_OK;
    else
        rc = wisp_proto_send(w->sock, NULL, 0, m, 0);
    if (rc == 0)
        w->last_sent = wisp_now();
    return rc;
}

static int s_hello(s_worker_t *w)
{
    wisp_proto_hello_t h = {.rank = (uint32_t)w->p->rank,
                            .size = (uint32_t)w->p->size,
                            .pid = (uint64_t)getpid(),
                            .world = w->p->world};
    gethostname(h.host, sizeof h.host - 1);
    w->welcomed = 0;
    wisp_msg_t m;
    int rc = wisp_proto_hello(&m, &w->out, &h);
    return rc ? rc : s_send(w, &m);
}

static void s_clear_queue(s_worker_t *w)
{
    while (w->q_len) {
        zmq_msg_close(&w->queue[w->q_head]);
        w->q_head = (w->q_head + 1) % S_QUEUE;
        w->q_len--;
    }
}

static int s_progress(void *ctx, uint32_t items_done);

static int s_welcome(s_worker_t *w, const wisp_msg_t *m)
{
    w->slot = m->worker;
    w->welcomed = 1;
    if (w->have_cfg)
        return WISP_OK; /* rejoining: same job */
    char *text = malloc((size_t)m->payload_len + 1);
    if (!text)
        return wisp_error_set(w->err, WISP_ERR_NOMEM, "out of memory");
    memcpy(text, m->payload ? (const char *)m->payload : "", m->payload_len);
    text[m->payload_len] = '\0';
    int rc = wisp_jobcfg_parse(&w->cfg, text, NULL, "WELCOME job config", NULL, 0, w->err);
    free(text);
    if (rc)
        return rc;
    w->have_cfg = 1;
    w->heartbeat = w->cfg.heartbeat;
    w->ops = w->p->ops ? w->p->ops : wisp_job_find(w->cfg.kind);
    if (!w->ops)
        return wisp_error_set(w->err, WISP_ERR_UNSUPPORTED,
                              "job kind '%s' is not built into this worker", w->cfg.kind);
    if (w->p->set_blas_threads)
        openblas_set_num_threads(w->cfg.threads_per_worker);
    wisp_job_env_t env = {
        w->p->rank, w->p->size, w->p->mpi_comm, w->cfg.threads_per_worker, {s_progress, w}};
    rc = w->ops->worker_open(&w->job, &w->cfg, &env, w->err);
    if (rc == 0)
        WISP_LOGI("joined as worker %u: job %s, %d BLAS threads", w->slot, w->cfg.kind,
                  w->cfg.threads_per_worker);
    if (rc == 0 && w->ops->steps) {
        /* Step jobs: say where this rank stands (its checkpoint) once set up. */
        wisp_wbuf_reset(&w->out);
        rc = w->ops->worker_ready(w->job, &w->out, w->err);
        wisp_msg_t ready;
        if (rc == 0 && wisp_proto_step_done(&ready, 0, WISP_STEP_READY, &w->out) != 0)
            rc = wisp_error_set(w->err, WISP_ERR_ARG, "READY payload of %zu bytes", w->out.len);
        if (rc == 0)
            rc = s_send(w, &ready);
    }
    return rc;
}

/* Drops every queued shard (their leases are gone) and says HELLO again. */
static int s_rejoin(s_worker_t *w)
{
    w->rejoin = 0;
    s_clear_queue(w);
    return s_hello(w);
}

/* Handles one frame from the coordinator; takes ownership of frame. */
static int s_on_frame(s_worker_t *w, zmq_msg_t *frame)
{
    wisp_error_t e = {0};
    wisp_msg_t m;
    int rc = WISP_OK;
    w->last_heard = wisp_now();
    if (wisp_proto_decode(zmq_msg_data(frame), zmq_msg_size(frame), S_MAX_RECV, &m, &e) != 0 ||
        !wisp_proto_is_coord_msg(m.type)) {
        WISP_LOGW("dropped a message from the coordinator: %s",
                  e.code ? e.msg : wisp_proto_type_name(m.type));
        zmq_msg_close(frame);
        return WISP_OK;
    }
    switch (m.type) {
    case WISP_MSG_WELCOME: rc = s_welcome(w, &m); break;
    case WISP_MSG_SHARD:
    case WISP_MSG_STEP:
        if ((m.type == WISP_MSG_STEP) != (w->ops && w->ops->steps)) {
            WISP_LOGW("dropped %s: not for this job kind", wisp_proto_type_name(m.type));
            break;
        }
        if (!w->welcomed || w->q_len == S_QUEUE) {
            WISP_LOGW("dropped SHARD %llu (%s)", (unsigned long long)m.shard,
                      w->welcomed ? "queue full" : "not welcomed");
            break;
        }
        zmq_msg_init(&w->queue[(w->q_head + w->q_len) % S_QUEUE]);
        zmq_msg_move(&w->queue[(w->q_head + w->q_len) % S_QUEUE], frame);
        w->q_len++;
        return WISP_OK;
    case WISP_MSG_STOP:
        if (m.aux == WISP_STOP_REJOIN && !(w->ops && w->ops->steps)) {
            WISP_LOGW("the coordinator declared this worker dead: rejoining");
            if (w->running)
                w->rejoin = 1; /* the running shard's frame and w->out are in use */
            else
                rc = s_rejoin(w);
        } else if (w->stop != 1) { /* once told the job is done, a later STOP changes nothing */
            if (m.aux == WISP_STOP_FULL)
                WISP_LOGE("the coordinator refused this worker: it has as many workers as its "
                          "file descriptor limit allows (docs/CLUSTER.md, sizing)");
            w->stop = m.aux == WISP_STOP_DONE ? 1 : 2;
        }
        break;
    default: /* HEARTBEAT: last_heard is all it is for */ break;
    }
    zmq_msg_close(frame);
    return rc;
}

/* Receives everything queued (waiting up to timeout_ms for the first frame). */
static int s_pump(s_worker_t *w, long timeout_ms)
{
    if (!w->sock)
        return WISP_OK; /* socket-less (wisp_worker_feed): frames come from the caller */
    zmq_pollitem_t item = {w->sock, 0, ZMQ_POLLIN, 0};
    if (timeout_ms > 0 && zmq_poll(&item, 1, timeout_ms) <= 0)
        return WISP_OK;
    for (;;) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, w->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            return WISP_OK;
        }
        int rc = s_on_frame(w, &f);
        if (rc)
            return rc;
    }
}

static int s_stop_requested(const s_worker_t *w)
{
    return w->stop || (w->p->stop && *w->p->stop);
}

/* Between items: heartbeat when due, pick up STOP. */
static int s_progress(void *ctx, uint32_t items_done)
{
    s_worker_t *w = ctx;
    if (wisp_now() - w->last_sent >= w->heartbeat) {
        wisp_msg_t hb = wisp_proto_heartbeat(items_done);
        s_send(w, &hb);
        if (s_pump(w, 0) != 0)
            return 1;
    }
    return w->rejoin || s_stop_requested(w); /* a lost lease: its result would be dropped */
}

static int s_run_shard(s_worker_t *w, wisp_worker_stats_t *stats)
{
    zmq_msg_t *f = &w->queue[w->q_head];
    w->running = 1;
    wisp_msg_t m;
    wisp_error_t e = {0};
    int rc = wisp_proto_decode(zmq_msg_data(f), zmq_msg_size(f), S_MAX_RECV, &m, &e);
    double st[WISP_JOB_MAX_STAGES] = {0};
    if (rc == 0 && m.type == WISP_MSG_STEP) {
        wisp_wbuf_reset(&w->out);
        double t0 = wisp_now();
        uint32_t flags = 0;
        rc = w->ops->worker_step(w->job, m.shard, m.aux, m.payload, m.payload_len, &w->out, &flags,
                                 w->err);
        stats->busy_s += wisp_now() - t0;
        wisp_msg_t r;
        if (rc == 0 && wisp_proto_step_done(&r, m.shard, flags, &w->out) != 0)
            rc = wisp_error_set(w->err, WISP_ERR_NOMEM, "step %llu: out of memory",
                                (unsigned long long)m.shard);
        if (rc == 0) {
            rc = s_send(w, &r);
            if (rc)
                wisp_error_set(w->err, rc, "sending STEP_DONE: %s", zmq_strerror(errno));
            stats->shards++;
        }
    } else if (rc == 0) {
        wisp_proto_result_begin(&w->out); /* stage timings first, filled in by _result */
        double t0 = wisp_now();
        wisp_job_progress_t prog = {s_progress, w};
        rc = w->ops->worker_run(w->job, m.first, m.count, m.payload, m.payload_len, &w->out, st,
                                &prog, w->err);
        stats->busy_s += wisp_now() - t0;
        wisp_msg_t r;
        if (rc == 0 && wisp_proto_result(&r, &w->out, m.shard, m.first, m.count, st) != 0)
            rc = wisp_error_set(w->err, WISP_ERR_NOMEM, "shard %llu: out of memory",
                                (unsigned long long)m.shard);
        if (rc == 0) {
            rc = s_send(w, &r);
            if (rc)
                wisp_error_set(w->err, rc, "sending RESULT: %s", zmq_strerror(errno));
            stats->shards++;
            stats->items += m.count;
        }
    }
    zmq_msg_close(f);
    w->q_head = (w->q_head + 1) % S_QUEUE;
    w->q_len--;
    w->running = 0;
    if (w->rejoin && (rc == WISP_OK || rc == WISP_ERR_INTERRUPTED) && !s_stop_requested(w))
        rc = s_rejoin(w); /* the shard was cut short because its lease is gone */
    return rc;
}

/* The loop ended with rc: says BYE when welcomed, and maps an early end
 * (signal, coordinator shutdown) to WISP_ERR_INTERRUPTED. */
static int s_leave(s_worker_t *w, int rc, const wisp_worker_stats_t *stats)
{
    if (rc == WISP_ERR_INTERRUPTED)
        rc = WISP_OK, w->stop = 2;
    if (w->welcomed) {
        /* Leaving, early or after a failure (e.g. the job could not open its model):
         * say so, so the coordinator re-leases our shards without waiting for the
         * lease to run out. */
        wisp_msg_t bye = wisp_proto_bye();
        s_send(w, &bye);
    }
    if (rc == WISP_OK && w->stop != 1)
        rc = WISP_ERR_INTERRUPTED;
    WISP_LOGI("worker done: shards=%ld items=%ld busy_s=%.3f", stats->shards, stats->items,
              stats->busy_s);
    return rc;
}

static void s_cleanup(s_worker_t *w)
{
    s_clear_queue(w);
    if (w->job)
        w->ops->worker_close(&w->job);
    if (w->have_cfg)
        wisp_jobcfg_free(&w->cfg);
    wisp_wbuf_free(&w->out);
    if (w->sock)
        zmq_close(w->sock);
}

int wisp_worker_run(const wisp_worker_params_t *params, wisp_worker_stats_t *stats,
                    wisp_error_t *err)
{
    wisp_worker_stats_t local = {0};
    if (!stats)
        stats = &local;
    s_worker_t w = {.p = params, .err = err, .heartbeat = 1.0};
    void *ctx = params->zmq_ctx ? params->zmq_ctx : zmq_ctx_new();
    int rc = WISP_OK;
    if (!ctx)
        return wisp_error_set(err, WISP_ERR_NET, "zmq_ctx_new: %s", zmq_strerror(errno));
    w.sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 2000;
    int64_t maxmsg = S_MAX_RECV;
    /* Our own routing id (random per worker, not per process: tests run workers as
     * threads; ZeroMQ reserves a leading 0 byte): the coordinator recognises this worker
     * by it when it rejoins, also over a new connection. */
    uint8_t rid[16] = {'w'};
    wisp_rng_t g;
    wisp_rng_seed(&g, (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&w ^
                          (uint64_t)(wisp_now() * 1e9));
    for (int i = 1; i < 16; i++)
        rid[i] = (uint8_t)wisp_rng_u64(&g);
    if (!w.sock || zmq_setsockopt(w.sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(w.sock, ZMQ_ROUTING_ID, rid, sizeof rid) != 0 ||
        zmq_setsockopt(w.sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) {
        rc = wisp_error_set(err, WISP_ERR_NET, "DEALER socket: %s", zmq_strerror(errno));
        goto done;
    }
    if (params->curve_server_public) {
        char server[41], pub[41], sec[41], path[4096];
        if ((rc = wisp_proto_read_key(params->curve_server_public, server, err)) != 0)
            goto done;
        snprintf(path, sizeof path, "%s.public", params->curve_key ? params->curve_key : "");
        if ((rc = wisp_proto_read_key(path, pub, err)) != 0)
            goto done;
        snprintf(path, sizeof path, "%s.secret", params->curve_key ? params->curve_key : "");
        if ((rc = wisp_proto_read_key(path, sec, err)) != 0)
            goto done;
        if (zmq_setsockopt(w.sock, ZMQ_CURVE_SERVERKEY, server, 41) != 0 ||
            zmq_setsockopt(w.sock, ZMQ_CURVE_PUBLICKEY, pub, 41) != 0 ||
            zmq_setsockopt(w.sock, ZMQ_CURVE_SECRETKEY, sec, 41) != 0) {
            rc = wisp_error_set(err, WISP_ERR_NET, "CURVE: %s", zmq_strerror(errno));
            goto done;
        }
    }
    if (zmq_connect(w.sock, params->endpoint) != 0) {
        rc = wisp_error_set(err, WISP_ERR_NET, "connect %s: %s", params->endpoint,
                            zmq_strerror(errno));
        goto done;
    }
    w.last_heard = wisp_now();
    if ((rc = s_hello(&w)) != 0) {
        wisp_error_set(err, rc, "HELLO to %s: %s", params->endpoint, zmq_strerror(errno));
        goto done;
    }
    while (!s_stop_requested(&w)) {
        stats->step_job = w.ops && w.ops->steps;
        if (w.q_len && w.welcomed) {
            if ((rc = s_run_shard(&w, stats)) != 0)
                break;
            if ((rc = s_pump(&w, 0)) != 0)
                break;
            continue;
        }
        double now = wisp_now();
        if (now - w.last_heard > params->timeout) {
            rc = wisp_error_set(err, WISP_ERR_NET, "%s: no word from the coordinator for %.0f s",
                                params->endpoint, now - w.last_heard);
            break;
        }
        if (w.welcomed && now - w.last_sent >= w.heartbeat) {
            wisp_msg_t hb = wisp_proto_heartbeat(0);
            s_send(&w, &hb);
        }
        long ms = (long)(1000 * w.heartbeat);
        if ((rc = s_pump(&w, ms < 1 ? 1 : ms > 200 ? 200 : ms)) != 0)
            break;
    }
    rc = s_leave(&w, rc, stats);
done:
    s_cleanup(&w);
    if (!params->zmq_ctx)
        zmq_ctx_term(ctx);
    return rc;
}

int wisp_worker_feed(const wisp_worker_params_t *params, const wisp_worker_frame_t *frames,
                     size_t n, wisp_worker_stats_t *stats, wisp_error_t *err)
{
    wisp_worker_stats_t local = {0};
    if (!stats)
        stats = &local;
    s_worker_t w = {.p = params, .err = err, .heartbeat = 1.0};
    if (!params->send)
        return wisp_error_set(err, WISP_ERR_ARG, "wisp_worker_feed: params->send is not set");
    int rc = s_hello(&w);
    for (size_t i = 0; rc == 0 && i < n && !s_stop_requested(&w); i++) {
        zmq_msg_t f;
        if (zmq_msg_init_size(&f, frames[i].len) != 0) {
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
            break;
        }
        if (frames[i].len)
            memcpy(zmq_msg_data(&f), frames[i].data, frames[i].len);
        rc = s_on_frame(&w, &f);
        /* as the loop does: run what is queued before reading on */
        while (rc == 0 && w.q_len && w.welcomed && !s_stop_requested(&w))
            rc = s_run_shard(&w, stats);
    }
    rc = s_leave(&w, rc, stats);
    s_cleanup(&w);
    return rc;
}
