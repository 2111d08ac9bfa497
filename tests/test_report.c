/* Tests of jobs/report: the numbers computed from a results file written here with
 * the HDF5 C API in the docs/OUTPUT.md layout, the training-directory summary, and the
 * clear errors for malformed inputs. */
#include "testutil.h"

#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/report.h"
#include "formats/results.h"
#include "base/util.h"

/* The fixture: N = 9 rows, C = 3 classes.
 *   row     0 1 2 3 4 5 6 7  8
 *   true    0 0 0 1 1 2 2 2 -1   (row 8: label unknown)
 *   label   0 0 1 1 2 2 2 -1 0
 *   status  0 0 0 0 0 0 0 1  0   (row 7 failed)
 * Scored rows are 0..6, correct ones 0 1 3 5 6. */
#define N 9
#define C 3
static const int s_true[N] = {0, 0, 0, 1, 1, 2, 2, 2, -1};
static const int s_label[N] = {0, 0, 1, 1, 2, 2, 2, -1, 0};
static const int s_status[N] = {0, 0, 0, 0, 0, 0, 0, 1, 0};
static const float s_score[N] = {0.9f, 0.8f, 0.6f, 0.7f, 0.5f, 0.9f, 0.95f, 0.0f, 0.4f};
static const char *const s_classes[C] = {"tone", "noise", "chirp_up"};

typedef struct {
    const char *omit;   /* dataset not to write */
    int probs_cols;     /* width of probs (C when 0) */
    int status_rows;    /* length of status (N when 0) */
    int fixed_strings;  /* fixed-length instead of variable-length strings */
    int label_as_float; /* store label as float32 */
    int bad_label;      /* an ok row with label 7 */
    int no_truth;       /* omit true_label */
} s_opts_t;

static void s_write_strings(hid_t f, const char *name, const char *const *v, size_t n, int fixed)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hsize_t dims[1] = {n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    if (fixed) {
        char buf[N * 24] = {0};
        for (size_t i = 0; i < n; i++)
            strncpy(buf + 24 * i, v[i], 23);
        H5Tset_size(t, 24);
        hid_t d = H5Dcreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
        H5Dclose(d);
    } else {
        H5Tset_size(t, H5T_VARIABLE);
        hid_t d = H5Dcreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
        H5Dclose(d);
    }
    H5Sclose(sp);
    H5Tclose(t);
}

static void s_write_array(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank, hsize_t d0,
                          hsize_t d1, const void *data)
{
    hsize_t dims[2] = {d0, d1};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
}

static int s_want(const s_opts_t *o, const char *name)
{
    return !o->omit || strcmp(o->omit, name) != 0;
}

static const char *s_write_results(const char *name, const s_opts_t *o)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", wisp_test_tmpdir(), name);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    const char *paths[N], *errors[N];
    char pbuf[N][24];
    for (int i = 0; i < N; i++) {
        snprintf(pbuf[i], sizeof pbuf[i], "clips/%d.wav", i);
        paths[i] = pbuf[i];
        errors[i] = s_status[i] ? "clips/7.wav: not audio" : "";
    }
    int label[N];
    memcpy(label, s_label, sizeof label);
    if (o->bad_label)
        label[2] = 7;
    float flabel[N];
    for (int i = 0; i < N; i++)
        flabel[i] = (float)label[i];
    int cols = o->probs_cols ? o->probs_cols : C;
    float probs[N * (C + 2)];
    for (int i = 0; i < N * cols; i++)
        probs[i] = 1.0f / cols;
    double duration[N];
    for (int i = 0; i < N; i++)
        duration[i] = 1.0 + i;
    if (s_want(o, "path"))
        s_write_strings(f, "path", paths, N, o->fixed_strings);
    if (s_want(o, "label")) {
        if (o->label_as_float)
            s_write_array(f, "label", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, N, 0, flabel);
        else
            s_write_array(f, "label", H5T_STD_I32LE, H5T_NATIVE_INT, 1, N, 0, label);
    }
    s_write_array(f, "score", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, N, 0, s_score);
    s_write_array(f, "probs", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, N, (hsize_t)cols, probs);
    s_write_array(f, "logits", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, N, C, probs);
    s_write_array(f, "duration", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, N, 0, duration);
    if (s_want(o, "status"))
        s_write_array(f, "status", H5T_STD_I32LE, H5T_NATIVE_INT, 1,
                      (hsize_t)(o->status_rows ? o->status_rows : N), 0, s_status);
    s_write_strings(f, "error", errors, N, o->fixed_strings);
    if (!o->no_truth)
        s_write_array(f, "true_label", H5T_STD_I32LE, H5T_NATIVE_INT, 1, N, 0, s_true);
    if (s_want(o, "classes"))
        s_write_strings(f, "classes", (const char *const *)s_classes, C, o->fixed_strings);
    /* Root attributes: a number and a string, as the result writer records them. */
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "clips_per_second", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    double cps = 123.5;
    H5Awrite(a, H5T_NATIVE_DOUBLE, &cps);
    H5Aclose(a);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    a = H5Acreate2(f, "model_sha256", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    const char *sha = "abc123";
    H5Awrite(a, st, &sha);
    H5Aclose(a);
    H5Tclose(st);
    H5Sclose(sp);
    H5Fclose(f);
    return path;
}

