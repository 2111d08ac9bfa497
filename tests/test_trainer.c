/* Tests of jobs/trainer: the whole training step against PyTorch (train_ref.py), the
 * local loop (overfitting a synthetic set, bitwise resume, gradient dump), and the
 * contracts the distributed worker relies on (reduce hook, skipped files, data order). */
#include "testutil.h"

#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "cli/commands.h"
#include "audio/features.h"
#include "audio/windows.h"
#include "base/log.h"
#include "formats/st.h"
#include "train/metrics.h"
#include "train/schedule.h"
#include "train/trainer.h"
#include "base/util.h"

#include "train_fixtures.h"

static void s_opts(wisp_trainer_opts_t *o)
{
    wisp_trainer_default_opts(o);
    o->model_dir = s_model_dir();
    o->preset = "seq_bn";
    o->adapter_name = "wisp";
    o->num_labels = NLAB;
    o->proj_size = PROJ;
    o->weighted_layer_sum = 1;
    o->truncate = 1;
    o->max_frames = 2 * TPOS;
    o->micro_batch = 4;
    o->threads = 1;
}

static wisp_trainer_t *s_new(const wisp_trainer_opts_t *o)
{
    wisp_error_t e = {0};
    wisp_trainer_t *t = wisp_trainer_new(o, &e);
    if (!t)
        fail_msg("trainer: %s", e.msg);
    return t;
}

/* ---- synthetic audio: 4 classes of tones and noise ----------------------- */
#define N_CLIPS      16
#define CLIP_SAMPLES 3200 /* 0.2 s: 20 frames, T = 10 */

/* Class 0: 300 Hz tone, 1: 2 kHz tone, 2: loud noise, 3: faint noise; random phase,
 * amplitude and a little jitter per clip. */
static wisp_trainer_item_t *s_dataset(char paths[][1024])
{
    static wisp_trainer_item_t items[N_CLIPS];
    float x[CLIP_SAMPLES];
    wisp_rng_t r;
    wisp_rng_seed(&r, 1234);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/clips", wisp_test_tmpdir());
    assert_int_equal(wisp_mkdir_p(dir, NULL), WISP_OK);
    for (int i = 0; i < N_CLIPS; i++) {
        int c = i % 4;
        float amp = 0.3f + 0.4f * wisp_rng_uniform(&r);
        float phase = 6.2831853f * wisp_rng_uniform(&r);
        float f0 = (c == 0 ? 300.0f : 2000.0f) * (0.95f + 0.1f * wisp_rng_uniform(&r));
        for (int t = 0; t < CLIP_SAMPLES; t++) {
            float noise = 2.0f * wisp_rng_uniform(&r) - 1.0f;
            if (c < 2)
                x[t] = amp * sinf(6.2831853f * f0 * (float)t / 16000.0f + phase) + 0.01f * noise;
            else
                x[t] = (c == 2 ? amp : 0.02f * amp) * noise;
        }
        snprintf(paths[i], 1024, "%s/clip%02d_c%d.wav", dir, i, c);
        s_write_wav(paths[i], x, CLIP_SAMPLES);
        items[i].path = paths[i];
        items[i].label = c;
    }
    return items;
}

static char s_paths[N_CLIPS][1024];

/* ---- tests ------------------------------------------------------------------ */

/* Sets every trainable tensor to its generated value (train_ref.py's initial state). */
static void s_set_generated_trainables(wisp_model_t *m)
{
    float *p = wisp_model_params(m);
    for (int i = 0; i < wisp_model_num_param_tensors(m); i++) {
        const wisp_param_info_t *t = wisp_model_param_tensor(m, i);
        float scale, offset;
        s_gen_rule(t->name, t->ndim, t->shape, &scale, &offset);
        s_gen(t->name, p + t->offset, t->numel, scale, offset);
    }
}

/* Every trainable tensor against tests/data/train/<name>.params.safetensors, within
 * 1e-5 of the tensor's largest weight. */
static void s_compare_params(wisp_model_t *m, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/train/%s.params.safetensors", wisp_test_data_dir(), name);
    wisp_error_t e = {0};
    wisp_st_t *st = wisp_st_open(path, &e);
    if (!st)
        fail_msg("%s", e.msg);
    assert_int_equal(wisp_st_count(st), wisp_model_num_param_tensors(m));
    double worst = 0.0;
    for (int i = 0; i < wisp_model_num_param_tensors(m); i++) {
        const wisp_param_info_t *p = wisp_model_param_tensor(m, i);
        const float *want;
        if (wisp_st_get_f32(st, p->name, p->ndim, p->shape, &want, &e) != WISP_OK)
            fail_msg("%s", e.msg);
        double scale = wisp_max_abs(want, p->numel);
        double rel = wisp_max_abs_diff(wisp_model_params(m) + p->offset, want, p->numel) / scale;
        worst = rel > worst ? rel : worst;
        wisp_assert_close(wisp_model_params(m) + p->offset, want, p->numel, 1e-5 * scale, 0.0,
                          p->name);
    }
    print_message("%s: weights within %.2g of each tensor's max magnitude\n", name, worst);
    wisp_st_destroy(&st);
}

static void test_five_adamw_steps_follow_the_pytorch_run(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    o.micro_batch = 3;
    o.lr = 1e-2;
    o.clip = 0.5;
    o.schedule = WISP_SCHEDULE_LINEAR;
    o.total_steps = 5;
    wisp_trainer_t *t = s_new(&o);
    wisp_model_t *m = wisp_trainer_model(t);
    s_set_generated_trainables(m);

    char path[1024];
    snprintf(path, sizeof path, "%s/train/five_steps.f32", wisp_test_data_dir());
    size_t count;
    float *gold = wisp_test_read_f32(path, &count);
    assert_int_equal(count, 10);
    float mel[3 * NMELS * 20];
    for (int s = 0; s < 5; s++) {
        char name[64];
        snprintf(name, sizeof name, "train.mel.%d", s);
        s_gen(name, mel, 3 * NMELS * 20, 1.0f, 0.0f);
        int labels[3] = {s % 4, (s + 2) % 4, (s + 4) % 4};
        wisp_trainer_stats_t st;
        wisp_error_t e = {0};
        assert_int_equal(wisp_trainer_compute_grads_mel(t, mel, 3, 20, labels, &st, &e), WISP_OK);
        wisp_trainer_apply(t, &st);
        float loss = (float)st.loss, norm = (float)st.grad_norm;
        snprintf(name, sizeof name, "loss of step %d", s + 1);
        wisp_assert_close(&loss, gold + s, 1, 0.0, 1e-4, name);
        snprintf(name, sizeof name, "grad norm of step %d", s + 1);
        wisp_assert_close(&norm, gold + 5 + s, 1, 0.0, 1e-4, name);
        assert_int_equal(st.step, s + 1);
        assert_int_equal(st.items, 3);
    }
    free(gold);

    s_compare_params(m, "five_steps");
    wisp_trainer_destroy(&t);
    assert_null(t);
}

