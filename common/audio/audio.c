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

int wisp_audio_load(const char *path, double max_seconds, wisp_audio_t *out, wisp_error_t *err)
{
    int rc = WISP_OK;
    SNDFILE *sf = NULL;
    soxr_t rs = NULL;
    float *block = NULL, *mono = NULL;
    short *raw = NULL;
    s_buf_t buf = {0};
    memset(out, 0, sizeof *out);

    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return wisp_error_set(err, WISP_ERR_NOTFOUND, "%s: no such file", path);
        return wisp_error_set(err, WISP_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        return wisp_error_set(err, WISP_ERR_IO, "%s: is a directory, not an audio file", path);
    if (S_ISREG(st.st_mode) && st.st_size == 0)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: empty file (0 bytes)", path);

    SF_INFO info;
    memset(&info, 0, sizeof info);
    sf = sf_open(path, SFM_READ, &info);
    if (!sf)
        return wisp_error_set(err, WISP_ERR_AUDIO, "%s: not a readable audio file: %s", path,
                              sf_strerror(NULL));
    if (info.channels <= 0 || info.channels > S_MAX_CHANNELS) {
        rc = wisp_error_set(err, WISP_ERR_AUDIO, "%s: invalid channel count %d in the header", path,
                            info.channels);
        goto done;
    }
    if (info.samplerate < S_MIN_RATE || info.samplerate > S_MAX_RATE) {
        rc = wisp_error_set(err, WISP_ERR_AUDIO, "%s: unsupported sample rate %d Hz in the header",
                            path, info.samplerate);
        goto done;
    }
    if (info.frames == 0) {
        rc = wisp_error_set(err, WISP_ERR_AUDIO, "%s: no audio frames", path);
        goto done;
    }
    int channels = info.channels, rate = info.samplerate;
    /* libsndfile reports SF_COUNT_MAX when a stream's length is unknown */
    int frames_known = info.frames > 0 && info.frames < SF_COUNT_MAX;
    sf_count_t limit = SF_COUNT_MAX;
    if (max_seconds > 0 && max_seconds * rate < 0x1p62)
        limit = (sf_count_t)ceil(max_seconds * rate);
    sf_count_t to_read = frames_known && info.frames < limit ? info.frames : limit;
    double ratio = (double)WISP_SAMPLE_RATE / rate;

    sf_count_t block_frames = S_BLOCK_SAMPLES / channels > 0 ? S_BLOCK_SAMPLES / channels : 1;
    /* 16-bit PCM (WAV, AIFF, ...): libsndfile hands the integers over with a plain copy */
    int pcm16 = (info.format & SF_FORMAT_SUBMASK) == SF_FORMAT_PCM_16;
    int direct = rate == WISP_SAMPLE_RATE && channels == 1; /* decode straight to the output */
    /* scratch, always written before read */
    block = direct ? NULL : wisp_alloc_raw(sizeof(float) * (size_t)block_frames * channels);
    mono = direct || channels == 1 ? NULL : wisp_alloc_raw(sizeof(float) * (size_t)block_frames);
    raw = pcm16 ? wisp_alloc_raw(sizeof(short) * (size_t)block_frames * channels) : NULL;
    if ((!direct && !block) || (!direct && channels > 1 && !mono) || (pcm16 && !raw) ||
        (frames_known &&
         s_buf_reserve(&buf, (size_t)((double)to_read * ratio) + 4096) != WISP_OK)) {
        rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (rate != WISP_SAMPLE_RATE) {
        soxr_error_t e = NULL;
        soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        rs = soxr_create(rate, WISP_SAMPLE_RATE, 1, &e, &io, &q, NULL);
        if (!rs || e) {
            rc = wisp_error_set(err, WISP_ERR_AUDIO, "%s: cannot resample %d Hz to %d Hz: %s", path,
                                rate, WISP_SAMPLE_RATE, e ? e : "soxr_create failed");
            goto done;
        }
    }

    sf_count_t total = 0;
    while (total < to_read) {
        sf_count_t want = to_read - total < block_frames ? to_read - total : block_frames;
        if (direct) { /* mono at 16 kHz: decode straight into the output */
            if (s_buf_reserve(&buf, (size_t)want) != WISP_OK) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            sf_count_t got = s_readf(sf, pcm16, raw, buf.data + buf.n, want, 1);
            if (got <= 0)
                break;
            buf.n += (size_t)got;
            total += got;
            if (got < want)
                break;
            continue;
        }
        sf_count_t got = s_readf(sf, pcm16, raw, block, want, channels);
        if (got <= 0)
            break;
        const float *src = block;
        if (channels > 1) {
            float inv = 1.0f / (float)channels;
            for (sf_count_t i = 0; i < got; i++) {
                const float *fr = block + (size_t)i * channels;
                float s = 0.0f;
                for (int c = 0; c < channels; c++)
                    s += fr[c];
                /* exact mean for 2 channels ((l + r) * 0.5), the common case */
                mono[i] = channels == 2 ? s * 0.5f : s * inv;
            }
            src = mono;
        }
        if (rs) {
            rc = s_resample(rs, ratio, src, (size_t)got, &buf, path, err);
            if (rc)
                goto done;
        } else {
            if (s_buf_reserve(&buf, (size_t)got) != WISP_OK) {
                rc = wisp_error_set(err, WISP_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            memcpy(buf.data + buf.n, src, (size_t)got * sizeof(float));
            buf.n += (size_t)got;
        }
        total += got;
        if (got < want)
            break;
    }
    /* A decoder error (corrupt or truncated stream) or fewer frames than the header
     * promised means the file is damaged: refuse it rather than return partial audio. */
    if (sf_error(sf) != SF_ERR_NO_ERROR) {
        rc = wisp_error_set(err, WISP_ERR_AUDIO,
                            "%s: truncated or corrupt: decode error after %lld frames: %s", path,
                            (long long)total, sf_strerror(sf));
        goto done;
    }
    if (total == 0) {
        rc = wisp_error_set(err, WISP_ERR_AUDIO, "%s: no audio frames could be decoded", path);
        goto done;
    }
    if (frames_known && total < to_read) {
        rc = wisp_error_set(err, WISP_ERR_AUDIO,
                            "%s: truncated or corrupt: decoded %lld of the %lld frames in the "
                            "header",
                            path, (long long)total, (long long)info.frames);
        goto done;
    }
    if (rs) {
        rc = s_resample(rs, ratio, NULL, 0, &buf, path, err);
        if (rc)
            goto done;
    }

    out->samples = buf.data;
    out->n = buf.n;
    buf.data = NULL;
    out->source_rate = rate;
    out->source_channels = channels;
    out->duration = (double)(frames_known ? info.frames : total) / rate;
done:
    if (rs)
        soxr_delete(rs);
    if (sf)
        sf_close(sf);
    wisp_free(block);
    wisp_free(mono);
    wisp_free(raw);
    wisp_free(buf.data);
    return rc;
}

void wisp_audio_free(wisp_audio_t *audio)
{
    if (!audio)
        return;
    wisp_free(audio->samples);
    memset(audio, 0, sizeof *audio);
}
