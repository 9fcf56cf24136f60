"""Topic configs, retention, DeleteRecords and replay by timestamp through confluent-kafka
(librdkafka) and kafka-python: what their admin clients and consumers show a user.

DescribeConfigs (sources, synonyms, documentation, the broker resource), AlterConfigs and
IncrementalAlterConfigs (SET / DELETE / APPEND / SUBTRACT, validation errors with messages,
validate_only, persistence across a restart, in force at once), CreateTopics with configs,
DeleteRecords, offsets_for_times with non-monotonic CreateTime timestamps, retention by time
with consumers resetting per auto.offset.reset, and LogAppendTime topics.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewTopic, OffsetSpec, ResourceType)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka import errors as kerr
from kafka.admin import AlterConfigOp
from kafka.admin import ConfigResource as KConfigResource

from clients import admin_client, create_topic, kp_poll, produce_records
from harness import unique_topic, wait_until

TIMEOUT_S = 30
# Broker settings for brokers whose retention must act within a test.
FAST_RETENTION = {"STRATA_RETENTION_CHECK_INTERVAL_MS": "200"}


# ---------------------------------------------------------------- helpers

def now_ms() -> int:
    return int(time.time() * 1000)


def describe(bootstrap: str, restype, name: str) -> dict[str, ConfigEntry]:
    admin = admin_client(bootstrap)
    res = ConfigResource(restype, name)
    return admin.describe_configs([res], request_timeout=TIMEOUT_S)[res].result(timeout=TIMEOUT_S)


def describe_topic(bootstrap: str, name: str) -> dict[str, ConfigEntry]:
    return describe(bootstrap, ResourceType.TOPIC, name)


def kafka_error(excinfo) -> KafkaError:
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), repr(excinfo.value)
    return err


def incremental(bootstrap: str, topic: str, ops: list[tuple[str, str | None, AlterConfigOpType]],
                validate_only: bool = False):
    """IncrementalAlterConfigs on a topic; returns the future's result (raises on error)."""
    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops])
    fut = admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S,
                                          validate_only=validate_only)[res]
    return fut.result(timeout=TIMEOUT_S)


def produce(bootstrap: str, topic: str, records, partition: int = 0, **conf) -> list[tuple]:
    """Produces `(timestamp_ms or None, value)` records; returns (offset, error) per record."""
    return produce_records(bootstrap, topic, [(partition, None, value, ts) for ts, value in records],
                           **conf)


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-compat-unused"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    finally:
        c.close()


def kp_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="strata-compat-configs",
                            request_timeout_ms=15000)


def kp_consumer(bootstrap: str, reset: str = "none") -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset=reset, fetch_max_wait_ms=200,
                         request_timeout_ms=20000, client_id="strata-compat-configs")


# ---------------------------------------------------------------- DescribeConfigs

