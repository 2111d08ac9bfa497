/* Tests of common/proto: header round trip, strict validation, payload codecs. */
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/proto.h"

static size_t s_encode(uint8_t *buf, const wisp_msg_t *m)
{
    wisp_proto_encode_header(buf, m);
    if (m->payload_len)
        memcpy(buf + WISP_PROTO_HEADER_SIZE, m->payload, m->payload_len);
    return WISP_PROTO_HEADER_SIZE + m->payload_len;
}

static void test_header_round_trips_every_field(void **state)
{
    (void)state;
    uint8_t buf[128];
    const char *pl = "hello";
    wisp_msg_t m = {.type = WISP_MSG_RESULT,
                    .worker = 7,
                    .count = 1234,
                    .shard = 0x1122334455667788ull,
                    .first = 99999999999ull,
                    .aux = 42,
                    .payload = (const uint8_t *)pl,
                    .payload_len = 5};
    size_t n = s_encode(buf, &m);
    wisp_msg_t d;
    assert_int_equal(wisp_proto_decode(buf, n, 1000, &d, NULL), WISP_OK);
    assert_int_equal(d.version, WISP_PROTO_VERSION);
    assert_int_equal(d.type, WISP_MSG_RESULT);
    assert_int_equal(d.worker, 7);
    assert_int_equal(d.count, 1234);
    assert_true(d.shard == 0x1122334455667788ull);
    assert_true(d.first == 99999999999ull);
    assert_int_equal(d.aux, 42);
    assert_int_equal(d.payload_len, 5);
    assert_memory_equal(d.payload, "hello", 5);
    assert_memory_equal(buf, "WSP1", 4); /* magic bytes on the wire */
}

static void test_malformed_frames_are_refused_with_a_reason(void **state)
{
    (void)state;
    uint8_t buf[128];
    wisp_msg_t m = {.type = WISP_MSG_HEARTBEAT, .payload_len = 0};
    size_t n = s_encode(buf, &m);
    wisp_msg_t d;
    wisp_error_t e = {0};
    /* short */
    assert_int_equal(wisp_proto_decode(buf, 10, 100, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "shorter"));
    /* bad magic */
    uint8_t bad[128];
    memcpy(bad, buf, n);
    bad[0] ^= 0xff;
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n, 100, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "magic"));
    /* wrong version (1 is the JSON-HELLO protocol this one replaced) */
    m.version = 1;
    n = s_encode(bad, &m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n, 100, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "version 1"));
    /* unknown type */
    m.version = 0;
    m.type = 999;
    n = s_encode(bad, &m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n, 100, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "type 999"));
    /* payload_len disagreeing with the frame */
    m.type = WISP_MSG_RESULT;
    m.count = 1;
    m.payload_len = 8;
    m.payload = (const uint8_t *)"abcdefgh";
    n = s_encode(bad, &m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n - 1, 100, &d, &e), WISP_ERR_FORMAT);
    assert_int_equal(wisp_proto_decode(bad, n, 100, &d, NULL), WISP_OK);
    /* oversize */
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n, 7, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "exceeds"));
}

static void test_random_garbage_never_decodes_as_a_message(void **state)
{
    (void)state;
    uint8_t buf[256];
    uint64_t x = 12345;
    int accepted = 0;
    for (int trial = 0; trial < 20000; trial++) {
        size_t n = (size_t)(trial % 256);
        for (size_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (uint8_t)(x >> 56);
        }
        wisp_msg_t d;
        wisp_error_t e = {0};
        accepted += wisp_proto_decode(buf, n, 1 << 20, &d, &e) == 0;
    }
    assert_int_equal(accepted, 0);
}

