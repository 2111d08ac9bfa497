/* mel.c: Whisper log-mel features (NUMERICS.md section 1) with FFTW.
 *
 * Per clip, for blocks of S_BLOCK frames: window (periodic Hann) each frame (read in
 * place from the samples; only frames touching an edge are built from zero padding and
 * reflection), two frames per complex FFT (real + i imaginary; the two spectra are
 * separated exactly by the conjugate symmetry of real signals) -> |X|^2 -> mel
 * filterbank; then log10, the max - 8 floor and (x + 4) / 4 over the whole matrix.
 *
 * The filterbank is applied through its band structure: Slaney triangles overlap only
 * their neighbours, so the (n_mels x 201) matrix has ~390 non-zeros (391 for 80 mels,
 * 394 for 128) instead of 16 080 / 25 728; summing just those is ~40x less work than
 * the dense (n_mels x 201) x (201 x frames) GEMM and gives the same sums up to float
 * rounding. wisp_mel_apply_dense() keeps the dense cblas_sgemm form as the twin the
 * tests compare against. 30 s clip, one core: ~0.85 ms (80 mels), of which ~0.4 ms is
 * FFTW (docs/BENCHMARKS.md). */
#include "audio/mel.h"

#include <cblas.h>
#include <fftw3.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "base/util.h"

#define S_N_BINS  (WISP_N_FFT / 2 + 1) /* 201 */
#define S_PAD     (WISP_N_FFT / 2)     /* 200: centered frames */
#define S_BLOCK   16                   /* frames per batched FFT */
#define S_PAIRS   (S_BLOCK / 2)        /* complex transforms per block: two frames each */
#define S_NYQUIST 8000.0               /* fmax of the filterbank: WISP_SAMPLE_RATE / 2 */

/* FFTW's planner (and plan destruction) is not thread-safe; fftwf_execute is. This one
 * process-wide lock is the only shared state of the module. */
static pthread_mutex_t s_fftw_lock = PTHREAD_MUTEX_INITIALIZER;

struct wisp_mel {
    int n_mels;
    float *filters;      /* (n_mels, 201) dense Slaney filterbank */
    int *band_lo;        /* (n_mels) first non-zero bin of each filter */
    int *band_len;       /* (n_mels) number of bins from band_lo (0 for an empty filter) */
    float *window;       /* (400) periodic Hann */
    float *edge;         /* (2, 400) frames assembled from padding and reflection */
    float *zeros;        /* (400) the frame past the end of a clip */
    fftwf_complex *pack; /* (S_PAIRS, 400) frame 2p windowed + i * frame 2p+1 windowed */
    fftwf_complex *spec; /* (S_PAIRS, 400) their complex DFTs */
    float *power;        /* (201, S_BLOCK) |X_k|^2, bin-major: power[k * S_BLOCK + b] */
    fftwf_plan plan;     /* S_PAIRS complex transforms of size 400, pack -> spec */
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
    self->edge = wisp_alloc(sizeof(float) * 2 * WISP_N_FFT);
    self->zeros = wisp_alloc(sizeof(float) * WISP_N_FFT); /* zeroed by wisp_alloc */
    self->pack = wisp_alloc(sizeof(fftwf_complex) * S_PAIRS * WISP_N_FFT);
    self->spec = wisp_alloc(sizeof(fftwf_complex) * S_PAIRS * WISP_N_FFT);
    self->power = wisp_alloc(sizeof(float) * S_N_BINS * S_BLOCK);
    if (!self->filters || !self->band_lo || !self->band_len || !self->window || !self->edge ||
        !self->zeros || !self->pack || !self->spec || !self->power)
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

