#!/usr/bin/env bash
# What scraping /metrics costs the broker (issue 15: every second, < 1% of broker CPU under
# full load). One release broker (2 shards, PARTITIONS partitions over TOPICS topics); then
#   1. idle: SCRAPES back-to-back scrapes, broker CPU per scrape (from /proc) and scrape time;
#   2. loaded: Kafka produce (1 KiB records, acks=1) for SECS seconds per run, runs
#      alternating no scraper / a scraper every second / again / none, broker CPU per GB and
#      MB/s of each (tidelog-bench's own figures, total bytes over total time).
#
#   bash bench-harness/scripts/metrics-cost.sh [SECS] [SCRAPES]
#
# Writes target/metrics-cost/ (JSON per run, broker log) and prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-15}
scrapes=${2:-200}
partitions=${PARTITIONS:-16}
topics=${TOPICS:-4}
out=target/metrics-cost
rm -rf "$out"
mkdir -p "$out"
cargo build -q --release --bin tidelog --bin tidelog-bench
bench=./target/release/tidelog-bench
metrics=127.0.0.1:19644
# Retention keeps the disk bounded: full-speed runs write several GB each.
./target/release/tidelog serve --data-dir "$out/data" --shards 2 \
  --native-addr 127.0.0.1:19292 --kafka-addr 127.0.0.1:19092 --metrics-addr "$metrics" \
  --retention-bytes 134217728 --segment-bytes 33554432 --retention-check-ms 1000 \
  2>"$out/broker.log" &
broker=$!
trap 'kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null || true; rm -rf "$out/data"' EXIT
for _ in $(seq 50); do curl -sf "http://$metrics/health" >/dev/null && break; sleep 0.2; done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$broker/stat"; }
hz=$(getconf CLK_TCK)

# Partitions to report on, with data in them.
for t in $(seq "$topics"); do
  "$bench" produce --protocol kafka --broker 127.0.0.1:19092 --topic "mc-warm-$t" \
    --partitions $((partitions / topics)) --record-size 1024 --acks 1 --records 20000 \
    >"$out/warm-$t.log" 2>&1
done
series=$(curl -s "http://$metrics/metrics" | grep -vc '^#')
before=$(cpu_ticks)
start=$(date +%s.%N)
for _ in $(seq "$scrapes"); do curl -s -o /dev/null "http://$metrics/metrics"; done
end=$(date +%s.%N)
after=$(cpu_ticks)
python3 - "$before" "$after" "$hz" "$scrapes" "$start" "$end" "$series" <<'PY'
import sys
before, after, hz, n, start, end, series = map(float, sys.argv[1:])
cpu = (after - before) / hz / n
print(f"idle scrape: {series:.0f} series, {cpu * 1e3:.2f} ms broker CPU per scrape "
      f"(includes the idle broker's own ticks), {(end - start) / n * 1e3:.2f} ms per scrape "
      f"end to end; at one scrape a second: {cpu * 100:.3f}% of one core")
PY

run() {
  local name=$1 scrape=$2 scraper=
  if [[ $scrape == on ]]; then
    (while sleep 1; do curl -s -o /dev/null "http://$metrics/metrics"; done) &
    scraper=$!
  fi
  "$bench" produce --protocol kafka --broker 127.0.0.1:19092 --broker-pid "$broker" \
    --topic "mc-$name" --partitions "$partitions" --record-size 1024 --acks 1 \
    --duration "$secs" --json "$out/$name.json" >"$out/$name.log" 2>&1
  [[ -n $scraper ]] && kill "$scraper" && wait "$scraper" 2>/dev/null || true
  python3 - "$out/$name.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
text = json.dumps(d)
def find(o, key):
    if isinstance(o, dict):
        if key in o:
            return o[key]
        for v in o.values():
            r = find(v, key)
            if r is not None:
                return r
    if isinstance(o, list):
        for v in o:
            r = find(v, key)
            if r is not None:
                return r
    return None
mbps = find(d, "mb_per_s") or find(d, "throughput_mb_s")
print(f"{sys.argv[2]}: {mbps} MB/s, broker {find(d, 'cpu_s_per_gb')} CPU-s per GB, "
      f"broker CPU {find(d, 'cpu_s')} s")
PY
}
run off-1 off
run scrape-1 on
run scrape-2 on
run off-2 off
