/* Tests of common/audio/features: the one path -> log-mel front end. A clip's features
 * are the log-mel of the first 30 s of the whole-file decode, whatever the source rate
 * and length; windows of a decoded signal give the log-mel of exactly those samples;
 * the frame limit is enforced by name; equal-length clips are batched together.
 * Inputs are written here with libsndfile. */
#include "testutil.h"

#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/features.h"
#include "audio/mel.h"
#include "base/util.h"

/* A mono float file of `seconds` of a 440 Hz + 3 kHz mix at rate (path in tmpdir). */
static const char *s_write_tone(const char *name, int rate, double seconds)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", wisp_test_tmpdir(), name);
    sf_count_t frames = (sf_count_t)(seconds * rate);
    float *x = malloc(sizeof(float) * (size_t)frames);
    assert_non_null(x);
    for (sf_count_t i = 0; i < frames; i++)
        x[i] = (float)(0.3 * sin(2 * M_PI * 440.0 * (double)i / rate) +
                       0.1 * sin(2 * M_PI * 3000.0 * (double)i / rate));
    SF_INFO info = {.samplerate = rate, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_FLOAT};
    SNDFILE *sf = sf_open(p, SFM_WRITE, &info);
    assert_non_null(sf);
    assert_int_equal(sf_writef_float(sf, x, frames), frames);
    sf_close(sf);
    free(x);
    return p;
}

static void test_long_clip_features_are_the_first_30_s_of_the_whole_file_decode(void **state)
{
    (void)state;
    /* 44.1 kHz, 33 s: resampled, and longer than the cap */
    const char *path = s_write_tone("long44.wav", 44100, 33.0);
    for (int truncate = 0; truncate <= 1; truncate++) {
        wisp_features_t *fx = wisp_features_new(80, truncate, 0, NULL);
        wisp_mel_t *mel = wisp_mel_new(80, NULL);
        assert_non_null(fx);
        assert_non_null(mel);
        float *got = wisp_alloc(sizeof(float) * 80 * WISP_N_FRAMES);
        float *want = wisp_alloc(sizeof(float) * 80 * WISP_N_FRAMES);
        wisp_features_info_t info;
        assert_int_equal(wisp_features_file(fx, path, got, &info, NULL), WISP_OK);
        assert_int_equal(info.frames, WISP_N_FRAMES);
        assert_int_equal(info.capped, 1);
        assert_int_equal(info.source_rate, 44100);
        assert_true(fabs(info.duration - 33.0) < 1e-9);
        wisp_audio_t full;
        assert_int_equal(wisp_features_decode(path, 0, &full, NULL), WISP_OK);
        assert_true(full.n > WISP_N_SAMPLES);
        wisp_mel_compute(mel, full.samples, WISP_N_SAMPLES, truncate, want);
        /* bitwise: the decode runs past the cut, so the resampler's tail is not in it */
        assert_memory_equal(got, want, sizeof(float) * 80 * WISP_N_FRAMES);
        wisp_audio_free(&full);
        wisp_free(got);
        wisp_free(want);
        wisp_mel_destroy(&mel);
        wisp_features_destroy(&fx);
        assert_null(fx);
    }
}

static void test_window_features_are_the_log_mel_of_exactly_those_samples(void **state)
{
    (void)state;
    const char *path = s_write_tone("win16.wav", 16000, 5.0);
    wisp_features_t *fx = wisp_features_new(80, 1, 0, NULL);
    wisp_mel_t *mel = wisp_mel_new(80, NULL);
    wisp_audio_t a;
    assert_int_equal(wisp_features_decode(path, 0, &a, NULL), WISP_OK);
    assert_int_equal(a.n, 80000);
    float *got = wisp_alloc(sizeof(float) * 80 * WISP_N_FRAMES);
    float *want = wisp_alloc(sizeof(float) * 80 * WISP_N_FRAMES);
    int frames = -1;
    assert_int_equal(wisp_features_window(fx, a.samples, a.n, 17000, 32000, got, &frames, NULL),
                     WISP_OK);
    assert_int_equal(frames, 200);
    wisp_mel_compute(mel, a.samples + 17000, 32000, 1, want);
    assert_memory_equal(got, want, sizeof(float) * 80 * 200);
    /* a window reaching past the end, or empty, is an argument error */
    wisp_error_t e = {0};
    assert_int_equal(wisp_features_window(fx, a.samples, a.n, 70000, 10001, got, &frames, &e),
                     WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "outside"));
    assert_int_equal(frames, 0);
    assert_int_equal(wisp_features_window(fx, a.samples, a.n, a.n, 0, got, &frames, NULL),
                     WISP_ERR_ARG);
    assert_int_equal(wisp_features_window(fx, a.samples, a.n, (size_t)-1, 2, got, &frames, NULL),
                     WISP_ERR_ARG);
    wisp_audio_free(&a);
    wisp_free(got);
    wisp_free(want);
    wisp_mel_destroy(&mel);
    wisp_features_destroy(&fx);
}

