/* cmd_features.c: `wisp features` — Whisper log-mel features of audio files into HDF5.
 *
 * Output layout (N = number of inputs, in command-line order):
 *   features    float32 [N, n_mels, frames]  padded mode: frames = 3000; truncated mode:
 *               frames of the longest input, rows zero beyond their num_frames; failed
 *               rows are all zero
 *   num_frames  int32 [N]   valid frames of each row (0 for a failed row)
 *   path        variable-length UTF-8 strings [N], the inputs as given
 *   status      int8 [N]    0 = ok; otherwise the (negative) WISP_ERR_* code of the failure
 *                           (2 I/O, e.g. a directory; 6 missing file; 8 undecodable audio)
 *   error       variable-length UTF-8 strings [N]: the one-line reason when status != 0;
 *               for an ok row "" or a note, currently only "truncated to 30 s (source is
 *               X s)" for inputs longer than 30 s (the row is valid: Whisper reads 30 s)
 *   attributes  n_mels, truncate (0/1), sample_rate (16000), n_fft (400),
 *               hop_length (160) as int64; wisp_version (string)
 * The file is written as OUT.tmp and renamed to OUT when complete, so OUT is never
 * partial. Exit codes: 0 all inputs ok, 1 some failed (rows with status != 0), 2 usage
 * error, 3 fatal (e.g. cannot write OUT). */
#include <errno.h>
#include <getopt.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/features.h"
#include "cli/commands.h"
#include "formats/h5util.h"
#include "base/log.h"
#include "audio/mel.h"
#include "base/util.h"

#define S_TRUNC_CHUNK_FRAMES 100 /* chunk width in truncated mode: little waste per row */

static void s_help(FILE *out)
{
    fprintf(out,
            "usage: wisp features [--n-mels 80|128] [--truncate] -o OUT.h5 AUDIO...\n"
            "\n"
            "Computes Whisper log-mel features (NUMERICS.md section 1) of each AUDIO file\n"
            "(any format libsndfile reads; mixed to mono, resampled to 16 kHz) into HDF5.\n"
            "\n"
            "options:\n"
            "  -o, --output OUT.h5   result file (written as OUT.h5.tmp, then renamed)\n"
            "  -m, --n-mels N        mel bins: 80 (default) or 128 (large-v3)\n"
            "  -t, --truncate        truncated mode: pad each clip only to the next multiple\n"
            "                        of 320 samples instead of to 30 s (frames = samples/160)\n"
            "  -q, --quiet           only log errors\n"
            "  -h, --help            this help\n"
            "\n"
            "datasets: features float32 [N, n_mels, frames], num_frames int32 [N],\n"
            "  path, status int8 [N] (0 ok, else the negative wisp error code), error\n"
            "  (reason, or the note \"truncated to 30 s ...\" on ok rows longer than 30 s);\n"
            "  attributes n_mels, truncate, sample_rate, n_fft, hop_length, wisp_version.\n"
            "  Audio beyond 30 s is ignored in both modes.\n"
            "\n"
            "exit status: 0 all ok, 1 some inputs failed (see status), 2 usage, 3 failure.\n"
            "\n"
            "examples:\n"
            "  wisp features -o feats.h5 a.wav b.flac\n"
            "  wisp features --n-mels 128 --truncate -o short.h5 clips/*.ogg\n"
            "  h5dump -d status -d error feats.h5\n");
}

/* The HDF5 side of the command: file, the features dataset and the per-row columns. */
typedef struct {
    hid_t file;
    hid_t features; /* float32 [N, n_mels, frames] */
    int n;          /* N */
    int n_mels;
    int frames; /* current extent of the frame axis */
} s_out_t;

static int s_create(s_out_t *o, const char *tmp, int n, int n_mels, int truncate, wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t space = -1, dcpl = -1;
    errno = 0;
    o->file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (o->file < 0) /* HDF5 keeps the failing open()'s errno: the useful part */
        return wisp_error_set(err, WISP_ERR_HDF5, "%s: cannot create the HDF5 file%s%s", tmp,
                              errno ? ": " : "", errno ? strerror(errno) : "");
    o->n = n;
    o->n_mels = n_mels;
    o->frames = truncate ? 0 : WISP_N_FRAMES;
    hsize_t dims[3] = {(hsize_t)n, (hsize_t)n_mels, (hsize_t)o->frames};
    hsize_t maxdims[3] = {(hsize_t)n, (hsize_t)n_mels, WISP_N_FRAMES};
    hsize_t chunk[3] = {1, (hsize_t)n_mels, truncate ? S_TRUNC_CHUNK_FRAMES : WISP_N_FRAMES};
    float zero = 0.0f;
    space = H5Screate_simple(3, dims, maxdims);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 3, chunk) < 0 ||
        H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &zero) < 0) {
        rc = wisp_h5_fail(err, tmp, "cannot set up the features dataset");
        goto done;
    }
    o->features =
        H5Dcreate2(o->file, "features", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (o->features < 0)
        rc = wisp_h5_fail(err, tmp, "cannot create the features dataset");
done:
    if (space >= 0)
        H5Sclose(space);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rc;
}

