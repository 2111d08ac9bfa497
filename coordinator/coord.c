#include "coord.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/job.h"
#include "lease.h"
#include "base/log.h"
#include "dist/proto.h"
#include "formats/manifest.h"
#include "nn/blas.h"
#include "base/util.h"

#define S_LOG_DROPS 20 /* dropped messages logged one by one before sampling */
/* Worker slots are never reused (lease.h), so this caps what HELLOs can make the
 * coordinator allocate: about 420 bytes each, 55 MB at the cap (docs/SECURITY.md). */
#define S_MAX_SLOTS (1 << 17)

/* Most frames kept while the job opens (s_open_answering); more are dropped (a worker
 * sends one HELLO, so this is 64 Ki workers). Only a frame no larger than a HELLO is
 * kept whole: a peer that has not completed HELLO must not make the coordinator hold
 * its frames (64 Ki frames of max_message_mb each). A larger one (a RESULT of a
 * worker of the previous coordinator: from an unknown slot, dropped once the job is
 * open anyway) keeps only its sender, for the heartbeats. At most about 64 Ki x 420
 * bytes, 27 MB, whatever the peers send (docs/SECURITY.md). */
#define S_MAX_EARLY       (1 << 16)
#define S_EARLY_FRAME_MAX (WISP_PROTO_HEADER_SIZE + WISP_PROTO_HELLO_MAX)

/* A frame received while the job opened, handled once it is open. */
typedef struct {
    uint8_t id[256];
    size_t id_len;
    uint8_t *body; /* malloc'd; NULL: larger than S_EARLY_FRAME_MAX, not kept */
    size_t len;
} s_early_t;

typedef struct {
    uint8_t id[256]; /* ROUTER routing id of the worker's DEALER */
    size_t id_len;
    int rank, size; /* MPI rank and world size it announced: 0 <= rank < size <= MAX_RANKS */
    long pid;
    char host[WISP_PROTO_HOST_MAX];
    uint64_t world;         /* id of its mpirun (0: none given) */
    double rejoin_asked;    /* time STOP(REJOIN) was last sent to this dead slot (0 never) */
    int ready;              /* step jobs: READY received */
    uint8_t *ready_payload; /* rank's READY payload (malloc'd) */
    size_t ready_len;
} s_peer_t;

struct wisp_coord {
    const wisp_jobcfg_t *cfg;
    const wisp_job_ops_t *ops;
    void *job; /* plug-in state */
    wisp_job_plan_t plan;
    wisp_lease_t *lease;
    s_peer_t *peers; /* one per lease worker slot */
    int cap_peers;
    wisp_coord_params_t params;
    void *ctx;
    int own_ctx;
    void *router;
    char endpoint[256];
    size_t max_payload;
    char *cfg_text;   /* WELCOME payload */
    wisp_wbuf_t wbuf; /* shard payload scratch */
    /* CURVE / ZAP */
    void *zap; /* REP socket on inproc://zeromq.zap.01 (owned by the ZAP thread while it runs) */
    pthread_t zap_thread;
    int zap_running;
    atomic_int zap_stop;
    uint8_t (*allowed)[32]; /* allowed worker public keys */
    int n_allowed;
    atomic_int zap_denied; /* handshakes refused (ZAP or failed CURVE handshakes) */
    void *monitor; /* PAIR on the ROUTER's monitor (owned by the ZAP thread while it runs) */
    /* frames that arrived while the job opened (handled first by wisp_coord_run) */
    s_early_t *early;
    size_t n_early, cap_early;
    uint64_t early_bytes; /* frame bytes kept while the job opened (counters) */
    /* stop */
    volatile sig_atomic_t stop_req;
    /* counters */
    size_t items_total, items_done, items_resumed, errors;
    double secs_total, secs_done; /* planned audio seconds (estimates where unknown) */
    double secs_audio; /* correction: decoded seconds minus planned, for committed shards */
    double stage_s[WISP_JOB_MAX_STAGES];
    uint64_t dropped, duplicates, workers_seen, workers_lost, results;
    uint64_t workers_refused;  /* HELLOs beyond max_workers */
    uint64_t workers_rejoined; /* HELLOs of workers that had a slot (declared dead, rejoined) */
    int max_workers;           /* connected workers accepted at once (descriptor limit) */
    double t_start, t_last_progress;
    double t_first_worker; /* first HELLO (0 before): rates exclude waiting for workers */
    double t_first_result, t_last_result; /* commits: steady-state rate without model loading */
    size_t items_first_result;            /* items of the first committed shard */
    size_t last_progress_items;
    int tty;
    int tty_dirty;
    cJSON *summary;
    /* step jobs */
    int active; /* a complete world is running steps */
    uint64_t active_world;
    int active_size;
    int *rank_slot;         /* active_size: worker slot of each rank */
    int in_flight;          /* steps issued and not reported by rank 0 */
    int final_done;         /* the FINAL step was reported */
    wisp_wbuf_t *step_bufs; /* active_size payload buffers */
    int n_step_bufs;
    long worlds; /* worlds activated */
};

void wisp_coord_default_params(wisp_coord_params_t *p)
{
    memset(p, 0, sizeof *p);
    p->resume = 1;
    p->progress_tty = -1;
    p->summary_out = stdout;
    p->linger = 1.0;
}

const char *wisp_coord_endpoint(const wisp_coord_t *self)
{
    return self->endpoint;
}
const cJSON *wisp_coord_summary(const wisp_coord_t *self)
{
    return self->summary;
}
void wisp_coord_counters(const wisp_coord_t *self, wisp_coord_counters_t *out)
{
    *out = (wisp_coord_counters_t){.dropped = self->dropped,
                                   .duplicates = self->duplicates,
                                   .workers_seen = self->workers_seen,
                                   .workers_lost = self->workers_lost,
                                   .requeued = wisp_lease_requeued(self->lease),
                                   .results = self->results,
                                   .live_workers = wisp_lease_live_workers(self->lease),
                                   .active_world = self->active,
                                   .early_bytes = self->early_bytes};
}

void wisp_coord_request_stop(wisp_coord_t *self)
{
    self->stop_req = 1;
}

static int s_stopping(const wisp_coord_t *self)
{
    return self->stop_req || (self->params.stop && *self->params.stop);
}

/* ---- dropped messages: logged, counted, never fatal ---- */

static void s_drop(wisp_coord_t *self, const char *why, const wisp_error_t *e)
{
    self->dropped++;
    if (self->dropped <= S_LOG_DROPS || self->dropped % 1000 == 0)
        WISP_LOGW("dropped message #%" PRIu64 ": %s%s%s", self->dropped, why, e ? ": " : "",
                  e ? e->msg : "");
}

/* ---- ZAP: CURVE client keys checked against the allowlist ---- */

/* One handshake failure reported by the ROUTER's monitor: a worker without CURVE (or
 * with another server key) never reaches ZAP, so it is counted and logged here. */
