//! Storage benchmark: the disk, a bare RocksDB loop with the engine's options, and the engine.
//!
//! ```text
//! export CARGO_TARGET_DIR=/root/.cache/strata-target
//! cargo run -p strata-storage --example bench -- [--gib 4] [--dir PATH] [--writers 4]
//!     [--inflight-mib 16] [--fsync-tries 200] [--read-cache-mb 64]
//! ```
//!
//! `--gib`: data written per configuration (default 4, so the 64 MiB memtables flush many
//! times and write amplification is measured in steady state). `--dir`: where data goes
//! (default: the system temp dir); it must be on the disk under test, not tmpfs. Each
//! configuration gets a fresh sub-directory, removed afterwards. Units: MB = 10^6 bytes.
//!
//! Write amplification everywhere is (write_bytes - cancelled_write_bytes) from
//! /proc/self/io — bytes this process (all its threads, RocksDB's background threads
//! included) sent to the block layer, minus dirty pages discarded before write-back (e.g. a
//! WAL deleted while still in the page cache) — divided by the payload bytes written. The
//! disk baseline prints the same ratio for a plain file as a check of the counter (~1.00).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use strata_storage::batch::BatchBuilder;
use strata_storage::raw::RawDb;
use strata_storage::{Store, StoreConfig};

const TOPIC: &str = "bench";
const RECORDS_PER_BATCH: usize = 64;
const RECORD_VALUE_BYTES: usize = 1000;
/// Batches appended one at a time for the unloaded-latency measurement: ~130 MB, so that
/// the memtable flushes twice meanwhile and its effect shows in the p99.
const UNLOADED_BATCHES: usize = 2000;

struct Args {
    gib: f64,
    dir: Option<PathBuf>,
    writers: usize,
    inflight_mib: usize,
    fsync_tries: usize,
    /// The engine's read cache (batches are also cached as they are appended).
    read_cache_mb: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        gib: 4.0,
        dir: None,
        writers: 4,
        inflight_mib: 16,
        fsync_tries: 200,
        read_cache_mb: StoreConfig::new("").read_cache_bytes >> 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--gib" => a.gib = val()?.parse()?,
            "--dir" => a.dir = Some(val()?.into()),
            "--writers" => a.writers = val()?.parse()?,
            "--inflight-mib" => a.inflight_mib = val()?.parse()?,
            "--fsync-tries" => a.fsync_tries = val()?.parse()?,
            "--read-cache-mb" => a.read_cache_mb = val()?.parse()?,
            _ => bail!("unknown flag {flag} (see the header of storage/examples/bench.rs)"),
        }
    }
    ensure!(a.gib > 0.0 && a.writers > 0 && a.inflight_mib > 0 && a.fsync_tries > 0);
    Ok(a)
}

// ---------------------------------------------------------------------------------------
// Helpers: I/O counters, percentiles, formatting.

#[derive(Clone, Copy)]
struct Io {
    write: u64,
    cancelled: u64,
}

fn io_now() -> Result<Io> {
    let s = std::fs::read_to_string("/proc/self/io").context("read /proc/self/io")?;
    let field = |name: &str| -> Result<u64> {
        let line = s
            .lines()
            .find(|l| l.starts_with(name))
            .context(name.to_string())?;
        Ok(line[name.len()..].trim().parse()?)
    };
    Ok(Io {
        write: field("write_bytes:")?,
        cancelled: field("cancelled_write_bytes:")?,
    })
}

/// Bytes that really went (or will go) to disk since `before`.
fn written_since(before: Io) -> Result<u64> {
    let now = io_now()?;
    Ok((now.write - before.write).saturating_sub(now.cancelled - before.cancelled))
}

