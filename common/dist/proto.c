#include "dist/proto.h"

#include "base/util.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

const char *wisp_proto_type_name(int type)
{
    switch (type) {
    case WISP_MSG_HELLO: return "HELLO";
    case WISP_MSG_RESULT: return "RESULT";
    case WISP_MSG_HEARTBEAT: return "HEARTBEAT";
    case WISP_MSG_BYE: return "BYE";
    case WISP_MSG_STEP_DONE: return "STEP_DONE";
    case WISP_MSG_WELCOME: return "WELCOME";
    case WISP_MSG_SHARD: return "SHARD";
    case WISP_MSG_STOP: return "STOP";
    case WISP_MSG_STEP: return "STEP";
    default: return "?";
    }
}

int wisp_proto_is_worker_msg(int type)
{
    return type == WISP_MSG_HELLO || type == WISP_MSG_RESULT || type == WISP_MSG_HEARTBEAT ||
           type == WISP_MSG_BYE || type == WISP_MSG_STEP_DONE;
}

int wisp_proto_is_coord_msg(int type)
{
    return type == WISP_MSG_WELCOME || type == WISP_MSG_SHARD || type == WISP_MSG_HEARTBEAT ||
           type == WISP_MSG_STOP || type == WISP_MSG_STEP;
}

static void s_put16(uint8_t *p, uint16_t v)
{
    v = htole16(v);
    memcpy(p, &v, 2);
}
static void s_put32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}
static void s_put64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}
static uint16_t s_get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return le16toh(v);
}
static uint32_t s_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}
static uint64_t s_get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

void wisp_proto_encode_header(uint8_t out[WISP_PROTO_HEADER_SIZE], const wisp_msg_t *m)
{
    s_put32(out + 0, WISP_PROTO_MAGIC);
    s_put16(out + 4, m->version ? m->version : WISP_PROTO_VERSION);
    s_put16(out + 6, m->type);
    s_put32(out + 8, m->worker);
    s_put32(out + 12, m->count);
    s_put64(out + 16, m->shard);
    s_put64(out + 24, m->first);
    s_put32(out + 32, m->aux);
    s_put32(out + 36, m->payload_len);
}

/* The per-type header rules of proto.h's type list: what a receiver may rely on
 * once decode succeeded (count is what a worker allocates and loops over, so it is
 * capped here, before any receiver sees it). */
static int s_check_fields(const wisp_msg_t *m, wisp_error_t *err)
{
    const char *name = wisp_proto_type_name(m->type);
    switch (m->type) {
    case WISP_MSG_HELLO:
        if (m->worker != WISP_PROTO_NO_WORKER)
            return wisp_error_set(err, WISP_ERR_FORMAT, "HELLO from worker slot %u", m->worker);
        if (m->payload_len > WISP_PROTO_HELLO_MAX)
            return wisp_error_set(err, WISP_ERR_FORMAT, "HELLO payload of %u bytes (at most %d)",
                                  m->payload_len, WISP_PROTO_HELLO_MAX);
        return WISP_OK;
    case WISP_MSG_WELCOME:
        if (m->worker == WISP_PROTO_NO_WORKER || m->payload_len == 0)
            return wisp_error_set(err, WISP_ERR_FORMAT, "WELCOME without a slot or a config");
        return WISP_OK;
    case WISP_MSG_SHARD:
    case WISP_MSG_RESULT:
        if (m->count == 0 || m->count > WISP_PROTO_MAX_SHARD_ITEMS)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s of %u items (1 to %u)", name, m->count,
                                  WISP_PROTO_MAX_SHARD_ITEMS);
        if (m->first > UINT64_MAX - m->count)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s items %" PRIu64 "+%u overflow", name,
                                  m->first, m->count);
        return WISP_OK;
    case WISP_MSG_STOP:
    case WISP_MSG_HEARTBEAT:
    case WISP_MSG_BYE:
        if (m->type == WISP_MSG_STOP && m->aux > WISP_STOP_FULL)
            return wisp_error_set(err, WISP_ERR_FORMAT, "STOP reason %u", m->aux);
        if (m->payload_len)
            return wisp_error_set(err, WISP_ERR_FORMAT, "%s with a payload of %u bytes", name,
                                  m->payload_len);
        return WISP_OK;
    default: return WISP_OK; /* STEP, STEP_DONE: the job checks its payload */
    }
}

