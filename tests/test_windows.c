/* Tests of common/audio/windows: window plans over long audio, the seeded training
 * window, the options check and features.json beside a head. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>
#include <sndfile.h>

#include "audio/audio.h"
#include "audio/features.h"
#include "audio/windows.h"
#include "base/util.h"

#define S 16000 /* samples per second */

static void test_windows_match_the_documented_examples(void **state)
{
    (void)state;
    size_t st, len;
    assert_int_equal(wisp_windows_count(45 * S, 30 * S, 30 * S), 2);
    wisp_windows_at(45 * S, 30 * S, 30 * S, 0, &st, &len);
    assert_true(st == 0 && len == 30 * S);
    wisp_windows_at(45 * S, 30 * S, 30 * S, 1, &st, &len);
    assert_true(st == 15 * S && len == 30 * S); /* the last window ends at the end */
    assert_int_equal(wisp_windows_count(70 * S, 30 * S, 20 * S), 3);
    wisp_windows_at(70 * S, 30 * S, 20 * S, 1, &st, &len);
    assert_int_equal(st, 20 * S);
    wisp_windows_at(70 * S, 30 * S, 20 * S, 2, &st, &len);
    assert_int_equal(st, 40 * S);
    /* A short signal is one window: itself. */
    assert_int_equal(wisp_windows_count(5 * S, 30 * S, 10 * S), 1);
    wisp_windows_at(5 * S, 30 * S, 10 * S, 0, &st, &len);
    assert_true(st == 0 && len == 5 * S);
    assert_int_equal(wisp_windows_count(30 * S, 30 * S, 10 * S), 1);
    assert_int_equal(wisp_windows_count(30 * S + 1, 30 * S, 10 * S), 2);
}

/* Every sample of every signal length is in some window, every window is full, starts
 * increase and consecutive windows overlap or touch (never a gap). */
static void test_windows_cover_every_sample_without_gaps(void **state)
{
    (void)state;
    const size_t wins[] = {7, 10, 32}, hops[] = {1, 3, 7, 10};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 4; b++) {
            size_t win = wins[a], hop = hops[b];
            if (hop > win)
                continue;
            for (size_t n = 1; n < 200; n++) {
                size_t W = wisp_windows_count(n, win, hop), covered = 0, prev = 0;
                for (size_t k = 0; k < W; k++) {
                    size_t st, len;
                    wisp_windows_at(n, win, hop, k, &st, &len);
                    assert_true(st + len <= n);
                    assert_int_equal(len, n < win ? n : win);
                    if (k == 0)
                        assert_int_equal(st, 0);
                    else
                        assert_true(st > prev && st <= covered);
                    if (st + len > covered)
                        covered = st + len;
                    prev = st;
                }
                assert_int_equal(covered, n);
                /* No window more than needed: without the last, coverage is short. */
                if (W > 1) {
                    size_t st, len;
                    wisp_windows_at(n, win, hop, W - 2, &st, &len);
                    assert_true(st + len < n);
                }
            }
        }
}

static void test_random_training_window_is_seeded_uniform_and_in_range(void **state)
{
    (void)state;
    const size_t n = 45 * S, win = 30 * S;
    size_t lo = n, hi = 0, changed = 0;
    for (uint64_t epoch = 0; epoch < 400; epoch++) {
        size_t a = wisp_windows_random_start(n, win, 7, epoch, 3);
        assert_int_equal(a, wisp_windows_random_start(n, win, 7, epoch, 3)); /* reproducible */
        assert_true(a + win <= n);
        lo = a < lo ? a : lo;
        hi = a > hi ? a : hi;
        changed += a != wisp_windows_random_start(n, win, 7, epoch, 4);
    }
    /* Spread over the whole range [0, 15 s], different per item. */
    assert_true(lo < S && hi > 14 * S);
    assert_true(changed > 390);
    assert_int_equal(wisp_windows_random_start(win, win, 7, 1, 1), 0);
    assert_int_equal(wisp_windows_random_start(10, win, 7, 1, 1), 0);
    assert_true(
        wisp_windows_random_start(n, win, 8, 0, 3) != wisp_windows_random_start(n, win, 7, 0, 3) ||
        wisp_windows_random_start(n, win, 8, 1, 3) != wisp_windows_random_start(n, win, 7, 1, 3));
}

