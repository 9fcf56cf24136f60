//! Retention by time and by size, and DeleteRecords, moving the log start offset.

use super::*;

// ------------------------------------------------------------------ retention by time

/// Small segments and a 1 s retention: the log start offset advances until the partition is
/// empty; a consumer positioned before it gets OFFSET_OUT_OF_RANGE and resets per
/// `auto.offset.reset`; the producer keeps working and offsets continue where they were.
#[test]
fn retention_by_time_moves_log_start_and_consumers_reset() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("ret-time");
    create_with(
        &bs,
        &topic,
        1,
        &[("segment.ms", "100"), ("retention.ms", "1000")],
    )?;

    // Five rounds 300 ms apart: with segment.ms=100 each round starts a new segment.
    let producer = recording_producer(&producer_config(&bs))?;
    let mut id = 0u64;
    for _round in 0..5 {
        let recs: Vec<_> = (0..20)
            .map(|i| (Some(now_ms()), value(id + i, 100)))
            .collect();
        let reports = produce_records(&producer, &topic, 0, id, &recs)?;
        for d in &reports {
            ensure!(
                d.offset == d.id as i64,
                "id {} acknowledged at {}",
                d.id,
                d.offset
            );
        }
        id += 20;
        std::thread::sleep(Duration::from_millis(300));
    }
    // Retention empties the partition (the active segment counts once all of it is
    // durable and its newest record is older than retention.ms).
    let ((lo, hi), lows) = wait_watermarks(
        &bs,
        &topic,
        0,
        RETENTION_WAIT,
        "log start reaches the log end",
        |lo, hi| lo == 100 && hi == 100,
    )?;
    println!("low watermarks seen while retention ran: {lows:?}");
    ensure!((lo, hi) == (100, 100));
    ensure!(
        lows.windows(2).all(|w| w[0] <= w[1]),
        "log start moved backwards: {lows:?}"
    );

    // Keep what comes next (a change in force at once): AlterConfigs replaces all overrides.
    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[("segment.ms", "100"), ("retention.ms", "600000")],
            false
        )? == Ok(())
    );
    ensure!(config_value(&bs, &topic, "retention.ms")?.as_deref() == Some("600000"));

    // A consumer positioned at 3 (below the log start) with auto.offset.reset=error sees
    // the error.
    let seen = consume_from(
        &bs,
        &topic,
        Offset::Offset(3),
        "error",
        1,
        true,
        Duration::from_secs(30),
    )?;
    ensure!(
        seen.records.is_empty() && seen.errors.iter().any(is_out_of_range),
        "reset=error at offset 3 (log start 100): {seen:?}"
    );

    // The producer keeps working: offsets continue at 100.
    let recs: Vec<_> = (0..20)
        .map(|i| (Some(now_ms()), value(id + i, 100)))
        .collect();
    let reports = produce_records(&producer, &topic, 0, id, &recs)?;
    for d in &reports {
        ensure!(
            d.offset == d.id as i64,
            "after retention: id {} acknowledged at {}",
            d.id,
            d.offset
        );
    }
    id += 20;
    ensure!(
        low_high(&bs, &topic, 0)? == (100, 120),
        "watermarks {:?}",
        low_high(&bs, &topic, 0)?
    );

    // earliest: lands on the new log start and reads everything from there.
    let seen = consume_from(
        &bs,
        &topic,
        Offset::Offset(0),
        "earliest",
        20,
        false,
        Duration::from_secs(60),
    )?;
    let offsets: Vec<i64> = seen.records.iter().map(|r| r.0).collect();
    ensure!(
        offsets == (100..120).collect::<Vec<_>>(),
        "reset=earliest from 0: offsets {offsets:?}, errors {:?}",
        seen.errors
    );
    for (o, v, _) in &seen.records {
        ensure!(
            value_id(v) == Some(*o as u64) && *v == value(*o as u64, 100),
            "offset {o}: wrong value"
        );
    }

    // latest: lands on the log end and gets only what is produced afterwards.
    let bs2 = bs.clone();
    let topic2 = topic.clone();
    let latest = std::thread::spawn(move || {
        consume_from(
            &bs2,
            &topic2,
            Offset::Offset(0),
            "latest",
            1,
            false,
            Duration::from_secs(60),
        )
    });
    // Give it time to reset before the next record arrives; re-send until it sees one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !latest.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        produce_records(
            &producer,
            &topic,
            0,
            id,
            &[(Some(now_ms()), value(id, 100))],
        )?;
        id += 1;
    }
    let seen = latest
        .join()
        .map_err(|_| anyhow!("consumer thread panicked"))??;
    ensure!(
        seen.records.len() == 1 && seen.records[0].0 >= 120,
        "reset=latest from 0 (log 100..120): {seen:?}"
    );
    drop(producer);
    broker.shutdown()
}

