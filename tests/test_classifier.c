/* Tests of jobs/classifier: rows in input order whatever the clip lengths, each row
 * equal to a forward of that clip alone, error rows for unreadable files, and the
 * refusals with a reason (no head, padded input on a short-position model). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio.h"
#include "classify/classifier.h"
#include "formats/config.h"
#include "base/log.h"
#include "audio/mel.h"
#include "audio/windows.h"
#include "nn/model.h"

#include "train_fixtures.h"

/* Saves a fresh seq_bn adapter and a 4-class head for the tiny model. */
static void s_adapter_and_head(char *adapter, char *head, size_t n)
{
    snprintf(adapter, n, "%s/cls_adapter", wisp_test_tmpdir());
    snprintf(head, n, "%s/cls_head", wisp_test_tmpdir());
    wisp_model_opts_t mo = {.max_batch = 1, .max_frames = 2 * TPOS, .training = 0, .threads = 1};
    wisp_error_t e = {0};
    wisp_model_t *m = wisp_model_new(s_model_dir(), &mo, &e);
    if (!m)
        fail_msg("%s", e.msg);
    wisp_adapter_config_t ac;
    memset(&ac, 0, sizeof ac);
    assert_int_equal(wisp_adapter_config_preset(&ac, "seq_bn", &e), WISP_OK);
    assert_int_equal(wisp_model_set_adapter(m, &ac, 3, &e), WISP_OK);
    wisp_adapter_config_free(&ac);
    char *names[NLAB] = {"a", "b", "c", "d"};
    wisp_head_config_t hc = {.num_labels = NLAB,
                             .classifier_proj_size = PROJ,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = L,
                             .d_model = D,
                             .id2label = names};
    assert_int_equal(wisp_model_init_head(m, &hc, 4, &e), WISP_OK);
    /* Larger head weights than the init so the classes differ clearly. */
    float *p = wisp_model_params(m);
    wisp_rng_t r;
    wisp_rng_seed(&r, 9);
    for (size_t i = 0; i < wisp_model_num_params(m); i++)
        p[i] = 0.5f * (wisp_rng_uniform(&r) - 0.5f);
    assert_int_equal(wisp_model_save_adapter(m, adapter, &e), WISP_OK);
    assert_int_equal(wisp_model_save_head(m, head, &e), WISP_OK);
    wisp_model_destroy(&m);
}

static void s_tone(const char *path, int samples, float freq)
{
    float x[4800];
    for (int t = 0; t < samples; t++)
        x[t] = 0.4f * sinf(6.2831853f * freq * (float)t / 16000.0f) + 0.1f * sinf(0.37f * t);
    s_write_wav(path, x, samples);
}

