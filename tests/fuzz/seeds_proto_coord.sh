#!/bin/sh
# Seeds of fuzz_proto_coord: scripts (tests/fuzz/fuzz_proto_frames.h) of a whole map
# job and of a training world, as honest workers would play them.
set -e
out=$1
. "$(dirname "$0")/seeds_proto_lib.inc"
# map job (first byte even): two workers join, answer their shards, one falls silent
{
    b 0
    b 2 0 0 1 0 5; b 2 1 0 1 0 6
    i=0; while [ $i -lt 6 ]; do b 4 0 0 4 1 0; i=$((i+1)); done
    built 1 2 1 0 0 0 0
    b 3 30
    i=0; while [ $i -lt 4 ]; do b 4 0 0; i=$((i+1)); done
    built 0 3 0 0 0 0 0
} >"$out/map"
# step job (first byte odd): a 2-rank world reports READY, runs its steps, rank 1 dies
{
    b 1
    b 2 0 0 2 1 5; b 2 1 1 2 1 6
    built 0 4 0 0 0 0 256 0 0 0 0 0 0 0 0
    built 1 4 1 0 0 0 256 0 0 0 0 0 0 0 0
    i=0; while [ $i -lt 4 ]; do b 4 1 0 4 0 0; i=$((i+1)); done
    b 3 30
    b 2 2 0 2 2 7; b 2 3 1 2 2 8
    built 2 4 2 0 0 0 256; built 3 4 3 0 0 0 256
    b 4 2 0 4 2 0
} >"$out/steps"
