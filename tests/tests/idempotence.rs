//! Idempotent producer: every message arrives exactly once, in send order — with librdkafka
//! (`enable.idempotence=true`, including across a broker restart) and with hand-made batches
//! that replay or skip sequence numbers.

use std::time::Duration;

use anyhow::{ensure, Result};
use rdkafka::producer::Producer;
use strata_storage::batch::BatchBuilder;
use strata_tests::raw;
use strata_tests::*;

const PARTITIONS: i32 = 3;

fn size(i: u64) -> usize {
    32 + (i % 100) as usize
}

fn idempotent_config(bs: &str) -> rdkafka::ClientConfig {
    let mut cfg = producer_config(bs);
    // Small batches and the maximum in-flight requests: many concurrent sequenced batches.
    cfg.set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "1")
        .set("batch.num.messages", "100");
    cfg
}

fn count_in(p: i32, n: u64) -> i64 {
    (0..n).filter(|i| i % PARTITIONS as u64 == p as u64).count() as i64
}

#[test]
fn idempotent_producer_exactly_once_in_order() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("idem");
    create_topic(&bs, &topic, PARTITIONS)?;
    let n = 30_000;
    let producer = recording_producer(&idempotent_config(&bs))?;
    let reports = produce_and_wait(&producer, &topic, 0..n, PARTITIONS, size)?;
    check_delivery_offsets(&reports, PARTITIONS, |_| 0, 0)?;
    drop(producer);
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..n, PARTITIONS, size)?;
    broker.shutdown()
}

/// One idempotent producer keeps producing while the broker is stopped (SIGTERM) and
/// restarted: the broker must still accept its sequence numbers and nothing may be lost or
/// duplicated.
#[test]
fn idempotent_producer_across_graceful_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &[])?;
    let bs = broker.bootstrap();
    let topic = topic_name("idem-restart");
    create_topic(&bs, &topic, PARTITIONS)?;
    let producer = recording_producer(&idempotent_config(&bs))?;
    let n = 5_000;
    produce_and_wait(&producer, &topic, 0..n, PARTITIONS, size)?;

    let status = broker.terminate()?;
    ensure!(status.success(), "SIGTERM: exit {status}");
    // Queue the next messages while the broker is down; they go out once it is back.
    produce_test_messages(&producer, &topic, n..n + 500, PARTITIONS, size)?;
    broker.restart()?;
    produce_test_messages(&producer, &topic, n + 500..2 * n, PARTITIONS, size)?;
    producer.flush(Duration::from_secs(120))?;
    wait_reports(&producer, 2 * n, CONSUME_TIMEOUT)?;
    let reports = producer.context().take();
    let failed: Vec<_> = reports.iter().filter(|d| d.error.is_some()).collect();
    ensure!(
        failed.is_empty(),
        "{} deliveries failed after the restart; first: {:?}; broker log tail:\n{}",
        failed.len(),
        failed.first(),
        broker.log_tail(3000)
    );
    check_delivery_offsets(&reports, PARTITIONS, |p| count_in(p, n), n)?;
    drop(producer);
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..2 * n, PARTITIONS, size)?;
    Ok(())
}

