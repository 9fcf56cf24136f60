//! Graceful restarts: data written before a clean shutdown (SIGTERM for the process, or
//! `Broker::shutdown` in-process) is all there afterwards, topics keep their partitions, and
//! new writes continue at the old log end.

use anyhow::{ensure, Result};
use strata_tests::*;

const PARTITIONS: i32 = 3;
const FIRST: u64 = 10_000;
const SECOND: u64 = 10_000;

fn size(i: u64) -> usize {
    64 + (i % 200) as usize
}

/// Messages per partition among ids `0..n` when id `i` goes to partition `i % PARTITIONS`.
fn count_in(p: i32, n: u64) -> i64 {
    (0..n).filter(|i| i % PARTITIONS as u64 == p as u64).count() as i64
}

fn expect_watermarks(bs: &str, topic: &str, n: u64) -> Result<()> {
    let marks = watermarks(bs, topic)?;
    ensure!(
        marks.len() == PARTITIONS as usize,
        "{} partitions",
        marks.len()
    );
    for (p, &m) in marks.iter().enumerate() {
        let want = (0, count_in(p as i32, n));
        ensure!(
            m == want,
            "partition {p}: watermarks {m:?}, expected {want:?}"
        );
    }
    Ok(())
}

#[test]
fn sigterm_restart_keeps_data_and_offsets_continue() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::spawn(&data, 0, &[])?;
    let bs = broker.bootstrap();
    let topic = topic_name("restart");
    create_topic(&bs, &topic, PARTITIONS)?;

    // Phase 1: compressed batches, so that stored batches are not all plain.
    let mut cfg = producer_config(&bs);
    cfg.set("compression.type", "zstd");
    let producer = recording_producer(&cfg)?;
    produce_and_wait(&producer, &topic, 0..FIRST, PARTITIONS, size)?;
    drop(producer);
    expect_watermarks(&bs, &topic, FIRST)?;

    let status = broker.terminate()?;
    ensure!(
        status.success(),
        "broker exited with {status} after SIGTERM; log tail:\n{}",
        broker.log_tail(4000)
    );
    broker.restart()?;

    ensure!(partition_count(&bs, &topic)? == PARTITIONS as usize);
    expect_watermarks(&bs, &topic, FIRST)?;
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..FIRST, PARTITIONS, size)?;

    // Phase 2: new writes continue densely after the old log end.
    let producer = recording_producer(&producer_config(&bs))?;
    let reports = produce_and_wait(&producer, &topic, FIRST..FIRST + SECOND, PARTITIONS, size)?;
    check_delivery_offsets(&reports, PARTITIONS, |p| count_in(p, FIRST), FIRST)?;
    drop(producer);
    expect_watermarks(&bs, &topic, FIRST + SECOND)?;
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..FIRST + SECOND, PARTITIONS, size)?;

    // And once more, to check that the second session's writes were persisted too.
    let status = broker.terminate()?;
    ensure!(status.success(), "second SIGTERM: exit {status}");
    broker.restart()?;
    expect_watermarks(&bs, &topic, FIRST + SECOND)?;
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..FIRST + SECOND, PARTITIONS, size)?;
    let status = broker.terminate()?;
    ensure!(status.success(), "third SIGTERM: exit {status}");
    Ok(())
}

#[test]
fn in_process_shutdown_and_reopen_same_dir() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let topic = topic_name("reopen");
    let n = 3_000;

    let broker = InProcessBroker::start(test_config(&data)?)?;
    let bs = broker.bootstrap();
    create_topic(&bs, &topic, PARTITIONS)?;
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &topic, 0..n, PARTITIONS, size)?;
    drop(producer);
    broker.shutdown()?;

    // Reopen the same directory (on a new port: nothing may depend on the old one).
    let broker = InProcessBroker::start(test_config(&data)?)?;
    let bs = broker.bootstrap();
    expect_watermarks(&bs, &topic, n)?;
    let producer = recording_producer(&producer_config(&bs))?;
    let reports = produce_and_wait(&producer, &topic, n..2 * n, PARTITIONS, size)?;
    check_delivery_offsets(&reports, PARTITIONS, |p| count_in(p, n), n)?;
    drop(producer);
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..2 * n, PARTITIONS, size)?;
    broker.shutdown()
}
