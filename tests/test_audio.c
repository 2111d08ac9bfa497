/* Tests of common/audio: every libsndfile format decodes to 16 kHz mono float, channels
 * are averaged, rates are converted by soxr, and bad files give one clear error that
 * names the file and the reason. Every input is written here, at run time, with
 * libsndfile itself (or by hand for the malformed ones). */
#include "testutil.h"

#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audio/audio.h"
#include "base/util.h"

static void s_tmp_path(char *dst, size_t size, const char *name)
{
    snprintf(dst, size, "%s/%s", wisp_test_tmpdir(), name);
}

/* Writes frames x channels interleaved samples with libsndfile. */
static void s_write(const char *path, int format, int rate, int channels, const float *data,
                    sf_count_t frames)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf)
        fail_msg("%s: cannot write test file: %s", path, sf_strerror(NULL));
    if (frames > 0)
        assert_int_equal(sf_writef_float(sf, data, frames), frames);
    sf_close(sf);
}

/* Same with int samples (left-justified 32-bit, as sf_writef_int takes them), so
 * integer PCM files hold exactly the intended values. */
static void s_write_int(const char *path, int format, int rate, int channels, const int *data,
                        sf_count_t frames)
{
    SF_INFO info = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf)
        fail_msg("%s: cannot write test file: %s", path, sf_strerror(NULL));
    assert_int_equal(sf_writef_int(sf, data, frames), frames);
    sf_close(sf);
}

static void s_write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len)
        assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* A 440 Hz sine of amplitude 0.5 sampled at rate. */
static float *s_sine(int rate, sf_count_t frames, int channels)
{
    float *x = malloc(sizeof(float) * (size_t)frames * channels);
    for (sf_count_t i = 0; i < frames; i++)
        for (int c = 0; c < channels; c++)
            x[i * channels + c] = (float)(0.5 * sin(2.0 * M_PI * 440.0 * (double)i / rate));
    return x;
}

/* RMS difference between decoded 16 kHz audio and the analytic 440 Hz sine, over the
 * interior [skip, n - skip) (codec/resampler edges excluded). libsndfile removes the
 * codecs' delays and soxr its filter delay, so no time shift is needed. */
static double s_sine_rms_error(const wisp_audio_t *a, size_t skip)
{
    double se = 0;
    size_t count = 0;
    for (size_t i = skip; i + skip < a->n; i++) {
        double want = 0.5 * sin(2.0 * M_PI * 440.0 * (double)i / WISP_SAMPLE_RATE);
        se += (a->samples[i] - want) * (a->samples[i] - want);
        count++;
    }
    return count ? sqrt(se / count) : INFINITY;
}

static void test_float_wav_at_16k_decodes_bit_exactly_and_is_never_clipped(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "float.wav");
    float x[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = (float)(i - 500) * 0.003f; /* reaches +-1.5: float files are not clipped */
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, x, 1000);
    wisp_audio_t a;
    wisp_error_t e = {0};
    assert_int_equal(wisp_audio_load(path, 0, &a, &e), WISP_OK);
    assert_int_equal(a.n, 1000);
    assert_int_equal(a.source_rate, 16000);
    assert_int_equal(a.source_channels, 1);
    assert_memory_equal(a.samples, x, sizeof x);
    assert_true(fabs(a.duration - 1000.0 / 16000) < 1e-12);
    wisp_audio_free(&a);
    assert_null(a.samples);
}

static void test_24_bit_wav_keeps_24_bit_resolution(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "pcm24.wav");
    int pcm[4096];
    float x[4096];
    wisp_rng_t r;
    wisp_rng_seed(&r, 11);
    for (int i = 0; i < 4096; i++) { /* 24-bit values k, expected back as k / 2^23 */
        int k = (int)(wisp_rng_u64(&r) >> 40) - (1 << 23);
        pcm[i] = k * 256;
        x[i] = (float)k * 0x1.0p-23f;
    }
    s_write_int(path, SF_FORMAT_WAV | SF_FORMAT_PCM_24, 16000, 1, pcm, 4096);
    wisp_audio_t a;
    assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
    assert_int_equal(a.n, 4096);
    /* 16-bit quantization would lose the low 8 bits: these must survive exactly */
    assert_memory_equal(a.samples, x, sizeof x);
    wisp_audio_free(&a);
}

