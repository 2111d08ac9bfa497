/* lease.h: the coordinator's shard lease and credit bookkeeping, without sockets.
 *
 * Shards are PENDING, LEASED to one worker, or DONE. A worker holds at most
 * `credit` shards (credit-based dispatch keeps every ROUTER send far below the
 * high-water mark, where ZeroMQ would drop silently). A worker silent for more
 * than `timeout` seconds is declared dead and every shard it held is re-queued
 * (re-leased first, before fresh shards, so output commits stay near order).
 *
 * Results: the first result for a shard commits it; any later one is a
 * duplicate and is dropped. A result is only accepted from the worker holding
 * the lease or the one that held it before a re-lease (so a slow worker's late
 * answer still counts once); a result for a shard a worker never held is
 * refused. Time is passed in by the caller, so the whole machine is testable. */
#ifndef WISP_LEASE_H
#define WISP_LEASE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t first; /* first item id */
    uint32_t count; /* items */
    double seconds; /* audio seconds (0 when unknown) */
} wisp_lease_shard_t;

typedef enum {
    WISP_LEASE_COMMIT = 1,    /* first result: the caller commits it */
    WISP_LEASE_DUPLICATE = 2, /* shard already done: drop */
    WISP_LEASE_UNKNOWN = 3,   /* no such shard, or never leased to this worker: drop */
} wisp_lease_verdict_t;

typedef struct wisp_lease wisp_lease_t;

/* Copies the shard list. NULL on failure. credit >= 1, timeout > 0. */
wisp_lease_t *wisp_lease_new(const wisp_lease_shard_t *shards, size_t n_shards, int credit,
                             double timeout);
void wisp_lease_destroy(wisp_lease_t **self);

/* A new live worker slot (ids are never reused). Negative WISP_ERR_NOMEM on failure. */
int wisp_lease_add_worker(wisp_lease_t *self, double now);
int wisp_lease_worker_count(const wisp_lease_t *self);
/* 1 when w is a live slot. */
int wisp_lease_worker_alive(const wisp_lease_t *self, int w);
int wisp_lease_live_workers(const wisp_lease_t *self);
/* Shards currently held by w (its used credit). */
int wisp_lease_held(const wisp_lease_t *self, int w);
/* Records activity of w (any valid message), renewing its leases. */
void wisp_lease_touch(wisp_lease_t *self, int w, double now);

/* Leases the next shard to w: a re-queued one first, then the next fresh one.
 * Returns the shard index, or -1 when w has no credit left, is not live, leasing
 * is stopped, or nothing is pending. */
long wisp_lease_next(wisp_lease_t *self, int w, double now);

/* Verdict for a result of shard s from worker w (see above). COMMIT marks it done. */
int wisp_lease_complete(wisp_lease_t *self, int w, long s);
/* The caller could not commit a COMMIT verdict (bad payload): shard s goes back
 * to pending and w's slot keeps no claim on it. */
void wisp_lease_uncommit(wisp_lease_t *self, int w, long s);

/* w left or died: its shards go back to the queue (in shard order); the slot is no
 * longer live. Returns the number of shards re-queued. O(credit): each worker keeps the
 * list of the shards it holds, so dropping 1 000 workers does not scan the shard table. */
size_t wisp_lease_drop_worker(wisp_lease_t *self, int w);
/* A dropped slot w becomes live again (a worker declared dead that rejoins as itself),
 * holding nothing; the shards it held were re-queued when it was dropped and its late
 * results still count (as for any previous holder). WISP_ERR_ARG when w is live or
 * not a slot. */
int wisp_lease_revive_worker(wisp_lease_t *self, int w, double now);
/* Drops every live worker silent for longer than the timeout; their slots go
 * into dead[] (up to max_dead). Returns the number dropped. */
size_t wisp_lease_expire(wisp_lease_t *self, double now, int *dead, size_t max_dead);

/* Stops handing out shards (shutdown); results are still accepted. */
void wisp_lease_stop(wisp_lease_t *self);

size_t wisp_lease_shard_count(const wisp_lease_t *self);
const wisp_lease_shard_t *wisp_lease_shard(const wisp_lease_t *self, long s);
size_t wisp_lease_done_count(const wisp_lease_t *self);
/* Shards re-queued so far because their holder left, was dropped or expired
 * (each re-queue counted once; shards_requeued in the summary). */
size_t wisp_lease_requeued(const wisp_lease_t *self);
/* 1 when shard s is done. */
int wisp_lease_is_done(const wisp_lease_t *self, long s);
/* 1 when every shard is done. */
int wisp_lease_all_done(const wisp_lease_t *self);

#endif
