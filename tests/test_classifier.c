/* Tests of jobs/classifier: rows in input order whatever the clip lengths, each row
 * equal to a forward of that clip alone, error rows for unreadable files, and the
 * refusals with a reason (no head, padded input on a short-position model). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "audio/audio.h"
#include "classify/classifier.h"
#include "formats/config.h"
#include "base/log.h"
#include "audio/mel.h"
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

int main(void)
{
    wisp_log_init('L', 0, WISP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_follow_input_order_and_equal_single_clip_forwards),
        cmocka_unit_test(test_missing_head_and_impossible_padding_are_refused_with_a_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
