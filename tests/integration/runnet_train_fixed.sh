#!/bin/sh
# train.fixed_order_reduce: bitwise-identical training across world sizes. A tiny
# random Whisper + seq_bn adapter trained for one epoch with the same config, seed and
# global batch on np=1, np=2 and np=3 (uneven slices of the global batch) must write
# byte-identical adapter and head files (cmp), and the default (MPI_Allreduce) np=2
# run must stay within fp32 tolerance of them; a global batch whose per-item gradients
# would not fit in 2 GiB is refused with an error naming the keys.
set -e
. "$(dirname "$0")/runnet_lib.inc"
cat >"$T/tiny.json" <<JSON
{"model_type": "whisper", "architectures": ["WhisperForAudioClassification"], "d_model": 64,
 "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128, "num_mel_bins": 80,
 "max_source_positions": 1500, "activation_function": "gelu", "classifier_proj_size": 32,
 "num_labels": 4, "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 64}
JSON
"$WISP" init-model --config "$T/tiny.json" -o "$T/model" --seed 3 >/dev/null 2>&1 || fail "init-model"
"$WISP" synth -o "$T/data" --classes 4 --per-class 16 --max-seconds 2 --formats wav -q >/dev/null 2>&1 || fail "synth"
cat >"$T/train.json" <<JSON
{"kind": "train", "model": "model", "adapter_config": "seq_bn", "seed": 42,
 "train_manifest": "data/train.csv", "output": "np1",
 "train": {"epochs": 1, "global_batch": 10, "micro_batch": 4, "truncate": true, "fixed_order_reduce": true},
 "cluster": {"credit": 2, "lease_timeout": 30, "heartbeat": 0.5}}
JSON
run() { # NP OUTDIR [extra --set]
    np=$1; out=$2; shift 2
    t0=$(date +%s.%N)
    timeout 90 "$WISP" run "$T/train.json" -np "$np" --no-progress --set output="$T/$out" "$@" \
        >"$T/$out.out" 2>"$T/$out.err" || { tail -20 "$T/$out.err"; fail "train np=$np -> $out"; }
    grep -q '"status":"complete"' "$T/$out.out" || fail "$out: not complete"
    echo "$out: $(echo "$(date +%s.%N) - $t0" | bc) s"
}
run 1 np1
run 2 np2
run 3 np3
run 2 np2sum --set train.fixed_order_reduce=false
for f in adapter/adapter.safetensors head/model_head.safetensors; do
    cmp "$T/np1/$f" "$T/np2/$f" || fail "$f: np=2 differs from np=1 with fixed_order_reduce"
    cmp "$T/np1/$f" "$T/np3/$f" || fail "$f: np=3 differs from np=1 with fixed_order_reduce"
    d=$(st_maxdiff "$T/np1/$f" "$T/np2sum/$f"); echo "$f fixed vs default np=2: max abs diff $d"
    le "$d" 1e-4 || fail "$f: default reduction differs by $d"
done
# too many per-item gradients for memory: refused up front, naming the keys to change
rc=0
timeout 60 "$WISP" run "$T/train.json" -np 1 --no-progress --set output="$T/big" \
    --set train.global_batch=1000000 --restarts 0 >"$T/big.out" 2>"$T/big.err" || rc=$?
[ "$rc" -ne 0 ] || { tail -5 "$T/big.err"; fail "a 1000000-item fixed-order batch was accepted"; }
grep -q "train.fixed_order_reduce.*GiB per rank.*train.global_batch" "$T/big.err" "$T/big.out" ||
    { tail -5 "$T/big.err"; fail "no clear refusal of the fixed-order memory"; }
echo "ok: np=1, np=2 and np=3 give byte-identical adapter and head with train.fixed_order_reduce"
