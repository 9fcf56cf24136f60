//! SSL listeners: TLS with certificates made by the test (a CA, the broker's certificate,
//! client certificates), a rustls client speaking the Kafka protocol over it, client
//! certificates (mTLS), and certificate reloads (a new certificate is presented to new
//! connections; an expired or missing file leaves the old one in use).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::{ApiVersionsRequest, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use strata_tests::*;

/// A CA that signs the broker's and the clients' certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca() -> Result<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "strata test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

/// A certificate signed by `ca` for `names` (subject alternative names) with common name
/// `cn`, valid from `from_days` to `to_days` days from now: (cert PEM, key PEM).
fn leaf(
    ca: &Ca,
    cn: &str,
    names: &[&str],
    from_days: i64,
    to_days: i64,
) -> Result<(String, String)> {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "example");
    params.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

/// A broker with an SSL listener (and a PLAINTEXT one) using `cert`/`key` from `dir`.
fn tls_broker(
    dir: &Path,
    client_auth: &str,
    configure: impl FnOnce(&mut strata_broker::config::Config),
) -> Result<InProcessBroker> {
    let mut c = test_config(&dir.join("data"))?;
    c.listeners = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into();
    c.ssl_certificate_location = Some(dir.join("server.pem"));
    c.ssl_key_location = Some(dir.join("server.key"));
    c.ssl_truststore_location = Some(dir.join("ca.pem"));
    c.ssl_client_auth = client_auth.into();
    c.ssl_reload_interval_ms = 100;
    configure(&mut c);
    InProcessBroker::start(c)
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM")
}

/// A TLS client trusting `ca_pem`, presenting `client` (cert, key) if given.
fn client_config(
    ca_pem: &str,
    client: Option<&(String, String)>,
) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem) {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(Arc::new(match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            pem_certs(cert),
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    }))
}

/// Connects over TLS, sends `req` at `version` and reads the answer; returns it and the
/// certificate the broker presented.
fn call_over_tls<R: kafka_protocol::protocol::Request>(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    version: i16,
    req: &R,
) -> Result<(R::Response, CertificateDer<'static>)> {
    use kafka_protocol::protocol::HeaderVersion;
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1")?.to_owned())?;
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(&raw::encode_request(version, 7, req)?)?;
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).context("reading the answer")?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tls.read_exact(&mut body)?;
    let mut body = bytes::Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
    let r = R::Response::decode(&mut body, version)?;
    if header.correlation_id != 7 {
        bail!("correlation id {}", header.correlation_id);
    }
    let presented = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no server certificate")?
        .clone()
        .into_owned();
    Ok((r, presented))
}

/// ApiVersions v0 over TLS, answered without error; the certificate the broker presented.
fn api_versions_over_tls(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<CertificateDer<'static>> {
    let (r, cert) = call_over_tls(addr, config, 0, &ApiVersionsRequest::default())?;
    if r.error_code != 0 || r.api_keys.is_empty() {
        bail!("bad ApiVersions answer: {r:?}");
    }
    Ok(cert)
}

fn ssl_addr(b: &InProcessBroker) -> std::net::SocketAddr {
    b.listener_addr("SSL").expect("an SSL listener")
}

#[test]
fn ssl_listener_serves_kafka_over_tls_and_refuses_plaintext() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = new_ca()?;
    let (cert, key) = leaf(&ca, "broker", &["127.0.0.1", "localhost"], -1, 30)?;
    write(dir.path(), "server.pem", &cert)?;
    write(dir.path(), "server.key", &key)?;
    write(dir.path(), "ca.pem", &ca.pem)?;
    let broker = tls_broker(dir.path(), "none", |_| {})?;
    let presented = api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, None)?)?;
    assert_eq!(presented, pem_certs(&cert)[0]);
    // Kafka bytes sent in the clear to the SSL listener: the handshake fails, the
    // connection closes, nothing else is disturbed.
    let mut s = raw::connect(ssl_addr(&broker))?;
    raw::write_tolerant(
        &mut s,
        &raw::encode_request(0, 1, &ApiVersionsRequest::default())?,
    )?;
    assert!(matches!(
        raw::outcome(&mut s, Duration::from_secs(10))?,
        raw::Outcome::Closed
    ));
    // A client that does not trust the CA fails its handshake.
    let other = new_ca()?;
    assert!(api_versions_over_tls(ssl_addr(&broker), client_config(&other.pem, None)?).is_err());
    // The plaintext listener and the SSL one serve side by side.
    raw::api_versions_ok(broker.addr())?;
    api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, None)?)?;
    Ok(())
}

