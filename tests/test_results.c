/* Tests of common/results: the classify HDF5 file, its commit journal, resume after
 * crashes (including a killed writer and a destroyed .partial), duplicates and the
 * label metrics. Files are read back with the HDF5 C API. */
#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "base/err.h"
#include "formats/h5util.h"
#include "formats/results.h"
#include "base/util.h"

#define N 53
#define C 3
#define P 4

static const char *const s_classes[C] = {"speech", "music", "noise \xc3\xa9"};

/* Deterministic content of row i (what any run must write). Rows with i % 7 == 3
 * are decode errors. */
typedef struct {
    char path[64];
    float probs[C], logits[C], emb[P];
    int32_t label, true_label;
    float score, duration;
    int8_t status;
    char error[96];
} s_want_t;

static void s_want(size_t i, s_want_t *w)
{
    wisp_rng_t g;
    wisp_rng_seed(&g, 1000 + i);
    memset(w, 0, sizeof *w);
    snprintf(w->path, sizeof w->path, "/data/clip_%03zu.wav", i);
    w->true_label = i % 5 == 4 ? -1 : (int32_t)(wisp_rng_u64(&g) % C);
    w->duration = 0.5f + (float)i;
    if (i % 7 == 3) {
        w->status = -8; /* WISP_ERR_AUDIO */
        snprintf(w->error, sizeof w->error, "%s: cannot decode", w->path);
        w->label = -1;
        return;
    }
    float sum = 0, best = -1;
    for (int c = 0; c < C; c++) {
        w->logits[c] = 4 * wisp_rng_uniform(&g) - 2;
        w->probs[c] = expf(w->logits[c]);
        sum += w->probs[c];
    }
    for (int c = 0; c < C; c++) {
        w->probs[c] /= sum;
        if (w->probs[c] > best) {
            best = w->probs[c];
            w->label = c;
        }
    }
    w->score = best;
    for (int k = 0; k < P; k++)
        w->emb[k] = wisp_rng_normal(&g);
}

static int s_put(wisp_results_t *r, size_t i, wisp_error_t *e)
{
    s_want_t w;
    s_want(i, &w);
    wisp_result_row_t row = {.index = i,
                             .path = w.path,
                             .label = w.label,
                             .score = w.score,
                             .probs = w.status ? NULL : w.probs,
                             .logits = w.status ? NULL : w.logits,
                             .embedding = w.status ? NULL : w.emb,
                             .duration = w.duration,
                             .status = w.status,
                             .error = w.status ? w.error : NULL,
                             .true_label = w.true_label};
    return wisp_results_put(r, &row, e);
}

static wisp_results_opts_t s_opts(const char *path, const char *fingerprint, int resume)
{
    static const wisp_results_attr_t attrs[] = {
        {"config", "{\"job\": \"classify\", \"batch\": 8}"},
        {"model_sha256", "ab12"},
        {"adapter_sha256", "cd34"},
    };
    wisp_results_opts_t o = wisp_results_default_opts();
    o.path = path;
    o.n_rows = N;
    o.n_classes = C;
    o.classes = s_classes;
    o.embed_dim = P;
    o.has_true_label = 1;
    o.fingerprint = fingerprint;
    o.resume = resume;
    o.attrs = attrs;
    o.n_attrs = 3;
    o.max_pending_rows = 8; /* exercises automatic commits */
    return o;
}

static const char *s_tmp(const char *name)
{
    static char p[32][512];
    static int k;
    k = (k + 1) % 32; /* results stay valid for 31 more calls */
    snprintf(p[k], sizeof p[k], "%s/%s", wisp_test_tmpdir(), name);
    return p[k];
}

