#!/usr/bin/env bash
# Runs tests of librdkafka's own test suite (its `tests/` directory, C) against a strata
# broker: by default 0011 (produce_batch, including keyless records refused on a topic made
# compacted) and 0077 (compaction, with every codec).
#
#   tests/librdkafka/run.sh TARGET_DIR [TESTS]      e.g. TESTS=0011,0077
#
# The suite's source comes with the rdkafka-sys crate, which builds librdkafka in
# TARGET_DIR/debug/build/rdkafka-sys-*/out; its test runner is built from there (linked
# against that same librdkafka) in a cache outside the clone, STRATA_LIBRDKAFKA_TESTS
# (default ~/.cache/strata-librdkafka-tests), and rebuilt when librdkafka changes. Topics the
# suite creates with Kafka's bin/kafka-topics.sh go through tests/librdkafka/bin/, a stand-in
# that uses the `strata` CLI. The broker runs with a temporary data dir on a free port and is
# stopped by PID.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET_DIR="${1:?usage: run.sh TARGET_DIR [TESTS]}"
TESTS="${2:-0011,0077}"
CACHE="${STRATA_LIBRDKAFKA_TESTS:-$HOME/.cache/strata-librdkafka-tests}"

# The newest librdkafka build of rdkafka-sys (the one the Rust tests link).
OUT="$(ls -dt "$TARGET_DIR"/debug/build/rdkafka-sys-*/out 2>/dev/null | while read -r d; do
    [[ -f "$d/src/librdkafka.a" && -d "$d/tests" ]] && { echo "$d"; break; }; done || true)"
[[ -n "$OUT" ]] || { echo "no librdkafka build under $TARGET_DIR/debug/build (cargo build first)" >&2; exit 1; }

stamp="$(stat -c '%s %Y' "$OUT/src/librdkafka.a")"
if [[ ! -x "$CACHE/tests/test-runner" || "$(cat "$CACHE/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    echo "building librdkafka's test runner from $OUT (a few minutes, once)" >&2
    rm -rf "$CACHE"
    mkdir -p "$(dirname "$CACHE")"
    cp -a "$OUT" "$CACHE"
    make -C "$CACHE/tests" -j"$(nproc)" test-runner >"$CACHE/build.log" 2>&1 \
        || { tail -30 "$CACHE/build.log" >&2; exit 1; }
    echo "$stamp" >"$CACHE/.stamp"
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
STRATA_LISTEN="127.0.0.1:$port" STRATA_ADMIN_LISTEN="127.0.0.1:0" STRATA_DATA_DIR="$work/data" \
    STRATA_LOG_CLEANER_BACKOFF_MS=1000 "$TARGET_DIR/debug/strata-broker" >"$work/broker.log" 2>&1 &
broker=$!
cleanup() {
    kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

printf 'bootstrap.servers=127.0.0.1:%s\n' "$port" >"$work/test.conf"
cd "$CACHE/tests"
status=0
LD_LIBRARY_PATH="$CACHE/src:$CACHE/src-cpp" TESTS="$TESTS" RDKAFKA_TEST_CONF="$work/test.conf" \
    TEST_KAFKA_VERSION=4.0.0 BROKERS="127.0.0.1:$port" KAFKA_PATH="$HERE" \
    STRATA_CLI="$TARGET_DIR/debug/strata" ./test-runner >"$work/tests.log" 2>&1 || status=$?
grep -aE 'PASS|FAIL|SKIP' "$work/tests.log" | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
if ((status != 0)); then
    echo "librdkafka tests $TESTS failed (exit $status); the last lines and the broker's log:" >&2
    tail -40 "$work/tests.log" >&2
    tail -20 "$work/broker.log" >&2
fi
exit "$status"
