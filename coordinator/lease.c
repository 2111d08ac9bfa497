#include "lease.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

enum { S_PENDING = 0, S_LEASED = 1, S_DONE = 2 };

typedef struct {
    int holder; /* worker holding the lease (-1 none); may outlive DONE until its result returns */
    int prev;   /* the worker that held it before a re-lease (-1 none) */
    int hslot;  /* its index in the holder's held list (-1 when holder < 0) */
    uint8_t state;  /* S_* */
    uint8_t queued; /* 1 while an entry for it sits in the re-queue ring */
} s_state_t;

typedef struct {
    double last_seen; /* time of the last valid message */
    int held;  /* shards leased to it and not yet returned: held_ids[w * credit ..][0, held) */
    int alive; /* 0 once dropped */
} s_worker_t;

struct wisp_lease {
    wisp_lease_shard_t *shards; /* n */
    s_state_t *st;              /* n */
    size_t n;
    size_t fresh;  /* next never-leased shard index candidate */
    long *requeue; /* FIFO ring of re-queued shard indices (n slots) */
    size_t rq_head, rq_len;
    size_t done;
    size_t requeued; /* shards put back by drop_worker/expire since creation */
    s_worker_t *workers;
    /* (cap_workers, credit): the shards each worker holds, unordered. A worker never holds
     * more than credit (next refuses at credit; a shard stays counted until released),
     * so dropping a worker costs O(credit), not a scan of every shard. */
    long *held_ids;
    int n_workers, cap_workers, live;
    int credit;
    double timeout;
    int stopped;
};

wisp_lease_t *wisp_lease_new(const wisp_lease_shard_t *shards, size_t n_shards, int credit,
                             double timeout)
{
    if (credit < 1 || !(timeout > 0))
        return NULL;
    wisp_lease_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    size_t n = n_shards ? n_shards : 1;
    self->shards = malloc(n * sizeof *self->shards);
    self->st = malloc(n * sizeof *self->st);
    self->requeue = malloc(n * sizeof *self->requeue);
    if (!self->shards || !self->st || !self->requeue) {
        wisp_lease_destroy(&self);
        return NULL;
    }
    if (n_shards)
        memcpy(self->shards, shards, n_shards * sizeof *shards);
    for (size_t i = 0; i < n; i++)
        self->st[i] = (s_state_t){-1, -1, -1, S_PENDING, 0};
    self->n = n_shards;
    self->credit = credit;
    self->timeout = timeout;
    return self;
}

void wisp_lease_destroy(wisp_lease_t **self)
{
    if (!self || !*self)
        return;
    free((*self)->shards);
    free((*self)->st);
    free((*self)->requeue);
    free((*self)->workers);
    free((*self)->held_ids);
    free(*self);
    *self = NULL;
}

int wisp_lease_add_worker(wisp_lease_t *self, double now)
{
    if (self->n_workers == self->cap_workers) {
        int cap = self->cap_workers ? 2 * self->cap_workers : 16;
        s_worker_t *w = realloc(self->workers, (size_t)cap * sizeof *w);
        if (!w)
            return WISP_ERR_NOMEM;
        self->workers = w;
        long *ids = realloc(self->held_ids, (size_t)cap * (size_t)self->credit * sizeof *ids);
        if (!ids)
            return WISP_ERR_NOMEM; /* workers grew, cap_workers did not: a retry reallocates */
        self->held_ids = ids;
        self->cap_workers = cap;
    }
    self->workers[self->n_workers] = (s_worker_t){now, 0, 1};
    self->live++;
    return self->n_workers++;
}

int wisp_lease_worker_count(const wisp_lease_t *self)
{
    return self->n_workers;
}

int wisp_lease_worker_alive(const wisp_lease_t *self, int w)
{
    return w >= 0 && w < self->n_workers && self->workers[w].alive;
}

int wisp_lease_live_workers(const wisp_lease_t *self)
{
    return self->live;
}

int wisp_lease_held(const wisp_lease_t *self, int w)
{
    return (w >= 0 && w < self->n_workers) ? self->workers[w].held : 0;
}

void wisp_lease_touch(wisp_lease_t *self, int w, double now)
{
    if (wisp_lease_worker_alive(self, w))
        self->workers[w].last_seen = now;
}

static void s_push(wisp_lease_t *self, long s)
{
    /* A shard has at most one entry in the ring (the queued flag), so n slots
     * suffice; entries gone stale (shard done since) are skipped on pop. */
    if (self->st[s].queued)
        return;
    self->st[s].queued = 1;
    self->requeue[(self->rq_head + self->rq_len) % self->n] = s;
    self->rq_len++;
}

