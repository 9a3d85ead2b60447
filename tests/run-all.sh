#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, unit/property/integration
# tests (real files, real crashes), benches in test mode, and a short fuzz smoke run.
# Usage: bash tests/run-all.sh        (TIDELOG_FUZZ_SECONDS=0 skips fuzzing)
# The Kafka compatibility tests run real Kafka clients (kafka-python, confluent-kafka, kcat);
# tests/kafka/setup.sh provisions them first (a no-op when already done).
# TIDELOG_SKIP_KAFKA_CLIENTS=1 skips provisioning and those tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase says when it starts (seconds since the start), so CI's output shows where time goes.
phase() { echo "== $1 (at ${SECONDS}s)"; }

if [[ ${TIDELOG_SKIP_KAFKA_CLIENTS:-} != 1 ]]; then
  phase "kafka clients (tests/kafka/setup.sh)"
  bash tests/kafka/setup.sh
fi

phase "cargo fmt"
cargo fmt --all -- --check

phase "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

phase "cargo test (unit, property, integration, benches once)"
cargo test --workspace --all-targets

fuzz_seconds=${TIDELOG_FUZZ_SECONDS:-20}
if ((fuzz_seconds > 0)); then
  phase "fuzz smoke (${fuzz_seconds}s per target)"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --quiet
  fi
  # One target folder for both fuzz crates: what they share (the wire crate, libfuzzer-sys
  # and the rest, all built with the sanitizer's flags) is built once.
  fuzz_target_dir=$PWD/target/fuzz
  for crate in wire/fuzz engine/fuzz; do
    (
      cd "$crate"
      for target in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
        # A committed seed corpus (seeds/<target>) starts each run past the trivial inputs.
        # An input running over 60 s is a hang, reported with its input (the default, 20
        # minutes, cost CI its time budget at stop 25).
        seeds=()
        [[ -d seeds/$target ]] && seeds=("corpus/$target" "seeds/$target")
        mkdir -p "corpus/$target"
        log=$(mktemp)
        if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$fuzz_target_dir" "$target" "${seeds[@]}" -- -max_total_time="$fuzz_seconds" -timeout=60 >"$log" 2>&1; then
          # Enough to diagnose from CI's output alone: libFuzzer's report, and each input it
          # saved (base64), which `cargo fuzz run <target> <file>` replays.
          echo "fuzz target $crate/$target failed:"
          grep -v '^#[0-9]' "$log" | tail -n 80
          for f in artifacts/"$target"/*; do
            [[ -f $f ]] && echo "$f: $(base64 -w0 "$f")"
          done
          rm -f "$log"
          exit 1
        fi
        tail -n 3 "$log"
        rm -f "$log"
      done
    )
  done
fi
phase "all checks passed"
