#!/bin/sh
# Long audio in windows (classify.window), local and distributed:
#  - files of 40-75 s give one segments row per 30 s window (hop 15 s, the last window
#    ending at the end) and a file row that is the mean of its windows' probabilities;
#    short files are one window; corrupt files are error rows without segments;
#  - without windows a long file's row carries the "first 30 s" note;
#  - `wisp run` (coordinator + 2 workers) writes the same file as `wisp classify`,
#    segments included;
#  - kill -9 of a windowed `wisp classify` and of a windowed run's coordinator, then
#    --resume / a rerun: the result equals the uninterrupted one;
#  - h5py and pandas read the segments (skipped with a message without them).
set -e
. "$(dirname "$0")/runnet_lib.inc"
START=$(date +%s)
stamp() { echo "[$(($(date +%s) - START)) s] $*"; }
PY=/usr/bin/python3
cat >"$T/tiny.json" <<JSON
{"model_type": "whisper", "architectures": ["WhisperForAudioClassification"], "d_model": 32,
 "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "num_mel_bins": 80,
 "max_source_positions": 1500, "activation_function": "gelu", "classifier_proj_size": 16,
 "num_labels": 3, "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 64}
JSON
"$WISP" init-model --config "$T/tiny.json" -o "$T/model" --seed 5 --init-std 0.3 >/dev/null 2>&1 \
    || "$WISP" init-model --config "$T/tiny.json" -o "$T/model" --seed 5 >/dev/null 2>&1 || fail "init-model"
"$WISP" synth -o "$T/short" --classes 3 --per-class 6 --max-seconds 3 -q >/dev/null 2>&1 || fail "synth short"
"$WISP" synth -o "$T/long" --classes 3 --per-class 2 --min-seconds 40 --max-seconds 75 --corrupt 2 --formats wav \
    --seed 4 -q >/dev/null 2>&1 || fail "synth long"
timeout 60 "$WISP" train --model "$T/model" --preset seq_bn --train "$T/short/train.csv" --truncate \
    -o "$T/trained" --steps 1 --threads 1 >/dev/null 2>"$T/train.err" || { cat "$T/train.err"; fail "train"; }
# The memory figure is a bound (the arena's pages are touched as clips need them), and
# says so: it read "2069 MB planned" for a run that peaked at 220 MB.
grep -q "at most [0-9.]* MB of activations and gradients" "$T/train.err" || fail "no memory bound in the train log"
grep -q "MB planned" "$T/train.err" && fail "the train log still says 'MB planned'"
# The long files (and 2 corrupt ones) followed by the 3 short test clips, all labeled.
M="$T/mixed.csv"
{ cat "$T/long/all_with_corrupt.csv"; tail -n +2 "$T/short/test.csv" | head -n 4 | sed "s|^|$T/short/|"; } >"$M"
sed -i "2,\$ { /^\\//! s|^|$T/long/| }" "$M"
[ "$(($(wc -l <"$M") - 1))" -eq 11 ] || fail "expected 11 files in the manifest"
stamp "model, data and adapter ready"
# wisp inspect reads wisp's own training run and checkpoint directories (exit 0), and
# names a LATEST that points nowhere (exit 3).
"$WISP" inspect --summary "$T/trained" >"$T/insp.out" 2>&1 || { cat "$T/insp.out"; fail "inspect of a run"; }
grep -q "^training run: " "$T/insp.out" && grep -q "features.json: trained on truncated" "$T/insp.out" ||
    fail "inspect of a run: $(cat "$T/insp.out")"
CK="$T/trained/checkpoints/$(cat "$T/trained/checkpoints/LATEST")"
"$WISP" inspect --summary "$CK" >"$T/insp.out" 2>&1 || { cat "$T/insp.out"; fail "inspect of a checkpoint"; }
grep -q "^checkpoint: " "$T/insp.out" && grep -q "state.json: " "$T/insp.out" || fail "inspect of a checkpoint"
cp -r "$T/trained" "$T/broken" && echo step-99999999 >"$T/broken/checkpoints/LATEST"
set +e
"$WISP" inspect --summary "$T/broken" >"$T/insp.out" 2>&1
rc=$?
set -e
[ $rc -eq 3 ] && grep -q "LATEST names 'step-99999999'" "$T/insp.out" || fail "inspect of a broken LATEST: exit $rc"
# The head was trained on truncated features (features.json): the padded mode is
# refused, locally and by the coordinator, with the option to change.
[ "$(sed -n 's/.*"truncate": *\([a-z]*\).*/\1/p' "$T/trained/head/features.json")" = true ] ||
    fail "no features.json with truncate: true beside the trained head"
set +e
"$WISP" classify --model "$T/model" --adapter "$T/trained/adapter" --head "$T/trained/head" \
    -o "$T/pad.h5" "$T/short/tone/tone_0000.wav" >/dev/null 2>"$T/pad.err"
rc=$?
set -e
[ $rc -eq 3 ] && grep -q "trained on truncated.*add --truncate" "$T/pad.err" ||
    { cat "$T/pad.err"; fail "padded classify with a truncated head: exit $rc"; }

CL="$WISP classify --model $T/model --adapter $T/trained/adapter --head $T/trained/head --truncate --threads 1"
set +e
timeout 120 $CL --window --hop 15 --top-k 2 --manifest "$M" -o "$T/local.h5" >/dev/null 2>"$T/local.err"
rc=$?
timeout 120 $CL --manifest "$M" -o "$T/nowin.h5" >/dev/null 2>"$T/nowin.err"
rc2=$?
set -e
[ $rc -eq 1 ] || { cat "$T/local.err"; fail "windowed classify exit $rc, expected 1 (corrupt files)"; }
[ $rc2 -eq 1 ] || { cat "$T/nowin.err"; fail "classify exit $rc2, expected 1"; }
grep -q "only their first 30 s were classified" "$T/nowin.err" || fail "no truncation warning without windows"
grep -q "only their first 30 s" "$T/local.err" && fail "truncation warning with windows"
stamp "local classify done (windows and not)"

if $PY -c 'import h5py, numpy' 2>/dev/null; then
    $PY - "$T/local.h5" "$T/nowin.h5" <<'PY' || fail "segments check"
import sys, math, h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
g = f['segments']
row, start, end = g['row'][:], g['start'][:], g['end'][:]
probs, label = g['probs'][:], g['label'][:]
dur, status = f['duration'][:], f['status'][:]
classes = [c.decode() if isinstance(c, bytes) else c for c in f['classes'][:]]
assert list(row) == sorted(row), 'segments not sorted by row'
n_long = 0
for i in range(len(dur)):
    sel = np.where(row == i)[0]
    if status[i] != 0:
        assert len(sel) == 0, f'error row {i} has segments'
        continue
    d = float(dur[i])
    want = 1 if d <= 30 else 1 + math.ceil((d - 30) / 15 - 1e-9)
    assert len(sel) == want, f'row {i}: {len(sel)} windows for {d:.2f} s, expected {want}'
    if d > 30:
        n_long += 1
        assert abs(start[sel[-1]] + 30 - end[sel[-1]]) < 1e-6 and abs(end[sel[-1]] - d) < 0.01, 'last window'
        assert all(abs(start[s] - 15 * k) < 1e-6 for k, s in enumerate(sel[:-1])), 'starts'
    mean = probs[sel].mean(axis=0)
    assert np.abs(f['probs'][i] - mean).max() < 1e-5, f'row {i}: probs are not the mean of its windows'
    assert f['label'][i] == int(np.argmax(f['probs'][i]))
    ln = f['label_name'][i]
    assert (ln.decode() if isinstance(ln, bytes) else ln) == classes[f['label'][i]]
    assert list(f['top_k_label'][i]) == list(np.argsort(-f['probs'][i], kind='stable')[:2])
    assert all(label[s] == int(np.argmax(probs[s])) for s in sel)
assert n_long == 6, n_long
n = h5py.File(sys.argv[2], 'r')
notes = [x.decode() if isinstance(x, bytes) else x for x in n['note'][:]]
for i in range(len(dur)):
    if status[i] == 0:
        assert (dur[i] > 30) == notes[i].startswith('first 30 s of'), (i, dur[i], notes[i])
assert 'segments' not in n
print('segments ok:', len(row), 'windows over', int((status == 0).sum()), 'files')
PY
    if $PY -c 'import pandas' 2>/dev/null; then
        $PY - "$T/local.h5" <<'PY' || fail "pandas read"
import sys, h5py, pandas as pd
f = h5py.File(sys.argv[1], 'r')
files = pd.DataFrame({k: f[k][:] for k in ('path', 'label', 'label_name', 'score', 'duration')})
seg = pd.DataFrame({k: f['segments'][k][:] for k in ('row', 'start', 'end', 'label', 'label_name', 'score')})
both = seg.merge(files, left_on='row', right_index=True, suffixes=('', '_file'))
assert len(both) == len(seg) and both['end'].max() > 40
print(both[['path', 'start', 'end', 'label_name', 'label_name_file']].head(3).to_string())
PY
    else
        echo "skipped: pandas is not installed for $PY"
    fi
else
    echo "skipped: h5py/numpy not installed for $PY (segments checked by h5diff only)"
fi

cat >"$T/job.json" <<JSON
{"kind": "classify", "model": "model", "adapter": "trained/adapter", "head": "trained/head",
 "manifest": "mixed.csv", "output": "dist.h5",
 "classify": {"batch_size": 4, "truncate": true, "window": 30, "hop": 15, "top_k": 2},
 "cluster": {"shard_size": 2, "credit": 1, "lease_timeout": 30, "heartbeat": 0.5, "commit_interval": 0.2}}
JSON
set +e
timeout 180 "$WISP" run "$T/job.json" -np 2 --no-progress >"$T/run1.out" 2>"$T/run1.err"
rc=$?
set -e
[ $rc -eq 1 ] || { tail -20 "$T/run1.err"; fail "wisp run exit $rc, expected 1"; }
DS="path label label_name score probs logits top_k_label top_k_prob duration status error note
true_label classes segments/row segments/start segments/end segments/label segments/label_name
segments/score segments/probs"
compare() {
    for d in $DS; do
        h5diff -d 1e-5 "$1" "$2" /$d /$d >/dev/null || fail "$2: /$d differs from $1"
    done
}
compare "$T/local.h5" "$T/dist.h5"
set +e
timeout 60 "$WISP" run "$T/job.json" -np 2 --no-progress --set classify.truncate=false \
    --set output=pad_dist.h5 >/dev/null 2>"$T/pad_dist.err"
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "trained on truncated" "$T/pad_dist.err" ||
    { tail -5 "$T/pad_dist.err"; fail "distributed padded classify with a truncated head: exit $rc"; }
if h5diff -d 1e-5 "$T/local.h5" "$T/dist.h5" /segments/start /segments/end >/dev/null 2>&1; then
    fail "h5diff control"
fi
stamp "distributed windowed classify equals local (segments included)"

# On a terminal (script(1) gives the run a pty): without known durations the progress
# line shows the audio decoded so far (it showed "0.00/0.00 audio h"), and every log
# line, the workers' ones forwarded by mpirun included, first erases the progress line
# instead of landing after it (they were glued to it).
if command -v script >/dev/null 2>&1; then
    (cd "$T" && script -qfec "$WISP run $T/job.json -np 2 --set output=tty.h5" "$T/tty.log" \
        </dev/null >/dev/null 2>&1) || true
    [ -f "$T/tty.h5" ] || { tail -5 "$T/tty.log"; fail "the run on a pty did not finish"; }
    grep -aq "files (.*audio h decoded" "$T/tty.log" || fail "no decoded audio hours in the progress line"
    grep -aq "0.00/0.00 audio h" "$T/tty.log" && fail "progress shows 0.00/0.00 audio h"
    printf '\r\033[K20' >"$T/erased"
    grep -aqF -f "$T/erased" "$T/tty.log" || fail "no log line erases the progress line"
    tr '\r' '\n' <"$T/tty.log" | grep -a " W[01] W s_error_row: " | grep -aq "errors [0-9]" &&
        fail "a worker line is glued to the progress line"
else
    echo "skipped: script(1) not installed (progress line on a terminal)"
fi

# kill -9 of a windowed local classify after its first commit, then --resume. The
# manifest lists the files 4 times, committed 8 files at a time (--batch 2).
M4="$T/mixed_x4.csv"
head -n 1 "$M" >"$M4"
for k in 1 2 3 4; do tail -n +2 "$M" >>"$M4"; done
set +e
timeout 300 $CL --window --hop 15 --top-k 2 --batch 2 --manifest "$M4" -o "$T/ref4.h5" >/dev/null 2>&1
$CL --window --hop 15 --top-k 2 --batch 2 --manifest "$M4" -o "$T/kill4.h5" >/dev/null 2>&1 &
PID=$!
set -e
HDR=$(stat -c %s "$T/ref4.h5" 2>/dev/null || echo 0)
[ "$HDR" -gt 0 ] || fail "no reference file"
i=0
while [ "$(stat -c %s "$T/kill4.h5.commit" 2>/dev/null || echo 0)" -lt 2000 ]; do
    sleep 0.01; i=$((i + 1)); [ $i -lt 12000 ] || fail "no commit journal"
done
kill -9 $PID
wait $PID 2>/dev/null || true
[ ! -e "$T/kill4.h5" ] || fail "the killed classify finished before the kill"
set +e
timeout 300 $CL --window --hop 15 --top-k 2 --batch 2 --manifest "$M4" -o "$T/kill4.h5" --resume \
    >/dev/null 2>"$T/resume.err"
rc=$?
set -e
[ $rc -eq 1 ] || { cat "$T/resume.err"; fail "resumed classify exit $rc"; }
grep -q "resuming:" "$T/resume.err" || fail "nothing was resumed"
compare "$T/ref4.h5" "$T/kill4.h5"
stamp "killed windowed classify resumed to the same file"

# kill -9 of the coordinator of a windowed run, then a rerun resumes.
sed -e 's/"mixed.csv"/"mixed_x4.csv"/' -e 's/"dist.h5"/"dist4.h5"/' "$T/job.json" >"$T/job4.json"
timeout 300 "$WISP" run "$T/job4.json" -np 2 --no-progress >"$T/run2.out" 2>"$T/run2.err" &
RUN=$!
i=0
while [ "$(stat -c %s "$T/dist4.h5.commit" 2>/dev/null || echo 0)" -lt 2000 ]; do
    sleep 0.01; i=$((i + 1)); [ $i -lt 12000 ] || fail "no commit journal"
done
LAUNCHER=$(pgrep -P $RUN | head -n 1)
COORD_PID=$(pgrep -P "$LAUNCHER" -f wisp-coordinator | head -n 1)
[ -n "$COORD_PID" ] || fail "no coordinator process (the run ended before the kill)"
kill -9 "$COORD_PID"
wait $RUN || true
[ ! -e "$T/dist4.h5" ] || fail "a killed run must not leave a final file"
set +e
timeout 300 "$WISP" run "$T/job4.json" -np 2 --no-progress >"$T/run3.out" 2>"$T/run3.err"
rc=$?
set -e
[ $rc -eq 1 ] || { tail -20 "$T/run3.err"; fail "resumed run exit $rc"; }
grep -q '"items_resumed":0,' "$T/run3.out" && fail "nothing was resumed"
compare "$T/ref4.h5" "$T/dist4.h5"
stamp "killed windowed run resumed to the same file as local classify"
echo "ok: windowed classify (local, distributed, killed and resumed) agree row for row"
