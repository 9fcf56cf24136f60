//! Produce with every compression codec through librdkafka, read everything back with
//! `assign()` from the beginning, and compare keys, values, headers and timestamps.

use std::time::Duration;

use anyhow::{ensure, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Timestamp;
use strata_tests::*;

const PARTITIONS: i32 = 3;

/// Value sizes from 1 to ~1 KiB, varying per message so batches mix sizes.
fn size(i: u64) -> usize {
    1 + (i.wrapping_mul(7919) % 1000) as usize
}

fn roundtrip(codec: &str, count: u64) -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name(&format!("codec-{codec}"));
    create_topic(&bs, &topic, PARTITIONS)?;

    let mut cfg = producer_config(&bs);
    cfg.set("compression.type", codec)
        .set("linger.ms", "20")
        .set("batch.num.messages", "5000");
    let producer = recording_producer(&cfg)?;
    let reports = produce_and_wait(&producer, &topic, 0..count, PARTITIONS, size)?;
    ensure!(reports.len() as u64 == count, "{} reports", reports.len());
    check_delivery_offsets(&reports, PARTITIONS, |_| 0, 0)?;

    let per_partition = |p: i32| (0..count).filter(|i| i % 3 == p as u64).count() as i64;
    let marks = watermarks(&bs, &topic)?;
    for (p, &(lo, hi)) in marks.iter().enumerate() {
        ensure!(
            (lo, hi) == (0, per_partition(p as i32)),
            "partition {p}: watermarks {:?}, expected (0, {})",
            (lo, hi),
            per_partition(p as i32)
        );
    }
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..count, PARTITIONS, size)?;
    drop(producer);
    broker.shutdown()
}

#[test]
fn codec_none_100k() -> Result<()> {
    roundtrip("none", 100_000)
}

#[test]
fn codec_gzip() -> Result<()> {
    roundtrip("gzip", 20_000)
}

#[test]
fn codec_snappy() -> Result<()> {
    roundtrip("snappy", 20_000)
}

#[test]
fn codec_lz4() -> Result<()> {
    roundtrip("lz4", 20_000)
}

#[test]
fn codec_zstd() -> Result<()> {
    roundtrip("zstd", 20_000)
}

/// Records a normal test message does not cover: null key and null value (a tombstone), a
/// binary key, no headers, a value of 900 KiB (near the default 1 MB message size limits, so
/// one record fills a fetch), and a timestamp far in the past (1 ms after the epoch; 0 would
/// mean "now" to librdkafka).
#[test]
fn unusual_records_roundtrip() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("unusual");
    create_topic(&bs, &topic, 1)?;
    let producer = recording_producer(&producer_config(&bs))?;

    let big: Vec<u8> = (0..900 * 1024).map(|i| (i % 251) as u8).collect();
    let binary_key: Vec<u8> = vec![0, 255, 1, 254, 0];
    let opaque = |i: u64| Box::new((i, std::time::Instant::now()));
    // 0: tombstone: no key, no value, no headers.
    send(
        &producer,
        BaseRecord::<[u8], [u8], _>::with_opaque_to(&topic, opaque(0))
            .partition(0)
            .timestamp(BASE_TIMESTAMP),
    )?;
    // 1: binary key, large value, a header with a non-UTF-8 value.
    send(
        &producer,
        BaseRecord::with_opaque_to(&topic, opaque(1))
            .partition(0)
            .key(&binary_key[..])
            .payload(&big[..])
            .headers(OwnedHeaders::new().insert(Header {
                key: "bin",
                value: Some(&[0xffu8, 0xfe][..]),
            }))
            .timestamp(BASE_TIMESTAMP + 1),
    )?;
    // 2: an ancient timestamp must come back as is, not as "now".
    send(
        &producer,
        BaseRecord::<[u8], [u8], _>::with_opaque_to(&topic, opaque(2))
            .partition(0)
            .payload(&b"epoch"[..])
            .timestamp(1),
    )?;
    producer.flush(Duration::from_secs(60))?;
    wait_reports(&producer, 3, Duration::from_secs(60))?;
    let reports = producer.context().take();
    ensure!(
        reports.iter().all(|d| d.error.is_none()),
        "failed deliveries: {reports:?}"
    );

    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    let recs = &recs[&0];
    check_dense(recs, 0, 3)?;
    ensure!(
        recs[0].key.is_none() && recs[0].payload.is_none(),
        "tombstone: {:?}",
        recs[0]
    );
    ensure!(
        recs[0].headers.is_empty(),
        "tombstone headers: {:?}",
        recs[0].headers
    );
    ensure!(recs[0].timestamp == Timestamp::CreateTime(BASE_TIMESTAMP));
    ensure!(recs[1].key.as_deref() == Some(&binary_key[..]));
    ensure!(
        recs[1].payload.as_deref() == Some(&big[..]),
        "large value differs (len {:?})",
        recs[1].payload.as_ref().map(Vec::len)
    );
    ensure!(recs[1].headers == vec![("bin".to_string(), Some(vec![0xff, 0xfe]))]);
    ensure!(recs[2].payload.as_deref() == Some(&b"epoch"[..]));
    ensure!(
        recs[2].timestamp == Timestamp::CreateTime(1),
        "timestamp 1 came back as {:?}",
        recs[2].timestamp
    );
    drop(producer);
    broker.shutdown()
}