static void s_assert_fixture_numbers(const wisp_report_results_t *r)
{
    assert_int_equal(r->n, N);
    assert_int_equal(r->n_ok, 8);
    assert_int_equal(r->n_error, 1);
    assert_int_equal(r->n_classes, C);
    assert_string_equal(r->classes[2], "chirp_up");
    assert_int_equal(r->n_scored, 7);
    assert_int_equal(r->n_correct, 5);
    assert_true(fabs(r->accuracy - 5.0 / 7.0) < 1e-12);
    /* Confusion rows (true) x columns (predicted). */
    const int64_t want[C * C] = {2, 1, 0, /**/ 0, 1, 1, /**/ 0, 0, 2};
    assert_memory_equal(r->confusion, want, sizeof want);
    assert_int_equal(r->support[0], 3);
    assert_int_equal(r->support[1], 2);
    assert_int_equal(r->support[2], 2);
    /* predicted counts every ok row, the unlabelled row 8 included. */
    assert_int_equal(r->predicted[0], 3);
    assert_int_equal(r->predicted[1], 2);
    assert_int_equal(r->predicted[2], 3);
    /* precision = diagonal / column sum, recall = diagonal / row sum. */
    const double prec[C] = {2.0 / 2, 1.0 / 2, 2.0 / 3}, rec[C] = {2.0 / 3, 1.0 / 2, 2.0 / 2};
    double macro = 0;
    for (int c = 0; c < C; c++) {
        assert_true(fabs(r->precision[c] - prec[c]) < 1e-12);
        assert_true(fabs(r->recall[c] - rec[c]) < 1e-12);
        double f1 = 2 * prec[c] * rec[c] / (prec[c] + rec[c]);
        assert_true(fabs(r->f1[c] - f1) < 1e-12);
        macro += f1 / C;
    }
    assert_true(fabs(r->macro_f1 - macro) < 1e-12);
    double score = 0;
    for (int i = 0; i < N; i++)
        score += s_status[i] ? 0 : s_score[i];
    assert_true(fabs(r->mean_score - score / 8) < 1e-6);
    assert_true(fabs(r->total_duration - (45.0 - 8.0)) < 1e-9); /* sum 1..9 minus row 7's 8 */
    assert_int_equal(r->error_rows[0], 7);
    assert_string_equal(r->error_paths[0], "clips/7.wav");
    assert_string_equal(r->error_msgs[0], "clips/7.wav: not audio");
}

