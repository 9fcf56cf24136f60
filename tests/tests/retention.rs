//! Retention, replay and topic configs as users see them through librdkafka (the rdkafka
//! crate, including its AdminClient): retention by time and by size moving the log start
//! offset, consumers positioned before it resetting per `auto.offset.reset`, DeleteRecords,
//! `offsets_for_times` with non-monotonic CreateTime timestamps (also after retention and
//! DeleteRecords), DescribeConfigs / AlterConfigs / CreateTopics with configs (sources,
//! validation, persistence across a restart, changes in force at once), LogAppendTime
//! topics, and a short soak with retention on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigEntry, ConfigSource, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use strata_broker::Config;
use strata_tests::*;

// ------------------------------------------------------------------ local helpers

/// Generous deadline for anything retention has to do (passes run every 200 ms here).
const RETENTION_WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(CALL_TIMEOUT))
        .request_timeout(Some(CALL_TIMEOUT))
}

/// An in-process broker on a data directory the test can measure; retention passes every
/// 200 ms unless `configure` says otherwise.
fn start_broker(dir: &Path, configure: impl FnOnce(&mut Config)) -> Result<InProcessBroker> {
    let mut config = test_config(dir)?;
    config.retention_check_interval_ms = 200;
    configure(&mut config);
    InProcessBroker::start(config)
}

fn create_with(bs: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) -> Result<()> {
    try_create_topic_with(bs, topic, partitions, configs)?
        .map_err(|c| anyhow!("CreateTopics {topic} with {configs:?}: {c:?}"))
}

/// Bytes under `dir` by kind: RocksDB write-ahead log files (`*.log` other than `LOG*`),
/// table and blob files (`*.sst`, `*.blob`), and everything else.
#[derive(Debug, Default, Clone, Copy)]
struct DiskUse {
    wal: u64,
    tables: u64,
    other: u64,
}

impl DiskUse {
    fn total(&self) -> u64 {
        self.wal + self.tables + self.other
    }
}

fn disk_use(dir: &Path) -> DiskUse {
    let mut u = DiskUse::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return u;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let d = disk_use(&e.path());
            u.wal += d.wal;
            u.tables += d.tables;
            u.other += d.other;
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") && !name.starts_with("LOG") {
            u.wal += m.len();
        } else if name.ends_with(".sst") || name.ends_with(".blob") {
            u.tables += m.len();
        } else {
            u.other += m.len();
        }
    }
    u
}

/// Sends `(timestamp, value)` records to one partition (ids from `first_id`), flushes, and
/// returns the delivery reports; fails unless all were acknowledged.
fn produce_records(
    producer: &RecordingProducer,
    topic: &str,
    partition: i32,
    first_id: u64,
    records: &[(Option<i64>, Vec<u8>)],
) -> Result<Vec<Delivery>> {
    let before = producer.context().reported();
    for (i, (ts, value)) in records.iter().enumerate() {
        let id = first_id + i as u64;
        let key = format!("key-{id}");
        let mut r =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, Box::new((id, Instant::now())))
                .partition(partition)
                .key(key.as_bytes())
                .payload(&value[..]);
        if let Some(ts) = ts {
            r = r.timestamp(*ts);
        }
        send(producer, r)?;
    }
    producer.flush(Duration::from_secs(120))?;
    wait_reports(producer, before + records.len() as u64, CONSUME_TIMEOUT)?;
    let mut reports = producer.context().take();
    reports.sort_by_key(|d| d.id);
    if let Some(bad) = reports.iter().find(|d| d.error.is_some()) {
        bail!(
            "message {} to {topic}/{partition} failed: {:?}",
            bad.id,
            bad.error
        );
    }
    Ok(reports)
}

