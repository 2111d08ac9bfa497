#!/bin/sh
# Runs every cmocka test binary, the source checks in tests/lint/, then every
# integration script, and closes with one line "N passed, N failed" (cmocka tests
# counted individually, each script as one test). Exit status is non-zero when anything failed.
BUILD=${BUILD:-build}
# Sanitizer runs: Open MPI and OpenBLAS keep process-lifetime allocations.
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# (no ASAN_OPTIONS here: leak detection is on by default, and wisp-worker turns it
# off for itself through __asan_default_options because Open MPI never frees its state)
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
. configs/local_mpi_env.sh
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
passed=0
failed=0
failed_names=""
log=$(mktemp)
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    if "$t" >"$log" 2>&1; then status=0; else status=$?; fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed before cmocka's summary
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        failed_names="$failed_names $name"
        echo "---- $name (exit $status)"; cat "$log"
    else
        echo "ok   $name ($p tests)"
    fi
done
# Source checks (layering, comment references, function length): each script one test.
for s in tests/lint/*.sh; do
    [ -f "$s" ] || continue
    name=lint_$(basename "$s" .sh)
    if sh "$s" >"$log" 2>&1; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); failed_names="$failed_names $name"
        echo "---- $name"; cat "$log"
    fi
done
if [ -z "$WISP_SKIP_INTEGRATION" ]; then
    for s in tests/integration/*.sh; do
        [ -f "$s" ] || continue
        name=$(basename "$s" .sh)
        start=$(date +%s)
        if BUILD="$BUILD" sh "$s" >"$log" 2>&1; then
            passed=$((passed + 1)); echo "ok   $name ($(( $(date +%s) - start )) s)"
        else
            failed=$((failed + 1)); failed_names="$failed_names $name"
            echo "---- $name"; tail -n 60 "$log"
        fi
    done
fi
rm -f "$log"
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
