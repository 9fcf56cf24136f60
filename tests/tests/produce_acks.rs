//! Produce paths no librdkafka test takes: acks=0 (no answer, yet stored, and the
//! connection keeps serving), an invalid acks value, and the legacy Produce v0-v2 that the
//! broker advertises (for old clients' codec detection) but refuses per partition.
//! (acks=1 is covered by the sync barrier test: answered while the syncer is held.)

use std::io::Write;

use anyhow::{bail, ensure, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{MetadataRequest, ProduceRequest};
use strata_tests::raw::{self, simple_batch};
use strata_tests::*;

/// Kafka's error codes (org.apache.kafka.common.protocol.Errors).
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_REQUIRED_ACKS: i16 = 21;

#[test]
fn acks_0_gets_no_answer_is_stored_and_the_connection_keeps_serving() -> Result<()> {
    let (broker, topic) = broker_with_topic("acks0", 1)?;
    let addr = broker.addr();
    let version = raw::best_version::<ProduceRequest>(addr)?;
    let mut s = raw::connect(addr)?;
    let req = raw::produce_request(&topic, 0, simple_batch("zero", 4), 0);
    s.write_all(&raw::encode_request(version, 1, &req)?)?;
    // The next request on the same connection is answered, and its answer is the first
    // frame to come back: there was none for acks=0.
    let md_version = raw::best_version::<MetadataRequest>(addr)?;
    let md = raw::call(&mut s, md_version, 2, &MetadataRequest::default())
        .context("the request after an acks=0 produce (a response to acks=0 would come first)")?;
    ensure!(!md.brokers.is_empty(), "metadata without brokers: {md:?}");
    let mut reader = raw::connect(addr)?;
    let f = raw::fetch(&mut reader, 1, &raw::fetch_request(&topic, 0, 0, 5_000, 1))?;
    ensure!(
        f.offsets() == vec![0, 1, 2, 3],
        "acks=0 records not stored: {f:?}"
    );
    broker.shutdown()
}

#[test]
fn invalid_acks_is_refused_with_invalid_required_acks() -> Result<()> {
    let (broker, topic) = broker_with_topic("acks2", 1)?;
    let addr = broker.addr();
    let version = raw::best_version::<ProduceRequest>(addr)?;
    let mut s = raw::connect(addr)?;
    for acks in [2i16, -2, 5] {
        let req = raw::produce_request(&topic, 0, simple_batch("bad", 1), acks);
        let r = raw::only_partition(raw::call(&mut s, version, acks as i32 + 10, &req)?)?;
        ensure!(
            r.error_code == INVALID_REQUIRED_ACKS,
            "acks={acks}: expected INVALID_REQUIRED_ACKS ({INVALID_REQUIRED_ACKS}), got {r:?}"
        );
    }
    let f = raw::fetch(&mut s, 1, &raw::fetch_request(&topic, 0, 0, 0, 1))?;
    ensure!(
        f.batches.is_empty() && f.high_watermark == 0,
        "refused data stored: {f:?}"
    );
    broker.shutdown()
}

/// A Produce v0-v2 request, encoded by hand (the codec has no such versions): header v1,
/// then `acks, timeout, [topic, [partition, message set bytes]]`.
fn legacy_produce(version: i16, correlation_id: i32, topic: &str, partitions: &[i32]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(0); // api key: Produce
    b.put_i16(version);
    b.put_i32(correlation_id);
    b.put_i16(-1); // client id: null
    b.put_i16(-1); // acks
    b.put_i32(30_000);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for &p in partitions {
        // A v1 message set would go here; the content does not matter to a refusal.
        let set = [0u8; 34];
        b.put_i32(p);
        b.put_i32(set.len() as i32);
        b.put_slice(&set);
    }
    raw::frame(&b)
}

#[test]
fn legacy_produce_v0_to_v2_is_refused_per_partition() -> Result<()> {
    let (broker, topic) = broker_with_topic("legacy", 2)?;
    let addr = broker.addr();
    let mut s = raw::connect(addr)?;
    for version in 0..=2i16 {
        let correlation = 100 + version as i32;
        s.write_all(&legacy_produce(version, correlation, &topic, &[0, 1]))?;
        let mut body = raw::read_frame(&mut s)?;
        ensure!(
            body.get_i32() == correlation,
            "v{version}: wrong correlation id"
        );
        ensure!(body.get_i32() == 1, "v{version}: one topic expected");
        let name_len = body.get_i16() as usize;
        ensure!(
            &body.split_to(name_len)[..] == topic.as_bytes(),
            "v{version}: topic name"
        );
        let parts = body.get_i32();
        ensure!(
            parts == 2,
            "v{version}: {parts} partitions answered, 2 sent"
        );
        for expected in [0, 1] {
            let (p, code, base) = (body.get_i32(), body.get_i16(), body.get_i64());
            if version >= 2 {
                body.get_i64(); // log append time
            }
            ensure!(
                (p, code, base) == (expected, UNSUPPORTED_VERSION, -1),
                "v{version} partition {p}: error {code}, base offset {base}"
            );
        }
        let rest = if version >= 1 { 4 } else { 0 };
        if body.remaining() != rest {
            bail!("v{version}: {} trailing bytes", body.remaining());
        }
    }
    // Still serving, and nothing was stored.
    let f = raw::fetch(&mut s, 1, &raw::fetch_request(&topic, 0, 0, 0, 1))?;
    ensure!(f.high_watermark == 0, "legacy produce stored data: {f:?}");
    broker.shutdown()
}
