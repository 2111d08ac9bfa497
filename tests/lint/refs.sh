#!/bin/sh
# Every file a source, script or doc names must be in this repository: comments cite
# docs/NUMERICS.md, docs/ARCHITECTURE.md ... and never a file that lives elsewhere.
# A name with a folder must exist at that path (from the root, the naming file's folder,
# or common/ and jobs/ as the include paths see it); a bare name must exist somewhere in
# the tree. Globs, templates and shell variables (cmd_<name>.c, test_*.c, $d.md), one-letter
# names (struct members such as c.h) and angle-bracket includes are not file references.
# EXTERNAL lists the reference implementations' files that comments
# may name as the behaviour matched (they are other projects' files, not ours).
cd "$(dirname "$0")/../.." || exit 2
EXTERNAL="audio.py modeling_whisper.py feature_extraction_whisper.py adapter_config.py llm.c"
tree=$(mktemp)
trap 'rm -f "$tree"' EXIT
find . -path ./build -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||' >"$tree"
bad=0
for f in $(grep -E '\.(c|h|py|sh|inc|md)$|(^|/)Makefile$|\.clang-format$' "$tree"); do
    dir=$(dirname "$f")
    refs=$(grep -v '^[[:space:]]*#[[:space:]]*include[[:space:]]*<' "$f" |
        grep -oE '[][A-Za-z0-9_./*<>{}$%-]*[A-Za-z0-9_]\.(md|c|h|py|sh|inc)\b' | sort -u)
    for r in $refs; do
        r=${r#./}
        case "$r" in *[][*%\<\>{}\$]*) continue ;; esac
        b=$(basename "$r")
        [ ${#b} -le 4 ] && case "$b" in ?.?|?.??|?.???) continue ;; esac
        case " $EXTERNAL " in *" $(basename "$r") "*) continue ;; esac
        case "$r" in
        */*)
            for p in "$r" "$dir/$r" "common/$r" "jobs/$r"; do
                [ -f "$p" ] && continue 2
            done ;;
        *)
            grep -qE "(^|/)$(printf '%s' "$r" | sed 's/\./\\./g')\$" "$tree" && continue ;;
        esac
        echo "refs: $f names $r, which is not in the repository"
        bad=1
    done
done
[ $bad = 0 ] && echo "refs: every file named in sources and docs is in the repository"
exit $bad
