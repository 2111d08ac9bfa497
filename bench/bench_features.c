/* bench_features: throughput of the audio front end on one core.
 *
 * Inputs (written once to a temporary directory, deterministic): a 30 s 16 kHz mono
 * 16-bit WAV and a 30 s 44.1 kHz stereo 24-bit FLAC (like jfk.flac). Measures, on one
 * thread (OpenBLAS pinned to 1):
 *   features_*  decode + mix + resample + 80-bin log-mel, per 30 s clip
 *   decode_*    wisp_audio_load alone
 *   sndfile_only_flac44k  sf_readf_float of the FLAC alone (libsndfile + libFLAC, no
 *               mixing or resampling): the floor of the FLAC figures
 *   mel*        wisp_mel_compute alone on 480000 samples
 * Time is CPU time of this (single) thread: on a shared machine that is the one-core
 * cost, unaffected by waiting for a core; each figure is the best of several rounds.
 * *_wall_ms_per_clip gives the wall-clock figure of the same runs for comparison.
 * Prints key=value lines; bench/features_ref.py prints the PyTorch reference's ref_*
 * counterparts (counting the CPU time of its decoder subprocess too). */
#include <cblas.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audio/audio.h"
#include "audio/mel.h"
#include "base/util.h"
#include "nn/blas.h"

#define S_SECONDS 30

/* A speech-like test signal: a few drifting harmonics under a syllable-rate envelope
 * plus a little noise (compresses like real audio in FLAC, unlike pure noise). */
static float *s_signal(int rate, int channels, sf_count_t frames)
{
    float *x = malloc(sizeof(float) * (size_t)frames * channels);
    if (!x)
        return NULL;
    wisp_rng_t r;
    wisp_rng_seed(&r, 2024);
    for (sf_count_t i = 0; i < frames; i++) {
        double t = (double)i / rate;
        double f0 = 140.0 + 30.0 * sin(2 * M_PI * 0.3 * t);
        double env = 0.5 + 0.5 * sin(2 * M_PI * 4.0 * t);
        double v = 0;
        for (int h = 1; h <= 6; h++)
            v += sin(2 * M_PI * f0 * h * t) / h;
        for (int c = 0; c < channels; c++)
            x[i * channels + c] =
                (float)(0.25 * env * v + 0.01 * (wisp_rng_uniform(&r) - 0.5) * (c + 1));
    }
    return x;
}

static int s_write(const char *path, int format, int rate, int channels)
{
    sf_count_t frames = (sf_count_t)rate * S_SECONDS;
    float *x = s_signal(rate, channels, frames);
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = x ? sf_open(path, SFM_WRITE, &info) : NULL;
    int ok = sf && sf_writef_float(sf, x, frames) == frames;
    if (sf)
        sf_close(sf);
    free(x);
    if (!ok)
        fprintf(stderr, "bench_features: cannot write %s\n", path);
    return ok ? 0 : -1;
}

typedef struct {
    const char *path; /* NULL: mel only, on `samples` */
    wisp_mel_t *mel;
    const float *samples;
    float *out;
    int decode_only;
    int sndfile_only; /* libsndfile's own decode (sf_readf_float) alone: the floor */
} s_job_t;

/* Reads every frame of path with sf_readf_float and nothing else: what libsndfile
 * (and the codec library under it, libFLAC for FLAC) costs by itself. */
static int s_sndfile_only(const char *path)
{
    SF_INFO info = {0};
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    if (!sf)
        return -1;
    static float block[65536];
    sf_count_t per = (sf_count_t)(65536 / info.channels), got, total = 0;
    while ((got = sf_readf_float(sf, block, per)) > 0)
        total += got;
    sf_close(sf);
    return total == info.frames ? 0 : -1;
}

static int s_run_once(s_job_t *j)
{
    if (!j->path) {
        wisp_mel_compute(j->mel, j->samples, WISP_N_SAMPLES, 0, j->out);
        return 0;
    }
    if (j->sndfile_only)
        return s_sndfile_only(j->path);
    wisp_audio_t a;
    wisp_error_t e = {0};
    if (wisp_audio_load(j->path, S_SECONDS + 0.5, &a, &e) != WISP_OK) {
        fprintf(stderr, "bench_features: %s\n", e.msg);
        return -1;
    }
    if (!j->decode_only)
        wisp_mel_compute(j->mel, a.samples, a.n, 0, j->out);
    wisp_audio_free(&a);
    return 0;
}

static double s_cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    double cpu;  /* best CPU seconds per run */
    double wall; /* best wall seconds per run */
} s_timing_t;

