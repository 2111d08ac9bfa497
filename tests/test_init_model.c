/* Tests of `wisp init-model` and `wisp inspect` (jobs/cli/cmd_init_model.c,
 * jobs/cli/cmd_inspect.c), run in-process on a very small custom config. */
#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "formats/config.h"
#include "nn/adapter_config.h"
#include "formats/st.h"
#include "base/util.h"

enum { D = 16, L = 2, H = 2, F = 32, M = 8, T = 10 };

static const char *s_tmp(const char *name)
{
    static char buf[8][1024];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 1024, "%s/%s", wisp_test_tmpdir(), name);
    return p;
}

/* A tiny HF-style config.json for the custom model. */
static const char *s_small_config(void)
{
    const char *p = s_tmp("small_config.json");
    char text[512];
    snprintf(text, sizeof text,
             "{\"model_type\": \"whisper\", \"d_model\": %d, \"encoder_layers\": %d, "
             "\"encoder_attention_heads\": %d, \"encoder_ffn_dim\": %d, \"num_mel_bins\": %d, "
             "\"max_source_positions\": %d, \"activation_function\": \"gelu\"}",
             D, L, H, F, M, T);
    assert_int_equal(wisp_write_file_atomic(p, text, strlen(text), NULL), 0);
    return p;
}

