#!/usr/bin/env bash
# Replication on three nodes of this one machine (127.0.0.1, .2, .3; one shard each), in one
# run: produce throughput with replication factor 3 as a share of replication factor 1 (both
# acks=all through the Kafka listener, 1 KiB records, tidelog-bench), and failover time as an
# idempotent acks=all producer sees it (the largest gap between two acknowledgements while the
# partition's leader is killed with -9, KILLS times), and the replication lag consumers see at
# half the replicated load (end-to-end latency of RF 3 less RF 1; E2E_SHARE, E2E_SECONDS).
#
#   bash bench-harness/scripts/cluster-report.sh [RECORDS] [KILLS]   (default 500,000 and 5)
#
# PRODUCE_ARGS adds tidelog-bench options to both produce runs (e.g. "--batch-bytes 1048576"),
# NODE_ARGS `tidelog serve` options to every node (e.g. "--replica-fetch-max-bytes 4194304");
# E2E_SECONDS=0 skips the lag measurement, KILLS=0 the failover one. WARMUP=N first writes N
# records per node's worth (3N with replication factor 1, whose nodes each hold a third) to
# another topic, unmeasured: with NODE_ARGS="--cache-bytes 268435456" and WARMUP=262144 every
# node's batch cache is full before the measured run (steady state).

#
# Needs release builds (built here) and the Kafka client venv (tests/kafka/setup.sh). Every
# byte is written three times and sent twice more over loopback: the nodes share this
# machine's cores and disk, so the ratio is what one machine can show, not a cluster's.
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-500000}
kills=${2:-5}
work=target/cluster-report
rm -rf "$work" && mkdir -p "$work"
cargo build -q --release --bin tidelog --bin tidelog-bench
bash tests/kafka/setup.sh >/dev/null
py=target/kafka-venv/bin/python
limits=../shared/tools/machine-limits
if [[ -x $limits ]]; then
  echo "== machine limits (same run)"
  "$limits" target | tail -1 | tee "$work/limits.json"
fi
peers=1@127.0.0.1:29392,2@127.0.0.2:29392,3@127.0.0.3:29392
addrs=127.0.0.1:29092,127.0.0.2:29092,127.0.0.3:29092
declare -a pids
start_node() { # node extra-args...
  local n=$1; shift
  ./target/release/tidelog serve --node-id "$n" --peers "$peers" --shards 1 \
    --data-dir "$work/data/n$n" --kafka-addr "127.0.0.$n:29092" --native-addr "127.0.0.$n:29292" \
    ${NODE_ARGS:-} "$@" 2>>"$work/node$n.log" &
  pids[$n]=$!
}
stop_all() {
  for n in 1 2 3; do kill "${pids[$n]}" 2>/dev/null || true; done
  for n in 1 2 3; do wait "${pids[$n]}" 2>/dev/null || true; done
}
trap stop_all EXIT
wait_registered() {
  for n in 1 2 3; do
    until grep -q "node registered in the cluster metadata\|metadata leader changed" "$work/node$n.log" 2>/dev/null; do sleep 0.2; done
  done
  sleep 2
}
mb() { python3 -c "print(f'{$1:.1f}')"; }
declare -A rate
for rf in 1 3; do
  rm -rf "$work/data" "$work"/node*.log
  for n in 1 2 3; do start_node "$n" --default-replication-factor "$rf" --min-insync-replicas "$(( rf > 1 ? 2 : 1 ))"; done
  wait_registered
  if [[ ${WARMUP:-0} != 0 ]]; then
    # Steady state: each node's batch cache (NODE_ARGS --cache-bytes) filled once, so the
    # measured run reuses memory instead of touching fresh pages (on this VM 1-2 CPU-s per
    # GiB, and replication factor 3 caches three times the bytes per record on each node).
    warm=$(( WARMUP * (rf == 1 ? 3 : 1) ))
    echo "== warm-up, replication factor $rf: $warm x 1 KiB to another topic (not measured)"
    ./target/release/tidelog-bench produce --protocol kafka --broker 127.0.0.1:29092 \
      --topic "warm$rf" --partitions 3 --producers 3 --record-size 1024 --records "$warm" \
      --acks all ${PRODUCE_ARGS:-} >/dev/null
  fi
  echo "== produce, replication factor $rf, acks=all, $records x 1 KiB"
  ./target/release/tidelog-bench produce --protocol kafka --broker 127.0.0.1:29092 \
    --topic "rf$rf" --partitions 3 --producers 3 --record-size 1024 --records "$records" \
    --acks all --json "$work/rf$rf.json" ${PRODUCE_ARGS:-} | tail -4
  rate[$rf]=$(python3 -c "import json; print(json.load(open('$work/rf$rf.json'))['produce']['mb_per_s'])")
  stop_all
