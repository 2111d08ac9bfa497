#!/bin/sh
# make demo: the whole system on this machine in a minute or two.
#   1. a random whisper-tiny checkpoint (wisp init-model) and a synthetic labeled
#      dataset with a few corrupt files (wisp synth);
#   2. distributed adapter training: `wisp run configs/local_train.json -np 2`
#      (coordinator + 2 MPI worker ranks, gradients summed with MPI_Allreduce);
#   3. distributed classification of the test split with the trained adapter and
#      head: `wisp run configs/local_classify.json -np 2` -> demo-out/labels.h5;
#   4. wisp report on the results.
# Truncated features (clip-length mel) keep it fast; see the configs.
set -e
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe-1}
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle-1}
command -v ssh >/dev/null 2>&1 || export OMPI_MCA_plm_rsh_agent=
W="$BUILD/bin/wisp"
D=demo-out
rm -rf "$D"
mkdir -p "$D"
echo "== 1. model and data"
"$W" init-model --size tiny --num-labels 4 -o "$D/model" --seed 1
"$W" synth -o "$D/data" --classes 4 --per-class 24 --corrupt 4 --max-seconds 3 --seed 1
echo "== 2. distributed training (2 ranks)"
"$W" run configs/local_train.json -np 2
echo "== 3. distributed classification (2 ranks)"
"$W" run configs/local_classify.json -np 2 --set manifest="$D/data/all_with_corrupt.csv" || [ $? -eq 1 ]
echo "== 4. report"
"$W" report "$D/labels.h5" --no-plots
echo "demo done: $D/labels.h5, $D/train_run/{adapter,head,metrics.jsonl}"
