#!/bin/sh
# Runs the libFuzzer harnesses built by `make fuzz` (FUZZ_BUILD/bin/fuzz_<name>), each
# for FUZZ_SECONDS on its corpus FUZZ_BUILD/corpus/<name>, seeded from what
# tests/fuzz/seeds_<name>.sh writes into FUZZ_BUILD/seeds/<name> (regenerated when the
# script is newer). FUZZ_TARGETS="st json" limits the run to those names. A harness
# may set its own input size with a line "FUZZ_MAX_LEN: N" in its source (default
# 65536). Ends with one line per target (executions, corpus size) and a total; exit
# status 1 when any target found a crash, leak, timeout (10 s) or OOM (2 GB): the
# input is kept as FUZZ_BUILD/artifacts/<name>-crash-... (rerun: BIN ARTIFACT).
BUILD=${BUILD:-build}
FUZZ_BUILD=${FUZZ_BUILD:-build/fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
mkdir -p "$FUZZ_BUILD/artifacts" "$FUZZ_BUILD/logs"
# (tests/fuzz/lsan.supp: the third-party decoder leaks, on top of tests/lsan.supp)
cat tests/lsan.supp tests/fuzz/lsan.supp >"$FUZZ_BUILD/lsan.supp"
export LSAN_OPTIONS="suppressions=$(pwd)/$FUZZ_BUILD/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# as tests/run.sh: no OpenBLAS thread pool spinning next to single-threaded harnesses
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
failed=""
summary=""
for bin in "$FUZZ_BUILD"/bin/fuzz_*; do
    [ -x "$bin" ] || continue
    name=${bin##*/fuzz_}
    if [ -n "$FUZZ_TARGETS" ]; then
        case " $FUZZ_TARGETS " in *" $name "*) ;; *) continue ;; esac
    fi
    seeds="$FUZZ_BUILD/seeds/$name"
    script="tests/fuzz/seeds_$name.sh"
    if [ -f "$script" ] && { [ ! -d "$seeds" ] || [ "$script" -nt "$seeds" ]; }; then
        rm -rf "$seeds" && mkdir -p "$seeds"
        if ! BUILD="$BUILD" sh "$script" "$seeds"; then
            echo "fuzz: $script failed"; failed="$failed $name"; continue
        fi
    fi
    mkdir -p "$seeds" "$FUZZ_BUILD/corpus/$name"
    max_len=$(sed -n 's/.*FUZZ_MAX_LEN: *\([0-9][0-9]*\).*/\1/p' "tests/fuzz/fuzz_$name.c" | head -n 1)
    log="$FUZZ_BUILD/logs/$name.log"
    "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -max_len="${max_len:-65536}" -print_final_stats=1 \
        -artifact_prefix="$FUZZ_BUILD/artifacts/$name-" \
        "$FUZZ_BUILD/corpus/$name" "$seeds" >"$log" 2>&1
    status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    corpus=$(ls "$FUZZ_BUILD/corpus/$name" | wc -l)
    if [ "$status" -ne 0 ]; then
        failed="$failed $name"
        echo "---- fuzz_$name (exit $status; log $log)"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz invariant|.*runtime error)|Test unit written' "$log" | head -n 20
        line="FAIL fuzz_$name"
    else
        line="ok   fuzz_$name"
    fi
    summary="$summary$(printf '%s %s executions in %s s, corpus %s' "$line" "${execs:-0}" "$FUZZ_SECONDS" "$corpus")
"
done
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzz: findings in:$failed"
    exit 1
fi
echo "fuzz: no findings"
