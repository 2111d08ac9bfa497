#include "audio/synth.h"

#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

#define S_PI           3.14159265358979323846
#define S_FADE_SECONDS 0.010

static const char *const s_class_names[WISP_SYNTH_NUM_CLASSES] = {
    "tone", "noise", "chirp_up", "clicks", "chirp_down", "harmonic", "am", "fm",
};

const char *wisp_synth_class_name(int cls)
{
    return (cls >= 0 && cls < WISP_SYNTH_NUM_CLASSES) ? s_class_names[cls] : NULL;
}

int wisp_synth_class_index(const char *name)
{
    for (int i = 0; name && i < WISP_SYNTH_NUM_CLASSES; i++)
        if (strcmp(name, s_class_names[i]) == 0)
            return i;
    return -1;
}

/* ---- signal generators: each writes n samples of unit-ish scale; the caller
 * normalises the peak, adds background noise and fades. Frequencies are capped
 * at 0.4 * rate so that nothing aliases at 8 kHz. ---- */

static double s_uniform(wisp_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)wisp_rng_uniform(r);
}

/* Log-uniform: pitch perception is logarithmic, so spread pitches evenly in octaves. */
static double s_log_uniform(wisp_rng_t *r, double lo, double hi)
{
    return exp(s_uniform(r, log(lo), log(hi)));
}

static double s_cap(double f, int rate)
{
    return f < 0.4 * rate ? f : 0.4 * rate;
}

static void s_tone(wisp_rng_t *r, int rate, float *out, size_t n)
{
    double f = s_cap(s_log_uniform(r, 150, 3000), rate);
    double ph = s_uniform(r, 0, 2 * S_PI);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)sin(ph + 2 * S_PI * f * (double)i / rate);
}

static void s_harmonic(wisp_rng_t *r, int rate, float *out, size_t n)
{
    double f0 = s_log_uniform(r, 100, 500);
    int harmonics = 3 + (int)(wisp_rng_u64(r) % 6);
    double rolloff = s_uniform(r, 0.5, 1.2); /* amplitude of harmonic k is k^-rolloff */
    memset(out, 0, n * sizeof *out);
    for (int k = 1; k <= harmonics; k++) {
        double ph = s_uniform(r, 0, 2 * S_PI);
        if (k * f0 >= 0.45 * rate)
            continue;
        double a = pow(k, -rolloff);
        for (size_t i = 0; i < n; i++)
            out[i] += (float)(a * sin(ph + 2 * S_PI * k * f0 * (double)i / rate));
    }
}

/* Exponential sweep from f_start to f_end over the clip:
 * phase(t) = 2 pi f_start T / ln(k) * (k^(t/T) - 1), k = f_end / f_start. */
static void s_chirp(wisp_rng_t *r, int rate, float *out, size_t n, int up)
{
    double lo = s_log_uniform(r, 100, 400);
    double hi = s_cap(lo * pow(2.0, s_uniform(r, 2, 4)), rate);
    double f_start = up ? lo : hi, f_end = up ? hi : lo;
    double T = (double)n / rate, k = f_end / f_start, lk = log(k);
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        out[i] = (float)sin(2 * S_PI * f_start * T / lk * (exp(lk * t / T) - 1.0));
    }
}

/* RBJ cookbook band-pass (0 dB peak gain), run twice for a 4th-order band. */
static void s_noise_band(wisp_rng_t *r, int rate, float *out, size_t n)
{
    double fc = s_cap(s_log_uniform(r, 300, 3000), rate);
    double q = s_uniform(r, 1.5, 5);
    double w0 = 2 * S_PI * fc / rate, alpha = sin(w0) / (2 * q), a0 = 1 + alpha;
    double b0 = alpha / a0, b2 = -alpha / a0, a1 = -2 * cos(w0) / a0, a2 = (1 - alpha) / a0;
    for (size_t i = 0; i < n; i++)
        out[i] = wisp_rng_normal(r);
    for (int pass = 0; pass < 2; pass++) {
        double x1 = 0, x2 = 0, y1 = 0, y2 = 0;
        for (size_t i = 0; i < n; i++) {
            double x = out[i], y = b0 * x + b2 * x2 - a1 * y1 - a2 * y2;
            x2 = x1;
            x1 = x;
            y2 = y1;
            y1 = y;
            out[i] = (float)y;
        }
    }
}

