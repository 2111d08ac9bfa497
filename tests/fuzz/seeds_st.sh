#!/bin/sh
# Seeds of fuzz_st: the committed safetensors fixtures (F32 parameter and gradient
# files, a few KB each).
set -e
out=$1
cp tests/data/train/*.safetensors "$out"/
for f in tests/data/model/seq_bn_ws1_pad_b2.grads.safetensors \
         tests/data/model/lora_all_ws1_pad_b2.grads.safetensors; do
    cp "$f" "$out"/
done
