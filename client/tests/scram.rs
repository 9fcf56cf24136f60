//! SASL/SCRAM end to end: users made with AlterUserScramCredentials (the library's admin
//! calls, as Kafka's admin clients make them), logins with both mechanisms over
//! SASL_PLAINTEXT and SASL_SSL, wrong passwords and deleted users refused, credentials that
//! survive a restart, and every hostile field of the two SCRAM APIs answered with Kafka's
//! error codes.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use strata_client::sasl::{Credentials, Mechanism};
use strata_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, Error, Producer, ProducerConfig,
    ProducerRecord, StartOffset, TopicPartition,
};
use strata_tests::{raw, test_config, topic_name, InProcessBroker};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run<T>(rt: &tokio::runtime::Runtime, f: impl Future<Output = Result<T>>) -> Result<T> {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .map_err(|_| anyhow!("timed out"))?
    })
}

/// A broker with a plaintext listener (for the admin) and a SCRAM-only SASL listener.
fn start(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut strata_broker::Config),
) -> Result<InProcessBroker> {
    let mut c = test_config(&dir.join("data"))?;
    c.listeners = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into();
    c.sasl_enabled_mechanisms = "SCRAM-SHA-256,SCRAM-SHA-512".into();
    c.connection_failed_authentication_delay_ms = 50;
    configure(&mut c);
    InProcessBroker::start(c)
}

fn sasl(b: &InProcessBroker) -> Result<String> {
    Ok(b.listener_addr("SASL_PLAINTEXT")
        .context("SASL listener")?
        .to_string())
}

fn as_user(bs: &str, m: Mechanism, user: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new(bs);
    c.sasl = Some(Credentials {
        mechanism: m,
        user: user.into(),
        password: password.into(),
    });
    c.retry_timeout = Duration::from_secs(5);
    c
}

/// Produces `n` records as the client, then reads them back from the start.
async fn round_trip(config: ClientConfig, topic: &str, n: usize) -> Result<Vec<Bytes>> {
    let client = Client::connect(config).await?;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    for i in 0..n {
        producer
            .send(ProducerRecord::new(topic, format!("r{i}")))
            .await?
            .await?;
    }
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    let tp: TopicPartition = (topic.to_string(), 0);
    consumer.assign(tp, StartOffset::Earliest);
    let mut got = Vec::new();
    while got.len() < n {
        for r in consumer.poll(Duration::from_secs(5)).await? {
            got.push(r.record.value.unwrap_or_default());
        }
    }
    Ok(got)
}

fn is_auth_failure(e: &Error) -> bool {
    e.code() == Some(58)
}

