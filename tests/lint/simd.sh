#!/bin/sh
# Fails when the AVX2 clone (target_clones "arch=x86-64-v3") of a vector kernel in
# common/nn/ compares lane by lane with scalar instructions: 16 or more vcomiss/vucomiss
# (one 16-float comparison lowered lane by lane has 16; a scalar max of a row's lanes,
# s_hmax, may compile to one or two at -O1). GCC
# lowers a comparison of two 16-float vectors that way on targets without 512-bit
# compares, which made GELU and the exp of the attention softmax ~5x slower on AVX2
# CPUs; nn/simd.h's s_vlt/s_vgt/s_vne compare 8-float halves instead. Reads the objects
# of the build in $BUILD (default build), so it runs after the build (make unit/test).
# Usage: tests/lint/simd.sh [root]   (prints "object function count" per offender)
root=${1:-.}
build=${BUILD:-build}
# Kernels still comparing whole vectors; an entry is removed when its kernel is fixed, and
# an entry that no longer offends fails the check (the list only shrinks).
allow="s_quantise_rows"
cd "$root" || exit 2
command -v objdump >/dev/null 2>&1 || { echo "objdump (binutils) is needed"; exit 1; }
objs=$(ls "$build"/obj/common/nn/*.o 2>/dev/null)
[ -n "$objs" ] || { echo "no objects under $build/obj/common/nn: build first"; exit 1; }
clones=0
out=""
for o in $objs; do
    r=$(objdump -d --no-show-raw-insn "$o" | awk -v o="$o" '
        /^[0-9a-f]+ <.*>:$/ { name = ($2 ~ /\.arch_x86_64_v3>:$/) ? $2 : ""
                              if (name != "") nclones++ }
        name != "" && /v?u?comiss/ { c[name]++ }
        END { print "clones " nclones + 0
              for (k in c) if (c[k] >= 16) { n = k; gsub(/^<|\.arch_x86_64_v3>:$/, "", n); print o, n, c[k] } }')
    clones=$((clones + $(echo "$r" | sed -n 's/^clones //p')))
    out="$out
$(echo "$r" | grep -v '^clones ')"
done
# the check means something only if the AVX2 clones exist at all
[ "$clones" -gt 0 ] || { echo "no arch_x86_64_v3 clones found in $build/obj/common/nn"; exit 1; }
bad=$(echo "$out" | awk -v allow="$allow" 'BEGIN { n = split(allow, a, /[ \n]+/)
        for (i = 1; i <= n; i++) if (a[i] != "") ok[a[i]] = 1 }
    $0 != "" { if (!($2 in ok)) print; seen[$2] = 1 }
    END { for (k in ok) if (!(k in seen)) print "allow-list entry " k " no longer compares lane by lane: remove it" }')
if [ -n "$bad" ]; then
    echo "AVX2 clones comparing lane by lane (use s_vlt/s_vgt/s_vne of nn/simd.h):"
    echo "$bad"
    exit 1
fi
exit 0