static void test_directions_separate_worker_and_coordinator_messages(void **state)
{
    (void)state;
    assert_true(wisp_proto_is_worker_msg(WISP_MSG_RESULT));
    assert_false(wisp_proto_is_worker_msg(WISP_MSG_SHARD));
    assert_true(wisp_proto_is_coord_msg(WISP_MSG_SHARD));
    assert_false(wisp_proto_is_coord_msg(WISP_MSG_HELLO));
    assert_true(wisp_proto_is_worker_msg(WISP_MSG_HEARTBEAT) &&
                wisp_proto_is_coord_msg(WISP_MSG_HEARTBEAT));
    assert_string_equal(wisp_proto_type_name(WISP_MSG_STOP), "STOP");
    assert_string_equal(wisp_proto_type_name(12345), "?");
}

static void test_payload_codec_round_trips_and_detects_truncation(void **state)
{
    (void)state;
    wisp_wbuf_t b = {0};
    float v[3] = {1.5f, -2.25f, 3e-8f};
    wisp_wbuf_u32(&b, 0xdeadbeef);
    wisp_wbuf_i32(&b, -5);
    wisp_wbuf_u64(&b, 1ull << 40);
    wisp_wbuf_f32(&b, 0.1f);
    wisp_wbuf_f64(&b, 0.1);
    wisp_wbuf_str(&b, "clip.wav");
    wisp_wbuf_f32s(&b, v, 3);
    assert_false(b.failed);
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, b.data, b.len);
    char s[16];
    float got[3];
    assert_int_equal(wisp_rbuf_u32(&r), 0xdeadbeef);
    assert_int_equal(wisp_rbuf_i32(&r), -5);
    assert_true(wisp_rbuf_u64(&r) == 1ull << 40);
    assert_true(wisp_rbuf_f32(&r) == 0.1f);
    assert_true(wisp_rbuf_f64(&r) == 0.1);
    assert_int_equal(wisp_rbuf_str(&r, s, sizeof s), WISP_OK);
    assert_string_equal(s, "clip.wav");
    assert_int_equal(wisp_rbuf_f32s(&r, got, 3), WISP_OK);
    assert_memory_equal(got, v, sizeof v);
    assert_int_equal(r.left, 0);
    assert_false(r.failed);
    /* one more read fails and latches */
    assert_int_equal(wisp_rbuf_u32(&r), 0);
    assert_true(r.failed);
    /* a string longer than the destination fails the reader */
    wisp_rbuf_init(&r, b.data, b.len);
    r.p += 4 + 4 + 8 + 4 + 8;
    r.left -= 28;
    assert_int_equal(wisp_rbuf_str(&r, s, 4), WISP_ERR_FORMAT);
    assert_true(r.failed);
    /* a length prefix pointing past the end fails */
    uint8_t lie[8] = {0xff, 0xff, 0, 0, 'a', 'b', 'c', 'd'};
    wisp_rbuf_init(&r, lie, sizeof lie);
    char big[1 << 17];
    assert_int_equal(wisp_rbuf_str(&r, big, sizeof big), WISP_ERR_FORMAT);
    wisp_wbuf_free(&b);
}