static int s_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Permutation of 0..N-1 (deterministic). */
static void s_perm(size_t *idx, uint64_t seed)
{
    wisp_rng_t g;
    wisp_rng_seed(&g, seed);
    for (size_t i = 0; i < N; i++)
        idx[i] = i;
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = (size_t)(wisp_rng_u64(&g) % (i + 1));
        size_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* An uninterrupted run writing all rows in a shuffled order. */
static void s_full_run(const char *path)
{
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-A", 0);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    size_t idx[N];
    s_perm(idx, 7);
    for (size_t k = 0; k < N; k++) {
        assert_int_equal(s_put(r, idx[k], &e), WISP_OK);
        if (k == 20)
            assert_int_equal(wisp_results_commit(r, &e), WISP_OK);
    }
    assert_int_equal(wisp_results_finish(r, "{\"files\": 53}", 0, &e), WISP_OK);
    wisp_results_destroy(&r);
    assert_null(r);
}

/* ---------------------------------------------------------------- readers */

static void s_read(hid_t f, const char *name, hid_t type, void *buf, size_t want_rows,
                   size_t want_cols)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        fail_msg("dataset %s missing", name);
    hid_t s = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    int rank = H5Sget_simple_extent_ndims(s);
    H5Sget_simple_extent_dims(s, dims, NULL);
    assert_int_equal(dims[0], want_rows);
    assert_int_equal(rank == 2 ? dims[1] : 1, want_cols);
    assert_true(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(s);
    H5Dclose(d);
}

static int64_t s_attr_i64(hid_t f, const char *name)
{
    int64_t v = -999;
    assert_int_equal(wisp_h5_attr_get_i64(f, name, &v, "test", NULL), WISP_OK);
    return v;
}

/* Checks every column of a finished file against s_want (rows in `present`, others
 * must be the missing-row values). */
static void s_check_file(const char *path, const int *present)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    int32_t label[N], tru[N];
    int8_t status[N];
    float score[N], dur[N], probs[N][C], logits[N][C], emb[N][P];
    s_read(f, "label", H5T_NATIVE_INT32, label, N, 1);
    s_read(f, "true_label", H5T_NATIVE_INT32, tru, N, 1);
    s_read(f, "status", H5T_NATIVE_INT8, status, N, 1);
    s_read(f, "score", H5T_NATIVE_FLOAT, score, N, 1);
    s_read(f, "duration", H5T_NATIVE_FLOAT, dur, N, 1);
    s_read(f, "probs", H5T_NATIVE_FLOAT, probs, N, C);
    s_read(f, "logits", H5T_NATIVE_FLOAT, logits, N, C);
    s_read(f, "embedding", H5T_NATIVE_FLOAT, emb, N, P);
    char **paths, **errs, **cls;
    size_t n1, n2, n3;
    assert_int_equal(wisp_h5_read_strings(f, "path", &paths, &n1, path, NULL), WISP_OK);
    assert_int_equal(wisp_h5_read_strings(f, "error", &errs, &n2, path, NULL), WISP_OK);
    assert_int_equal(wisp_h5_read_strings(f, "classes", &cls, &n3, path, NULL), WISP_OK);
    assert_int_equal(n1, N);
    assert_int_equal(n2, N);
    assert_int_equal(n3, C);
    for (int c = 0; c < C; c++)
        assert_string_equal(cls[c], s_classes[c]);

    int64_t n_ok = 0, n_err = 0, n_miss = 0, n_eval = 0, n_correct = 0;
    int64_t conf[C][C] = {{0}};
    for (size_t i = 0; i < N; i++) {
        s_want_t w;
        s_want(i, &w);
        if (present && !present[i]) {
            n_miss++;
            assert_int_equal(status[i], WISP_RESULTS_STATUS_MISSING);
            assert_int_equal(label[i], -1);
            assert_int_equal(tru[i], -1);
            assert_string_equal(paths[i], "");
            assert_string_equal(errs[i], "missing");
            assert_true(isnan(score[i]) && isnan(probs[i][0]) && isnan(emb[i][P - 1]));
            continue;
        }
        assert_string_equal(paths[i], w.path);
        assert_int_equal(status[i], w.status);
        assert_int_equal(label[i], w.label);
        assert_int_equal(tru[i], w.true_label);
        assert_true(dur[i] == w.duration);
        if (w.status) {
            n_err++;
            assert_string_equal(errs[i], w.error);
            assert_true(isnan(score[i]));
            for (int c = 0; c < C; c++)
                assert_true(isnan(probs[i][c]) && isnan(logits[i][c]));
            for (int k = 0; k < P; k++)
                assert_true(isnan(emb[i][k]));
            continue;
        }
        n_ok++;
        assert_string_equal(errs[i], "");
        assert_true(score[i] == w.score);
        assert_memory_equal(probs[i], w.probs, sizeof w.probs);
        assert_memory_equal(logits[i], w.logits, sizeof w.logits);
        assert_memory_equal(emb[i], w.emb, sizeof w.emb);
        if (w.true_label >= 0) {
            n_eval++;
            n_correct += w.true_label == w.label;
            conf[w.true_label][w.label]++;
        }
    }
    assert_int_equal(s_attr_i64(f, "n_ok"), n_ok);
    assert_int_equal(s_attr_i64(f, "n_error"), n_err);
    assert_int_equal(s_attr_i64(f, "n_missing"), n_miss);
    assert_int_equal(s_attr_i64(f, "n_rows"), N);
    assert_int_equal(s_attr_i64(f, "n_evaluated"), n_eval);
    if (!present) /* the fixture is not degenerate: the metrics are really tested */
        assert_true(n_eval > 10 && n_correct > 0 && n_correct < n_eval);
    double acc;
    assert_int_equal(wisp_h5_attr_get_f64(f, "accuracy", &acc, path, NULL), WISP_OK);
    if (n_eval == 0)
        assert_true(isnan(acc));
    else
        assert_true(fabs(acc - (double)n_correct / (double)n_eval) < 1e-12);
    int64_t gconf[C][C];
    float prec[C], rec[C];
    s_read(f, "confusion", H5T_NATIVE_INT64, gconf, C, C);
    s_read(f, "precision", H5T_NATIVE_FLOAT, prec, C, 1);
    s_read(f, "recall", H5T_NATIVE_FLOAT, rec, C, 1);
    for (int t = 0; t < C; t++) {
        int64_t tp = conf[t][t], pred = 0, tr = 0;
        for (int k = 0; k < C; k++) {
            assert_int_equal(gconf[t][k], conf[t][k]);
            pred += conf[k][t];
            tr += conf[t][k];
        }
        assert_true(fabsf(prec[t] - (pred ? (float)tp / (float)pred : 0.0f)) < 1e-6f);
        assert_true(fabsf(rec[t] - (tr ? (float)tp / (float)tr : 0.0f)) < 1e-6f);
    }
    char *s;
    assert_int_equal(wisp_h5_attr_get_str(f, "config", &s, path, NULL), WISP_OK);
    assert_string_equal(s, "{\"job\": \"classify\", \"batch\": 8}");
    free(s);
    assert_int_equal(wisp_h5_attr_get_str(f, "model_sha256", &s, path, NULL), WISP_OK);
    assert_string_equal(s, "ab12");
    free(s);
    assert_int_equal(wisp_h5_attr_get_str(f, "fingerprint", &s, path, NULL), WISP_OK);
    assert_string_equal(s, "fp-A");
    free(s);
    assert_int_equal(wisp_h5_attr_get_str(f, "created", &s, path, NULL), WISP_OK);
    assert_int_equal(strlen(s), 20);
    free(s);
    wisp_h5_free_strings(paths, n1);
    wisp_h5_free_strings(errs, n2);
    wisp_h5_free_strings(cls, n3);
    H5Fclose(f);
}

/* Byte-compares every dataset of two finished files, and their attributes except
 * the ones that record when/how long/how often the run went. */
static void s_check_same(const char *a, const char *b)
{
    static const char *const names[] = {"path", "error", "classes"};
    static const char *const num[] = {"label",     "true_label", "status", "score",
                                      "duration",  "probs",      "logits", "embedding",
                                      "confusion", "precision",  "recall"};
    hid_t fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT),
          fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fa >= 0 && fb >= 0);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char **sa, **sb;
        size_t na, nb;
        assert_int_equal(wisp_h5_read_strings(fa, names[k], &sa, &na, a, NULL), WISP_OK);
        assert_int_equal(wisp_h5_read_strings(fb, names[k], &sb, &nb, b, NULL), WISP_OK);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++)
            assert_string_equal(sa[i], sb[i]);
        wisp_h5_free_strings(sa, na);
        wisp_h5_free_strings(sb, nb);
    }
    for (size_t k = 0; k < sizeof num / sizeof num[0]; k++) {
        hid_t da = H5Dopen2(fa, num[k], H5P_DEFAULT), db = H5Dopen2(fb, num[k], H5P_DEFAULT);
        assert_true(da >= 0 && db >= 0);
        hid_t ta = H5Dget_type(da), sp = H5Dget_space(da);
        size_t bytes = (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(ta);
        uint8_t *ba = malloc(bytes), *bb = malloc(bytes);
        assert_true(H5Dread(da, ta, H5S_ALL, H5S_ALL, H5P_DEFAULT, ba) >= 0);
        assert_true(H5Dread(db, ta, H5S_ALL, H5S_ALL, H5P_DEFAULT, bb) >= 0);
        if (memcmp(ba, bb, bytes) != 0)
            fail_msg("dataset %s differs between %s and %s", num[k], a, b);
        free(ba);
        free(bb);
        H5Tclose(ta);
        H5Sclose(sp);
        H5Dclose(da);
        H5Dclose(db);
    }
    static const char *const sattrs[] = {"config",      "model_sha256", "adapter_sha256",
                                         "fingerprint", "wisp_version", "created",
                                         "summary"};
    for (size_t k = 0; k < sizeof sattrs / sizeof sattrs[0]; k++) {
        char *x, *y;
        assert_int_equal(wisp_h5_attr_get_str(fa, sattrs[k], &x, a, NULL), WISP_OK);
        assert_int_equal(wisp_h5_attr_get_str(fb, sattrs[k], &y, b, NULL), WISP_OK);
        if (strcmp(sattrs[k], "created") != 0)
            assert_string_equal(x, y);
        free(x);
        free(y);
    }
    static const char *const iattrs[] = {"n_rows",      "n_ok",      "n_error",  "n_missing",
                                         "n_evaluated", "n_classes", "embed_dim"};
    for (size_t k = 0; k < sizeof iattrs / sizeof iattrs[0]; k++)
        assert_int_equal(s_attr_i64(fa, iattrs[k]), s_attr_i64(fb, iattrs[k]));
    H5Fclose(fa);
    H5Fclose(fb);
}

