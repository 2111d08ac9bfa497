#!/bin/sh
# Distributed training when things go wrong (tiny random Whisper + seq_bn adapter):
#  - every clip unusable: `wisp run` and `wisp train` end with an error naming the
#    manifest and the first failures (exit 3, no relaunch loop); SIGINT is honoured
#    while batches are being skipped;
#  - the summary counts labeled, unlabeled-skipped and failed clips of both sets;
#  - a validation pass longer than the lease (lease 2.5 s, 160 padded clips) is not taken
#    for dead ranks: one world, no rank lost, complete;
#  - rank 0 failing mid-run (unwritable train.dump_grads) takes the world down: mpirun
#    exits, the launcher relaunches and then ends (no hang);
#  - a rank frozen (SIGSTOP) past the lease: its world ends, the relaunched one finishes;
#  - after SIGTERM `wisp run` names the checkpoint the rerun resumes from (the newest on
#    disk once every process is gone);
#  - the end of a run is not racy: 5 runs, each exit 0 with no Open MPI error box and no
#    relaunch after the finish;
#  - train.keep_best writes OUTDIR/best, train.patience stops early;
#  - --fresh starts over (all steps again, same weights), also after a setting changed.
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
# config NAME TRAIN VAL [train keys]: writes $T/NAME.json
config() {
    name=$1; train=$2; val=$3; shift 3
    cat >"$T/$name.json" <<JSON
{"kind": "train", "model": "model", "adapter_config": "seq_bn", "seed": 42,
 "train_manifest": "$train", "val_manifest": "$val", "output": "$name",
 "train": {"epochs": 1, "global_batch": 16, "micro_batch": 8, "truncate": true $*},
 "cluster": {"credit": 2, "lease_timeout": 30, "heartbeat": 0.2}}
JSON
}
cd "$T"

# ---- every clip unusable -----------------------------------------------------------
{ echo "path,label"; for i in 0 1 2 3 4 5 6 7; do echo "missing_$i.wav,c$((i % 2))"; done; } >bad.csv
config bad bad.csv ""
rc=0; timeout 60 "$WISP" run bad.json -np 2 --no-progress >bad.out 2>bad.err || rc=$?
[ $rc -eq 3 ] || { tail -5 bad.err; fail "all-unusable distributed run: exit $rc, expected 3"; }
grep -q "bad.csv: no usable clip in a whole epoch" bad.err || fail "the error does not name the manifest"
grep -q "missing_" bad.err || fail "the error does not name the failures"
! grep -q "relaunching" bad.err || fail "all-unusable run relaunched its workers"
rc=0; timeout 60 "$WISP" train --model model --preset seq_bn --train bad.csv -o badlocal --truncate \
    --epochs 100000 --threads 1 >badlocal.log 2>&1 || rc=$?
[ $rc -eq 3 ] || fail "all-unusable local run: exit $rc, expected 3"
grep -q "bad.csv: no usable clip" badlocal.log || fail "local: the error does not name the manifest"
echo "ok: no usable clip: one error naming the manifest and the first failures (local and distributed)"
# The summary counts the clips trained on, the rows skipped for want of a label and the
# clips that failed, per set (before: failures only).
{ head -n 9 data/train.csv | sed '2,$ s|^|data/|'; sed -n 2p data/train.csv | sed 's|^[^,]*|missing_x.wav|'
  tail -n 2 data/train.csv | sed 's|^|data/|; s|,[^,]*$|,|'; } >counts.csv
config counts counts.csv counts.csv ', "unlabeled": "skip"'
timeout 60 "$WISP" run counts.json -np 2 --no-progress >counts.out 2>counts.err ||
    { tail -5 counts.err; fail "counts run"; }
for kv in ',"labeled_clips":9' ',"skipped_unlabeled":2' ',"failed_clips":1' '"val_labeled_clips":9' \
    '"val_skipped_unlabeled":2' '"val_failed_clips":1'; do
    grep -q "$kv" counts.out || { cat counts.out; fail "summary lacks $kv"; }
done
grep -q "9 labeled clips (2 unlabeled skipped), .* classes; validation: 9 labeled clips (2 unlabeled skipped)" \
    counts.err || fail "the coordinator does not log the counts"
