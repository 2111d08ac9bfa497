/* The classify results file: one HDF5 file, one row per manifest item, rows in
 * manifest order, written by a single writer (the coordinator or `wisp classify`).
 *
 * Layout of OUT.h5 (N rows, C classes, P embedding size; all datasets 1-D or 2-D,
 * read with h5py as `pd.DataFrame({k: f[k][:] for k in 1-D columns})`):
 *   path        [N]    UTF-8 variable-length string   input path as resolved
 *   label       [N]    int32    predicted class id, -1 on error
 *   label_name  [N]    UTF-8 string   classes[label], "" on error
 *   score       [N]    float32  probability of the predicted class (max prob), NaN on error
 *   probs       [N,C]  float32  softmax of logits, NaN on error
 *   logits      [N,C]  float32  NaN on error
 *   embedding   [N,P]  float32  only when embed_dim > 0; NaN on error
 *   duration    [N]    float32  seconds of audio (as given by the caller; -1 unknown)
 *   status      [N]    int8     0 ok, else a negative wisp_err_t (e.g. WISP_ERR_AUDIO);
 *                               WISP_RESULTS_STATUS_MISSING for a row never produced
 *                               (only possible with WISP_RESULTS_FINISH_ALLOW_MISSING)
 *   error       [N]    UTF-8 string   "" when ok, the error message otherwise
 *   note        [N]    UTF-8 string   "" or a remark on an ok row ("first 30 s of 45.0 s
 *                                     classified ...": the rest of the file was not seen)
 *   (a missing row: path "", label/true_label -1, NaN values, duration -1, status
 *   WISP_RESULTS_STATUS_MISSING, error "missing")
 *   true_label  [N]    int32    only when has_true_label; -1 unknown
 *   classes     [C]    UTF-8 strings  class names, index = class id
 *   top_k_label [N,K]  int32    only when top_k = K > 0: the K most probable class ids,
 *                               most probable first (ties: the lower id first); -1 on error
 *   top_k_prob  [N,K]  float32  their probabilities (probs[top_k_label]); NaN on error
 *   segments/   group, only with opts.segments (windowed classification of long audio):
 *               one row per window of every ok file, M rows sorted by (row, start):
 *     row       [M]    int64    the file row (index into the columns above)
 *     start     [M]    float64  window start in seconds of the source
 *     end       [M]    float64  window end (seconds)
 *     label     [M]    int32    argmax of the window's probs
 *     label_name [M]   UTF-8 string   classes[label]
 *     score     [M]    float32  probs[label]
 *     probs     [M,C]  float32  the window's softmax
 *     The group is written by finish (the segments of committed rows are held in
 *     memory until then: M x (4C + 28) bytes), so a .partial peeked mid-run has none.
 *   With has_true_label, computed in wisp_results_finish over the rows with status 0
 *   and true_label >= 0 ("evaluated" rows):
 *   confusion   [C,C]  int64    rows = true class, columns = predicted class
 *   precision   [C]    float32  tp / predicted-as-c   (0 when nothing predicted as c,
 *   recall      [C]    float32  tp / true-c            like sklearn's zero_division=0)
 * Root attributes (strings are UTF-8 variable length scalars):
 *   every key/value of opts.attrs (the caller passes e.g. "config" = the job JSON,
 *   "model_sha256", "adapter_sha256", "head_sha256"), plus those set by the writer:
 *   "fingerprint" (string), "wisp_version" (string), "created" and "finished" (ISO 8601
 *   UTC strings; created = when the run first started, kept across resumes),
 *   "n_rows", "n_ok", "n_error", "n_missing", "n_classes", "embed_dim", "n_resumes"
 *   (int64), "writer_seconds" (float64, time spent inside this module),
 *   "summary" (the JSON string given to finish, when not NULL), and with labels
 *   "accuracy" (float64, correct / evaluated; NaN when nothing evaluated) and
 *   "n_evaluated" (int64).
 *
 * Robustness (HDF5 1.10 has no journaling; a killed writer can leave an unreadable
 * file). Files: OUT.h5.partial (the HDF5 file being written), OUT.h5.commit (the
 * commit journal) and OUT.h5.undo (the .partial's rollback log, formats/h5undo.h).
 * Design:
 *   - The JOURNAL is the source of truth. It starts with a header (magic, byte-order
 *     mark, n_rows, C, P, has_true_label, segments, classes, fingerprint, created time; the
 *     attrs are not in it: a resumed run writes the attrs its caller passes now),
 *     written to OUT.h5.commit.tmp, fsync'd and renamed, so it is never torn. Each
 *     commit appends ONE record holding the full data of every row received since
 *     the previous commit (index, path, label, score, duration, status, error,
 *     true_label, probs, logits, embedding), framed as
 *     [magic u32][n_rows u32][payload_len u64][seq u64][payload][checksum u64]
 *     (a row's segments travel in the same record as the row: a row and its windows
 *     are committed together or not at all)
 *     (checksum: FNV-1a 64 over the frame header and payload), then fsync's the
 *     journal. A row counts as committed exactly when its record is fully on disk
 *     with a valid checksum. The journal is host-endian (the byte-order mark refuses
 *     resuming on a machine of the other endianness).
 *   - The .partial HDF5 file gets the same rows at each commit (block writes of
 *     contiguous index runs, then H5Fflush), so it is normally readable mid-run
 *     for peeking (HDF5's file locking needs HDF5_USE_FILE_LOCKING=FALSE in the
 *     reader while the writer runs). It is written through the rollback driver of
 *     formats/h5undo.h: after each commit's flush a checkpoint records the journal's
 *     position (size, next sequence number, the checksum that ends it, committed and
 *     error row counts, resumes), and until the next one the checkpoint bytes of every
 *     512-byte block the writer changes are saved to OUT.h5.undo first.
 *   - Resume (opts.resume = 1 and the journal exists): the header is checked against
 *     opts (fingerprint, n_rows, C, P, has_true_label, segments, classes); any mismatch is
 *     WISP_ERR_STATE with a message naming the difference — runs are never mixed.
 *     Tail resume (the normal case after a killed writer): the .partial is rolled
 *     back to its last checkpoint, byte for byte (h5undo.h: refused after a reboot or
 *     on another host, when the log is torn or damaged, or when the file is not the
 *     one the log was written for), and accepted only when the journal still ends its
 *     checkpointed part with the recorded checksum, every column has this run's shape,
 *     the fingerprint matches and the committed rows read back from the status column
 *     (status != WISP_RESULTS_STATUS_MISSING) are as many as the checkpoint says;
 *     then only the journal's records after the checkpoint are replayed into it. Its
 *     cost does not grow with the rows already committed: a rollback of at most one
 *     commit's changed blocks, the replay of at most one commit's records, and a read
 *     of the status/label/true_label columns (9 bytes per row). Windowed runs
 *     (segments) always take the full rebuild (their segments are held in memory
 *     until finish and only the journal has them).
 *     Full rebuild (the fallback, and whenever the tail resume is refused): the
 *     records are replayed in order; the first incomplete or corrupt record
 *     (a crash mid-append) ends the replay and the journal is truncated there (so
 *     damage inside an older record, which a crash cannot cause, also drops the
 *     records after it: their rows are redone, never wrong). The
 *     .partial file is then deleted and rebuilt from the replayed rows, so a killed,
 *     truncated or damaged .partial loses nothing committed, and the final file holds
 *     the same rows as an uninterrupted run. Cost: one sequential read of the journal
 *     and one rewrite of the committed rows. Either way a resume ends with a
 *     checkpoint, so the next one is a tail resume again.
 *   - Without resume (opts.resume = 0), leftover .partial/.commit/.undo files are deleted
 *     (logged) and the run starts over. With resume = 1 and no journal, a fresh
 *     run starts.
 *   - finish: commits pending rows, writes metrics and attributes, closes, fsyncs,
 *     deletes the rollback log, renames OUT.h5.partial to OUT.h5 (replacing it),
 *     fsyncs the directory, and deletes the journal. If finish fails the .partial and
 *     journal stay resumable (a death between the log's removal and the rename costs
 *     a full rebuild).
 *   - Uncommitted rows (put but not committed) are lost by a crash or by destroy
 *     without commit; the caller redoes every row for which wisp_results_row_done()
 *     is 0.
 *   Disk usage: the journal holds a second copy of the row data until finish; the
 *   rollback log holds one commit's changed blocks (docs/OUTPUT.md, disk budget).
 *
 * Duplicates: the first put of a row index wins; later puts of the same index
 * (late duplicate results from a re-leased shard, or rows already committed before
 * a resume) are ignored and return WISP_RESULTS_DUPLICATE (> 0).
 *
 * One writer per output: the journal is flock'd while a writer has it open; a
 * second open of the same output (any process) fails with WISP_ERR_STATE.
 * Not thread-safe: one thread owns a wisp_results_t.
 *
 * Throughput (bench/bench_results.c, loaded 2-core machine, 64-row shards in
 * random order, commits of 4096 rows): ~90-150k rows/s at C = 10 without
 * embeddings, ~20-30k rows/s with 384-float embeddings (I/O bound: every value is
 * written twice, journal + HDF5); a full rebuild replays ~50-200k rows/s, a tail
 * resume takes ~0.02-0.3 s whatever the rows committed (bench_results resume_*). Memory: the HDF5
 * chunk cache (16 MiB per dataset) plus the pending rows; with shuffled shards the
 * growth stays ~50 MB at 10^6 rows (C = 10) and ~25 MB at 2x10^5 rows with 384-float
 * embeddings (bench_results: results_*_growth_mb). */
