/* mel.c: Whisper log-mel features (NUMERICS.md section 1) with FFTW.
 *
 * Pipeline per clip: copy/zero-pad/cut to the working length, reflect-pad 200 samples
 * each side, then for blocks of frames: window (periodic Hann) -> batched r2c FFT ->
 * power |X|^2 -> mel filterbank -> log10. The filterbank is applied through its band
 * structure: Slaney triangles overlap only their neighbours, so each of the n_mels rows
 * has a handful of non-zero bins (~2 * 201 non-zeros in total instead of n_mels * 201);
 * summing just those is ~40x less work than the dense (n_mels x 201) x (201 x frames)
 * GEMM and gives the same sums up to float rounding. wisp_mel_apply_dense() keeps the
 * dense cblas_sgemm form as the twin the tests compare against. */
#include "mel.h"

#include <cblas.h>
#include <fftw3.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "util.h"

#define S_N_BINS (WISP_N_FFT / 2 + 1) /* 201 */
#define S_PAD (WISP_N_FFT / 2)        /* 200: centered frames */
#define S_BLOCK 32                    /* frames per batched FFT */
#define S_NYQUIST 8000.0              /* fmax of the filterbank: WISP_SAMPLE_RATE / 2 */

/* FFTW's planner (and plan destruction) is not thread-safe; fftwf_execute is. This one
 * process-wide lock is the only shared state of the module. */
static pthread_mutex_t s_fftw_lock = PTHREAD_MUTEX_INITIALIZER;

struct wisp_mel {
    int n_mels;
    float *filters;     /* (n_mels, 201) dense Slaney filterbank */
    int *band_lo;       /* (n_mels) first non-zero bin of each filter */
    int *band_len;      /* (n_mels) number of bins from band_lo (0 for an empty filter) */
    float *window;      /* (400) periodic Hann */
    float *padded;      /* (480000 + 400) reflect-padded working signal */
    float *frames;      /* (S_BLOCK, 400) windowed frames: FFT input */
    fftwf_complex *spec;/* (S_BLOCK, 201) FFT output */
    float *power;       /* (S_BLOCK, 201) |X|^2 */
    fftwf_plan plan;    /* S_BLOCK r2c transforms of size 400, frames -> spec */
};

/* Slaney mel scale as librosa.hz_to_mel / mel_to_hz with htk=False. */
static double s_hz_to_mel(double hz)
{
    const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
    const double logstep = log(6.4) / 27.0;
    if (hz >= min_log_hz)
        return min_log_mel + log(hz / min_log_hz) / logstep;
    return hz / f_sp;
}

static double s_mel_to_hz(double mel)
{
    const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
    const double logstep = log(6.4) / 27.0;
    if (mel >= min_log_mel)
        return min_log_hz * exp(logstep * (mel - min_log_mel));
    return f_sp * mel;
}

/* librosa.filters.mel(sr=16000, n_fft=400, n_mels, fmin=0, fmax=8000, htk=False,
 * norm="slaney"), computed in double like librosa and rounded once to float. */
static void s_slaney_filters(int n_mels, float *out /* (n_mels, 201) */)
{
    double mel_f[130];
    double mel_lo = s_hz_to_mel(0.0), mel_hi = s_hz_to_mel(S_NYQUIST);
    int n_pts = n_mels + 2;
    /* np.linspace: start + i * step, with the last point set to stop exactly */
    double step = (mel_hi - mel_lo) / (n_pts - 1);
    for (int i = 0; i < n_pts; i++)
        mel_f[i] = s_mel_to_hz(i == n_pts - 1 ? mel_hi : mel_lo + i * step);
    for (int m = 0; m < n_mels; m++) {
        double fdiff_lo = mel_f[m + 1] - mel_f[m], fdiff_hi = mel_f[m + 2] - mel_f[m + 1];
        double enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (int k = 0; k < S_N_BINS; k++) {
            double fk = (double)k * S_NYQUIST / (S_N_BINS - 1);
            double lower = -(mel_f[m] - fk) / fdiff_lo;
            double upper = (mel_f[m + 2] - fk) / fdiff_hi;
            double w = fmax(0.0, fmin(lower, upper));
            out[(size_t)m * S_N_BINS + k] = (float)(w * enorm);
        }
    }
}