/// Values `"v-<id>:"` padded to `size` bytes, so consumed records can be matched to ids.
fn value(id: u64, size: usize) -> Vec<u8> {
    let mut v = format!("v-{id}:").into_bytes();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn value_id(v: &[u8]) -> Option<u64> {
    let rest = v.strip_prefix(b"v-")?;
    let end = rest.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Producer that batches whatever is sent before a flush into one batch per partition.
fn batching_producer(bs: &str) -> Result<RecordingProducer> {
    let mut cfg = producer_config(bs);
    cfg.set("linger.ms", "1000")
        .set("batch.num.messages", "100000");
    recording_producer(&cfg)
}

/// What one consumer saw: records `(offset, value, timestamp)` and errors, in order.
#[derive(Debug, Default)]
struct Seen {
    records: Vec<(i64, Vec<u8>, Timestamp)>,
    errors: Vec<KafkaError>,
}

/// Assigns partition 0 of `topic` at `start` with the given `auto.offset.reset` and polls
/// until `want` records arrived, `stop_on_error` and an error arrived, or `timeout`.
fn consume_from(
    bs: &str,
    topic: &str,
    start: Offset,
    reset: &str,
    want: usize,
    stop_on_error: bool,
    timeout: Duration,
) -> Result<Seen> {
    let mut cfg = consumer_config(bs);
    cfg.set("auto.offset.reset", reset);
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, start)?;
    consumer.assign(&tpl)?;
    let mut seen = Seen::default();
    let deadline = Instant::now() + timeout;
    while seen.records.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => seen.records.push((
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
                m.timestamp(),
            )),
            Some(Err(e)) => {
                seen.errors.push(e);
                if stop_on_error {
                    break;
                }
            }
        }
    }
    Ok(seen)
}

fn is_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

fn low_high(bs: &str, topic: &str, p: i32) -> Result<(i64, i64)> {
    Ok(new_consumer(bs)?.fetch_watermarks(topic, p, CALL_TIMEOUT)?)
}

/// Polls the watermarks of partition `p` until `done(low, high)`; returns the last pair and
/// every distinct low watermark seen on the way.
fn wait_watermarks(
    bs: &str,
    topic: &str,
    p: i32,
    timeout: Duration,
    what: &str,
    done: impl Fn(i64, i64) -> bool,
) -> Result<((i64, i64), Vec<i64>)> {
    let consumer = new_consumer(bs)?;
    let deadline = Instant::now() + timeout;
    let mut lows = Vec::new();
    loop {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, CALL_TIMEOUT)?;
        if lows.last() != Some(&lo) {
            lows.push(lo);
        }
        if done(lo, hi) {
            return Ok(((lo, hi), lows));
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached within {timeout:?}; watermarks ({lo}, {hi}), lows seen {lows:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `offsets_for_times` for one partition: `Some(offset)`, or `None` when librdkafka answers
/// "end" (the broker's -1: no record that recent).
fn offset_for_time(consumer: &BaseConsumer, topic: &str, p: i32, ts: i64) -> Result<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
    let r = consumer.offsets_for_times(tpl, CALL_TIMEOUT)?;
    let e = r
        .find_partition(topic, p)
        .ok_or_else(|| anyhow!("no answer for {topic}/{p}"))?;
    e.error()
        .with_context(|| format!("offsets_for_times {topic}/{p} @ {ts}"))?;
    match e.offset() {
        Offset::Offset(o) => Ok(Some(o)),
        Offset::End => Ok(None),
        other => bail!("offsets_for_times {topic}/{p} @ {ts}: unexpected {other:?}"),
    }
}

/// The answer Kafka defines: the first offset at or after `log_start` whose timestamp is
/// >= `target`.
fn expected_offset(ts_by_offset: &[i64], log_start: i64, target: i64) -> Option<i64> {
    ts_by_offset
        .iter()
        .enumerate()
        .skip(log_start as usize)
        .find(|&(_, &t)| t >= target)
        .map(|(o, _)| o as i64)
}

fn admin_client(bs: &str) -> Result<AdminClient<DefaultClientContext>> {
    admin(bs)
}

fn describe(bs: &str, spec: ResourceSpecifier<'_>) -> Result<BTreeMap<String, ConfigEntry>> {
    let admin = admin_client(bs)?;
    let mut results = futures::executor::block_on(admin.describe_configs([&spec], &admin_opts()))?;
    ensure!(
        results.len() == 1,
        "DescribeConfigs: {} results",
        results.len()
    );
    let r = results
        .remove(0)
        .map_err(|c| anyhow!("DescribeConfigs {spec:?}: {c:?}"))?;
    Ok(r.entries.into_iter().map(|e| (e.name.clone(), e)).collect())
}

fn describe_topic(bs: &str, topic: &str) -> Result<BTreeMap<String, ConfigEntry>> {
    describe(bs, ResourceSpecifier::Topic(topic))
}

fn config_value(bs: &str, topic: &str, name: &str) -> Result<Option<String>> {
    let entries = describe_topic(bs, topic)?;
    Ok(entries.get(name).and_then(|e| e.value.clone()))
}

/// AlterConfigs (replaces the topic's whole set of overrides); the per-resource result.
fn alter_topic(
    bs: &str,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let admin = admin_client(bs)?;
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for &(k, v) in configs {
        alter = alter.set(k, v);
    }
    let opts = admin_opts().validate_only(validate_only);
    let results = futures::executor::block_on(admin.alter_configs([&alter], &opts))?;
    match results.as_slice() {
        [Ok(OwnedResourceSpecifier::Topic(t))] if t == topic => Ok(Ok(())),
        [Err((_, code))] => Ok(Err(*code)),
        other => bail!("AlterConfigs returned {other:?}"),
    }
}

fn delete_records(
    bs: &str,
    topic: &str,
    offsets: &[(i32, Offset)],
) -> Result<Vec<(i32, Result<i64, String>)>> {
    let admin = admin_client(bs)?;
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, o)?;
    }
    let out = futures::executor::block_on(admin.delete_records(&tpl, &admin_opts()))?;
    Ok(out
        .elements()
        .iter()
        .map(|e| {
            let r = match (e.error(), e.offset()) {
                (Err(err), _) => Err(err.to_string()),
                (Ok(()), Offset::Offset(o)) => Ok(o),
                (Ok(()), other) => Err(format!("offset {other:?}")),
            };
            (e.partition(), r)
        })
        .collect())
}