#ifndef WISP_RESULTS_H
#define WISP_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Returned by wisp_results_put when the row index was already received. */
#define WISP_RESULTS_DUPLICATE 1

/* status value of rows never produced (finish with ALLOW_MISSING). */
#define WISP_RESULTS_STATUS_MISSING (-127)

/* wisp_results_finish flags. */
#define WISP_RESULTS_FINISH_ALLOW_MISSING 1u /* finish even when rows are missing */

typedef struct {
    const char *key;   /* attribute name (not one of the writer's own names) */
    const char *value; /* UTF-8 string value */
} wisp_results_attr_t;

typedef struct {
    const char *path;                 /* output file OUT.h5 (the final name) */
    size_t n_rows;                    /* N, number of manifest items (>= 1) */
    int n_classes;                    /* C (>= 1) */
    const char *const *classes;       /* (C) class names, index = class id */
    int embed_dim;                    /* P, 0 for no embedding column */
    int has_true_label;               /* 1: write true_label and the metrics */
    const char *fingerprint;          /* identity of the run: config + model + adapter +
                                         head + manifest, e.g. a sha256 hex. Required. */
    int resume;                       /* 1: continue from OUT.h5.commit when present */
    const wisp_results_attr_t *attrs; /* (n_attrs) string attributes for the root */
    int n_attrs;
    size_t max_pending_rows; /* put commits automatically once this many rows are
                                pending (bounds memory); 0 = 4096, at most 2^20 */
    int top_k;               /* K: top_k_label/top_k_prob columns, 0 none, at most C */
    int segments;            /* 1: rows carry window segments (the segments group) */
} wisp_results_opts_t;

