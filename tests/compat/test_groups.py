"""Consumer groups with real clients: kafka-python's KafkaConsumer (subscribe + commit) and
KafkaAdminClient, confluent-kafka's AdminClient (list / describe / offsets / alter, which
must be refused while the group has members), and OffsetCommit metadata round trips.

Each test runs its own broker with a short initial rebalance delay (Kafka's default 3 s
would only make the suite slower; the rest of the group settings keep their defaults).

kafka-python 3.x names its group admin calls list_groups / describe_groups /
list_group_offsets / delete_groups (1.x/2.x: list_consumer_groups, ...).
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, Consumer,
                             KafkaException, TopicPartition)
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.structs import OffsetAndMetadata

from clients import TIMEOUT_S, admin_client, create_topic, kp_poll, produce_records
from harness import unique_topic, wait_until

GROUP_ENV = {
    "STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS": "100",
    "STRATA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
}


@pytest.fixture
def gbootstrap(broker_factory):
    """A broker of this test's own, with fast group rebalances."""
    return broker_factory("groups", env=GROUP_ENV).bootstrap


def produce(bootstrap: str, topic: str, ids: range, partitions: int) -> None:
    """Message i goes to partition i % partitions with value b"v-<i>"."""
    out = produce_records(bootstrap, topic, [(i % partitions, f"k-{i}".encode(),
                                              f"v-{i}".encode(), None) for i in ids])
    assert all(err is None for _, err in out), out


def kp_consumer(bootstrap: str, group: str, **extra) -> KafkaConsumer:
    config = dict(bootstrap_servers=bootstrap, group_id=group, client_id=f"kp-{group}",
                  enable_auto_commit=False, auto_offset_reset="earliest",
                  session_timeout_ms=6000, heartbeat_interval_ms=500)
    config.update(extra)
    return KafkaConsumer(**config)


def kp_poll_until(consumer: KafkaConsumer, want: int, timeout_s: float = 30.0):
    """Polls until `want` records arrived (returns them, in arrival order)."""
    got = kp_poll(consumer, want, timeout_s)
    assert len(got) >= want, f"only {len(got)} of {want} records within {timeout_s}s"
    return got


def ck_consumer(bootstrap: str, group: str, **extra) -> Consumer:
    config = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": f"ck-{group}",
              "enable.auto.commit": False, "auto.offset.reset": "earliest",
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
              "fetch.wait.max.ms": 100}
    config.update(extra)
    return Consumer(config)


def ck_poll_until(consumer: Consumer, want: int, timeout_s: float = 30.0):
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.2):
            assert m.error() is None, m.error()
            got.append(m)
    assert len(got) >= want, f"only {len(got)} of {want} records within {timeout_s}s"
    return got


# ---------------------------------------------------------------- kafka-python consumer


def test_kafka_python_group_consumer_consumes_commits_and_resumes(gbootstrap, topic):
    create_topic(gbootstrap, topic, 3)
    produce(gbootstrap, topic, range(30), 3)
    group = unique_topic("kp-group")

    c = kp_consumer(gbootstrap, group)
    c.subscribe([topic])
    got = kp_poll_until(c, 30)
    assert sorted((r.partition, r.offset) for r in got) == \
        sorted((p, o) for p in range(3) for o in range(10))
    assert sorted(r.value for r in got) == sorted(f"v-{i}".encode() for i in range(30))
    assert c.assignment() == {KTP(topic, p) for p in range(3)}
    # Commit what was consumed (the positions), then read it back.
    c.commit()
    for p in range(3):
        assert c.committed(KTP(topic, p)) == 10, f"partition {p}"
    # A member commit carrying metadata, and its metadata coming back.
    c.commit({KTP(topic, 0): OffsetAndMetadata(10, "kp-member-meta", -1)})
    assert c.committed(KTP(topic, 0), metadata=True).metadata == "kp-member-meta"
    c.close()

    # A new member of the same group resumes after the commit: only new records.
    produce(gbootstrap, topic, range(30, 36), 3)
    c2 = kp_consumer(gbootstrap, group)
    c2.subscribe([topic])
    got = kp_poll_until(c2, 6)
    # Anything older would arrive first; give it a moment to show up.
    for records in c2.poll(timeout_ms=1000).values():
        got.extend(records)
    assert sorted(r.value for r in got) == sorted(f"v-{i}".encode() for i in range(30, 36))
    assert all(r.offset >= 10 for r in got)
    c2.close()


# ---------------------------------------------------------------- kafka-python admin


def _kp_listed(admin: KafkaAdminClient, group: str):
    return [g for g in admin.list_groups() if g["group_id"] == group]