static void test_frame_limit_refuses_longer_clips_by_name_and_padded_mode_needs_3000(void **state)
{
    (void)state;
    const char *p3 = s_write_tone("three.wav", 16000, 3.0);
    char p3s[512];
    snprintf(p3s, sizeof p3s, "%s", p3);
    const char *p1 = s_write_tone("one.wav", 22050, 1.0);
    wisp_error_t e = {0};
    assert_null(wisp_features_new(80, 0, 200, &e));
    assert_int_equal(e.code, WISP_ERR_ARG);
    assert_null(wisp_features_new(80, 1, 3001, NULL));
    assert_null(wisp_features_new(80, 1, -1, NULL));
    assert_null(wisp_features_new(81, 1, 0, NULL));
    wisp_features_t *fx = wisp_features_new(80, 1, 200, NULL);
    assert_non_null(fx);
    assert_int_equal(wisp_features_max_frames(fx), 200);
    float *out = wisp_alloc(sizeof(float) * 80 * 200);
    wisp_features_info_t info;
    assert_int_equal(wisp_features_file(fx, p1, out, &info, NULL), WISP_OK);
    assert_int_equal(info.frames, 100);
    assert_int_equal(info.capped, 0);
    wisp_error_clear(&e);
    assert_int_equal(wisp_features_file(fx, p3s, out, &info, &e), WISP_ERR_UNSUPPORTED);
    if (!strstr(e.msg, p3s) || !strstr(e.msg, "3.00 s") || !strstr(e.msg, "100 positions"))
        fail_msg("error '%s' should name the file, its length and the limit", e.msg);
    /* a missing file keeps the decoder's error */
    wisp_error_clear(&e);
    assert_int_equal(wisp_features_file(fx, "/nonexistent/x.wav", out, NULL, &e),
                     WISP_ERR_NOTFOUND);
    wisp_free(out);
    wisp_features_destroy(&fx);
    wisp_features_destroy(&fx); /* NULL is accepted */
    wisp_features_destroy(NULL);
}

/* The shared batching: a stable order by frame count, then runs of one length of at
 * most max_b clips, each copied whole (n_mels x frames) with its label. */
static void test_equal_length_batches_are_runs_of_the_stable_frame_order(void **state)
{
    (void)state;
    enum { NM = 3, N = 6, MAXF = 6 };
    const int frames[N] = {4, 2, 4, 6, 2, 4};
    float mel[N][NM * MAXF];
    wisp_features_clip_t clips[N];
    for (int k = 0; k < N; k++) {
        for (int j = 0; j < NM * frames[k]; j++)
            mel[k][j] = (float)(100 * k + j);
        clips[k] = (wisp_features_clip_t){.mel = mel[k], .frames = frames[k], .label = 10 + k};
    }
    int ord[N];
    wisp_features_order(clips, N, ord);
    const int want_ord[N] = {1, 4, 0, 2, 5, 3};
    for (int k = 0; k < N; k++)
        if (ord[k] != want_ord[k])
            fail_msg("ord[%d] = %d, want %d", k, ord[k], want_ord[k]);

    /* max_b 2 cuts the run of three 4-frame clips; sizes 2 (2 frames), 2, 1 (4), 1 (6) */
    const int want_b[] = {2, 2, 1, 1}, want_f[] = {2, 4, 4, 6};
    float batch[2 * NM * MAXF];
    int labels[2], f = 0, runs = 0;
    for (int i = 0; i < N; runs++) {
        assert_true(runs < 4);
        int B = wisp_features_batch(clips, ord, N, i, 2, NM, batch, labels, &f);
        assert_int_equal(B, want_b[runs]);
        assert_int_equal(f, want_f[runs]);
        for (int b = 0; b < B; b++) {
            int k = ord[i + b];
            assert_int_equal(labels[b], 10 + k);
            for (int j = 0; j < NM * f; j++)
                if (batch[(size_t)b * NM * f + j] != mel[k][j])
                    fail_msg("run %d clip %d: element %d is %g, want %g", runs, b, j,
                             (double)batch[(size_t)b * NM * f + j], (double)mel[k][j]);
        }
        i += B;
    }
    assert_int_equal(runs, 4);
    /* without an order the runs are in input order: 4 | 2 | 4 | ... */
    assert_int_equal(wisp_features_batch(clips, NULL, N, 0, 8, NM, batch, labels, &f), 1);
    assert_int_equal(f, 4);
    assert_int_equal(wisp_features_batch(clips, NULL, N, 4, 8, NM, batch, labels, &f), 1);
    assert_int_equal(labels[0], 14);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_clip_features_are_the_first_30_s_of_the_whole_file_decode),
        cmocka_unit_test(test_window_features_are_the_log_mel_of_exactly_those_samples),
        cmocka_unit_test(test_frame_limit_refuses_longer_clips_by_name_and_padded_mode_needs_3000),
        cmocka_unit_test(test_equal_length_batches_are_runs_of_the_stable_frame_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
