//! `strata perf produce|consume`: throughput and latency percentiles, like Kafka's
//! producer-perf-test and consumer-perf-test; `strata perf connect`: how many connections
//! (with their TLS handshake and SASL login) a broker accepts per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use strata_client::producer::TimedDelivery;
use strata_client::{Consumer, ConsumerConfig, Producer, ProducerRecord, StartOffset};
use tokio::sync::mpsc;

use super::produce::{Pacer, ProducerOpts};
use super::{exit, Ctx};

#[derive(Subcommand, Debug)]
pub enum PerfCmd {
    /// Produce fixed-size records as fast as allowed; report throughput and latency.
    Produce(PerfProduceArgs),
    /// Read records from the beginning; report throughput and fetch latency.
    Consume(PerfConsumeArgs),
    /// Open connections (TLS and SASL login as the global options say) and close them;
    /// report connections per second and connect latency.
    Connect(PerfConnectArgs),
}

#[derive(Args, Debug)]
pub struct PerfConnectArgs {
    /// Connections to open, in all.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,
    /// Connections being opened at once.
    #[arg(short = 'c', long, default_value_t = 8)]
    pub concurrency: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PerfProduceArgs {
    pub topic: String,
    /// Records to send.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Bytes per record value.
    #[arg(short = 's', long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub producer: ProducerOpts,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PerfConsumeArgs {
    pub topic: String,
    /// Records to read (default: everything up to the end offsets at the start).
    #[arg(short = 'n', long)]
    pub records: Option<u64>,
    /// Most bytes per fetch answer.
    #[arg(long, default_value_t = 50 << 20)]
    pub fetch_max_bytes: i32,
    /// Most bytes per partition per fetch answer.
    #[arg(long, default_value_t = 1 << 20)]
    pub partition_max_bytes: i32,
    /// Give up after this many seconds without reaching the count.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
    #[arg(short, long)]
    pub quiet: bool,
}

pub async fn run(ctx: &Ctx, cmd: PerfCmd) -> Result<i32> {
    match cmd {
        PerfCmd::Produce(a) => produce(ctx, a).await,
        PerfCmd::Consume(a) => consume(ctx, a).await,
        PerfCmd::Connect(a) => connect(ctx, a).await,
    }
}

async fn connect(ctx: &Ctx, a: PerfConnectArgs) -> Result<i32> {
    let addr = ctx
        .config
        .bootstrap
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no bootstrap server"))?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.clamp(1, 1024) {
        let (next, addr, config) = (next.clone(), addr.clone(), ctx.config.clone());
        let total = a.connections;
        workers.spawn(async move {
            let mut hist = histogram();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t0 = Instant::now();
                let conn = strata_client::cluster::connect(&addr, &config).await?;
                hist.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                drop(conn);
            }
            Ok::<_, strata_client::Error>(hist)
        });
    }
    let mut hist = histogram();
    while let Some(done) = workers.join_next().await {
        hist.add(done??).expect("same bounds");
    }
    let secs = started.elapsed().as_secs_f64();
    let result = json!({
        "connections": hist.len(),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "connections_per_sec": (hist.len() as f64 / secs).round(),
        "connect_latency_ms": percentiles(&hist),
    });
    if a.json {
        println!("{result}");
    } else {
        let l = &result["connect_latency_ms"];
        println!(
            "{} connections in {secs:.2} s, {} connections/sec, latency {} ms p50, {} ms p99, {} ms max",
            hist.len(),
            result["connections_per_sec"],
            l["p50"],
            l["p99"],
            l["max"]
        );
    }
    Ok(exit::OK)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in milliseconds.
fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "avg": (h.mean() / 10.0).round() / 100.0,
        "p50": ms(0.50), "p95": ms(0.95), "p99": ms(0.99), "p999": ms(0.999),
        "max": h.max() as f64 / 1000.0,
    })
}

/// Random printable payload (as Kafka's perf test sends), so compression behaves as on
/// real text rather than on zeros.
fn payload(size: usize) -> Bytes {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..size)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())])
        .collect::<Vec<u8>>()
        .into()
}

