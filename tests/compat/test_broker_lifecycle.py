"""The broker process as an operator sees it: where it listens, restarts, crashes, shutdown
with clients connected, and the STRATA_* settings that change what clients see."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from harness import CapturingLogger, unique_topic
from clients import (admin_client, assert_clean, consume_all, create_topic, kcat,
                     make_consumer, payload, produce_records, topic_partitions)


def listening_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6} (hex notation)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A = TCP_LISTEN
                found.append(addr)
    return found


def test_listens_only_where_told(broker):
    # 127.0.0.1 in /proc/net/tcp's little-endian hex; anything else (0.0.0.0, ::) would
    # expose the broker beyond the configured address.
    assert listening_addresses(broker.port) == ["0100007F"], listening_addresses(broker.port)


def produce_all(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    out = produce_records(bootstrap, topic, [(i % partitions, str(i).encode(), payload(i), None)
                                             for i in range(n)], **{"enable.idempotence": True})
    assert all(err is None for _, err in out), [err for _, err in out if err is not None]


def assert_all_present(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    consumer = make_consumer(bootstrap, CapturingLogger("verify"))
    try:
        got, errors = consume_all(
            consumer, [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)], n)
        assert not errors, errors
        for p in range(partitions):
            assert [(m.offset(), m.key(), m.value()) for m in got.get(p, [])] == \
                [(j, str(i).encode(), payload(i)) for j, i in enumerate(range(p, n, partitions))]
    finally:
        consumer.close()


def test_data_survives_restart(broker_factory, tmp_path):
    """Acknowledged acks=all writes are there after a clean restart (SIGTERM, exit 0), and
    new writes continue at the next offset."""
    data_dir = tmp_path / "durable-data"
    first = broker_factory("durable", data_dir=data_dir)
    name = unique_topic("restart")
    create_topic(first.bootstrap, name, 2)
    produce_all(first.bootstrap, name, 100, 2)
    assert first.stop() == 0, f"exit code after SIGTERM:\n{first.log_tail()}"

    second = broker_factory("durable", data_dir=data_dir)
    assert topic_partitions(admin_client(second.bootstrap), name) == 2, \
        "topic or its partitions lost across restart"
    assert_all_present(second.bootstrap, name, 100, 2)

    producer = Producer({"bootstrap.servers": second.bootstrap, "acks": "all",
                         "logger": CapturingLogger("after-restart")})
    offsets = []
    producer.produce(name, value=b"after-restart", partition=0,
                     on_delivery=lambda err, msg: offsets.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert offsets == [(None, 50)], offsets


def test_acked_writes_survive_sigkill(broker_factory, tmp_path):
    """DESIGN: an acknowledged acks=all write survives kill -9."""
    data_dir = tmp_path / "crash-data"
    first = broker_factory("crash", data_dir=data_dir)
    name = unique_topic("crash")
    create_topic(first.bootstrap, name, 3)
    produce_all(first.bootstrap, name, 300, 3)
    first.kill()

    second = broker_factory("crash", data_dir=data_dir)
    assert topic_partitions(admin_client(second.bootstrap), name) == 3
    assert_all_present(second.bootstrap, name, 300, 3)


def test_sigterm_with_clients_connected(broker_factory):
    """Shutdown must not wait for clients to leave: a consumer parked in a long-poll fetch
    and an idle producer connection are both open when SIGTERM arrives."""
    b = broker_factory("shutdown")
    name = unique_topic("shutdown")
    create_topic(b.bootstrap, name, 1)
    # Loggers keep librdkafka's "connection refused" lines after the shutdown off stderr.
    producer = Producer({"bootstrap.servers": b.bootstrap, "logger": CapturingLogger("idle")})
    producer.produce(name, value=b"x", partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "strata-compat-unused",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5000,
                         "logger": CapturingLogger("shutdown")})
    try:
        consumer.assign([TopicPartition(name, 0, 0)])
        got = consumer.consume(num_messages=10, timeout=5)
        assert [m.value() for m in got if m.error() is None] == [b"x"]
        consumer.consume(num_messages=10, timeout=0.5)  # now parked in a long poll
        started = time.monotonic()
        rc = b.stop()  # raises if the broker ignores SIGTERM for 20 s
        took = time.monotonic() - started
        assert rc == 0, f"exit code {rc} after SIGTERM:\n{b.log_tail()}"
        assert took < 10, f"shutdown took {took:.1f}s with clients connected"
    finally:
        consumer.close()
        del producer


def test_auto_create_topics_setting(broker_factory):
    on = broker_factory("autocreate-on", env={"STRATA_AUTO_CREATE_TOPICS": "true",
                                              "STRATA_NUM_PARTITIONS": "3"})
    name = unique_topic("auto")
    proc = kcat(on.bootstrap, "-P", "-t", name, "-p", "0", stdin="hello\n")
    assert_clean(proc, "kcat -P to a new topic with auto-create on")
    assert topic_partitions(admin_client(on.bootstrap), name) == 3
    proc = kcat(on.bootstrap, "-C", "-t", name, "-p", "0", "-o", "beginning", "-e")
    assert_clean(proc, "kcat -C")
    assert proc.stdout == "hello\n"

    off = broker_factory("autocreate-off", env={"STRATA_AUTO_CREATE_TOPICS": "false"})
    name = unique_topic("noauto")
    errors = []
    producer = Producer({"bootstrap.servers": off.bootstrap, "message.timeout.ms": 5000,
                         "logger": CapturingLogger("noauto")})
    producer.produce(name, value=b"nowhere", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(15)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                KafkaError._MSG_TIMED_OUT), errors[0]
    assert topic_partitions(admin_client(off.bootstrap), name) is None, \
        "topic was created although STRATA_AUTO_CREATE_TOPICS=false"