static void test_window_options_are_checked(void **state)
{
    (void)state;
    wisp_error_t e = {0};
    wisp_windows_opts_t o = {.seconds = 30};
    assert_int_equal(wisp_windows_check(&o, &e), WISP_OK);
    assert_true(o.hop == 30); /* hop 0 = the window */
    o = (wisp_windows_opts_t){.seconds = 0};
    assert_int_equal(wisp_windows_check(&o, &e), WISP_OK);
    o = (wisp_windows_opts_t){.seconds = 31};
    assert_int_equal(wisp_windows_check(&o, &e), WISP_ERR_ARG);
    o = (wisp_windows_opts_t){.seconds = 10, .hop = 11};
    wisp_error_clear(&e);
    assert_int_equal(wisp_windows_check(&o, &e), WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "hop"));
    o = (wisp_windows_opts_t){.seconds = -1};
    assert_int_equal(wisp_windows_check(&o, &e), WISP_ERR_ARG);
    wisp_windows_agg_t agg;
    assert_int_equal(wisp_windows_parse_aggregate("max", &agg, &e), WISP_OK);
    assert_int_equal(agg, WISP_WINDOWS_MAX);
    assert_string_equal(wisp_windows_aggregate_name(agg), "max");
    wisp_error_clear(&e);
    assert_int_equal(wisp_windows_parse_aggregate("median", &agg, &e), WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "median"));
    assert_int_equal(wisp_windows_samples(1.5), 24000);
}

