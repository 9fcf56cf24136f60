//! Consumer groups (classic protocol) with librdkafka: partitions are split among members,
//! a crashed member's partitions move to the survivors within the session timeout (eagerly,
//! or with cooperative-sticky without taking anything from the survivors), groups fan out,
//! committed offsets survive consumer and broker restarts, a static member that
//! restarts within its session timeout gets its assignment back without a rebalance, and a
//! Stable group stays Stable across a broker restart.
//!
//! A crash must not send LeaveGroup, and dropping an rdkafka consumer does (it closes), so
//! crashing members run in a child process that is SIGKILLed: this test binary itself, run
//! with `--ignored --exact child_consumer_process` (see [`child_consumer_process`]). The child
//! reports its rebalances on stdout as `@@` lines, which the parent parses.
//!
//! Every broker runs as a child process configured through the environment, with a short
//! initial rebalance delay and a lowered minimum session timeout so that session expiry
//! takes seconds, not the default 45.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use strata_tests::*;

mod broker_restart;
mod many;
mod member;
mod offsets;
mod rebalance;

use member::*;

/// Broker settings for group tests (the defaults are Kafka's: 3 s initial delay, 6 s minimum
/// session timeout).
const BROKER_ENV: &[(&str, &str)] = &[
    ("STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS", "100"),
    ("STRATA_GROUP_MIN_SESSION_TIMEOUT_MS", "1000"),
];

/// Session timeout of the members in crash tests.
const SESSION_MS: u64 = 4000;

/// How long after the session timeout the survivors may take to own a crashed member's
/// partitions: one heartbeat to learn of the rebalance, a rejoin, a sync. Generous because
/// debug builds on two shared cores can be slow; a broker that never expires the session
/// fails regardless.
const TAKEOVER_SLACK: Duration = Duration::from_secs(30);

/// Generous bound for a group to settle (join, sync, assignment) after a change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variables of the child consumer (see [`child_consumer_process`]).
const CHILD_TOPIC_ENV: &str = "STRATA_GROUPS_TEST_CHILD_TOPIC";
const CHILD_CONFIG_ENV: &str = "STRATA_GROUPS_TEST_CHILD_CONFIG";

fn size(i: u64) -> usize {
    100 + (i % 50) as usize
}

fn start_broker() -> Result<(tempfile::TempDir, BrokerProcess)> {
    let dir = tempfile::Builder::new().prefix("strata-groups").tempdir()?;
    let broker = BrokerProcess::spawn(&dir.path().join("data"), 0, BROKER_ENV)?;
    Ok((dir, broker))
}

/// Consumer settings for a group member: subscribe, no auto commit (tests commit
/// explicitly), read from the beginning when nothing is committed.
fn member_settings(
    bootstrap: &str,
    group: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = [
        ("bootstrap.servers", bootstrap),
        ("group.id", group),
        ("client.id", name),
        ("session.timeout.ms", &SESSION_MS.to_string()),
        ("heartbeat.interval.ms", "500"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "false"),
        ("fetch.wait.max.ms", "100"),
        ("reconnect.backoff.ms", "50"),
        ("reconnect.backoff.max.ms", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        s.retain(|(key, _)| key != k);
        s.push((k.to_string(), v.to_string()));
    }
    s
}

fn client_config(settings: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in settings {
        c.set(k, v);
    }
    c
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn fmt_set(s: &BTreeSet<i32>) -> String {
    s.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn parse_set(s: &str) -> BTreeSet<i32> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .filter_map(|x| x.parse().ok())
        .collect()
}

// ------------------------------------------------------------------ the child consumer

/// Not a test: the body of a child consumer process, started by [`Member::child`] (ignored
/// so that normal runs skip it). It subscribes with the configuration from the environment,
/// prints `@@` lines for rebalances and records, and runs until killed (or until its stdin
/// closes, so that it never outlives a crashed test).
#[test]
#[ignore = "helper process for the crash tests, started by them"]
fn child_consumer_process() -> Result<()> {
    let (Ok(topic), Ok(config)) = (
        std::env::var(CHILD_TOPIC_ENV),
        std::env::var(CHILD_CONFIG_ENV),
    ) else {
        eprintln!("child_consumer_process only runs as a child of the group tests");
        return Ok(());
    };
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let settings: Vec<(String, String)> = config
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let consumer: BaseConsumer<Recording> =
        client_config(&settings).create_with_context(Recording {
            observed: Arc::default(),
            print: true,
        })?;
    consumer.subscribe(&[&topic])?;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let idx = m.payload().and_then(message_index).map_or(-1, |i| i as i64);
                println!("@@REC {} {} {idx}", m.partition(), m.offset());
            }
            Some(Err(e)) => println!("@@CONSUME_ERROR {e}"),
        }
    }
}