/// Prints a progress line every `every` from counters until `stop` is set.
fn reporter(
    quiet: bool,
    unit_bytes: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
    window: Arc<Mutex<Histogram<u64>>>,
    what: &'static str,
) -> Option<tokio::task::JoinHandle<()>> {
    if quiet {
        return None;
    }
    Some(tokio::spawn(async move {
        let every = Duration::from_secs(2);
        let mut last = (Instant::now(), 0u64, 0u64);
        loop {
            tokio::time::sleep(every).await;
            let (n, b) = (
                count.load(Ordering::Relaxed),
                unit_bytes.load(Ordering::Relaxed),
            );
            let secs = last.0.elapsed().as_secs_f64();
            let mut h = window.lock().unwrap();
            let lat = if h.is_empty() {
                String::new()
            } else {
                format!(
                    ", {:.1} ms avg latency, {:.1} ms max",
                    h.mean() / 1000.0,
                    h.max() as f64 / 1000.0
                )
            };
            h.reset();
            drop(h);
            eprintln!(
                "{} records {what}, {:.1} records/s ({:.2} MB/s){lat}",
                n - last.1,
                (n - last.1) as f64 / secs,
                (b - last.2) as f64 / 1e6 / secs,
            );
            last = (Instant::now(), n, b);
        }
    }))
}

