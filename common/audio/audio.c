/* audio.c: decode with libsndfile, mix to mono, resample to 16 kHz with libsoxr.
 *
 * Streaming: the file is read in blocks of frames (sf_readf_float), each block is mixed
 * to mono and pushed through a streaming soxr resampler, so memory is the output plus
 * one block whatever the file's length. Samples stay float: libsndfile normalises
 * integer PCM to [-1, 1) and float files are passed through unchanged. */
#include "audio/audio.h"

#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <string.h>
#include <sys/stat.h>

#include "base/util.h"

#define S_BLOCK_SAMPLES 65536 /* interleaved samples read per sf_readf_float call */
#define S_MAX_CHANNELS  1024  /* more is a corrupt header, not a recording */
#define S_MIN_RATE      1000  /* Hz; outside [S_MIN_RATE, S_MAX_RATE] is a bad header */
#define S_MAX_RATE      1000000

/* Growable 16 kHz output buffer. */
typedef struct {
    float *data; /* (cap) wisp_alloc'd */
    size_t n;    /* samples written */
    size_t cap;
} s_buf_t;

/* Ensures room for `more` further samples. */
static int s_buf_reserve(s_buf_t *b, size_t more)
{
    if (b->n + more <= b->cap)
        return WISP_OK;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->n + more)
        cap *= 2;
    float *p = wisp_alloc_raw(cap * sizeof(float)); /* only [0, n) is ever read */
    if (!p)
        return WISP_ERR_NOMEM;
    if (b->n)
        memcpy(p, b->data, b->n * sizeof(float));
    wisp_free(b->data);
    b->data = p;
    b->cap = cap;
    return WISP_OK;
}

/* 16-bit PCM to float exactly as libsndfile's own conversion (x * 2^-15, exact in
 * float), but vectorised: libsndfile's scalar loop was most of a 16 kHz WAV's decode. */
WISP_VECTOR_CLONES
static void s_short_to_float(const short *restrict src, size_t n, float *restrict dst)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) /* fixed inner count: vectorised at -O2 */
        for (int j = 0; j < 8; j++)
            dst[i + j] = (float)src[i + j] * 0x1p-15f;
    for (; i < n; i++)
        dst[i] = (float)src[i] * 0x1p-15f;
}

/* sf_readf_float, through the 16-bit fast path when pcm16 (raw holds the frames). */
static sf_count_t s_readf(SNDFILE *sf, int pcm16, short *raw, float *dst, sf_count_t frames,
                          int channels)
{
    if (!pcm16)
        return sf_readf_float(sf, dst, frames);
    sf_count_t got = sf_readf_short(sf, raw, frames);
    if (got > 0)
        s_short_to_float(raw, (size_t)got * (size_t)channels, dst);
    return got;
}

/* Pushes n mono samples (or, with in == NULL, flushes) through the resampler into b. */
static int s_resample(soxr_t rs, double ratio, const float *in, size_t n, s_buf_t *b,
                      const char *path, wisp_error_t *err)
{
    size_t consumed = 0;
    for (;;) {
        /* room for this block's output plus the filter's delayed tail */
        size_t room = (size_t)((double)(n - consumed) * ratio) + 4096;
        if (s_buf_reserve(b, room) != WISP_OK)
            return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory while resampling", path);
        size_t idone = 0, odone = 0;
        soxr_error_t e = soxr_process(rs, in ? in + consumed : NULL, in ? n - consumed : 0,
                                      in ? &idone : NULL, b->data + b->n, b->cap - b->n, &odone);
        if (e)
            return wisp_error_set(err, WISP_ERR_AUDIO, "%s: resampling failed: %s", path, e);
        b->n += odone;
        consumed += idone;
        if (in ? consumed >= n : odone == 0)
            return WISP_OK;
        if (idone == 0 && odone == 0) /* never expected: soxr always makes progress */
            return wisp_error_set(err, WISP_ERR_AUDIO, "%s: resampler made no progress", path);
    }
}

/* One decode in progress: the open file, its header facts, scratch and output. */
typedef struct {
    const char *path;
    SNDFILE *sf;
    soxr_t rs;    /* NULL at 16 kHz */
    float *block; /* (block_frames * channels) interleaved scratch; NULL when direct */
    float *mono;  /* (block_frames) mixed scratch; NULL for mono or direct */
    short *raw;   /* (block_frames * channels) 16-bit scratch when pcm16 */
    s_buf_t buf;  /* the 16 kHz output */
    SF_INFO info;
    int frames_known; /* the header gives the length */
    int estimated;    /* ... only as an estimate (MP3): read to the end, never short */
    int pcm16;        /* 16-bit PCM: read as shorts */
    int direct;       /* mono at 16 kHz: decode straight into the output */
    sf_count_t to_read, block_frames, total;
    double ratio; /* 16000 / source rate */
} s_decode_t;

