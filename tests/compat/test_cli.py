"""The `strata` CLI against the broker, with kafka-python and confluent-kafka on the other
side: what `strata produce` writes they read, what they write `strata consume` prints, and
`strata group` sees the groups they commit for."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from clients import create_topic


def strata_binary() -> str:
    explicit = os.environ.get("STRATA_CLI_BIN")
    if explicit:
        return explicit
    broker = os.environ.get("STRATA_BROKER_BIN")
    if broker:
        return str(Path(broker).with_name("strata"))
    return str(Path(__file__).resolve().parents[2] / "target" / "debug" / "strata")


def strata(bootstrap: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STRATA_BOOTSTRAP"}
    return subprocess.run([strata_binary(), "-b", bootstrap, *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_strata_produce_kafka_python_reads(bootstrap, topic):
    create_topic(bootstrap, topic, 2)
    lines = "".join(f"key{i % 3}:v{i}\n" for i in range(50))
    ok(strata(bootstrap, "produce", topic, "-K", ":", "-H", "origin=cli", "--compression", "gzip",
              stdin=lines))
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    tps = [TopicPartition(topic, p) for p in range(2)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = [m for m in consumer]
    consumer.close()
    assert len(got) == 50
    by_key = {}
    for m in got:
        by_key.setdefault(m.key, set()).add(m.partition)
        assert m.headers == [("origin", b"cli")]
        i = int(m.value.decode()[1:])
        assert m.key == f"key{i % 3}".encode()
    assert all(len(ps) == 1 for ps in by_key.values()), by_key


def test_confluent_kafka_produces_strata_prints(bootstrap, topic):
    create_topic(bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": "snappy"})
    for i in range(20):
        p.produce(topic, key=f"k{i}", value=f"value-{i}", headers=[("n", str(i).encode())],
                  timestamp=1_700_000_000_000 + i)
    assert p.flush(30) == 0
    out = ok(strata(bootstrap, "consume", topic, "--from-beginning", "-e", "-f", "json"))
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["value"] for r in recs] == [f"value-{i}" for i in range(20)]
    assert [r["key"] for r in recs] == [f"k{i}" for i in range(20)]
    assert recs[7]["headers"] == {"n": "7"}
    assert recs[7]["timestamp"] == 1_700_000_000_007
    out = ok(strata(bootstrap, "consume", topic, "--from-timestamp", "1700000000015", "-e"))
    assert out.splitlines() == [f"value-{i}" for i in range(15, 20)]


def test_strata_group_sees_kafka_python_commits_and_replays(bootstrap, topic):
    create_topic(bootstrap, topic, 1)
    kp = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(30):
        kp.send(topic, value=f"m{i}".encode(), timestamp_ms=1_700_000_000_000 + i * 1000)
    kp.flush(30)
    kp.close()
    group = f"{topic}-g"
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=5000)
    seen = [m for m in c]
    c.commit()
    c.close()
    assert len(seen) == 30
    desc = json.loads(ok(strata(bootstrap, "group", "describe", group, "-o", "json")))
    assert desc["offsets"][0]["committed_offset"] == 30 and desc["total_lag"] == 0
    proc = strata(bootstrap, "replay", topic, "-g", group, "--from-timestamp", "1700000020000")
    ok(proc)
    assert "will re-read 10 records" in proc.stderr, proc.stderr
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      enable_auto_commit=False, consumer_timeout_ms=5000)
    again = [m.value.decode() for m in c]
    c.close()
    assert again == [f"m{i}" for i in range(20, 30)]


def test_strata_cli_missing_topic_exit_code(bootstrap):
    proc = strata(bootstrap, "consume", "no-such-topic-for-cli", "-e")
    assert proc.returncode == 4, proc.stderr
    assert "error:" in proc.stderr
