/* Tests of common/config: JSON files, Whisper config.json, adapters-library configs,
 * head_config.json. Fixtures: tests/data/config (tests/reference/gen_config_fixtures.py). */
#include "model_fixture.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/config.h"
#include "formats/json.h"
#include "formats/labels.h"
#include "nn/adapter_config.h"
#include "nn/ops.h"
#include "base/util.h"

static const char *s_data(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 1024, "%s/config/%s", wisp_test_data_dir(), name);
    return p;
}

static const char *s_tmp(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 1024, "%s/%s", wisp_test_tmpdir(), name);
    return p;
}

/* A JSON file that must parse. */
static cJSON *s_json(const char *path)
{
    cJSON *j = NULL;
    wisp_error_t e = {0};
    if (wisp_json_load(path, &j, &e) != 0)
        fail_msg("%s", e.msg);
    return j;
}

static void s_assert_contains(const char *msg, const char *needle)
{
    if (!strstr(msg, needle))
        fail_msg("message '%s' does not mention '%s'", msg, needle);
}

static void test_bad_json_names_file_line_and_column(void **state)
{
    (void)state;
    wisp_error_t e = {0};
    cJSON *j = NULL;
    const char *p = s_data("bad_syntax.json");
    assert_int_not_equal(wisp_json_load(p, &j, &e), 0);
    assert_null(j);
    assert_int_equal(e.code, WISP_ERR_FORMAT);
    char want[1200];
    /* the missing comma after line 3 is detected at the start of line 4 */
    snprintf(want, sizeof want, "%s:4:3: invalid JSON", p);
    s_assert_contains(e.msg, want);
    wisp_error_clear(&e);
    assert_int_not_equal(wisp_json_load(s_data("absent.json"), &j, &e), 0);
    assert_null(j);
    assert_int_equal(e.code, WISP_ERR_NOTFOUND);
    s_assert_contains(e.msg, "absent.json");

    const char *t = s_tmp("trailing.json");
    assert_int_equal(wisp_write_file_atomic(t, "{\"a\": 1}\n}", 10, NULL), 0);
    wisp_error_clear(&e);
    assert_int_not_equal(wisp_json_load(t, &j, &e), 0);
    assert_null(j);
    s_assert_contains(e.msg, "trailing.json:2:1: unexpected text");
}

static void test_json_is_written_like_python_json_dump(void **state)
{
    (void)state;
    cJSON *o = cJSON_Parse(
        "{\"b\":[1,2.5,\"x\\n\"],\"a\":{},\"c\":[],\"d\":{\"e\":null,\"f\":true,\"g\":0.0001}}");
    assert_non_null(o);
    char *text = wisp_json_print(o);
    assert_string_equal(
        text, "{\n  \"b\": [\n    1,\n    2.5,\n    \"x\\n\"\n  ],\n  \"a\": {},\n  \"c\": [],\n"
              "  \"d\": {\n    \"e\": null,\n    \"f\": true,\n    \"g\": 0.0001\n  }\n}\n");
    free(text);
    const char *p = s_tmp("w.json");
    assert_int_equal(wisp_json_save(p, o, NULL), 0);
    cJSON *back = s_json(p);
    assert_true(cJSON_Compare(o, back, 1));
    cJSON_Delete(back);
    cJSON_Delete(o);
}

static void test_hf_tiny_config_loads_with_classification_defaults(void **state)
{
    (void)state;
    wisp_whisper_config_t c;
    wisp_error_t e = {0};
    assert_int_equal(wisp_whisper_config_load(&c, s_data("whisper_tiny.json"), &e), 0);
    assert_int_equal(c.d_model, 384);
    assert_int_equal(c.encoder_layers, 4);
    assert_int_equal(c.encoder_attention_heads, 6);
    assert_int_equal(c.encoder_ffn_dim, 1536);
    assert_int_equal(c.num_mel_bins, 80);
    assert_int_equal(c.max_source_positions, 1500);
    assert_int_equal(c.num_labels, 2);
    assert_int_equal(c.classifier_proj_size, 256);
    assert_int_equal(c.use_weighted_layer_sum, 0);
    assert_string_equal(c.id2label[0], "LABEL_0");
    assert_string_equal(c.id2label[1], "LABEL_1");
    assert_string_equal(c.model_type, "whisper");
    wisp_whisper_config_free(&c);
    assert_null(c.id2label);
    wisp_whisper_config_free(&c);

    assert_int_equal(wisp_whisper_config_load(&c, s_data("whisper_cls.json"), &e), 0);
    assert_int_equal(c.num_labels, 3);
    assert_string_equal(c.id2label[2], "speech");
    assert_int_equal(c.use_weighted_layer_sum, 1);
    assert_int_equal(c.classifier_proj_size, 64);
    assert_int_equal(c.num_mel_bins, 128);
    wisp_whisper_config_free(&c);
}