static void test_rows_follow_input_order_and_equal_single_clip_forwards(void **state)
{
    (void)state;
    char adapter[512], head[512];
    s_adapter_and_head(adapter, head, sizeof adapter);
    /* Mixed lengths (10, 20, 20, 10 and 30 frames) and one unreadable file. */
    const int samples[6] = {1600, 3200, 3200, 0, 1600, 4800};
    char paths[6][640];
    const char *pp[6];
    for (int i = 0; i < 6; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/cls_%d.wav", wisp_test_tmpdir(), i);
        if (samples[i]) {
            s_tone(paths[i], samples[i], 200.0f + 400.0f * (float)i);
        } else {
            FILE *f = fopen(paths[i], "w");
            fputs("RIFF but not really", f);
            fclose(f);
        }
        pp[i] = paths[i];
    }
    wisp_classifier_opts_t o;
    wisp_classifier_default_opts(&o);
    o.model_dir = s_model_dir();
    o.adapter_dir = adapter;
    o.head_dir = head;
    o.truncate = 1;
    o.embeddings = 1;
    o.batch = 4; /* two chunks: 4 + 2 files */
    o.threads = 1;
    wisp_error_t e = {0};
    wisp_classifier_t *c = wisp_classifier_new(&o, &e);
    if (!c)
        fail_msg("%s", e.msg);
    assert_int_equal(wisp_classifier_num_classes(c), NLAB);
    assert_int_equal(wisp_classifier_embed_dim(c), PROJ);
    assert_string_equal(wisp_classifier_class_name(c, 2), "c");
    wisp_classifier_result_t rows[6];
    float probs[6 * NLAB], logits[6 * NLAB], emb[6 * PROJ];
    wisp_log_set_level(WISP_LOG_ERROR);
    assert_int_equal(wisp_classifier_run(c, pp, 6, rows, probs, logits, emb, &e), WISP_OK);
    wisp_log_set_level(WISP_LOG_WARN);

    /* Reference: each clip alone through the same model. */
    wisp_model_t *m = wisp_classifier_model(c);
    wisp_mel_t *mel = wisp_mel_new(NMELS, &e);
    float feat[NMELS * 30], z[NLAB], pooled[PROJ];
    for (int i = 0; i < 6; i++) {
        if (!samples[i]) {
            assert_int_equal(rows[i].status, WISP_ERR_AUDIO);
            assert_int_equal(rows[i].label, -1);
            assert_non_null(strstr(rows[i].error, paths[i]));
            assert_true(isnan(rows[i].score) && isnan(probs[i * NLAB]) && isnan(emb[i * PROJ]));
            continue;
        }
        wisp_audio_t a;
        memset(&a, 0, sizeof a);
        assert_int_equal(wisp_audio_load(paths[i], 30.0, &a, &e), WISP_OK);
        int frames = wisp_mel_num_frames(a.n, 1);
        assert_int_equal(frames, samples[i] / 160);
        wisp_mel_compute(mel, a.samples, a.n, 1, feat);
        wisp_audio_free(&a);
        assert_int_equal(wisp_model_forward(m, feat, 1, frames, z, pooled), WISP_OK);
        char label[64];
        snprintf(label, sizeof label, "logits of row %d", i);
        wisp_assert_close(logits + i * NLAB, z, NLAB, 1e-5, 1e-5, label);
        wisp_assert_close(emb + i * PROJ, pooled, PROJ, 1e-5, 1e-5, "embedding");
        assert_int_equal(rows[i].status, 0);
        assert_string_equal(rows[i].error, "");
        assert_true(fabs(rows[i].duration - samples[i] / 16000.0) < 1e-6);
        double sum = 0.0;
        int best = 0;
        for (int k = 0; k < NLAB; k++) {
            sum += probs[i * NLAB + k];
            if (z[k] > z[best])
                best = k;
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
        assert_int_equal(rows[i].label, best);
        assert_true(rows[i].score == probs[i * NLAB + best]);
    }
    wisp_mel_destroy(&mel);
    wisp_classifier_destroy(&c);
    assert_null(c);
}

static void test_missing_head_and_impossible_padding_are_refused_with_a_reason(void **state)
{
    (void)state;
    wisp_classifier_opts_t o;
    wisp_classifier_default_opts(&o);
    o.model_dir = s_model_dir();
    o.truncate = 1;
    wisp_error_t e = {0};
    assert_null(wisp_classifier_new(&o, &e)); /* the tiny checkpoint has no head */
    assert_int_equal(e.code, WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "--head"));
    o.truncate = 0; /* 16 positions cannot hold 30 s */
    wisp_error_clear(&e);
    assert_null(wisp_classifier_new(&o, &e));
    assert_int_equal(e.code, WISP_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "--truncate"));
}

/* A 1 s two-tone file whose second half differs from its first, so windows differ. */
static void s_long_tone(const char *path, int samples)
{
    float *x = malloc((size_t)samples * sizeof *x);
    for (int t = 0; t < samples; t++)
        x[t] = 0.4f * sinf(6.2831853f * (t < samples / 2 ? 300.0f : 1700.0f) * (float)t / 16000.0f);
    s_write_wav(path, x, samples);
    free(x);
}

