"""The compose smoke test (run by deploy/smoke-test.sh, which prepares the images).

Starts deploy/docker-compose.yml with the smoke override, then, with real clients:
produces and consumes through the published port from the host (confluent-kafka) and from a
container on the compose network (kcat at strata:29092); checks /metrics; waits for the
broker to archive to the S3 store; runs every PromQL query of the Grafana dashboard against
the running Prometheus and requires data for each; kills the broker container (SIGKILL),
starts it again and checks that nothing acknowledged was lost; tears everything down.

Run by smoke-test.sh, which sets SMOKE_COMPOSE (the compose command with project and
files), STRATA_HOST_PORT, STRATA_ADMIN_PORT and PROMETHEUS_PORT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEPLOY = Path(__file__).resolve().parent
COMPOSE = os.environ["SMOKE_COMPOSE"].split()
KAFKA = f"localhost:{os.environ['STRATA_HOST_PORT']}"
ADMIN = f"http://127.0.0.1:{os.environ['STRATA_ADMIN_PORT']}"
PROMETHEUS = f"http://127.0.0.1:{os.environ['PROMETHEUS_PORT']}"

TOPIC, ARCHIVED, GROUP = "smoke", "smoke-archived", "smoke-host"
N, N_ARCHIVED, N_INSIDE = 3000, 2000, 10


def log(msg: str) -> None:
    print(f"[smoke] {msg}", flush=True)


def compose(*args: str, check: bool = True, capture: bool = False) -> str:
    r = subprocess.run([*COMPOSE, *args], check=check, text=True,
                       stdout=subprocess.PIPE if capture else None)
    return r.stdout or ""


def wait(what: str, timeout: float, f):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            v = f()
            if v:
                return v
            last = v
        except Exception as e:  # not ready yet
            last = e
        time.sleep(1)
    raise SystemExit(f"timed out waiting for {what}: {last!r}")


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def produce(topic: str, n: int, partitions: int) -> int:
    acked = []
    p = Producer({"bootstrap.servers": KAFKA, "acks": "all", "linger.ms": 5,
                  "batch.size": 4096})
    for i in range(n):
        p.produce(topic, value=(b"smoke-%06d-" % i) * 60, key=b"k%d" % i,
                  partition=i % partitions,
                  on_delivery=lambda err, msg: acked.append(err is None))
        p.poll(0)
    p.flush(60)
    if len(acked) != n or not all(acked):
        raise SystemExit(f"{topic}: {sum(acked)} of {n} acknowledged")
    return n


def consume_count(topic: str, partitions: int, expected: int, group: str | None = None) -> int:
    conf = {"bootstrap.servers": KAFKA, "group.id": group or "smoke-reader",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    c = Consumer(conf)
    if group:
        c.subscribe([topic])
    else:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = set()
    deadline = time.time() + 60
    while len(seen) < expected and time.time() < deadline:
        m = c.poll(1)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        seen.add((m.partition(), m.offset()))
    if group:
        c.commit(asynchronous=False)
    c.close()
    return len(seen)


def main() -> None:
    log("waiting for the broker to be ready")
    wait("/ready", 120, lambda: http(f"{ADMIN}/ready")[0] == 200)
    status, _ = http(f"{ADMIN}/health")
    assert status == 200, status

    admin = AdminClient({"bootstrap.servers": KAFKA})
    futures = admin.create_topics([
        NewTopic(TOPIC, 3, 1),
        NewTopic(ARCHIVED, 1, 1, config={"remote.storage.enable": "true",
                                         "segment.bytes": "16384"}),
    ])
    for f in futures.values():
        f.result(30)

    log("producing from the host")
    produce(TOPIC, N, 3)
    produce(ARCHIVED, N_ARCHIVED, 1)
    got = consume_count(TOPIC, 3, N, group=GROUP)
    assert got == N, f"host consumer read {got} of {N}"

    log("producing and consuming inside the compose network (kcat at strata:29092)")
    lines = "".join(f"inside-{i}\n" for i in range(N_INSIDE))
    r = subprocess.run([*COMPOSE, "run", "--rm", "-T", "kcat", "kcat", "-b", "strata:29092",
                        "-P", "-t", TOPIC, "-p", "0", "-X", "acks=all"],
                       input=lines, text=True, check=True)
    out = compose("run", "--rm", "-T", "kcat", "kcat", "-b", "strata:29092", "-C", "-t",
                  TOPIC, "-o", "beginning", "-e", "-q", "-f", "%o\\n", capture=True)
    inside = [line for line in out.splitlines() if line.strip().isdigit()]
    assert len(inside) == N + N_INSIDE, f"kcat in the network read {len(inside)}"

    log("checking /metrics")
    _, metrics = http(f"{ADMIN}/metrics")
    want = f'strata_topic_records_in_total{{topic="{TOPIC}"}} {N + N_INSIDE}'
    assert want in metrics, f"{want!r} not in /metrics"
    # One refused request, so that the error panel has data.
    for f in admin.create_topics([NewTopic(TOPIC, 3, 1)]).values():
        try:
            f.result(30)
            raise SystemExit("creating an existing topic succeeded")
        except KafkaException:
            pass

    log("waiting for segments in the S3 archive")
    wait("archive uploads", 120, lambda: any(
        line.startswith(f'strata_archive_uploaded_segments_total{{topic="{ARCHIVED}"}}')
        and float(line.split()[-1]) > 0
        for line in http(f"{ADMIN}/metrics")[1].splitlines()))

    log("running the Grafana dashboard's queries against Prometheus")
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "strata.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]

    def answered(expr: str):
        q = urllib.parse.urlencode({"query": expr})
        status, body = http(f"{PROMETHEUS}/api/v1/query?{q}")
        data = json.loads(body)
        return status == 200 and data["status"] == "success" and data["data"]["result"]

    for expr in exprs:
        wait(f"data for {expr}", 120, lambda e=expr: answered(e))
    log(f"{len(exprs)} dashboard queries have data")

    log("killing the broker container (SIGKILL) and starting it again")
    compose("kill", "strata")
    compose("up", "-d", "--no-deps", "strata")
    wait("/ready after the restart", 120, lambda: http(f"{ADMIN}/ready")[0] == 200)
    got = consume_count(TOPIC, 3, N + N_INSIDE)
    assert got == N + N_INSIDE, f"after the restart: {got} of {N + N_INSIDE} records"
    got = consume_count(ARCHIVED, 1, N_ARCHIVED)
    assert got == N_ARCHIVED, f"after the restart: {got} of {N_ARCHIVED} archived-topic records"
    log("smoke test passed")


if __name__ == "__main__":
    sys.exit(main())
