//! Replay from a timestamp (`offsets_for_times`) and LogAppendTime topics.

use super::*;

// ------------------------------------------------------------------ replay from a timestamp

/// Batches with non-monotonic CreateTime timestamps (inside batches and between them), in
/// one segment, in one segment per batch, and zstd-compressed: for every target, `offsets_for_times` gives the
/// first offset whose timestamp is >= target; after every record it gives "end".
#[test]
fn offsets_for_times_with_non_monotonic_timestamps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    let t0 = now_ms() - 60_000;
    let batches: Vec<Vec<i64>> = vec![
        vec![100, 300, 200],
        vec![50, 250, 400],
        vec![400, 150],
        vec![1000],
        vec![20, 999, 1000, 30],
    ];
    let ts_by_offset: Vec<i64> = batches.iter().flatten().map(|d| t0 + d).collect();
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let cases: [Case; 3] = [
        ("one-segment", &[], "none"),
        ("segment-per-batch", &[("segment.ms", "1")], "none"),
        ("zstd", &[], "zstd"),
    ];
    for (label, configs, codec) in cases {
        let topic = topic_name(&format!("times-{label}"));
        create_with(&bs, &topic, 1, configs)?;
        let mut cfg = producer_config(&bs);
        cfg.set("linger.ms", "1000")
            .set("batch.num.messages", "100000")
            .set("compression.type", codec);
        let producer = recording_producer(&cfg)?;
        let mut id = 0u64;
        for b in &batches {
            let recs: Vec<_> = b.iter().map(|d| (Some(t0 + d), value(0, 10))).collect();
            produce_records(&producer, &topic, 0, id, &recs)?;
            id += b.len() as u64;
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(producer);
        let consumer = new_consumer(&bs)?;
        let mut wrong = Vec::new();
        for d in (0..=1001)
            .step_by(1)
            .filter(|d| d % 10 == 0 || [1, 19, 21, 49, 51, 998, 999, 1001].contains(d))
        {
            let target = t0 + d;
            let want = expected_offset(&ts_by_offset, 0, target);
            let got = offset_for_time(&consumer, &topic, 0, target)?;
            if got != want {
                wrong.push(format!("t0+{d}: got {got:?}, want {want:?}"));
            }
        }
        ensure!(
            wrong.is_empty(),
            "{label}: {} wrong answers: {wrong:?}",
            wrong.len()
        );
        ensure!(
            offset_for_time(&consumer, &topic, 0, t0 + 5_000)?.is_none(),
            "{label}: after every record"
        );
        // Consumers positioned there read the records from that offset with their timestamps.
        let start =
            offset_for_time(&consumer, &topic, 0, t0 + 401)?.ok_or_else(|| anyhow!("none"))?;
        let seen = consume_from(
            &bs,
            &topic,
            Offset::Offset(start),
            "error",
            ts_by_offset.len() - start as usize,
            false,
            Duration::from_secs(60),
        )?;
        let got: Vec<(i64, Timestamp)> = seen.records.iter().map(|r| (r.0, r.2)).collect();
        let want: Vec<(i64, Timestamp)> = (start..ts_by_offset.len() as i64)
            .map(|o| (o, Timestamp::CreateTime(ts_by_offset[o as usize])))
            .collect();
        ensure!(
            got == want,
            "{label}: replay from {start}: {got:?} != {want:?}"
        );
    }
    broker.shutdown()
}

/// Retention drops old segments: the answers stay right for the records that remain (the
/// first remaining offset for targets before them), also when timestamps are not monotonic
/// across the retained segments.
#[test]
fn offsets_for_times_after_retention() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("times-ret");
    // One segment per batch; one hour of retention.
    create_with(
        &bs,
        &topic,
        1,
        &[("segment.ms", "1"), ("retention.ms", "3600000")],
    )?;
    let now = now_ms();
    let (h, m) = (3_600_000i64, 60_000i64);
    let batches: Vec<Vec<i64>> = vec![
        vec![now - 3 * h, now - 3 * h + 5], // 0, 1: expired
        vec![now - 10 * m, now - 2 * h],    // 2, 3: newest record is recent: kept
        vec![now - 150 * m],                // 4: expired, but behind a kept segment
        vec![now - 5 * m, now - 6 * m],     // 5, 6
    ];
    let ts_by_offset: Vec<i64> = batches.iter().flatten().copied().collect();
    let producer = batching_producer(&bs)?;
    let mut id = 0u64;
    for b in &batches {
        let recs: Vec<_> = b.iter().map(|&t| (Some(t), value(id, 10))).collect();
        produce_records(&producer, &topic, 0, id, &recs)?;
        id += b.len() as u64;
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(producer);
    wait_watermarks(
        &bs,
        &topic,
        0,
        RETENTION_WAIT,
        "retention drops the first segment",
        |lo, _| lo == 2,
    )?;
    // Nothing more goes: the next segment's newest record is recent.
    std::thread::sleep(Duration::from_secs(1));
    ensure!(
        low_high(&bs, &topic, 0)? == (2, 7),
        "watermarks {:?}",
        low_high(&bs, &topic, 0)?
    );

    let consumer = new_consumer(&bs)?;
    let mut wrong = Vec::new();
    let targets = [
        now - 4 * h,
        now - 3 * h,
        now - 2 * h - 1,
        now - 2 * h,
        now - 2 * h + 1,
        now - 150 * m,
        now - 10 * m,
        now - 10 * m + 1,
        now - 6 * m,
        now - 5 * m,
        now - 5 * m + 1,
        now + h,
    ];
    for target in targets {
        let want = expected_offset(&ts_by_offset, 2, target);
        let got = offset_for_time(&consumer, &topic, 0, target)?;
        if got != want {
            wrong.push(format!(
                "now{:+}ms: got {got:?}, want {want:?}",
                target - now
            ));
        }
    }
    ensure!(wrong.is_empty(), "after retention: {wrong:?}");
    broker.shutdown()
}

