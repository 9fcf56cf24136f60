//! Consumer-group fan-out benchmark: one topic is filled first, then read by one group
//! alone and by G groups at once (one consumer each, one thread each); the report compares
//! aggregate consume throughput and the broker's CPU per GB delivered. Then G groups tail a
//! second topic while it is filled (the live case: each batch is read by every group soon
//! after it is written). Then group failover (see `failover.rs`): a two-member group
//! (session timeout 6 s) loses a member to SIGKILL, and the time until the survivor consumes
//! the dead member's partitions is measured.
//!
//! ```text
//! cargo run -p strata-tests --bin fanout-bench -- --mb 256 --partitions 4 --groups 8
//! ```
//!
//! Options: `--mb N` (data produced first, 10^6 bytes, default 256) `--size BYTES` (message
//! value size, default 1024) `--partitions P` `--groups G` `--session-ms MS` (failover
//! members' session timeout, default 6000) `--heartbeat-ms MS` (default 3000, librdkafka's
//! default) `--failovers N` (crash runs, default 3) `--cache-mb MB` (the broker's fetch
//! cache; default the broker's default, 0 turns it off).
//!
//! The broker runs in this process (like e2e-bench), so broker and consumers share the
//! machine's cores: on 2 cores aggregate fan-out throughput is bounded by CPU, not by the
//! broker's design. The broker's own CPU is that of its threads (runtime, syncer, RocksDB).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use rdkafka::producer::{BaseRecord, Producer as _};
use strata_tests::procstat::{self_cpu_seconds, self_rss_kib, threads_cpu_seconds};
use strata_tests::{
    create_topic, producer_config, recording_producer, send, wait_reports, InProcessBroker,
};

struct Args {
    mb: u64,
    size: usize,
    partitions: i32,
    groups: usize,
    session_ms: u64,
    heartbeat_ms: u64,
    failovers: usize,
    cache_mb: Option<usize>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        mb: 256,
        size: 1024,
        partitions: 4,
        groups: 8,
        session_ms: 6000,
        heartbeat_ms: 3000,
        failovers: 3,
        cache_mb: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mb" => a.mb = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--partitions" => a.partitions = value()?.parse()?,
            "--groups" => a.groups = value()?.parse()?,
            "--session-ms" => a.session_ms = value()?.parse()?,
            "--heartbeat-ms" => a.heartbeat_ms = value()?.parse()?,
            "--failovers" => a.failovers = value()?.parse()?,
            "--cache-mb" => a.cache_mb = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "fanout-bench [--mb N] [--size BYTES] [--partitions P] [--groups G] \
                     [--session-ms MS] [--heartbeat-ms MS] [--failovers N] [--cache-mb MB]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    if a.mb == 0 || a.size == 0 || a.partitions < 2 || a.groups == 0 {
        bail!("--mb, --size and --groups must be positive, --partitions at least 2");
    }
    Ok(a)
}

fn cpu_now() -> f64 {
    self_cpu_seconds().map(|(u, s)| u + s).unwrap_or(f64::NAN)
}

/// CPU seconds of the broker's threads in this process: its runtime ("strata-broker"),
/// syncer ("strata-syncer") and RocksDB's background threads.
fn broker_cpu_now() -> f64 {
    threads_cpu_seconds(|name| name.starts_with("strata-") || name.starts_with("rocksdb"))
}

fn group_config(bs: &str, group: &str, client: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bs)
        .set("group.id", group)
        .set("client.id", client)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    c
}

/// Produces `n` messages of `size` bytes round-robin over the partitions; waits for all acks.
fn fill(bs: &str, topic: &str, n: u64, size: usize, partitions: i32) -> Result<()> {
    let mut cfg = producer_config(bs);
    cfg.set("queue.buffering.max.kbytes", "262144")
        .set("batch.size", "1000000");
    let producer = recording_producer(&cfg)?;
    let value = strata_tests::noise(7, size);
    let start = Instant::now();
    for i in 0..n {
        let rec = BaseRecord::with_opaque_to(topic, Box::new((i, Instant::now())))
            .partition((i % partitions as u64) as i32)
            .payload(&value[..]);
        send(&producer, rec)?;
    }
    wait_reports(&producer, n, Duration::from_secs(900))?;
    let failed = producer.context().failed();
    if failed > 0 {
        bail!("{failed} of {n} messages were not acknowledged");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  produced {n} x {size} B = {:.1} MB in {secs:.2} s ({:.1} MB/s)",
        n as f64 * size as f64 / 1e6,
        n as f64 * size as f64 / 1e6 / secs
    );
    Ok(())
}