static wisp_classifier_t *s_window_classifier(const char *adapter, const char *head,
                                              wisp_windows_agg_t agg, wisp_error_t *e)
{
    wisp_classifier_opts_t o;
    wisp_classifier_default_opts(&o);
    o.model_dir = s_model_dir();
    o.adapter_dir = adapter;
    o.head_dir = head;
    o.truncate = 1;
    o.embeddings = 1;
    o.batch = 3; /* windows of one file span several forward batches */
    o.threads = 1;
    o.window = (wisp_windows_opts_t){.seconds = 0.3, .hop = 0.2, .aggregate = agg};
    return wisp_classifier_new(&o, e);
}

/* Windows mode: each window's logits equal a forward of that window alone; the file row
 * is the mean (or max) of its windows; a short file is one window, itself. */
static void test_windows_cover_long_files_and_the_file_row_aggregates_them(void **state)
{
    (void)state;
    char adapter[512], head[512], paths[3][640];
    s_adapter_and_head(adapter, head, sizeof adapter);
    const int samples[3] = {16000, 0, 3200};
    const char *pp[3];
    for (int i = 0; i < 3; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/win_%d.wav", wisp_test_tmpdir(), i);
        if (samples[i]) {
            s_long_tone(paths[i], samples[i]);
        } else {
            FILE *f = fopen(paths[i], "w");
            fputs("not audio", f);
            fclose(f);
        }
        pp[i] = paths[i];
    }
    for (int agg = 0; agg < 2; agg++) {
        wisp_error_t e = {0};
        wisp_classifier_t *c = s_window_classifier(adapter, head, (wisp_windows_agg_t)agg, &e);
        if (!c)
            fail_msg("%s", e.msg);
        wisp_classifier_result_t rows[3];
        float probs[3 * NLAB], logits[3 * NLAB], emb[3 * PROJ];
        wisp_log_set_level(WISP_LOG_ERROR);
        assert_int_equal(wisp_classifier_run(c, pp, 3, rows, probs, logits, emb, &e), WISP_OK);
        wisp_log_set_level(WISP_LOG_WARN);
        const float *wp;
        size_t nw;
        const wisp_classifier_window_t *win = wisp_classifier_windows(c, &wp, &nw);
        /* 1 s in 0.3 s windows every 0.2 s: starts 0, .2, .4, .6 and .7 (the last ends
         * at the end); the 0.2 s file is one window; the bad file none. */
        assert_int_equal(rows[0].n_windows, 5);
        assert_int_equal(rows[1].status, WISP_ERR_AUDIO);
        assert_int_equal(rows[1].n_windows, 0);
        assert_int_equal(rows[2].n_windows, 1);
        assert_int_equal(nw, 6);
        const double starts[5] = {0, 0.2, 0.4, 0.6, 0.7};
        wisp_model_t *m = wisp_classifier_model(c);
        wisp_mel_t *mel = wisp_mel_new(NMELS, &e);
        wisp_audio_t a;
        memset(&a, 0, sizeof a);
        float feat[NMELS * 32], z[NLAB], pooled[PROJ];
        for (int i = 0; i < 3; i += 2) {
            assert_int_equal(wisp_audio_load(paths[i], 0, &a, &e), WISP_OK);
            double mean[NLAB] = {0}, mx[NLAB], emean[PROJ] = {0};
            for (int k = 0; k < NLAB; k++)
                mx[k] = -1;
            const wisp_classifier_result_t *r = &rows[i];
            for (uint32_t k = 0; k < r->n_windows; k++) {
                const wisp_classifier_window_t *w = &win[r->first_window + k];
                size_t st = (size_t)(w->start * 16000 + 0.5),
                       len = (size_t)(w->end * 16000 + 0.5) - st;
                if (i == 0) {
                    assert_true(fabs(w->start - starts[k]) < 1e-9);
                    assert_int_equal(len, 4800);
                } else {
                    assert_true(st == 0 && len == 3200);
                }
                int frames = wisp_mel_num_frames(len, 1);
                wisp_mel_compute(mel, a.samples + st, len, 1, feat);
                assert_int_equal(wisp_model_forward(m, feat, 1, frames, z, pooled), WISP_OK);
                double mz = z[0], se = 0;
                int best = 0;
                for (int q = 1; q < NLAB; q++)
                    if (z[q] > z[best])
                        best = q;
                mz = z[best];
                for (int q = 0; q < NLAB; q++)
                    se += exp((double)z[q] - mz);
                assert_int_equal(w->label, best);
                for (int q = 0; q < NLAB; q++) {
                    double pq = exp((double)z[q] - mz) / se;
                    const float *got = wp + (r->first_window + k) * NLAB;
                    assert_true(fabs(got[q] - pq) < 1e-5);
                    mean[q] += pq / r->n_windows;
                    mx[q] = pq > mx[q] ? pq : mx[q];
                }
                for (int q = 0; q < PROJ; q++)
                    emean[q] += (double)pooled[q] / r->n_windows;
            }
            wisp_audio_free(&a);
            int best = 0;
            for (int q = 0; q < NLAB; q++) {
                double want = agg == WISP_WINDOWS_MAX ? mx[q] : mean[q];
                assert_true(fabs(probs[i * NLAB + q] - want) < 1e-5);
                if (probs[i * NLAB + q] > probs[i * NLAB + best])
                    best = q;
            }
            for (int q = 0; q < PROJ; q++)
                assert_true(fabs(emb[i * PROJ + q] - emean[q]) < 1e-5);
            assert_int_equal(r->label, best);
            assert_true(r->score == probs[i * NLAB + best]);
        }
        /* the fixture is not degenerate: the windows of the long file disagree */
        int differ = 0;
        for (uint32_t k = 1; k < rows[0].n_windows; k++)
            differ |= fabsf(wp[k * NLAB] - wp[0]) > 1e-3f;
        assert_true(differ);
        wisp_mel_destroy(&mel);
        wisp_classifier_destroy(&c);
    }
}

