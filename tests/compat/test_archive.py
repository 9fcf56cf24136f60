"""Tiered reads through Python clients: a topic with remote.storage.enable=true whose oldest
segments retention has already dropped from local disk (after the archive connector copied
them) is replayed from offset 0 by kafka-python and confluent-kafka, every record intact;
with the archive in a local directory and in S3 (moto_server, an external S3 server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import boto3
import pytest

from confluent_kafka import OFFSET_BEGINNING, TopicPartition as CkTopicPartition
from kafka import KafkaConsumer, TopicPartition

from clients import consume_all, create_topic, kp_poll, make_consumer, produce_records
from harness import CapturingLogger, free_port, wait_until

N = 600
# Stamped 2023: a minute of retention.ms has long expired them, so retention drops every
# sealed segment as soon as the archive holds it.
BASE_TS = 1_700_000_000_000


def value(i: int) -> bytes:
    return (b"archived-%05d-" % i) * 60


BUCKET = "strata-archive"
PREFIX = "compat/tiered"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory):
    """moto_server on 127.0.0.1 (a free port) with the bucket created; yields the endpoint."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"moto_server exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start within 60 s"
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint,
                          aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                          region_name=S3_CREDENTIALS["AWS_REGION"])
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint, s3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.parametrize("store", ["directory", "s3"])
def test_python_clients_replay_from_the_archive(broker_factory, topic, store, request):
    env = {
        "STRATA_SEGMENT_BYTES": "16384",
        "STRATA_ARCHIVE_INTERVAL_MS": "100",
        "STRATA_RETENTION_CHECK_INTERVAL_MS": "200",
    }
    if store == "s3":
        endpoint, s3 = request.getfixturevalue("moto_s3")
        env.update(S3_CREDENTIALS, AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true",
                   STRATA_ARCHIVE_URL=f"s3://{BUCKET}/{PREFIX}")
    b = broker_factory("tiered", env=env)
    create_topic(b.bootstrap, topic, 1,
                 configs={"remote.storage.enable": "true", "retention.ms": "-1",
                          "local.retention.ms": "60000"})
    # Small batches, so that the records fill many segments.
    out = produce_records(b.bootstrap, topic,
                          [(0, b"k%d" % i, value(i), BASE_TS + i) for i in range(N)],
                          **{"batch.size": 4096})
    assert [o for o, _ in out] == list(range(N)), out[:5]
    wait_until(lambda: "retention dropped segments" in b.log_tail(400), 30,
               "retention to drop archived segments from local disk")
    if store == "s3":
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{topic}/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert any(k.endswith("/0/manifest") for k in keys), keys
        assert any(k.endswith(".log") for k in keys), keys

    kp = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False,
                       auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    kp.assign([tp])
    kp.seek_to_beginning(tp)
    got = kp_poll(kp, N)
    # Timestamp lookups reach into the archive (offsets 0..local log start are only there).
    found = kp.offsets_for_times({tp: BASE_TS + 7})[tp]
    assert (found.offset, found.timestamp) == (7, BASE_TS + 7), found
    kp.close()
    assert [r.offset for r in got] == list(range(N)), [r.offset for r in got[:5]]
    assert all(r.value == value(r.offset) and r.key == b"k%d" % r.offset for r in got)
    assert all(r.timestamp == BASE_TS + r.offset for r in got)

    c = make_consumer(b.bootstrap, CapturingLogger("tiered"))
    got, errors = consume_all(c, [CkTopicPartition(topic, 0, OFFSET_BEGINNING)], N)
    [at] = c.offsets_for_times([CkTopicPartition(topic, 0, BASE_TS + 3)], timeout=10)
    c.close()
    assert at.offset == 3, at
    assert not errors, errors
    msgs = got.get(0, [])
    assert [m.offset() for m in msgs] == list(range(N)), [m.offset() for m in msgs[:5]]
    assert all(m.value() == value(m.offset()) for m in msgs)
