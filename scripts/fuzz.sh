#!/usr/bin/env bash
# Coverage-guided fuzzing of the broker's hostile-input surface with libFuzzer:
#   decode_request  - one request frame of any API and version, as a connection decodes it
#   record_batches  - a produce payload through batch validation and bounded record decoding
#   fetch_splice    - record sets spliced by reference into Fetch frames vs plain encoding
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz if it is
# missing. Seeds come from real client requests (tests/seeds, see capture-seeds.py).
# libFuzzer stops on a panic, on any single allocation over 256 MiB and on RSS over 2 GiB.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 600)] [TARGET ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECS="${1:-600}"
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(decode_request record_batches fetch_splice)

cargo +nightly --version >/dev/null 2>&1 || { echo "fuzz.sh needs a nightly toolchain" >&2; exit 1; }
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

cd "$ROOT/fuzz"
mkdir -p corpus/decode_request corpus/record_batches corpus/fetch_splice
cp "$ROOT"/tests/seeds/*.bin corpus/decode_request/
cp "$ROOT"/tests/seeds/batches/*.bin corpus/record_batches/
cp "$ROOT"/tests/seeds/batches/*.bin corpus/fetch_splice/

status=0
for t in "${TARGETS[@]}"; do
    log="$ROOT/fuzz/$t.log"
    echo "==> $t for ${SECS}s (log: $log)" >&2
    if cargo +nightly fuzz run -s none "$t" -- -max_total_time="$SECS" -malloc_limit_mb=256 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    echo "$t: ${execs:-?} executions, $result" >&2
done
exit "$status"
