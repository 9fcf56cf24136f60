"""confluent-kafka (current librdkafka) against Strata: every compression codec, assign-based
consumption, offset queries and the AdminClient."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka.admin import NewPartitions, NewTopic, OffsetSpec

from clients import (TIMEOUT_S, admin_client, consume_all, create_topic, make_consumer,
                     msg_tuple, payload, topic_partitions)
from harness import CapturingLogger, unique_topic, wait_until

def assert_batches_compressed(log: CapturingLogger, codec: str) -> None:
    """librdkafka silently sends uncompressed batches when it decides, from the broker's
    advertised API versions, that the broker cannot take the codec (e.g. its LZ4 feature
    requires FindCoordinator). Only its debug log tells: check every produced batch."""
    refused = log.matching("does not support compression")
    assert not refused, f"librdkafka disabled {codec} for this broker: {refused[:2]}"
    batches = log.matching("Produce MessageSet with")
    assert batches, "no 'Produce MessageSet' debug lines: is debug=msg set?"
    want = "uncompressed)" if codec == "none" else f", {codec})"
    wrong = [b for b in batches if not b.endswith(want)]
    assert not wrong, f"{len(wrong)}/{len(batches)} batches not sent as {codec}: {wrong[:2]}"


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_with_compression(bootstrap, topic, codec):
    create_topic(bootstrap, topic, 2)
    plog = CapturingLogger(f"producer-{codec}")
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 20,
        "acks": "all",
        "enable.idempotence": True,
        # "msg" debug logs one line per produced batch, naming its compression codec.
        "debug": "msg",
        "logger": plog,
    })
    n = 400
    delivered: dict[int, list] = {}
    failures = []

    def on_delivery(sent, err, msg):
        # Delivery reports carry no headers: compare against what was sent.
        if err is not None:
            failures.append(err)
        else:
            delivered.setdefault(msg.partition(), []).append((msg.offset(), *sent))

    for i in range(n):
        key, value = f"k{i % 13}".encode(), payload(i)
        headers = [("codec", codec.encode()), ("i", str(i).encode())]
        producer.produce(topic, key=key, value=value, headers=headers, partition=i % 2,
                         on_delivery=lambda err, msg, sent=(key, value, headers):
                         on_delivery(sent, err, msg))
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not failures, failures
    assert sum(len(v) for v in delivered.values()) == n
    assert_batches_compressed(plog, codec)
    for p, recs in delivered.items():
        recs.sort()
        assert [r[0] for r in recs] == list(range(len(recs))), f"partition {p} offsets"

    clog = CapturingLogger(f"consumer-{codec}")
    consumer = make_consumer(bootstrap, clog)
    try:
        got, errors = consume_all(
            consumer, [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)], n)
        assert not errors, errors
        for p in range(2):
            assert [msg_tuple(m) for m in got.get(p, [])] == delivered.get(p, []), f"partition {p}"

        # Start in the middle of a (compressed) batch.
        start = len(delivered[0]) // 2 + 1
        got, errors = consume_all(consumer, [TopicPartition(topic, 0, start)],
                                  len(delivered[0]) - start)
        assert not errors, errors
        assert [msg_tuple(m) for m in got.get(0, [])] == delivered[0][start:]
    finally:
        consumer.close()


def test_watermarks_and_list_offsets(bootstrap, topic):
    create_topic(bootstrap, topic, 1)
    base_ts = int(time.time() * 1000) - 600_000
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    n = 25
    for i in range(n):
        producer.produce(topic, value=f"m{i}".encode(), partition=0, timestamp=base_ts + i * 100)
    assert producer.flush(30) == 0

    tp = TopicPartition(topic, 0)
    consumer = make_consumer(bootstrap, CapturingLogger("wm"))
    try:
        assert consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S) == (0, n)
        found = consumer.offsets_for_times([TopicPartition(topic, 0, base_ts + 1050)],
                                           timeout=TIMEOUT_S)
        assert found[0].error is None and found[0].offset == 11, found
    finally:
        consumer.close()

    admin = admin_client(bootstrap)
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "ts": OffsetSpec.for_timestamp(base_ts + 250)}
    results = {}
    for name, spec in specs.items():
        fut = admin.list_offsets({tp: spec}, request_timeout=TIMEOUT_S)[tp]
        results[name] = fut.result(timeout=TIMEOUT_S)
    assert results["earliest"].offset == 0
    assert results["latest"].offset == n
    assert results["ts"].offset == 3 and results["ts"].timestamp == base_ts + 300, results["ts"]
    future = admin.list_offsets({tp: OffsetSpec.for_timestamp(base_ts + 86_400_000)},
                                request_timeout=TIMEOUT_S)[tp].result(timeout=TIMEOUT_S)
    assert future.offset == -1, f"timestamp after every record gave offset {future.offset}"


def test_admin_create_list_delete_topics(bootstrap, broker):
    admin = admin_client(bootstrap)
    three = unique_topic("ck-admin-three")
    grow = unique_topic("ck-admin-grow")
    futures = admin.create_topics([NewTopic(three, num_partitions=3, replication_factor=1),
                                   NewTopic(grow, num_partitions=1, replication_factor=1)],
                                  operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    for f in futures.values():
        f.result(timeout=TIMEOUT_S)

    md = wait_until(lambda: (lambda m: m if three in m.topics and grow in m.topics else None)(
        admin.list_topics(timeout=TIMEOUT_S)), 10, "new topics in metadata")
    assert len(md.brokers) == 1
    b = next(iter(md.brokers.values()))
    assert (b.host, b.port) == ("127.0.0.1", broker.port), (b.host, b.port)
    t = md.topics[three]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    assert all(p.leader == b.id and p.error is None for p in t.partitions.values())

    # Creating it again is an error the user sees as TOPIC_ALREADY_EXISTS.
    again = admin.create_topics([NewTopic(three, num_partitions=3, replication_factor=1)],
                                request_timeout=TIMEOUT_S)[three]
    with pytest.raises(KafkaException) as exc:
        again.result(timeout=TIMEOUT_S)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, exc.value

    bad = admin.create_topics([NewTopic("no/slashes", num_partitions=1, replication_factor=1)],
                              request_timeout=TIMEOUT_S)["no/slashes"]
    with pytest.raises(KafkaException) as exc:
        bad.result(timeout=TIMEOUT_S)
    assert exc.value.args[0].code() == KafkaError.TOPIC_EXCEPTION, exc.value

    # CreatePartitions: 1 -> 4.
    admin.create_partitions([NewPartitions(grow, 4)],
                            request_timeout=TIMEOUT_S)[grow].result(timeout=TIMEOUT_S)
    wait_until(lambda: topic_partitions(admin, grow) == 4, 10, f"{grow} to have 4 partitions")

    cluster = admin.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    assert [(n.host, n.port) for n in cluster.nodes] == [("127.0.0.1", broker.port)]
    assert cluster.controller is not None and cluster.controller.port == broker.port

    admin.delete_topics([three], operation_timeout=TIMEOUT_S,
                        request_timeout=TIMEOUT_S)[three].result(timeout=TIMEOUT_S)
    wait_until(lambda: three not in admin.list_topics(timeout=TIMEOUT_S).topics, 10,
               f"{three} to disappear")
    assert grow in admin.list_topics(timeout=TIMEOUT_S).topics

    gone = admin.delete_topics([three], request_timeout=TIMEOUT_S)[three]
    with pytest.raises(KafkaException) as exc:
        gone.result(timeout=TIMEOUT_S)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, exc.value


def test_null_and_empty_keys_and_values(bootstrap, topic):
    """null and empty are different things to Kafka users (null value = tombstone)."""
    create_topic(bootstrap, topic, 1)
    cases = [(None, b"v"), (b"", b"v"), (b"k", None), (b"k", b""), (None, None), (b"", b"")]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    for key, value in cases:
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(30) == 0
    consumer = make_consumer(bootstrap, CapturingLogger("null"))
    try:
        got, errors = consume_all(consumer, [TopicPartition(topic, 0, 0)], len(cases))
        assert not errors, errors
        assert [(m.key(), m.value()) for m in got.get(0, [])] == cases
    finally:
        consumer.close()


def test_message_larger_than_limit_is_rejected(bootstrap, topic, broker):
    """The broker enforces message.max.bytes (its default is Kafka's, ~1 MiB) even when the
    client allows bigger messages."""
    create_topic(bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 8_000_000,
                         "compression.type": "none", "acks": "all", "retries": 0})
    results = []
    big = bytes(range(256)) * (2_000_000 // 256)  # 2 MB, above the broker's limit
    producer.produce(topic, value=big, partition=0,
                     on_delivery=lambda err, msg: results.append(("big", err)))
    producer.flush(30)
    producer.produce(topic, value=b"small", partition=0,
                     on_delivery=lambda err, msg: results.append(("small", err, msg.offset())))
    assert producer.flush(30) == 0
    assert len(results) == 2, results
    assert results[0][1] is not None, "2 MB message accepted by a broker with a ~1 MiB limit"
    assert results[0][1].code() == KafkaError.MSG_SIZE_TOO_LARGE, results[0][1]
    assert results[1] == ("small", None, 0), results


def test_long_poll_delivers_new_messages_promptly(bootstrap, topic):
    """A consumer waiting at the end of the log gets a new message as soon as it is written
    (the fetch long-polls; it neither returns stale emptiness forever nor busy-loops)."""
    import threading

    create_topic(bootstrap, topic, 1)
    consumer = make_consumer(bootstrap, CapturingLogger("longpoll"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        # Let the consumer reach the (empty) end of the partition first.
        deadline = time.monotonic() + 10
        eof = False
        while not eof and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10, timeout=0.2):
                assert m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof = True
        assert eof, "consumer never reached the end of the empty partition"

        sent_at = []

        def produce_later():
            time.sleep(1.0)
            p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
            sent_at.append(time.monotonic())
            p.produce(topic, value=b"wake up", partition=0)
            p.flush(10)

        t = threading.Thread(target=produce_later)
        t.start()
        got = None
        deadline = time.monotonic() + 10
        while got is None and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10, timeout=0.1):
                if m.error() is None:
                    got = (m, time.monotonic())
        t.join()
        assert got is not None, "message written after the consumer caught up never arrived"
        assert got[0].value() == b"wake up" and got[0].offset() == 0
        latency = got[1] - sent_at[0]
        assert latency < 2.0, f"new message took {latency:.2f}s to reach a waiting consumer"
    finally:
        consumer.close()


def test_recreated_topic_starts_empty(bootstrap, topic):
    create_topic(bootstrap, topic, 2)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        producer.produce(topic, value=f"old {i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    admin = admin_client(bootstrap)
    admin.delete_topics([topic], request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    wait_until(lambda: topic not in admin.list_topics(timeout=TIMEOUT_S).topics, 10,
               "deleted topic to disappear")
    create_topic(bootstrap, topic, 1)

    consumer = make_consumer(bootstrap, CapturingLogger("recreate"))
    try:
        tp = TopicPartition(topic, 0)
        assert consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S) == (0, 0)
        producer.produce(topic, value=b"new", partition=0)
        assert producer.flush(30) == 0
        got, errors = consume_all(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)], 1)
        assert not errors, errors
        assert [(m.offset(), m.value()) for m in got.get(0, [])] == [(0, b"new")]
    finally:
        consumer.close()