/// One group member reading the whole topic: (time to first record, time to last record,
/// value bytes), measured from `start`.
fn read_all(
    bs: &str,
    topic: &str,
    group: &str,
    n: u64,
    start_gate: &Barrier,
) -> Result<(Duration, Duration, u64)> {
    let consumer: BaseConsumer = group_config(bs, group, group).create()?;
    start_gate.wait();
    let start = Instant::now();
    consumer.subscribe(&[topic])?;
    let (mut count, mut bytes, mut first) = (0u64, 0u64, None);
    while count < n {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(|| start.elapsed());
                count += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("{group}: {e}"),
            None if start.elapsed() > Duration::from_secs(900) => {
                bail!("{group}: only {count} of {n} in 15 min")
            }
            None => {}
        }
    }
    let done = start.elapsed();
    Ok((first.unwrap_or(done), done, bytes))
}

/// Reads the topic with `groups` groups at once and prints the result. Returns the
/// aggregate steady-state rate in MB/s: value bytes over the time from the first record any
/// group received to the last record of the slowest group (joining the group, ~100 ms of
/// initial rebalance delay plus a JoinGroup/SyncGroup round, is reported separately).
fn fan_out(
    broker: &InProcessBroker,
    topic: &str,
    label: &str,
    groups: usize,
    n: u64,
    meanwhile: impl FnOnce() -> Result<()>,
) -> Result<f64> {
    let bs = &broker.bootstrap();
    let cache0 = broker.read_cache_stats();
    let gate = Arc::new(Barrier::new(groups));
    let cpu0 = cpu_now();
    let broker_cpu0 = broker_cpu_now();
    let wall = Instant::now();
    let handles: Vec<_> = (0..groups)
        .map(|g| {
            let (bs, topic, gate) = (bs.to_string(), topic.to_string(), gate.clone());
            let group = format!("{label}-{g}");
            std::thread::spawn(move || read_all(&bs, &topic, &group, n, &gate))
        })
        .collect();
    meanwhile()?;
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().map_err(|_| anyhow!("reader panicked"))??);
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu = cpu_now() - cpu0;
    let broker_cpu = broker_cpu_now() - broker_cpu0;
    let bytes: u64 = results.iter().map(|r| r.2).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let first_min = results.iter().map(|r| r.0).min().unwrap_or_default();
    let first_max = results.iter().map(|r| r.0).max().unwrap_or_default();
    let last = results.iter().map(|r| r.1).max().unwrap_or_default();
    let steady = (last - first_min).as_secs_f64();
    let mbps = bytes as f64 / 1e6 / steady;
    let with_join = bytes as f64 / 1e6 / last.as_secs_f64();
    println!(
        "  {groups} group(s): {:.1} MB in {:.0} ms from first to last record = {mbps:.1} MB/s aggregate \
         ({:.1} MB/s per group); {with_join:.1} MB/s counting from subscribe",
        bytes as f64 / 1e6,
        steady * 1e3,
        mbps / groups as f64,
    );
    println!(
        "    subscribe -> first record {:.0}..{:.0} ms; CPU {cpu:.2} s over {wall:.2} s wall ({:.2} of {} cores)",
        ms(first_min),
        ms(first_max),
        cpu / wall,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "    broker threads: {broker_cpu:.2} CPU s = {:.2} CPU s per GB delivered",
        broker_cpu / (bytes as f64 / 1e9)
    );
    let cache = broker.read_cache_stats();
    let (hit, miss) = (
        cache.hit_bytes - cache0.hit_bytes,
        cache.miss_bytes - cache0.miss_bytes,
    );
    if hit + miss > 0 {
        println!(
            "    broker read cache: {:.1} MB served from memory, {:.1} MB read from RocksDB ({:.0}% hits)",
            hit as f64 / 1e6,
            miss as f64 / 1e6,
            100.0 * hit as f64 / (hit + miss) as f64
        );
    }
    Ok(mbps)
}

mod failover;

