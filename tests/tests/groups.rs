//! Consumer groups (classic protocol) with librdkafka: partitions are split among members,
//! a crashed member's partitions move to the survivors within the session timeout (eagerly,
//! or with cooperative-sticky without taking anything from the survivors), groups fan out,
//! committed offsets survive consumer and broker restarts, and a static member that
//! restarts within its session timeout gets its assignment back without a rebalance.
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
    let broker = BrokerProcess::spawn(&dir.path().join("data"), free_port()?, BROKER_ENV)?;
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

// ------------------------------------------------------------------ observed members

/// A rebalance callback as the member saw it (partitions of the callback's list).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// What one member has seen so far.
#[derive(Debug, Default)]
struct Observed {
    /// The member's whole assignment after its latest rebalance callback.
    assignment: BTreeSet<i32>,
    events: Vec<Event>,
    /// Records consumed, in order (child members report partition, offset and message
    /// number only).
    records: Vec<Rec>,
    /// Consume errors (transport errors during broker restarts are expected).
    errors: Vec<String>,
}

fn lock(o: &Mutex<Observed>) -> MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records every rebalance callback and the resulting assignment.
struct Recording {
    observed: Arc<Mutex<Observed>>,
    /// When set (the child process), also reports each rebalance on stdout.
    print: bool,
}

impl ClientContext for Recording {}

impl ConsumerContext for Recording {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions_of(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        let assignment = consumer
            .assignment()
            .map(|t| partitions_of(&t))
            .unwrap_or_default();
        if self.print {
            match &event {
                Event::Assign(s) => println!("@@ASSIGN {}", fmt_set(s)),
                Event::Revoke(s) => println!("@@REVOKE {}", fmt_set(s)),
                Event::Error(e) => println!("@@ERROR {e}"),
            }
            println!("@@ASSIGNMENT {}", fmt_set(&assignment));
        }
        let mut o = lock(&self.observed);
        o.events.push(event);
        o.assignment = assignment;
    }
}

fn to_rec(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
        timestamp: m.timestamp(),
    }
}

/// A group member: a consumer polled by a thread of this process (closed, hence leaving
/// the group, when stopped), or a child process (killed with SIGKILL, never leaving).
struct Member {
    name: String,
    observed: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    child: Option<Child>,
}

