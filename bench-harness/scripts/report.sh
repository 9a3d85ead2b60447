#!/usr/bin/env bash
# The performance report of issue #5, in one run on this machine, broker and load generator
# sharing it: the machine's limits, then native and Kafka-listener produce (1 KiB and 100 B,
# acks=1 and acks=all), catch-up consume, and publish / end-to-end p99 at half of the maximum
# 1 KiB acks=1 rate. Prints a markdown table with ratios; JSON per run under target/report/.
#
#   bash bench-harness/scripts/report.sh [SECONDS]      (seconds per produce run, default 10)
#
# LAYOUT=shared (default): the broker with one shard per CPU and the generator with one
#   unpinned executor per CPU, all sharing the cores.
# LAYOUT=split: the broker with one shard pinned to CPU 0 (taskset) and the generator pinned
#   to the other CPUs (--cores), so that they never share a core.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
layout=${LAYOUT:-shared}
out=target/report-$layout
rm -rf "$out" && mkdir -p "$out"
cargo build -q --release --bin tidelog --bin tidelog-bench
bench=./target/release/tidelog-bench
limits=../shared/tools/machine-limits
if [[ -x $limits ]]; then
  "$limits" target | tail -1 >"$out/limits.json"
else
  echo '{}' >"$out/limits.json"
fi
cpus=$(nproc)
pin=()
gen=()
case $layout in
  shared) shards=$cpus ;;
  split)
    shards=1
    pin=(taskset -c 0)
    gen=(--cores "1-$((cpus - 1))")
    ;;
  *) echo "LAYOUT must be shared or split" >&2; exit 2 ;;
esac
"${pin[@]}" ./target/release/tidelog serve --data-dir "$out/data" --shards "$shards" \
  --native-addr 127.0.0.1:19292 --kafka-addr 127.0.0.1:19092 2>"$out/broker.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null || true' EXIT
sleep 2

# run NAME PROTOCOL MODE [flags...]
run() {
  local name=$1 proto=$2 mode=$3
  shift 3
  local addr=127.0.0.1:19292
  [[ $proto == kafka ]] && addr=127.0.0.1:19092
  echo "== $name" >&2
  "$bench" "$mode" --protocol "$proto" --broker "$addr" --broker-pid "$broker" "${gen[@]}" \
    --json "$out/$name.json" "$@" >"$out/$name.log" 2>&1 || { tail -5 "$out/$name.log" >&2; return 1; }
}

# Each produce run writes several GB: drop its topic once measured, to stay within the disk.
drop() { ./target/release/tidelog topic delete "$1" --broker 127.0.0.1:19292 >/dev/null 2>&1 || true; }

for proto in native kafka; do
  p=$proto
  run "$p-produce-1k-acks1" "$proto" produce --topic "$p-1k-a1" --partitions 2 \
    --record-size 1024 --acks 1 --duration "$secs"
  run "$p-produce-1k-acksall" "$proto" produce --topic "$p-1k-aall" --partitions 2 \
    --record-size 1024 --acks all --duration "$secs"
  drop "$p-1k-aall"
  run "$p-produce-100b-acks1" "$proto" produce --topic "$p-100-a1" --partitions 2 \
    --record-size 100 --acks 1 --duration "$secs"
  drop "$p-100-a1"
  run "$p-produce-100b-acksall" "$proto" produce --topic "$p-100-aall" --partitions 2 \
    --record-size 100 --acks all --duration "$secs"
  drop "$p-100-aall"
  # The same 1 KiB runs with larger batches and more in flight (tuning.md: producer knobs).
  run "$p-produce-1k-acks1-tuned" "$proto" produce --topic "$p-1k-a1t" --partitions 2 \
    --record-size 1024 --acks 1 --duration "$secs" --batch-bytes 1000000 --max-in-flight 8
  drop "$p-1k-a1t"
  run "$p-produce-1k-acksall-tuned" "$proto" produce --topic "$p-1k-aallt" --partitions 2 \
    --record-size 1024 --acks all --duration "$secs" --batch-bytes 1000000 --max-in-flight 8
  drop "$p-1k-aallt"
  run "$p-consume-1k" "$proto" consume --topic "$p-1k-a1" --record-size 1024
  drop "$p-1k-a1"
  half=$(python3 -c "import json; print(int(json.load(open('$out/$p-produce-1k-acks1.json'))['produce']['records_per_s'] / 2))")
  run "$p-e2e-half-rate" "$proto" e2e --topic "$p-e2e" --partitions 2 --record-size 1024 \
    --acks 1 --duration "$secs" --rate "$half"
  drop "$p-e2e"
  run "$p-e2e-half-rate-linger1" "$proto" e2e --topic "$p-e2e1" --partitions 2 \
    --record-size 1024 --acks 1 --duration "$secs" --rate "$half" --linger-ms 1
  drop "$p-e2e1"
