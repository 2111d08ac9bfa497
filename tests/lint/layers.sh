#!/bin/sh
# The include layering, enforced (docs/ARCHITECTURE.md):
#   coordinator/ and worker/ include their own folder and common/ only;
#   common/ includes common/ only (never jobs/, coordinator/ or worker/);
#   a job kind (jobs/train, jobs/classify, jobs/null) includes common/ and its own
#   folder only: the kinds do not depend on one another or on the CLI (jobs/cli may
#   include any of them).
# An include is resolved the way the compiler does with -I. -Icommon -Ijobs:
# the including file's folder first, then common/, jobs/ and the root.
cd "$(dirname "$0")/../.." || exit 2
bad=0
for f in $(find common coordinator worker jobs -name '*.[ch]'); do
    dir=$(dirname "$f")
    top=${f%%/*}
    # a job kind is its own layer: jobs/train is "train", jobs/cli "cli"
    [ "$top" = jobs ] && { top=${f#jobs/}; top=${top%%/*}; }
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
        if [ -f "$dir/$inc" ]; then where="$dir/$inc"
        elif [ -f "common/$inc" ]; then where="common/$inc"
        elif [ -f "jobs/$inc" ]; then where="jobs/$inc"
        elif [ -f "$inc" ]; then where="$inc"
        else echo "layers: $f includes \"$inc\", which is not in the tree"; bad=1; continue
        fi
        wtop=${where%%/*}
        [ "$wtop" = jobs ] && { wtop=${where#jobs/}; wtop=${wtop%%/*}; }
        case "$top:$wtop" in
            common:common | coordinator:common | coordinator:coordinator | worker:common | worker:worker) ;;
            train:common | train:train | classify:common | classify:classify | null:common | null:null) ;;
            cli:*) ;;
            *) echo "layers: $f includes $where ($top/ may include common/ and its own folder only)"; bad=1 ;;
        esac
    done
done
[ $bad = 0 ] && echo "layers: coordinator/, worker/, common/ and each job kind include common/ (and their own folder) only"
exit $bad
