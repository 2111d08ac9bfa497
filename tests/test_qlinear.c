/* Tests of nn/qlinear: oneDNN's int8 linears against their loop twin (the same bits:
 * integer sums are exact) and against the fp32 linear (the quantisation error). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "nn/ops.h"
#include "nn/qlinear.h"

static float *s_rand(size_t n, wisp_rng_t *r, float scale)
{
    float *x = wisp_alloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * wisp_rng_normal(r);
    return x;
}

static void test_int8_linear_matches_its_loop_twin_bitwise(void **state)
{
    (void)state;
    /* odd sizes for the kernels' tails, and rows of very different scales */
    const int shapes[][3] = {{37, 45, 29}, {150, 64, 192}, {1, 512, 512}, {300, 384, 1536}};
    wisp_rng_t r;
    wisp_rng_seed(&r, 3);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *W = s_rand((size_t)OC * C, &r, 0.05f), *b = s_rand(OC, &r, 0.1f);
        float *x = s_rand((size_t)N * C, &r, 1.0f);
        for (int n = 0; n < N; n++) /* row scales from 1e-3 to 1e3 */
            for (int c = 0; c < C; c++)
                x[(size_t)n * C + c] *= powf(10.0f, (float)(n % 7) - 3.0f);
        memset(x + (size_t)(N / 2) * C, 0, (size_t)C * sizeof *x); /* an all-zero row */
        float *y = wisp_alloc((size_t)N * OC * sizeof *y), *yr = wisp_alloc((size_t)N * OC * 4);
        wisp_error_t err = {0};
        wisp_qlinears_t *q = wisp_qlinears_new(N, C, OC, 1, &err);
        assert_non_null(q);
        assert_int_equal(wisp_qlinears_add(q, W, s ? b : NULL, C, OC, &err), 0);
        assert_int_equal(wisp_qlinears_forward(q, W, y, x, N), 0);
        assert_int_equal(wisp_qlinears_forward_ref(q, W, yr, x, N), 0);
        assert_memory_equal(y, yr, (size_t)N * OC * sizeof *y);
        /* the zero row gives the bias exactly */
        for (int o = 0; o < OC; o++)
            assert_true(y[(size_t)(N / 2) * OC + o] == (s ? b[o] : 0.0f));
        wisp_qlinears_destroy(&q);
        assert_null(q);
        wisp_free(W), wisp_free(b), wisp_free(x), wisp_free(y), wisp_free(yr);
    }
}

static void test_int8_linear_is_within_the_quantisation_error_of_fp32(void **state)
{
    (void)state;
    const int N = 200, C = 512, OC = 2048; /* whisper-base fc1 */
    wisp_rng_t r;
    wisp_rng_seed(&r, 5);
    float *W = s_rand((size_t)OC * C, &r, 1.0f / sqrtf((float)C)), *b = s_rand(OC, &r, 0.1f);
    float *x = s_rand((size_t)N * C, &r, 1.0f);
    float *y = wisp_alloc((size_t)N * OC * 4), *yf = wisp_alloc((size_t)N * OC * 4);
    wisp_error_t err = {0};
    wisp_qlinears_t *q = wisp_qlinears_new(N, C, OC, 1, &err);
    assert_non_null(q);
    assert_int_equal(wisp_qlinears_add(q, W, b, C, OC, &err), 0);
    assert_int_equal(wisp_qlinears_count(q), 1);
    assert_int_equal(wisp_qlinears_forward(q, W, y, x, N), 0);
    nn_linear_forward_ref(yf, x, W, b, N, C, OC);
    double se = 0, sf = 0;
    for (size_t i = 0; i < (size_t)N * OC; i++) {
        se += ((double)y[i] - yf[i]) * ((double)y[i] - yf[i]);
        sf += (double)yf[i] * yf[i];
    }
    double rel_rms = sqrt(se / sf);
    /* two 8-bit roundings of Gaussian rows: ~1e-2 relative; a wrong scale or layout is O(1) */
    print_message("int8 fc1 relative RMS error %.4f\n", rel_rms);
    assert_true(rel_rms < 2e-2 && rel_rms > 1e-4);
    /* an unknown key is reported, nothing written; too many rows refused */
    float other = 0;
    y[0] = 12345.0f;
    assert_int_equal(wisp_qlinears_forward(q, &other, y, x, N), 1);
    assert_true(y[0] == 12345.0f);
    assert_true(wisp_qlinears_forward(q, W, y, x, N + 1) < 0);
    assert_true(wisp_qlinears_add(q, W, b, C + 1, OC, &err) < 0);
    wisp_qlinears_destroy(&q);
    wisp_qlinears_destroy(&q); /* NULL accepted */
    wisp_free(W), wisp_free(b), wisp_free(x), wisp_free(y), wisp_free(yf);
}

/* The largest codes the quantisers make: constant rows give input code xmax and weight
 * code 127 everywhere, so every pair of products sits at its maximum. Kernels that add
 * pairs in 16 bits with saturation (vpmaddubsw, CPUs without VNNI) get these sums wrong by
 * a factor ~2 unless the inputs are kept to 7 bits on such hosts. */
static void test_int8_linear_is_exact_on_the_largest_codes(void **state)
{
    (void)state;
    const int N = 8, C = 512, OC = 48;
    float *W = wisp_alloc((size_t)OC * C * 4), *x = wisp_alloc((size_t)N * C * 4);
    float *y = wisp_alloc((size_t)N * OC * 4), *yr = wisp_alloc((size_t)N * OC * 4);
    for (int o = 0; o < OC; o++) /* +, - and alternating channels */
        for (int c = 0; c < C; c++)
            W[(size_t)o * C + c] = o % 3 == 0 ? 0.5f : o % 3 == 1 ? -0.5f : (c & 2) ? 0.5f : -0.5f;
    for (size_t i = 0; i < (size_t)N * C; i++)
        x[i] = 2.0f;
    wisp_error_t err = {0};
    wisp_qlinears_t *q = wisp_qlinears_new(N, C, OC, 1, &err);
    assert_non_null(q);
    int xmax = wisp_qlinears_input_max(q);
    print_message("input codes up to %d on this host\n", xmax);
    assert_true(xmax == 255 || xmax == 127);
    assert_int_equal(wisp_qlinears_add(q, W, NULL, C, OC, &err), 0);
    assert_int_equal(wisp_qlinears_forward(q, W, y, x, N), 0);
    assert_int_equal(wisp_qlinears_forward_ref(q, W, yr, x, N), 0);
    assert_memory_equal(y, yr, (size_t)N * OC * sizeof *y);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float want = o % 3 == 2 ? 0.0f : (o % 3 ? -1.0f : 1.0f) * (float)C; /* 2 * 0.5 * C */
            assert_float_equal(y[(size_t)n * OC + o], want, 1e-3f * C);
        }
    wisp_qlinears_destroy(&q);
    wisp_free(W), wisp_free(x), wisp_free(y), wisp_free(yr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_linear_matches_its_loop_twin_bitwise),
        cmocka_unit_test(test_int8_linear_is_within_the_quantisation_error_of_fp32),
        cmocka_unit_test(test_int8_linear_is_exact_on_the_largest_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