impl Member {
    /// A consumer subscribed to `topic`, polled by a thread of this process.
    fn thread(name: &str, settings: Vec<(String, String)>, topic: &str) -> Result<Member> {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let consumer: BaseConsumer<Recording> = client_config(&settings)
            .create_with_context(Recording {
                observed: observed.clone(),
                print: false,
            })
            .context("create consumer")?;
        consumer.subscribe(&[topic])?;
        let (obs, stop2) = (observed.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("member-{name}"))
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(100)) {
                        None => {}
                        Some(Ok(m)) => lock(&obs).records.push(to_rec(&m)),
                        Some(Err(e)) => lock(&obs).errors.push(e.to_string()),
                    }
                }
                // Dropping the consumer closes it: LeaveGroup.
                drop(consumer);
                Ok(())
            })?;
        Ok(Member {
            name: name.to_string(),
            observed,
            stop,
            thread: Some(thread),
            child: None,
        })
    }

    /// A consumer subscribed to `topic` in a child process (this test binary running
    /// [`child_consumer_process`]); its reports are parsed into `observed`.
    fn child(name: &str, settings: Vec<(String, String)>, topic: &str) -> Result<Member> {
        let config: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "--ignored",
                "--exact",
                "child_consumer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_TOPIC_ENV, topic)
            .env(CHILD_CONFIG_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn child consumer")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no child stdout"))?;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let obs = observed.clone();
        let reader = std::thread::Builder::new()
            .name(format!("child-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some(rest) = line.strip_prefix("@@") else {
                        continue;
                    };
                    let (kind, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                    let mut o = lock(&obs);
                    match kind {
                        "ASSIGN" => o.events.push(Event::Assign(parse_set(arg))),
                        "REVOKE" => o.events.push(Event::Revoke(parse_set(arg))),
                        "ERROR" => o.events.push(Event::Error(arg.to_string())),
                        "ASSIGNMENT" => o.assignment = parse_set(arg),
                        "REC" => {
                            let mut it = arg.split(' ').filter_map(|x| x.parse::<i64>().ok());
                            if let (Some(p), Some(off), Some(idx)) =
                                (it.next(), it.next(), it.next())
                            {
                                // Only the message number travels; it is kept as the value's
                                // prefix, so that `message_index` reads it like a real value's.
                                o.records.push(Rec {
                                    partition: p as i32,
                                    offset: off,
                                    key: None,
                                    payload: (idx >= 0).then(|| format!("msg-{idx}:").into_bytes()),
                                    headers: Vec::new(),
                                    timestamp: rdkafka::Timestamp::NotAvailable,
                                });
                            }
                        }
                        "CONSUME_ERROR" => o.errors.push(arg.to_string()),
                        _ => {}
                    }
                }
                Ok(())
            })?;
        Ok(Member {
            name: name.to_string(),
            observed,
            stop: Arc::new(AtomicBool::new(false)),
            thread: Some(reader),
            child: Some(child),
        })
    }

    fn assignment(&self) -> BTreeSet<i32> {
        lock(&self.observed).assignment.clone()
    }

    fn events(&self) -> Vec<Event> {
        lock(&self.observed).events.clone()
    }

    fn records(&self) -> Vec<Rec> {
        lock(&self.observed).records.clone()
    }

    /// SIGKILL of a child member: no LeaveGroup, no commit, no goodbye.
    fn kill9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not a child process", self.name))?;
        child.kill().context("SIGKILL child consumer")?;
        child.wait()?;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }

    /// Stops the member: a thread member closes its consumer (LeaveGroup), a child is killed.
    fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("member {} panicked", self.name))?,
            None => Ok(()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Polls `check` every 50 ms until it returns `Ok(Some(v))`; on timeout fails with the last
/// state description (`Ok(None)` carries none; use `Err` to describe).
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(state) => {
                if Instant::now() > deadline {
                    bail!("timed out after {timeout:?} waiting for {what}; last state: {state}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn describe(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={{{}}}", m.name, fmt_set(&m.assignment())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until the members' assignments are pairwise disjoint, cover `0..partitions`, and
/// each has `per_member(i)` partitions. Returns the assignments.
fn wait_split(
    members: &[&Member],
    partitions: i32,
    per_member: impl Fn(usize) -> usize,
    timeout: Duration,
) -> Result<Vec<BTreeSet<i32>>> {
    wait_for("the group to split the partitions", timeout, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let sizes_ok = sets
            .iter()
            .enumerate()
            .all(|(i, s)| s.len() == per_member(i));
        if union == (0..partitions).collect() && total == partitions as usize && sizes_ok {
            Ok(sets)
        } else {
            Err(describe(members))
        }
    })
}

fn produce(bootstrap: &str, topic: &str, ids: std::ops::Range<u64>, partitions: i32) -> Result<()> {
    let producer = recording_producer(&producer_config(bootstrap))?;
    produce_and_wait(&producer, topic, ids, partitions, size)?;
    Ok(())
}

/// Waits until `members` together consumed every record of test messages `ids` (message `i`
/// in partition `i % partitions`); returns each member's records.
fn wait_consumed(
    members: &[&Member],
    ids: std::ops::Range<u64>,
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let wanted: BTreeSet<(i32, u64)> = ids.map(|i| ((i % partitions as u64) as i32, i)).collect();
    wait_for("every record to be consumed", timeout, || {
        let got: BTreeSet<(i32, u64)> = members
            .iter()
            .flat_map(|m| m.records())
            .filter_map(|r| Some((r.partition, message_index(r.payload.as_deref()?)?)))
            .collect();
        let missing: Vec<_> = wanted.difference(&got).take(5).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} missing, e.g. {missing:?}; {}",
                wanted.difference(&got).count(),
                wanted.len(),
                describe(members)
            ))
        }
    })
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