/* Runs a command with stdout sent to /dev/null (or to `capture` when given). */
static int s_run(int (*cmd)(int, char **), const char *capture, char **args)
{
    int argc = 0;
    while (args[argc])
        argc++;
    fflush(stdout);
    int saved = dup(1);
    int fd = open(capture ? capture : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    int rc = cmd(argc, args);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

static int s_init(const char *out, const char *seed, const char *dtype, int decoder)
{
    char *args[16] = {"init-model", "--config",     (char *)s_small_config(),
                      "-o",         (char *)out,    "--seed",
                      (char *)seed, "--num-labels", "3",
                      "--dtype",    (char *)dtype,  "--force",
                      NULL};
    if (decoder)
        args[12] = "--with-decoder";
    return s_run(wisp_cmd_init_model, NULL, args);
}

static const float *s_get(wisp_st_t *st, const char *name, int ndim, int64_t a, int64_t b,
                          int64_t c)
{
    int64_t shape[3] = {a, b, c};
    const float *p = NULL;
    wisp_error_t e = {0};
    if (wisp_st_get_f32(st, name, ndim, shape, &p, &e) != 0)
        fail_msg("%s", e.msg);
    return p;
}

static void s_assert_all(const float *p, size_t n, float v, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            fail_msg("%s[%zu] = %g, expected %g", name, i, p[i], v);
}

static void test_init_model_writes_every_encoder_tensor_with_hf_names_and_shapes(void **state)
{
    (void)state;
    const char *dir = s_tmp("m_f32");
    assert_int_equal(s_init(dir, "5", "f32", 0), WISP_EXIT_OK);
    wisp_error_t e = {0};
    wisp_st_t *st = wisp_st_open(dir, &e);
    assert_non_null(st);
    assert_int_equal(wisp_st_count(st), 5 + 15 * L + 2);

    const float *w = s_get(st, "model.encoder.conv1.weight", 3, D, M, 3);
    double sum = 0, sq = 0;
    for (int i = 0; i < D * M * 3; i++)
        sum += w[i], sq += (double)w[i] * w[i];
    double mean = sum / (D * M * 3), sd = sqrt(sq / (D * M * 3) - mean * mean);
    assert_true(fabs(mean) < 0.004 && fabs(sd - 0.02) < 0.003); /* N(0, 0.02), 384 draws */
    s_assert_all(s_get(st, "model.encoder.conv1.bias", 1, D, 0, 0), D, 0.0f, "conv1.bias");
    s_get(st, "model.encoder.conv2.weight", 3, D, D, 3);
    s_assert_all(s_get(st, "model.encoder.conv2.bias", 1, D, 0, 0), D, 0.0f, "conv2.bias");

    /* sinusoids: row t = [sin(t * inv_i) | cos(t * inv_i)], inv_i = 10000^(-i / (D/2 - 1)) */
    const float *pos = s_get(st, "model.encoder.embed_positions.weight", 2, T, D, 0);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D / 2; i++) {
            double a = t * exp(-log(10000.0) * i / (D / 2 - 1));
            assert_true(fabs(pos[t * D + i] - sin(a)) < 1e-5);
            assert_true(fabs(pos[t * D + D / 2 + i] - cos(a)) < 1e-5);
        }

    char n[128];
    for (int l = 0; l < L; l++) {
        static const char *proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int p = 0; p < 4; p++) {
            snprintf(n, sizeof n, "model.encoder.layers.%d.self_attn.%s.weight", l, proj[p]);
            s_get(st, n, 2, D, D, 0);
            snprintf(n, sizeof n, "model.encoder.layers.%d.self_attn.%s.bias", l, proj[p]);
            if (p == 1)
                assert_null(wisp_st_find(st, n)); /* k_proj has no bias */
            else
                s_assert_all(s_get(st, n, 1, D, 0, 0), D, 0.0f, n);
        }
        static const char *ln[] = {"self_attn_layer_norm", "final_layer_norm"};
        for (int k = 0; k < 2; k++) {
            snprintf(n, sizeof n, "model.encoder.layers.%d.%s.weight", l, ln[k]);
            s_assert_all(s_get(st, n, 1, D, 0, 0), D, 1.0f, n);
            snprintf(n, sizeof n, "model.encoder.layers.%d.%s.bias", l, ln[k]);
            s_assert_all(s_get(st, n, 1, D, 0, 0), D, 0.0f, n);
        }
        snprintf(n, sizeof n, "model.encoder.layers.%d.fc1.weight", l);
        s_get(st, n, 2, F, D, 0);
        snprintf(n, sizeof n, "model.encoder.layers.%d.fc1.bias", l);
        s_assert_all(s_get(st, n, 1, F, 0, 0), F, 0.0f, n);
        snprintf(n, sizeof n, "model.encoder.layers.%d.fc2.weight", l);
        s_get(st, n, 2, D, F, 0);
        snprintf(n, sizeof n, "model.encoder.layers.%d.fc2.bias", l);
        s_assert_all(s_get(st, n, 1, D, 0, 0), D, 0.0f, n);
    }
    s_assert_all(s_get(st, "model.encoder.layer_norm.weight", 1, D, 0, 0), D, 1.0f,
                 "layer_norm.weight");
    s_assert_all(s_get(st, "model.encoder.layer_norm.bias", 1, D, 0, 0), D, 0.0f,
                 "layer_norm.bias");
    assert_string_equal(wisp_st_metadata(st, "format"), "pt");
    wisp_st_destroy(&st);

    /* config.json: same sizes, the requested labels, HF classification keys */
    char cfg_path[1100];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    wisp_whisper_config_t c;
    assert_int_equal(wisp_whisper_config_load(&c, cfg_path, &e), 0);
    assert_int_equal(c.d_model, D);
    assert_int_equal(c.encoder_layers, L);
    assert_int_equal(c.encoder_attention_heads, H);
    assert_int_equal(c.encoder_ffn_dim, F);
    assert_int_equal(c.num_mel_bins, M);
    assert_int_equal(c.max_source_positions, T);
    assert_int_equal(c.num_labels, 3);
    assert_string_equal(c.id2label[2], "LABEL_2");
    wisp_whisper_config_free(&c);
}