static void test_curve_keys_round_trip_through_key_files(void **state)
{
    (void)state;
    char prefix[512], path[600], z85[41];
    snprintf(prefix, sizeof prefix, "%s/k", wisp_test_tmpdir());
    assert_int_equal(wisp_proto_keygen(prefix, NULL), WISP_OK);
    snprintf(path, sizeof path, "%s.public", prefix);
    assert_int_equal(wisp_proto_read_key(path, z85, NULL), WISP_OK);
    assert_int_equal(strlen(z85), 40);
    /* a corrupt key file is refused naming the file */
    snprintf(path, sizeof path, "%s/bad.public", wisp_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("not a key\n", f);
    fclose(f);
    wisp_error_t e = {0};
    assert_int_equal(wisp_proto_read_key(path, z85, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "bad.public"));
}

/* Decodes the header-only frame m and returns decode's code (reason in e). */
static int s_decode_rc(wisp_msg_t m, wisp_error_t *e)
{
    uint8_t buf[WISP_PROTO_HEADER_SIZE + 8] = {0};
    size_t n = s_encode(buf, &m);
    wisp_msg_t d;
    wisp_error_clear(e);
    return wisp_proto_decode(buf, n, 1 << 20, &d, e);
}

static void test_header_fields_outside_their_type_rule_are_refused(void **state)
{
    (void)state;
    wisp_error_t e = {0};
    /* a worker believing any SHARD count: 0 and 4e9 items are refused before it sees them */
    wisp_msg_t sh = {.type = WISP_MSG_SHARD, .worker = 0, .count = 4000000000u};
    assert_int_equal(s_decode_rc(sh, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "4000000000 items"));
    sh.count = 0;
    assert_int_equal(s_decode_rc(sh, &e), WISP_ERR_FORMAT);
    sh.count = WISP_PROTO_MAX_SHARD_ITEMS + 1;
    assert_int_equal(s_decode_rc(sh, &e), WISP_ERR_FORMAT);
    sh.count = WISP_PROTO_MAX_SHARD_ITEMS;
    assert_int_equal(s_decode_rc(sh, &e), WISP_OK);
    sh.first = UINT64_MAX - 5; /* first + count wraps */
    assert_int_equal(s_decode_rc(sh, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "overflow"));
    wisp_msg_t res = {.type = WISP_MSG_RESULT, .count = 0};
    assert_int_equal(s_decode_rc(res, &e), WISP_ERR_FORMAT);
    /* STOP with an unknown reason, HEARTBEAT/BYE/STOP with a payload */
    assert_int_equal(s_decode_rc(wisp_proto_stop(WISP_STOP_REJOIN), &e), WISP_OK);
    assert_int_equal(s_decode_rc((wisp_msg_t){.type = WISP_MSG_STOP, .aux = 4}, &e),
                     WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "STOP reason 4"));
    uint8_t buf[WISP_PROTO_HEADER_SIZE + 4] = {0};
    wisp_msg_t d;
    int types[] = {WISP_MSG_HEARTBEAT, WISP_MSG_BYE, WISP_MSG_STOP};
    for (int i = 0; i < 3; i++) {
        wisp_msg_t m = {
            .type = (uint16_t)types[i], .payload = (const uint8_t *)"abcd", .payload_len = 4};
        size_t n = s_encode(buf, &m);
        assert_int_equal(wisp_proto_decode(buf, n, 100, &d, &e), WISP_ERR_FORMAT);
    }
    /* HELLO from a slot, oversize HELLO, WELCOME without a slot or a config */
    assert_int_equal(s_decode_rc((wisp_msg_t){.type = WISP_MSG_HELLO, .worker = 3}, &e),
                     WISP_ERR_FORMAT);
    uint8_t big[WISP_PROTO_HEADER_SIZE + WISP_PROTO_HELLO_MAX + 1] = {0};
    wisp_msg_t hb = {.type = WISP_MSG_HELLO,
                     .worker = WISP_PROTO_NO_WORKER,
                     .payload_len = WISP_PROTO_HELLO_MAX + 1};
    wisp_proto_encode_header(big, &hb);
    assert_int_equal(wisp_proto_decode(big, sizeof big, 1 << 20, &d, &e), WISP_ERR_FORMAT);
    assert_int_equal(s_decode_rc((wisp_msg_t){.type = WISP_MSG_WELCOME, .worker = 0}, &e),
                     WISP_ERR_FORMAT);
}

