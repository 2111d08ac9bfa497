/* Tests of common/util and common/err: the helpers every module relies on. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/util.h"

static void test_sha256_matches_the_standard_digest(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/abc.txt", wisp_test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);
    char hex[65];
    assert_int_equal(wisp_sha256_file(path, hex, NULL), WISP_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_sha256_of_buffers_matches_the_standard_digests(void **state)
{
    (void)state;
    char hex[65];
    wisp_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* 56 bytes: the padding spills into a second block */
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    wisp_sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* The streaming digest must not depend on how the input is split: pieces of every size
 * from 1 to 130 bytes (so updates start mid-block, end mid-block and take whole blocks
 * straight from the input) give the standard digest of a million 'a's (FIPS 180-2). */
static void test_sha256_streamed_in_any_split_is_the_same_digest(void **state)
{
    (void)state;
    enum { N = 1000000 };
    char *a = malloc(N);
    assert_non_null(a);
    memset(a, 'a', N);
    const char *want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    char hex[65];
    wisp_sha256_hex(a, N, hex);
    assert_string_equal(hex, want);
    wisp_sha256_t c;
    wisp_sha256_init(&c);
    size_t off = 0;
    for (size_t k = 1; off < N; k = k % 130 + 1) {
        size_t take = N - off < k ? N - off : k;
        wisp_sha256_update(&c, a + off, take);
        off += take;
    }
    wisp_sha256_final(&c, hex);
    assert_string_equal(hex, want);
    wisp_sha256_init(&c); /* one byte, then whole blocks from an unaligned position */
    wisp_sha256_update(&c, a, 1);
    wisp_sha256_update(&c, a + 1, N - 1);
    wisp_sha256_final(&c, hex);
    assert_string_equal(hex, want);
    free(a);
}

static void test_first_error_wins_and_names_the_file(void **state)
{
    (void)state;
    wisp_error_t e = {0};
    char *buf = NULL;
    int rc = wisp_read_file("/nonexistent/x.json", 100, &buf, NULL, &e);
    assert_int_equal(rc, WISP_ERR_NOTFOUND);
    assert_null(buf);
    assert_non_null(strstr(e.msg, "/nonexistent/x.json"));
    wisp_error_set(&e, WISP_ERR_IO, "later");
    assert_int_equal(e.code, WISP_ERR_NOTFOUND);
}

/* A key or path quoted from a hostile file cannot split the message (found by
 * fuzz_adapter_config: a JSON key holding a newline). */
static void test_an_error_message_is_one_line(void **state)
{
    (void)state;
    wisp_error_t e = {0};
    wisp_error_set(&e, WISP_ERR_FORMAT, "config: key \"%s\" at %s", "a\nb\rc\x1b[2J", "x\ty");
    assert_string_equal(e.msg, "config: key \"a?b?c?[2J\" at x?y");
}

static void test_atomic_write_then_read_round_trips(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/sub/dir", wisp_test_tmpdir());
    assert_int_equal(wisp_mkdir_p(path, NULL), WISP_OK);
    strcat(path, "/f.bin");
    assert_int_equal(wisp_write_file_atomic(path, "hello", 5, NULL), WISP_OK);
    char *buf;
    size_t len;
    assert_int_equal(wisp_read_file(path, 100, &buf, &len, NULL), WISP_OK);
    assert_int_equal(len, 5);
    assert_string_equal(buf, "hello");
    free(buf);
    assert_int_equal(wisp_read_file(path, 2, &buf, &len, NULL), WISP_ERR_FORMAT);
}

static void test_rng_is_deterministic_and_well_spread(void **state)
{
    (void)state;
    wisp_rng_t a, b;
    wisp_rng_seed(&a, 42);
    wisp_rng_seed(&b, 42);
    double sum = 0, sq = 0;
    for (int i = 0; i < 20000; i++) {
        float x = wisp_rng_normal(&a);
        assert_true(x == wisp_rng_normal(&b));
        sum += x;
        sq += (double)x * x;
    }
    assert_true(sum / 20000 < 0.05 && sum / 20000 > -0.05);
    assert_true(sq / 20000 > 0.95 && sq / 20000 < 1.05);
    float u = wisp_rng_uniform(&a);
    assert_true(u >= 0.0f && u < 1.0f);
}

static void test_path_join_keeps_absolute_names(void **state)
{
    (void)state;
    char p[64];
    assert_int_equal(wisp_path_join(p, sizeof p, "/data", "a.wav"), WISP_OK);
    assert_string_equal(p, "/data/a.wav");
    assert_int_equal(wisp_path_join(p, sizeof p, "/data", "/abs/a.wav"), WISP_OK);
    assert_string_equal(p, "/abs/a.wav");
    assert_int_equal(wisp_path_dirname(p, sizeof p, "x/y/z.csv"), WISP_OK);
    assert_string_equal(p, "x/y");
    assert_int_equal(wisp_path_join(p, 4, "/data", "a.wav"), WISP_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_matches_the_standard_digest),
        cmocka_unit_test(test_sha256_of_buffers_matches_the_standard_digests),
        cmocka_unit_test(test_sha256_streamed_in_any_split_is_the_same_digest),
        cmocka_unit_test(test_first_error_wins_and_names_the_file),
        cmocka_unit_test(test_an_error_message_is_one_line),
        cmocka_unit_test(test_atomic_write_then_read_round_trips),
        cmocka_unit_test(test_rng_is_deterministic_and_well_spread),
        cmocka_unit_test(test_path_join_keeps_absolute_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