/// DeleteRecords to an offset inside a batch whose matching records all lie before the new
/// log start: the answer is the first matching record at or after the log start (here in
/// the next batch of the same segment), as Kafka answers — not "none".
#[test]
fn offsets_for_times_after_delete_records_inside_a_batch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("times-delrec");
    create_topic(&bs, &topic, 1)?;
    let now = now_ms();
    let (h, m) = (3_600_000i64, 60_000i64);
    // One batch: 0 (newest), 1, 2 (old); then a batch with 3.
    let batches: Vec<Vec<i64>> = vec![
        vec![now - 10 * m, now - 2 * h, now - 2 * h],
        vec![now - 5 * m],
    ];
    let ts_by_offset: Vec<i64> = batches.iter().flatten().copied().collect();
    let producer = batching_producer(&bs)?;
    let mut id = 0u64;
    for b in &batches {
        let recs: Vec<_> = b.iter().map(|&t| (Some(t), value(id, 10))).collect();
        produce_records(&producer, &topic, 0, id, &recs)?;
        id += b.len() as u64;
    }
    drop(producer);
    let r = delete_records(&bs, &topic, &[(0, Offset::Offset(1))])?;
    ensure!(r == vec![(0, Ok(1))], "DeleteRecords: {r:?}");
    let consumer = new_consumer(&bs)?;
    let mut wrong = Vec::new();
    for target in [
        now - 3 * h,
        now - 2 * h,
        now - 2 * h + 1,
        now - 10 * m,
        now - 5 * m,
        now - 5 * m + 1,
    ] {
        let want = expected_offset(&ts_by_offset, 1, target);
        let got = offset_for_time(&consumer, &topic, 0, target)?;
        if got != want {
            wrong.push(format!(
                "now{:+}ms: got {got:?}, want {want:?}",
                target - now
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "log start 1 inside the first batch: {wrong:?}"
    );
    broker.shutdown()
}

// ------------------------------------------------------------------ LogAppendTime

/// A broker whose default is LogAppendTime (STRATA_MESSAGE_TIMESTAMP_TYPE): records carry
/// the broker's clock, typed LogAppendTime, whatever CreateTime the producer set;
/// DescribeConfigs shows the broker-level value; a topic overriding it to CreateTime keeps
/// the producer's timestamps, and switching it back applies to new records only.
#[test]
fn log_append_time_from_broker_default_and_topic_override() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(
        &data,
        0,
        &[("STRATA_MESSAGE_TIMESTAMP_TYPE", "LogAppendTime")],
    )?;
    let bs = broker.bootstrap();
    let topic = topic_name("lat");
    create_topic(&bs, &topic, 1)?;
    let e = describe_topic(&bs, &topic)?;
    ensure!(
        e["message.timestamp.type"].value.as_deref() == Some("LogAppendTime")
            && e["message.timestamp.type"].source == ConfigSource::StaticBroker,
        "{:?}",
        e["message.timestamp.type"]
    );
    let producer = recording_producer(&producer_config(&bs))?;
    let old = now_ms() - 3_600_000;
    let before = now_ms();
    let recs: Vec<_> = (0..10)
        .map(|i| (Some(old + i), value(i as u64, 20)))
        .collect();
    produce_records(&producer, &topic, 0, 0, &recs)?;
    let after = now_ms();
    let seen = consume_from(
        &bs,
        &topic,
        Offset::Offset(0),
        "error",
        10,
        false,
        Duration::from_secs(60),
    )?;
    ensure!(seen.records.len() == 10, "{seen:?}");
    for (o, _, ts) in &seen.records {
        ensure!(
            matches!(ts, Timestamp::LogAppendTime(t) if *t >= before && *t <= after),
            "offset {o}: {ts:?}, expected LogAppendTime within [{before}, {after}]"
        );
    }
    // offsets_for_times uses the broker's timestamps.
    let consumer = new_consumer(&bs)?;
    ensure!(
        offset_for_time(&consumer, &topic, 0, old)? == Some(0),
        "query at the CreateTime"
    );
    ensure!(
        offset_for_time(&consumer, &topic, 0, after + 60_000)?.is_none(),
        "query after the append time"
    );

    // Override to CreateTime: new records keep the producer's timestamps.
    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[("message.timestamp.type", "CreateTime")],
            false
        )? == Ok(())
    );
    let recs: Vec<_> = (0..5)
        .map(|i| (Some(old + 100 + i), value(10 + i as u64, 20)))
        .collect();
    produce_records(&producer, &topic, 0, 10, &recs)?;
    drop(producer);
    let seen = consume_from(
        &bs,
        &topic,
        Offset::Offset(0),
        "error",
        15,
        false,
        Duration::from_secs(60),
    )?;
    ensure!(seen.records.len() == 15, "{seen:?}");
    for (o, _, ts) in &seen.records {
        let ok = if *o < 10 {
            matches!(ts, Timestamp::LogAppendTime(t) if *t >= before && *t <= after)
        } else {
            *ts == Timestamp::CreateTime(old + 100 + (o - 10))
        };
        ensure!(ok, "offset {o}: {ts:?}");
    }
    let status = broker.terminate()?;
    ensure!(status.success(), "SIGTERM exit {status}");
    Ok(())
}
