#!/usr/bin/env bash
# Runs the benchmarks whose numbers BENCHMARKS.md records, and keeps their output.
#
#   scripts/bench.sh            micro-benchmarks (hot_path) and the receiver load benchmark
#   scripts/bench.sh load       only the receiver load benchmark
#   scripts/bench.sh size       also build the release binary and print its size (several minutes)
#
# The load benchmark's knobs (LOAD_SECONDS, LOAD_ROUNDS, LOAD_CONNECTIONS, ...) pass through the environment;
# see the header of benches/receiver_load.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
out="target/bench-results"
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
what="${1:-all}"

{
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) logical CPUs)"
    rustc --version
} | tee "$out/$stamp-machine.txt"

if [ "$what" = all ]; then
    cargo bench --bench hot_path 2>&1 | tee "$out/$stamp-hot_path.txt"
fi
cargo bench --bench receiver_load 2>&1 | tee "$out/$stamp-receiver_load.txt"

if [ "$what" = size ]; then
    cargo build --release --locked
    ls -l target/release/asc-webhook-operator | tee "$out/$stamp-size.txt"
fi
echo "results in $out/$stamp-*"
