#!/bin/sh
# Distributed classify on 200 generated files (8 corrupt) with `wisp run -np 2`:
#  - every dataset of the HDF5 output equals the local `wisp classify` within 1e-5
#    (path, label, score, probs, logits, duration, status, error, true_label, classes);
#  - the corrupt files are error rows;
#  - kill -9 of the coordinator mid-run, then a rerun resumes from the commit
#    journal and again equals the local result.
set -e
. "$(dirname "$0")/runnet_lib.inc"
START=$(date +%s)
stamp() { echo "[$(($(date +%s) - START)) s] $*"; }
cat >"$T/tiny.json" <<JSON
{"model_type": "whisper", "architectures": ["WhisperForAudioClassification"], "d_model": 64,
 "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "num_mel_bins": 80,
 "max_source_positions": 1500, "activation_function": "gelu", "classifier_proj_size": 32,
 "num_labels": 4, "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 64}
JSON
"$WISP" init-model --config "$T/tiny.json" -o "$T/model" --seed 3 >/dev/null 2>&1 || fail "init-model"
"$WISP" synth -o "$T/data" --classes 4 --per-class 48 --corrupt 8 --max-seconds 3 -q >/dev/null 2>&1 || fail "synth"
timeout 60 "$WISP" train --model "$T/model" --preset seq_bn --train "$T/data/train.csv" --truncate \
    -o "$T/trained" --steps 1 --threads 1 >/dev/null 2>&1 || fail "train"
stamp "model, data and adapter ready"
M="$T/data/all_with_corrupt.csv"
[ "$(($(wc -l <"$M") - 1))" -eq 200 ] || fail "expected 200 files"
set +e
timeout 60 "$WISP" classify --model "$T/model" --adapter "$T/trained/adapter" --head "$T/trained/head" \
    --truncate --threads 1 --manifest "$M" -o "$T/local.h5" >/dev/null 2>&1
[ $? -eq 1 ] || fail "local classify should finish with item errors"
stamp "local classify done"
cat >"$T/job.json" <<JSON
{"kind": "classify", "model": "model", "adapter": "trained/adapter", "head": "trained/head",
 "manifest": "data/all_with_corrupt.csv", "output": "dist.h5",
 "classify": {"batch_size": 8, "truncate": true},
 "cluster": {"shard_size": 8, "credit": 2, "lease_timeout": 20, "heartbeat": 0.5, "commit_interval": 0.2}}
JSON
timeout 60 "$WISP" run "$T/job.json" -np 2 --no-progress >"$T/run1.out" 2>"$T/run1.err"
rc=$?
set -e
[ $rc -eq 1 ] || { tail -20 "$T/run1.err"; fail "wisp run exit $rc, expected 1 (corrupt files)"; }
compare() {
    for d in path label score probs logits duration status error true_label classes; do
        h5diff -d 1e-5 "$T/local.h5" "$1" /$d /$d >/dev/null || fail "$1: /$d differs from local classify"
    done
}
stamp "distributed classify done"
compare "$T/dist.h5"
# negative control: the comparison can fail
if h5diff -d 1e-5 "$T/local.h5" "$T/dist.h5" /probs /logits >/dev/null 2>&1; then fail "h5diff control"; fi
grep -q '"errors":8,' "$T/run1.out" || fail "expected 8 error rows in the summary"
echo "ok: distributed classify equals local classify (200 rows, 8 error rows)"

# kill -9 the coordinator once rows are committed, then rerun to resume. On an idle
# machine the 200-file run ends within a second, so this part runs a manifest of the
# same files listed 8 times (1600 rows): long enough to be caught mid-run.
M8="$T/data/all_x8.csv"
head -n 1 "$M" >"$M8"
for k in 1 2 3 4 5 6 7 8; do tail -n +2 "$M" >>"$M8"; done
set +e
timeout 120 "$WISP" classify --model "$T/model" --adapter "$T/trained/adapter" --head "$T/trained/head" \
    --truncate --threads 1 --manifest "$M8" -o "$T/local8.h5" >/dev/null 2>&1
set -e
sed -e 's/all_with_corrupt.csv/all_x8.csv/' -e 's/"dist.h5"/"dist8.h5"/' "$T/job.json" >"$T/job8.json"
timeout 120 "$WISP" run "$T/job8.json" -np 2 --no-progress >"$T/run2.out" 2>"$T/run2.err" &
RUN=$!
i=0
while [ "$(stat -c %s "$T/dist8.h5.commit" 2>/dev/null || echo 0)" -lt 3000 ]; do
    sleep 0.01; i=$((i + 1)); [ $i -lt 6000 ] || fail "no commit journal"
done
LAUNCHER=$(pgrep -P $RUN | head -n 1)
COORD_PID=$(pgrep -P "$LAUNCHER" -f wisp-coordinator | head -n 1)
[ -n "$COORD_PID" ] || fail "no coordinator process (the run ended before the kill)"
stamp "killing coordinator $COORD_PID"
kill -9 "$COORD_PID"
wait $RUN || true
[ ! -e "$T/dist8.h5" ] || fail "a killed run must not leave a final file"
set +e
timeout 120 "$WISP" run "$T/job8.json" -np 2 --no-progress >"$T/run3.out" 2>"$T/run3.err"
rc=$?
set -e
[ $rc -eq 1 ] || { tail -20 "$T/run3.err"; fail "resumed run exit $rc"; }
grep -q '"items_resumed":0,' "$T/run3.out" && fail "nothing was resumed"
for d in path label score probs logits duration status error true_label classes; do
    h5diff -d 1e-5 "$T/local8.h5" "$T/dist8.h5" /$d /$d >/dev/null || fail "resumed: /$d differs from local classify"
done
echo "ok: coordinator killed mid-run; the resumed file equals local classify"
