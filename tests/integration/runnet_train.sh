#!/bin/sh
# Distributed training (tiny random Whisper + seq_bn adapter, 136 clips, global batch 16):
#  - np=1 and np=2 (fixed-order reduction) with the same global batch: step-1 gradients (train.dump_grads)
#    agree to 1e-5, final adapter and head to 1e-4;
#  - np=1 equals the local `wisp train` with the same settings bitwise, also with
#    train.window (long-audio windows); classify of that head must use its window;
#  - kill -9 of one worker mid-run: `wisp run` relaunches the workers, they resume
#    from the newest checkpoint and the result equals the uninterrupted np=2 run.
set -e
. "$(dirname "$0")/runnet_lib.inc"
cat >"$T/tiny.json" <<JSON
{"model_type": "whisper", "architectures": ["WhisperForAudioClassification"], "d_model": 64,
 "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "num_mel_bins": 80,
 "max_source_positions": 1500, "activation_function": "gelu", "classifier_proj_size": 32,
 "num_labels": 4, "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 64}
JSON
"$WISP" init-model --config "$T/tiny.json" -o "$T/model" --seed 3 >/dev/null 2>&1 || fail "init-model"
"$WISP" synth -o "$T/data" --classes 4 --per-class 32 --max-seconds 2 --formats wav -q >/dev/null 2>&1 || fail "synth"
cat >"$T/train.json" <<JSON
{"kind": "train", "model": "model", "adapter_config": "seq_bn", "seed": 42,
 "train_manifest": "data/train.csv", "val_manifest": "data/val.csv", "output": "np1",
 "train": {"epochs": 2, "global_batch": 16, "micro_batch": 8, "truncate": true, "checkpoint_every": 2},
 "cluster": {"credit": 2, "lease_timeout": 30, "heartbeat": 0.5}}
JSON
run() { # NP OUTDIR [extra --set]
    np=$1; out=$2; shift 2
    timeout 90 "$WISP" run "$T/train.json" -np "$np" --no-progress --set output="$T/$out" "$@" \
        >"$T/$out.out" 2>"$T/$out.err" || { tail -20 "$T/$out.err"; fail "train np=$np -> $out"; }
    grep -q '"status":"complete"' "$T/$out.out" || fail "$out: not complete"
}
run 1 np1 --set train.dump_grads="$T/grads1.safetensors"
run 2 np2 --set train.dump_grads="$T/grads2.safetensors" --set train.fixed_order_reduce=true
d=$(st_maxdiff "$T/grads1.safetensors" "$T/grads2.safetensors"); echo "step-1 gradients np1 vs np2: max abs diff $d"
le "$d" 1e-5 || fail "gradients differ by $d"
for f in adapter/adapter.safetensors head/model_head.safetensors; do
    d=$(st_maxdiff "$T/np1/$f" "$T/np2/$f"); echo "$f np1 vs np2: max abs diff $d"
    le "$d" 1e-4 || fail "$f differs by $d"
done
TOTAL=$(sed -n 's/.*"steps_total":\([0-9]*\).*/\1/p' "$T/np2.out")
[ -n "$TOTAL" ] && [ $((TOTAL % 2)) -eq 0 ] || fail "steps_total"
grep -q "\"type\":\"eval\",\"step\":$((TOTAL / 2)),\"epoch\":0" "$T/np2/metrics.jsonl" || fail "no epoch-end evaluation"
grep -q "\"type\":\"eval\",\"step\":$TOTAL,\"epoch\":1" "$T/np2/metrics.jsonl" || fail "no final evaluation"

# the local loop with the same settings
(cd "$T" && timeout 90 "$WISP" train --model model --preset seq_bn --train data/train.csv --val data/val.csv \
    --truncate -o local --epochs 2 --batch 8 --accum 2 --seed 42 --checkpoint-every 2 --threads 1) \
    >"$T/local.log" 2>&1 || { tail -5 "$T/local.log"; fail "local train"; }
for f in adapter/adapter.safetensors head/model_head.safetensors; do
    cmp "$T/local/$f" "$T/np1/$f" || fail "$f: np=1 differs from wisp train"
done
echo "ok: np=1 is bitwise the local wisp train"

# Long-audio training (train.window): a seeded random 1 s window of each 2 s clip per
# epoch, the same windows in `wisp run` and `wisp train` (bitwise), recorded in
# features.json beside the outputs and the checkpoint copies; a classify job of that
# head without classify.window is refused by the coordinator, naming the option.
run 1 win1 --set train.window=1
(cd "$T" && timeout 90 "$WISP" train --model model --preset seq_bn --train data/train.csv --val data/val.csv \
    --truncate --window 1 -o winlocal --epochs 2 --batch 8 --accum 2 --seed 42 --checkpoint-every 2 --threads 1) \
    >"$T/winlocal.log" 2>&1 || { tail -5 "$T/winlocal.log"; fail "local windowed train"; }
for f in adapter/adapter.safetensors head/model_head.safetensors; do
    cmp "$T/winlocal/$f" "$T/win1/$f" || fail "$f: windowed np=1 differs from wisp train --window"
    cmp -s "$T/win1/$f" "$T/np1/$f" && fail "$f: the window changed nothing"
done
CKW="$T/win1/checkpoints/$(cat "$T/win1/checkpoints/LATEST")"
for d in "$T/win1/head" "$T/win1/adapter" "$CKW/head" "$CKW/adapter"; do
    grep -Eq '"window_seconds": *1([,}]|$)' "$d/features.json" 2>/dev/null || fail "$d: features.json without window_seconds 1"
done
cat >"$T/wincl.json" <<JSON
{"kind": "classify", "model": "model", "adapter": "win1/adapter", "head": "win1/head",
 "manifest": "data/test.csv", "output": "wincl.h5", "classify": {"truncate": true}}
JSON
rc=0; timeout 60 "$WISP" run "$T/wincl.json" -np 1 --no-progress >"$T/wincl.out" 2>"$T/wincl.err" || rc=$?
[ $rc -ne 0 ] && grep -q "classify.window: 1 (--window=1)" "$T/wincl.err" ||
    { tail -5 "$T/wincl.err"; fail "a classify job of a windowed head without classify.window: exit $rc"; }
timeout 60 "$WISP" run "$T/wincl.json" -np 1 --no-progress --set classify.window=1 >"$T/wincl.out" 2>"$T/wincl.err" ||
    { tail -5 "$T/wincl.err"; fail "a classify job with the trained window"; }
"$WISP" inspect "$T/win1" >"$T/wininsp.out" 2>&1 &&
    grep -q "features.json: trained on truncated log-mel of 1 s windows of long files (classify with --truncate, --window=1)" "$T/wininsp.out" ||
    { cat "$T/wininsp.out"; fail "wisp inspect does not show the training window"; }
echo "ok: windowed training: np=1 is bitwise wisp train --window; features.json records it; classify must match"

# kill one worker after the first checkpoint (step 2). A step of this tiny model takes
# a few ms, so the run could end before the worker is found: the whole run is frozen
# first (timeout leads its own process group: one SIGSTOP stops launcher, coordinator,
# mpirun and workers at once), the victim is found and killed, then the rest resumes.
timeout 90 "$WISP" run "$T/train.json" -np 2 --no-progress --set output="$T/killed" --set train.fixed_order_reduce=true >"$T/killed.out" 2>"$T/killed.err" &
RUN=$!
i=0
while [ ! -e "$T/killed/checkpoints/step-00000002" ]; do
    sleep 0.005; i=$((i + 1)); [ $i -lt 12000 ] || fail "no checkpoint to resume from"
done
kill -STOP -"$RUN"
LAUNCHER=$(pgrep -P $RUN | head -n 1)
MPIRUN=$(pgrep -P "$LAUNCHER" -x mpirun | head -n 1)
VICTIM=$(pgrep -P "$MPIRUN" -x wisp-worker | tail -n 1)
[ -n "$VICTIM" ] || { kill -CONT -"$RUN"; fail "no worker to kill"; }
kill -9 "$VICTIM"
kill -CONT -"$RUN"
wait $RUN || fail "killed run did not finish"
grep -q '"status":"complete"' "$T/killed.out" || fail "killed run: not complete"
grep -q '"worlds":2' "$T/killed.out" || fail "killed run: expected a relaunched world"
grep -q 'resum' "$T/killed.err" || fail "killed run: no resume"
for f in adapter/adapter.safetensors head/model_head.safetensors; do
    cmp "$T/np2/$f" "$T/killed/$f" || fail "$f: the resumed run differs from the uninterrupted one"
done
[ "$(grep -c '"type":"step"' "$T/killed/metrics.jsonl")" -eq "$TOTAL" ] || fail "metrics log should hold $TOTAL steps"
[ "$(grep -c '"type":"eval"' "$T/killed/metrics.jsonl")" -eq 2 ] || fail "metrics log should hold 2 evaluations once each"
echo "ok: worker killed mid-training; relaunched world resumed; adapters bitwise equal"