use failover::{child_consumer, failover_once, trickle};

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("child-consumer") {
        argv.next();
        return child_consumer(argv);
    }
    let a = parse_args(argv)?;
    let n = (a.mb * 1_000_000).div_ceil(a.size as u64);
    println!(
        "fanout-bench: {n} messages x {} B ({} MB) in {} partitions; {} groups of one consumer; \
         failover with session.timeout.ms={} heartbeat.interval.ms={}; {} cores",
        a.size,
        a.mb,
        a.partitions,
        a.groups,
        a.session_ms,
        a.heartbeat_ms,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let broker = InProcessBroker::start_temp(|c| {
        c.group_initial_rebalance_delay_ms = 100;
        if let Some(mb) = a.cache_mb {
            c.fetch_cache_mb = mb;
        }
    })?;
    let bs = broker.bootstrap();
    let topic = "fanout";
    create_topic(&bs, topic, a.partitions)?;
    fill(&bs, topic, n, a.size, a.partitions)?;

    // The first read warms the broker's caches; the one-group baseline is the second, so
    // that it is compared with the fan-out under the same conditions.
    println!("consume, one group alone (first read, cold):");
    fan_out(&broker, topic, "cold", 1, n, || Ok(()))?;
    println!("consume, one group alone (warm):");
    let solo = fan_out(&broker, topic, "solo", 1, n, || Ok(()))?;
    println!("consume, {} groups at once:", a.groups);
    let many = fan_out(&broker, topic, "fan", a.groups, n, || Ok(()))?;
    println!(
        "  => aggregate {many:.1} MB/s with {} groups vs {solo:.1} MB/s alone: {:.2}x (ideal {}x; broker and consumers share the CPU)",
        a.groups,
        many / solo,
        a.groups
    );
    // The common live case: the groups are caught up and read what is being produced.
    println!(
        "live tail: {} groups subscribed to an empty topic while it is filled at full speed:",
        a.groups
    );
    let tail = "fanout-tail";
    create_topic(&bs, tail, a.partitions)?;
    fan_out(&broker, tail, "tail", a.groups, n, || {
        // Let the groups join (100 ms initial delay, one rebalance) before producing.
        std::thread::sleep(Duration::from_secs(2));
        fill(&bs, tail, n, a.size, a.partitions)
    })?;

    println!("failover: 2-member group, one member SIGKILLed (no LeaveGroup):");
    let ftopic = "failover";
    create_topic(&bs, ftopic, a.partitions)?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = trickle(&bs, ftopic, a.partitions, stop.clone())?;
    let mut runs = Vec::new();
    for run in 0..a.failovers {
        let f = failover_once(&bs, ftopic, run, &a)?;
        println!(
            "  run {}: survivor assigned the dead member's partitions {:.3} s after the kill, consuming all of them {:.3} s after",
            run + 1,
            f.assigned.as_secs_f64(),
            f.consumed.as_secs_f64()
        );
        runs.push(f);
    }
    stop.store(true, Ordering::SeqCst);
    producer
        .join()
        .map_err(|_| anyhow!("producer panicked"))??;
    if !runs.is_empty() {
        let mut c: Vec<f64> = runs.iter().map(|f| f.consumed.as_secs_f64()).collect();
        c.sort_by(f64::total_cmp);
        println!(
            "  => crash to consumption: min {:.2} s, median {:.2} s, max {:.2} s (session timeout {:.1} s)",
            c[0],
            c[c.len() / 2],
            c[c.len() - 1],
            a.session_ms as f64 / 1000.0
        );
    }
    broker.shutdown()?;
    let (rss, peak) = self_rss_kib().unwrap_or((0, 0));
    let (user, sys) = self_cpu_seconds().unwrap_or((0.0, 0.0));
    println!(
        "process: RSS {:.1} MiB (peak {:.1} MiB), CPU user {user:.2} s + sys {sys:.2} s",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let a = parse_args(["--mb", "8", "--groups", "3"].iter().map(|s| s.to_string())).unwrap();
        assert_eq!(
            (a.mb, a.groups, a.partitions, a.session_ms),
            (8, 3, 4, 6000)
        );
        assert_eq!(parse_args(std::iter::empty()).unwrap().mb, 256);
        assert!(parse_args(["--bogus"].iter().map(|s| s.to_string())).is_err());
        assert!(parse_args(["--partitions", "1"].iter().map(|s| s.to_string())).is_err());
    }
}
