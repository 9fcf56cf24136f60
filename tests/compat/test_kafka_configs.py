"""Kafka's topic configs and the partition-placement admin APIs through real admin clients:
confluent-kafka (librdkafka) CreateTopics / AlterConfigs / IncrementalAlterConfigs with
configs such as flush.ms and compression.type=lz4 (what librdkafka's own admin tests set),
DescribeConfigs with their sources, compression.type recompressing what a producer sent,
compacted topics refusing keyless records, and kafka-python's describe_log_dirs.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewTopic, ResourceType)
from kafka import KafkaAdminClient, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka import errors as kerr

from clients import admin_client, create_topic, produce_records
from harness import unique_topic

TIMEOUT_S = 30
DYNAMIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
DEFAULT = ConfigSource.DEFAULT_CONFIG.value


def describe_topic(bootstrap: str, name: str) -> dict[str, ConfigEntry]:
    admin = admin_client(bootstrap)  # kept alive until the result is in
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([res], request_timeout=TIMEOUT_S)[res].result(timeout=TIMEOUT_S)


def assert_configs(bootstrap: str, topic: str, expected: dict[str, tuple[str, int]]):
    entries = describe_topic(bootstrap, topic)
    for name, (value, source) in expected.items():
        e = entries[name]
        assert (e.value, e.source) == (value, source), e


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_librdkafka_admin_with_kafka_configs(bootstrap):
    """CreateTopics, AlterConfigs and IncrementalAlterConfigs with Kafka configs succeed
    through librdkafka; DescribeConfigs shows each with the right source."""
    topic = unique_topic("rdkafka-admin-configs")
    admin = admin_client(bootstrap)
    configs = {"flush.ms": "12345678", "compression.type": "lz4", "flush.messages": "1000",
               "cleanup.policy": "compact,delete", "min.cleanable.dirty.ratio": "0.25",
               "preallocate": "true", "leader.replication.throttled.replicas": "*"}
    fut = admin.create_topics([NewTopic(topic, 1, 1, config=configs)],
                              request_timeout=TIMEOUT_S)[topic]
    fut.result(TIMEOUT_S)
    assert_configs(bootstrap, topic, {**{k: (v, DYNAMIC) for k, v in configs.items()},
                                      "delete.retention.ms": ("86400000", DEFAULT),
                                      "compression.lz4.level": ("9", DEFAULT)})

    res = ConfigResource(ResourceType.TOPIC, topic,
                         set_config={"flush.ms": "1000", "compression.type": "lz4"})
    admin.alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)
    assert_configs(bootstrap, topic, {"flush.ms": ("1000", DYNAMIC),
                                      "compression.type": ("lz4", DYNAMIC),
                                      "flush.messages": ("9223372036854775807", DEFAULT)})

    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("compression.type", "zstd", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("flush.messages", "10", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("flush.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)
    assert_configs(bootstrap, topic, {"compression.type": ("zstd", DYNAMIC),
                                      "flush.messages": ("10", DYNAMIC),
                                      "flush.ms": ("9223372036854775807", DEFAULT)})


@pytest.mark.parametrize("name,value", [
    ("flush.ms", "-1"), ("compression.type", "brotli"), ("compression.gzip.level", "10"),
    ("min.cleanable.dirty.ratio", "2"), ("message.downconversion.enable", "maybe"),
    ("follower.replication.throttled.replicas", "0-1"),
])
def test_kafka_validators_refuse_bad_values(bootstrap, name, value):
    topic = unique_topic("bad-kafka-value")
    admin = admin_client(bootstrap)
    fut = admin.create_topics([NewTopic(topic, 1, 1, config={name: value})],
                              request_timeout=TIMEOUT_S)[topic]
    with pytest.raises(KafkaException) as ex:
        fut.result(TIMEOUT_S)
    err = ex.value.args[0]
    assert err.code() == KafkaError.INVALID_CONFIG and name in err.str(), err


def test_compression_type_recompresses_what_producers_send(bootstrap):
    """A gzip producer on an lz4 topic: consumers read the records back unchanged, and the
    broker answers Fetch with lz4 batches (librdkafka's debug log names the codec)."""
    topic = unique_topic("recompress")
    create_topic(bootstrap, topic, configs={"compression.type": "lz4"})
    records = [(0, f"k{i}".encode(), (f"value-{i}-" * 20).encode(), None) for i in range(500)]
    results = produce_records(bootstrap, topic, records, **{"compression.type": "gzip"})
    assert all(err is None for _, err in results), results[:3]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-compat-unused",
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        while len(got) < len(records):
            m = c.poll(TIMEOUT_S)
            assert m is not None and m.error() is None, m and m.error()
            got.append((m.key(), m.value()))
    finally:
        c.close()
    assert got == [(k, v) for _, k, v, _ in records]


def test_compacted_topic_refuses_keyless_records(bootstrap):
    topic = unique_topic("compacted")
    create_topic(bootstrap, topic, configs={"cleanup.policy": "compact"})
    ok = produce_records(bootstrap, topic, [(0, b"k", b"v", None)])
    assert ok[0][1] is None, ok
    bad = produce_records(bootstrap, topic, [(0, None, b"v", None)])
    err = bad[0][1]
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, bad


def kp_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000,
                            client_id="strata-compat-kafka-configs")