def test_kafka_python_admin_lists_describes_fetches_and_deletes_groups(gbootstrap, topic):
    create_topic(gbootstrap, topic, 2)
    produce(gbootstrap, topic, range(10), 2)
    group = unique_topic("kp-admin")
    c = kp_consumer(gbootstrap, group)
    c.subscribe([topic])
    kp_poll_until(c, 10)
    c.commit()
    admin = KafkaAdminClient(bootstrap_servers=gbootstrap, client_id="kp-admin")
    try:
        listed = _kp_listed(admin, group)
        assert len(listed) == 1, admin.list_groups()
        assert listed[0]["protocol_type"] == "consumer"
        assert listed[0]["group_state"] == "Stable"
        stable = admin.list_groups(states_filter=["Stable"])
        assert group in [g["group_id"] for g in stable]
        assert group not in [g["group_id"] for g in admin.list_groups(states_filter=["Empty"])]

        desc = admin.describe_groups([group])[group]
        assert desc["error"] is None, desc
        assert desc["group_state"] == "Stable", desc
        assert desc["protocol_type"] == "consumer", desc
        assert desc["protocol_data"] in ("range", "roundrobin", "sticky", "cooperative-sticky"), desc
        assert len(desc["members"]) == 1, desc
        member = desc["members"][0]
        assert member["client_id"] == f"kp-{group}", member
        assert member["client_host"].endswith("127.0.0.1"), member
        # kafka-python decodes the consumer protocol's subscription and assignment.
        assert member["member_metadata"]["topics"] == [topic], member
        assigned = {(t["topic"], p) for t in member["member_assignment"]["assigned_partitions"]
                    for p in t["partitions"]}
        assert assigned == {(topic, 0), (topic, 1)}, member

        offsets = admin.list_group_offsets(group)[group]
        assert {tp: om.offset for tp, om in offsets.items()} == \
            {KTP(topic, 0): 5, KTP(topic, 1): 5}

        # Not while it has a member.
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
        assert _kp_listed(admin, group), "a refused delete must leave the group"

        c.close()  # LeaveGroup
        wait_until(lambda: admin.describe_groups([group])[group]["group_state"] == "Empty", 15,
                   f"{group} to become Empty after its only member left")
        assert [g["group_state"] for g in _kp_listed(admin, group)] == ["Empty"]
        # Offsets stay while the group is empty.
        assert admin.list_group_offsets(group)[group][KTP(topic, 1)].offset == 5

        assert admin.delete_groups([group]) == {group: "OK"}
        assert _kp_listed(admin, group) == []
        assert admin.list_group_offsets(group)[group] == {}
        assert admin.describe_groups([group])[group]["group_state"] == "Dead"
        assert admin.delete_groups([group]) == {group: "GroupIdNotFoundError"}
    finally:
        admin.close()
        c.close()


# ---------------------------------------------------------------- confluent-kafka admin


def _ck_offsets(admin, group: str, topic: str, partitions: int) -> dict[int, int]:
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    res = admin.list_consumer_group_offsets([req], request_timeout=TIMEOUT_S)[group].result(
        timeout=TIMEOUT_S)
    assert res.group_id == group
    for tp in res.topic_partitions:
        assert tp.error is None, tp
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def _ck_describe(admin, group: str):
    return admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(
        timeout=TIMEOUT_S)


def _alter(admin, group: str, partitions: list[TopicPartition]):
    """AlterConsumerGroupOffsets; returns the errors (request-level or per partition)."""
    req = ConsumerGroupTopicPartitions(group, partitions)
    try:
        res = admin.alter_consumer_group_offsets([req], request_timeout=TIMEOUT_S)[group].result(
            timeout=TIMEOUT_S)
    except KafkaException as e:
        return [e.args[0]]
    return [tp.error for tp in res.topic_partitions if tp.error is not None]


