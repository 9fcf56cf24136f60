//! What log compaction costs and saves.
//!
//! 1. Storage: `--records` records (`--value-bytes` each, `--batch` per batch) over `--keys`
//!    keys into one compacted partition (fsync on), then one cleaning pass at full speed:
//!    the cleaner's throughput (MB of log cleaned per second, and MB read plus written per
//!    second), and the partition's log bytes and RocksDB's live data before and after.
//! 2. Broker: a librdkafka producer at a steady `--rate-mbps` with acks=all and linger 0 to
//!    a delete-policy topic; produce latency (p50/p99) with the cleaner idle, then while it
//!    compacts a dirty topic of the same size as in part 1 (switched to `compact` with
//!    AlterConfigs once filled).
//!
//! ```text
//! cargo run --release -p strata-tests --bin compaction-bench -- --records 1000000 --keys 10000
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
use strata_tests::{producer_config, raw, scrape, try_create_topic_with, InProcessBroker};

struct Args {
    records: u64,
    keys: u64,
    value_bytes: usize,
    batch: u64,
    rate_mbps: f64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        records: 1_000_000,
        keys: 10_000,
        value_bytes: 100,
        batch: 100,
        rate_mbps: 10.0,
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
    let filler = vec![0u8; 900 << 10];
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
        segment_bytes: 16 << 20,
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

fn broker_part(a: &Args) -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.log_cleaner_backoff_ms = 100)?;
    let bs = broker.bootstrap();
    let admin = broker.admin_addr().context("admin address")?;
    for (t, configs) in [
        ("load", vec![]),
        ("dirty", vec![("segment.bytes", "1048576")]),
    ] {
        try_create_topic_with(&bs, t, 1, &configs)?.map_err(|e| anyhow::anyhow!("{t}: {e:?}"))?;
    }
    // Fill the dirty topic as fast as librdkafka goes (delete policy: nothing is cleaned).
    let fill: rdkafka::producer::BaseProducer = producer_config(&bs)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "500000")
        .create()?;
    let value = strata_tests::noise(3, a.value_bytes);
    for i in 0..a.records {
        let k = key(a, i);
        let mut r = BaseRecord::to("dirty").partition(0).key(&k).payload(&value);
        loop {
            match fill.send::<String, Vec<u8>>(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    fill.poll(Duration::from_millis(5));
                    r = back;
                }
            }
        }
    }
    fill.send(
        BaseRecord::<str, [u8]>::to("dirty")
            .partition(0)
            .key("seal")
            .payload(&[0u8; 100][..]),
    )
    .map_err(|(e, _)| e)?;
    fill.flush(Duration::from_secs(300))?;
    println!("broker: dirty topic filled with {} records", a.records);

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let producer: ThreadedProducer<Lat> = producer_config(&bs)
        .set("linger.ms", "0")
        .create_with_context(Lat {
            start,
            samples: Mutex::new(Vec::new()),
        })?;
    let producer = Arc::new(producer);
    let load = {
        let (stop, producer) = (stop.clone(), producer.clone());
        let size = 1024usize;
        let per_us = a.rate_mbps * 1e6 / 1e6 / size as f64;
        std::thread::spawn(move || -> Result<()> {
            let value = strata_tests::noise(5, size);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let due = (n as f64 / per_us) as u128;
                let now = start.elapsed().as_micros();
                if now < due {
                    std::thread::sleep(Duration::from_micros((due - now).min(1000) as u64));
                    continue;
                }
                let rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to("load", now as usize)
                    .partition(0)
                    .payload(&value[..]);
                strata_tests::send(&*producer, rec)?;
                n += 1;
            }
            Ok(())
        })
    };
    // 10 s with the cleaner idle.
    std::thread::sleep(Duration::from_secs(10));
    let idle_end = start.elapsed().as_micros() as u64;
    let read0 = scrape::value(
        &scrape::scrape(admin)?,
        "strata_cleaner_bytes_read_total",
        &[],
    );
    let (code, msg) = raw::alter_topic_configs(
        broker.addr(),
        "dirty",
        &[("cleanup.policy", "compact"), ("segment.bytes", "1048576")],
        false,
    )?;
    if code != 0 {
        bail!("switching to compact: {code} {msg:?}");
    }
    // Cleaning: until the cleaner's counters stop moving.
    let clean_start = start.elapsed().as_micros() as u64;
    let mut last = read0;
    let mut still = 0;
    let mut began = None;
    while still < 10 {
        std::thread::sleep(Duration::from_millis(100));
        let now = scrape::value(
            &scrape::scrape(admin)?,
            "strata_cleaner_bytes_read_total",
            &[],
        );
        if now > last {
            began.get_or_insert(start.elapsed());
            still = 0;
        } else if began.is_some() {
            still += 1;
        }
        last = now;
        if began.is_none() && start.elapsed() > Duration::from_secs(90) {
            bail!("the cleaner did not start");
        }
        if start.elapsed() > Duration::from_secs(900) {
            bail!("the cleaner did not finish");
        }
    }
    let clean_end = start.elapsed().as_micros() as u64 - 1_000_000;
    stop.store(true, Ordering::SeqCst);
    load.join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    producer.flush(Duration::from_secs(60))?;
    let samples = std::mem::take(
        &mut *producer
            .context()
            .samples
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    let window = |from: u64, to: u64| -> Vec<u32> {
        samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, l)| *l)
            .collect()
    };
    let secs = (clean_end.saturating_sub(clean_start)) as f64 / 1e6;
    println!(
        "  cleaner: {:.1} MB read in ~{secs:.1} s",
        (last - read0) / 1e6
    );
    println!(
        "  produce at {} MB/s, acks=all, linger 0 -- cleaner idle: {}",
        a.rate_mbps,
        percentiles(window(1_000_000, idle_end))
    );
    println!(
        "  produce at {} MB/s, acks=all, linger 0 -- while cleaning: {}",
        a.rate_mbps,
        percentiles(window(clean_start, clean_end))
    );
    drop(producer);
    broker.shutdown()
}

fn main() -> Result<()> {
    let a = parse_args()?;
    storage_part(&a)?;
    broker_part(&a)
}
