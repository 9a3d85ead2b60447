#!/usr/bin/env bash
# Produce and catch-up consume throughput through the Kafka listener (librdkafka, via kcat)
# and through the native protocol (tidelog-bench), 1 KiB records, in one run on this host,
# broker and clients sharing the machine. Prints MB/s (total bytes / wall time of the phase)
# and the Kafka/native ratios.
#
#   bash bench-harness/scripts/kafka-vs-native.sh [RECORDS]     (default 1,000,000 = 1 GiB)
#
# Needs kcat (tests/kafka/setup.sh installs it) and release builds of tidelog and
# tidelog-bench (built here).
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-1000000}
size=1024
work=target/kafka-vs-native
rm -rf "$work" && mkdir -p "$work"
cargo build -q --release --bin tidelog --bin tidelog-bench
limits=../shared/tools/machine-limits
if [[ -x $limits ]]; then
  echo "== machine limits (same run)"
  "$limits" target | tail -1 | tee "$work/limits.json"
fi
# 1 KiB lines (1023 bytes + newline delimiter) for kcat.
python3 -c "
import sys
line = (b'x' * ($size - 1)) + b'\n'
with open('$work/records.txt', 'wb') as f:
    for _ in range($records): f.write(line)
"
./target/release/tidelog serve --data-dir "$work/data" --kafka-addr 127.0.0.1:19092 \
  --native-addr 127.0.0.1:19292 --shards 2 2>"$work/broker.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null' EXIT
sleep 2
mb() { python3 -c "print(f'{($1) / ($2) / 1e6:.1f}')"; }
now() { date +%s.%N; }
# Broker CPU seconds so far (user + system), from /proc.
cpu() { python3 -c "import os; f=open('/proc/$broker/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"; }
declare -A cpus
phase_cpu() { cpus[$1]=$(python3 -c "print(f'{($3)-($2):.2f}')"); }
declare -A result
for acks in 1 all; do
  kacks=$([[ $acks == all ]] && echo -1 || echo 1)
  topic=kafka-$acks
  kcat -b 127.0.0.1:19092 -L -t "$topic" >/dev/null 2>&1 || true   # auto-create
  ./target/release/tidelog topic create "$topic" --partitions 2 --broker 127.0.0.1:19292 >/dev/null 2>&1 || true
  c0=$(cpu); t0=$(now)
  kcat -b 127.0.0.1:19092 -P -t "$topic" -X acks=$kacks -X linger.ms=5 -X batch.size=1000000 \
    -X queue.buffering.max.kbytes=1048576 -l "$work/records.txt"
  t1=$(now)
  result[kafka_produce_$acks]=$(mb "$records*$size" "$t1-$t0")
  phase_cpu kafka_produce_$acks "$c0" "$(cpu)"
  c0=$(cpu); t0=$(now)
  got=$(kcat -b 127.0.0.1:19092 -C -t "$topic" -o beginning -e -q -f '%o\n' | wc -l)
  t1=$(now)
  [[ $got == "$records" ]] || { echo "kafka consume got $got of $records"; exit 1; }
  result[kafka_consume_$acks]=$(mb "$records*$size" "$t1-$t0")
  phase_cpu kafka_consume_$acks "$c0" "$(cpu)"
  c0=$(cpu)

  topic=native-$acks
  ./target/release/tidelog-bench produce --broker 127.0.0.1:19292 --topic "$topic" --partitions 2 \
    --record-size $size --records "$records" --acks "$acks" --json "$work/native-produce-$acks.json" >/dev/null
  phase_cpu native_produce_$acks "$c0" "$(cpu)"
  result[native_produce_$acks]=$(python3 -c "import json; print(f\"{json.load(open('$work/native-produce-$acks.json'))['produce']['mb_per_s']:.1f}\")")
  c0=$(cpu)
  ./target/release/tidelog-bench consume --broker 127.0.0.1:19292 --topic "$topic" \
    --record-size $size --json "$work/native-consume-$acks.json" >/dev/null
  phase_cpu native_consume_$acks "$c0" "$(cpu)"
  result[native_consume_$acks]=$(python3 -c "import json; print(f\"{json.load(open('$work/native-consume-$acks.json'))['consume']['mb_per_s']:.1f}\")")
done
printf '%-16s %12s %12s %7s %18s %18s\n' phase "native MB/s" "kafka MB/s" ratio "native broker cpu" "kafka broker cpu"
for phase in produce_1 produce_all consume_1; do
  n=${result[native_$phase]} k=${result[kafka_$phase]}
  printf '%-16s %12s %12s %6s%% %17ss %17ss\n' "$phase" "$n" "$k" "$(python3 -c "print(f'{100*$k/$n:.0f}')")" \
    "${cpus[native_$phase]}" "${cpus[kafka_$phase]}"
done