/// Hand-made sequenced batches: a retried batch (same producer, epoch, sequence) is not
/// stored twice, and a sequence gap is rejected with OUT_OF_ORDER_SEQUENCE_NUMBER.
#[test]
fn duplicate_batch_is_stored_once_and_gap_is_rejected() -> Result<()> {
    use kafka_protocol::messages::ProduceRequest;
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("idem-raw");
    create_topic(&bs, &topic, 1)?;
    let (pid, epoch) = raw::init_producer_id(broker.addr())?;
    ensure!(pid >= 0 && epoch >= 0, "InitProducerId gave {pid}/{epoch}");
    let version = raw::best_version::<ProduceRequest>(broker.addr())?;
    let mut s = raw::connect(broker.addr())?;

    let batch = |seq: i32, values: &[&str]| {
        let mut b = BatchBuilder::new(BASE_TIMESTAMP).producer(pid, epoch, seq);
        for (k, v) in values.iter().enumerate() {
            b = b.record(BASE_TIMESTAMP + k as i64, Some(&b"k"[..]), v.as_bytes());
        }
        b.build()
    };
    let first = batch(0, &["a0", "a1"]);
    let r = raw::produce(&mut s, version, 1, &topic, 0, first.clone())?;
    ensure!(
        r.error_code == 0 && r.base_offset == 0,
        "first batch: {r:?}"
    );
    // The same batch again, as a producer retry after a lost response would send it.
    let r = raw::produce(&mut s, version, 2, &topic, 0, first)?;
    // Kafka answers a duplicate of a recent batch with success and the original offset.
    ensure!(
        r.error_code == 0 && r.base_offset == 0,
        "retried batch: expected success at offset 0, got {r:?}"
    );
    // Next in sequence: accepted at offset 2.
    let r = raw::produce(&mut s, version, 3, &topic, 0, batch(2, &["b0"]))?;
    ensure!(r.error_code == 0 && r.base_offset == 2, "next batch: {r:?}");
    // A gap (sequence 10, expected 3): rejected.
    let r = raw::produce(&mut s, version, 4, &topic, 0, batch(10, &["gap"]))?;
    ensure!(
        r.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER,
        "sequence gap: expected error {OUT_OF_ORDER_SEQUENCE_NUMBER}, got {r:?}"
    );

    let marks = watermarks(&bs, &topic)?;
    ensure!(
        marks == vec![(0, 3)],
        "watermarks {marks:?}, expected [(0, 3)]"
    );
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    let values: Vec<_> = recs[&0].iter().map(|r| r.payload.clone()).collect();
    ensure!(
        values
            == vec![
                Some(b"a0".to_vec()),
                Some(b"a1".to_vec()),
                Some(b"b0".to_vec())
            ],
        "stored values {values:?}"
    );
    broker.shutdown()
}

/// `producer_id_expiration_ms`: a producer that stops writing is forgotten once that long
/// has passed (the broker checks with every retention pass), so producer state does not
/// grow with every session ever seen; a forgotten producer is then treated as new (any
/// sequence accepted), as Kafka does. Before that, its sequence is still enforced.
#[test]
fn idle_producer_state_expires() -> Result<()> {
    use kafka_protocol::messages::ProduceRequest;
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    const EXPIRATION_MS: i64 = 1500;
    let broker = InProcessBroker::start_temp(|c| {
        c.producer_id_expiration_ms = EXPIRATION_MS;
        c.retention_check_interval_ms = 100;
    })?;
    let bs = broker.bootstrap();
    let topic = topic_name("idem-expiry");
    create_topic(&bs, &topic, 1)?;
    let (pid, epoch) = raw::init_producer_id(broker.addr())?;
    let version = raw::best_version::<ProduceRequest>(broker.addr())?;
    let mut s = raw::connect(broker.addr())?;
    let batch = |seq: i32| {
        BatchBuilder::new(BASE_TIMESTAMP)
            .producer(pid, epoch, seq)
            .record(BASE_TIMESTAMP, None, b"v")
            .build()
    };
    let r = raw::produce(&mut s, version, 1, &topic, 0, batch(0))?;
    ensure!(r.error_code == 0, "first batch: {r:?}");
    let r = raw::produce(&mut s, version, 2, &topic, 0, batch(7))?;
    ensure!(
        r.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER,
        "a gap while the producer is known: {r:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    std::thread::sleep(Duration::from_millis(EXPIRATION_MS as u64));
    let mut correlation = 3;
    loop {
        let r = raw::produce(&mut s, version, correlation, &topic, 0, batch(7))?;
        if r.error_code == 0 {
            ensure!(r.base_offset == 1, "accepted at {r:?}");
            break;
        }
        ensure!(
            r.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER,
            "unexpected answer {r:?}"
        );
        ensure!(
            std::time::Instant::now() < deadline,
            "the idle producer's state never expired"
        );
        correlation += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.shutdown()
}
