/* Tests of nn/model.c, forward: golden logits of the PyTorch reference
 * (tests/reference/gen_model_golden.py) for every adapter kind, weighted layer sum on
 * and off, 80/128 mel bins, F32/F16/BF16 checkpoints, batch 1/3, padded and truncated
 * inputs, one run at real whisper-tiny dimensions; loading, saving and refusals. */
#include "model_fixture.h"

#include <unistd.h>

#define LOGIT_RTOL 1e-4 /* max |got - want| <= LOGIT_RTOL * max |want| */

static double s_worst_rel;

static void s_check_logits(const float *got, const char *stem, size_t n)
{
    char path[1024];
    size_t cnt;
    snprintf(path, sizeof path, "%s/model/%s.logits", wisp_test_data_dir(), stem);
    float *want = wisp_test_read_f32(path, &cnt);
    assert_int_equal(cnt, n);
    double scale = wisp_max_abs(want, n);
    double rel = wisp_max_abs_diff(got, want, n) / scale;
    if (rel > s_worst_rel)
        s_worst_rel = rel;
    wisp_assert_close(got, want, n, LOGIT_RTOL * scale, 0.0, stem);
    free(want);
}

static void test_logits_match_the_reference_for_every_golden_case(void **state)
{
    (void)state;
    char dir[1024];
    s_worst_rel = 0.0;
    for (int c = 0; c < MF_NCASES; c++) {
        const mf_case_t *cs = &MF_CASES[c];
        snprintf(dir, sizeof dir, "%s/fwd_%s", wisp_test_tmpdir(), cs->name);
        wisp_model_t *m = mf_case_model(cs, dir, 0);
        int frames = mf_frames(cs);
        float *mel = mf_mel(cs->B, cs->n_mels, frames);
        float logits[3 * 5];
        assert_int_equal(wisp_model_forward(m, mel, cs->B, frames, logits, NULL), 0);
        s_check_logits(logits, cs->name, (size_t)cs->B * MF_TINY.NL);
        free(mel);
        wisp_model_destroy(&m);
        assert_null(m);
    }
    printf("# worst logits error over %d cases: %.2e of max |logit|\n", MF_NCASES, s_worst_rel);
}

static void test_whisper_tiny_dimensions_padded_forward_matches_the_reference(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/whisper_tiny_dims", wisp_test_tmpdir());
    mf_dims_t dm = MF_WHISPER_TINY;
    /* WhisperModel naming (model.encoder.*), head and adapter set separately */
    mf_write_checkpoint(dir, &dm, WISP_DT_F32, "model.encoder.", 0, 1);
    wisp_error_t err = {0};
    wisp_model_opts_t o = {.max_batch = 1, .max_frames = 3000, .threads = 0};
    wisp_model_t *m = wisp_model_new(dir, &o, &err);
    if (!m)
        fail_msg("%s", err.msg);
    wisp_adapter_config_t ac;
    mf_adapter_cfg(&ac, "seq_bn");
    assert_int_equal(wisp_model_set_adapter(m, &ac, 7, &err), 0);
    wisp_adapter_config_free(&ac);
    wisp_head_config_t hc = {.num_labels = dm.NL,
                             .classifier_proj_size = dm.P,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = dm.L,
                             .d_model = dm.d};
    assert_int_equal(wisp_model_init_head(m, &hc, 7, &err), 0);
    mf_fill_trainables(m);
    float *mel = mf_mel(1, 80, 3000);
    float logits[5], embed[256];
    double t0 = wisp_now();
    assert_int_equal(wisp_model_forward(m, mel, 1, 3000, logits, embed), 0);
    printf("# whisper-tiny dims forward (T=1500): %.3f s\n", wisp_now() - t0);
    s_check_logits(logits, "whisper_tiny_dims", 5);
    /* the embedding is the pooled projector output: classifier(embed) == logits */
    const wisp_param_info_t *cw = NULL, *cb = NULL;
    for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
        const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
        if (!strcmp(t->name, "classifier.weight"))
            cw = t;
        if (!strcmp(t->name, "classifier.bias"))
            cb = t;
    }
    assert_non_null(cw);
    assert_non_null(cb);
    float again[5];
    nn_linear_forward_ref(again, embed, wisp_model_params(m) + cw->offset,
                          wisp_model_params(m) + cb->offset, 1, 256, 5);
    wisp_assert_close(again, logits, 5, 1e-5, 1e-4, "classifier(embed)");
    free(mel);
    wisp_model_destroy(&m);
}

