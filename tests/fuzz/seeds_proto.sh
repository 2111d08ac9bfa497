#!/bin/sh
# Seeds of fuzz_proto: one frame of every message type as wisp writes it.
set -e
out=$1
. "$(dirname "$0")/seeds_proto_lib.inc"
# HELLO: rank 1 of 2, pid 4242, world 7, host "node1" (28 + 5 bytes)
{ hdr 1 -1 0 0 0 0 33; u32 1; u32 2; u64 4242; u64 7; u32 5; printf 'node1'; } >"$out/hello"
# RESULT of shard 3 (items 30..39): 6 stage timings (0.5 s first), then 4 job bytes
{ hdr 2 0 10 3 30 0 56; u32 6; b 0 0 0 0 0 0 224 63; i=1; while [ $i -lt 6 ]; do u64 0; i=$((i+1)); done; u32 9; } >"$out/result"
hdr 3 0 0 0 0 5 0 >"$out/heartbeat"
hdr 4 0 0 0 0 0 0 >"$out/bye"
{ hdr 5 0 0 4 0 256 8; u64 12; } >"$out/step_done"
{ hdr 16 3 0 0 0 0 2; printf '{}'; } >"$out/welcome"
{ hdr 17 3 10 3 30 0 12; u32 2; u32 0; u32 0; } >"$out/shard"
hdr 18 3 0 0 0 2 0 >"$out/stop"
{ hdr 19 3 0 9 0 1 4; u32 0; } >"$out/step"