/* Writes the tiny fixture with one key replaced (JSON text of the value) and expects failure. */
static void s_expect_whisper_refused_in(const char *base, const char *key, const char *value_json,
                                        const char *needle)
{
    cJSON *o = s_json(s_data(base));
    assert_non_null(o);
    cJSON *v = cJSON_Parse(value_json);
    assert_non_null(v);
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else
        cJSON_AddItemToObject(o, key, v);
    const char *p = s_tmp("cfg_variant.json");
    assert_int_equal(wisp_json_save(p, o, NULL), 0);
    cJSON_Delete(o);
    wisp_whisper_config_t c;
    wisp_error_t e = {0};
    if (wisp_whisper_config_load(&c, p, &e) == 0)
        fail_msg("accepted %s = %s", key, value_json);
    s_assert_contains(e.msg, "cfg_variant.json");
    s_assert_contains(e.msg, needle);
    assert_null(c.id2label);
}

static void s_expect_whisper_refused(const char *key, const char *value_json, const char *needle)
{
    s_expect_whisper_refused_in("whisper_tiny.json", key, value_json, needle);
}

static void test_whisper_config_refuses_what_wisp_cannot_run(void **state)
{
    (void)state;
    s_expect_whisper_refused("model_type", "\"bert\"", "model_type is \"bert\"");
    s_expect_whisper_refused("encoder_attention_heads", "7", "not divisible");
    s_expect_whisper_refused("activation_function", "\"relu\"", "activation_function \"relu\"");
    s_expect_whisper_refused("d_model", "-4", "\"d_model\"");
    s_expect_whisper_refused("encoder_layers", "\"four\"", "\"encoder_layers\"");
    s_expect_whisper_refused("id2label", "{\"0\": \"a\", \"2\": \"b\"}", "id2label key \"2\"");
    s_expect_whisper_refused("id2label", "{\"0\": \"a\", \"1\": \"a\"}", "appears twice");
    s_expect_whisper_refused_in("whisper_cls.json", "num_labels", "5",
                                "num_labels is 5 but id2label has 3");
    s_expect_whisper_refused_in("whisper_cls.json", "label2id", "{\"dog\": 0}",
                                "\"label2id\" must be");
    s_expect_whisper_refused("label2id", "{\"LABEL_0\": 1, \"LABEL_1\": 0}",
                             "label2id[\"LABEL_0\"]");
}

static void test_num_labels_alone_gives_generic_label_names(void **state)
{
    (void)state;
    cJSON *o = s_json(s_data("whisper_tiny.json"));
    cJSON_AddNumberToObject(o, "num_labels", 4);
    const char *p = s_tmp("cfg_nl.json");
    assert_int_equal(wisp_json_save(p, o, NULL), 0);
    cJSON_Delete(o);
    wisp_whisper_config_t c;
    assert_int_equal(wisp_whisper_config_load(&c, p, NULL), 0);
    assert_int_equal(c.num_labels, 4);
    assert_string_equal(c.id2label[3], "LABEL_3");
    wisp_whisper_config_free(&c);
}

static void test_size_presets_have_the_published_dimensions(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int d, l, h, f, m;
    } want[] = {
        {"tiny", 384, 4, 6, 1536, 80},     {"base", 512, 6, 8, 2048, 80},
        {"small", 768, 12, 12, 3072, 80},  {"medium", 1024, 24, 16, 4096, 80},
        {"large", 1280, 32, 20, 5120, 80}, {"large-v3", 1280, 32, 20, 5120, 128},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        wisp_whisper_config_t c;
        assert_int_equal(wisp_whisper_config_preset(&c, want[i].name, NULL), 0);
        assert_int_equal(c.d_model, want[i].d);
        assert_int_equal(c.encoder_layers, want[i].l);
        assert_int_equal(c.encoder_attention_heads, want[i].h);
        assert_int_equal(c.encoder_ffn_dim, want[i].f);
        assert_int_equal(c.num_mel_bins, want[i].m);
        assert_int_equal(c.max_source_positions, 1500);
        wisp_whisper_config_free(&c);
    }
    wisp_whisper_config_t c;
    wisp_error_t e = {0};
    assert_int_equal(wisp_whisper_config_preset(&c, "huge", &e), WISP_ERR_ARG);
    s_assert_contains(e.msg, "huge");
}