static void test_init_model_is_deterministic_per_seed_and_dtype_rounds_the_same_values(void **state)
{
    (void)state;
    const char *a = s_tmp("m_a"), *b = s_tmp("m_b"), *c = s_tmp("m_c"), *h = s_tmp("m_bf16");
    assert_int_equal(s_init(a, "11", "f32", 0), WISP_EXIT_OK);
    assert_int_equal(s_init(b, "11", "f32", 0), WISP_EXIT_OK);
    assert_int_equal(s_init(c, "12", "f32", 0), WISP_EXIT_OK);
    assert_int_equal(s_init(h, "11", "bf16", 0), WISP_EXIT_OK);
    char pa[1100], pb[1100], ha[65], hb[65], hc[65];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    assert_int_equal(wisp_sha256_file(pa, ha, NULL), 0);
    assert_int_equal(wisp_sha256_file(pb, hb, NULL), 0);
    assert_string_equal(ha, hb);
    snprintf(pb, sizeof pb, "%s/model.safetensors", c);
    assert_int_equal(wisp_sha256_file(pb, hc, NULL), 0);
    assert_string_not_equal(ha, hc);

    wisp_st_t *sa = wisp_st_open(a, NULL), *sh = wisp_st_open(h, NULL);
    assert_non_null(sa);
    assert_non_null(sh);
    const wisp_st_tensor_t *t = wisp_st_find(sh, "model.encoder.layers.1.fc1.weight");
    assert_int_equal(t->dtype, WISP_DT_BF16);
    const float *fa = s_get(sa, "model.encoder.layers.1.fc1.weight", 2, F, D, 0);
    const float *fh = s_get(sh, "model.encoder.layers.1.fc1.weight", 2, F, D, 0);
    for (int i = 0; i < F * D; i++)
        assert_true(fh[i] == wisp_bf16_to_f32(wisp_f32_to_bf16(fa[i])));
    wisp_st_destroy(&sa);
    wisp_st_destroy(&sh);
}

static void test_init_model_with_decoder_adds_decoder_tensors_only(void **state)
{
    (void)state;
    const char *a = s_tmp("m_enc"), *b = s_tmp("m_dec");
    assert_int_equal(s_init(a, "3", "f32", 0), WISP_EXIT_OK);
    assert_int_equal(s_init(b, "3", "f32", 1), WISP_EXIT_OK);
    wisp_st_t *sa = wisp_st_open(a, NULL), *sb = wisp_st_open(b, NULL);
    /* decoder: 2 embeddings + per layer (2 x (7 attention + 2 LN) + 4 FFN + 2 LN) + final LN */
    assert_int_equal(wisp_st_count(sb), wisp_st_count(sa) + 2 + L * 24 + 2);
    s_get(sb, "model.decoder.embed_tokens.weight", 2, 51865, D, 0);
    s_get(sb, "model.decoder.layers.1.encoder_attn.q_proj.weight", 2, D, D, 0);
    assert_null(wisp_st_find(sb, "model.decoder.layers.0.encoder_attn.k_proj.bias"));
    /* encoder weights do not depend on whether the decoder is written */
    const float *x = s_get(sa, "model.encoder.layers.0.fc2.weight", 2, D, F, 0);
    const float *y = s_get(sb, "model.encoder.layers.0.fc2.weight", 2, D, F, 0);
    assert_memory_equal(x, y, sizeof(float) * D * F);
    wisp_st_destroy(&sa);
    wisp_st_destroy(&sb);
}

static void test_init_model_accepts_inline_json_config(void **state)
{
    (void)state;
    const char *dir = s_tmp("m_inline");
    char *args[] = {"init-model",
                    "-o",
                    (char *)dir,
                    "--config",
                    "{\"model_type\": \"whisper\", \"d_model\": 8, \"encoder_layers\": 1, "
                    "\"encoder_attention_heads\": 2, \"encoder_ffn_dim\": 16, \"num_mel_bins\": 4, "
                    "\"max_source_positions\": 6}",
                    NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, args), WISP_EXIT_OK);
    wisp_st_t *st = wisp_st_open(dir, NULL);
    assert_non_null(st);
    assert_int_equal(wisp_st_count(st), 5 + 15 + 2);
    s_get(st, "model.encoder.embed_positions.weight", 2, 6, 8, 0);
    s_get(st, "model.encoder.layers.0.fc1.weight", 2, 16, 8, 0);
    wisp_st_destroy(&st);
}