echo "ok: the summary counts labeled, unlabeled-skipped and failed clips per set"
{ echo "path,label"; i=0; while [ $i -lt 20000 ]; do echo "gone_$i.wav,c$((i % 2))"; i=$((i + 1)); done; } >manybad.csv
config manybad manybad.csv "" ', "global_batch": 1, "micro_batch": 1'
timeout 60 "$WISP" run manybad.json -np 2 --no-progress >manybad.out 2>manybad.err &
RUN=$!
sleep 3
kill -INT $RUN
rc=0; wait $RUN || rc=$?
[ $rc -eq 130 ] || { tail -3 manybad.err; fail "SIGINT while skipping: exit $rc, expected 130"; }
echo "ok: SIGINT honoured while batches are skipped"

# ---- a validation pass longer than the lease ----------------------------------------
# 160 padded (30 s) clips: 0.1-0.3 s a clip per rank here, a 2.5 s lease (10 s under
# the sanitizers, where one padded clip's backward alone can take longer). Without
# heartbeats inside the pass the coordinator drops the world and the relaunched one
# redoes it.
case "$BUILD" in *asan*) LEASE=10 ;; *) LEASE=2.5 ;; esac
{ head -1 data/val.csv; i=0; while [ $i -lt 8 ]; do tail -n +2 data/val.csv; i=$((i + 1)); done; } >data/bigval.csv
cat >longval.json <<JSON
{"kind": "train", "model": "model", "adapter_config": "seq_bn", "seed": 42,
 "train_manifest": "data/train.csv", "val_manifest": "data/bigval.csv", "output": "longval",
 "train": {"max_steps": 1, "global_batch": 4, "micro_batch": 1, "truncate": false},
 "cluster": {"credit": 2, "lease_timeout": $LEASE, "heartbeat": 0.1}}
JSON
timeout 600 "$WISP" run longval.json -np 2 --no-progress --restarts 1 >longval.out 2>longval.err || { tail -5 longval.err; fail "long validation run"; }
grep -q '"status":"complete"' longval.out || fail "long validation: not complete"
grep -q '"worlds":1,' longval.out || fail "long validation: the world was dropped"
grep -q '"workers_lost":0,' longval.out || fail "long validation: ranks declared dead"
grep -q '"val_acc":[0-9]' longval.out || fail "long validation: no val_acc in the summary"
echo "ok: a validation pass longer than the lease keeps its world"

# ---- rank 0 fails mid-run -------------------------------------------------------------
config fatal data/train.csv data/val.csv ', "dump_grads": "/nonexistent/dir/g.safetensors"'
rc=0; timeout 120 "$WISP" run fatal.json -np 2 --no-progress --restarts 1 >fatal.out 2>fatal.err || rc=$?
[ $rc -ne 124 ] || fail "a rank's fatal error left the world hanging"
[ $rc -ne 0 ] || fail "a rank's fatal error ended with exit 0"
grep -q "/nonexistent/dir" fatal.err || fail "the fatal error is not reported"
echo "ok: a rank's fatal error ends its world (exit $rc, no hang)"

# ---- a rank frozen past the lease ---------------------------------------------------------
# Its world is dropped; when it wakes up it is told to stop and its peers may be inside a
# collective: the world must end (MPI_Abort) so the relaunched one can resume.
config frozen data/train.csv data/val.csv ', "epochs": 40, "checkpoint_every": 4'
sed -i 's/"lease_timeout": 30, "heartbeat": 0.2/"lease_timeout": 2, "heartbeat": 0.2/' frozen.json
timeout 240 "$WISP" run frozen.json -np 2 --no-progress >frozen.out 2>frozen.err &
RUN=$!
i=0
while [ ! -e frozen/checkpoints/step-00000004 ]; do
    sleep 0.02; i=$((i + 1)); [ $i -lt 6000 ] || fail "frozen: no checkpoint"
done
LAUNCHER=$(pgrep -P $RUN | head -n 1)
MPIRUN=$(pgrep -P "$LAUNCHER" -x mpirun | head -n 1)
VICTIM=$(pgrep -P "$MPIRUN" -x wisp-worker | tail -n 1)
[ -n "$VICTIM" ] || fail "frozen: no worker to freeze"
kill -STOP "$VICTIM"
sleep 5
kill -CONT "$VICTIM" 2>/dev/null || true
rc=0; wait $RUN || rc=$?
[ $rc -eq 0 ] || { tail -5 frozen.err; fail "frozen rank: exit $rc (124: the world hung)"; }
grep -q '"status":"complete"' frozen.out || fail "frozen rank: not complete"
echo "ok: a rank frozen past the lease: its world ended, the relaunched one finished"

