#!/bin/sh
# configs/slurm_example.sh under a real single-node Slurm (Debian slurm-wlm + munge),
# brought up by this script in a private directory (its own munged socket and key,
# slurmctld and slurmd on high ports, SLURM_CONF pointing at them), then torn down:
#   1. a null job through sbatch -> srun --mpi=pmix completes: every row once, in order;
#   2. a reused run directory with a stale endpoint file and workers that cannot start:
#      the batch job stops its coordinator after the attempts and ends FAILED (exit 4)
#      in seconds instead of holding the node until the time limit.
# Runs when SLURM_TESTS=1 (make test-slurm sets it); needs root (the daemons) and the
# slurm-wlm/munge packages. Otherwise it says why and passes as skipped.
set -e
if [ "${SLURM_TESTS:-0}" != 1 ]; then
    echo "skipped: Slurm test (set SLURM_TESTS=1 or run make test-slurm)"; exit 0
fi
if [ "$(id -u)" != 0 ]; then echo "skipped: Slurm test needs root (it starts slurmctld)"; exit 0; fi
for b in munged slurmctld slurmd sbatch srun squeue scontrol; do
    command -v $b >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v $b >/dev/null 2>&1 ||
        { echo "skipped: $b missing (apt-get install slurm-wlm munge)"; exit 0; }
done
. "$(dirname "$0")/runnet_lib.inc"
REPO=$(pwd)
S=$T/slurm
mkdir -p $S/state $S/spool $S/log
chmod 700 $S
NODE=$(hostname -s)
CPUS=$(nproc)
PORT=$((20000 + $$ % 20000))
# munge: own key and socket, so the host's munge (if any) is untouched
dd if=/dev/urandom of=$S/munge.key bs=1024 count=1 2>/dev/null
chmod 400 $S/munge.key
munged --force --key-file=$S/munge.key --socket=$S/munge.sock --pid-file=$S/munged.pid \
    --log-file=$S/log/munged.log --seed-file=$S/munge.seed
cat >$S/slurm.conf <<CONF
ClusterName=wisptest
SlurmctldHost=$NODE
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$S/munge.sock
CredType=cred/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$S/slurm.conf
slurmctld -f $S/slurm.conf
slurmd -f $S/slurm.conf -N $NODE
cleanup() {
    scancel --quiet --user=root 2>/dev/null || true
    for p in slurmd slurmctld munged; do
        [ -s $S/$p.pid ] && kill "$(cat $S/$p.pid)" 2>/dev/null || true
    done
    sleep 1
    [ -n "$KEEP" ] || rm -rf "$T"
}
trap cleanup EXIT
i=0
until sinfo -h -o %t 2>/dev/null | grep -q idle; do
    i=$((i + 1)); [ $i -lt 60 ] || { tail -20 $S/log/slurmctld.log $S/log/slurmd.log; fail "node never idle"; }
    sleep 1
done
echo "slurm up: node $NODE, $CPUS cpus"

# wait_job ID SECONDS: prints the final state of job ID
wait_job() {
    k=0
    while squeue -h -j "$1" 2>/dev/null | grep -q .; do
        k=$((k + 1)); [ $k -lt "$2" ] || { scancel "$1"; echo TIMEOUT; return; }
        sleep 1
    done
    scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'
}

# 1. a null job through the example script, 2 ranks x 1 thread
null_config "$T/job.json" 2000 1
sed -i 's/"fail_every": 97/"fail_every": 0/' "$T/job.json"   # no error rows: exit 0
mkdir -p $T/run1
id=$(cd $T && sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=5 \
    --output=$T/job1.log --export=ALL,WISP=$BIN,RUN_DIR=$T/run1 \
    "$REPO/configs/slurm_example.sh" "$T/job.json")
state=$(wait_job "$id" 240)
[ "$state" = COMPLETED ] || { cat $T/job1.log; fail "job 1 ended $state"; }
awk 'NR > 1 && ($1 != NR - 2 || $3 != 0) { print "row " NR ": " $0; exit 1 }
     END { if (NR - 1 != 2000) { print "rows " NR - 1; exit 1 } }' "$T/out.tsv" ||
    fail "job 1 rows"
grep -q '"status":"complete"' $T/run1/summary.json || { cat $T/job1.log; fail "job 1 summary"; }
grep -q '"workers_seen":2' $T/run1/summary.json || fail "job 1: expected 2 workers"
echo "ok: sbatch + srun --mpi=pmix, 2000 rows (job $id $state)"

# 2. workers that cannot start, in a reused run directory with a stale endpoint
mkdir -p $T/badbin $T/run2
ln -s "$COORD" $T/badbin/wisp-coordinator
printf '#!/bin/sh\necho "wisp-worker: cannot load the model" >&2\nexit 1\n' >$T/badbin/wisp-worker
chmod +x $T/badbin/wisp-worker
echo "tcp://127.0.0.1:1" >$T/run2/endpoint
echo "tcp://127.0.0.1:1" >$T/run2/endpoint.local
null_config "$T/job2.json" 500 1
sed -i 's/"out.tsv"/"out2.tsv"/' "$T/job2.json"
t0=$(date +%s)
id=$(cd $T && sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10 \
    --output=$T/job2.log --export=ALL,WISP=$T/badbin,RUN_DIR=$T/run2 \
    "$REPO/configs/slurm_example.sh" "$T/job2.json")
state=$(wait_job "$id" 240)
dt=$(( $(date +%s) - t0 ))
[ "$state" = FAILED ] || { cat $T/job2.log; fail "job 2 ended $state, expected FAILED"; }
[ $dt -lt 120 ] || fail "job 2 held the node for $dt s"
grep -q "workers failed 3 times" $T/job2.log || { cat $T/job2.log; fail "job 2: no give-up message"; }
grep -q "127.0.0.1:1" $T/run2/endpoint && fail "job 2: the stale endpoint survived"
[ -e "$T/out2.tsv.journal" ] || fail "job 2: no resumable state left"
echo "ok: workers that cannot start end the job in $dt s (FAILED), stale endpoint replaced"