static const mf_case_t *s_case(const char *name)
{
    for (int c = 0; c < MF_NCASES; c++)
        if (!strcmp(MF_CASES[c].name, name))
            return &MF_CASES[c];
    fail_msg("no case %s", name);
    return NULL;
}

static void test_classification_checkpoint_head_is_loaded_with_the_encoder(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/cls_ckpt", wisp_test_tmpdir());
    mf_dims_t dm = MF_TINY;
    mf_write_checkpoint(dir, &dm, WISP_DT_F32, "encoder.", 1, 1);
    wisp_error_t err = {0};
    wisp_model_opts_t o = {.max_batch = 3, .max_frames = 32};
    wisp_model_t *m = wisp_model_new(dir, &o, &err);
    if (!m)
        fail_msg("%s", err.msg);
    const wisp_head_config_t *h = wisp_model_head(m);
    assert_non_null(h);
    assert_int_equal(h->num_labels, 5);
    assert_int_equal(h->use_weighted_layer_sum, 1);
    assert_int_equal(wisp_model_num_param_tensors(m), 5);
    const mf_case_t *cs = s_case("none_ws1_b3");
    float *mel = mf_mel(3, 80, 20);
    float logits[15];
    assert_int_equal(wisp_model_forward(m, mel, 3, 20, logits, NULL), 0);
    s_check_logits(logits, cs->name, 15);
    free(mel);
    wisp_model_destroy(&m);
}

static void test_fresh_zero_output_adapters_leave_the_logits_unchanged(void **state)
{
    (void)state;
    /* LoRA (B = 0), IA3 (l = 1) and mam_adapter (up = 0) start as the identity */
    const char *kinds[] = {"lora_all", "ia3", "par_bn"};
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fresh", wisp_test_tmpdir());
    const mf_case_t *cs = s_case("none_ws1_b3");
    wisp_model_t *m = mf_case_model(cs, dir, 0);
    float *mel = mf_mel(3, 80, 20);
    float base[15], got[15];
    assert_int_equal(wisp_model_forward(m, mel, 3, 20, base, NULL), 0);
    for (int k = 0; k < 3; k++) {
        wisp_adapter_config_t ac;
        wisp_error_t err = {0};
        mf_adapter_cfg(&ac, kinds[k]);
        assert_int_equal(wisp_model_set_adapter(m, &ac, 42, &err), 0);
        wisp_adapter_config_free(&ac);
        /* the head survives the new layout */
        assert_int_equal(wisp_model_forward(m, mel, 3, 20, got, NULL), 0);
        wisp_assert_close(got, base, 15, 1e-6, 1e-5, kinds[k]);
    }
    free(mel);
    wisp_model_destroy(&m);
}