/* Opens path and checks what its header claims. */
static int s_open(s_decode_t *d, wisp_error_t *err)
{
    struct stat st;
    if (stat(d->path, &st) != 0) {
        if (errno == ENOENT)
            return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: no such file", d->path);
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", d->path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        return wisp_error_set(err, WISP_ERR_IO, "%s: is a directory, not an audio file", d->path);
    if (S_ISREG(st.st_mode) && st.st_size == 0)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: empty file (0 bytes)", d->path);
    d->sf = sf_open(d->path, SFM_READ, &d->info);
    if (!d->sf)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: not a readable audio file: %s", d->path,
                              sf_strerror(NULL));
    if (d->info.channels <= 0 || d->info.channels > S_MAX_CHANNELS)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: invalid channel count %d in the header",
                              d->path, d->info.channels);
    if (d->info.samplerate < S_MIN_RATE || d->info.samplerate > S_MAX_RATE)
        return wisp_error_set(err, WISP_ERR_AUDIO,
                              "%s: unsupported sample rate %d Hz in the header", d->path,
                              d->info.samplerate);
    if (d->info.frames == 0)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: no audio frames", d->path);
    return WISP_OK;
}

/* Sizes the read (max_seconds), allocates the scratch and makes the resampler. */
static int s_setup(s_decode_t *d, double max_seconds, wisp_error_t *err)
{
    int channels = d->info.channels, rate = d->info.samplerate;
    /* libsndfile reports SF_COUNT_MAX when a stream's length is unknown */
    d->frames_known = d->info.frames > 0 && d->info.frames < SF_COUNT_MAX;
    /* An MP3's length comes from its Xing/LAME tag or from the file size and the first
     * frame's bitrate: an estimate either way (encoder delay, padding, tags written by
     * other tools), above or below what decodes. So MP3 is read to its end, and ending
     * short of the estimate is not damage; a decoder error still is. */
    d->estimated = d->frames_known && (d->info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG;
    sf_count_t limit = SF_COUNT_MAX;
    if (max_seconds > 0 && max_seconds * rate < 0x1p62)
        limit = (sf_count_t)ceil(max_seconds * rate);
    d->to_read =
        d->frames_known && !d->estimated && d->info.frames < limit ? d->info.frames : limit;
    /* output reserved for the header's length (or the cap), grown as needed after */
    sf_count_t expect =
        d->frames_known && d->info.frames < d->to_read ? d->info.frames : d->to_read;
    d->ratio = (double)WISP_SAMPLE_RATE / rate;
    d->block_frames = S_BLOCK_SAMPLES / channels > 0 ? S_BLOCK_SAMPLES / channels : 1;
    /* 16-bit PCM (WAV, AIFF, ...): libsndfile hands the integers over with a plain copy */
    d->pcm16 = (d->info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16;
    d->direct = rate == WISP_SAMPLE_RATE && channels == 1;
    size_t bf = (size_t)d->block_frames;
    /* scratch, always written before read */
    d->block = d->direct ? NULL : wisp_alloc_raw(sizeof(float) * bf * channels);
    d->mono = d->direct || channels == 1 ? NULL : wisp_alloc_raw(sizeof(float) * bf);
    d->raw = d->pcm16 ? wisp_alloc_raw(sizeof(short) * bf * channels) : NULL;
    if ((!d->direct && !d->block) || (!d->direct && channels > 1 && !d->mono) ||
        (d->pcm16 && !d->raw) ||
        (d->frames_known &&
         s_buf_reserve(&d->buf, (size_t)((double)expect * d->ratio) + 4096) != WISP_OK))
        return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", d->path);
    if (rate != WISP_SAMPLE_RATE) {
        soxr_error_t e = NULL;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        d->rs = soxr_create(rate, WISP_SAMPLE_RATE, 1, &e, &io, &q, NULL);
        if (!d->rs || e)
            return wisp_error_set(err, WISP_ERR_AUDIO, "%s: cannot resample %d Hz to %d Hz: %s",
                                  d->path, rate, WISP_SAMPLE_RATE, e ? e : "soxr_create failed");
    }
    return WISP_OK;
}

/* Mixes got interleaved frames of d->block to mono (the arithmetic mean). */
static const float *s_mix(s_decode_t *d, sf_count_t got)
{
    int channels = d->info.channels;
    if (channels == 1)
        return d->block;
    float inv = 1.0f / (float)channels;
    for (sf_count_t i = 0; i < got; i++) {
        const float *fr = d->block + (size_t)i * channels;
        float s = 0.0f;
        for (int c = 0; c < channels; c++)
            s += fr[c];
        /* exact mean for 2 channels ((l + r) * 0.5), the common case */
        d->mono[i] = channels == 2 ? s * 0.5f : s * inv;
    }
    return d->mono;
}

/* Index of the first sample that is not finite or beyond WISP_AUDIO_MAX_ABS, or n. */
static size_t s_first_bad_sample(const float *x, size_t n)
{
    /* checked on the source samples, before the resampler's low-pass can hide a spike */
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(x[i]) <= WISP_AUDIO_MAX_ABS)) /* NaN fails every comparison */
            return i;
    return n;
}

/* The error for a bad sample at source frame `frame`, value v. */
static int s_bad_sample(const s_decode_t *d, sf_count_t frame, float v, wisp_error_t *err)
{
    return wisp_error_set(err, WISP_ERR_AUDIO,
                          "%s: sample value %g at frame %lld (not finite or beyond +-%g): not a "
                          "usable recording",
                          d->path, (double)v, (long long)frame, (double)WISP_AUDIO_MAX_ABS);
}