/* The bytes of a HELLO as the encoder lays them out: little-endian throughout. */
static void test_hello_wire_bytes_are_little_endian_and_round_trip(void **state)
{
    (void)state;
    wisp_proto_hello_t h = {
        .rank = 1, .size = 0x0203, .pid = 0x04050607, .world = 0x08090a0b0c0d0e0full, .host = "n1"};
    wisp_wbuf_t b = {0};
    wisp_msg_t m;
    assert_int_equal(wisp_proto_hello(&m, &b, &h), WISP_OK);
    const uint8_t want[] = {1, 0,   0,   0,   3,   2,   0,   0, 7, 6, 5, 4, 0, 0,   0,
                            0, 0xf, 0xe, 0xd, 0xc, 0xb, 0xa, 9, 8, 2, 0, 0, 0, 'n', '1'};
    assert_int_equal(m.payload_len, sizeof want);
    assert_memory_equal(m.payload, want, sizeof want);
    assert_int_equal(m.worker, WISP_PROTO_NO_WORKER);
    uint8_t frame[WISP_PROTO_HEADER_SIZE + 64];
    size_t n = s_encode(frame, &m);
    wisp_msg_t d;
    wisp_proto_hello_t g;
    assert_int_equal(wisp_proto_decode(frame, n, 1 << 20, &d, NULL), WISP_OK);
    assert_int_equal(wisp_proto_hello_read(&d, &g, NULL), WISP_OK);
    assert_int_equal(g.rank, 1);
    assert_int_equal(g.size, 0x0203);
    assert_true(g.pid == 0x04050607 && g.world == 0x08090a0b0c0d0e0full);
    assert_string_equal(g.host, "n1");
    wisp_wbuf_free(&b);
}

/* Every hostile HELLO the review sent: sizes and ranks out of range, pids that do
 * not fit, the protocol-1 JSON HELLO with size 1e10, truncated and padded ones. */
static void test_hostile_hellos_are_refused_naming_the_field(void **state)
{
    (void)state;
    struct {
        wisp_proto_hello_t h;
        const char *want;
    } cases[] = {
        {{.rank = 0, .size = 0, .pid = 1}, "size 0"},
        {{.rank = 0, .size = UINT32_MAX, .pid = 1}, "size 4294967295"},
        {{.rank = 0, .size = WISP_PROTO_MAX_RANKS + 1, .pid = 1}, "size 65537"},
        {{.rank = 2, .size = 2, .pid = 1}, "rank 2 of a world of 2"},
        {{.rank = UINT32_MAX, .size = 5, .pid = 1}, "rank 4294967295"},
        {{.rank = 0, .size = 1, .pid = 0}, "pid 0"},
        {{.rank = 0, .size = 1, .pid = (uint64_t)INT32_MAX + 1}, "pid 2147483648"},
        {{.rank = 0, .size = 1, .pid = UINT64_MAX}, "pid 18446744073709551615"},
    };
    wisp_wbuf_t b = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wisp_msg_t m;
        wisp_proto_hello_t g;
        wisp_error_t e = {0};
        assert_int_equal(wisp_proto_hello(&m, &b, &cases[i].h), WISP_OK);
        assert_int_equal(wisp_proto_hello_read(&m, &g, &e), WISP_ERR_FORMAT);
        if (!strstr(e.msg, cases[i].want))
            fail_msg("case %zu: '%s' does not say '%s'", i, e.msg, cases[i].want);
    }
    /* the largest legal world decodes */
    wisp_proto_hello_t ok = {
        .rank = WISP_PROTO_MAX_RANKS - 1, .size = WISP_PROTO_MAX_RANKS, .pid = INT32_MAX};
    wisp_msg_t m;
    wisp_proto_hello_t g;
    assert_int_equal(wisp_proto_hello(&m, &b, &ok), WISP_OK);
    assert_int_equal(wisp_proto_hello_read(&m, &g, NULL), WISP_OK);
    /* truncated by one byte, one trailing byte, the protocol-1 JSON text */
    wisp_msg_t t = m;
    t.payload_len--;
    wisp_error_t e = {0};
    assert_int_equal(wisp_proto_hello_read(&t, &g, &e), WISP_ERR_FORMAT);
    wisp_wbuf_bytes(&b, "x", 1);
    t.payload = b.data;
    t.payload_len = (uint32_t)b.len;
    assert_int_equal(wisp_proto_hello_read(&t, &g, &e), WISP_ERR_FORMAT);
    const char *json = "{\"rank\":0,\"size\":1e10,\"host\":\"h\",\"pid\":1}";
    t.payload = (const uint8_t *)json;
    t.payload_len = (uint32_t)strlen(json);
    assert_int_equal(wisp_proto_hello_read(&t, &g, &e), WISP_ERR_FORMAT);
    /* no payload at all */
    t.payload = NULL;
    t.payload_len = 0;
    assert_int_equal(wisp_proto_hello_read(&t, &g, &e), WISP_ERR_FORMAT);
    wisp_wbuf_free(&b);
}

