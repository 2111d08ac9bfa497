#!/bin/sh
# The include layering, enforced (docs/ARCHITECTURE.md):
#   coordinator/ and worker/ include their own folder and common/ only;
#   common/ includes common/ only (never jobs/, coordinator/ or worker/).
# An include is resolved the way the compiler does with -I. -Icommon -Ijobs:
# the including file's folder first, then common/, jobs/ and the root.
cd "$(dirname "$0")/../.." || exit 2
bad=0
for f in $(find common coordinator worker -name '*.[ch]'); do
    dir=$(dirname "$f")
    top=${f%%/*}
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        if [ -f "$dir/$inc" ]; then where="$dir/$inc"
        elif [ -f "common/$inc" ]; then where="common/$inc"
        elif [ -f "jobs/$inc" ]; then where="jobs/$inc"
        elif [ -f "$inc" ]; then where="$inc"
        else echo "layers: $f includes \"$inc\", which is not in the tree"; bad=1; continue
        fi
        wtop=${where%%/*}
        case "$top:$wtop" in
            common:common | coordinator:common | coordinator:coordinator | worker:common | worker:worker) ;;
            *) echo "layers: $f includes $where ($top/ may include common/ only)"; bad=1 ;;
        esac
    done
done
[ $bad = 0 ] && echo "layers: coordinator/, worker/ and common/ include common/ only"
exit $bad