/// One record to partition 0, delivery report back (for MESSAGE_TOO_LARGE checks).
fn produce_one(bs: &str, topic: &str, size: usize) -> Result<Delivery> {
    let mut cfg = producer_config(bs);
    cfg.set("message.max.bytes", "2000000")
        .set("linger.ms", "0")
        .set("retries", "0");
    let producer = recording_producer(&cfg)?;
    let v = vec![b'x'; size];
    let r = BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, Box::new((0, Instant::now())))
        .partition(0)
        .payload(&v[..]);
    send(&producer, r)?;
    producer.flush(Duration::from_secs(60))?;
    wait_reports(&producer, 1, Duration::from_secs(60))?;
    producer
        .context()
        .take()
        .pop()
        .ok_or_else(|| anyhow!("no delivery report"))
}

fn too_large(d: &Delivery) -> bool {
    d.error
        .as_deref()
        .is_some_and(|e| e.contains(&RDKafkaErrorCode::MessageSizeTooLarge.to_string()))
}

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

// ------------------------------------------------------------------ configs

fn entry<'a>(entries: &'a BTreeMap<String, ConfigEntry>, name: &str) -> Result<&'a ConfigEntry> {
    entries.get(name).ok_or_else(|| {
        anyhow!(
            "{name} missing from DescribeConfigs; have {:?}",
            entries.keys().collect::<Vec<_>>()
        )
    })
}

/// DescribeConfigs on a topic: every topic config, with its value and source — the built-in
/// default, a broker setting that differs from it, or the topic's own override.
#[test]
fn describe_configs_shows_defaults_overrides_and_sources() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A non-default broker retention: topics without an override inherit it.
    let broker = start_broker(dir.path(), |c| c.retention_ms = 3_600_000)?;
    let bs = broker.bootstrap();
    let topic = topic_name("describe");
    create_with(
        &bs,
        &topic,
        1,
        &[("segment.ms", "5000"), ("max.message.bytes", "30000")],
    )?;
    let entries = describe_topic(&bs, &topic)?;
    for name in [
        "cleanup.policy",
        "retention.ms",
        "retention.bytes",
        "segment.bytes",
        "segment.ms",
        "max.message.bytes",
        "message.timestamp.type",
        "min.insync.replicas",
        "compression.type",
    ] {
        entry(&entries, name)?;
    }
    let check = |name: &str, value: &str, source: ConfigSource, is_default: bool| -> Result<()> {
        let e = entry(&entries, name)?;
        ensure!(
            e.value.as_deref() == Some(value)
                && e.source == source
                && e.is_default == is_default
                && !e.is_read_only
                && !e.is_sensitive,
            "{name}: {e:?}; expected value {value}, source {source:?}, is_default {is_default}"
        );
        Ok(())
    };
    check("segment.ms", "5000", ConfigSource::DynamicTopic, false)?;
    check(
        "max.message.bytes",
        "30000",
        ConfigSource::DynamicTopic,
        false,
    )?;
    check("retention.ms", "3600000", ConfigSource::StaticBroker, false)?;
    check("retention.bytes", "-1", ConfigSource::Default, true)?;
    check("cleanup.policy", "delete", ConfigSource::Default, true)?;
    check(
        "message.timestamp.type",
        "CreateTime",
        ConfigSource::Default,
        true,
    )?;
    check(
        "segment.bytes",
        &(1u64 << 30).to_string(),
        ConfigSource::Default,
        true,
    )?;

    // An unknown topic has no configs. (The rdkafka crate drops per-resource error codes of
    // DescribeConfigs; the Python suite checks UNKNOWN_TOPIC_OR_PARTITION itself.)
    let admin = admin_client(&bs)?;
    let missing = topic_name("no-such-topic");
    let r = futures::executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(&missing)], &admin_opts()),
    )?;
    ensure!(
        matches!(
            r.as_slice(),
            [Err(RDKafkaErrorCode::UnknownTopicOrPartition)]
        ) || matches!(r.as_slice(), [Ok(c)] if c.entries.is_empty()),
        "DescribeConfigs of a missing topic: {r:?}"
    );
    broker.shutdown()
}