def test_confluent_admin_lists_describes_and_resets_groups(gbootstrap, topic):
    create_topic(gbootstrap, topic, 2)
    produce(gbootstrap, topic, range(20), 2)
    group = unique_topic("ck-admin")
    admin = admin_client(gbootstrap)
    open_consumers = []

    def consumer():
        open_consumers.append(ck_consumer(gbootstrap, group))
        return open_consumers[-1]

    def close(consumer):
        open_consumers.remove(consumer)
        consumer.close()  # LeaveGroup

    c = consumer()
    try:
        c.subscribe([topic])
        ck_poll_until(c, 20)
        c.commit(asynchronous=False)

        listed = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
        assert not listed.errors, listed.errors
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, listed.valid
        assert mine[0].state == ConsumerGroupState.STABLE, mine[0]
        assert not mine[0].is_simple_consumer_group
        only_empty = admin.list_consumer_groups(
            states={ConsumerGroupState.EMPTY}, request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
        assert group not in [g.group_id for g in only_empty.valid]

        desc = _ck_describe(admin, group)
        assert desc.state == ConsumerGroupState.STABLE, desc
        assert not desc.is_simple_consumer_group
        assert desc.partition_assignor == "range", desc.partition_assignor  # librdkafka's default
        assert len(desc.members) == 1, desc.members
        m = desc.members[0]
        assert m.client_id == f"ck-{group}"
        assert {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} == \
            {(topic, 0), (topic, 1)}

        assert _ck_offsets(admin, group, topic, 2) == {0: 10, 1: 10}

        # An admin reset while the group has a member is refused and changes nothing.
        errors = _alter(admin, group, [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)])
        assert errors, "AlterConsumerGroupOffsets succeeded on a group with an active member"
        assert _ck_offsets(admin, group, topic, 2) == {0: 10, 1: 10}

        close(c)
        wait_until(lambda: _ck_describe(admin, group).state == ConsumerGroupState.EMPTY, 15,
                   f"{group} to become EMPTY after its only member left")

        # Now the reset works, and the next member starts where it says.
        assert _alter(admin, group, [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)]) == []
        assert _ck_offsets(admin, group, topic, 2) == {0: 3, 1: 4}
        c = consumer()
        c.subscribe([topic])
        got = ck_poll_until(c, 7 + 6)
        first = {}
        for msg in got:
            first.setdefault(msg.partition(), msg.offset())
        assert first == {0: 3, 1: 4}, first
        close(c)

        res = admin.delete_consumer_groups([group], request_timeout=TIMEOUT_S)
        assert res[group].result(timeout=TIMEOUT_S) is None
        listed = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
        assert group not in [g.group_id for g in listed.valid]
    finally:
        for leftover in open_consumers:
            leftover.close()


def test_confluent_delete_group_refused_while_it_has_members(gbootstrap, topic):
    create_topic(gbootstrap, topic, 1)
    group = unique_topic("ck-busy")
    admin = admin_client(gbootstrap)
    c = ck_consumer(gbootstrap, group)
    try:
        c.subscribe([topic])
        wait_until(lambda: c.poll(0.2) is None and c.assignment(), 30, "an assignment")
        with pytest.raises(KafkaException) as e:
            admin.delete_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(
                timeout=TIMEOUT_S)
        assert "NON_EMPTY_GROUP" in str(e.value) or "not empty" in str(e.value).lower(), e.value
        assert _ck_describe(admin, group).state == ConsumerGroupState.STABLE
    finally:
        c.close()


# ---------------------------------------------------------------- OffsetCommit metadata


def test_offset_commit_metadata_comes_back_from_offset_fetch(gbootstrap, topic):
    create_topic(gbootstrap, topic, 2)
    produce(gbootstrap, topic, range(20), 2)

    # kafka-python, committing from outside the group (no subscription: generation -1).
    kp_group = unique_topic("kp-meta")
    meta = "checkpoint=7;host=worker-3;note=ünïcødé"
    c = kp_consumer(gbootstrap, kp_group)
    c.commit({KTP(topic, 0): OffsetAndMetadata(7, meta, -1),
              KTP(topic, 1): OffsetAndMetadata(2, "", -1)})
    got = c.committed(KTP(topic, 0), metadata=True)
    assert (got.offset, got.metadata) == (7, meta)
    assert c.committed(KTP(topic, 1), metadata=True).metadata == ""
    c.close()
    admin = KafkaAdminClient(bootstrap_servers=gbootstrap, client_id="kp-meta-admin")
    try:
        offsets = admin.list_group_offsets(kp_group)[kp_group]
        assert offsets[KTP(topic, 0)].metadata == meta
    finally:
        admin.close()

    # confluent-kafka.
    ck_group = unique_topic("ck-meta")
    cc = ck_consumer(gbootstrap, ck_group)
    try:
        cc.commit(offsets=[TopicPartition(topic, 1, 9, "ck-metadata-{1}")], asynchronous=False)
        (tp,) = cc.committed([TopicPartition(topic, 1)], timeout=TIMEOUT_S)
        assert tp.error is None, tp
        assert (tp.offset, tp.metadata) == (9, "ck-metadata-{1}")
    finally:
        cc.close()
    req = ConsumerGroupTopicPartitions(ck_group, [TopicPartition(topic, 1)])
    ck_admin = admin_client(gbootstrap)  # must outlive its futures
    res = ck_admin.list_consumer_group_offsets([req], request_timeout=TIMEOUT_S)[ck_group].result(
        timeout=TIMEOUT_S)
    assert [(tp.offset, tp.metadata) for tp in res.topic_partitions] == [(9, "ck-metadata-{1}")]
