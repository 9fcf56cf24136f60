"""kafka-python 3.x against Strata: idempotent producer defaults, assign/seek consumer,
offset lookups, and the admin client."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kerr

from clients import create_topic, kp_poll
from harness import unique_topic, wait_until

CLIENT_TIMEOUT_MS = 15000


def admin_client(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strata-compat-admin",
                            request_timeout_ms=CLIENT_TIMEOUT_MS)


def consumer_client(bootstrap: str) -> KafkaConsumer:
    # No group: Strata has no group coordinator yet, so positions are set explicitly.
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="none", fetch_max_wait_ms=200,
                         request_timeout_ms=CLIENT_TIMEOUT_MS + 5000,
                         client_id="strata-compat-consumer")


def read_records(consumer: KafkaConsumer, want: int, timeout_s: float = 30.0):
    """Poll until `want` records arrived (or time out); returns ({partition: [records]}, total)."""
    got: dict[int, list] = {}
    records = kp_poll(consumer, want, timeout_s)
    for r in records:
        got.setdefault(r.partition, []).append(r)
    return got, len(records)


def as_tuple(record):
    return (record.offset, record.key, record.value, list(record.headers or []))


def test_idempotent_producer_keyed_headers_roundtrip(bootstrap, topic):
    partitions = 3
    create_topic(bootstrap, topic, partitions)

    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="strata-compat-producer",
                             linger_ms=50, request_timeout_ms=CLIENT_TIMEOUT_MS)
    try:
        # kafka-python infers the broker version from ApiVersions and silently turns
        # idempotence off for brokers it believes are older than 0.11: the defaults must hold.
        assert producer.config["api_version"] >= (2, 1), producer.config["api_version"]
        assert producer.config["enable_idempotence"] is True
        assert producer.config["acks"] == -1
        assert producer._transaction_manager is not None

        n = 300
        futures = []
        for i in range(n):
            key = f"key-{i % 10}".encode()
            value = f"value-{i}-".encode() + bytes([i % 256]) * (i % 50)
            headers = [("idx", str(i).encode()), ("client", b"kafka-python"), ("empty", b"")]
            futures.append((key, value, headers, producer.send(topic, key=key, value=value,
                                                               headers=headers)))
        producer.flush(timeout=30)
        expected: dict[int, list] = {}
        for key, value, headers, fut in futures:
            md = fut.get(timeout=30)
            expected.setdefault(md.partition, []).append((md.offset, key, value, headers))
        pid = producer._transaction_manager.producer_id_and_epoch.producer_id
        assert pid >= 0, f"InitProducerId gave no producer id: {pid}"
    finally:
        producer.close(timeout=10)

    assert set(expected) <= set(range(partitions))
    assert len(expected) > 1, f"10 keys over {partitions} partitions all landed in one: {expected.keys()}"
    for p, recs in expected.items():
        # Offsets are assigned densely from 0 and in send order (idempotent producer).
        assert [r[0] for r in recs] == list(range(len(recs))), f"partition {p} offsets"

    consumer = consumer_client(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got, total = read_records(consumer, n)
        assert total == n, f"read {total} of {n} records"
        for p in range(partitions):
            assert [as_tuple(r) for r in got.get(p, [])] == expected.get(p, []), f"partition {p}"

        # Seek into the middle of a batch (linger_ms batched the sends): the broker returns
        # the whole batch and the client skips the records before the position.
        p = max(expected, key=lambda q: len(expected[q]))
        start = len(expected[p]) // 2 + 1
        tp = TopicPartition(topic, p)
        consumer.assign([tp])
        consumer.seek(tp, start)
        got, total = read_records(consumer, len(expected[p]) - start)
        assert [as_tuple(r) for r in got.get(p, [])] == expected[p][start:]
        assert consumer.position(tp) == len(expected[p])
    finally:
        consumer.close()


def test_offset_lookups(bootstrap, topic):
    create_topic(bootstrap, topic, 1)
    tp = TopicPartition(topic, 0)
    base_ts = int(time.time() * 1000) - 3_600_000  # an hour ago, one second per record
    n = 20

    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=CLIENT_TIMEOUT_MS)
    try:
        for i in range(n):
            producer.send(topic, value=f"v{i}".encode(), timestamp_ms=base_ts + i * 1000)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    consumer = consumer_client(bootstrap)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: n}
        found = consumer.offsets_for_times({tp: base_ts + 5500})
        assert found[tp] is not None and found[tp].offset == 6, found
        assert found[tp].timestamp == base_ts + 6000, found
        found = consumer.offsets_for_times({tp: 0})
        assert found[tp] is not None and found[tp].offset == 0, found
        # Later than every record: Kafka answers offset -1, which the client maps to None.
        future = consumer.offsets_for_times({tp: base_ts + 10 * 3_600_000})
        assert future == {tp: None}, future

        consumer.assign([tp])
        consumer.seek(tp, found[tp].offset)
        got, total = read_records(consumer, n)
        assert [r.value for r in got[0]] == [f"v{i}".encode() for i in range(n)]
        assert [r.timestamp for r in got[0]] == [base_ts + i * 1000 for i in range(n)]
    finally:
        consumer.close()


def test_admin_create_list_delete_topics(bootstrap):
    many = unique_topic("kp-admin-many")
    one = unique_topic("kp-admin-one")
    admin = admin_client(bootstrap)
    try:
        result = admin.create_topics(
            {many: {"num_partitions": 5, "replication_factor": 1},
             one: {"num_partitions": 1, "replication_factor": 1}},
            wait_for_metadata=True)
        assert sorted(t["name"] for t in result["topics"]) == sorted([many, one])
        assert all(t["error_code"] == 0 for t in result["topics"]), result

        listed = admin.list_topics()
        assert many in listed and one in listed, listed
        described = {t["name"]: t for t in admin.describe_topics([many, one])}
        assert sorted(p["partition_index"] for p in described[many]["partitions"]) == list(range(5))
        assert len(described[one]["partitions"]) == 1
        for t in described.values():
            assert t["error_code"] == 0
            for p in t["partitions"]:
                assert p["error_code"] == 0 and p["leader_id"] >= 0, t

        with pytest.raises(kerr.TopicAlreadyExistsError):
            admin.create_topics({one: {"num_partitions": 1, "replication_factor": 1}})

        cluster = admin.describe_cluster()
        assert len(cluster["brokers"]) == 1, cluster
        host_port = (cluster["brokers"][0]["host"], cluster["brokers"][0]["port"])
        assert f"{host_port[0]}:{host_port[1]}" == bootstrap, cluster

        deleted = admin.delete_topics([many])
        assert [t["name"] for t in deleted["topics"]] == [many]
        assert all(t["error_code"] == 0 for t in deleted["topics"]), deleted
        wait_until(lambda: many not in admin.list_topics(), 10, f"{many} to disappear")
        assert one in admin.list_topics()

        with pytest.raises(kerr.UnknownTopicOrPartitionError):
            admin.delete_topics([many])
    finally:
        admin.close()


@pytest.mark.parametrize("name", ["bad topic!", "a" * 250, "..", "tab\tname"],
                         ids=["space-and-bang", "250-chars", "dot-dot", "tab"])
def test_admin_rejects_invalid_topic_name(bootstrap, name):
    admin = admin_client(bootstrap)
    try:
        with pytest.raises(kerr.InvalidTopicError):
            admin.create_topics({name: {"num_partitions": 1, "replication_factor": 1}})
        assert name not in admin.list_topics()
    finally:
        admin.close()


def test_gzip_producer_and_small_fetch_limits(bootstrap, topic):
    """kafka-python's own batch encoder with gzip, read back by a consumer whose fetch
    limits are smaller than one record: the broker must still return the whole batch."""
    create_topic(bootstrap, topic, 1)
    big = bytes(range(256)) * 1200  # ~300 KB, far above the 1 KiB fetch limits below
    values = [b"small-0", big, b"small-2"] + [f"tail-{i}".encode() * 20 for i in range(50)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip",
                             request_timeout_ms=CLIENT_TIMEOUT_MS)
    try:
        for v in values:
            producer.send(topic, value=v)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none",
                             fetch_max_wait_ms=200, fetch_max_bytes=1024,
                             max_partition_fetch_bytes=1024,
                             request_timeout_ms=CLIENT_TIMEOUT_MS + 5000)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got, total = read_records(consumer, len(values))
        assert [(r.offset, r.value) for r in got.get(0, [])] == list(enumerate(values))
    finally:
        consumer.close()