static void test_results_accuracy_confusion_and_per_class_numbers(void **state)
{
    (void)state;
    s_opts_t o = {0};
    const char *path = s_write_results("ok.h5", &o);
    wisp_error_t e = {0};
    wisp_report_results_t *r = wisp_report_results_load(path, &e);
    if (!r)
        fail_msg("%s", e.msg);
    s_assert_fixture_numbers(r);
    assert_int_equal(r->n_attrs, 2);
    int seen = 0;
    for (size_t i = 0; i < r->n_attrs; i++) {
        if (strcmp(r->attr_names[i], "clips_per_second") == 0)
            seen += strcmp(r->attr_values[i], "123.5") == 0;
        if (strcmp(r->attr_names[i], "model_sha256") == 0)
            seen += strcmp(r->attr_values[i], "abc123") == 0;
    }
    assert_int_equal(seen, 2);
    wisp_report_results_destroy(&r);
    assert_null(r);
    wisp_report_results_destroy(&r); /* NULL is fine */
}

static void test_fixed_length_strings_read_like_variable_ones(void **state)
{
    (void)state;
    s_opts_t o = {.fixed_strings = 1};
    const char *path = s_write_results("fixed.h5", &o);
    wisp_error_t e = {0};
    wisp_report_results_t *r = wisp_report_results_load(path, &e);
    if (!r)
        fail_msg("%s", e.msg);
    s_assert_fixture_numbers(r);
    wisp_report_results_destroy(&r);
}

static void test_results_without_true_labels_report_no_accuracy(void **state)
{
    (void)state;
    s_opts_t o = {.no_truth = 1};
    const char *path = s_write_results("unlabelled.h5", &o);
    wisp_error_t e = {0};
    wisp_report_results_t *r = wisp_report_results_load(path, &e);
    assert_non_null(r);
    assert_false(r->has_truth);
    assert_int_equal(r->n_scored, 0);
    assert_true(isnan(r->accuracy));
    assert_int_equal(r->predicted[2], 3);
    FILE *out = tmpfile();
    wisp_report_results_print(r, out, 0);
    rewind(out);
    char text[8192] = {0};
    assert_true(fread(text, 1, sizeof text - 1, out) > 0);
    fclose(out);
    assert_non_null(strstr(text, "no true_label dataset"));
    assert_null(strstr(text, "confusion ("));
    assert_int_equal(wisp_report_plot_confusion(r, "/tmp/never.png", &e), WISP_ERR_UNSUPPORTED);
    wisp_report_results_destroy(&r);
}

static void test_results_summary_prints_accuracy_table_confusion_and_errors(void **state)
{
    (void)state;
    s_opts_t o = {0};
    const char *path = s_write_results("print.h5", &o);
    wisp_report_results_t *r = wisp_report_results_load(path, NULL);
    assert_non_null(r);
    FILE *out = tmpfile();
    wisp_report_results_print(r, out, 0);
    rewind(out);
    char text[8192] = {0};
    assert_true(fread(text, 1, sizeof text - 1, out) > 0);
    fclose(out);
    assert_non_null(strstr(text, "rows: 9 (ok 8, error 1)"));
    assert_non_null(strstr(text, "accuracy: 0.7143 (5 of 7"));
    assert_non_null(strstr(text, "  clips/7.wav: clips/7.wav: not audio\n"));
    assert_non_null(strstr(text, "    0 tone"));
    assert_non_null(strstr(text, "clips_per_second = 123.5"));
    wisp_report_results_destroy(&r);
}

/* Loads a malformed file; the error must carry the code, the file and `needle`. */
static void s_expect_error(const char *path, int code, const char *needle)
{
    wisp_error_t e = {0};
    wisp_report_results_t *r = wisp_report_results_load(path, &e);
    assert_null(r);
    if (e.code != code || !strstr(e.msg, path) || !strstr(e.msg, needle))
        fail_msg("want code %d and '%s' naming the file, got %d: %s", code, needle, e.code, e.msg);
}

