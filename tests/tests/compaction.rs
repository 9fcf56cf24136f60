//! Log compaction through real clients (librdkafka via the rdkafka crate, and raw Fetch
//! requests as sessionless clients such as kafkajs send them): librdkafka's own compaction
//! test (0077) ported, gaps in the offsets read correctly, and a changelog topic rebuilt into
//! the last value of every key while the cleaner works on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use strata_storage::batch::BatchBuilder;
use strata_tests::*;

/// A broker whose cleaner looks for work every 100 ms instead of every 15 s.
fn start() -> Result<InProcessBroker> {
    InProcessBroker::start_temp(|c| c.log_cleaner_backoff_ms = 100)
}

/// Produces `n` messages of `size` zero bytes with one random key, the last a tombstone, one
/// message per batch (0077's `produce_compactable_msgs`).
fn produce_compactable(bs: &str, topic: &str, n: usize, size: usize) -> Result<()> {
    let p: rdkafka::producer::BaseProducer = producer_config(bs)
        .set("batch.num.messages", "1")
        .create()?;
    let key = format!("{:015x}", rand::random::<u64>() >> 4);
    let value = vec![0u8; size];
    for i in 0..n {
        let mut r = BaseRecord::to(topic).partition(0).key(&key);
        if i + 1 < n {
            r = r.payload(&value);
        }
        p.send::<String, Vec<u8>>(r).map_err(|(e, _)| e)?;
    }
    p.flush(CALL_TIMEOUT)?;
    Ok(())
}

/// One message as 0077 verifies it: offset and its `rdk_msgid` header.
fn tagged(recs: &[Rec], testid: &str) -> Vec<(i64, String)> {
    recs.iter()
        .filter_map(|r| {
            let id = r.headers.iter().find(|(k, _)| k == "rdk_msgid")?;
            let id = String::from_utf8(id.1.clone()?).ok()?;
            id.starts_with(testid).then_some((r.offset, id))
        })
        .collect()
}

/// librdkafka's test 0077 (`do_test_compaction`): keys k1..k3 updated over and over (k1 with
/// tombstones, its last message one too) and a unique key per fourth message; after
/// compaction a consumer from the beginning sees exactly the last message of k1..k3 and
/// every unique-key message, each at the offset it was produced at.
fn do_0077(bs: &str, msgs_per_key: usize, compression: Option<&str>) -> Result<()> {
    let topic = topic_name("rdkafkatest_0077");
    try_create_topic_with(
        bs,
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "10000"),
            ("segment.bytes", "10000"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "86400"),
            ("file.delete.delay.ms", "10000"),
            ("max.compaction.lag.ms", "100"),
        ],
    )?
    .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    const FILL: usize = 20;
    const KEYS: [Option<&str>; 4] = [Some("k1"), Some("k2"), Some("k3"), None];
    let msgcnt = msgs_per_key * KEYS.len();
    produce_compactable(bs, &topic, FILL, 1000)?;

    let mut config = producer_config(bs);
    config
        .set("message.max.bytes", "6000")
        .set("linger.ms", "10");
    if let Some(c) = compression {
        config.set("compression.codec", c);
    }
    let p: rdkafka::producer::BaseProducer = config.create()?;
    let testid = format!("testid={:x}", rand::random::<u32>());
    let mut expected = Vec::new();
    let mut cnt = 0;
    while cnt < msgcnt {
        for (k, key) in KEYS.iter().enumerate() {
            let is_last = cnt + KEYS.len() >= msgcnt;
            let tombstone = k == 0 && (is_last || cnt % 7 == 0);
            let msgid = format!("{testid}, partition=0, msg={cnt}");
            let unique = cnt.to_string();
            let key = key.unwrap_or(&unique);
            if key == unique || is_last {
                expected.push(((FILL + cnt) as i64, msgid.clone()));
            }
            let headers = OwnedHeaders::new().insert(Header {
                key: "rdk_msgid",
                value: Some(&msgid),
            });
            let mut r = BaseRecord::to(&topic)
                .partition(0)
                .key(key)
                .headers(headers);
            if !tombstone {
                r = r.payload(&msgid);
            }
            loop {
                match p.send::<str, String>(r) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        p.poll(Duration::from_millis(10));
                        r = back;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            cnt += 1;
        }
    }
    p.flush(CALL_TIMEOUT)?;
    // Seal the last of them: fill the active segment with other messages.
    produce_compactable(bs, &topic, FILL, 1024)?;

    let mut last = Vec::new();
    wait_until(
        &format!("compaction of {topic} ({compression:?}, {msgcnt} messages)"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let all = consume_all(bs, &topic, CALL_TIMEOUT).map_err(|e| e.to_string())?;
            last = tagged(all.get(&0).map_or(&[][..], |v| v), &testid);
            if last == expected {
                Ok(())
            } else {
                Err(format!(
                    "{} tagged messages, {} expected",
                    last.len(),
                    expected.len()
                ))
            }
        },
    )?;
    Ok(())
}

