#!/bin/sh
# Seeds of fuzz_jobcfg: the example job configs, one with a --set after a NUL byte.
set -e
out=$1
cp configs/*.json "$out"/
{ cat configs/local_train.json; printf '\000train.lr=0.01'; } >"$out"/with_set.bin
