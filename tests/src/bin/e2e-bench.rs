//! End-to-end benchmark: a broker process (fsync on, then off, each on a fresh temporary
//! directory), a librdkafka producer with acks=all, then a librdkafka consumer and a bare
//! Fetch loop reading everything back.
//!
//! ```text
//! cargo run -p strata-tests --bin e2e-bench -- --messages 1000000 --size 1024 --partitions 1
//! cargo run -p strata-tests --bin e2e-bench -- --rate-mbps 20 --messages 200000
//! ```
//!
//! Options: `--messages N` `--size BYTES` `--partitions P` `--rate-mbps R` (steady produce
//! rate in MB/s, 10^6 bytes; default: as fast as possible) `--fsync on|off|both`
//! `--compression none|gzip|snappy|lz4|zstd` `--topic-compression CODEC` (the topic's
//! `compression.type`: `producer` by default; a codec other than the producer's makes the
//! broker recompress every batch) `--linger-ms MS` `--strata-cli [PATH]` (also
//! run `strata perf produce` / `perf consume` on another topic of the same broker, right after
//! librdkafka, and compare; PATH defaults to the `strata` binary beside this one, built by
//! `cargo build -p strata-client`).
//!
//! Produce latency is measured per message from `send()` to its delivery report (so it
//! includes `linger.ms` and, without `--rate-mbps`, time queued in librdkafka): measure
//! latency with `--linger-ms 0 --rate-mbps 20`. The broker's peak RSS and CPU seconds are
//! read from /proc for its process; client CPU is this process's. Data directories
//! are temporary directories under `$TMPDIR` (default /tmp): set it to measure another disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use strata_tests::broker::{free_port, BrokerProcess};
use strata_tests::procstat::{cpu_seconds, self_cpu_seconds};
use strata_tests::{consumer_config, producer_config, raw, try_create_topic_with};