static void test_config_json_round_trips_with_hf_keys(void **state)
{
    (void)state;
    wisp_whisper_config_t c;
    assert_int_equal(wisp_whisper_config_load(&c, s_data("whisper_cls.json"), NULL), 0);
    cJSON *j = wisp_whisper_config_to_json(&c);
    assert_non_null(j);
    const char *p = s_tmp("config.json");
    assert_int_equal(wisp_json_save(p, j, NULL), 0);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring,
                        "WhisperForAudioClassification");
    assert_int_equal(cJSON_GetObjectItem(j, "vocab_size")->valueint,
                     51866); /* 128 mels: large-v3 */
    assert_int_equal(cJSON_GetObjectItem(j, "decoder_layers")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItem(j, "decoder_ffn_dim")->valueint, 1536);
    assert_int_equal(cJSON_GetObjectItem(j, "max_target_positions")->valueint, 448);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "label2id"), "rain")->valueint, 1);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "scale_embedding")));
    /* keys sorted like transformers' to_json_string */
    const cJSON *prev = NULL;
    for (const cJSON *k = j->child; k; prev = k, k = k->next)
        if (prev)
            assert_true(strcmp(prev->string, k->string) < 0);
    cJSON_Delete(j);

    wisp_whisper_config_t back;
    assert_int_equal(wisp_whisper_config_load(&back, p, NULL), 0);
    assert_int_equal(back.d_model, c.d_model);
    assert_int_equal(back.num_labels, 3);
    assert_string_equal(back.id2label[1], "rain");
    assert_int_equal(back.use_weighted_layer_sum, 1);
    assert_int_equal(back.classifier_proj_size, 64);
    wisp_whisper_config_free(&back);

    wisp_whisper_config_t t;
    assert_int_equal(wisp_whisper_config_preset(&t, "tiny", NULL), 0);
    j = wisp_whisper_config_to_json(&t);
    assert_int_equal(cJSON_GetObjectItem(j, "vocab_size")->valueint, 51865);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "id2label"), "1")->valuestring,
                        "LABEL_1");
    cJSON_Delete(j);
    wisp_whisper_config_free(&t);
    wisp_whisper_config_free(&c);
}

static void test_every_adapter_preset_parses_with_library_defaults(void **state)
{
    (void)state;
    wisp_adapter_config_t a;
    wisp_error_t e = {0};
    assert_int_equal(wisp_adapter_config_preset(&a, "seq_bn", &e), 0);
    assert_int_equal(a.kind, WISP_ADAPTER_BOTTLENECK);
    assert_string_equal(a.name, "seq_bn");
    assert_int_equal(a.mh_adapter, 0);
    assert_int_equal(a.output_adapter, 1);
    assert_true(a.reduction_factor[0] == 16.0f && a.reduction_factor[WISP_MAX_LAYERS - 1] == 16.0f);
    assert_int_equal(a.non_linearity, NN_ACT_RELU);
    assert_int_equal(a.original_ln_before, 1);
    assert_int_equal(a.original_ln_after, 1);
    assert_int_equal(a.residual_before_ln, 1);
    assert_int_equal(a.is_parallel, 0);
    assert_true(a.scaling == 1.0f);
    assert_string_equal(a.init_weights, "bert");
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 0, 384), 24);
    assert_null(cJSON_GetObjectItem(a.full, "architecture")); /* BnConfig has no such field */
    assert_int_equal(cJSON_GetArraySize(a.full), 33);         /* every BnConfig field */
    wisp_adapter_config_free(&a);
    assert_null(a.full);

    assert_int_equal(wisp_adapter_config_preset(&a, "double_seq_bn", &e), 0);
    assert_int_equal(a.mh_adapter, 1);
    assert_int_equal(a.output_adapter, 1);
    assert_int_equal(a.non_linearity, NN_ACT_SILU);
    assert_int_equal(a.original_ln_before, 0);
    wisp_adapter_config_free(&a);

    assert_int_equal(wisp_adapter_config_preset(&a, "par_bn", &e), 0);
    assert_int_equal(a.is_parallel, 1);
    assert_true(a.scaling == 4.0f);
    assert_true(a.reduction_factor[3] == 2.0f);
    assert_string_equal(a.init_weights, "mam_adapter");
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 3, 512), 256);
    wisp_adapter_config_free(&a);

    assert_int_equal(wisp_adapter_config_preset(&a, "lora", &e), 0);
    assert_int_equal(a.kind, WISP_ADAPTER_LORA);
    assert_int_equal(a.r, 8);
    assert_true(a.alpha == 8.0f);
    assert_true(a.attn_q && !a.attn_k && a.attn_v);
    assert_true(!a.intermediate_lora && !a.output_lora);
    assert_string_equal(a.init_weights, "lora");
    assert_string_equal(cJSON_GetObjectItem(a.full, "architecture")->valuestring, "lora");
    wisp_adapter_config_free(&a);

    assert_int_equal(wisp_adapter_config_preset(&a, "ia3", &e), 0);
    assert_int_equal(a.kind, WISP_ADAPTER_IA3);
    assert_int_equal(a.r, 1);
    assert_true(a.alpha == 1.0f);
    assert_true(!a.attn_q && a.attn_k && a.attn_v);
    assert_true(a.intermediate_lora && !a.output_lora);
    assert_string_equal(a.init_weights, "ia3");
    assert_string_equal(cJSON_GetObjectItem(a.full, "composition_mode")->valuestring, "scale");
    wisp_adapter_config_free(&a);

    assert_int_equal(e.code, 0);
    assert_int_equal(wisp_adapter_config_preset(&a, "compacter", &e), WISP_ERR_ARG);
    s_assert_contains(e.msg, "compacter");
}

/* Parses text and expects refusal with a message naming the field. */
static void s_expect_adapter_refused(const char *json, const char *needle)
{
    cJSON *o = cJSON_Parse(json);
    if (!o)
        fail_msg("test JSON does not parse: %s", json);
    wisp_adapter_config_t a;
    wisp_error_t e = {0};
    int rc = wisp_adapter_config_parse(&a, o, "user.json", &e);
    cJSON_Delete(o);
    if (rc == 0)
        fail_msg("accepted: %s", json);
    assert_null(a.full);
    s_assert_contains(e.msg, "user.json");
    s_assert_contains(e.msg, needle);
}