// ------------------------------------------------------------------ tests

/// Three members split six partitions two each; one crashes (SIGKILL, no LeaveGroup); the
/// two survivors own all six within the session timeout and consume from all of them.
#[test]
fn crashed_member_partitions_move_to_survivors_within_session_timeout() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-crash");
    let group = topic_name("g-crash");
    create_topic(&bs, &topic, 6)?;

    let a = Member::thread("a", member_settings(&bs, &group, "a", &[]), &topic)?;
    let b = Member::thread("b", member_settings(&bs, &group, "b", &[]), &topic)?;
    let mut c = Member::child("c", member_settings(&bs, &group, "c", &[]), &topic)?;
    let split = wait_split(&[&a, &b, &c], 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    eprintln!("split: a={:?} b={:?} c={:?}", split[0], split[1], split[2]);

    // Each member consumes exactly its own partitions.
    produce(&bs, &topic, 0..600, 6)?;
    wait_consumed(&[&a, &b, &c], 0..600, 6, CONSUME_TIMEOUT)?;
    for (m, own) in [&a, &b, &c].iter().zip(&split) {
        let from: BTreeSet<i32> = m.records().iter().map(|r| r.partition).collect();
        ensure!(
            from == *own,
            "{} consumed from partitions {from:?}, but was assigned {own:?}",
            m.name
        );
    }

    let killed_at = Instant::now();
    c.kill9()?;
    let bound = Duration::from_millis(SESSION_MS) + TAKEOVER_SLACK;
    wait_split(&[&a, &b], 6, |_| 3, bound).with_context(|| {
        format!(
            "survivors did not take over; broker log:\n{}",
            broker.log_tail(3000)
        )
    })?;
    eprintln!(
        "survivors own all partitions {:?} after the crash: a={:?} b={:?}",
        killed_at.elapsed(),
        a.assignment(),
        b.assignment()
    );

    // The survivors consume new records from every partition, the dead member's included.
    produce(&bs, &topic, 600..1200, 6)?;
    wait_consumed(&[&a, &b], 600..1200, 6, CONSUME_TIMEOUT)?;
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// With cooperative-sticky, a crash moves only the dead member's partitions: the survivors
/// revoke nothing and keep what they had.
#[test]
fn cooperative_sticky_survivors_keep_their_partitions_after_a_crash() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-coop");
    let group = topic_name("g-coop");
    create_topic(&bs, &topic, 6)?;
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];

    let a = Member::thread("a", member_settings(&bs, &group, "a", &coop), &topic)?;
    let b = Member::thread("b", member_settings(&bs, &group, "b", &coop), &topic)?;
    let mut c = Member::child("c", member_settings(&bs, &group, "c", &coop), &topic)?;
    let split = wait_split(&[&a, &b, &c], 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    let (events_a, events_b) = (a.events().len(), b.events().len());

    c.kill9()?;
    let bound = Duration::from_millis(SESSION_MS) + TAKEOVER_SLACK;
    let after = wait_split(&[&a, &b], 6, |_| 3, bound).with_context(|| {
        format!(
            "survivors did not take over; broker log:\n{}",
            broker.log_tail(3000)
        )
    })?;
    for (m, (before, now, seen)) in [&a, &b].iter().zip([
        (&split[0], &after[0], events_a),
        (&split[1], &after[1], events_b),
    ]) {
        ensure!(
            now.is_superset(before),
            "{} had {before:?} before the crash and {now:?} after",
            m.name
        );
        let revoked: Vec<Event> = m.events()[seen..]
            .iter()
            .filter(|e| matches!(e, Event::Revoke(_) | Event::Error(_)))
            .cloned()
            .collect();
        ensure!(
            revoked.is_empty(),
            "{} saw {revoked:?} after the crash (events: {:?})",
            m.name,
            m.events()
        );
    }

    // And they read the dead member's partitions.
    produce(&bs, &topic, 0..600, 6)?;
    wait_consumed(&[&a, &b], 0..600, 6, CONSUME_TIMEOUT)?;
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// Two groups on one topic each receive every record exactly once: group one has two
/// members that split the topic, group two a single member.
#[test]
fn two_groups_each_receive_every_record() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-fanout");
    let (g1, g2) = (topic_name("g-fan1"), topic_name("g-fan2"));
    const P: i32 = 4;
    const N: u64 = 4000;
    create_topic(&bs, &topic, P)?;

    let a = Member::thread("g1-a", member_settings(&bs, &g1, "g1-a", &[]), &topic)?;
    let b = Member::thread("g1-b", member_settings(&bs, &g1, "g1-b", &[]), &topic)?;
    let c = Member::thread("g2-c", member_settings(&bs, &g2, "g2-c", &[]), &topic)?;
    // Settle first: a rebalance in the middle of consumption would legitimately re-read
    // uncommitted records.
    wait_split(&[&a, &b], P, |_| 2, SETTLE_TIMEOUT)?;
    wait_split(&[&c], P, |_| P as usize, SETTLE_TIMEOUT)?;

    produce(&bs, &topic, 0..N, P)?;
    wait_consumed(&[&a, &b], 0..N, P, CONSUME_TIMEOUT)?;
    wait_consumed(&[&c], 0..N, P, CONSUME_TIMEOUT)?;
    // Give duplicates a moment to show up.
    std::thread::sleep(Duration::from_millis(500));

    let by_partition = |members: &[&Member]| {
        let mut map: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
        for m in members {
            for r in m.records() {
                map.entry(r.partition).or_default().push(r);
            }
        }
        map
    };
    verify_test_messages(&by_partition(&[&a, &b]), 0..N, P, size).context("group one")?;
    verify_test_messages(&by_partition(&[&c]), 0..N, P, size).context("group two")?;
    for m in [a, b, c] {
        m.stop()?;
    }
    Ok(())
}

