#!/bin/sh
# int8 frozen linears end to end (common/nn/qlinear.c):
#  - `wisp classify --precision int8 --compare-fp32 N` writes the rows and prints the
#    agreement with fp32 on the first N inputs, within a plausible relative RMS;
#  - `wisp run` with classify.precision=int8 and mpirun -np 2 gives the same labels as the
#    local int8 run (the same quantised arithmetic on every rank);
#  - refused: --compare-fp32 without int8, an unknown precision (option and job key).
set -e
. "$(dirname "$0")/runnet_lib.inc"
cat >"$T/tiny.json" <<JSON
{"model_type": "whisper", "architectures": ["WhisperForAudioClassification"], "d_model": 64,
 "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 256, "num_mel_bins": 80,
 "max_source_positions": 1500, "activation_function": "gelu", "classifier_proj_size": 32,
 "num_labels": 4, "init_std": 0.3}
JSON
"$WISP" init-model --config "$T/tiny.json" -o "$T/model" --seed 3 >/dev/null 2>&1 || fail "init-model"
"$WISP" synth -o "$T/data" --classes 4 --per-class 10 --max-seconds 3 -q >/dev/null 2>&1 || fail "synth"
timeout 60 "$WISP" train --model "$T/model" --preset seq_bn --weighted-layer-sum \
    --train "$T/data/train.csv" --truncate -o "$T/trained" --steps 2 --threads 1 >/dev/null 2>&1 ||
    fail "train"
A="--model $T/model --adapter $T/trained/adapter --head $T/trained/head --truncate --threads 1"
timeout 60 "$WISP" classify $A --manifest "$T/data/all.csv" -o "$T/fp32.h5" 2>/dev/null ||
    fail "fp32 classify"
timeout 60 "$WISP" classify $A --manifest "$T/data/all.csv" -o "$T/int8.h5" --precision int8 \
    --compare-fp32 25 >"$T/out" 2>"$T/err" || fail "int8 classify: $(tail -3 "$T/err")"
grep -q '^int8 vs fp32 on the first 25 inputs (25 decoded): top-1 agreement [0-9]*/25' "$T/out" ||
    fail "no agreement line: $(cat "$T/out")"
rms=$(sed -n 's/.*logits relative RMS \([0-9.e-]*\).*/\1/p' "$T/out")
awk -v r="$rms" 'BEGIN { exit !(r > 0 && r < 0.05) }' || fail "logits relative RMS $rms"
h5dump -a config "$T/int8.h5" | grep -q 'precision\\*":\\*"int8' || fail "precision not recorded"
# the same quantised model on two MPI ranks: the same labels as the local int8 run
cat >"$T/job.json" <<JSON
{"kind": "classify", "model": "model", "adapter": "trained/adapter", "head": "trained/head",
 "manifest": "data/all.csv", "output": "dist.h5",
 "classify": {"batch_size": 8, "truncate": true, "precision": "int8"},
 "cluster": {"shard_size": 8, "credit": 2, "lease_timeout": 20, "heartbeat": 0.5}}
JSON
timeout 90 "$WISP" run "$T/job.json" -np 2 --no-progress >"$T/run.out" 2>"$T/run.err" ||
    fail "wisp run int8: $(tail -5 "$T/run.err")"
h5diff -d 1e-5 "$T/int8.h5" "$T/dist.h5" /logits /logits >/dev/null ||
    fail "distributed int8 logits differ from local int8"
# refusals
# int8 is part of the run identity (the "features" attribute is hashed into the
# fingerprint a resume must match), so int8 rows never resume into an fp32 journal;
# fp32 runs keep the identity they had before precision existed.
h5dump -a features "$T/int8.h5" | grep -q 'precision\\*":\\*"int8' ||
    fail "precision not in the int8 run's identity"
! h5dump -a features "$T/fp32.h5" | grep -q precision || fail "precision in an fp32 identity"
if "$WISP" classify $A -o "$T/x.h5" --compare-fp32 3 "$T/data/all.csv" 2>"$T/err"; then
    fail "--compare-fp32 without int8 accepted"
fi
grep -q "compare-fp32" "$T/err" || fail "refusal does not name the option"
if "$WISP" classify $A -o "$T/x.h5" --precision bf16 "$T/data/all.csv" 2>/dev/null; then
    fail "--precision bf16 accepted"
fi
sed 's/"int8"/"int4"/' "$T/job.json" >"$T/bad.json"
if timeout 60 "$WISP" run "$T/bad.json" -np 1 --no-progress >/dev/null 2>"$T/err"; then
    fail "classify.precision int4 accepted"
fi
grep -q "classify.precision" "$T/err" || fail "bad precision not named: $(tail -3 "$T/err")"
echo "ok: int8 classify with --compare-fp32 ($(cat "$T/out" | sed 's/.*agreement //')), distributed int8 equals local"
