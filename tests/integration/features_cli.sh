#!/bin/sh
# `wisp features` through the real binary and dispatcher: a good file (jfk.flac from
# ../shared or $WISP_SHARED, when present) and a missing one in the same run give exit
# status 1, an ok row and a failed row naming the file; usage errors give 2.
set -u
BUILD=${BUILD:-build}
WISP="$BUILD/bin/wisp"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "features_cli: $*"; exit 1; }

"$WISP" features --help | grep -q 'examples:' || fail "--help lacks examples"
"$WISP" features -o "$tmp/x.h5" >/dev/null 2>&1
[ $? -eq 2 ] || fail "no inputs should be a usage error (2)"

jfk="${WISP_SHARED:-../shared}/data/jfk.flac"
inputs="$tmp/missing.wav"
want_status="-6"
if [ -f "$jfk" ]; then
    inputs="$jfk $inputs"
    want_status="0, -6"
else
    echo "features_cli: $jfk not found; checking the failure row only"
fi
# shellcheck disable=SC2086
"$WISP" features -o "$tmp/out.h5" $inputs 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || fail "exit status $rc, want 1 (some inputs failed)"
[ -f "$tmp/out.h5" ] && [ ! -e "$tmp/out.h5.tmp" ] || fail "output not renamed into place"
grep -q "missing.wav: no such file" "$tmp/err" || fail "stderr lacks the error line: $(cat "$tmp/err")"
h5dump -d status "$tmp/out.h5" | tr -d '\n ' | grep -q "DATA{(0):$(echo "$want_status" | tr -d ' ')}" ||
    fail "status column: $(h5dump -d status "$tmp/out.h5")"
h5dump -d error "$tmp/out.h5" | grep -q 'missing.wav: no such file' || fail "error column lacks the reason"
h5dump -a n_mels "$tmp/out.h5" | grep -q '80' || fail "n_mels attribute"
echo "features_cli: ok"