static void test_adapter_inits_follow_the_library_schemes(void **state)
{
    (void)state;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/inits", wisp_test_tmpdir());
    wisp_model_t *m = mf_case_model(s_case("none_ws0_b3"), dir, 0);
    wisp_error_t err = {0};
    wisp_adapter_config_t ac;
    mf_adapter_cfg(&ac, "lora_qv");
    assert_int_equal(wisp_model_set_adapter(m, &ac, 3, &err), 0);
    wisp_adapter_config_free(&ac);
    float *p = wisp_model_params(m);
    int n_a = 0;
    for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
        const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
        if (mf_ends(t->name, "lora_A")) {
            double bound = 1.0 / sqrt((double)t->shape[1]),
                   mx = wisp_max_abs(p + t->offset, t->numel);
            assert_true(mx <= bound && mx > 0.8 * bound);
            n_a++;
        } else if (mf_ends(t->name, "lora_B")) {
            assert_true(wisp_max_abs(p + t->offset, t->numel) == 0.0);
        }
    }
    assert_int_equal(n_a, 2 * MF_TINY.L);
    /* bert: N(0, 0.02) weights, zero biases (seeded: same seed, same values) */
    mf_adapter_cfg(&ac, "seq_bn");
    assert_int_equal(wisp_model_set_adapter(m, &ac, 5, &err), 0);
    size_t n = wisp_model_num_params(m);
    float *first = malloc(n * sizeof(float));
    memcpy(first, wisp_model_params(m), n * sizeof(float));
    assert_int_equal(wisp_model_set_adapter(m, &ac, 5, &err), 0);
    assert_memory_equal(first, wisp_model_params(m), n * sizeof(float));
    wisp_adapter_config_free(&ac);
    p = wisp_model_params(m);
    for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
        const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
        if (mf_ends(t->name, "adapter_up.weight")) {
            double s = 0;
            for (size_t i = 0; i < t->numel; i++)
                s += (double)p[t->offset + i] * p[t->offset + i];
            double sd = sqrt(s / (double)t->numel);
            assert_true(sd > 0.012 && sd < 0.03);
        } else if (mf_ends(t->name, ".bias") && strstr(t->name, "adapter")) {
            assert_true(wisp_max_abs(p + t->offset, t->numel) == 0.0);
        }
    }
    free(first);
    /* houlsby: truncated N(0, 0.01) in [-0.02, 0.02]; mam_adapter: down U(+-1/sqrt(d)), up 0 */
    const char *kinds[] = {"bn_custom", "par_bn"};
    for (int q = 0; q < 2; q++) {
        mf_adapter_cfg(&ac, kinds[q]);
        assert_int_equal(wisp_model_set_adapter(m, &ac, 9, &err), 0);
        wisp_adapter_config_free(&ac);
        p = wisp_model_params(m);
        for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
            const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
            double mx = wisp_max_abs(p + t->offset, t->numel);
            if (!strstr(t->name, "adapters."))
                continue;
            if (mf_ends(t->name, "bias"))
                assert_true(mx == 0.0);
            else if (q == 0)
                assert_true(mx > 0.015 && mx <= 0.02);
            else if (mf_ends(t->name, "adapter_up.weight"))
                assert_true(mx == 0.0);
            else
                assert_true(mx > 0.8 / sqrt(32.0) && mx <= 1.0 / sqrt(32.0));
        }
    }
    wisp_model_destroy(&m);
}