#define S_BN                                                                                       \
    "\"mh_adapter\":false,\"output_adapter\":true,\"reduction_factor\":16,\"non_linearity\":"      \
    "\"relu\""

static void test_unsupported_adapter_fields_are_refused_by_name(void **state)
{
    (void)state;
    s_expect_adapter_refused("{" S_BN ",\"ln_before\":true}", "field ln_before = true");
    s_expect_adapter_refused("{" S_BN ",\"use_gating\":true}", "field use_gating = true");
    s_expect_adapter_refused("{" S_BN ",\"phm_layer\":true}", "field phm_layer = true");
    s_expect_adapter_refused("{" S_BN ",\"scaling\":\"learned\"}", "field scaling = \"learned\"");
    s_expect_adapter_refused("{" S_BN ",\"scaling\":\"channel\"}", "field scaling = \"channel\"");
    s_expect_adapter_refused("{" S_BN ",\"colour\":\"blue\"}", "unknown field colour");
    s_expect_adapter_refused("{" S_BN ",\"residual_before_ln\":\"post_add\"}",
                             "field residual_before_ln");
    s_expect_adapter_refused("{" S_BN ",\"dropout\":0.1}", "field dropout = 0.1");
    s_expect_adapter_refused("{" S_BN ",\"inv_adapter\":\"nice\"}", "field inv_adapter");
    s_expect_adapter_refused("{" S_BN ",\"cross_adapter\":true}", "field cross_adapter");
    s_expect_adapter_refused("{" S_BN ",\"stochastic_depth\":0.1}", "field stochastic_depth");
    s_expect_adapter_refused("{" S_BN ",\"leave_out\":[\"x\"]}", "field leave_out");
    s_expect_adapter_refused("{" S_BN ",\"init_weights\":\"xavier\"}", "field init_weights");
    s_expect_adapter_refused(
        "{\"mh_adapter\":false,\"output_adapter\":true,\"reduction_factor\":16,"
        "\"non_linearity\":\"mish\"}",
        "field non_linearity = \"mish\"");
    s_expect_adapter_refused(
        "{\"output_adapter\":true,\"reduction_factor\":16,\"non_linearity\":\"relu\"}",
        "missing field mh_adapter");
    s_expect_adapter_refused("{" S_BN ",\"reduction_factor\":{\"x\":8}}",
                             "reduction_factor has key \"x\"");
    s_expect_adapter_refused("{" S_BN ",\"reduction_factor\":0}", "field reduction_factor");
    s_expect_adapter_refused("{\"architecture\":\"prefix_tuning\"}",
                             "field architecture = \"prefix_tuning\"");
    s_expect_adapter_refused("{\"architecture\":\"union\",\"configs\":[]}", "field architecture");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"attn_matrices\":[\"q\",\"o\"]}",
                             "attn_matrices holds \"o\"");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"dropout\":0.05}",
                             "field dropout = 0.05");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"use_gating\":true}", "field use_gating");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"vera_d\":0.1}", "field vera_d");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"composition_mode\":\"scale\"}",
                             "field r = 8");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"composition_mode\":\"mul\"}",
                             "field composition_mode");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"dtype\":\"bfloat16\"}", "field dtype");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"selfattn_lora\":false}",
                             "adapts no matrix");
    s_expect_adapter_refused("{\"architecture\":\"lora\",\"mh_adapter\":true}",
                             "unknown field mh_adapter");
    s_expect_adapter_refused("[1]", "JSON object");
}