static void s_am(wisp_rng_t *r, int rate, float *out, size_t n)
{
    double fc = s_cap(s_log_uniform(r, 300, 2000), rate);
    double fm = s_uniform(r, 3, 15), depth = s_uniform(r, 0.7, 1.0);
    double ph = s_uniform(r, 0, 2 * S_PI), phm = s_uniform(r, 0, 2 * S_PI);
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double env = 1 - depth / 2 + depth / 2 * cos(phm + 2 * S_PI * fm * t);
        out[i] = (float)(env * sin(ph + 2 * S_PI * fc * t));
    }
}

/* Sinusoidal FM: phase = 2 pi fc t + (dev / fm) sin(2 pi fm t). */
static void s_fm(wisp_rng_t *r, int rate, float *out, size_t n)
{
    double fc = s_cap(s_log_uniform(r, 400, 2000), rate) / 1.15;
    double fm = s_uniform(r, 3, 10), dev = fc * s_uniform(r, 0.05, 0.15);
    double ph = s_uniform(r, 0, 2 * S_PI);
    for (size_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        out[i] = (float)sin(ph + 2 * S_PI * fc * t + dev / fm * sin(2 * S_PI * fm * t));
    }
}

/* Clicks: exponentially decaying sinusoid bursts (1-3 kHz ring, 1-3 ms decay) at a
 * rate of 4-30 per second with +-20 % jitter on each interval. */
static void s_clicks(wisp_rng_t *r, int rate, float *out, size_t n)
{
    double per_s = s_log_uniform(r, 4, 30);
    double ring = s_cap(s_uniform(r, 1000, 3000), rate), decay = s_uniform(r, 0.001, 0.003);
    size_t len = (size_t)(5 * decay * rate) + 1;
    memset(out, 0, n * sizeof *out);
    double t = s_uniform(r, 0, 1.0 / per_s);
    while ((size_t)(t * rate) < n) {
        size_t start = (size_t)(t * rate);
        double amp = s_uniform(r, 0.6, 1.0);
        for (size_t j = 0; j < len && start + j < n; j++) {
            double u = (double)j / rate;
            out[start + j] += (float)(amp * exp(-u / decay) * sin(2 * S_PI * ring * u));
        }
        t += s_uniform(r, 0.8, 1.2) / per_s;
    }
}

int wisp_synth_clip(int cls, uint64_t seed, int rate, float *out, size_t n)
{
    if (cls < 0 || cls >= WISP_SYNTH_NUM_CLASSES || rate < 4000 || rate > 192000 || n == 0 || !out)
        return WISP_ERR_ARG;
    /* The class is mixed into the stream so two classes with the same seed differ. */
    wisp_rng_t r;
    wisp_rng_seed(&r, seed ^ (0xa0761d6478bd642full * (uint64_t)(cls + 1)));
    switch ((wisp_synth_class_t)cls) {
    case WISP_SYNTH_TONE: s_tone(&r, rate, out, n); break;
    case WISP_SYNTH_NOISE: s_noise_band(&r, rate, out, n); break;
    case WISP_SYNTH_CHIRP_UP: s_chirp(&r, rate, out, n, 1); break;
    case WISP_SYNTH_CLICKS: s_clicks(&r, rate, out, n); break;
    case WISP_SYNTH_CHIRP_DOWN: s_chirp(&r, rate, out, n, 0); break;
    case WISP_SYNTH_HARMONIC: s_harmonic(&r, rate, out, n); break;
    case WISP_SYNTH_AM: s_am(&r, rate, out, n); break;
    case WISP_SYNTH_FM: s_fm(&r, rate, out, n); break;
    case WISP_SYNTH_NUM_CLASSES: return WISP_ERR_ARG;
    }
    float peak = 0;
    for (size_t i = 0; i < n; i++)
        peak = fmaxf(peak, fabsf(out[i]));
    double level = s_uniform(&r, 0.1, 0.7);
    double scale = peak > 0 ? level / peak : 0;
    double noise = level * pow(10.0, -s_uniform(&r, 20, 40) / 20);
    size_t fade = (size_t)(S_FADE_SECONDS * rate);
    if (fade > n / 2)
        fade = n / 2;
    for (size_t i = 0; i < n; i++) {
        double g = 1;
        if (i < fade)
            g = (double)i / fade;
        else if (n - 1 - i < fade)
            g = (double)(n - 1 - i) / fade;
        /* Gaussian background noise: bounded by the clamp below (|x| <= 0.99). */
        double x = scale * g * out[i] + noise * wisp_rng_normal(&r);
        out[i] = (float)(x > 0.99 ? 0.99 : x < -0.99 ? -0.99 : x);
    }
    return WISP_OK;
}