static void test_mixed_lengths_and_class_weights_follow_the_pytorch_run(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    o.preset = "lora";
    o.weighted_layer_sum = 0;
    o.micro_batch = 2; /* the 3 long clips take two calls, the 2 short ones one */
    o.lr = 5e-3;
    o.adamw.weight_decay = 0.1;
    o.clip = 0.0;
    o.schedule = WISP_SCHEDULE_COSINE;
    o.warmup_steps = 1;
    o.total_steps = 3;
    const float cw[NLAB] = {1.0f, 0.5f, 2.0f, 1.5f};
    o.class_weights = cw;
    wisp_trainer_t *t = s_new(&o);
    wisp_model_t *m = wisp_trainer_model(t);
    s_set_generated_trainables(m);
    char path[1024];
    snprintf(path, sizeof path, "%s/train/mixed.f32", wisp_test_data_dir());
    size_t count;
    float *gold = wisp_test_read_f32(path, &count);
    assert_int_equal(count, 6);
    float a[3 * NMELS * 20], b[2 * NMELS * 12];
    for (int s = 0; s < 3; s++) {
        char name[64];
        snprintf(name, sizeof name, "mixed.mel.%d.a", s);
        s_gen(name, a, sizeof a / sizeof *a, 1.0f, 0.0f);
        snprintf(name, sizeof name, "mixed.mel.%d.b", s);
        s_gen(name, b, sizeof b / sizeof *b, 1.0f, 0.0f);
        /* Interleaved lengths: the trainer groups them itself. */
        const float *mels[5] = {a, b, a + NMELS * 20, b + NMELS * 12, a + 2 * NMELS * 20};
        int frames[5] = {20, 12, 20, 12, 20};
        int labels[5] = {s % 4, (s + 3) % 4, (s + 1) % 4, s % 4, (s + 2) % 4};
        wisp_trainer_stats_t st;
        wisp_error_t e = {0};
        assert_int_equal(wisp_trainer_compute_grads_clips(t, mels, frames, labels, 5, &st, &e),
                         WISP_OK);
        wisp_trainer_apply(t, &st);
        float loss = (float)st.loss, norm = (float)st.grad_norm;
        wisp_assert_close(&loss, gold + s, 1, 0.0, 1e-4, "loss");
        wisp_assert_close(&norm, gold + 3 + s, 1, 0.0, 1e-4, "grad norm");
    }
    free(gold);
    s_compare_params(m, "mixed");
    wisp_trainer_destroy(&t);
}

static int s_double_reduce(void *ctx, float *data, size_t n, double *scalars, int ns)
{
    int *calls = ctx;
    (*calls)++;
    for (size_t i = 0; i < n; i++)
        data[i] *= 2.0f;
    for (int i = 0; i < ns; i++)
        scalars[i] *= 2.0;
    return WISP_OK;
}

static void test_reduce_hook_sees_weights_then_gradients_like_two_equal_ranks(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    wisp_trainer_t *a = s_new(&o), *b = s_new(&o);
    int calls = 0;
    wisp_trainer_set_reduce(b, s_double_reduce, &calls);
    wisp_trainer_stats_t sa, sb;
    wisp_error_t e = {0};
    assert_int_equal(wisp_trainer_compute_grads(a, s_dataset(s_paths), 4, &sa, &e), WISP_OK);
    assert_int_equal(wisp_trainer_compute_grads(b, s_dataset(s_paths), 4, &sb, &e), WISP_OK);
    assert_int_equal(calls, 2);
    /* Two identical ranks: the doubled sums give the same mean gradient and loss. */
    size_t n = wisp_model_num_params(wisp_trainer_model(a));
    wisp_assert_close(wisp_model_grads(wisp_trainer_model(b)),
                      wisp_model_grads(wisp_trainer_model(a)), n, 1e-7, 1e-5, "grads");
    assert_true(fabs(sa.loss - sb.loss) < 1e-6 * fabs(sa.loss));
    assert_int_equal(sb.items, 2 * sa.items);
    assert_true(wisp_max_abs(wisp_model_grads(wisp_trainer_model(a)), n) > 0.0);
    wisp_trainer_destroy(&a);
    wisp_trainer_destroy(&b);
}

/* A pretend second process for the fixed-order mode: the gather hook of one trainer
 * returns its own records placed among records another trainer made, as the MPI
 * gather of two ranks would. Call 0 gathers weights, call 1 per-item gradients. */
typedef struct {
    int call;
    int first;                     /* this process is rank 0 (else rank 1) */
    const unsigned char *other[2]; /* the other rank's records per call */
    size_t n_other[2];
    unsigned char *out;       /* the concatenation handed back */
    unsigned char *mine_copy; /* call 1: this process's records */
    size_t n_mine_copy;
} s_fake_rank_t;

static int s_fake_gather(void *ctx, const void *mine, size_t n_mine, size_t rec, const void **all,
                         size_t *n_all)
{
    s_fake_rank_t *f = ctx;
    int k = f->call++;
    assert_true(k < 2);
    size_t n = n_mine + f->n_other[k];
    free(f->out);
    f->out = malloc(n * rec + 1);
    assert_non_null(f->out);
    size_t off_mine = f->first ? 0 : f->n_other[k] * rec;
    size_t off_other = f->first ? n_mine * rec : 0;
    memcpy(f->out + off_mine, mine, n_mine * rec);
    if (f->n_other[k])
        memcpy(f->out + off_other, f->other[k], f->n_other[k] * rec);
    if (k == 1) {
        f->mine_copy = malloc(n_mine * rec + 1);
        assert_non_null(f->mine_copy);
        memcpy(f->mine_copy, mine, n_mine * rec);
        f->n_mine_copy = n_mine;
    }
    *all = f->out;
    *n_all = n;
    return WISP_OK;
}

