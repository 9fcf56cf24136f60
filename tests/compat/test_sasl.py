"""SASL/PLAIN on SASL_PLAINTEXT and SASL_SSL listeners with confluent-kafka and kafka-python:
the right password works, a wrong one is refused, and the broker keeps serving."""

from __future__ import annotations

import hashlib
import os

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from clients import create_topic, round_trip
from harness import free_port
from test_tls import pki  # noqa: F401  (the fixture)


def users_file(path, users: dict[str, str]) -> str:
    """A sasl_plain_users_file line per user: PBKDF2-HMAC-SHA256 of the password."""
    lines = []
    for name, password in users.items():
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
        lines.append(f"{name}:pbkdf2-sha256:4096:{salt.hex()}:{digest.hex()}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _sasl_broker(broker_factory, tmp_path, pki=None):
    port, sasl_port = free_port(), free_port()
    protocol = "SASL_SSL" if pki else "SASL_PLAINTEXT"
    env = {
        "STRATA_LISTENERS": f"PLAINTEXT://127.0.0.1:{port},{protocol}://127.0.0.1:{sasl_port}",
        "STRATA_SASL_PLAIN_USERS_FILE": users_file(tmp_path / "users", {"alice": "alice-secret"}),
    }
    if pki:
        env["STRATA_SSL_CERTIFICATE_LOCATION"] = str(pki["server"])
        env["STRATA_SSL_KEY_LOCATION"] = str(pki["server_key"])
    b = broker_factory(port=port, env=env)
    return b, f"127.0.0.1:{sasl_port}"


def test_confluent_kafka_sasl_plain(broker_factory, tmp_path, topic):
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path)
    create_topic(b.bootstrap, topic, 1)
    conf = {"bootstrap.servers": sasl_bs, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": "alice",
            "sasl.password": "alice-secret"}
    assert round_trip(conf, topic) == [f"m{i}" for i in range(10)]


def test_a_wrong_password_is_refused(broker_factory, tmp_path, topic):
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path)
    create_topic(b.bootstrap, topic, 1)
    errors = []
    p = Producer({"bootstrap.servers": sasl_bs, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": "alice",
                  "sasl.password": "wrong", "message.timeout.ms": 3000,
                  "error_cb": errors.append})
    failed = []
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: failed.append(err))
    p.flush(10)
    assert failed and failed[0] is not None, failed
    assert any("Authentication failed" in str(e) or "SASL" in str(e) for e in errors), errors
    # A client of the plaintext listener is not affected.
    ok = Producer({"bootstrap.servers": b.bootstrap})
    ok.produce(topic, value=b"y")
    assert ok.flush(30) == 0


def test_kafka_python_sasl_plain(broker_factory, tmp_path, topic):
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path)
    create_topic(b.bootstrap, topic, 1)
    conf = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username="alice", sasl_plain_password="alice-secret")
    p = KafkaProducer(bootstrap_servers=sasl_bs, **conf)
    p.send(topic, b"hello").get(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=sasl_bs, enable_auto_commit=False,
                      consumer_timeout_ms=5000, **conf)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    assert [m.value for m in c] == [b"hello"]
    c.close()


def test_confluent_kafka_sasl_ssl(broker_factory, tmp_path, pki, topic):  # noqa: F811
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path, pki)
    create_topic(b.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": sasl_bs, "security.protocol": "SASL_SSL",
                  "ssl.ca.location": str(pki["ca"]), "sasl.mechanism": "PLAIN",
                  "sasl.username": "alice", "sasl.password": "alice-secret"})
    p.produce(topic, value=b"over tls")
    assert p.flush(30) == 0