static void test_init_model_refuses_bad_arguments_and_existing_output(void **state)
{
    (void)state;
    const char *dir = s_tmp("m_exists");
    assert_int_equal(s_init(dir, "1", "f32", 0), WISP_EXIT_OK);
    char *again[] = {"init-model", "--config", (char *)s_small_config(), "-o", (char *)dir, NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, again), WISP_EXIT_USAGE);
    char *bad_dtype[] = {"init-model",       "--size",  "tiny", "-o",
                         (char *)s_tmp("x"), "--dtype", "f8",   NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, bad_dtype), WISP_EXIT_USAGE);
    char *bad_size[] = {"init-model", "--size", "gigantic", "-o", (char *)s_tmp("x"), NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, bad_size), WISP_EXIT_USAGE);
    char *both[] = {"init-model", "--size",           "tiny", "--config", "c.json",
                    "-o",         (char *)s_tmp("x"), NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, both), WISP_EXIT_USAGE);
    char *no_out[] = {"init-model", "--size", "tiny", NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, no_out), WISP_EXIT_USAGE);
    char *bad_inline[] = {"init-model", "--config",         "{\"model_type\": \"whisper\"",
                          "-o",         (char *)s_tmp("x"), NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, bad_inline), WISP_EXIT_USAGE);
    char *help[] = {"init-model", "--help", NULL};
    assert_int_equal(s_run(wisp_cmd_init_model, NULL, help), WISP_EXIT_OK);
}

static char *s_slurp(const char *path)
{
    char *text;
    size_t len;
    assert_int_equal(wisp_read_file(path, 1 << 20, &text, &len, NULL), 0);
    return text;
}

static void test_inspect_reports_counts_and_names_each_problem(void **state)
{
    (void)state;
    const char *dir = s_tmp("m_inspect");
    assert_int_equal(s_init(dir, "2", "f16", 0), WISP_EXIT_OK);
    const char *out = s_tmp("inspect.txt");
    char *ok_args[] = {"inspect", (char *)dir, NULL};
    assert_int_equal(s_run(wisp_cmd_inspect, out, ok_args), WISP_EXIT_OK);
    char *text = s_slurp(out);
    char want[128];
    long long params = (long long)D * M * 3 + D + D * D * 3 + D + T * D +
                       L * (4LL * D * D + 3 * D + 2 * D + 2 * D + F * D + F + D * F + D) + 2 * D;
    snprintf(want, sizeof want, "parameters: total %lld", params);
    if (!strstr(text, want))
        fail_msg("inspect output lacks '%s':\n%s", want, text);
    assert_non_null(strstr(text, "encoder check: 37 of 37"));
    assert_non_null(strstr(text, "model.encoder.layers.1.fc2.weight"));
    assert_non_null(strstr(text, "F16 x37"));
    free(text);

    /* a config.json that disagrees with the weights */
    char cfg_path[1100];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    cJSON *cfg = NULL;
    assert_int_equal(wisp_json_load(cfg_path, &cfg, NULL), 0);
    cJSON_ReplaceItemInObject(cfg, "encoder_ffn_dim", cJSON_CreateNumber(64));
    assert_int_equal(wisp_json_save(cfg_path, cfg, NULL), 0);
    cJSON_Delete(cfg);
    assert_int_equal(s_run(wisp_cmd_inspect, out, ok_args), WISP_EXIT_FAILURE);
    text = s_slurp(out);
    if (!strstr(text, "PROBLEM: tensor model.encoder.layers.0.fc1.weight has shape [32, 16], the "
                      "config implies [64, 16]"))
        fail_msg("inspect output lacks the shape problem:\n%s", text);
    free(text);

    /* a truncated weights file */
    char st_path[1100];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
    assert_int_equal(truncate(st_path, 100), 0);
    assert_int_equal(s_run(wisp_cmd_inspect, out, ok_args), WISP_EXIT_FAILURE);
    text = s_slurp(out);
    assert_non_null(strstr(text, "PROBLEM: "));
    assert_non_null(strstr(text, "model.safetensors"));
    free(text);

    char *missing[] = {"inspect", (char *)s_tmp("nothing_here"), NULL};
    assert_int_equal(s_run(wisp_cmd_inspect, NULL, missing), WISP_EXIT_FAILURE);
    char *usage[] = {"inspect", NULL};
    fflush(stderr);
    assert_int_equal(s_run(wisp_cmd_inspect, NULL, usage), WISP_EXIT_USAGE);
}

