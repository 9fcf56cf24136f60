"""SASL/PLAIN and SASL/SCRAM on SASL_PLAINTEXT and SASL_SSL listeners with confluent-kafka
and kafka-python: the right password works, a wrong one is refused, and the broker keeps
serving. SCRAM users are made with confluent-kafka's AdminClient
(AlterUserScramCredentials) and survive a restart."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)
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


def _sasl_broker(broker_factory, tmp_path, pki=None, extra_env=None, name="own"):
    port, sasl_port = free_port(), free_port()
    protocol = "SASL_SSL" if pki else "SASL_PLAINTEXT"
    env = {
        "STRATA_LISTENERS": f"PLAINTEXT://127.0.0.1:{port},{protocol}://127.0.0.1:{sasl_port}",
        "STRATA_SASL_PLAIN_USERS_FILE": users_file(tmp_path / "users", {"alice": "alice-secret"}),
    }
    if pki:
        env["STRATA_SSL_CERTIFICATE_LOCATION"] = str(pki["server"])
        env["STRATA_SSL_KEY_LOCATION"] = str(pki["server_key"])
    env.update(extra_env or {})
    b = broker_factory(name=name, port=port, env=env)
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
    assert kafka_python_round_trip(sasl_bs, topic, conf, b"hello", offset=0) == [b"hello"]


def kafka_python_round_trip(bootstrap, topic, conf, value: bytes, offset: int) -> list:
    """Sends `value` with kafka-python, then reads partition 0 from `offset` to the end."""
    p = KafkaProducer(bootstrap_servers=bootstrap, **conf)
    p.send(topic, value).get(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=5000, **conf)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, offset)
    got = [m.value for m in c]
    c.close()
    return got


def test_confluent_kafka_sasl_ssl(broker_factory, tmp_path, pki, topic):  # noqa: F811
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path, pki)
    create_topic(b.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": sasl_bs, "security.protocol": "SASL_SSL",
                  "ssl.ca.location": str(pki["ca"]), "sasl.mechanism": "PLAIN",
                  "sasl.username": "alice", "sasl.password": "alice-secret"})
    p.produce(topic, value=b"over tls")
    assert p.flush(30) == 0


SCRAM_ENV = {"STRATA_SASL_ENABLED_MECHANISMS": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"}
MECHANISMS = {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256,
              "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}


def set_scram(bootstrap: str, user: str, password: str, mechanism: str, iterations=8192):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    up = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(MECHANISMS[mechanism], iterations), password.encode())
    for fut in admin.alter_user_scram_credentials([up]).values():
        fut.result(timeout=30)


def scram_conf(bootstrap: str, mechanism: str, user: str, password: str, pki=None) -> dict:
    conf = {"bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL" if pki else "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
    if pki:
        conf["ssl.ca.location"] = str(pki["ca"])
    return conf


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_with_confluent_kafka_and_kafka_python(broker_factory, tmp_path, topic, mechanism):
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path, extra_env=SCRAM_ENV)
    create_topic(b.bootstrap, topic, 1)
    set_scram(b.bootstrap, "bob", "bob-secret", mechanism, iterations=4096)
    # Described with its mechanism and iteration count, never the credential.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    desc = admin.describe_user_scram_credentials(["bob"])["bob"].result(timeout=30)
    assert [(c.mechanism, c.iterations) for c in desc.scram_credential_infos] == \
        [(MECHANISMS[mechanism], 4096)]
    assert round_trip(scram_conf(sasl_bs, mechanism, "bob", "bob-secret"), topic) == \
        [f"m{i}" for i in range(10)]
    kp = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
              sasl_plain_username="bob", sasl_plain_password="bob-secret")
    assert kafka_python_round_trip(sasl_bs, topic, kp, b"from kafka-python", offset=10) == \
        [b"from kafka-python"]
    # A wrong password, and the other mechanism (bob has no credential for it).
    other = "SCRAM-SHA-512" if mechanism == "SCRAM-SHA-256" else "SCRAM-SHA-256"
    for mech, password in [(mechanism, "wrong"), (other, "bob-secret")]:
        errors = []
        bad = Producer({**scram_conf(sasl_bs, mech, "bob", password),
                        "message.timeout.ms": 3000, "error_cb": errors.append})
        failed = []
        bad.produce(topic, value=b"x", on_delivery=lambda err, msg: failed.append(err))
        bad.flush(10)
        assert failed and failed[0] is not None, (mech, failed)
        assert any("Authentication failed" in str(e) for e in errors), errors


def test_scram_users_survive_restart_and_deletion(broker_factory, tmp_path, topic):
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path, extra_env=SCRAM_ENV)
    create_topic(b.bootstrap, topic, 1)
    set_scram(b.bootstrap, "carol", "pw-1", "SCRAM-SHA-512")
    set_scram(b.bootstrap, "carol", "pw-2", "SCRAM-SHA-512")  # replaces the first
    b.stop()
    b.start()
    conf = scram_conf(sasl_bs, "SCRAM-SHA-512", "carol", "pw-2")
    assert round_trip(conf, topic, n=3) == ["m0", "m1", "m2"]
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    deletion = UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)
    for fut in admin.alter_user_scram_credentials([deletion]).values():
        fut.result(timeout=30)
    with pytest.raises(KafkaException):
        admin.describe_user_scram_credentials(["carol"])["carol"].result(timeout=30)
    errors, delivered = [], []
    gone = Producer({**conf, "message.timeout.ms": 3000, "error_cb": errors.append})
    gone.produce(topic, value=b"x", on_delivery=lambda err, msg: delivered.append(err))
    gone.flush(10)
    assert delivered and delivered[0] is not None, "a deleted user cannot produce"
    assert any("Authentication failed" in str(e) for e in errors), errors


def test_scram_over_sasl_ssl(broker_factory, tmp_path, pki, topic):  # noqa: F811
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path, pki, extra_env=SCRAM_ENV)
    create_topic(b.bootstrap, topic, 1)
    set_scram(b.bootstrap, "dave", "dave-secret", "SCRAM-SHA-256")
    p = Producer(scram_conf(sasl_bs, "SCRAM-SHA-256", "dave", "dave-secret", pki))
    p.produce(topic, value=b"scram over tls")
    assert p.flush(30) == 0
    kp = KafkaProducer(bootstrap_servers=sasl_bs, security_protocol="SASL_SSL",
                       ssl_cafile=str(pki["ca"]), sasl_mechanism="SCRAM-SHA-256",
                       sasl_plain_username="dave", sasl_plain_password="dave-secret")
    kp.send(topic, b"kafka-python scram over tls").get(timeout=30)
    kp.close()


def test_librdkafka_reauthenticates_within_the_session_lifetime(broker_factory, tmp_path, topic):
    """KIP-368: with connections_max_reauth_ms the broker tells librdkafka how long a login
    lasts, and librdkafka logs in again on the same connection before then; records flow
    throughout, and the broker closes no connection for a lapsed login."""
    env = {**SCRAM_ENV, "STRATA_CONNECTIONS_MAX_REAUTH_MS": "1500"}
    b, sasl_bs = _sasl_broker(broker_factory, tmp_path, extra_env=env)
    create_topic(b.bootstrap, topic, 1)
    set_scram(b.bootstrap, "erin", "erin-secret", "SCRAM-SHA-256")
    errors = []
    p = Producer({**scram_conf(sasl_bs, "SCRAM-SHA-256", "erin", "erin-secret"),
                  "linger.ms": 5, "error_cb": errors.append})
    since = b.log_size()
    deadline = time.monotonic() + 6
    sent = 0
    while time.monotonic() < deadline:
        p.produce(topic, value=b"r%d" % sent)
        sent += 1
        p.poll(0.05)
    assert p.flush(30) == 0
    assert not errors, errors
    log = b.log_text(since)
    assert "login lapsed" not in log, log[-2000:]
    assert sent > 50