// ------------------------------------------------------------------ retention by size

/// retention.bytes=50000 with 10000-byte segments: the partition settles holding between
/// retention.bytes and retention.bytes plus one segment; the records kept are the newest,
/// intact; disk use after retention stays bounded.
#[test]
fn retention_by_size_keeps_about_retention_bytes() -> Result<()> {
    const RETENTION: i64 = 50_000;
    const SEGMENT: i64 = 10_000;
    const VALUE: usize = 400;
    const N: u64 = 3_000;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let broker = start_broker(&data, |_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("ret-size");
    let (r, s) = (RETENTION.to_string(), SEGMENT.to_string());
    create_with(
        &bs,
        &topic,
        1,
        &[("retention.bytes", &r), ("segment.bytes", &s)],
    )?;

    // Small batches (about 4 records), so segments hold several batches.
    let mut cfg = producer_config(&bs);
    cfg.set("batch.size", "2000");
    let producer = recording_producer(&cfg)?;
    for chunk in 0..(N / 500) {
        let recs: Vec<_> = (0..500)
            .map(|i| (None, value(chunk * 500 + i, VALUE)))
            .collect();
        produce_records(&producer, &topic, 0, chunk * 500, &recs)?;
    }
    drop(producer);
    let after_produce = disk_use(&data).total();
    ensure!(after_produce > 0);

    // Every record takes a bit more than VALUE bytes on the wire (key, record and batch
    // headers): between VALUE+20 and VALUE+200.
    let most = (RETENTION + SEGMENT) / (VALUE as i64 + 20);
    let least = RETENTION / (VALUE as i64 + 200);
    let ((lo, hi), lows) = wait_watermarks(
        &bs,
        &topic,
        0,
        RETENTION_WAIT,
        "retention.bytes applied",
        |lo, hi| hi - lo <= most,
    )?;
    ensure!(hi == N as i64, "high watermark {hi}");
    // Settled: a few more passes change nothing.
    std::thread::sleep(Duration::from_secs(2));
    let (lo2, hi2) = low_high(&bs, &topic, 0)?;
    ensure!(
        (lo2, hi2) == (lo, hi),
        "still moving: ({lo}, {hi}) then ({lo2}, {hi2})"
    );
    let kept = hi - lo;
    println!("kept {kept} records of {N} (bounds {least}..={most}); lows seen {lows:?}");
    ensure!(
        kept >= least,
        "kept {kept} records (< {least}): retention dropped more than retention.bytes allows"
    );

    // What is kept is the newest records, intact.
    let recs = consume_ranges(&bs, &topic, &[(0, lo, hi)], CONSUME_TIMEOUT)?;
    check_dense(&recs[&0], lo, hi)?;
    for rec in &recs[&0] {
        let v = rec.payload.as_deref().unwrap_or_default();
        ensure!(
            value_id(v) == Some(rec.offset as u64) && v == value(rec.offset as u64, VALUE),
            "offset {}: wrong value",
            rec.offset
        );
    }

    let after_retention = disk_use(&data);
    println!(
        "data dir: {after_produce} bytes after producing {} value bytes; after retention {} ({after_retention:?})",
        N as usize * VALUE,
        after_retention.total()
    );
    // Retention deletes the dropped range and compacts it (which first flushes the log's
    // memtable): table files then hold about what is kept, not what was written. The
    // write-ahead log still holds everything written until RocksDB recycles it (up to its
    // 256 MiB cap; the soak test shows that cap at work).
    let kept_bound = 4 * (RETENTION + SEGMENT) as u64;
    ensure!(
        after_retention.tables < kept_bound,
        "table files hold {} bytes after retention (bound {kept_bound}; {} value bytes written)",
        after_retention.tables,
        N as usize * VALUE
    );
    broker.shutdown()
}

// ------------------------------------------------------------------ DeleteRecords

#[test]
fn delete_records_moves_the_low_watermark() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("delrec");
    create_topic(&bs, &topic, 2)?;
    let producer = batching_producer(&bs)?;
    let p0: Vec<_> = (0..100).map(|i| (None, value(i, 50))).collect();
    let p1: Vec<_> = (0..50).map(|i| (None, value(1000 + i, 50))).collect();
    produce_records(&producer, &topic, 0, 0, &p0)?;
    produce_records(&producer, &topic, 1, 1000, &p1)?;

    // 30 lies inside a batch (all 100 went out in one); End means "up to the high watermark".
    let r = delete_records(&bs, &topic, &[(0, Offset::Offset(30)), (1, Offset::End)])?;
    ensure!(r == vec![(0, Ok(30)), (1, Ok(50))], "DeleteRecords: {r:?}");
    ensure!(
        low_high(&bs, &topic, 0)? == (30, 100),
        "p0 watermarks {:?}",
        low_high(&bs, &topic, 0)?
    );
    ensure!(
        low_high(&bs, &topic, 1)? == (50, 50),
        "p1 watermarks {:?}",
        low_high(&bs, &topic, 1)?
    );

    // Below the current log start: nothing changes, the answer is the log start.
    let r = delete_records(&bs, &topic, &[(0, Offset::Offset(10))])?;
    ensure!(
        r == vec![(0, Ok(30))],
        "DeleteRecords below the log start: {r:?}"
    );

    // Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing changes.
    let r = delete_records(&bs, &topic, &[(0, Offset::Offset(101))])?;
    let oor = RDKafkaErrorCode::OffsetOutOfRange.to_string();
    ensure!(
        matches!(&r[..], [(0, Err(e))] if e.contains(&oor)),
        "DeleteRecords beyond the high watermark: {r:?}"
    );
    ensure!(low_high(&bs, &topic, 0)? == (30, 100));

    // Consumers: exactly 30..100 from the earliest position, intact; an old position is out
    // of range.
    let seen = consume_from(
        &bs,
        &topic,
        Offset::Beginning,
        "error",
        70,
        false,
        Duration::from_secs(60),
    )?;
    let offsets: Vec<i64> = seen.records.iter().map(|r| r.0).collect();
    ensure!(
        offsets == (30..100).collect::<Vec<_>>(),
        "from the beginning: {offsets:?} {:?}",
        seen.errors
    );
    ensure!(seen
        .records
        .iter()
        .all(|(o, v, _)| *v == value(*o as u64, 50)));
    let seen = consume_from(
        &bs,
        &topic,
        Offset::Offset(29),
        "error",
        1,
        true,
        Duration::from_secs(30),
    )?;
    ensure!(
        seen.records.is_empty() && seen.errors.iter().any(is_out_of_range),
        "at 29: {seen:?}"
    );

    // Writes continue at the old log end of the emptied partition.
    let reports = produce_records(&producer, &topic, 1, 2000, &[(None, value(2000, 50))])?;
    ensure!(
        reports[0].offset == 50,
        "after DeleteRecords to the end: offset {}",
        reports[0].offset
    );
    ensure!(low_high(&bs, &topic, 1)? == (50, 51));
    drop(producer);
    broker.shutdown()
}