/* Writes one row (n_mels, frames) at index i, growing the frame axis when needed. */
static int s_write_row(s_out_t *o, int i, const float *feat, int frames, const char *tmp,
                       wisp_error_t *err)
{
    int rc = WISP_OK;
    hid_t fspace = -1, mspace = -1;
    if (frames > o->frames) {
        hsize_t dims[3] = {(hsize_t)o->n, (hsize_t)o->n_mels, (hsize_t)frames};
        if (H5Dset_extent(o->features, dims) < 0)
            return wisp_h5_fail(err, tmp, "cannot extend the features dataset");
        o->frames = frames;
    }
    hsize_t start[3] = {(hsize_t)i, 0, 0};
    hsize_t count[3] = {1, (hsize_t)o->n_mels, (hsize_t)frames};
    fspace = H5Dget_space(o->features);
    mspace = H5Screate_simple(3, count, NULL);
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(o->features, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, feat) < 0)
        rc = wisp_h5_fail(err, tmp, "cannot write a features row");
    if (fspace >= 0)
        H5Sclose(fspace);
    if (mspace >= 0)
        H5Sclose(mspace);
    return rc;
}

/* A 1-D dataset of n values of file type ftype from memory type mtype. */
static int s_write_column(hid_t file, const char *name, hid_t ftype, hid_t mtype, int n,
                          const void *data)
{
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = H5Screate_simple(1, dims, NULL);
    if (space < 0)
        return -1;
    hid_t ds = H5Dcreate2(file, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = ds < 0 || H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0 ? -1 : 0;
    if (ds >= 0 && H5Dclose(ds) < 0)
        rc = -1;
    H5Sclose(space);
    return rc;
}

/* The per-row columns and the attributes, once every row is known. */
static int s_write_columns(s_out_t *o, char **paths, char **errors, const int8_t *status,
                           const int32_t *num_frames, int truncate, const char *tmp,
                           wisp_error_t *err)
{
    if (wisp_h5_write_strings(o->file, "path", (const char *const *)paths, (size_t)o->n, tmp,
                              err) != WISP_OK ||
        wisp_h5_write_strings(o->file, "error", (const char *const *)errors, (size_t)o->n, tmp,
                              err) != WISP_OK)
        return WISP_ERR_HDF5;
    if (s_write_column(o->file, "status", H5T_STD_I8LE, H5T_NATIVE_INT8, o->n, status) < 0 ||
        s_write_column(o->file, "num_frames", H5T_STD_I32LE, H5T_NATIVE_INT32, o->n, num_frames) <
            0)
        return wisp_h5_fail(err, tmp, "cannot write the status and num_frames columns");
    const struct {
        const char *name;
        int64_t value;
    } attrs[] = {{"n_mels", o->n_mels},
                 {"truncate", truncate},
                 {"sample_rate", WISP_SAMPLE_RATE},
                 {"n_fft", WISP_N_FFT},
                 {"hop_length", WISP_HOP}};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        if (wisp_h5_attr_set_i64(o->file, attrs[i].name, attrs[i].value, tmp, err) != WISP_OK)
            return WISP_ERR_HDF5;
    return wisp_h5_attr_set_str(o->file, "wisp_version", WISP_VERSION, tmp, err);
}

/* Closes everything; returns an error if the final flush fails (the file is then
 * unusable). Safe on a partially created s_out_t. */
static int s_close(s_out_t *o, const char *tmp, wisp_error_t *err)
{
    int bad = 0;
    if (o->features >= 0 && H5Dclose(o->features) < 0)
        bad = 1;
    if (o->file >= 0 && H5Fclose(o->file) < 0)
        bad = 1;
    o->features = o->file = -1;
    return bad ? wisp_h5_fail(err, tmp, "cannot flush the HDF5 file") : WISP_OK;
}

int wisp_cmd_features(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"n-mels", required_argument, NULL, 'm'},
        {"truncate", no_argument, NULL, 't'},     {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *output = NULL;
    int n_mels = 80, truncate = 0, c;
    optind = 0; /* GNU getopt: full re-initialisation, so the command can run twice */
    while ((c = getopt_long(argc, argv, "o:m:tqh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': output = optarg; break;
        case 'm': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || (v != 80 && v != 128)) {
                fprintf(stderr, "wisp features: --n-mels must be 80 or 128, got '%s'\n", optarg);
                return WISP_EXIT_USAGE;
            }
            n_mels = (int)v;
            break;
        }
        case 't': truncate = 1; break;
        case 'q': wisp_log_set_level(WISP_LOG_ERROR); break;
        case 'h': s_help(stdout); return WISP_EXIT_OK;
        default:
            fprintf(stderr, "wisp features: try 'wisp features --help'\n");
            return WISP_EXIT_USAGE;
        }
    }
    if (!output || optind >= argc) {
        fprintf(stderr,
                "wisp features: %s\nusage: wisp features [--n-mels 80|128] [--truncate] "
                "-o OUT.h5 AUDIO...   (wisp features --help)\n",
                !output ? "missing -o OUT.h5" : "no AUDIO files given");
        return WISP_EXIT_USAGE;
    }
    int n = argc - optind;
    char **paths = argv + optind;

    int exit_code = WISP_EXIT_FAILURE, n_failed = 0;
    wisp_error_t err = {0};
    wisp_features_t *fx = NULL;
    float *feat = NULL;
    char **errors = calloc((size_t)n, sizeof *errors);
    int8_t *status = calloc((size_t)n, sizeof *status);
    int32_t *num_frames = calloc((size_t)n, sizeof *num_frames);
    s_out_t out = {.file = -1, .features = -1};
    char tmp[4096];
    int created = 0;
    double t0 = wisp_now();

    if (snprintf(tmp, sizeof tmp, "%s.tmp", output) >= (int)sizeof tmp) {
        fprintf(stderr, "wisp features: output path too long\n");
        exit_code = WISP_EXIT_USAGE;
        goto done;
    }
    wisp_h5_quiet(); /* errors are reported by us, once */
    fx = wisp_features_new(n_mels, truncate, 0, &err);
    feat = wisp_alloc(sizeof(float) * (size_t)n_mels * WISP_N_FRAMES);
    if (!fx || !feat || !errors || !status || !num_frames) {
        wisp_error_set(&err, WISP_ERR_NOMEM, "features: out of memory");
        goto done;
    }
    created = 1;
    if (s_create(&out, tmp, n, n_mels, truncate, &err) != WISP_OK)
        goto done;

    for (int i = 0; i < n; i++) {
        wisp_features_info_t info;
        wisp_error_t aerr = {0};
        char note[128] = "";
        int rc = wisp_features_file(fx, paths[i], feat, &info, &aerr);
        if (rc != WISP_OK) {
            status[i] = (int8_t)(rc < 0 ? rc : -1); /* the WISP_ERR_* code, as in classify files */
            errors[i] = strdup(aerr.msg);
            n_failed++;
            WISP_LOGW("%s", aerr.msg);
        } else {
            int frames = info.frames;
            num_frames[i] = frames;
            if (info.capped)
                snprintf(note, sizeof note, "truncated to 30 s (source is %.2f s)", info.duration);
            errors[i] = strdup(note);
            WISP_LOGD("%s: %d Hz x %d ch, %.2f s -> %d frames%s%s", paths[i], info.source_rate,
                      info.source_channels, info.duration, frames, note[0] ? "; " : "", note);
            if (s_write_row(&out, i, feat, frames, tmp, &err) != WISP_OK)
                goto done;
        }
        if (!errors[i]) {
            wisp_error_set(&err, WISP_ERR_NOMEM, "features: out of memory");
            goto done;
        }
    }
    if (s_write_columns(&out, paths, errors, status, num_frames, truncate, tmp, &err) != WISP_OK)
        goto done;
    if (s_close(&out, tmp, &err) != WISP_OK)
        goto done;
    if (rename(tmp, output) != 0) {
        wisp_error_set(&err, WISP_ERR_IO, "%s: cannot rename to %s", tmp, output);
        goto done;
    }
    created = 0;
    WISP_LOGI("%d inputs, %d ok, %d failed, %.2f s -> %s", n, n - n_failed, n_failed,
              wisp_now() - t0, output);
    exit_code = n_failed ? WISP_EXIT_PARTIAL : WISP_EXIT_OK;
done:
    if (exit_code == WISP_EXIT_FAILURE)
        fprintf(stderr, "wisp features: %s\n", err.msg[0] ? err.msg : "failed");
    s_close(&out, tmp, NULL);
    if (created)
        remove(tmp);
    if (errors)
        for (int i = 0; i < n; i++)
            free(errors[i]);
    free(errors);
    free(status);
    free(num_frames);
    wisp_free(feat);
    wisp_features_destroy(&fx);
    return exit_code;
}
