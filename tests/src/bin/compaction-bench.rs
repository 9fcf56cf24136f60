//! What log compaction costs and saves.
//!
//! 1. Storage: `--records` records (`--value-bytes` each, `--batch` per batch) over `--keys`
//!    keys into one compacted partition (fsync on), then one cleaning pass at full speed:
//!    the cleaner's throughput (MB of log cleaned per second, and MB read plus written per
//!    second), and the partition's log bytes and RocksDB's live data before and after.
//! 2. Broker: for `--seconds`, a producer updates `--keys` keys of a compacted changelog
//!    at `--updates-mbps` while another produces to a delete-policy topic at a steady
//!    `--rate-mbps` (1 KiB records, acks=all, linger 0) and measures its latency; once with
//!    the cleaner off, once on (the cleaner's impact on concurrent produce p50/p99), with
//!    the changelog's `min.cleanable.dirty.ratio` at `--dirty-ratio` and the cleaner's I/O
//!    capped at `--io-mbps` (0: no cap).
//!
//! ```text
//! cargo run -p strata-tests --bin compaction-bench -- --records 1000000 --keys 10000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use strata_storage::batch::BatchBuilder;
use strata_storage::clean::{CleanOptions, NoCodec};
use strata_storage::{Store, StoreConfig};
use strata_tests::{producer_config, scrape, try_create_topic_with, InProcessBroker};

