//! The archive connector (local-directory archive): sealed segments of topics with
//! `remote.storage.enable=true` appear in the archive under the documented keys, in offset
//! order with no gap, holding exactly the records consumers read; other topics are not
//! archived; after a restart the archive continues where it ended, with no duplicate;
//! retention waits for the archive; and consumers read offsets below the local log start
//! from the archive (tiered reads).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use strata_storage::archive::{Archive, PartitionRef};
use strata_tests::archived::{
    archived_records, small_batch_producer, topic_id, wait_archived, wait_manifest,
};
use strata_tests::*;

/// Small segments (the minimum is 1 KiB), so a few hundred KiB of records seal dozens.
const SEGMENT_BYTES: u64 = 16 * 1024;
const MESSAGES: u64 = 600;
const SIZE: usize = 1000;
/// The test records are stamped 2023, long past the default retention.ms (7 days).
const KEEP_FOREVER: (&str, &str) = ("retention.ms", "-1");

fn start(data: &std::path::Path, archive_url: &str) -> Result<InProcessBroker> {
    let mut config = test_config(data)?;
    config.segment_bytes = SEGMENT_BYTES;
    config.archive_interval_ms = 100;
    config.archive_url = Some(archive_url.to_string());
    InProcessBroker::start(config)
}

#[test]
fn sealed_segments_are_archived_in_order_and_resume_after_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let archive_dir = dir.path().join("archive");
    let url = format!("file://{}", archive_dir.display());
    let broker = start(&data, &url)?;
    let bs = broker.bootstrap();
    let topic = topic_name("archived");
    let plain = topic_name("local-only");
    // The test records are stamped 2023: the default retention.ms (7 days) would delete
    // them from the archive as soon as they arrive.
    try_create_topic_with(
        &bs,
        &topic,
        1,
        &[("remote.storage.enable", "true"), KEEP_FOREVER],
    )?
    .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    create_topic(&bs, &plain, 1)?;
    let id = topic_id(&bs, &topic)?;
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &topic, 0..MESSAGES, 1, |_| SIZE)?;
    produce_and_wait(&producer, &plain, 0..MESSAGES, 1, |_| SIZE)?;

    let archive = Archive::open(&url)?;
    let p = PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    };
    // 600 KB in 16 KiB segments: all but the active one seal, so most records get archived.
    let m = wait_archived(&archive, p, MESSAGES as i64 / 2)?;
    let archived = archived_records(&archive, p, &m)?;
    let consumed = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    let consumed = consumed.get(&0).context("partition 0")?;
    ensure!(archived.len() as i64 == m.next_offset(), "dense from 0");
    for ((offset, key, value), rec) in archived.iter().zip(consumed) {
        ensure!(*offset == rec.offset, "offset {offset} vs {}", rec.offset);
        ensure!(key.as_deref() == rec.key.as_deref(), "key at {offset}");
        ensure!(
            value.as_deref() == rec.payload.as_deref(),
            "value at {offset}"
        );
    }
    ensure!(
        !std::fs::read_dir(&archive_dir)?
            .flatten()
            .any(|e| e.file_name().to_string_lossy() == plain),
        "a topic without remote.storage.enable was archived"
    );
    let first = m.clone();
    drop(producer);
    broker.shutdown()?;

    // Restart: the archive continues after what it holds, and holds each segment once.
    let broker = start(&data, &url)?;
    let bs = broker.bootstrap();
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &topic, MESSAGES..2 * MESSAGES, 1, |_| SIZE)?;
    let m = wait_archived(&archive, p, MESSAGES as i64 * 3 / 2)?;
    ensure!(
        m.segments[..first.segments.len()] == first.segments[..],
        "the segments archived before the restart changed"
    );
    let archived = archived_records(&archive, p, &m)?;
    ensure!(archived.len() as i64 == m.next_offset());
    for (i, (offset, ..)) in archived.iter().enumerate() {
        ensure!(*offset == i as i64, "offset {offset} at position {i}");
    }
    println!(
        "{} segments, {} records archived",
        m.segments.len(),
        m.next_offset()
    );
    drop(producer);
    broker.shutdown()
}