/* Zeroed options (max_pending_rows 0 = default). */
wisp_results_opts_t wisp_results_default_opts(void);

/* One window of a file row (windowed classification). probs (C) is read during put. */
typedef struct {
    double start, end;  /* seconds of the source, 0 <= start < end */
    int32_t label;      /* argmax of probs, in [0, C) */
    float score;        /* probs[label] */
    const float *probs; /* (C) */
} wisp_result_segment_t;

/* Most windows one row may carry (a 10-day recording in 30 s windows with a 1 s hop). */
#define WISP_RESULTS_MAX_SEGMENTS (1u << 20)

/* One result row. Arrays are read during put only (copied). */
typedef struct {
    size_t index;           /* row = manifest item id, < n_rows */
    const char *path;       /* input path (NULL stored as "") */
    int32_t label;          /* predicted class id, -1 on error */
    float score;            /* max prob */
    const float *probs;     /* (C); NULL stores NaN (error rows) */
    const float *logits;    /* (C); NULL stores NaN */
    const float *embedding; /* (P) when embed_dim > 0; NULL stores NaN */
    float duration;         /* seconds, -1 unknown */
    int8_t status;          /* 0 ok, else a negative wisp_err_t */
    const char *error;      /* message when status != 0 (NULL stored as "") */
    const char *note;       /* remark on an ok row, e.g. audio cut to 30 s (NULL: "") */
    int32_t true_label;     /* when has_true_label: class id or -1 unknown */
    const wisp_result_segment_t *segments; /* (n_segments) with opts.segments, ok rows only */
    uint32_t n_segments;
} wisp_result_row_t;