static void test_channels_are_mixed_by_the_arithmetic_mean(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "three.wav");
    enum { N = 800 };
    float x[N * 3], want[N];
    for (int i = 0; i < N; i++) {
        x[3 * i] = 0.25f;
        x[3 * i + 1] = (float)i / N;
        x[3 * i + 2] = -(float)(i % 7) / 8.0f;
        want[i] = (x[3 * i] + x[3 * i + 1] + x[3 * i + 2]) / 3.0f;
    }
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 3, x, N);
    wisp_audio_t a;
    assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
    assert_int_equal(a.source_channels, 3);
    assert_int_equal(a.n, N);
    wisp_assert_close(a.samples, want, N, 1e-7, 0, "3-channel mean");
    wisp_audio_free(&a);

    s_tmp_path(path, sizeof path, "stereo.flac");
    int st[N * 2];
    float want2[N];
    for (int i = 0; i < N; i++) { /* 16-bit values l, r, expected back as (l + r) / 2^16 */
        int l = (i * 3737) % 65536 - 32768, rr = (i * 1111) % 60000 - 30000;
        st[2 * i] = l * 65536;
        st[2 * i + 1] = rr * 65536;
        want2[i] = ((float)l * 0x1.0p-15f + (float)rr * 0x1.0p-15f) * 0.5f;
    }
    s_write_int(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 2, st, N);
    assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
    assert_memory_equal(a.samples, want2, sizeof want2); /* exact: (l + r) * 0.5 */
    wisp_audio_free(&a);
}

/* The 16-bit PCM fast path (sf_readf_short + our conversion) returns the very bits of
 * libsndfile's own float conversion, for every 16-bit value, mono and mixed stereo. */
static void test_16_bit_pcm_decodes_to_the_bits_of_libsndfiles_float_read(void **state)
{
    (void)state;
    enum { N = 65536 + 13 }; /* every value, and a tail that is not a multiple of 8 */
    int *pcm = malloc(sizeof(int) * 2 * N);
    float *ref = malloc(sizeof(float) * 2 * N), *want = malloc(sizeof(float) * N);
    assert_non_null(pcm);
    assert_non_null(ref);
    assert_non_null(want);
    for (int i = 0; i < 2 * N; i++) /* 16-bit values, left-justified for sf_writef_int */
        pcm[i] = ((int)(((unsigned)i * 40503u) % 65536u) - 32768) * 65536;
    const int formats[] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_AIFF | SF_FORMAT_PCM_16};
    for (int f = 0; f < 2; f++)
        for (int channels = 1; channels <= 2; channels++) {
            char path[512];
            s_tmp_path(path, sizeof path, f ? "pcm16.aiff" : "pcm16.wav");
            sf_count_t frames = channels == 1 ? 2 * N : N;
            s_write_int(path, formats[f], 16000, channels, pcm, frames);
            SF_INFO info = {0};
            SNDFILE *sf = sf_open(path, SFM_READ, &info);
            assert_non_null(sf);
            assert_int_equal(sf_readf_float(sf, ref, frames), frames);
            sf_close(sf);
            float *expect = ref;
            if (channels == 2) {
                for (sf_count_t i = 0; i < frames; i++)
                    want[i] = (ref[2 * i] + ref[2 * i + 1]) * 0.5f;
                expect = want;
            }
            wisp_audio_t a;
            assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
            assert_int_equal(a.n, (size_t)frames);
            assert_memory_equal(a.samples, expect, sizeof(float) * (size_t)frames);
            wisp_audio_free(&a);
        }
    free(pcm);
    free(ref);
    free(want);
}

