//! Group failover: a two-member group loses a member to SIGKILL (the member is a child
//! process, this binary run as `child-consumer`, since a dropped rdkafka consumer leaves its
//! group politely); measured is the time until the survivor consumes the dead member's
//! partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::BaseRecord;
use rdkafka::ClientContext;
use strata_tests::{producer_config, recording_producer, send};

use super::{group_config, Args};

/// Records the member's assignment after each rebalance, and when it changed.
struct Tracked {
    assignment: Arc<Mutex<(BTreeSet<i32>, Instant)>>,
    print: bool,
}

impl ClientContext for Tracked {}

impl ConsumerContext for Tracked {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {
        let now: BTreeSet<i32> = consumer
            .assignment()
            .map(|t| t.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        if self.print {
            let list: Vec<String> = now.iter().map(i32::to_string).collect();
            println!("@@ASSIGNMENT {}", list.join(","));
        }
        *self.assignment.lock().unwrap_or_else(|e| e.into_inner()) = (now, Instant::now());
    }
}

fn failover_config(bs: &str, group: &str, client: &str, a: &Args) -> ClientConfig {
    let mut c = group_config(bs, group, client);
    c.set("session.timeout.ms", a.session_ms.to_string())
        .set("heartbeat.interval.ms", a.heartbeat_ms.to_string())
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("fetch.wait.max.ms", "100");
    c
}

/// `fanout-bench child-consumer BOOTSTRAP TOPIC GROUP SESSION_MS HEARTBEAT_MS`: a member
/// that reports its assignment on stdout and runs until killed or its stdin closes.
pub(super) fn child_consumer(mut it: impl Iterator<Item = String>) -> Result<()> {
    let mut next = |what: &str| {
        it.next()
            .with_context(|| format!("child-consumer: missing {what}"))
    };
    let (bs, topic, group) = (next("bootstrap")?, next("topic")?, next("group")?);
    let a = Args {
        mb: 0,
        size: 0,
        partitions: 0,
        groups: 0,
        session_ms: next("session")?.parse()?,
        heartbeat_ms: next("heartbeat")?.parse()?,
        failovers: 0,
        cache_mb: None,
    };
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let ctx = Tracked {
        assignment: Arc::new(Mutex::new((BTreeSet::new(), Instant::now()))),
        print: true,
    };
    let consumer: BaseConsumer<Tracked> =
        failover_config(&bs, &group, "victim", &a).create_with_context(ctx)?;
    consumer.subscribe(&[&topic])?;
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

struct Victim {
    child: Child,
    assignment: Arc<Mutex<BTreeSet<i32>>>,
}

impl Victim {
    fn spawn(bs: &str, topic: &str, group: &str, a: &Args) -> Result<Victim> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "child-consumer",
                bs,
                topic,
                group,
                &a.session_ms.to_string(),
                &a.heartbeat_ms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn child consumer")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no child stdout"))?;
        let assignment = Arc::new(Mutex::new(BTreeSet::new()));
        let shared = assignment.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Some(list) = line.strip_prefix("@@ASSIGNMENT ") {
                    *shared.lock().unwrap_or_else(|e| e.into_inner()) =
                        list.split(',').filter_map(|p| p.parse().ok()).collect();
                }
            }
        });
        Ok(Victim { child, assignment })
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Timings of one crash, from the SIGKILL.
pub(super) struct Failover {
    /// Until the survivor's rebalance callback gave it the dead member's partitions.
    pub assigned: Duration,
    /// Until the survivor had consumed a record from every one of them.
    pub consumed: Duration,
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

pub(super) fn failover_once(bs: &str, topic: &str, run: usize, a: &Args) -> Result<Failover> {
    let group = format!("failover-{run}-{:08x}", rand::random::<u32>());
    let survivor_assignment = Arc::new(Mutex::new((BTreeSet::new(), Instant::now())));
    let ctx = Tracked {
        assignment: survivor_assignment.clone(),
        print: false,
    };
    let survivor: BaseConsumer<Tracked> =
        failover_config(bs, &group, "survivor", a).create_with_context(ctx)?;
    survivor.subscribe(&[topic])?;
    let mut victim = Victim::spawn(bs, topic, &group, a)?;

    // Poll the survivor from this thread; (partition -> time of its latest record).
    let latest: Arc<Mutex<BTreeMap<i32, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (latest, stop) = (latest.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = survivor.poll(Duration::from_millis(50)) {
                    latest
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(m.partition(), Instant::now());
                }
            }
            Ok(())
        })
    };
    let half = a.partitions as usize / 2;
    let all: BTreeSet<i32> = (0..a.partitions).collect();
    wait_until(
        "the two members to split the partitions",
        Duration::from_secs(120),
        || {
            let s = survivor_assignment
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone();
            let v = victim.assignment();
            !s.is_empty()
                && !v.is_empty()
                && s.is_disjoint(&v)
                && s.union(&v).copied().collect::<BTreeSet<_>>() == all
        },
    )?;
    let theirs = victim.assignment();
    if theirs.len() != a.partitions as usize - half && theirs.len() != half {
        bail!("unbalanced split: the victim owns {theirs:?}");
    }
    // Let both consume (and auto-commit) for a moment; the random part spreads the kill over
    // the heartbeat cycle, which decides how much of the session timeout is left.
    std::thread::sleep(Duration::from_millis(
        1500 + rand::random_range(0..a.heartbeat_ms.max(1)),
    ));

    let killed = Instant::now();
    victim.child.kill()?;
    victim.child.wait()?;
    wait_until(
        "the survivor to own every partition",
        Duration::from_secs(120),
        || {
            survivor_assignment
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                == all
        },
    )?;
    let assigned = survivor_assignment
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .1
        .saturating_duration_since(killed);
    wait_until(
        "the survivor to consume the dead member's partitions",
        Duration::from_secs(120),
        || {
            let l = latest.lock().unwrap_or_else(|e| e.into_inner());
            theirs.iter().all(|p| l.get(p).is_some_and(|t| *t > killed))
        },
    )?;
    let consumed = {
        let l = latest.lock().unwrap_or_else(|e| e.into_inner());
        theirs
            .iter()
            .filter_map(|p| l.get(p))
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(killed))
    };
    stop.store(true, Ordering::SeqCst);
    poller.join().map_err(|_| anyhow!("survivor panicked"))??;
    Ok(Failover { assigned, consumed })
}

/// Keeps producing small records to every partition (one per partition every 10 ms) until
/// stopped, so that a partition taken over is consumed as soon as it is fetched.
pub(super) fn trickle(
    bs: &str,
    topic: &str,
    partitions: i32,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let producer = recording_producer(producer_config(bs).set("linger.ms", "0"))?;
    let topic = topic.to_string();
    Ok(std::thread::spawn(move || {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for p in 0..partitions {
                let rec = BaseRecord::with_opaque_to(&topic, Box::new((i, Instant::now())))
                    .partition(p)
                    .payload(b"tick".as_slice());
                send(&producer, rec)?;
                i += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }))
}
