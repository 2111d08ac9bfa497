/* Tests of nn/model.c, backward: the gradient of every trainable tensor against
 * PyTorch autograd (float64 reference, tests/reference/gen_model_golden.py) for every
 * adapter kind, weighted layer sum on and off, batch 2, padded and truncated inputs,
 * with and without class weights; accumulation; central finite differences of the
 * whole model's loss. */
#include "model_fixture.h"

#define GRAD_RTOL 1e-4 /* max |got - want| <= GRAD_RTOL * max |want| per tensor */

static double s_ws(const int *labels, int B, int cw)
{
    double ws = 0;
    for (int b = 0; b < B; b++)
        ws += cw ? MF_CLASS_WEIGHTS[labels[b]] : 1.0;
    return ws;
}

/* Every case twice: with the attention probabilities kept from the forward (the
 * trainers' default) and recomputed in the backward (attn_keep_mb 0). */
static void test_gradients_match_autograd_for_every_adapter_kind(void **state)
{
    (void)state;
    char dir[1024], path[1100];
    double worst = 0.0;
    char worst_name[600] = "";
    int ncases = 0, ntensors = 0;
    for (int run = 0; run < 2 * MF_NCASES; run++) {
        const mf_case_t *cs = &MF_CASES[run % MF_NCASES];
        const int keep_mb = run < MF_NCASES ? WISP_MODEL_ATTN_KEEP_MB_DEFAULT : 0;
        const char *mode = keep_mb ? "kept" : "recomputed";
        if (!cs->grads)
            continue;
        ncases++;
        snprintf(dir, sizeof dir, "%s/grad_%s_%s", wisp_test_tmpdir(), cs->name, mode);
        wisp_model_t *m = mf_case_model_keep(cs, dir, 1, keep_mb);
        int frames = mf_frames(cs), labels[3];
        float *mel = mf_mel(cs->B, cs->n_mels, frames);
        mf_labels(labels, cs->B, MF_TINY.NL);
        double ws_want = s_ws(labels, cs->B, cs->class_weights), ls, ws;
        float logits[15], inf_logits[15];
        const float *cw = cs->class_weights ? MF_CLASS_WEIGHTS : NULL;
        wisp_model_zero_grads(m);
        assert_int_equal(wisp_model_forward_backward(m, mel, cs->B, frames, labels, cw,
                                                     (float)(1.0 / ws_want), &ls, &ws, logits),
                         0);
        /* the training forward computes exactly what inference computes */
        assert_int_equal(wisp_model_forward(m, mel, cs->B, frames, inf_logits, NULL), 0);
        assert_memory_equal(logits, inf_logits, (size_t)cs->B * MF_TINY.NL * sizeof(float));
        /* loss sum and weight sum */
        snprintf(path, sizeof path, "%s/model/%s.loss", wisp_test_data_dir(), cs->name);
        size_t cnt;
        float *lw = wisp_test_read_f32(path, &cnt); /* two float64 = four floats */
        assert_int_equal(cnt, 4);
        double want[2];
        memcpy(want, lw, sizeof want);
        free(lw);
        assert_true(fabs(ws - want[1]) < 1e-9);
        if (fabs(ls - want[0]) > 1e-5 * fabs(want[0]))
            fail_msg("%s: loss %.8g, reference %.8g", cs->name, ls, want[0]);
        /* every trainable tensor */
        snprintf(path, sizeof path, "%s/model/%s.grads.safetensors", wisp_test_data_dir(),
                 cs->name);
        wisp_error_t err = {0};
        wisp_st_t *st = wisp_st_open(path, &err);
        if (!st)
            fail_msg("%s", err.msg);
        assert_int_equal(wisp_st_count(st), wisp_model_num_param_tensors(m));
        for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
            const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
            const float *g;
            if (wisp_st_get_f32(st, t->name, t->ndim, t->shape, &g, &err) < 0)
                fail_msg("%s: %s", cs->name, err.msg);
            const float *got = wisp_model_grads(m) + t->offset;
            double scale = wisp_max_abs(g, t->numel);
            double rel = wisp_max_abs_diff(got, g, t->numel) / (scale > 0 ? scale : 1.0);
            if (rel > worst) {
                worst = rel;
                snprintf(worst_name, sizeof worst_name, "%s, probabilities %s: %s", cs->name, mode,
                         t->name);
            }
            char label[600];
            snprintf(label, sizeof label, "%s (probabilities %s): d/d %s", cs->name, mode, t->name);
            assert_true(scale > 0.0); /* every golden gradient is informative */
            wisp_assert_close(got, g, t->numel, GRAD_RTOL * scale, 0.0, label);
            ntensors++;
        }
        wisp_st_destroy(&st);
        free(mel);
        wisp_model_destroy(&m);
    }
    printf("# %d case runs, %d gradient tensors; worst %.2e of the tensor's max (%s)\n", ncases,
           ntensors, worst, worst_name);
}

