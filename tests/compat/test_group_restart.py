"""A Stable consumer group across a broker restart, with kafka-python (KafkaConsumer with a
ConsumerRebalanceListener) and confluent-kafka (on_assign / on_revoke): three members keep
consuming six partitions while a producer keeps producing; the broker is stopped (SIGTERM)
and started again on the same port and data. No rebalance callback fires after the restart,
the group is Stable with the same members, and every acknowledged record is consumed, each
partition's offsets contiguous, with duplicates (there should be none without a rebalance)
only where nothing was committed before the restart.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from confluent_kafka import ConsumerGroupState, Consumer, Producer
from kafka import ConsumerRebalanceListener, KafkaConsumer

from clients import TIMEOUT_S, admin_client, create_topic
from harness import unique_topic, wait_until
from test_groups import GROUP_ENV, _ck_describe, _ck_offsets

PARTITIONS = 6
# Well above how long the broker takes to stop and start again on a loaded machine, so only
# a broker that forgot the group makes the members rejoin.
SESSION_MS = 15000
# How long the members must be seen consuming after the restart before the producer stops.
AFTER_RESTART_RECORDS = 300


class Member:
    """One group member polled by its own thread: records (partition, offset, value) and
    every rebalance callback."""

    def __init__(self, name: str):
        self.name = name
        self.records: list[tuple[int, int, bytes]] = []
        self.callbacks: list[tuple[str, list[int]]] = []
        self.assignment: set[int] = set()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def revoked(self, partitions) -> None:
        self.callbacks.append(("revoke", sorted(p.partition for p in partitions)))

    def assigned(self, partitions) -> None:
        self.callbacks.append(("assign", sorted(p.partition for p in partitions)))
        self.assignment = {p.partition for p in partitions}

    def run(self, poll) -> None:
        def loop():
            try:
                while not self.stop.is_set():
                    self.records.extend(poll())
            except BaseException as e:  # reported by the test, not lost in the thread
                self.failure = e
        self.thread = threading.Thread(target=loop, name=f"member-{self.name}", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)


def kafka_python_member(bootstrap: str, group: str, topic: str, name: str):
    m = Member(name)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            m.revoked(revoked)

        def on_partitions_assigned(self, assigned):
            m.assigned(assigned)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, client_id=name,
        enable_auto_commit=True, auto_commit_interval_ms=200, auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
        reconnect_backoff_ms=50, reconnect_backoff_max_ms=1000)
    consumer.subscribe([topic], listener=Listener())

    def poll():
        return [(r.partition, r.offset, r.value) for rs in consumer.poll(timeout_ms=200).values()
                for r in rs]
    m.run(poll)
    return m, consumer.close


def confluent_member(bootstrap: str, group: str, topic: str, name: str):
    m = Member(name)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
        "enable.auto.commit": True, "auto.commit.interval.ms": 200,
        "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 100,
        "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 1000})
    consumer.subscribe([topic], on_assign=lambda _, ps: m.assigned(ps),
                       on_revoke=lambda _, ps: m.revoked(ps))

    def poll():
        # Transport errors while the broker restarts are expected; records are what count.
        return [(msg.partition(), msg.offset(), msg.value())
                for msg in consumer.consume(num_messages=500, timeout=0.2) if msg.error() is None]
    m.run(poll)
    return m, consumer.close


class ProducerThread:
    """Produces v-<i> to partition i % PARTITIONS (idempotent, acks=all) until stopped;
    keeps the (partition, offset, value) of every acknowledged record."""

    def __init__(self, bootstrap: str, topic: str):
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                  "linger.ms": 5, "reconnect.backoff.max.ms": 1000})
        self.topic = topic
        self.acked: list[tuple[int, int, bytes]] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self.thread.start()

    def _report(self, err, msg):
        if err is None:
            self.acked.append((msg.partition(), msg.offset(), msg.value()))
        else:
            self.failed.append(str(err))

    def _run(self):
        i = 0
        while not self.stop.is_set():
            self.producer.produce(self.topic, value=f"v-{i}".encode(), partition=i % PARTITIONS,
                                  on_delivery=self._report)
            self.producer.poll(0)
            i += 1
            time.sleep(0.004)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.producer.flush(120) == 0, "records still unacknowledged"
        assert not self.failed, self.failed[:5]


@pytest.mark.parametrize("make_member", [kafka_python_member, confluent_member],
                         ids=["kafka-python", "confluent-kafka"])
def test_stable_group_survives_broker_restart_without_rebalance(broker_factory, topic,
                                                                make_member):
    broker = broker_factory("grestart", env=GROUP_ENV)
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic, PARTITIONS)
    group = unique_topic("restart-group")
    members, closers = [], []
    producer = None
    try:
        for name in ("a", "b", "c"):
            m, close = make_member(bootstrap, group, topic, name)
            members.append(m)
            closers.append(close)
        wait_until(lambda: sorted(len(m.assignment) for m in members) == [2, 2, 2]
                   and set().union(*(m.assignment for m in members)) == set(range(PARTITIONS)),
                   60, "three members with two partitions each")
        producer = ProducerThread(bootstrap, topic)
        admin = admin_client(bootstrap)
        committed_before = wait_until(
            lambda: (lambda o: o if all(v > 0 for v in o.values()) else None)(
                _ck_offsets(admin, group, topic, PARTITIONS)),
            60, "commits on every partition")
        before = _ck_describe(admin, group)
        assert before.state == ConsumerGroupState.STABLE, before
        ids = sorted(m.member_id for m in before.members)
        callbacks = [len(m.callbacks) for m in members]

        assert broker.stop() == 0, f"exit code after SIGTERM:\n{broker.log_tail()}"
        broker.start()  # same port, same data directory

        admin = admin_client(bootstrap)
        after = _ck_describe(admin, group)
        assert after.state == ConsumerGroupState.STABLE, after
        assert sorted(m.member_id for m in after.members) == ids
        consumed = sum(len(m.records) for m in members)
        wait_until(lambda: sum(len(m.records) for m in members) > consumed + AFTER_RESTART_RECORDS,
                   60, "records consumed after the restart")
        producer.finish()
        acked = producer.acked
        wanted = {value for _, _, value in acked}
        wait_until(lambda: wanted <= {v for m in members for _, _, v in m.records}, 120,
                   "every acknowledged record consumed")
        for m, n in zip(members, callbacks):
            assert m.callbacks[n:] == [], f"{m.name}: rebalance callbacks after the restart"
        ends = {}
        for p, o, _ in acked:
            ends[p] = max(ends.get(p, 0), o + 1)
        duplicates = 0
        for p in range(PARTITIONS):
            seen = Counter(o for m in members for q, o, _ in m.records if q == p)
            assert sorted(seen) == list(range(ends[p])), f"partition {p}: gaps"
            for o in [o for o, n in seen.items() if n > 1]:
                duplicates += 1
                assert o >= committed_before[p], \
                    f"partition {p}: offset {o} consumed twice though committed before"
        assert _ck_describe(admin, group).state == ConsumerGroupState.STABLE
        assert [m.failure for m in members] == [None] * 3
        print(f"{len(acked)} records, {duplicates} offsets consumed twice")
    finally:
        if producer is not None:
            producer.stop.set()
        for m in members:
            m.stop.set()
        for m in members:
            m.join()
        for close in closers:
            close()