/* ---------------------------------------------------------------- tests */

static void test_rows_put_out_of_order_read_back_in_manifest_order(void **state)
{
    (void)state;
    const char *path = s_tmp("full.h5");
    s_full_run(path);
    assert_true(s_exists(path));
    assert_false(s_exists(s_tmp("full.h5.partial")));
    assert_false(s_exists(s_tmp("full.h5.commit")));
    s_check_file(path, NULL);
    assert_true(wisp_results_is_complete(path, "fp-A"));
    assert_false(wisp_results_is_complete(path, "fp-B"));
    assert_false(wisp_results_is_complete(s_tmp("absent.h5"), "fp-A"));
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_int_equal(s_attr_i64(f, "n_resumes"), 0);
    char *s;
    assert_int_equal(wisp_h5_attr_get_str(f, "summary", &s, path, NULL), WISP_OK);
    assert_string_equal(s, "{\"files\": 53}");
    free(s);
    H5Fclose(f);
}

static void test_duplicate_rows_are_ignored_and_the_first_commit_wins(void **state)
{
    (void)state;
    const char *path = s_tmp("dup.h5");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-A", 0);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    float other[P + 2 * C] = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9};
    wisp_result_row_t late = {.index = 5,
                              .path = "late.wav",
                              .label = 0,
                              .score = 9,
                              .probs = other,
                              .logits = other,
                              .embedding = other,
                              .true_label = 0};
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(s_put(r, i, &e), WISP_OK);
        if (i == 5) /* pending duplicate */
            assert_int_equal(wisp_results_put(r, &late, &e), WISP_RESULTS_DUPLICATE);
    }
    /* committed duplicate */
    assert_int_equal(wisp_results_commit(r, &e), WISP_OK);
    assert_int_equal(wisp_results_put(r, &late, &e), WISP_RESULTS_DUPLICATE);
    assert_int_equal(wisp_results_done_count(r), N);
    assert_int_equal(e.code, WISP_OK);
    assert_int_equal(wisp_results_finish(r, "{\"files\": 53}", 0, &e), WISP_OK);
    wisp_results_destroy(&r);
    s_check_file(path, NULL);
}

/* Child process: opens fresh, puts rows [0, n_commit) of a permutation and commits,
 * puts a few more rows without committing, then dies without closing anything. */
static void s_crash_run(const char *path, size_t n_commit)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        wisp_error_t e = {0};
        wisp_results_opts_t o = s_opts(path, "fp-A", 0);
        o.max_pending_rows = 1000; /* only the explicit commit commits */
        wisp_results_t *r = wisp_results_open(&o, &e);
        if (!r)
            _exit(2);
        size_t idx[N];
        s_perm(idx, 99);
        for (size_t k = 0; k < n_commit; k++)
            if (s_put(r, idx[k], &e) != 0)
                _exit(3);
        if (wisp_results_commit(r, &e) != 0)
            _exit(4);
        for (size_t k = n_commit; k < n_commit + 5; k++)
            if (s_put(r, idx[k], &e) != 0)
                _exit(5);
        _exit(0); /* killed: no commit, no close */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Resumes, checks exactly the committed rows are done, redoes the others, finishes;
 * *st (when not NULL) gets what the resuming open did. */
static void s_resume_and_finish_stats(const char *path, size_t n_commit, wisp_results_stats_t *st)
{
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-A", 1);
    wisp_results_t *r = wisp_results_open(&o, &e);
    if (!r)
        fail_msg("resume failed: %s", e.msg);
    if (st)
        wisp_results_get_stats(r, st);
    size_t idx[N];
    s_perm(idx, 99);
    assert_int_equal(wisp_results_done_count(r), n_commit);
    for (size_t k = 0; k < N; k++)
        assert_int_equal(wisp_results_row_done(r, idx[k]), k < n_commit);
    for (size_t i = 0; i < N; i++) {
        int was_done = wisp_results_row_done(r, i);
        assert_int_equal(s_put(r, i, &e), was_done ? WISP_RESULTS_DUPLICATE : WISP_OK);
    }
    assert_int_equal(wisp_results_finish(r, "{\"files\": 53}", 0, &e), WISP_OK);
    wisp_results_destroy(&r);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_int_equal(s_attr_i64(f, "n_resumes"), 1);
    H5Fclose(f);
}

static void s_resume_and_finish(const char *path, size_t n_commit)
{
    s_resume_and_finish_stats(path, n_commit, NULL);
}