/// The local log start of partition 0: ListOffsets EARLIEST_LOCAL (KIP-405, -4), which,
/// unlike EARLIEST, does not reach into the archive.
fn local_log_start(bs: &str, topic: &str) -> Result<i64> {
    raw::list_offset(bs.parse()?, topic, 0, -4)
}

/// Retention never drops a segment of an archived topic before it is in the archive: with
/// the connector not yet run, an expired archived topic keeps everything while a local-only
/// one is trimmed; once the connector has run, the archived segments go too, and the log
/// start stays within what the archive holds.
#[test]
fn retention_waits_for_the_archive() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let url = format!("file://{}", dir.path().join("archive").display());
    let configure = |archive_interval_ms: u64| -> Result<InProcessBroker> {
        let mut config = test_config(&data)?;
        config.segment_bytes = SEGMENT_BYTES;
        config.archive_interval_ms = archive_interval_ms;
        config.archive_url = Some(url.clone());
        config.retention_check_interval_ms = 100;
        InProcessBroker::start(config)
    };
    // An hour: the connector does not run while this broker is up.
    let broker = configure(3_600_000)?;
    let bs = broker.bootstrap();
    let (archived, local) = (topic_name("kept"), topic_name("trimmed"));
    // The test messages are stamped 2023: a minute of (local) retention has long expired
    // them. The archived topic keeps its whole log forever; its local copy for a minute.
    let topics = [
        (
            &archived,
            vec![
                ("remote.storage.enable", "true"),
                ("retention.ms", "-1"),
                ("local.retention.ms", "60000"),
            ],
        ),
        (
            &local,
            vec![
                ("remote.storage.enable", "false"),
                ("retention.ms", "60000"),
            ],
        ),
    ];
    for (t, configs) in &topics {
        try_create_topic_with(&bs, t, 1, configs)?
            .map_err(|c| anyhow::anyhow!("create {t}: {c:?}"))?;
    }
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &archived, 0..MESSAGES, 1, |_| SIZE)?;
    produce_and_wait(&producer, &local, 0..MESSAGES, 1, |_| SIZE)?;
    let log_start = |bs: &str, t: &str| local_log_start(bs, t).map_err(|e| e.to_string());
    wait_until(
        "retention to trim the local-only topic",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match log_start(&bs, &local)? {
            0 => Err("log start 0".into()),
            n => Ok(n),
        },
    )?;
    ensure!(
        log_start(&bs, &archived).map_err(anyhow::Error::msg)? == 0,
        "retention dropped segments of an archived topic that were not archived"
    );
    drop(producer);
    broker.shutdown()?;

    let broker = configure(100)?;
    let bs = broker.bootstrap();
    let id = topic_id(&bs, &archived)?;
    let archive = Archive::open(&url)?;
    let p = PartitionRef {
        topic: &archived,
        topic_id: id,
        partition: 0,
    };
    let m = wait_archived(&archive, p, MESSAGES as i64 / 2)?;
    let start = wait_until(
        "retention to drop the archived segments",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match log_start(&bs, &archived)? {
            0 => Err("log start 0".into()),
            n => Ok(n),
        },
    )?;
    let m2 = wait_archived(&archive, p, m.next_offset())?;
    ensure!(
        start <= m2.next_offset(),
        "log start {start} is past the archive's end {}",
        m2.next_offset()
    );
    // Tiered reads: the earliest offset is the archive's, and librdkafka reading from it gets
    // every record back, those below the local log start from the archive.
    let (low, high) = watermarks(&bs, &archived)?[0];
    ensure!(
        low == 0 && high == MESSAGES as i64,
        "watermarks {low}..{high}"
    );
    let recs = consume_all(&bs, &archived, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..MESSAGES, 1, |_| SIZE)?;
    println!("local log start {start}: offsets 0..{start} read from the archive");
    // Timestamp lookups (librdkafka's offsets_for_times) find archived records too, and the
    // local ones as before.
    for at in [3, start / 2, start + 1] {
        let found = offset_for_time(&bs, &archived, BASE_TIMESTAMP + at)?;
        ensure!(found == at, "offsets_for_times({at}) gave {found}");
    }
    // DeleteRecords below the local log start reaches into the archive: the records below it
    // are gone for readers at once, and the connector deletes the archived segments wholly
    // below it.
    let cut = start / 2 + 1;
    ensure!(
        delete_records(&bs, &archived, cut)? == cut,
        "DeleteRecords low watermark"
    );
    ensure!(
        watermarks(&bs, &archived)?[0].0 == cut,
        "earliest offset after DeleteRecords"
    );
    let recs = consume_all(&bs, &archived, CONSUME_TIMEOUT)?;
    check_dense(&recs[&0], cut, MESSAGES as i64)?;
    ensure!(
        offset_for_time(&bs, &archived, BASE_TIMESTAMP + 3)? == cut,
        "lookup below the cut"
    );
    let m = wait_manifest(
        &archive,
        p,
        "the connector to delete the archived segments below the cut",
        |m| match m.segments.first() {
            Some(s) if s.last_offset >= cut && m.deleted_below == cut => Ok(()),
            other => Err(format!(
                "first segment {other:?}, deleted below {}",
                m.deleted_below
            )),
        },
    )?;
    ensure!(m.segments[0].base_offset <= cut);
    broker.shutdown()
}

