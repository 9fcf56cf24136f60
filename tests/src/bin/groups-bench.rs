//! Many consumer groups at once: G groups of M members (default 1000 x 10), every member on
//! its own connection speaking the group protocol directly (see `strata_tests::group_storm`),
//! against a broker process. Reports the time until every group is Stable, the joins it
//! took, the broker's memory and threads before and after, heartbeat latency once stable,
//! and produce latency (acks=all, linger 0, 100 messages/s) before and while the groups form.
//!
//! ```text
//! cargo run -p strata-tests --bin groups-bench -- --groups 1000 --members 10
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::producer::{BaseRecord, Producer as _};
use strata_tests::broker::{free_port, BrokerProcess};
use strata_tests::group_storm::{wait_stable, Storm};
use strata_tests::{create_topic, producer_config, recording_producer, send, RecordingProducer};

/// Produce probe rate: light enough not to load the broker itself.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

fn main() -> Result<()> {
    let (mut groups, mut members) = (1000usize, 10usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--groups" => groups = value()?.parse()?,
            "--members" => members = value()?.parse()?,
            "-h" | "--help" => {
                println!("groups-bench [--groups G] [--members M]");
                return Ok(());
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    println!("groups-bench: {groups} groups x {members} members, one connection each");
    let dir = tempfile::Builder::new().prefix("strata-gbench").tempdir()?;
    let connections = (groups * members + 100).to_string();
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        free_port()?,
        &[
            ("STRATA_GROUP_INITIAL_REBALANCE_DELAY_MS", "100"),
            ("STRATA_MAX_CONNECTIONS", &connections),
        ],
    )?;
    let bs = broker.bootstrap();
    create_topic(&bs, "probe", 1)?;

    // One producer for both probes, connected before the groups arrive: the probes measure
    // produce, not connection set-up behind ten thousand connects.
    let mut cfg = producer_config(&bs);
    cfg.set("linger.ms", "0");
    let producer = Arc::new(recording_producer(&cfg)?);
    let idle = probe(&producer, Duration::from_secs(3), || false)?;
    strata_tests::print_latencies("produce latency, no groups", &idle);
    let (rss0, threads0) = (
        broker.status_field("VmRSS")?,
        broker.status_field("Threads")?,
    );

    let storm = Storm {
        groups,
        members,
        prefix: "bench".into(),
        session_timeout_ms: 60_000,
        heartbeat_interval: Duration::from_secs(3),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let running = rt.block_on(async { storm.start(broker.addr()) });
    let settled = Arc::new(AtomicBool::new(false));
    let probe_during = {
        let (producer, settled) = (producer.clone(), settled.clone());
        std::thread::spawn(move || {
            probe(&producer, Duration::from_secs(600), || {
                settled.load(Ordering::SeqCst)
            })
        })
    };
    let ping_during = {
        let (addr, settled) = (broker.addr(), settled.clone());
        std::thread::spawn(move || ping(addr, || settled.load(Ordering::SeqCst)))
    };
    let took = rt.block_on(wait_stable(
        broker.addr(),
        &storm,
        &running,
        Duration::from_secs(600),
    ))?;
    settled.store(true, Ordering::SeqCst);
    let during = probe_during
        .join()
        .map_err(|_| anyhow::anyhow!("probe panicked"))??;
    let (rss1, threads1) = (
        broker.status_field("VmRSS")?,
        broker.status_field("Threads")?,
    );
    let n = groups * members;
    println!(
        "all {groups} groups Stable with {members} members after {:.2} s ({} JoinGroup calls for {n} members)",
        took.as_secs_f64(),
        running.joins.load(Ordering::Relaxed)
    );
    strata_tests::print_latencies("produce latency while the groups form", &during);
    let (pings, fresh) = ping_during
        .join()
        .map_err(|_| anyhow::anyhow!("ping panicked"))??;
    strata_tests::print_latencies("ApiVersions round trip while the groups form", &pings);
    strata_tests::print_latencies("new connection + ApiVersions while the groups form", &fresh);
    println!(
        "broker: RSS {:.1} -> {:.1} MiB ({:.1} KiB per member, connection included); threads {threads0} -> {threads1}",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );
    // Heartbeats of the settled groups, for a few intervals.
    running
        .heartbeat_latencies_us
        .lock()
        .map(|mut l| l.clear())
        .ok();
    std::thread::sleep(Duration::from_secs(7));
    let mut hb: Vec<u64> = running
        .heartbeat_latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    hb.sort_unstable();
    if !hb.is_empty() {
        let q = |p: f64| hb[((hb.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "heartbeats once stable: {} in 7 s, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            hb.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    rt.block_on(running.stop())?;
    Ok(())
}

/// Produces one small message every [`PROBE_INTERVAL`] until `done()` or `limit`, returning
/// each one's send-to-ack latency in ms, sorted.
fn probe(
    producer: &RecordingProducer,
    limit: Duration,
    done: impl Fn() -> bool,
) -> Result<Vec<f64>> {
    let before = producer.context().reported();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < limit && !done() {
        send(
            producer,
            BaseRecord::with_opaque_to("probe", Box::new((i, Instant::now())))
                .payload(&b"probe"[..]),
        )?;
        i += 1;
        std::thread::sleep(PROBE_INTERVAL);
    }
    strata_tests::wait_reports(producer, before + i, Duration::from_secs(60))?;
    let reports = producer.context().take();
    if let Some(bad) = reports.iter().find(|d| d.error.is_some()) {
        bail!("probe message failed: {:?}", bad.error);
    }
    let mut ms: Vec<f64> = reports
        .iter()
        .map(|d| d.latency.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// ApiVersions round trips on a connection of its own every [`PROBE_INTERVAL`] until
/// `done()`: how quickly the broker answers at all (no disk, no client library); and every
/// tenth time also on a new connection (connect included). Sorted ms, both.
fn ping(addr: std::net::SocketAddr, done: impl Fn() -> bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let api_versions = kafka_protocol::messages::ApiVersionsRequest::default();
    let mut conn = strata_tests::raw::connect(addr)?;
    let (mut ms, mut fresh) = (Vec::new(), Vec::new());
    let mut id = 0;
    while !done() {
        id += 1;
        let t = Instant::now();
        strata_tests::raw::call(&mut conn, 0, id, &api_versions)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if id % 10 == 0 {
            let t = Instant::now();
            strata_tests::raw::call(&mut strata_tests::raw::connect(addr)?, 0, 1, &api_versions)?;
            fresh.push(t.elapsed().as_secs_f64() * 1e3);
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    ms.sort_by(f64::total_cmp);
    fresh.sort_by(f64::total_cmp);
    Ok((ms, fresh))
}