static void test_resume_after_a_killed_writer_equals_an_uninterrupted_run(void **state)
{
    (void)state;
    const char *ref = s_tmp("ref.h5"), *path = s_tmp("crash.h5");
    s_full_run(ref);
    s_crash_run(path, 30);
    assert_true(s_exists(s_tmp("crash.h5.commit")));
    assert_false(s_exists(path));
    /* Thanks to the flush at each commit, the killed writer's .partial is readable
     * and holds the committed rows (it is still not trusted by resume). */
    hid_t f = H5Fopen(s_tmp("crash.h5.partial"), H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    int32_t label[N];
    int8_t status[N];
    s_read(f, "label", H5T_NATIVE_INT32, label, N, 1);
    s_read(f, "status", H5T_NATIVE_INT8, status, N, 1);
    H5Fclose(f);
    size_t idx[N];
    s_perm(idx, 99);
    for (size_t k = 0; k < N; k++) {
        s_want_t w;
        s_want(idx[k], &w);
        assert_int_equal(status[idx[k]], k < 30 ? w.status : WISP_RESULTS_STATUS_MISSING);
        assert_int_equal(label[idx[k]], k < 30 ? w.label : -1);
    }
    s_resume_and_finish(path, 30);
    assert_false(s_exists(s_tmp("crash.h5.commit")));
    s_check_file(path, NULL);
    s_check_same(ref, path);
}

static void s_truncate(const char *path, off_t size)
{
    assert_int_equal(truncate(path, size), 0);
}

static void test_resume_rebuilds_a_truncated_or_garbage_partial_file(void **state)
{
    (void)state;
    const char *ref = s_tmp("ref2.h5"), *path = s_tmp("trunc.h5");
    const char *partial = s_tmp("trunc.h5.partial");
    s_full_run(ref);
    s_crash_run(path, 40);
    struct stat st;
    assert_int_equal(stat(partial, &st), 0);
    s_truncate(partial, st.st_size / 3);
    s_resume_and_finish(path, 40);
    s_check_same(ref, path);

    /* The same with the .partial overwritten by garbage, and then with it gone. */
    s_crash_run(path, 12);
    FILE *f = fopen(partial, "r+b");
    assert_non_null(f);
    for (int k = 0; k < 3000; k++)
        fputc(k * 131 & 0xff, f);
    fclose(f);
    s_resume_and_finish(path, 12);
    s_check_same(ref, path);
    s_crash_run(path, 1);
    assert_int_equal(unlink(partial), 0);
    s_resume_and_finish(path, 1);
    s_check_same(ref, path);
}

static void test_resume_drops_a_torn_journal_tail(void **state)
{
    (void)state;
    const char *ref = s_tmp("ref3.h5"), *path = s_tmp("torn.h5");
    const char *journal = s_tmp("torn.h5.commit");
    s_full_run(ref);
    /* A complete commit of 25 rows followed by half of a second record. */
    s_crash_run(path, 25);
    struct stat st;
    assert_int_equal(stat(journal, &st), 0);
    off_t good = st.st_size;
    int fd = open(journal, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    uint8_t junk[300];
    for (size_t k = 0; k < sizeof junk; k++)
        junk[k] = (uint8_t)(k * 7);
    memcpy(junk, "JRWR", 4); /* looks like a record frame */
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    s_resume_and_finish(path, 25);
    s_check_same(ref, path);

    /* A flipped byte inside the last committed record invalidates only that record
     * when the journal is all there is (no rollback log: the full rebuild). */
    s_crash_run(path, 25);
    assert_int_equal(unlink(s_tmp("torn.h5.undo")), 0);
    fd = open(journal, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, good - 20), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, good - 20), 1);
    close(fd);
    s_resume_and_finish(path, 0);
    s_check_same(ref, path);
}

static void test_random_journal_damage_never_crashes_or_yields_wrong_rows(void **state)
{
    (void)state;
    const char *path = s_tmp("fuzz.h5"), *journal = s_tmp("fuzz.h5.commit");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-A", 0); /* commits every 8 rows */
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    for (size_t i = 0; i < 40; i++)
        assert_int_equal(s_put(r, (i * 17) % N, &e), WISP_OK);
    wisp_results_destroy(&r); /* 5 records committed, nothing pending */
    char *orig;
    size_t len;
    assert_int_equal(wisp_read_file(journal, 1 << 24, &orig, &len, NULL), WISP_OK);
    wisp_rng_t g;
    wisp_rng_seed(&g, 3);
    int refused = 0, partial = 0;
    for (int it = 0; it < 16; it++) {
        uint8_t *buf = malloc(len);
        memcpy(buf, orig, len);
        /* One to three damaged bytes, or a truncation. */
        size_t cut = len;
        if (it % 4 == 3)
            cut = (size_t)(wisp_rng_u64(&g) % len);
        else
            for (int k = 0; k <= it % 3; k++)
                buf[wisp_rng_u64(&g) % len] ^= (uint8_t)(1 + wisp_rng_u64(&g) % 255);
        FILE *f = fopen(journal, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(buf, 1, cut, f), cut);
        fclose(f);
        free(buf);
        wisp_results_opts_t ro = s_opts(path, "fp-A", 1);
        wisp_error_clear(&e);
        r = wisp_results_open(&ro, &e);
        if (!r) {
            /* Only a damaged header may refuse, and it says so. */
            assert_int_equal(e.code, WISP_ERR_STATE);
            refused++;
            continue;
        }
        size_t done = wisp_results_done_count(r);
        assert_true(done <= 40 && done % 8 == 0); /* whole records only */
        partial += done < 40;
        int present[N];
        for (size_t i = 0; i < N; i++)
            present[i] = wisp_results_row_done(r, i);
        assert_int_equal(wisp_results_finish(r, NULL, WISP_RESULTS_FINISH_ALLOW_MISSING, &e),
                         WISP_OK);
        wisp_results_destroy(&r);
        s_check_file(path, present); /* every surviving row is exactly right */
    }
    free(orig);
    assert_true(refused + partial > 8); /* the damage was seen, not ignored */
}

static void test_fingerprint_mismatch_refuses_to_mix_runs(void **state)
{
    (void)state;
    const char *path = s_tmp("fp.h5");
    s_crash_run(path, 10);
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-B", 1);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_null(r);
    assert_int_equal(e.code, WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "fingerprint"));
    assert_non_null(strstr(e.msg, "fp-B"));
    /* A changed class list is refused too. */
    static const char *const other[C] = {"speech", "music", "noise"};
    wisp_error_clear(&e);
    o = s_opts(path, "fp-A", 1);
    o.classes = other;
    assert_null(wisp_results_open(&o, &e));
    assert_int_equal(e.code, WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "class 2"));
    /* Nothing was touched: the right run still resumes its 10 rows. */
    assert_true(s_exists(s_tmp("fp.h5.partial")));
    s_resume_and_finish(path, 10);
    s_check_file(path, NULL);
}