wisp_mel_t *wisp_mel_new(int n_mels, wisp_error_t *err)
{
    if (n_mels != 80 && n_mels != 128) {
        wisp_error_set(err, WISP_ERR_ARG, "mel: n_mels must be 80 or 128, got %d", n_mels);
        return NULL;
    }
    wisp_mel_t *self = wisp_alloc(sizeof *self);
    if (!self)
        goto nomem;
    self->n_mels = n_mels;
    self->filters = wisp_alloc(sizeof(float) * (size_t)n_mels * S_N_BINS);
    self->band_lo = wisp_alloc(sizeof(int) * (size_t)n_mels);
    self->band_len = wisp_alloc(sizeof(int) * (size_t)n_mels);
    self->window = wisp_alloc(sizeof(float) * WISP_N_FFT);
    self->padded = wisp_alloc(sizeof(float) * (WISP_N_SAMPLES + 2 * S_PAD));
    self->frames = wisp_alloc(sizeof(float) * S_BLOCK * WISP_N_FFT);
    self->spec = wisp_alloc(sizeof(fftwf_complex) * S_BLOCK * S_N_BINS);
    self->power = wisp_alloc(sizeof(float) * S_BLOCK * S_N_BINS);
    if (!self->filters || !self->band_lo || !self->band_len || !self->window || !self->padded ||
        !self->frames || !self->spec || !self->power)
        goto nomem;

    s_slaney_filters(n_mels, self->filters);
    for (int m = 0; m < n_mels; m++) {
        const float *f = self->filters + (size_t)m * S_N_BINS;
        int lo = 0, hi = S_N_BINS;
        while (lo < S_N_BINS && f[lo] == 0.0f)
            lo++;
        while (hi > lo && f[hi - 1] == 0.0f)
            hi--;
        self->band_lo[m] = lo < S_N_BINS ? lo : 0;
        self->band_len[m] = hi - lo > 0 ? hi - lo : 0;
    }
    /* torch.hann_window(400) (periodic): 0.5 - 0.5 cos(2 pi n / 400) */
    for (int n = 0; n < WISP_N_FFT; n++)
        self->window[n] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * n / WISP_N_FFT));

    /* FFTW_ESTIMATE: deterministic plan choice (same bits on every run and rank), and on
     * this size it is as fast as a measured plan. */
    int size = WISP_N_FFT;
    pthread_mutex_lock(&s_fftw_lock);
    self->plan = fftwf_plan_many_dft_r2c(1, &size, S_BLOCK, self->frames, NULL, 1, WISP_N_FFT,
                                         self->spec, NULL, 1, S_N_BINS, FFTW_ESTIMATE);
    pthread_mutex_unlock(&s_fftw_lock);
    if (!self->plan) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED, "mel: FFTW could not plan a size-400 r2c FFT");
        wisp_mel_destroy(&self);
        return NULL;
    }
    return self;
nomem:
    wisp_error_set(err, WISP_ERR_NOMEM, "mel: out of memory");
    wisp_mel_destroy(&self);
    return NULL;
}

void wisp_mel_destroy(wisp_mel_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    wisp_mel_t *self = *self_p;
    if (self->plan) {
        pthread_mutex_lock(&s_fftw_lock);
        fftwf_destroy_plan(self->plan);
        pthread_mutex_unlock(&s_fftw_lock);
    }
    wisp_free(self->filters);
    wisp_free(self->band_lo);
    wisp_free(self->band_len);
    wisp_free(self->window);
    wisp_free(self->padded);
    wisp_free(self->frames);
    wisp_free(self->spec);
    wisp_free(self->power);
    wisp_free(self);
    *self_p = NULL;
}

int wisp_mel_n_mels(const wisp_mel_t *self) { return self->n_mels; }

const float *wisp_mel_filters(const wisp_mel_t *self) { return self->filters; }

size_t wisp_mel_padded_length(size_t n, int truncate)
{
    if (!truncate || n >= WISP_N_SAMPLES)
        return WISP_N_SAMPLES;
    size_t unit = 2 * WISP_HOP; /* 320: an even frame count for conv2's stride 2 */
    size_t len = (n + unit - 1) / unit * unit;
    return len < unit ? unit : len;
}

int wisp_mel_num_frames(size_t n, int truncate)
{
    return (int)(wisp_mel_padded_length(n, truncate) / WISP_HOP);
}

/* Builds self->padded = reflect_pad(zero_pad_or_cut(samples, len), 200) and returns
 * len. numpy/torch 'reflect' mirrors around the edge sample without repeating it. */
static size_t s_prepare_signal(wisp_mel_t *self, const float *samples, size_t n, size_t len)
{
    float *p = self->padded;
    size_t copy = n < len ? n : len;
    memcpy(p + S_PAD, samples, copy * sizeof(float));
    memset(p + S_PAD + copy, 0, (len - copy) * sizeof(float));
    for (int i = 1; i <= S_PAD; i++) {
        p[S_PAD - i] = p[S_PAD + i];
        p[S_PAD + len - 1 + i] = p[S_PAD + len - 1 - i];
    }
    return len;
}