async fn produce(ctx: &Ctx, a: PerfProduceArgs) -> Result<i32> {
    if a.records == 0 {
        bail!("--records must be at least 1");
    }
    let pacer = Pacer::new(a.rate)?;
    let config = a.producer.config()?;
    let client = ctx.client().await?;
    client.topic(&a.topic).await?;
    let producer = Producer::new(client, config).await?;
    let value = payload(a.record_size);
    let done = Arc::new(AtomicU64::new(0));
    let done_bytes = Arc::new(AtomicU64::new(0));
    let window = Arc::new(Mutex::new(histogram()));
    let progress = reporter(
        a.quiet,
        done_bytes.clone(),
        done.clone(),
        window.clone(),
        "sent",
    );
    // Deliveries go to the collector in chunks (one channel message per 1,000 records); it
    // awaits them in send order, which costs nothing in accuracy because each one carries the
    // moment its acknowledgement arrived.
    type Sent = Vec<(Instant, TimedDelivery)>;
    let (tx, mut rx) = mpsc::unbounded_channel::<Sent>();
    let record_bytes = a.record_size as u64;
    let collector = {
        let (done, done_bytes, window) = (done.clone(), done_bytes.clone(), window.clone());
        tokio::spawn(async move {
            let mut all = histogram();
            let mut first_error = None;
            let mut failed = 0u64;
            while let Some(chunk) = rx.recv().await {
                let mut ok = 0;
                for (t0, f) in chunk {
                    let (r, at) = f.await;
                    match r {
                        Ok(_) => {
                            let us = (at.saturating_duration_since(t0).as_micros() as u64).max(1);
                            all.saturating_record(us);
                            window.lock().unwrap().saturating_record(us);
                            ok += 1;
                        }
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                done.fetch_add(ok, Ordering::Relaxed);
                done_bytes.fetch_add(ok * record_bytes, Ordering::Relaxed);
            }
            (all, failed, first_error)
        })
    };
    const CHUNK: usize = 1000;
    let started = Instant::now();
    let mut chunk: Sent = Vec::with_capacity(CHUNK);
    for i in 0..a.records {
        pacer.wait(i).await;
        let record = ProducerRecord {
            topic: a.topic.clone(),
            value: Some(value.clone()),
            ..Default::default()
        };
        let t0 = Instant::now();
        let f = producer.send(record).await?;
        chunk.push((t0, f.timed()));
        if chunk.len() == CHUNK {
            let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
        }
    }
    let _ = tx.send(chunk);
    drop(tx);
    producer.flush().await;
    let (hist, failed, first_error) = collector.await?;
    let secs = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    let ok = hist.len();
    let result = json!({
        "records": ok,
        "failed": failed,
        "record_size": a.record_size,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_sec": (ok as f64 / secs).round(),
        "mb_per_sec": ((ok * record_bytes) as f64 / 1e6 / secs * 100.0).round() / 100.0,
        "latency_ms": percentiles(&hist),
    });
    if a.json {
        println!("{result}");
    } else {
        let l = &result["latency_ms"];
        println!(
            "{ok} records sent, {} records/sec ({} MB/sec), {} ms avg latency, {} ms max latency, \
             {} ms p50, {} ms p95, {} ms p99, {} ms p99.9",
            result["records_per_sec"],
            result["mb_per_sec"],
            l["avg"],
            l["max"],
            l["p50"],
            l["p95"],
            l["p99"],
            l["p999"]
        );
    }
    if let Some(e) = first_error {
        eprintln!("error: {failed} records failed, the first with: {e}");
        return Ok(super::code_of(&e));
    }
    Ok(exit::OK)
}

async fn consume(ctx: &Ctx, a: PerfConsumeArgs) -> Result<i32> {
    let client = ctx.client().await?;
    let info = client.refresh_topic(&a.topic).await?;
    let config = ConsumerConfig {
        max_bytes: a.fetch_max_bytes,
        partition_max_bytes: a.partition_max_bytes,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, config);
    for p in &info.partitions {
        consumer.assign((a.topic.clone(), p.partition), StartOffset::Earliest);
    }
    consumer.fetch_end_offsets().await?;
    let target = match a.records {
        Some(n) => n,
        None => {
            let starts = consumer
                .client()
                .list_offsets(
                    &info
                        .partitions
                        .iter()
                        .map(|p| ((a.topic.clone(), p.partition), -2))
                        .collect::<Vec<_>>(),
                )
                .await?;
            info.partitions
                .iter()
                .map(|p| {
                    let tp = (a.topic.clone(), p.partition);
                    let lo = starts.get(&tp).map_or(0, |l| l.offset);
                    (consumer.high_watermark(&tp).unwrap_or(lo) - lo).max(0) as u64
                })
                .sum()
        }
    };
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let window = Arc::new(Mutex::new(histogram()));
    let progress = reporter(
        a.quiet,
        bytes.clone(),
        count.clone(),
        window.clone(),
        "read",
    );
    let mut hist = histogram();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.timeout_secs);
    let (mut n, mut b) = (0u64, 0u64);
    while n < target {
        if Instant::now() > deadline {
            eprintln!(
                "error: read {n} of {target} records in {} s",
                a.timeout_secs
            );
            break;
        }
        let t0 = Instant::now();
        let records = consumer.poll(Duration::from_millis(500)).await?;
        if records.is_empty() {
            continue;
        }
        let us = (t0.elapsed().as_micros() as u64).max(1);
        hist.saturating_record(us);
        window.lock().unwrap().saturating_record(us);
        for r in &records {
            b += (r.record.value.as_ref().map_or(0, |v| v.len())
                + r.record.key.as_ref().map_or(0, |k| k.len())) as u64;
        }
        n += records.len() as u64;
        count.store(n, Ordering::Relaxed);
        bytes.store(b, Ordering::Relaxed);
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
    }
    let result = json!({
        "records": n,
        "bytes": b,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_sec": (n as f64 / secs).round(),
        "mb_per_sec": (b as f64 / 1e6 / secs * 100.0).round() / 100.0,
        "fetches": hist.len(),
        "fetch_latency_ms": percentiles(&hist),
    });
    if a.json {
        println!("{result}");
    } else {
        let l = &result["fetch_latency_ms"];
        println!(
            "{n} records read ({:.2} MB) in {:.2} s, {} records/sec ({} MB/sec), {} fetches, \
             fetch latency {} ms p50, {} ms p95, {} ms p99, {} ms p99.9, {} ms max",
            b as f64 / 1e6,
            secs,
            result["records_per_sec"],
            result["mb_per_sec"],
            hist.len(),
            l["p50"],
            l["p95"],
            l["p99"],
            l["p999"],
            l["max"]
        );
    }
    Ok(if n >= target {
        exit::OK
    } else {
        exit::UNREACHABLE
    })
}
