//! Long poll, measured: a consumer waiting with `fetch.wait.max.ms=10000` gets a record
//! produced after 1 s well under 1 s later (the fetch is woken, not timed out); an idle
//! fetch waits about `max_wait_ms` (it does wait); and `min_bytes` holds a fetch until that
//! much data is there (it returns neither at the first small batch nor at the timeout).
//!
//! A broker that answered fetches at once would fail the idle test; one that only answered
//! at `max_wait_ms` would fail the other two; one that ignored `min_bytes` would fail the last.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use strata_storage::batch::BatchBuilder;
use strata_tests::raw::{self, simple_batch};
use strata_tests::*;

/// The long-poll bound clients are given here: far above every delay the tests expect, so
/// an answer that comes only at the timeout is unmistakable.
const MAX_WAIT_MS: i32 = 10_000;
/// "Well under 1 s": a woken fetch answers within milliseconds (plus the sync); this
/// leaves room for a slow debug build on 2 busy cores.
const WAKE_BOUND: Duration = Duration::from_millis(500);

fn produce_raw(addr: std::net::SocketAddr, topic: &str, records: Vec<u8>) -> Result<()> {
    let version = raw::best_version::<kafka_protocol::messages::ProduceRequest>(addr)?;
    let mut s = raw::connect(addr)?;
    let r = raw::produce(&mut s, version, 1, topic, 0, records)?;
    ensure!(r.error_code == 0, "produce: {r:?}");
    Ok(())
}

#[test]
fn record_produced_during_a_long_poll_arrives_at_once() -> Result<()> {
    let (broker, topic) = broker_with_topic("longpoll", 1)?;
    let bs = broker.bootstrap();
    let mut cfg = consumer_config(&bs);
    cfg.set("fetch.wait.max.ms", MAX_WAIT_MS.to_string());
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    // Let the consumer connect and start its (long) fetch.
    ensure!(
        consumer.poll(Duration::from_secs(1)).is_none(),
        "record from an empty topic"
    );

    std::thread::sleep(Duration::from_secs(1));
    produce_raw(broker.addr(), &topic, simple_batch("late", 1))?;
    let produced_at = Instant::now();
    let msg = consumer
        .poll(Duration::from_millis(MAX_WAIT_MS as u64))
        .context("no record within fetch.wait.max.ms")??;
    let latency = produced_at.elapsed();
    ensure!(msg.offset() == 0 && msg.payload() == Some(&b"late-0"[..]));
    ensure!(
        latency < WAKE_BOUND,
        "the record arrived {latency:?} after its acknowledgement (bound {WAKE_BOUND:?}): \
         the waiting fetch was not woken"
    );
    eprintln!("long poll: record delivered {latency:?} after the produce was acknowledged");
    // (A graceful shutdown lets the consumer's next 10 s long poll finish first; the
    // consumer itself closes after the broker is gone.)
    broker.shutdown()
}

#[test]
fn idle_fetch_waits_about_max_wait() -> Result<()> {
    // Shorter than MAX_WAIT_MS, so the test stays quick; long enough to tell from "at once".
    const IDLE_WAIT_MS: i32 = 2_000;
    let (broker, topic) = broker_with_topic("idle", 1)?;
    let mut s = raw::connect(broker.addr())?;
    let start = Instant::now();
    let f = raw::fetch(
        &mut s,
        1,
        &raw::fetch_request(&topic, 0, 0, IDLE_WAIT_MS, 1),
    )?;
    let took = start.elapsed();
    ensure!(
        f.error_code == 0 && f.batches.is_empty(),
        "idle fetch: {f:?}"
    );
    let wait = Duration::from_millis(IDLE_WAIT_MS as u64);
    ensure!(
        took >= wait.mul_f64(0.9) && took < wait + Duration::from_secs(1),
        "an idle fetch with max_wait_ms={IDLE_WAIT_MS} took {took:?}"
    );
    broker.shutdown()
}

/// A one-partition batch with one `size`-byte record.
fn sized_batch(i: usize, size: usize) -> Vec<u8> {
    BatchBuilder::new(BASE_TIMESTAMP)
        .record(BASE_TIMESTAMP + i as i64, None, &noise(i as u64, size))
        .build()
}

#[test]
fn min_bytes_holds_the_fetch_until_enough_data_arrived() -> Result<()> {
    /// Record size: each one-record batch is ~560 bytes, so `MIN_BYTES` needs the 4th
    /// batch, and `BATCHES` leaves two more in case the fetch wrongly waits on.
    const RECORD: usize = 500;
    const MIN_BYTES: i32 = 2_000;
    const BATCHES: usize = 6;
    /// Between batches: the fetch's progress between them is what is observed.
    const GAP: Duration = Duration::from_millis(300);
    let (broker, topic) = broker_with_topic("minbytes", 1)?;
    let addr = broker.addr();
    let batch_len = sized_batch(0, RECORD).len();
    let needed = (MIN_BYTES as usize).div_ceil(batch_len);

    let (fetched, took, sent_at) = std::thread::scope(|s| -> Result<_> {
        let fetcher = s.spawn(|| -> Result<(raw::Fetched, Instant)> {
            let mut c = raw::connect(addr)?;
            let req = raw::fetch_request(&topic, 0, 0, MAX_WAIT_MS, MIN_BYTES);
            let f = raw::fetch(&mut c, 1, &req)?;
            Ok((f, Instant::now()))
        });
        let start = Instant::now();
        let mut sent_at = Vec::new();
        for i in 0..BATCHES {
            std::thread::sleep(GAP);
            produce_raw(addr, &topic, sized_batch(i, RECORD))?;
            sent_at.push(start.elapsed());
        }
        let (f, done) = fetcher
            .join()
            .map_err(|_| anyhow::anyhow!("fetcher panicked"))??;
        Ok((f, done - start, sent_at))
    })?;
    ensure!(
        fetched.bytes >= MIN_BYTES as usize,
        "fetch with min_bytes={MIN_BYTES} returned {} bytes ({} batches) after {took:?}",
        fetched.bytes,
        fetched.batches.len()
    );
    // It answered once the batch that reached min_bytes was acknowledged, not at the
    // timeout (nor before: the byte count above).
    let reached = sent_at[needed - 1];
    ensure!(
        took < reached + WAKE_BOUND,
        "min_bytes reached at {reached:?} (batch {needed}), fetch answered at {took:?}; sends at {sent_at:?}"
    );
    broker.shutdown()
}

/// SIGTERM while a fetch waits with max_wait_ms = 60 s: the fetch is answered (empty) and the
/// broker exits promptly, instead of holding the shutdown for the rest of the long poll.
#[test]
fn shutdown_answers_waiting_long_polls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &[])?;
    let topic = topic_name("shutdown-poll");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let mut s = raw::connect(broker.addr())?;
    s.write_all(&raw::encode_request(
        raw::FETCH_VERSION,
        1,
        &raw::fetch_request(&topic, 0, 0, 60_000, 1),
    )?)?;
    std::thread::sleep(Duration::from_millis(300)); // the fetch is read and waiting
    let start = Instant::now();
    let status = broker.terminate()?;
    let took = start.elapsed();
    ensure!(status.success(), "broker exited with {status}");
    ensure!(
        took < Duration::from_secs(5),
        "the broker took {took:?} to stop with a 60 s long poll outstanding"
    );
    let answer = raw::read_frame(&mut s).context("the waiting fetch was not answered")?;
    ensure!(!answer.is_empty());
    Ok(())
}