static void test_malformed_results_files_give_errors_naming_the_file(void **state)
{
    (void)state;
    s_opts_t o = {.omit = "label"};
    s_expect_error(s_write_results("nolabel.h5", &o), WISP_ERR_FORMAT, "missing dataset 'label'");
    o = (s_opts_t){.omit = "classes"};
    s_expect_error(s_write_results("noclasses.h5", &o), WISP_ERR_FORMAT, "'classes'");
    o = (s_opts_t){.probs_cols = C + 1};
    s_expect_error(s_write_results("wideprobs.h5", &o), WISP_ERR_SHAPE, "'probs' is [9, 4]");
    o = (s_opts_t){.status_rows = N - 1};
    s_expect_error(s_write_results("shortstatus.h5", &o), WISP_ERR_SHAPE, "'status' has 8 rows");
    o = (s_opts_t){.label_as_float = 1};
    s_expect_error(s_write_results("floatlabel.h5", &o), WISP_ERR_FORMAT, "integers");
    o = (s_opts_t){.bad_label = 1};
    s_expect_error(s_write_results("badlabel.h5", &o), WISP_ERR_FORMAT, "row 2");

    char path[512];
    snprintf(path, sizeof path, "%s/text.h5", wisp_test_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("not hdf5\n", f);
    fclose(f);
    s_expect_error(path, WISP_ERR_FORMAT, "not an HDF5 file");
    snprintf(path, sizeof path, "%s/missing.h5", wisp_test_tmpdir());
    s_expect_error(path, WISP_ERR_NOTFOUND, "cannot open");
}

/* The same fixture through the project's result writer (common/formats/results.h), with
 * row 4 never produced: the report reads what the writer writes. */
static void test_file_from_the_result_writer_reads_back_with_missing_rows(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/writer.h5", wisp_test_tmpdir());
    wisp_results_opts_t o = wisp_results_default_opts();
    o.path = path;
    o.n_rows = N;
    o.n_classes = C;
    o.classes = (const char *const *)s_classes;
    o.has_true_label = 1;
    o.fingerprint = "test";
    wisp_results_attr_t attrs[1] = {{"model_sha256", "abc123"}};
    o.attrs = attrs;
    o.n_attrs = 1;
    wisp_error_t e = {0};
    wisp_results_t *w = wisp_results_open(&o, &e);
    if (!w)
        fail_msg("%s", e.msg);
    float probs[C] = {0.2f, 0.3f, 0.5f};
    char pbuf[N][24];
    for (int i = 0; i < N; i++) {
        if (i == 4)
            continue;
        snprintf(pbuf[i], sizeof pbuf[i], "clips/%d.wav", i);
        wisp_result_row_t row = {0};
        row.index = (size_t)i;
        row.path = pbuf[i];
        row.label = s_label[i];
        row.score = s_score[i];
        row.probs = s_status[i] ? NULL : probs;
        row.logits = s_status[i] ? NULL : probs;
        row.duration = 2.0f;
        row.status = (int8_t)(s_status[i] ? WISP_ERR_AUDIO : 0);
        row.error = s_status[i] ? "clips/7.wav: not audio" : NULL;
        row.true_label = s_true[i];
        assert_int_equal(wisp_results_put(w, &row, &e), WISP_OK);
    }
    if (wisp_results_finish(w, "{\"files\":9,\"files_per_s\":42.5}",
                            WISP_RESULTS_FINISH_ALLOW_MISSING, &e) != WISP_OK)
        fail_msg("%s", e.msg);
    wisp_results_destroy(&w);

    wisp_report_results_t *r = wisp_report_results_load(path, &e);
    if (!r)
        fail_msg("%s", e.msg);
    /* Row 4 (true 1, predicted 2) is gone from the scored rows: 6 scored, 5 correct. */
    assert_int_equal(r->n_ok, 7);
    assert_int_equal(r->n_error, 2);
    assert_int_equal(r->n_missing, 1);
    assert_int_equal(r->n_scored, 6);
    assert_int_equal(r->n_correct, 5);
    assert_int_equal(r->file_confusion, 1); /* the writer's matrix agrees with ours */
    assert_true(fabs(r->recall[1] - 1.0) < 1e-12);
    assert_true(fabs(r->total_duration - 14.0) < 1e-9);
    assert_non_null(r->summary_json);
    FILE *out = tmpfile();
    wisp_report_results_print(r, out, 0);
    rewind(out);
    char text[8192] = {0};
    assert_true(fread(text, 1, sizeof text - 1, out) > 0);
    fclose(out);
    assert_non_null(strstr(text, "1 missing"));
    assert_non_null(strstr(text, "files_per_s=42.5"));
    assert_non_null(strstr(text, "model_sha256 = abc123"));
    wisp_report_results_destroy(&r);
}

/* ---- training directory ---- */

static const char *s_train_dir(const char *name, const char *metrics, const char *adapter,
                               const char *head)
{
    static char dir[512];
    char path[1024];
    snprintf(dir, sizeof dir, "%s/%s", wisp_test_tmpdir(), name);
    snprintf(path, sizeof path, "%s/adapter", dir);
    assert_int_equal(wisp_mkdir_p(path, NULL), WISP_OK);
    snprintf(path, sizeof path, "%s/head", dir);
    assert_int_equal(wisp_mkdir_p(path, NULL), WISP_OK);
    struct {
        const char *rel, *text;
    } files[] = {{"metrics.jsonl", metrics},
                 {"adapter/adapter_config.json", adapter},
                 {"head/head_config.json", head}};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].rel);
        remove(path);
        if (files[i].text)
            assert_int_equal(
                wisp_write_file_atomic(path, files[i].text, strlen(files[i].text), NULL), WISP_OK);
    }
    return dir;
}

