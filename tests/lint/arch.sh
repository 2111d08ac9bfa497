#!/bin/sh
# The map matches the tree (docs/ARCHITECTURE.md, README.md's layout section):
#   every module under common/, jobs/, coordinator/ and worker/ (the stem of its .c or
#   .h) is named in docs/ARCHITECTURE.md in backquotes, bare or with its .c / .h;
#   every folder of those trees is in README's layout block, and every folder the block
#   names exists. (Paths the docs name are checked by refs.sh.)
cd "$(dirname "$0")/../.." || exit 2
bad=0
arch=docs/ARCHITECTURE.md
for f in $(find common jobs coordinator worker -name '*.[ch]' | sort); do
    stem=$(basename "$f"); stem=${stem%.*}
    grep -qE "\`($stem|$stem\.c|$stem\.h)\`" "$arch" && continue
    echo "arch: $f: module $stem is not named in $arch"
    bad=1
done
# README's layout block: the fenced block after "## Layout"; a folder is a word ending in /
# at the start of a line (top level) or after two spaces (a subfolder of the last top level).
layout=$(awk '/^## Layout/ { on = 1 } on && /^```/ { n++; next } on && n == 1' README.md)
named=$(printf '%s\n' "$layout" | awk '
    /^[a-z][a-z_]*\// { top = $1; print top; next }
    /^  [a-z][a-z_]*\// { print top $1 }')
[ -n "$named" ] || { echo "arch: README.md has no layout block after '## Layout'"; exit 1; }
for d in $named; do
    [ -d "$d" ] || { echo "arch: README.md's layout names $d, which is not a folder"; bad=1; }
done
for d in $(find common jobs coordinator worker -mindepth 0 -maxdepth 1 -type d | sort); do
    printf '%s\n' $named | grep -qx "$d/" ||
        { echo "arch: folder $d/ is missing from README.md's layout"; bad=1; }
done
[ $bad = 0 ] && echo "arch: every module is in $arch and every folder in README's layout"
exit $bad
