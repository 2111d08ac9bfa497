#!/bin/sh
# The BLAS kernel decision end to end (common/nn/blas.c): OpenBLAS's bad pick is
# simulated with WISP_BLAS_TEST_PICK=Prescott (the process really loads Prescott first),
# and OPENBLAS_VERBOSE=2 must show the fix: every binary, an `mpirun -np 2` worker and
# the processes `wisp run` starts re-execute once onto the CPU's best core, an explicit
# OPENBLAS_CORETYPE is respected, and kernels that fail verification fall back.
set -e
. "$(dirname "$0")/runnet_lib.inc"
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { case " $flags " in *" $1 "*) return 0 ;; esac; return 1; }
if has avx512f && has avx512bw && has avx512vl && has avx512dq; then want=SkylakeX
elif has avx2 && has fma; then
    if grep -q -m1 -E 'AuthenticAMD|HygonGenuine' /proc/cpuinfo; then want=Zen; else want=Haswell; fi
elif has avx; then want=Sandybridge
else echo "ok: SSE-only CPU, no better core to test"; exit 0
fi
unset OPENBLAS_CORETYPE WISP_BLAS_STAGE
export OPENBLAS_VERBOSE=2
last_core() { grep '^Core:' "$1" | tail -n 1 | sed 's/^Core: //'; }

# 1. wisp: Prescott loaded, then the re-executed image runs the best core, says so once
WISP_BLAS_TEST_PICK=Prescott "$WISP" --version >"$T/out" 2>"$T/err"
[ "$(grep -c '^Core:' "$T/err")" -ge 2 ] || fail "no re-execution: $(cat "$T/err")"
grep '^Core:' "$T/err" | grep -q '^Core: Prescott$' || fail "Prescott never loaded"
[ "$(last_core "$T/err")" = "$want" ] || fail "final core $(last_core "$T/err"), want $want"
[ "$(grep -c "blas: OpenBLAS picked Prescott on an .* CPU; using $want" "$T/err")" = 1 ] ||
    fail "decision not logged once: $(cat "$T/err")"
grep -q "^blas: $want (OpenBLAS picked Prescott" "$T/out" || fail "--version: $(cat "$T/out")"

# 2. no simulation: OpenBLAS's own pick on this CPU is kept or improved, never lowered
"$WISP" --version >"$T/out" 2>"$T/err"
grep -q '^blas: ' "$T/out" || fail "--version has no blas line"

# 3. an explicit value is respected (loaded once, never replaced)
OPENBLAS_CORETYPE=Prescott WISP_BLAS_TEST_PICK=Prescott "$WISP" --version >"$T/out" 2>"$T/err"
[ "$(grep -c '^Core:' "$T/err")" = 1 ] || fail "explicit value re-executed: $(cat "$T/err")"
[ "$(last_core "$T/err")" = Prescott ] || fail "explicit Prescott not used"
grep -q "OPENBLAS_CORETYPE=Prescott respected" "$T/out" || fail "respect not reported"

# 4. kernels that disagree with the loop: back to OpenBLAS's (simulated) choice, a warning
WISP_BLAS_TEST_PICK=Prescott WISP_BLAS_TEST_BREAK=1 "$WISP" --version >"$T/out" 2>"$T/err"
[ "$(last_core "$T/err")" = Prescott ] || fail "no fallback: $(cat "$T/err")"
grep -q " W .*blas: $want kernels disagree" "$T/err" || fail "fallback not warned"
grep -q "failed verification" "$T/out" || fail "fallback not in --version"

# 5. the coordinator and mpirun-launched workers (re-executed before MPI_Init)
WISP_BLAS_TEST_PICK=Prescott "$COORD" --help >/dev/null 2>"$T/err"
[ "$(last_core "$T/err")" = "$want" ] || fail "coordinator final core $(last_core "$T/err")"
WISP_BLAS_TEST_PICK=Prescott timeout 60 mpirun -np 2 "$WORKER" --help >/dev/null 2>"$T/err" ||
    fail "mpirun -np 2 wisp-worker: $(tail -5 "$T/err")"
for r in 0 1; do
    grep -q "W$r I .*blas: OpenBLAS picked Prescott .*; using $want" "$T/err" ||
        fail "rank $r not re-executed: $(cat "$T/err")"
done
# Each rank loads OpenBLAS's own pick, the simulated Prescott, then $want; the lines of
# the two ranks interleave, and the own pick may itself be $want (Zen on a Zen CPU), so
# count: Prescott exactly once per rank, $want at least once per rank after it.
[ "$(grep -c "^Core: Prescott$" "$T/err")" = 2 ] || fail "worker cores: $(grep '^Core' "$T/err")"
[ "$(grep -c "^Core: $want$" "$T/err")" -ge 2 ] || fail "worker cores: $(grep '^Core' "$T/err")"

# 6. wisp run: the launcher, the coordinator and both ranks each decide for themselves
# (the variables one process set are not inherited as if the user had set them), and
# the run summary names the coordinator's kernels
null_config "$T/job.json" 200 1
WISP_BLAS_TEST_PICK=Prescott timeout 90 "$WISP" run "$T/job.json" -np 2 --no-progress \
    >"$T/stdout" 2>"$T/stderr" || [ $? -eq 1 ] || fail "wisp run: $(tail -20 "$T/stderr")"
for who in L0 C0 W0 W1; do
    grep -q "$who I .*blas: OpenBLAS picked Prescott .*; using $want" "$T/stderr" ||
        fail "$who did not re-execute: $(grep blas "$T/stderr")"
done
! grep -q "respected" "$T/stderr" || fail "a child took the parent's variable for the user's"
grep -q "\"blas\":\"$want (OpenBLAS picked Prescott" "$T/stdout" || fail "summary: $(cat "$T/stdout")"
echo "ok: Prescott -> $want in wisp, coordinator, mpirun ranks and wisp run; explicit kept; fallback"
