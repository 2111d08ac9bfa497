#!/bin/sh
# wisp synth and wisp report from the command line: help, one-line errors with
# exit codes, determinism across runs, plots with and without gnuplot. (Its speed is
# measured in make bench, bench_synth, not here: a timed test fails on a loaded machine.)
set -eu
BUILD=${BUILD:-build}
W=$(cd "$(dirname "$BUILD/bin/wisp")" && pwd)/wisp
T=$(mktemp -d /tmp/wisp-synth-report-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# --help goes to stdout with examples; bad usage is one line on stderr, exit 2.
"$W" synth --help | grep -q "^examples:" || fail "synth --help has no examples"
"$W" report --help | grep -q "^examples:" || fail "report --help has no examples"
for args in "--classes 9 -o $T/x" "-o $T/x --per-class zero" "--bogus" "" "-o $T/x --formats aac"; do
    set +e; "$W" synth $args >"$T/out" 2>"$T/err"; rc=$?; set -e
    [ "$rc" = 2 ] || fail "synth $args: exit $rc, want 2"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "synth $args: stderr is not one line: $(cat "$T/err")"
done

# Same seed -> same manifests and same bytes (Ogg: libsndfile picks random stream
# serials, so those are compared by size only).
"$W" synth -o "$T/a" --classes 8 --per-class 25 --corrupt 10 --seed 5 >"$T/out"
grep -q "wrote 200 clips" "$T/out" || fail "no summary: $(cat "$T/out")"
"$W" synth -o "$T/b" --classes 8 --per-class 25 --corrupt 10 --seed 5 -q
for f in train.csv val.csv test.csv all.csv all_with_corrupt.csv corrupt.csv classes.txt meta.csv; do
    cmp -s "$T/a/$f" "$T/b/$f" || fail "$f differs between two runs with the same seed"
done
[ "$(wc -l <"$T/a/all_with_corrupt.csv")" = 211 ] || fail "all_with_corrupt.csv should have 210 rows"
(cd "$T/a" && find . -type f ! -name '*.ogg' | sort | xargs md5sum) >"$T/a.md5"
(cd "$T/b" && md5sum -c --quiet "$T/a.md5") || fail "files differ between two runs with the same seed"
"$W" synth -o "$T/c" --classes 8 --per-class 25 --seed 6 -q
cmp -s "$T/a/all.csv" "$T/c/all.csv" && fail "a different seed gave the same dataset"

# report: a training directory with and without gnuplot on PATH.
mkdir -p "$T/run/head"
i=1
while [ $i -le 30 ]; do
    echo "{\"type\":\"step\",\"step\":$i,\"epoch\":$(( (i - 1) / 10 )),\"loss\":$(awk "BEGIN{print 2/$i}"),\"acc\":$(awk "BEGIN{print 1-1/$i}"),\"clips_per_s\":50}"
    [ $((i % 10)) = 0 ] && echo "{\"type\":\"eval\",\"step\":$i,\"epoch\":$(( (i - 1) / 10 )),\"val_loss\":$(awk "BEGIN{print 2.2/$i}"),\"val_acc\":0.$i}"
    i=$((i + 1))
done >"$T/run/metrics.jsonl"
echo '{"num_labels":2,"labels":["tone","noise"]}' >"$T/run/head/head_config.json"
env PATH=/nonexistent "$W" report "$T/run" >"$T/out"
grep -q "best val_acc 0.3000 (step 30)" "$T/out" || fail "training summary: $(cat "$T/out")"
grep -q "labels (2): 0=tone 1=noise" "$T/out" || fail "no labels in: $(cat "$T/out")"
grep -q "gnuplot is not installed" "$T/out" || fail "no gnuplot notice"
if command -v gnuplot >/dev/null 2>&1; then
    "$W" report "$T/run" --plots "$T/plots" >"$T/out"
    head -c 4 "$T/plots/training_curves.png" | grep -q PNG || fail "training_curves.png is not a PNG"
fi

# Malformed inputs: one line naming the file, exit 3.
echo '{"type":"step","step":1}' >"$T/run/metrics.jsonl"
echo '{"type":"step",' >>"$T/run/metrics.jsonl"
set +e; "$W" report "$T/run" >/dev/null 2>"$T/err"; rc=$?; set -e
[ "$rc" = 3 ] || fail "bad metrics.jsonl: exit $rc"
grep -q "metrics.jsonl:2: invalid JSON" "$T/err" || fail "bad metrics.jsonl: $(cat "$T/err")"
[ "$(wc -l <"$T/err")" = 1 ] || fail "error is not one line"
set +e; "$W" report "$T/a/train.csv" >/dev/null 2>"$T/err"; rc=$?; set -e
[ "$rc" = 3 ] && grep -q "train.csv: not an HDF5 file" "$T/err" || fail "CSV as results: $(cat "$T/err")"
echo "synth_report: ok (200 clips, the same bytes for the same seed)"