static void test_accepted_variants_parse_to_the_right_values(void **state)
{
    (void)state;
    /* the library's own optional values, a legacy null, and ignored phm options */
    cJSON *o = cJSON_Parse("{\"architecture\":\"bottleneck\"," S_BN ",\"non_linearity\":\"Swish\","
                           "\"residual_before_ln\":false,\"scaling\":0.5,\"leave_out\":[0,3],"
                           "\"invertible_adapter\":null,\"phm_dim\":8,\"init_weights_seed\":42,"
                           "\"reduction_factor\":{\"0\":8,\"2\":32,\"default\":16}}");
    wisp_adapter_config_t a;
    wisp_error_t e = {0};
    assert_int_equal(wisp_adapter_config_parse(&a, o, "user.json", &e), 0);
    cJSON_Delete(o);
    assert_int_equal(a.non_linearity, NN_ACT_SILU);
    assert_int_equal(a.residual_before_ln, 0);
    assert_true(a.scaling == 0.5f);
    assert_int_equal(a.leave_out[0], 1);
    assert_int_equal(a.leave_out[1], 0);
    assert_int_equal(a.leave_out[3], 1);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 0, 384), 48);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 1, 384), 24);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 2, 384), 12);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 3, 384), 24);
    assert_null(cJSON_GetObjectItem(a.full, "architecture"));
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(a.full, "reduction_factor")));
    assert_int_equal(cJSON_GetObjectItem(a.full, "phm_dim")->valueint, 8);
    wisp_adapter_config_free(&a);

    /* a map without "default" leaves other layers undefined; factors below 1 widen */
    o = cJSON_Parse("{" S_BN ",\"reduction_factor\":{\"1\":0.5}}");
    assert_int_equal(wisp_adapter_config_parse(&a, o, "user.json", NULL), 0);
    cJSON_Delete(o);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 0, 64), -1);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 1, 64), 128);
    wisp_adapter_config_free(&a);

    o = cJSON_Parse("{" S_BN ",\"reduction_factor\":1000}");
    assert_int_equal(wisp_adapter_config_parse(&a, o, "user.json", NULL), 0);
    cJSON_Delete(o);
    assert_int_equal(wisp_adapter_config_bottleneck_dim(&a, 0, 64), 1); /* at least 1 */
    wisp_adapter_config_free(&a);

    o = cJSON_Parse(
        "{\"architecture\":\"lora\",\"r\":4,\"alpha\":16,\"attn_matrices\":[\"q\",\"k\",\"v\"],"
        "\"intermediate_lora\":true,\"output_lora\":true,\"leave_out\":[1]}");
    assert_int_equal(wisp_adapter_config_parse(&a, o, "user.json", NULL), 0);
    cJSON_Delete(o);
    assert_int_equal(a.kind, WISP_ADAPTER_LORA);
    assert_int_equal(a.r, 4);
    assert_true(a.alpha == 16.0f);
    assert_true(a.attn_q && a.attn_k && a.attn_v && a.intermediate_lora && a.output_lora);
    assert_int_equal(a.leave_out[1], 1);
    assert_int_equal(cJSON_GetObjectItem(a.full, "r")->valueint, 4);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(a.full, "vera_d"))); /* defaults filled in */
    wisp_adapter_config_free(&a);
}

static void test_python_written_adapter_dirs_load(void **state)
{
    (void)state;
    wisp_adapter_config_t a;
    int hs = 0;
    wisp_error_t e = {0};
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/config/adapter_seq_bn", wisp_test_data_dir());
    assert_int_equal(wisp_adapter_config_load_dir(&a, dir, &hs, &e), 0);
    assert_int_equal(hs, 384);
    assert_string_equal(a.name, "speech_cls");
    assert_int_equal(a.kind, WISP_ADAPTER_BOTTLENECK);
    assert_int_equal(a.leave_out[3], 1);
    assert_int_equal(a.original_ln_before, 1);
    /* the parsed full dict equals the preset's except leave_out */
    wisp_adapter_config_t p;
    assert_int_equal(wisp_adapter_config_preset(&p, "seq_bn", NULL), 0);
    cJSON_ReplaceItemInObject(p.full, "leave_out", cJSON_Parse("[3]"));
    assert_true(cJSON_Compare(a.full, p.full, 1));
    wisp_adapter_config_free(&p);
    wisp_adapter_config_free(&a);

    snprintf(dir, sizeof dir, "%s/config/adapter_ia3", wisp_test_data_dir());
    assert_int_equal(wisp_adapter_config_load_dir(&a, dir, NULL, &e), 0);
    assert_int_equal(a.kind, WISP_ADAPTER_IA3);
    assert_string_equal(a.name, "ia3_cls");
    wisp_adapter_config_free(&a);

    snprintf(dir, sizeof dir, "%s/config", wisp_test_data_dir());
    assert_int_equal(wisp_adapter_config_load_dir(&a, dir, NULL, &e), WISP_ERR_NOTFOUND);
    s_assert_contains(e.msg, "adapter_config.json");
}

static void test_saved_adapter_dir_matches_the_library_layout_and_reloads(void **state)
{
    (void)state;
    wisp_adapter_config_t a;
    assert_int_equal(wisp_adapter_config_preset(&a, "seq_bn", NULL), 0);
    snprintf(a.name, sizeof a.name, "speech_cls");
    cJSON_ReplaceItemInObject(a.full, "leave_out", cJSON_Parse("[3]"));
    const char *dir = s_tmp("saved_adapter");
    assert_int_equal(wisp_adapter_config_save_dir(&a, dir, 384, "openai/whisper-tiny", NULL), 0);
    wisp_adapter_config_free(&a);

    /* byte-identical to the Python-written fixture (apart from json.dump's missing final newline)
     */
    char path[1200], *mine, *py;
    size_t n1, n2;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    assert_int_equal(wisp_read_file(path, 1 << 20, &mine, &n1, NULL), 0);
    assert_int_equal(
        wisp_read_file(s_data("adapter_seq_bn/adapter_config.json"), 1 << 20, &py, &n2, NULL), 0);
    assert_int_equal(n1, n2 + 1);
    assert_memory_equal(mine, py, n2);
    cJSON *a_json = cJSON_Parse(mine), *b_json = cJSON_Parse(py);
    assert_true(cJSON_Compare(a_json, b_json, 1));
    cJSON_Delete(a_json);
    cJSON_Delete(b_json);
    free(mine);
    free(py);

    int hs;
    assert_int_equal(wisp_adapter_config_load_dir(&a, dir, &hs, NULL), 0);
    assert_int_equal(hs, 384);
    assert_string_equal(a.name, "speech_cls");
    assert_int_equal(a.leave_out[3], 1);
    wisp_adapter_config_free(&a);
}

