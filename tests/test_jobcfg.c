/* Tests of common/jobcfg: defaults, paths, --set overrides, refusals naming the key. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/jobcfg.h"
#include "nn/model.h"

static void test_defaults_fill_what_the_file_leaves_out(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"/o\"}", "/base", "t", NULL, 0, NULL),
        0);
    assert_string_equal(c.kind, "null");
    assert_string_equal(c.endpoint, "tcp://127.0.0.1:0");
    assert_int_equal(c.credit, 2);
    assert_int_equal(c.shard_size, 64);
    assert_true(c.lease_timeout == 60);
    assert_true(c.null_items == 1000);
    wisp_jobcfg_free(&c);
}

static void test_relative_paths_resolve_against_the_config_directory(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    const char *j = "{\"kind\":\"classify\",\"model\":\"m/tiny\",\"manifest\":\"/abs/"
                    "data.csv\",\"output\":\"out.h5\"}";
    assert_int_equal(wisp_jobcfg_parse(&c, j, "/jobs/x", "t", NULL, 0, NULL), 0);
    assert_string_equal(c.model, "/jobs/x/m/tiny");
    assert_string_equal(c.manifest, "/abs/data.csv");
    assert_string_equal(c.output, "/jobs/x/out.h5");
    wisp_jobcfg_free(&c);
    const char *j2 = "{\"kind\":\"null\",\"output\":\"../runs/./a//b/../out.tsv\"}";
    assert_int_equal(wisp_jobcfg_parse(&c, j2, "/jobs/x", "t", NULL, 0, NULL), 0);
    assert_string_equal(c.output, "/jobs/runs/a/out.tsv");
    wisp_jobcfg_free(&c);
    assert_int_equal(wisp_jobcfg_parse(&c, j, "/jobs/x", "t", NULL, 0, NULL), 0);
    /* the effective JSON carries the absolute paths (what workers receive) */
    char *text = wisp_jobcfg_to_string(&c);
    assert_non_null(strstr(text, "\"/jobs/x/m/tiny\""));
    wisp_jobcfg_t w;
    assert_int_equal(wisp_jobcfg_parse(&w, text, "/elsewhere", "welcome", NULL, 0, NULL), 0);
    assert_string_equal(w.model, "/jobs/x/m/tiny");
    free(text);
    wisp_jobcfg_free(&w);
    wisp_jobcfg_free(&c);
}

static void test_set_overrides_dotted_keys_and_creates_sections(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    char *sets[] = {"cluster.credit=5", "null.items=42", "output=/x/y", "classify.embedding=true",
                    "cluster.endpoint=tcp://0.0.0.0:5555"};
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"a\",\"cluster\":{\"credit\":3}}",
                          "/b", "t", sets, 5, NULL),
        0);
    assert_int_equal(c.credit, 5);
    assert_true(c.null_items == 42);
    assert_string_equal(c.output, "/x/y");
    assert_int_equal(c.classify_embedding, 1);
    assert_string_equal(c.endpoint, "tcp://0.0.0.0:5555");
    assert_int_equal(wisp_jobcfg_set(&c, "cluster.shard_size=7", NULL), 0);
    assert_int_equal(c.shard_size, 7);
    assert_int_equal(c.credit, 5);
    wisp_jobcfg_free(&c);
}

static void test_unknown_keys_are_refused_naming_the_key(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    wisp_error_t e = {0};
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"a\",\"cluster\":{\"credits\":3}}",
                          "/", "job.json", NULL, 0, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "job.json"));
    assert_non_null(strstr(e.msg, "cluster.credits"));
    char *sets[] = {"cluster.bogus=1"};
    wisp_error_clear(&e);
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"a\"}", "/", "t", sets, 1, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "cluster.bogus"));
}

static void test_bad_values_are_refused_with_the_range(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    wisp_error_t e = {0};
    char *sets[] = {"cluster.credit=0"};
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"a\"}", "/", "t", sets, 1, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "cluster.credit"));
    wisp_error_clear(&e);
    char *sets2[] = {"cluster.credit=two"};
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"a\"}", "/", "t", sets2, 1, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "not a number"));
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"a\",\"seed\":1.5}", "/",
                                       "t", NULL, 0, &e),
                     WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "integer"));
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c, "{\"kind\":\"fly\"}", "/", "t", NULL, 0, &e),
                     WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "fly"));
    wisp_error_clear(&e);
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"classify\",\"output\":\"a\"}", "/", "t", NULL, 0, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "manifest"));
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c, "{\"kind\":", "/", "cfg.json", NULL, 0, &e),
                     WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "cfg.json"));
    /* CURVE without an allowlist would accept any key: refused */
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c,
                                       "{\"kind\":\"null\",\"output\":\"a\",\"cluster\":{\"curve\":"
                                       "{\"server_secret\":\"s\"}}}",
                                       "/", "t", NULL, 0, &e),
                     WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "client_keys"));
}

