#!/bin/sh
# The `make demo` script (configs/demo.sh) in a quick variant: 40 clips a class,
# 3 epochs, into a temporary directory. Checks that
#  - it succeeds and prints every section, the summary and where the outputs are;
#  - every output exists with the documented shape: the dataset manifests, the
#    checkpoint (config.json with the demo's init_std), the adapter and head
#    directories, metrics.jsonl (one step line per step, one eval line per epoch),
#    the logs, and test_results.h5 with N = 24 test clips + 4 corrupt files: path,
#    label, score, status, true_label [N], probs and logits [N, 4], embedding
#    [N, 256], classes [4], confusion [4, 4]; the corrupt files are the last 4
#    rows, with status != 0 and an error message naming the file;
#  - the checkpoint's weights really have the config's init_std (conv1.weight's
#    sample standard deviation, read from model.safetensors with od);
#  - the (seeded, deterministic) test accuracy is at least 0.5, twice chance;
#  - a failing step makes the script exit non-zero with a message.
set -e
BUILD=${BUILD:-build}
T=$(mktemp -d /tmp/wisp-demo-XXXXXX)
trap '[ -n "$KEEP" ] || rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

OUT="$T/out"
if ! BUILD="$BUILD" WISP_DEMO_OUT="$OUT" WISP_DEMO_PER_CLASS=40 WISP_DEMO_EPOCHS=3 WISP_DEMO_MIN_ACC=0.5 \
    timeout 240 sh configs/demo.sh >"$T/log" 2>&1; then
    tail -n 40 "$T/log"
    fail "demo.sh failed"
fi
for s in "1/5 synthesize" "2/5 make a small random" "3/5 train a seq_bn adapter + head on 2 worker ranks" \
    "4/5 classify the held-out test set + 4 corrupt files" "5/5 results" "==== summary ====" "where everything is" \
    "wisp demo OK: test accuracy"; do
    grep -q "$s" "$T/log" || fail "no '$s' in the output"
done
grep -q "confusion (rows: true class" "$T/log" || fail "no confusion matrix in the output"
# The plots: written and announced with their paths (gnuplot comes with make deps).
if command -v gnuplot >/dev/null 2>&1; then
    for png in train/training_curves.png test_results_confusion.png; do
        [ -s "$OUT/$png" ] || fail "no $png"
        [ "$(head -c 4 "$OUT/$png" | od -An -c | tr -d ' ')" = "211PNG" ] || fail "$png is not a PNG"
        grep -q "^[a-z ]* $OUT/$png " "$T/log" || fail "the demo does not say where $png is"
    done
else
    grep -q "none: gnuplot is not installed" "$T/log" || fail "no word on the missing plots"
fi

for f in data/train.csv data/val.csv data/test.csv data/classes.txt model/config.json model/model.safetensors \
    train/adapter/adapter_config.json train/adapter/adapter.safetensors train/head/head_config.json \
    train/head/model_head.safetensors train/metrics.jsonl logs/train.log logs/classify.log \
    logs/train_summary.txt logs/classify_summary.txt test_results.h5; do
    [ -s "$OUT/$f" ] || fail "missing or empty: $f"
done
grep -q '"init_std": 0.3' "$OUT/model/config.json" || fail "config.json does not carry the demo's init_std"
grep -q '"use_weighted_layer_sum": true' "$OUT/model/config.json" || fail "config.json: use_weighted_layer_sum"

# tensor_std FILE NAME: sample mean and standard deviation of an F32 tensor.
tensor_std() {
    hlen=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    offs=$(dd if="$1" bs=1 skip=8 count="$hlen" 2>/dev/null |
        sed -n "s/.*\"$2\":{[^}]*\"data_offsets\":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/p")
    [ -n "$offs" ] || fail "$1: no tensor $2"
    set -- "$1" $offs
    od -An -tf4 -v -j $((8 + hlen + $2)) -N $(($3 - $2)) "$1" |
        awk '{ for (i = 1; i <= NF; i++) { s += $i; q += $i * $i; n++ } } END { print s / n, sqrt(q / n - (s / n) ^ 2) }'
}
STD=$(tensor_std "$OUT/model/model.safetensors" 'model\.encoder\.conv1\.weight')
awk -v m="${STD% *}" -v sd="${STD#* }" 'BEGIN { exit !(sd > 0.29 && sd < 0.31 && m > -0.01 && m < 0.01) }' \
    || fail "conv1.weight: mean and std $STD, expected 0 and 0.3 (init_std)"