#[test]
fn librdkafka_0077_compaction() -> Result<()> {
    let broker = start()?;
    let bs = broker.bootstrap();
    do_0077(&bs, 10, None)?;
    do_0077(&bs, 1000, None)?;
    do_0077(&bs, 10, Some("snappy"))?;
    do_0077(&bs, 10, Some("zstd"))?;
    // 0077 runs gzip with 10,000 per key; 1,000 keep this test to seconds.
    do_0077(&bs, 1000, Some("gzip"))?;
    do_0077(&bs, 10, Some("lz4"))?;
    broker.shutdown()
}

/// Offsets of what a consumer assigned at `from` reads, up to (not including) `end`.
fn offsets_from(bs: &str, topic: &str, from: i64, end: i64) -> Result<Vec<i64>> {
    let recs = consume_ranges(bs, topic, &[(0, from, end)], CALL_TIMEOUT)?;
    Ok(recs[&0].iter().map(|r| r.offset).collect())
}

/// After cleaning, offsets have gaps: librdkafka reads across them from the start and from
/// an offset inside one, and sessionless Fetch requests (v4, v12 with session 0 / epoch -1,
/// as kafkajs sends them) at an offset inside a gap get the next batch.
#[test]
fn gaps_are_read_by_librdkafka_and_sessionless_fetches() -> Result<()> {
    let broker = start()?;
    let bs = broker.bootstrap();
    let topic = topic_name("gaps");
    try_create_topic_with(
        &bs,
        &topic,
        1,
        &[("cleanup.policy", "compact"), ("segment.bytes", "14")],
    )?
    .map_err(|c| anyhow::anyhow!("create: {c:?}"))?;
    let batch = |recs: &[(&str, &str)]| {
        let mut b = BatchBuilder::new(BASE_TIMESTAMP);
        for (k, v) in recs {
            b = b.record(BASE_TIMESTAMP, Some(k.as_bytes()), v.as_bytes());
        }
        b.build()
    };
    let mut s = raw::connect(broker.addr())?;
    // Offsets: 0 k1, 1 k2 | 2 k1 | 3 k3, 4 k1 | 5 z (the active segment).
    for (i, recs) in [
        &[("k1", "a1"), ("k2", "a2")][..],
        &[("k1", "b1")],
        &[("k3", "c1"), ("k1", "c2")],
        &[("z", "tail")],
    ]
    .iter()
    .enumerate()
    {
        let r = raw::produce(&mut s, 9, i as i32, &topic, 0, batch(recs))?;
        ensure!(r.error_code == 0, "produce: {}", r.error_code);
    }
    wait_until(
        "cleaning",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match offsets_from(&bs, &topic, 0, 6) {
            Ok(o) if o == [1, 3, 4, 5] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    let all = consume_ranges(&bs, &topic, &[(0, 0, 6)], CALL_TIMEOUT)?;
    let values: Vec<(i64, Vec<u8>)> = all[&0]
        .iter()
        .map(|r| (r.offset, r.payload.clone().unwrap_or_default()))
        .collect();
    ensure!(
        values
            == [
                (1, b"a2".to_vec()),
                (3, b"c1".to_vec()),
                (4, b"c2".to_vec()),
                (5, b"tail".to_vec())
            ],
        "{values:?}"
    );
    ensure!(offsets_from(&bs, &topic, 2, 6)? == [3, 4, 5]);
    ensure!(offsets_from(&bs, &topic, 0, 2)? == [1]);
    // Sessionless fetches at offset 2, inside the gap, get the batch based at 3.
    for version in [4, raw::FETCH_VERSION] {
        let req = raw::fetch_request(&topic, 0, 2, 0, 1)
            .with_session_id(0)
            .with_session_epoch(-1);
        let resp = raw::call(&mut s, version, 10 + version as i32, &req)?;
        let p = &resp.responses[0].partitions[0];
        ensure!(
            p.error_code == 0 && p.high_watermark == 6,
            "v{version}: {p:?}"
        );
        let records = p.records.clone().unwrap_or_default();
        let h = strata_storage::batch::read_header(&records)?;
        ensure!(
            h.base_offset == 3 && h.record_count == 2,
            "v{version}: {h:?}"
        );
    }
    // The rewritten first batch keeps its base offset and span, with one record left.
    let f = raw::fetch(&mut s, 20, &raw::fetch_request(&topic, 0, 0, 0, 1))?;
    ensure!(f.batches[0] == (0, 1), "{:?}", f.batches);
    broker.shutdown()
}

/// A stream-processing changelog: a producer keeps updating 300 keys while the cleaner
/// compacts the topic; consumers rebuild the state from offset 0 meanwhile (each read sees
/// every key's versions in order) and once the producer is done (the rebuilt state is the
/// last value of every key). Compaction removed most records, and the metrics say so.
#[test]
fn changelog_rebuilds_the_last_value_of_every_key() -> Result<()> {
    const KEYS: u64 = 300;
    const UPDATES: u64 = 30_000;
    let broker = start()?;
    let bs = broker.bootstrap();
    let topic = topic_name("changelog");
    try_create_topic_with(
        &bs,
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "65536"),
            ("min.cleanable.dirty.ratio", "0.1"),
        ],
    )?
    .map_err(|c| anyhow::anyhow!("create: {c:?}"))?;
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (bs, topic, done) = (bs.clone(), topic.clone(), done.clone());
        std::thread::spawn(move || -> Result<HashMap<String, u64>> {
            let p: rdkafka::producer::BaseProducer = producer_config(&bs).create()?;
            let mut last = HashMap::new();
            for n in 0..UPDATES {
                let key = format!("key-{}", (n * 7919) % KEYS);
                let value = format!("{n:08}");
                let mut r = BaseRecord::to(&topic)
                    .partition(0)
                    .key(&key)
                    .payload(&value);
                loop {
                    match p.send::<String, String>(r) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            p.poll(Duration::from_millis(5));
                            r = back;
                        }
                    }
                }
                last.insert(key, n);
                if n % 1000 == 999 {
                    p.flush(CALL_TIMEOUT)?;
                }
            }
            p.flush(CALL_TIMEOUT)?;
            done.store(true, Ordering::SeqCst);
            Ok(last)
        })
    };
    // Rebuild while the producer and the cleaner work.
    let mut rebuilds = 0;
    while !done.load(Ordering::SeqCst) {
        rebuild(&bs, &topic)?;
        rebuilds += 1;
    }
    let model = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    // Seal what the producer wrote last, then wait for the cleaner to have passed it.
    let p: rdkafka::producer::BaseProducer = producer_config(&bs).create()?;
    for i in 0..200 {
        p.send(
            BaseRecord::to(&topic)
                .partition(0)
                .key("seal")
                .payload(&vec![b'x'; 512 + i]),
        )
        .map_err(|(e, _)| e)?;
    }
    p.flush(CALL_TIMEOUT)?;
    let admin = broker.admin_addr().context("admin address")?;
    let (state, read) = wait_until(
        "a clean changelog",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let (state, read) = rebuild(&bs, &topic).map_err(|e| e.to_string())?;
            let compacted = read < (UPDATES as usize) / 5;
            if compacted {
                Ok((state, read))
            } else {
                Err(format!("{read} records read"))
            }
        },
    )?;
    let expected: HashMap<String, u64> = model;
    let mut got = state;
    got.remove("seal");
    ensure!(
        got == expected,
        "rebuilt state differs from the last value of each key"
    );
    let m = scrape::scrape(admin)?;
    ensure!(scrape::value(&m, "strata_cleaner_passes_total", &[]) >= 1.0);
    ensure!(
        scrape::value(&m, "strata_cleaner_records_removed_total", &[])
            >= (UPDATES - KEYS) as f64 * 0.5
    );
    eprintln!("{rebuilds} rebuilds during production; the final one read {read} records");
    broker.shutdown()
}

/// Reads the changelog from offset 0 to its high watermark into key -> last version,
/// checking that each key's versions only go up along the log; returns the state and how
/// many records were read.
fn rebuild(bs: &str, topic: &str) -> Result<(HashMap<String, u64>, usize)> {
    let (lo, hi) = watermarks(bs, topic)?[0];
    let consumer: BaseConsumer = consumer_config(bs).create()?;
    let mut state: HashMap<String, u64> = HashMap::new();
    if hi <= lo {
        return Ok((state, 0));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(lo))?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + CALL_TIMEOUT;
    let mut read = 0;
    let mut next = lo;
    while next < hi {
        ensure!(
            std::time::Instant::now() < deadline,
            "rebuild timed out at {next} of {hi}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        ensure!(m.offset() >= next, "offset {} after {next}", m.offset());
        next = m.offset() + 1;
        read += 1;
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
        if key == "seal" {
            state.insert(key, 0);
            continue;
        }
        let v: u64 = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
        if let Some(prev) = state.insert(key.clone(), v) {
            ensure!(prev < v, "{key}: version {v} after {prev}");
        }
    }
    Ok((state, read))
}
