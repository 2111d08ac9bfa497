/* Tests of common/ckpt: bit-exact round trips, atomic layout, pruning, and loading
 * errors that name the file and the problem. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/ckpt.h"
#include "formats/config.h"
#include "formats/st.h"
#include "base/util.h"

enum { D = 16, NMELS = 80, TPOS = 8, FF = 32 };

static void s_add(wisp_st_writer_t *w, wisp_rng_t *r, const char *name, int ndim, int64_t a,
                  int64_t b, int64_t c)
{
    int64_t shape[3] = {a, b, c};
    size_t n = (size_t)a * (ndim > 1 ? (size_t)b : 1) * (ndim > 2 ? (size_t)c : 1);
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = 0.2f * (wisp_rng_uniform(r) - 0.5f) + (strstr(name, "norm.weight") ? 1.0f : 0.0f);
    assert_int_equal(wisp_st_writer_add_f32(w, name, WISP_DT_F32, ndim, shape, v), WISP_OK);
    free(v);
}

/* A one-layer Whisper encoder checkpoint (HF names, prefix "encoder."). */
static const char *s_model_dir(void)
{
    static char dir[512];
    if (dir[0])
        return dir;
    char path[1024];
    snprintf(dir, sizeof dir, "%s/ckpt_model", wisp_test_tmpdir());
    assert_int_equal(wisp_mkdir_p(dir, NULL), WISP_OK);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"model_type\": \"whisper\", \"d_model\": %d, \"encoder_layers\": 1,"
            " \"encoder_attention_heads\": 2, \"encoder_ffn_dim\": %d, \"num_mel_bins\": %d,"
            " \"max_source_positions\": %d, \"activation_function\": \"gelu\","
            " \"decoder_layers\": 1, \"decoder_attention_heads\": 2, \"decoder_ffn_dim\": 32}\n",
            D, FF, NMELS, TPOS);
    fclose(f);
    wisp_rng_t r;
    wisp_rng_seed(&r, 5);
    wisp_st_writer_t *w = wisp_st_writer_new();
    /* a one-layer encoder of the model's table (nn/model.h) */
    const wisp_whisper_config_t cfg = {.d_model = D,
                                       .encoder_layers = 1,
                                       .encoder_ffn_dim = FF,
                                       .num_mel_bins = NMELS,
                                       .max_source_positions = TPOS};
    wisp_model_base_t t;
    for (int i = 0; wisp_model_base_at(&cfg, i, &t) == 0; i++) {
        char n[128];
        snprintf(n, sizeof n, "encoder.%s", t.name);
        s_add(w, &r, n, t.ndim, t.shape[0], t.shape[1], t.shape[2]);
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(wisp_st_writer_save(w, path, NULL), WISP_OK);
    wisp_st_writer_destroy(&w);
    return dir;
}

/* Model with a preset adapter and a fresh 3-class head; params filled from seed. */
static wisp_model_t *s_model(const char *preset, uint64_t seed)
{
    wisp_model_opts_t mo = {.max_batch = 1,
                            .max_frames = 2 * TPOS,
                            .training = 1,
                            .threads = 1,
                            .attn_keep_mb = WISP_MODEL_ATTN_KEEP_MB_DEFAULT};
    wisp_error_t e = {0};
    wisp_model_t *m = wisp_model_new(s_model_dir(), &mo, &e);
    if (!m)
        fail_msg("model: %s", e.msg);
    wisp_adapter_config_t ac;
    memset(&ac, 0, sizeof ac);
    assert_int_equal(wisp_adapter_config_preset(&ac, preset, &e), WISP_OK);
    assert_int_equal(wisp_model_set_adapter(m, &ac, 1, &e), WISP_OK);
    wisp_adapter_config_free(&ac);
    char *names[3] = {"a", "b", "c"};
    wisp_head_config_t hc = {.num_labels = 3,
                             .classifier_proj_size = 4,
                             .use_weighted_layer_sum = 1,
                             .num_hidden_layers = 1,
                             .d_model = D,
                             .id2label = names};
    assert_int_equal(wisp_model_init_head(m, &hc, 2, &e), WISP_OK);
    wisp_rng_t r;
    wisp_rng_seed(&r, seed);
    float *p = wisp_model_params(m);
    for (size_t i = 0; i < wisp_model_num_params(m); i++)
        p[i] = wisp_rng_normal(&r);
    return m;
}

