/* wisp synth: writes a labeled synthetic audio dataset (see common/audio/synth.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "audio/synth.h"
#include "base/util.h"

static void s_help(FILE *out)
{
    fprintf(out,
            "usage: wisp synth -o DIR [--classes K] [--per-class N] [--seed S]\n"
            "                  [--formats mixed|wav] [--min-seconds X] [--max-seconds X]\n"
            "                  [--corrupt N] [--quiet]\n"
            "\n"
            "Writes a labeled synthetic audio dataset: K sound classes (in this order: tone,\n"
            "noise, chirp_up, clicks, chirp_down, harmonic, am, fm), N clips each with random\n"
            "pitch, rate, level, duration and background noise, and the manifests\n"
            "DIR/train.csv, val.csv, test.csv (stratified 70/15/15, `path,label`, paths\n"
            "relative to DIR), all.csv, meta.csv and classes.txt. Clips are stored as\n"
            "DIR/<label>/<label>_NNNN.<ext>, so DIR is also an audiofolder.\n"
            "\n"
            "options:\n"
            "  -o, --output DIR     output directory (created if missing)\n"
            "  --classes K          number of classes, 1..%d (default 4)\n"
            "  --per-class N        clips per class (default 20)\n"
            "  --seed S             seed; the same seed gives the same dataset (default 1)\n"
            "  --formats mixed|wav  mixed: WAV 16/24-bit/float, FLAC 16/24, Ogg Vorbis, MP3,\n"
            "                       AIFF at 8k-48k Hz, mono and stereo (default);\n"
            "                       wav: 16 kHz mono 16-bit WAV only\n"
            "  --min-seconds X      shortest clip (default 0.5)\n"
            "  --max-seconds X      longest clip (default 5)\n"
            "  --corrupt N          also write N corrupt files (truncated FLAC, text named\n"
            "                       .wav, empty file, header-only WAV) into DIR/corrupt/,\n"
            "                       listed in corrupt.csv and mixed into all_with_corrupt.csv\n"
            "  -q, --quiet          no progress or summary\n"
            "\n"
            "examples:\n"
            "  wisp synth -o data/demo\n"
            "  wisp synth -o /tmp/ds --classes 8 --per-class 50 --seed 7\n"
            "  wisp synth -o /tmp/bad --per-class 40 --corrupt 10 --formats wav\n",
            WISP_SYNTH_NUM_CLASSES);
}

/* Takes the value of option `name` from "--name=value" or the next argument. */
static const char *s_value(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t len = strlen(name);
    if (strncmp(a, name, len) == 0 && a[len] == '=')
        return a + len + 1;
    if (strcmp(a, name) != 0)
        return NULL;
    if (*i + 1 >= argc)
        return "";
    return argv[++*i];
}

static int s_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int s_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

typedef struct {
    int tty;        /* progress is drawn only on a terminal */
    double started; /* wisp_now() at the start */
    double last;    /* last redraw */
} s_progress_t;

static void s_progress(void *ctx, size_t done, size_t total)
{
    s_progress_t *p = ctx;
    double now = wisp_now();
    if (!p->tty || (done < total && now - p->last < 0.1))
        return;
    p->last = now;
    fprintf(stderr, "\rsynth: %zu/%zu files (%.0f%%) %.1f s", done, total,
            100.0 * (double)done / (double)total, now - p->started);
    if (done == total)
        fputc('\n', stderr);
    fflush(stderr);
}