static void test_adapter_dir_for_another_model_is_refused(void **state)
{
    (void)state;
    const char *dir = s_tmp("bert_adapter");
    assert_int_equal(wisp_mkdir_p(dir, NULL), 0);
    char path[1200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    const char *text =
        "{\"config\": {\"architecture\": \"lora\"}, \"model_type\": \"bert\", \"name\": \"x\"}";
    assert_int_equal(wisp_write_file_atomic(path, text, strlen(text), NULL), 0);
    wisp_adapter_config_t a;
    wisp_error_t e = {0};
    assert_int_equal(wisp_adapter_config_load_dir(&a, dir, NULL, &e), WISP_ERR_UNSUPPORTED);
    s_assert_contains(e.msg, "model_type is \"bert\"");
}

static void test_head_config_round_trips_and_maps_labels(void **state)
{
    (void)state;
    wisp_whisper_config_t w;
    assert_int_equal(wisp_whisper_config_load(&w, s_data("whisper_cls.json"), NULL), 0);
    wisp_head_config_t h;
    assert_int_equal(wisp_head_config_from_whisper(&h, &w), 0);
    wisp_whisper_config_free(&w);
    const char *p = s_tmp("head_config.json");
    assert_int_equal(wisp_head_config_save(&h, p, NULL), 0);
    wisp_head_config_free(&h);

    wisp_head_config_t b;
    assert_int_equal(wisp_head_config_load(&b, p, NULL), 0);
    assert_int_equal(b.num_labels, 3);
    assert_int_equal(b.classifier_proj_size, 64);
    assert_int_equal(b.use_weighted_layer_sum, 1);
    assert_int_equal(b.num_hidden_layers, 4);
    assert_int_equal(b.d_model, 384);
    assert_int_equal(wisp_head_config_label_id(&b, "rain"), 1);
    assert_int_equal(wisp_head_config_label_id(&b, "snow"), -1);
    wisp_head_config_free(&b);

    const char *bad =
        "{\"num_labels\": 2, \"id2label\": {\"0\": \"a\", \"1\": \"b\"}, \"d_model\": 8}";
    assert_int_equal(wisp_write_file_atomic(p, bad, strlen(bad), NULL), 0);
    wisp_error_t e = {0};
    assert_int_equal(wisp_head_config_load(&b, p, &e), WISP_ERR_FORMAT);
    s_assert_contains(e.msg, "head_config.json: missing key \"classifier_proj_size\"");
}

/* Seeded byte flips of a valid adapter_config.json and config.json: every load
 * either succeeds or fails with a message, never crashes (run under ASan). */
static void test_config_loaders_survive_random_byte_flips(void **state)
{
    (void)state;
    const char *src[2] = {s_data("adapter_seq_bn/adapter_config.json"), s_data("whisper_cls.json")};
    wisp_rng_t rng;
    wisp_rng_seed(&rng, 99);
    int ok = 0, refused = 0;
    for (int f = 0; f < 2; f++) {
        char *text;
        size_t len;
        assert_int_equal(wisp_read_file(src[f], 1 << 20, &text, &len, NULL), 0);
        char *buf = malloc(len);
        const char *dir = s_tmp("fuzz_dir");
        assert_int_equal(wisp_mkdir_p(dir, NULL), 0);
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, f == 0 ? "adapter_config.json" : "config.json");
        for (int it = 0; it < 300; it++) {
            memcpy(buf, text, len);
            int flips = 1 + (int)(wisp_rng_u64(&rng) % 3);
            static const char alphabet[] = " {}[]\":,0123456789.-etrufalsn\\x";
            for (int k = 0; k < flips; k++)
                buf[wisp_rng_u64(&rng) % len] =
                    alphabet[wisp_rng_u64(&rng) % (sizeof alphabet - 1)];
            FILE *fp = fopen(path, "wb");
            fwrite(buf, 1, len, fp);
            fclose(fp);
            wisp_error_t e = {0};
            int rc;
            if (f == 0) {
                wisp_adapter_config_t a;
                rc = wisp_adapter_config_load_dir(&a, dir, NULL, &e);
                if (rc == 0)
                    wisp_adapter_config_free(&a);
            } else {
                wisp_whisper_config_t c;
                rc = wisp_whisper_config_load(&c, path, &e);
                if (rc == 0)
                    wisp_whisper_config_free(&c);
            }
            if (rc == 0) {
                ok++;
            } else {
                assert_true(rc < 0 && strstr(e.msg, dir));
                refused++;
            }
        }
        free(buf);
        free(text);
    }
    assert_true(ok > 0 && refused > 0);
}