struct Args {
    messages: u64,
    size: usize,
    partitions: i32,
    rate_mbps: Option<f64>,
    fsync: Vec<bool>,
    compression: String,
    topic_compression: String,
    linger_ms: u32,
    strata_cli: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        messages: 1_000_000,
        size: 1024,
        partitions: 1,
        rate_mbps: None,
        fsync: vec![true, false],
        compression: "none".into(),
        topic_compression: "producer".into(),
        linger_ms: 5,
        strata_cli: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => a.messages = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--partitions" => a.partitions = value()?.parse()?,
            "--rate-mbps" => a.rate_mbps = Some(value()?.parse()?),
            "--compression" => a.compression = value()?,
            "--topic-compression" => a.topic_compression = value()?,
            "--linger-ms" => a.linger_ms = value()?.parse()?,
            "--strata-cli" => {
                a.strata_cli = Some(match it.next_if(|v| !v.starts_with("--")) {
                    Some(path) => path.into(),
                    None => std::env::current_exe()?
                        .parent()
                        .context("no directory")?
                        .join("strata"),
                })
            }
            "--fsync" => {
                a.fsync = match value()?.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![true, false],
                    other => bail!("--fsync on|off|both, not {other}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "e2e-bench [--messages N] [--size BYTES] [--partitions P] [--rate-mbps R] \
                     [--fsync on|off|both] [--compression CODEC] [--topic-compression CODEC] \
                     [--linger-ms MS] [--strata-cli [PATH]]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    if a.messages == 0 || a.size == 0 || a.partitions < 1 {
        bail!("--messages, --size and --partitions must be positive");
    }
    Ok(a)
}

/// Delivery context: the opaque is the send time in ns since `start`; latencies are kept in
/// µs (4 bytes per message) so that recording them does not dominate memory.
struct Bench {
    start: Instant,
    latencies_us: Mutex<Vec<u32>>,
    acked: AtomicU64,
    failed: AtomicU64,
    last_report_ns: AtomicU64,
}

impl ClientContext for Bench {}

impl ProducerContext for Bench {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.start.elapsed().as_nanos() as u64;
        if result.is_ok() {
            let us = (now.saturating_sub(sent_ns as u64) / 1_000).min(u64::from(u32::MAX));
            if let Ok(mut l) = self.latencies_us.lock() {
                l.push(us as u32);
            }
            self.acked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.last_report_ns.fetch_max(now, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted[idx]) / 1_000.0
}

fn cpu_now() -> f64 {
    self_cpu_seconds().map(|(u, s)| u + s).unwrap_or(f64::NAN)
}

/// The benchmark's topic, with the topic compression asked for.
fn create_bench_topic(a: &Args, bs: &str, topic: &str) -> Result<()> {
    let configs = [("compression.type", a.topic_compression.as_str())];
    try_create_topic_with(bs, topic, a.partitions, &configs)?
        .map_err(|e| anyhow::anyhow!("CreateTopics {topic}: {e:?}"))
}

/// Throughput (MB/s) and client CPU seconds per MB of a run.
type Measured = (f64, f64);

fn produce(a: &Args, bs: &str, topic: &str) -> Result<Measured> {
    let mut cfg = producer_config(bs);
    cfg.set("compression.type", &a.compression)
        .set("linger.ms", a.linger_ms.to_string())
        // A 256 MiB client-side queue: enough to keep the broker busy, small enough that the
        // process RSS mostly reflects the broker rather than librdkafka's backlog.
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144");
    let start = Instant::now();
    let producer: ThreadedProducer<Bench> = cfg.create_with_context(Bench {
        start,
        latencies_us: Mutex::new(Vec::with_capacity(a.messages as usize)),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_report_ns: AtomicU64::new(0),
    })?;
    let value = strata_tests::noise(1, a.size);
    let cpu0 = cpu_now();
    let bytes_per_ns = a.rate_mbps.map(|r| r * 1e6 / 1e9);
    for i in 0..a.messages {
        if let Some(rate) = bytes_per_ns {
            let due_ns = (i as f64 * a.size as f64 / rate) as u64;
            loop {
                let now = start.elapsed().as_nanos() as u64;
                if now >= due_ns {
                    break;
                }
                std::thread::sleep(Duration::from_nanos((due_ns - now).min(1_000_000)));
            }
        }
        let sent = start.elapsed().as_nanos() as usize;
        let p = (i % a.partitions as u64) as i32;
        let rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, sent)
            .partition(p)
            .payload(&value[..]);
        strata_tests::send(&producer, rec)?;
    }
    producer.flush(Duration::from_secs(600))?;
    let ctx = producer.context();
    while ctx.acked.load(Ordering::SeqCst) + ctx.failed.load(Ordering::SeqCst) < a.messages {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = Duration::from_nanos(ctx.last_report_ns.load(Ordering::SeqCst));
    let cpu = cpu_now() - cpu0;
    let failed = ctx.failed.load(Ordering::SeqCst);
    let mut lat = std::mem::take(
        &mut *ctx
            .latencies_us
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let mb = a.messages as f64 * a.size as f64 / 1e6;
    println!(
        "  produce: {} msgs in {secs:.2} s = {:.1} MB/s, {:.0} msgs/s, {failed} failed, CPU {cpu:.2} s",
        a.messages,
        mb / secs,
        a.messages as f64 / secs
    );
    println!(
        "  produce latency (send -> ack, ms): p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        percentile(&lat, 1.0)
    );
    if failed > 0 {
        bail!("{failed} messages were not acknowledged");
    }
    Ok((mb / secs, cpu / mb))
}

fn consume(a: &Args, bs: &str, topic: &str) -> Result<Measured> {
    let mut cfg = consumer_config(bs);
    cfg.set("max.partition.fetch.bytes", "10485760")
        .set("fetch.max.bytes", "52428800");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    let cpu0 = cpu_now();
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    while count < a.messages {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => {
                count += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume: {e}"),
            None if start.elapsed() > Duration::from_secs(600) => {
                bail!("consume: only {count} of {} messages in 10 min", a.messages)
            }
            None => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_now() - cpu0;
    println!(
        "  consume: {count} msgs in {secs:.2} s = {:.1} MB/s, {:.0} msgs/s, CPU {cpu:.2} s",
        bytes as f64 / 1e6 / secs,
        count as f64 / secs,
    );
    Ok((bytes as f64 / 1e6 / secs, cpu / (bytes as f64 / 1e6)))
}

/// CPU seconds (user + system) of this process's waited-for children so far.
fn children_cpu() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(f64::NAN)
}

/// Runs `strata ARGS --json` to completion; returns its JSON answer and CPU seconds.
fn run_strata(cli: &std::path::Path, args: &[String]) -> Result<(serde_json::Value, f64)> {
    let cpu0 = children_cpu();
    let out = std::process::Command::new(cli)
        .args(args)
        .output()
        .with_context(|| {
            format!(
                "run {} (build it: cargo build -p strata-client)",
                cli.display()
            )
        })?;
    let cpu = children_cpu() - cpu0;
    if !out.status.success() {
        bail!(
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        serde_json::from_slice(&out.stdout).context("strata --json output")?,
        cpu,
    ))
}

/// The `strata` CLI's perf tests on the same broker, with the same records and settings as
/// librdkafka's run (acks=all, no idempotence, same linger and compression).
fn strata_perf(
    a: &Args,
    cli: &std::path::Path,
    bs: &str,
    topic: &str,
    lib: Measured,
    lib_consume: Measured,
) -> Result<()> {
    create_bench_topic(a, bs, topic)?;
    let mut args: Vec<String> = [
        "-b",
        bs,
        "perf",
        "produce",
        topic,
        "--json",
        "-q",
        "--no-idempotence",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-n".into(),
        a.messages.to_string(),
        "-s".into(),
        a.size.to_string(),
        "--linger-ms".into(),
        a.linger_ms.to_string(),
        "--compression".into(),
        a.compression.clone(),
    ]);
    if let Some(r) = a.rate_mbps {
        args.extend(["--rate".into(), (r * 1e6 / a.size as f64).to_string()]);
    }
    let (p, cpu) = run_strata(cli, &args)?;
    let mb = a.messages as f64 * a.size as f64 / 1e6;
    let mbps = p["mb_per_sec"].as_f64().unwrap_or(0.0);
    let l = &p["latency_ms"];
    println!(
        "  strata perf produce: {} msgs in {} s = {mbps:.1} MB/s ({:.2}x librdkafka), client CPU {:.2} s/GB (librdkafka {:.2}); latency ms p50 {} p99 {} p99.9 {} max {}",
        p["records"], p["seconds"], mbps / lib.0, cpu / mb * 1e3, lib.1 * 1e3, l["p50"], l["p99"], l["p999"], l["max"]
    );
    let args: Vec<String> = [
        "-b",
        bs,
        "perf",
        "consume",
        topic,
        "--json",
        "-q",
        "--partition-max-bytes",
        "10485760",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["-n".to_string(), a.messages.to_string()])
    .collect();
    let (c, cpu) = run_strata(cli, &args)?;
    let mbps = c["mb_per_sec"].as_f64().unwrap_or(0.0);
    println!(
        "  strata perf consume: {} msgs in {} s = {mbps:.1} MB/s ({:.2}x librdkafka), client CPU {:.2} s/GB (librdkafka {:.2})",
        c["records"], c["seconds"], mbps / lib_consume.0, cpu / mb * 1e3, lib_consume.1 * 1e3
    );
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    println!(
        "e2e-bench: {} messages x {} bytes, {} partition(s), acks=all, compression {} (topic: {}), linger {} ms, rate {}",
        a.messages,
        a.size,
        a.partitions,
        a.compression,
        a.topic_compression,
        a.linger_ms,
        a.rate_mbps
            .map(|r| format!("{r} MB/s"))
            .unwrap_or_else(|| "unlimited".into())
    );
    if a.rate_mbps.is_none() && a.fsync.contains(&true) {
        storage_baseline(&a)?;
    }
    for &fsync in &a.fsync {
        println!("fsync {}:", if fsync { "on" } else { "off" });
        // The broker runs as its own process so its memory and CPU are measured apart from
        // the clients'.
        let dir = tempfile::tempdir()?;
        let fsync_env = if fsync { "true" } else { "false" };
        let broker = BrokerProcess::spawn(
            &dir.path().join("data"),
            free_port()?,
            &[("STRATA_FSYNC", fsync_env)],
        )?;
        let bs = broker.bootstrap();
        let pid = broker.pid().to_string();
        let cpu0 = cpu_seconds(&pid).map_or(0.0, |(u, s)| u + s);
        let topic = format!("bench-{}", if fsync { "fsync" } else { "nofsync" });
        create_bench_topic(&a, &bs, &topic)?;
        let lib = produce(&a, &bs, &topic)?;
        let lib_consume = consume(&a, &bs, &topic)?;
        consume_raw(&a, broker.addr(), &topic)?;
        let cpu = cpu_seconds(&pid).map_or(0.0, |(u, s)| u + s) - cpu0;
        let peak = broker.peak_rss_kib().unwrap_or(0);
        println!(
            "  broker: peak RSS {:.1} MiB, CPU {cpu:.2} s",
            peak as f64 / 1024.0
        );
        let mut broker = broker;
        broker.terminate()?;
        if let Some(cli) = &a.strata_cli {
            // A fresh broker with the same settings, so both clients meet the same state.
            let dir = tempfile::tempdir()?;
            let mut broker = BrokerProcess::spawn(
                &dir.path().join("data"),
                free_port()?,
                &[("STRATA_FSYNC", fsync_env)],
            )?;
            strata_perf(&a, cli, &broker.bootstrap(), &topic, lib, lib_consume)?;
            broker.terminate()?;
        }
    }
    Ok(())
}

/// The storage engine alone in this same run: the same bytes appended to one partition as
/// ~64 KiB batches of `--size` records with fsync on, up to 16 MiB awaiting durability (the
/// storage benchmark's 1-partition durable case), so the broker's durable produce rate can
/// be compared with what its storage can do on this machine right now.
fn storage_baseline(a: &Args) -> Result<()> {
    use strata_storage::batch::BatchBuilder;
    use strata_storage::{Store, StoreConfig};
    /// Bytes in flight before the appender waits for the syncer, as in the storage bench.
    const IN_FLIGHT: u64 = 16 << 20;
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::new(dir.path()))?;
    store.create_topic("baseline", 1, Default::default())?;
    let per_batch = (65_536 / a.size.max(1)).max(1) as u64;
    let value = strata_tests::noise(1, a.size);
    let mut b = BatchBuilder::new(0);
    for _ in 0..per_batch {
        b = b.record(0, None, &value);
    }
    let batch = bytes::Bytes::from(b.build());
    let batches = a.messages.div_ceil(per_batch);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut pending, mut bytes) = (std::collections::VecDeque::new(), 0u64);
    let start = Instant::now();
    for _ in 0..batches {
        let o = store.append("baseline", 0, batch.clone())?;
        pending.push_back(o.last_offset);
        bytes += batch.len() as u64;
        while pending.len() as u64 * batch.len() as u64 > IN_FLIGHT {
            let last = pending.pop_front().unwrap_or(0);
            rt.block_on(store.wait_for_high_watermark(
                "baseline",
                0,
                last,
                Duration::from_secs(60),
            ))?;
        }
    }
    if let Some(last) = pending.back() {
        rt.block_on(store.wait_for_high_watermark("baseline", 0, *last, Duration::from_secs(60)))?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "storage alone (same run, 1 partition, fsync on): {:.1} MB/s durable",
        bytes as f64 / 1e6 / secs
    );
    store.close();
    Ok(())
}

/// Consumes with bare Fetch requests (10 MiB per partition, 50 MiB per response) and counts
/// records from the batch headers without decoding them: the broker's fetch path with the
/// least client work, as librdkafka's C performance tool measures it.
fn consume_raw(a: &Args, addr: std::net::SocketAddr, topic: &str) -> Result<()> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut stream = raw::connect(addr)?;
    let mut next: Vec<i64> = vec![0; a.partitions as usize];
    let (mut count, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut correlation = 0;
    while count < a.messages {
        let partitions = (0..a.partitions)
            .map(|p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(next[p as usize])
                    .with_partition_max_bytes(10 << 20)
            })
            .collect();
        let req = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)]);
        correlation += 1;
        let resp = raw::call(&mut stream, 12, correlation, &req)?;
        for t in &resp.responses {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "fetch error {} on partition {}",
                        p.error_code,
                        p.partition_index
                    );
                }
                let records = p.records.clone().unwrap_or_default();
                let mut rest = &records[..];
                while rest.len() >= 61 {
                    let h = strata_storage::batch::read_header(rest)?;
                    count += h.record_count as u64;
                    next[p.partition_index as usize] = h.last_offset() + 1;
                    rest = &rest[h.size..];
                }
                bytes += records.len() as u64;
            }
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "raw consume: only {count} of {} messages in 10 min",
                a.messages
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  consume (bare fetch): {count} msgs in {secs:.2} s = {:.1} MB/s of batches, {:.0} msgs/s",
        bytes as f64 / 1e6 / secs,
        count as f64 / secs
    );
    Ok(())
}
