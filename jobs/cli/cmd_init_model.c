/* cmd_init_model.c: `wisp init-model` writes a randomly initialised Whisper
 * checkpoint in Hugging Face layout (config.json + model.safetensors), for tests,
 * benchmarks and demos without downloading weights.
 *
 * Names follow WhisperForConditionalGeneration's state dict (`model.encoder.*`,
 * `model.decoder.*`); NUMERICS.md section 6 lists the encoder tensors. The
 * initialisation is HF's _init_weights: Linear/Conv1d weights and embeddings
 * N(0, init_std), biases 0, LayerNorm weight 1 and bias 0, and the encoder's
 * embed_positions = Whisper sinusoids. init_std is the HF config key of that name
 * (0.02 when absent, as in transformers' WhisperConfig), or --init-std; the value
 * used is written to config.json. A larger init_std gives a random model whose
 * convolution features are not drowned by the unit-scale sinusoid positions (what
 * a trained model's are like), which the demo relies on. Every tensor draws from its own generator,
 * seeded from (seed, tensor name), so a tensor's values do not depend on which
 * other tensors are written. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "formats/config.h"
#include "base/log.h"
#include "formats/st.h"
#include "base/util.h"
#include "nn/model.h"

typedef struct {
    const char *out_dir;     /* -o */
    const char *size;        /* --size */
    const char *config_path; /* --config */
    wisp_dtype_t dtype;      /* --dtype */
    uint64_t seed;           /* --seed */
    int num_labels;          /* --num-labels, 0 = keep */
    double init_std;         /* --init-std, 0 = from the config (HF default 0.02) */
    int with_decoder;        /* --with-decoder */
    int force;               /* --force */
} s_opts_t;

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: wisp init-model (--size NAME | --config CONFIG.json) -o DIR [options]\n"
        "\n"
        "Writes a randomly initialised Whisper checkpoint in Hugging Face layout:\n"
        "DIR/config.json (WhisperForAudioClassification) and DIR/model.safetensors with\n"
        "tensors named model.encoder.* (as in openai/whisper-* checkpoints).\n"
        "Weights ~ N(0, init_std) (the config's init_std, HF default 0.02), biases 0,\n"
        "LayerNorms 1/0, encoder positions = Whisper sinusoids; deterministic for a\n"
        "given seed.\n"
        "\n"
        "options:\n"
        "  --size NAME        tiny | base | small | medium | large | large-v3\n"
        "  --config FILE      an HF config.json giving the dimensions instead (or the JSON\n"
        "                     text itself when it starts with '{')\n"
        "  -o, --output DIR   output directory (created)\n"
        "  --dtype T          f32 (default) | f16 | bf16\n"
        "  --seed S           random seed (default 0)\n"
        "  --num-labels K     classification labels in config.json (LABEL_0..; default 2)\n"
        "  --init-std X       standard deviation of the weights (default: the config's\n"
        "                     init_std, else 0.02); written to config.json\n"
        "  --with-decoder     also write model.decoder.* (skipped by default: wisp runs\n"
        "                     only the encoder, and the decoder roughly doubles the file)\n"
        "  --force            overwrite an existing DIR/model.safetensors\n"
        "\n"
        "examples:\n"
        "  wisp init-model --size tiny -o models/tiny-random\n"
        "  wisp init-model --size base --dtype f16 --seed 7 --num-labels 10 -o /tmp/base16\n"
        "  wisp init-model --config my_small_config.json -o /tmp/custom\n"
        "  wisp init-model -o /tmp/mini --config '{\"model_type\": \"whisper\", \"d_model\": 64,\n"
        "      \"encoder_layers\": 2, \"encoder_attention_heads\": 4, \"encoder_ffn_dim\": "
        "256}'\n");
}

/* FNV-1a of a name, mixed with the seed: one generator per tensor. */
static uint64_t s_tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return seed * 0x9E3779B97F4A7C15ull ^ h;
}

