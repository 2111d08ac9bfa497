#!/bin/bash
# Multi-node wisp job under Slurm: one coordinator on the batch host, one MPI
# rank per task on every node. Submit with: sbatch configs/slurm_example.sh JOB.json
#SBATCH --job-name=wisp
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8          # ranks per node
#SBATCH --cpus-per-task=4            # = cluster.threads_per_worker (ranks x threads <= cores)
#SBATCH --time=12:00:00
#SBATCH --output=wisp-%j.log
set -euo pipefail
JOB=${1:?usage: sbatch slurm_example.sh JOB.json}
WISP=${WISP:-$HOME/wisp/build/bin}
RUN_DIR=${RUN_DIR:-$PWD/wisp-run-$SLURM_JOB_ID}   # on the shared filesystem
mkdir -p "$RUN_DIR"

# The coordinator binds every interface on an ephemeral port (never a low port:
# Open MPI's TCP transport takes those) and writes the endpoint it got; the
# workers connect to this host. Use CURVE keys in the config across hosts:
#   $WISP/wisp-coordinator --keygen /shared/keys/coordinator   (and one per worker identity)
HOST=$(hostname -f)
"$WISP/wisp-coordinator" "$JOB" --no-progress \
    --set cluster.endpoint="tcp://0.0.0.0:0" \
    --set cluster.threads_per_worker="$SLURM_CPUS_PER_TASK" \
    --endpoint-file "$RUN_DIR/endpoint.local" >"$RUN_DIR/summary.json" &
COORD=$!
trap 'kill -TERM $COORD 2>/dev/null || true' EXIT   # a cancelled job leaves resumable state
while [ ! -s "$RUN_DIR/endpoint.local" ]; do
    kill -0 $COORD 2>/dev/null || { echo "coordinator failed to start"; exit 3; }
    sleep 0.5
done
# 0.0.0.0 is where it listens; workers need this host's address.
sed "s/0\.0\.0\.0/$HOST/" "$RUN_DIR/endpoint.local" >"$RUN_DIR/endpoint"
ENDPOINT=$(cat "$RUN_DIR/endpoint")
echo "coordinator at $ENDPOINT"

# Workers: one mpirun world. If a node dies the whole world dies (Open MPI has no
# fault tolerance); the coordinator keeps its state, so relaunch the workers
# (classify: lost shards are re-leased; train: resume from the newest checkpoint).
for attempt in 1 2 3; do
    # For CURVE add: --curve-server /shared/keys/coordinator.public --curve-key /shared/keys/worker
    srun --mpi=pmix --kill-on-bad-exit=1 "$WISP/wisp-worker" --coordinator "$ENDPOINT" --timeout 600 && break
    kill -0 $COORD 2>/dev/null || break
    echo "workers exited (attempt $attempt); relaunching"
done
wait $COORD