static wisp_adamw_t *s_opt(wisp_model_t *m, uint64_t seed, long steps)
{
    size_t n = wisp_model_num_params(m);
    wisp_adamw_t *o = wisp_adamw_new(n, NULL);
    wisp_rng_t r;
    wisp_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        wisp_adamw_m(o)[i] = wisp_rng_normal(&r);
        wisp_adamw_v(o)[i] = wisp_rng_uniform(&r);
    }
    wisp_adamw_set_steps(o, steps);
    return o;
}

static wisp_ckpt_state_t s_state(long step)
{
    wisp_ckpt_state_t st = {.step = step,
                            .epoch = 3,
                            .pos = 40,
                            .data_seed = 0xfedcba9876543210ull,
                            .rng_state = 0x0123456789abcdefull};
    snprintf(st.fingerprint, sizeof st.fingerprint, "%064d", 7);
    return st;
}

static void s_root(char *root, size_t n, const char *name)
{
    snprintf(root, n, "%s/%s", wisp_test_tmpdir(), name);
}

static void test_save_then_load_restores_everything_bit_for_bit(void **state)
{
    (void)state;
    char root[768], dir[1024];
    s_root(root, sizeof root, "ck_roundtrip");
    wisp_model_t *a = s_model("seq_bn", 11), *b = s_model("seq_bn", 99);
    wisp_adamw_t *oa = s_opt(a, 12, 17), *ob = s_opt(b, 98, 0);
    wisp_ckpt_state_t st = s_state(17), got;
    wisp_error_t e = {0};
    assert_int_equal(wisp_ckpt_save(root, &st, a, oa, 0, NULL, 0, dir, sizeof dir, &e), WISP_OK);
    assert_non_null(strstr(dir, "step-00000017"));
    char latest[1024];
    assert_int_equal(wisp_ckpt_latest(root, latest, sizeof latest, &e), WISP_OK);
    assert_string_equal(latest, dir);
    assert_int_equal(wisp_ckpt_load(dir, st.fingerprint, &got, b, ob, &e), WISP_OK);
    size_t n = wisp_model_num_params(a);
    assert_memory_equal(wisp_model_params(a), wisp_model_params(b), n * sizeof(float));
    assert_memory_equal(wisp_adamw_m(oa), wisp_adamw_m(ob), n * sizeof(float));
    assert_memory_equal(wisp_adamw_v(oa), wisp_adamw_v(ob), n * sizeof(float));
    assert_int_equal(wisp_adamw_steps(ob), 17);
    assert_int_equal(got.step, 17);
    assert_int_equal(got.epoch, 3);
    assert_int_equal(got.pos, 40);
    assert_true(got.data_seed == st.data_seed && got.rng_state == st.rng_state);
    assert_string_equal(got.fingerprint, st.fingerprint);
    /* The exported adapter and head sit next to the state, and no temporary is left. */
    char p[1200];
    snprintf(p, sizeof p, "%s/adapter/adapter_config.json", dir);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/head/head_config.json", dir);
    assert_int_equal(access(p, R_OK), 0);
    DIR *d = opendir(root);
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL)
        assert_null(strstr(ent->d_name, ".tmp"));
    closedir(d);
    wisp_adamw_destroy(&oa);
    wisp_adamw_destroy(&ob);
    wisp_model_destroy(&a);
    wisp_model_destroy(&b);
}

static void test_only_the_newest_checkpoints_are_kept(void **state)
{
    (void)state;
    char root[768], p[1024];
    s_root(root, sizeof root, "ck_keep");
    wisp_model_t *m = s_model("seq_bn", 1);
    wisp_adamw_t *o = s_opt(m, 2, 1);
    wisp_error_t e = {0};
    for (long s = 1; s <= 4; s++) {
        wisp_ckpt_state_t st = s_state(s);
        assert_int_equal(wisp_ckpt_save(root, &st, m, o, 2, NULL, 0, NULL, 0, &e), WISP_OK);
    }
    for (long s = 1; s <= 4; s++) {
        snprintf(p, sizeof p, "%s/step-%08ld", root, s);
        assert_int_equal(access(p, F_OK) == 0, s >= 3);
    }
    wisp_adamw_destroy(&o);
    wisp_model_destroy(&m);
}

/* The caller's files (the trainer's metrics lines and best-model state) travel with
 * the checkpoint; a name that would leave the directory is refused. */
