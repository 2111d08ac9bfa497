/* fuzz_proto: any bytes as one frame through the decoder (dist/proto.h), then
 * through the message readers and the payload reader.
 * Invariants: a decoded frame re-encodes to the same header bytes, satisfies its
 * type's header rule, and a HELLO or RESULT the reader accepts is in range and
 * re-encodes to the same payload. */
#include <math.h>

#include "dist/proto.h"
#include "fuzz_util.h"

/* FUZZ_MAX_LEN: 4096 */

static void s_check_hello(const wisp_msg_t *m)
{
    wisp_proto_hello_t h;
    wisp_error_t e = {0};
    int rc = wisp_proto_hello_read(m, &h, &e);
    fuzz_check_error(rc, &e);
    if (rc)
        return;
    FUZZ_CHECK(h.size >= 1 && h.size <= WISP_PROTO_MAX_RANKS && h.rank < h.size,
               "HELLO rank %u size %u accepted", h.rank, h.size);
    FUZZ_CHECK(h.pid >= 1 && h.pid <= INT32_MAX, "HELLO pid %llu accepted",
               (unsigned long long)h.pid);
    FUZZ_CHECK(memchr(h.host, 0, sizeof h.host) != NULL, "host not terminated");
    wisp_wbuf_t b = {0};
    wisp_msg_t again;
    FUZZ_CHECK(wisp_proto_hello(&again, &b, &h) == 0, "HELLO does not re-encode");
    /* a host with an embedded NUL reads shorter than it was sent; the rest is exact */
    if (strlen(h.host) == (size_t)m->payload_len - 28)
        FUZZ_CHECK(again.payload_len == m->payload_len &&
                       memcmp(again.payload, m->payload, m->payload_len) == 0,
                   "HELLO re-encodes differently");
    wisp_wbuf_free(&b);
}

static void s_check_result(const wisp_msg_t *m)
{
    double st[WISP_PROTO_MAX_STAGES];
    const uint8_t *rest;
    size_t rest_len;
    wisp_error_t e = {0};
    int rc = wisp_proto_result_read(m, st, &rest, &rest_len, &e);
    fuzz_check_error(rc, &e);
    if (rc)
        return;
    for (int i = 0; i < WISP_PROTO_MAX_STAGES; i++)
        FUZZ_CHECK(isfinite(st[i]) && st[i] >= 0, "stage timing %d = %g accepted", i, st[i]);
    FUZZ_CHECK(rest_len <= m->payload_len &&
                   (rest_len == 0 || rest + rest_len == m->payload + m->payload_len),
               "RESULT rest outside the payload");
}

/* The generic reader, driven by the payload's own bytes as a little program. */
static void s_read_all(const wisp_msg_t *m)
{
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, m->payload, m->payload_len);
    char s[32];
    float f[8];
    for (int k = 0; k < 64 && !r.failed; k++) {
        size_t before = r.left;
        switch (k % 6) {
        case 0: (void)wisp_rbuf_u32(&r); break;
        case 1: wisp_rbuf_str(&r, s, sizeof s); break;
        case 2: (void)wisp_rbuf_f64(&r); break;
        case 3: wisp_rbuf_f32s(&r, f, (size_t)(k % 9)); break;
        case 4: (void)wisp_rbuf_u64(&r); break;
        default: (void)wisp_rbuf_i32(&r); break;
        }
        FUZZ_CHECK(r.left <= before, "reader went backwards");
        if (r.failed)
            FUZZ_CHECK(wisp_rbuf_u32(&r) == 0, "a failed reader returned data");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    wisp_msg_t m;
    wisp_error_t e = {0};
    int rc = wisp_proto_decode(data, size, 2048, &m, &e);
    fuzz_check_error(rc, &e);
    if (rc)
        return 0;
    FUZZ_CHECK(m.payload_len == size - WISP_PROTO_HEADER_SIZE, "payload_len disagrees");
    FUZZ_CHECK((m.payload == NULL) == (m.payload_len == 0), "payload pointer and length disagree");
    FUZZ_CHECK(wisp_proto_is_worker_msg(m.type) || wisp_proto_is_coord_msg(m.type),
               "unknown type %u decoded", m.type);
    if (m.type == WISP_MSG_SHARD || m.type == WISP_MSG_RESULT)
        FUZZ_CHECK(m.count >= 1 && m.count <= WISP_PROTO_MAX_SHARD_ITEMS &&
                       m.first <= UINT64_MAX - m.count,
                   "%s of %u items from %llu accepted", wisp_proto_type_name(m.type), m.count,
                   (unsigned long long)m.first);
    if (m.type == WISP_MSG_STOP)
        FUZZ_CHECK(m.aux <= WISP_STOP_FULL && m.payload_len == 0, "STOP %u accepted", m.aux);
    uint8_t hdr[WISP_PROTO_HEADER_SIZE];
    wisp_proto_encode_header(hdr, &m);
    FUZZ_CHECK(memcmp(hdr, data, WISP_PROTO_HEADER_SIZE) == 0, "header does not round-trip");
    if (m.type == WISP_MSG_HELLO)
        s_check_hello(&m);
    if (m.type == WISP_MSG_RESULT)
        s_check_result(&m);
    s_read_all(&m);
    return 0;
}