/// Returns once this process has written nothing for `window` (background work is done).
fn wait_for_quiet_io(window: Duration) -> Result<()> {
    let (mut last, mut since) = (io_now()?.write, Instant::now());
    while since.elapsed() < window {
        std::thread::sleep(Duration::from_millis(50));
        let now = io_now()?.write;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Ok(())
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let i = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Prints the file system the bench dir is on: numbers taken on tmpfs are meaningless.
fn describe_fs(dir: &Path) -> Result<()> {
    let dir = dir.canonicalize()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let best = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1])).then(|| (f[0], f[1], f[2]))
        })
        .max_by_key(|(_, mp, _)| mp.len());
    let (dev, mp, fs) = best.unwrap_or(("?", "?", "?"));
    println!(
        "bench dir {} on {dev} ({fs}, mounted at {mp})",
        dir.display()
    );
    if matches!(fs, "tmpfs" | "ramfs") {
        println!("WARNING: this is memory, not a disk; pass --dir on the disk under test");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. Disk baselines.

struct Disk {
    write_mbps: f64,
    io_ratio: f64,
    fsync_p50: Duration,
    fsync_p99: Duration,
}

fn disk_baseline(dir: &Path, bytes: u64, tries: usize) -> Result<Disk> {
    // Sequential throughput: buffered 1 MiB writes then one fdatasync, timed together, so
    // the number is what the device sustains, not what the page cache absorbs.
    let path = dir.join("seq.dat");
    let chunk = vec![0xA5u8; 1 << 20];
    let n = (bytes / chunk.len() as u64).max(1);
    let mut f = File::create(&path)?;
    let io0 = io_now()?;
    let t0 = Instant::now();
    (0..n).try_for_each(|_| f.write_all(&chunk))?;
    f.sync_data()?;
    let took = t0.elapsed();
    let total = n * chunk.len() as u64;
    let io_ratio = written_since(io0)? as f64 / total as f64;
    drop(f);
    std::fs::remove_file(&path)?;

    // Commit latency: append 4 KiB then fdatasync, like a WAL sync (RocksDB syncs its WAL
    // with fdatasync; appending also changes the file size, so the journal commits too).
    // The first 10 tries (file creation, first block allocation) are not counted.
    let path = dir.join("fsync.dat");
    let page = vec![0x5Au8; 4096];
    let mut f = File::create(&path)?;
    let mut lat = Vec::with_capacity(tries);
    for i in 0..tries + 10 {
        let t = Instant::now();
        f.write_all(&page)?;
        f.sync_data()?;
        if i >= 10 {
            lat.push(t.elapsed());
        }
    }
    drop(f);
    std::fs::remove_file(&path)?;
    lat.sort();
    let (fsync_p50, fsync_p99) = (percentile(&lat, 50), percentile(&lat, 99));
    Ok(Disk {
        write_mbps: mbps(total, took),
        io_ratio,
        fsync_p50,
        fsync_p99,
    })
}

// ---------------------------------------------------------------------------------------
// 2. Bare RocksDB with the engine's options.

struct Bare {
    mbps: f64,
    wa: f64,
}

/// `writers` threads put `value_len`-byte values under increasing keys `[thread][counter]`
/// (the shape of the engine's `[partition][offset]` keys) with unsynced writes. When
/// `durable`, one thread loops `flush_wal(true)` — the engine's group commit without any of
/// its bookkeeping — and the clock stops after a last sync once all puts are done.
fn bare_rocks(
    dir: &Path,
    total: u64,
    value_len: usize,
    writers: usize,
    durable: bool,
) -> Result<Bare> {
    // Exactly the engine's RocksDB options (from the storage crate itself).
    let db = RawDb::open(dir, &StoreConfig::new(dir))?;
    let per_thread = (total / value_len as u64 / writers as u64).max(1);
    let (put_count, done) = (AtomicU64::new(0), AtomicBool::new(false));
    let io0 = io_now()?;
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let syncer = durable.then(|| {
            s.spawn(|| -> Result<()> {
                let mut synced = 0;
                while !done.load(Ordering::Acquire) {
                    let now = put_count.load(Ordering::Acquire);
                    if now == synced {
                        // Nothing new: don't burn one of the two cores on empty syncs.
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    db.sync_wal()?;
                    synced = now;
                }
                Ok(())
            })
        });
        let handles: Vec<_> = (0..writers as u64)
            .map(|w| {
                let (db, put_count) = (&db, &put_count);
                s.spawn(move || -> Result<()> {
                    let value: Vec<u8> = (0..value_len)
                        .map(|i| (i * 31 + w as usize) as u8)
                        .collect();
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&w.to_be_bytes());
                    for i in 0..per_thread {
                        key[8..].copy_from_slice(&i.to_be_bytes());
                        db.put_log(&key, &value)?;
                        put_count.fetch_add(1, Ordering::Release);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("writer panicked"))?;
        done.store(true, Ordering::Release);
        syncer.map_or(Ok(()), |h| h.join().expect("syncer panicked"))
    })?;
    if durable {
        db.sync_wal()?; // the puts since the syncer's last round
    }
    let took = t0.elapsed();
    let bytes = per_thread * writers as u64 * value_len as u64;
    db.flush_all()?;
    let wa = written_since(io0)? as f64 / bytes as f64;
    Ok(Bare {
        mbps: mbps(bytes, took),
        wa,
    })
}

// ---------------------------------------------------------------------------------------
// 3 + 4. The engine.

/// One ~64 KiB batch of 64 records with 1000-byte values, as a producer would send it.
fn make_batch() -> Vec<u8> {
    let ts = 1_700_000_000_000;
    let value: Vec<u8> = (0..RECORD_VALUE_BYTES).map(|i| (i * 7) as u8).collect();
    (0..RECORDS_PER_BATCH)
        .fold(BatchBuilder::new(ts), |b, _| b.record(ts, None, &value))
        .build()
}

struct Engine {
    mbps: f64,
    p50: Duration,
    p99: Duration,
    wa: f64,
    read_gbps: Option<f64>,
}

/// Appends `total` bytes to `partitions` partitions from `min(partitions, writers)` threads
/// (each round-robin over its partitions) and measures throughput to durability, latency
/// from `append` to the high watermark passing the batch, and write amplification.
///
/// Pipeline: blocking on each append until durable would leave one batch per partition per
/// sync, measuring the fsync rate instead of the engine. So each writer, after `append`,
/// hands `(last_offset, start)` to its partition's bounded channel and goes on; a tokio task
/// per partition awaits `wait_for_high_watermark` for each batch in order and records the
/// latency. The channel capacity bounds the data in flight (`inflight` bytes over all
/// partitions), like producers' in-flight limits; a full channel is back-pressure.
/// Throughput = bytes / (start .. the last batch durable).
fn engine(
    dir: &Path,
    total: u64,
    partitions: i32,
    writers: usize,
    fsync: bool,
    inflight: u64,
    read_cache_mb: usize,
) -> Result<Engine> {
    let mut cfg = StoreConfig::new(dir);
    cfg.fsync = fsync;
    cfg.read_cache_bytes = read_cache_mb << 20;
    let store = Store::open(cfg)?;
    store.create_topic(TOPIC, partitions, BTreeMap::new())?;
    let batch = make_batch();
    let blen = batch.len() as u64;
    let per_part = (total / blen / partitions as u64).max(1);
    let depth = (inflight / blen / partitions as u64).max(1) as usize;
    let writers = writers.min(partitions as usize);

    // One runtime worker: the waiters do almost nothing, and the two cores are needed by
    // the writers, the syncer and RocksDB's flush thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut groups: Vec<Vec<_>> = (0..writers).map(|_| Vec::new()).collect();
    let mut waiters = Vec::new();
    for p in 0..partitions {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(i64, Instant)>(depth);
        groups[p as usize % writers].push((p, tx));
        let store = store.clone();
        waiters.push(rt.spawn(async move {
            let mut lat = Vec::with_capacity(per_part as usize);
            // In order: a batch is never durable before the one appended before it, so
            // awaiting them one by one records each latency within a wake-up of the truth.
            while let Some((last, start)) = rx.recv().await {
                let hw = store
                    .wait_for_high_watermark(TOPIC, p, last, Duration::from_secs(60))
                    .await?;
                ensure!(
                    hw > last,
                    "partition {p}: offset {last} not durable after 60 s"
                );
                lat.push(start.elapsed());
            }
            Ok::<_, anyhow::Error>((lat, Instant::now()))
        }));
    }

    let io0 = io_now()?;
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|mine| {
                let (store, batch) = (&store, &batch);
                s.spawn(move || -> Result<()> {
                    for _ in 0..per_part {
                        for (p, tx) in &mine {
                            let bytes = batch.clone(); // append takes ownership (patches offsets)
                            let start = Instant::now();
                            let out = store.append(TOPIC, *p, bytes)?;
                            tx.blocking_send((out.last_offset, start))
                                .ok()
                                .context("waiter gone")?;
                        }
                    }
                    Ok(()) // dropping the senders ends the waiters
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("writer panicked"))?;
        Ok(())
    })?;
    let (mut lat, mut end) = (Vec::new(), t0);
    for w in waiters {
        let (l, e) = rt.block_on(w)??;
        lat.extend(l);
        end = end.max(e);
    }
    let bytes = per_part * partitions as u64 * blen;
    let took = end - t0;
    lat.sort();

    // Read-back of partition 0 with 1 MiB fetches, like a consumer catching up. One
    // untimed pass first warms the page cache (blob files) so the timed pass measures the
    // engine (iterator, blob lookup, copy), not the disk.
    let read_gbps = if partitions == 1 && fsync {
        let pass = || -> Result<(u64, Duration)> {
            let (t, mut from, mut n) = (Instant::now(), 0i64, 0u64);
            loop {
                let out = store.read(TOPIC, 0, from, 1 << 20, true)?;
                if out.records.is_empty() {
                    break;
                }
                from = out.next_offset;
                n += out.records.len() as u64;
            }
            Ok((n, t.elapsed()))
        };
        pass()?;
        let (n, d) = pass()?;
        ensure!(
            n == per_part * blen,
            "read back {n} bytes, appended {}",
            per_part * blen
        );
        Some(n as f64 / 1e9 / d.as_secs_f64())
    } else {
        None
    };

    // The store has no flush API and closing does not flush memtables, so reopen the
    // database bare (same options) and flush: recovery replays the WAL and the flush writes
    // what the engine would have written eventually. Counted into write amplification.
    // Before closing, wait for background flushes to end: RocksDB discards a flush still
    // running at shutdown (its blob file is deleted, after being partly written back by
    // bytes_per_sync) and redoes it at reopen, which would count ~64 MiB twice.
    drop(rt);
    wait_for_quiet_io(Duration::from_millis(500))?;
    store.close();
    RawDb::open(dir, &StoreConfig::new(dir))?.flush_all()?;
    let wa = written_since(io0)? as f64 / bytes as f64;
    let (p50, p99) = (percentile(&lat, 50), percentile(&lat, 99));
    Ok(Engine {
        mbps: mbps(bytes, took),
        p50,
        p99,
        wa,
        read_gbps,
    })
}

/// Latency without load: one partition, one batch at a time, each awaited until durable
/// before the next is appended, so every append waits for exactly one WAL sync of its own
/// data. This is the floor the pipelined latencies above are compared against.
fn unloaded_latency(
    dir: &Path,
    batches: usize,
    read_cache_mb: usize,
) -> Result<(Duration, Duration)> {
    let mut cfg = StoreConfig::new(dir);
    cfg.read_cache_bytes = read_cache_mb << 20;
    let store = Store::open(cfg)?;
    store.create_topic(TOPIC, 1, BTreeMap::new())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let batch = make_batch();
    let mut lat = Vec::with_capacity(batches);
    for _ in 0..batches {
        let bytes = batch.clone();
        let start = Instant::now();
        let last = store.append(TOPIC, 0, bytes)?.last_offset;
        let hw =
            rt.block_on(store.wait_for_high_watermark(TOPIC, 0, last, Duration::from_secs(60)))?;
        ensure!(hw > last, "offset {last} not durable after 60 s");
        lat.push(start.elapsed());
    }
    store.close();
    lat.sort();
    Ok((percentile(&lat, 50), percentile(&lat, 99)))
}

// ---------------------------------------------------------------------------------------

/// Runs `f` in a fresh sub-directory of `base`, removed afterwards.
fn in_dir<T>(base: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dir = base.join("data");
    std::fs::create_dir_all(&dir)?;
    let r = f(&dir);
    std::fs::remove_dir_all(&dir)?;
    r
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    let total = (args.gib * (1u64 << 30) as f64) as u64;
    let inflight = args.inflight_mib as u64 * (1 << 20);
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let base = tempfile::Builder::new()
        .prefix("strata-bench-")
        .tempdir_in(&parent)?;
    let base = base.path();
    let blen = make_batch().len();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# Strata storage benchmark");
    describe_fs(base)?;
    println!(
        "data per configuration: {:.2} GiB; batch: {RECORDS_PER_BATCH} x {RECORD_VALUE_BYTES} B records = \
         {blen} B; writers: {}; in flight: {} MiB; cores: {cores}",
        args.gib, args.writers, args.inflight_mib
    );

    println!("\n## 1. Disk");
    let t = Instant::now();
    let disk_bytes = total.min(1 << 30);
    let disk = disk_baseline(base, disk_bytes, args.fsync_tries)?;
    println!(
        "sequential write {} MiB + fdatasync: {:.0} MB/s   (/proc/self/io counted {:.2}x the bytes)",
        disk_bytes >> 20, disk.write_mbps, disk.io_ratio
    );
    println!(
        "4 KiB append + fdatasync, {} tries: p50 {:.2} ms, p99 {:.2} ms   [{:.1} s]",
        args.fsync_tries,
        ms(disk.fsync_p50),
        ms(disk.fsync_p99),
        secs(t)
    );

    println!(
        "\n## 2. Bare RocksDB ({} threads, {blen} B puts, engine options)",
        args.writers
    );
    let mut bare = Vec::new();
    for (name, durable) in [
        ("durable (flush_wal loop)", true),
        ("no sync (WAL unsynced)", false),
    ] {
        let t = Instant::now();
        let r = in_dir(base, |d| bare_rocks(d, total, blen, args.writers, durable))?;
        println!(
            "{name:<26} {:>7.0} MB/s   write amp {:.2}   [{:.1} s]",
            r.mbps,
            r.wa,
            secs(t)
        );
        bare.push(r);
    }

    println!("\n## 3. Engine (append -> high watermark)");
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>10}",
        "configuration", "MB/s", "p50 ms", "p99 ms", "write amp"
    );
    let mut eng = Vec::new();
    for (parts, fsync) in [(1, true), (16, true), (1, false), (16, false)] {
        let t = Instant::now();
        let r = in_dir(base, |d| {
            engine(
                d,
                total,
                parts,
                args.writers,
                fsync,
                inflight,
                args.read_cache_mb,
            )
        })?;
        let plural = if parts > 1 { "s" } else { "" };
        let name = format!(
            "{parts} partition{plural}, fsync {}",
            if fsync { "on" } else { "off" }
        );
        println!(
            "{name:<26} {:>7.0} {:>9.2} {:>9.2} {:>10.2}   [{:.1} s]",
            r.mbps,
            ms(r.p50),
            ms(r.p99),
            r.wa,
            secs(t)
        );
        eng.push((name, fsync, r));
    }
    let t = Instant::now();
    let (u50, u99) = in_dir(base, |d| {
        unloaded_latency(d, UNLOADED_BATCHES, args.read_cache_mb)
    })?;
    let name = "1 partition, one at a time";
    println!(
        "{name:<26} {:>7} {:>9.2} {:>9.2} {:>10}   [{:.1} s]",
        "-",
        ms(u50),
        ms(u99),
        "-",
        secs(t)
    );

    println!("\n## 4. Read-back (the 1-partition fsync-on log, 1 MiB fetches, warm cache)");
    let read = eng.iter().find_map(|(_, _, r)| r.read_gbps).unwrap_or(0.0);
    println!("{read:.2} GB/s");

    // 5. The targets of the issue. The latency budget: three single-fsync latencies (the
    // sync in progress when the batch arrives, its own sync, one more for slack) plus the
    // time the disk needs to write the batch itself at sequential speed. p99 is compared
    // with the disk's p99 fsync, so that both sides include the device's tail.
    let budget = disk.fsync_p99 * 3 + Duration::from_secs_f64(blen as f64 / 1e6 / disk.write_mbps);
    println!("\n## 5. Summary against the targets");
    let row = |metric: &str, measured: String, target: &str, ok: bool| {
        println!(
            "{metric:<52} {measured:>10} {target:>10}  {}",
            if ok { "PASS" } else { "FAIL" }
        );
    };
    println!("{:<52} {:>10} {:>10}", "metric", "measured", "target");
    for (name, _, r) in eng.iter().filter(|e| e.1) {
        let ratio = r.mbps / bare[0].mbps;
        let measured = format!("{:.0}%", ratio * 100.0);
        row(
            &format!("MB/s vs bare RocksDB durable, {name}"),
            measured,
            ">= 85%",
            ratio >= 0.85,
        );
    }
    for (name, _, r) in &eng {
        row(
            &format!("write amplification, {name}"),
            format!("{:.2}", r.wa),
            "<= 2.1",
            r.wa <= 2.1,
        );
    }
    let budget_s = format!("{:.2} ms", ms(budget));
    // At full speed with MiBs in flight, latency is queueing (in-flight bytes / throughput,
    // Little's law), not the engine's: those rows are shown for information. The latency
    // target is judged one batch at a time, below saturation.
    for (name, _, r) in eng.iter().filter(|e| e.1) {
        println!(
            "{:<52} {:>10} {:>10}  info",
            format!("p99 at saturation (queueing), {name}"),
            format!("{:.2} ms", ms(r.p99)),
            "-"
        );
    }
    let measured = format!("{:.2} ms", ms(u99));
    row(
        "p99 append-to-durable, 1 partition, one at a time",
        measured,
        &budget_s,
        u99 <= budget,
    );
    row(
        "read-back, warm cache",
        format!("{read:.2} GB/s"),
        ">= 1 GB/s",
        read >= 1.0,
    );
    println!(
        "(latency budget = 3 x 4 KiB fdatasync p99 ({:.2} ms) + {blen} B at {:.0} MB/s; pipelined \
         latencies are measured with up to {} MiB in flight)",
        ms(disk.fsync_p99),
        disk.write_mbps,
        args.inflight_mib
    );
    println!("\ntotal run time: {:.1} s", secs(started));
    Ok(())
}