    /* Two real frames per complex transform: FFTW's complex size-400 codelets are SIMD
     * throughout and run ~2.7x faster here than its size-400 r2c, so a pair costs less
     * than one r2c frame (s_unpack_power separates the two spectra). FFTW_ESTIMATE:
     * deterministic plan choice (same bits on every run and rank); a measured plan is
     * within 10% on this size. */
    int size = WISP_N_FFT;
    pthread_mutex_lock(&s_fftw_lock);
    self->plan = fftwf_plan_many_dft(1, &size, S_PAIRS, self->pack, NULL, 1, WISP_N_FFT, self->spec,
                                     NULL, 1, WISP_N_FFT, FFTW_FORWARD, FFTW_ESTIMATE);
    pthread_mutex_unlock(&s_fftw_lock);
    if (!self->plan) {
        wisp_error_set(err, WISP_ERR_UNSUPPORTED, "mel: FFTW could not plan size-400 complex FFTs");
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
    wisp_free(self->edge);
    wisp_free(self->zeros);
    wisp_free(self->pack);
    wisp_free(self->spec);
    wisp_free(self->power);
    wisp_free(self);
    *self_p = NULL;
}

int wisp_mel_n_mels(const wisp_mel_t *self)
{
    return self->n_mels;
}

const float *wisp_mel_filters(const wisp_mel_t *self)
{
    return self->filters;
}

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

/* The clip as the STFT sees it: samples[0..copy) zero-padded to len, then reflected
 * (numpy/torch 'reflect': mirrored around the edge sample without repeating it) by 200
 * samples at both ends. */
typedef struct {
    const float *samples;
    size_t copy; /* samples used: min(n, len) */
    size_t len;  /* working length (>= 320 > 200, so one reflection suffices) */
} s_signal_t;

/* Value at index i of the centered signal, i in [-200, len + 200). */
static float s_signal_at(const s_signal_t *sig, long i)
{
    if (i < 0)
        i = -i;
    if (i >= (long)sig->len)
        i = 2 * ((long)sig->len - 1) - i;
    return (size_t)i < sig->copy ? sig->samples[i] : 0.0f;
}

/* Start of frame t of the clip: in place when the frame lies inside the samples,
 * otherwise assembled in edge from padding and reflection. */
static const float *s_frame(const s_signal_t *sig, int t, float *edge)
{
    long start = (long)t * WISP_HOP - S_PAD; /* first signal index of the frame */
    if (start >= 0 && start + WISP_N_FFT <= (long)sig->copy)
        return sig->samples + start;
    for (int i = 0; i < WISP_N_FFT; i++)
        edge[i] = s_signal_at(sig, start + i);
    return edge;
}

/* z = window * (frame a + i frame b), interleaved complex. */
WISP_VECTOR_CLONES
static void s_window_pair(const float *restrict window, const float *restrict a,
                          const float *restrict b, float *restrict z)
{
    for (int i = 0; i < WISP_N_FFT; i++) {
        z[2 * i] = a[i] * window[i];
        z[2 * i + 1] = b[i] * window[i];
    }
}

/* Separates the two real spectra packed in one complex DFT Z = DFT(a + i b), bins k and
 * j = (400 - k) mod 400:  A_k = (Z_k + conj Z_j) / 2,  B_k = (Z_k - conj Z_j) / 2i, so
 *   |A_k|^2 = ((Re Z_k + Re Z_j)^2 + (Im Z_k - Im Z_j)^2) / 4
 *   |B_k|^2 = ((Im Z_k + Im Z_j)^2 + (Re Z_k - Re Z_j)^2) / 4
 * and writes them to pw[k * S_BLOCK] and pw[k * S_BLOCK + 1] for k = 0 .. 200. */
static inline void s_unpack_bin(const float *restrict z, int k, float *restrict pw)
{
    int j = (WISP_N_FFT - k) % WISP_N_FFT;
    float sr = z[2 * k] + z[2 * j], di = z[2 * k + 1] - z[2 * j + 1];
    float si = z[2 * k + 1] + z[2 * j + 1], dr = z[2 * k] - z[2 * j];
    pw[(size_t)k * S_BLOCK] = 0.25f * (sr * sr + di * di);
    pw[(size_t)k * S_BLOCK + 1] = 0.25f * (si * si + dr * dr);
}

#if defined(__GNUC__) && !defined(__clang__)
typedef float s_v8 __attribute__((vector_size(32)));
typedef int s_i8 __attribute__((vector_size(32)));

/* s_unpack_bin for bins 1 .. 196 four at a time (same arithmetic, same bits): the
 * partners 400 - k .. 397 - k are one 8-float load, pair-reversed. */
WISP_VECTOR_CLONES
static void s_unpack_power(const float *restrict z, float *restrict pw)
{
    const s_i8 rev = {6, 7, 4, 5, 2, 3, 0, 1}, swap = {1, 0, 3, 2, 5, 4, 7, 6};
    const s_i8 even_odd = {0, 9, 2, 11, 4, 13, 6, 15}; /* even lanes of a, odd of b */
    s_unpack_bin(z, 0, pw);
    int k = 1;
    for (; k + 4 <= S_N_BINS - 1; k += 4) {
        s_v8 c, d;
        memcpy(&c, z + 2 * k, sizeof c);
        memcpy(&d, z + 2 * (WISP_N_FFT - k - 3), sizeof d);
        d = __builtin_shuffle(d, rev);
        s_v8 s2 = (c + d) * (c + d), t2 = (c - d) * (c - d);
        s_v8 u = __builtin_shuffle(s2, t2, even_odd); /* (sr^2, di^2) per bin */
        s_v8 v = __builtin_shuffle(t2, s2, even_odd); /* (dr^2, si^2) per bin */
        s_v8 w = 0.25f * __builtin_shuffle(u + __builtin_shuffle(u, swap),
                                           __builtin_shuffle(v, swap) + v, even_odd);
        for (int m = 0; m < 4; m++)
            memcpy(pw + (size_t)(k + m) * S_BLOCK, (const float *)&w + 2 * m, 2 * sizeof(float));
    }
    for (; k < S_N_BINS; k++)
        s_unpack_bin(z, k, pw);
}
#else
static void s_unpack_power(const float *restrict z, float *restrict pw)
{
    for (int k = 0; k < S_N_BINS; k++)
        s_unpack_bin(z, k, pw);
}
#endif

/* Windows frames t0 .. t0+nb-1, transforms them in pairs and leaves |X_k|^2 of each
 * in self->power (bin-major). */
static void s_block_power(wisp_mel_t *self, const s_signal_t *sig, int t0, int nb)
{
    for (int p = 0; p < S_PAIRS; p++) {
        /* frames past nb (the tail of the last block) are transformed, never used */
        const float *a = 2 * p < nb ? s_frame(sig, t0 + 2 * p, self->edge) : self->zeros;
        const float *b =
            2 * p + 1 < nb ? s_frame(sig, t0 + 2 * p + 1, self->edge + WISP_N_FFT) : self->zeros;
        s_window_pair(self->window, a, b, (float *)(self->pack + (size_t)p * WISP_N_FFT));
    }
    fftwf_execute_dft(self->plan, self->pack, self->spec);
    for (int p = 0; p < S_PAIRS; p++)
        s_unpack_power((const float *)(self->spec + (size_t)p * WISP_N_FFT), self->power + 2 * p);
}

void wisp_mel_power(wisp_mel_t *self, const float *samples, size_t n, int truncate, float *power)
{
    size_t len = wisp_mel_padded_length(n, truncate);
    s_signal_t sig = {samples, n < len ? n : len, len};
    int frames = (int)(len / WISP_HOP);
    for (int t0 = 0; t0 < frames; t0 += S_BLOCK) {
        int nb = frames - t0 < S_BLOCK ? frames - t0 : S_BLOCK;
        s_block_power(self, &sig, t0, nb);
        for (int b = 0; b < nb; b++)
            for (int k = 0; k < S_N_BINS; k++)
                power[(size_t)(t0 + b) * S_N_BINS + k] = self->power[(size_t)k * S_BLOCK + b];
    }
}

/* log10 of one positive normal float; see wisp_mel_log10. */
static inline float s_log10(float x)
{
    /* x = 2^e * m with m in [sqrt(1/2), sqrt(2)): offsetting the bits by the pattern of
     * sqrt(1/2) before splitting exponent and mantissa makes the split branch-free */
    const uint32_t sqrt_half = 0x3f3504f3u;
    /* log10(2) = hi + lo with hi's low mantissa bits zero, so e * hi is exact and the
     * result is rounded once at the end: log10 of 1e-10 comes out -10 exactly */
    const float log10_2_hi = 0x1.344p-2f, log10_2_lo = 4.6050390e-06f;
    const float log10e = 0.434294481903252f;
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits += 0x3f800000u - sqrt_half;
    int e = (int)(bits >> 23) - 127;
    uint32_t mbits = (bits & 0x007fffffu) + sqrt_half;
    float m;
    memcpy(&m, &mbits, sizeof m);
    /* ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172: the series to s^9 is below
     * float rounding (the next term, s^11 / 11, is < 4e-10 relative) */
    float f = m - 1.0f; /* exact */
    float s = f / (2.0f + f);
    float z = s * s;
    float ln_m =
        2.0f * s * (1.0f + z * (1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7 + z * (1.0f / 9)))));
    return (float)e * log10_2_hi + ((float)e * log10_2_lo + ln_m * log10e);
}

