#!/bin/sh
# The fault campaign's fixed-seed short run (tests/fault/campaign.py; the long one is
# `make fault-long`, figures in docs/TESTING.md "Fault campaign"): random faults at
# random moments of classify and train runs (mpirun -np 2 + coordinator, tiny model),
# each resumed and compared with an uninterrupted run (rows bitwise equal and exactly
# once; adapter and head bitwise; metrics.jsonl complete; no hang).
# Only the kinds that pass on main run here; the campaign's table in docs/TESTING.md
# lists the kinds that failed and why. Every kind passes on main now; the train kinds
# here are those that exercise the fixes (metrics exactly once across a coordinator
# kill and a SIGTERM, a world that fails as a whole on a read-only disk).
set -e
BUILD=${BUILD:-build}
KINDS_CLASSIFY=${FAULT_KINDS_CLASSIFY:-kill9_worker,kill9_mpirun,kill9_coord,kill9_coord_twice,kill9_all,stop_worker,sigterm,sigint_group,journal_truncate,journal_corrupt,disk_full,disk_ro}
KINDS_TRAIN=${FAULT_KINDS_TRAIN:-kill9_worker,kill9_coord,sigterm,disk_ro}
exec timeout 900 /usr/bin/python3 "$(dirname "$0")/../fault/campaign.py" --build "$BUILD" \
    --seed "${FAULT_SEED:-11}" --runs-classify "${FAULT_RUNS_CLASSIFY:-12}" --runs-train "${FAULT_RUNS_TRAIN:-4}" \
    --kinds-classify "$KINDS_CLASSIFY" --kinds-train "$KINDS_TRAIN"
