#!/bin/sh
# The documentation's examples, run for real (in a temporary directory, tiny sizes):
#  1. the README quick start's fast commands and every command's --help (usage line, 2+ examples);
#  2. every shell block of docs/*.md marked with a preceding `<!-- test -->` line, in
#     the order QUICKSTART, OUTPUT, FORMATS, CLUSTER, TROUBLESHOOTING, CONFIG (later
#     blocks use the files earlier ones made), each under `sh -e`;
#  3. the outputs have the documented shape: every dataset row of the classify and
#     features tables in docs/OUTPUT.md (dtype and shape, checked with h5dump) and every
#     attribute of the classify attribute table; the training directory layout;
#  4. the docs invent nothing: every job config key in docs/CONFIG.md is accepted
#     (wisp-coordinator --keys) and every key is documented; every `--option` written
#     after `wisp CMD` anywhere in the docs appears in that command's --help.
# Needs hdf5-tools (h5dump, h5ls) and mpirun; no Python.
set -u
BUILD=${BUILD:-build}
root=$(pwd)
bin=$(cd "$BUILD/bin" && pwd) || { echo "docs_examples: no $BUILD/bin"; exit 1; }
docs="$root/docs"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "docs_examples: FAIL: $*"; exit 1; }
PATH="$bin:$PATH"
export PATH
for t in h5dump h5ls mpirun timeout; do
    command -v "$t" >/dev/null 2>&1 || fail "$t not found (hdf5-tools, openmpi-bin, coreutils)"
done
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_plm_rsh_agent= OMPI_MCA_mpi_yield_when_idle=1
export OPENBLAS_NUM_THREADS=1
# Sanitizer builds (make asan): Open MPI's allocations at MPI_Finalize cannot be
# suppressed, and mpirun-launched workers inherit this environment; memory errors still
# abort, leak checks of wisp's own code belong to the unit tests.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}detect_leaks=0"

# ---- 1. --help of everything ---------------------------------------------------------
mkdir "$tmp/help"
wisp --help >"$tmp/help/wisp" 2>&1 || fail "wisp --help exit status"
cmds=$(awk '/^commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on = 0}' "$tmp/help/wisp")
[ -n "$cmds" ] || fail "wisp --help lists no commands"
for c in $cmds; do
    wisp "$c" --help >"$tmp/help/$c" 2>&1 || fail "wisp $c --help exit status"
    grep -q "usage" "$tmp/help/$c" || fail "wisp $c --help has no usage line"
    grep -q "^examples:" "$tmp/help/$c" || fail "wisp $c --help shows no examples"
done
wisp-coordinator --help >"$tmp/help/wisp-coordinator" 2>&1 || fail "wisp-coordinator --help"
wisp-worker --help >"$tmp/help/wisp-worker" 2>&1 || fail "wisp-worker --help"
# Every --help shows two or more example command lines.
for h in $cmds wisp-coordinator wisp-worker; do
    grep -q "^examples:" "$tmp/help/$h" || fail "$h --help shows no examples"
    n=$(awk '/^examples:/ {on = 1; next} on && /^  [a-z]/ {n++} END {print n + 0}' "$tmp/help/$h")
    [ "$n" -ge 2 ] || fail "$h --help shows $n examples, want 2 or more"
done
wisp no-such-command >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown command should exit 2"

# ---- 2. the marked blocks ----------------------------------------------------------------
# Prints the blocks of a file, each followed by a line "#@@END".
s_blocks() {
    awk '/^<!-- test -->[ \t]*$/ {want = 1; next}
         want && /^```/ {inb = 1; want = 0; next}
         inb && /^```/ {inb = 0; print "#@@END"; next}
         inb {print}
         !inb && !/^[ \t]*$/ {want = 0}' "$1"
}
work="$tmp/work"
mkdir "$work"
nblocks=0
for d in QUICKSTART OUTPUT FORMATS CLUSTER TROUBLESHOOTING CONFIG; do
    f="$docs/$d.md"
    [ -f "$f" ] || fail "missing $f"
    s_blocks "$f" >"$tmp/blocks"
    i=0
    : >"$tmp/block.sh"
    while IFS= read -r line; do
        if [ "$line" = "#@@END" ]; then
            i=$((i + 1))
            nblocks=$((nblocks + 1))
            t0=$(date +%s)
            # timeout makes its own process group: on expiry, or afterwards for
            # anything a failed block left in the background, the group is killed.
            (cd "$work" && exec timeout 180 sh -e "$tmp/block.sh") >"$tmp/block.out" 2>&1 &
            tpid=$!
            wait "$tpid"
            brc=$?
            kill -KILL -- "-$tpid" 2>/dev/null
            if [ "$brc" -ne 0 ]; then
                echo "---- block $i of docs/$d.md:"; cat "$tmp/block.sh"
                echo "---- its output:"; tail -n 40 "$tmp/block.out"
                fail "docs/$d.md block $i"
            fi
            echo "docs_examples: docs/$d.md block $i: $(($(date +%s) - t0)) s"
            : >"$tmp/block.sh"
        else
            printf '%s\n' "$line" >>"$tmp/block.sh"
        fi
    done <"$tmp/blocks"
    echo "docs_examples: docs/$d.md: $i blocks ran"
