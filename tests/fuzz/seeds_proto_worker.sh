#!/bin/sh
# Seeds of fuzz_proto_worker: what a coordinator sends a map worker and a training rank.
set -e
out=$1
. "$(dirname "$0")/seeds_proto_lib.inc"
# map: WELCOME (null job), two SHARDs, a heartbeat, STOP done
{
    built 0 6 0 0 0 0 0 0
    built 0 7 0 5 0 0 0
    built 0 7 0 3 1 5 0
    built 0 2 0 0 0 0 0
    built 0 8 0 0 0 0 0
} >"$out/map"
# map, declared dead mid-run: STOP rejoin, a second WELCOME, a SHARD, STOP interrupted
{
    built 0 6 0 0 0 0 0 0
    built 0 7 0 4 0 0 0
    built 0 8 0 0 0 0 2
    built 0 6 1 0 0 0 0 0
    built 0 7 1 4 2 8 0
    built 0 8 1 0 0 0 1
} >"$out/rejoin"
# steps: WELCOME (step job), a checkpointed step, the final step, STOP done
{
    built 0 6 0 0 0 0 0 1
    built 0 9 0 0 0 0 1 1 2 3 4
    built 0 9 0 0 1 0 4
    built 0 8 0 0 0 0 0
} >"$out/steps"