static const char s_metrics[] =
    "{\"type\":\"step\",\"step\":1,\"epoch\":0,\"loss\":2.0,\"lr\":0.001,\"acc\":0.25,"
    "\"clips_per_s\":10,\"grad_norm\":1.5}\n"
    "{\"type\":\"step\",\"step\":2,\"epoch\":0,\"loss\":1.5,\"lr\":0.001,\"acc\":0.5,"
    "\"clips_per_s\":20,\"grad_norm\":1.0}\n"
    "\n"
    "{\"type\":\"eval\",\"step\":2,\"epoch\":0,\"val_loss\":1.4,\"val_acc\":0.6}\n"
    "{\"type\":\"note\",\"text\":\"checkpoint saved\"}\n"
    "{\"type\":\"step\",\"step\":3,\"epoch\":1,\"loss\":1.0,\"acc\":0.75,\"clips_per_s\":30}\n"
    "{\"type\":\"step\",\"step\":4,\"epoch\":1,\"loss\":0.5,\"acc\":1.0,\"clips_per_s\":40}\n"
    "{\"type\":\"eval\",\"step\":4,\"epoch\":1,\"val_loss\":0.9,\"val_acc\":0.8}\n";

static const char s_adapter[] =
    "{\"config\":{\"architecture\":\"bottleneck\",\"reduction_factor\":16,\"non_linearity\":"
    "\"relu\",\"output_adapter\":true},\"hidden_size\":384,\"model_type\":\"whisper\","
    "\"name\":\"demo\",\"version\":\"adapters.1.0.0\"}";
static const char s_head[] =
    "{\"num_labels\":3,\"id2label\":{\"2\":\"chirp_up\",\"0\":\"tone\",\"1\":\"noise\"}}";