def test_describe_topic_configs_sources_and_synonyms(bootstrap, topic):
    create_topic(bootstrap, topic, configs={"retention.ms": "7200000", "segment.bytes": "1048576"})
    entries = describe_topic(bootstrap, topic)
    for name in ("cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes",
                 "segment.ms", "max.message.bytes", "message.timestamp.type"):
        assert name in entries, f"{name} missing: {sorted(entries)}"

    r = entries["retention.ms"]
    assert (r.value, r.source, r.is_default, r.is_read_only) == \
        ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value, False, False), r
    # librdkafka asks for synonyms: the override first, then the broker's setting.
    syn = r.synonyms
    assert list(syn) == ["retention.ms", "log.retention.ms"], syn
    assert syn["retention.ms"].value == "7200000"
    assert syn["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert syn["log.retention.ms"].value == "604800000"
    assert syn["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    d = entries["retention.bytes"]
    assert (d.value, d.source, d.is_default) == ("-1", ConfigSource.DEFAULT_CONFIG.value, True), d
    assert list(d.synonyms) == ["log.retention.bytes"], d.synonyms
    m = entries["max.message.bytes"]
    assert (m.value, m.source) == ("1048588", ConfigSource.DEFAULT_CONFIG.value), m
    assert list(m.synonyms) == ["message.max.bytes"], m.synonyms
    s = entries["segment.bytes"]
    assert (s.value, s.source) == ("1048576", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), s


def test_describe_missing_topic_is_unknown_topic(bootstrap):
    with pytest.raises(KafkaException) as e:
        describe_topic(bootstrap, unique_topic("no-such-topic"))
    assert kafka_error(e).code() == KafkaError.UNKNOWN_TOPIC_OR_PART, kafka_error(e)


def test_describe_broker_settings_are_read_only(bootstrap):
    entries = describe(bootstrap, ResourceType.BROKER, "1")
    for name in ("log.retention.ms", "log.retention.bytes", "log.retention.check.interval.ms",
                 "log.segment.bytes", "message.max.bytes", "log.cleanup.policy", "num.partitions",
                 "log.dirs", "listeners"):
        assert name in entries, f"{name} missing: {sorted(entries)}"
    writable = [e.name for e in entries.values() if not e.is_read_only]
    assert not writable, f"broker settings shown as writable: {writable}"
    assert entries["log.retention.check.interval.ms"].value == "300000"
    assert entries["log.retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # The shared broker runs on its own port and data dir: those are static settings.
    assert entries["listeners"].source == ConfigSource.STATIC_BROKER_CONFIG.value

    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("log.retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)
    err = kafka_error(e)
    assert err.code() in (KafkaError.INVALID_REQUEST, KafkaError.POLICY_VIOLATION,
                          KafkaError.INVALID_CONFIG), err
    assert "read-only" in err.str(), err.str()
    assert describe(bootstrap, ResourceType.BROKER, "1")["log.retention.ms"].value == "604800000"


def test_kafka_python_describe_with_synonyms_and_documentation(bootstrap, topic):
    admin = kp_admin(bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                     "configs": {"segment.ms": "60000"}}},
                            wait_for_metadata=True)
        res = admin.describe_configs([KConfigResource("TOPIC", topic)], include_synonyms=True,
                                     config_filter="all")
        configs = res["topic"][topic]
        seg = configs["segment.ms"]
        assert seg["value"] == "60000" and seg["config_source"] == "DYNAMIC_TOPIC_CONFIG", seg
        assert [(s["name"], s["source"]) for s in seg["synonyms"]] == [
            ("segment.ms", "DYNAMIC_TOPIC_CONFIG"), ("log.roll.ms", "DEFAULT_CONFIG")], seg
        pol = configs["cleanup.policy"]
        assert pol["value"] == "delete" and pol["config_source"] == "DEFAULT_CONFIG", pol
        assert pol.get("config_type") in (None, "LIST"), pol

        # Only what was overridden, with the client's default "modified" filter.
        modified = admin.describe_configs([KConfigResource("TOPIC", topic)])["topic"][topic]
        assert set(modified) == {"segment.ms"}, modified

        # Documentation (DescribeConfigs v3+, include_documentation): kafka-python has no
        # public switch for it, so the request goes through its own protocol classes.
        from kafka.protocol.admin import DescribeConfigsRequest
        req = DescribeConfigsRequest(resources=[(2, topic, ["retention.ms", "segment.ms"])],
                                     include_synonyms=False, include_documentation=True,
                                     min_version=3)

        def docs_for(request):
            async def send():
                return await admin._manager.send(request)

            [result] = admin._manager.run(send).to_dict()["results"]
            assert result["error_code"] == 0, result
            return {c["name"]: c.get("documentation") for c in result["configs"]}

        docs = docs_for(req)
        assert set(docs) == {"retention.ms", "segment.ms"}, docs
        assert all(isinstance(d, str) and len(d) > 10 for d in docs.values()), docs
        assert docs["retention.ms"] != docs["segment.ms"], docs
        # Not asked for: none.
        req = DescribeConfigsRequest(resources=[(2, topic, ["retention.ms"])],
                                     include_synonyms=False, include_documentation=False,
                                     min_version=3)
        assert docs_for(req) == {"retention.ms": None}
    finally:
        admin.close()


# ---------------------------------------------------------------- AlterConfigs

def test_incremental_alter_configs_round_trip(bootstrap, topic):
    create_topic(bootstrap, topic)
    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    APPEND, SUBTRACT = AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT

    incremental(bootstrap, topic, [("retention.ms", "3600000", SET),
                                   ("max.message.bytes", "50000", SET)])
    e = describe_topic(bootstrap, topic)
    assert (e["retention.ms"].value, e["retention.ms"].source) == \
        ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    assert e["max.message.bytes"].value == "50000"

    # SET of one config leaves the others alone (unlike AlterConfigs).
    incremental(bootstrap, topic, [("segment.ms", "600000", SET)])
    e = describe_topic(bootstrap, topic)
    assert (e["retention.ms"].value, e["max.message.bytes"].value, e["segment.ms"].value) == \
        ("3600000", "50000", "600000")

    # DELETE returns to the broker default.
    incremental(bootstrap, topic, [("retention.ms", None, DELETE)])
    e = describe_topic(bootstrap, topic)
    assert (e["retention.ms"].value, e["retention.ms"].source) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG.value), e["retention.ms"]
    assert e["max.message.bytes"].value == "50000"
    # DELETE of something not overridden is fine.
    incremental(bootstrap, topic, [("retention.bytes", None, DELETE)])

    # APPEND / SUBTRACT on the list config cleanup.policy.
    incremental(bootstrap, topic, [("cleanup.policy", "delete", APPEND)])
    e = describe_topic(bootstrap, topic)
    assert (e["cleanup.policy"].value, e["cleanup.policy"].source) == \
        ("delete", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), e["cleanup.policy"]
    incremental(bootstrap, topic, [("cleanup.policy", "compact", APPEND)])
    assert describe_topic(bootstrap, topic)["cleanup.policy"].value == "delete,compact"
    incremental(bootstrap, topic, [("cleanup.policy", "compact", SUBTRACT)])
    assert describe_topic(bootstrap, topic)["cleanup.policy"].value == "delete"
    with pytest.raises(KafkaException) as ex:
        incremental(bootstrap, topic, [("cleanup.policy", "shred", APPEND)])
    err = kafka_error(ex)
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert "shred" in err.str() and "cleanup.policy" in err.str(), err.str()
    assert describe_topic(bootstrap, topic)["cleanup.policy"].value == "delete"

    # APPEND on a config that is not a list.
    with pytest.raises(KafkaException) as ex:
        incremental(bootstrap, topic, [("retention.ms", "5", APPEND)])
    err = kafka_error(ex)
    assert err.code() in (KafkaError.INVALID_CONFIG, KafkaError.INVALID_REQUEST), err
    assert "retention.ms" in err.str(), err.str()

    # validate_only: accepted, not applied.
    incremental(bootstrap, topic, [("segment.ms", "1000", SET)], validate_only=True)
    assert describe_topic(bootstrap, topic)["segment.ms"].value == "600000"


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
@pytest.mark.parametrize("name,value,needle", [
    ("no.such.config", "1", "no.such.config"),
    ("retention.ms", "soon", "retention.ms"),
    ("retention.bytes", "-7", "retention.bytes"),
    ("segment.bytes", "99999999999", "segment.bytes"),
    ("cleanup.policy", "shred", "shred"),
    ("message.timestamp.type", "WallClock", "message.timestamp.type"),
    ("min.insync.replicas", "0", "min.insync.replicas"),
    ("flush.ms", "-1", "flush.ms"),
    ("compression.type", "brotli", "compression.type"),
    ("compression.zstd.level", "23", "compression.zstd.level"),
    ("min.cleanable.dirty.ratio", "1.01", "min.cleanable.dirty.ratio"),
    ("leader.replication.throttled.replicas", "0:one", "leader.replication.throttled.replicas"),
    ("message.format.version", "3.0", "message.format.version"),
])
def test_invalid_configs_are_invalid_config_with_a_message(bootstrap, topic, name, value, needle):
    create_topic(bootstrap, topic, configs={"retention.ms": "86400000"})
    with pytest.raises(KafkaException) as ex:
        incremental(bootstrap, topic, [(name, value, AlterConfigOpType.SET)])
    err = kafka_error(ex)
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert needle in err.str(), err.str()
    # The legacy AlterConfigs too (whole-set replace).
    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={name: value})
    with pytest.raises(KafkaException) as ex:
        admin.alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)
    assert kafka_error(ex).code() == KafkaError.INVALID_CONFIG, kafka_error(ex)
    # CreateTopics with it.
    bad_topic = unique_topic("bad-create")
    fut = admin.create_topics([NewTopic(bad_topic, 1, 1, config={name: value})],
                              request_timeout=TIMEOUT_S)[bad_topic]
    with pytest.raises(KafkaException) as ex:
        fut.result(TIMEOUT_S)
    assert kafka_error(ex).code() == KafkaError.INVALID_CONFIG, kafka_error(ex)
    assert needle in kafka_error(ex).str(), kafka_error(ex).str()
    # Nothing changed.
    e = describe_topic(bootstrap, topic)
    assert (e["retention.ms"].value, e["retention.ms"].source) == \
        ("86400000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), e["retention.ms"]
    assert bad_topic not in admin.list_topics(timeout=TIMEOUT_S).topics


def test_alter_configs_on_a_missing_topic(bootstrap):
    admin = admin_client(bootstrap)
    missing = unique_topic("alter-missing")
    res = ConfigResource(ResourceType.TOPIC, missing, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ex:
        admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)
    assert kafka_error(ex).code() == KafkaError.UNKNOWN_TOPIC_OR_PART, kafka_error(ex)


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_legacy_alter_configs_replaces_every_override(bootstrap, topic):
    create_topic(bootstrap, topic, configs={"retention.ms": "7200000", "segment.ms": "60000"})
    admin = admin_client(bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "1000000"})
    admin.alter_configs([res], request_timeout=TIMEOUT_S)[res].result(TIMEOUT_S)
    e = describe_topic(bootstrap, topic)
    assert (e["retention.bytes"].value, e["retention.bytes"].source) == \
        ("1000000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    # Left out of the request: back to the defaults.
    assert e["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value, e["retention.ms"]
    assert e["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value, e["segment.ms"]


def test_kafka_python_incremental_alter_and_reset(bootstrap, topic):
    admin = kp_admin(bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}},
                            wait_for_metadata=True)
        r = admin.alter_configs([KConfigResource("TOPIC", topic, {
            "retention.ms": "3600000",
            "cleanup.policy": (AlterConfigOp.APPEND, "delete")})])
        assert r["topic"][topic] == "OK", r
        cfg = admin.describe_configs([KConfigResource("TOPIC", topic)])["topic"][topic]
        assert cfg["retention.ms"]["value"] == "3600000", cfg
        assert cfg["cleanup.policy"]["value"] == "delete", cfg
        # A broker-side refusal comes back as the error, with the broker's message.
        r = admin.alter_configs([KConfigResource("TOPIC", topic, {"retention.ms": "never"})],
                                raise_on_unknown=False)
        assert r["topic"][topic] != "OK" and "InvalidConfig" in r["topic"][topic] \
            and "retention.ms" in r["topic"][topic], r
        r = admin.reset_configs([KConfigResource("TOPIC", topic, ["retention.ms"])])
        assert r["topic"][topic] == "OK", r
        cfg = admin.describe_configs([KConfigResource("TOPIC", topic)])["topic"][topic]
        assert set(cfg) == {"cleanup.policy"}, cfg
    finally:
        admin.close()


# ---------------------------------------------------------------- CreateTopics

def test_create_topics_with_configs_and_validate_only(bootstrap, topic):
    admin = admin_client(bootstrap)
    new = NewTopic(topic, num_partitions=2, replication_factor=1,
                   config={"retention.ms": "7200000", "segment.bytes": "1048576",
                           "message.timestamp.type": "LogAppendTime"})
    admin.create_topics([new], validate_only=True, request_timeout=TIMEOUT_S)[topic].result(
        TIMEOUT_S)
    # CreateTopics answers once a topic exists, so the check needs no grace period.
    assert topic not in admin.list_topics(timeout=TIMEOUT_S).topics, "validate_only created it"

    admin.create_topics([new], request_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    wait_until(lambda: topic in admin.list_topics(timeout=TIMEOUT_S).topics, 10, "topic")
    e = describe_topic(bootstrap, topic)
    for name, value in (("retention.ms", "7200000"), ("segment.bytes", "1048576"),
                        ("message.timestamp.type", "LogAppendTime")):
        assert (e[name].value, e[name].source) == \
            (value, ConfigSource.DYNAMIC_TOPIC_CONFIG.value), e[name]
    assert e["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    # kafka-python: validate_only with a bad config is refused, with a good one accepted.
    kp = kp_admin(bootstrap)
    try:
        other = unique_topic("kp-validate")
        with pytest.raises(kerr.InvalidConfigurationError):
            kp.create_topics({other: {"num_partitions": 1, "replication_factor": 1,
                                      "configs": {"cleanup.policy": "shred"}}},
                             validate_only=True)
        kp.create_topics({other: {"num_partitions": 1, "replication_factor": 1,
                                  "configs": {"retention.ms": "1000"}}}, validate_only=True)
        assert other not in kp.list_topics()
    finally:
        kp.close()


# ---------------------------------------------------------------- in force at once, persisted

def test_config_changes_apply_at_once_and_survive_restart(broker_factory, topic):
    b = broker_factory("persist", env=FAST_RETENTION)
    bs = b.bootstrap
    create_topic(bs, topic)
    big = b"x" * 30_000
    [(off, err)] = produce(bs, topic, [(None, big)], **{"message.max.bytes": 2_000_000})
    assert err is None and off == 0, err

    incremental(bs, topic, [("max.message.bytes", "20000", AlterConfigOpType.SET)])
    [(off, err)] = produce(bs, topic, [(None, big)], **{"message.max.bytes": 2_000_000,
                                                        "retries": 0})
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err

    assert b.stop() == 0, b.log_tail()
    b.start()
    e = describe_topic(bs, topic)
    assert (e["max.message.bytes"].value, e["max.message.bytes"].source) == \
        ("20000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), e["max.message.bytes"]
    [(off, err)] = produce(bs, topic, [(None, big)], **{"message.max.bytes": 2_000_000,
                                                        "retries": 0})
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    [(off, err)] = produce(bs, topic, [(None, b"y" * 10_000)])
    assert err is None and off == 1, err

    incremental(bs, topic, [("max.message.bytes", None, AlterConfigOpType.DELETE)])
    [(off, err)] = produce(bs, topic, [(None, big)], **{"message.max.bytes": 2_000_000})
    assert err is None and off == 2, err


# ---------------------------------------------------------------- DeleteRecords

def test_delete_records_confluent_and_kafka_python(bootstrap, topic):
    create_topic(bootstrap, topic, partitions=2)
    produce(bootstrap, topic, [(None, b"p0-%d" % i) for i in range(100)], partition=0)
    produce(bootstrap, topic, [(None, b"p1-%d" % i) for i in range(40)], partition=1)
    admin = admin_client(bootstrap)

    futs = admin.delete_records([TopicPartition(topic, 0, 25)], request_timeout=TIMEOUT_S)
    [res] = [f.result(TIMEOUT_S) for f in futs.values()]
    assert res.low_watermark == 25, res
    assert watermarks(bootstrap, topic, 0) == (25, 100)

    futs = admin.delete_records([TopicPartition(topic, 0, 101)], request_timeout=TIMEOUT_S)
    with pytest.raises(KafkaException) as ex:
        [f.result(TIMEOUT_S) for f in futs.values()]
    assert kafka_error(ex).code() == KafkaError.OFFSET_OUT_OF_RANGE, kafka_error(ex)
    assert watermarks(bootstrap, topic, 0) == (25, 100)

    kp = kp_admin(bootstrap)
    try:
        r = kp.delete_records({KTopicPartition(topic, 0): 60, KTopicPartition(topic, 1): -1})
        lows = {tp.partition: v["low_watermark"] for tp, v in r.items()}
        assert lows == {0: 60, 1: 40}, r
        with pytest.raises(kerr.OffsetOutOfRangeError):
            kp.delete_records({KTopicPartition(topic, 1): 41})
    finally:
        kp.close()
    assert watermarks(bootstrap, topic, 0) == (60, 100)
    assert watermarks(bootstrap, topic, 1) == (40, 40)

    # kafka-python consumer: positioned before the log start with no reset policy, it gets
    # OffsetOutOfRangeError; with "earliest" it lands on 60.
    tp = KTopicPartition(topic, 0)
    c = kp_consumer(bootstrap, reset="none")
    try:
        c.assign([tp])
        c.seek(tp, 10)
        with pytest.raises(kerr.OffsetOutOfRangeError):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                c.poll(timeout_ms=300)
    finally:
        c.close()
    c = kp_consumer(bootstrap, reset="earliest")
    try:
        c.assign([tp])
        c.seek(tp, 10)
        got = kp_poll(c, 40)
        assert [r.offset for r in got] == list(range(60, 100)), [r.offset for r in got][:5]
        assert got[0].value == b"p0-60"
    finally:
        c.close()


# ---------------------------------------------------------------- replay by timestamp

def test_offsets_for_times_non_monotonic_kafka_python_and_confluent(bootstrap, topic):
    create_topic(bootstrap, topic)
    t0 = now_ms() - 60_000
    batches = [[100, 300, 200], [50, 250, 400], [400, 150], [1000], [20, 999, 1000, 30]]
    ts = []
    for b in batches:
        records = [(t0 + d, b"r") for d in b]
        # One batch each: everything sent before the flush, with a long linger.
        out = produce(bootstrap, topic, records, **{"linger.ms": 500})
        assert all(err is None for _, err in out), out
        ts.extend(t0 + d for d in b)

    def expected(target):
        for off, t in enumerate(ts):
            if t >= target:
                return off, t
        return None

    tp = KTopicPartition(topic, 0)
    c = kp_consumer(bootstrap)
    cc = Consumer({"bootstrap.servers": bootstrap, "group.id": "strata-compat-unused"})
    try:
        wrong = []
        for d in list(range(0, 1002, 25)) + [1, 49, 51, 149, 151, 999, 1001, 5000]:
            want = expected(t0 + d)
            got = c.offsets_for_times({tp: t0 + d})[tp]
            got = None if got is None else (got.offset, got.timestamp)
            if got != want:
                wrong.append(f"kafka-python t0+{d}: got {got}, want {want}")
            [r] = cc.offsets_for_times([TopicPartition(topic, 0, t0 + d)], timeout=TIMEOUT_S)
            got_c = None if r.offset < 0 else r.offset
            if got_c != (want[0] if want else None):
                wrong.append(f"confluent t0+{d}: got {r.offset}, want {want}")
        assert not wrong, wrong
    finally:
        c.close()
        cc.close()


# ---------------------------------------------------------------- retention by time

def test_retention_by_time_kafka_python_consumers_reset(broker_factory, topic):
    b = broker_factory("retention", env=FAST_RETENTION)
    bs = b.bootstrap
    create_topic(bs, topic, configs={"segment.ms": "100", "retention.ms": "1000"})
    for r in range(3):
        out = produce(bs, topic, [(None, b"old-%d-%d" % (r, i)) for i in range(10)])
        assert all(err is None for _, err in out), out
        time.sleep(0.3)
    wait_until(lambda: watermarks(bs, topic) == (30, 30), 60, "retention to empty the partition")

    incremental(bs, topic, [("retention.ms", "600000", AlterConfigOpType.SET)])
    # New records with explicit timestamps, the newest in the middle (offset 35).
    base = now_ms()
    stamps = [base + i for i in range(10)]
    stamps[5] = base + 100
    out = produce(bs, topic, [(stamps[i], b"new-%d" % i) for i in range(10)])
    assert [o for o, _ in out] == list(range(30, 40)), out
    assert watermarks(bs, topic) == (30, 40)
    # The admin client's ListOffsets sees the same log.
    admin = admin_client(bs)
    tpc = TopicPartition(topic, 0)
    specs = {"earliest": (OffsetSpec.earliest(), 30), "latest": (OffsetSpec.latest(), 40),
             "max_timestamp": (OffsetSpec.max_timestamp(), 35),
             "for_timestamp(base+6)": (OffsetSpec.for_timestamp(base + 6), 35),
             "for_timestamp(0)": (OffsetSpec.for_timestamp(0), 30)}
    for label, (spec, want) in specs.items():
        got = admin.list_offsets({tpc: spec}, request_timeout=TIMEOUT_S)[tpc].result(TIMEOUT_S)
        assert got.offset == want, f"list_offsets {label}: {got.offset}, want {want}"

    tp = KTopicPartition(topic, 0)
    c = kp_consumer(bs, reset="earliest")
    try:
        c.assign([tp])
        c.seek(tp, 0)
        got = kp_poll(c, 10)
        assert [(r.offset, r.value) for r in got] == [(30 + i, b"new-%d" % i) for i in range(10)]
    finally:
        c.close()
    c = kp_consumer(bs, reset="latest")
    try:
        c.assign([tp])
        c.seek(tp, 5)
        # poll() returns a dict (never None): what shows the reset is the position, and
        # that no record below the latest offset was delivered on the way.
        polled = []

        def reset_to_latest():
            polled.extend(r for rs in c.poll(timeout_ms=200).values() for r in rs)
            return c.position(tp) == 40
        wait_until(reset_to_latest, 30, "reset to latest")
        assert polled == [], f"records delivered before the reset to latest: {polled}"
        out = produce(bs, topic, [(None, b"after")])
        got = kp_poll(c, 1)
        assert [(r.offset, r.value) for r in got] == [(40, b"after")], got
    finally:
        c.close()
    # kafka-python's offsets_for_times after retention: a target before everything kept
    # gives the new log start.
    c = kp_consumer(bs)
    try:
        r = c.offsets_for_times({tp: 0})[tp]
        assert r is not None and r.offset == 30, r
    finally:
        c.close()


# ---------------------------------------------------------------- LogAppendTime

def test_log_append_time_kafka_python(bootstrap, topic):
    create_topic(bootstrap, topic, configs={"message.timestamp.type": "LogAppendTime"})
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=15000)
    old = now_ms() - 3_600_000
    before = now_ms()
    try:
        futures = [p.send(topic, value=b"v%d" % i, partition=0, timestamp_ms=old + i)
                   for i in range(5)]
        p.flush(timeout=TIMEOUT_S)
        metas = [f.get(timeout=TIMEOUT_S) for f in futures]
    finally:
        p.close()
    after = now_ms()
    # The produce response carries the broker's append time.
    for m in metas:
        assert before <= m.timestamp <= after, (m, before, after)

    tp = KTopicPartition(topic, 0)
    c = kp_consumer(bootstrap)
    try:
        c.assign([tp])
        c.seek(tp, 0)
        got = kp_poll(c, 5)
        assert len(got) == 5
        for r in got:
            # timestamp_type 1 = LogAppendTime.
            assert r.timestamp_type == 1 and before <= r.timestamp <= after, r
    finally:
        c.close()