done
[ "$nblocks" -ge 8 ] || fail "only $nblocks marked blocks found"

# The README's own examples (its placeholders replaced by real files).
cd "$work" || exit 1
a=$(find data -name '*.flac' | head -n 1)
b=$(find data -name '*.wav' | head -n 1)
[ -n "$a" ] && [ -n "$b" ] || fail "synth made no .flac/.wav to run the README example on"
cp "$a" a.flac && cp "$b" b.wav
"$bin/wisp" features -o readme_feats.h5 a.flac b.wav >/dev/null 2>&1 || fail "README: wisp features"
"$bin/wisp" inspect model >/dev/null 2>&1 || fail "README: wisp inspect on an init-model output"

# ---- 3. documented shapes --------------------------------------------------------------
# h5dump type name of a documented dtype.
s_h5type() {
    case "$1" in
    string*) echo H5T_STRING ;;
    int8) echo H5T_STD_I8LE ;;
    int32) echo H5T_STD_I32LE ;;
    int64) echo H5T_STD_I64LE ;;
    float32) echo H5T_IEEE_F32LE ;;
    float64) echo H5T_IEEE_F64LE ;;
    *) echo "?$1" ;;
    esac
}
# Rows "name|dtype|shape" of the markdown table that follows the line matching $2.
s_table() {
    awk -v start="$2" 'index($0, start) == 1 {on = 1; next}
        on && /^\|/ {n++; if (n > 2) {split($0, c, "|"); print c[2] "|" c[3] "|" c[4]}; next}
        on && n > 0 {exit}' "$1" | tr -d '`' | sed 's/ *| */|/g; s/^ *//; s/ *$//'
}
# Checks FILE's datasets against the table after heading $2 of OUTPUT.md, with the
# symbols N C P M F given as "N=5 C=3 ...". Datasets in $4 may be absent.
s_check_datasets() {
    file=$1 heading=$2 syms=$3 optional=$4
    s_table "$docs/OUTPUT.md" "$heading" >"$tmp/rows"
    [ -s "$tmp/rows" ] || fail "no dataset table after '$heading' in OUTPUT.md"
    while IFS='|' read -r name dtype shape; do
        if ! h5dump -H -d "$name" "$file" >"$tmp/h" 2>/dev/null; then
            case " $optional " in *" $name "*) continue ;; esac
            fail "$file: documented dataset '$name' is missing"
        fi
        want_t=$(s_h5type "$dtype")
        grep -q "DATATYPE *$want_t" "$tmp/h" || fail "$file:$name: want $dtype ($want_t), got $(grep DATATYPE "$tmp/h")"
        want_s=$(echo "$shape" | tr -d '[] ' | tr ',' ' ')
        dims=""
        for sym in $want_s; do
            v=$(echo " $syms " | sed -n "s/.* $sym=\([0-9]*\) .*/\1/p")
            [ -n "$v" ] || v=$sym
            dims="$dims${dims:+, }$v"
        done
        grep -q "DATASPACE *SIMPLE { ( $dims ) /" "$tmp/h" ||
            fail "$file:$name: want shape ($dims), got $(grep DATASPACE "$tmp/h")"
    done <"$tmp/rows"
}
N=$(($(wc -l <data/test.csv) - 1))
P=$(sed -n 's/.*"classifier_proj_size": *\([0-9]*\).*/\1/p' run/head/head_config.json)
C=$(sed -n 's/.*"num_labels": *\([0-9]*\).*/\1/p' run/head/head_config.json)
[ "$N" -gt 0 ] && [ -n "$P" ] && [ "$C" = 3 ] || fail "unexpected N=$N P=$P C=$C"
s_check_datasets labels.h5 "## Classify results" "N=$N C=$C P=$P" ""
s_check_datasets dist_labels.h5 "## Classify results" "N=$N C=$C P=$P" "embedding"
h5dump -H -d embedding dist_labels.h5 >/dev/null 2>&1 && fail "dist_labels.h5 has embeddings it was not asked for"
s_check_datasets feats.h5 "## Features" "N=2 M=80 F=3000" ""
# Error rows as documented: classify -6 / label -1 / duration -1 / NaN score; features +6.
"$bin/wisp" classify --model model --adapter run/adapter --head run/head --truncate -o bad.h5 nothere.wav >/dev/null 2>&1
[ $? -eq 1 ] || fail "classify of a missing file should exit 1"
for kv in status:-6 label:-1 duration:-1 score:nan; do
    h5dump -d "${kv%%:*}" bad.h5 | tr -d ' \n' | grep -qi "DATA{(0):${kv#*:}}" || fail "bad.h5: ${kv%%:*} is not ${kv#*:}"
done
"$bin/wisp" features -q -o badf.h5 nothere.wav >/dev/null 2>&1
[ $? -eq 1 ] || fail "features of a missing file should exit 1"
h5dump -d status badf.h5 | tr -d ' \n' | grep -q 'DATA{(0):-6}' || fail "badf.h5: features status is not -6"
grep -q '"connections_refused":[1-9]' curve_summary.json || fail "the CURVE example refused no intruder"
s_check_datasets curve_labels.h5 "## Classify results" "N=$N C=$C P=$P" "embedding"
h5dump -d num_frames feats.h5 | tr -d ' \n' | grep -q 'DATA{(0):3000,3000}' || fail "feats.h5: padded num_frames should be 3000"

# Attributes of the classify table: names in the first column, types in the second.
# (the attribute table has no heading line of its own: found by its header row)
awk '/^\| attribute \| type \| content \|/ {on = 1; next}
     on && /^\|/ {n++; if (n > 1) {split($0, c, "|"); print c[2] "|" c[3]}; next}
     on {exit}' "$docs/OUTPUT.md" | tr -d '`' | sed 's/ *| */|/g; s/^ *//; s/ *$//' >"$tmp/attrs"
[ -s "$tmp/attrs" ] || fail "no attribute table in OUTPUT.md"
nattr=0
while IFS='|' read -r names types; do
    names=$(echo "$names" | tr -d ' ' | tr ',' ' ')
    types=$(echo "$types" | tr -d ' ' | tr ',' ' ')
    set -- $types
    for a in $names; do
        t=$1
        [ $# -gt 1 ] && shift
        want_t=$(s_h5type "$t")
        h5dump -H -a "$a" labels.h5 >"$tmp/h" 2>/dev/null || fail "labels.h5: documented attribute '$a' is missing"
        grep -q "DATATYPE *$want_t" "$tmp/h" || fail "labels.h5 attribute $a: want $t, got $(grep DATATYPE "$tmp/h")"
        nattr=$((nattr + 1))
    done
done <"$tmp/attrs"
[ "$nattr" -ge 15 ] || fail "only $nattr attributes checked"

# Training directories (local and distributed).
for r in run dist_run; do
    for f in adapter/adapter_config.json adapter/adapter.safetensors head/head_config.json \
        head/model_head.safetensors metrics.jsonl checkpoints/LATEST; do
        [ -s "$r/$f" ] || fail "$r/$f missing"
    done
    latest=$(cat "$r/checkpoints/LATEST")
    for f in params.safetensors adamw.safetensors state.json adapter/adapter.safetensors \
        head/model_head.safetensors; do
        [ -s "$r/checkpoints/$latest/$f" ] || fail "$r/checkpoints/$latest/$f missing"
    done
    grep -q '"format":[[:space:]]*"wisp-checkpoint"' "$r/checkpoints/$latest/state.json" || fail "$r: state.json format"
    for k in '"type":"step"' '"loss":' '"lr":' '"acc":' '"clips_per_s":' '"grad_norm":' '"clips":' '"failed":'; do
        grep '"type":"step"' "$r/metrics.jsonl" | head -n 1 | grep -q "$k" || fail "$r/metrics.jsonl step line lacks $k"
    done
    for k in '"val_loss":' '"val_acc":'; do
        grep -q "$k" "$r/metrics.jsonl" || fail "$r/metrics.jsonl has no eval line with $k"
    done
    for k in '"config"' '"hidden_size"' '"model_class": "WhisperForAudioClassification"' '"model_type": "whisper"' '"name"' '"version"'; do
        grep -q "$k" "$r/adapter/adapter_config.json" || fail "$r adapter_config.json lacks $k"
    done
    for k in num_labels id2label label2id classifier_proj_size use_weighted_layer_sum num_hidden_layers d_model; do
        grep -q "\"$k\"" "$r/head/head_config.json" || fail "$r head_config.json lacks $k"
    done
done

# ---- 4. nothing invented -------------------------------------------------------------
wisp-coordinator --keys >"$tmp/keys" 2>&1 || fail "wisp-coordinator --keys"
while read -r k; do
    grep -q "\`$k\`" "$docs/CONFIG.md" || fail "config key $k is not documented in CONFIG.md"
done <"$tmp/keys"
grep -o '^| `[a-z_.]*`' "$docs/CONFIG.md" | tr -d '|` ' | while read -r k; do
    grep -qx "$k" "$tmp/keys" || { echo "docs_examples: FAIL: CONFIG.md documents unknown key $k"; exit 1; }
done || exit 1

# "cmd option" for every --option written after `wisp CMD` (or wisp-coordinator /
# wisp-worker) in a code span or a code line of the docs.
for f in "$docs"/*.md "$root/README.md"; do
    awk '
    function scan(s,   n, w, i, cmd) {
        n = split(s, w, /[ \t]+/)
        cmd = ""
        for (i = 1; i <= n; i++) {
            if (w[i] ~ /^(\||&&|;|>|>>|2>|\(|#)$/) { cmd = ""; continue }
            if (w[i] ~ /(^|\/)wisp$/) {
                if (i < n && w[i + 1] ~ /^[a-z]/) { cmd = w[i + 1]; i++ } else cmd = "wisp"
                continue
            }
            if (w[i] ~ /(^|\/)wisp-(coordinator|worker)$/) { sub(/.*\//, "", w[i]); cmd = w[i]; continue }
            if (cmd != "" && w[i] ~ /^\[?\(?--[a-z]/) {
                o = w[i]; gsub(/^[\[\(]+/, "", o); sub(/[=\]\)|,.`].*$/, "", o)
                print cmd, o
            }
        }
    }
    function para(s,   n, p, i) {
        n = split(s, p, "`")
        for (i = 2; i <= n; i += 2) scan(p[i])
    }
    /^```/ { if (infence) infence = 0; else { para(buf); buf = ""; infence = 1 }; next }
    infence { line = line " " $0; if ($0 ~ /\\$/) next; gsub(/\\/, " ", line); scan(line); line = ""; next }
    /^[ \t]*$/ { para(buf); buf = ""; next }
    { buf = buf " " $0 }
    END { para(buf) }' "$f"
done >"$tmp/opts.all"
# CONFIG.md's per-command sections ("### `wisp CMD ...`"): every --option in them.
awk '/^### / {
         cmd = ""
         if (!/^### `/) next
         if (match($0, /wisp-(coordinator|worker)/)) cmd = substr($0, RSTART, RLENGTH)
         else if (match($0, /wisp [a-z-]+/)) cmd = substr($0, RSTART + 5, RLENGTH - 5)
         next }
     /^## / { cmd = "" }
     cmd != "" && !/^- / {
         s = $0
         gsub(/`[^`]*wisp[^`]*`/, "", s)    # spans naming a command: checked above
         while (match(s, /--[a-z][a-z-]*/)) { print cmd, substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH) }
     }' "$docs/CONFIG.md" >>"$tmp/opts.all"
sort -u "$tmp/opts.all" >"$tmp/opts"
[ "$(wc -l <"$tmp/opts")" -ge 30 ] || fail "too few documented options found ($(wc -l <"$tmp/opts"))"
while read -r cmd opt; do
    [ -f "$tmp/help/$cmd" ] || fail "docs use an unknown command: wisp $cmd $opt"
    grep -q -- "$opt\\b" "$tmp/help/$cmd" || fail "docs use '$cmd $opt' but the --help of $cmd has no $opt"
done <"$tmp/opts"
echo "docs_examples: ok ($nblocks blocks, $nattr attributes, $(wc -l <"$tmp/opts") documented options checked)"