done

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
lim = json.load(open(f"{out}/limits.json"))
def j(n): return json.load(open(f"{out}/{n}.json"))
w, fs, lo = lim.get("disk_write_mb_s"), lim.get("fdatasync_per_s"), lim.get("loopback_mb_s")
print(f"layout: {os.environ.get('LAYOUT', 'shared')}")
print(f"limits: fio O_DIRECT write {w} MB/s, read {lim.get('disk_read_mb_s')} MB/s, "
      f"fdatasync {fs}/s, loopback {lo} MB/s")
print()
print("| run | native MB/s | native rec/s | kafka MB/s | kafka rec/s | kafka/native | native vs min(disk, loopback) | p99 publish native / kafka (us) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
floor = min(x for x in (w, lo) if x) if (w or lo) else None
for name, phase in [("produce-1k-acks1", "produce"), ("produce-1k-acksall", "produce"),
                    ("produce-1k-acks1-tuned", "produce"), ("produce-1k-acksall-tuned", "produce"),
                    ("produce-100b-acks1", "produce"), ("produce-100b-acksall", "produce"),
                    ("consume-1k", "consume")]:
    n, k = j(f"native-{name}")[phase], j(f"kafka-{name}")[phase]
    ratio = k["mb_per_s"] / n["mb_per_s"] if n["mb_per_s"] else 0
    vs = f"{100 * n['mb_per_s'] / floor:.0f}%" if floor else "-"
    lat = ""
    if phase == "produce":
        lat = f"{j(f'native-{name}')['produce']['latency_us']['p99']} / {j(f'kafka-{name}')['produce']['latency_us']['p99']}"
    print(f"| {name} | {n['mb_per_s']:.1f} | {n['records_per_s']:.0f} | {k['mb_per_s']:.1f} | "
          f"{k['records_per_s']:.0f} | {100 * ratio:.0f}% | {vs} | {lat} |")
for proto, name in [(p, f"{p}-e2e-half-rate{s}") for p in ("native", "kafka") for s in ("", "-linger1")]:
    r = j(name)
    print(f"\n{name}: open loop at {r['params'].get('rate')} rec/s (half of max, 1 KiB, acks=1, linger {r['params'].get('linger_ms')} ms): "
          f"publish p50/p99/p999 {r['produce']['latency_us']['p50']}/{r['produce']['latency_us']['p99']}/"
          f"{r['produce']['latency_us']['p999']} us, e2e p99 {r['e2e']['latency_us']['p99']} us, "
          f"generator send lag p99 {(r.get('send_lag_us') or {}).get('p99')} us, "
          f"achieved {r['produce']['records_per_s']:.0f} rec/s, errors {r['errors']}")
for proto in ("native", "kafka"):
    for suffix in ("", "-tuned"):
        a1 = j(f"{proto}-produce-1k-acks1{suffix}")["produce"]["mb_per_s"]
        aa = j(f"{proto}-produce-1k-acksall{suffix}")["produce"]["mb_per_s"]
        print(f"{proto}{suffix}: acks=all / acks=1 (1 KiB) = {100 * aa / a1:.0f}%")
PY