/// DescribeConfigs on the broker resource lists the broker's settings, all read-only, with
/// their values; AlterConfigs on it is refused.
#[test]
fn describe_configs_on_the_broker_lists_read_only_settings() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |c| c.retention_bytes = 123_456_789)?;
    let bs = broker.bootstrap();
    let entries = describe(&bs, ResourceSpecifier::Broker(1))?;
    let want = [
        ("log.retention.check.interval.ms", "200"),
        ("log.retention.bytes", "123456789"),
        ("log.retention.ms", "604800000"),
        ("message.max.bytes", "1048588"),
        ("log.cleanup.policy", "delete"),
        ("num.partitions", "1"),
    ];
    for (name, value) in want {
        let e = entry(&entries, name)?;
        ensure!(
            e.value.as_deref() == Some(value),
            "{name}: {e:?}, expected {value}"
        );
    }
    let writable: Vec<&String> = entries
        .values()
        .filter(|e| !e.is_read_only)
        .map(|e| &e.name)
        .collect();
    ensure!(
        writable.is_empty(),
        "broker settings not read-only: {writable:?}"
    );
    let e = entry(&entries, "log.retention.bytes")?;
    ensure!(
        e.source == ConfigSource::StaticBroker,
        "changed broker setting: {e:?}"
    );
    let e = entry(&entries, "log.retention.ms")?;
    ensure!(
        e.source == ConfigSource::Default && e.is_default,
        "built-in broker setting: {e:?}"
    );
    ensure!(
        entries.contains_key("log.dirs") && entries.contains_key("listeners"),
        "{:?}",
        entries.keys()
    );

    // AlterConfigs on the broker changes nothing. (The rdkafka crate reports every
    // AlterConfigs resource as a success whatever the broker answered; the error code is
    // checked by the Python suite.)
    let admin = admin_client(&bs)?;
    let alter = AlterConfig::new(ResourceSpecifier::Broker(1)).set("log.retention.ms", "1000");
    futures::executor::block_on(admin.alter_configs([&alter], &admin_opts()))?;
    let after = describe(&bs, ResourceSpecifier::Broker(1))?;
    let e = entry(&after, "log.retention.ms")?;
    ensure!(
        e.value.as_deref() == Some("604800000"),
        "after AlterConfigs on the broker: {e:?}"
    );
    broker.shutdown()
}