/* ---- file formats ---- */

typedef struct {
    const char *name; /* wisp_synth_format_name */
    const char *ext;  /* file extension */
    int sf_format;    /* libsndfile major | subtype */
    int weight;       /* relative frequency in mixed datasets */
} s_format_t;

static const s_format_t s_formats[WISP_SYNTH_NUM_FORMATS] = {
    {"wav16", "wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 4},
    {"wav24", "wav", SF_FORMAT_WAV | SF_FORMAT_PCM_24, 2},
    {"wavf", "wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 2},
    {"flac16", "flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 3},
    {"flac24", "flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_24, 1},
    {"ogg", "ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 2},
    {"mp3", "mp3", SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III, 2},
    {"aiff16", "aiff", SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 1},
};

static const int s_rates[] = {8000, 16000, 22050, 44100, 48000};

const char *wisp_synth_format_name(int fmt)
{
    return (fmt >= 0 && fmt < WISP_SYNTH_NUM_FORMATS) ? s_formats[fmt].name : NULL;
}

wisp_synth_params_t wisp_synth_default_params(void)
{
    wisp_synth_params_t p = {0};
    p.classes = 4;
    p.per_class = 20;
    p.seed = 1;
    p.mixed_formats = 1;
    p.min_seconds = 0.5;
    p.max_seconds = 5.0;
    return p;
}

/* One planned clip: everything but the samples, decided before any file is written. */
typedef struct {
    int cls;        /* class index */
    int index;      /* j within the class */
    uint64_t seed;  /* wisp_synth_clip seed */
    int format;     /* wisp_synth_format_t */
    int rate;       /* Hz */
    int channels;   /* 1 or 2 */
    double seconds; /* duration */
    int split;      /* 0 train, 1 val, 2 test */
    char path[96];  /* relative to the dataset directory */
} s_clip_t;

uint64_t wisp_synth_clip_seed(uint64_t seed, int cls, int j)
{
    /* Hash the dataset seed first: XOR-ing the raw seed with the clip index made
     * clip j of seed s the same as clip j ^ s ^ s' of seed s'. */
    wisp_rng_t r;
    wisp_rng_seed(&r, seed);
    uint64_t dataset_key = wisp_rng_u64(&r);
    wisp_rng_seed(&r, dataset_key ^ ((uint64_t)(cls + 1) << 40) ^ (uint64_t)j);
    wisp_rng_u64(&r);
    return wisp_rng_u64(&r);
}

static int s_pick_format(wisp_rng_t *r, int *usable, int n_usable_weight)
{
    int pick = (int)(wisp_rng_u64(r) % (uint64_t)n_usable_weight);
    for (int f = 0; f < WISP_SYNTH_NUM_FORMATS; f++) {
        if (!usable[f])
            continue;
        if (pick < s_formats[f].weight)
            return f;
        pick -= s_formats[f].weight;
    }
    return WISP_SYNTH_WAV16;
}

/* A growing text buffer for the manifests. */
typedef struct {
    char *data; /* NUL-terminated */
    size_t len;
    size_t cap;
    int failed; /* allocation failed at some point */
} s_text_t;

static void s_text_printf(s_text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_text_printf(s_text_t *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int need =
            vsnprintf(t->data ? t->data + t->len : NULL, t->data ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (need < 0) {
            t->failed = 1;
            return;
        }
        if (t->data && t->len + (size_t)need < t->cap) {
            t->len += (size_t)need;
            return;
        }
        size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)need;
        char *p = realloc(t->data, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->data = p;
        t->cap = cap;
    }
}

static int s_text_save(s_text_t *t, const char *dir, const char *name, wisp_error_t *err)
{
    char path[4096];
    if (wisp_path_join(path, sizeof path, dir, name) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: output path too long", dir);
    if (t->failed)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory building the file", path);
    return wisp_write_file_atomic(path, t->data ? t->data : "", t->len, err);
}

/* Frames per sf_writef call (see s_write_audio). */
#define WISP_SYNTH_WRITE_BLOCK ((size_t)16384)

static int s_write_audio(const char *path, const float *mono, size_t n, const s_clip_t *c,
                         float *interleaved, uint64_t *bytes, wisp_error_t *err)
{
    SF_INFO info = {0};
    info.samplerate = c->rate;
    info.channels = c->channels;
    info.format = s_formats[c->format].sf_format;
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot write %s: %s", path,
                              s_formats[c->format].name, sf_strerror(NULL));
    /* The PEAK chunk of float WAVs holds a timestamp: drop it so that the same seed
     * gives the same bytes. */
    sf_command(sf, SFC_SET_ADD_PEAK_CHUNK, NULL, SF_FALSE);
    const float *src = mono;
    if (c->channels == 2) {
        /* A fixed small pan so that the channels differ but their mean is the clip. */
        for (size_t i = 0; i < n; i++) {
            interleaved[2 * i] = 1.1f * mono[i];
            interleaved[2 * i + 1] = 0.9f * mono[i];
        }
        src = interleaved;
    }
    /* Written in blocks: libvorbis's encoder takes stack space proportional to the frames
     * handed to it in one call, and a minute of audio in one sf_writef overflowed the stack
     * (SIGSEGV in vorbis_analysis_wrote). The bytes written do not depend on the block size. */
    int rc = WISP_OK;
    for (size_t at = 0; at < n && rc == WISP_OK; at += WISP_SYNTH_WRITE_BLOCK) {
        size_t len = n - at < WISP_SYNTH_WRITE_BLOCK ? n - at : WISP_SYNTH_WRITE_BLOCK;
        sf_count_t wrote = sf_writef_float(sf, src + at * (size_t)c->channels, (sf_count_t)len);
        if (wrote != (sf_count_t)len)
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: short write: %s", path, sf_strerror(sf));
    }
    if (sf_close(sf) != 0 && rc == WISP_OK)
        rc = wisp_error_set(err, WISP_ERR_IO, "%s: close failed", path);
    FILE *f = fopen(path, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        *bytes += (uint64_t)ftell(f);
        fclose(f);
    }
    return rc;
}

static int s_write_bytes(const char *path, const void *data, size_t len, wisp_error_t *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return wisp_error_set(err, WISP_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    int bad = fclose(f) != 0 || w != len;
    return bad ? wisp_error_set(err, WISP_ERR_IO, "%s: write failed", path) : WISP_OK;
}

static void s_put_le(uint8_t *p, uint32_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The corrupt kinds, cycled through: each is a realistic way a corpus goes bad. */
enum { S_BAD_TRUNCATED_FLAC, S_BAD_TEXT_WAV, S_BAD_EMPTY_WAV, S_BAD_HEADER_ONLY_WAV, S_BAD_KINDS };
static const char *const s_bad_names[S_BAD_KINDS] = {"truncated", "text", "empty", "headeronly"};
static const char *const s_bad_ext[S_BAD_KINDS] = {"flac", "wav", "wav", "wav"};

static int s_write_corrupt(const char *path, int kind, uint64_t seed, uint64_t *bytes,
                           wisp_error_t *err)
{
    int rc = WISP_OK;
    float *samples = NULL;
    switch (kind) {
    case S_BAD_TRUNCATED_FLAC: {
        /* A valid 2 s FLAC cut to a third: the header promises more than is there. */
        const size_t n = 2 * 16000;
        samples = wisp_alloc(n * sizeof *samples);
        if (!samples)
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        wisp_synth_clip(WISP_SYNTH_TONE, seed, 16000, samples, n);
        s_clip_t c = {0};
        c.rate = 16000;
        c.channels = 1;
        c.format = WISP_SYNTH_FLAC16;
        uint64_t full = 0;
        rc = s_write_audio(path, samples, n, &c, NULL, &full, err);
        if (rc == WISP_OK && truncate(path, (off_t)(full / 3)) != 0)
            rc = wisp_error_set(err, WISP_ERR_IO, "%s: truncate failed: %s", path, strerror(errno));
        *bytes += full / 3;
        break;
    }
    case S_BAD_TEXT_WAV: {
        static const char text[] = "This is not audio. It is a text file named like a WAV.\n";
        rc = s_write_bytes(path, text, sizeof text - 1, err);
        *bytes += sizeof text - 1;
        break;
    }
    case S_BAD_EMPTY_WAV: rc = s_write_bytes(path, "", 0, err); break;
    case S_BAD_HEADER_ONLY_WAV: {
        /* RIFF/WAVE header announcing 1 s of 16 kHz 16-bit mono, and no data. */
        uint8_t h[44];
        memcpy(h, "RIFF", 4);
        s_put_le(h + 4, 36 + 32000, 4);
        memcpy(h + 8, "WAVEfmt ", 8);
        s_put_le(h + 16, 16, 4);
        s_put_le(h + 20, 1, 2);     /* PCM */
        s_put_le(h + 22, 1, 2);     /* channels */
        s_put_le(h + 24, 16000, 4); /* rate */
        s_put_le(h + 28, 32000, 4); /* byte rate */
        s_put_le(h + 32, 2, 2);     /* block align */
        s_put_le(h + 34, 16, 2);    /* bits */
        memcpy(h + 36, "data", 4);
        s_put_le(h + 40, 32000, 4);
        rc = s_write_bytes(path, h, sizeof h, err);
        *bytes += sizeof h;
        break;
    }
    }
    wisp_free(samples);
    return rc;
}

static const char *const s_split_names[3] = {"train", "val", "test"};

static int s_check_params(const wisp_synth_params_t *p, wisp_error_t *err)
{
    if (!p || p->classes < 1 || p->classes > WISP_SYNTH_NUM_CLASSES)
        return wisp_error_set(err, WISP_ERR_ARG, "synth: classes must be 1..%d",
                              WISP_SYNTH_NUM_CLASSES);
    if (p->per_class < 1 || p->per_class > 1000000)
        return wisp_error_set(err, WISP_ERR_ARG, "synth: per-class must be 1..1000000");
    if (!(p->min_seconds >= 0.05) || !(p->max_seconds >= p->min_seconds) || p->max_seconds > 600)
        return wisp_error_set(err, WISP_ERR_ARG,
                              "synth: need 0.05 <= min-seconds <= max-seconds <= 600");
    if (p->corrupt < 0 || p->corrupt > 1000000)
        return wisp_error_set(err, WISP_ERR_ARG, "synth: corrupt must be 0..1000000");
    return WISP_OK;
}

/* Formats this libsndfile can write (MP3 needs libsndfile >= 1.1 built with lame);
 * returns their total weight. */
static int s_usable_formats(int usable[WISP_SYNTH_NUM_FORMATS])
{
    int total_weight = 0;
    for (int f = 0; f < WISP_SYNTH_NUM_FORMATS; f++) {
        SF_INFO info = {0};
        info.samplerate = 16000;
        info.channels = 1;
        info.format = s_formats[f].sf_format;
        usable[f] = sf_format_check(&info);
        if (usable[f])
            total_weight += s_formats[f].weight;
    }
    return total_weight;
}

/* Plans the clips of class c (cl: its per_class clips): the stratified split (shuffle
 * the class's clip indices, the first n_eval go to test, the next n_eval to val) and
 * each clip's seed, length, format, rate and channels. Raises *max_frames. */
static int s_plan_class(const char *dir, const wisp_synth_params_t *p, int c, int n_eval,
                        int *usable, int total_weight, s_clip_t *cls_clips, size_t *max_frames,
                        wisp_error_t *err)
{
    const char *label = s_class_names[c];
    char sub[4096];
    if (wisp_path_join(sub, sizeof sub, dir, label) != WISP_OK)
        return wisp_error_set(err, WISP_ERR_ARG, "%s: output path too long", dir);
    int rc = wisp_mkdir_p(sub, err);
    if (rc != WISP_OK)
        return rc;
    wisp_rng_t split_rng;
    wisp_rng_seed(&split_rng, p->seed * 0x2545f4914f6cdd1dull + (uint64_t)c);
    int *perm = calloc((size_t)p->per_class, sizeof *perm);
    if (!perm)
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", dir);
    for (int j = 0; j < p->per_class; j++)
        perm[j] = j;
    for (int j = p->per_class - 1; j > 0; j--) {
        int k = (int)(wisp_rng_u64(&split_rng) % (uint64_t)(j + 1));
        int t = perm[j];
        perm[j] = perm[k];
        perm[k] = t;
    }
    for (int pos = 0; pos < p->per_class; pos++) {
        s_clip_t *cl = &cls_clips[perm[pos]];
        cl->cls = c;
        cl->index = perm[pos];
        cl->split = pos < n_eval ? 2 : pos < 2 * n_eval ? 1 : 0;
    }
    free(perm);
    for (int j = 0; j < p->per_class; j++) {
        s_clip_t *cl = &cls_clips[j];
        cl->seed = wisp_synth_clip_seed(p->seed, c, j);
        wisp_rng_t r;
        wisp_rng_seed(&r, cl->seed ^ 0x5851f42d4c957f2dull);
        cl->seconds = s_uniform(&r, p->min_seconds, p->max_seconds);
        if (p->mixed_formats) {
            cl->format = s_pick_format(&r, usable, total_weight);
            cl->rate = s_rates[wisp_rng_u64(&r) % (sizeof s_rates / sizeof s_rates[0])];
            cl->channels = wisp_rng_uniform(&r) < 0.3f ? 2 : 1;
        } else {
            cl->format = WISP_SYNTH_WAV16;
            cl->rate = 16000;
            cl->channels = 1;
        }
        snprintf(cl->path, sizeof cl->path, "%s/%s_%04d.%s", label, label, j,
                 s_formats[cl->format].ext);
        size_t frames = (size_t)llround(cl->seconds * cl->rate);
        if (frames > *max_frames)
            *max_frames = frames;
    }
    return WISP_OK;
}

/* Synthesises and writes the n planned clips (mono/stereo: scratch of max_frames). */
static int s_write_clips(const char *dir, const wisp_synth_params_t *p, const s_clip_t *clips,
                         size_t n, size_t total_files, float *mono, float *stereo,
                         wisp_synth_summary_t *sum, wisp_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const s_clip_t *cl = &clips[i];
        char path[4096];
        if (wisp_path_join(path, sizeof path, dir, cl->path) != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: output path too long", dir);
        size_t frames = (size_t)llround(cl->seconds * cl->rate);
        wisp_synth_clip(cl->cls, cl->seed, cl->rate, mono, frames);
        int rc = s_write_audio(path, mono, frames, cl, stereo, &sum->bytes, err);
        if (rc != WISP_OK)
            return rc;
        sum->clips++;
        sum->seconds += (double)frames / cl->rate;
        sum->per_format[cl->format]++;
        if (p->progress)
            p->progress(p->progress_ctx, i + 1, total_files);
    }
    return WISP_OK;
}

/* The manifests being written. */
typedef struct {
    s_text_t csv[3], all, meta, classes, bad, mixed;
} s_texts_t;

static void s_texts_free(s_texts_t *t)
{
    for (int s = 0; s < 3; s++)
        free(t->csv[s].data);
    free(t->all.data);
    free(t->meta.data);
    free(t->classes.data);
    free(t->bad.data);
    free(t->mixed.data);
}

/* Writes the n_bad corrupt files to DIR/corrupt/ and the manifest rows: classes are
 * interleaved by order[] (so any prefix or shard of a manifest holds every class) and
 * the corrupt files spread evenly through all_with_corrupt. */
static int s_fill_manifests(const char *dir, const wisp_synth_params_t *p, const s_clip_t *clips,
                            const size_t *order, size_t n, size_t total_files, s_texts_t *t,
                            wisp_synth_summary_t *sum, wisp_error_t *err)
{
    size_t n_bad = (size_t)p->corrupt, next_bad = 0;
    int rc;
    if (n_bad > 0) {
        char sub[4096];
        if (wisp_path_join(sub, sizeof sub, dir, "corrupt") != WISP_OK)
            return wisp_error_set(err, WISP_ERR_ARG, "%s: output path too long", dir);
        if ((rc = wisp_mkdir_p(sub, err)) != WISP_OK)
            return rc;
        s_text_printf(&t->bad, "path,label\n");
    }
    for (size_t i = 0; i <= n; i++) {
        /* Before row i, insert the corrupt files whose slot is i. */
        while (next_bad < n_bad && (next_bad + 1) * (n + 1) / (n_bad + 1) <= i) {
            size_t b = next_bad++;
            int kind = (int)(b % S_BAD_KINDS);
            char rel[96], path[4096];
            snprintf(rel, sizeof rel, "corrupt/bad_%03zu_%s.%s", b, s_bad_names[kind],
                     s_bad_ext[kind]);
            if (wisp_path_join(path, sizeof path, dir, rel) != WISP_OK)
                return wisp_error_set(err, WISP_ERR_ARG, "%s: output path too long", dir);
            if ((rc = s_write_corrupt(path, kind, p->seed + b, &sum->bytes, err)) != WISP_OK)
                return rc;
            const char *label = s_class_names[b % (size_t)p->classes];
            s_text_printf(&t->bad, "%s,%s\n", rel, label);
            s_text_printf(&t->mixed, "%s,%s\n", rel, label);
            sum->corrupt++;
            if (p->progress)
                p->progress(p->progress_ctx, n + sum->corrupt, total_files);
        }
        if (i == n)
            break;
        const s_clip_t *cl = &clips[order[i]];
        const char *label = s_class_names[cl->cls];
        s_text_printf(&t->csv[cl->split], "%s,%s\n", cl->path, label);
        s_text_printf(&t->all, "%s,%s\n", cl->path, label);
        s_text_printf(&t->mixed, "%s,%s\n", cl->path, label);
        s_text_printf(&t->meta, "%s,%s,%s,%s,%d,%d,%.6f\n", cl->path, label,
                      s_split_names[cl->split], s_formats[cl->format].name, cl->rate, cl->channels,
                      (double)llround(cl->seconds * cl->rate) / cl->rate);
        if (cl->split == 0)
            sum->train++;
        else if (cl->split == 1)
            sum->val++;
        else
            sum->test++;
    }
    return WISP_OK;
}

static int s_save_manifests(const char *dir, int corrupt, s_texts_t *t, wisp_error_t *err)
{
    int rc;
    if ((rc = s_text_save(&t->csv[0], dir, "train.csv", err)) != WISP_OK ||
        (rc = s_text_save(&t->csv[1], dir, "val.csv", err)) != WISP_OK ||
        (rc = s_text_save(&t->csv[2], dir, "test.csv", err)) != WISP_OK ||
        (rc = s_text_save(&t->all, dir, "all.csv", err)) != WISP_OK ||
        (rc = s_text_save(&t->meta, dir, "meta.csv", err)) != WISP_OK ||
        (rc = s_text_save(&t->classes, dir, "classes.txt", err)) != WISP_OK)
        return rc;
    if (corrupt > 0 && ((rc = s_text_save(&t->bad, dir, "corrupt.csv", err)) != WISP_OK ||
                        (rc = s_text_save(&t->mixed, dir, "all_with_corrupt.csv", err)) != WISP_OK))
        return rc;
    return WISP_OK;
}

int wisp_synth_dataset(const char *dir, const wisp_synth_params_t *p, wisp_synth_summary_t *summary,
                       wisp_error_t *err)
{
    s_clip_t *clips = NULL;
    size_t *order = NULL;
    float *mono = NULL, *stereo = NULL;
    s_texts_t t;
    wisp_synth_summary_t sum = {0};
    memset(&t, 0, sizeof t);
    int rc = s_check_params(p, err);
    if (rc == WISP_OK)
        rc = wisp_mkdir_p(dir, err);
    if (rc != WISP_OK)
        return rc;
    int usable[WISP_SYNTH_NUM_FORMATS] = {0};
    int total_weight = s_usable_formats(usable);
    size_t n = (size_t)p->classes * (size_t)p->per_class;
    clips = calloc(n, sizeof *clips);
    order = calloc(n, sizeof *order);
    if (!clips || !order) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory planning %zu clips", dir, n);
        goto done;
    }
    /* ~15 % of each class to test and ~15 % to val (stratified) */
    int n_eval = p->per_class >= 3 ? (int)lround(0.15 * p->per_class) : 0;
    if (p->per_class >= 3 && n_eval < 1)
        n_eval = 1;
    size_t max_frames = 0;
    for (int c = 0; c < p->classes && rc == WISP_OK; c++)
        rc = s_plan_class(dir, p, c, n_eval, usable, total_weight, clips + (size_t)c * p->per_class,
                          &max_frames, err);
    if (rc != WISP_OK)
        goto done;
    mono = wisp_alloc(max_frames * sizeof *mono);
    stereo = wisp_alloc(2 * max_frames * sizeof *stereo);
    if (!mono || !stereo) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory for %zu frames", dir,
                            max_frames);
        goto done;
    }
    size_t total_files = n + (size_t)p->corrupt;
    if ((rc = s_write_clips(dir, p, clips, n, total_files, mono, stereo, &sum, err)) != WISP_OK)
        goto done;
    /* a deterministic shuffle of the clips for the manifests' row order */
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    wisp_rng_t shuffle;
    wisp_rng_seed(&shuffle, p->seed ^ 0x9e3779b97f4a7c15ull);
    for (size_t i = n - 1; i > 0; i--) {
        size_t k = (size_t)(wisp_rng_u64(&shuffle) % (uint64_t)(i + 1));
        size_t tmp = order[i];
        order[i] = order[k];
        order[k] = tmp;
    }
    for (int s = 0; s < 3; s++)
        s_text_printf(&t.csv[s], "path,label\n");
    s_text_printf(&t.all, "path,label\n");
    s_text_printf(&t.mixed, "path,label\n");
    s_text_printf(&t.meta, "path,label,split,format,rate,channels,seconds\n");
    for (int c = 0; c < p->classes; c++)
        s_text_printf(&t.classes, "%s\n", s_class_names[c]);
    if ((rc = s_fill_manifests(dir, p, clips, order, n, total_files, &t, &sum, err)) != WISP_OK ||
        (rc = s_save_manifests(dir, p->corrupt, &t, err)) != WISP_OK)
        goto done;
    if (summary)
        *summary = sum;
done:
    s_texts_free(&t);
    wisp_free(mono);
    wisp_free(stereo);
    free(order);
    free(clips);
    return rc;
}