/* config.json with n labels LABEL_0.. in id2label and label2id (written by hand: fast). */
static const char *s_write_many_labels(int n, int num_labels)
{
    const char *p = s_tmp("cfg_many.json");
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"model_type\": \"whisper\", \"d_model\": 64, \"encoder_layers\": 2, "
            "\"encoder_attention_heads\": 2, \"encoder_ffn_dim\": 128, \"num_mel_bins\": 80, "
            "\"max_source_positions\": 1500, \"num_labels\": %d, \"id2label\": {",
            num_labels);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\"%d\": \"L%d\"", i ? ", " : "", i, i);
    fprintf(f, "}, \"label2id\": {");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\"L%d\": %d", i ? ", " : "", i, i);
    fprintf(f, "}}\n");
    fclose(f);
    return p;
}

/* The writers' common end: keys sorted as json.dump(sort_keys=True) writes them, and a
 * build that ran out of memory (built 0) is an error naming the path, nothing written. */
static void test_json_save_sorted_sorts_and_reports_a_failed_build(void **state)
{
    (void)state;
    wisp_error_t e = {0};
    const char *p = s_tmp("sorted.json");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "zeta", 1);
    cJSON *in = cJSON_AddObjectToObject(o, "alpha");
    cJSON_AddStringToObject(in, "y", "b");
    cJSON_AddStringToObject(in, "x", "a");
    assert_int_equal(wisp_json_save_sorted(p, o, 1, &e), 0);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char text[256] = {0};
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    assert_true(n > 0);
    assert_string_equal(text, "{\n  \"alpha\": {\n    \"x\": \"a\",\n    \"y\": \"b\"\n  },\n"
                              "  \"zeta\": 1\n}\n");
    const char *q = s_tmp("unbuilt.json");
    remove(q);
    assert_int_equal(wisp_json_save_sorted(q, cJSON_CreateObject(), 0, &e), WISP_ERR_NOMEM);
    s_assert_contains(e.msg, "unbuilt.json: out of memory");
    assert_int_equal(access(q, F_OK), -1);
    wisp_error_clear(&e);
    assert_int_equal(wisp_json_save_sorted(q, NULL, 1, &e), WISP_ERR_NOMEM);
}

static void test_label_count_is_capped_and_checked_in_n_log_n(void **state)
{
    (void)state;
    wisp_whisper_config_t c;
    wisp_error_t e = {0};
    /* num_labels 2e9 alone would allocate 2e9 names: refused by the cap, naming it */
    s_expect_whisper_refused("num_labels", "2000000000", "num_labels");
    s_expect_whisper_refused("num_labels", "65537", "65536");
    /* the cap itself loads, and the duplicate and label2id checks are not quadratic:
     * 65536 labels took ~10 s with pairwise comparisons, the sorted check takes well under
     * a second; CPU time, so that a loaded CI machine does not decide (ASan: ~3x) */
    const char *p = s_write_many_labels(WISP_LABELS_MAX, WISP_LABELS_MAX);
    double t0 = wisp_test_cpu_seconds();
    if (wisp_whisper_config_load(&c, p, &e) != 0)
        fail_msg("%s", e.msg);
    double dt = wisp_test_cpu_seconds() - t0;
    assert_int_equal(c.num_labels, WISP_LABELS_MAX);
    assert_string_equal(c.id2label[WISP_LABELS_MAX - 1], "L65535");
    wisp_whisper_config_free(&c);
    if (dt > 4.0)
        fail_msg("%d labels took %.2f CPU s to check", WISP_LABELS_MAX, dt);
    /* a duplicate among many is still found, naming the label */
    cJSON *o = s_json(p);
    cJSON *i2l = cJSON_GetObjectItemCaseSensitive(o, "id2label");
    cJSON_ReplaceItemInObjectCaseSensitive(i2l, "40000", cJSON_CreateString("L17"));
    const char *q = s_tmp("cfg_dup.json");
    assert_int_equal(wisp_json_save(q, o, NULL), 0);
    cJSON_Delete(o);
    wisp_error_clear(&e);
    assert_int_not_equal(wisp_whisper_config_load(&c, q, &e), 0);
    s_assert_contains(e.msg, "\"L17\" appears twice");
}

/* Rewrites dir/adapter_config.json: "config" replaced by the JSON text cfg when given,
 * and "use_dora" added to it when use_dora is "true" or "false" (NULL: absent). */
static void s_rewrite_adapter_config(const char *dir, const char *cfg, const char *use_dora)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    cJSON *o = s_json(p);
    if (cfg)
        cJSON_ReplaceItemInObjectCaseSensitive(o, "config", cJSON_Parse(cfg));
    cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "config");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "use_dora");
    if (use_dora)
        cJSON_AddItemToObject(c, "use_dora", cJSON_Parse(use_dora));
    assert_int_equal(wisp_json_save(p, o, NULL), 0);
    cJSON_Delete(o);
}

/* The config dict of the Python-written fixture dir `name` (tests/data/config). */
static char *s_fixture_config_text(const char *name)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/config/%s/adapter_config.json", wisp_test_data_dir(), name);
    cJSON *o = s_json(p);
    char *t = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "config"));
    cJSON_Delete(o);
    return t;
}

