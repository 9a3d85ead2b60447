#!/usr/bin/env bash
# A well-behaved producer's throughput while the broker is under attack, as a share of its
# throughput alone, in one run on this host: tidelog-bench produces 1 KiB records with
# acks=1 over Kafka for SECS seconds, alone and then beside each attack of attack.py
# (slowloris, 5,000 idle connections, 1,000 x 100 MB announced frames, million-topic
# Metadata requests, a consumer stalled on a 64 MiB fetch). The attackers connect from
# 127.0.0.2 (another client address, as a remote attacker would), the producer from
# 127.0.0.1; both run on this host, so they share its CPUs with the broker. The goal is
# >= 80% of solo throughput.
#
#   bash bench-harness/scripts/under-attack.sh [SECS]     (default 15)
#
# Each partition keeps at most 2 GiB (retention checked every second): on a fast disk the
# runs write tens of GB. SERVE_ARGS adds flags to `tidelog serve` (e.g. SERVE_ARGS="--socket-receive-buffer-bytes
# 131072"), to compare settings in one session.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-15}
work=target/under-attack
rm -rf "$work" && mkdir -p "$work"
cargo build -q --release --bin tidelog --bin tidelog-bench
limits=../shared/tools/machine-limits
if [[ -x $limits ]]; then
  echo "== machine limits (same run)"
  "$limits" target | tail -1 | tee "$work/limits.json"
fi
./target/release/tidelog serve --data-dir "$work/data" --kafka-addr 127.0.0.1:19092 \
  --native-addr 127.0.0.1:19292 --shards 2 --retention-bytes 2147483648 --retention-check-ms 1000 \
  ${SERVE_ARGS:-} 2>"$work/broker.log" &
broker=$!
attacker=
cleanup() {
  [[ -n $attacker ]] && kill "$attacker" 2>/dev/null
  kill $broker 2>/dev/null
  wait $broker 2>/dev/null || true
}
trap cleanup EXIT
sleep 2
run() {
  local name=$1
  ./target/release/tidelog-bench produce --protocol kafka --broker 127.0.0.1:19092 \
    --broker-pid "$broker" --topic "attack-$name" --partitions 2 --record-size 1024 \
    --acks 1 --duration "$secs" --json "$work/$name.json" >"$work/$name.log" 2>&1
}
echo "== solo"
run solo
for mode in slowloris idle giant-frames metadata stalled-fetch; do
  echo "== under $mode"
  ATTACK_TOPIC=attack-solo python3 bench-harness/scripts/attack.py "$mode" 127.0.0.1:19092 \
    >"$work/attack-$mode.log" 2>&1 &
  attacker=$!
  sleep 3
  run "$mode"
  kill "$attacker" 2>/dev/null || true
  wait "$attacker" 2>/dev/null || true
  attacker=
  kill -0 $broker || { echo "the broker died under $mode"; tail -20 "$work/broker.log"; exit 1; }
  ./target/release/tidelog topic delete "attack-$mode" --broker 127.0.0.1:19292 >/dev/null 2>&1 || true
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
solo = json.load(open(f"{work}/solo.json"))["produce"]["mb_per_s"]
print(f"| run | MB/s | share of solo |")
print(f"|---|---:|---:|")
print(f"| solo | {solo:.1f} | 100% |")
for mode in ["slowloris", "idle", "giant-frames", "metadata", "stalled-fetch"]:
    mbs = json.load(open(f"{work}/{mode}.json"))["produce"]["mb_per_s"]
    print(f"| {mode} | {mbs:.1f} | {100 * mbs / solo:.0f}% |")
PY
