#!/usr/bin/env bash
# The compose smoke test: builds the images, runs deploy/docker-compose.yml (with the
# override deploy/docker-compose.smoke.yml, which replaces the public images this machine
# cannot pull), produces and consumes with real clients from the host and from inside the
# compose network, checks /metrics and every Grafana query against Prometheus, kills and
# restarts the broker, and tears everything down (deploy/smoke_test.py has the checks).
#
#   deploy/smoke-test.sh            # after the test command built target/debug/strata-broker
#
# Needs a Docker engine with docker-compose (v1.29+) or `docker compose`; without one it
# prints SKIP and exits 0. The base image debian:bookworm-slim is built locally with
# debootstrap when the engine does not have it (no registry is needed). Environment:
# STRATA_BROKER_BIN (the broker binary to package), SMOKE_PYTHON (a python with
# confluent-kafka; default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
BROKER_BIN="${STRATA_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/strata-broker}"
PYTHON="${SMOKE_PYTHON:-python3}"
BASE_IMAGE=debian:bookworm-slim

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "SKIP: no Docker engine reachable; the compose smoke test did not run" >&2
    exit 0
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
else
    echo "SKIP: Docker has no compose (docker compose / docker-compose); the smoke test did not run" >&2
    exit 0
fi
[[ -x "$BROKER_BIN" ]] || { echo "no broker binary at $BROKER_BIN (build it first)" >&2; exit 1; }

# The base image, made locally when missing: a minimal Debian 12 root file system.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "building $BASE_IMAGE with debootstrap" >&2
    if ! command -v debootstrap >/dev/null 2>&1; then
        env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap \
            || { env DEBIAN_FRONTEND=noninteractive apt-get update \
                 && env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap; }
    fi
    rootfs="$(mktemp -d /tmp/strata-rootfs.XXXXXX)"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >&2
    tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE"
    rm -rf "$rootfs"
fi

mkdir -p "$DEPLOY/.build"
cp "$BROKER_BIN" "$DEPLOY/.build/strata-broker"
# moto_server's wheels, fetched here (the host reaches PyPI; containers may not trust its
# certificate chain) and installed offline in the S3 image.
if [[ ! -f "$DEPLOY/.build/wheels/.complete" ]]; then
    rm -rf "$DEPLOY/.build/wheels"
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$DEPLOY/.build/wheels" "moto[server]==5.2.6"
    touch "$DEPLOY/.build/wheels/.complete"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export STRATA_HOST_PORT STRATA_ADMIN_PORT PROMETHEUS_PORT
STRATA_HOST_PORT="$(free_port)"
STRATA_ADMIN_PORT="$(free_port)"
PROMETHEUS_PORT="$(free_port)"
PROJECT="stratasmoke"
COMPOSE=("${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$DEPLOY/docker-compose.yml" -f "$DEPLOY/docker-compose.smoke.yml")
# One more override file, for trying changes (e.g. SMOKE_EXTRA_COMPOSE=/tmp/more.yml).
if [[ -n "${SMOKE_EXTRA_COMPOSE:-}" ]]; then COMPOSE+=(-f "$SMOKE_EXTRA_COMPOSE"); fi
export SMOKE_COMPOSE="${COMPOSE[*]}"

down() { "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
down
trap 'status=$?; if ((status != 0)); then "${COMPOSE[@]}" logs --tail 80 strata s3 >&2 || true; fi; down' EXIT

"${COMPOSE[@]}" build strata s3 prometheus
"${COMPOSE[@]}" up -d strata prometheus
"$PYTHON" "$DEPLOY/smoke_test.py"