static void test_finish_refuses_missing_rows_unless_allowed(void **state)
{
    (void)state;
    const char *path = s_tmp("missing.h5");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-A", 0);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    int present[N];
    for (size_t i = 0; i < N; i++) {
        present[i] = i % 4 != 1;
        if (present[i])
            assert_int_equal(s_put(r, i, &e), WISP_OK);
    }
    assert_int_equal(wisp_results_finish(r, NULL, 0, &e), WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "first: row 1"));
    assert_false(s_exists(path));
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_finish(r, NULL, WISP_RESULTS_FINISH_ALLOW_MISSING, &e), WISP_OK);
    wisp_results_destroy(&r);
    s_check_file(path, present);
    assert_false(wisp_results_is_complete(path, "fp-A")); /* rows missing */
}

static void test_bad_rows_and_options_are_refused(void **state)
{
    (void)state;
    const char *path = s_tmp("bad.h5");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "", 0);
    assert_null(wisp_results_open(&o, &e));
    assert_int_equal(e.code, WISP_ERR_ARG);
    wisp_results_attr_t reserved = {"n_ok", "1"};
    o = s_opts(path, "fp", 0);
    o.attrs = &reserved;
    o.n_attrs = 1;
    wisp_error_clear(&e);
    assert_null(wisp_results_open(&o, &e));
    assert_non_null(strstr(e.msg, "'n_ok'"));

    /* An unwritable output names the file. */
    o = s_opts("/nonexistent/dir/out.h5", "fp", 0);
    wisp_error_clear(&e);
    assert_null(wisp_results_open(&o, &e));
    assert_non_null(strstr(e.msg, "/nonexistent/dir/out.h5"));
    assert_null(strstr(e.msg, ".commit")); /* never the internal journal's name */
    o = s_opts(path, "fp", 0);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    /* A second writer on the same output is refused while the first lives. */
    wisp_error_t e2 = {0};
    assert_null(wisp_results_open(&o, &e2));
    assert_int_equal(e2.code, WISP_ERR_STATE);
    float v[C + P] = {0};
    wisp_result_row_t row = {.index = N, .label = 0, .probs = v, .logits = v, .embedding = v};
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    row.index = 0;
    row.probs = NULL;
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    row.probs = v;
    row.label = C;
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    row.label = 0;
    row.true_label = C;
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    assert_false(wisp_results_row_received(r, 0));
    row.true_label = -1;
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_OK);
    assert_true(wisp_results_row_received(r, 0));
    assert_false(wisp_results_row_done(r, 0));
    wisp_results_destroy(&r);
    wisp_results_destroy(&r); /* accepts NULL */
    /* Starting over (resume 0) discards the leftovers. */
    wisp_error_clear(&e);
    r = wisp_results_open(&o, &e);
    assert_non_null(r);
    assert_int_equal(wisp_results_done_count(r), 0);
    wisp_results_destroy(&r);
}

/* ---------------------------------------------------------------- tail resume */

static void test_a_resume_after_a_killed_writer_replays_only_the_journal_tail(void **state)
{
    (void)state;
    const char *ref = s_tmp("tref.h5"), *path = s_tmp("tail.h5");
    s_full_run(ref);
    s_crash_run(path, 30);
    assert_true(s_exists(s_tmp("tail.h5.undo")));
    wisp_results_stats_t st;
    s_resume_and_finish_stats(path, 30, &st);
    /* Killed right after a checkpointed commit: nothing to replay, no rebuild. */
    assert_int_equal(st.resume_tail, 1);
    assert_int_equal(st.replay_rows, 0);
    assert_false(s_exists(s_tmp("tail.h5.undo")));
    s_check_file(path, NULL);
    s_check_same(ref, path);
}

/* Child: commits rows [0, 10) of the permutation (checkpointed), then makes the next
 * checkpoint fail (a directory where the log's temporary file goes), commits rows
 * [10, 30) (journal and HDF5 written, the checkpoint still the first one) and dies. */
static void s_crash_after_a_missed_checkpoint(const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        wisp_error_t e = {0};
        wisp_results_opts_t o = s_opts(path, "fp-A", 0);
        o.max_pending_rows = 1000;
        wisp_results_t *r = wisp_results_open(&o, &e);
        size_t idx[N];
        s_perm(idx, 99);
        for (size_t k = 0; r && k < 30; k++) {
            if (s_put(r, idx[k], &e) != 0)
                _exit(3);
            if (k == 9 &&
                (wisp_results_commit(r, &e) != 0 || mkdir(s_tmp("miss.h5.undo.tmp"), 0700) != 0))
                _exit(4);
        }
        if (!r || wisp_results_commit(r, &e) != 0)
            _exit(5);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void
test_rows_committed_after_the_last_checkpoint_are_replayed_into_the_rolled_back_file(void **state)
{
    (void)state;
    const char *ref = s_tmp("mref.h5"), *path = s_tmp("miss.h5");
    s_full_run(ref);
    s_crash_after_a_missed_checkpoint(path);
    assert_int_equal(rmdir(s_tmp("miss.h5.undo.tmp")), 0);
    /* The .partial holds all 30 rows, its checkpoint only 10: the rollback takes the
     * file back to 10 rows and the journal's last record brings the other 20. */
    wisp_results_stats_t st;
    s_resume_and_finish_stats(path, 30, &st);
    assert_int_equal(st.resume_tail, 1);
    assert_int_equal(st.replay_rows, 20);
    s_check_file(path, NULL);
    s_check_same(ref, path);
}

static int s_copy(const char *from, const char *to)
{
    char *data;
    size_t len;
    if (wisp_read_file(from, (size_t)1 << 30, &data, &len, NULL) != WISP_OK)
        return -1;
    int rc = wisp_write_file_atomic(to, data, len, NULL);
    free(data);
    return rc;
}

static void test_a_stale_or_damaged_partial_falls_back_to_the_full_rebuild(void **state)
{
    (void)state;
    const char *ref = s_tmp("sref.h5"), *path = s_tmp("stale.h5");
    const char *partial = s_tmp("stale.h5.partial"), *old = s_tmp("stale.old");
    s_full_run(ref);
    /* Stale: the .partial of an earlier checkpoint put back beside a newer log. */
    s_crash_run(path, 12);
    assert_int_equal(s_copy(partial, old), 0);
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp-A", 1);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    for (size_t i = 0; i < 40; i++)
        if (!wisp_results_row_done(r, i))
            assert_int_equal(s_put(r, i, &e), WISP_OK);
    assert_int_equal(wisp_results_commit(r, &e), WISP_OK);
    size_t done = wisp_results_done_count(r);
    wisp_results_destroy(&r);
    assert_int_equal(s_copy(old, partial), 0);
    wisp_results_stats_t st;
    o = s_opts(path, "fp-A", 1);
    r = wisp_results_open(&o, &e);
    assert_non_null(r);
    wisp_results_get_stats(r, &st);
    assert_int_equal(st.resume_tail, 0);
    assert_int_equal(wisp_results_done_count(r), done);
    wisp_results_destroy(&r);

    /* Damaged: bytes of the .partial changed behind the writer's back. */
    s_crash_run(path, 20);
    FILE *f = fopen(partial, "r+b");
    assert_non_null(f);
    for (int k = 0; k < 64; k++)
        fputc(0x5a, f);
    fclose(f);
    s_resume_and_finish_stats(path, 20, &st);
    assert_int_equal(st.resume_tail, 0);
    s_check_same(ref, path);

    /* A rollback log of another boot (another host, or the page cache lost) is not
     * trusted: its boot id is the first thing after the magic. */
    s_crash_run(path, 25);
    int fd = open(s_tmp("stale.h5.undo"), O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "00000000", 8, 8), 8);
    close(fd);
    s_resume_and_finish_stats(path, 25, &st);
    assert_int_equal(st.resume_tail, 0);
    s_check_same(ref, path);
}