int wisp_cmd_synth(int argc, char **argv)
{
    wisp_synth_params_t p = wisp_synth_default_params();
    const char *out_dir = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            s_help(stdout);
            return WISP_EXIT_OK;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else if ((v = s_value(argc, argv, &i, "-o")) ||
                   (v = s_value(argc, argv, &i, "--output"))) {
            if (!*v)
                goto missing;
            out_dir = v;
        } else if ((v = s_value(argc, argv, &i, "--classes"))) {
            if (s_parse_long(v, 1, WISP_SYNTH_NUM_CLASSES, &n) != 0) {
                fprintf(stderr, "wisp synth: --classes must be an integer 1..%d, got '%s'\n",
                        WISP_SYNTH_NUM_CLASSES, v);
                return WISP_EXIT_USAGE;
            }
            p.classes = (int)n;
        } else if ((v = s_value(argc, argv, &i, "--per-class"))) {
            if (s_parse_long(v, 1, 1000000, &n) != 0) {
                fprintf(stderr, "wisp synth: --per-class must be an integer 1..1000000, got '%s'\n",
                        v);
                return WISP_EXIT_USAGE;
            }
            p.per_class = (int)n;
        } else if ((v = s_value(argc, argv, &i, "--seed"))) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 0);
            if (errno || end == v || *end || *v == '-') {
                fprintf(stderr, "wisp synth: --seed must be a non-negative integer, got '%s'\n", v);
                return WISP_EXIT_USAGE;
            }
            p.seed = (uint64_t)s;
        } else if ((v = s_value(argc, argv, &i, "--formats"))) {
            if (strcmp(v, "mixed") == 0)
                p.mixed_formats = 1;
            else if (strcmp(v, "wav") == 0)
                p.mixed_formats = 0;
            else {
                fprintf(stderr, "wisp synth: --formats must be mixed or wav, got '%s'\n", v);
                return WISP_EXIT_USAGE;
            }
        } else if ((v = s_value(argc, argv, &i, "--min-seconds"))) {
            if (s_parse_double(v, &p.min_seconds) != 0 || !(p.min_seconds >= 0.05)) {
                fprintf(stderr, "wisp synth: --min-seconds must be a number >= 0.05, got '%s'\n",
                        v);
                return WISP_EXIT_USAGE;
            }
        } else if ((v = s_value(argc, argv, &i, "--max-seconds"))) {
            if (s_parse_double(v, &p.max_seconds) != 0 || !(p.max_seconds <= 600)) {
                fprintf(stderr, "wisp synth: --max-seconds must be a number <= 600, got '%s'\n", v);
                return WISP_EXIT_USAGE;
            }
        } else if ((v = s_value(argc, argv, &i, "--corrupt"))) {
            if (s_parse_long(v, 0, 1000000, &n) != 0) {
                fprintf(stderr, "wisp synth: --corrupt must be an integer 0..1000000, got '%s'\n",
                        v);
                return WISP_EXIT_USAGE;
            }
            p.corrupt = (int)n;
        } else {
            fprintf(stderr, "wisp synth: unknown option '%s' (try wisp synth --help)\n", a);
            return WISP_EXIT_USAGE;
        }
        continue;
    missing:
        fprintf(stderr, "wisp synth: option '%s' needs a value\n", a);
        return WISP_EXIT_USAGE;
    }
    if (!out_dir) {
        fprintf(stderr, "wisp synth: missing -o DIR (try wisp synth --help)\n");
        return WISP_EXIT_USAGE;
    }
    if (p.min_seconds > p.max_seconds) {
        fprintf(stderr, "wisp synth: --min-seconds %g is larger than --max-seconds %g\n",
                p.min_seconds, p.max_seconds);
        return WISP_EXIT_USAGE;
    }

    s_progress_t prog = {0};
    prog.tty = !quiet && isatty(STDERR_FILENO);
    prog.started = wisp_now();
    p.progress = s_progress;
    p.progress_ctx = &prog;

    wisp_synth_summary_t sum;
    wisp_error_t err = {0};
    if (wisp_synth_dataset(out_dir, &p, &sum, &err) != WISP_OK) {
        if (prog.tty)
            fputc('\n', stderr);
        fprintf(stderr, "wisp synth: %s\n", err.msg);
        return WISP_EXIT_FAILURE;
    }
    if (!quiet) {
        printf("wrote %zu clips of %d classes (%.1f s of audio, %.1f MB) to %s in %.1f s\n",
               sum.clips, p.classes, sum.seconds, (double)sum.bytes / 1e6, out_dir,
               wisp_now() - prog.started);
        printf("  splits: train.csv %zu, val.csv %zu, test.csv %zu (all.csv %zu)\n", sum.train,
               sum.val, sum.test, sum.clips);
        printf("  formats:");
        for (int f = 0; f < WISP_SYNTH_NUM_FORMATS; f++)
            if (sum.per_format[f])
                printf(" %s %zu", wisp_synth_format_name(f), sum.per_format[f]);
        printf("\n");
        if (sum.corrupt)
            printf("  corrupt: %zu files in corrupt.csv, mixed into all_with_corrupt.csv\n",
                   sum.corrupt);
        printf("  labels: %s/classes.txt; seed %" PRIu64 "\n", out_dir, p.seed);
    }
    return WISP_EXIT_OK;
}
