#!/bin/sh
# make bench: runs every benchmark binary (build/bench/bench_*) and, when
# /usr/bin/python3 has torch and scipy, every PyTorch counterpart (bench/*_ref.py), in
# one run on this machine, then writes docs/BENCHMARKS.md from their key=value lines.
# Keys named ref_X are the PyTorch figures for key X; ratios are formed for every
# such pair (speed-up: higher is better for *_per_s / *gflops keys, lower for times).
#
# Both sides run the same OpenBLAS kernels: the core wisp's start-up picks on this CPU
# (nn/blas.h; `wisp --version`) is forced with OPENBLAS_CORETYPE for every process here,
# wisp's and PyTorch's alike (an OPENBLAS_CORETYPE set by the caller is kept instead).
# Model figures are also given as fractions of this core's fp32 FMA peak (bench_cpu).
# BENCH_ONLY="bench_cpu model_ref" (make bench BENCH_ONLY=...) runs only the named
# binaries and reference scripts (iterating on one benchmark; the page then holds those).
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
out=$(mktemp)
wanted() { [ -z "$BENCH_ONLY" ] && return 0; case " $BENCH_ONLY " in *" $1 "*) return 0 ;; esac; return 1; }
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
. configs/local_mpi_env.sh
# bench/features_ref.py reads Whisper's filterbank from ../shared/data (next to the
# repository); from a git worktree, next to the main checkout
if [ -z "$WISP_SHARED" ] && [ ! -d ../shared ]; then
    common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null)
    [ -n "$common" ] && [ -d "$common/../../shared" ] && export WISP_SHARED="$common/../../shared"
fi
"$BUILD"/bin/wisp --version 2>/dev/null | sed -n 's/^blas: /blas_decision=/p' | tr ' ' '_' >>"$out"
core_note="as wisp chose it"
if [ -z "$OPENBLAS_CORETYPE" ]; then
    core=$("$BUILD"/bin/wisp --version 2>/dev/null | sed -n 's/^blas: \([^ ]*\).*/\1/p')
    [ -n "$core" ] && export OPENBLAS_CORETYPE="$core"
else
    core_note="OPENBLAS_CORETYPE set by the caller"
fi
echo "blas_core_forced=${OPENBLAS_CORETYPE:-none}" >>"$out"
echo "blas_core_note=$(echo "$core_note" | tr ' ' '_')" >>"$out"
has_torch=0
"$PYTHON" -c "import torch, scipy" 2>/dev/null && has_torch=1
[ $has_torch = 1 ] ||
    echo "bench: $PYTHON lacks torch or scipy (make bench installs them as root): PyTorch ratios skipped" >&2
if [ $has_torch = 1 ]; then
    # the OpenBLAS core PyTorch's process loaded (Debian's torch calls libblas.so.3)
    "$PYTHON" - >>"$out" 2>/dev/null <<'PY'
import ctypes, torch
a = torch.ones(64, 64); (a @ a).sum()
libs = [l.split()[-1] for l in open("/proc/self/maps") if "libopenblas" in l]
core = "none"
if libs:
    f = ctypes.CDLL(libs[0]).openblas_get_corename
    f.restype = ctypes.c_char_p
    core = f().decode()
print("ref_blas_core=%s" % core)
PY
fi
# The front-end pair is short and its two sides run in separate processes: they take
# turns three times and each key keeps its best value, so one noisy stretch of this
# shared machine cannot decide the ratio.
for round in 1 2 3; do
    wanted bench_features || wanted features_ref || break
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
    wanted "$(basename "$b")" || continue
    echo "== $(basename "$b")" >&2
    "$b" | tee -a "$out" >&2
