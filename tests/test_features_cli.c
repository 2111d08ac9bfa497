/* Tests of `wisp features` (jobs/cli/cmd_features.c), run in-process: the HDF5 layout, one
 * row per input with bad inputs failing alone, the 30 s note, truncated mode's zero
 * fill, exit codes, and that the output appears only when complete. */
#include "testutil.h"

#include <hdf5.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audio/audio.h"
#include "cli/commands.h"
#include "audio/mel.h"
#include "base/util.h"

static char s_paths[12][512];

static const char *s_tmp(int slot, const char *name)
{
    snprintf(s_paths[slot], sizeof s_paths[slot], "%s/%s", wisp_test_tmpdir(), name);
    return s_paths[slot];
}

static float *s_noise(uint64_t seed, size_t n)
{
    float *x = malloc(sizeof(float) * n);
    wisp_rng_t r;
    wisp_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = 0.8f * (wisp_rng_uniform(&r) - 0.5f);
    return x;
}

static void s_write(const char *path, int format, int rate, int channels, const float *x,
                    sf_count_t frames)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf)
        fail_msg("%s: %s", path, sf_strerror(NULL));
    if (frames)
        assert_int_equal(sf_writef_float(sf, x, frames), frames);
    sf_close(sf);
}

static void s_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int s_run(int argc, const char **argv)
{
    return wisp_cmd_features(argc, (char **)argv);
}

static void s_read(hid_t f, const char *name, hid_t mtype, void *buf)
{
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0)
        fail_msg("dataset %s missing", name);
    assert_true(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(ds);
}

static int s_attr_int(hid_t f, const char *name)
{
    int v = -1;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(a);
    return v;
}

/* Reads a vlen string column of n rows; free with H5Dvlen_reclaim via s_free_strings. */
static char **s_read_strings(hid_t f, const char *name, int n)
{
    char **s = calloc((size_t)n, sizeof *s);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    s_read(f, name, t, s);
    H5Tclose(t);
    return s;
}

static void s_free_strings(char **s, int n)
{
    for (int i = 0; i < n; i++)
        H5free_memory(s[i]);
    free(s);
}