typedef struct wisp_results wisp_results_t;

/* What the writer did (resume costs), for tests and benchmarks. */
typedef struct {
    int resume_tail;      /* 1: open resumed from the .partial's checkpoint (tail replay) */
    size_t replay_rows;   /* rows open replayed from the journal into the HDF5 file */
    double open_s;        /* the whole open */
    double replay_h5_s;   /* of which writing the replayed rows into the HDF5 file */
    uint64_t undo_bytes;  /* page bytes saved to the rollback log so far */
    uint64_t checkpoints; /* checkpoints of the .partial so far */
} wisp_results_stats_t;

/* Copies the writer's stats. */
void wisp_results_get_stats(const wisp_results_t *r, wisp_results_stats_t *out);

/* Opens (fresh or resumed, see above) the writer for opts->path. NULL on failure
 * with details in err: WISP_ERR_ARG (bad opts), WISP_ERR_STATE (resume state does
 * not match: fingerprint, shape or classes), WISP_ERR_IO / WISP_ERR_HDF5. */
wisp_results_t *wisp_results_open(const wisp_results_opts_t *opts, wisp_error_t *err);

/* Stores a row (pending until the next commit). Returns 0 when stored,
 * WISP_RESULTS_DUPLICATE when the index was already received (row ignored), or a
 * negative WISP_ERR_*: WISP_ERR_ARG (index out of range, status 0 without probs or
 * logits, label out of range, segments without opts.segments or on an error row, more
 * than WISP_RESULTS_MAX_SEGMENTS, a segment's label out of range or start/end not
 * finite with start < end, after finish), or the error of an automatic commit. */
int wisp_results_put(wisp_results_t *r, const wisp_result_row_t *row, wisp_error_t *err);

/* Makes every pending row durable: journal append + fsync, then the .partial HDF5
 * file is updated and flushed. No-op without pending rows. If the journal append
 * fails, the rows stay pending (a later commit retries). If the journal append
 * succeeded but the HDF5 update failed, the rows ARE committed (row_done is 1),
 * the error is returned, and finish refuses until a resume rebuilds the file. */
int wisp_results_commit(wisp_results_t *r, wisp_error_t *err);

/* Rows committed (durable). */
size_t wisp_results_done_count(const wisp_results_t *r);

/* 1 when row i is committed, 0 otherwise (also for i >= n_rows). */
int wisp_results_row_done(const wisp_results_t *r, size_t i);

/* 1 when row i was received (committed or pending), 0 otherwise. */
int wisp_results_row_received(const wisp_results_t *r, size_t i);

/* Rows with status != 0 among the received ones. */
size_t wisp_results_error_count(const wisp_results_t *r);

/* Commits, then completes the file (metrics, attributes, summary_json as the
 * "summary" attribute when not NULL), renames it to its final name and deletes the
 * journal. Refuses with WISP_ERR_STATE while rows are missing unless flags has
 * WISP_RESULTS_FINISH_ALLOW_MISSING (missing rows then get status
 * WISP_RESULTS_STATUS_MISSING, error "missing", label -1, NaN values).
 * After success only destroy is allowed. */
int wisp_results_finish(wisp_results_t *r, const char *summary_json, unsigned flags,
                        wisp_error_t *err);

/* 1 when `path` is a finished results file of the run `fingerprint` (so a rerun of
 * a completed job can skip the work), 0 otherwise (absent, unreadable, another
 * run's). Never fails. */
int wisp_results_is_complete(const char *path, const char *fingerprint);

/* Closes the files without committing pending rows (committed ones stay resumable),
 * frees everything, sets *r to NULL. Accepts NULL and *r == NULL. */
void wisp_results_destroy(wisp_results_t **r);

#endif