int wisp_proto_decode(const void *buf, size_t len, size_t max_payload, wisp_msg_t *out,
                      wisp_error_t *err)
{
    const uint8_t *p = buf;
    memset(out, 0, sizeof *out);
    if (len < WISP_PROTO_HEADER_SIZE)
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "frame of %zu bytes is shorter than the %d-byte header", len,
                              WISP_PROTO_HEADER_SIZE);
    uint32_t magic = s_get32(p);
    if (magic != WISP_PROTO_MAGIC)
        return wisp_error_set(err, WISP_ERR_FORMAT, "bad magic 0x%08x", magic);
    out->version = s_get16(p + 4);
    if (out->version != WISP_PROTO_VERSION)
        return wisp_error_set(err, WISP_ERR_FORMAT, "protocol version %u, expected %d",
                              out->version, WISP_PROTO_VERSION);
    out->type = s_get16(p + 6);
    if (!wisp_proto_is_worker_msg(out->type) && !wisp_proto_is_coord_msg(out->type))
        return wisp_error_set(err, WISP_ERR_FORMAT, "unknown message type %u", out->type);
    out->worker = s_get32(p + 8);
    out->count = s_get32(p + 12);
    out->shard = s_get64(p + 16);
    out->first = s_get64(p + 24);
    out->aux = s_get32(p + 32);
    out->payload_len = s_get32(p + 36);
    if ((size_t)out->payload_len != len - WISP_PROTO_HEADER_SIZE)
        return wisp_error_set(err, WISP_ERR_FORMAT, "payload_len %u but frame carries %zu bytes",
                              out->payload_len, len - WISP_PROTO_HEADER_SIZE);
    if (out->payload_len > max_payload)
        return wisp_error_set(err, WISP_ERR_FORMAT, "payload of %u bytes exceeds the limit %zu",
                              out->payload_len, max_payload);
    out->payload = out->payload_len ? p + WISP_PROTO_HEADER_SIZE : NULL;
    return s_check_fields(out, err);
}

int wisp_proto_send(void *sock, const void *ident, size_t ident_len, const wisp_msg_t *m, int flags)
{
    zmq_msg_t frame;
    size_t n = WISP_PROTO_HEADER_SIZE + (size_t)m->payload_len;
    if (zmq_msg_init_size(&frame, n) != 0)
        return WISP_ERR_NOMEM;
    uint8_t *p = zmq_msg_data(&frame);
    wisp_proto_encode_header(p, m);
    if (m->payload_len)
        memcpy(p + WISP_PROTO_HEADER_SIZE, m->payload, m->payload_len);
    if (ident) {
        if (zmq_send(sock, ident, ident_len, flags | ZMQ_SNDMORE) < 0) {
            int e = errno;
            zmq_msg_close(&frame);
            errno = e;
            return WISP_ERR_NET;
        }
    }
    if (zmq_msg_send(&frame, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&frame);
        errno = e;
        return WISP_ERR_NET;
    }
    return WISP_OK;
}

/* ---- one encoder / reader per message ---- */

static int s_payload(wisp_msg_t *m, const wisp_wbuf_t *b)
{
    m->payload = NULL;
    m->payload_len = 0;
    if (!b)
        return WISP_OK;
    if (b->failed)
        return WISP_ERR_NOMEM;
    if (b->len > WISP_PROTO_MAX_PAYLOAD)
        return WISP_ERR_ARG;
    m->payload = b->len ? b->data : NULL;
    m->payload_len = (uint32_t)b->len;
    return WISP_OK;
}