/// Commits on revoke, so that a member handing partitions over never causes duplicates.
struct CommitOnRevoke {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => self
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("commit on revoke: {e}")),
            }
        }
    }
}

type CommittingConsumer = BaseConsumer<CommitOnRevoke>;

fn committing_consumer(
    bs: &str,
    group: &str,
    name: &str,
    topic: &str,
) -> Result<CommittingConsumer> {
    let settings = member_settings(bs, group, name, &[("enable.auto.offset.store", "false")]);
    let c: CommittingConsumer = client_config(&settings).create_with_context(CommitOnRevoke {
        errors: Mutex::default(),
    })?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// Committed offsets of `group` for partitions `0..partitions` (absent: nothing committed).
fn committed(bs: &str, group: &str, topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>> {
    let c: BaseConsumer =
        client_config(&member_settings(bs, group, "offsets-reader", &[])).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, CALL_TIMEOUT)?;
    let mut out = BTreeMap::new();
    for e in got.elements() {
        e.error()
            .with_context(|| format!("committed offset of partition {}", e.partition()))?;
        if let Offset::Offset(o) = e.offset() {
            out.insert(e.partition(), o);
        }
    }
    Ok(out)
}

/// Polls `consumers` round-robin; `take(i, rec)` decides whether consumer `i` processes the
/// record (then its offset is stored for the next commit). Stops when `done` says so.
fn poll_loop(
    consumers: &[&CommittingConsumer],
    timeout: Duration,
    mut take: impl FnMut(usize, &Rec) -> bool,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "poll loop timed out after {timeout:?}"
        );
        for (i, c) in consumers.iter().enumerate() {
            match c.poll(Duration::from_millis(20)) {
                None => {}
                Some(Ok(m)) if take(i, &to_rec(&m)) => c.store_offset_from_message(&m)?,
                Some(Ok(_)) => {}
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                ))) => {}
                Some(Err(e)) => bail!("consumer {i}: {e}"),
            }
            let errors = c
                .context()
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            ensure!(errors.is_empty(), "consumer {i}: {errors:?}");
        }
    }
    Ok(())
}

