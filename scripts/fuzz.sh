#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints the executions libFuzzer reports.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 120 s, all targets)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the sanitizer flags need
# RUSTC_BOOTSTRAP=1, which this script sets. Runs niced, one target at a time, on one core. New corpus
# entries land in fuzz/corpus/<target>/ (ignored by git except the seed-* files); crashes land in
# fuzz/artifacts/<target>/: copy one to fuzz/regressions/<target>/ to make it a `cargo test` regression.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-120}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(signature_header event_parse rule_matching)
fi
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
nice -n 10 cargo fuzz build -s "$sanitizer"
mkdir -p target/logs
total=0
for t in "${targets[@]}"; do
    dict=()
    [ -f "$t.dict" ] && dict=("-dict=$t.dict")
    log="target/logs/$t.log"
    # -max_total_time bounds the run; -runs bounds it too, so a fast target cannot run forever.
    nice -n 10 cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -runs=100000000 -max_len=65536 -print_final_stats=1 "${dict[@]}" \
        >"$log" 2>&1 || { echo "$t: FAILED, see fuzz/$log and fuzz/artifacts/$t/"; tail -30 "$log"; exit 1; }
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 | grep -Eo '[0-9]+')
    rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || echo '?')
    echo "$t: $runs executions in ${seconds}s (avg $rate exec/s, coverage $cov edges), no crash"
    total=$((total + runs))
done
echo "total: $total executions"
