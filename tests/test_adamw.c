/* Tests of nn/adamw: torch.optim.AdamW, clip_grad_norm_ and the HF schedules against
 * goldens from tests/reference/adamw_ref.py (same splitmix64 inputs). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/adamw.h"
#include "base/util.h"

#define N     37
#define STEPS 6
static const size_t s_sizes[2] = {20, 17};

/* (2u - 1) * scale in fp32, as adamw_ref.py's sym(). */
static void s_sym(uint64_t seed, float *out, size_t n, float scale)
{
    wisp_rng_t r;
    wisp_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        out[i] = (2.0f * wisp_rng_uniform(&r) - 1.0f) * scale;
}

static float *s_golden(size_t *count)
{
    char path[512];
    snprintf(path, sizeof path, "%s/adamw_golden.f32", wisp_test_data_dir());
    return wisp_test_read_f32(path, count);
}

static void test_adamw_matches_torch_over_six_steps(void **state)
{
    (void)state;
    size_t count;
    float *gold = s_golden(&count);
    assert_int_equal(count, STEPS * N + STEPS * (2 * N + 1) + 36);
    float w[N], g[N];
    s_sym(1, w, N, 1.0f);
    wisp_adamw_t *opt = wisp_adamw_new(N, NULL);
    assert_non_null(opt);
    for (int s = 0; s < STEPS; s++) {
        s_sym(100 + (uint64_t)s, g, N, 0.1f * (float)(s + 1));
        wisp_adamw_step(opt, w, g, 1e-2);
        char label[64];
        snprintf(label, sizeof label, "params after step %d", s + 1);
        wisp_assert_close(w, gold + s * N, N, 0.0, 1e-6, label);
    }
    assert_int_equal(wisp_adamw_steps(opt), STEPS);
    wisp_adamw_destroy(&opt);
    assert_null(opt);
    free(gold);
}

static void test_clipping_schedule_and_decay_match_torch(void **state)
{
    (void)state;
    size_t count;
    float *gold = s_golden(&count);
    const float *b = gold + STEPS * N;
    float w[N], g[N];
    s_sym(1, w, N, 1.0f);
    wisp_adamw_opts_t o = {.beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1};
    wisp_adamw_t *opt = wisp_adamw_new(N, &o);
    int clipped = 0;
    for (int s = 0; s < STEPS; s++) {
        const float *row = b + s * (2 * N + 1);
        s_sym(100 + (uint64_t)s, g, N, 0.1f * (float)(s + 1));
        float norm = (float)wisp_adamw_clip_grad_norm(g, N, s_sizes, 2, 0.5);
        wisp_assert_close(&norm, row, 1, 0.0, 1e-6, "total norm");
        clipped += row[0] > 0.5f;
        wisp_assert_close(g, row + 1, N, 0.0, 1e-6, "clipped grads");
        double lr = wisp_adamw_lr(WISP_SCHEDULE_LINEAR, 5e-2, 2, 6, s);
        wisp_adamw_step(opt, w, g, lr);
        wisp_assert_close(w, row + 1 + N, N, 0.0, 1e-6, "params");
    }
    assert_true(clipped >= 3); /* the case exercises clipping, not only pass-through */
    wisp_adamw_destroy(&opt);
    free(gold);
}

static void test_schedules_match_the_transformers_formulas(void **state)
{
    (void)state;
    size_t count;
    float *gold = s_golden(&count);
    const float *sc = gold + STEPS * N + STEPS * (2 * N + 1);
    const wisp_schedule_t kinds[3] = {WISP_SCHEDULE_CONSTANT, WISP_SCHEDULE_LINEAR,
                                      WISP_SCHEDULE_COSINE};
    for (int k = 0; k < 3; k++) {
        float got[12];
        for (int s = 0; s < 12; s++)
            got[s] = (float)wisp_adamw_lr(kinds[k], 1.0, 3, 10, s);
        wisp_assert_close(got, sc + 12 * k, 12, 1e-7, 1e-6, wisp_adamw_schedule_name(kinds[k]));
    }
    assert_int_equal(wisp_adamw_schedule_parse("cosine"), WISP_SCHEDULE_COSINE);
    assert_int_equal(wisp_adamw_schedule_parse("nope"), -1);
    free(gold);
}

static void test_clipping_leaves_small_gradients_alone(void **state)
{
    (void)state;
    float g[4] = {0.1f, -0.2f, 0.2f, 0.0f}, want[4];
    memcpy(want, g, sizeof g);
    double norm = wisp_adamw_clip_grad_norm(g, 4, NULL, 0, 1.0);
    assert_true(fabs(norm - 0.3) < 1e-6);
    wisp_assert_close(g, want, 4, 0.0, 0.0, "unclipped");
    norm = wisp_adamw_clip_grad_norm(g, 4, NULL, 0, 0.15);
    float scaled = sqrtf(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]);
    assert_true(fabsf(scaled - 0.15f) < 1e-5f);
}

static void test_moments_can_be_restored_to_continue_identically(void **state)
{
    (void)state;
    float w1[N], w2[N], g[N];
    s_sym(1, w1, N, 1.0f);
    memcpy(w2, w1, sizeof w1);
    wisp_adamw_t *a = wisp_adamw_new(N, NULL), *b = wisp_adamw_new(N, NULL);
    for (int s = 0; s < 4; s++) {
        s_sym(7 + (uint64_t)s, g, N, 0.3f);
        wisp_adamw_step(a, w1, g, 1e-2);
        if (s == 1) { /* b takes over a's state after two steps */
            memcpy(w2, w1, sizeof w1);
            memcpy(wisp_adamw_m(b), wisp_adamw_m(a), sizeof(float) * N);
            memcpy(wisp_adamw_v(b), wisp_adamw_v(a), sizeof(float) * N);
            wisp_adamw_set_steps(b, wisp_adamw_steps(a));
        } else if (s > 1) {
            wisp_adamw_step(b, w2, g, 1e-2);
        }
    }
    assert_memory_equal(w1, w2, sizeof w1);
    wisp_adamw_destroy(&a);
    wisp_adamw_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_matches_torch_over_six_steps),
        cmocka_unit_test(test_clipping_schedule_and_decay_match_torch),
        cmocka_unit_test(test_schedules_match_the_transformers_formulas),
        cmocka_unit_test(test_clipping_leaves_small_gradients_alone),
        cmocka_unit_test(test_moments_can_be_restored_to_continue_identically),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