WISP_VECTOR_CLONES
void wisp_mel_log10(float *x, size_t n)
{
    /* fixed inner trip count: GCC's -O2 cost model vectorises this, not an open loop */
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            x[i + j] = s_log10(x[i + j]);
    for (; i < n; i++)
        x[i] = s_log10(x[i]);
}

/* (max(x, vmax - 8) + 4) / 4 over the whole matrix: the last steps of NUMERICS 1.6. */
WISP_VECTOR_CLONES
static void s_log_normalize(float *out, size_t count, float vmax)
{
    float floor_v = vmax - 8.0f;
    size_t i = 0;
    for (; i + 8 <= count; i += 8) /* fixed inner count: vectorised at -O2 */
        for (int j = 0; j < 8; j++) {
            float v = out[i + j] > floor_v ? out[i + j] : floor_v;
            out[i + j] = (v + 4.0f) / 4.0f;
        }
    for (; i < count; i++) {
        float v = out[i] > floor_v ? out[i] : floor_v;
        out[i] = (v + 4.0f) / 4.0f;
    }
}

/* o[b] = log10(max(sum_k f[k] |X_k(b)|^2, 1e-10)) for the S_BLOCK frames b of a block,
 * over one mel row's band of len bins (the log while the sums are in registers, not in
 * a later pass over the whole matrix); pw points at the band's first bin, bin-major. With GCC
 * the 16 accumulators are two 8-wide vectors that stay in registers across the band;
 * the plain loop is the fallback with the same arithmetic (each lane summed over k in
 * order), so both give identical bits. */
