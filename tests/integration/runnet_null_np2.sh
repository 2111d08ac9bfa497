#!/bin/sh
# `wisp run` with a null job over 3000 items and mpirun -np 2: every row present
# exactly once in order; exit 1 (finished with item errors); summary counts agree.
set -e
. "$(dirname "$0")/runnet_lib.inc"
null_config "$T/job.json" 3000 2   # 2 ms per item: both ranks join before the end
set +e
timeout 60 "$WISP" run "$T/job.json" -np 2 --no-progress >"$T/stdout" 2>"$T/stderr"
rc=$?
set -e
[ "$rc" -eq 1 ] || { tail -20 "$T/stderr"; fail "wisp run exit $rc, expected 1 (item errors)"; }
check_rows "$T/out.tsv" 3000 || fail "rows"
grep -q '"status":"complete"' "$T/stdout" || fail "no complete summary"
grep -q '"errors":30,' "$T/stdout" || fail "summary errors != 30"
grep -q '"workers_seen":2' "$T/stdout" || fail "expected 2 workers"
[ ! -e "$T/out.tsv.journal" ] || fail "journal left behind"
# an unknown key is refused naming it
if timeout 10 "$WISP" run "$T/job.json" --set cluster.nope=1 2>"$T/err"; then fail "unknown key accepted"; fi
grep -q "cluster.nope" "$T/err" || fail "unknown key not named"
echo "ok: 3000 rows in order, 30 error rows"
