/* Dataset manifests: the list of audio files (and optional labels) a job runs on.
 *
 * Three formats, chosen by wisp_manifest_load from the path:
 *   - a directory holding metadata.csv or metadata.jsonl (Hugging Face audiofolder
 *     metadata): that file, read as below, with paths ("file_name") relative to the
 *     directory; the label folders are then not scanned.
 *   - a directory: "audiofolder" layout root/<label>/<file> (labeled) and root/<file>
 *     (unlabeled). Only files whose extension libsndfile reads (asked from libsndfile
 *     itself, plus the usual aliases: wav flac ogg oga opus mp3 aif aiff au caf w64 ...;
 *     case-insensitive) are taken; hidden entries (".*") are skipped; deeper
 *     directories are not descended; a root holding only split folders (train/, test/,
 *     validation/, ...) is an error naming the split folder to give (root/train).
 *     Items are sorted by their path relative to root
 *     (byte order), so the order — and thus the item ids — is deterministic.
 *   - a file ending in ".jsonl" or ".ndjson": one JSON object per line,
 *     {"path": "...", "label": "name" | 3, "duration": 1.5}; "label" and "duration"
 *     optional; other keys ignored; blank lines skipped.
 *   - anything else: CSV (RFC 4180: "quoted, fields", "" escapes a quote, quoted
 *     newlines allowed; CRLF or LF; a UTF-8 BOM is skipped). The first record is the
 *     header and must have a "path" column (or "file_name", the Hugging Face
 *     audiofolder metadata name; header names are case-insensitive); "label" and
 *     "duration" columns are used
 *     when present, other columns ignored; blank lines skipped.
 * Relative paths resolve against the manifest file's directory (for audiofolder:
 * against root). Absolute paths are kept as written.
 *
 * Labels (rules in formats/labels.h): a label is a class name or a non-negative integer;
 * an empty label (or a missing/null JSON label) means unlabeled (label = -1).
 *   - With classes given (e.g. a head's id2label, index = class id): a label equal to a
 *     class name maps to its index; otherwise an integer label in [0, n_classes) is
 *     taken as the id; anything else is WISP_ERR_NOTFOUND naming file, line and label.
 *   - Without classes: the classes are the unique labels by name, sorted by numeric
 *     value when all are integers (10..15 are 6 classes), else in byte order; at most
 *     WISP_LABELS_MAX of them.
 *
 * Item ids are the indices into items[] (manifest order): stable across runs, used
 * by the shard plan, the result rows and resume.
 *
 * Errors (into err, naming file and line): manifest missing (WISP_ERR_NOTFOUND),
 * empty manifest (no items; WISP_ERR_FORMAT), CSV without a "path" column, empty path,
 * unterminated quote (line of the opening quote), a NUL byte, bad JSON line (also text
 * after the object; duplicate keys take the last value, as Python's json), JSON without
 * "path", a JSON label that is not an integer in [0, INT_MAX] or a string, label not in
 * classes, too many classes, bad duration value (not a number, inf or nan). The
 * manifest is left empty on error.
 *
 * Nothing here opens the audio files unless asked (probe_durations), because that
 * touches every file of possibly millions on a shared filesystem.
 *
 * Size: manifests of any size (64-bit offsets; the file is mapped and its parsed
 * pages dropped as the parse moves on, never copied). Memory: 24 bytes per item plus
 * its resolved path (paths packed in one arena, label names shared with classes[]);
 * at 10^6 lines of ~60 bytes 85 B per item after the load, 136 B at the load's peak
 * (bench_results: manifest_1e6_*). */
#ifndef WISP_MANIFEST_H
#define WISP_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef enum {
    WISP_MANIFEST_CSV = 0,
    WISP_MANIFEST_JSONL = 1,
    WISP_MANIFEST_AUDIOFOLDER = 2,
} wisp_manifest_kind_t;

/* 24 bytes + the path's bytes per item (the coordinator holds 10^8 of them; the label's
 * name is classes[label], wisp_manifest_label_name, not stored per item). */
typedef struct {
    char *path;      /* resolved path (manifest dir + relative path), in the
                        manifest's path arena (valid as long as the manifest) */
    double duration; /* seconds: from a duration column/key, or probed from the
                        libsndfile header (frames / samplerate); -1 when unknown */
    int label;       /* class index in [0, n_classes), -1 when unlabeled */
    int line;        /* 1-based line of the item in the manifest (0 for
                        audiofolder; INT_MAX beyond) */
} wisp_manifest_item_t;

typedef struct {
    wisp_manifest_kind_t kind;   /* format that was read */
    char *source;                /* manifest path as given, malloc'd */
    wisp_manifest_item_t *items; /* (n_items) in manifest order; index = item id */
    size_t n_items;
    char **classes;                    /* (n_classes) class names, index = class id, malloc'd */
    int n_classes;                     /* 0 when no item is labeled and no classes were given */
    size_t n_labeled;                  /* items with label >= 0 */
    size_t n_duration_known;           /* items with duration >= 0 */
    double total_duration;             /* sum of the known durations, seconds */
    size_t n_skipped_unlabeled;        /* items dropped by WISP_MANIFEST_UNLABELED_SKIP */
    struct wisp_manifest_arena *arena; /* storage of the items' paths (internal) */
} wisp_manifest_t;