done
echo "== replicated produce: rf3 ${rate[3]} MB/s, rf1 ${rate[1]} MB/s, ratio $(python3 -c "print(f'{${rate[3]}/max(${rate[1]},1e-9):.2f}')")"
# Replication lag as consumers see it: they read only below the high watermark, so at the
# same offered load the end-to-end latency of RF 3 less that of RF 1 is the time a record
# takes to reach every in-sync follower's disk. The load is E2E_SHARE (default 0.5) of what
# RF 3 sustained in its burst above, for E2E_SECONDS (default 15) after a warm-up: at 0.75
# the sustained run fell behind its offered rate, and a backlog is not replication lag.
e2e_seconds=${E2E_SECONDS:-15}
e2e_share=${E2E_SHARE:-0.5}
e2e_rate=$(python3 -c "print(int(${rate[3]} * $e2e_share * 1e6 / 1024))")
declare -A e2e
for rf in $( ((e2e_seconds > 0)) && echo 1 3); do
  rm -rf "$work/data" "$work"/node*.log
  for n in 1 2 3; do start_node "$n" --default-replication-factor "$rf" --min-insync-replicas "$(( rf > 1 ? 2 : 1 ))"; done
  wait_registered
  echo "== end to end, replication factor $rf, $e2e_rate records/s x 1 KiB for ${e2e_seconds}s"
  ./target/release/tidelog-bench e2e --protocol kafka --broker 127.0.0.1:29092 \
    --topic "e2e$rf" --partitions 3 --producers 3 --consumers 3 --record-size 1024 \
    --rate "$e2e_rate" --duration "$e2e_seconds" --warmup 3 --acks all \
    --json "$work/e2e$rf.json" | tail -2
  e2e[$rf]=$(python3 -c "
import json; l=json.load(open('$work/e2e$rf.json'))['e2e']['latency_us']
print(l['p50'], l['p99'])")
  stop_all
done
((e2e_seconds > 0)) && python3 -c "
one=[int(x) for x in '${e2e[1]}'.split()]; three=[int(x) for x in '${e2e[3]}'.split()]
print(f'== replication lag at {${e2e_rate}*1024/1e6:.0f} MB/s offered (end-to-end RF 3 less RF 1): p50 {(three[0]-one[0])/1000:.1f} ms, p99 {(three[1]-one[1])/1000:.1f} ms (RF 1 p50 {one[0]/1000:.1f} / p99 {one[1]/1000:.1f} ms, RF 3 p50 {three[0]/1000:.1f} / p99 {three[1]/1000:.1f} ms)')
"
echo "== failover: $kills leader kills under an idempotent acks=all producer"
rm -rf "$work/data" "$work"/node*.log
for n in 1 2 3; do start_node "$n" --default-replication-factor 3 --min-insync-replicas 2; done
wait_registered
"$py" - "$addrs" <<'PY'
import sys
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1].split(","))
admin.create_topics([NewTopic("fo", num_partitions=1, replication_factor=3)])
PY
gaps=()
for k in $(seq 1 "$kills"); do
  "$py" tests/kafka/failover_probe.py "$addrs" 12 > "$work/probe$k.jsonl" &
  probe=$!
  sleep 4
  leader=$("$py" - "$addrs" <<'PY'
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1].split(","))
print(admin.describe_topics(["fo"])[0]["partitions"][0]["leader_id"] // 1024)
PY
)
  kill -9 "${pids[$leader]}"; wait "${pids[$leader]}" 2>/dev/null || true
  killed_at=$(date +%s.%N)
  wait $probe
  gap=$(python3 -c "
import json
t=[json.loads(l)['acked'] for l in open('$work/probe$k.jsonl') if 'acked' in l]
after=[x for x in t if x > $killed_at]
before=[x for x in t if x <= $killed_at]
print(f'{(after[0]-before[-1]):.2f}' if after and before else 'none')")
  echo "kill $k: leader node $leader, largest ack gap across the kill ${gap} s"
  gaps+=("$gap")
  start_node "$leader" --default-replication-factor 3 --min-insync-replicas 2
  sleep 6
done
python3 -c "
import statistics
g=sorted(float(x) for x in '${gaps[*]}'.split() if x!='none')
if g:
  p=lambda q: g[min(len(g)-1,int(round(q*(len(g)-1))))]
  print(f'== failover gap over {len(g)} kills: p50 {p(0.5):.2f} s, max {g[-1]:.2f} s')
"
