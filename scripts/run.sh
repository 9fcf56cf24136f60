#!/usr/bin/env bash
# Strata's run command: builds and starts the broker (dev profile, the project's only one).
# On a fresh Debian 12 machine it first installs libclang-dev (bindgen for the rocksdb crate)
# and a C/C++ toolchain if missing; `apt-get update` runs only when something is missing.
#
#   scripts/run.sh                                 # 127.0.0.1:9092, data in ./data
#   scripts/run.sh --listen 127.0.0.1:19092 --data-dir /tmp/strata
#
# Arguments go to strata-broker unchanged; STRATA_* environment variables work as usual.
# Honours CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

wanted=(libclang-dev)
command -v c++ >/dev/null 2>&1 || wanted+=(g++)
command -v cc >/dev/null 2>&1 || wanted+=(gcc)
missing=()
for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install the Rust toolchain (https://rustup.rs), then re-run" >&2
    exit 1
}

# No `cd`: relative paths in the arguments (--config, --data-dir) and the default ./data
# stay relative to the caller's working directory.
exec cargo run --manifest-path "$ROOT/Cargo.toml" -p strata-broker -- "$@"
