/* Tests of common/proto: header round trip, strict validation, payload codecs. */
#include "testutil.h"

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
    /* wrong version */
    m.version = 2;
    n = s_encode(bad, &m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n, 100, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "version 2"));
    /* unknown type */
    m.version = 0;
    m.type = 999;
    n = s_encode(bad, &m);
    wisp_error_clear(&e);
    assert_int_equal(wisp_proto_decode(bad, n, 100, &d, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "type 999"));
    /* payload_len disagreeing with the frame */
    m.type = WISP_MSG_RESULT;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trips_every_field),
        cmocka_unit_test(test_malformed_frames_are_refused_with_a_reason),
        cmocka_unit_test(test_random_garbage_never_decodes_as_a_message),
        cmocka_unit_test(test_directions_separate_worker_and_coordinator_messages),
        cmocka_unit_test(test_payload_codec_round_trips_and_detects_truncation),
        cmocka_unit_test(test_curve_keys_round_trip_through_key_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
