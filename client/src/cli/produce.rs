//! `strata produce TOPIC`: one record per line from stdin or a file.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use strata_client::records::compression_by_name;
use strata_client::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use super::{code_of, exit, Ctx};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Read records from this file instead of stdin.
    #[arg(short, long)]
    pub file: Option<std::path::PathBuf>,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(short = 'K', long)]
    pub key_separator: Option<String>,
    /// A header for every record, key=value (repeat for more).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Send every record to this partition (default: by key, or sticky without a key).
    #[arg(short, long)]
    pub partition: Option<i32>,
    #[command(flatten)]
    pub producer: ProducerOpts,
    /// Records per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    /// No progress line, no summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Producer settings shared by `produce` and `perf produce`.
#[derive(Args, Debug, Clone)]
pub struct ProducerOpts {
    /// all (or -1), 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// How long a batch waits for more records, in ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Bytes at which a batch is sent.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: usize,
    /// Turn off idempotence (on by default with acks=all).
    #[arg(long)]
    pub no_idempotence: bool,
}

impl ProducerOpts {
    pub fn config(&self) -> Result<ProducerConfig> {
        let acks = match self.acks.as_str() {
            "all" | "-1" => -1,
            "1" => 1,
            "0" => 0,
            other => bail!("--acks must be all, 1 or 0, not {other:?}"),
        };
        Ok(ProducerConfig {
            acks,
            linger: Duration::from_millis(self.linger_ms),
            batch_size: self.batch_size,
            compression: compression_by_name(&self.compression)?,
            idempotent: !self.no_idempotence,
            ..ProducerConfig::default()
        })
    }
}

/// Paces a loop to `rate` iterations per second.
pub struct Pacer {
    start: Instant,
    per_item: Option<Duration>,
}

impl Pacer {
    pub fn new(rate: Option<f64>) -> Result<Pacer> {
        let per_item = match rate {
            None => None,
            Some(r) if r > 0.0 && r.is_finite() => Some(Duration::from_secs_f64(1.0 / r)),
            Some(r) => bail!("--rate must be a positive number, not {r}"),
        };
        Ok(Pacer {
            start: Instant::now(),
            per_item,
        })
    }

    /// Waits until item `n` (counting from 0) is due.
    pub async fn wait(&self, n: u64) {
        if let Some(per) = self.per_item {
            let due = self.start + per.mul_f64(n as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
}

/// Counts delivery outcomes as they arrive.
#[derive(Default)]
pub struct Deliveries {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<strata_client::Error>,
}

/// Awaits delivery futures sent on the channel, in whatever order they complete.
pub fn collect_deliveries(
    mut rx: mpsc::UnboundedReceiver<DeliveryFuture>,
) -> tokio::task::JoinHandle<Deliveries> {
    tokio::spawn(async move {
        let mut pending = FuturesUnordered::new();
        let mut d = Deliveries::default();
        let mut open = true;
        loop {
            tokio::select! {
                f = rx.recv(), if open => match f {
                    Some(f) => pending.push(f),
                    None => open = false,
                },
                Some(r) = pending.next(), if !pending.is_empty() => match r {
                    Ok(_) => d.ok += 1,
                    Err(e) => {
                        d.failed += 1;
                        d.first_error.get_or_insert(e);
                    }
                },
                else => break,
            }
        }
        d
    })
}

pub fn progress_bar(quiet: bool, unit: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{human_pos}} {unit} in {{elapsed}} ({{per_sec}}) {{msg}}"
        ))
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn parse_headers(headers: &[String]) -> Result<Vec<strata_client::Header>> {
    headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Some(Bytes::from(v.to_string())))),
            _ => bail!("header {h:?} is not KEY=VALUE"),
        })
        .collect()
}

pub async fn run(ctx: &Ctx, args: ProduceArgs) -> Result<i32> {
    let headers = parse_headers(&args.headers)?;
    let pacer = Pacer::new(args.rate)?;
    let config = args.producer.config()?;
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Box::new(tokio::io::stdin()),
    };
    let client = ctx.client().await?;
    // Fail early (exit code 4) for a topic that does not exist.
    client.topic(&args.topic).await?;
    let producer = Producer::new(client, config).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = collect_deliveries(rx);
    let bar = progress_bar(args.quiet, "records");
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut line = Vec::new();
    let (mut n, mut bytes) = (0u64, 0u64);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let (key, value) = match &args.key_separator {
            Some(sep) => match find(&line, sep.as_bytes()) {
                Some(i) => (
                    Some(Bytes::copy_from_slice(&line[..i])),
                    Bytes::copy_from_slice(&line[i + sep.len()..]),
                ),
                None => (None, Bytes::copy_from_slice(&line)),
            },
            None => (None, Bytes::copy_from_slice(&line)),
        };
        pacer.wait(n).await;
        bytes += (value.len() + key.as_ref().map_or(0, |k| k.len())) as u64;
        let record = ProducerRecord {
            topic: args.topic.clone(),
            partition: args.partition,
            key,
            value: Some(value),
            headers: headers.clone(),
            timestamp: None,
        };
        let delivery = producer.send(record).await?;
        let _ = tx.send(delivery);
        n += 1;
        if n % 1024 == 0 {
            bar.set_position(n);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{:.2} MB/s", bytes as f64 / 1e6 / secs));
        }
    }
    drop(tx);
    producer.flush().await;
    let d = collector.await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if !args.quiet {
        eprintln!(
            "produced {} of {n} records ({:.2} MB) to {} in {secs:.2} s: {:.0} records/s, {:.2} MB/s",
            d.ok,
            bytes as f64 / 1e6,
            args.topic,
            n as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
    if let Some(e) = d.first_error {
        eprintln!("error: {} records failed, the first with: {e}", d.failed);
        return Ok(code_of(&e));
    }
    Ok(exit::OK)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
