#!/usr/bin/env bash
# Storage-engine figures as ratios of what this machine's disk does in the same run.
#   bench-harness/scripts/storage-report.sh [criterion args...]   e.g. -- no_sync
# 1. ../shared/tools/machine-limits on the target directory (fio O_DIRECT write bandwidth,
#    fdatasync rate; last line is JSON);
# 2. cargo bench -p tidelog-engine --bench append (data under $CARGO_TARGET_DIR/tmp);
# 3. a table: each bench's MB/s (decimal, like fio) from target/criterion/**/new/estimates.json
#    and the throughput recorded in benchmark.json, append MB/s as a % of the fio write
#    bandwidth (target for append/no_sync: >= 90%), and fsyncs per append of the group
#    commit runs as the bench printed them.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$CARGO_TARGET_DIR"
fstype=$(stat -f -c %T "$CARGO_TARGET_DIR")
if [[ $fstype == tmpfs ]]; then
  echo "storage-report: $CARGO_TARGET_DIR is tmpfs; O_DIRECT needs a real filesystem" >&2
  exit 1
fi

echo "== machine limits ($CARGO_TARGET_DIR, $fstype)"
limits=$("$root/../shared/tools/machine-limits" "$CARGO_TARGET_DIR")
echo "$limits"
limits_json=$(tail -n 1 <<<"$limits")

echo "== cargo bench -p tidelog-engine --bench append $*"
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
log="$CARGO_TARGET_DIR/storage-report-append.log"
cargo bench -p tidelog-engine --bench append -- "$@" 2>&1 | tee "$log"

echo "== storage report"
python3 - "$limits_json" "$CARGO_TARGET_DIR/criterion" "$stamp" "$log" <<'PY'
import glob, json, os, re, sys

limits = json.loads(sys.argv[1])
criterion, stamp, log = sys.argv[2], os.path.getmtime(sys.argv[3]), sys.argv[4]
disk = limits["disk_write_mb_s"]
print(f"fio O_DIRECT write (1 MiB, QD8): {disk} MB/s; "
      f"16 KiB write+fdatasync: {limits['fdatasync_per_s']}/s "
      f"(p99 {limits['fdatasync_p99_us']} us); O_DIRECT read: {limits['disk_read_mb_s']} MB/s")
rows = []
for est in glob.glob(f"{criterion}/*/**/new/estimates.json", recursive=True):
    if os.path.getmtime(est) < stamp:
        continue  # left over from an earlier run
    meta = json.load(open(os.path.join(os.path.dirname(est), "benchmark.json")))
    if meta["group_id"] not in ("append", "read"):
        continue
    mean_ns = json.load(open(est))["mean"]["point_estimate"]
    per_iter = (meta.get("throughput") or {}).get("Bytes")
    mb_s = per_iter / mean_ns * 1e3 if per_iter else float("nan")
    rows.append((meta["full_id"], mean_ns, mb_s))
if not rows:
    sys.exit("storage-report: no fresh criterion estimates found")
print(f"{'bench':52} {'mean/iter':>12} {'MB/s':>9} {'% fio write':>12}")
for name, mean_ns, mb_s in sorted(rows):
    ratio = f"{100 * mb_s / disk:11.1f}%" if name.startswith("append/") else f"{'':>12}"
    print(f"{name:52} {mean_ns / 1e3:10.1f}us {mb_s:9.0f} {ratio}")
for name, _, mb_s in rows:
    if name == "append/64KiB_batches_1KiB_records/no_sync":
        verdict = "meets" if mb_s >= 0.9 * disk else "MISSES"
        print(f"append/no_sync / fio write = {mb_s / disk:.1%} ({verdict} the 90% target)")
text = open(log, errors="replace").read()
for line in re.findall(r"^append/[^\n]*fsyncs per append[^\n]*$", text, re.M):
    print(line)
for line in re.findall(r"^read/batch_cache: zero-copy[^\n]*$", text, re.M):
    print(line)
PY