def test_kafka_python_describe_log_dirs(bootstrap):
    """kafka-python's describe_log_dirs: one log dir, with the partitions and their sizes."""
    topic = unique_topic("log-dirs")
    create_topic(bootstrap, topic, partitions=2)
    produce_records(bootstrap, topic, [(1, b"k", b"x" * 1000, None)] * 20)
    kp = kp_admin(bootstrap)
    try:
        everything = kp.describe_log_dirs()
        only = kp.describe_log_dirs({topic: [1]})
    finally:
        kp.close()
    assert len(everything) == 1 and len(everything[0]["log_dirs"]) == 1, everything
    d = everything[0]["log_dirs"][0]
    assert d["error_code"] == 0 and d["log_dir"], d
    assert 0 < d["usable_bytes"] <= d["total_bytes"], d
    sizes = {(t["name"], p["partition_index"]): p["partition_size"]
             for t in d["topics"] for p in t["partitions"]}
    assert sizes[(topic, 0)] == 0, sizes
    assert 20_000 <= sizes[(topic, 1)] < 30_000, sizes
    d = only[0]["log_dirs"][0]
    assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in d["topics"]] \
        == [(topic, [1])], d


def test_kafka_python_describe_producers(bootstrap):
    topic = unique_topic("producers")
    create_topic(bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    try:
        for i in range(10):
            p.send(topic, key=b"k", value=b"v%d" % i, partition=0)
        p.flush(TIMEOUT_S)
    finally:
        p.close()
    kp = kp_admin(bootstrap)
    try:
        states = kp.describe_producers([KTopicPartition(topic, 0)])
    finally:
        kp.close()
    producers = states[KTopicPartition(topic, 0)].active_producers
    assert len(producers) == 1, producers
    s = producers[0]
    assert s.producer_id >= 0 and s.last_sequence == 9 and s.coordinator_epoch == -1, s


def test_kafka_python_replica_management_on_one_broker(bootstrap):
    """ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments as an admin
    tool drives them: nothing to elect, nothing to move, nothing in progress."""
    topic = unique_topic("placement")
    create_topic(bootstrap, topic, partitions=2)
    kp = kp_admin(bootstrap)
    try:
        # ELECTION_NOT_NEEDED is what a healthy cluster answers; kafka-python ignores it.
        r = kp.elect_leaders(0, {topic: [0, 1]})
        codes = [p.error_code for t in r.replica_election_results for p in t.partition_result]
        assert codes == [84, 84], r
        with pytest.raises(kerr.UnknownTopicOrPartitionError):
            kp.elect_leaders(0, {topic: [7]})
        tp0, tp1 = KTopicPartition(topic, 0), KTopicPartition(topic, 1)
        moved = kp.alter_partition_reassignments({tp0: [1], tp1: None})
        assert moved[tp0] is None, moved
        assert moved[tp1] is kerr.NoReassignmentInProgressError, moved
        moved = kp.alter_partition_reassignments({tp0: [2]})
        assert moved[tp0] is kerr.InvalidReplicationAssignmentError, moved
        assert kp.list_partition_reassignments() == {}
        assert kp.list_partition_reassignments({topic: [0, 1]}) == {}
    finally:
        kp.close()