static void test_feature_settings_round_trip_and_refuse_the_other_mode(void **state)
{
    (void)state;
    const char *dir = wisp_test_tmpdir();
    wisp_error_t e = {0};
    wisp_feature_settings_t s = {0};
    assert_int_equal(wisp_feature_settings_load(dir, &s, &e), 0); /* absent */
    assert_int_equal(wisp_feature_settings_check(dir, 1, &e), WISP_OK);
    wisp_feature_settings_t w = {.truncate = 1, .window_seconds = 20};
    assert_int_equal(wisp_feature_settings_save(dir, &w, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_load(dir, &s, &e), 1);
    assert_true(s.truncate == 1 && s.window_seconds == 20);
    assert_int_equal(wisp_feature_settings_check(dir, 1, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_check(dir, 0, &e), WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "--truncate"));
    char path[4096];
    wisp_path_join(path, sizeof path, dir, "features.json");
    FILE *f = fopen(path, "w");
    fputs("{\"truncate\": 1}", f);
    fclose(f);
    wisp_error_clear(&e);
    assert_true(wisp_feature_settings_load(dir, &s, &e) < 0);
    assert_non_null(strstr(e.msg, "truncate"));
}

/* A head trained on windows of W s is classified with windows of W s; one trained on
 * the first 30 s (window 0) without windows or with 30 s windows; anything else is
 * refused naming classify.window / --window and the value to use. */
static void test_feature_settings_refuse_another_clip_length(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fs_window", wisp_test_tmpdir());
    wisp_error_t e = {0};
    assert_int_equal(wisp_mkdir_p(dir, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_check_window(dir, 7, &e), WISP_OK); /* absent */
    wisp_feature_settings_t w = {.truncate = 1, .window_seconds = 10};
    assert_int_equal(wisp_feature_settings_save(dir, &w, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_check_window(dir, 10, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_check_window(dir, 10.00001, &e), WISP_OK); /* 1 sample */
    static const double refused[] = {0, 30, 5, 10.001};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        wisp_error_clear(&e);
        assert_int_equal(wisp_feature_settings_check_window(dir, refused[i], &e), WISP_ERR_STATE);
        if (!strstr(e.msg, "classify.window: 10 (--window=10)") || !strstr(e.msg, dir))
            fail_msg("window %g: %s", refused[i], e.msg);
    }
    w.window_seconds = 0;
    assert_int_equal(wisp_feature_settings_save(dir, &w, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_check_window(dir, 0, &e), WISP_OK);
    assert_int_equal(wisp_feature_settings_check_window(dir, 30, &e), WISP_OK);
    wisp_error_clear(&e);
    assert_int_equal(wisp_feature_settings_check_window(dir, 10, &e), WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "first 30 s"));
    assert_non_null(strstr(e.msg, "classify.window: 30 or 0"));
    /* the text _save writes is the one _text gives (checkpoints store it) */
    char *text = wisp_feature_settings_text(&w), *file = NULL, path[600];
    size_t len = 0;
    assert_non_null(text);
    snprintf(path, sizeof path, "%s/features.json", dir);
    assert_int_equal(wisp_read_file(path, 4096, &file, &len, &e), WISP_OK);
    assert_string_equal(text, file);
    free(text);
    free(file);
}

/* The training window of a long file: the log-mel of the samples at the seeded start,
 * bitwise; the same (seed, epoch, item) gives the same window, epochs move it. */
static void test_training_window_is_the_log_mel_of_the_seeded_window(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/long_train.wav", wisp_test_tmpdir());
    enum { NS = 2 * S };
    static short pcm[NS];
    for (int t = 0; t < NS; t++) /* a sweep: every window differs */
        pcm[t] = (short)(8000 * sin(6.2831853 * (200.0 + 2000.0 * t / NS) * t / S));
    SF_INFO info = {.samplerate = S, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    assert_non_null(f);
    assert_int_equal(sf_write_short(f, pcm, NS), NS);
    sf_close(f);
    wisp_error_t e = {0};
    wisp_features_t *feat = wisp_features_new(80, 1, 0, &e);
    assert_non_null(feat);
    wisp_audio_t a;
    memset(&a, 0, sizeof a);
    assert_int_equal(wisp_audio_load(path, 0, &a, &e), WISP_OK);
    static float got[80 * 3000], want[80 * 3000], again[80 * 3000];
    size_t first = 0;
    int moved = 0;
    for (uint64_t epoch = 0; epoch < 6; epoch++) {
        wisp_features_info_t fi;
        assert_int_equal(wisp_windows_train_clip(feat, path, 0.5, 11, epoch, 3, got, &fi, &e), 0);
        size_t st = wisp_windows_random_start(a.n, S / 2, 11, epoch, 3);
        int frames = 0;
        assert_int_equal(wisp_features_window(feat, a.samples, a.n, st, S / 2, want, &frames, &e),
                         WISP_OK);
        assert_int_equal(fi.frames, frames);
        assert_int_equal(frames, 50);
        assert_memory_equal(got, want, sizeof(float) * 80 * (size_t)frames);
        assert_true(fabs(fi.duration - 2.0) < 1e-6);
        assert_int_equal(wisp_windows_train_clip(feat, path, 0.5, 11, epoch, 3, again, &fi, &e), 0);
        assert_memory_equal(got, again, sizeof(float) * 80 * (size_t)frames);
        if (epoch == 0)
            first = st;
        moved |= st != first;
    }
    assert_true(moved);
    /* window 0: the first 30 s, as wisp_features_file */
    wisp_features_info_t fi, fj;
    assert_int_equal(wisp_windows_train_clip(feat, path, 0, 11, 0, 3, got, &fi, &e), WISP_OK);
    assert_int_equal(wisp_features_file(feat, path, want, &fj, &e), WISP_OK);
    assert_int_equal(fi.frames, fj.frames);
    assert_memory_equal(got, want, sizeof(float) * 80 * (size_t)fi.frames);
    wisp_audio_free(&a);
    wisp_features_destroy(&feat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_windows_match_the_documented_examples),
        cmocka_unit_test(test_windows_cover_every_sample_without_gaps),
        cmocka_unit_test(test_random_training_window_is_seeded_uniform_and_in_range),
        cmocka_unit_test(test_window_options_are_checked),
        cmocka_unit_test(test_feature_settings_round_trip_and_refuse_the_other_mode),
        cmocka_unit_test(test_feature_settings_refuse_another_clip_length),
        cmocka_unit_test(test_training_window_is_the_log_mel_of_the_seeded_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