int wisp_proto_hello(wisp_msg_t *m, wisp_wbuf_t *buf, const wisp_proto_hello_t *h)
{
    *m = (wisp_msg_t){.type = WISP_MSG_HELLO, .worker = WISP_PROTO_NO_WORKER};
    wisp_wbuf_reset(buf);
    wisp_wbuf_u32(buf, h->rank);
    wisp_wbuf_u32(buf, h->size);
    wisp_wbuf_u64(buf, h->pid);
    wisp_wbuf_u64(buf, h->world);
    wisp_wbuf_str(buf, h->host);
    return s_payload(m, buf);
}

int wisp_proto_hello_read(const wisp_msg_t *m, wisp_proto_hello_t *h, wisp_error_t *err)
{
    memset(h, 0, sizeof *h);
    if (m->type != WISP_MSG_HELLO)
        return wisp_error_set(err, WISP_ERR_FORMAT, "%s is not a HELLO",
                              wisp_proto_type_name(m->type));
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, m->payload, m->payload_len);
    h->rank = wisp_rbuf_u32(&r);
    h->size = wisp_rbuf_u32(&r);
    h->pid = wisp_rbuf_u64(&r);
    h->world = wisp_rbuf_u64(&r);
    wisp_rbuf_str(&r, h->host, sizeof h->host);
    if (r.failed || r.left)
        return wisp_error_set(err, WISP_ERR_FORMAT, "HELLO payload of %u bytes is malformed",
                              m->payload_len);
    if (h->size < 1 || h->size > WISP_PROTO_MAX_RANKS)
        return wisp_error_set(err, WISP_ERR_FORMAT, "HELLO size %u (1 to %d)", h->size,
                              WISP_PROTO_MAX_RANKS);
    if (h->rank >= h->size)
        return wisp_error_set(err, WISP_ERR_FORMAT, "HELLO rank %u of a world of %u", h->rank,
                              h->size);
    if (h->pid < 1 || h->pid > INT32_MAX)
        return wisp_error_set(err, WISP_ERR_FORMAT, "HELLO pid %" PRIu64, h->pid);
    return WISP_OK;
}

int wisp_proto_welcome(wisp_msg_t *m, uint32_t slot, const char *cfg_json, size_t cfg_len)
{
    *m = (wisp_msg_t){.type = WISP_MSG_WELCOME, .worker = slot};
    if (cfg_len == 0 || cfg_len > WISP_PROTO_MAX_PAYLOAD)
        return WISP_ERR_ARG;
    m->payload = (const uint8_t *)cfg_json;
    m->payload_len = (uint32_t)cfg_len;
    return WISP_OK;
}

int wisp_proto_shard(wisp_msg_t *m, uint64_t shard, uint64_t first, uint32_t count,
                     const wisp_wbuf_t *payload)
{
    *m = (wisp_msg_t){.type = WISP_MSG_SHARD, .shard = shard, .first = first, .count = count};
    return s_payload(m, payload);
}

#define S_RESULT_PREFIX (4 + 8 * WISP_PROTO_MAX_STAGES)

void wisp_proto_result_begin(wisp_wbuf_t *buf)
{
    wisp_wbuf_reset(buf);
    wisp_wbuf_u32(buf, WISP_PROTO_MAX_STAGES);
    for (int i = 0; i < WISP_PROTO_MAX_STAGES; i++)
        wisp_wbuf_f64(buf, 0);
}

int wisp_proto_result(wisp_msg_t *m, wisp_wbuf_t *buf, uint64_t shard, uint64_t first,
                      uint32_t count, const double *stage_s)
{
    *m = (wisp_msg_t){.type = WISP_MSG_RESULT, .shard = shard, .first = first, .count = count};
    if (!buf->failed && buf->len < S_RESULT_PREFIX)
        return WISP_ERR_ARG; /* wisp_proto_result_begin was not called */
    for (int i = 0; !buf->failed && i < WISP_PROTO_MAX_STAGES; i++) {
        uint64_t u;
        memcpy(&u, &stage_s[i], 8);
        s_put64(buf->data + 4 + 8 * i, u);
    }
    return s_payload(m, buf);
}