/* Each container/codec libsndfile reads, at rates that need resampling or not. */
static void test_every_libsndfile_format_decodes_to_16k_mono(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int format, rate, channels;
        double max_rms; /* vs the analytic sine; lossy codecs get a looser bound */
    } cases[] = {
        /* measured: 1.4e-5 (16-bit), 1e-7 (float/24-bit), 1.5e-3 .. 3e-3 (lossy) */
        {"a.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 3e-5},
        {"b.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 2, 1e-6},
        {"c.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 8000, 1, 1e-6},
        {"d.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 48000, 2, 1e-6},
        {"e.aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 22050, 1, 3e-5},
        {"f.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 44100, 2, 0.01},
        {"g.opus", SF_FORMAT_OGG | SF_FORMAT_OPUS, 48000, 1, 0.01},
        {"h.mp3", SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III, 44100, 1, 0.01},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[512];
        s_tmp_path(path, sizeof path, cases[c].name);
        sf_count_t frames = cases[c].rate; /* 1 s */
        float *x = s_sine(cases[c].rate, frames, cases[c].channels);
        s_write(path, cases[c].format, cases[c].rate, cases[c].channels, x, frames);
        free(x);
        wisp_audio_t a;
        wisp_error_t e = {0};
        int rc = wisp_audio_load(path, 0, &a, &e);
        if (rc)
            fail_msg("%s: %s", cases[c].name, e.msg);
        assert_int_equal(a.source_rate, cases[c].rate);
        assert_int_equal(a.source_channels, cases[c].channels);
        /* 1 s of audio -> 16000 samples (lossy codecs may pad their last packet) */
        if (a.n < 15990 || a.n > 17200)
            fail_msg("%s: %zu samples for 1 s", cases[c].name, a.n);
        double rms = s_sine_rms_error(&a, 800);
        if (!(rms <= cases[c].max_rms))
            fail_msg("%s: rms error %.3g vs the sine > %.3g", cases[c].name, rms, cases[c].max_rms);
        wisp_audio_free(&a);
    }
}

static void test_resampling_44k_to_16k_is_high_quality_and_length_exact(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "sine44.wav");
    sf_count_t frames = 44100 * 3;
    float *x = s_sine(44100, frames, 1);
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 1, x, frames);
    free(x);
    wisp_audio_t a;
    assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
    assert_int_equal(a.n, 48000);
    /* soxr HQ is linear phase with its delay removed: the sine lines up sample for
     * sample; 20-bit quality means errors around 1e-6 of full scale */
    double rms = s_sine_rms_error(&a, 400);
    if (!(rms < 2e-5))
        fail_msg("rms error %.3g after resampling", rms);
    wisp_audio_free(&a);
}

static void test_max_seconds_stops_decoding_early_but_reports_the_full_duration(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "long.flac");
    sf_count_t frames = 44100 * 10;
    float *x = s_sine(44100, frames, 2);
    s_write(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 2, x, frames);
    free(x);
    wisp_audio_t a, full;
    assert_int_equal(wisp_audio_load(path, 2.0, &a, NULL), WISP_OK);
    assert_int_equal(a.n, 32000);
    assert_true(fabs(a.duration - 10.0) < 1e-9);
    /* the streamed resampler gives the same samples as decoding everything, except
     * within its filter length of the early cut (soxr HQ: well under 0.1 s) */
    assert_int_equal(wisp_audio_load(path, 0, &full, NULL), WISP_OK);
    assert_int_equal(full.n, 160000);
    assert_memory_equal(a.samples, full.samples, sizeof(float) * 30400);
    wisp_audio_free(&a);
    wisp_audio_free(&full);
}

/* Loads a bad file and checks the error names the file and contains `reason`. */
static void s_expect_error(const char *path, const char *reason)
{
    wisp_audio_t a;
    wisp_error_t e = {0};
    int rc = wisp_audio_load(path, 0, &a, &e);
    if (rc == WISP_OK)
        fail_msg("%s: loaded %zu samples, expected an error mentioning '%s'", path, a.n, reason);
    assert_int_equal(e.code, rc);
    assert_null(a.samples);
    assert_int_equal(a.n, 0);
    if (!strstr(e.msg, path) || !strstr(e.msg, reason))
        fail_msg("error '%s' should name %s and say '%s'", e.msg, path, reason);
    assert_null(strchr(e.msg, '\n'));
}

static void test_bad_files_give_one_line_errors_naming_file_and_reason(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "missing.wav");
    s_expect_error(path, "no such file");

    s_tmp_path(path, sizeof path, "empty.wav");
    s_write_bytes(path, "", 0);
    s_expect_error(path, "empty file");

    s_tmp_path(path, sizeof path, "text.wav");
    const char *text = "this is not audio, just a text file with a .wav name\n";
    s_write_bytes(path, text, strlen(text));
    s_expect_error(path, "not a readable audio file");

    s_tmp_path(path, sizeof path, "nodata.wav");
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, NULL, 0);
    s_expect_error(path, "no audio frames");

    s_tmp_path(path, sizeof path, "adir.wav");
    assert_int_equal(mkdir(path, 0755), 0);
    s_expect_error(path, "is a directory");
}