static void test_training_directory_curves_evals_and_labels(void **state)
{
    (void)state;
    const char *dir = s_train_dir("train_ok", s_metrics, s_adapter, s_head);
    wisp_error_t e = {0};
    wisp_report_train_t *t = wisp_report_train_load(dir, &e);
    if (!t)
        fail_msg("%s", e.msg);
    assert_int_equal(t->n_steps, 4);
    assert_int_equal(t->n_evals, 2);
    assert_int_equal(t->n_other, 1);
    assert_int_equal(t->steps[3].step, 4);
    assert_true(t->steps[3].loss == 0.5);
    assert_true(isnan(t->steps[2].lr)); /* absent field */
    assert_true(t->evals[1].val_acc == 0.8);
    assert_int_equal(t->n_labels, 3);
    assert_string_equal(t->labels[0], "tone");
    assert_string_equal(t->labels[2], "chirp_up");
    assert_non_null(t->adapter_config);

    FILE *out = tmpfile();
    wisp_report_train_print(t, out);
    rewind(out);
    char text[8192] = {0};
    assert_true(fread(text, 1, sizeof text - 1, out) > 0);
    fclose(out);
    assert_non_null(strstr(text, "steps: 4 logged (step 1 .. 4)"));
    assert_non_null(strstr(text, "min 0.5 (step 4)"));
    assert_non_null(strstr(text, "best val_acc 0.8000 (step 4)"));
    assert_non_null(strstr(text, "throughput mean 25.0 clips/s"));
    /* Epoch rows: epoch 0 = steps 1-2 (mean loss 1.75, val 0.6); epoch 1 = steps 3-4. */
    assert_non_null(
        strstr(text, "       0       2      1.750      0.375       15.0      1.400      0.600"));
    assert_non_null(
        strstr(text, "       1       2      0.750      0.875       35.0      0.900      0.800"));
    assert_non_null(strstr(text, "reduction_factor=16"));
    assert_non_null(strstr(text, "labels (3): 0=tone 1=noise 2=chirp_up"));
    wisp_report_train_destroy(&t);
    assert_null(t);
}

static void s_expect_train_error(const char *dir, int code, const char *needle)
{
    wisp_error_t e = {0};
    wisp_report_train_t *t = wisp_report_train_load(dir, &e);
    assert_null(t);
    if (e.code != code || !strstr(e.msg, dir) || !strstr(e.msg, needle))
        fail_msg("want code %d and '%s' naming the file, got %d: %s", code, needle, e.code, e.msg);
}

static void test_malformed_training_files_give_errors_naming_file_and_line(void **state)
{
    (void)state;
    s_expect_train_error(
        s_train_dir("bad_json", "{\"type\":\"step\",\"step\":1}\n\n{\"type\":\n", NULL, NULL),
        WISP_ERR_FORMAT, "metrics.jsonl:3: invalid JSON");
    s_expect_train_error(s_train_dir("not_object", "[1,2]\n", NULL, NULL), WISP_ERR_FORMAT,
                         "metrics.jsonl:1: not a JSON object");
    s_expect_train_error(s_train_dir("no_step", "{\"type\":\"step\",\"loss\":1}\n", NULL, NULL),
                         WISP_ERR_FORMAT, "metrics.jsonl:1: \"step\" line without a numeric");
    s_expect_train_error(s_train_dir("no_metrics", NULL, s_adapter, s_head), WISP_ERR_NOTFOUND,
                         "no metrics.jsonl");
    s_expect_train_error(s_train_dir("bad_adapter", s_metrics, "{\"config\": ", s_head),
                         WISP_ERR_FORMAT, "adapter/adapter_config.json:1: invalid JSON");
    s_expect_train_error(
        s_train_dir("bad_head", s_metrics, s_adapter, "{\"id2label\":{\"0\":\"a\",\"5\":\"b\"}}"),
        WISP_ERR_FORMAT, "head_config.json: id2label key '5'");
}

static void test_training_directory_without_configs_still_reports(void **state)
{
    (void)state;
    const char *dir = s_train_dir("only_metrics", s_metrics, NULL, NULL);
    wisp_report_train_t *t = wisp_report_train_load(dir, NULL);
    assert_non_null(t);
    assert_null(t->adapter_config);
    assert_int_equal(t->n_labels, 0);
    FILE *out = tmpfile();
    wisp_report_train_print(t, out);
    rewind(out);
    char text[8192] = {0};
    assert_true(fread(text, 1, sizeof text - 1, out) > 0);
    fclose(out);
    assert_non_null(strstr(text, "adapter: none"));
    wisp_report_train_destroy(&t);
}

