/* Tests of coordinator/lease: the credit and lease state machine, without sockets. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "coordinator/lease.h"

static wisp_lease_t *s_make(size_t n, int credit, double timeout)
{
    wisp_lease_shard_t sh[64];
    for (size_t i = 0; i < n; i++)
        sh[i] = (wisp_lease_shard_t){i * 10, 10, 5.0};
    wisp_lease_t *l = wisp_lease_new(sh, n, credit, timeout);
    assert_non_null(l);
    return l;
}

static void test_credit_limits_shards_held_per_worker(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(10, 2, 5);
    int a = wisp_lease_add_worker(l, 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 1);
    assert_int_equal(wisp_lease_next(l, a, 0), -1);
    assert_int_equal(wisp_lease_held(l, a), 2);
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_COMMIT);
    assert_int_equal(wisp_lease_held(l, a), 1);
    assert_int_equal(wisp_lease_next(l, a, 0), 2);
    wisp_lease_destroy(&l);
    assert_null(l);
}

static void test_lease_expiry_requeues_shard(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(4, 2, 5);
    int a = wisp_lease_add_worker(l, 0);
    int b = wisp_lease_add_worker(l, 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 1);
    wisp_lease_touch(l, b, 4.0);
    int dead[4];
    assert_int_equal(wisp_lease_expire(l, 4.0, dead, 4), 0);
    assert_int_equal(wisp_lease_expire(l, 6.0, dead, 4), 1); /* a silent since 0, b seen at 4 */
    assert_int_equal(dead[0], a);
    assert_false(wisp_lease_worker_alive(l, a));
    assert_true(wisp_lease_worker_alive(l, b));
    assert_int_equal(wisp_lease_requeued(l), 2); /* both of a's shards: the summary's count */
    /* re-queued shards come first, in order, before fresh ones */
    assert_int_equal(wisp_lease_next(l, b, 6), 0);
    assert_int_equal(wisp_lease_next(l, b, 6), 1);
    assert_int_equal(wisp_lease_complete(l, b, 0), WISP_LEASE_COMMIT);
    assert_int_equal(wisp_lease_next(l, b, 6), 2);
    wisp_lease_destroy(&l);
}

static void test_late_duplicate_result_is_dropped_and_first_commit_wins(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(2, 1, 5);
    int a = wisp_lease_add_worker(l, 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    int dead[2];
    assert_int_equal(wisp_lease_expire(l, 10, dead, 2), 1); /* a is slow, declared dead */
    int b = wisp_lease_add_worker(l, 10);
    assert_int_equal(wisp_lease_next(l, b, 10), 0); /* re-leased to b */
    /* a's late answer arrives first: it commits (first commit wins) */
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_COMMIT);
    assert_int_equal(wisp_lease_done_count(l), 1);
    /* b still holds its credit until its own copy returns, which is a duplicate */
    assert_int_equal(wisp_lease_held(l, b), 1);
    assert_int_equal(wisp_lease_complete(l, b, 0), WISP_LEASE_DUPLICATE);
    assert_int_equal(wisp_lease_held(l, b), 0);
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_DUPLICATE);
    assert_int_equal(wisp_lease_done_count(l), 1);
    wisp_lease_destroy(&l);
}

static void test_results_for_shards_never_leased_are_refused(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(3, 2, 5);
    int a = wisp_lease_add_worker(l, 0);
    int rogue = wisp_lease_add_worker(l, 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    assert_int_equal(wisp_lease_complete(l, rogue, 0), WISP_LEASE_UNKNOWN);
    assert_int_equal(wisp_lease_complete(l, rogue, 2), WISP_LEASE_UNKNOWN);
    assert_int_equal(wisp_lease_complete(l, a, 99), WISP_LEASE_UNKNOWN);
    assert_int_equal(wisp_lease_complete(l, a, -1), WISP_LEASE_UNKNOWN);
    assert_int_equal(wisp_lease_complete(l, 77, 0), WISP_LEASE_UNKNOWN);
    assert_int_equal(wisp_lease_done_count(l), 0);
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_COMMIT);
    wisp_lease_destroy(&l);
}