/// Unknown names and bad values are INVALID_CONFIG and change nothing; cleanup.policy=compact
/// is refused (no compaction); validate_only changes nothing.
#[test]
fn alter_configs_validates_names_and_values() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let topic = topic_name("alter-bad");
    create_with(&bs, &topic, 1, &[("retention.ms", "86400000")])?;
    let bad: &[&[(&str, &str)]] = &[
        &[("no.such.config", "1")],
        &[("retention.ms", "soon")],
        &[("retention.ms", "-5")],
        &[("segment.bytes", "99999999999")],
        &[("cleanup.policy", "compact")],
        &[("cleanup.policy", "delete,compact")],
        &[("message.timestamp.type", "WallClock")],
        &[("remote.storage.enable", "maybe")],
        // One bad entry spoils the whole request.
        &[("retention.ms", "1000"), ("max.message.bytes", "lots")],
    ];
    // The rdkafka crate reports every AlterConfigs resource as a success (it never reads
    // the per-resource error; the Python suite checks INVALID_CONFIG and its message), so
    // what is checked here is the effect: AlterConfigs replaces every override, so any of
    // these being applied would drop retention.ms=86400000 or change it.
    for configs in bad {
        let r = alter_topic(&bs, &topic, configs, false)?;
        ensure!(
            matches!(r, Ok(()) | Err(RDKafkaErrorCode::InvalidConfig)),
            "AlterConfigs {configs:?}: {r:?}"
        );
        let e = describe_topic(&bs, &topic)?;
        ensure!(
            e["retention.ms"].value.as_deref() == Some("86400000")
                && e["retention.ms"].source == ConfigSource::DynamicTopic,
            "after refused AlterConfigs {configs:?}: retention.ms {:?}",
            e["retention.ms"]
        );
        for (name, _) in configs.iter() {
            if let Some(c) = e.get(*name) {
                ensure!(
                    c.source != ConfigSource::DynamicTopic || *name == "retention.ms",
                    "{name} applied: {c:?}"
                );
            }
        }
    }

    // validate_only: accepted, not applied.
    ensure!(alter_topic(&bs, &topic, &[("retention.ms", "1000")], true)? == Ok(()));
    ensure!(
        config_value(&bs, &topic, "retention.ms")?.as_deref() == Some("86400000"),
        "validate_only applied the change"
    );

    // Valid values, including the edges.
    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
                ("cleanup.policy", "delete")
            ],
            false
        )? == Ok(())
    );
    let e = describe_topic(&bs, &topic)?;
    ensure!(
        e["retention.ms"].value.as_deref() == Some("-1")
            && e["retention.ms"].source == ConfigSource::DynamicTopic,
        "{:?}",
        e["retention.ms"]
    );

    // A topic that does not exist.
    let missing = topic_name("alter-missing");
    let _ = alter_topic(&bs, &missing, &[("retention.ms", "1000")], false)?;
    let md = new_consumer(&bs)?.fetch_metadata(Some(&missing), CALL_TIMEOUT)?;
    ensure!(
        md.topics()
            .first()
            .and_then(|t| t.error())
            .map(RDKafkaErrorCode::from)
            == Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "AlterConfigs created {missing}"
    );
    broker.shutdown()
}

/// CreateTopics with configs (the topic shows them as overrides) and with validate_only
/// (nothing is created; bad configs are still refused).
#[test]
fn create_topics_with_configs_and_validate_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let admin = admin_client(&bs)?;
    let topic = topic_name("create-cfg");
    let new = NewTopic::new(&topic, 2, TopicReplication::Fixed(1))
        .set("retention.ms", "7200000")
        .set("cleanup.policy", "delete")
        .set("segment.bytes", "1048576");
    let opts = admin_opts().validate_only(true);
    let r = futures::executor::block_on(admin.create_topics([&new], &opts))?;
    ensure!(
        matches!(r.as_slice(), [Ok(t)] if *t == topic),
        "validate_only create: {r:?}"
    );
    let md = new_consumer(&bs)?.fetch_metadata(Some(&topic), CALL_TIMEOUT)?;
    ensure!(
        md.topics()
            .first()
            .and_then(|t| t.error())
            .map(RDKafkaErrorCode::from)
            == Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "validate_only created the topic"
    );
    let bad = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let r = futures::executor::block_on(admin.create_topics([&bad], &opts))?;
    ensure!(
        matches!(r.as_slice(), [Err((_, RDKafkaErrorCode::InvalidConfig))]),
        "validate_only with compact: {r:?}"
    );

    let r = futures::executor::block_on(admin.create_topics([&new], &admin_opts()))?;
    ensure!(matches!(r.as_slice(), [Ok(_)]), "create: {r:?}");
    let e = describe_topic(&bs, &topic)?;
    for (name, value) in [
        ("retention.ms", "7200000"),
        ("cleanup.policy", "delete"),
        ("segment.bytes", "1048576"),
    ] {
        ensure!(
            e[name].value.as_deref() == Some(value) && e[name].source == ConfigSource::DynamicTopic,
            "{name}: {:?}",
            e[name]
        );
    }
    ensure!(e["retention.bytes"].source == ConfigSource::Default);
    ensure!(partition_count(&bs, &topic)? == 2);
    broker.shutdown()
}