static void
test_lora_and_ia3_dirs_of_adapters_v1_2_and_main_load_and_give_the_reference_logits(void **state)
{
    (void)state;
    /* IA3: the config dict the library wrote (fixture); LoRA: the v1.2.0 LoRAConfig
     * dict of the golden case (lora preset = the library's defaults). After v1.2.0
     * the library writes "use_dora": false in every LoRA/IA3 config. */
    const char *stems[] = {"lora_qv_ws0_b3", "ia3_ws0_b3"};
    char *ia3_cfg = s_fixture_config_text("adapter_ia3");
    for (int k = 0; k < 2; k++) {
        const mf_case_t *cs = NULL;
        for (int i = 0; i < MF_NCASES; i++)
            if (strcmp(MF_CASES[i].name, stems[k]) == 0)
                cs = &MF_CASES[i];
        assert_non_null(cs);
        char dir[512], adir[512], hdir[512];
        snprintf(dir, sizeof dir, "%s/dora_model", wisp_test_tmpdir());
        snprintf(adir, sizeof adir, "%s/dora_adapter", wisp_test_tmpdir());
        snprintf(hdir, sizeof hdir, "%s/dora_head", wisp_test_tmpdir());
        wisp_model_t *m = mf_case_model(cs, dir, 0);
        wisp_error_t err = {0};
        if (wisp_model_save_adapter(m, adir, &err) < 0 || wisp_model_save_head(m, hdir, &err) < 0)
            fail_msg("%s", err.msg);
        wisp_model_destroy(&m);
        const char *variants[] = {NULL, "false", "true"};
        for (int v = 0; v < 3; v++) {
            s_rewrite_adapter_config(adir, k == 1 ? ia3_cfg : NULL, variants[v]);
            wisp_model_opts_t o = {.max_batch = 3, .max_frames = 32};
            m = wisp_model_new(dir, &o, &err);
            assert_non_null(m);
            int rc = wisp_model_load_adapter(m, adir, &err);
            if (v == 2) { /* DoRA itself is refused by name */
                assert_true(rc < 0);
                s_assert_contains(err.msg, "use_dora");
                s_assert_contains(err.msg, "DoRA");
                wisp_error_clear(&err);
                wisp_model_destroy(&m);
                continue;
            }
            if (rc < 0 || wisp_model_load_head(m, hdir, &err) < 0)
                fail_msg("%s (use_dora %s): %s", stems[k], variants[v] ? variants[v] : "absent",
                         err.msg);
            float *mel = mf_mel(3, 80, 20);
            float logits[15];
            assert_int_equal(wisp_model_forward(m, mel, 3, 20, logits, NULL), 0);
            char path[1200];
            size_t cnt;
            snprintf(path, sizeof path, "%s/model/%s.logits", wisp_test_data_dir(), stems[k]);
            float *want = wisp_test_read_f32(path, &cnt);
            assert_int_equal(cnt, 15);
            wisp_assert_close(logits, want, 15, 1e-4 * wisp_max_abs(want, 15), 0.0, stems[k]);
            free(want);
            free(mel);
            if (v == 1) { /* saved back in the v1.2.0 form: without the newer field */
                char sdir[600], sp[700];
                snprintf(sdir, sizeof sdir, "%s/dora_saved", wisp_test_tmpdir());
                assert_int_equal(wisp_model_save_adapter(m, sdir, &err), 0);
                snprintf(sp, sizeof sp, "%s/adapter_config.json", sdir);
                cJSON *o = s_json(sp);
                assert_null(cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(o, "config"), "use_dora"));
                cJSON_Delete(o);
            }
            wisp_model_destroy(&m);
        }
    }
    free(ia3_cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_json_names_file_line_and_column),
        cmocka_unit_test(test_json_is_written_like_python_json_dump),
        cmocka_unit_test(test_hf_tiny_config_loads_with_classification_defaults),
        cmocka_unit_test(test_whisper_config_refuses_what_wisp_cannot_run),
        cmocka_unit_test(test_num_labels_alone_gives_generic_label_names),
        cmocka_unit_test(test_size_presets_have_the_published_dimensions),
        cmocka_unit_test(test_config_json_round_trips_with_hf_keys),
        cmocka_unit_test(test_every_adapter_preset_parses_with_library_defaults),
        cmocka_unit_test(test_unsupported_adapter_fields_are_refused_by_name),
        cmocka_unit_test(test_accepted_variants_parse_to_the_right_values),
        cmocka_unit_test(test_python_written_adapter_dirs_load),
        cmocka_unit_test(test_saved_adapter_dir_matches_the_library_layout_and_reloads),
        cmocka_unit_test(test_adapter_dir_for_another_model_is_refused),
        cmocka_unit_test(test_head_config_round_trips_and_maps_labels),
        cmocka_unit_test(test_config_loaders_survive_random_byte_flips),
        cmocka_unit_test(test_label_count_is_capped_and_checked_in_n_log_n),
        cmocka_unit_test(test_json_save_sorted_sorts_and_reports_a_failed_build),
        cmocka_unit_test(
            test_lora_and_ia3_dirs_of_adapters_v1_2_and_main_load_and_give_the_reference_logits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