static void test_fixed_order_mode_gives_the_same_bits_for_any_split_and_micro_batch(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    const float cw[NLAB] = {1.0f, 0.5f, 2.0f, 1.5f};
    o.class_weights = cw;
    float a[3 * NMELS * 20], b[2 * NMELS * 12];
    s_gen("fixed.a", a, sizeof a / sizeof *a, 1.0f, 0.0f);
    s_gen("fixed.b", b, sizeof b / sizeof *b, 1.0f, 0.0f);
    const float *mels[5] = {a, b, a + NMELS * 20, b + NMELS * 12, a + 2 * NMELS * 20};
    int frames[5] = {20, 12, 20, 12, 20};
    int labels[5] = {0, 3, 1, 2, 2};
    wisp_trainer_stats_t st1, st, sd;
    wisp_error_t e = {0};

    /* one process, micro_batch 4 (ignored in this mode) */
    wisp_trainer_t *one = s_new(&o);
    wisp_trainer_set_per_item(one, NULL, NULL);
    assert_int_equal(wisp_trainer_compute_grads_clips(one, mels, frames, labels, 5, &st1, &e),
                     WISP_OK);
    /* the default mode agrees to fp32 tolerance */
    wisp_trainer_t *def = s_new(&o);
    assert_int_equal(wisp_trainer_compute_grads_clips(def, mels, frames, labels, 5, &sd, &e),
                     WISP_OK);
    size_t n = wisp_model_num_params(wisp_trainer_model(one));
    const float *g1 = wisp_model_grads(wisp_trainer_model(one));
    wisp_assert_close(g1, wisp_model_grads(wisp_trainer_model(def)), n, 1e-7, 1e-5, "grads");
    assert_true(wisp_max_abs(g1, n) > 0.0);
    assert_true(fabs(st1.loss - sd.loss) < 1e-6 * fabs(sd.loss));
    assert_int_equal(st1.items, 5);

    /* two "ranks": items 0-1 and 2-4, micro_batch 1; rank 1 runs first for its records */
    o.micro_batch = 1;
    double w0[4] = {cw[labels[0]], 0, cw[labels[1]], 0};
    double w1[6] = {cw[labels[2]], 0, cw[labels[3]], 0, cw[labels[4]], 0};
    s_fake_rank_t r1 = {.first = 0, .other = {(unsigned char *)w0, NULL}, .n_other = {2, 0}};
    wisp_trainer_t *t1 = s_new(&o);
    wisp_trainer_set_per_item(t1, s_fake_gather, &r1);
    assert_int_equal(
        wisp_trainer_compute_grads_clips(t1, mels + 2, frames + 2, labels + 2, 3, &st, &e),
        WISP_OK);
    assert_int_equal(r1.n_mine_copy, 3);
    s_fake_rank_t r0 = {
        .first = 1, .other = {(unsigned char *)w1, r1.mine_copy}, .n_other = {3, 3}};
    wisp_trainer_t *t0 = s_new(&o);
    wisp_trainer_set_per_item(t0, s_fake_gather, &r0);
    assert_int_equal(wisp_trainer_compute_grads_clips(t0, mels, frames, labels, 2, &st, &e),
                     WISP_OK);
    assert_int_equal(r0.call, 2);
    assert_int_equal(st.items, 5);
    assert_memory_equal(wisp_model_grads(wisp_trainer_model(t0)), g1, n * sizeof(float));
    assert_memory_equal(&st.loss, &st1.loss, sizeof st.loss);
    wisp_trainer_apply(t0, &st);
    wisp_trainer_apply(one, &st1);
    assert_memory_equal(wisp_model_params(wisp_trainer_model(t0)),
                        wisp_model_params(wisp_trainer_model(one)), n * sizeof(float));
    free(r0.out);
    free(r0.mine_copy);
    free(r1.out);
    free(r1.mine_copy);
    wisp_trainer_destroy(&one);
    wisp_trainer_destroy(&def);
    wisp_trainer_destroy(&t0);
    wisp_trainer_destroy(&t1);
}

static void test_unreadable_files_are_skipped_and_counted(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    wisp_trainer_t *t = s_new(&o);
    wisp_trainer_item_t items[3];
    memcpy(items, s_dataset(s_paths), 2 * sizeof items[0]);
    char bad[1024];
    snprintf(bad, sizeof bad, "%s/not_audio.wav", wisp_test_tmpdir());
    FILE *f = fopen(bad, "w");
    fputs("this is not audio", f);
    fclose(f);
    items[2].path = bad;
    items[2].label = 1;
    wisp_trainer_stats_t st;
    wisp_error_t e = {0};
    wisp_log_set_level(WISP_LOG_ERROR);
    assert_int_equal(wisp_trainer_compute_grads(t, items, 3, &st, &e), WISP_OK);
    assert_int_equal(st.items, 2);
    assert_int_equal(st.failed, 1);
    /* Nothing usable at all is an error, not a silent zero step. */
    items[0] = items[2];
    assert_int_equal(wisp_trainer_compute_grads(t, items, 1, &st, &e), WISP_ERR_NODATA);
    int nf;
    const wisp_trainer_failure_t *fl = wisp_trainer_failures(t, &nf);
    assert_int_equal(nf, 1);
    assert_int_equal(fl[0].id, items[0].id);
    wisp_log_set_level(WISP_LOG_WARN);
    wisp_trainer_destroy(&t);
}

/* n items that are not audio. */
static wisp_trainer_item_t *s_bad_items(int n)
{
    static wisp_trainer_item_t items[8];
    static char paths[8][1024];
    for (int i = 0; i < n && i < 8; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/bad%d.wav", wisp_test_tmpdir(), i);
        FILE *f = fopen(paths[i], "w");
        fputs("not audio", f);
        fclose(f);
        items[i].path = paths[i];
        items[i].label = i % NLAB;
        items[i].id = i;
    }
    return items;
}

/* Before the fix the local loop `continue`d past the step counter and the stop flag on
 * a batch without a usable clip: this run never ended. */