static void test_curve_client_keys_list_resolves_paths(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    const char *j = "{\"kind\":\"null\",\"output\":\"a\",\"cluster\":{\"curve\":{\"server_secret\":"
                    "\"keys/s.secret\","
                    "\"client_keys\":[\"keys/w1.public\",\"/k/w2.public\"]}}}";
    assert_int_equal(wisp_jobcfg_parse(&c, j, "/cfg", "t", NULL, 0, NULL), 0);
    assert_int_equal(c.n_client_keys, 2);
    assert_string_equal(c.client_keys[0], "/cfg/keys/w1.public");
    assert_string_equal(c.client_keys[1], "/k/w2.public");
    assert_string_equal(c.curve_server_secret, "/cfg/keys/s.secret");
    wisp_jobcfg_free(&c);
}

static void test_train_keys_parse_with_their_defaults(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    const char *j =
        "{\"kind\":\"train\",\"model\":\"m\",\"train_manifest\":\"t.csv\",\"output\":\"run\","
        "\"adapter_config\":\"lora\",\"train\":{\"epochs\":2,\"global_batch\":32,\"schedule\":"
        "\"cosine\"}}";
    char *sets[] = {"train.fixed_order_reduce=true", "train.dump_grads=g.safetensors"};
    assert_int_equal(wisp_jobcfg_parse(&c, j, "/r", "t", sets, 2, NULL), 0);
    assert_int_equal(c.train_epochs, 2);
    assert_int_equal(c.train_global_batch, 32);
    assert_string_equal(c.train_schedule, "cosine");
    assert_string_equal(c.adapter_config, "lora");
    assert_int_equal(c.train_fixed_order_reduce, 1);
    assert_int_equal(c.train_micro_batch, 8);
    assert_int_equal(c.train_attn_keep_mb, WISP_MODEL_ATTN_KEEP_MB_DEFAULT);
    assert_true(c.train_clip == 1.0);
    assert_int_equal(c.train_keep, 2);
    assert_int_equal(c.train_dump_grads[0],
                     '/'); /* --set paths resolve against the current directory */
    assert_string_equal(c.train_manifest, "/r/t.csv");
    wisp_jobcfg_free(&c);
}

static void test_adapter_config_is_a_preset_name_or_a_path_resolved_like_the_others(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
/* the keys a train config needs besides adapter_config */
#define TRAIN_KEYS                                                                                 \
    "\"kind\":\"train\",\"model\":\"m\",\"train_manifest\":\"t.csv\",\"output\":\"o\""
    const char *presets[] = {"seq_bn", "double_seq_bn", "par_bn", "lora", "ia3"};
    for (int i = 0; i < 5; i++) {
        char j[256];
        snprintf(j, sizeof j, "{" TRAIN_KEYS ",\"adapter_config\":\"%s\"}", presets[i]);
        assert_int_equal(wisp_jobcfg_parse(&c, j, "/jobs/x", "t", NULL, 0, NULL), 0);
        assert_string_equal(c.adapter_config, presets[i]);
        wisp_jobcfg_free(&c);
    }
    /* not a preset: a file, against the config's directory like every other path */
    const char *j = "{" TRAIN_KEYS ",\"adapter_config\":\"../cfg/my_adapter.json\"}";
    assert_int_equal(wisp_jobcfg_parse(&c, j, "/jobs/x", "t", NULL, 0, NULL), 0);
    assert_string_equal(c.adapter_config, "/jobs/cfg/my_adapter.json");
    char *text = wisp_jobcfg_to_string(&c); /* what workers receive: already absolute */
    assert_non_null(strstr(text, "\"/jobs/cfg/my_adapter.json\""));
    free(text);
    wisp_jobcfg_free(&c);
    /* a name that merely resembles a preset is a file too */
    assert_int_equal(wisp_jobcfg_parse(&c, "{" TRAIN_KEYS ",\"adapter_config\":\"lora2\"}",
                                       "/jobs/x", "t", NULL, 0, NULL),
                     0);
    assert_string_equal(c.adapter_config, "/jobs/x/lora2");
    wisp_jobcfg_free(&c);
    /* --set: presets stay names, files resolve against the current directory */
    char *sets[] = {"adapter_config=par_bn"};
    assert_int_equal(wisp_jobcfg_parse(&c, "{" TRAIN_KEYS "}", "/jobs/x", "t", sets, 1, NULL), 0);
    assert_string_equal(c.adapter_config, "par_bn");
    wisp_jobcfg_free(&c);
    char *sets2[] = {"adapter_config=a.json"};
    assert_int_equal(wisp_jobcfg_parse(&c, "{" TRAIN_KEYS "}", "/jobs/x", "t", sets2, 1, NULL), 0);
    char cwd[4096], want[4200];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "%s/a.json", cwd);
    assert_string_equal(c.adapter_config, want);
    wisp_jobcfg_free(&c);