/// Config changes are in force at once (max.message.bytes lowered: a big record is
/// MESSAGE_TOO_LARGE right away) and persist across a graceful restart (SIGTERM, same data
/// directory); AlterConfigs replaces the whole set, so leaving a config out resets it.
#[test]
fn config_changes_apply_at_once_and_persist_across_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(
        &data,
        free_port()?,
        &[("STRATA_RETENTION_CHECK_INTERVAL_MS", "200")],
    )?;
    let bs = broker.bootstrap();
    let topic = topic_name("persist");
    create_topic(&bs, &topic, 1)?;
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(
        d.error.is_none() && d.offset == 0,
        "30 kB with the default limit: {d:?}"
    );

    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[("max.message.bytes", "20000"), ("retention.ms", "7200000")],
            false
        )? == Ok(())
    );
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(
        too_large(&d),
        "30 kB right after max.message.bytes=20000: {d:?}"
    );
    let d = produce_one(&bs, &topic, 10_000)?;
    ensure!(d.error.is_none() && d.offset == 1, "10 kB: {d:?}");

    let status = broker.terminate()?;
    ensure!(
        status.success(),
        "SIGTERM exit {status}; log:\n{}",
        broker.log_tail(4000)
    );
    broker.restart()?;

    let e = describe_topic(&bs, &topic)?;
    for (name, value) in [("max.message.bytes", "20000"), ("retention.ms", "7200000")] {
        ensure!(
            e[name].value.as_deref() == Some(value) && e[name].source == ConfigSource::DynamicTopic,
            "after restart {name}: {:?}",
            e[name]
        );
    }
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(too_large(&d), "30 kB after restart: {d:?}");

    // Replace: only retention.ms stays overridden; max.message.bytes is back to the default.
    ensure!(alter_topic(&bs, &topic, &[("retention.ms", "7200000")], false)? == Ok(()));
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(
        d.error.is_none() && d.offset == 2,
        "30 kB after max.message.bytes was dropped: {d:?}"
    );
    let e = describe_topic(&bs, &topic)?;
    ensure!(
        e["max.message.bytes"].source == ConfigSource::Default
            && e["max.message.bytes"].value.as_deref() == Some("1048588"),
        "{:?}",
        e["max.message.bytes"]
    );

    // Retention set at run time applies too: everything is older than 1 s soon.
    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[("retention.ms", "1000"), ("segment.ms", "100")],
            false
        )? == Ok(())
    );
    wait_watermarks(
        &bs,
        &topic,
        0,
        RETENTION_WAIT,
        "retention.ms=1000 set by AlterConfigs",
        |lo, hi| lo == 3 && hi == 3,
    )?;

    // And after another restart the log start is where retention left it.
    let status = broker.terminate()?;
    ensure!(status.success(), "second SIGTERM exit {status}");
    broker.restart()?;
    ensure!(
        low_high(&bs, &topic, 0)? == (3, 3),
        "after restart: {:?}",
        low_high(&bs, &topic, 0)?
    );
    let status = broker.terminate()?;
    ensure!(status.success(), "third SIGTERM exit {status}");
    Ok(())
}

/// A numeric value with surrounding blanks (as a script might send it) is either refused
/// or applied: AlterConfigs must not accept `max.message.bytes=" 20000"` and then go on
/// accepting 30 kB records. (Kafka trims numeric config values and enforces them.)
#[test]
fn padded_numeric_config_values_are_applied_or_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    for padded in [" 20000", "20000 "] {
        let topic = topic_name("padded");
        create_topic(&bs, &topic, 1)?;
        let r = alter_topic(&bs, &topic, &[("max.message.bytes", padded)], false)?;
        ensure!(
            matches!(r, Ok(()) | Err(RDKafkaErrorCode::InvalidConfig)),
            "AlterConfigs: {r:?}"
        );
        let shown = config_value(&bs, &topic, "max.message.bytes")?;
        let applied = shown.as_deref().map(str::trim) == Some("20000");
        let d = produce_one(&bs, &topic, 30_000)?;
        if applied {
            ensure!(
                too_large(&d),
                "max.message.bytes={padded:?} accepted (DescribeConfigs shows {shown:?}) but a 30 kB record was stored: {d:?}"
            );
        } else {
            ensure!(
                shown.as_deref() == Some("1048588"),
                "refused, yet shows {shown:?}"
            );
            ensure!(d.error.is_none(), "limit unchanged, yet {d:?}");
        }
    }
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
        free_port()?,
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