/// DeleteRecords (librdkafka's admin API) below `offset` on partition 0; the low watermark.
fn delete_records(bs: &str, topic: &str, offset: i64) -> Result<i64> {
    use rdkafka::{Offset, TopicPartitionList};
    let admin = admin(bs)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))?;
    let opts = rdkafka::admin::AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    let out = futures::executor::block_on(admin.delete_records(&tpl, &opts))?;
    let e = out.elements().into_iter().next().context("no result")?;
    e.error()?;
    match e.offset() {
        rdkafka::Offset::Offset(o) => Ok(o),
        other => anyhow::bail!("low watermark {other:?}"),
    }
}

/// librdkafka's `offsets_for_times` for partition 0: the first offset at or after `ts`.
fn offset_for_time(bs: &str, topic: &str, ts: i64) -> Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = consumer_config(bs).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(ts))?;
    let found = consumer.offsets_for_times(tpl, CALL_TIMEOUT)?;
    match found.find_partition(topic, 0).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Ok(o),
        other => anyhow::bail!("offsets_for_times gave {other:?}"),
    }
}

/// `retention.ms` / `retention.bytes` bound the whole log, archive included: with
/// `retention.bytes` the archive keeps the newest segments that fit beside the local ones
/// not yet archived, and consumers read from the archive's new start; with `retention.ms`
/// long past, the archived segments go entirely and the log starts at the local start.
#[test]
fn retention_bounds_the_whole_log_archive_included() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().join("archive").display());
    let mut config = test_config(&dir.path().join("data"))?;
    config.segment_bytes = SEGMENT_BYTES;
    config.archive_interval_ms = 100;
    config.archive_url = Some(url.clone());
    config.retention_check_interval_ms = 100;
    let broker = InProcessBroker::start(config)?;
    let bs = broker.bootstrap();
    let (by_size, by_time) = (topic_name("by-size"), topic_name("by-time"));
    let limit = 4 * SEGMENT_BYTES;
    let limit_s = limit.to_string();
    let topics = [
        (
            &by_size,
            vec![
                ("remote.storage.enable", "true"),
                ("retention.ms", "-1"),
                ("retention.bytes", limit_s.as_str()),
                ("local.retention.bytes", "0"),
            ],
        ),
        // Stamped 2023: a minute has long passed.
        (
            &by_time,
            vec![("remote.storage.enable", "true"), ("retention.ms", "60000")],
        ),
    ];
    for (t, configs) in &topics {
        try_create_topic_with(&bs, t, 1, configs)?
            .map_err(|c| anyhow::anyhow!("create {t}: {c:?}"))?;
    }
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &by_size, 0..MESSAGES, 1, |_| SIZE)?;
    produce_and_wait(&producer, &by_time, 0..MESSAGES, 1, |_| SIZE)?;
    drop(producer);
    let archive = Archive::open(&url)?;

    let id = topic_id(&bs, &by_size)?;
    let p = PartitionRef {
        topic: &by_size,
        topic_id: id,
        partition: 0,
    };
    let m = wait_manifest(
        &archive,
        p,
        "retention.bytes to trim the archive",
        |m| match m.start_offset() {
            Some(s) if s > 0 && m.bytes() <= limit => Ok(()),
            _ => Err(format!(
                "archive {:?}..{}, {} bytes",
                m.start_offset(),
                m.next_offset(),
                m.bytes()
            )),
        },
    )?;
    let start = m.start_offset().unwrap_or_default();
    ensure!(
        m.bytes() + SEGMENT_BYTES * 2 > limit,
        "retention.bytes deleted too much: {} bytes left",
        m.bytes()
    );
    ensure!(
        watermarks(&bs, &by_size)?[0].0 <= start,
        "earliest offset past the archive's start {start}"
    );
    let recs = consume_all(&bs, &by_size, CONSUME_TIMEOUT)?;
    let got = &recs[&0];
    ensure!(
        !got.is_empty() && got[0].offset <= start,
        "first offset read {:?}",
        got.first().map(|r| r.offset)
    );
    let first = got[0].offset;
    check_dense(got, first, MESSAGES as i64)?;
    for rec in got {
        TestMessage::new(rec.offset as u64, SIZE).check(rec)?;
    }
    // The deleted segments' objects are gone.
    let below = std::fs::read_dir(
        dir.path()
            .join("archive")
            .join(&by_size)
            .join(id.simple().to_string())
            .join("0"),
    )?
    .filter_map(|e| e.ok())
    .filter_map(|e| {
        e.file_name()
            .to_str()?
            .split('.')
            .next()?
            .parse::<i64>()
            .ok()
    })
    .filter(|&base| base < start)
    .count();
    ensure!(
        below == 0,
        "{below} objects below the archive start {start} remain"
    );

    let id = topic_id(&bs, &by_time)?;
    let p = PartitionRef {
        topic: &by_time,
        topic_id: id,
        partition: 0,
    };
    let m = wait_manifest(&archive, p, "retention.ms to empty the archive", |m| {
        if m.segments.is_empty() && m.next_offset() > 0 {
            Ok(())
        } else {
            Err(format!("{} segments", m.segments.len()))
        }
    })?;
    let (low, high) = watermarks(&bs, &by_time)?[0];
    ensure!(
        low >= m.next_offset() && high == MESSAGES as i64,
        "watermarks {low}..{high}, archive ended at {}",
        m.next_offset()
    );
    broker.shutdown()
}