struct Args {
    records: u64,
    keys: u64,
    value_bytes: usize,
    batch: u64,
    rate_mbps: f64,
    updates_mbps: f64,
    seconds: u64,
    dirty_ratio: String,
    io_mbps: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        records: 1_000_000,
        keys: 10_000,
        value_bytes: 100,
        batch: 100,
        rate_mbps: 10.0,
        updates_mbps: 10.0,
        seconds: 20,
        dirty_ratio: "0.5".into(),
        io_mbps: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--records" => a.records = v.parse()?,
            "--keys" => a.keys = v.parse()?,
            "--value-bytes" => a.value_bytes = v.parse()?,
            "--batch" => a.batch = v.parse()?,
            "--rate-mbps" => a.rate_mbps = v.parse()?,
            "--updates-mbps" => a.updates_mbps = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--dirty-ratio" => a.dirty_ratio = v,
            "--io-mbps" => a.io_mbps = v.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.records == 0 || a.keys == 0 || a.batch == 0 {
        bail!("--records, --keys and --batch must be positive");
    }
    Ok(a)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Key of record `i`: the keys are visited in a scattered order, every key once per round.
fn key(a: &Args, i: u64) -> String {
    format!("key-{:08}", (i * 7919) % a.keys)
}

/// Flushes the memtables, then waits until RocksDB has no compaction running or pending
/// (so its live data on disk settles).
fn settle(s: &Store) {
    if let Err(e) = s.flush_memtables() {
        eprintln!("flush: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let e = s.engine_stats();
        if e.running_compactions == 0 && e.pending_compaction_bytes == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_bytes(s: &Store) -> Result<u64> {
    Ok(s.segments("bench", 0)?.iter().map(|x| x.bytes).sum())
}

fn storage_part(a: &Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::new(dir.path()))?;
    let configs = [("cleanup.policy", "compact"), ("segment.bytes", "16777216")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    store.create_topic("bench", 1, configs)?;
    let value = strata_tests::noise(7, a.value_bytes);
    let started = Instant::now();
    let mut i = 0;
    while i < a.records {
        let mut b = BatchBuilder::new(now_ms());
        for _ in 0..a.batch.min(a.records - i) {
            b = b.record(now_ms(), Some(key(a, i).as_bytes()), &value);
            i += 1;
        }
        store.append("bench", 0, b.build())?;
    }
    // Seal the last segment: what the cleaner may clean ends at the active segment.
    // The records in files of their own, as after a while of producing (RocksDB frees a blob
    // file once nothing in it is live: the filler below must not share theirs).
    store.flush_memtables()?;
    // The segment that follows needs a roll: fill the active one past segment.bytes.
    let filler = vec![0u8; 600 << 10];
    let mut last = store.append(
        "bench",
        0,
        BatchBuilder::new(now_ms())
            .record(now_ms(), Some(b"seal"), b"x")
            .build(),
    )?;
    while store.segments("bench", 0)?.len() < 2
        || store
            .segments("bench", 0)?
            .last()
            .is_some_and(|s| s.base_offset <= i as i64)
    {
        last = store.append(
            "bench",
            0,
            BatchBuilder::new(now_ms())
                .record(now_ms(), Some(b"seal"), &filler)
                .build(),
        )?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(store.wait_for_high_watermark(
        "bench",
        0,
        last.last_offset,
        Duration::from_secs(60),
    ))?;
    println!(
        "storage: {} records over {} keys ({} B values, {} per batch) written in {:.1} s",
        a.records,
        a.keys,
        a.value_bytes,
        a.batch,
        started.elapsed().as_secs_f64()
    );
    settle(&store);
    let before = (log_bytes(&store)?, store.engine_stats());
    let opts = CleanOptions {
        now_ms: now_ms(),
        min_compaction_lag_ms: 0,
        delete_retention_ms: 86_400_000,
        segment_bytes: 1 << 20,
        key_map_bytes: 32 << 20,
    };
    let c = store.cleanable("bench", 0, now_ms(), 0)?;
    let t = Instant::now();
    let mut passes = 0;
    let mut read = 0;
    let mut written_segments_bytes = 0;
    let mut removed = 0;
    loop {
        let r = store.clean("bench", 0, &opts, &NoCodec, &mut |_| true)?;
        passes += 1;
        read += r.bytes_read;
        written_segments_bytes += r.bytes_after;
        removed += r.records_superseded;
        if r.complete {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    settle(&store);
    let after = (log_bytes(&store)?, store.engine_stats());
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "  cleaning: {passes} pass(es), {:.1} MB of log ({:.1} dirty) in {secs:.2} s = {:.1} MB/s cleaned; {:.1} MB read + {:.1} MB written = {:.1} MB/s of I/O; {removed} records removed",
        mb(c.clean_bytes + c.dirty_bytes),
        mb(c.dirty_bytes),
        mb(c.clean_bytes + c.dirty_bytes) / secs,
        mb(read),
        mb(written_segments_bytes),
        mb(read + written_segments_bytes) / secs,
    );
    println!(
        "  log bytes: {:.1} MB -> {:.2} MB; RocksDB live data (SST + blob files): {:.1} MB -> {:.2} MB (memtables {:.1} -> {:.1} MB)",
        mb(before.0),
        mb(after.0),
        mb(before.1.live_data_bytes),
        mb(after.1.live_data_bytes),
        mb(before.1.memtable_bytes),
        mb(after.1.memtable_bytes)
    );
    store.close();
    Ok(())
}

/// Delivery context: (send time, latency) per message, both in µs since `start`.
struct Lat {
    start: Instant,
    samples: Mutex<Vec<(u64, u32)>>,
}

impl ClientContext for Lat {}

impl ProducerContext for Lat {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        if result.is_ok() {
            let now = self.start.elapsed().as_micros() as u64;
            let lat = now.saturating_sub(sent_us as u64).min(u64::from(u32::MAX)) as u32;
            if let Ok(mut s) = self.samples.lock() {
                s.push((sent_us as u64, lat));
            }
        }
    }
}

fn percentiles(mut l: Vec<u32>) -> String {
    if l.is_empty() {
        return "no samples".into();
    }
    l.sort_unstable();
    let p = |q: f64| f64::from(l[((l.len() - 1) as f64 * q).round() as usize]) / 1000.0;
    format!(
        "{} msgs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    )
}

/// Sends `make(n)` records to `topic` at `mbps` MB/s of `size`-byte records until `stop`.
fn paced<C: ProducerContext<DeliveryOpaque = usize> + 'static>(
    producer: Arc<ThreadedProducer<C>>,
    start: Instant,
    mbps: f64,
    size: usize,
    stop: Arc<AtomicBool>,
    make: impl Fn(u64) -> Option<String> + Send + 'static,
    topic: &'static str,
) -> std::thread::JoinHandle<Result<u64>> {
    std::thread::spawn(move || -> Result<u64> {
        let value = strata_tests::noise(5, size);
        let per_us = mbps / size as f64;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let due = (n as f64 / per_us) as u128;
            let now = start.elapsed().as_micros();
            if now < due {
                std::thread::sleep(Duration::from_micros((due - now).min(1000) as u64));
                continue;
            }
            let key = make(n);
            let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, now as usize)
                .partition(0)
                .payload(&value[..]);
            if let Some(k) = key.as_ref() {
                rec = rec.key(k.as_bytes());
            }
            strata_tests::send(&*producer, rec)?;
            n += 1;
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(n)
    })
}

/// No-op delivery context for the update stream.
struct Quiet;
impl ClientContext for Quiet {}
impl ProducerContext for Quiet {
    type DeliveryOpaque = usize;
    fn delivery(&self, _: &DeliveryResult<'_>, _: usize) {}
}

/// One broker run: updates to a compacted changelog at `--updates-mbps` and the measured
/// load at `--rate-mbps`, for `--seconds`, with the cleaner on or off.
fn broker_run(a: &Args, cleaner: bool) -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| {
        c.log_cleaner_enable = cleaner;
        c.log_cleaner_backoff_ms = 100;
        c.log_cleaner_io_max_bytes_per_second = a.io_mbps * 1_000_000;
    })?;
    let bs = broker.bootstrap();
    let admin = broker.admin_addr().context("admin address")?;
    for (t, configs) in [
        ("load", vec![]),
        (
            "changelog",
            vec![
                ("cleanup.policy", "compact"),
                ("segment.bytes", "1048576"),
                ("min.cleanable.dirty.ratio", a.dirty_ratio.as_str()),
            ],
        ),
    ] {
        try_create_topic_with(&bs, t, 1, &configs)?.map_err(|e| anyhow::anyhow!("{t}: {e:?}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let updates: ThreadedProducer<Quiet> = producer_config(&bs)
        .set("linger.ms", "5")
        .create_with_context(Quiet)?;
    let load: ThreadedProducer<Lat> = producer_config(&bs)
        .set("linger.ms", "0")
        .create_with_context(Lat {
            start,
            samples: Mutex::new(Vec::new()),
        })?;
    let load = Arc::new(load);
    let keys = a.keys;
    let upd = paced(
        Arc::new(updates),
        start,
        a.updates_mbps,
        a.value_bytes,
        stop.clone(),
        move |n| Some(format!("key-{:08}", (n * 7919) % keys)),
        "changelog",
    );
    let ld = paced(
        load.clone(),
        start,
        a.rate_mbps,
        1024,
        stop.clone(),
        |_| None,
        "load",
    );
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::SeqCst);
    let updates_sent = upd
        .join()
        .map_err(|_| anyhow::anyhow!("update thread panicked"))??;
    ld.join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let samples = std::mem::take(
        &mut *load
            .context()
            .samples
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    // The first 2 s are warm-up (connections, metadata).
    let lat: Vec<u32> = samples
        .iter()
        .filter(|(t, _)| *t >= 2_000_000)
        .map(|(_, l)| *l)
        .collect();
    let m = scrape::scrape(admin)?;
    let read = scrape::value(&m, "strata_cleaner_bytes_read_total", &[]);
    let passes = scrape::value(&m, "strata_cleaner_passes_total", &[]);
    let log: f64 = broker_log_bytes(&m);
    println!(
        "  cleaner {}: {updates_sent} updates over {} keys at {} MB/s; load at {} MB/s (acks=all, linger 0): {}; cleaner {} passes, {:.0} MB read; changelog now {:.1} MB",
        if cleaner { "on " } else { "off" },
        a.keys,
        a.updates_mbps,
        a.rate_mbps,
        percentiles(lat),
        passes as u64,
        read.max(0.0) / 1e6,
        log / 1e6,
    );
    drop(load);
    broker.shutdown()
}

/// The changelog's local log size, from the broker's gauge.
fn broker_log_bytes(m: &scrape::Scrape) -> f64 {
    scrape::value(m, "strata_topic_log_bytes", &[("topic", "changelog")])
}

fn broker_part(a: &Args) -> Result<()> {
    println!(
        "broker: {} s per run, the cleaner off then on (min.cleanable.dirty.ratio {}, I/O cap {} MB/s, 0: none)",
        a.seconds, a.dirty_ratio, a.io_mbps
    );
    broker_run(a, false)?;
    broker_run(a, true)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    storage_part(&a)?;
    broker_part(&a)
}