static void test_window_options_and_the_heads_features_mode_are_checked(void **state)
{
    (void)state;
    char adapter[512], head[512];
    s_adapter_and_head(adapter, head, sizeof adapter);
    wisp_classifier_opts_t o;
    wisp_classifier_default_opts(&o);
    o.model_dir = s_model_dir();
    o.adapter_dir = adapter;
    o.head_dir = head;
    o.truncate = 1;
    o.window.seconds = 0.5; /* 50 frames; the tiny model has 16 positions = 32 frames */
    wisp_error_t e = {0};
    assert_null(wisp_classifier_new(&o, &e));
    assert_int_equal(e.code, WISP_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "0.32 s"));
    o.window.seconds = 0.3;
    o.window.hop = 0.4;
    wisp_error_clear(&e);
    assert_null(wisp_classifier_new(&o, &e));
    assert_int_equal(e.code, WISP_ERR_ARG);
    /* A head trained on padded features is refused in truncated mode. */
    o.window = (wisp_windows_opts_t){0};
    wisp_feature_settings_t fs = {.truncate = 0};
    assert_int_equal(wisp_feature_settings_save(head, &fs, &e), WISP_OK);
    wisp_error_clear(&e);
    assert_null(wisp_classifier_new(&o, &e));
    assert_int_equal(e.code, WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "drop --truncate"));
    fs.truncate = 1;
    assert_int_equal(wisp_feature_settings_save(head, &fs, &e), WISP_OK);
    wisp_classifier_t *c = wisp_classifier_new(&o, &e);
    assert_non_null(c);
    wisp_classifier_destroy(&c);
}

int main(void)
{
    wisp_log_init('L', 0, WISP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_follow_input_order_and_equal_single_clip_forwards),
        cmocka_unit_test(test_missing_head_and_impossible_padding_are_refused_with_a_reason),
        cmocka_unit_test(test_windows_cover_long_files_and_the_file_row_aggregates_them),
        cmocka_unit_test(test_window_options_and_the_heads_features_mode_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
