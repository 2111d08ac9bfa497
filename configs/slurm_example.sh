#!/bin/bash
# Multi-node wisp job under Slurm: one coordinator on the batch host, one MPI
# rank per task on every node. Submit with: sbatch configs/slurm_example.sh JOB.json
#SBATCH --job-name=wisp
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8          # ranks per node
#SBATCH --cpus-per-task=4            # = cluster.threads_per_worker (ranks x threads <= cores)
#SBATCH --time=12:00:00
#SBATCH --output=wisp-%j.log
# --ntasks-per-node x --cpus-per-task must fit a node's cores: a request no node can
# satisfy stays PENDING forever without an error (squeue -j ID -o %r shows the reason,
# e.g. "Resources" or "ReqNodeNotAvail"). On nodes of C cores pick ranks R and threads T
# with R x T <= C (classify: more ranks, T = 1..4; train: memory per rank may decide),
# or override at submission: sbatch --ntasks-per-node=R --cpus-per-task=T ...
set -euo pipefail
JOB=${1:?usage: sbatch slurm_example.sh JOB.json}
WISP=${WISP:-$HOME/wisp/build/bin}
RUN_DIR=${RUN_DIR:-$PWD/wisp-run-$SLURM_JOB_ID}   # on the shared filesystem
ATTEMPTS=${ATTEMPTS:-3}                           # worker launches before giving up
mkdir -p "$RUN_DIR"
# A reused run directory holds the previous job's endpoint: workers must never see it.
# (The coordinator also removes its --endpoint-file before it starts.)
rm -f "$RUN_DIR/endpoint.local" "$RUN_DIR/endpoint"

# The coordinator binds every interface on an ephemeral port (never a low port:
# Open MPI's TCP transport takes those) and writes the endpoint it got; the
# workers connect to this host. Use CURVE keys in the config across hosts:
#   $WISP/wisp-coordinator --keygen /shared/keys/coordinator   (and one per worker identity)
HOST=$(hostname -f)
"$WISP/wisp-coordinator" "$JOB" --no-progress \
    --set cluster.endpoint="tcp://0.0.0.0:0" \
    --set cluster.threads_per_worker="${SLURM_CPUS_PER_TASK:-1}" \
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
# A relaunched world takes over the dead world's shards at once.
ok=0
for attempt in $(seq 1 "$ATTEMPTS"); do
    # For CURVE add: --curve-server /shared/keys/coordinator.public --curve-key /shared/keys/worker
    if srun --mpi=pmix --kill-on-bad-exit=1 "$WISP/wisp-worker" --coordinator "$ENDPOINT" \
        --timeout 600; then
        ok=1
        break
    fi
    kill -0 $COORD 2>/dev/null || { ok=1; break; }   # done meanwhile: its status decides
    echo "workers exited (attempt $attempt of $ATTEMPTS)"
done
if [ $ok = 0 ]; then
    # Workers cannot start (bad model file, missing library, ...): do not hold the
    # nodes until the time limit waiting for a coordinator nobody feeds. SIGTERM makes
    # it commit what arrived and leave resumable state; resubmitting resumes.
    echo "workers failed $ATTEMPTS times: stopping the coordinator (state kept for a resubmit)"
    kill -TERM $COORD 2>/dev/null || true
    wait $COORD || true
    exit 4
fi
wait $COORD