/// Deleting a topic deletes its archive (all partitions' objects), and only its archive.
#[test]
fn a_deleted_topics_archive_is_deleted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().join("archive").display());
    let broker = start(&dir.path().join("data"), &url)?;
    let bs = broker.bootstrap();
    let (gone, kept) = (topic_name("gone"), topic_name("kept"));
    let producer = small_batch_producer(&bs)?;
    let archive = Archive::open(&url)?;
    let mut ids = Vec::new();
    for t in [&gone, &kept] {
        try_create_topic_with(
            &bs,
            t,
            2,
            &[("remote.storage.enable", "true"), KEEP_FOREVER],
        )?
        .map_err(|c| anyhow::anyhow!("create {t}: {c:?}"))?;
        produce_and_wait(&producer, t, 0..MESSAGES, 2, |_| SIZE)?;
        let id = topic_id(&bs, t)?;
        for partition in 0..2 {
            let p = PartitionRef {
                topic: t,
                topic_id: id,
                partition,
            };
            wait_archived(&archive, p, MESSAGES as i64 / 4)?;
        }
        ids.push(id);
    }
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    ensure!(rt.block_on(archive.topics())?.len() == 2);
    delete_topic(&bs, &gone)?.map_err(|c| anyhow::anyhow!("delete {gone}: {c:?}"))?;
    wait_until(
        "the deleted topic's archive to go",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let left = rt.block_on(archive.topics()).map_err(|e| e.to_string())?;
            if left.iter().any(|(_, id)| *id == ids[0]) {
                Err(format!("{left:?}"))
            } else {
                Ok(())
            }
        },
    )?;
    let left = rt.block_on(archive.topics())?;
    ensure!(left == vec![(kept.clone(), ids[1])], "{left:?}");
    let p = PartitionRef {
        topic: &kept,
        topic_id: ids[1],
        partition: 1,
    };
    ensure!(rt.block_on(archive.manifest(p))?.next_offset() > 0);
    drop(producer);
    broker.shutdown()
}
