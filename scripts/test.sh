#!/usr/bin/env bash
# Strata's test command. On a fresh Debian 12 machine (with a Rust toolchain) it installs
# what is missing and runs everything:
#
#   1. Debian packages: libclang-dev (bindgen for the rocksdb crate), kcat (compat suite),
#      fuse3 (the power-loss test's file system),
#      python3-venv (only if this python3 cannot create virtual environments), and a C/C++
#      toolchain if there is none. `apt-get update` runs once, and only when something is missing.
#   2. cargo build --workspace --all-targets
#   3. cargo test --workspace
#   3b. librdkafka's own tests 0011 and 0077 (tests/librdkafka/run.sh: its C test runner,
#      built once from the rdkafka-sys build and cached in ~/.cache, against a broker).
#   4. The cross-client compat suite: a venv with tests/compat/requirements.txt, then
#      pytest tests/compat against the freshly built strata-broker binary.
#   5. The compose smoke test (deploy/smoke-test.sh) when a Docker engine is reachable;
#      skipped, and reported as skipped, otherwise.
#
# Honours CARGO_TARGET_DIR. STRATA_VENV overrides the venv location (default
# tests/compat/.venv); extra arguments are passed to pytest (e.g. `-k kcat`).
# Exits non-zero if any step fails; prints a summary either way.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${STRATA_VENV:-$ROOT/tests/compat/.venv}"
REQUIREMENTS="$ROOT/tests/compat/requirements.txt"

declare -a SUMMARY=()
FAILED=0

log() { printf '\n==> %s\n' "$*" >&2; }

record() { # record STATUS NAME SECONDS
    SUMMARY+=("$(printf '%-4s  %-42s %5ss' "$1" "$2" "$3")")
    if [[ "$1" == FAIL ]]; then FAILED=1; fi
}

print_summary() {
    local rc=$?
    printf '\n==================== strata test summary ====================\n' >&2
    if ((${#SUMMARY[@]})); then printf '%s\n' "${SUMMARY[@]}" >&2; fi
    if ((rc != 0 || FAILED)); then
        printf 'RESULT: FAILED\n' >&2
    else
        printf 'RESULT: all passed\n' >&2
    fi
}
trap print_summary EXIT

# run_step NAME CMD... : runs CMD, records PASS/FAIL and its duration; returns CMD's status.
run_step() {
    local name="$1"; shift
    local start=$SECONDS
    log "$name: $*"
    if "$@"; then
        record PASS "$name" $((SECONDS - start))
    else
        local rc=$?
        record FAIL "$name (exit $rc)" $((SECONDS - start))
        return "$rc"
    fi
}

# Functions below run as run_step's `if` condition, where bash ignores `set -e`: every
# command that can fail says `|| return 1` itself.

# ---------------------------------------------------------------------------- packages
installed() { # a Debian package is installed (not merely known or half-removed)
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

ensure_system_packages() {
    # fuse3: fusermount3, with which the power-loss test mounts its file system when not
    # run as root (without FUSE that test is skipped, with a message).
    local -a wanted=(libclang-dev kcat fuse3) missing=()
    # bindgen needs libclang; rocksdb/zstd/lz4 build C/C++ code; rdkafka-sys runs make.
    command -v c++ >/dev/null 2>&1 || wanted+=(g++)
    command -v cc >/dev/null 2>&1 || wanted+=(gcc)
    command -v make >/dev/null 2>&1 || wanted+=(make)
    # Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip); other
    # interpreters (pyenv, python.org builds) bring it themselves.
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        wanted+=(python3-venv)
    fi
    local p
    for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done
    if ((${#missing[@]} == 0)); then
        echo "system packages present: ${wanted[*]}" >&2
        return 0
    fi
    local -a sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" || return 1
}

# ---------------------------------------------------------------------------- python
ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        echo "venv at $VENV is broken; recreating" >&2
        rm -rf "$VENV" || return 1
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" || return 1
    fi
    # Reinstall only when requirements.txt changed since the last successful install.
    local stamp="$VENV/.strata-requirements.sha256" want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)" || return 1
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "venv $VENV is up to date with requirements.txt" >&2
        return 0
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" || return 1
    echo "$want" >"$stamp"
}

# ---------------------------------------------------------------------------- main
command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install the Rust toolchain (https://rustup.rs), then re-run" >&2
    exit 1
}

run_step "system packages" ensure_system_packages
run_step "cargo build --workspace --all-targets" cargo build --workspace --all-targets

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BROKER_BIN="$TARGET_DIR/debug/strata-broker"
[[ -x "$BROKER_BIN" ]] || { echo "build produced no $BROKER_BIN" >&2; exit 1; }

# Test steps run even if an earlier one failed, so one run reports everything.
run_step "cargo test --workspace" cargo test --workspace || true
run_step "librdkafka's own tests 0011, 0077" "$ROOT/tests/librdkafka/run.sh" "$TARGET_DIR" || true
if run_step "python venv ($VENV)" ensure_venv; then
    export STRATA_BROKER_BIN="$BROKER_BIN"
    run_step "pytest tests/compat" "$VENV/bin/python" -m pytest "$ROOT/tests/compat" -q "$@" || true
else
    record FAIL "pytest tests/compat (not run: no venv)" 0
fi

smoke() {
    STRATA_BROKER_BIN="$BROKER_BIN" SMOKE_PYTHON="$VENV/bin/python" "$ROOT/deploy/smoke-test.sh"
}
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && [[ -x "$VENV/bin/python" ]]; then
    run_step "compose smoke test (deploy/)" smoke || true
else
    echo "no Docker engine (or no venv): the compose smoke test is skipped" >&2
    record SKIP "compose smoke test (no Docker engine)" 0
fi

exit "$FAILED"