#define KN     3000 /* rows of the kill -9 campaign */
#define KSHARD 16

static wisp_results_opts_t s_kill_opts(const char *path)
{
    wisp_results_opts_t o = s_opts(path, "fp-K", 1);
    o.n_rows = KN;
    o.max_pending_rows = 64;
    return o;
}

/* Child of the kill campaign: resumes (or starts), appends "tail replayed" to the
 * stats file, then puts the missing rows in a shuffled shard order and finishes. */
static void s_kill_child(const char *path, const char *stats)
{
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_kill_opts(path);
    wisp_results_t *r = wisp_results_open(&o, &e);
    if (!r)
        _exit(2);
    wisp_results_stats_t st;
    wisp_results_get_stats(r, &st);
    FILE *f = fopen(stats, "a");
    if (!f)
        _exit(3);
    fprintf(f, "%d %zu\n", st.resume_tail, st.replay_rows);
    fclose(f);
    const size_t n_shards = (KN + KSHARD - 1) / KSHARD; /* 188, coprime to 37 */
    for (size_t k = 0; k < n_shards; k++) {
        size_t s0 = (k * 37 % n_shards) * KSHARD;
        for (size_t i = s0; i < KN && i < s0 + KSHARD; i++)
            if (!wisp_results_row_done(r, i) && s_put(r, i, &e) < 0)
                _exit(4);
    }
    _exit(wisp_results_finish(r, "{}", 0, &e) == WISP_OK ? 0 : 5);
}

static void test_kill_9_at_random_instants_then_resume_equals_an_uninterrupted_run(void **state)
{
    (void)state;
    const char *ref = s_tmp("kref.h5"), *path = s_tmp("kill.h5"), *stats = s_tmp("kill.stats");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_kill_opts(ref);
    o.resume = 0;
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    for (size_t i = 0; i < KN; i++)
        assert_int_equal(s_put(r, i, &e), WISP_OK);
    assert_int_equal(wisp_results_finish(r, "{}", 0, &e), WISP_OK);
    wisp_results_destroy(&r);
    wisp_rng_t g;
    wisp_rng_seed(&g, 11);
    /* Kill instants are drawn in [0, max_ns); a fast, quiet machine may finish the whole
     * job within a few of them (CI did: 4 kills at 40 ms), so the campaign starts over
     * from nothing with half the window until it has killed at least 5 times. */
    int finished = 0, kills = 0;
    for (long max_ns = 40000000; kills < 5; max_ns /= 2) {
        assert_true(max_ns >= 100000); /* 0.1 ms: the job cannot be that fast */
        static const char *const sfx[] = {"", ".partial", ".commit", ".undo", ".undo.tmp"};
        for (size_t k = 0; k < sizeof sfx / sizeof *sfx; k++) {
            char p[1200];
            snprintf(p, sizeof p, "%s%s", path, sfx[k]);
            unlink(p);
        }
        unlink(stats);
        finished = kills = 0;
        for (int it = 0; it < 60 && !finished; it++) {
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0)
                s_kill_child(path, stats);
            /* Somewhere in open (rollback, replay), a put, a commit or a checkpoint. */
            struct timespec ts = {0, (long)(wisp_rng_u64(&g) % (uint64_t)max_ns)};
            nanosleep(&ts, NULL);
            kill(pid, SIGKILL);
            int st;
            assert_int_equal(waitpid(pid, &st, 0), pid);
            if (WIFEXITED(st)) {
                assert_int_equal(WEXITSTATUS(st), 0);
                finished = 1;
            } else {
                kills++;
            }
        }
    }
    if (!finished) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            s_kill_child(path, stats);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    s_check_same(ref, path);
    /* The resumes took the tail path (a kill before the first checkpoint of a run
     * leaves no log: those rebuild). */
    FILE *f = fopen(stats, "r");
    assert_non_null(f);
    int tail, n_tail = 0, lines = 0;
    size_t replayed;
    while (fscanf(f, "%d %zu", &tail, &replayed) == 2) {
        lines++;
        n_tail += tail;
    }
    fclose(f);
    printf("kill -9 campaign: %d kills, %d opens, %d resumed from the checkpoint\n", kills, lines,
           n_tail);
    assert_true(kills >= 5);
    assert_true(n_tail >= lines / 2);
}

/* ---------------------------------------------------------------- top-k, segments */

/* Segments of row i (ok rows only): i % 3 + 1 windows of 30 s with a 10 s hop; window
 * k's probs are a rotation of the row's probs, so labels differ between windows. */
static uint32_t s_want_segs(size_t i, wisp_result_segment_t *seg, float (*probs)[C])
{
    s_want_t w;
    s_want(i, &w);
    if (w.status)
        return 0;
    uint32_t n = (uint32_t)(i % 3) + 1;
    for (uint32_t k = 0; k < n; k++) {
        int best = 0;
        for (int c = 0; c < C; c++) {
            probs[k][c] = w.probs[(c + (int)k) % C];
            if (probs[k][c] > probs[k][best])
                best = c;
        }
        seg[k] = (wisp_result_segment_t){.start = 10.0 * k,
                                         .end = 10.0 * k + 30.0,
                                         .label = best,
                                         .score = probs[k][best],
                                         .probs = probs[k]};
    }
    return n;
}