static void test_gradients_accumulate_over_calls(void **state)
{
    (void)state;
    char dir[1024];
    const mf_case_t *cs = NULL;
    for (int c = 0; c < MF_NCASES; c++)
        if (!strcmp(MF_CASES[c].name, "double_seq_bn_ws1_trunc_b2"))
            cs = &MF_CASES[c];
    assert_non_null(cs);
    snprintf(dir, sizeof dir, "%s/accum", wisp_test_tmpdir());
    wisp_model_t *m = mf_case_model(cs, dir, 1);
    int labels[2];
    mf_labels(labels, 2, MF_TINY.NL);
    float *mel = mf_mel(2, 80, 12);
    double ls, ws;
    size_t n = wisp_model_num_params(m);
    wisp_model_zero_grads(m);
    assert_int_equal(wisp_model_forward_backward(m, mel, 2, 12, labels, NULL, 0.5f, &ls, &ws, NULL),
                     0);
    float *once = malloc(n * sizeof(float));
    memcpy(once, wisp_model_grads(m), n * sizeof(float));
    assert_int_equal(wisp_model_forward_backward(m, mel, 2, 12, labels, NULL, 0.5f, &ls, &ws, NULL),
                     0);
    for (size_t i = 0; i < n; i++)
        once[i] *= 2.0f;
    wisp_assert_close(wisp_model_grads(m), once, n, 1e-7, 1e-6, "two calls = twice the gradient");
    free(once);
    free(mel);
    wisp_model_destroy(&m);
}

/* loss / weight sum from the model's forward, CE in double. */
static double s_loss(wisp_model_t *m, const float *mel, int B, int frames, const int *labels)
{
    float logits[15];
    assert_int_equal(wisp_model_forward(m, mel, B, frames, logits, NULL), 0);
    double loss = 0;
    for (int b = 0; b < B; b++) {
        const float *l = logits + b * MF_TINY.NL;
        double mx = l[0], s = 0;
        for (int j = 1; j < MF_TINY.NL; j++)
            mx = l[j] > mx ? l[j] : mx;
        for (int j = 0; j < MF_TINY.NL; j++)
            s += exp((double)l[j] - mx);
        loss += mx + log(s) - l[labels[b]];
    }
    return loss / B;
}

/* Central differences of the fp32 model's loss (accumulated in double), eps 3e-3, on
 * three entries (first, middle, last) of every trainable tensor, for each adapter
 * kind: |fd - grad| <= 2e-2 * max |grad of the tensor| + 2e-4. (The model has no
 * double-precision path; float rounding of the loss (~1e-7) over 2 eps bounds the
 * achievable agreement near 1e-4.) */
static void test_gradients_agree_with_finite_differences(void **state)
{
    (void)state;
    const char *kinds[] = {"seq_bn",  "double_seq_bn", "par_bn",   "lora_all",
                           "ia3_all", "seq_bn_rf",     "bn_custom"};
    char dir[1024];
    int checked = 0;
    double worst = 0;
    for (int kk = 0; kk < 7; kk++) {
        mf_case_t cs = {kinds[kk], kinds[kk], 1, 80, WISP_DT_F32, 2, 12, 1, 0};
        snprintf(dir, sizeof dir, "%s/fd_%s", wisp_test_tmpdir(), kinds[kk]);
        wisp_model_t *m = mf_case_model(&cs, dir, 1);
        int labels[2];
        mf_labels(labels, 2, MF_TINY.NL);
        float *mel = mf_mel(2, 80, 12);
        double ls, ws;
        wisp_model_zero_grads(m);
        assert_int_equal(
            wisp_model_forward_backward(m, mel, 2, 12, labels, NULL, 0.5f, &ls, &ws, NULL), 0);
        float *p = wisp_model_params(m);
        const float *g = wisp_model_grads(m);
        const float eps = 3e-3f;
        for (int k = 0; k < wisp_model_num_param_tensors(m); k++) {
            const wisp_param_info_t *t = wisp_model_param_tensor(m, k);
            double gmax = wisp_max_abs(g + t->offset, t->numel);
            size_t idx[3] = {0, t->numel / 2, t->numel - 1};
            for (int q = 0; q < 3; q++) {
                size_t i = t->offset + idx[q];
                float keep = p[i];
                p[i] = keep + eps;
                double lp = s_loss(m, mel, 2, 12, labels);
                p[i] = keep - eps;
                double lm = s_loss(m, mel, 2, 12, labels);
                p[i] = keep;
                double fd = (lp - lm) / (2.0 * (double)eps);
                double tol = 2e-2 * gmax + 2e-4;
                double e = fabs(fd - g[i]);
                if (e / (gmax + 1e-12) > worst && gmax > 1e-3)
                    worst = e / gmax;
                if (e > tol)
                    fail_msg("%s: d/d %s[%zu]: finite difference %.6g, backward %.6g", kinds[kk],
                             t->name, idx[q], fd, g[i]);
                checked++;
            }
        }
        free(mel);
        wisp_model_destroy(&m);
    }
    printf("# %d finite-difference probes; worst error %.2e of the tensor's max gradient\n",
           checked, worst);
}

int main(void)
{
    setenv("WISP_NAN_FILL", "1", 1); /* unwritten activations read as NaN */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_match_autograd_for_every_adapter_kind),
        cmocka_unit_test(test_gradients_accumulate_over_calls),
        cmocka_unit_test(test_gradients_agree_with_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