static void test_extra_files_are_stored_and_read_back_with_the_checkpoint(void **state)
{
    (void)state;
    char root[768], dir[1024];
    s_root(root, sizeof root, "ck_files");
    wisp_model_t *m = s_model("seq_bn", 1);
    wisp_adamw_t *o = s_opt(m, 2, 1);
    wisp_ckpt_state_t st = s_state(3);
    wisp_error_t e = {0};
    const char *lines = "{\"type\":\"step\",\"step\":3}\n";
    wisp_ckpt_file_t files[2] = {{"metrics.jsonl", lines, strlen(lines)}, {"empty.json", NULL, 0}};
    assert_int_equal(wisp_ckpt_save(root, &st, m, o, 0, files, 2, dir, sizeof dir, &e), WISP_OK);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(wisp_ckpt_read_file(dir, "metrics.jsonl", 1 << 20, &text, &len, &e), WISP_OK);
    assert_int_equal(len, strlen(lines));
    assert_string_equal(text, lines);
    free(text);
    assert_int_equal(wisp_ckpt_read_file(dir, "empty.json", 1 << 20, &text, &len, &e), WISP_OK);
    assert_int_equal(len, 0);
    free(text);
    assert_int_equal(wisp_ckpt_read_file(dir, "absent", 1 << 20, &text, &len, &e),
                     WISP_ERR_NOTFOUND);
    wisp_ckpt_file_t evil = {"../escape", "x", 1};
    st = s_state(4);
    wisp_error_clear(&e);
    assert_int_equal(wisp_ckpt_save(root, &st, m, o, 0, &evil, 1, NULL, 0, &e), WISP_ERR_ARG);
    assert_non_null(strstr(e.msg, "../escape"));
    /* A file beside the adapter and head copies (their features.json) is stored there;
     * a name reaching anywhere else is refused. */
    const char *fs = "{\"truncate\": true}";
    wisp_ckpt_file_t sub[2] = {{"adapter/features.json", fs, strlen(fs)},
                               {"head/features.json", fs, strlen(fs)}};
    st = s_state(5);
    assert_int_equal(wisp_ckpt_save(root, &st, m, o, 0, sub, 2, dir, sizeof dir, &e), WISP_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(wisp_ckpt_read_file(dir, sub[i].name, 4096, &text, &len, &e), WISP_OK);
        assert_string_equal(text, fs);
        free(text);
    }
    static const char *const bad[] = {"adapter/../escape", "head/a/b",     "other/x",
                                      "adapter/",          "head/.hidden", "adapterx/y"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        wisp_ckpt_file_t b = {bad[i], "x", 1};
        wisp_error_clear(&e);
        st = s_state(6);
        assert_int_equal(wisp_ckpt_save(root, &st, m, o, 0, &b, 1, NULL, 0, &e), WISP_ERR_ARG);
        assert_non_null(strstr(e.msg, bad[i]));
    }
    wisp_adamw_destroy(&o);
    wisp_model_destroy(&m);
}

