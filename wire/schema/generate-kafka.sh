#!/usr/bin/env bash
# Regenerates wire/src/kafka/generated/ from Kafka's JSON message specs
# (default ../shared/kafka-message-specs next to the repository) with the project's own
# generator, wire/codegen. Usage: bash wire/schema/generate-kafka.sh [SPEC_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
specs=${1:-$root/../shared/kafka-message-specs}
out=$root/wire/src/kafka/generated
rm -rf "$out"
cargo run -q --manifest-path "$root/Cargo.toml" -p tidelog-kafka-codegen -- "$specs" "$out"
rustfmt --edition 2021 "$out"/*.rs