static int s_put_seg(wisp_results_t *r, size_t i, wisp_error_t *e)
{
    s_want_t w;
    s_want(i, &w);
    wisp_result_segment_t seg[3];
    float probs[3][C];
    wisp_result_row_t row = {.index = i,
                             .path = w.path,
                             .label = w.label,
                             .score = w.score,
                             .probs = w.status ? NULL : w.probs,
                             .logits = w.status ? NULL : w.logits,
                             .embedding = w.status ? NULL : w.emb,
                             .duration = w.duration,
                             .status = w.status,
                             .error = w.status ? w.error : NULL,
                             .true_label = w.true_label,
                             .segments = seg,
                             .n_segments = s_want_segs(i, seg, probs)};
    return wisp_results_put(r, &row, e);
}

static wisp_results_opts_t s_seg_opts(const char *path, int resume)
{
    wisp_results_opts_t o = s_opts(path, "fp-A", resume);
    o.segments = 1;
    o.top_k = 2;
    return o;
}

/* Checks label_name, top_k_label/top_k_prob and the segments group of a finished file. */
static void s_check_segments_file(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    int32_t topl[N][2];
    float topp[N][2];
    s_read(f, "top_k_label", H5T_NATIVE_INT32, topl, N, 2);
    s_read(f, "top_k_prob", H5T_NATIVE_FLOAT, topp, N, 2);
    char **names;
    size_t nn;
    assert_int_equal(wisp_h5_read_strings(f, "label_name", &names, &nn, path, NULL), WISP_OK);
    assert_int_equal(nn, N);
    size_t M = 0;
    for (size_t i = 0; i < N; i++) {
        s_want_t w;
        s_want(i, &w);
        wisp_result_segment_t seg[3];
        float probs[3][C];
        M += s_want_segs(i, seg, probs);
        if (w.status) {
            assert_string_equal(names[i], "");
            assert_true(topl[i][0] == -1 && topl[i][1] == -1 && isnan(topp[i][0]));
            continue;
        }
        assert_string_equal(names[i], s_classes[w.label]);
        assert_int_equal(topl[i][0], w.label);
        assert_true(topp[i][0] == w.probs[w.label]);
        int second = -1;
        for (int c = 0; c < C; c++)
            if (c != w.label && (second < 0 || w.probs[c] > w.probs[second]))
                second = c;
        assert_int_equal(topl[i][1], second);
        assert_true(topp[i][1] == w.probs[second]);
    }
    assert_true(M > N); /* rows with several windows are in the fixture */
    assert_int_equal(s_attr_i64(f, "n_segments"), (int64_t)M);
    int64_t *row = malloc(M * sizeof *row);
    double *start = malloc(M * sizeof *start), *end = malloc(M * sizeof *end);
    int32_t *label = malloc(M * sizeof *label);
    float *score = malloc(M * sizeof *score), *sp = malloc(M * C * sizeof *sp);
    s_read(f, "segments/row", H5T_NATIVE_INT64, row, M, 1);
    s_read(f, "segments/start", H5T_NATIVE_DOUBLE, start, M, 1);
    s_read(f, "segments/end", H5T_NATIVE_DOUBLE, end, M, 1);
    s_read(f, "segments/label", H5T_NATIVE_INT32, label, M, 1);
    s_read(f, "segments/score", H5T_NATIVE_FLOAT, score, M, 1);
    s_read(f, "segments/probs", H5T_NATIVE_FLOAT, sp, M, C);
    char **snames;
    size_t ns;
    assert_int_equal(wisp_h5_read_strings(f, "segments/label_name", &snames, &ns, path, NULL), 0);
    assert_int_equal(ns, M);
    size_t m = 0;
    for (size_t i = 0; i < N; i++) {
        wisp_result_segment_t seg[3];
        float probs[3][C];
        uint32_t n = s_want_segs(i, seg, probs);
        for (uint32_t k = 0; k < n; k++, m++) {
            assert_int_equal(row[m], (int64_t)i);
            assert_true(start[m] == seg[k].start && end[m] == seg[k].end);
            assert_int_equal(label[m], seg[k].label);
            assert_string_equal(snames[m], s_classes[seg[k].label]);
            assert_true(score[m] == seg[k].score);
            assert_memory_equal(sp + m * C, probs[k], sizeof probs[k]);
        }
    }
    assert_int_equal(m, M);
    wisp_h5_free_strings(snames, ns);
    wisp_h5_free_strings(names, nn);
    free(row);
    free(start);
    free(end);
    free(label);
    free(score);
    free(sp);
    H5Fclose(f);
}

static void test_label_name_top_k_and_segments_are_written_sorted_by_row(void **state)
{
    (void)state;
    const char *path = s_tmp("seg.h5");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_seg_opts(path, 0);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    size_t idx[N];
    s_perm(idx, 5); /* segments arrive out of row order and must come out sorted */
    for (size_t k = 0; k < N; k++)
        assert_int_equal(s_put_seg(r, idx[k], &e), WISP_OK);
    assert_int_equal(wisp_results_finish(r, NULL, 0, &e), WISP_OK);
    wisp_results_destroy(&r);
    s_check_segments_file(path);
    s_check_file(path, NULL);
}

/* A killed writer's committed rows keep their segments, uncommitted rows lose theirs
 * with the row, and the resumed file has every segment exactly once. */
static void test_segments_are_committed_with_their_row_and_survive_a_killed_writer(void **state)
{
    (void)state;
    const char *path = s_tmp("segcrash.h5");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        wisp_error_t e = {0};
        wisp_results_opts_t o = s_seg_opts(path, 0);
        o.max_pending_rows = 1000;
        wisp_results_t *r = wisp_results_open(&o, &e);
        if (!r)
            _exit(2);
        size_t idx[N];
        s_perm(idx, 99);
        for (size_t k = 0; k < 30; k++)
            if (s_put_seg(r, idx[k], &e) != 0)
                _exit(3);
        if (wisp_results_commit(r, &e) != 0)
            _exit(4);
        for (size_t k = 30; k < 35; k++)
            if (s_put_seg(r, idx[k], &e) != 0)
                _exit(5);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_seg_opts(path, 1);
    o.segments = 0; /* a run without segments must not resume this one */
    assert_null(wisp_results_open(&o, &e));
    assert_int_equal(e.code, WISP_ERR_STATE);
    assert_non_null(strstr(e.msg, "segments"));
    o = s_seg_opts(path, 1);
    wisp_error_clear(&e);
    wisp_results_t *r = wisp_results_open(&o, &e);
    if (!r)
        fail_msg("resume failed: %s", e.msg);
    assert_int_equal(wisp_results_done_count(r), 30);
    for (size_t i = 0; i < N; i++) {
        int was_done = wisp_results_row_done(r, i);
        assert_int_equal(s_put_seg(r, i, &e), was_done ? WISP_RESULTS_DUPLICATE : WISP_OK);
    }
    assert_int_equal(wisp_results_finish(r, NULL, 0, &e), WISP_OK);
    wisp_results_destroy(&r);
    s_check_segments_file(path);
}