int wisp_proto_result_read(const wisp_msg_t *m, double stage_s[WISP_PROTO_MAX_STAGES],
                           const uint8_t **rest, size_t *rest_len, wisp_error_t *err)
{
    for (int i = 0; i < WISP_PROTO_MAX_STAGES; i++)
        stage_s[i] = 0;
    *rest = NULL;
    *rest_len = 0;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, m->payload, m->payload_len);
    uint32_t n = wisp_rbuf_u32(&r);
    if (r.failed || n > WISP_PROTO_MAX_STAGES)
        return wisp_error_set(err, WISP_ERR_FORMAT, "RESULT without stage timings");
    for (uint32_t i = 0; i < n; i++) {
        double v = wisp_rbuf_f64(&r);
        if (r.failed || !isfinite(v) || v < 0)
            return wisp_error_set(err, WISP_ERR_FORMAT, "RESULT stage timing %u is bad", i);
        stage_s[i] = v;
    }
    *rest = r.left ? r.p : NULL;
    *rest_len = r.left;
    return WISP_OK;
}

wisp_msg_t wisp_proto_heartbeat(uint32_t items_done)
{
    return (wisp_msg_t){.type = WISP_MSG_HEARTBEAT, .aux = items_done};
}

wisp_msg_t wisp_proto_bye(void)
{
    return (wisp_msg_t){.type = WISP_MSG_BYE};
}

wisp_msg_t wisp_proto_stop(wisp_stop_why_t why)
{
    return (wisp_msg_t){.type = WISP_MSG_STOP, .aux = (uint32_t)why};
}

int wisp_proto_step(wisp_msg_t *m, uint64_t step, uint32_t flags, const wisp_wbuf_t *payload)
{
    *m = (wisp_msg_t){.type = WISP_MSG_STEP, .shard = step, .aux = flags};
    return s_payload(m, payload);
}

int wisp_proto_step_done(wisp_msg_t *m, uint64_t step, uint32_t flags, const wisp_wbuf_t *payload)
{
    *m = (wisp_msg_t){.type = WISP_MSG_STEP_DONE, .shard = step, .aux = flags};
    return s_payload(m, payload);
}

/* ---- wbuf ---- */

