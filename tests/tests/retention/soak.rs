//! A short soak with retention on.

use super::*;

// ------------------------------------------------------------------ soak

/// About 55 s of continuous produce (pipelined, up to 20 MB/s) with retention on (1 MiB
/// segments, 5 s / 32 MiB retention) and a consumer tailing the log: the data directory
/// stays bounded (max printed, with its parts: RocksDB write-ahead log, table and blob
/// files, the rest), the consumer reads in order without seeing an error, the log start
/// keeps moving.
#[test]
fn soak_retention_keeps_disk_bounded() -> Result<()> {
    const DURATION: Duration = Duration::from_secs(55);
    const VALUE: usize = 1_000;
    const RETENTION_BYTES: u64 = 32 << 20;
    const RATE: f64 = 20e6;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let broker = start_broker(&data, |_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("soak");
    let rb = RETENTION_BYTES.to_string();
    create_with(
        &bs,
        &topic,
        1,
        &[
            ("segment.bytes", "1048576"),
            ("segment.ms", "500"),
            ("retention.ms", "5000"),
            ("retention.bytes", &rb),
        ],
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    // Producer: pipelined (librdkafka batches), at most RATE bytes/s; every delivery report
    // must be a success at the next offset.
    let producer_thread = {
        let (bs, topic, stop, acked) = (bs.clone(), topic.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || -> Result<u64> {
            let producer = recording_producer(&producer_config(&bs))?;
            let check = |reports: Vec<Delivery>| -> Result<()> {
                for d in reports {
                    ensure!(
                        d.error.is_none() && d.offset == d.id as i64,
                        "delivery {d:?}"
                    );
                    acked.fetch_max(d.id + 1, Ordering::Relaxed);
                }
                Ok(())
            };
            let start = Instant::now();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    let v = value(id, VALUE);
                    let r = BaseRecord::<[u8], [u8], _>::with_opaque_to(
                        &topic,
                        Box::new((id, Instant::now())),
                    )
                    .partition(0)
                    .payload(&v[..]);
                    send(&producer, r)?;
                    id += 1;
                }
                check(producer.context().take())?;
                let budget = Duration::from_secs_f64((id as f64 * VALUE as f64) / RATE);
                if let Some(wait) = budget.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            producer.flush(Duration::from_secs(120))?;
            wait_reports(&producer, id, CONSUME_TIMEOUT)?;
            check(producer.context().take())?;
            Ok(id)
        })
    };
    // Consumer: tails from offset 0 with auto.offset.reset=earliest. Records come in order
    // and intact; should it fall behind retention it is moved forward (counted), but it
    // never sees an error.
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let consumer_thread = {
        let (bs, topic, total) = (bs.clone(), topic.clone(), total.clone());
        std::thread::spawn(move || -> Result<(u64, u64)> {
            let mut cfg = consumer_config(&bs);
            cfg.set("auto.offset.reset", "earliest");
            let consumer: BaseConsumer = cfg.create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(0))?;
            consumer.assign(&tpl)?;
            let (mut next, mut read, mut skipped) = (0i64, 0u64, 0u64);
            let mut deadline = None;
            while (next as u64) < total.load(Ordering::Relaxed) {
                if total.load(Ordering::Relaxed) != u64::MAX {
                    let d =
                        *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
                    ensure!(
                        Instant::now() < d,
                        "consumer at {next} of {}",
                        total.load(Ordering::Relaxed)
                    );
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Ok(m)) => {
                        ensure!(
                            m.offset() >= next,
                            "consumer went back from {next} to {}",
                            m.offset()
                        );
                        skipped += (m.offset() - next) as u64;
                        next = m.offset();
                        let v = m.payload().unwrap_or_default();
                        ensure!(
                            value_id(v) == Some(next as u64) && v.len() == VALUE,
                            "offset {next}: wrong value"
                        );
                        next += 1;
                        read += 1;
                    }
                    Some(Err(e)) => bail!("consumer error at {next}: {e}"),
                }
            }
            Ok((read, skipped))
        })
    };

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let start = Instant::now();
    let mut max = DiskUse::default();
    let mut lows = Vec::new();
    while start.elapsed() < DURATION
        && !producer_thread.is_finished()
        && !consumer_thread.is_finished()
    {
        std::thread::sleep(Duration::from_secs(5));
        let u = disk_use(&data);
        max = DiskUse {
            wal: max.wal.max(u.wal),
            tables: max.tables.max(u.tables),
            other: max.other.max(u.other),
        };
        let total_now = u.total();
        let (lo, hi) = low_high(&bs, &topic, 0)?;
        lows.push(lo);
        println!(
            "{:>3}s: dir {:>6.1} MiB (wal {:>6.1}, sst+blob {:>5.1}, other {:>4.1}), log [{lo}, {hi}), acked {:.1} MiB",
            start.elapsed().as_secs(),
            mib(total_now),
            mib(u.wal),
            mib(u.tables),
            mib(u.other),
            mib(acked.load(Ordering::Relaxed) * VALUE as u64)
        );
    }
    stop.store(true, Ordering::Relaxed);
    let written = producer_thread
        .join()
        .map_err(|_| anyhow!("producer panicked"))?;
    total.store(*written.as_ref().unwrap_or(&0), Ordering::Relaxed);
    let written = written?;
    let (read, skipped) = consumer_thread
        .join()
        .map_err(|_| anyhow!("consumer panicked"))??;
    let mut others: Vec<(u64, String)> = std::fs::read_dir(&data)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let m = e.metadata().ok()?;
            let table_or_wal = name.ends_with(".sst")
                || name.ends_with(".blob")
                || (name.ends_with(".log") && !name.starts_with("LOG"));
            (m.is_file() && !table_or_wal).then_some((m.len(), name))
        })
        .collect();
    others.sort();
    others.reverse();
    others.truncate(4);
    println!(
        "soak: wrote {written} records ({:.1} MiB); consumer read {read}, moved past {skipped} by retention; \
         max data dir parts: wal {:.1} MiB, sst+blob {:.1} MiB, other {:.1} MiB (largest other files: {others:?})",
        mib(written * VALUE as u64),
        mib(max.wal),
        mib(max.tables),
        mib(max.other)
    );
    ensure!(
        read + skipped == written,
        "consumer read {read} + skipped {skipped} != {written}"
    );
    ensure!(
        skipped * 20 < written,
        "consumer fell behind retention for {skipped} of {written} records"
    );
    ensure!(
        lows.windows(2).all(|w| w[0] <= w[1]) && lows.last() > lows.first(),
        "log start did not keep moving: {lows:?}"
    );
    // Bounds. Retained data is at most retention.bytes plus a segment; RocksDB adds its
    // write-ahead log (max_total_wal_size: 4 x 64 MiB memtables) and memtables being
    // flushed (up to 64 MiB each, into blob files until compaction drops them).
    ensure!(
        max.wal < 300 << 20,
        "write-ahead log reached {} bytes",
        max.wal
    );
    ensure!(
        max.tables < RETENTION_BYTES + (128 << 20),
        "table and blob files reached {} bytes",
        max.tables
    );
    ensure!(
        max.other < 32 << 20,
        "other RocksDB files reached {} bytes",
        max.other
    );
    let (lo, hi) = low_high(&bs, &topic, 0)?;
    ensure!(hi as u64 == written, "high watermark {hi}");
    ensure!(
        ((hi - lo) as u64) * (VALUE as u64) < RETENTION_BYTES + (2 << 20),
        "kept {} records after the soak",
        hi - lo
    );
    broker.shutdown()
}
