/* fuzz_proto_frames.h: turns a fuzz input into a script of protocol events for
 * the handler harnesses (fuzz_proto_coord, fuzz_proto_worker).
 *
 * Raw bytes alone would almost never get past the header's magic, version and
 * length checks, so most records *build* a frame whose envelope is right and
 * whose fields come from the input; one record kind passes bytes through as they
 * are, so the decoder's refusals are exercised on the handler's path too.
 *
 * Record (all integers little-endian, a short record ends the script):
 *   u8 op; then by op % 5:
 *   0 raw    u8 peer, u16 len, len bytes: the frame exactly
 *   1 built  u8 peer, u8 type, u8 slot, u32 count, u64 shard, u64 first, u32 aux,
 *            u16 len, len payload bytes (type indexes S_TYPES; slot >= 0xf0 is
 *            NO_WORKER, else slot % 8)
 *   2 hello  u8 peer, u8 rank, u8 size, u8 world, u8 pid: a binary HELLO
 *   3 tick   u8 dt: time advances by dt * 50 ms (leases expire, worlds start)
 *   4 reply  u8 peer, u8 mode: the harness's own answer to the last thing it was
 *            sent (a RESULT for the last SHARD, a STEP_DONE for the last STEP),
 *            mode choosing good or damaged bytes */
#ifndef WISP_FUZZ_PROTO_FRAMES_H
#define WISP_FUZZ_PROTO_FRAMES_H

#include "dist/proto.h"
#include "fuzz_util.h"

#define FUZZ_PEERS 8

typedef struct {
    const uint8_t *p;
    size_t left;
} fuzz_cursor_t;

static inline int fuzz_take(fuzz_cursor_t *c, void *dst, size_t n)
{
    if (c->left < n)
        return 0;
    if (n)
        memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return 1;
}

static inline int fuzz_u8(fuzz_cursor_t *c, uint8_t *v)
{
    return fuzz_take(c, v, 1);
}

static inline int fuzz_u16(fuzz_cursor_t *c, uint16_t *v)
{
    uint8_t b[2];
    if (!fuzz_take(c, b, 2))
        return 0;
    *v = (uint16_t)(b[0] | b[1] << 8);
    return 1;
}

static inline int fuzz_u32(fuzz_cursor_t *c, uint32_t *v)
{
    uint8_t b[4];
    if (!fuzz_take(c, b, 4))
        return 0;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 1;
}

static inline int fuzz_u64(fuzz_cursor_t *c, uint64_t *v)
{
    uint32_t lo, hi;
    if (!fuzz_u32(c, &lo) || !fuzz_u32(c, &hi))
        return 0;
    *v = (uint64_t)hi << 32 | lo;
    return 1;
}

/* Every type number worth sending, the unused 6 and an unknown one included. */
static const uint16_t S_FUZZ_TYPES[] = {WISP_MSG_HELLO,
                                        WISP_MSG_RESULT,
                                        WISP_MSG_HEARTBEAT,
                                        WISP_MSG_BYE,
                                        WISP_MSG_STEP_DONE,
                                        6,
                                        WISP_MSG_WELCOME,
                                        WISP_MSG_SHARD,
                                        WISP_MSG_STOP,
                                        WISP_MSG_STEP,
                                        0x7777};

/* frame = header(m) + payload, as one buffer in *out (size in *n). */
static inline void fuzz_frame(const wisp_msg_t *m, wisp_wbuf_t *out)
{
    uint8_t h[WISP_PROTO_HEADER_SIZE];
    wisp_proto_encode_header(h, m);
    wisp_wbuf_reset(out);
    wisp_wbuf_bytes(out, h, sizeof h);
    wisp_wbuf_bytes(out, m->payload, m->payload_len);
    if (out->failed)
        abort();
}

/* Reads a "built" record's fields into m (payload pointing into the input). */
static inline int fuzz_built(fuzz_cursor_t *c, wisp_msg_t *m)
{
    uint8_t type, slot;
    uint16_t len;
    memset(m, 0, sizeof *m);
    if (!fuzz_u8(c, &type) || !fuzz_u8(c, &slot) || !fuzz_u32(c, &m->count) ||
        !fuzz_u64(c, &m->shard) || !fuzz_u64(c, &m->first) || !fuzz_u32(c, &m->aux) ||
        !fuzz_u16(c, &len) || c->left < len)
        return 0;
    m->type = S_FUZZ_TYPES[type % (sizeof S_FUZZ_TYPES / sizeof S_FUZZ_TYPES[0])];
    m->worker = slot >= 0xf0 ? WISP_PROTO_NO_WORKER : slot % FUZZ_PEERS;
    m->payload = len ? c->p : NULL;
    m->payload_len = len;
    c->p += len;
    c->left -= len;
    return 1;
}

/* Every frame wisp itself sends must decode, and go the right way. */
static inline void fuzz_check_sent(const wisp_msg_t *m, int from_coordinator)
{
    wisp_wbuf_t b = {0};
    fuzz_frame(m, &b);
    wisp_msg_t d;
    wisp_error_t e = {0};
    int rc = wisp_proto_decode(b.data, b.len, WISP_PROTO_MAX_PAYLOAD, &d, &e);
    FUZZ_CHECK(rc == 0, "wisp sent a %s that does not decode: %s", wisp_proto_type_name(m->type),
               e.msg);
    FUZZ_CHECK(from_coordinator ? wisp_proto_is_coord_msg(d.type)
                                : wisp_proto_is_worker_msg(d.type),
               "%s sent the wrong way", wisp_proto_type_name(d.type));
    wisp_wbuf_free(&b);
}

#endif
