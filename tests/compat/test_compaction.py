"""Log compaction through Python clients: librdkafka's test 0011 (keyless records refused
on a topic made compacted with IncrementalAlterConfigs APPEND, each named by KIP-467's
record errors), kafka-python and confluent-kafka reading across the gaps compaction leaves,
switching a topic's cleanup.policy back and forth, and a changelog rebuilt with kafka-python.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from clients import admin_client, create_topic
from harness import unique_topic, wait_until

TIMEOUT_S = 30
# The cleaner looks for work every 100 ms in these tests instead of every 15 s.
CLEANER_ENV = {"STRATA_LOG_CLEANER_BACKOFF_MS": "100"}


@pytest.fixture
def fast_cleaner(broker_factory):
    return broker_factory("compaction", env=CLEANER_ENV).bootstrap


def incremental(bootstrap: str, topic: str, op: AlterConfigOpType, name: str, value: str):
    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op)])
    admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)


def kp_produce_batches(bootstrap: str, topic: str, batches):
    """kafka-python: one batch per list of (key, value), flushed one after the other."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    for batch in batches:
        for key, value in batch:
            p.send(topic, key=key, value=value, partition=0)
        p.flush(TIMEOUT_S)
    p.close()


def kp_offsets(bootstrap: str, topic: str, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
    """kafka-python: (offset, key, value) of what lies in [start, end) of partition 0."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=3000)
    tp = KTopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, start)
    out = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and (not out or out[-1][0] < end - 1):
        for batch in c.poll(timeout_ms=500).values():
            out.extend((m.offset, m.key, m.value) for m in batch if m.offset < end)
    c.close()
    return out


def ck_offsets(bootstrap: str, topic: str, start: int, end: int) -> list[int]:
    """confluent-kafka: offsets in [start, end) of partition 0."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"),
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, start)])
    out: list[int] = []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and (not out or out[-1] < end - 1):
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        if m.offset() < end:
            out.append(m.offset())
    c.close()
    return out


@pytest.mark.parametrize("variation", [0, 1])
def test_librdkafka_0011_keyless_records_on_compacted_topic(fast_cleaner, variation):
    """0011's test_message_single_partition_record_fail: 100 messages, every tenth without a
    key, to a topic made compacted with IncrementalAlterConfigs APPEND. In one batch
    (variation 0) the 10 keyless ones fail with INVALID_RECORD and the other 90 with
    _INVALID_DIFFERENT_RECORD; one message per batch (variation 1) only the 10 fail."""
    bootstrap = fast_cleaner
    topic = unique_topic("rdkafkatest-0011")
    create_topic(bootstrap, topic)
    incremental(bootstrap, topic, AlterConfigOpType.APPEND, "cleanup.policy", "compact")
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 100}
    if variation == 1:
        conf["batch.size"] = 1
    p = Producer(conf)
    errors: dict[int, int] = {}
    delivered = 0

    def report(err, msg):
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            errors[err.code()] = errors.get(err.code(), 0) + 1

    for i in range(100):
        msg = f"test_compaction 0011 test message #{i}"
        key = None if i % 10 == 0 else msg
        p.produce(topic, value=msg, key=key, partition=0, on_delivery=report)
    assert p.flush(TIMEOUT_S) == 0
    assert errors.get(KafkaError.INVALID_RECORD) == 10, errors
    if variation == 0:
        assert errors.get(KafkaError._INVALID_DIFFERENT_RECORD) == 90, errors
    else:
        assert delivered == 90, (delivered, errors)
    # SUBTRACT compact: keyless records are welcome again.
    incremental(bootstrap, topic, AlterConfigOpType.SUBTRACT, "cleanup.policy", "compact")
    p.produce(topic, value=b"keyless", partition=0)
    assert p.flush(TIMEOUT_S) == 0


def test_clients_read_across_gaps(fast_cleaner):
    """After cleaning, kafka-python and confluent-kafka read the kept records at their
    original offsets, from the start and from an offset inside a gap."""
    bootstrap = fast_cleaner
    topic = unique_topic("gaps")
    create_topic(bootstrap, topic, configs={"cleanup.policy": "compact", "segment.bytes": "14"})
    # Offsets: 0 a, 1 b | 2 a | 3 c, 4 a | 5 z (the active segment).
    kp_produce_batches(bootstrap, topic, [
        [(b"a", b"a1"), (b"b", b"b1")], [(b"a", b"a2")], [(b"c", b"c1"), (b"a", b"a3")],
        [(b"z", b"tail")]])
    want = [(1, b"b", b"b1"), (3, b"c", b"c1"), (4, b"a", b"a3"), (5, b"z", b"tail")]
    wait_until(lambda: kp_offsets(bootstrap, topic, 0, 6) == want, 30, "compaction")
    assert kp_offsets(bootstrap, topic, 2, 6) == want[1:]
    assert ck_offsets(bootstrap, topic, 0, 6) == [1, 3, 4, 5]
    assert ck_offsets(bootstrap, topic, 2, 6) == [3, 4, 5]


def test_cleanup_policy_switches(fast_cleaner):
    """delete -> compact (IncrementalAlterConfigs APPEND) makes the cleaner compact what is
    already there; compact -> delete (SUBTRACT) stops it, and keyless records are accepted."""
    bootstrap = fast_cleaner
    topic = unique_topic("switch")
    create_topic(bootstrap, topic, configs={"segment.bytes": "14"})
    kp_produce_batches(bootstrap, topic, [[(b"k", f"v{i}".encode())] for i in range(10)]
                       + [[(b"tail", b"t")]])
    time.sleep(0.5)
    assert len(kp_offsets(bootstrap, topic, 0, 11)) == 11, "a delete-policy topic keeps all"
    incremental(bootstrap, topic, AlterConfigOpType.APPEND, "cleanup.policy", "compact")
    wait_until(lambda: kp_offsets(bootstrap, topic, 0, 11)
               == [(9, b"k", b"v9"), (10, b"tail", b"t")], 30, "compaction after the switch")
    incremental(bootstrap, topic, AlterConfigOpType.SUBTRACT, "cleanup.policy", "compact")
    kp_produce_batches(bootstrap, topic, [[(None, b"keyless")], [(b"k", b"again")],
                                          [(b"k", b"again2")], [(b"tail", b"t2")]])
    time.sleep(1)
    got = kp_offsets(bootstrap, topic, 0, 15)
    assert [o for o, _, _ in got] == [9, 10, 11, 12, 13, 14], got


def test_changelog_rebuilt_with_kafka_python(fast_cleaner):
    """5,000 updates over 100 keys, compacted; kafka-python rebuilding the state from the
    start gets the last value of every key and reads far fewer records."""
    bootstrap = fast_cleaner
    topic = unique_topic("changelog")
    create_topic(bootstrap, topic, configs={"cleanup.policy": "compact",
                                            "segment.bytes": "8192",
                                            "min.cleanable.dirty.ratio": "0.1"})
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    model = {}
    for n in range(5000):
        key = f"key-{n * 31 % 100}".encode()
        p.send(topic, key=key, value=str(n).encode(), partition=0)
        model[key] = str(n).encode()
    for i in range(100):
        p.send(topic, key=b"seal", value=b"x" * (500 + i), partition=0)
    p.flush(TIMEOUT_S)
    p.close()

    def rebuilt():
        recs = kp_offsets(bootstrap, topic, 0, 5100)
        state = {k: v for _, k, v in recs if k != b"seal"}
        return state if len(recs) < 1000 and state == model else None

    wait_until(rebuilt, 60, "a compacted changelog holding the last value of every key",
               interval_s=0.5)
