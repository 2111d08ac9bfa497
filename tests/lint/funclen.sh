#!/bin/sh
# Fails when a function outside tests/ is longer than 120 lines (house rule: a long
# function is cut along its own sections). Functions are found by the house format:
# the opening brace of a function body is a lone '{' in column 0 and its closing brace
# a lone '}' in column 0. The name is the identifier before the '(' on the lines above.
# Usage: tests/lint/funclen.sh [root]   (prints "file:line name length" per offender)
root=${1:-.}
limit=120
# Functions still waiting for their cut; each entry is removed when its function is cut,
# and an entry whose function is already short fails the check (the list only shrinks).
allow=""
cd "$root" || exit 2
out=$(find common jobs coordinator worker bench -name '*.c' 2>/dev/null | sort | while read -r f; do
    awk -v f="$f" -v limit="$limit" '
        /^\{[ \t]*$/ { start = FNR; name = sig; next }
        /^\}/ && start { n = FNR - start - 1
                         if (n > limit) printf "%s:%d %s %d\n", f, start, name, n
                         start = 0; next }
        !start && /^[A-Za-z_]/ && /\(/ { s = $0; sub(/\(.*/, "", s); k = split(s, w, /[ \t*]+/)
                                          sig = w[k] }
    ' "$f"
done)
bad=$(echo "$out" | awk -v allow="$allow" 'BEGIN { n = split(allow, a, /[ \n]+/)
        for (i = 1; i <= n; i++) if (a[i] != "") ok[a[i]] = 1 }
    $0 != "" { if (!($2 in ok)) print; seen[$2] = 1 }
    END { for (k in ok) if (!(k in seen)) print "allow-list entry " k " is no longer long: remove it" }')
out=$bad
if [ -n "$out" ]; then
    echo "functions over $limit lines (cut them along their sections):"
    echo "$out"
    exit 1
fi
echo "funclen: no function over $limit lines except the allow-list:" $allow
