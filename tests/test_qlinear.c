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
 * a factor ~2 unless the inputs are kept to 7 bits, as they are on every host. */
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
    assert_int_equal(xmax, 127); /* the same range on every host, VNNI or not */
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

/* The mean correction: per clip (block of T rows) the mean output row is the fp32
 * linear's, a clip's rows do not depend on the other clips of the batch, and the clip
 * means' error falls by far more than the rows' (here the inputs share a mean row, as
 * a clip's tokens do, so the weights' rounding would otherwise stay in every row). */
static void test_int8_linear_mean_row_per_clip_is_fp32s(void **state)
{
    (void)state;
    const int B = 3, T = 40, N = B * T, C = 384, OC = 256;
    wisp_rng_t r;
    wisp_rng_seed(&r, 9);
    float *W = s_rand((size_t)OC * C, &r, 1.0f / sqrtf((float)C)), *b = s_rand(OC, &r, 0.1f);
    float *x = s_rand((size_t)N * C, &r, 0.5f), *common = s_rand((size_t)B * C, &r, 1.0f);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            x[(size_t)n * C + c] += common[(size_t)(n / T) * C + c];
    float *y = wisp_alloc((size_t)N * OC * 4), *yf = wisp_alloc((size_t)N * OC * 4);
    float *y1 = wisp_alloc((size_t)T * OC * 4), *yu = wisp_alloc((size_t)N * OC * 4);
    wisp_error_t err = {0};
    wisp_qlinears_t *q = wisp_qlinears_new(N, C, OC, 1, &err);
    assert_non_null(q);
    assert_int_equal(wisp_qlinears_add(q, W, b, C, OC, &err), 0);
    assert_int_equal(wisp_qlinears_forward(q, W, yu, x, N), 0); /* the batch as one clip */
    wisp_qlinears_set_group(q, T);
    assert_int_equal(wisp_qlinears_forward(q, W, y, x, N), 0);
    assert_int_equal(wisp_qlinears_forward(q, W, y1, x + (size_t)T * C, T), 0); /* clip 1 alone */
    assert_memory_equal(y1, y + (size_t)T * OC, (size_t)T * OC * sizeof *y);
    nn_linear_forward_ref(yf, x, W, b, N, C, OC);
    double e_mean = 0, e_mean_u = 0, e_row = 0, ref = 0;
    for (int k = 0; k < B; k++)
        for (int o = 0; o < OC; o++) {
            double m = 0, mf = 0, mu = 0;
            for (int t = 0; t < T; t++) {
                size_t i = ((size_t)k * T + t) * OC + o;
                m += y[i], mf += yf[i], mu += yu[i];
                e_row += ((double)y[i] - yf[i]) * ((double)y[i] - yf[i]);
                ref += (double)yf[i] * yf[i];
            }
            m /= T, mf /= T, mu /= T;
            assert_true(fabs(m - mf) <= 1e-5 * (1.0 + fabs(mf)));
            e_mean += (m - mf) * (m - mf), e_mean_u += (mu - mf) * (mu - mf);
        }
    print_message("clip means: error %.3g corrected, %.3g with the batch as one clip; rows' "
                  "relative RMS %.4f\n",
                  sqrt(e_mean / (B * OC)), sqrt(e_mean_u / (B * OC)), sqrt(e_row / ref));
    assert_true(e_mean < 1e-4 * e_mean_u);
    assert_true(sqrt(e_row / ref) < 2e-2);
    wisp_qlinears_set_group(q, 7); /* does not divide N: the call is one clip */
    assert_int_equal(wisp_qlinears_forward(q, W, y, x, N), 0);
    assert_memory_equal(y, yu, (size_t)N * OC * sizeof *y);
    wisp_qlinears_destroy(&q);
    wisp_free(W), wisp_free(b), wisp_free(x), wisp_free(common);
    wisp_free(y), wisp_free(yf), wisp_free(y1), wisp_free(yu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_linear_matches_its_loop_twin_bitwise),
        cmocka_unit_test(test_int8_linear_is_within_the_quantisation_error_of_fp32),
        cmocka_unit_test(test_int8_linear_is_exact_on_the_largest_codes),
        cmocka_unit_test(test_int8_linear_mean_row_per_clip_is_fp32s),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