static void s_monitor_event(wisp_coord_t *self)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    if (zmq_msg_recv(&ev, self->monitor, 0) >= 0 && zmq_msg_more(&ev))
        zmq_msg_recv(&addr, self->monitor, 0);
    if (zmq_msg_size(&ev) == 6) { /* u16 event, u32 value (host order) */
        uint16_t id;
        memcpy(&id, zmq_msg_data(&ev), 2);
        if (id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            id == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            int n = atomic_fetch_add(&self->zap_denied, 1) + 1;
            if (n <= S_LOG_DROPS || n % 1000 == 0)
                WISP_LOGW("refused a worker connection #%d: CURVE handshake failed (a worker "
                          "without --curve-server, or with another coordinator's key)",
                          n);
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
}

static void *s_zap_main(void *arg)
{
    wisp_coord_t *self = arg;
    zmq_pollitem_t items[2] = {{self->zap, 0, ZMQ_POLLIN, 0}, {self->monitor, 0, ZMQ_POLLIN, 0}};
    while (!atomic_load(&self->zap_stop)) {
        if (zmq_poll(items, self->monitor ? 2 : 1, 100) <= 0)
            continue;
        if (self->monitor && (items[1].revents & ZMQ_POLLIN))
            s_monitor_event(self);
        if (!(items[0].revents & ZMQ_POLLIN))
            continue;
        zmq_msg_t f[8];
        int n = 0, more = 1;
        while (more && n < 8) {
            zmq_msg_init(&f[n]);
            if (zmq_msg_recv(&f[n], self->zap, 0) < 0) {
                zmq_msg_close(&f[n]);
                break;
            }
            more = zmq_msg_more(&f[n]);
            n++;
        }
        while (more) { /* a malformed request with too many frames: discard the rest */
            zmq_msg_t x;
            zmq_msg_init(&x);
            if (zmq_msg_recv(&x, self->zap, 0) < 0)
                more = 0;
            else
                more = zmq_msg_more(&x);
            zmq_msg_close(&x);
        }
        /* version, request id, domain, address, identity, mechanism, credentials... */
        int ok = 0;
        if (n >= 7 && zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
            zmq_msg_size(&f[6]) == 32) {
            for (int i = 0; i < self->n_allowed && !ok; i++)
                ok = memcmp(self->allowed[i], zmq_msg_data(&f[6]), 32) == 0;
        }
        if (!ok) {
            atomic_fetch_add(&self->zap_denied, 1);
            WISP_LOGW("refused a worker connection: %s",
                      n >= 7 ? "public key not in cluster.curve.client_keys"
                             : "malformed ZAP request");
        }
        if (n >= 2) {
            zmq_send(self->zap, "1.0", 3, ZMQ_SNDMORE);
            zmq_send(self->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
            zmq_send(self->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE);
            zmq_send(self->zap, ok ? "OK" : "unknown key", ok ? 2 : 11, ZMQ_SNDMORE);
            zmq_send(self->zap, "", 0, ZMQ_SNDMORE);
            zmq_send(self->zap, "", 0, 0);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
    zmq_close(self->zap);
    self->zap = NULL;
    if (self->monitor)
        zmq_close(self->monitor);
    self->monitor = NULL;
    return NULL;
}

static int s_setup_curve(wisp_coord_t *self, wisp_error_t *err)
{
    const wisp_jobcfg_t *cfg = self->cfg;
    char z85[41];
    int rc = wisp_proto_read_key(cfg->curve_server_secret, z85, err);
    if (rc)
        return rc;
    self->allowed = calloc((size_t)cfg->n_client_keys, sizeof *self->allowed);
    if (!self->allowed)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < cfg->n_client_keys; i++) {
        char pub[41];
        if ((rc = wisp_proto_read_key(cfg->client_keys[i], pub, err)) != 0)
            return rc;
        zmq_z85_decode(self->allowed[i], pub);
        self->n_allowed++;
    }
    /* The ZAP handler must be bound before the ROUTER accepts connections. */
    self->zap = zmq_socket(self->ctx, ZMQ_REP);
    int linger = 0;
    if (!self->zap || zmq_setsockopt(self->zap, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(self->zap, "inproc://zeromq.zap.01") != 0)
        return wisp_error_set(err, WISP_ERR_NET, "ZAP handler: %s", zmq_strerror(errno));
    /* Handshake failures (no CURVE at all) never reach ZAP: watch the ROUTER's
     * monitor for them (best effort: without it they are only not counted). */
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://wisp-monitor-%p", (void *)self);
    if (zmq_socket_monitor(self->router, mon,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0 &&
        (self->monitor = zmq_socket(self->ctx, ZMQ_PAIR)) != NULL &&
        (zmq_setsockopt(self->monitor, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
         zmq_connect(self->monitor, mon) != 0)) {
        zmq_close(self->monitor);
        self->monitor = NULL;
    }
    if (pthread_create(&self->zap_thread, NULL, s_zap_main, self) != 0)
        return wisp_error_set(err, WISP_ERR_NET, "ZAP handler: cannot start its thread");
    self->zap_running = 1;
    int one = 1;
    if (zmq_setsockopt(self->router, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(self->router, ZMQ_CURVE_SECRETKEY, z85, 41) != 0)
        return wisp_error_set(err, WISP_ERR_NET, "%s: CURVE: %s", cfg->curve_server_secret,
                              zmq_strerror(errno));
    WISP_LOGI("CURVE on: %d allowed worker keys", self->n_allowed);
    return WISP_OK;
}

/* ---- setup ---- */

/* Every worker connection is a descriptor of this process, and beyond RLIMIT_NOFILE
 * ZeroMQ cannot accept (it retries, spinning, and nothing reaches the coordinator):
 * raise the soft limit to the hard one and accept at most limit - reserve workers, so
 * the excess is refused by name at HELLO instead. Process-wide, hence logged. */
static void s_fd_limit(wisp_coord_t *self)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        self->max_workers = self->params.max_workers > 0 ? self->params.max_workers : INT_MAX;
        return;
    }
    rlim_t soft = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = soft;
    }
    long long lim =
        rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT_MAX ? INT_MAX : (long long)rl.rlim_cur;
    long long cap = lim > 2 * WISP_COORD_FD_RESERVE ? lim - WISP_COORD_FD_RESERVE : lim / 2;
    self->max_workers = cap < 1 ? 1 : (int)cap;
    if (self->params.max_workers > 0 && self->params.max_workers < self->max_workers)
        self->max_workers = self->params.max_workers;
    WISP_LOGI("file descriptors: limit %lld (soft was %lld, hard %lld): up to %d workers at once",
              lim, soft == RLIM_INFINITY ? -1LL : (long long)soft,
              rl.rlim_max == RLIM_INFINITY ? -1LL : (long long)rl.rlim_max, self->max_workers);
}

/* Shards of consecutive not-done items, cut by the manifest's cutter (one set of
 * rules, documented and tested in common/formats/manifest.h): about
 * cluster.shard_seconds of audio and at most cluster.shard_size items each; by count
 * alone when the plan has no durations. */
static int s_cut_shards(wisp_coord_t *self, wisp_lease_shard_t **out, size_t *n_out,
                        wisp_error_t *err)
{
    const wisp_job_plan_t *p = &self->plan;
    const wisp_jobcfg_t *cfg = self->cfg;
    for (size_t i = 0; i < p->n_items; i++) {
        double sec = p->seconds ? p->seconds[i] : 0;
        self->secs_total += sec;
        if (p->done && p->done[i]) {
            self->items_resumed++;
            self->secs_done += sec;
        }
    }
    wisp_shard_t *cut = NULL;
    size_t n = 0;
    int rc =
        wisp_manifest_cut(p->seconds, 0, p->done, p->n_items, p->seconds ? cfg->shard_seconds : 0,
                          cfg->shard_size > 0 ? (size_t)cfg->shard_size : 1, &cut, &n, err);
    if (rc)
        return rc;
    wisp_lease_shard_t *sh = malloc((n ? n : 1) * sizeof *sh);
    if (!sh) {
        free(cut);
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory for %zu shards", n);
    }
    for (size_t k = 0; k < n; k++) /* count <= shard_size, an int */
        sh[k] = (wisp_lease_shard_t){cut[k].begin, (uint32_t)(cut[k].end - cut[k].begin),
                                     cut[k].seconds};
    free(cut);
    *out = sh;
    *n_out = n;
    return WISP_OK;
}

/* 1 when only this host can reach ep: loopback TCP, ipc:// or inproc://. */
static int s_endpoint_is_local(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0)
        return 1;
    return strncmp(ep, "tcp://127.", 10) == 0 || strncmp(ep, "tcp://localhost:", 16) == 0 ||
           strncmp(ep, "tcp://[::1]:", 12) == 0;
}

static int s_bind(wisp_coord_t *self, wisp_error_t *err)
{
    const wisp_jobcfg_t *cfg = self->cfg;
    char ep[300];
    snprintf(ep, sizeof ep, "%s", cfg->endpoint);
    size_t len = strlen(ep);
    if (strncmp(ep, "tcp://", 6) == 0 && len > 2 && strcmp(ep + len - 2, ":0") == 0)
        strcpy(ep + len - 1, "*"); /* ZeroMQ's spelling of an ephemeral port */
    int one = 1, linger = 1000;
    int hwm = 1000 + 4 * cfg->credit;
    /* ZeroMQ's listen backlog is 100: when a whole world connects at once the SYNs
     * beyond it are dropped and retried by the kernel after 1, 3, 7 ... s, so 1 000
     * workers took tens of seconds to join. The kernel caps it at net.core.somaxconn. */
    int backlog =
        self->max_workers < 4096 ? (self->max_workers > 100 ? self->max_workers : 100) : 4096;
    int64_t maxmsg = (int64_t)(cfg->max_message_mb * 1048576.0);
    if (zmq_setsockopt(self->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(self->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(self->router, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(self->router, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(self->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(self->router, ZMQ_BACKLOG, &backlog, sizeof backlog) != 0)
        return wisp_error_set(err, WISP_ERR_NET, "ROUTER options: %s", zmq_strerror(errno));
    if (cfg->curve_server_secret[0]) {
        int rc = s_setup_curve(self, err);
        if (rc)
            return rc;
    } else if (!s_endpoint_is_local(ep)) {
        /* The stance of docs/SECURITY.md: without CURVE every host that reaches
         * the port is a trusted worker. Said once, loudly, where it is decided. */
        WISP_LOGW("%s is reachable from other hosts and CURVE is off: any peer that connects "
                  "can take shards and return results, and reads the job config; set "
                  "cluster.curve (docs/SECURITY.md)",
                  ep);
    }
    if (zmq_bind(self->router, ep) != 0)
        return wisp_error_set(err, WISP_ERR_NET, "bind %s: %s", ep, zmq_strerror(errno));
    size_t sz = sizeof self->endpoint;
    if (zmq_getsockopt(self->router, ZMQ_LAST_ENDPOINT, self->endpoint, &sz) != 0)
        return wisp_error_set(err, WISP_ERR_NET, "ZMQ_LAST_ENDPOINT: %s", zmq_strerror(errno));
    return WISP_OK;
}

/* ---- opening the job while answering workers ---- */

/* Keeps every frame queued on the ROUTER (single-frame messages only, up to
 * S_MAX_EARLY) for wisp_coord_run. */
static void s_early_recv(wisp_coord_t *self)
{
    for (;;) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, self->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            return;
        }
        zmq_msg_init(&body);
        int ok = zmq_msg_more(&id) && zmq_msg_recv(&body, self->router, 0) >= 0 &&
                 zmq_msg_size(&id) <= sizeof self->early[0].id;
        while (zmq_msg_more(&body)) { /* more than one frame: not ours */
            zmq_msg_close(&body);
            zmq_msg_init(&body);
            zmq_msg_recv(&body, self->router, 0);
            ok = 0;
        }
        if (ok && self->n_early == self->cap_early && self->cap_early < S_MAX_EARLY) {
            size_t cap = self->cap_early ? 2 * self->cap_early : 64;
            s_early_t *q = realloc(self->early, cap * sizeof *q);
            if (q) {
                self->early = q;
                self->cap_early = cap;
            }
        }
        size_t len = zmq_msg_size(&body);
        int keep_body = len <= S_EARLY_FRAME_MAX;
        uint8_t *b = ok && keep_body && self->n_early < self->cap_early ? malloc(len + 1) : NULL;
        if (b || (ok && !keep_body && self->n_early < self->cap_early)) {
            s_early_t *e = &self->early[self->n_early++];
            memcpy(e->id, zmq_msg_data(&id), zmq_msg_size(&id));
            e->id_len = zmq_msg_size(&id);
            if (b)
                memcpy(b, zmq_msg_data(&body), len);
            e->body = b;
            e->len = b ? len : 0;
            self->early_bytes += b ? len + 1 : 0;
        } else {
            s_drop(self, "message while the job opens", NULL);
        }
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
}

typedef struct {
    wisp_coord_t *self;
    atomic_int stop;
} s_answer_arg_t;

/* The answering thread: owns the ROUTER socket while the job opens (the main thread
 * does not touch it until the join), keeps every frame and sends each sender a
 * heartbeat every second. */
static void *s_answer_main(void *arg)
{
    s_answer_arg_t *a = arg;
    wisp_coord_t *self = a->self;
    zmq_pollitem_t item = {self->router, 0, ZMQ_POLLIN, 0};
    double next_hb = 0;
    int rounds = 0;
    while (!atomic_load(&a->stop)) {
        if (zmq_poll(&item, 1, 100) > 0)
            s_early_recv(self);
        double now = wisp_now();
        if (now < next_hb)
            continue;
        next_hb = now + 1.0;
        if (++rounds == 3)
            WISP_LOGI("opening the job (%s): %zu message(s) of workers waiting for it",
                      self->cfg->kind, self->n_early);
        wisp_msg_t hb = wisp_proto_heartbeat(0);
        for (size_t k = 0; k < self->n_early; k++)
            wisp_proto_send(self->router, self->early[k].id, self->early[k].id_len, &hb,
                            ZMQ_DONTWAIT);
    }
    return NULL;
}

/* Opens the job (in this thread: job state, HDF5 and BLAS stay where they always
 * were) while a second thread keeps the workers that connect alive: their frames are
 * kept for wisp_coord_run and each gets a heartbeat every second, so a long open (a
 * resume that rebuilds a large results file from its journal, a large manifest) does
 * not run out a worker's wait (wisp-worker --timeout, 60 s by default). When the open
 * fails they are told to stop. */
static int s_open_answering(wisp_coord_t *self, wisp_error_t *err)
{
    s_answer_arg_t a = {.self = self};
    pthread_t t;
    int threaded = pthread_create(&t, NULL, s_answer_main, &a) == 0;
    int rc = self->ops->coord_open(&self->job, self->cfg, self->params.resume, &self->plan, err);
    if (threaded) {
        atomic_store(&a.stop, 1);
        pthread_join(t, NULL);
    }
    if (rc != WISP_OK) {
        wisp_msg_t stop = wisp_proto_stop(WISP_STOP_INTERRUPTED);
        for (size_t k = 0; k < self->n_early; k++)
            wisp_proto_send(self->router, self->early[k].id, self->early[k].id_len, &stop,
                            ZMQ_DONTWAIT);
    }
    return rc;
}

/* The socket: bound, and its endpoint published, before the job opens. */
static int s_listen(wisp_coord_t *self, wisp_error_t *err)
{
    self->ctx = self->params.zmq_ctx;
    if (!self->ctx) {
        self->ctx = zmq_ctx_new();
        self->own_ctx = 1;
    }
    self->router = self->ctx ? zmq_socket(self->ctx, ZMQ_ROUTER) : NULL;
    if (!self->router)
        return wisp_error_set(err, WISP_ERR_NET, "ROUTER socket: %s", zmq_strerror(errno));
    int rc = s_bind(self, err);
    if (rc == WISP_OK && self->params.endpoint_file)
        rc = wisp_write_file_atomic(self->params.endpoint_file, self->endpoint,
                                    strlen(self->endpoint), err);
    return rc;
}

wisp_coord_t *wisp_coord_new(const wisp_jobcfg_t *cfg, const wisp_coord_params_t *params,
                             wisp_error_t *err)
{
    wisp_lease_shard_t *shards = NULL;
    size_t n_shards = 0;
    int rc = WISP_OK;
    wisp_coord_t *self = calloc(1, sizeof *self);
    if (!self) {
        wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    self->cfg = cfg;
    if (params)
        self->params = *params;
    else
        wisp_coord_default_params(&self->params);
    self->ops = self->params.ops ? self->params.ops : wisp_job_find(cfg->kind);
    if (!self->ops) {
        rc = wisp_error_set(err, WISP_ERR_UNSUPPORTED, "job kind '%s' is not built into this wisp",
                            cfg->kind);
        goto done;
    }
    self->max_payload = (size_t)(cfg->max_message_mb * 1048576.0) - WISP_PROTO_HEADER_SIZE;
    self->cfg_text = wisp_jobcfg_to_string(cfg);
    if (!self->cfg_text) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* A leftover endpoint file names an earlier run's port: remove it before the (maybe
     * long) open and resume, so workers wait for this run's instead of connecting there. */
    if (self->params.endpoint_file && unlink(self->params.endpoint_file) != 0 && errno != ENOENT) {
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: cannot remove the stale endpoint file: %s",
                            self->params.endpoint_file, strerror(errno));
        goto done;
    }
    s_fd_limit(self);
    /* Listening first: workers started with the coordinator are answered while the job
     * opens (socket-less coordinators, for tests and fuzzing, open directly). */
    if (self->params.send) {
        rc = self->ops->coord_open(&self->job, cfg, self->params.resume, &self->plan, err);
    } else if ((rc = s_listen(self, err)) == WISP_OK &&
               (rc = s_open_answering(self, err)) != WISP_OK && self->params.endpoint_file) {
        unlink(self->params.endpoint_file); /* no coordinator behind it any more */
    }
    if (rc != WISP_OK)
        goto done;
    self->items_total = self->plan.n_items;
    if ((rc = s_cut_shards(self, &shards, &n_shards, err)) != 0)
        goto done;
    self->lease = wisp_lease_new(shards, n_shards, cfg->credit, cfg->lease_timeout);
    if (!self->lease) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "out of memory for %zu shards", n_shards);
        goto done;
    }
    self->tty = self->params.progress_tty < 0 ? isatty(2) : self->params.progress_tty;
    if (self->params.send)
        goto done; /* socket-less (tests, fuzzing): frames arrive through wisp_coord_handle */
    WISP_LOGI("job=%s endpoint=%s items=%zu resumed=%zu shards=%zu audio_s=%.1f credit=%d "
              "lease_timeout=%g",
              cfg->kind, self->endpoint, self->items_total, self->items_resumed, n_shards,
              self->secs_total, cfg->credit, cfg->lease_timeout);
done:
    free(shards);
    if (rc) {
        wisp_coord_destroy(&self);
        return NULL;
    }
    return self;
}

void wisp_coord_destroy(wisp_coord_t **pself)
{
    if (!pself || !*pself)
        return;
    wisp_coord_t *self = *pself;
    if (self->zap_running) {
        atomic_store(&self->zap_stop, 1);
        pthread_join(self->zap_thread, NULL);
    } else {
        if (self->zap)
            zmq_close(self->zap);
        if (self->monitor)
            zmq_close(self->monitor);
    }
    if (self->router)
        zmq_close(self->router);
    if (self->own_ctx && self->ctx)
        zmq_ctx_term(self->ctx);
    if (self->ops && self->job)
        self->ops->coord_close(&self->job);
    wisp_job_plan_free(&self->plan);
    for (int w = 0; self->lease && w < wisp_lease_worker_count(self->lease); w++)
        free(self->peers[w].ready_payload);
    wisp_lease_destroy(&self->lease);
    wisp_wbuf_free(&self->wbuf);
    free(self->peers);
    for (int i = 0; i < self->n_step_bufs; i++)
        wisp_wbuf_free(&self->step_bufs[i]);
    free(self->step_bufs);
    free(self->rank_slot);
    free(self->allowed);
    free(self->cfg_text);
    for (size_t k = 0; k < self->n_early; k++)
        free(self->early[k].body);
    free(self->early);
    cJSON_Delete(self->summary);
    free(self);
    *pself = NULL;
}

/* ---- sending ---- */

static int s_send(wisp_coord_t *self, int w, wisp_msg_t *m)
{
    m->worker = (uint32_t)w;
    if (self->params.send)
        return self->params.send(self->params.send_ctx, self->peers[w].id, self->peers[w].id_len, m)
                   ? WISP_ERR_NET
                   : WISP_OK;
    return wisp_proto_send(self->router, self->peers[w].id, self->peers[w].id_len, m, ZMQ_DONTWAIT);
}

static void s_send_stop(wisp_coord_t *self, int w, wisp_stop_why_t why)
{
    wisp_msg_t m = wisp_proto_stop(why);
    s_send(self, w, &m);
}

static void s_world_check(wisp_coord_t *self);

static void s_lost(wisp_coord_t *self, int w, const char *why)
{
    size_t n = wisp_lease_drop_worker(self->lease, w);
    self->workers_lost++;
    WISP_LOGW("worker %d (rank %d pid %ld on %s) %s: %zu shards re-queued", w, self->peers[w].rank,
              self->peers[w].pid, self->peers[w].host, why, n);
    s_world_check(self);
}

/* Fills w's credit with shards. Returns nonzero on a fatal plug-in error. */
static int s_dispatch(wisp_coord_t *self, int w, double now, wisp_error_t *err)
{
    long s;
    while ((s = wisp_lease_next(self->lease, w, now)) >= 0) {
        const wisp_lease_shard_t *sh = wisp_lease_shard(self->lease, s);
        wisp_wbuf_reset(&self->wbuf);
        int rc = self->ops->coord_payload(self->job, sh->first, sh->count, &self->wbuf, err);
        wisp_msg_t m;
        if (rc == 0 && wisp_proto_shard(&m, (uint64_t)s, sh->first, sh->count, &self->wbuf) != 0)
            rc = wisp_error_set(err, WISP_ERR_NOMEM, "shard %ld: out of memory", s);
        if (rc == 0 && self->wbuf.len > self->max_payload)
            rc = wisp_error_set(err, WISP_ERR_ARG,
                                "shard %ld: payload of %zu bytes exceeds cluster.max_message_mb", s,
                                self->wbuf.len);
        if (rc)
            return rc;
        if (s_send(self, w, &m) != 0) {
            /* EHOSTUNREACH: the peer is gone; EAGAIN: it stopped reading. Either
             * way its leases (this one included) go back to the queue. */
            s_lost(self, w, errno == EHOSTUNREACH ? "is unreachable" : "stopped reading");
            return WISP_OK;
        }
    }
    return WISP_OK;
}

static int s_dispatch_all(wisp_coord_t *self, double now, wisp_error_t *err)
{
    int n = wisp_lease_worker_count(self->lease);
    for (int w = 0; w < n; w++)
        if (wisp_lease_worker_alive(self->lease, w) &&
            wisp_lease_held(self->lease, w) < self->cfg->credit) {
            int rc = s_dispatch(self, w, now, err);
            if (rc)
                return rc;
        }
    return WISP_OK;
}

/* ---- step jobs: one complete world at a time ---- */

/* Drops the active world when one of its ranks is gone (under Open MPI the
 * others die with it anyway); a relaunched world resumes from a checkpoint. */
static void s_world_check(wisp_coord_t *self)
{
    if (!self->active)
        return;
    int lost = 0;
    for (int r = 0; r < self->active_size; r++)
        lost |= !wisp_lease_worker_alive(self->lease, self->rank_slot[r]);
    if (!lost)
        return;
    if (self->final_done) { /* the ranks leave after the end, told so by STOP(0) */
        self->active = 0;
        self->in_flight = 0;
        return;
    }
    for (int r = 0; r < self->active_size; r++) {
        int w = self->rank_slot[r];
        self->peers[w].ready = 0;
        if (wisp_lease_worker_alive(self->lease, w)) {
            s_send_stop(self, w, WISP_STOP_INTERRUPTED);
            wisp_lease_drop_worker(self->lease, w);
        }
    }
    self->active = 0;
    self->in_flight = 0;
    if (self->final_done)
        return; /* the ranks leave after the end: nothing lost */
    self->workers_lost++;
    WISP_LOGW("lost a rank of world %016" PRIx64 ": waiting for relaunched workers (they resume "
              "from the newest checkpoint)",
              self->active_world);
}

/* Issues steps to the active world up to the credit. */
static int s_pump_steps(wisp_coord_t *self, wisp_error_t *err)
{
    while (self->active && self->in_flight < self->cfg->credit) {
        uint64_t step = 0;
        uint32_t flags = 0;
        int r = self->ops->coord_step(self->job, self->active_size, &step, &flags, self->step_bufs,
                                      err);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        for (int k = 0; k < self->active_size; k++) {
            wisp_msg_t m;
            if (wisp_proto_step(&m, step, flags, &self->step_bufs[k]) != 0 ||
                self->step_bufs[k].len > self->max_payload)
                return wisp_error_set(err, WISP_ERR_NOMEM,
                                      "step %" PRIu64 ": out of memory or over "
                                      "cluster.max_message_mb",
                                      step);
            if (s_send(self, self->rank_slot[k], &m) != 0) {
                s_lost(self, self->rank_slot[k], "is unreachable");
                return WISP_OK;
            }
        }
        self->in_flight++;
    }
    return WISP_OK;
}

static int s_try_activate(wisp_coord_t *self, wisp_error_t *err)
{
    if (self->active || self->final_done || s_stopping(self))
        return WISP_OK;
    int n = wisp_lease_worker_count(self->lease);
    for (int w0 = 0; w0 < n; w0++) {
        s_peer_t *p0 = &self->peers[w0];
        if (!wisp_lease_worker_alive(self->lease, w0) || !p0->ready || p0->rank != 0)
            continue;
        /* Count the world's ready ranks before allocating anything: the table
         * below is sized by the world's announced size, so it is only built once
         * that many peers have joined (a lone HELLO claiming a huge world costs
         * nothing). */
        int size = p0->size, found = 0, members = 0;
        for (int w = 0; w < n; w++) {
            const s_peer_t *p = &self->peers[w];
            members += wisp_lease_worker_alive(self->lease, w) && p->ready &&
                       p->world == p0->world && p->size == size;
        }
        if (members < size)
            continue;
        int *slots = malloc((size_t)size * sizeof *slots);
        if (!slots)
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        for (int r = 0; r < size; r++)
            slots[r] = -1;
        for (int w = 0; w < n; w++) {
            s_peer_t *p = &self->peers[w];
            if (wisp_lease_worker_alive(self->lease, w) && p->ready && p->world == p0->world &&
                p->size == size && p->rank >= 0 && p->rank < size) {
                found += slots[p->rank] < 0;
                slots[p->rank] = w;
            }
        }
        if (found < size) {
            free(slots);
            continue;
        }
        if (self->n_step_bufs < size) {
            wisp_wbuf_t *b = realloc(self->step_bufs, (size_t)size * sizeof *b);
            if (!b) {
                free(slots);
                return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
            }
            memset(b + self->n_step_bufs, 0, (size_t)(size - self->n_step_bufs) * sizeof *b);
            self->step_bufs = b;
            self->n_step_bufs = size;
        }
        free(self->rank_slot);
        self->rank_slot = slots;
        self->active_size = size;
        self->active_world = p0->world;
        int rc = self->ops->coord_resume(self->job, p0->ready_payload, p0->ready_len, err);
        if (rc)
            return rc;
        self->active = 1;
        self->in_flight = 0;
        self->worlds++;
        WISP_LOGI("world %016" PRIx64 " of %d ranks is running", self->active_world, size);
        return s_pump_steps(self, err);
    }
    return WISP_OK;
}

static int s_step_done(wisp_coord_t *self, int w, const wisp_msg_t *m, wisp_error_t *err)
{
    s_peer_t *p = &self->peers[w];
    if (m->aux & WISP_STEP_READY) {
        free(p->ready_payload);
        p->ready_payload = malloc(m->payload_len ? m->payload_len : 1);
        if (!p->ready_payload)
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory");
        if (m->payload_len)
            memcpy(p->ready_payload, m->payload, m->payload_len);
        p->ready_len = m->payload_len;
        p->ready = 1;
        return s_try_activate(self, err);
    }
    /* The rank indexes rank_slot[active_size]: a peer of another world (or one
     * whose HELLO announced another size) may carry any rank below its own size. */
    if (!self->active || p->world != self->active_world || p->rank < 0 ||
        p->rank >= self->active_size || self->rank_slot[p->rank] != w) {
        s_drop(self, "STEP_DONE from a worker outside the running world", NULL);
        return WISP_OK;
    }
    if (p->rank != 0)
        return WISP_OK; /* the other ranks' reports only prove they are alive */
    wisp_error_t e = {0};
    int rc =
        self->ops->coord_step_done(self->job, m->shard, m->aux, m->payload, m->payload_len, &e);
    if (rc == WISP_ERR_FORMAT) {
        s_drop(self, "bad STEP_DONE", &e);
        return WISP_OK;
    }
    if (rc)
        return wisp_error_set(err, rc, "%s", e.msg);
    self->in_flight--;
    self->results++;
    long done = 0, total = 0;
    double loss = 0;
    self->ops->coord_progress(self->job, &done, &total, &loss);
    if (self->in_flight == 0) {
        rc = s_pump_steps(self, err);
        if (rc == 0 && self->in_flight == 0)
            self->final_done = 1; /* nothing more to issue and everything reported */
        return rc;
    }
    return s_pump_steps(self, err);
}

/* ---- receiving ---- */

/* A HELLO beyond max_workers: STOP(FULL) straight to its routing id (it gets no slot),
 * and a reason in the log (sampled like dropped messages). */
static void s_refuse_full(wisp_coord_t *self, const void *id, size_t id_len,
                          const wisp_proto_hello_t *h)
{
    self->workers_refused++;
    if (self->workers_refused <= S_LOG_DROPS || self->workers_refused % 1000 == 0)
        WISP_LOGW("refused worker #%" PRIu64 " (rank %u on %s): %d workers connected, the most "
                  "this coordinator's file descriptor limit allows (raise the hard ulimit -n, "
                  "docs/CLUSTER.md)",
                  self->workers_refused, h->rank, h->host[0] ? h->host : "?", self->max_workers);
    wisp_msg_t m = wisp_proto_stop(WISP_STOP_FULL);
    m.worker = WISP_PROTO_NO_WORKER;
    if (self->params.send)
        self->params.send(self->params.send_ctx, id, id_len, &m);
    else
        wisp_proto_send(self->router, id, id_len, &m, ZMQ_DONTWAIT);
}

/* STOP(why) straight to a routing id that has no slot. */
static void s_stop_id(wisp_coord_t *self, const void *id, size_t id_len, uint32_t why)
{
    wisp_msg_t m = wisp_proto_stop(why);
    m.worker = WISP_PROTO_NO_WORKER;
    if (self->params.send)
        self->params.send(self->params.send_ctx, id, id_len, &m);
    else
        wisp_proto_send(self->router, id, id_len, &m, ZMQ_DONTWAIT);
}

/* The slot this HELLO's sender already has, or -1. A worker is its routing id: each
 * worker sets its own (ZMQ_ROUTING_ID, random per worker) and the ROUTER hands the id
 * over to a new connection (ZMQ_ROUTER_HANDOVER), so a worker that rejoins after
 * STOP(REJOIN), over the same connection or after a reconnect, is found again. */
static int s_find_peer(const wisp_coord_t *self, const void *id, size_t id_len)
{
    int n = wisp_lease_worker_count(self->lease);
    for (int w = 0; w < n; w++)
        if (self->peers[w].id_len == id_len && !memcmp(self->peers[w].id, id, id_len))
            return w;
    return -1;
}

/* A relaunched world: rank r of a new world on the host where rank r of another world
 * (another process) still holds a live slot. Under Open MPI that world is gone (a dead
 * rank ends it), so its shards are re-queued now instead of after the lease. Were it
 * still alive it would lose only time: its workers rejoin (STOP(REJOIN)) and late
 * results count once. */
static void s_take_over(wisp_coord_t *self, const wisp_proto_hello_t *h)
{
    if (!h->world)
        return;
    int n = wisp_lease_worker_count(self->lease);
    for (int w = 0; w < n; w++) {
        const s_peer_t *p = &self->peers[w];
        if (wisp_lease_worker_alive(self->lease, w) && p->world && p->world != h->world &&
            p->rank == (int)h->rank && p->pid != (long)h->pid &&
            !strcmp(p->host, h->host[0] ? h->host : "?"))
            s_lost(self, w, "was replaced by the same rank of a relaunched world");
    }
}

/* The slot for a HELLO: the sender's own slot when it rejoins (revived, no new slot;
 * the shards it held are re-queued: it dropped its queue), else a new one. -1 when the
 * sender is refused, a negative error on out of memory. */
static int s_slot_for(wisp_coord_t *self, const void *id, size_t id_len,
                      const wisp_proto_hello_t *h, double now, int *slot, wisp_error_t *err)
{
    /* the slot goes to *slot (-1: refused, already said): the return value is only
     * 0 or a fatal error, which "-1" would otherwise be (WISP_ERR_NOMEM) */
    int w = s_find_peer(self, id, id_len);
    *slot = -1;
    if (w >= 0) {
        size_t n = wisp_lease_drop_worker(self->lease, w);
        wisp_lease_revive_worker(self->lease, w, now);
        self->workers_rejoined++;
        WISP_LOGI("worker %d rejoined as itself (rank %u pid %" PRIu64 " on %s; %zu shards "
                  "re-queued)",
                  w, h->rank, h->pid, h->host, n);
        *slot = w;
        return WISP_OK;
    }
    if (wisp_lease_worker_count(self->lease) >= S_MAX_SLOTS) {
        s_drop(self, "HELLO beyond the cap on worker slots", NULL);
        return WISP_OK;
    }
    if (wisp_lease_live_workers(self->lease) >= self->max_workers) {
        s_refuse_full(self, id, id_len, h);
        return WISP_OK;
    }
    s_take_over(self, h);
    if (wisp_lease_worker_count(self->lease) >= self->cap_peers) {
        int cap = self->cap_peers ? 2 * self->cap_peers : 16;
        s_peer_t *p = realloc(self->peers, (size_t)cap * sizeof *p);
        if (!p)
            return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory for workers");
        self->peers = p;
        self->cap_peers = cap;
    }
    w = wisp_lease_add_worker(self->lease, now);
    if (w < 0)
        return wisp_error_set(err, WISP_ERR_NOMEM, "out of memory for workers");
    self->peers[w].ready_payload = NULL;
    self->workers_seen++;
    WISP_LOGI("worker %d joined: rank %u/%u pid %" PRIu64 " on %s", w, h->rank, h->size, h->pid,
              h->host[0] ? h->host : "?");
    *slot = w;
    return WISP_OK;
}

static int s_hello(wisp_coord_t *self, const void *id, size_t id_len, const wisp_msg_t *m,
                   double now, int finished, wisp_error_t *err)
{
    /* Nothing is allocated before the HELLO is known good: the payload is
     * fixed-size binary read into the stack, every field range-checked. */
    wisp_error_t e = {0};
    wisp_proto_hello_t h;
    if (id_len > sizeof self->peers[0].id || id_len == 0) {
        s_drop(self, "HELLO with a routing id over 255 bytes", NULL);
        return WISP_OK;
    }
    if (wisp_proto_hello_read(m, &h, &e) != 0) {
        s_drop(self, "bad HELLO", &e);
        return WISP_OK;
    }
    if (self->t_first_worker == 0)
        self->t_first_worker = now;
    if (finished || s_stopping(self)) {
        s_stop_id(self, id, id_len, finished ? WISP_STOP_DONE : WISP_STOP_INTERRUPTED);
        return WISP_OK;
    }
    int w, rc = s_slot_for(self, id, id_len, &h, now, &w, err);
    if (rc || w < 0)
        return rc;
    s_peer_t *peer = &self->peers[w];
    free(peer->ready_payload);
    memset(peer, 0, sizeof *peer);
    memcpy(peer->id, id, id_len);
    peer->id_len = id_len;
    peer->rank = (int)h.rank; /* both <= WISP_PROTO_MAX_RANKS, pid <= INT32_MAX (checked) */
    peer->size = (int)h.size;
    peer->pid = (long)h.pid;
    peer->world = h.world;
    snprintf(peer->host, sizeof peer->host, "%s", h.host[0] ? h.host : "?");
    wisp_msg_t welcome;
    wisp_proto_welcome(&welcome, (uint32_t)w, self->cfg_text, strlen(self->cfg_text));
    if (s_send(self, w, &welcome) != 0) {
        s_lost(self, w, "is unreachable");
        return WISP_OK;
    }
    return self->ops->steps ? WISP_OK : s_dispatch(self, w, now, err);
}

static int s_result(wisp_coord_t *self, int w, const wisp_msg_t *m, double now, wisp_error_t *err)
{
    wisp_error_t e = {0};
    const wisp_lease_shard_t *sh =
        wisp_lease_shard(self->lease, m->shard > (uint64_t)LONG_MAX ? -1 : (long)m->shard);
    if (!sh || sh->first != m->first || sh->count != m->count) {
        s_drop(self, "RESULT for an unknown shard", NULL);
        return WISP_OK;
    }
    long s = (long)m->shard;
    int verdict = wisp_lease_complete(self->lease, w, s);
    if (verdict == WISP_LEASE_UNKNOWN) {
        s_drop(self, "RESULT for a shard this worker does not hold", NULL);
        return WISP_OK;
    }
    if (verdict == WISP_LEASE_DUPLICATE) {
        self->duplicates++;
        WISP_LOGD("duplicate result for shard %ld from worker %d dropped", s, w);
        return s_dispatch(self, w, now, err);
    }
    double st[WISP_PROTO_MAX_STAGES];
    const uint8_t *rest;
    size_t rest_len;
    uint32_t n_err = 0;
    double audio = -1;
    int rc = wisp_proto_result_read(m, st, &rest, &rest_len, &e);
    if (rc == 0)
        rc = self->ops->coord_commit(self->job, sh->first, sh->count, rest, rest_len, &n_err,
                                     &audio, &e);
    if (rc == WISP_ERR_FORMAT || rc == WISP_ERR_ARG) {
        wisp_lease_uncommit(self->lease, w, s);
        s_drop(self, "RESULT payload refused", &e);
        return s_dispatch(self, w, now, err);
    }
    if (rc)
        return wisp_error_set(err, rc, "%s", e.msg);
    self->results++;
    if (self->t_first_result == 0) {
        self->t_first_result = now;
        self->items_first_result = sh->count;
    }
    self->t_last_result = now;
    self->items_done += sh->count;
    self->secs_done += sh->seconds;
    if (audio >= 0) /* the real durations replace the plan's estimate */
        self->secs_audio += audio - sh->seconds;
    self->errors += n_err;
    for (int i = 0; i < WISP_PROTO_MAX_STAGES; i++)
        self->stage_s[i] += st[i];
    return wisp_lease_worker_alive(self->lease, w) ? s_dispatch(self, w, now, err) : WISP_OK;
}

/* Handles one message. Returns nonzero only on a fatal error. */
/* Step jobs: the ranks of the running world live and die together. A rank waiting in
 * a collective for a slower one cannot send heartbeats, so word from any rank of the
 * world renews every rank's lease; a world where no rank is heard from expires. */
static void s_touch_world(wisp_coord_t *self, int w, double now)
{
    if (!self->ops->steps || !self->active || self->peers[w].world != self->active_world ||
        self->peers[w].rank < 0 || self->peers[w].rank >= self->active_size ||
        self->rank_slot[self->peers[w].rank] != w)
        return;
    for (int r = 0; r < self->active_size; r++)
        if (wisp_lease_worker_alive(self->lease, self->rank_slot[r]))
            wisp_lease_touch(self->lease, self->rank_slot[r], now);
}

static int s_handle(wisp_coord_t *self, const void *id, size_t id_len, const void *buf, size_t len,
                    double now, int finished, wisp_error_t *err)
{
    wisp_error_t e = {0};
    wisp_msg_t m;
    if (wisp_proto_decode(buf, len, self->max_payload, &m, &e) != 0) {
        s_drop(self, "malformed", &e);
        return WISP_OK;
    }
    if (!wisp_proto_is_worker_msg(m.type)) {
        wisp_error_set(&e, WISP_ERR_FORMAT, "type %s", wisp_proto_type_name(m.type));
        s_drop(self, "unexpected message from a worker", &e);
        return WISP_OK;
    }
    if (m.type == WISP_MSG_HELLO)
        return s_hello(self, id, id_len, &m, now, finished, err);
    int w = (int)m.worker;
    if (m.worker >= (uint32_t)wisp_lease_worker_count(self->lease) ||
        self->peers[w].id_len != id_len || memcmp(self->peers[w].id, id, id_len) != 0) {
        s_drop(self, "message from an unknown worker slot", NULL);
        return WISP_OK;
    }
    int alive = wisp_lease_worker_alive(self->lease, w);
    if (alive) {
        wisp_lease_touch(self->lease, w, now);
        s_touch_world(self, w, now);
    }
    switch (m.type) {
    case WISP_MSG_RESULT: return s_result(self, w, &m, now, err);
    case WISP_MSG_HEARTBEAT:
        if (finished || s_stopping(self)) {
            s_send_stop(self, w, finished ? WISP_STOP_DONE : WISP_STOP_INTERRUPTED);
        } else if (!alive) {
            /* Declared dead earlier: ask for one fresh HELLO. After a link cut longer than
             * the lease every queued heartbeat arrives at once: asking once per lease
             * keeps them from each starting a rejoin (and a slot). */
            if (now - self->peers[w].rejoin_asked > self->cfg->lease_timeout) {
                self->peers[w].rejoin_asked = now;
                s_send_stop(self, w, WISP_STOP_REJOIN);
            }
        } else {
            wisp_msg_t hb = wisp_proto_heartbeat(0);
            if (s_send(self, w, &hb) != 0)
                s_lost(self, w, "is unreachable");
        }
        return WISP_OK;
    case WISP_MSG_BYE:
        if (alive) {
            size_t n = wisp_lease_drop_worker(self->lease, w);
            WISP_LOGI("worker %d left (%zu shards re-queued)", w, n);
            s_world_check(self);
        }
        return WISP_OK;
    case WISP_MSG_STEP_DONE:
        if (self->ops->steps && alive)
            return s_step_done(self, w, &m, err);
        s_drop(self, "STEP_DONE for a map job or from a dropped worker", NULL);
        return WISP_OK;
    default: s_drop(self, "message type not used by map jobs", NULL); return WISP_OK;
    }
}

int wisp_coord_handle(wisp_coord_t *self, const void *id, size_t id_len, const void *frame,
                      size_t len, double now, wisp_error_t *err)
{
    return s_handle(self, id, id_len, frame, len, now, 0, err);
}

int wisp_coord_tick(wisp_coord_t *self, double now, wisp_error_t *err)
{
    int dead[64];
    size_t nd = wisp_lease_expire(self->lease, now, dead, 64);
    self->workers_lost += nd; /* (more than 64 at once are counted, not named) */
    for (size_t i = 0; i < nd && i < 64; i++) {
        const s_peer_t *p = &self->peers[dead[i]];
        WISP_LOGW("worker %d (rank %d pid %ld on %s) silent for over %g s: its shards are "
                  "re-queued",
                  dead[i], p->rank, p->pid, p->host, self->cfg->lease_timeout);
    }
    if (nd)
        s_world_check(self);
    return self->ops->steps ? s_try_activate(self, err) : s_dispatch_all(self, now, err);
}

/* Receives and handles every queued message (at most max). Returns the number
 * handled, or a negative error. */
static int s_drain(wisp_coord_t *self, int max, int finished, wisp_error_t *err)
{
    int handled = 0;
    double now = wisp_now();
    while (handled < max) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, self->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            break;
        }
        handled++;
        if (!zmq_msg_more(&id)) {
            zmq_msg_close(&id);
            s_drop(self, "empty message", NULL);
            continue;
        }
        zmq_msg_init(&body);
        zmq_msg_recv(&body, self->router, 0);
        int extra = 0;
        while (zmq_msg_more(&body)) { /* more than one frame: not ours */
            zmq_msg_close(&body);
            zmq_msg_init(&body);
            zmq_msg_recv(&body, self->router, 0);
            extra = 1;
        }
        int rc = WISP_OK;
        if (extra)
            s_drop(self, "multi-frame message", NULL);
        else
            rc = s_handle(self, zmq_msg_data(&id), zmq_msg_size(&id), zmq_msg_data(&body),
                          zmq_msg_size(&body), now, finished, err);
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        if (rc)
            return rc;
    }
    return handled;
}

/* ---- progress and summary ---- */

static void s_progress(wisp_coord_t *self, double now, int final)
{
    size_t done = self->items_done + self->items_resumed;
    double el = now - self->t_start;
    double dt = now - self->t_last_progress;
    double rate = dt > 0 ? (double)(self->items_done - self->last_progress_items) / dt : 0;
    double avg = el > 0 ? (double)self->items_done / el : 0;
    double eta = avg > 0 ? (double)(self->items_total - done) / avg : -1;
    int live = wisp_lease_live_workers(self->lease);
    if (self->ops->steps) {
        long sd = 0, st = 0;
        double loss = 0;
        self->ops->coord_progress(self->job, &sd, &st, &loss);
        char note[128] = "";
        if (self->ops->coord_progress_note)
            self->ops->coord_progress_note(self->job, note, sizeof note);
        /* Through the log's progress line: log lines no longer overwrite it. */
        if (self->tty) {
            wisp_log_progress("step %ld/%ld  loss %.4f  %s%sworkers %d%s", sd, st, loss, note,
                              note[0] ? "  " : "", live,
                              self->active ? "" : " (waiting for a complete world)");
            if (final)
                wisp_log_progress_end();
        } else
            WISP_LOGI("progress steps=%ld/%ld loss=%.5f %s%sworkers=%d running=%d", sd, st, loss,
                      note, note[0] ? " " : "", live, self->active);
        self->t_last_progress = now;
        return;
    }
    if (self->tty) {
        char etas[32];
        if (eta >= 0)
            snprintf(etas, sizeof etas, "%d:%02d:%02d", (int)eta / 3600, (int)eta / 60 % 60,
                     (int)eta % 60);
        else
            snprintf(etas, sizeof etas, "--:--:--");
        /* Without known durations there is no planned total: the decoded audio so far. */
        char audio[64];
        if (self->secs_total > 0)
            snprintf(audio, sizeof audio, "%.2f/%.2f audio h", self->secs_done / 3600,
                     self->secs_total / 3600);
        else
            snprintf(audio, sizeof audio, "%.2f audio h decoded",
                     (self->secs_done + self->secs_audio) / 3600);
        wisp_log_progress("%zu/%zu files (%.1f%%)  %s  %.0f files/s  ETA %s  workers %d  "
                          "errors %zu",
                          done, self->items_total,
                          self->items_total ? 100.0 * (double)done / (double)self->items_total
                                            : 100.0,
                          audio, rate, etas, live, self->errors + self->plan.n_errors_done);
        if (final)
            wisp_log_progress_end();
    } else {
        WISP_LOGI(
            "progress items=%zu/%zu audio_h=%.3f/%.3f rate=%.1f eta_s=%.0f workers=%d errors=%zu",
            done, self->items_total, self->secs_done / 3600, self->secs_total / 3600, rate, eta,
            live, self->errors + self->plan.n_errors_done);
    }
    self->t_last_progress = now;
    self->last_progress_items = self->items_done;
}

static void s_summary(wisp_coord_t *self, const char *status, double wall)
{
    cJSON *s = self->summary = cJSON_CreateObject();
    if (!s)
        return;
    double audio = self->secs_done + self->secs_audio;
    /* Rates over the time workers were there (startup of mpirun and model loads
     * before the first HELLO are not the pipeline's speed). */
    double busy = self->t_first_worker > 0 ? wisp_now() - self->t_first_worker : wall;
    if (busy > wall)
        busy = wall;
    cJSON_AddStringToObject(s, "job", self->cfg->kind);
    cJSON_AddStringToObject(s, "status", status);
    cJSON_AddStringToObject(s, "blas", wisp_blas_summary()); /* this process's; nn/blas.h */
    cJSON_AddNumberToObject(s, "items_total", (double)self->items_total);
    cJSON_AddNumberToObject(s, "items_done", (double)(self->items_done + self->items_resumed));
    cJSON_AddNumberToObject(s, "items_this_run", (double)self->items_done);
    cJSON_AddNumberToObject(s, "items_resumed", (double)self->items_resumed);
    /* errors: every error row of the output (an earlier run's included), which the
     * exit status follows; errors_this_run: the rows committed now */
    cJSON_AddNumberToObject(s, "errors", (double)(self->errors + self->plan.n_errors_done));
    cJSON_AddNumberToObject(s, "errors_this_run", (double)self->errors);
    cJSON_AddNumberToObject(s, "shards", (double)wisp_lease_shard_count(self->lease));
    cJSON_AddNumberToObject(s, "wall_s", wall);
    cJSON_AddNumberToObject(s, "workers_wall_s", busy);
    cJSON_AddNumberToObject(s, "files_per_s", busy > 0 ? (double)self->items_done / busy : 0);
    /* Steady state: items after the first commit over the time to the last one
     * (excludes mpirun startup and model loading). */
    double steady = self->t_last_result - self->t_first_result;
    cJSON_AddNumberToObject(
        s, "steady_files_per_s",
        steady > 0 ? (double)(self->items_done - self->items_first_result) / steady : 0);
    cJSON_AddNumberToObject(s, "audio_s", audio);
    cJSON_AddNumberToObject(s, "audio_s_per_s", busy > 0 ? audio / busy : 0);
    cJSON_AddNumberToObject(s, "real_time_factor", audio > 0 ? busy / audio : 0);
    cJSON_AddNumberToObject(s, "workers_seen", (double)self->workers_seen);
    cJSON_AddNumberToObject(s, "workers_lost", (double)self->workers_lost);
    cJSON_AddNumberToObject(s, "workers_refused", (double)self->workers_refused);
    cJSON_AddNumberToObject(s, "workers_rejoined", (double)self->workers_rejoined);
    cJSON_AddNumberToObject(s, "shards_requeued", (double)wisp_lease_requeued(self->lease));
    cJSON_AddNumberToObject(s, "duplicates_dropped", (double)self->duplicates);
    cJSON_AddNumberToObject(s, "messages_dropped", (double)self->dropped);
    cJSON_AddNumberToObject(s, "connections_refused", (double)atomic_load(&self->zap_denied));
    if (self->ops->steps)
        cJSON_AddNumberToObject(s, "worlds", (double)self->worlds);
    cJSON *st = cJSON_AddObjectToObject(s, "stage_s");
    for (int i = 0; st && i < WISP_JOB_MAX_STAGES && self->ops->stages[i]; i++)
        cJSON_AddNumberToObject(st, self->ops->stages[i], self->stage_s[i]);
}

static void s_emit_summary(wisp_coord_t *self)
{
    if (!self->summary || !self->params.summary_out)
        return;
    char *text = cJSON_PrintUnformatted(self->summary);
    if (text) {
        fprintf(self->params.summary_out, "%s\n", text);
        fflush(self->params.summary_out);
    }
    free(text);
}

/* Keeps answering for a moment so workers that were mid-shard or late to
 * connect hear STOP instead of timing out. */
static void s_linger(wisp_coord_t *self, double seconds, int finished)
{
    double end = wisp_now() + seconds;
    zmq_pollitem_t item = {self->router, 0, ZMQ_POLLIN, 0};
    wisp_error_t e = {0};
    while (wisp_now() < end && wisp_lease_live_workers(self->lease) > 0) {
        if (zmq_poll(&item, 1, 50) > 0 && s_drain(self, 1000, finished, &e) < 0)
            break;
    }
}

int wisp_coord_run(wisp_coord_t *self, wisp_error_t *err)
{
    const wisp_jobcfg_t *cfg = self->cfg;
    int rc = WISP_OK;
    double now = wisp_now();
    self->t_start = self->t_last_progress = now;
    double next_tick = now, next_progress = now + (self->tty ? 0.5 : cfg->progress_interval);
    double next_commit = now + cfg->commit_interval;
    double tick = fmin(0.25, cfg->lease_timeout / 4);
    zmq_pollitem_t item = {self->router, 0, ZMQ_POLLIN, 0};
    int interrupted = 0;
    /* The workers that connected while the job opened (s_open_answering), first. */
    for (size_t k = 0; k < self->n_early; k++) {
        if (rc == WISP_OK && !self->early[k].body)
            s_drop(self, "a frame larger than a HELLO while the job opened", NULL);
        else if (rc == WISP_OK)
            rc = s_handle(self, self->early[k].id, self->early[k].id_len, self->early[k].body,
                          self->early[k].len, now, 0, err);
        free(self->early[k].body);
    }
    self->n_early = 0;
    while (rc == WISP_OK &&
           (self->ops->steps ? !self->final_done : !wisp_lease_all_done(self->lease))) {
        if (s_stopping(self)) {
            interrupted = 1;
            break;
        }
        now = wisp_now();
        long wait_ms = (long)(1000 * (next_tick - now));
        if (wait_ms < 0)
            wait_ms = 0;
        int n = zmq_poll(&item, 1, wait_ms);
        if (n < 0 && errno != EINTR) {
            rc = wisp_error_set(err, WISP_ERR_NET, "zmq_poll: %s", zmq_strerror(errno));
            break;
        }
        if (n > 0 && (rc = s_drain(self, 4096, 0, err)) < 0)
            break;
        rc = WISP_OK;
        now = wisp_now();
        if (now >= next_tick) {
            next_tick = now + tick;
            if ((rc = wisp_coord_tick(self, now, err)) != 0)
                break;
        }
        if (now >= next_commit) {
            next_commit = now + cfg->commit_interval;
            if ((rc = self->ops->coord_flush(self->job, err)) != 0)
                break;
        }
        if (now >= next_progress) {
            next_progress = now + (self->tty ? 0.5 : cfg->progress_interval);
            s_progress(self, now, 0);
        }
    }
    if (rc == WISP_OK && interrupted) {
        /* Stop leasing, commit what has already arrived, tell workers to go. */
        wisp_lease_stop(self->lease);
        s_drain(self, 1 << 20, 0, err);
        WISP_LOGW("stop requested: %zu of %zu items committed; rerun to resume",
                  self->items_done + self->items_resumed, self->items_total);
    }
    int finished = rc == WISP_OK && !interrupted;
    int n = wisp_lease_worker_count(self->lease);
    for (int w = 0; w < n; w++)
        if (wisp_lease_worker_alive(self->lease, w))
            s_send_stop(self, w, finished ? WISP_STOP_DONE : WISP_STOP_INTERRUPTED);
    double wall = wisp_now() - self->t_start;
    s_progress(self, wisp_now(), 1);
    s_summary(self, finished ? "complete" : interrupted ? "interrupted" : "failed", wall);
    if (rc == WISP_OK) {
        wisp_error_t e = {0};
        int frc = self->ops->coord_finish(self->job, finished, self->summary, &e);
        if (frc) {
            /* The rows are safe in the journal but the output is not final (a full or
             * read-only disk at the last flush): the summary must not say complete, or a
             * supervisor would not rerun to resume. */
            rc = wisp_error_set(err, frc, "%s", e.msg);
            if (self->summary)
                cJSON_ReplaceItemInObject(self->summary, "status", cJSON_CreateString("failed"));
        }
    } else {
        self->ops->coord_finish(self->job, 0, self->summary, NULL);
    }
    s_emit_summary(self);
    if (finished)
        s_linger(self, self->params.linger, finished);
    if (rc == WISP_OK && interrupted)
        rc = WISP_ERR_INTERRUPTED;
    return rc;
}
