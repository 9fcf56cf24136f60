"""Tiered reads through Python clients: a topic with remote.storage.enable=true whose oldest
segments retention has already dropped from local disk (after the archive connector copied
them) is replayed from offset 0 by kafka-python and confluent-kafka, every record intact."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, TopicPartition as CkTopicPartition
from kafka import KafkaConsumer, TopicPartition

from clients import consume_all, create_topic, kp_poll, make_consumer, produce_records
from harness import CapturingLogger, wait_until

N = 600
# Stamped 2023: a minute of retention.ms has long expired them, so retention drops every
# sealed segment as soon as the archive holds it.
BASE_TS = 1_700_000_000_000


def value(i: int) -> bytes:
    return (b"archived-%05d-" % i) * 60


def test_python_clients_replay_from_the_archive(broker_factory, topic):
    b = broker_factory("tiered", env={
        "STRATA_SEGMENT_BYTES": "16384",
        "STRATA_ARCHIVE_INTERVAL_MS": "100",
        "STRATA_RETENTION_CHECK_INTERVAL_MS": "200",
    })
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