static void test_result_stage_timings_round_trip_and_bad_ones_are_refused(void **state)
{
    (void)state;
    wisp_wbuf_t b = {0};
    wisp_proto_result_begin(&b);
    wisp_wbuf_u32(&b, 0xabcdef01u); /* the job's part */
    double st[WISP_PROTO_MAX_STAGES] = {0.5, 1.25, 0, 3, 0, 1e-9};
    wisp_msg_t m;
    assert_int_equal(wisp_proto_result(&m, &b, 7, 70, 10, st), WISP_OK);
    assert_int_equal(m.type, WISP_MSG_RESULT);
    assert_true(m.shard == 7 && m.first == 70 && m.count == 10);
    /* prefix: u32 6, then 0.5 as a little-endian double (0x3fe0000000000000) */
    const uint8_t head[] = {6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f};
    assert_memory_equal(m.payload, head, sizeof head);
    double got[WISP_PROTO_MAX_STAGES];
    const uint8_t *rest;
    size_t rest_len;
    assert_int_equal(wisp_proto_result_read(&m, got, &rest, &rest_len, NULL), WISP_OK);
    assert_memory_equal(got, st, sizeof st);
    assert_int_equal(rest_len, 4);
    assert_memory_equal(rest, "\x01\xef\xcd\xab", 4);
    /* a NaN or negative timing, too many stages, a truncated prefix */
    wisp_error_t e = {0};
    double nan_st[WISP_PROTO_MAX_STAGES] = {0, NAN};
    assert_int_equal(wisp_proto_result(&m, &b, 7, 70, 10, nan_st), WISP_OK);
    assert_int_equal(wisp_proto_result_read(&m, got, &rest, &rest_len, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "timing 1"));
    double neg_st[WISP_PROTO_MAX_STAGES] = {-1};
    assert_int_equal(wisp_proto_result(&m, &b, 7, 70, 10, neg_st), WISP_OK);
    assert_int_equal(wisp_proto_result_read(&m, got, &rest, &rest_len, &e), WISP_ERR_FORMAT);
    b.data[0] = 7;
    assert_int_equal(wisp_proto_result(&m, &b, 7, 70, 10, st), WISP_OK);
    assert_int_equal(wisp_proto_result_read(&m, got, &rest, &rest_len, &e), WISP_ERR_FORMAT);
    b.data[0] = 6;
    m.payload_len = 20;
    assert_int_equal(wisp_proto_result_read(&m, got, &rest, &rest_len, &e), WISP_ERR_FORMAT);
    m.payload = NULL;
    m.payload_len = 0;
    assert_int_equal(wisp_proto_result_read(&m, got, &rest, &rest_len, &e), WISP_ERR_FORMAT);
    /* without result_begin the encoder refuses rather than patch foreign bytes */
    wisp_wbuf_t empty = {0};
    assert_int_equal(wisp_proto_result(&m, &empty, 1, 0, 1, st), WISP_ERR_ARG);
    wisp_wbuf_free(&b);
}

/* An empty payload is a NULL pointer with 0 bytes: the reader must not do
 * pointer arithmetic on it (NULL + 0 is undefined; clang's UBSan, as in the fuzz
 * build, stops on it). */