/* Whisper's sinusoids(length, channels): [sin(t * inv) | cos(t * inv)],
 * inv_i = exp(-i * log(10000) / (channels/2 - 1)), evaluated in fp32 step by step
 * the way torch does (HF stores these values). torch's vectorised expf can differ
 * from libm's by an ulp, and one ulp of the argument at t = 1500 is 1.2e-4, so the
 * values agree with torch to ~1.2e-4 (tests/reference/check_init_model.py). wisp
 * reads embed_positions from the checkpoint, so nothing depends on this. */
static void s_sinusoids(float *out, int length, int channels)
{
    int half = channels / 2;
    float neg_inc = (float)(-log(10000.0) / (double)(half > 1 ? half - 1 : 1));
    for (int t = 0; t < length; t++)
        for (int i = 0; i < half; i++) {
            float a = (float)t * expf(neg_inc * (float)i);
            out[(size_t)t * channels + i] = sinf(a);
            out[(size_t)t * channels + half + i] = cosf(a);
        }
}

typedef struct {
    wisp_st_writer_t *w;
    const s_opts_t *o;
    float std;  /* init_std in effect */
    float *buf; /* scratch, as large as the largest tensor */
    size_t buf_len;
    int64_t nparams;
    int ntensors;
} s_ctx_t;

static int s_add(s_ctx_t *c, const char *name, wisp_base_init_t init, int ndim, int64_t d0,
                 int64_t d1, int64_t d2)
{
    int64_t shape[3] = {d0, d1, d2};
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    if (n > c->buf_len) {
        wisp_free(c->buf);
        c->buf = wisp_alloc(n * sizeof(float));
        c->buf_len = c->buf ? n : 0;
        if (!c->buf)
            return wisp_error_set(NULL, WISP_ERR_NOMEM,
                                  "init-model: out of memory for %s (%zu floats)", name, n);
    }
    wisp_rng_t rng;
    wisp_rng_seed(&rng, s_tensor_seed(c->o->seed, name));
    switch (init) {
    case WISP_BASE_INIT_NORMAL:
        for (size_t i = 0; i < n; i++)
            c->buf[i] = c->std * wisp_rng_normal(&rng);
        break;
    case WISP_BASE_INIT_ZERO: memset(c->buf, 0, n * sizeof(float)); break;
    case WISP_BASE_INIT_ONE:
        for (size_t i = 0; i < n; i++)
            c->buf[i] = 1.0f;
        break;
    case WISP_BASE_INIT_SINUSOID: s_sinusoids(c->buf, (int)d0, (int)d1); break;
    }
    int rc = wisp_st_writer_add_f32(c->w, name, c->o->dtype, ndim, shape, c->buf);
    if (rc == 0) {
        c->nparams += (int64_t)n;
        c->ntensors++;
    }
    return rc;
}

static int s_linear(s_ctx_t *c, const char *prefix, int64_t out, int64_t in, int bias)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    int rc = s_add(c, name, WISP_BASE_INIT_NORMAL, 2, out, in, 0);
    if (rc == 0 && bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        rc = s_add(c, name, WISP_BASE_INIT_ZERO, 1, out, 0, 0);
    }
    return rc;
}

static int s_layernorm(s_ctx_t *c, const char *prefix, int64_t d)
{
    char name[256];
    snprintf(name, sizeof name, "%s.weight", prefix);
    int rc = s_add(c, name, WISP_BASE_INIT_ONE, 1, d, 0, 0);
    if (rc == 0) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        rc = s_add(c, name, WISP_BASE_INIT_ZERO, 1, d, 0, 0);
    }
    return rc;
}