#undef TRAIN_KEYS
}

static void test_job_json_duplicates_take_the_last_value_and_trailing_text_is_refused(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    wisp_error_t e = {0};
    /* Python's json.load keeps the last of duplicate keys */
    assert_int_equal(wisp_jobcfg_parse(&c,
                                       "{\"kind\":\"null\",\"output\":\"/o\",\"cluster\":"
                                       "{\"credit\":3,\"credit\":5}}",
                                       "/", "t", NULL, 0, &e),
                     0);
    assert_int_equal(c.credit, 5);
    wisp_jobcfg_free(&c);
    /* one object per file: a second value or garbage after it is an error */
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"/o\"} x", "/", "t", NULL, 0, &e),
        WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "t:1:"));
    wisp_error_clear(&e);
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"/o\"}\n{}", "/", "t", NULL, 0, &e),
        WISP_ERR_FORMAT);
    /* a syntax error is one line with its line number (the text near it on one line) */
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c, "{\n  \"kind\": \"null\",\n  \"output\" \"/o\"\n}\n",
                                       "/", "t", NULL, 0, &e),
                     WISP_ERR_FORMAT);
    if (!strstr(e.msg, "t:3:") || strchr(e.msg, '\n'))
        fail_msg("error '%s' should be one line naming line 3", e.msg);
    /* 1.9 is not an integer, 1e300 not in range: refused before any cast */
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c,
                                       "{\"kind\":\"null\",\"output\":\"/o\",\"cluster\":"
                                       "{\"credit\":1.9}}",
                                       "/", "t", NULL, 0, &e),
                     WISP_ERR_ARG);
    wisp_error_clear(&e);
    assert_int_equal(wisp_jobcfg_parse(&c,
                                       "{\"kind\":\"null\",\"output\":\"/o\",\"cluster\":"
                                       "{\"credit\":1e300}}",
                                       "/", "t", NULL, 0, &e),
                     WISP_ERR_ARG);
}

static void test_string_choices_are_refused_by_the_config_naming_the_key(void **state)
{
    (void)state;
    wisp_jobcfg_t c;
    wisp_error_t e = {0};
    char *sets[] = {"classify.precision=int4"};
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"/o\"}", "/", "t", sets, 1, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "classify.precision"));
    char *sets2[] = {"train.unlabeled=drop"};
    wisp_error_clear(&e);
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"/o\"}", "/", "t", sets2, 1, &e),
        WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "train.unlabeled"));
    char *sets3[] = {"classify.precision=int8", "train.unlabeled=skip", "train.classes=c.txt"};
    assert_int_equal(
        wisp_jobcfg_parse(&c, "{\"kind\":\"null\",\"output\":\"/o\"}", "/b", "t", sets3, 3, NULL),
        0);
    assert_string_equal(c.train_unlabeled, "skip");
    assert_non_null(strstr(c.train_classes, "c.txt"));
    wisp_jobcfg_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_fill_what_the_file_leaves_out),
        cmocka_unit_test(test_relative_paths_resolve_against_the_config_directory),
        cmocka_unit_test(test_set_overrides_dotted_keys_and_creates_sections),
        cmocka_unit_test(test_unknown_keys_are_refused_naming_the_key),
        cmocka_unit_test(test_bad_values_are_refused_with_the_range),
        cmocka_unit_test(test_curve_client_keys_list_resolves_paths),
        cmocka_unit_test(test_train_keys_parse_with_their_defaults),
        cmocka_unit_test(test_adapter_config_is_a_preset_name_or_a_path_resolved_like_the_others),
        cmocka_unit_test(test_job_json_duplicates_take_the_last_value_and_trailing_text_is_refused),
        cmocka_unit_test(test_string_choices_are_refused_by_the_config_naming_the_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