# ---- SIGTERM names the checkpoint a rerun resumes from --------------------------------
config term data/train.csv data/val.csv ', "epochs": 400, "checkpoint_every": 3'
timeout 120 "$WISP" run term.json -np 2 --no-progress >term.out 2>term.err &
RUN=$!
i=0
while [ ! -e term/checkpoints/step-00000006 ]; do
    sleep 0.02; i=$((i + 1)); [ $i -lt 3000 ] || fail "no checkpoint"
done
kill -TERM $RUN
wait $RUN || true
LATEST=$(sed 's/step-0*//' term/checkpoints/LATEST)
grep -q "a rerun resumes from the checkpoint of step $LATEST\$" term.err ||
    { grep "checkpoint" term.err; fail "SIGTERM message does not name step $LATEST"; }
echo "ok: SIGTERM names the checkpoint of step $LATEST"

# ---- the end of a run, 5 times --------------------------------------------------------
config fin data/train.csv data/val.csv
k=0
while [ $k -lt 5 ]; do
    rm -rf fin
    timeout 90 "$WISP" run fin.json -np 2 --no-progress >fin.out 2>fin.err || { tail -5 fin.err; fail "end race run $k: exit status"; }
    grep -q '"status":"complete"' fin.out || fail "end race run $k: not complete"
    ! grep -q "non-zero status\|MPI_ABORT\|relaunching" fin.err || { cat fin.err; fail "end race run $k: noise at the end"; }
    k=$((k + 1))
done
echo "ok: 5 runs ended cleanly (exit 0, no Open MPI box, no relaunch)"

# ---- keep_best and early stopping ------------------------------------------------------
# lr 0: the first evaluation (end of epoch 0, step 6) stays the best, the next one (step
# 12) spends a patience of 1, so at most the steps already issued follow (credit 2).
config best data/train.csv data/val.csv ', "epochs": 5, "lr": 0, "keep_best": true, "patience": 1'
timeout 90 "$WISP" run best.json -np 2 --no-progress >best.out 2>best.err || { tail -5 best.err; fail "early stopping run"; }
STEPS=$(sed -n 's/.*"steps":\([0-9]*\),.*/\1/p' best.out)
[ -n "$STEPS" ] && [ "$STEPS" -ge 12 ] && [ "$STEPS" -le 14 ] || fail "early stopping: $STEPS steps, expected 12..14 of 30"
grep -q '"step": 6,' best/best/best.json || fail "keep_best: best.json does not name step 6"
[ -e best/best/adapter/adapter.safetensors ] || fail "keep_best: no best adapter"
echo "ok: early stopping after $STEPS of 30 steps, best weights of step 6 kept"

# ---- --fresh starts over ---------------------------------------------------------------
cp -r fin/adapter first_adapter
timeout 90 "$WISP" run fin.json -np 2 --no-progress --fresh >fresh.out 2>fresh.err || { tail -5 fresh.err; fail "--fresh run"; }
TOTAL=$(sed -n 's/.*"steps_total":\([0-9]*\).*/\1/p' fresh.out)
grep -q "\"steps\":$TOTAL," fresh.out || fail "--fresh did not train its $TOTAL steps"
cmp first_adapter/adapter.safetensors fin/adapter/adapter.safetensors || fail "--fresh: other weights"
[ ! -e fin/previous ] || fail "--fresh: the old run is still in fin/previous"
[ "$(grep -c '"type":"step"' fin/metrics.jsonl)" -eq "$TOTAL" ] || fail "--fresh: metrics log"
timeout 90 "$WISP" run fin.json -np 2 --no-progress --fresh --set train.lr=2e-3 >fresh2.out 2>fresh2.err ||
    { tail -5 fresh2.err; fail "--fresh after a changed setting"; }
grep -q '"worlds":1,' fresh2.out || fail "--fresh after a changed setting: relaunched"
echo "ok: --fresh starts over (also with a changed setting)"
