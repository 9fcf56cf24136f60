//! Archive benchmark: how fast sealed segments go to the archive (a local directory, and S3
//! served in-process by s3s-fs over HTTP on 127.0.0.1), and what archiving costs producers.
//!
//! ```text
//! cargo run --profile dev -p strata-tests --bin archive-bench -- --messages 300000 --size 1024
//! ```
//!
//! Options: `--messages N` `--size BYTES` (value size; default 1 KiB) `--partitions P`
//! `--segment-mb MB` (`segment.bytes`) `--stores dir,s3` `--concurrency N`
//! (`archive_max_concurrent_uploads`, default 4) `--archive-dir DIR` (where the archive
//! directory and the S3 server's files go, e.g. /dev/shm to keep their writes off the disk
//! the broker's log syncs to; default: beside the data) `--rounds R` (produce rounds, default
//! 3: each runs off, then on per store; the median is reported).
//!
//! Upload: a broker with the connector idle takes the records, then a broker on the same data
//! directory with the connector on (every 100 ms) uploads every sealed segment; the time from
//! its start until the manifests hold them all gives MB/s (export from RocksDB + upload);
//! its peak RSS is printed beside that of the broker that took the records.
//! Produce: librdkafka (acks=all, linger.ms 5) into a fresh broker, with
//! `remote.storage.enable=false` and per store with archiving on while producing.
//! Brokers are child processes (fsync on); data in temporary directories under `$TMPDIR`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_storage::archive::{Archive, PartitionRef};
use strata_tests::archived::topic_id;
use strata_tests::s3::{S3Server, SECRET_KEY};
use strata_tests::{
    produce_and_wait, producer_config, recording_producer, try_create_topic_with, BrokerProcess,
};

struct Args {
    messages: u64,
    size: usize,
    partitions: i32,
    segment_mb: u64,
    stores: Vec<String>,
    concurrency: usize,
    /// Where archives (and the S3 server's files) go; default: beside the data.
    archive_dir: Option<std::path::PathBuf>,
    /// Produce rounds (each: off, then on per store).
    rounds: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        messages: 300_000,
        size: 1024,
        partitions: 4,
        segment_mb: 32,
        stores: vec!["dir".into(), "s3".into()],
        concurrency: 4,
        archive_dir: None,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--messages" => a.messages = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--partitions" => a.partitions = value()?.parse()?,
            "--segment-mb" => a.segment_mb = value()?.parse()?,
            "--stores" => a.stores = value()?.split(',').map(str::to_string).collect(),
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--archive-dir" => a.archive_dir = Some(value()?.into()),
            "--rounds" => a.rounds = value()?.parse::<usize>()?.max(1),
            "-h" | "--help" => {
                println!(
                    "archive-bench [--messages N] [--size BYTES] [--partitions P] \
                     [--segment-mb MB] [--stores dir,s3] [--concurrency N] [--archive-dir DIR] [--rounds R]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other} (try --help)"),
        }
    }
    if a.stores.iter().any(|s| s != "dir" && s != "s3") {
        bail!("--stores takes dir and/or s3");
    }
    Ok(a)
}

/// An archive location for one run: its URL, the broker's environment for it, and the
/// in-process S3 server when there is one (it stops when dropped).
struct Store {
    url: String,
    env: Vec<(String, String)>,
    archive: Archive,
    _server: Option<S3Server>,
    _scratch: Option<tempfile::TempDir>,
}

fn store(a: &Args, kind: &str, data_dir: &Path) -> Result<Store> {
    let scratch = match &a.archive_dir {
        Some(d) => Some(tempfile::tempdir_in(d)?),
        None => None,
    };
    let dir = scratch.as_ref().map_or(data_dir, |d| d.path());
    if kind == "s3" {
        let server = S3Server::start(&dir.join("s3"), "bench")?;
        let url = "s3://bench/strata".to_string();
        Ok(Store {
            env: server.env(SECRET_KEY),
            archive: server.archive(&url)?,
            url,
            _server: Some(server),
            _scratch: scratch,
        })
    } else {
        let url = format!("file://{}", dir.join("archive").display());
        Ok(Store {
            archive: Archive::open(&url)?,
            url,
            env: Vec::new(),
            _server: None,
            _scratch: scratch,
        })
    }
}