#[test]
fn client_certificates_are_required_when_configured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = new_ca()?;
    let (cert, key) = leaf(&ca, "broker", &["127.0.0.1"], -1, 30)?;
    write(dir.path(), "server.pem", &cert)?;
    write(dir.path(), "server.key", &key)?;
    write(dir.path(), "ca.pem", &ca.pem)?;
    let broker = tls_broker(dir.path(), "required", |_| {})?;
    let alice = leaf(&ca, "alice", &["alice"], -1, 30)?;
    api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, Some(&alice))?)?;
    assert!(
        api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, None)?).is_err(),
        "no client certificate"
    );
    let stranger_ca = new_ca()?;
    let mallory = leaf(&stranger_ca, "mallory", &["mallory"], -1, 30)?;
    assert!(
        api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, Some(&mallory))?).is_err(),
        "a certificate from another CA"
    );
    let expired = leaf(&ca, "old", &["old"], -30, -1)?;
    assert!(
        api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, Some(&expired))?).is_err(),
        "an expired client certificate"
    );
    // requested: a certificate is checked when sent, and not needed.
    let dir2 = tempfile::tempdir()?;
    for (n, t) in [
        ("server.pem", &cert),
        ("server.key", &key),
        ("ca.pem", &ca.pem),
    ] {
        write(dir2.path(), n, t)?;
    }
    let broker = tls_broker(dir2.path(), "requested", |_| {})?;
    api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, None)?)?;
    api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, Some(&alice))?)?;
    assert!(
        api_versions_over_tls(ssl_addr(&broker), client_config(&ca.pem, Some(&mallory))?).is_err()
    );
    Ok(())
}

