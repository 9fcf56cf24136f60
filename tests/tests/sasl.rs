//! SASL/PLAIN over the wire: what a connection may do before it authenticates, the errors
//! of a wrong mechanism, order or password, the principal a login gives (ACLs apply to it),
//! and a password-guessing loop that does not stop another client from producing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_tests::*;

fn users_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let salt = b"strata-test-salt";
    let mut hash = [0u8; 32];
    // PBKDF2-HMAC-SHA256, 4096 rounds, as sasl_plain_users_file wants it.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(4096).expect("non-zero"),
        salt,
        b"alice-secret",
        &mut hash,
    );
    let path = dir.join("users");
    std::fs::write(
        &path,
        format!("alice:pbkdf2-sha256:4096:{}:{}\n", hex(salt), hex(&hash)),
    )?;
    Ok(path)
}

fn start(
    configure: impl FnOnce(&mut strata_broker::Config),
) -> Result<(InProcessBroker, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut c = test_config(&dir.path().join("data"))?;
    c.listeners = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into();
    c.sasl_plain_users_file = Some(users_file(dir.path())?);
    c.connection_failed_authentication_delay_ms = 200;
    configure(&mut c);
    Ok((InProcessBroker::start(c)?, dir))
}

fn sasl_addr(b: &InProcessBroker) -> SocketAddr {
    b.listener_addr("SASL_PLAINTEXT").expect("a SASL listener")
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn plain(user: &str, password: &str) -> SaslAuthenticateRequest {
    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(format!("\0{user}\0{password}")))
}

/// Handshake and PLAIN login on `stream`; the SaslAuthenticate answer.
fn login(
    stream: &mut std::net::TcpStream,
    user: &str,
    password: &str,
) -> Result<SaslAuthenticateResponse> {
    let h = raw::call(
        stream,
        1,
        1,
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
    )?;
    ensure!(h.error_code == 0, "handshake: {h:?}");
    raw::call(stream, 2, 2, &plain(user, password))
}

#[test]
fn only_an_authenticated_connection_is_served() -> Result<()> {
    let (broker, _dir) = start(|_| {})?;
    // ApiVersions is allowed first; anything else closes the connection.
    let mut c = raw::connect(sasl_addr(&broker))?;
    raw::api_versions_call(&mut c)?;
    raw::write_tolerant(
        &mut c,
        &raw::encode_request(12, 3, &MetadataRequest::default())?,
    )?;
    ensure!(matches!(
        raw::outcome(&mut c, Duration::from_secs(10))?,
        raw::Outcome::Closed
    ));
    // A mechanism it does not offer: 33 and the list; SaslAuthenticate first: 34.
    let mut c = raw::connect(sasl_addr(&broker))?;
    let h = raw::call(
        &mut c,
        1,
        1,
        &SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-256")),
    )?;
    ensure!(
        h.error_code == 33 && h.mechanisms == vec![s("PLAIN")],
        "{h:?}"
    );
    let a = raw::call(&mut c, 2, 2, &plain("alice", "alice-secret"))?;
    ensure!(a.error_code == 34, "{a:?}");
    // A wrong password: 58 with a message, after the delay, then the connection closes.
    let mut c = raw::connect(sasl_addr(&broker))?;
    let t0 = Instant::now();
    let a = login(&mut c, "alice", "guess")?;
    ensure!(a.error_code == 58, "{a:?}");
    ensure!(
        t0.elapsed() >= Duration::from_millis(200),
        "answered before the delay"
    );
    ensure!(matches!(
        raw::outcome(&mut c, Duration::from_secs(10))?,
        raw::Outcome::Closed
    ));
    for (user, token) in [
        ("nobody", "\0nobody\0x"),
        ("bad", "no separators"),
        ("authz", "bob\0alice\0alice-secret"),
    ] {
        let mut c = raw::connect(sasl_addr(&broker))?;
        raw::call(
            &mut c,
            1,
            1,
            &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        )?;
        let a = raw::call(
            &mut c,
            2,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
        )?;
        ensure!(a.error_code == 58, "{user}: {a:?}");
    }
    // The right one: served, and a second handshake is out of order.
    let mut c = raw::connect(sasl_addr(&broker))?;
    let a = login(&mut c, "alice", "alice-secret")?;
    ensure!(a.error_code == 0, "{a:?}");
    let m = raw::call(&mut c, 12, 3, &MetadataRequest::default())?;
    ensure!(m.brokers.len() == 1);
    let h = raw::call(
        &mut c,
        1,
        4,
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
    )?;
    ensure!(h.error_code == 34, "{h:?}");
    // The plaintext listener has no SASL: its SaslHandshake is out of order too.
    let mut c = raw::connect(broker.addr())?;
    let h = raw::call(
        &mut c,
        1,
        1,
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
    )?;
    ensure!(h.error_code == 34, "{h:?}");
    Ok(())
}

#[test]
fn acls_apply_to_the_user_who_logged_in() -> Result<()> {
    let (broker, _dir) = start(|c| {
        c.super_users = "User:ANONYMOUS".into();
        c.allow_everyone_if_no_acl_found = false;
    })?;
    let topic = topic_name("sasl-acl");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let mut admin = raw::connect(broker.addr())?;
    let grant = AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(s(&topic))
        .with_resource_pattern_type(3)
        .with_principal(s("User:alice"))
        .with_host(s("*"))
        .with_operation(8) // DESCRIBE
        .with_permission_type(3);
    let r = raw::call(
        &mut admin,
        3,
        1,
        &CreateAclsRequest::default().with_creations(vec![grant]),
    )?;
    ensure!(r.results[0].error_code == 0, "{r:?}");
    let mut c = raw::connect(sasl_addr(&broker))?;
    ensure!(login(&mut c, "alice", "alice-secret")?.error_code == 0);
    let ask = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(&topic))))
        ]))
        .with_include_topic_authorized_operations(true);
    let m = raw::call(&mut c, 12, 5, &ask)?;
    ensure!(
        m.topics[0].error_code == 0 && m.topics[0].topic_authorized_operations == 1 << 8,
        "{:?}",
        m.topics[0]
    );
    Ok(())
}

/// One address guesses passwords as fast as the broker answers while librdkafka produces
/// through the plaintext listener: every guess fails, each waits out the delay, and the
/// producer gets all its records acknowledged.
#[test]
fn password_guessing_does_not_stop_other_clients() -> Result<()> {
    let (broker, _dir) = start(|_| {})?;
    let topic = topic_name("sasl-brute");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = sasl_addr(&broker);
    let guesser = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(u64, u64)> {
            let (mut tries, mut refused) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut c = raw::connect(addr)?;
                tries += 1;
                let a = login(&mut c, "alice", &format!("guess-{tries}"))?;
                if a.error_code == 58 {
                    refused += 1;
                }
            }
            Ok((tries, refused))
        })
    };
    let producer = recording_producer(&producer_config(&broker.bootstrap()))?;
    let started = Instant::now();
    produce_and_wait(&producer, &topic, 0..2000, 1, |_| 100)?;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, refused) = guesser
        .join()
        .map_err(|_| anyhow::anyhow!("guesser panicked"))??;
    ensure!(
        tries > 0 && tries == refused,
        "{refused} of {tries} guesses refused"
    );
    // Each guess waits at least the 200 ms delay.
    ensure!(
        tries as u128 <= took.as_millis() / 200 + 2,
        "{tries} guesses in {took:?}: the delay was not applied"
    );
    let recs =
        consume_all(&broker.bootstrap(), &topic, Duration::from_secs(60)).context("read back")?;
    ensure!(recs[&0].len() == 2000);
    Ok(())
}
