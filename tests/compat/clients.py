"""Client helpers shared by the suites: confluent-kafka admin/consumer plumbing and kcat."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness import CapturingLogger, wait_until

TIMEOUT_S = 15


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "strata-compat-admin"})


def topic_partitions(admin: AdminClient, name: str) -> int | None:
    md = admin.list_topics(timeout=TIMEOUT_S)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def create_topic(bootstrap: str, name: str, partitions: int = 1,
                 configs: dict | None = None) -> None:
    """CreateTopics (with topic configs), then wait until metadata shows every partition.
    The suite's one topic-creating helper."""
    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1, config=configs or {})],
                                  operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    futures[name].result(timeout=TIMEOUT_S)
    wait_until(lambda: topic_partitions(admin, name) == partitions, 10,
               f"{name} with {partitions} partitions in metadata")


def produce_records(bootstrap: str, topic: str, records, **conf) -> list[tuple]:
    """Produces `(partition, key, value, timestamp_ms or None)` records with acks=all (conf
    adds or overrides producer settings) and waits for every delivery report; returns
    (offset, error) per record, -1 as the offset of a failed one. The suite's one
    producing helper."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                  "enable.idempotence": False, "logger": CapturingLogger("produce"), **conf})
    results: list = [None] * len(records)

    def report(i):
        def cb(err, msg):
            results[i] = (msg.offset() if err is None else -1, err)
        return cb

    for i, (partition, key, value, ts) in enumerate(records):
        kwargs = {"timestamp": ts} if ts is not None else {}
        p.produce(topic, key=key, value=value, partition=partition, on_delivery=report(i),
                  **kwargs)
    assert p.flush(TIMEOUT_S) == 0, "messages still queued after flush"
    return results


def kp_poll(consumer, want: int, timeout_s: float = 30.0) -> list:
    """Polls a kafka-python consumer until `want` records arrived or `timeout_s` passed;
    returns them in arrival order (callers check the count). The suite's one kafka-python
    poll loop."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(records)
    return got


def make_consumer(bootstrap: str, logger: CapturingLogger) -> Consumer:
    # librdkafka insists on a group.id; with assign() and explicit offsets and no commits it
    # never needs the (not yet implemented) group coordinator.
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "strata-compat-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 200,
        "logger": logger,
    })


def consume_all(consumer: Consumer, assignment: list[TopicPartition], want: int,
                timeout_s: float = 30.0):
    """Assign, then read until every partition hit EOF with `want` messages in total.
    Returns ({partition: [messages]}, [errors])."""
    consumer.assign(assignment)
    got: dict[int, list] = {}
    errors = []
    at_eof: set[int] = set()
    total = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            err = msg.error()
            if err is None:
                got.setdefault(msg.partition(), []).append(msg)
                total += 1
                at_eof.discard(msg.partition())
            elif err.code() == KafkaError._PARTITION_EOF:
                at_eof.add(msg.partition())
            else:
                errors.append(err)
        if total >= want and at_eof >= {tp.partition for tp in assignment}:
            break
    return got, errors


def msg_tuple(m):
    return (m.offset(), m.key(), m.value(), list(m.headers() or []))


def payload(i: int) -> bytes:
    # Compressible but not trivial: repeated structure with varying fields.
    return (f'{{"seq": {i}, "kind": "compat", "text": "' + "strata log broker " * (1 + i % 7)
            + f'", "tail": {i * 7919 % 1000}}}').encode()


# ---------------------------------------------------------------- kcat

KCAT = shutil.which("kcat") or shutil.which("kafkacat")

# Log lines librdkafka writes at syslog level 0-4 (emerg..warning) look like "%3|...".
SEVERE_LOG = re.compile(r"^%[0-4]\|", re.MULTILINE)


# Never pass -q: it sets librdkafka's log level to 0 and would hide the errors asserted on.
def kcat(bootstrap: str, *args: str, stdin: str | None = None, timeout: float = 30.0):
    assert KCAT, "kcat is not installed (apt-get install kcat)"
    proc = subprocess.run([KCAT, "-b", bootstrap, "-m", "10", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def assert_clean(proc, what: str):
    detail = f"{what}: rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail
    assert "underflow" not in proc.stderr.lower(), detail
    assert "ApiVersionRequest failed" not in proc.stderr, detail
    assert not SEVERE_LOG.search(proc.stderr), detail


def round_trip(conf: dict, topic: str, n: int = 10) -> list[str]:
    """Produces `m0..m{n-1}` to partition 0 of `topic` with client settings `conf` (security
    settings included) and reads them back with the same settings; returns the values."""
    p = Producer(conf)
    for i in range(n):
        p.produce(topic, value=f"m{i}", partition=0)
    assert p.flush(30) == 0
    c = Consumer({**conf, "group.id": f"{topic}-g", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    got, errors = consume_all(c, [TopicPartition(topic, 0, 0)], n)
    c.close()
    assert not errors, errors
    return [m.value().decode() for m in got.get(0, [])]