static void test_bad_segments_are_refused(void **state)
{
    (void)state;
    const char *path = s_tmp("badseg.h5");
    wisp_error_t e = {0};
    wisp_results_opts_t o = s_opts(path, "fp", 0);
    o.top_k = C + 1;
    assert_null(wisp_results_open(&o, &e));
    assert_non_null(strstr(e.msg, "top_k"));
    o.top_k = 0;
    wisp_error_clear(&e);
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    float v[2 * C + P] = {0.5f, 0.25f, 0.25f};
    wisp_result_segment_t g = {.start = 0, .end = 30, .label = 0, .score = 0.5f, .probs = v};
    wisp_result_row_t row = {.index = 0,
                             .label = 0,
                             .probs = v,
                             .logits = v,
                             .embedding = v,
                             .true_label = -1,
                             .segments = &g,
                             .n_segments = 1};
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG); /* no segments group */
    assert_non_null(strstr(e.msg, "no segments group"));
    wisp_results_destroy(&r);
    o.segments = 1;
    wisp_error_clear(&e);
    r = wisp_results_open(&o, &e);
    assert_non_null(r);
    g.label = C;
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    g.label = 0;
    g.end = 0;
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    g.end = NAN;
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG);
    g.end = 30;
    row.status = -8;
    row.probs = row.logits = row.embedding = NULL;
    wisp_error_clear(&e);
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_ERR_ARG); /* error rows have none */
    assert_false(wisp_results_row_received(r, 0));
    row.n_segments = 0;
    assert_int_equal(wisp_results_put(r, &row, &e), WISP_OK);
    wisp_results_destroy(&r);
}

/* Resident memory in kB from /proc/self/status ("VmRSS"), -1 when unknown. */
static long s_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    if (f)
        fclose(f);
    return v;
}

/* Rows arriving in shuffled 64-row shards leave most HDF5 chunks partly written for a
 * long time. With the chunk cache's w0 = 1 those chunks were never evicted and the
 * writer grew with the file (~165 MB of growth for these 138 MB of embeddings); with
 * w0 = 0.75 the growth stays ~50 MB (16 MiB cache per dataset + the pending rows).
 * Skipped under AddressSanitizer, whose quarantine keeps freed memory resident. */
static void test_out_of_order_rows_keep_the_writer_memory_bounded(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#endif
    enum { ROWS = 90000, EMB = 384, SH = 64 };
    const char *path = s_tmp("mem.h5");
    wisp_results_opts_t o = wisp_results_default_opts();
    o.path = path;
    o.n_rows = ROWS;
    o.n_classes = C;
    o.classes = s_classes;
    o.embed_dim = EMB;
    o.fingerprint = "fp-mem";
    float *v = calloc(2 * C + EMB, sizeof *v);
    size_t n_sh = (ROWS + SH - 1) / SH, *order = malloc(n_sh * sizeof *order);
    assert_non_null(v);
    assert_non_null(order);
    wisp_rng_t g;
    wisp_rng_seed(&g, 7);
    for (size_t s = 0; s < n_sh; s++)
        order[s] = s;
    for (size_t s = n_sh - 1; s > 0; s--) {
        size_t j = (size_t)(wisp_rng_u64(&g) % (s + 1)), t = order[s];
        order[s] = order[j];
        order[j] = t;
    }
    wisp_error_t e = {0};
    long rss0 = s_rss_kb();
    wisp_results_t *r = wisp_results_open(&o, &e);
    assert_non_null(r);
    long peak = rss0;
    for (size_t s = 0; s < n_sh; s++) {
        for (size_t i = order[s] * SH; i < ROWS && i < (order[s] + 1) * SH; i++) {
            wisp_result_row_t row = {
                .index = i, .path = "/a.wav", .probs = v, .logits = v + C, .embedding = v + 2 * C};
            assert_int_equal(wisp_results_put(r, &row, &e), 0);
        }
        if (s % 256 == 0) {
            long now = s_rss_kb();
            peak = now > peak ? now : peak;
        }
    }
    long now = s_rss_kb();
    peak = now > peak ? now : peak;
    assert_int_equal(wisp_results_finish(r, NULL, 0, &e), 0);
    wisp_results_destroy(&r);
    free(v);
    free(order);
    print_message("writer growth %ld kB for %d rows of %d floats\n", peak - rss0, ROWS, EMB);
    assert_true(rss0 > 0);
    assert_true(peak - rss0 < 90 * 1024);
}

int main(void)
{
    wisp_h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_put_out_of_order_read_back_in_manifest_order),
        cmocka_unit_test(test_duplicate_rows_are_ignored_and_the_first_commit_wins),
        cmocka_unit_test(test_resume_after_a_killed_writer_equals_an_uninterrupted_run),
        cmocka_unit_test(test_resume_rebuilds_a_truncated_or_garbage_partial_file),
        cmocka_unit_test(test_resume_drops_a_torn_journal_tail),
        cmocka_unit_test(test_a_resume_after_a_killed_writer_replays_only_the_journal_tail),
        cmocka_unit_test(
            test_rows_committed_after_the_last_checkpoint_are_replayed_into_the_rolled_back_file),
        cmocka_unit_test(test_a_stale_or_damaged_partial_falls_back_to_the_full_rebuild),
        cmocka_unit_test(test_kill_9_at_random_instants_then_resume_equals_an_uninterrupted_run),
        cmocka_unit_test(test_random_journal_damage_never_crashes_or_yields_wrong_rows),
        cmocka_unit_test(test_fingerprint_mismatch_refuses_to_mix_runs),
        cmocka_unit_test(test_finish_refuses_missing_rows_unless_allowed),
        cmocka_unit_test(test_bad_rows_and_options_are_refused),
        cmocka_unit_test(test_label_name_top_k_and_segments_are_written_sorted_by_row),
        cmocka_unit_test(test_segments_are_committed_with_their_row_and_survive_a_killed_writer),
        cmocka_unit_test(test_bad_segments_are_refused),
        cmocka_unit_test(test_out_of_order_rows_keep_the_writer_memory_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