/* Reads up to to_read frames block by block into the output (mixed, resampled).
 * Stops early at the end of the stream; d->total counts the frames read. */
static int s_decode_blocks(s_decode_t *d, wisp_error_t *err)
{
    while (d->total < d->to_read) {
        sf_count_t left = d->to_read - d->total;
        sf_count_t want = left < d->block_frames ? left : d->block_frames;
        if (d->direct) { /* mono at 16 kHz: decode straight into the output */
            if (s_buf_reserve(&d->buf, (size_t)want) != WISP_OK)
                return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", d->path);
            sf_count_t got = s_readf(d->sf, d->pcm16, d->raw, d->buf.data + d->buf.n, want, 1);
            if (got <= 0)
                break;
            size_t bad = s_first_bad_sample(d->buf.data + d->buf.n, (size_t)got);
            if (bad < (size_t)got)
                return s_bad_sample(d, d->total + (sf_count_t)bad, d->buf.data[d->buf.n + bad],
                                    err);
            d->buf.n += (size_t)got;
            d->total += got;
            if (got < want)
                break;
            continue;
        }
        sf_count_t got = s_readf(d->sf, d->pcm16, d->raw, d->block, want, d->info.channels);
        if (got <= 0)
            break;
        const float *src = s_mix(d, got);
        size_t bad = s_first_bad_sample(src, (size_t)got);
        if (bad < (size_t)got)
            return s_bad_sample(d, d->total + (sf_count_t)bad, src[bad], err);
        if (d->rs) {
            int rc = s_resample(d->rs, d->ratio, src, (size_t)got, &d->buf, d->path, err);
            if (rc)
                return rc;
        } else {
            if (s_buf_reserve(&d->buf, (size_t)got) != WISP_OK)
                return wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", d->path);
            memcpy(d->buf.data + d->buf.n, src, (size_t)got * sizeof(float));
            d->buf.n += (size_t)got;
        }
        d->total += got;
        if (got < want)
            break;
    }
    return WISP_OK;
}

/* What the decode found: a damaged stream, nothing, or unusable sample values. */
static int s_check_result(s_decode_t *d, wisp_error_t *err)
{
    /* A decoder error (corrupt or truncated stream) or fewer frames than the header
     * promised means the file is damaged: refuse it rather than return partial audio. */
    if (sf_error(d->sf) != SF_ERR_NO_ERROR)
        return wisp_error_set(err, WISP_ERR_AUDIO,
                              "%s: truncated or corrupt: decode error after %lld frames: %s",
                              d->path, (long long)d->total, sf_strerror(d->sf));
    if (d->total == 0)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: no audio frames could be decoded", d->path);
    if (d->frames_known && !d->estimated && d->total < d->to_read)
        return wisp_error_set(err, WISP_ERR_AUDIO,
                              "%s: truncated or corrupt: decoded %lld of the %lld frames in the "
                              "header",
                              d->path, (long long)d->total, (long long)d->info.frames);
    if (d->rs) {
        int rc = s_resample(d->rs, d->ratio, NULL, 0, &d->buf, d->path, err);
        if (rc)
            return rc;
    }
    /* a handful of frames at a high rate round to no 16 kHz sample at all */
    if (d->buf.n == 0)
        return wisp_error_set(err, WISP_ERR_AUDIO,
                              "%s: too short: %lld frames at %d Hz give no sample at 16 kHz",
                              d->path, (long long)d->total, d->info.samplerate);
    return WISP_OK;
}

int wisp_audio_load(const char *path, double max_seconds, wisp_audio_t *out, wisp_error_t *err)
{
    s_decode_t d;
    memset(&d, 0, sizeof d);
    memset(out, 0, sizeof *out);
    d.path = path;
    int rc = s_open(&d, err);
    if (rc == WISP_OK)
        rc = s_setup(&d, max_seconds, err);
    if (rc == WISP_OK)
        rc = s_decode_blocks(&d, err);
    if (rc == WISP_OK)
        rc = s_check_result(&d, err);
    if (rc == WISP_OK) {
        out->samples = d.buf.data;
        out->n = d.buf.n;
        d.buf.data = NULL;
        out->source_rate = d.info.samplerate;
        out->source_channels = d.info.channels;
        /* an estimated length is replaced by the decoded one when the decode reached the end */
        int exact = d.frames_known && !(d.estimated && d.total < d.to_read);
        out->duration = (double)(exact ? d.info.frames : d.total) / d.info.samplerate;
    }
    if (d.rs)
        soxr_delete(d.rs);
    if (d.sf)
        sf_close(d.sf);
    wisp_free(d.block);
    wisp_free(d.mono);
    wisp_free(d.raw);
    wisp_free(d.buf.data);
    return rc;
}

void wisp_audio_free(wisp_audio_t *audio)
{
    if (!audio)
        return;
    wisp_free(audio->samples);
    memset(audio, 0, sizeof *audio);
}