static void test_adapter_and_head_survive_a_save_load_round_trip(void **state)
{
    (void)state;
    char dir[1024], adir[1024], hdir[1024];
    const mf_case_t *cs = s_case("lora_all_ws1_b3");
    snprintf(dir, sizeof dir, "%s/rt_model", wisp_test_tmpdir());
    snprintf(adir, sizeof adir, "%s/rt_adapter", wisp_test_tmpdir());
    snprintf(hdir, sizeof hdir, "%s/rt_head", wisp_test_tmpdir());
    wisp_model_t *m = mf_case_model(cs, dir, 0);
    wisp_error_t err = {0};
    if (wisp_model_save_adapter(m, adir, &err) < 0 || wisp_model_save_head(m, hdir, &err) < 0)
        fail_msg("%s", err.msg);
    wisp_model_destroy(&m);
    wisp_model_opts_t o = {.max_batch = 3, .max_frames = 32};
    m = wisp_model_new(dir, &o, &err);
    assert_non_null(m);
    if (wisp_model_load_adapter(m, adir, &err) < 0 || wisp_model_load_head(m, hdir, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(wisp_model_adapter(m)->name, "wisp");
    float *mel = mf_mel(3, 80, 20);
    float logits[15];
    assert_int_equal(wisp_model_forward(m, mel, 3, 20, logits, NULL), 0);
    s_check_logits(logits, cs->name, 15);
    free(mel);
    wisp_model_destroy(&m);
}

/* Rewrites dir/adapter.safetensors from m's adapter tensors with each name prefixed by
 * `prefix`, skipping tensor `skip` (-1: none) and adding `extra` (NULL: none). */
static void s_write_adapter_tensors(wisp_model_t *m, const char *dir, const char *prefix, int skip,
                                    const char *extra)
{
    char path[1100], name[600];
    wisp_error_t err = {0};
    wisp_st_writer_t *w = wisp_st_writer_new();
    const float *p = wisp_model_params(m);
    for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
        const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
        if (k == skip || strncmp(t->name, "encoder.", 8) != 0)
            continue;
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        assert_int_equal(
            wisp_st_writer_add_f32(w, name, WISP_DT_F32, t->ndim, t->shape, p + t->offset), 0);
    }
    if (extra) {
        int64_t shape[1] = {4};
        float v[4] = {0};
        assert_int_equal(wisp_st_writer_add_f32(w, extra, WISP_DT_F32, 1, shape, v), 0);
    }
    snprintf(path, sizeof path, "%s/adapter.safetensors", dir);
    assert_int_equal(wisp_st_writer_save(w, path, &err), 0);
    wisp_st_writer_destroy(&w);
}

static void test_adapter_files_are_read_by_name_under_both_prefixes_and_checked(void **state)
{
    (void)state;
    char dir[1024], adir[1024];
    const mf_case_t *cs = s_case("double_seq_bn_ws0_b3");
    snprintf(dir, sizeof dir, "%s/ad_model", wisp_test_tmpdir());
    snprintf(adir, sizeof adir, "%s/ad_adapter", wisp_test_tmpdir());
    wisp_model_t *m = mf_case_model(cs, dir, 0);
    wisp_error_t err = {0};
    assert_int_equal(wisp_model_save_adapter(m, adir, &err), 0);
    float *mel = mf_mel(3, 80, 20);
    float logits[15];
    /* WhisperAdapterModel naming: model.encoder.layers.{i}. */
    s_write_adapter_tensors(m, adir, "model.", -1, NULL);
    wisp_adapter_config_t none;
    mf_adapter_cfg(&none, "par_bn"); /* something else first: load must replace it */
    assert_int_equal(wisp_model_set_adapter(m, &none, 1, &err), 0);
    wisp_adapter_config_free(&none);
    if (wisp_model_load_adapter(m, adir, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(wisp_model_forward(m, mel, 3, 20, logits, NULL), 0);
    s_check_logits(logits, cs->name, 15);
    /* a missing tensor and an unexplained tensor are refused by name */
    const char *stray = "encoder.layers.0.output_adapters.adapters.other.adapter_up.bias";
    s_write_adapter_tensors(m, adir, "", -1, stray);
    wisp_error_clear(&err);
    assert_true(wisp_model_load_adapter(m, adir, &err) < 0);
    assert_non_null(strstr(err.msg, stray));
    assert_null(wisp_model_adapter(m));             /* nothing half-loaded */
    s_write_adapter_tensors(m, adir, "", -1, NULL); /* m has no adapter: writes nothing */
    wisp_error_clear(&err);
    assert_true(wisp_model_load_adapter(m, adir, &err) < 0);
    assert_non_null(strstr(err.msg, "missing tensor encoder.layers.0.attention_adapters"));
    /* the head is untouched: the forward still runs */
    assert_int_equal(wisp_model_forward(m, mel, 3, 20, logits, NULL), 0);
    free(mel);
    wisp_model_destroy(&m);
}

static void test_bad_checkpoints_and_inputs_are_refused_with_the_tensor_named(void **state)
{
    (void)state;
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/bad", wisp_test_tmpdir());
    mf_dims_t dm = MF_TINY;
    mf_write_checkpoint(dir, &dm, WISP_DT_F32, "encoder.", 0, 0);
    /* config says d_model 48: every tensor has the wrong shape */
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *txt;
    size_t len;
    wisp_error_t err = {0};
    assert_int_equal(wisp_read_file(path, 1 << 20, &txt, &len, &err), 0);
    char *p = strstr(txt, "\"d_model\":");
    assert_non_null(p);
    cJSON *c = cJSON_Parse(txt);
    free(txt);
    cJSON_ReplaceItemInObject(c, "d_model", cJSON_CreateNumber(48));
    txt = cJSON_Print(c);
    cJSON_Delete(c);
    assert_int_equal(wisp_write_file_atomic(path, txt, strlen(txt), &err), 0);
    free(txt);
    wisp_model_opts_t o = {.max_batch = 1, .max_frames = 32};
    wisp_model_t *m = wisp_model_new(dir, &o, &err);
    assert_null(m);
    assert_true(err.code < 0);
    assert_non_null(strstr(err.msg, "conv1.weight"));

    /* frames beyond the positions table, odd frames, too large a batch */
    mf_write_checkpoint(dir, &dm, WISP_DT_F32, "encoder.", 1, 0);
    wisp_error_clear(&err);
    o.max_frames = 64;
    assert_null(wisp_model_new(dir, &o, &err));
    o.max_frames = 32;
    wisp_error_clear(&err);
    m = wisp_model_new(dir, &o, &err);
    assert_non_null(m);
    float *mel = mf_mel(2, 80, 32);
    float logits[10];
    assert_true(wisp_model_forward(m, mel, 1, 31, logits, NULL) < 0);
    assert_true(wisp_model_forward(m, mel, 2, 32, logits, NULL) < 0);
    assert_true(wisp_model_forward(m, mel, 1, 34, logits, NULL) < 0);
    int labels[1] = {0};
    double ls, ws;
    assert_true(wisp_model_forward_backward(m, mel, 1, 32, labels, NULL, 1.0f, &ls, &ws, NULL) <
                0); /* not planned for training */
    assert_int_equal(wisp_model_forward(m, mel, 1, 32, logits, NULL), 0);
    free(mel);
    wisp_model_destroy(&m);
    wisp_model_destroy(&m); /* NULL is fine */
}

static void test_whisper_base_batch_8_training_plan_fits_well_under_4_gb(void **state)
{
    (void)state;
    wisp_whisper_config_t cfg = {0};
    wisp_error_t err = {0};
    assert_int_equal(wisp_whisper_config_preset(&cfg, "base", &err), 0);
    wisp_adapter_config_t ac;
    mf_adapter_cfg(&ac, "seq_bn");
    wisp_head_config_t hc = {.num_labels = 10,
                             .classifier_proj_size = 256,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = cfg.encoder_layers,
                             .d_model = cfg.d_model};
    wisp_model_opts_t o = {.max_batch = 8,
                           .max_frames = 3000,
                           .training = 1,
                           .attn_keep_mb = WISP_MODEL_ATTN_KEEP_MB_DEFAULT};
    size_t train = wisp_model_plan_bytes(&cfg, &o, &ac, &hc);
    o.attn_keep_mb = 0; /* attention probabilities always recomputed */
    size_t lean = wisp_model_plan_bytes(&cfg, &o, &ac, &hc);
    o.training = 0;
    size_t infer = wisp_model_plan_bytes(&cfg, &o, &ac, &hc);
    printf("# whisper-base B=8 T=1500 planned: training %.0f MB (%.0f MB with no attention "
           "probabilities kept), inference %.0f MB\n",
           (double)train / 1048576.0, (double)lean / 1048576.0, (double)infer / 1048576.0);
    assert_true(train > infer);
    assert_true(train < (size_t)3 << 30);
    /* the default keeps one layer's probabilities here: B H T^2 floats within 1024 MiB */
    size_t one_layer = (size_t)8 * cfg.encoder_attention_heads * 1500 * 1500 * sizeof(float);
    assert_int_equal(train - lean, one_layer);
    wisp_adapter_config_free(&ac);
    wisp_whisper_config_free(&cfg);
}

int main(void)
{
    setenv("WISP_NAN_FILL", "1", 1); /* unwritten activations read as NaN */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_the_reference_for_every_golden_case),
        cmocka_unit_test(test_whisper_tiny_dimensions_padded_forward_matches_the_reference),
        cmocka_unit_test(test_classification_checkpoint_head_is_loaded_with_the_encoder),
        cmocka_unit_test(test_fresh_zero_output_adapters_leave_the_logits_unchanged),
        cmocka_unit_test(test_adapter_inits_follow_the_library_schemes),
        cmocka_unit_test(test_adapter_and_head_survive_a_save_load_round_trip),
        cmocka_unit_test(test_adapter_files_are_read_by_name_under_both_prefixes_and_checked),
        cmocka_unit_test(test_bad_checkpoints_and_inputs_are_refused_with_the_tensor_named),
        cmocka_unit_test(test_whisper_base_batch_8_training_plan_fits_well_under_4_gb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