/* Seconds per run: best over `rounds` rounds of `reps` runs. */
static s_timing_t s_time(s_job_t *j, int rounds, int reps)
{
    s_timing_t best = {INFINITY, INFINITY}, fail = {NAN, NAN};
    if (s_run_once(j) != 0) /* warm-up: page cache, FFTW, soxr tables */
        return fail;
    for (int r = 0; r < rounds; r++) {
        double c0 = s_cpu_now(), t0 = wisp_now();
        for (int i = 0; i < reps; i++)
            if (s_run_once(j) != 0)
                return fail;
        double dc = (s_cpu_now() - c0) / reps, dt = (wisp_now() - t0) / reps;
        best.cpu = dc < best.cpu ? dc : best.cpu;
        best.wall = dt < best.wall ? dt : best.wall;
    }
    return best;
}

int main(int argc, char **argv)
{
    (void)argc;
    wisp_blas_startup('L', argv); /* as every wisp binary: BLAS core, FTZ+DAZ (nn/blas.h) */
    openblas_set_num_threads(1);
    char dir[] = "/tmp/wisp-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_features: mkdtemp");
        return 1;
    }
    char wav[64], flac[64];
    snprintf(wav, sizeof wav, "%s/clip16k.wav", dir);
    snprintf(flac, sizeof flac, "%s/clip44k.flac", dir);
    int rc = 1;
    wisp_mel_t *mel80 = wisp_mel_new(80, NULL), *mel128 = wisp_mel_new(128, NULL);
    float *out = wisp_alloc(sizeof(float) * 128 * WISP_N_FRAMES);
    wisp_audio_t clip = {0};
    if (!mel80 || !mel128 || !out ||
        s_write(wav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1) != 0 ||
        s_write(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 44100, 2) != 0 ||
        wisp_audio_load(wav, 0, &clip, NULL) != WISP_OK)
        goto done;

    s_job_t mel_job = {NULL, mel80, clip.samples, out, 0, 0};
    s_job_t mel128_job = {NULL, mel128, clip.samples, out, 0, 0};
    s_job_t wav_job = {wav, mel80, NULL, out, 0, 0};
    s_job_t flac_job = {flac, mel80, NULL, out, 0, 0};
    s_job_t flac_dec = {flac, mel80, NULL, out, 1, 0};
    s_job_t flac_sndfile = {flac, mel80, NULL, out, 1, 1};
    s_timing_t t_mel = s_time(&mel_job, 7, 20);
    s_timing_t t_mel128 = s_time(&mel128_job, 5, 20);
    s_timing_t t_wav = s_time(&wav_job, 5, 10);
    s_timing_t t_flac = s_time(&flac_job, 5, 4);
    s_timing_t t_flac_dec = s_time(&flac_dec, 5, 4);
    s_timing_t t_flac_sf = s_time(&flac_sndfile, 5, 4);
    if (isnan(t_mel.cpu) || isnan(t_mel128.cpu) || isnan(t_wav.cpu) || isnan(t_flac.cpu) ||
        isnan(t_flac_dec.cpu) || isnan(t_flac_sf.cpu))
        goto done;
    printf("mel_ms_per_clip=%.3f\n", t_mel.cpu * 1e3);
    printf("mel_clips_per_s=%.1f\n", 1.0 / t_mel.cpu);
    printf("mel128_ms_per_clip=%.3f\n", t_mel128.cpu * 1e3);
    printf("features_wav16k_ms_per_clip=%.3f\n", t_wav.cpu * 1e3);
    printf("features_wav16k_clips_per_s=%.1f\n", 1.0 / t_wav.cpu);
    printf("features_flac44k_ms_per_clip=%.3f\n", t_flac.cpu * 1e3);
    printf("features_flac44k_clips_per_s=%.1f\n", 1.0 / t_flac.cpu);
    printf("decode_flac44k_ms_per_clip=%.3f\n", t_flac_dec.cpu * 1e3);
    printf("sndfile_only_flac44k_ms_per_clip=%.3f\n", t_flac_sf.cpu * 1e3);
    printf("mel_wall_ms_per_clip=%.3f\n", t_mel.wall * 1e3);
    printf("features_wav16k_wall_ms_per_clip=%.3f\n", t_wav.wall * 1e3);
    printf("features_flac44k_wall_ms_per_clip=%.3f\n", t_flac.wall * 1e3);
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "bench_features: failed\n");
    wisp_audio_free(&clip);
    wisp_free(out);
    wisp_mel_destroy(&mel80);
    wisp_mel_destroy(&mel128);
    unlink(wav);
    unlink(flac);
    rmdir(dir);
    return rc;
}