#if defined(__GNUC__) && !defined(__clang__) && S_BLOCK == 16
/* Lane-wise max(a, b) and s_log10, the same operations in the same order as the
 * scalar forms (so the same bits), written for 8-wide vectors. */
#define S_INLINE static inline __attribute__((always_inline))

/* *a = max(*a, *b) lane-wise (vectors through pointers: by value changes the ABI) */
S_INLINE void s_vmax(s_v8 *a, const s_v8 *b)
{
    s_i8 ai, bi, take_a = *a > *b;
    memcpy(&ai, a, sizeof ai);
    memcpy(&bi, b, sizeof bi);
    s_i8 ri = (ai & take_a) | (bi & ~take_a);
    memcpy(a, &ri, sizeof ri);
}

/* *xp = s_log10(*xp) lane-wise */
S_INLINE void s_log10_v8(s_v8 *xp)
{
    s_v8 x = *xp;
    const int sqrt_half = 0x3f3504f3;
    const float log10_2_hi = 0x1.344p-2f, log10_2_lo = 4.6050390e-06f;
    const float log10e = 0.434294481903252f;
    s_i8 bits;
    memcpy(&bits, &x, sizeof bits);
    bits += 0x3f800000 - sqrt_half;
    s_i8 e = (bits >> 23) - 127;
    s_i8 mbits = (bits & 0x007fffff) + sqrt_half;
    s_v8 m;
    memcpy(&m, &mbits, sizeof m);
    s_v8 f = m - 1.0f;
    s_v8 sv = f / (2.0f + f);
    s_v8 z = sv * sv;
    s_v8 ln_m =
        2.0f * sv * (1.0f + z * (1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7 + z * (1.0f / 9)))));
    s_v8 ef = __builtin_convertvector(e, s_v8);
    *xp = ef * log10_2_hi + (ef * log10_2_lo + ln_m * log10e);
}