/* What happens to an item without a label (an empty label field, a null JSON label, a
 * file outside the label folders). Training wants ERROR or SKIP; classify KEEP. */
enum {
    WISP_MANIFEST_UNLABELED_KEEP = 0,  /* kept with label -1 */
    WISP_MANIFEST_UNLABELED_ERROR = 1, /* WISP_ERR_FORMAT naming the first, with the count */
    WISP_MANIFEST_UNLABELED_SKIP = 2,  /* dropped, counted in n_skipped_unlabeled */
};

typedef struct {
    const char *const *classes; /* (n_classes) fixed class list, or NULL to derive */
    int n_classes;
    int probe_durations; /* 1: open every file whose duration is unknown with
                            libsndfile (header only) to read it; unreadable
                            files keep -1 (they become error rows later, they
                            are not a manifest error) */
    int unlabeled;       /* WISP_MANIFEST_UNLABELED_*, 0 = KEEP */
} wisp_manifest_opts_t;

/* Parses "error" / "skip" / "keep" into a WISP_MANIFEST_UNLABELED_* (-1 otherwise). */
int wisp_manifest_unlabeled_policy(const char *name);

/* Zero-initialised options: derive classes, no probing. */
wisp_manifest_opts_t wisp_manifest_default_opts(void);

/* Loads path (CSV, JSONL or directory, see above) into m (which the function first
 * zeroes; the caller owns it and releases it with wisp_manifest_free). classes may be
 * NULL (n_classes 0). Does not probe durations. Returns 0 or a WISP_ERR_*. */
int wisp_manifest_load(wisp_manifest_t *m, const char *path, const char *const *classes,
                       int n_classes, wisp_error_t *err);

/* Same with options (probe_durations). */
int wisp_manifest_load_opts(wisp_manifest_t *m, const char *path, const wisp_manifest_opts_t *opts,
                            wisp_error_t *err);

/* The manifest of a training or validation set: the class list is the given one (a
 * head's id2label), else the classes_file's (wisp_labels_read_list; a given list and a
 * file must agree), else derived; unlabeled is "error" (default, also for NULL/"") or
 * "skip" (dropped, counted in n_skipped_unlabeled and logged) or "keep". */
int wisp_manifest_load_training(wisp_manifest_t *m, const char *path, const char *const *classes,
                                int n_classes, const char *classes_file, const char *unlabeled,
                                wisp_error_t *err);

/* Probes the duration of every item whose duration is unknown (sf_open +
 * frames/samplerate; no decoding). Unreadable files keep -1. Updates
 * n_duration_known and total_duration. Never fails on audio; returns 0. */
int wisp_manifest_probe_durations(wisp_manifest_t *m);

/* Releases everything m holds and zeroes it. Accepts NULL and a zeroed manifest. */
void wisp_manifest_free(wisp_manifest_t *m);

/* A contiguous range of items [begin, end) in manifest order. */
typedef struct {
    size_t begin;   /* first item id */
    size_t end;     /* one past the last item id */
    double seconds; /* audio seconds in the shard (unknown durations estimated as the
                       mean of the known ones, or 0 when none is known) */
} wisp_shard_t;

/* Cuts the items into contiguous shards in manifest order, each holding about
 * target_seconds of audio and at most max_items items:
 *   - a shard is closed once its duration reaches target_seconds or it holds
 *     max_items items; it is closed before an item that would overshoot the target
 *     by more than the shard falls short of it (so a very long item is alone);
 *   - unknown durations count as the mean known duration; when no duration is known
 *     (or target_seconds <= 0) the cut is by count alone: max_items per shard.
 * max_items must be >= 1. Every item is in exactly one shard; shards are in order.
 * *out is malloc'd (free()); *n_out is 0 and *out NULL for an empty manifest.
 * Returns 0, WISP_ERR_ARG or WISP_ERR_NOMEM. */
int wisp_manifest_shards(const wisp_manifest_t *m, double target_seconds, size_t max_items,
                         wisp_shard_t **out, size_t *n_out, wisp_error_t *err);

/* The same cutter over plain arrays, for the coordinator's plan: seconds (n_items
 * values read every `stride` bytes, 0 = sizeof(double); negative = unknown, counted
 * as the mean known duration), or NULL to cut by count alone; skip (n_items flags)
 * or NULL: an item with skip[i] != 0 (committed by an earlier run) is in no shard and
 * ends the open one, so shards hold consecutive items only. The rules above apply
 * to the runs between skipped items. *out is malloc'd (free()), NULL when no shard. */
int wisp_manifest_cut(const double *seconds, size_t stride, const uint8_t *skip, size_t n_items,
                      double target_seconds, size_t max_items, wisp_shard_t **out, size_t *n_out,
                      wisp_error_t *err);

/* Name of item i's label (m->classes[label], not a copy), or NULL when it is unlabeled
 * or i is out of range. */
const char *wisp_manifest_label_name(const wisp_manifest_t *m, size_t i);

/* Index of name in m->classes, or -1. */
int wisp_manifest_class_index(const wisp_manifest_t *m, const char *name);

#endif