/* Power spectra of frames t0 .. t0+nb-1 of self->padded into power (nb, 201). */
static void s_block_power(wisp_mel_t *self, int t0, int nb, float *power)
{
    for (int b = 0; b < S_BLOCK; b++) {
        float *dst = self->frames + (size_t)b * WISP_N_FFT;
        if (b >= nb) { /* tail of the last block: transformed, never used */
            memset(dst, 0, WISP_N_FFT * sizeof(float));
            continue;
        }
        const float *src = self->padded + (size_t)(t0 + b) * WISP_HOP;
        for (int i = 0; i < WISP_N_FFT; i++)
            dst[i] = src[i] * self->window[i];
    }
    fftwf_execute_dft_r2c(self->plan, self->frames, self->spec);
    for (int b = 0; b < nb; b++) {
        /* interleaved (re, im): fftwf_complex is float[2] or float _Complex depending
         * on whether <complex.h> (pulled in by OpenBLAS's cblas.h) came first */
        const float *x = (const float *)(self->spec + (size_t)b * S_N_BINS);
        float *pw = power + (size_t)b * S_N_BINS;
        for (int k = 0; k < S_N_BINS; k++)
            pw[k] = x[2 * k] * x[2 * k] + x[2 * k + 1] * x[2 * k + 1];
    }
}

void wisp_mel_power(wisp_mel_t *self, const float *samples, size_t n, int truncate,
                    float *power)
{
    size_t len = s_prepare_signal(self, samples, n, wisp_mel_padded_length(n, truncate));
    int frames = (int)(len / WISP_HOP);
    for (int t0 = 0; t0 < frames; t0 += S_BLOCK) {
        int nb = frames - t0 < S_BLOCK ? frames - t0 : S_BLOCK;
        s_block_power(self, t0, nb, power + (size_t)t0 * S_N_BINS);
    }
}

/* log10(max(mel, 1e-10)) -> clamp to (max - 8) -> (x + 4) / 4, over the whole matrix. */
static void s_log_normalize(float *out, size_t count, float vmax)
{
    float floor_v = vmax - 8.0f;
    for (size_t i = 0; i < count; i++) {
        float v = out[i] > floor_v ? out[i] : floor_v;
        out[i] = (v + 4.0f) / 4.0f;
    }
}

void wisp_mel_compute(wisp_mel_t *self, const float *samples, size_t n, int truncate, float *out)
{
    size_t len = s_prepare_signal(self, samples, n, wisp_mel_padded_length(n, truncate));
    int frames = (int)(len / WISP_HOP);
    int n_mels = self->n_mels;
    float vmax = -FLT_MAX;
    for (int t0 = 0; t0 < frames; t0 += S_BLOCK) {
        int nb = frames - t0 < S_BLOCK ? frames - t0 : S_BLOCK;
        s_block_power(self, t0, nb, self->power);
        for (int m = 0; m < n_mels; m++) {
            const float *f = self->filters + (size_t)m * S_N_BINS + self->band_lo[m];
            int lo = self->band_lo[m], blen = self->band_len[m];
            float *o = out + (size_t)m * frames + t0;
            for (int b = 0; b < nb; b++) {
                const float *pw = self->power + (size_t)b * S_N_BINS + lo;
                float s = 0.0f;
                for (int k = 0; k < blen; k++)
                    s += f[k] * pw[k];
                float v = log10f(s > 1e-10f ? s : 1e-10f);
                o[b] = v;
                vmax = v > vmax ? v : vmax;
            }
        }
    }
    s_log_normalize(out, (size_t)n_mels * frames, vmax);
}

void wisp_mel_apply_dense(const wisp_mel_t *self, const float *power, int frames, float *out)
{
    int n_mels = self->n_mels;
    /* out (n_mels, frames) = filters (n_mels, 201) x power^T (201, frames) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n_mels, frames, S_N_BINS, 1.0f,
                self->filters, S_N_BINS, power, S_N_BINS, 0.0f, out, frames);
    float vmax = -FLT_MAX;
    size_t count = (size_t)n_mels * frames;
    for (size_t i = 0; i < count; i++) {
        out[i] = log10f(out[i] > 1e-10f ? out[i] : 1e-10f);
        vmax = out[i] > vmax ? out[i] : vmax;
    }
    s_log_normalize(out, count, vmax);
}