static void test_truncated_flac_is_detected(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "cut.flac");
    sf_count_t frames = 16000 * 4;
    float *x = malloc(sizeof(float) * (size_t)frames);
    wisp_rng_t r;
    wisp_rng_seed(&r, 5);
    for (sf_count_t i = 0; i < frames; i++)
        x[i] = wisp_rng_uniform(&r) - 0.5f;
    s_write(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, x, frames);
    free(x);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size / 2), 0);
    wisp_audio_t a;
    wisp_error_t e = {0};
    int rc = wisp_audio_load(path, 0, &a, &e);
    assert_int_equal(rc, WISP_ERR_AUDIO);
    assert_null(a.samples);
    if (!strstr(e.msg, path) || (!strstr(e.msg, "truncated") && !strstr(e.msg, "decode error")))
        fail_msg("unexpected error for a truncated FLAC: %s", e.msg);
}

/* A canonical 44-byte WAV header (PCM 16) with the given fields and data_bytes of
 * zeros after it. */
static void s_write_wav_header(const char *path, int channels, int rate, int data_bytes)
{
    unsigned char h[44 + 64] = {0};
    int bits = 16, align = channels * bits / 8;
    memcpy(h, "RIFF", 4);
    int riff = 36 + data_bytes;
    memcpy(h + 4, &riff, 4);
    memcpy(h + 8, "WAVEfmt ", 8);
    int fmt_len = 16;
    short pcm = 1, ch = (short)channels, al = (short)align, bps = (short)bits;
    int byte_rate = rate * align;
    memcpy(h + 16, &fmt_len, 4);
    memcpy(h + 20, &pcm, 2);
    memcpy(h + 22, &ch, 2);
    memcpy(h + 24, &rate, 4);
    memcpy(h + 28, &byte_rate, 4);
    memcpy(h + 32, &al, 2);
    memcpy(h + 34, &bps, 2);
    memcpy(h + 36, "data", 4);
    memcpy(h + 40, &data_bytes, 4);
    s_write_bytes(path, h, 44 + (size_t)data_bytes);
}

static void test_zero_channel_and_absurd_rate_headers_are_refused(void **state)
{
    (void)state;
    char path[512];
    wisp_audio_t a;
    wisp_error_t e = {0};
    s_tmp_path(path, sizeof path, "zero_ch.wav");
    s_write_wav_header(path, 0, 16000, 64);
    assert_int_not_equal(wisp_audio_load(path, 0, &a, &e), WISP_OK);
    assert_non_null(strstr(e.msg, path));
    assert_null(a.samples);

    /* libsndfile accepts a 1 Hz WAV header; wisp refuses it */
    s_tmp_path(path, sizeof path, "rate1.wav");
    s_write_wav_header(path, 1, 1, 64);
    s_expect_error(path, "sample rate");

    wisp_error_clear(&e);
    s_tmp_path(path, sizeof path, "rate0.wav");
    s_write_wav_header(path, 1, 0, 64);
    assert_int_not_equal(wisp_audio_load(path, 0, &a, &e), WISP_OK);
    assert_non_null(strstr(e.msg, path));
}