/// A batch whose timestamps are i64::MIN+1 (any client can send one) is simply very old:
/// retention drops it, and it does not stop retention for the topics after it (the age
/// computation once overflowed there, which panicked the pass in debug builds, every
/// pass, so later topics were never trimmed).
#[test]
fn extreme_client_timestamps_do_not_stop_retention() -> Result<()> {
    use kafka_protocol::messages::ProduceRequest;
    use strata_storage::batch::BatchBuilder;
    use strata_tests::raw;
    let dir = tempfile::tempdir()?;
    let broker = start_broker(&dir.path().join("data"), |_| {})?;
    let bs = broker.bootstrap();
    // Passes visit topics in name order: the extreme one comes first.
    let extreme = format!("a-{}", topic_name("extreme-ts"));
    let later = format!("z-{}", topic_name("after-extreme"));
    // Segments of one batch each, so the sealed ones can go.
    let configs = [("retention.ms", "1000"), ("segment.bytes", "1024")];
    create_with(&bs, &extreme, 1, &configs)?;
    create_with(&bs, &later, 1, &configs)?;
    let version = raw::best_version::<ProduceRequest>(broker.addr())?;
    let mut s = raw::connect(broker.addr())?;
    let ts = i64::MIN + 1;
    for (i, topic) in [&extreme, &later].into_iter().enumerate() {
        for j in 0..3 {
            let stamp = if topic == &extreme {
                ts
            } else {
                now_ms() - 60_000
            };
            let b = BatchBuilder::new(stamp)
                .record(stamp, None, &[b'x'; 900])
                .build();
            let r = raw::produce(&mut s, version, (i * 10 + j) as i32, topic, 0, b)?;
            ensure!(r.error_code == 0, "produce to {topic}: {r:?}");
        }
    }
    wait_watermarks(
        &bs,
        &later,
        0,
        RETENTION_WAIT,
        "retention of the later topic",
        |lo, _| lo > 0,
    )?;
    wait_watermarks(
        &bs,
        &extreme,
        0,
        RETENTION_WAIT,
        "retention of the extreme topic",
        |lo, _| lo > 0,
    )?;
    broker.shutdown()
}
