#!/bin/sh
# Seeds of fuzz_ckpt_state: a state.json as wisp_ckpt_save writes it.
set -e
out=$1
printf '%s' '{"format": "wisp-checkpoint", "version": 1, "step": 40, "epoch": 2, "pos": 8,
 "data_seed": "00000000000004d2", "rng_state": "9e3779b97f4a7c15", "optimizer_steps": 40,
 "num_params": 12345, "fingerprint": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}' \
    >"$out"/state.json