static int s_remove(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int s_cleanup(void **state)
{
    (void)state;
    nftw(wisp_test_tmpdir(), s_remove, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void test_a_few_frames_at_a_high_rate_are_too_short_not_empty_audio(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "tiny192k.wav");
    float x[5] = {0.1f, 0.2f, 0.3f, 0.2f, 0.1f};
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 192000, 1, x, 5);
    /* 5 frames at 192 kHz are 0.4 samples at 16 kHz: no audio, an error naming it */
    s_expect_error(path, "too short");
    /* 12 frames at 192 kHz are one 16 kHz sample: audio */
    float y[12] = {0};
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 192000, 1, y, 12);
    wisp_audio_t a;
    assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
    assert_int_equal(a.n, 1);
    wisp_audio_free(&a);
}

static void test_nan_inf_and_absurd_float_samples_are_refused(void **state)
{
    (void)state;
    char path[512];
    const float bad[] = {NAN, INFINITY, -INFINITY, 1e30f, -2e3f};
    const int rates[] = {16000, 44100};
    for (int r = 0; r < 2; r++)
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            s_tmp_path(path, sizeof path, "badsample.wav");
            float *x = s_sine(rates[r], 4000, 1);
            x[1234] = bad[b];
            s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, rates[r], 1, x, 4000);
            free(x);
            s_expect_error(path, "sample");
        }
    /* loud but plausible float audio (over full scale, e.g. an unnormalised mix) loads */
    float *x = s_sine(16000, 4000, 1);
    x[100] = 900.0f;
    s_write(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, x, 4000);
    free(x);
    wisp_audio_t a;
    assert_int_equal(wisp_audio_load(path, 0, &a, NULL), WISP_OK);
    assert_true(a.samples[100] == 900.0f);
    wisp_audio_free(&a);
}

/* Samples another MP3 decoder gives for path (the mpg123 tool, gapless like
 * libsndfile), or -1 when it is not installed. */
static long s_mpg123_samples(const char *path)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "command -v mpg123 >/dev/null 2>&1 && mpg123 -q -s '%s' | wc -c",
             path);
    FILE *p = popen(cmd, "r");
    long bytes = -1;
    if (p && fscanf(p, "%ld", &bytes) != 1)
        bytes = -1;
    if (p)
        pclose(p);
    return bytes > 0 ? bytes / 2 : -1;
}

/* An MP3 as LAME writes it (libsndfile encodes through libmp3lame: a Xing/LAME tag with
 * the encoder delay and padding), then with the tag's frame count raised by `bump`
 * MPEG frames, as files re-muxed or cut by other tools carry it: libsndfile's header
 * length is then an estimate that the decode does not reach. Returns the bytes. */
static void s_write_lame_mp3(const char *path, int rate, sf_count_t frames, int bump)
{
    float *x = s_sine(rate, frames, 1);
    s_write(path, SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III, rate, 1, x, frames);
    free(x);
    if (!bump)
        return;
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    unsigned char head[512];
    size_t n = fread(head, 1, sizeof head, f);
    size_t at = 0;
    while (at + 12 <= n && memcmp(head + at, "Xing", 4) != 0 && memcmp(head + at, "Info", 4) != 0)
        at++;
    if (at + 12 > n)
        fail_msg("%s: no Xing/Info tag in the first frame", path);
    assert_true(head[at + 7] & 1); /* the frame count is present */
    unsigned long count = (unsigned long)head[at + 8] << 24 | (unsigned long)head[at + 9] << 16 |
                          (unsigned long)head[at + 10] << 8 | head[at + 11];
    count += (unsigned long)bump;
    unsigned char be[4] = {(unsigned char)(count >> 24), (unsigned char)(count >> 16),
                           (unsigned char)(count >> 8), (unsigned char)count};
    fseek(f, (long)at + 8, SEEK_SET);
    assert_int_equal(fwrite(be, 1, 4, f), 4);
    fclose(f);
}