/// Two members consume part of the topic and commit; both close, the broker is restarted
/// (SIGTERM, same data dir), more records arrive, and two new members resume exactly at the
/// committed offsets: over both sessions every record is processed once.
#[test]
fn committed_offsets_survive_consumer_and_broker_restart() -> Result<()> {
    let (_dir, mut broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-resume");
    let group = topic_name("g-resume");
    const P: i32 = 4;
    const FIRST: u64 = 4000;
    const SECOND: u64 = 2000;
    /// Records each member of the first session processes before committing and stopping.
    const K: usize = 700;
    create_topic(&bs, &topic, P)?;
    produce(&bs, &topic, 0..FIRST, P)?;

    // Session 1: each member processes K records, commits, closes.
    let mut processed: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    {
        let c1 = committing_consumer(&bs, &group, "s1-a", &topic)?;
        let c2 = committing_consumer(&bs, &group, "s1-b", &topic)?;
        let count = [Cell::new(0usize), Cell::new(0usize)];
        poll_loop(
            &[&c1, &c2],
            CONSUME_TIMEOUT,
            |i, rec| {
                if count[i].get() >= K {
                    return false;
                }
                count[i].set(count[i].get() + 1);
                processed
                    .entry(rec.partition)
                    .or_default()
                    .push(rec.clone());
                true
            },
            || count.iter().all(|n| n.get() >= K),
        )?;
        for c in [&c1, &c2] {
            match c.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit (made when a rebalance revoked).
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => return Err(e).context("commit"),
            }
        }
    }
    let expected: BTreeMap<i32, i64> = processed
        .iter()
        .map(|(&p, recs)| (p, recs.last().map_or(0, |r| r.offset + 1)))
        .collect();
    let got = committed(&bs, &group, &topic, P)?;
    ensure!(
        got == expected,
        "committed offsets {got:?}, expected {expected:?} (from what was processed)"
    );

    let status = broker.terminate()?;
    ensure!(
        status.success(),
        "broker exited with {status} after SIGTERM"
    );
    broker.restart()?;
    let got = committed(&bs, &group, &topic, P)?;
    ensure!(
        got == expected,
        "after the broker restart: committed offsets {got:?}, expected {expected:?}"
    );
    produce(&bs, &topic, FIRST..FIRST + SECOND, P)?;

    // Session 2: new members resume and read to the end.
    let ends: Vec<i64> = watermarks(&bs, &topic)?
        .into_iter()
        .map(|(_, hi)| hi)
        .collect();
    let mut resumed: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    let c3 = committing_consumer(&bs, &group, "s2-a", &topic)?;
    let c4 = committing_consumer(&bs, &group, "s2-b", &topic)?;
    let last: RefCell<BTreeMap<i32, i64>> =
        RefCell::new(expected.iter().map(|(&p, &o)| (p, o - 1)).collect());
    poll_loop(
        &[&c3, &c4],
        CONSUME_TIMEOUT,
        |_, rec| {
            last.borrow_mut().insert(rec.partition, rec.offset);
            resumed.entry(rec.partition).or_default().push(rec.clone());
            true
        },
        || (0..P).all(|p| last.borrow().get(&p).copied().unwrap_or(-1) + 1 >= ends[p as usize]),
    )?;
    // Duplicates arrive right away if at all: poll a little longer.
    let settle = Instant::now() + Duration::from_millis(500);
    poll_loop(
        &[&c3, &c4],
        CONSUME_TIMEOUT,
        |_, rec| {
            resumed.entry(rec.partition).or_default().push(rec.clone());
            true
        },
        || Instant::now() > settle,
    )?;

    for p in 0..P {
        let first = resumed.get(&p).and_then(|r| r.first()).map(|r| r.offset);
        let want = expected.get(&p).copied().unwrap_or(0);
        ensure!(
            first == Some(want),
            "partition {p}: the resumed session started at {first:?}, committed was {want}"
        );
    }
    let mut all = processed;
    for (p, recs) in resumed {
        all.entry(p).or_default().extend(recs);
    }
    verify_test_messages(&all, 0..FIRST + SECOND, P, size).context("both sessions together")?;
    drop((c3, c4));
    Ok(())
}