#[test]
fn certificates_reload_when_their_files_change_and_bad_files_keep_the_old_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = new_ca()?;
    let (cert1, key1) = leaf(&ca, "broker-1", &["127.0.0.1"], -1, 30)?;
    write(dir.path(), "server.pem", &cert1)?;
    write(dir.path(), "server.key", &key1)?;
    write(dir.path(), "ca.pem", &ca.pem)?;
    let broker = tls_broker(dir.path(), "none", |_| {})?;
    let client = client_config(&ca.pem, None)?;
    assert_eq!(
        api_versions_over_tls(ssl_addr(&broker), client.clone())?,
        pem_certs(&cert1)[0]
    );

    // A renewed certificate: new connections get it.
    let (cert2, key2) = leaf(&ca, "broker-2", &["127.0.0.1"], -1, 60)?;
    write(dir.path(), "server.key", &key2)?;
    write(dir.path(), "server.pem", &cert2)?;
    wait_until(
        "the renewed certificate",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let got = api_versions_over_tls(ssl_addr(&broker), client.clone())
                .map_err(|e| e.to_string())?;
            if got == pem_certs(&cert2)[0] {
                Ok(())
            } else {
                Err("still the old certificate".into())
            }
        },
    )?;

    // An expired certificate is refused: the renewed one stays.
    let (expired, expired_key) = leaf(&ca, "broker-expired", &["127.0.0.1"], -30, -1)?;
    write(dir.path(), "server.key", &expired_key)?;
    write(dir.path(), "server.pem", &expired)?;
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        api_versions_over_tls(ssl_addr(&broker), client.clone())?,
        pem_certs(&cert2)[0]
    );
    // Files renamed away: still served with what was loaded.
    std::fs::rename(dir.path().join("server.pem"), dir.path().join("moved.pem"))?;
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        api_versions_over_tls(ssl_addr(&broker), client.clone())?,
        pem_certs(&cert2)[0]
    );
    // The failures are counted.
    let metrics = http_get(broker.admin_addr().context("admin listener")?, "/metrics")?;
    assert!(
        metrics.contains(r#"strata_tls_reloads_total{result="error"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"strata_tls_reloads_total{result="ok"}"#),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn bad_tls_settings_are_refused_at_startup() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = new_ca()?;
    let (cert, key) = leaf(&ca, "broker", &["127.0.0.1"], -1, 30)?;
    let (_, other_key) = leaf(&ca, "other", &["127.0.0.1"], -1, 30)?;
    write(dir.path(), "ca.pem", &ca.pem)?;
    write(dir.path(), "server.pem", &cert)?;
    write(dir.path(), "server.key", &other_key)?;
    let e = tls_broker(dir.path(), "none", |_| {})
        .err()
        .context("a key of another certificate")?;
    assert!(format!("{e:#}").contains("does not match"), "{e:#}");
    write(dir.path(), "server.key", &key)?;
    write(dir.path(), "server.pem", "not a certificate")?;
    let e = tls_broker(dir.path(), "none", |_| {})
        .err()
        .context("a file without a certificate")?;
    assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
    write(dir.path(), "server.pem", &cert)?;
    let e = tls_broker(dir.path(), "none", |c| c.ssl_key_location = None)
        .err()
        .context("no key")?;
    assert!(format!("{e:#}").contains("ssl_key_location"), "{e:#}");
    let e = tls_broker(dir.path(), "sometimes", |_| {})
        .err()
        .context("a bad client auth")?;
    assert!(format!("{e:#}").contains("ssl_client_auth"), "{e:#}");
    let e = tls_broker(dir.path(), "none", |c| {
        c.listener_security_protocol_map = "SSL:SASL_SSL".into()
    })
    .err()
    .context("SASL")?;
    assert!(format!("{e:#}").contains("SASL"), "{e:#}");
    // A listener of any name can be SSL through the map.
    let broker = tls_broker(dir.path(), "none", |c| {
        c.listeners = "PLAINTEXT://127.0.0.1:0,SECURE://127.0.0.1:0".into();
        c.listener_security_protocol_map = "SECURE:SSL".into();
    })?;
    api_versions_over_tls(
        broker.listener_addr("SECURE").context("SECURE")?,
        client_config(&ca.pem, None)?,
    )?;
    Ok(())
}

/// A client certificate is the connection's principal: ACLs granted to its subject apply
/// to it, and to no other certificate.
#[test]
fn acls_apply_to_the_principal_a_client_certificate_names() -> Result<()> {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{CreateAclsRequest, MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir()?;
    let ca = new_ca()?;
    let (cert, key) = leaf(&ca, "broker", &["127.0.0.1"], -1, 30)?;
    for (n, t) in [
        ("server.pem", &cert),
        ("server.key", &key),
        ("ca.pem", &ca.pem),
    ] {
        write(dir.path(), n, t)?;
    }
    // The plaintext listener's anonymous clients administer; nothing else is allowed
    // without an ACL.
    let broker = tls_broker(dir.path(), "required", |c| {
        c.super_users = "User:ANONYMOUS".into();
        c.allow_everyone_if_no_acl_found = false;
    })?;
    let topic = topic_name("mtls");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let mut admin = raw::connect(broker.addr())?;
    let grant = AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(topic.clone()))
        .with_resource_pattern_type(3)
        .with_principal(StrBytes::from_static_str("User:CN=alice,O=example"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(3) // READ (implies DESCRIBE)
        .with_permission_type(3);
    let created = raw::call(
        &mut admin,
        3,
        1,
        &CreateAclsRequest::default().with_creations(vec![grant]),
    )?;
    assert_eq!(created.results[0].error_code, 0, "{created:?}");
    let ask = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.clone()))))]))
        .with_include_topic_authorized_operations(true);
    let alice = leaf(&ca, "alice", &["alice"], -1, 30)?;
    let (m, _) = call_over_tls(
        ssl_addr(&broker),
        client_config(&ca.pem, Some(&alice))?,
        12,
        &ask,
    )?;
    assert_eq!(m.topics[0].error_code, 0, "{:?}", m.topics[0]);
    assert_eq!(
        m.topics[0].topic_authorized_operations,
        (1 << 3) | (1 << 8),
        "READ and DESCRIBE"
    );
    let bob = leaf(&ca, "bob", &["bob"], -1, 30)?;
    let (m, _) = call_over_tls(
        ssl_addr(&broker),
        client_config(&ca.pem, Some(&bob))?,
        12,
        &ask,
    )?;
    assert_eq!(
        m.topics[0].error_code, 29,
        "bob is not granted: {:?}",
        m.topics[0]
    );
    Ok(())
}

/// A plain HTTP GET of `path` on `addr`: the response body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