long wisp_lease_next(wisp_lease_t *self, int w, double now)
{
    if (self->stopped || !wisp_lease_worker_alive(self, w) || self->workers[w].held >= self->credit)
        return -1;
    long s = -1;
    while (self->rq_len) {
        long c = self->requeue[self->rq_head];
        self->rq_head = (self->rq_head + 1) % self->n;
        self->rq_len--;
        self->st[c].queued = 0;
        if (self->st[c].state == S_PENDING && self->st[c].holder < 0) {
            s = c;
            break;
        }
    }
    while (s < 0 && self->fresh < self->n) {
        size_t c = self->fresh++;
        if (self->st[c].state == S_PENDING && self->st[c].holder < 0)
            s = (long)c;
    }
    if (s < 0)
        return -1;
    int k = self->workers[w].held++;
    self->held_ids[(size_t)w * (size_t)self->credit + (size_t)k] = s;
    self->st[s].state = S_LEASED;
    self->st[s].holder = w;
    self->st[s].hslot = k;
    self->workers[w].last_seen = now;
    return s;
}

/* Shard s leaves its holder's list: the list's last entry takes its place (O(1)). */
static void s_release(wisp_lease_t *self, long s)
{
    int h = self->st[s].holder;
    if (h < 0)
        return;
    long *ids = self->held_ids + (size_t)h * (size_t)self->credit;
    int k = self->st[s].hslot, last = --self->workers[h].held;
    ids[k] = ids[last];
    self->st[ids[k]].hslot = k;
    self->st[s].holder = -1;
    self->st[s].hslot = -1;
}

int wisp_lease_complete(wisp_lease_t *self, int w, long s)
{
    if (s < 0 || (size_t)s >= self->n || w < 0 || w >= self->n_workers)
        return WISP_LEASE_UNKNOWN;
    s_state_t *st = &self->st[s];
    if (st->state == S_DONE) {
        if (st->holder == w)
            s_release(self, s); /* the holder's late copy returns its credit */
        return (st->holder == w || st->prev == w || st->holder < 0) ? WISP_LEASE_DUPLICATE
                                                                    : WISP_LEASE_UNKNOWN;
    }
    if (st->holder == w) {
        s_release(self, s);
    } else if (st->prev != w) {
        return WISP_LEASE_UNKNOWN;
    }
    /* From the previous holder: commit; a current holder keeps its credit
     * until its own (duplicate) result or its death releases it. */
    st->state = S_DONE;
    self->done++;
    return WISP_LEASE_COMMIT;
}

void wisp_lease_uncommit(wisp_lease_t *self, int w, long s)
{
    if (s < 0 || (size_t)s >= self->n || self->st[s].state != S_DONE)
        return;
    self->done--;
    self->st[s].state = S_PENDING;
    if (self->st[s].prev == w)
        self->st[s].prev = -1;
    if (self->st[s].holder < 0)
        s_push(self, s);
    else
        self->st[s].state = S_LEASED; /* another worker is on it */
}

static int s_cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

size_t wisp_lease_drop_worker(wisp_lease_t *self, int w)
{
    if (!wisp_lease_worker_alive(self, w))
        return 0;
    size_t requeued = 0;
    /* Only w's own list (<= credit shards), re-queued in shard order so the re-leases
     * (taken before fresh shards) keep output commits near manifest order. */
    long *ids = self->held_ids + (size_t)w * (size_t)self->credit;
    int held = self->workers[w].held;
    qsort(ids, (size_t)held, sizeof *ids, s_cmp_long);
    for (int k = 0; k < held; k++) {
        s_state_t *st = &self->st[ids[k]];
        st->holder = -1;
        st->hslot = -1;
        if (st->state == S_LEASED) {
            st->state = S_PENDING;
            st->prev = w;
            s_push(self, ids[k]);
            requeued++;
        }
    }
    self->workers[w].alive = 0;
    self->workers[w].held = 0;
    self->live--;
    self->requeued += requeued;
    return requeued;
}

int wisp_lease_revive_worker(wisp_lease_t *self, int w, double now)
{
    if (w < 0 || w >= self->n_workers || self->workers[w].alive)
        return WISP_ERR_ARG;
    self->workers[w] = (s_worker_t){now, 0, 1};
    self->live++;
    return WISP_OK;
}

size_t wisp_lease_expire(wisp_lease_t *self, double now, int *dead, size_t max_dead)
{
    size_t n = 0;
    for (int w = 0; w < self->n_workers; w++) {
        if (!self->workers[w].alive || now - self->workers[w].last_seen <= self->timeout)
            continue;
        wisp_lease_drop_worker(self, w);
        if (n < max_dead && dead)
            dead[n] = w;
        n++;
    }
    return n;
}

void wisp_lease_stop(wisp_lease_t *self)
{
    self->stopped = 1;
}

size_t wisp_lease_shard_count(const wisp_lease_t *self)
{
    return self->n;
}

const wisp_lease_shard_t *wisp_lease_shard(const wisp_lease_t *self, long s)
{
    return (s >= 0 && (size_t)s < self->n) ? &self->shards[s] : NULL;
}

size_t wisp_lease_requeued(const wisp_lease_t *self)
{
    return self->requeued;
}

size_t wisp_lease_done_count(const wisp_lease_t *self)
{
    return self->done;
}

int wisp_lease_is_done(const wisp_lease_t *self, long s)
{
    return s >= 0 && (size_t)s < self->n && self->st[s].state == S_DONE;
}

int wisp_lease_all_done(const wisp_lease_t *self)
{
    return self->done == self->n;
}
