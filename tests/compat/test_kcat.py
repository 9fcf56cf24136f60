"""Debian's kcat (librdkafka 2.0.2) against Strata.

Old librdkafka is strict about ApiVersions (unexpected tagged fields: "Read underflow") and
derives its feature set (compression codecs, record batch format) from the advertised
version ranges, so it catches mistakes current clients forgive.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from clients import KCAT, assert_clean, create_topic, kcat

def test_kcat_installed():
    assert KCAT, "kcat is not installed (apt-get install kcat)"
    out = subprocess.run([KCAT, "-V"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "librdkafka" in out.stdout + out.stderr


def test_kcat_metadata_list(bootstrap, broker, topic):
    create_topic(bootstrap, topic, 3)
    proc = kcat(bootstrap, "-L")
    assert_clean(proc, "kcat -L")
    assert "1 brokers:" in proc.stdout, proc.stdout
    assert re.search(rf"broker \d+ at 127\.0\.0\.1:{broker.port}", proc.stdout), proc.stdout
    assert f'topic "{topic}" with 3 partitions:' in proc.stdout, proc.stdout

    proc = kcat(bootstrap, "-L", "-J")
    assert_clean(proc, "kcat -L -J")
    md = json.loads(proc.stdout)
    assert [(b["name"]) for b in md["brokers"]] == [f"127.0.0.1:{broker.port}"], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, sorted(topics)
    parts = topics[topic]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1, 2]
    assert all(p["leader"] == md["brokers"][0]["id"] for p in parts), parts


def test_kcat_produce_consume_lines(bootstrap, topic):
    create_topic(bootstrap, topic, 1)
    lines = [f"line {i} " + "x" * (i % 17) for i in range(200)] + ["", "last line"]
    # kcat skips empty lines on produce unless -Z; keep what it sends.
    sent = [line for line in lines if line]
    proc = kcat(bootstrap, "-P", "-t", topic, stdin="\n".join(lines) + "\n")
    assert_clean(proc, "kcat -P")

    proc = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e")
    assert_clean(proc, "kcat -C")
    assert proc.stdout.split("\n")[:-1] == sent


def test_kcat_produce_consume_keys(bootstrap, topic):
    create_topic(bootstrap, topic, 1)
    pairs = [(f"key{i % 5}", f"value {i}") for i in range(100)]
    proc = kcat(bootstrap, "-P", "-t", topic, "-K", ":",
                stdin="".join(f"{k}:{v}\n" for k, v in pairs))
    assert_clean(proc, "kcat -P -K:")

    proc = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e",
                "-f", "%o|%k|%s\n")
    assert_clean(proc, "kcat -C -f")
    got = [tuple(line.split("|", 2)) for line in proc.stdout.splitlines()]
    assert got == [(str(i), k, v) for i, (k, v) in enumerate(pairs)]

    # Reading from an offset inside the log returns exactly the tail.
    proc = kcat(bootstrap, "-C", "-t", topic, "-p", "0", "-o", "37", "-e", "-K", ":")
    assert_clean(proc, "kcat -C -o 37")
    assert proc.stdout.splitlines() == [f"{k}:{v}" for k, v in pairs[37:]]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kcat_compression(bootstrap, topic, codec):
    create_topic(bootstrap, topic, 1)
    lines = [f"{codec} message {i} " + "abc" * (i % 40) for i in range(300)]
    # -d msg: librdkafka logs one "Produce MessageSet ... (..., <codec>)" line per batch.
    proc = kcat(bootstrap, "-P", "-t", topic, "-X", f"compression.codec={codec}",
                "-X", "linger.ms=50", "-d", "msg", stdin="\n".join(lines) + "\n")
    assert_clean(proc, f"kcat -P compression.codec={codec}")
    # Old librdkafka silently falls back to no compression when it decides (from the
    # advertised API versions) that the broker cannot take the codec.
    refused = [ln for ln in proc.stderr.splitlines() if "does not support compression" in ln]
    assert not refused, refused[:2]
    batches = [ln for ln in proc.stderr.splitlines() if "Produce MessageSet with" in ln]
    assert batches, proc.stderr
    wrong = [ln for ln in batches if not ln.endswith(f", {codec})")]
    assert not wrong, f"{len(wrong)}/{len(batches)} batches not sent as {codec}: {wrong[:2]}"

    proc = kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e")
    assert_clean(proc, "kcat -C")
    assert proc.stdout.splitlines() == lines