static void test_a_run_where_no_clip_can_be_used_ends_naming_the_manifest_and_failures(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    wisp_trainer_t *t = s_new(&o);
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/nodata_run", wisp_test_tmpdir());
    ro.outdir = dir;
    ro.epochs = 1000000;
    ro.batch = 2;
    ro.train_name = "my_train.csv";
    wisp_error_t e = {0};
    wisp_log_set_level(WISP_LOG_ERROR);
    assert_int_equal(wisp_trainer_run(t, s_bad_items(5), 5, NULL, 0, &ro, &e), WISP_ERR_NODATA);
    print_message("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "my_train.csv"));
    assert_non_null(strstr(e.msg, "bad0.wav"));
    assert_non_null(strstr(e.msg, "5 of 5 clips failed"));
    /* A stop request is honoured while batches are being skipped. */
    volatile int stop = 1;
    ro.stop = &stop;
    wisp_error_clear(&e);
    assert_int_equal(wisp_trainer_run(t, s_bad_items(5), 5, NULL, 0, &ro, &e),
                     WISP_ERR_INTERRUPTED);
    wisp_log_set_level(WISP_LOG_WARN);
    wisp_trainer_destroy(&t);
}

/* Counts the metrics lines of (type, step) in path. */
static int s_count_lines(const char *path, const char *type, int step)
{
    char line[1024], want[96];
    snprintf(want, sizeof want, "{\"type\":\"%s\",\"step\":%d,", type, step);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strncmp(line, want, strlen(want)) == 0;
    if (f)
        fclose(f);
    return n;
}

/* A process that wrote a checkpoint but died before its metrics lines reached the log
 * (the distributed case: the coordinator had dropped the world) lost them for good:
 * the resume rewound the log to the checkpoint. Now the checkpoint carries them.
 * And an evaluation redone after a resume at an epoch end is not logged twice. */
static void test_metrics_lines_survive_a_lost_log_and_a_resume_at_an_epoch_end(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/metrics_run", wisp_test_tmpdir());
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    wisp_trainer_item_t *items = s_dataset(s_paths);
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = dir;
    ro.epochs = 2;
    ro.batch = 8; /* 2 steps per epoch, 4 in all */
    ro.checkpoint_every = 2;
    ro.stop_after = 2;
    wisp_error_t e = {0};
    wisp_trainer_t *t = s_new(&o);
    assert_int_equal(wisp_trainer_run(t, items, N_CLIPS, items, 4, &ro, &e), WISP_OK);
    wisp_trainer_destroy(&t);
    assert_int_equal(s_count_lines(path, "step", 2), 1);
    /* The log loses everything (as if its writer never saw the steps). */
    FILE *f = fopen(path, "w");
    fclose(f);
    ro.stop_after = -1;
    ro.resume = 1;
    t = s_new(&o);
    assert_int_equal(wisp_trainer_run(t, items, N_CLIPS, items, 4, &ro, &e), WISP_OK);
    wisp_trainer_destroy(&t);
    for (int k = 1; k <= 4; k++)
        assert_int_equal(s_count_lines(path, "step", k), 1);
    assert_int_equal(s_count_lines(path, "eval", 2), 1); /* epoch 0's end, redone once */
    assert_int_equal(s_count_lines(path, "eval", 4), 1); /* the final one */
}

/* A worker's pending lines keep a tail past each checkpoint (see metrics.h), and a
 * resume merges a checkpoint's lines into the log without duplicates. */
static void test_metrics_pending_lines_keep_their_tail_and_merge_without_duplicates(void **state)
{
    (void)state;
    wisp_train_metrics_t m;
    wisp_error_t e = {0};
    assert_int_equal(wisp_train_metrics_open(&m, NULL, 0, NULL, 0, &e), WISP_OK);
    m.keep_tail = 2;
    wisp_trainer_stats_t st = {0};
    for (st.step = 1; st.step <= 3; st.step++)
        wisp_train_metrics_step(&m, &st, 0);
    wisp_train_metrics_saved(&m);
    assert_non_null(strstr(m.pending, "\"step\":2,"));
    assert_non_null(strstr(m.pending, "\"step\":3,"));
    assert_null(strstr(m.pending, "\"step\":1,"));
    /* The log has step 1 only; the checkpoint of step 3 brings 2 and 3 (and 3's eval line,
     * an evaluation of step 3 that a resume at 3 redoes, is not kept). */
    char path[1024];
    snprintf(path, sizeof path, "%s/merge.jsonl", wisp_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("{\"type\":\"step\",\"step\":1,\"epoch\":0}\n", f);
    fclose(f);
    wisp_train_metrics_eval(&m, 3, 0, 1.0, 0.5);
    wisp_train_metrics_t r;
    assert_int_equal(wisp_train_metrics_open(&r, path, 3, m.pending, m.len, &e), WISP_OK);
    wisp_train_metrics_close(&r);
    for (int k = 1; k <= 3; k++)
        assert_int_equal(s_count_lines(path, "step", k), 1);
    assert_int_equal(s_count_lines(path, "eval", 3), 0);
    wisp_train_metrics_close(&m);
}

/* keep_best writes OUTDIR/best at each new best; patience ends the run early. */
static void test_patience_stops_early_and_keep_best_writes_the_best_weights(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    o.lr = 0.0; /* val_acc never improves after the first evaluation */
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/best_run", wisp_test_tmpdir());
    wisp_trainer_item_t *items = s_dataset(s_paths);
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = dir;
    ro.epochs = 50;
    ro.batch = 8;
    ro.checkpoint_every = 2;
    ro.keep_best = 1;
    ro.patience = 2;
    wisp_error_t e = {0};
    wisp_trainer_t *t = s_new(&o);
    assert_int_equal(wisp_trainer_run(t, items, N_CLIPS, items, 4, &ro, &e), WISP_OK);
    /* evaluations after steps 2 (best), 4, 6 (patience spent): step 7 ends the run */
    assert_int_equal(wisp_trainer_steps(t), 7);
    wisp_trainer_destroy(&t);
    snprintf(path, sizeof path, "%s/best/best.json", dir);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/best/head/head_config.json", dir);
    assert_int_equal(access(path, R_OK), 0);
}

/* The one schedule of the local loop and the distributed job: 10 items, batches of 4
 * (3 steps an epoch, the last of 2), 2 epochs, checkpoints every 2 steps. */
static void test_schedule_walks_epochs_with_evaluations_checkpoints_and_a_final_entry(void **state)
{
    (void)state;
    wisp_sched_t s;
    wisp_sched_step_t e;
    assert_int_equal(wisp_sched_init(&s, 10, 4, 2, -1, 2, 7, NULL), WISP_OK);
    assert_int_equal(s.total, 6);
    static const int want_k[6] = {4, 4, 2, 4, 4, 2};
    int perm[10], seen = 0;
    for (long step = 1; step <= 6; step++) {
        assert_int_equal(wisp_sched_next(&s, 1, &e), 1);
        assert_int_equal(e.step, step);
        assert_int_equal(e.k, want_k[step - 1]);
        assert_int_equal(e.epoch, step > 3);
        assert_int_equal(e.eval_before, step == 4); /* after epoch 0 */
        assert_int_equal(e.checkpoint, step % 2 == 0);
        assert_false(e.final);
        if (step == 1)
            wisp_trainer_epoch_order(7, 0, 10, perm);
        if (step == 4)
            wisp_trainer_epoch_order(7, 1, 10, perm);
        int first = step <= 3 ? (int)(step - 1) * 4 : (int)(step - 4) * 4;
        for (int i = 0; i < e.k; i++)
            seen += e.ids[i] == perm[first + i];
    }
    assert_int_equal(seen, 20);
    assert_int_equal(wisp_sched_next(&s, 1, &e), 1);
    assert_true(e.final && e.eval_before && e.k == 0 && e.step == 7);
    assert_int_equal(wisp_sched_next(&s, 1, &e), 0);
    /* A resume after step 3 (the end of epoch 0) evaluates before step 4. */
    wisp_sched_seek(&s, 3, 0, 10);
    assert_int_equal(wisp_sched_next(&s, 1, &e), 1);
    assert_true(e.step == 4 && e.eval_before && e.epoch == 1);
    wisp_sched_free(&s);
}

static void test_epoch_order_is_a_seeded_permutation(void **state)
{
    (void)state;
    int a[50], b[50], c[50], seen[50] = {0};
    wisp_trainer_epoch_order(7, 0, 50, a);
    wisp_trainer_epoch_order(7, 0, 50, b);
    wisp_trainer_epoch_order(7, 1, 50, c);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    for (int i = 0; i < 50; i++)
        seen[a[i]]++;
    for (int i = 0; i < 50; i++)
        assert_int_equal(seen[i], 1);
}

static void s_run(const wisp_trainer_opts_t *o, const char *outdir, long steps, long stop_after,
                  int resume, wisp_trainer_t **keep)
{
    wisp_trainer_t *t = s_new(o);
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = outdir;
    ro.steps = steps;
    ro.batch = 5; /* 16 clips: 4 steps per epoch, the last one partial */
    ro.stop_after = stop_after;
    ro.resume = resume;
    wisp_error_t e = {0};
    if (wisp_trainer_run(t, s_dataset(s_paths), N_CLIPS, NULL, 0, &ro, &e) != WISP_OK)
        fail_msg("run: %s", e.msg);
    if (keep)
        *keep = t;
    else
        wisp_trainer_destroy(&t);
}

static void test_resuming_after_step_k_gives_bitwise_identical_weights(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    o.lr = 5e-3;
    o.schedule = WISP_SCHEDULE_COSINE;
    o.warmup_steps = 2;
    char d1[1024], d2[1024];
    snprintf(d1, sizeof d1, "%s/run_full", wisp_test_tmpdir());
    snprintf(d2, sizeof d2, "%s/run_resumed", wisp_test_tmpdir());
    wisp_trainer_t *full = NULL, *resumed = NULL;
    s_run(&o, d1, 7, -1, 0, &full);
    s_run(&o, d2, 7, 3, 0, NULL); /* stops after step 3, mid-epoch */
    /* A run killed after logging steps its checkpoint does not hold leaves lines the
     * resumed run must drop (it redoes those steps). */
    char path[1200], line[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", d2);
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("{\"type\":\"step\",\"step\":4,\"epoch\":0,\"loss\":9}\n"
          "{\"type\":\"step\",\"step\":5,\"epoch\":1,\"loss\":9}\n",
          f);
    fclose(f);
    s_run(&o, d2, 7, -1, 1, &resumed);
    wisp_model_t *a = wisp_trainer_model(full), *b = wisp_trainer_model(resumed);
    size_t n = wisp_model_num_params(a);
    assert_int_equal(wisp_trainer_steps(full), 7);
    assert_int_equal(wisp_trainer_steps(resumed), 7);
    assert_memory_equal(wisp_model_params(a), wisp_model_params(b), n * sizeof(float));
    assert_memory_equal(wisp_adamw_m(wisp_trainer_optimizer(full)),
                        wisp_adamw_m(wisp_trainer_optimizer(resumed)), n * sizeof(float));
    /* The metrics log holds steps 1..7 once each: 3 before the stop, 4 after. */
    f = fopen(path, "r");
    assert_non_null(f);
    int steps = 0, seen[8] = {0};
    while (fgets(line, sizeof line, f)) {
        const char *st = strstr(line, "\"step\":");
        if (!strstr(line, "\"type\":\"step\"") || !st)
            continue;
        int k = atoi(st + 7);
        assert_true(k >= 1 && k <= 7);
        seen[k]++;
        steps++;
        assert_null(strstr(line, "\"loss\":9}")); /* the killed run's lines are gone */
    }
    fclose(f);
    assert_int_equal(steps, 7);
    for (int k = 1; k <= 7; k++)
        assert_int_equal(seen[k], 1);
    /* A resume with other settings is refused, naming the checkpoint. */
    o.lr = 1e-3;
    wisp_trainer_t *t = s_new(&o);
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = d2;
    ro.steps = 9;
    ro.batch = 5;
    ro.resume = 1;
    wisp_error_t e = {0};
    assert_int_equal(wisp_trainer_run(t, s_dataset(s_paths), N_CLIPS, NULL, 0, &ro, &e),
                     WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "state.json"));
    wisp_trainer_destroy(&t);
    wisp_trainer_destroy(&full);
    wisp_trainer_destroy(&resumed);
}

static void test_dump_grads_with_zero_steps_writes_the_mean_gradient_only(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/dump_run", wisp_test_tmpdir());
    snprintf(path, sizeof path, "%s/grads.safetensors", wisp_test_tmpdir());
    wisp_trainer_t *t = s_new(&o);
    size_t n = wisp_model_num_params(wisp_trainer_model(t));
    float *before = malloc(n * sizeof(float));
    memcpy(before, wisp_model_params(wisp_trainer_model(t)), n * sizeof(float));
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = dir;
    ro.steps = 0;
    ro.batch = 4;
    ro.dump_grads = path;
    wisp_error_t e = {0};
    wisp_trainer_item_t *items = s_dataset(s_paths);
    assert_int_equal(wisp_trainer_run(t, items, N_CLIPS, NULL, 0, &ro, &e), WISP_OK);
    assert_memory_equal(before, wisp_model_params(wisp_trainer_model(t)), n * sizeof(float));
    assert_int_equal(wisp_trainer_steps(t), 0);
    /* Same batch (epoch 0 order, first 4) through compute_grads gives the same file. */
    int perm[N_CLIPS];
    wisp_trainer_item_t batch[4];
    wisp_trainer_epoch_order(o.seed, 0, N_CLIPS, perm);
    for (int i = 0; i < 4; i++)
        batch[i] = items[perm[i]];
    wisp_trainer_stats_t st;
    assert_int_equal(wisp_trainer_compute_grads(t, batch, 4, &st, &e), WISP_OK);
    wisp_st_t *f = wisp_st_open(path, &e);
    assert_non_null(f);
    wisp_model_t *m = wisp_trainer_model(t);
    assert_int_equal(wisp_st_count(f), wisp_model_num_param_tensors(m));
    for (int i = 0; i < wisp_model_num_param_tensors(m); i++) {
        const wisp_param_info_t *p = wisp_model_param_tensor(m, i);
        const float *g;
        assert_int_equal(wisp_st_get_f32(f, p->name, p->ndim, p->shape, &g, &e), WISP_OK);
        wisp_assert_close(g, wisp_model_grads(m) + p->offset, p->numel, 0.0, 0.0, p->name);
    }
    wisp_st_destroy(&f);
    free(before);
    wisp_trainer_destroy(&t);
}

static void test_sixteen_synthetic_clips_are_overfit_to_full_accuracy(void **state)
{
    (void)state;
    wisp_trainer_opts_t o;
    s_opts(&o);
    o.lr = 1e-2;
    o.micro_batch = 16;
    wisp_trainer_t *t = s_new(&o);
    wisp_trainer_item_t *items = s_dataset(s_paths);
    double acc = 0.0, acc0 = -1.0;
    long steps = 0;
    wisp_error_t e = {0};
    /* Rounds of 5 steps until every clip is classified right (at most 300 steps). */
    for (;;) {
        double loss = 0, w = 0;
        long correct = 0, count = 0, failed = 0;
        assert_int_equal(
            wisp_trainer_eval(t, items, N_CLIPS, &loss, &w, &correct, &count, &failed, &e),
            WISP_OK);
        assert_int_equal(count, N_CLIPS);
        acc = (double)correct / (double)count;
        if (acc0 < 0)
            acc0 = acc;
        if (acc == 1.0 || steps >= 300)
            break;
        for (int k = 0; k < 5; k++) {
            wisp_trainer_stats_t st;
            assert_int_equal(wisp_trainer_step(t, items, N_CLIPS, &st, &e), WISP_OK);
        }
        steps += 5;
    }
    print_message("overfit: accuracy %.3f at start, %.3f after %ld steps\n", acc0, acc, steps);
    assert_true(acc0 < 0.5); /* the fresh head is not already right */
    assert_true(acc == 1.0);
    wisp_trainer_destroy(&t);
}

/* Reads an int8 column of a results file. */
static void s_read_i8(const char *path, const char *name, int8_t *out)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dread(d, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0);
    H5Dclose(d);
    H5Fclose(f);
}

/* ---- what a user watches: the progress line and the summary ---------------- */

typedef struct {
    wisp_trainer_item_t items[N_CLIPS + 3];
    char outdir[1024];
} s_watch_t;

static void s_progress_run(void *ctx)
{
    s_watch_t *w = ctx;
    wisp_trainer_opts_t o;
    s_opts(&o);
    wisp_trainer_t *t = s_new(&o);
    wisp_trainer_run_opts_t ro;
    wisp_trainer_default_run_opts(&ro);
    ro.outdir = w->outdir;
    ro.epochs = 2;
    ro.batch = 5; /* 19 items: 4 steps per epoch, 8 in all */
    ro.progress = 1;
    wisp_error_t e = {0};
    int rc = wisp_trainer_run(t, w->items, N_CLIPS + 3, NULL, 0, &ro, &e);
    wisp_trainer_destroy(&t);
    if (rc != WISP_OK)
        fail_msg("run: %s", e.msg);
}

/* The local progress line is drawn by the shared printer (base/log.h): each draw
 * clears the rest of the line, a warning of a bad file erases it first instead of
 * being glued to it, and the line ends with a newline. Before, trainer.c printed its
 * own "\rstep ..." and the warnings landed after it on the same line. */
static void test_the_local_progress_line_is_the_shared_one(void **state)
{
    (void)state;
    s_watch_t w;
    memcpy(w.items, s_dataset(s_paths), N_CLIPS * sizeof w.items[0]);
    memcpy(w.items + N_CLIPS, s_bad_items(3), 3 * sizeof w.items[0]);
    for (int i = 0; i < N_CLIPS + 3; i++)
        w.items[i].id = i;
    snprintf(w.outdir, sizeof w.outdir, "%s/progress_run", wisp_test_tmpdir());
    char *out = wisp_test_capture_stderr(1, s_progress_run, &w);
    const char *first = strstr(out, "\rstep 1/8");
    if (!first)
        fail_msg("no progress line: '%s'", out);
    int draws = 0, warnings = 0;
    for (const char *p = first; (p = strstr(p, "\rstep ")) != NULL; p++, draws++) {
        const char *end = p + strcspn(p + 1, "\r\n") + 1;
        if (end - p < 3 || strncmp(end - 3, "\033[K", 3) != 0)
            fail_msg("a progress draw does not clear its line: '%.*s'", (int)(end - p), p);
    }
    for (const char *p = first; (p = strstr(p, "s_fail: skipping")) != NULL; p++, warnings++) {
        const char *q = p;
        while (q > out && q[-1] != '\r' && q[-1] != '\n')
            q--;
        if (strncmp(q, "\033[K", 3) != 0)
            fail_msg("a warning is glued to the progress line: '%.*s'", (int)(p - q + 16), q);
    }
    const char *last = strstr(out, "\rstep 8/8");
    assert_non_null(last);
    assert_non_null(strstr(last, "\033[K\n"));
    print_message("%d progress draws, %d warnings while it was up\n", draws, warnings);
    assert_true(draws >= 8);
    assert_true(warnings >= 3); /* the bad files of the second epoch at least */
    free(out);
}

typedef struct {
    char **argv;
    int argc, rc;
} s_cmd_t;

static void s_cmd_train(void *ctx)
{
    s_cmd_t *c = ctx;
    wisp_log_set_level(WISP_LOG_INFO);
    c->rc = wisp_cmd_train(c->argc, c->argv);
    wisp_log_set_level(WISP_LOG_WARN);
}

/* `wisp train` names, at its start and in its summary, the labeled clips, the rows
 * left out for want of a label and the clips that failed, per set (before: only the
 * labeled count at the start and the failures at the end). */
static void test_the_train_summary_counts_unlabeled_and_failed_clips(void **state)
{
    (void)state;
    static const char *names[4] = {"low", "high", "noise", "quiet"};
    wisp_trainer_item_t *items = s_dataset(s_paths);
    wisp_trainer_item_t *bad = s_bad_items(1);
    char csv[1024], out[1024];
    snprintf(csv, sizeof csv, "%s/summary.csv", wisp_test_tmpdir());
    snprintf(out, sizeof out, "%s/summary_run", wisp_test_tmpdir());
    FILE *f = fopen(csv, "w");
    assert_non_null(f);
    fprintf(f, "path,label\n");
    for (int i = 0; i < N_CLIPS; i++)
        fprintf(f, "%s,%s\n", items[i].path, names[items[i].label]);
    fprintf(f, "%s,\n%s,\n%s,low\n", items[0].path, items[1].path, bad[0].path);
    fclose(f);
    char *argv[] = {"train",
                    "--model",
                    (char *)s_model_dir(),
                    "--preset",
                    "seq_bn",
                    "--train",
                    csv,
                    "--val",
                    csv,
                    "-o",
                    out,
                    "--epochs",
                    "1",
                    "--batch",
                    "8",
                    "--truncate",
                    "--unlabeled",
                    "skip",
                    "--threads",
                    "1"};
    s_cmd_t c = {argv, (int)(sizeof argv / sizeof *argv), -1};
    char *log = wisp_test_capture_stderr(0, s_cmd_train, &c);
    if (c.rc != WISP_EXIT_OK)
        fail_msg("wisp train exit %d: %s", c.rc, log);
    if (!strstr(log, "17 labeled clips (2 unlabeled skipped), 4 classes; validation: 17 labeled "
                     "clips (2 unlabeled skipped)") ||
        !strstr(log, "training: 17 labeled clips, 2 unlabeled skipped, 1 failed; validation: 17 "
                     "labeled clips, 2 unlabeled skipped, 1 failed"))
        fail_msg("the counts are not in the log: %s", log);
    free(log);
}

/* ---- long files: a seeded window per (epoch, item) ------------------------ */
#define LONG_SAMPLES 16000 /* 1 s files, windows of 0.2 s (the tiny model's 0.32 s limit) */
#define WIN_SECONDS  0.2
#define WIN_SAMPLES  3200

/* Four 1 s sweeps (one per class) with ids 0..3. */
static wisp_trainer_item_t *s_long_items(void)
{
    static wisp_trainer_item_t items[4];
    static char paths[4][1024];
    static float x[LONG_SAMPLES];
    for (int i = 0; i < 4; i++) {
        for (int t = 0; t < LONG_SAMPLES; t++) /* every window of a file differs */
            x[t] = 0.5f *
                   sinf(6.2831853f * (200.0f * (float)(i + 1) + 3000.0f * (float)t / LONG_SAMPLES) *
                        (float)t / 16000.0f);
        snprintf(paths[i], sizeof paths[i], "%s/long%d.wav", wisp_test_tmpdir(), i);
        s_write_wav(paths[i], x, LONG_SAMPLES);
        items[i].path = paths[i];
        items[i].label = i;
        items[i].id = i;
    }
    return items;
}

/* The gradients of a windowed step are those of the features of each file's window at
 * wisp_windows_random_start(n, win, seed, epoch, id), bitwise; another epoch moves the
 * windows; an evaluation takes the same windows whatever the epoch. */
static void test_a_windowed_step_trains_on_the_seeded_window_of_each_file(void **state)
{
    (void)state;
    wisp_trainer_item_t *items = s_long_items();
    wisp_trainer_opts_t o;
    s_opts(&o);
    o.window = WIN_SECONDS;
    wisp_trainer_t *t = s_new(&o), *ref;
    o.window = 0;
    ref = s_new(&o);
    wisp_model_t *m = wisp_trainer_model(t), *mr = wisp_trainer_model(ref);
    size_t np = wisp_model_num_params(m);
    assert_memory_equal(wisp_model_params(m), wisp_model_params(mr), np * sizeof(float));
    wisp_error_t e = {0};
    wisp_features_t *feat = wisp_features_new(NMELS, 1, 2 * TPOS, &e);
    assert_non_null(feat);
    static float mel[4][NMELS * 2 * TPOS];
    const float *mels[4];
    int frames[4], labels[4];
    float *g3 = malloc(np * sizeof(float));
    wisp_trainer_stats_t st;
    for (long epoch = 3; epoch <= 4; epoch++) {
        for (int i = 0; i < 4; i++) {
            wisp_audio_t a;
            assert_int_equal(wisp_features_decode(items[i].path, 0, &a, &e), WISP_OK);
            assert_int_equal(a.n, LONG_SAMPLES);
            size_t start = wisp_windows_random_start(a.n, WIN_SAMPLES, o.seed, (uint64_t)epoch,
                                                     (uint64_t)items[i].id);
            assert_int_equal(wisp_features_window(feat, a.samples, a.n, start, WIN_SAMPLES, mel[i],
                                                  &frames[i], &e),
                             WISP_OK);
            wisp_audio_free(&a);
            mels[i] = mel[i];
            labels[i] = items[i].label;
        }
        assert_int_equal(wisp_trainer_compute_grads_clips(ref, mels, frames, labels, 4, &st, &e),
                         WISP_OK);
        wisp_trainer_set_epoch(t, epoch);
        assert_int_equal(wisp_trainer_compute_grads(t, items, 4, &st, &e), WISP_OK);
        assert_int_equal(st.items, 4);
        assert_memory_equal(wisp_model_grads(m), wisp_model_grads(mr), np * sizeof(float));
        if (epoch == 3)
            memcpy(g3, wisp_model_grads(m), np * sizeof(float));
        else
            assert_memory_not_equal(g3, wisp_model_grads(m), np * sizeof(float));
    }
    double l1 = 0, l2 = 0, w1 = 0, w2 = 0;
    long c1 = 0, c2 = 0, n1 = 0, n2 = 0, f1 = 0, f2 = 0;
    assert_int_equal(wisp_trainer_eval(t, items, 4, &l1, &w1, &c1, &n1, &f1, &e), WISP_OK);
    wisp_trainer_set_epoch(t, 9);
    assert_int_equal(wisp_trainer_eval(t, items, 4, &l2, &w2, &c2, &n2, &f2, &e), WISP_OK);
    assert_int_equal(n1, 4);
    assert_true(l1 == l2 && c1 == c2);
    /* A window the model's positions cannot hold is refused up front, naming the option. */
    o.window = 0.5;
    wisp_error_clear(&e);
    assert_null(wisp_trainer_new(&o, &e));
    assert_non_null(strstr(e.msg, "train.window (--window) 0.5 s"));
    free(g3);
    wisp_features_destroy(&feat);
    wisp_trainer_destroy(&t);
    wisp_trainer_destroy(&ref);
}

/* The newest checkpoint directory of a run into buf. */
static void s_latest_ckpt(const char *outdir, char *buf, size_t n)
{
    char path[1200], latest[64] = "";
    snprintf(path, sizeof path, "%s/checkpoints/LATEST", outdir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(latest, sizeof latest, f));
    fclose(f);
    snprintf(buf, n, "%s/checkpoints/%s", outdir, latest);
}

/* features.json of base/adapter and base/head: truncated, this window. */
static void s_expect_settings(const char *base, double window)
{
    static const char *const dirs[2] = {"adapter", "head"};
    for (int i = 0; i < 2; i++) {
        char path[1400];
        wisp_feature_settings_t fs;
        wisp_error_t e = {0};
        snprintf(path, sizeof path, "%s/%s", base, dirs[i]);
        if (wisp_feature_settings_load(path, &fs, &e) != 1)
            fail_msg("%s: no features.json (%s)", path, e.msg);
        assert_true(fs.truncate == 1 && fs.window_seconds == window);
    }
}

static void s_cmd(void *ctx)
{
    s_cmd_t *c = ctx;
    c->rc = strcmp(c->argv[0], "train") == 0 ? wisp_cmd_train(c->argc, c->argv)
                                             : wisp_cmd_classify(c->argc, c->argv);
}

/* `wisp train --window` records the window in features.json beside the adapter and
 * head, and beside their copies in every checkpoint; `wisp classify` of them refuses
 * another clip length, naming --window, and runs with the window trained on; a resume
 * with another window is refused. */
static void test_wisp_train_window_is_recorded_and_classify_must_match_it(void **state)
{
    (void)state;
    static const char *names[4] = {"a", "b", "c", "d"};
    wisp_trainer_item_t *items = s_long_items();
    char csv[1024], out[1024], h5[1200], adapter[1100], head[1100];
    snprintf(csv, sizeof csv, "%s/long.csv", wisp_test_tmpdir());
    snprintf(out, sizeof out, "%s/long_run", wisp_test_tmpdir());
    FILE *f = fopen(csv, "w");
    assert_non_null(f);
    fprintf(f, "path,label\n");
    for (int i = 0; i < 4; i++)
        fprintf(f, "%s,%s\n", items[i].path, names[items[i].label]);
    fclose(f);
    char *train[] = {"train",
                     "--model",
                     (char *)s_model_dir(),
                     "--preset",
                     "seq_bn",
                     "--train",
                     csv,
                     "-o",
                     out,
                     "--epochs",
                     "2",
                     "--batch",
                     "2",
                     "--truncate",
                     "--window",
                     "0.2",
                     "--threads",
                     "1",
                     "--stop-after",
                     "2"};
    s_cmd_t c = {train, (int)(sizeof train / sizeof *train), -1};
    char *log = wisp_test_capture_stderr(0, s_cmd, &c);
    if (c.rc != WISP_EXIT_OK)
        fail_msg("wisp train exit %d: %s", c.rc, log);
    free(log);
    char ck[1200];
    s_latest_ckpt(out, ck, sizeof ck); /* stopped after step 2: its checkpoint only */
    s_expect_settings(ck, WIN_SECONDS);
    /* another window does not resume this run; the same one does */
    char *resume[] = {"train",    "--model",    (char *)s_model_dir(),
                      "--preset", "seq_bn",     "--train",
                      csv,        "-o",         out,
                      "--epochs", "2",          "--batch",
                      "2",        "--truncate", "--window",
                      "0.1",      "--threads",  "1",
                      "--resume"};
    c = (s_cmd_t){resume, (int)(sizeof resume / sizeof *resume), -1};
    log = wisp_test_capture_stderr(0, s_cmd, &c);
    if (c.rc == WISP_EXIT_OK || !strstr(log, "state.json"))
        fail_msg("a resume with another window: exit %d: %s", c.rc, log);
    free(log);
    resume[15] = "0.2";
    c = (s_cmd_t){resume, (int)(sizeof resume / sizeof *resume), -1};
    log = wisp_test_capture_stderr(0, s_cmd, &c);
    if (c.rc != WISP_EXIT_OK)
        fail_msg("resume exit %d: %s", c.rc, log);
    free(log);
    s_expect_settings(out, WIN_SECONDS);
    s_latest_ckpt(out, ck, sizeof ck);
    s_expect_settings(ck, WIN_SECONDS);

    /* classify from the run and from its checkpoint: the first 30 s is refused */
    const char *from[2] = {out, ck};
    for (int k = 0; k < 2; k++) {
        snprintf(adapter, sizeof adapter, "%s/adapter", from[k]);
        snprintf(head, sizeof head, "%s/head", from[k]);
        snprintf(h5, sizeof h5, "%s/long_%d.h5", wisp_test_tmpdir(), k);
        char *cl[] = {"classify", "--model", (char *)s_model_dir(), "--adapter", adapter,
                      "--head",   head,      "--truncate",          "--threads", "1",
                      "-o",       h5,        (char *)items[0].path, NULL};
        c = (s_cmd_t){cl, 13, -1};
        log = wisp_test_capture_stderr(0, s_cmd, &c);
        if (c.rc != WISP_EXIT_FAILURE || !strstr(log, "classify.window: 0.2 (--window=0.2)"))
            fail_msg("classify of %s without --window: exit %d: %s", from[k], c.rc, log);
        free(log);
        cl[12] = "--window=0.2";
        cl[13] = (char *)items[0].path;
        c = (s_cmd_t){cl, 14, -1};
        log = wisp_test_capture_stderr(0, s_cmd, &c);
        if (c.rc != WISP_EXIT_OK)
            fail_msg("classify of %s with --window=0.2: exit %d: %s", from[k], c.rc, log);
        free(log);
    }
}

static void test_train_and_classify_commands_run_end_to_end(void **state)
{
    (void)state;
    static const char *names[4] = {"low", "high", "noise", "quiet"};
    wisp_trainer_item_t *items = s_dataset(s_paths);
    char csv[1024], out[1024], h5[1200], p[1300], bad[1024];
    snprintf(csv, sizeof csv, "%s/cli_train.csv", wisp_test_tmpdir());
    snprintf(out, sizeof out, "%s/cli_run", wisp_test_tmpdir());
    snprintf(h5, sizeof h5, "%s/cli_out.h5", wisp_test_tmpdir());
    snprintf(bad, sizeof bad, "%s/cli_bad.wav", wisp_test_tmpdir());
    FILE *f = fopen(bad, "w");
    fputs("not audio", f);
    fclose(f);
    f = fopen(csv, "w");
    fprintf(f, "path,label\n");
    for (int i = 0; i < N_CLIPS; i++)
        fprintf(f, "%s,%s\n", items[i].path, names[items[i].label]);
    fprintf(f, "%s,low\n", bad);
    fclose(f);

    char *usage[] = {"train", "--train", csv, "-o", out};
    assert_int_equal(wisp_cmd_train((int)(sizeof usage / sizeof *usage), usage), WISP_EXIT_USAGE);
    char *train[] = {"train",     "--model",  (char *)s_model_dir(),
                     "--preset",  "seq_bn",   "--train",
                     csv,         "--val",    csv,
                     "-o",        out,        "--steps",
                     "6",         "--batch",  "4",
                     "--accum",   "2",        "--truncate",
                     "--lr",      "1e-2",     "--schedule",
                     "cosine",    "--warmup", "2",
                     "--threads", "1"};
    wisp_log_set_level(WISP_LOG_ERROR);
    assert_int_equal(wisp_cmd_train((int)(sizeof train / sizeof *train), train), WISP_EXIT_OK);
    /* The same -o again without --resume or --force is refused and changes nothing
     * (before: the run was silently overwritten, metrics.jsonl cut to the new lines). */
    struct stat before, after;
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    assert_int_equal(stat(p, &before), 0);
    assert_int_equal(wisp_cmd_train((int)(sizeof train / sizeof *train), train), WISP_EXIT_USAGE);
    assert_int_equal(stat(p, &after), 0);
    assert_int_equal(before.st_size, after.st_size);
    snprintf(p, sizeof p, "%s/adapter/adapter.safetensors", out);
    assert_int_equal(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/head/head_config.json", out);
    assert_int_equal(access(p, R_OK), 0);

    /* Classify the same manifest with the trained adapter and head. */
    char adapter[1100], head[1100];
    snprintf(adapter, sizeof adapter, "%s/adapter", out);
    snprintf(head, sizeof head, "%s/head", out);

    /* Continue from the saved adapter and head with integer labels (ids of the head's
     * classes), balanced class weights, 2 more steps into a new directory. */
    char csv2[1024], out2[1024];
    snprintf(csv2, sizeof csv2, "%s/cli_ids.csv", wisp_test_tmpdir());
    snprintf(out2, sizeof out2, "%s/cli_run2", wisp_test_tmpdir());
    f = fopen(csv2, "w");
    fprintf(f, "path,label\n");
    for (int i = 0; i < 8; i++)
        fprintf(f, "%s,%d\n", items[i].path, items[i].label);
    fclose(f);
    char *more[] = {"train",
                    "--model",
                    (char *)s_model_dir(),
                    "--adapter",
                    adapter,
                    "--head",
                    head,
                    "--train",
                    csv2,
                    "-o",
                    out2,
                    "--steps",
                    "2",
                    "--batch",
                    "4",
                    "--truncate",
                    "--class-weights",
                    "balanced",
                    "--threads",
                    "1"};
    assert_int_equal(wisp_cmd_train((int)(sizeof more / sizeof *more), more), WISP_EXIT_OK);
    char *badw[] = {"train",     "--model",    (char *)s_model_dir(),
                    "--adapter", adapter,      "--head",
                    head,        "--train",    csv2,
                    "-o",        out2,         "--steps",
                    "2",         "--truncate", "--class-weights",
                    "1,2"};
    assert_int_equal(wisp_cmd_train((int)(sizeof badw / sizeof *badw), badw), WISP_EXIT_FAILURE);
    snprintf(p, sizeof p, "%s/head/model_head.safetensors", out2);
    assert_int_equal(access(p, R_OK), 0);
    char *classify[] = {"classify",  "--model",    (char *)s_model_dir(),
                        "--adapter", adapter,      "--head",
                        head,        "--truncate", "--batch",
                        "3",         "--threads",  "1",
                        "-o",        h5,           "--manifest",
                        csv};
    assert_int_equal(wisp_cmd_classify((int)(sizeof classify / sizeof *classify), classify),
                     WISP_EXIT_PARTIAL);
    int8_t status[N_CLIPS + 1];
    s_read_i8(h5, "status", status);
    for (int i = 0; i < N_CLIPS; i++)
        assert_int_equal(status[i], 0);
    assert_int_equal(status[N_CLIPS], WISP_ERR_AUDIO);
    wisp_log_set_level(WISP_LOG_WARN);
}

int main(void)
{
    wisp_log_init('L', 0, WISP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_five_adamw_steps_follow_the_pytorch_run),
        cmocka_unit_test(test_mixed_lengths_and_class_weights_follow_the_pytorch_run),
        cmocka_unit_test(test_reduce_hook_sees_weights_then_gradients_like_two_equal_ranks),
        cmocka_unit_test(test_fixed_order_mode_gives_the_same_bits_for_any_split_and_micro_batch),
        cmocka_unit_test(test_unreadable_files_are_skipped_and_counted),
        cmocka_unit_test(test_epoch_order_is_a_seeded_permutation),
        cmocka_unit_test(test_schedule_walks_epochs_with_evaluations_checkpoints_and_a_final_entry),
        cmocka_unit_test(
            test_a_run_where_no_clip_can_be_used_ends_naming_the_manifest_and_failures),
        cmocka_unit_test(test_metrics_lines_survive_a_lost_log_and_a_resume_at_an_epoch_end),
        cmocka_unit_test(test_patience_stops_early_and_keep_best_writes_the_best_weights),
        cmocka_unit_test(test_metrics_pending_lines_keep_their_tail_and_merge_without_duplicates),
        cmocka_unit_test(test_resuming_after_step_k_gives_bitwise_identical_weights),
        cmocka_unit_test(test_dump_grads_with_zero_steps_writes_the_mean_gradient_only),
        cmocka_unit_test(test_sixteen_synthetic_clips_are_overfit_to_full_accuracy),
        cmocka_unit_test(test_train_and_classify_commands_run_end_to_end),
        cmocka_unit_test(test_the_local_progress_line_is_the_shared_one),
        cmocka_unit_test(test_the_train_summary_counts_unlabeled_and_failed_clips),
        cmocka_unit_test(test_a_windowed_step_trains_on_the_seeded_window_of_each_file),
        cmocka_unit_test(test_wisp_train_window_is_recorded_and_classify_must_match_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