static int s_is_png(const char *path)
{
    unsigned char sig[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(sig, 1, 8, f);
    fclose(f);
    return n == 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0;
}

static void test_plots_are_png_files_when_gnuplot_is_installed(void **state)
{
    (void)state;
    if (!wisp_report_have_gnuplot())
        skip();
    s_opts_t o = {0};
    wisp_report_results_t *r = wisp_report_results_load(s_write_results("plot.h5", &o), NULL);
    wisp_report_train_t *t =
        wisp_report_train_load(s_train_dir("plot_train", s_metrics, NULL, NULL), NULL);
    assert_non_null(r);
    assert_non_null(t);
    char png[512];
    wisp_error_t e = {0};
    snprintf(png, sizeof png, "%s/conf.png", wisp_test_tmpdir());
    if (wisp_report_plot_confusion(r, png, &e) != WISP_OK)
        fail_msg("%s", e.msg);
    assert_true(s_is_png(png));
    snprintf(png, sizeof png, "%s/curves.png", wisp_test_tmpdir());
    if (wisp_report_plot_train(t, png, &e) != WISP_OK)
        fail_msg("%s", e.msg);
    assert_true(s_is_png(png));
    wisp_report_results_destroy(&r);
    wisp_report_train_destroy(&t);
}

static void test_command_rejects_bad_usage_and_missing_inputs(void **state)
{
    (void)state;
    char *no_input[] = {"report", NULL};
    assert_int_equal(wisp_cmd_report(1, no_input), WISP_EXIT_USAGE);
    char *bad_opt[] = {"report", "x.h5", "--frobnicate", NULL};
    assert_int_equal(wisp_cmd_report(3, bad_opt), WISP_EXIT_USAGE);
    char *bad_num[] = {"report", "x.h5", "--max-errors", "-3", NULL};
    assert_int_equal(wisp_cmd_report(4, bad_num), WISP_EXIT_USAGE);
    char *missing[] = {"report", "/nonexistent/results.h5", NULL};
    assert_int_equal(wisp_cmd_report(2, missing), WISP_EXIT_FAILURE);
    s_opts_t o = {.omit = "status"};
    char path[512];
    snprintf(path, sizeof path, "%s", s_write_results("cmd_nostatus.h5", &o));
    char *bad_file[] = {"report", path, "--no-plots", NULL};
    assert_int_equal(wisp_cmd_report(3, bad_file), WISP_EXIT_FAILURE);
}

static int s_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int s_teardown(void **state)
{
    (void)state;
    return nftw(wisp_test_tmpdir(), s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Reads a whole stream into a static buffer. */
static const char *s_slurp(FILE *f)
{
    static char text[16384];
    rewind(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    return text;
}

/* CSV export: header, one line per row with class names, top-k, per-class probs; a
 * path with a comma and a quote is quoted; an error row has empty numbers; the notes;
 * the segments as their own table. */
static void test_csv_export_of_rows_top_k_notes_and_segments(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/csv.h5", wisp_test_tmpdir());
    wisp_results_opts_t o = wisp_results_default_opts();
    o.path = path;
    o.n_rows = 3;
    o.n_classes = C;
    o.classes = (const char *const *)s_classes;
    o.has_true_label = 1;
    o.fingerprint = "csv";
    o.top_k = 2;
    o.segments = 1;
    wisp_error_t e = {0};
    wisp_results_t *w = wisp_results_open(&o, &e);
    if (!w)
        fail_msg("%s", e.msg);
    float probs[C] = {0.25f, 0.5f, 0.25f}, p2[C] = {0.5f, 0.25f, 0.25f};
    wisp_result_segment_t seg[2] = {{0, 30, 1, 0.5f, probs}, {15, 45, 0, 0.5f, p2}};
    wisp_result_row_t rows[3] = {
        {.index = 0,
         .path = "a,\"b\".wav",
         .label = 1,
         .score = 0.5f,
         .probs = probs,
         .logits = probs,
         .duration = 45,
         .true_label = 1,
         .segments = seg,
         .n_segments = 2,
         .note = "long"},
        {.index = 1,
         .path = "bad.wav",
         .label = -1,
         .status = WISP_ERR_AUDIO,
         .error = "bad.wav: not audio",
         .duration = -1,
         .true_label = 2},
        {.index = 2,
         .path = "c.wav",
         .label = 0,
         .score = 0.5f,
         .probs = p2,
         .logits = p2,
         .duration = 2,
         .true_label = -1,
         .segments = seg + 1,
         .n_segments = 1},
    };
    for (int i = 0; i < 3; i++)
        assert_int_equal(wisp_results_put(w, &rows[i], &e), WISP_OK);
    assert_int_equal(wisp_results_finish(w, NULL, 0, &e), WISP_OK);
    wisp_results_destroy(&w);

    FILE *out = tmpfile(), *seg_out = tmpfile();
    assert_int_equal(wisp_report_results_csv(path, out, seg_out, &e), WISP_OK);
    assert_string_equal(
        s_slurp(out),
        "row,path,label,label_name,score,true_label,true_label_name,status,error,note,duration,"
        "top_1,top_1_prob,top_2,top_2_prob,prob_tone,prob_noise,prob_chirp_up\n"
        "0,\"a,\"\"b\"\".wav\",1,noise,0.5,1,noise,0,,long,45,noise,0.5,tone,0.25,0.25,0.5,0.25\n"
        "1,bad.wav,-1,,,2,chirp_up,-8,bad.wav: not audio,,-1,,,,,,,\n"
        "2,c.wav,0,tone,0.5,-1,,0,,,2,tone,0.5,noise,0.25,0.5,0.25,0.25\n");
    assert_string_equal(s_slurp(seg_out),
                        "row,path,start,end,label,label_name,score,prob_tone,prob_noise,"
                        "prob_chirp_up\n"
                        "0,\"a,\"\"b\"\".wav\",0.000000,30.000000,1,noise,0.5,0.25,0.5,0.25\n"
                        "0,\"a,\"\"b\"\".wav\",15.000000,45.000000,0,tone,0.5,0.5,0.25,0.25\n"
                        "2,c.wav,15.000000,45.000000,0,tone,0.5,0.5,0.25,0.25\n");
    fclose(out);
    fclose(seg_out);
    /* The command: --csv to a file; --segments-csv without segments is an error. */
    char csv[600], cmd_out[600];
    snprintf(csv, sizeof csv, "%s/rows.csv", wisp_test_tmpdir());
    char *argv[] = {"report", path, "--csv", csv, NULL};
    assert_int_equal(wisp_cmd_report(4, argv), WISP_EXIT_OK);
    FILE *f = fopen(csv, "r");
    assert_non_null(f);
    assert_non_null(strstr(s_slurp(f), "c.wav,0,tone"));
    fclose(f);
    snprintf(cmd_out, sizeof cmd_out, "%s/writer.h5", wisp_test_tmpdir());
    out = tmpfile();
    seg_out = tmpfile();
    wisp_error_clear(&e);
    assert_int_equal(wisp_report_results_csv(cmd_out, out, seg_out, &e), WISP_ERR_NOTFOUND);
    assert_non_null(strstr(e.msg, "no segments group"));
    fclose(out);
    fclose(seg_out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_accuracy_confusion_and_per_class_numbers),
        cmocka_unit_test(test_fixed_length_strings_read_like_variable_ones),
        cmocka_unit_test(test_results_without_true_labels_report_no_accuracy),
        cmocka_unit_test(test_results_summary_prints_accuracy_table_confusion_and_errors),
        cmocka_unit_test(test_malformed_results_files_give_errors_naming_the_file),
        cmocka_unit_test(test_file_from_the_result_writer_reads_back_with_missing_rows),
        cmocka_unit_test(test_csv_export_of_rows_top_k_notes_and_segments),
        cmocka_unit_test(test_training_directory_curves_evals_and_labels),
        cmocka_unit_test(test_malformed_training_files_give_errors_naming_file_and_line),
        cmocka_unit_test(test_training_directory_without_configs_still_reports),
        cmocka_unit_test(test_plots_are_png_files_when_gnuplot_is_installed),
        cmocka_unit_test(test_command_rejects_bad_usage_and_missing_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, s_teardown);
}
