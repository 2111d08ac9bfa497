#!/bin/sh
# make bench: runs every benchmark binary (build/bench/bench_*) and, when
# /usr/bin/python3 has torch, every PyTorch counterpart (bench/*_ref.py), in one
# run on this machine, then writes docs/BENCHMARKS.md from their key=value lines.
# Keys named ref_X are the PyTorch figures for key X; ratios are formed for every
# such pair (speed-up: higher is better for *_per_s / *gflops keys, lower for times).
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
out=$(mktemp)
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
. configs/local_mpi_env.sh
has_torch=0
"$PYTHON" -c "import torch" 2>/dev/null && has_torch=1
[ $has_torch = 1 ] ||
    echo "bench: $PYTHON has no torch (apt-get install python3-torch): PyTorch ratios skipped" >&2
# The front-end pair is short and its two sides run in separate processes: they take
# turns three times and each key keeps its best value, so one noisy stretch of this
# shared machine cannot decide the ratio.
for round in 1 2 3; do
    echo "== bench_features (round $round)" >&2
    "$BUILD"/bench/bench_features | tee -a "$out" >&2
    if [ $has_torch = 1 ]; then
        echo "== bench/features_ref.py (round $round)" >&2
        "$PYTHON" bench/features_ref.py | tee -a "$out" >&2
    fi
done
for b in "$BUILD"/bench/bench_*; do
    [ -x "$b" ] || continue
    [ "$(basename "$b")" = bench_features ] && continue
    echo "== $(basename "$b")" >&2
    "$b" | tee -a "$out" >&2
done
if [ $has_torch = 1 ]; then
    for p in bench/*_ref.py; do
        [ -f "$p" ] || continue
        [ "$p" = bench/features_ref.py ] && continue
        echo "== $p" >&2
        "$PYTHON" "$p" | tee -a "$out" >&2
    done
fi
"$PYTHON" - "$out" <<'PY' || sh -c 'cat "$1"' _ "$out"
import sys, platform, subprocess, datetime
vals = {}
order = []
def better_high(k):
    return k.endswith("per_s") or "gflops" in k or k.endswith("_frac") or k.endswith("rate")
def num(v):
    try:
        return float(v)
    except ValueError:
        return None
for line in open(sys.argv[1]):
    line = line.strip()
    if "=" not in line or line.startswith("#"):
        continue
    toks = [t.split("=", 1) for t in line.split() if "=" in t]
    if len(toks) == 1:
        pairs = [(toks[0][0], num(toks[0][1]))]
    else:
        # one record per line (bench_dispatch, bench_run_classify): its text fields and
        # shard size name the record, e.g. tcp_shard64_items_per_s
        ctx = [v for k, v in toks if num(v) is None and k != "status"]
        ctx += ["shard%s" % v for k, v in toks if k == "shard_size"]
        pairs = [("_".join(ctx + [k]), num(v)) for k, v in toks if num(v) is not None]
    for k, v in pairs:
        if v is None:
            continue
        if k not in vals:
            order.append(k)
            vals[k] = v
        else:  # a repeated measurement (the front-end rounds): keep the best
            bare = k[4:] if k.startswith("ref_") else k
            vals[k] = max(vals[k], v) if better_high(bare) else min(vals[k], v)
cpu = "unknown"
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip(); break
except OSError:
    pass
lines = ["# wisp benchmarks", "",
         "Produced by `make bench` (bench/run.sh) in one run on this machine: %s, %s, %s." % (
             cpu, platform.machine(), datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")),
         "Figures from a single run; PyTorch is Debian's python3-torch on the same machine.", "",
         "## Paired figures (wisp vs PyTorch reference)", "",
         "| metric | wisp | PyTorch | wisp speed-up |", "|---|---|---|---|"]
for k in order:
    if k.startswith("ref_") or "ref_" + k not in vals:
        continue
    a, r = vals[k], vals["ref_" + k]
    sp = (a / r if better_high(k) else r / a) if a > 0 and r > 0 else float("nan")
    lines.append("| %s | %.4g | %.4g | %.2fx |" % (k, a, r, sp))
lines += ["", "## All figures", "", "| metric | value |", "|---|---|"]
for k in order:
    lines.append("| %s | %.6g |" % (k, vals[k]))
try:
    notes = open("docs/BENCHMARKS.notes.md").read()
    lines += ["", notes.strip()]
except OSError:
    pass
open("docs/BENCHMARKS.md", "w").write("\n".join(lines) + "\n")
print("bench: wrote docs/BENCHMARKS.md (%d figures)" % len(order), file=sys.stderr)
PY
rm -f "$out"