#[test]
fn scram_users_log_in_with_their_mechanism_and_password_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = runtime();
    let broker = start(dir.path(), |_| {})?;
    let topic = topic_name("scram");
    strata_tests::create_topic(&broker.bootstrap(), &topic, 1)?;
    let admin = run(&rt, async {
        Ok(Client::connect(ClientConfig::new(broker.bootstrap())).await?)
    })?;
    run(&rt, async {
        admin
            .set_scram_credential("alice", Mechanism::ScramSha256, "a-pw", 4096)
            .await?;
        admin
            .set_scram_credential("alice", Mechanism::ScramSha512, "a-pw-512", 16384)
            .await?;
        // A name with the characters SCRAM escapes.
        admin
            .set_scram_credential("b,o=b", Mechanism::ScramSha512, "b-pw", 8192)
            .await?;
        Ok(())
    })?;
    let users = run(&rt, async {
        Ok(admin.describe_scram_credentials(&[]).await?)
    })?;
    ensure!(
        users
            .iter()
            .map(|u| (u.user.as_str(), u.credentials.clone()))
            .collect::<Vec<_>>()
            == vec![
                (
                    "alice",
                    vec![
                        ("SCRAM-SHA-256".to_string(), 4096),
                        ("SCRAM-SHA-512".to_string(), 16384)
                    ]
                ),
                ("b,o=b", vec![("SCRAM-SHA-512".to_string(), 8192)]),
            ],
        "{users:?}"
    );
    let bs = sasl(&broker)?;
    for (m, user, password) in [
        (Mechanism::ScramSha256, "alice", "a-pw"),
        (Mechanism::ScramSha512, "alice", "a-pw-512"),
        (Mechanism::ScramSha512, "b,o=b", "b-pw"),
    ] {
        let got = run(&rt, round_trip(as_user(&bs, m, user, password), &topic, 2))?;
        ensure!(got.len() >= 2, "{user} {m:?}: {got:?}");
    }
    // Wrong password, the other mechanism's password, a mechanism without a credential,
    // an unknown user: all SASL_AUTHENTICATION_FAILED.
    for (m, user, password) in [
        (Mechanism::ScramSha256, "alice", "wrong"),
        (Mechanism::ScramSha256, "alice", "a-pw-512"),
        (Mechanism::ScramSha256, "b,o=b", "b-pw"),
        (Mechanism::ScramSha512, "nobody", "x"),
    ] {
        let e = rt
            .block_on(Client::connect(as_user(&bs, m, user, password)))
            .err()
            .context("logged in")?;
        ensure!(is_auth_failure(&e), "{user} {m:?}: {e}");
    }
    // PLAIN is not offered on this listener.
    let e = rt
        .block_on(Client::connect(as_user(
            &bs,
            Mechanism::Plain,
            "alice",
            "a-pw",
        )))
        .err()
        .context("PLAIN logged in")?;
    ensure!(e.code() == Some(33), "{e}");
    // Credentials survive a restart; a deleted one stops working.
    drop(admin);
    broker.shutdown()?;
    let broker = start(dir.path(), |_| {})?;
    let bs = sasl(&broker)?;
    let got = run(
        &rt,
        round_trip(
            as_user(&bs, Mechanism::ScramSha512, "alice", "a-pw-512"),
            &topic,
            1,
        ),
    )?;
    ensure!(!got.is_empty());
    let admin = run(&rt, async {
        Ok(Client::connect(ClientConfig::new(broker.bootstrap())).await?)
    })?;
    run(&rt, async {
        Ok(admin
            .delete_scram_credential("alice", Mechanism::ScramSha512)
            .await?)
    })?;
    let e = rt
        .block_on(Client::connect(as_user(
            &bs,
            Mechanism::ScramSha512,
            "alice",
            "a-pw-512",
        )))
        .err()
        .context("a deleted credential logged in")?;
    ensure!(is_auth_failure(&e), "{e}");
    let left = run(&rt, async {
        Ok(admin.describe_scram_credentials(&["alice".into()]).await?)
    })?;
    ensure!(
        left[0].credentials == vec![("SCRAM-SHA-256".to_string(), 4096)],
        "{left:?}"
    );
    Ok(())
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn upsert(
    name: &str,
    mechanism: i8,
    iterations: i32,
    salt: &[u8],
    salted: usize,
) -> ScramCredentialUpsertion {
    ScramCredentialUpsertion::default()
        .with_name(s(name))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(Bytes::copy_from_slice(salt))
        .with_salted_password(Bytes::from(vec![7u8; salted]))
}

fn alter(
    c: &mut std::net::TcpStream,
    deletions: Vec<ScramCredentialDeletion>,
    upsertions: Vec<ScramCredentialUpsertion>,
) -> Result<Vec<(String, i16)>> {
    let r: AlterUserScramCredentialsResponse = raw::call(
        c,
        0,
        1,
        &AlterUserScramCredentialsRequest::default()
            .with_deletions(deletions)
            .with_upsertions(upsertions),
    )?;
    Ok(r.results
        .into_iter()
        .map(|r| (r.user.to_string(), r.error_code))
        .collect())
}

fn delete(name: &str, mechanism: i8) -> ScramCredentialDeletion {
    ScramCredentialDeletion::default()
        .with_name(s(name))
        .with_mechanism(mechanism)
}

