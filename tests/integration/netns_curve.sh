#!/bin/sh
# Two hosts in one machine: the coordinator in one network namespace, two MPI worker
# ranks and an intruder in another, joined by a veth pair (10.77.x.1 <-> 10.77.x.2),
# CURVE on with an allowlist. The intruder's key is refused (connections_refused, no
# work); the link is then cut for longer than the lease (ip link down) and restored.
# Nothing is lost (every row once, in order) and the two workers keep one slot each
# (workers_seen = 2: a rejoin after being declared dead is the same worker).
# Needs root (namespaces); skipped with a message otherwise.
set -e
if [ "$(id -u)" != 0 ]; then echo "skipped: network-namespace test needs root"; exit 0; fi
command -v ip >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
command -v ip >/dev/null 2>&1 || { echo "skipped: no ip command (iproute2)"; exit 0; }
. "$(dirname "$0")/runnet_lib.inc"
N=$(( $$ % 200 + 20 ))
A=wispA$$ B=wispB$$ VA=wa$$ VB=wb$$
if ! ip netns add $A 2>/dev/null; then echo "skipped: cannot create network namespaces here"; exit 0; fi
cleanup() {
    [ -n "$CPID" ] && kill "$CPID" 2>/dev/null || true
    ip netns del $A 2>/dev/null || true
    ip netns del $B 2>/dev/null || true
    [ -n "$KEEP" ] || rm -rf "$T"
}
trap cleanup EXIT
ip netns add $B
ip link add $VA type veth peer name $VB
ip link set $VA netns $A
ip link set $VB netns $B
ip -n $A addr add 10.77.$N.1/24 dev $VA
ip -n $B addr add 10.77.$N.2/24 dev $VB
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set $VA up
ip -n $B link set $VB up
ip -n $B route get 10.77.$N.1 >/dev/null || fail "no route over the veth link"

"$COORD" --keygen $T/coordinator >/dev/null
"$COORD" --keygen $T/worker >/dev/null
"$COORD" --keygen $T/intruder >/dev/null
null_config "$T/job.json" 3000 6     # 6 ms per item on 2 ranks: ~10 s of work
ip netns exec $A "$COORD" "$T/job.json" --no-progress \
    --set cluster.endpoint=tcp://10.77.$N.1:0 \
    --set cluster.curve.server_secret=$T/coordinator.secret \
    --set cluster.curve.client_keys=$T/worker.public \
    --endpoint-file $T/endpoint >$T/summary.json 2>$T/coord.log &
CPID=$!
i=0
while [ ! -s $T/endpoint ]; do i=$((i + 1)); [ $i -lt 100 ] || fail "no endpoint"; sleep 0.1; done
grep -q "tcp://10.77.$N.1:" $T/endpoint || fail "endpoint $(cat $T/endpoint)"
# the intruder: a key outside the allowlist gets nothing and gives up
if ip netns exec $B timeout 30 mpirun -np 1 "$WORKER" --coordinator-file $T/endpoint \
    --timeout 3 --curve-server $T/coordinator.public --curve-key $T/intruder 2>$T/intruder.log
then fail "the intruder was served"; fi
ip netns exec $B timeout 120 mpirun -np 2 "$WORKER" --coordinator-file $T/endpoint \
    --curve-server $T/coordinator.public --curve-key $T/worker >$T/workers.log 2>&1 &
WPID=$!
sleep 3
ip -n $A link set $VA down         # the cut: 5 s, lease_timeout is 2 s
sleep 5
ip -n $A link set $VA up
wait $WPID || { tail -30 $T/workers.log; fail "workers failed"; }
rc=0; wait $CPID || rc=$?
CPID=
[ $rc -eq 1 ] || { tail -30 $T/coord.log; fail "coordinator exit $rc (1 = done with item errors)"; }
check_rows "$T/out.tsv" 3000 || fail "rows"
grep -q '"status":"complete"' $T/summary.json || fail "summary status"
grep -q '"workers_seen":2,' $T/summary.json || { cat $T/summary.json; fail "duplicate worker slots"; }
grep -Eq '"connections_refused":[1-9]' $T/summary.json || fail "intruder not counted"
grep -q "silent for over" $T/coord.log || { tail -30 $T/coord.log; fail "the cut did not outlast the lease"; }
echo "ok: CURVE across namespaces, intruder refused, 5 s cut survived: 3000 rows, 2 slots ($(grep -o '"workers_rejoined":[0-9]*' $T/summary.json))"