done
if [ $has_torch = 1 ]; then
    for p in bench/*_ref.py; do
        [ -f "$p" ] || continue
        [ "$p" = bench/features_ref.py ] && continue
        wanted "$(basename "$p" .py)" || continue
        echo "== $p" >&2
        "$PYTHON" "$p" | tee -a "$out" >&2
    done
fi
"$PYTHON" - "$out" <<'PY' || sh -c 'cat "$1"' _ "$out"
import sys, platform, subprocess, datetime
vals = {}
order = []
texts = {}  # key=word lines (BLAS cores, ISA): the first value of each key
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
        if pairs[0][1] is None:
            texts.setdefault(toks[0][0], toks[0][1].replace("_", " "))
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
fam, mod = vals.get("cpu_family"), vals.get("cpu_model")
cpu_id = "%s (family %d model %d, %s)" % (cpu, fam, mod, texts.get("cpu_isa", "?")) \
    if fam is not None and mod is not None else cpu
lines = ["# wisp benchmarks", "",
         "Produced by `make bench` (bench/run.sh) in one run on this machine: %s, %s, %s." % (
             cpu_id, platform.machine(), datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")),
         "Figures from a single run; PyTorch is Debian's python3-torch on the same machine.", ""]
fma1 = vals.get("fma_peak_gflops_1t")
lines += ["## The machine and the kernels", "",
          "| | |", "|---|---|",
          "| CPU | %s |" % cpu_id,
          "| wisp's BLAS decision (`wisp --version`, no variable set) | %s |" % texts.get("blas_decision", "?"),
          "| OpenBLAS core of every process of this run | %s (%s) |" % (
              texts.get("blas_core_forced", "?"), texts.get("blas_core_note", "")),
          "| OpenBLAS core in wisp's benchmarks / in PyTorch's | %s / %s |" % (
              texts.get("blas_core", "?"), texts.get("ref_blas_core", "not measured")),
          "| fp32 FMA peak, 1 thread (%s, %d chains) | %s GFLOP/s |" % (
              texts.get("fma_isa", "?"), vals.get("fma_chains", 16), "%.1f" % fma1 if fma1 else "?"),
          "| fp32 FMA peak, 2 threads (sum) | %s GFLOP/s |" % (
              "%.1f" % vals["fma_peak_gflops_2t"] if "fma_peak_gflops_2t" in vals else "?"),
          "| OpenBLAS sgemm 2048^3, 1 thread (thread CPU time) | %s GFLOP/s = %s of the FMA peak |" % (
              "%.1f" % vals.get("sgemm_2048_gflops_1t_thread_cpu", float("nan")),
              "%.2f" % (vals["sgemm_2048_gflops_1t_thread_cpu"] / fma1)
              if fma1 and "sgemm_2048_gflops_1t_thread_cpu" in vals else "?"),
          ""]
# Model figures against the FMA peak: one clip (30 s, T = 1500). 1 thread: process CPU
# time (robust on a shared machine); 2 threads: wall time against twice the 1-thread peak.
if fma1:
    lines += ["## Model against the machine", "",
              "One 30 s clip. Fraction = GFLOP of the forward / time / FMA peak. 1 thread: process "
              "CPU time against the 1-thread peak. 2 threads: wisp's process CPU time of both threads "
              "against the 1-thread peak (= the fraction of twice the peak the two threads reach "
              "while they run; this shared machine makes wall time meaningless), PyTorch's wall "
              "time against twice the peak (its OpenMP threads spin, so its CPU time says nothing; "
              "a lower bound), sgemm's wall time against twice the peak (a lower bound). "
              "Training steps: time relative to the forward of the same seq_bn model "
              "(`train_over_forward_*`); PyTorch: its step over its plain forward.", "",
              "| figure | wisp s | wisp frac of peak | PyTorch s | PyTorch frac of peak | sgemm frac of peak |",
              "|---|---|---|---|---|---|"]
    sg = {1: vals.get("sgemm_2048_gflops_1t_cpu"), 2: vals.get("sgemm_2048_gflops_2t")}
    for size in ("tiny", "base"):
        gf = vals.get("forward_%s_gflop" % size)
        if not gf:
            continue
        for th in (1, 2):
            w = vals.get("forward_%s_%dt_cpu_s" % (size, th))
            r = vals.get("ref_forward_%s_%dt%s" % (size, th, "_cpu_s" if th == 1 else "_s"))
            f = lambda t, peak: "%.2f" % (gf / t / peak) if t else "-"
            lines.append("| forward %s %dt | %s | %s | %s | %s | %s |" % (
                size, th, "%.3f" % w if w else "-", f(w, fma1), "%.3f" % r if r else "-",
                f(r, fma1 * th), "%.2f" % (sg[th] / fma1 / th) if sg[th] else "-"))
        for th in (1, 2):
            suf = "_cpu_s" if th == 1 else "_s"
            w = vals.get("train_step_%s_%dt_cpu_s" % (size, th))
            ratio = vals.get("train_over_forward_%s_%dt_cpu" % (size, th))
            r = vals.get("ref_train_step_%s_%dt%s" % (size, th, suf))
            rf = vals.get("ref_forward_%s_%dt%s" % (size, th, suf))
            lines.append("| train step %s %dt | %s | %s x forward | %s | %s x forward | |" % (
                size, th, "%.3f" % w if w else "-", "%.2f" % ratio if ratio else "-",
                "%.3f" % r if r else "-", "%.2f" % (r / rf) if r and rf else "-"))
    if "int8_forward_speedup_base_1t" in vals:
        lines += ["", "int8 frozen linears (`classify.precision: int8`, bench_int8, whisper-base, 1 thread): "
                  "forward of one 30 s clip %.3f s vs fp32 %.3f s (CPU): %.2fx; %d clips of varied "
                  "audio in truncated mode: top-1 agreement with fp32 %.1f%%, logits relative RMS "
                  "%.4f, classify CPU time %.2fx faster. Random weights have no outlier channels: "
                  "check a real checkpoint with `wisp classify --precision int8 --compare-fp32 N`." % (
                      vals["int8_forward_base_1t_cpu_s"], vals["fp32_forward_base_1t_cpu_s"],
                      vals["int8_forward_speedup_base_1t"], vals.get("int8_clips", 0),
                      100 * vals.get("int8_agree_top1_frac", 0), vals.get("int8_logits_rel_rms", 0),
                      vals.get("int8_classify_speedup_trunc", 0))]
    if "demo_ftz_speedup" in vals:
        lines += ["", "Subnormals (the demo's model, `init_std` 0.3, batch of 8 x 1.9 s, 1 thread, "
                  "CPU s): FTZ+DAZ %.4f, without %.4f: %.2fx." % (
                      vals["demo_ftz_batch8_1t_cpu_s"], vals["demo_noftz_batch8_1t_cpu_s"],
                      vals["demo_ftz_speedup"])]
    lines.append("")
# Scale (bench_scale): one row per figure, null job and classify (error rows) side by side
# at 10^6 and 10^7 items with the growth exponent of the total (1 = linear).
scale_rows = [("startup_s", "start-up: spawn to the first shard, s"),
              ("endpoint_s", "start-up: spawn to the endpoint file, s"),
              ("run1_peak_rss_mb", "coordinator peak RSS, first run (killed at ~50%), MB"),
              ("resume_peak_rss_mb", "coordinator peak RSS, resumed run, MB"),
              ("peak_bytes_per_item", "peak RSS per item, B"),
              ("coord_cpu_us_per_item", "coordinator CPU per item, both runs, us"),
              ("output_bytes_per_item", "final output per item, B"),
              ("journal_bytes_per_row", "journal per committed row, B"),
              ("disk_at_kill_mb", "output files on disk at the kill (~50%), MB"),
              ("items_per_s", "dispatch, items/s (resumed run, committed)"),
              ("run1_items_per_s", "dispatch, items/s (first run, workers)"),
              ("resume_endpoint_s", "resume after kill -9 at ~50%: to the endpoint file, s"),
              ("resume_first_shard_s", "resume: to the first new shard, s"),
              ("resume_complete_s", "resume: to completion, s"),
              ("resumed_frac", "resume: fraction kept from the killed run")]
if any(("scale_%s_1e6_startup_s" % k) in vals for k in ("null", "classify")):
    fmt = lambda v: "-" if v is None else "%.0f" % v if abs(v) >= 1000 else "%.4g" % v
    lines += ["## Scale (bench_scale)", "",
              "The real wisp-coordinator process with 2 worker threads over tcp loopback, shards "
              "of 256; kill -9 of the coordinator once half the items have run, then the same "
              "command resumes. classify: manifest paths that do not exist (error rows through "
              "the real results writer). Exponent: log10 of the total's growth from 10^6 to 10^7 "
              "items (1 = linear); marginal: what each item past 10^6 adds (no fixed cost). This shared "
              "machine's load makes the times upper bounds.", "",
              "| figure | null 10^6 | null 10^7 | exp. | classify 10^6 | classify 10^7 | exp. |",
              "|---|---|---|---|---|---|---|"]
    for key, label in scale_rows:
        cells = []
        for kind in ("null", "classify"):
            cells += [fmt(vals.get("scale_%s_1e6_%s" % (kind, key))),
                      fmt(vals.get("scale_%s_1e7_%s" % (kind, key))),
                      fmt(vals.get("scale_growth_%s_%s" % (kind, key)))]
        lines.append("| %s | %s |" % (label, " | ".join(cells)))
    for key, label in (("peak_bytes_per_item", "peak RSS per item, B"),
                       ("coord_cpu_us_per_item", "coordinator CPU per item, us"),
                       ("output_bytes_per_item", "output per item, B")):
        m = [vals.get("scale_marginal_%s_%s" % (k, key)) for k in ("null", "classify")]
        lines.append("| marginal %s (10^6 to 10^7) | | %s | | | %s | |" % (label, fmt(m[0]), fmt(m[1])))
    if "scale_lease_drop_1000_workers_1e6_shards_cpu_s" in vals:
        lines += ["", "Lease table: 1 000 workers dropped over 10^6 shards in %.3g ms CPU "
                  "(%.3g us per worker; each worker keeps the list of its shards)." % (
                      1e3 * vals["scale_lease_drop_1000_workers_1e6_shards_cpu_s"],
                      vals.get("scale_lease_drop_us_per_worker", float("nan")))]
    lines.append("")
lines += ["## Paired figures (wisp vs PyTorch reference)", "",
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
