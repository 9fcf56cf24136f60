//! Offset commits under load: C connections committing offsets back to back (each to a
//! group of its own, as simple consumers do), while G groups of M members heartbeat.
//! Reports commit throughput and latency, and heartbeat latency before and during the
//! storm, against a broker process with fsync on (its default). With `--rate R` the
//! committers together aim at R commits/s (each paced on its own schedule), so runs of
//! different broker versions can be compared at the same load; without it they commit
//! back to back, which measures the most the broker takes (and saturates the machine).
//!
//! ```text
//! cargo run -p strata-tests --bin commit-storm -- --committers 64 --seconds 10 --rate 8000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_tests::broker::{free_port, BrokerProcess};
use strata_tests::group_storm::{wait_stable, Storm};
use strata_tests::{create_topic, raw};

/// Heartbeat interval of the members: often enough for a few thousand samples.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);
/// How long heartbeats are sampled before the storm.
const BASELINE: Duration = Duration::from_secs(3);

fn main() -> Result<()> {
    let (mut committers, mut seconds, mut groups, mut members) = (64usize, 10u64, 20usize, 5usize);
    let mut rate = 0f64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--committers" => committers = value()?.parse()?,
            "--seconds" => seconds = value()?.parse()?,
            "--groups" => groups = value()?.parse()?,
            "--members" => members = value()?.parse()?,
            "--rate" => rate = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "commit-storm [--committers C] [--seconds S] [--groups G] [--members M] [--rate R]"
                );
                return Ok(());
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("strata-commits")
        .tempdir()?;
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        free_port()?,
        &[("STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS", "100")],
    )?;
    let bs = broker.bootstrap();
    create_topic(&bs, "storm", 1)?;
    let storm = Storm {
        groups,
        members,
        prefix: "hb".into(),
        session_timeout_ms: 30_000,
        heartbeat_interval: HEARTBEAT_EVERY,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let running = rt.block_on(async { storm.start(broker.addr()) });
    rt.block_on(wait_stable(
        broker.addr(),
        &storm,
        &running,
        Duration::from_secs(120),
    ))?;
    let take_heartbeats = || {
        let mut l = running
            .heartbeat_latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<f64> = l.drain(..).map(|us| us as f64 / 1000.0).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    take_heartbeats();
    std::thread::sleep(BASELINE);
    let before = take_heartbeats();

    let version = raw::best_version::<OffsetCommitRequest>(broker.addr())?;
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..committers)
        .map(|i| {
            let (stop, latencies, addr) = (stop.clone(), latencies.clone(), broker.addr());
            // Each committer's share of the rate; none when unpaced.
            let every = (rate > 0.0).then(|| Duration::from_secs_f64(committers as f64 / rate));
            std::thread::spawn(move || -> Result<()> {
                let mut conn = raw::connect(addr)?;
                let mut mine = Vec::new();
                let mut n = 0i64;
                let begin = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if let Some(every) = every {
                        let due = begin + every.mul_f64(n as f64);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let req = OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(format!("committer-{i}"))))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("storm")))
                            .with_partitions(vec![OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(n)])]);
                    let t = Instant::now();
                    let resp = raw::call(&mut conn, version, n as i32, &req)?;
                    mine.push(t.elapsed().as_secs_f64() * 1e3);
                    let code = resp
                        .topics
                        .first()
                        .and_then(|t| t.partitions.first())
                        .map_or(-1, |p| p.error_code);
                    if code != 0 {
                        bail!("commit {n} of committer {i}: error {code}");
                    }
                }
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("committer panicked"))??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let during = take_heartbeats();
    let mut commits = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    commits.sort_by(f64::total_cmp);
    println!(
        "commit-storm: {committers} committers for {seconds} s (target {}), {groups} groups x {members} members heartbeating every {HEARTBEAT_EVERY:?}",
        if rate > 0.0 { format!("{rate} commits/s") } else { "back to back".into() }
    );
    println!(
        "commits: {} ({:.0}/s)",
        commits.len(),
        commits.len() as f64 / elapsed
    );
    strata_tests::print_latencies("commit latency", &commits);
    strata_tests::print_latencies("heartbeat latency before the storm", &before);
    strata_tests::print_latencies("heartbeat latency during the storm", &during);
    rt.block_on(running.stop())?;
    Ok(())
}