static void test_inspect_reads_adapter_and_head_dirs(void **state)
{
    (void)state;
    const char *dir = s_tmp("adapter_dir");
    wisp_adapter_config_t a;
    assert_int_equal(wisp_adapter_config_preset(&a, "lora", NULL), 0);
    assert_int_equal(wisp_adapter_config_save_dir(&a, dir, D, NULL, NULL), 0);
    wisp_adapter_config_free(&a);
    wisp_st_writer_t *w = wisp_st_writer_new();
    float zeros[8 * D] = {0};
    int64_t sa[2] = {8, D}, sb[2] = {D, 8};
    wisp_st_writer_add_f32(w, "encoder.layers.0.self_attn.q_proj.loras.lora.lora_A", WISP_DT_F32, 2,
                           sa, zeros);
    wisp_st_writer_add_f32(w, "encoder.layers.0.self_attn.q_proj.loras.lora.lora_B", WISP_DT_F32, 2,
                           sb, zeros);
    char p[1100];
    snprintf(p, sizeof p, "%s/adapter.safetensors", dir);
    assert_int_equal(wisp_st_writer_save(w, p, NULL), 0);
    wisp_st_writer_destroy(&w);
    const char *out = s_tmp("inspect_adapter.txt");
    char *args[] = {"inspect", (char *)dir, NULL};
    assert_int_equal(s_run(wisp_cmd_inspect, out, args), WISP_EXIT_OK);
    char *text = s_slurp(out);
    assert_non_null(strstr(text, "kind: lora"));
    assert_non_null(strstr(text, "adapter 256"));
    free(text);

    /* head dir whose classifier does not match num_labels */
    const char *hdir = s_tmp("head_dir");
    assert_int_equal(wisp_mkdir_p(hdir, NULL), 0);
    char *labels[] = {"a", "b"};
    wisp_head_config_t h = {.num_labels = 2,
                            .classifier_proj_size = 4,
                            .num_hidden_layers = L,
                            .d_model = D,
                            .id2label = labels};
    snprintf(p, sizeof p, "%s/head_config.json", hdir);
    assert_int_equal(wisp_head_config_save(&h, p, NULL), 0);
    w = wisp_st_writer_new();
    int64_t sp[2] = {4, D}, spb[1] = {4}, sc[2] = {3, 4}, scb[1] = {3};
    wisp_st_writer_add_f32(w, "projector.weight", WISP_DT_F32, 2, sp, zeros);
    wisp_st_writer_add_f32(w, "projector.bias", WISP_DT_F32, 1, spb, zeros);
    wisp_st_writer_add_f32(w, "classifier.weight", WISP_DT_F32, 2, sc, zeros);
    wisp_st_writer_add_f32(w, "classifier.bias", WISP_DT_F32, 1, scb, zeros);
    snprintf(p, sizeof p, "%s/model_head.safetensors", hdir);
    assert_int_equal(wisp_st_writer_save(w, p, NULL), 0);
    wisp_st_writer_destroy(&w);
    char *hargs[] = {"inspect", (char *)hdir, NULL};
    assert_int_equal(s_run(wisp_cmd_inspect, out, hargs), WISP_EXIT_FAILURE);
    text = s_slurp(out);
    if (!strstr(text,
                "PROBLEM: tensor classifier.weight has shape [3, 4], the config implies [2, 4]"))
        fail_msg("inspect output lacks the classifier problem:\n%s", text);
    assert_non_null(strstr(text, "head 83")); /* 4*16+4 + 3*4+3 */
    free(text);
}