"$BUILD/bin/wisp" init-model --config configs/demo_model.json --init-std 0.02 -o "$T/m002" >/dev/null ||
    fail "init-model --init-std 0.02"
STD=$(tensor_std "$T/m002/model.safetensors" 'model\.encoder\.conv1\.weight')
awk -v sd="${STD#* }" 'BEGIN { exit !(sd > 0.0193 && sd < 0.0207) }' || fail "--init-std 0.02: std ${STD#* }"
grep -q '"init_std": 0.02' "$T/m002/config.json" || fail "--init-std is not written to config.json"

# 4 x 40 clips: 28 train, 6 val, 6 test a class; 112 / 16 -> 7 steps an epoch.
[ "$(grep -c '"type":"step"' "$OUT/train/metrics.jsonl")" = 21 ] || fail "expected 21 step lines in metrics.jsonl"
[ "$(grep -c '"type":"eval"' "$OUT/train/metrics.jsonl")" = 3 ] || fail "expected 3 eval lines in metrics.jsonl"

NT=$(($(wc -l <"$OUT/data/test.csv") - 1))
[ "$NT" = 24 ] || fail "test.csv has $NT rows, expected 24"
N=$((NT + 4))
h5ls -r "$OUT/test_results.h5" >"$T/h5ls" || fail "h5ls test_results.h5"
for d in "path {$N}" "label {$N}" "score {$N}" "status {$N}" "true_label {$N}" "probs {$N, 4}" \
    "logits {$N, 4}" "embedding {$N, 256}" "classes {4}" "confusion {4, 4}"; do
    name=${d%% *}
    shape=${d#* }
    grep -q "^/$name  *Dataset $shape\$" "$T/h5ls" || fail "/$name is not Dataset $shape: $(grep "^/$name " "$T/h5ls")"
done

h5dump -d /status -y -w 0 "$OUT/test_results.h5" | tr -d ' \n' | grep -q 'DATA{\(0,\)\{24\}-[0-9]*,-[0-9]*,-[0-9]*,-[0-9]*}' \
    || fail "status: expected 24 zeros then 4 errors: $(h5dump -d /status -y -w 0 "$OUT/test_results.h5")"
for bad in bad_000_truncated.flac bad_001_text.wav bad_002_empty.wav bad_003_headeronly.wav; do
    h5dump -d /error -y -w 0 "$OUT/test_results.h5" | grep -q "corrupt/$bad: " || fail "no error row naming $bad"
done
grep -q '"errors":4,' "$OUT/logs/classify_summary.txt" || fail "the classify summary does not count 4 errors"

ACC=$(sed -n 's/.*"accuracy":\([0-9.eE+-]*\).*/\1/p' "$OUT/logs/classify_summary.txt" | head -n 1)
[ -n "$ACC" ] || fail "no accuracy in the classify summary"
awk -v a="$ACC" 'BEGIN { exit !(a >= 0.5) }' || fail "test accuracy $ACC < 0.5"
echo "ok: quick demo: test accuracy $ACC on $NT clips (chance 0.25), 4 corrupt files as error rows, outputs as documented"

# A failing step fails the demo with a message (here: no binaries).
if BUILD="$T/nowhere" WISP_DEMO_OUT="$T/out2" sh configs/demo.sh >"$T/log2" 2>&1; then
    fail "demo.sh without binaries succeeded"
fi
grep -q "wisp demo FAILED: .*not found" "$T/log2" || fail "no failure message: $(cat "$T/log2")"
echo "ok: a failing step stops the demo with a message"
