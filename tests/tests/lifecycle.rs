//! Broker state that must not half-happen or outlive its purpose: a partition's produce
//! payload (one or more record batches) is appended all or nothing (the broker validates
//! every batch, and producer sequences across the batches, before it appends any, as Kafka
//! does); consumer-group actors end when their groups empty, and the groups still work.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kafka_protocol::messages::ProduceRequest;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use strata_storage::batch::BatchBuilder;
use strata_tests::raw;
use strata_tests::*;

const CORRUPT_MESSAGE: i16 = 2;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

fn batch(producer: Option<(i64, i16, i32)>, values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new(BASE_TIMESTAMP);
    if let Some((id, epoch, seq)) = producer {
        b = b.producer(id, epoch, seq);
    }
    for (k, v) in values.iter().enumerate() {
        b = b.record(BASE_TIMESTAMP + k as i64, None, v.as_bytes());
    }
    b.build()
}

/// Checks that a payload with `what` was answered with `code` and left the (empty)
/// partition empty.
fn refused_whole(
    bs: &str,
    topic: &str,
    r: kafka_protocol::messages::produce_response::PartitionProduceResponse,
    code: i16,
    what: &str,
) -> Result<()> {
    ensure!(
        r.error_code == code,
        "payload with {what}: expected error {code}, got {r:?}"
    );
    let marks = watermarks(bs, topic)?;
    ensure!(
        marks == vec![(0, 0)],
        "after the payload with {what} the partition holds {marks:?}, expected nothing"
    );
    Ok(())
}

/// Two batches for one partition, the second with a corrupt CRC: CORRUPT_MESSAGE, and the
/// first batch is not appended either. Two sequenced batches whose second skips a sequence:
/// OUT_OF_ORDER_SEQUENCE_NUMBER, and nothing appended. A valid two-batch payload after
/// that lands whole, at offset 0.
#[test]
fn a_partition_payload_with_a_bad_batch_appends_nothing() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("payload");
    create_topic(&bs, &topic, 1)?;
    let version = raw::best_version::<ProduceRequest>(broker.addr())?;
    let mut s = raw::connect(broker.addr())?;

    let mut payload = batch(None, &["a0", "a1"]);
    let mut corrupt = batch(None, &["b0"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    payload.extend_from_slice(&corrupt);
    let r = raw::produce(&mut s, version, 1, &topic, 0, payload)?;
    refused_whole(&bs, &topic, r, CORRUPT_MESSAGE, "a corrupt second batch")?;

    let (pid, epoch) = raw::init_producer_id(broker.addr())?;
    let mut payload = batch(Some((pid, epoch, 0)), &["c0", "c1"]);
    // Sequence 5 where 2 must follow.
    payload.extend_from_slice(&batch(Some((pid, epoch, 5)), &["gap"]));
    let r = raw::produce(&mut s, version, 2, &topic, 0, payload)?;
    refused_whole(
        &bs,
        &topic,
        r,
        OUT_OF_ORDER_SEQUENCE_NUMBER,
        "a sequence gap",
    )?;

    // A good two-batch payload from the same producer: both batches, in order.
    let mut payload = batch(Some((pid, epoch, 0)), &["d0", "d1"]);
    payload.extend_from_slice(&batch(Some((pid, epoch, 2)), &["d2"]));
    let r = raw::produce(&mut s, version, 3, &topic, 0, payload)?;
    ensure!(
        r.error_code == 0 && r.base_offset == 0,
        "good payload: {r:?}"
    );
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    let values: Vec<_> = recs[&0].iter().map(|r| r.payload.clone()).collect();
    ensure!(
        values
            == vec![
                Some(b"d0".to_vec()),
                Some(b"d1".to_vec()),
                Some(b"d2".to_vec())
            ],
        "stored values {values:?}"
    );
    broker.shutdown()
}

fn group_member(bs: &str, group: &str) -> Result<BaseConsumer> {
    let mut c = consumer_config(bs);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    Ok(c.create()?)
}

/// Polls until the consumer has a record (returning its offset) or the timeout passes.
fn first_offset(c: &BaseConsumer, timeout: Duration) -> Result<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        ensure!(Instant::now() < deadline, "no record within {timeout:?}");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            return Ok(m?.offset());
        }
    }
}

/// Ten groups each get a member, which commits and leaves: the broker's group actors
/// (one per group that ever had a member, before the fix) all end once their groups are
/// Empty. A reaped group still works: a new member resumes at its committed offset.
#[test]
fn empty_groups_release_their_actors_and_still_work() -> Result<()> {
    const GROUPS: usize = 10;
    let broker = InProcessBroker::start_temp(|c| c.group_initial_rebalance_delay_ms = 50)?;
    let bs = broker.bootstrap();
    let topic = topic_name("reaped");
    create_topic(&bs, &topic, 1)?;
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &topic, 0..10, 1, |_| 10)?;
    let groups: Vec<String> = (0..GROUPS).map(|i| topic_name(&format!("g{i}"))).collect();
    for g in &groups {
        let c = group_member(&bs, g)?;
        c.subscribe(&[&topic])?;
        ensure!(
            first_offset(&c, CONSUME_TIMEOUT)? == 0,
            "group {g} started elsewhere"
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(4))?;
        c.commit(&tpl, CommitMode::Sync)?;
        // Dropping the consumer closes it: LeaveGroup.
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.live_group_actors() > 0 {
        ensure!(
            Instant::now() < deadline,
            "{} group actors still running after every group emptied",
            broker.live_group_actors()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = group_member(&bs, &groups[0])?;
    c.subscribe(&[&topic])?;
    let resumed = first_offset(&c, CONSUME_TIMEOUT)?;
    ensure!(
        resumed == 4,
        "the reaped group resumed at {resumed}, committed was 4"
    );
    ensure!(
        broker.live_group_actors() == 1,
        "the rejoined group runs one actor"
    );
    drop(c);
    broker.shutdown()
}