WISP_VECTOR_CLONES
static void s_band_sums(const float *restrict f, int len, const float *restrict pw,
                        float *restrict o, float *restrict running)
{
    s_v8 a0 = {0}, a1 = {0};
    for (int k = 0; k < len; k++) {
        s_v8 p0, p1;
        memcpy(&p0, pw + (size_t)k * S_BLOCK, sizeof p0);
        memcpy(&p1, pw + (size_t)k * S_BLOCK + 8, sizeof p1);
        a0 += f[k] * p0;
        a1 += f[k] * p1;
    }
    const s_v8 tiny = {1e-10f, 1e-10f, 1e-10f, 1e-10f, 1e-10f, 1e-10f, 1e-10f, 1e-10f};
    s_vmax(&a0, &tiny);
    s_vmax(&a1, &tiny);
    s_log10_v8(&a0);
    s_log10_v8(&a1);
    memcpy(o, &a0, sizeof a0);
    memcpy(o + 8, &a1, sizeof a1);
    if (running) {
        s_v8 r;
        memcpy(&r, running, sizeof r);
        s_vmax(&r, &a0);
        s_vmax(&r, &a1);
        memcpy(running, &r, sizeof r);
    }
}

#else
WISP_VECTOR_CLONES
static void s_band_sums(const float *restrict f, int len, const float *restrict pw,
                        float *restrict o, float *restrict running)
{
    float acc[S_BLOCK] = {0};
    for (int k = 0; k < len; k++)
        for (int b = 0; b < S_BLOCK; b++)
            acc[b] += f[k] * pw[(size_t)k * S_BLOCK + b];
    for (int b = 0; b < S_BLOCK; b++)
        o[b] = s_log10(acc[b] > 1e-10f ? acc[b] : 1e-10f);
    for (int b = 0; running && b < S_BLOCK; b++)
        running[b % 8] = o[b] > running[b % 8] ? o[b] : running[b % 8];
}
#endif

void wisp_mel_compute(wisp_mel_t *self, const float *samples, size_t n, int truncate, float *out)
{
    size_t len = wisp_mel_padded_length(n, truncate);
    s_signal_t sig = {samples, n < len ? n : len, len};
    int frames = (int)(len / WISP_HOP);
    int n_mels = self->n_mels;
    /* A short clip in padded mode is mostly zeros: frames that start past the last
     * sample (and whose right reflection only mirrors zeros) have |X|^2 = 0 exactly, so
     * their log-mel is log10 of the 1e-10 floor, -10, without any FFT. */
    float running[8] = {-10.0f, -10.0f, -10.0f, -10.0f, -10.0f, -10.0f, -10.0f, -10.0f};
    int silent_from = frames;
    if (sig.copy + S_PAD + 1 <= len)
        silent_from = (int)((sig.copy + S_PAD + WISP_HOP - 1) / WISP_HOP);
    for (int t0 = 0; t0 < frames; t0 += S_BLOCK) {
        int nb = frames - t0 < S_BLOCK ? frames - t0 : S_BLOCK;
        if (t0 >= silent_from) {
            for (int m = 0; m < n_mels; m++)
                for (int b = 0; b < nb; b++)
                    out[(size_t)m * frames + t0 + b] = -10.0f;
            continue;
        }
        s_block_power(self, &sig, t0, nb);
        for (int m = 0; m < n_mels; m++) {
            const float *f = self->filters + (size_t)m * S_N_BINS + self->band_lo[m];
            const float *pw = self->power + (size_t)self->band_lo[m] * S_BLOCK;
            float *o = out + (size_t)m * frames + t0;
            if (nb == S_BLOCK) {
                s_band_sums(f, self->band_len[m], pw, o, running);
            } else {
                float tail[S_BLOCK];
                s_band_sums(f, self->band_len[m], pw, tail, NULL);
                memcpy(o, tail, sizeof(float) * nb);
                for (int b = 0; b < nb; b++)
                    running[0] = tail[b] > running[0] ? tail[b] : running[0];
            }
        }
    }
    float vmax = running[0]; /* every log-mel value is >= log10(1e-10) = -10 */
    for (int j = 1; j < 8; j++)
        vmax = running[j] > vmax ? running[j] : vmax;
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