fn spawn(a: &Args, data: &Path, archive: Option<(&Store, u64)>) -> Result<BrokerProcess> {
    let mut env = vec![
        (
            "STRATA_SEGMENT_BYTES".to_string(),
            (a.segment_mb << 20).to_string(),
        ),
        ("STRATA_RETENTION_MS".to_string(), "-1".to_string()),
    ];
    if let Some((s, interval_ms)) = archive {
        env.push(("STRATA_ARCHIVE_URL".into(), s.url.clone()));
        env.push(("STRATA_ARCHIVE_INTERVAL_MS".into(), interval_ms.to_string()));
        env.push((
            "STRATA_ARCHIVE_MAX_CONCURRENT_UPLOADS".into(),
            a.concurrency.to_string(),
        ));
        env.extend(s.env.iter().cloned());
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    BrokerProcess::spawn(data, 0, &env)
}

/// Creates the topic and produces every message; returns the topic, produce MB/s, and the
/// CPU seconds per GB produced of the broker and of this process (client, S3 server).
fn produce(a: &Args, broker: &BrokerProcess, remote: bool) -> Result<(String, f64, f64)> {
    let bs = broker.bootstrap();
    let topic = strata_tests::topic_name("bench");
    let remote = if remote { "true" } else { "false" };
    try_create_topic_with(
        &bs,
        &topic,
        a.partitions,
        &[("remote.storage.enable", remote)],
    )?
    .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    let producer = recording_producer(&producer_config(&bs))?;
    let cpu = cpu_total(Some(broker.pid())) + cpu_total(None);
    let started = Instant::now();
    produce_and_wait(&producer, &topic, 0..a.messages, a.partitions, |_| a.size)?;
    let secs = started.elapsed().as_secs_f64();
    let bytes = (a.messages * a.size as u64) as f64;
    let cpu = cpu_total(Some(broker.pid())) + cpu_total(None) - cpu;
    Ok((topic, bytes / 1e6 / secs, cpu / (bytes / 1e9)))
}

/// `.log` bytes and segments the archive holds for the topic.
fn archived(a: &Args, archive: &Archive, topic: &str, id: uuid::Uuid) -> Result<(u64, usize)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut bytes, mut segments) = (0, 0);
    for partition in 0..a.partitions {
        let p = PartitionRef {
            topic,
            topic_id: id,
            partition,
        };
        let m = rt.block_on(archive.manifest(p))?;
        bytes += m.segments.iter().map(|s| s.bytes).sum::<u64>();
        segments += m.segments.len();
    }
    Ok((bytes, segments))
}

/// What the upload phase measured.
struct Upload {
    mbps: f64,
    bytes: u64,
    segments: usize,
    /// Peak RSS (MiB) of the broker that took the records (connector idle), and of the one
    /// that uploaded them.
    rss_producing: u64,
    rss_uploading: u64,
    /// CPU seconds per GB archived: the uploading broker's, and this process's (which runs
    /// the in-process S3 server; ~0 for the directory).
    broker_cpu_per_gb: f64,
    store_cpu_per_gb: f64,
}

fn cpu_total(pid: Option<u32>) -> f64 {
    let (u, s) = match pid {
        Some(pid) => strata_tests::procstat::cpu_seconds(&pid.to_string()),
        None => strata_tests::procstat::self_cpu_seconds(),
    }
    .unwrap_or((0.0, 0.0));
    u + s
}

