/* synth.h: labeled synthetic audio for demos and tests.
 *
 * Eight sound classes that a small model can tell apart from log-mel features
 * (tones, harmonic tones, chirps, noise bands, AM/FM tones, click trains), each
 * clip with random pitch, rate, level and background noise drawn from a seed.
 * Everything is a pure function of (class, seed, sample rate, length): the same
 * arguments give the same samples on every run.
 *
 * Two layers:
 *  - wisp_synth_clip(): one clip as float samples, for tests of other modules;
 *  - wisp_synth_dataset(): a directory of audio files in mixed formats and rates
 *    with train/val/test manifests (`path,label`, paths relative to the directory),
 *    classes.txt, and optionally deliberately corrupt files.
 *
 * Dataset layout (DIR = output directory):
 *   DIR/<label>/<label>_<jjjj>.<ext>   the clips (also usable as an "audiofolder")
 *   DIR/corrupt/bad_<iii>_<kind>.<ext>  corrupt files (--corrupt N), outside the label dirs
 *   DIR/train.csv val.csv test.csv     stratified 70/15/15 split, header `path,label`
 *   DIR/all.csv                        every clip, classes interleaved
 *   DIR/corrupt.csv                    the corrupt files (when N > 0), with a label
 *   DIR/all_with_corrupt.csv           all.csv with the corrupt files spread through it
 *   DIR/classes.txt                    one label per line, in class-index order
 *   DIR/meta.csv                       path,label,split,format,rate,channels,seconds */
#ifndef WISP_SYNTH_H
#define WISP_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Class indices, ordered so that the first K classes are the easiest to separate
 * (the demo uses few classes). */
typedef enum {
    WISP_SYNTH_TONE = 0,   /* "tone": one sinusoid, 150-3000 Hz */
    WISP_SYNTH_NOISE,      /* "noise": band-passed Gaussian noise, centre 300-3000 Hz */
    WISP_SYNTH_CHIRP_UP,   /* "chirp_up": exponential sweep up by 2-4 octaves */
    WISP_SYNTH_CLICKS,     /* "clicks": train of short decaying bursts, 4-30 per second */
    WISP_SYNTH_CHIRP_DOWN, /* "chirp_down": exponential sweep down by 2-4 octaves */
    WISP_SYNTH_HARMONIC,   /* "harmonic": f0 100-500 Hz with 3-8 decaying harmonics */
    WISP_SYNTH_AM,         /* "am": tone with 3-15 Hz amplitude modulation, depth 0.7-1 */
    WISP_SYNTH_FM,         /* "fm": tone with 3-10 Hz vibrato of 5-15 % of the carrier */
    WISP_SYNTH_NUM_CLASSES
} wisp_synth_class_t;

/* Short label of a class ("tone", "chirp_up", ...); NULL outside [0, NUM_CLASSES). */
const char *wisp_synth_class_name(int cls);
/* Inverse of wisp_synth_class_name; -1 when unknown. */
int wisp_synth_class_index(const char *name);

/* Fills out[0..n) with one mono clip of class cls at `rate` Hz (n / rate seconds).
 * Pitch, modulation, level (peak 0.1-0.7), background noise (20-40 dB below the
 * peak) and 10 ms fades are drawn from seed; |sample| < 1 always. Deterministic in
 * (cls, seed, rate, n). Returns WISP_ERR_ARG for an unknown class, a rate outside
 * [4000, 192000] or n == 0; it cannot fail otherwise. */
int wisp_synth_clip(int cls, uint64_t seed, int rate, float *out, size_t n);

/* The wisp_synth_clip seed of clip j of class cls in a dataset made with
 * dataset_seed (file DIR/<label>/<label>_<j>.<ext>). It depends on nothing else, so a
 * dataset with more classes or clips contains the smaller one's clips unchanged. */
uint64_t wisp_synth_clip_seed(uint64_t dataset_seed, int cls, int j);

/* File formats of the dataset (container + encoding). */
typedef enum {
    WISP_SYNTH_WAV16 = 0, /* WAV, 16-bit PCM */
    WISP_SYNTH_WAV24,     /* WAV, 24-bit PCM */
    WISP_SYNTH_WAVF,      /* WAV, 32-bit float */
    WISP_SYNTH_FLAC16,    /* FLAC, 16-bit */
    WISP_SYNTH_FLAC24,    /* FLAC, 24-bit */
    WISP_SYNTH_OGG,       /* Ogg Vorbis */
    WISP_SYNTH_MP3,       /* MPEG-1/2 layer III (when libsndfile can write it) */
    WISP_SYNTH_AIFF16,    /* AIFF, 16-bit PCM */
    WISP_SYNTH_NUM_FORMATS
} wisp_synth_format_t;

/* "wav16", "flac24", "ogg", ...; NULL when out of range. */
const char *wisp_synth_format_name(int fmt);

typedef struct {
    int classes;        /* K: the first K classes of wisp_synth_class_t, 1..8 */
    int per_class;      /* clips per class, >= 1 */
    uint64_t seed;      /* everything is derived from this */
    int mixed_formats;  /* 1: formats, rates 8k-48k, mono/stereo vary per clip;
                           0: every clip is 16 kHz mono 16-bit WAV */
    double min_seconds; /* clip duration drawn uniformly from [min, max] */
    double max_seconds;
    int corrupt; /* number of corrupt files to add (0: none) */
    /* Called after each file when non-NULL (done of total); for progress display. */
    void (*progress)(void *ctx, size_t done, size_t total);
    void *progress_ctx;
} wisp_synth_params_t;

/* classes 4, per_class 20, seed 1, mixed formats, 0.5-5 s, no corrupt files. */
wisp_synth_params_t wisp_synth_default_params(void);

typedef struct {
    size_t clips;                              /* good clips written */
    size_t train, val, test;                   /* rows per split */
    size_t corrupt;                            /* corrupt files written */
    double seconds;                            /* total duration of the good clips */
    uint64_t bytes;                            /* bytes of audio written (good + corrupt) */
    size_t per_format[WISP_SYNTH_NUM_FORMATS]; /* good clips per format */
} wisp_synth_summary_t;

/* Writes the dataset described above into dir (created if missing; existing files
 * of the same names are replaced). Same params -> same file list, labels, splits and
 * decoded audio (byte-identical files for every format but Ogg, whose stream serial
 * numbers libsndfile draws at random). summary may be NULL. */
int wisp_synth_dataset(const char *dir, const wisp_synth_params_t *params,
                       wisp_synth_summary_t *summary, wisp_error_t *err);

#endif