#[test]
fn hostile_scram_admin_requests_get_kafkas_error_codes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path(), |c| c.max_scram_credentials = 3)?;
    let mut c = raw::connect(broker.addr())?;
    let r = |v: &[(&str, i16)]| {
        v.iter()
            .map(|(u, e)| (u.to_string(), *e))
            .collect::<Vec<_>>()
    };
    // Iterations at and beyond Kafka's bounds, salts and salted passwords of bad sizes,
    // unknown mechanisms, an empty name.
    let got = alter(
        &mut c,
        vec![],
        vec![
            upsert("min", 1, 4096, b"s", 32),
            upsert("max", 2, 16384, b"s", 64),
            upsert("few", 1, 4095, b"s", 32),
            upsert("many", 1, 16385, b"s", 32),
            upsert("negative", 1, i32::MIN, b"s", 32),
            upsert("nosalt", 1, 4096, b"", 32),
            upsert("bigsalt", 1, 4096, &[1; 1025], 32),
            upsert("short", 1, 4096, b"s", 31),
            upsert("long", 2, 4096, b"s", 65),
            upsert("mech0", 0, 4096, b"s", 32),
            upsert("mech3", 3, 4096, b"s", 32),
            upsert("mechneg", -1, 4096, b"s", 32),
            upsert("", 1, 4096, b"s", 32),
        ],
    )?;
    ensure!(
        got == r(&[
            ("min", 0),
            ("max", 0),
            ("few", 93),
            ("many", 93),
            ("negative", 93),
            ("nosalt", 93),
            ("bigsalt", 93),
            ("short", 93),
            ("long", 93),
            ("mech0", 33),
            ("mech3", 33),
            ("mechneg", 33),
            ("", 93),
        ]),
        "{got:?}"
    );
    // The same user and mechanism twice: that user's changes are all refused, others apply.
    let got = alter(
        &mut c,
        vec![delete("min", 1)],
        vec![
            upsert("min", 1, 5000, b"s", 32),
            upsert("other", 1, 4096, b"s", 32),
        ],
    )?;
    ensure!(got == r(&[("min", 92), ("other", 0)]), "{got:?}");
    // Deleting what does not exist; over max_scram_credentials (3 held: min, max, other).
    let got = alter(&mut c, vec![delete("ghost", 1), delete("min", 2)], vec![])?;
    ensure!(got == r(&[("ghost", 91), ("min", 91)]), "{got:?}");
    let got = alter(&mut c, vec![], vec![upsert("fourth", 1, 4096, b"s", 32)])?;
    ensure!(got == r(&[("fourth", 44)]), "{got:?}");
    // Replacing one at the cap is fine.
    let got = alter(&mut c, vec![], vec![upsert("min", 1, 8000, b"s", 32)])?;
    ensure!(got == r(&[("min", 0)]), "{got:?}");
    // A request naming 100,000 users is answered (one result each) without work growing
    // with the square of its size.
    let many: Vec<_> = (0..100_000).map(|i| delete(&format!("u{i}"), 1)).collect();
    let got = alter(&mut c, many, vec![])?;
    ensure!(
        got.len() == 100_000 && got.iter().all(|(_, e)| *e == 91),
        "{}",
        got.len()
    );
    // Describe: everyone, some, a missing one, a duplicate.
    type Described = Vec<(String, i16, Vec<(i8, i32)>)>;
    let describe = |c: &mut std::net::TcpStream, users: Option<Vec<&str>>| -> Result<Described> {
        let req = DescribeUserScramCredentialsRequest::default().with_users(users.map(|u| {
            u.into_iter()
                .map(|n| UserName::default().with_name(s(n)))
                .collect()
        }));
        let resp: kafka_protocol::messages::DescribeUserScramCredentialsResponse =
            raw::call(c, 0, 1, &req)?;
        ensure!(resp.error_code == 0, "{resp:?}");
        Ok(resp
            .results
            .into_iter()
            .map(|r| {
                (
                    r.user.to_string(),
                    r.error_code,
                    r.credential_infos
                        .iter()
                        .map(|i| (i.mechanism, i.iterations))
                        .collect(),
                )
            })
            .collect())
    };
    let all = describe(&mut c, None)?;
    ensure!(
        all == vec![
            ("max".into(), 0, vec![(2, 16384)]),
            ("min".into(), 0, vec![(1, 8000)]),
            ("other".into(), 0, vec![(1, 4096)]),
        ],
        "{all:?}"
    );
    ensure!(
        describe(&mut c, Some(vec![]))? == all,
        "an empty list is everyone"
    );
    let some = describe(
        &mut c,
        Some(vec!["other", "ghost", "max", "other", "other"]),
    )?;
    ensure!(
        some == vec![
            ("other".into(), 92, vec![]),
            ("ghost".into(), 91, vec![]),
            ("max".into(), 0, vec![(2, 16384)]),
        ],
        "{some:?}"
    );
    let names: Vec<String> = (0..100_000).map(|i| format!("u{i}")).collect();
    let many = describe(&mut c, Some(names.iter().map(String::as_str).collect()))?;
    ensure!(many.len() == 100_000 && many.iter().all(|r| r.1 == 91));
    Ok(())
}

#[test]
fn only_the_cluster_s_admins_manage_scram_users() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path(), |c| {
        c.allow_everyone_if_no_acl_found = false;
        c.super_users = "User:root".into();
    })?;
    let mut c = raw::connect(broker.addr())?;
    let got = alter(
        &mut c,
        vec![delete("x", 1)],
        vec![upsert("y", 1, 4096, b"s", 32)],
    )?;
    ensure!(got == vec![("x".into(), 31), ("y".into(), 31)], "{got:?}");
    let resp: kafka_protocol::messages::DescribeUserScramCredentialsResponse = raw::call(
        &mut c,
        0,
        1,
        &DescribeUserScramCredentialsRequest::default(),
    )?;
    ensure!(resp.error_code == 31 && resp.results.is_empty(), "{resp:?}");
    Ok(())
}
