//! Tiered-read benchmark: a broker process archiving to a local-directory archive, a topic
//! with `remote.storage.enable=true` filled by librdkafka, then the same archived offsets
//! read twice by a librdkafka consumer: first from local disk, then — after
//! `local.retention.ms=0` has dropped them locally — from the archive. Reports both rates
//! and the broker's RSS before and during the tiered replay.
//!
//! ```text
//! cargo run -p strata-tests --bin tiered-bench -- --mib 4096
//! ```
//!
//! Options: `--mib N` (record bytes to produce, default 1024) `--size BYTES` (record size,
//! default 1024) `--segment-mib N` (segment.bytes, default 64) `--cache-mb N`
//! (archive_read_cache_mb, default the broker's) `--chunk-kib N` (archive_read_chunk_bytes).
//! Data and archive live in a temporary directory under `$TMPDIR`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use strata_storage::archive::{Archive, PartitionRef};
use strata_tests::broker::BrokerProcess;
use strata_tests::{consumer_config, producer_config, raw, try_create_topic_with};

struct Args {
    mib: u64,
    size: usize,
    segment_mib: u64,
    cache_mb: Option<u64>,
    chunk_kib: Option<u64>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        mib: 1024,
        size: 1024,
        segment_mib: 64,
        cache_mb: None,
        chunk_kib: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mib" => a.mib = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--segment-mib" => a.segment_mib = value()?.parse()?,
            "--cache-mb" => a.cache_mb = Some(value()?.parse()?),
            "--chunk-kib" => a.chunk_kib = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "tiered-bench [--mib N] [--size BYTES] [--segment-mib N] [--cache-mb N] [--chunk-kib N]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    if a.mib == 0 || a.size == 0 || a.segment_mib == 0 {
        bail!("--mib, --size and --segment-mib must be positive");
    }
    Ok(a)
}

fn produce(bs: &str, topic: &str, messages: u64, size: usize) -> Result<f64> {
    let mut cfg = producer_config(bs);
    cfg.set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "262144");
    let producer: ThreadedProducer<DefaultProducerContext> = cfg.create()?;
    let value = strata_tests::noise(7, size);
    let start = Instant::now();
    for _ in 0..messages {
        let rec = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(&value[..]);
        strata_tests::send(&producer, rec)?;
    }
    producer.flush(Duration::from_secs(1200))?;
    Ok(start.elapsed().as_secs_f64())
}

/// Reads offsets `0..end` of partition 0; returns (seconds, payload bytes).
fn consume(bs: &str, topic: &str, end: i64) -> Result<(f64, u64)> {
    let mut cfg = consumer_config(bs);
    cfg.set("max.partition.fetch.bytes", "10485760")
        .set("fetch.max.bytes", "52428800");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))?;
    consumer.assign(&tpl)?;
    let start = Instant::now();
    let (mut next, mut bytes) = (0i64, 0u64);
    while next < end {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => {
                if m.offset() != next {
                    bail!("read offset {} where {next} was expected", m.offset());
                }
                next += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume: {e}"),
            None if start.elapsed() > Duration::from_secs(1200) => {
                bail!("consume: only {next} of {end} records in 20 min")
            }
            None => {}
        }
    }
    Ok((start.elapsed().as_secs_f64(), bytes))
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let messages = a.mib * (1 << 20) / a.size as u64;
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().join("archive").display());
    let segment = (a.segment_mib << 20).to_string();
    let mut env = vec![
        ("STRATA_FSYNC", "false".to_string()),
        ("STRATA_SEGMENT_BYTES", segment),
        ("STRATA_ARCHIVE_URL", url.clone()),
        ("STRATA_ARCHIVE_INTERVAL_MS", "200".to_string()),
        ("STRATA_RETENTION_CHECK_INTERVAL_MS", "500".to_string()),
    ];
    if let Some(mb) = a.cache_mb {
        env.push(("STRATA_ARCHIVE_READ_CACHE_MB", mb.to_string()));
    }
    if let Some(kib) = a.chunk_kib {
        env.push(("STRATA_ARCHIVE_READ_CHUNK_BYTES", (kib * 1024).to_string()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &env_refs)?;
    let bs = broker.bootstrap();
    let topic = "tiered";
    let remote = [
        ("remote.storage.enable", "true"),
        ("retention.ms", "-1"),
        ("local.retention.ms", "-1"),
    ];
    try_create_topic_with(&bs, topic, 1, &remote)?
        .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    println!(
        "tiered-bench: {messages} records x {} bytes ({} MiB), segments of {} MiB",
        a.size, a.mib, a.segment_mib
    );
    let secs = produce(&bs, topic, messages, a.size)?;
    println!(
        "  produce: {:.1} MB/s",
        messages as f64 * a.size as f64 / 1e6 / secs
    );

    // Everything sealed is archived once the manifest stops growing past the last segment.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let archive = Archive::open(&url)?;
    let id = raw::topic_id(broker.addr(), topic)?;
    let p = PartitionRef {
        topic,
        topic_id: id,
        partition: 0,
    };
    let per_segment = (a.segment_mib << 20) / a.size as u64;
    let upload_start = Instant::now();
    let m = wait("the archive", Duration::from_secs(1800), || {
        let m = rt.block_on(archive.manifest(p))?;
        Ok((m.next_offset() as u64 + 2 * per_segment >= messages).then_some(m))
    })?;
    let end = m.next_offset();
    println!(
        "  archived: {} segments, offsets 0..{end}, {:.1} MiB (waited {:.1} s after produce)",
        m.segments.len(),
        m.bytes() as f64 / (1 << 20) as f64,
        upload_start.elapsed().as_secs_f64()
    );

    let (local_secs, bytes) = consume(&bs, topic, end)?;
    let local_rate = bytes as f64 / 1e6 / local_secs;
    println!("  local read:  {local_rate:.1} MB/s ({local_secs:.2} s)");

    let (code, msg) = raw::alter_topic_configs(
        broker.addr(),
        topic,
        &[
            ("remote.storage.enable", "true"),
            ("retention.ms", "-1"),
            ("local.retention.ms", "0"),
        ],
        false,
    )?;
    if code != 0 {
        bail!("AlterConfigs: {code} {msg:?}");
    }
    let local_start = wait("local retention", Duration::from_secs(600), || {
        let s = raw::list_offset(broker.addr(), topic, 0, -4)?;
        Ok((s >= end).then_some(s))
    })?;
    println!("  local log start now {local_start}: offsets 0..{end} only in the archive");

    let rss_before = broker.status_field("VmRSS").unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        let status = format!("/proc/{}/status", broker.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = std::fs::read_to_string(&status)
                    .ok()
                    .and_then(|s| strata_tests::procstat::status_field_kib(&s, "VmRSS"))
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let tiered = consume(&bs, topic, end);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (tiered_secs, tiered_bytes) = tiered?;
    if tiered_bytes != bytes {
        bail!("the tiered read returned {tiered_bytes} bytes, the local read {bytes}");
    }
    let tiered_rate = tiered_bytes as f64 / 1e6 / tiered_secs;
    println!(
        "  tiered read: {tiered_rate:.1} MB/s ({tiered_secs:.2} s) = {:.2}x local",
        tiered_rate / local_rate
    );
    println!(
        "  broker RSS: {:.1} MiB before the tiered replay, peak {:.1} MiB during it",
        rss_before as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    broker.terminate()?;
    Ok(())
}