/* A seq_bn adapter of a 1-layer model (d = D, reduction_factor 16: width 1) whose
 * layer-0 adapter_down weight has `width` rows; returns its directory. */
static const char *s_one_layer_adapter(const char *name, int64_t width)
{
    const char *dir = s_tmp(name);
    wisp_adapter_config_t a;
    assert_int_equal(wisp_adapter_config_preset(&a, "seq_bn", NULL), 0);
    assert_int_equal(wisp_adapter_config_save_dir(&a, dir, D, NULL, NULL), 0);
    wisp_adapter_config_free(&a);
    float zeros[4 * D] = {0};
    int64_t down[2] = {width, D}, down_b[1] = {width}, up[2] = {D, width}, up_b[1] = {D};
    const char *pre = "encoder.layers.0.output_adapters.adapters.seq_bn.";
    char n[4][160];
    snprintf(n[0], sizeof n[0], "%sadapter_down.0.weight", pre);
    snprintf(n[1], sizeof n[1], "%sadapter_down.0.bias", pre);
    snprintf(n[2], sizeof n[2], "%sadapter_up.weight", pre);
    snprintf(n[3], sizeof n[3], "%sadapter_up.bias", pre);
    wisp_st_writer_t *w = wisp_st_writer_new();
    assert_int_equal(wisp_st_writer_add_f32(w, n[0], WISP_DT_F32, 2, down, zeros), 0);
    assert_int_equal(wisp_st_writer_add_f32(w, n[1], WISP_DT_F32, 1, down_b, zeros), 0);
    assert_int_equal(wisp_st_writer_add_f32(w, n[2], WISP_DT_F32, 2, up, zeros), 0);
    assert_int_equal(wisp_st_writer_add_f32(w, n[3], WISP_DT_F32, 1, up_b, zeros), 0);
    char p[1100];
    snprintf(p, sizeof p, "%s/adapter.safetensors", dir);
    assert_int_equal(wisp_st_writer_save(w, p, NULL), 0);
    wisp_st_writer_destroy(&w);
    return dir;
}

/* The widths line has one entry per layer the adapter's weights cover (it printed
 * eight for any depth), and a weight of another width than the config's is a problem. */
static void test_inspect_prints_one_bottleneck_width_per_layer_of_the_adapter(void **state)
{
    (void)state;
    const char *out = s_tmp("inspect_bn.txt");
    char *args[] = {"inspect", (char *)s_one_layer_adapter("bn_one_layer", 1), NULL};
    assert_int_equal(s_run(wisp_cmd_inspect, out, args), WISP_EXIT_OK);
    char *text = s_slurp(out);
    if (!strstr(text, "  bottleneck width per layer (1 layer): 1 (0 = left out)\n"))
        fail_msg("inspect output lacks the one-layer widths line:\n%s", text);
    free(text);

    char *bad[] = {"inspect", (char *)s_one_layer_adapter("bn_wrong_width", 3), NULL};
    assert_int_equal(s_run(wisp_cmd_inspect, out, bad), WISP_EXIT_FAILURE);
    text = s_slurp(out);
    if (!strstr(text, "PROBLEM: tensor encoder.layers.0.output_adapters.adapters.seq_bn."
                      "adapter_down.0.weight has shape [3, 16], the config implies [1, 16]"))
        fail_msg("inspect output lacks the width problem:\n%s", text);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_model_writes_every_encoder_tensor_with_hf_names_and_shapes),
        cmocka_unit_test(
            test_init_model_is_deterministic_per_seed_and_dtype_rounds_the_same_values),
        cmocka_unit_test(test_init_model_with_decoder_adds_decoder_tensors_only),
        cmocka_unit_test(test_init_model_accepts_inline_json_config),
        cmocka_unit_test(test_init_model_refuses_bad_arguments_and_existing_output),
        cmocka_unit_test(test_inspect_reports_counts_and_names_each_problem),
        cmocka_unit_test(test_inspect_reads_adapter_and_head_dirs),
        cmocka_unit_test(test_inspect_prints_one_bottleneck_width_per_layer_of_the_adapter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
