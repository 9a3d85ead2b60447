#!/usr/bin/env bash
# Produce, then read back what was just written, from memory and (after a restart, which
# empties the batch cache) from disk: issue 13's read goals, in one run on this machine.
# Measures the machine's limits first, and the bytes the broker read from storage during
# each consume (/proc/<pid>/io read_bytes), which tells memory from disk.
#
#   bash bench-harness/scripts/cache-report.sh [SECONDS]    (produce seconds, default 10)
#
# PROTO=native|kafka (default native); SERVE_ARGS: extra `tidelog serve` flags;
# BIN: directory holding `tidelog` and `tidelog-bench` (default: build ./target/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
proto=${PROTO:-native}
out=target/cache-report
rm -rf "$out" && mkdir -p "$out"
if [[ -z ${BIN:-} ]]; then
  cargo build -q --release --bin tidelog --bin tidelog-bench
  BIN=./target/release
fi
limits=../shared/tools/machine-limits
if [[ -x $limits ]]; then "$limits" target | tail -1 >"$out/limits.json"; else echo '{}' >"$out/limits.json"; fi
addr=127.0.0.1:19292
[[ $proto == kafka ]] && addr=127.0.0.1:19092

broker=
start() {
  # shellcheck disable=SC2086
  "$BIN/tidelog" serve --data-dir "$out/data" --native-addr 127.0.0.1:19292 \
    --kafka-addr 127.0.0.1:19092 ${SERVE_ARGS:-} 2>>"$out/broker.log" &
  broker=$!
  sleep 2
}
stop() { kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null || true; }
trap stop EXIT
read_bytes() { awk '/^read_bytes/ {print $2}' "/proc/$broker/io"; }

run() {
  local name=$1 mode=$2
  shift 2
  echo "== $name" >&2
  local before
  before=$(read_bytes)
  "$BIN/tidelog-bench" "$mode" --protocol "$proto" --broker "$addr" --broker-pid "$broker" \
    --json "$out/$name.json" "$@" >"$out/$name.log" 2>&1 || { tail -5 "$out/$name.log" >&2; return 1; }
  echo $(($(read_bytes) - before)) >"$out/$name.disk"
}

start
run produce produce --topic readback --partitions 2 --record-size 1024 --acks 1 --duration "$secs"
run from-memory consume --topic readback --record-size 1024
stop
start
run from-disk consume --topic readback --record-size 1024
stop
# The measurements stay; the gigabytes of segments do not (repeated runs would fill the disk).
rm -rf "$out/data"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
lim = json.load(open(f"{out}/limits.json"))
w, r = lim.get("disk_write_mb_s"), lim.get("disk_read_mb_s")
print(f"limits: fio O_DIRECT write {w} MB/s, read {r} MB/s, loopback {lim.get('loopback_mb_s')} MB/s")
print("| run | MB/s | vs fio | GB moved | broker CPU-s/GB | read from disk (MB) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name, phase, ref in [("produce", "produce", w), ("from-memory", "consume", r), ("from-disk", "consume", r)]:
    j = json.load(open(f"{out}/{name}.json"))
    p = j[phase]
    gb = p["bytes"] / 1e9
    cpu = (j.get("broker") or {}).get("cpu_s_per_gb")
    per_gb = f"{cpu:.2f}" if cpu else "-"
    vs = f"{100 * p['mb_per_s'] / ref:.0f}%" if ref else "-"
    disk = int(open(f"{out}/{name}.disk").read()) / 1e6
    print(f"| {name} | {p['mb_per_s']:.1f} | {vs} | {gb:.2f} | {per_gb} | {disk:.0f} |")
PY
