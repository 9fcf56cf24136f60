//! Limits and per-topic policies as clients see them: the broker's and a topic's maximum
//! message size (MESSAGE_TOO_LARGE), LogAppendTime topics, and the connection limit.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Timestamp;
use strata_tests::raw::{self, Outcome};
use strata_tests::*;

/// Sends one value to partition 0 and waits for its delivery report.
fn produce_one(
    producer: &RecordingProducer,
    topic: &str,
    id: u64,
    value: &[u8],
) -> Result<Delivery> {
    let record = BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, Box::new((id, Instant::now())))
        .partition(0)
        .key(&b"k"[..])
        .payload(value);
    let before = producer.context().reported();
    send(producer, record)?;
    producer.flush(Duration::from_secs(60))?;
    wait_reports(producer, before + 1, Duration::from_secs(60))?;
    let mut reports = producer.context().take();
    ensure!(reports.len() == 1, "{} reports", reports.len());
    Ok(reports.remove(0))
}

/// A producer that would send up to 2 MB: the broker, not the client, has to say no.
fn big_producer(bs: &str) -> Result<RecordingProducer> {
    let mut cfg = producer_config(bs);
    cfg.set("message.max.bytes", "2000000")
        .set("linger.ms", "0")
        .set("retries", "0");
    recording_producer(&cfg)
}

fn expect_too_large(d: &Delivery, what: &str) -> Result<()> {
    let code = RDKafkaErrorCode::MessageSizeTooLarge;
    ensure!(
        d.error
            .as_deref()
            .is_some_and(|e| e.contains(&code.to_string())),
        "{what}: expected {code:?}, got {d:?}"
    );
    Ok(())
}

#[test]
fn broker_message_max_bytes_is_enforced() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.message_max_bytes = 100_000)?;
    let bs = broker.bootstrap();
    let topic = topic_name("maxbytes");
    create_topic(&bs, &topic, 1)?;
    let producer = big_producer(&bs)?;
    let d = produce_one(&producer, &topic, 0, &vec![7u8; 150_000])?;
    expect_too_large(&d, "150 kB batch, broker limit 100 kB")?;
    let d = produce_one(&producer, &topic, 1, &vec![8u8; 50_000])?;
    ensure!(d.error.is_none() && d.offset == 0, "50 kB message: {d:?}");
    drop(producer);
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    check_dense(&recs[&0], 0, 1)?;
    ensure!(recs[&0][0].payload.as_deref() == Some(&vec![8u8; 50_000][..]));
    broker.shutdown()
}

#[test]
fn topic_max_message_bytes_is_enforced() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("topic-max");
    let created = try_create_topic_with(&bs, &topic, 1, &[("max.message.bytes", "20000")])?;
    ensure!(
        created == Ok(()),
        "create with max.message.bytes: {created:?}"
    );
    let producer = big_producer(&bs)?;
    let d = produce_one(&producer, &topic, 0, &vec![1u8; 30_000])?;
    expect_too_large(&d, "30 kB batch, topic limit 20 kB")?;
    let d = produce_one(&producer, &topic, 1, &vec![2u8; 10_000])?;
    ensure!(d.error.is_none() && d.offset == 0, "10 kB message: {d:?}");
    // Other topics keep the broker default (1 MB).
    let other = topic_name("topic-default");
    create_topic(&bs, &other, 1)?;
    let d = produce_one(&producer, &other, 2, &vec![3u8; 30_000])?;
    ensure!(d.error.is_none(), "30 kB to a topic without a limit: {d:?}");
    drop(producer);
    broker.shutdown()
}

#[test]
fn invalid_topic_configs_are_refused() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    for cfg in [("no.such.config", "1"), ("retention.ms", "soon")] {
        let topic = topic_name("badcfg");
        let r = try_create_topic_with(&bs, &topic, 1, &[cfg])?;
        ensure!(
            r == Err(RDKafkaErrorCode::InvalidConfig),
            "CreateTopics with {cfg:?}: {r:?}"
        );
        ensure!(
            topic_error(&bs, &topic)? == Some(RDKafkaErrorCode::UnknownTopicOrPartition),
            "topic {topic} exists after a refused create"
        );
    }
    broker.shutdown()
}

fn topic_error(bs: &str, topic: &str) -> Result<Option<RDKafkaErrorCode>> {
    use rdkafka::consumer::Consumer;
    let md = new_consumer(bs)?.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    Ok(md
        .topics()
        .first()
        .and_then(|t| t.error())
        .map(RDKafkaErrorCode::from))
}

#[test]
fn log_append_time_topic_stamps_records() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let topic = topic_name("appendtime");
    let created = try_create_topic_with(
        &bs,
        &topic,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )?;
    ensure!(created == Ok(()), "create: {created:?}");
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
    };
    let before = now_ms()?;
    let producer = recording_producer(&producer_config(&bs))?;
    // CreateTime set to the test base time: the broker must replace it.
    produce_and_wait(&producer, &topic, 0..10, 1, |_| 20)?;
    let after = now_ms()?;
    drop(producer);
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    check_dense(&recs[&0], 0, 10)?;
    for rec in &recs[&0] {
        // Same clock for broker and test: the stamp lies within the produce call.
        let ok = matches!(rec.timestamp, Timestamp::LogAppendTime(t) if t >= before && t <= after);
        ensure!(
            ok,
            "offset {}: timestamp {:?}, expected LogAppendTime in [{before}, {after}]",
            rec.offset,
            rec.timestamp
        );
    }
    broker.shutdown()
}

#[test]
fn connection_limit_closes_extra_connections() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.max_connections = 2)?;
    let addr = broker.addr();
    // Open two working connections (retrying while the harness's readiness probe still
    // holds a slot).
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.len() < 2 {
        ensure!(Instant::now() < deadline, "could not open 2 connections");
        let mut s = raw::connect(addr)?;
        if raw::call(
            &mut s,
            0,
            1,
            &kafka_protocol::messages::ApiVersionsRequest::default(),
        )
        .is_ok()
        {
            held.push(s);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A third is closed without an answer.
    let mut third = raw::connect(addr)?;
    let req = raw::encode_request(
        0,
        5,
        &kafka_protocol::messages::ApiVersionsRequest::default(),
    )?;
    raw::write_tolerant(&mut third, &req)?;
    let outcome = raw::outcome(&mut third, raw::RAW_TIMEOUT)?;
    ensure!(outcome == Outcome::Closed, "third connection: {outcome:?}");
    // The held ones still work; closing one frees its slot.
    for s in &mut held {
        raw::call(
            s,
            0,
            2,
            &kafka_protocol::messages::ApiVersionsRequest::default(),
        )?;
    }
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while raw::api_versions_ok(addr).is_err() {
        ensure!(
            Instant::now() < deadline,
            "slot not freed after a connection closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.shutdown()
}
