"""SSL listeners with kafka-python and confluent-kafka: produce and consume over TLS,
client certificates (mTLS), and clients that do not trust the broker's CA."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from clients import create_topic, round_trip
from harness import free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _cert(subject, issuer, key, issuer_key, ca: bool, sans=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path):
    """A CA, the broker's certificate for 127.0.0.1, and a client certificate (alice)."""
    import ipaddress
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(_name("test CA"), _name("test CA"), ca_key, ca_key, ca=True)
    files = {"ca": tmp_path / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, sans in [("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                  x509.DNSName("localhost")]),
                      ("alice", [x509.DNSName("alice")])]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(who), ca.subject, key, ca_key, ca=False, sans=sans)
        files[who] = tmp_path / f"{who}.pem"
        files[who].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}_key"] = tmp_path / f"{who}.key"
        _write_key(files[f"{who}_key"], key)
    return files


def _ssl_broker(broker_factory, pki, client_auth="none"):
    port, ssl_port = free_port(), free_port()
    b = broker_factory(port=port, env={
        "STRATA_LISTENERS": f"PLAINTEXT://127.0.0.1:{port},SSL://127.0.0.1:{ssl_port}",
        "STRATA_SSL_CERTIFICATE_LOCATION": str(pki["server"]),
        "STRATA_SSL_KEY_LOCATION": str(pki["server_key"]),
        "STRATA_SSL_TRUSTSTORE_LOCATION": str(pki["ca"]),
        "STRATA_SSL_CLIENT_AUTH": client_auth,
    })
    return b, f"127.0.0.1:{ssl_port}"


def test_kafka_python_over_ssl(broker_factory, pki, topic):
    b, ssl_bs = _ssl_broker(broker_factory, pki)
    create_topic(b.bootstrap, topic, 1)
    tls = dict(security_protocol="SSL", ssl_cafile=str(pki["ca"]))
    p = KafkaProducer(bootstrap_servers=ssl_bs, **tls)
    for i in range(20):
        p.send(topic, key=b"k", value=f"v{i}".encode()).get(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=ssl_bs, enable_auto_commit=False,
                      consumer_timeout_ms=5000, **tls)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = [m.value.decode() for m in c]
    c.close()
    assert got == [f"v{i}" for i in range(20)]


def test_confluent_kafka_mtls(broker_factory, pki, topic):
    b, ssl_bs = _ssl_broker(broker_factory, pki, client_auth="required")
    create_topic(b.bootstrap, topic, 1)
    conf = {"bootstrap.servers": ssl_bs, "security.protocol": "SSL",
            "ssl.ca.location": str(pki["ca"]),
            "ssl.certificate.location": str(pki["alice"]),
            "ssl.key.location": str(pki["alice_key"])}
    assert round_trip(conf, topic) == [f"m{i}" for i in range(10)]


def test_confluent_kafka_without_a_client_certificate_is_refused(broker_factory, pki, topic):
    b, ssl_bs = _ssl_broker(broker_factory, pki, client_auth="required")
    create_topic(b.bootstrap, topic, 1)
    errors = []
    p = Producer({"bootstrap.servers": ssl_bs, "security.protocol": "SSL",
                  "ssl.ca.location": str(pki["ca"]), "message.timeout.ms": 3000,
                  "error_cb": errors.append})
    failed = []
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: failed.append(err))
    p.flush(10)
    assert failed and failed[0] is not None, failed
    assert errors, "librdkafka reports the failed handshakes"
    # The broker is unharmed: the plaintext listener still serves.
    ok = Producer({"bootstrap.servers": b.bootstrap})
    ok.produce(topic, value=b"y")
    assert ok.flush(30) == 0


def test_kafka_python_refuses_an_untrusted_broker(broker_factory, pki, tmp_path, topic):
    _b, ssl_bs = _ssl_broker(broker_factory, pki)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert(_name("other CA"), _name("other CA"), other_key, other_key, ca=True)
    other_pem = tmp_path / "other.pem"
    other_pem.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    from kafka.errors import KafkaError as KafkaPythonError
    # A fixed api_version skips the version probe, which would retry for 30 s.
    p = KafkaProducer(bootstrap_servers=ssl_bs, security_protocol="SSL",
                      ssl_cafile=str(other_pem), api_version=(2, 8), max_block_ms=3000)
    with pytest.raises(KafkaPythonError):
        p.send(topic, b"x").get(timeout=5)
    p.close(timeout=1)
    # The same settings with the right CA work: it was the trust that failed.
    create_topic(_b.bootstrap, topic, 1)
    p = KafkaProducer(bootstrap_servers=ssl_bs, security_protocol="SSL",
                      ssl_cafile=str(pki["ca"]), api_version=(2, 8), max_block_ms=10000)
    p.send(topic, b"x").get(timeout=30)
    p.close()
