/* An HDF5 file driver with a rollback log: a file written through it can be brought
 * back, byte for byte, to its last checkpoint after its writer died at any instant.
 *
 * HDF5 1.10 updates a file in place and is not crash-safe: between two flushes the
 * file on disk mixes old and new metadata. This driver does POSIX I/O like HDF5's
 * sec2 driver and, from each checkpoint on, saves the checkpoint bytes of a 512-byte
 * page into the log before the first write that changes that page (pages at or
 * beyond the checkpoint's file size are new and need nothing; a truncation below it
 * saves the cut pages first). Rollback writes the saved pages back and cuts the
 * file to the checkpoint's size. Every saved page holds its checkpoint bytes (only
 * the first change of a page per checkpoint is saved), so the result is exactly the
 * file as it was at the checkpoint, whatever HDF5 wrote, freed or reused since: the
 * argument needs nothing of HDF5's internals. The caller checkpoints right after
 * H5Fflush, when the file on disk is a complete HDF5 file.
 *
 * The log LOG: a header [magic "WISPUL01"][boot id, 40 bytes][file size u64][probe u64:
 * hash of the file's first and last page][meta_len u32][meta][hash of all that], written to LOG.tmp
 * and renamed over LOG at each checkpoint (never torn: a death before the rename leaves the
 * previous checkpoint and its pages, which still describe every write since it); then one entry per
 * saved run of pages, [offset u64][len u64][hash of offset, len and bytes][bytes] (hash:
 * FNV-1a-style over 8-byte words), each appended with one write() before the file's own write. A
 * torn last entry (the writer died inside its write()) is dropped: the file write it precedes had
 * not started.
 *
 * What it covers: the death of the writing process (kill -9, a crash, the OOM
 * killer). Neither the log nor the file is fsync'd: the bytes of every completed
 * write() are in the kernel's page cache and read back after the process is gone,
 * in the order they were written. It does not cover a reboot, a power loss or a
 * resume on another host (the kernel may have written the file's pages to disk
 * without the log's): the log records the boot id (/proc/sys/kernel/random/boot_id)
 * and rollback refuses under any other, so the caller falls back to its own
 * recovery (wisp's results writer: the full rebuild from its fsync'd journal).
 *
 * One open file per wisp_h5undo_t; not thread-safe (like all HDF5 use in wisp). */
#ifndef WISP_H5UNDO_H
#define WISP_H5UNDO_H

#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "base/err.h"

typedef struct wisp_h5undo wisp_h5undo_t;

typedef struct {
    uint64_t entries;     /* log entries appended since the last checkpoint */
    uint64_t bytes;       /* page bytes saved since the last checkpoint */
    uint64_t total_bytes; /* page bytes saved over the writer's life */
    uint64_t checkpoints; /* checkpoints written */
} wisp_h5undo_stats_t;

/* A driver instance logging to log_path (created at the first checkpoint). Registers
 * the driver with HDF5 (unregistered by destroy). NULL on failure (err set). */
wisp_h5undo_t *wisp_h5undo_new(const char *log_path, wisp_error_t *err);

/* Makes the file access property list fapl use this driver (H5Fcreate/H5Fopen with it;
 * at most one such file open at a time). */
int wisp_h5undo_set_fapl(wisp_h5undo_t *u, hid_t fapl, const char *file, wisp_error_t *err);

/* Records the open file's current state as the checkpoint, with meta (n bytes, at most
 * 1 MiB) for the caller: what the file holds at this point. Call after H5Fflush. */
int wisp_h5undo_checkpoint(wisp_h5undo_t *u, const void *meta, size_t n, wisp_error_t *err);

/* 1 when a checkpoint has been written since new (the log exists), else 0. */
int wisp_h5undo_has_checkpoint(const wisp_h5undo_t *u);

/* Copies the stats. */
void wisp_h5undo_get_stats(const wisp_h5undo_t *u, wisp_h5undo_stats_t *out);

/* Closes the log and unregisters the driver (the file must be closed), sets *u to
 * NULL. The log file stays on disk (remove it with unlink when done). */
void wisp_h5undo_destroy(wisp_h5undo_t **u);

/* Brings `file` (closed) back to the checkpoint in u's log: checks the log's header
 * (magic, checksum, this boot), writes back every intact entry, cuts the file to the
 * checkpoint's size, checks the probe (a file replaced behind the log's back is
 * refused), then starts a fresh log for that same state (so the writes of
 * the resumed writer are saved against it: a second death rolls back the same way).
 * *meta (malloc'd, *meta_len bytes) is the checkpoint's meta. WISP_ERR_STATE when
 * the log cannot be trusted (absent, torn header, damaged entry, another boot),
 * WISP_ERR_IO when the file cannot be restored (then it is in no known state). */
int wisp_h5undo_rollback(wisp_h5undo_t *u, const char *file, uint8_t **meta, size_t *meta_len,
                         wisp_error_t *err);

#endif