static void test_reader_on_an_empty_payload_reads_nothing_and_keeps_null(void **state)
{
    (void)state;
    wisp_rbuf_t r;
    wisp_rbuf_init(&r, NULL, 0);
    uint8_t dst[4] = {9, 9, 9, 9};
    char s[8] = "x";
    assert_int_equal(wisp_rbuf_bytes(&r, dst, 0), WISP_OK);
    assert_null(r.p);
    assert_false(r.failed);
    assert_int_equal(wisp_rbuf_f32s(&r, (float *)dst, 0), WISP_OK);
    assert_null(r.p);
    /* a zero-length string from a 4-byte payload leaves p at the end, not past it */
    uint8_t zero[4] = {0, 0, 0, 0};
    wisp_rbuf_init(&r, zero, 4);
    assert_int_equal(wisp_rbuf_str(&r, s, sizeof s), WISP_OK);
    assert_string_equal(s, "");
    assert_int_equal(r.left, 0);
    assert_true(r.p == zero + 4);
    assert_int_equal(wisp_rbuf_u32(&r), 0);
    assert_true(r.failed);
}

/* The other encoders: each sets exactly the header fields of its rule. */
static void test_every_encoder_sets_its_type_and_fields(void **state)
{
    (void)state;
    wisp_wbuf_t b = {0};
    wisp_wbuf_u32(&b, 5);
    wisp_msg_t m;
    assert_int_equal(wisp_proto_shard(&m, 3, 30, 10, &b), WISP_OK);
    assert_true(m.type == WISP_MSG_SHARD && m.shard == 3 && m.first == 30 && m.count == 10 &&
                m.payload_len == 4 && m.payload == b.data);
    assert_int_equal(wisp_proto_step(&m, 9, WISP_STOP_REJOIN, NULL), WISP_OK);
    assert_true(m.type == WISP_MSG_STEP && m.shard == 9 && m.aux == 2 && !m.payload_len);
    assert_int_equal(wisp_proto_step_done(&m, 9, 1, &b), WISP_OK);
    assert_true(m.type == WISP_MSG_STEP_DONE && m.shard == 9 && m.aux == 1);
    assert_int_equal(wisp_proto_welcome(&m, 4, "{}", 2), WISP_OK);
    assert_true(m.type == WISP_MSG_WELCOME && m.worker == 4 && m.payload_len == 2);
    assert_int_equal(wisp_proto_welcome(&m, 4, "", 0), WISP_ERR_ARG);
    m = wisp_proto_heartbeat(12);
    assert_true(m.type == WISP_MSG_HEARTBEAT && m.aux == 12);
    m = wisp_proto_bye();
    assert_true(m.type == WISP_MSG_BYE && !m.payload_len);
    b.failed = 1;
    assert_int_equal(wisp_proto_shard(&m, 3, 30, 10, &b), WISP_ERR_NOMEM);
    wisp_wbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trips_every_field),
        cmocka_unit_test(test_malformed_frames_are_refused_with_a_reason),
        cmocka_unit_test(test_random_garbage_never_decodes_as_a_message),
        cmocka_unit_test(test_directions_separate_worker_and_coordinator_messages),
        cmocka_unit_test(test_payload_codec_round_trips_and_detects_truncation),
        cmocka_unit_test(test_curve_keys_round_trip_through_key_files),
        cmocka_unit_test(test_header_fields_outside_their_type_rule_are_refused),
        cmocka_unit_test(test_hello_wire_bytes_are_little_endian_and_round_trip),
        cmocka_unit_test(test_hostile_hellos_are_refused_naming_the_field),
        cmocka_unit_test(test_result_stage_timings_round_trip_and_bad_ones_are_refused),
        cmocka_unit_test(test_reader_on_an_empty_payload_reads_nothing_and_keeps_null),
        cmocka_unit_test(test_every_encoder_sets_its_type_and_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