/* q, k (no bias), v, out projections of one attention block. */
static int s_attention(s_ctx_t *c, const char *prefix, int64_t d)
{
    static const char *proj[] = {"k_proj", "v_proj", "q_proj", "out_proj"};
    for (int p = 0; p < 4; p++) {
        char name[256];
        snprintf(name, sizeof name, "%s.%s", prefix, proj[p]);
        int rc = s_linear(c, name, d, d, p != 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The encoder's tensors, in the model's table (nn/model.h) and HF's state-dict order. */
static int s_encoder(s_ctx_t *c, const wisp_whisper_config_t *cfg)
{
    wisp_model_base_t t;
    for (int i = 0; wisp_model_base_at(cfg, i, &t) == 0; i++) {
        char name[128];
        snprintf(name, sizeof name, "model.encoder.%s", t.name);
        int rc = s_add(c, name, t.init, t.ndim, t.shape[0], t.shape[1], t.shape[2]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The decoder mirrors the encoder's sizes (as the config.json written here says). */
static int s_decoder(s_ctx_t *c, const wisp_whisper_config_t *cfg)
{
    int64_t d = cfg->d_model, f = cfg->encoder_ffn_dim;
    int64_t vocab = cfg->num_mel_bins == 128 ? 51866 : 51865;
    int rc;
    if ((rc = s_add(c, "model.decoder.embed_tokens.weight", WISP_BASE_INIT_NORMAL, 2, vocab, d,
                    0)) != 0 ||
        (rc = s_add(c, "model.decoder.embed_positions.weight", WISP_BASE_INIT_NORMAL, 2, 448, d,
                    0)) != 0)
        return rc;
    for (int l = 0; l < cfg->encoder_layers; l++) {
        char p[128], q[160];
        snprintf(p, sizeof p, "model.decoder.layers.%d", l);
        static const char *attn[] = {"self_attn", "encoder_attn"};
        for (int a = 0; a < 2; a++) {
            snprintf(q, sizeof q, "%s.%s", p, attn[a]);
            if ((rc = s_attention(c, q, d)) != 0)
                return rc;
            snprintf(q, sizeof q, "%s.%s_layer_norm", p, attn[a]);
            if ((rc = s_layernorm(c, q, d)) != 0)
                return rc;
        }
        snprintf(q, sizeof q, "%s.fc1", p);
        if ((rc = s_linear(c, q, f, d, 1)) != 0)
            return rc;
        snprintf(q, sizeof q, "%s.fc2", p);
        if ((rc = s_linear(c, q, d, f, 1)) != 0)
            return rc;
        snprintf(q, sizeof q, "%s.final_layer_norm", p);
        if ((rc = s_layernorm(c, q, d)) != 0)
            return rc;
    }
    return s_layernorm(c, "model.decoder.layer_norm", d);
}

static int s_parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!s[0] || *end || errno || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int s_parse_args(int argc, char **argv, s_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->dtype = WISP_DT_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            s_usage(stdout);
            return 1;
        } else if (strcmp(a, "--with-decoder") == 0) {
            o->with_decoder = 1;
        } else if (strcmp(a, "--force") == 0) {
            o->force = 1;
        } else if (!v) {
            fprintf(stderr, "wisp init-model: %s needs a value (or is unknown; see --help)\n", a);
            return -1;
        } else if (strcmp(a, "--size") == 0) {
            o->size = v, i++;
        } else if (strcmp(a, "--config") == 0) {
            o->config_path = v, i++;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            o->out_dir = v, i++;
        } else if (strcmp(a, "--dtype") == 0) {
            i++;
            if (strcmp(v, "f32") == 0)
                o->dtype = WISP_DT_F32;
            else if (strcmp(v, "f16") == 0)
                o->dtype = WISP_DT_F16;
            else if (strcmp(v, "bf16") == 0)
                o->dtype = WISP_DT_BF16;
            else {
                fprintf(stderr, "wisp init-model: --dtype must be f32, f16 or bf16 (got '%s')\n",
                        v);
                return -1;
            }
        } else if (strcmp(a, "--seed") == 0) {
            i++;
            if (s_parse_u64(v, &o->seed) != 0) {
                fprintf(stderr,
                        "wisp init-model: --seed must be a non-negative integer (got '%s')\n", v);
                return -1;
            }
        } else if (strcmp(a, "--num-labels") == 0) {
            i++;
            uint64_t k;
            if (s_parse_u64(v, &k) != 0 || k < 1 || k > 1000000) {
                fprintf(stderr,
                        "wisp init-model: --num-labels must be a positive integer (got '%s')\n", v);
                return -1;
            }
            o->num_labels = (int)k;
        } else if (strcmp(a, "--init-std") == 0) {
            i++;
            char *end = NULL;
            double x = strtod(v, &end);
            if (!v[0] || *end || !(x > 0.0 && x <= 10.0)) {
                fprintf(stderr,
                        "wisp init-model: --init-std must be a number in (0, 10] (got '%s')\n", v);
                return -1;
            }
            o->init_std = x;
        } else {
            fprintf(stderr, "wisp init-model: unknown option '%s' (see --help)\n", a);
            return -1;
        }
    }
    if (!o->out_dir || (!o->size == !o->config_path)) {
        fprintf(
            stderr,
            "wisp init-model: need -o DIR and exactly one of --size or --config (see --help)\n");
        return -1;
    }
    return 0;
}

/* Replaces the labels with LABEL_0..LABEL_{k-1}. */
static int s_set_labels(wisp_whisper_config_t *cfg, int k)
{
    char **labels = calloc((size_t)k, sizeof *labels);
    if (!labels)
        return WISP_ERR_NOMEM;
    for (int i = 0; i < k; i++) {
        char name[32];
        snprintf(name, sizeof name, "LABEL_%d", i);
        labels[i] = strdup(name);
        if (!labels[i]) {
            for (int j = 0; j < i; j++)
                free(labels[j]);
            free(labels);
            return WISP_ERR_NOMEM;
        }
    }
    wisp_whisper_config_free(cfg);
    cfg->id2label = labels;
    cfg->num_labels = k;
    return 0;
}

int wisp_cmd_init_model(int argc, char **argv)
{
    s_opts_t o;
    int pr = s_parse_args(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? WISP_EXIT_OK : WISP_EXIT_USAGE;

    int exit_code = WISP_EXIT_FAILURE;
    wisp_error_t err = {0};
    wisp_whisper_config_t cfg = {0};
    cJSON *json = NULL;
    s_ctx_t c = {0};
    c.o = &o;
    double t0 = wisp_now();
    char st_path[4096], cfg_path[4096];

    int rc;
    double init_std = 0.02; /* transformers' WhisperConfig default */
    if (o.size) {
        rc = wisp_whisper_config_preset(&cfg, o.size, &err);
    } else {
        /* inline JSON: --config '{"model_type": "whisper", "d_model": 64, ...}' */
        int is_inline = o.config_path[0] == '{';
        const char *where = is_inline ? "--config" : o.config_path;
        cJSON *src = NULL;
        rc = is_inline ? wisp_json_parse(o.config_path, strlen(o.config_path), where, &src, &err)
                       : wisp_json_load(o.config_path, &src, &err);
        if (rc != 0 && is_inline)
            rc = WISP_ERR_ARG; /* a usage error (the message names the line and column) */
        else if (rc == 0)
            rc = wisp_whisper_config_parse(&cfg, src, where, &err);
        const cJSON *std_item = src ? cJSON_GetObjectItemCaseSensitive(src, "init_std") : NULL;
        if (rc == 0 && std_item) {
            if (!cJSON_IsNumber(std_item) ||
                !(std_item->valuedouble > 0.0 && std_item->valuedouble <= 10.0))
                rc = wisp_error_set(&err, WISP_ERR_ARG,
                                    "%s: 'init_std' must be a number in (0, 10]", where);
            else
                init_std = std_item->valuedouble;
        }
        cJSON_Delete(src);
    }
    if (rc != 0) {
        if (rc == WISP_ERR_ARG)
            exit_code = WISP_EXIT_USAGE;
        goto done;
    }
    if (o.init_std > 0.0)
        init_std = o.init_std;
    c.std = (float)init_std;
    if (cfg.d_model % 2 != 0) {
        wisp_error_set(&err, WISP_ERR_UNSUPPORTED,
                       "init-model: d_model %d must be even (sinusoid positions)", cfg.d_model);
        goto done;
    }
    if (o.num_labels > 0 && s_set_labels(&cfg, o.num_labels) != 0) {
        wisp_error_set(&err, WISP_ERR_NOMEM, "init-model: out of memory");
        goto done;
    }
    if (wisp_path_join(st_path, sizeof st_path, o.out_dir, "model.safetensors") != 0 ||
        wisp_path_join(cfg_path, sizeof cfg_path, o.out_dir, "config.json") != 0) {
        wisp_error_set(&err, WISP_ERR_ARG, "%s: path too long", o.out_dir);
        goto done;
    }
    struct stat sb;
    if (!o.force && (stat(st_path, &sb) == 0 || stat(cfg_path, &sb) == 0)) {
        wisp_error_set(&err, WISP_ERR_ARG,
                       "%s: already holds a checkpoint (use --force to overwrite)", o.out_dir);
        exit_code = WISP_EXIT_USAGE;
        goto done;
    }
    if (wisp_mkdir_p(o.out_dir, &err) != 0)
        goto done;
    c.w = wisp_st_writer_new();
    if (!c.w) {
        wisp_error_set(&err, WISP_ERR_NOMEM, "init-model: out of memory");
        goto done;
    }
    char seed_txt[32];
    snprintf(seed_txt, sizeof seed_txt, "%llu", (unsigned long long)o.seed);
    wisp_st_writer_add_meta(c.w, "wisp_init_seed", seed_txt);
    if (s_encoder(&c, &cfg) != 0 || (o.with_decoder && s_decoder(&c, &cfg) != 0)) {
        wisp_error_set(&err, WISP_ERR_NOMEM,
                       "init-model: could not build the tensors (out of memory?)");
        goto done;
    }
    json = wisp_whisper_config_to_json(&cfg);
    if (!json) {
        wisp_error_set(&err, WISP_ERR_NOMEM, "init-model: out of memory");
        goto done;
    }
    const char *dt = o.dtype == WISP_DT_F16    ? "float16"
                     : o.dtype == WISP_DT_BF16 ? "bfloat16"
                                               : "float32";
    cJSON_ReplaceItemInObjectCaseSensitive(json, "torch_dtype", cJSON_CreateString(dt));
    cJSON_ReplaceItemInObjectCaseSensitive(json, "init_std", cJSON_CreateNumber(init_std));
    /* weights first: a config.json without its weights would look like a checkpoint */
    if (wisp_st_writer_save(c.w, st_path, &err) != 0 || wisp_json_save(cfg_path, json, &err) != 0)
        goto done;
    printf("wrote %s: %d tensors, %lld parameters (%s), d_model=%d layers=%d heads=%d ffn=%d "
           "mels=%d%s, "
           "init_std=%g, seed=%llu, %.1f s\n",
           o.out_dir, c.ntensors, (long long)c.nparams, wisp_dtype_name(o.dtype), cfg.d_model,
           cfg.encoder_layers, cfg.encoder_attention_heads, cfg.encoder_ffn_dim, cfg.num_mel_bins,
           o.with_decoder ? ", with decoder" : ", encoder only", init_std,
           (unsigned long long)o.seed, wisp_now() - t0);
    exit_code = WISP_EXIT_OK;
done:
    if (exit_code != WISP_EXIT_OK && err.code)
        fprintf(stderr, "wisp init-model: %s\n", err.msg);
    cJSON_Delete(json);
    wisp_free(c.buf);
    wisp_st_writer_destroy(&c.w);
    wisp_whisper_config_free(&cfg);
    return exit_code;
}
