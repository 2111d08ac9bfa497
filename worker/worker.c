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
    int rc = wisp_proto_send(w->sock, NULL, 0, m, 0);
    if (rc == 0)
        w->last_sent = wisp_now();
    return rc;
}

static int s_hello(s_worker_t *w)
{
    char host[64] = "?", text[256];
    gethostname(host, sizeof host - 1);
    snprintf(text, sizeof text,
             "{\"rank\":%d,\"size\":%d,\"host\":\"%.60s\",\"pid\":%ld,\"world\":\"%016llx\"}",
             w->p->rank, w->p->size, host, (long)getpid(), (unsigned long long)w->p->world);
    w->welcomed = 0;
    wisp_msg_t m = {.type = WISP_MSG_HELLO,
                    .payload = (const uint8_t *)text,
                    .payload_len = (uint32_t)strlen(text)};
    return s_send(w, &m);
}

static void s_clear_queue(s_worker_t *w)
{
    while (w->q_len) {
        zmq_msg_close(&w->queue[w->q_head]);
        w->q_head = (w->q_head + 1) % S_QUEUE;
        w->q_len--;
    }
}

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
    w->ops = wisp_job_find(w->cfg.kind);
    if (!w->ops)
        return wisp_error_set(w->err, WISP_ERR_UNSUPPORTED,
                              "job kind '%s' is not built into this worker", w->cfg.kind);
    if (w->p->set_blas_threads)
        openblas_set_num_threads(w->cfg.threads_per_worker);
    wisp_job_env_t env = {w->p->rank, w->p->size, w->p->mpi_comm, w->cfg.threads_per_worker};
    rc = w->ops->worker_open(&w->job, &w->cfg, &env, w->err);
    if (rc == 0)
        WISP_LOGI("joined as worker %u: job %s, %d BLAS threads", w->slot, w->cfg.kind,
                  w->cfg.threads_per_worker);
    if (rc == 0 && w->ops->steps) {
        /* Step jobs: say where this rank stands (its checkpoint) once set up. */
        wisp_wbuf_reset(&w->out);
        rc = w->ops->worker_ready(w->job, &w->out, w->err);
        if (rc == 0 && w->out.failed)
            rc = wisp_error_set(w->err, WISP_ERR_NOMEM, "out of memory");
        if (rc == 0) {
            wisp_msg_t ready = {.type = WISP_MSG_STEP_DONE,
                                .aux = WISP_STEP_READY,
                                .payload = w->out.data,
                                .payload_len = (uint32_t)w->out.len};
            rc = s_send(w, &ready);
        }
    }
    return rc;
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
        if (m.aux == 2 && !(w->ops && w->ops->steps)) {
            WISP_LOGW("the coordinator declared this worker dead: rejoining");
            s_clear_queue(w);
            rc = s_hello(w);
        } else {
            if (m.aux == WISP_STOP_FULL)
                WISP_LOGE("the coordinator refused this worker: it has as many workers as its "
                          "file descriptor limit allows (docs/CLUSTER.md, sizing)");
            w->stop = m.aux == 0 ? 1 : 2;
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
        wisp_msg_t hb = {.type = WISP_MSG_HEARTBEAT, .aux = items_done};
        s_send(w, &hb);
        if (s_pump(w, 0) != 0)
            return 1;
    }
    return s_stop_requested(w);
}

static int s_run_shard(s_worker_t *w, wisp_worker_stats_t *stats)
{
    zmq_msg_t *f = &w->queue[w->q_head];
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
        if (rc == 0 && w->out.failed)
            rc = wisp_error_set(w->err, WISP_ERR_NOMEM, "step %llu: out of memory",
                                (unsigned long long)m.shard);
        if (rc == 0) {
            wisp_msg_t r = {.type = WISP_MSG_STEP_DONE,
                            .shard = m.shard,
                            .aux = flags,
                            .payload = w->out.data,
                            .payload_len = (uint32_t)w->out.len};
            rc = s_send(w, &r);
            if (rc)
                wisp_error_set(w->err, rc, "sending STEP_DONE: %s", zmq_strerror(errno));
            stats->shards++;
        }
    } else if (rc == 0) {
        wisp_wbuf_reset(&w->out);
        double t0 = wisp_now();
        wisp_job_progress_t prog = {s_progress, w};
        wisp_wbuf_u32(&w->out, WISP_JOB_MAX_STAGES);
        for (int i = 0; i < WISP_JOB_MAX_STAGES; i++)
            wisp_wbuf_f64(&w->out, 0); /* patched below */
        rc = w->ops->worker_run(w->job, m.first, m.count, m.payload, m.payload_len, &w->out, st,
                                &prog, w->err);
        stats->busy_s += wisp_now() - t0;
        if (rc == 0 && w->out.failed)
            rc = wisp_error_set(w->err, WISP_ERR_NOMEM, "shard %llu: out of memory",
                                (unsigned long long)m.shard);
        if (rc == 0) {
            for (int i = 0; i < WISP_JOB_MAX_STAGES; i++)
                memcpy(w->out.data + 4 + 8 * i, &st[i], 8);
            wisp_msg_t r = {.type = WISP_MSG_RESULT,
                            .shard = m.shard,
                            .first = m.first,
                            .count = m.count,
                            .payload = w->out.data,
                            .payload_len = (uint32_t)w->out.len};
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
    return rc;
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
    if (!w.sock || zmq_setsockopt(w.sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
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
            wisp_msg_t hb = {.type = WISP_MSG_HEARTBEAT};
            s_send(&w, &hb);
        }
        long ms = (long)(1000 * w.heartbeat);
        if ((rc = s_pump(&w, ms < 1 ? 1 : ms > 200 ? 200 : ms)) != 0)
            break;
    }
    if (rc == WISP_ERR_INTERRUPTED)
        rc = WISP_OK, w.stop = 2;
    if (rc == WISP_OK && w.stop != 1) {
        /* Leaving early (signal or coordinator shutdown): say so, so the
         * coordinator re-leases our shards without waiting for the timeout. */
        if (w.welcomed) {
            wisp_msg_t bye = {.type = WISP_MSG_BYE};
            s_send(&w, &bye);
        }
        rc = WISP_ERR_INTERRUPTED;
    } else if (rc == WISP_OK && w.welcomed) {
        wisp_msg_t bye = {.type = WISP_MSG_BYE};
        s_send(&w, &bye);
    }
    WISP_LOGI("worker done: shards=%ld items=%ld busy_s=%.3f", stats->shards, stats->items,
              stats->busy_s);
done:
    s_clear_queue(&w);
    if (w.job)
        w.ops->worker_close(&w.job);
    if (w.have_cfg)
        wisp_jobcfg_free(&w.cfg);
    wisp_wbuf_free(&w.out);
    if (w.sock)
        zmq_close(w.sock);
    if (!params->zmq_ctx)
        zmq_ctx_term(ctx);
    return rc;
}
