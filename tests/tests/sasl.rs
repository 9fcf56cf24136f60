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
use strata_tests::scrape;
use strata_tests::*;

/// alice (password `alice-secret`) and bob (`bob-secret`).
fn users_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let line = |user: &str| {
        strata_broker::sasl::users_file_line(
            user,
            &format!("{user}-secret"),
            b"strata-test-salt",
            4096,
        ) + "\n"
    };
    let path = dir.join("users");
    std::fs::write(&path, line("alice") + &line("bob"))?;
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
    login_at(stream, 2, user, password)
}

/// [`login`] with SaslAuthenticate at `version`.
fn login_at(
    stream: &mut std::net::TcpStream,
    version: i16,
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
    raw::call(stream, version, 2, &plain(user, password))
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
    // The right one: served, and (with SaslAuthenticate v0, which cannot re-authenticate)
    // a second handshake is out of order.
    let mut c = raw::connect(sasl_addr(&broker))?;
    let a = login_at(&mut c, 0, "alice", "alice-secret")?;
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

fn counter(broker: &InProcessBroker, name: &str) -> Result<f64> {
    let scraped = scrape::scrape(broker.admin_addr().context("admin listener")?)?;
    Ok(scrape::value(&scraped, name, &[]))
}

/// KIP-368 with `connections_max_reauth_ms`: librdkafka, told the session lifetime, logs in
/// again on its connections and keeps producing; a raw connection that logs in again keeps
/// being served, one that does not is closed at its next request, and one that tries to
/// become someone else is refused.
#[test]
fn logins_lapse_unless_renewed() -> Result<()> {
    let (broker, _dir) = start(|c| c.connections_max_reauth_ms = 1500)?;
    let topic = topic_name("sasl-reauth");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let addr = sasl_addr(&broker);
    // (Other tests in this process share the counters: only this one re-authenticates
    // more than once, and only this one lets a login lapse.)
    let reauths = counter(&broker, "strata_sasl_reauthentications_total")?;
    let lapsed = counter(&broker, "strata_sasl_expired_sessions_total")?;
    let mut config = producer_config(&addr.to_string());
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "alice")
        .set("sasl.password", "alice-secret");
    let producer = recording_producer(&config)?;
    // ~5 s of records, 50 at a time: the login lasts 1.5 s, so librdkafka renews it.
    for round in 0..25u64 {
        produce_and_wait(&producer, &topic, round * 50..round * 50 + 50, 1, |_| 100)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        counter(&broker, "strata_sasl_reauthentications_total")? >= reauths + 2.0,
        "librdkafka did not re-authenticate"
    );
    ensure!(
        counter(&broker, "strata_sasl_expired_sessions_total")? == lapsed,
        "a librdkafka connection's login lapsed"
    );
    let recs =
        consume_all(&broker.bootstrap(), &topic, Duration::from_secs(60)).context("read back")?;
    ensure!(recs[&0].len() == 25 * 50);

    // The lifetime is announced from v1 on.
    let mut renewing = raw::connect(addr)?;
    let a = login(&mut renewing, "alice", "alice-secret")?;
    ensure!(a.error_code == 0 && a.session_lifetime_ms == 1500, "{a:?}");
    let mut idle = raw::connect(addr)?;
    ensure!(login_at(&mut idle, 1, "alice", "alice-secret")?.session_lifetime_ms == 1500);
    let mut impostor = raw::connect(addr)?;
    ensure!(login(&mut impostor, "alice", "alice-secret")?.error_code == 0);
    let b = login(&mut impostor, "bob", "bob-secret")?;
    ensure!(
        b.error_code == 58
            && b.error_message
                .as_deref()
                .unwrap_or("")
                .contains("Cannot change principals"),
        "{b:?}"
    );
    ensure!(matches!(
        raw::outcome(&mut impostor, Duration::from_secs(10))?,
        raw::Outcome::Closed
    ));
    // Renewed twice across 2.4 s: still served. Not renewed: closed at the next request.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1200));
        let again = login(&mut renewing, "alice", "alice-secret")?;
        ensure!(
            again.error_code == 0 && again.session_lifetime_ms == 1500,
            "{again:?}"
        );
    }
    let m = raw::call(&mut renewing, 12, 3, &MetadataRequest::default())?;
    ensure!(m.brokers.len() == 1);
    raw::write_tolerant(
        &mut idle,
        &raw::encode_request(12, 3, &MetadataRequest::default())?,
    )?;
    ensure!(matches!(
        raw::outcome(&mut idle, Duration::from_secs(10))?,
        raw::Outcome::Closed
    ));
    ensure!(counter(&broker, "strata_sasl_expired_sessions_total")? >= lapsed + 1.0);
    Ok(())
}