/// Uploads every sealed segment of a freshly produced topic.
fn upload(a: &Args, kind: &str) -> Result<Upload> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let s = store(a, kind, dir.path())?;
    // An hour: the connector stays idle while the records come in.
    let mut broker = spawn(a, &data, Some((&s, 3_600_000)))?;
    let (topic, ..) = produce(a, &broker, true)?;
    let id = topic_id(&broker.bootstrap(), &topic)?;
    let rss_producing = broker.peak_rss_kib()? >> 10;
    broker.terminate()?;
    let (mut sealed, mut count) = (0, 0);
    {
        let store = strata_storage::Store::open(strata_storage::StoreConfig::new(&data))?;
        for p in 0..a.partitions {
            for seg in store.segments(&topic, p)?.iter().filter(|s| s.sealed) {
                sealed += seg.bytes;
                count += 1;
            }
        }
    }
    if count == 0 {
        bail!("no sealed segment: produce more than --segment-mb per partition");
    }
    let started = Instant::now();
    let self_cpu = cpu_total(None);
    let broker = spawn(a, &data, Some((&s, 100)))?;
    loop {
        let (bytes, segments) = archived(a, &s.archive, &topic, id)?;
        if segments >= count {
            anyhow::ensure!(bytes == sealed, "archived {bytes} bytes of {sealed}");
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("archive incomplete after 30 minutes: {segments} of {count} segments");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_uploading = broker.peak_rss_kib()? >> 10;
    let gb = sealed as f64 / 1e9;
    let broker_cpu_per_gb = cpu_total(Some(broker.pid())) / gb;
    let store_cpu_per_gb = (cpu_total(None) - self_cpu) / gb;
    drop(broker);
    Ok(Upload {
        mbps: sealed as f64 / 1e6 / secs,
        bytes: sealed,
        segments: count,
        rss_producing,
        rss_uploading,
        broker_cpu_per_gb,
        store_cpu_per_gb,
    })
}

fn main() -> Result<()> {
    let a = parse_args()?;
    println!(
        "{} messages of {} bytes, {} partitions, segment.bytes {} MiB, {} concurrent uploads",
        a.messages, a.size, a.partitions, a.segment_mb, a.concurrency
    );
    let mut rows = Vec::new();
    for kind in &a.stores {
        let u = upload(&a, kind)?;
        rows.push(format!(
            "upload    {:<10} {:>9.1} MB/s   ({} segments, {:.0} MB; broker peak RSS {} MiB \
             uploading, {} MiB taking the records; CPU s per GB: broker {:.2}, store and \
             bench {:.2})",
            kind,
            u.mbps,
            u.segments,
            u.bytes as f64 / 1e6,
            u.rss_uploading,
            u.rss_producing,
            u.broker_cpu_per_gb,
            u.store_cpu_per_gb
        ));
    }
    // Rounds of off, then on per store, interleaved so that a slower or faster stretch of
    // the machine affects every variant alike; the median round counts.
    let variants: Vec<Option<&String>> = std::iter::once(None)
        .chain(a.stores.iter().map(Some))
        .collect();
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..a.rounds {
        for (v, kind) in variants.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            let s = kind.map(|k| store(&a, k, dir.path())).transpose()?;
            let broker = spawn(&a, &dir.path().join("data"), s.as_ref().map(|s| (s, 100)))?;
            let (_, mbps, cpu) = produce(&a, &broker, kind.is_some())?;
            drop(broker);
            runs[v].push(mbps);
            cpus[v].push(cpu);
        }
    }
    let median = |xs: &mut Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let off = median(&mut runs[0]);
    for (v, kind) in variants.iter().enumerate() {
        let all: Vec<String> = runs[v].iter().map(|x| format!("{x:.0}")).collect();
        let mbps = median(&mut runs[v]);
        let cpu = median(&mut cpus[v]);
        let name = kind.map_or("off".to_string(), |k| format!("on ({k})"));
        let vs = match kind {
            None => String::new(),
            Some(_) => format!("{:+.1}% vs off; ", (mbps / off - 1.0) * 100.0),
        };
        rows.push(format!(
            "produce   {name:<10} {mbps:>9.1} MB/s   ({vs}rounds: {}; CPU s per GB, broker and \
             client: {cpu:.2})",
            all.join(", ")
        ));
    }
    println!("{:<9} {:<10} {:>14}", "what", "store", "throughput");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