static void test_mp3_shorter_than_its_header_estimate_is_audio_not_corruption(void **state)
{
    (void)state;
    char path[512];
    s_tmp_path(path, sizeof path, "lame16k.mp3");
    /* exact tag: exactly the samples written (gapless) */
    s_write_lame_mp3(path, 16000, 48611, 0);
    wisp_audio_t a;
    wisp_error_t e = {0};
    if (wisp_audio_load(path, 0, &a, &e) != WISP_OK)
        fail_msg("%s", e.msg);
    assert_int_equal(a.n, 48611);
    long ref = s_mpg123_samples(path);
    if (ref >= 0)
        assert_int_equal(a.n, ref);
    wisp_audio_free(&a);
    /* the tag claims more frames than the stream holds: header 49187, decode 49007 */
    for (int bump = 1; bump <= 3; bump++) {
        s_write_lame_mp3(path, 16000, 48611, bump);
        SF_INFO info = {0};
        SNDFILE *sf = sf_open(path, SFM_READ, &info);
        assert_non_null(sf);
        sf_close(sf);
        wisp_error_clear(&e);
        if (wisp_audio_load(path, 0, &a, &e) != WISP_OK)
            fail_msg("bump %d: %s", bump, e.msg);
        assert_true((sf_count_t)a.n < info.frames); /* short of the header: still audio */
        assert_true(a.n >= 48611);
        ref = s_mpg123_samples(path);
        if (ref >= 0 && (long)a.n != ref)
            fail_msg("bump %d: decoded %zu samples, mpg123 %ld", bump, a.n, ref);
        /* the duration is what was decoded, not the estimate */
        assert_true(fabs(a.duration - (double)a.n / 16000) < 1e-9);
        wisp_audio_free(&a);
    }
    /* resampled (44.1 kHz) and capped at 1 s: the cap still applies */
    s_tmp_path(path, sizeof path, "lame44k.mp3");
    s_write_lame_mp3(path, 44100, 44100 * 2, 2);
    if (wisp_audio_load(path, 0, &a, &e) != WISP_OK)
        fail_msg("%s", e.msg);
    assert_true(labs((long)a.n - 32000) < 400);
    wisp_audio_free(&a);
    assert_int_equal(wisp_audio_load(path, 1.0, &a, NULL), WISP_OK);
    assert_true(labs((long)a.n - 16000) < 40);
    wisp_audio_free(&a);
    if (ref < 0)
        printf("# mpg123 not installed: MP3 lengths checked against the samples written only\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_wav_at_16k_decodes_bit_exactly_and_is_never_clipped),
        cmocka_unit_test(test_24_bit_wav_keeps_24_bit_resolution),
        cmocka_unit_test(test_channels_are_mixed_by_the_arithmetic_mean),
        cmocka_unit_test(test_16_bit_pcm_decodes_to_the_bits_of_libsndfiles_float_read),
        cmocka_unit_test(test_every_libsndfile_format_decodes_to_16k_mono),
        cmocka_unit_test(test_resampling_44k_to_16k_is_high_quality_and_length_exact),
        cmocka_unit_test(test_max_seconds_stops_decoding_early_but_reports_the_full_duration),
        cmocka_unit_test(test_bad_files_give_one_line_errors_naming_file_and_reason),
        cmocka_unit_test(test_truncated_flac_is_detected),
        cmocka_unit_test(test_zero_channel_and_absurd_rate_headers_are_refused),
        cmocka_unit_test(test_a_few_frames_at_a_high_rate_are_too_short_not_empty_audio),
        cmocka_unit_test(test_nan_inf_and_absurd_float_samples_are_refused),
        cmocka_unit_test(test_mp3_shorter_than_its_header_estimate_is_audio_not_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, s_cleanup);
}
