"""Client quotas with confluent-kafka (librdkafka) and kafka-python: a producer over its
`producer_byte_rate` quota is slowed without errors and told so (confluent-kafka's
`throttle_cb`), and kafka-python's producer, which does not report throttles, is slowed
without errors too.

The quota is set with a hand-encoded AlterClientQuotas v0 request (neither client library
has an admin call for client quotas). The broker runs with 3 quota windows of 1 s, so the
burst a client may send before it is throttled is ~2 s of its quota.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka import Producer
from kafka import KafkaProducer

from clients import create_topic

QUOTA = 256 * 1024
RECORD = 10 * 1024
# 6x the burst allowance: the rest must wait for the quota.
TOTAL = 6 * 2 * QUOTA


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _nullable(s: str | None) -> bytes:
    return struct.pack(">h", -1) if s is None else _str(s)


def _recv(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def alter_client_quota(bootstrap: str, entity: list[tuple[str, str | None]], key: str,
                       value: float) -> int:
    """AlterClientQuotas v0 with one entry and one op; returns the entry's error code."""
    body = struct.pack(">hhi", 49, 0, 7) + _str("compat-quotas")
    body += struct.pack(">i", 1) + struct.pack(">i", len(entity))
    body += b"".join(_str(t) + _nullable(n) for t, n in entity)
    body += struct.pack(">i", 1) + _str(key) + struct.pack(">d?", value, False)
    body += struct.pack(">?", False)
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        (n,) = struct.unpack(">i", _recv(s, 4))
        resp = _recv(s, n)
    correlation, _throttle, entries, error = struct.unpack(">iiih", resp[:14])
    assert correlation == 7 and entries == 1
    return error


def _quota_broker(broker_factory):
    return broker_factory(env={"STRATA_QUOTA_WINDOW_NUM": "3"})


def test_confluent_kafka_producer_is_throttled_and_told(broker_factory, topic):
    b = _quota_broker(broker_factory)
    create_topic(b.bootstrap, topic)
    entity = [("client-id", "py-throttled")]
    assert alter_client_quota(b.bootstrap, entity, "producer_byte_rate", QUOTA) == 0
    assert alter_client_quota(b.bootstrap, entity, "producer_byte_rate", -1.0) == 42
    throttles: list[int] = []
    errors: list[str] = []
    delivered = [0]

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[0] += 1

    p = Producer({
        "bootstrap.servers": b.bootstrap,
        "client.id": "py-throttled",
        "acks": "1",
        "linger.ms": 20,
        # Few requests waiting behind the broker's mute (librdkafka keeps sending).
        "max.in.flight.requests.per.connection": 2,
        "queue.buffering.max.kbytes": 512,
        "throttle_cb": lambda ev: throttles.append(ev.throttle_time),
    })
    started = time.monotonic()
    payload = b"x" * RECORD
    n = TOTAL // RECORD
    for _ in range(n):
        while True:
            try:
                p.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(120) == 0
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert delivered[0] == n
    assert throttles and max(throttles) > 0, "no throttle_cb with a throttle time"
    # All but the first burst at the quota: at least ~10 s on any machine; well above what
    # the same bytes take unthrottled (a fraction of a second).
    assert elapsed >= (TOTAL - 2 * QUOTA) / QUOTA * 0.8, f"{elapsed:.1f} s: not throttled"


def test_kafka_python_producer_is_throttled_without_errors(broker_factory, topic):
    b = _quota_broker(broker_factory)
    create_topic(b.bootstrap, topic)
    assert alter_client_quota(b.bootstrap, [("client-id", None)], "producer_byte_rate",
                              QUOTA) == 0
    p = KafkaProducer(bootstrap_servers=b.bootstrap, client_id="py-kafka-python", acks=1,
                      linger_ms=20, max_in_flight_requests_per_connection=2,
                      request_timeout_ms=60000)
    started = time.monotonic()
    futures = [p.send(topic, b"y" * RECORD) for _ in range(TOTAL // RECORD)]
    p.flush(timeout=120)
    elapsed = time.monotonic() - started
    for f in futures:
        f.get(timeout=1)  # raises on a delivery error
    p.close()
    assert elapsed >= (TOTAL - 2 * QUOTA) / QUOTA * 0.8, f"{elapsed:.1f} s: not throttled"