static int s_wbuf_reserve(wisp_wbuf_t *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void wisp_wbuf_reset(wisp_wbuf_t *b)
{
    b->len = 0;
    b->failed = 0;
}

void wisp_wbuf_free(wisp_wbuf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void wisp_wbuf_bytes(wisp_wbuf_t *b, const void *p, size_t n)
{
    if (n == 0 || s_wbuf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void wisp_wbuf_u32(wisp_wbuf_t *b, uint32_t v)
{
    v = htole32(v);
    wisp_wbuf_bytes(b, &v, 4);
}
void wisp_wbuf_i32(wisp_wbuf_t *b, int32_t v)
{
    wisp_wbuf_u32(b, (uint32_t)v);
}
void wisp_wbuf_u64(wisp_wbuf_t *b, uint64_t v)
{
    v = htole64(v);
    wisp_wbuf_bytes(b, &v, 8);
}

void wisp_wbuf_f32(wisp_wbuf_t *b, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    wisp_wbuf_u32(b, u);
}

void wisp_wbuf_f64(wisp_wbuf_t *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    wisp_wbuf_u64(b, u);
}

void wisp_wbuf_f32s(wisp_wbuf_t *b, const float *v, size_t n)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    wisp_wbuf_bytes(b, v, n * sizeof(float)); /* already the wire's byte order */
#else
    for (size_t i = 0; i < n; i++)
        wisp_wbuf_f32(b, v[i]);
#endif
}

void wisp_wbuf_str(wisp_wbuf_t *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    wisp_wbuf_u32(b, (uint32_t)n);
    wisp_wbuf_bytes(b, s, n);
}

/* ---- rbuf ---- */

void wisp_rbuf_init(wisp_rbuf_t *r, const void *p, size_t n)
{
    r->p = p;
    r->left = p ? n : 0;
    r->failed = 0;
}

int wisp_rbuf_bytes(wisp_rbuf_t *r, void *dst, size_t n)
{
    if (r->failed || n > r->left) {
        r->failed = 1;
        memset(dst, 0, n);
        return WISP_ERR_FORMAT;
    }
    if (n == 0)
        return WISP_OK; /* r->p may be NULL (empty payload): no pointer arithmetic on it */
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return WISP_OK;
}

uint32_t wisp_rbuf_u32(wisp_rbuf_t *r)
{
    uint32_t v;
    wisp_rbuf_bytes(r, &v, 4);
    return le32toh(v);
}

int32_t wisp_rbuf_i32(wisp_rbuf_t *r)
{
    return (int32_t)wisp_rbuf_u32(r);
}

uint64_t wisp_rbuf_u64(wisp_rbuf_t *r)
{
    uint64_t v;
    wisp_rbuf_bytes(r, &v, 8);
    return le64toh(v);
}

float wisp_rbuf_f32(wisp_rbuf_t *r)
{
    uint32_t u = wisp_rbuf_u32(r);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

double wisp_rbuf_f64(wisp_rbuf_t *r)
{
    uint64_t u = wisp_rbuf_u64(r);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

int wisp_rbuf_f32s(wisp_rbuf_t *r, float *dst, size_t n)
{
    if (n > SIZE_MAX / sizeof(float)) {
        r->failed = 1;
        return WISP_ERR_FORMAT;
    }
    int rc = wisp_rbuf_bytes(r, dst, n * sizeof(float));
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint32_t u;
        memcpy(&u, &dst[i], 4);
        u = le32toh(u);
        memcpy(&dst[i], &u, 4);
    }
#endif
    return rc;
}

int wisp_rbuf_str(wisp_rbuf_t *r, char *dst, size_t dst_size)
{
    uint32_t n = wisp_rbuf_u32(r);
    if (r->failed || (size_t)n >= dst_size || n > r->left) {
        r->failed = 1;
        if (dst_size)
            dst[0] = '\0';
        return WISP_ERR_FORMAT;
    }
    dst[n] = '\0';
    if (n == 0)
        return WISP_OK; /* r->p may be NULL (empty payload) */
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return WISP_OK;
}

/* ---- CURVE keys ---- */

int wisp_proto_read_key(const char *path, char z85[41], wisp_error_t *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, 4096, &text, &len, err);
    if (rc)
        return rc;
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    uint8_t bin[32];
    if (len != 40 || !zmq_z85_decode(bin, text)) {
        free(text);
        return wisp_error_set(err, WISP_ERR_FORMAT,
                              "%s: not a Z85 CURVE key (expected 40 characters)", path);
    }
    memcpy(z85, text, 41);
    free(text);
    return WISP_OK;
}

static int s_write_key(const char *path, const char *z85, int mode, wisp_error_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", path, strerror(errno));
    char line[42];
    snprintf(line, sizeof line, "%s\n", z85);
    ssize_t n = write(fd, line, 41);
    close(fd);
    if (n != 41)
        return wisp_error_set(err, WISP_ERR_IO, "%s: short write", path);
    return WISP_OK;
}

int wisp_proto_keygen(const char *prefix, wisp_error_t *err)
{
    char pub[41], sec[41], path[4096];
    if (zmq_curve_keypair(pub, sec) != 0)
        return wisp_error_set(err, WISP_ERR_UNSUPPORTED,
                              "zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(errno));
    snprintf(path, sizeof path, "%s.secret", prefix);
    int rc = s_write_key(path, sec, 0600, err);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s.public", prefix);
    return s_write_key(path, pub, 0644, err);
}