/// Three static members (`group.instance.id`); each in turn is killed and restarted within
/// its session timeout. It gets its previous partitions back, and the other members see no
/// rebalance at all (no callbacks). One of the three is the group leader: Kafka does not
/// rebalance when it returns either (KIP-345; the returning leader is answered as a follower,
/// or with `skip_assignment` from JoinGroup v9), and only a change of the group's selected
/// protocol would make it.
#[test]
fn static_member_restart_keeps_assignment_without_rebalance() -> Result<()> {
    static_restarts(&[])
}

/// The same with cooperative-sticky, whose subscription metadata carries the partitions a
/// member owns (none, for a member that just restarted).
#[test]
fn static_member_restart_keeps_assignment_without_rebalance_cooperative() -> Result<()> {
    static_restarts(&[("partition.assignment.strategy", "cooperative-sticky")])
}

fn static_restarts(extra: &[(&str, &str)]) -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-static");
    let group = topic_name("g-static");
    create_topic(&bs, &topic, 6)?;
    // Session timeout: ample time for a restart (which takes well under a second).
    let settings = |i: usize| {
        let name = format!("static-{i}");
        let mut own = vec![
            ("group.instance.id", name.as_str()),
            ("session.timeout.ms", "20000"),
        ];
        own.extend_from_slice(extra);
        member_settings(&bs, &group, &name, &own)
    };
    let mut members = (0..3)
        .map(|i| Member::child(&format!("static-{i}"), settings(i), &topic))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Member> = members.iter().collect();
    wait_split(&refs, 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    // Let any trailing rebalance finish before counting callbacks.
    std::thread::sleep(Duration::from_secs(2));
    let refs: Vec<&Member> = members.iter().collect();
    let split = wait_split(&refs, 6, |_| 2, SETTLE_TIMEOUT)?;

    // Every restart is checked; problems are collected so that one failure report says
    // which of the three restarts (leader or follower) misbehaved.
    let mut problems = Vec::new();
    let mut split = split;
    for i in 0..3 {
        let seen: Vec<usize> = members.iter().map(|m| m.events().len()).collect();
        members[i].kill9()?;
        let restarted_at = Instant::now();
        members[i] = Member::child(&format!("static-{i}-restarted"), settings(i), &topic)?;
        let got = wait_for("the restarted member's assignment", SETTLE_TIMEOUT, || {
            let a = members[i].assignment();
            if a.is_empty() {
                Err(describe(&members.iter().collect::<Vec<_>>()))
            } else {
                Ok(a)
            }
        })
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
        eprintln!(
            "static-{i} back after {:?} with {got:?}",
            restarted_at.elapsed()
        );
        if got != split[i] {
            problems.push(format!(
                "static-{i} had {:?} before its restart and {got:?} after",
                split[i]
            ));
        }
        // A rebalance would reach the others with their next heartbeat (every 500 ms).
        std::thread::sleep(Duration::from_secs(3));
        for (j, m) in members.iter().enumerate() {
            // (The restarted member is a new process with its own event list.)
            let new: Vec<Event> = if j == i {
                Vec::new()
            } else {
                m.events()[seen[j]..].to_vec()
            };
            if !new.is_empty() {
                problems.push(format!(
                    "restarting static-{i}: static-{j} saw a rebalance: {new:?}"
                ));
            }
            if m.assignment() != split[j] {
                problems.push(format!(
                    "restarting static-{i}: static-{j} went from {:?} to {:?}",
                    split[j],
                    m.assignment()
                ));
            }
        }
        // Continue from wherever the group settled.
        let refs: Vec<&Member> = members.iter().collect();
        split = wait_split(&refs, 6, |_| 2, SETTLE_TIMEOUT)?;
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