/* Features of the file's `features` dataset: shape and data. */
static float *s_read_features(hid_t f, hsize_t dims[3])
{
    hid_t ds = H5Dopen2(f, "features", H5P_DEFAULT);
    assert_true(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    assert_int_equal(H5Sget_simple_extent_ndims(sp), 3);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    float *x = malloc(sizeof(float) * dims[0] * dims[1] * dims[2]);
    assert_true(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(ds);
    return x;
}

static void test_bad_inputs_fail_alone_and_good_rows_hold_exact_features(void **state)
{
    (void)state;
    /* good inputs */
    float *x16 = s_noise(1, 40000);
    s_write(s_tmp(0, "good16k.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, x16, 40000);
    float *x44 = s_noise(2, 44100 * 2 * 2);
    s_write(s_tmp(1, "good44k.flac"), SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 44100, 2, x44, 88200);
    free(x44);
    float *x31 = s_noise(3, 496000);
    s_write(s_tmp(2, "long31.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, x31, 496000);
    /* bad inputs, each with the word its error must contain */
    static const char *reasons[] = {"no such file",    "empty file", "not a readable audio file",
                                    "no audio frames", "truncated",  "is a directory"};
    s_tmp(3, "missing.wav");
    s_write_text(s_tmp(4, "empty.wav"), "");
    s_write_text(s_tmp(5, "text.wav"), "just some text in a file named .wav\n");
    s_write(s_tmp(6, "nodata.wav"), SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, NULL, 0);
    float *xc = s_noise(4, 64000);
    s_write(s_tmp(7, "cut.flac"), SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, xc, 64000);
    free(xc);
    struct stat st;
    assert_int_equal(stat(s_paths[7], &st), 0);
    assert_int_equal(truncate(s_paths[7], st.st_size / 2), 0);
    assert_int_equal(mkdir(s_tmp(8, "dir.wav"), 0755), 0);
    const char *out = s_tmp(9, "feats.h5");

    const char *argv[] = {"features", "-q",       "-o",       out,        s_paths[0],
                          s_paths[3], s_paths[1], s_paths[4], s_paths[5], s_paths[2],
                          s_paths[6], s_paths[7], s_paths[8]};
    int n = 9;
    assert_int_equal(s_run(13, argv), WISP_EXIT_PARTIAL);

    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    assert_int_equal(access(tmp, F_OK), -1); /* renamed away */
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dims[3];
    float *feat = s_read_features(f, dims);
    assert_int_equal(dims[0], n);
    assert_int_equal(dims[1], 80);
    assert_int_equal(dims[2], 3000);
    int8_t status[9];
    int32_t num_frames[9];
    s_read(f, "status", H5T_NATIVE_INT8, status);
    s_read(f, "num_frames", H5T_NATIVE_INT32, num_frames);
    char **paths = s_read_strings(f, "path", n);
    char **errors = s_read_strings(f, "error", n);
    assert_int_equal(s_attr_int(f, "n_mels"), 80);
    assert_int_equal(s_attr_int(f, "truncate"), 0);
    assert_int_equal(s_attr_int(f, "sample_rate"), 16000);
    assert_true(H5Aexists(f, "wisp_version") > 0);
    H5Fclose(f);

    /* rows follow the command line: 0 good16k, 2 good44k, 5 long31 are ok */
    const int ok_rows[] = {0, 2, 5};
    for (int i = 0; i < n; i++)
        assert_string_equal(paths[i], argv[4 + i]);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(status[ok_rows[k]], 0);
        assert_int_equal(num_frames[ok_rows[k]], 3000);
    }
    assert_string_equal(errors[0], "");
    assert_string_equal(errors[2], "");
    assert_non_null(strstr(errors[5], "truncated to 30 s"));
    const int bad_rows[] = {1, 3, 4, 6, 7, 8}; /* same order as reasons[] */
    size_t row = (size_t)80 * 3000;
    for (int k = 0; k < 6; k++) {
        int r = bad_rows[k];
        assert_true(status[r] < 0); /* a WISP_ERR_* code, as in classify files */
        assert_int_equal(num_frames[r], 0);
        if (!strstr(errors[r], paths[r]) || !strstr(errors[r], reasons[k]))
            fail_msg("row %d: error '%s' should name %s and say '%s'", r, errors[r], paths[r],
                     reasons[k]);
        assert_true(wisp_max_abs(feat + r * row, row) == 0.0);
    }
    assert_int_equal(status[1], WISP_ERR_NOTFOUND);

    /* a good row is exactly what the library computes for the same samples */
    wisp_mel_t *mel = wisp_mel_new(80, NULL);
    float *want = wisp_alloc(sizeof(float) * row);
    wisp_mel_compute(mel, x16, 40000, 0, want);
    assert_memory_equal(feat, want, sizeof(float) * row);
    wisp_mel_compute(mel, x31, 480000, 0, want);
    assert_memory_equal(feat + 5 * row, want, sizeof(float) * row);
    assert_true(wisp_max_abs(feat + 2 * row, row) > 0.1);
    wisp_free(want);
    wisp_mel_destroy(&mel);
    s_free_strings(paths, n);
    s_free_strings(errors, n);
    free(feat);
    free(x16);
    free(x31);
}

static void test_truncated_mode_zero_fills_rows_shorter_than_the_longest(void **state)
{
    (void)state;
    float *a = s_noise(5, 16000), *b = s_noise(6, 3 * 22050);
    s_write(s_tmp(0, "t_a.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, a, 16000);
    s_write(s_tmp(1, "t_b.ogg"), SF_FORMAT_OGG | SF_FORMAT_VORBIS, 22050, 1, b, 3 * 22050);
    const char *out = s_tmp(2, "trunc.h5");
    const char *argv[] = {"features", "-q", "--truncate", "--n-mels", "128",
                          "-o",       out,  s_paths[0],   s_paths[1]};
    assert_int_equal(s_run(9, argv), WISP_EXIT_OK);
    hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dims[3];
    float *feat = s_read_features(f, dims);
    int32_t num_frames[2];
    int8_t status[2];
    s_read(f, "num_frames", H5T_NATIVE_INT32, num_frames);
    s_read(f, "status", H5T_NATIVE_INT8, status);
    assert_int_equal(s_attr_int(f, "truncate"), 1);
    assert_int_equal(s_attr_int(f, "n_mels"), 128);
    H5Fclose(f);
    assert_int_equal(status[0], 0);
    assert_int_equal(status[1], 0);
    assert_int_equal(num_frames[0], 100); /* 16000 samples -> 16000 / 160 */
    assert_int_equal(num_frames[1], 300); /* 3 s of Vorbis -> 48000 samples */
    assert_int_equal(dims[0], 2);
    assert_int_equal(dims[1], 128);
    assert_int_equal(dims[2], 300);
    /* row 0: its 100 frames are the library's, the 200 frames after are zero */
    wisp_mel_t *mel = wisp_mel_new(128, NULL);
    float *want = wisp_alloc(sizeof(float) * 128 * 100);
    wisp_mel_compute(mel, a, 16000, 1, want);
    for (int m = 0; m < 128; m++) {
        assert_memory_equal(feat + (size_t)m * 300, want + (size_t)m * 100, sizeof(float) * 100);
        assert_true(wisp_max_abs(feat + (size_t)m * 300 + 100, 200) == 0.0);
    }
    assert_true(wisp_max_abs(feat + (size_t)128 * 300, (size_t)128 * 300) > 0.1);
    wisp_free(want);
    wisp_mel_destroy(&mel);
    free(feat);
    free(a);
    free(b);
}

static void test_usage_errors_and_unwritable_output_have_their_exit_codes(void **state)
{
    (void)state;
    float *a = s_noise(7, 1600);
    s_write(s_tmp(0, "u.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, a, 1600);
    free(a);
    const char *no_out[] = {"features", s_paths[0]};
    assert_int_equal(s_run(2, no_out), WISP_EXIT_USAGE);
    const char *no_in[] = {"features", "-o", s_tmp(1, "x.h5")};
    assert_int_equal(s_run(3, no_in), WISP_EXIT_USAGE);
    const char *bad_mels[] = {"features", "--n-mels", "64", "-o", s_paths[1], s_paths[0]};
    assert_int_equal(s_run(6, bad_mels), WISP_EXIT_USAGE);
    const char *bad_opt[] = {"features", "--frobnicate", "-o", s_paths[1], s_paths[0]};
    assert_int_equal(s_run(5, bad_opt), WISP_EXIT_USAGE);
    assert_int_equal(access(s_paths[1], F_OK), -1);
    const char *help[] = {"features", "--help"};
    assert_int_equal(s_run(2, help), WISP_EXIT_OK);
    const char *unwritable[] = {"features", "-q", "-o", "/nonexistent-dir/x.h5", s_paths[0]};
    assert_int_equal(s_run(5, unwritable), WISP_EXIT_FAILURE);
    /* and a normal run afterwards still works (getopt state is re-initialised) */
    const char *ok[] = {"features", "-q", "-o", s_paths[1], s_paths[0]};
    assert_int_equal(s_run(5, ok), WISP_EXIT_OK);
    assert_int_equal(access(s_paths[1], F_OK), 0);
}

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_inputs_fail_alone_and_good_rows_hold_exact_features),
        cmocka_unit_test(test_truncated_mode_zero_fills_rows_shorter_than_the_longest),
        cmocka_unit_test(test_usage_errors_and_unwritable_output_have_their_exit_codes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", wisp_test_tmpdir());
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", wisp_test_tmpdir());
    return rc;
}