static void test_loading_refuses_other_runs_and_damaged_files_naming_them(void **state)
{
    (void)state;
    char root[768], dir[1024], p[1200];
    s_root(root, sizeof root, "ck_bad");
    wisp_model_t *m = s_model("seq_bn", 1);
    wisp_adamw_t *o = s_opt(m, 2, 5);
    wisp_ckpt_state_t st = s_state(5), got;
    wisp_error_t e = {0};
    assert_int_equal(wisp_ckpt_save(root, &st, m, o, 0, NULL, 0, dir, sizeof dir, &e), WISP_OK);

    /* Another configuration's fingerprint. */
    assert_int_equal(wisp_ckpt_load(dir, "other", &got, m, o, &e), WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "state.json"));

    /* A model with another adapter: tensors do not match. */
    wisp_model_t *lora = s_model("lora", 3);
    wisp_adamw_t *ol = s_opt(lora, 4, 0);
    wisp_error_clear(&e);
    assert_true(wisp_ckpt_load(dir, NULL, &got, lora, ol, &e) < 0);
    assert_non_null(strstr(e.msg, dir));

    /* A truncated tensor file. */
    snprintf(p, sizeof p, "%s/adamw.safetensors", dir);
    assert_int_equal(truncate(p, 100), 0);
    wisp_error_clear(&e);
    assert_true(wisp_ckpt_load(dir, NULL, &got, m, o, &e) < 0);
    assert_non_null(strstr(e.msg, "adamw.safetensors"));

    /* state.json without a key, then not JSON at all. */
    snprintf(p, sizeof p, "%s/state.json", dir);
    const char *nokey = "{\"format\": \"wisp-checkpoint\", \"version\": 1, \"step\": 5,"
                        " \"fingerprint\": \"x\"}";
    assert_int_equal(wisp_write_file_atomic(p, nokey, strlen(nokey), NULL), WISP_OK);
    wisp_error_clear(&e);
    assert_int_equal(wisp_ckpt_load(dir, NULL, &got, m, o, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "\"epoch\""));
    assert_int_equal(wisp_write_file_atomic(p, "{oops", 5, NULL), WISP_OK);
    wisp_error_clear(&e);
    assert_int_equal(wisp_ckpt_load(dir, NULL, &got, m, o, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "state.json"));

    /* LATEST naming something that is not a checkpoint. */
    snprintf(p, sizeof p, "%s/LATEST", root);
    assert_int_equal(wisp_write_file_atomic(p, "../../etc", 9, NULL), WISP_OK);
    wisp_error_clear(&e);
    assert_int_equal(wisp_ckpt_latest(root, dir, sizeof dir, &e), WISP_ERR_FORMAT);
    assert_non_null(strstr(e.msg, "LATEST"));
    s_root(root, sizeof root, "ck_none");
    wisp_error_clear(&e);
    assert_int_equal(wisp_ckpt_latest(root, dir, sizeof dir, &e), WISP_ERR_NOTFOUND);

    wisp_adamw_destroy(&ol);
    wisp_model_destroy(&lora);
    wisp_adamw_destroy(&o);
    wisp_model_destroy(&m);
}

/* state.json with `key` set to the JSON text `value` (the other keys valid). */
static int s_parse_state_with(const char *key, const char *value, wisp_ckpt_state_t *st,
                              wisp_error_t *e)
{
    const char *keys[] = {"step", "epoch", "pos", "optimizer_steps", "num_params", "version"};
    const char *vals[] = {"40", "2", "8", "40", "12345", "1"};
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "{\"format\": \"wisp-checkpoint\", \"data_seed\": \"00000000000004d2\", "
                     "\"rng_state\": \"9e3779b97f4a7c15\", \"fingerprint\": \"0123abcd\"");
    for (int i = 0; i < 6; i++)
        n += snprintf(text + n, sizeof text - (size_t)n, ", \"%s\": %s", keys[i],
                      strcmp(keys[i], key) == 0 ? value : vals[i]);
    n += snprintf(text + n, sizeof text - (size_t)n, "}");
    long opt = 0, np = 0;
    return wisp_ckpt_state_parse(text, (size_t)n, "state.json", st, &opt, &np, e);
}

static void test_state_json_numbers_are_range_checked_before_the_cast(void **state)
{
    (void)state;
    wisp_ckpt_state_t st;
    wisp_error_t e = {0};
    assert_int_equal(s_parse_state_with("step", "40", &st, &e), 0);
    assert_int_equal(st.step, 40);
    /* 1e300 does not fit a long: refused by value (casting it first is undefined) */
    const char *bad[] = {"1e300", "-1", "2.5", "1e19", "\"7\""};
    for (int i = 0; i < 5; i++) {
        wisp_error_clear(&e);
        if (s_parse_state_with("step", bad[i], &st, &e) == 0)
            fail_msg("step %s accepted", bad[i]);
        assert_non_null(strstr(e.msg, "\"step\""));
    }
    /* version 1.9 is not version 1 */
    wisp_error_clear(&e);
    assert_int_not_equal(s_parse_state_with("version", "1.9", &st, &e), 0);
    assert_non_null(strstr(e.msg, "version"));
    wisp_error_clear(&e);
    assert_int_not_equal(s_parse_state_with("version", "1e300", &st, &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_then_load_restores_everything_bit_for_bit),
        cmocka_unit_test(test_only_the_newest_checkpoints_are_kept),
        cmocka_unit_test(test_extra_files_are_stored_and_read_back_with_the_checkpoint),
        cmocka_unit_test(test_loading_refuses_other_runs_and_damaged_files_naming_them),
        cmocka_unit_test(test_state_json_numbers_are_range_checked_before_the_cast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