static void test_worker_death_re_leases_all_its_shards(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(6, 3, 5);
    int a = wisp_lease_add_worker(l, 0);
    int b = wisp_lease_add_worker(l, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(wisp_lease_next(l, a, 0), i);
    assert_int_equal(wisp_lease_complete(l, a, 1), WISP_LEASE_COMMIT);
    assert_int_equal(wisp_lease_drop_worker(l, a), 2); /* shards 0 and 2 */
    assert_int_equal(wisp_lease_live_workers(l), 1);
    assert_int_equal(wisp_lease_next(l, a, 1), -1); /* dead slots get nothing */
    assert_int_equal(wisp_lease_next(l, b, 1), 0);
    assert_int_equal(wisp_lease_next(l, b, 1), 2);
    assert_int_equal(wisp_lease_next(l, b, 1), 3);
    assert_int_equal(wisp_lease_next(l, b, 1), -1);
    wisp_lease_destroy(&l);
}

static void test_uncommitted_result_goes_back_to_the_queue(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(2, 1, 5);
    int a = wisp_lease_add_worker(l, 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_COMMIT);
    wisp_lease_uncommit(l, a, 0); /* the payload was malformed */
    assert_int_equal(wisp_lease_done_count(l), 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_COMMIT);
    assert_int_equal(wisp_lease_next(l, a, 0), 1);
    assert_int_equal(wisp_lease_complete(l, a, 1), WISP_LEASE_COMMIT);
    assert_true(wisp_lease_all_done(l));
    wisp_lease_destroy(&l);
}

static void test_stop_halts_leasing_but_accepts_results(void **state)
{
    (void)state;
    wisp_lease_t *l = s_make(4, 2, 5);
    int a = wisp_lease_add_worker(l, 0);
    assert_int_equal(wisp_lease_next(l, a, 0), 0);
    wisp_lease_stop(l);
    assert_int_equal(wisp_lease_next(l, a, 0), -1);
    assert_int_equal(wisp_lease_complete(l, a, 0), WISP_LEASE_COMMIT);
    wisp_lease_destroy(&l);
}

static void test_random_churn_commits_every_shard_exactly_once(void **state)
{
    (void)state;
    enum { N = 50 };
    wisp_lease_shard_t sh[N];
    for (int i = 0; i < N; i++)
        sh[i] = (wisp_lease_shard_t){(uint64_t)i, 1, 1};
    wisp_lease_t *l = wisp_lease_new(sh, N, 3, 2.0);
    int commits[N] = {0};
    uint64_t x = 99;
    double now = 0;
    int workers[4];
    for (int i = 0; i < 4; i++)
        workers[i] = wisp_lease_add_worker(l, now);
    int drops = 0;
    for (int it = 0; it < 100000 && !wisp_lease_all_done(l); it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int k = (int)((x >> 33) % 4);
        int w = workers[k];
        int op = (int)((x >> 20) % 10);
        now += 0.01;
        if (op < 4) {
            wisp_lease_next(l, w, now);
        } else if (op < 8) {
            /* results, including for shards w does not hold */
            long s = (long)((x >> 40) % N);
            if (wisp_lease_complete(l, w, s) == WISP_LEASE_COMMIT)
                commits[s]++;
            wisp_lease_touch(l, w, now);
        } else if (op == 8 && (x >> 50) % 20 == 0) {
            drops += wisp_lease_drop_worker(l, w) > 0;
        } else {
            wisp_lease_expire(l, now, NULL, 0);
        }
        /* a dead slot may still send late results, but a fresh worker takes its place */
        for (int j = 0; j < 4; j++)
            if (!wisp_lease_worker_alive(l, workers[j]) && (x >> 10) % 3 == 0)
                workers[j] = wisp_lease_add_worker(l, now);
    }
    assert_true(drops > 0);
    assert_true(wisp_lease_all_done(l));
    for (int i = 0; i < N; i++)
        assert_int_equal(commits[i], 1);
    wisp_lease_destroy(&l);
}

/* The per-worker held lists against a model kept from the API's own answers: a shard
 * next() gave w is w's until w's complete() for it (any verdict) or w's drop; a drop
 * re-queues exactly w's shards that are not done. Checked after every operation for
 * every slot (held counts) and at every drop (how many were re-queued). */
static void test_held_lists_match_a_model_under_churn(void **state)
{
    (void)state;
    enum { N = 300, W = 12, CREDIT = 4, MAXSLOTS = 4096 };
    wisp_lease_shard_t sh[N];
    for (int i = 0; i < N; i++)
        sh[i] = (wisp_lease_shard_t){(uint64_t)i, 1, 1};
    wisp_lease_t *l = wisp_lease_new(sh, N, CREDIT, 1e9);
    assert_non_null(l);
    int owner[N];
    for (int i = 0; i < N; i++)
        owner[i] = -1;
    static int held[MAXSLOTS]; /* the model's count of owner[] == v */
    memset(held, 0, sizeof held);
    int slot[W], n_slots = 0, checked_drops = 0;
    for (int i = 0; i < W; i++)
        slot[i] = wisp_lease_add_worker(l, 0);
    uint64_t x = 7;
    for (int it = 0; it < 200000 && !wisp_lease_all_done(l); it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int w = slot[(x >> 33) % W], op = (int)((x >> 20) % 16);
        long s = (long)((x >> 40) % N);
        if (op < 7) {
            long got = wisp_lease_next(l, w, 0);
            if (got >= 0) {
                assert_int_equal(owner[got], -1);
                owner[got] = w;
                held[w]++;
            }
        } else if (op < 13) {
            wisp_lease_complete(l, w, s);
            if (owner[s] == w)
                owner[s] = -1, held[w]--;
        } else if (op == 13) {
            if (wisp_lease_complete(l, w, s) == WISP_LEASE_COMMIT)
                wisp_lease_uncommit(l, w, s); /* holders are unchanged by an uncommit */
            if (owner[s] == w)
                owner[s] = -1, held[w]--;
        } else if (op == 14 && wisp_lease_worker_alive(l, w)) {
            size_t want = 0;
            for (int i = 0; i < N; i++)
                if (owner[i] == w) {
                    want += !wisp_lease_is_done(l, i);
                    owner[i] = -1;
                }
            held[w] = 0;
            assert_int_equal(wisp_lease_drop_worker(l, w), want);
            checked_drops++;
            /* half the time the slot comes back as itself, else a new slot replaces it */
            if ((x >> 60) & 1)
                assert_int_equal(wisp_lease_revive_worker(l, w, 0), WISP_OK);
            else
                slot[(x >> 33) % W] = wisp_lease_add_worker(l, 0);
        }
        n_slots = wisp_lease_worker_count(l);
        assert_true(n_slots <= MAXSLOTS);
        for (int v = 0; v < n_slots; v++)
            assert_int_equal(wisp_lease_held(l, v), held[v]);
    }
    assert_true(checked_drops > 100);
    assert_true(wisp_lease_all_done(l));
    wisp_lease_destroy(&l);
}

/* A drop costs the dropped worker's own shards, not the table: 1 000 workers holding
 * the shards just past 500 000 done ones are dropped. The scan this replaced walked
 * the table up to each worker's shards (5 * 10^8 entries here: 0.68 CPU s at -O2);
 * the held lists take microseconds. CPU time, so a loaded machine does not decide. */
static void test_dropping_workers_does_not_scan_the_shard_table(void **state)
{
    (void)state;
    enum { N = 1000000, DONE = 500000, W = 1000 };
    wisp_lease_shard_t *sh = malloc(N * sizeof *sh);
    assert_non_null(sh);
    for (long i = 0; i < N; i++)
        sh[i] = (wisp_lease_shard_t){(uint64_t)i, 1, 1};
    wisp_lease_t *l = wisp_lease_new(sh, N, 2, 30);
    free(sh);
    assert_non_null(l);
    int first = wisp_lease_add_worker(l, 0);
    for (long i = 0; i < DONE; i++) {
        assert_int_equal(wisp_lease_next(l, first, 0), i);
        assert_int_equal(wisp_lease_complete(l, first, i), WISP_LEASE_COMMIT);
    }
    int w0 = wisp_lease_worker_count(l);
    for (int w = 0; w < W; w++) {
        assert_int_equal(wisp_lease_add_worker(l, 0), w0 + w);
        assert_int_equal(wisp_lease_next(l, w0 + w, 0), DONE + 2 * w);
        assert_int_equal(wisp_lease_next(l, w0 + w, 0), DONE + 2 * w + 1);
    }
    double t0 = wisp_test_cpu_seconds();
    size_t requeued = 0;
    for (int w = 0; w < W; w++)
        requeued += wisp_lease_drop_worker(l, w0 + w);
    double t = wisp_test_cpu_seconds() - t0;
    assert_int_equal(requeued, 2 * W);
    assert_int_equal(wisp_lease_live_workers(l), 1);
    /* re-leased in the order they were dropped, each shard's pair in shard order */
    for (long i = 0; i < 2 * W; i++) {
        assert_int_equal(wisp_lease_next(l, first, 0), DONE + i);
        assert_int_equal(wisp_lease_complete(l, first, DONE + i), WISP_LEASE_COMMIT);
    }
    if (t > 0.05)
        fail_msg("1 000 drops took %.3f CPU s over %d shards (expected well under 0.05)", t, N);
    wisp_lease_destroy(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credit_limits_shards_held_per_worker),
        cmocka_unit_test(test_lease_expiry_requeues_shard),
        cmocka_unit_test(test_late_duplicate_result_is_dropped_and_first_commit_wins),
        cmocka_unit_test(test_results_for_shards_never_leased_are_refused),
        cmocka_unit_test(test_worker_death_re_leases_all_its_shards),
        cmocka_unit_test(test_uncommitted_result_goes_back_to_the_queue),
        cmocka_unit_test(test_stop_halts_leasing_but_accepts_results),
        cmocka_unit_test(test_random_churn_commits_every_shard_exactly_once),
        cmocka_unit_test(test_held_lists_match_a_model_under_churn),
        cmocka_unit_test(test_dropping_workers_does_not_scan_the_shard_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
