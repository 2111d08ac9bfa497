#!/bin/sh
# Failure drills with the null job (mpirun -np 2):
#  1. kill -9 one worker mid-run: its mpirun dies; relaunched workers finish;
#     the output equals an uninterrupted run's (nothing lost or duplicated).
#  2. kill -9 the coordinator mid-run: a restarted coordinator resumes from its
#     commit log; the output again equals the uninterrupted run's.
set -e
. "$(dirname "$0")/runnet_lib.inc"
N=3000
null_config "$T/job.json" $N 1
# reference: uninterrupted
timeout 60 "$WISP" run "$T/job.json" -np 2 --no-progress >/dev/null 2>"$T/ref.log" || [ $? -eq 1 ] || fail "reference run"
check_rows "$T/out.tsv" $N || fail "reference rows"
mv "$T/out.tsv" "$T/ref.tsv"

start_coord() { # $1 log
    rm -f "$T/ep"
    timeout 60 "$COORD" "$T/job.json" --endpoint-file "$T/ep" --no-progress >"$T/$1.out" 2>"$T/$1.err" &
    CPID=$!                         # the timeout wrapper; the coordinator is its child
    i=0; while [ ! -s "$T/ep" ]; do sleep 0.05; i=$((i + 1)); [ $i -lt 200 ] || fail "no endpoint"; done
}
# wait_rows N: until the commit log holds at least N committed rows (20 bytes each)
wait_rows() {
    i=0
    while [ "$(stat -c %s "$T/out.tsv.journal" 2>/dev/null || echo 0)" -lt $((32 + 20 * $1)) ]; do
        sleep 0.05; i=$((i + 1)); [ $i -lt 400 ] || fail "no progress"
    done
}
start_workers() {
    timeout 60 mpirun -np 2 "$WORKER" --coordinator "$(cat "$T/ep")" --timeout 3 >>"$T/mpi.log" 2>&1 &
    MPID=$!
}

# 1. kill one worker
start_coord c1
start_workers
wait_rows 300
MPIRUN=$(pgrep -P $MPID | head -n 1)            # timeout -> mpirun -> wisp-worker ranks
VICTIM=$(pgrep -P "$MPIRUN" -x wisp-worker | head -n 1)
[ -n "$VICTIM" ] || fail "no worker process to kill"
kill -9 "$VICTIM"
wait $MPID || true                  # Open MPI ends the whole job when a rank dies
start_workers                       # relaunch; the coordinator kept running
wait $MPID || true
wait $CPID || [ $? -eq 1 ] || fail "coordinator after worker kill"
grep -q '"status":"complete"' "$T/c1.out" || fail "drill 1: not complete"
grep -q '"workers_lost":0,' "$T/c1.out" && fail "drill 1: no worker was lost"
grep -q '"workers_seen":4,' "$T/c1.out" || fail "drill 1: expected 2 + 2 relaunched workers"
cmp "$T/out.tsv" "$T/ref.tsv" || fail "drill 1: output differs from the uninterrupted run"
echo "ok: worker killed, relaunched, output identical"

# 2. kill the coordinator
rm -f "$T/out.tsv"
start_coord c2
start_workers
wait_rows 300
REAL=$(pgrep -P $CPID -f wisp-coordinator | head -n 1)
[ -n "$REAL" ] || REAL=$(pgrep -P $CPID | head -n 1)
[ -n "$REAL" ] || fail "no coordinator process to kill"
kill -9 "$REAL"
wait $CPID 2>/dev/null || true
[ -s "$T/out.tsv.journal" ] || fail "drill 2: no commit log after the coordinator died"
wait $MPID || true                  # workers give up after --timeout
start_coord c3
start_workers
wait $CPID || [ $? -eq 1 ] || fail "restarted coordinator"
wait $MPID || true
grep -q 'resuming:' "$T/c3.err" || fail "drill 2: did not resume"
grep -q '"items_resumed":0,' "$T/c3.out" && fail "drill 2: nothing resumed"
cmp "$T/out.tsv" "$T/ref.tsv" || fail "drill 2: output differs from the uninterrupted run"
echo "ok: coordinator killed, resumed, output identical"
