//! Idempotent retries as a producer makes them after losing a response: the same sequenced
//! batch, sent again on a new connection, is stored once and answered with the offset it
//! was first stored at — within one broker run and across SIGKILL + restart. And a producer
//! id the partition has no state for is accepted at any sequence, as Kafka (before
//! transactions v2) does, with its sequence enforced from there on.
//!
//! A broker without duplicate detection stores the retry twice (or answers a new offset);
//! one that forgets producer state at a crash does so after the restart.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Result};
use kafka_protocol::messages::ProduceRequest;
use strata_storage::batch::BatchBuilder;
use strata_tests::raw;
use strata_tests::*;

/// Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

fn batch(pid: i64, epoch: i16, seq: i32, tag: &str, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(BASE_TIMESTAMP).producer(pid, epoch, seq);
    for i in 0..n {
        b = b.record(
            BASE_TIMESTAMP + i as i64,
            None,
            format!("{tag}-{i}").as_bytes(),
        );
    }
    b.build()
}

/// Sends `records` as an acks=all produce and closes the connection without reading the
/// answer — the lost response — then waits (long-polling Fetch) until the partition's
/// high watermark reaches `until`: the broker stored and synced it.
fn send_and_drop(addr: SocketAddr, topic: &str, records: Vec<u8>, until: i64) -> Result<()> {
    let version = raw::best_version::<ProduceRequest>(addr)?;
    let mut s = raw::connect(addr)?;
    let req = raw::produce_request(topic, 0, records, -1);
    s.write_all(&raw::encode_request(version, 1, &req)?)?;
    s.shutdown(std::net::Shutdown::Both)?;
    drop(s);
    wait_high_watermark(addr, topic, until)
}

fn wait_high_watermark(addr: SocketAddr, topic: &str, until: i64) -> Result<()> {
    let mut reader = raw::connect(addr)?;
    let mut correlation = 0;
    // Each check is a long poll: answered as soon as the data is there.
    wait_until(
        "the high watermark",
        raw::RAW_TIMEOUT,
        Duration::ZERO,
        || {
            correlation += 1;
            let req = raw::fetch_request(topic, 0, 0, 1_000, 1);
            match raw::fetch(&mut reader, correlation, &req) {
                Ok(f) if f.high_watermark >= until => Ok(()),
                Ok(f) => Err(format!(
                    "high watermark {} (want {until})",
                    f.high_watermark
                )),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
}

fn produce(
    s: &mut TcpStream,
    addr: SocketAddr,
    topic: &str,
    records: Vec<u8>,
) -> Result<(i16, i64)> {
    let version = raw::best_version::<ProduceRequest>(addr)?;
    let r = raw::produce(s, version, 7, topic, 0, records)?;
    Ok((r.error_code, r.base_offset))
}

fn stored_offsets(addr: SocketAddr, topic: &str) -> Result<raw::Fetched> {
    let mut s = raw::connect(addr)?;
    raw::fetch(&mut s, 1, &raw::fetch_request(topic, 0, 0, 0, 1))
}

#[test]
fn retry_after_a_lost_response_is_stored_once_at_the_original_offset() -> Result<()> {
    let (broker, topic) = broker_with_topic("retry", 1)?;
    let addr = broker.addr();
    let (pid, epoch) = raw::init_producer_id(addr)?;

    send_and_drop(addr, &topic, batch(pid, epoch, 0, "a", 3), 3)?;
    let mut s = raw::connect(addr)?;
    let retried = produce(&mut s, addr, &topic, batch(pid, epoch, 0, "a", 3))?;
    ensure!(
        retried == (0, 0),
        "retry of the first batch: (error, offset) {retried:?}, expected (0, 0)"
    );
    // More batches, then a retry of an older one still among the last five.
    ensure!(produce(&mut s, addr, &topic, batch(pid, epoch, 3, "b", 2))? == (0, 3));
    ensure!(produce(&mut s, addr, &topic, batch(pid, epoch, 5, "c", 1))? == (0, 5));
    let old = produce(&mut s, addr, &topic, batch(pid, epoch, 3, "b", 2))?;
    ensure!(
        old == (0, 3),
        "retry of an older batch: {old:?}, expected (0, 3)"
    );

    let f = stored_offsets(addr, &topic)?;
    ensure!(
        f.batches == vec![(0, 3), (3, 2), (5, 1)] && f.high_watermark == 6,
        "stored batches (base, count) {:?}, high watermark {}: a retry was stored again",
        f.batches,
        f.high_watermark
    );
    broker.shutdown()
}

#[test]
fn retry_after_kill9_and_restart_is_stored_once_at_the_original_offset() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &[])?;
    let addr = broker.addr();
    let topic = topic_name("retry-kill");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let (pid, epoch) = raw::init_producer_id(addr)?;
    send_and_drop(addr, &topic, batch(pid, epoch, 0, "a", 4), 4)?;
    broker.kill9()?;
    broker.restart()?;

    let mut s = raw::connect(addr)?;
    let retried = produce(&mut s, addr, &topic, batch(pid, epoch, 0, "a", 4))?;
    ensure!(
        retried == (0, 0),
        "retry after kill -9: (error, offset) {retried:?}, expected (0, 0); log:\n{}",
        broker.log_tail(2000)
    );
    let next = produce(&mut s, addr, &topic, batch(pid, epoch, 4, "b", 1))?;
    ensure!(
        next == (0, 4),
        "next batch after the restart: {next:?}, expected (0, 4)"
    );
    let f = stored_offsets(addr, &topic)?;
    ensure!(
        f.batches == vec![(0, 4), (4, 1)],
        "stored batches after restart: {:?}",
        f.batches
    );
    Ok(())
}

/// Kafka's ProducerStateManager accepts a batch at any sequence from a producer it has no
/// state for on the partition (its state may have been removed by retention); it enforces
/// the sequence only from there on. Transactions v2 tightens this for transactional
/// producers only.
#[test]
fn unknown_producer_is_accepted_at_any_sequence_then_held_to_it() -> Result<()> {
    let (broker, topic) = broker_with_topic("unknown-pid", 1)?;
    let addr = broker.addr();
    let (pid, epoch) = raw::init_producer_id(addr)?;
    let mut s = raw::connect(addr)?;
    let first = produce(&mut s, addr, &topic, batch(pid, epoch, 42, "x", 2))?;
    ensure!(
        first == (0, 0),
        "first batch at sequence 42: {first:?}, expected accepted at 0"
    );
    let next = produce(&mut s, addr, &topic, batch(pid, epoch, 44, "y", 1))?;
    ensure!(next == (0, 2), "sequence 44 after 42..43: {next:?}");
    let gap = produce(&mut s, addr, &topic, batch(pid, epoch, 50, "z", 1))?;
    ensure!(
        gap.0 == OUT_OF_ORDER_SEQUENCE_NUMBER,
        "sequence 50 after 44: {gap:?}, expected OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    let restart = produce(&mut s, addr, &topic, batch(pid, epoch, 0, "w", 1))?;
    ensure!(
        restart.0 == OUT_OF_ORDER_SEQUENCE_NUMBER,
        "sequence 0 again in the same epoch: {restart:?}, expected OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    broker.shutdown()
}
