//! Every resource a client can make the broker hold has a limit: partitions, fetch response
//! size, connections per address, idle connections, memory for declared-but-unsent frames,
//! and the read cache's hold on request buffers. Each test pushes past one.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, FetchRequest, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use strata_storage::batch::BatchBuilder;
use strata_tests::raw::{self, Outcome};
use strata_tests::*;

const INVALID_PARTITIONS: i16 = 37;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topics(addr: std::net::SocketAddr, topic: &str, n: i32, validate: bool) -> Result<i16> {
    let mut c = raw::connect(addr)?;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_validate_only(validate)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(n)
            .with_replication_factor(-1)]);
    let resp = raw::call(&mut c, 5, 1, &req)?;
    Ok(resp.topics[0].error_code)
}

/// A Fetch of partition 0 from offset 0, asking for `max_bytes` in all and per partition.
fn fetch(topic: &str, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(max_bytes)])])
}

/// 2^31-1 partitions, asked for with CreateTopics (real and validate-only) and
/// CreatePartitions, are refused with INVALID_PARTITIONS at once; the broker's memory does not
/// move, and a request within max_partitions still works.
#[test]
fn partition_counts_are_bounded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        0,
        &[("STRATA_MAX_PARTITIONS", "100")],
    )?;
    let addr = broker.addr();
    let rss_before = broker.status_field("VmRSS")?;
    for validate in [true, false] {
        let started = Instant::now();
        let code = create_topics(addr, "huge", i32::MAX, validate)?;
        ensure!(
            code == INVALID_PARTITIONS,
            "validate_only={validate}: got {code}"
        );
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
    // Exactly at the limit is fine; one more is not.
    ensure!(create_topics(addr, "sixty", 60, false)? == 0);
    ensure!(create_topics(addr, "forty-one", 41, false)? == INVALID_PARTITIONS);
    ensure!(create_topics(addr, "forty", 40, false)? == 0);
    let mut c = raw::connect(addr)?;
    for count in [i32::MAX, 61] {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("sixty"))
                .with_count(count)
                .with_assignments(None)]);
        let resp = raw::call(&mut c, 3, 2, &req)?;
        ensure!(
            resp.results[0].error_code == INVALID_PARTITIONS,
            "CreatePartitions to {count}: {:?}",
            resp.results[0]
        );
    }
    let rss_after = broker.status_field("VmRSS")?;
    ensure!(
        rss_after < rss_before + 64 * 1024,
        "broker RSS {rss_before} -> {rss_after} KiB"
    );
    ensure!(broker.is_running());
    Ok(())
}

/// A fetch asking for i32::MAX bytes gets at most fetch_max_bytes (plus nothing: the first
/// batch is smaller than the limit here).
#[test]
fn fetch_max_bytes_caps_what_a_client_asks_for() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.fetch_max_bytes = 64 * 1024)?;
    let topic = topic_name("fetchcap");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let mut c = raw::connect(broker.addr())?;
    for i in 0..64 {
        let b = BatchBuilder::new(1_700_000_000_000 + i)
            .record(1_700_000_000_000 + i, None, &[i as u8; 8000])
            .build();
        let r = raw::produce(&mut c, 9, i as i32, &topic, 0, b)?;
        ensure!(r.error_code == 0, "produce: {}", r.error_code);
    }
    let req = fetch(&topic, 0, i32::MAX);
    let resp = raw::call(&mut c, 11, 100, &req)?;
    let records = resp.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, Bytes::len);
    ensure!(
        records > 32 * 1024 && records <= 64 * 1024,
        "fetch returned {records} bytes with fetch_max_bytes = 64 KiB"
    );
    Ok(())
}

/// max_connections_per_ip: the fourth connection from 127.0.0.1 is closed at once while three
/// are held; an override for the address raises its limit; closing one frees a place.
#[test]
fn connections_per_address_are_limited() -> Result<()> {
    for (overrides, allowed) in [("", 3), ("127.0.0.1:5", 5)] {
        let broker = InProcessBroker::start_temp(|c| {
            c.max_connections_per_ip = 3;
            c.max_connections_per_ip_overrides = overrides.into();
        })?;
        let mut held = Vec::new();
        for i in 0..allowed {
            let mut c = raw::connect(broker.addr())?;
            raw::api_versions_call(&mut c).with_context(|| format!("connection {i}"))?;
            held.push(c);
        }
        let mut extra = raw::connect(broker.addr())?;
        raw::write_tolerant(
            &mut extra,
            &raw::encode_request(0, 1, &ApiVersionsRequest::default())?,
        )?;
        let outcome = raw::outcome(&mut extra, Duration::from_secs(10))?;
        ensure!(
            outcome == Outcome::Closed,
            "connection {} past the limit of {allowed}: {outcome:?}",
            allowed + 1
        );
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = raw::connect(broker.addr())?;
            if raw::api_versions_call(&mut c).is_ok() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "a freed place was never given back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// connections_max_idle_ms: a silent connection is closed after about that long, one that
/// keeps sending requests is not.
#[test]
fn idle_connections_are_closed() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.connections_max_idle_ms = 1000)?;
    let mut idle = raw::connect(broker.addr())?;
    let mut busy = raw::connect(broker.addr())?;
    let started = Instant::now();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        raw::api_versions_call(&mut busy)?;
    }
    let outcome = raw::outcome(&mut idle, Duration::from_secs(10))?;
    let waited = started.elapsed();
    ensure!(outcome == Outcome::Closed, "idle connection: {outcome:?}");
    ensure!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the limit"
    );
    raw::api_versions_call(&mut busy).context("a busy connection must stay open")?;
    Ok(())
}

/// 64 connections each declaring a 100 MiB frame (the largest allowed) and sending 10 bytes
/// of it: the broker holds what arrived, not what was announced (6.4 GB).
#[test]
fn declared_frame_sizes_are_not_reserved() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &[])?;
    // Virtual data size: a reservation that is never written does not show in RSS.
    let data_before = broker.status_field("VmData")?;
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut c = raw::connect(broker.addr())?;
        c.write_all(&(100 * 1024 * 1024i32).to_be_bytes())?;
        c.write_all(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0])?;
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    raw::api_versions_ok(broker.addr())?;
    let data_after = broker.status_field("VmData")?;
    ensure!(
        data_after < data_before + 512 * 1024,
        "broker VmData {data_before} -> {data_after} KiB with 64 announced 100 MiB frames"
    );
    Ok(())
}

/// Produce requests of 8 MiB that carry one small batch for a real partition and 8 MiB of
/// padding for a partition that does not exist: the small batches enter the read cache, and
/// must not keep their 8 MiB frames alive (40 of them would pin 320 MiB while the cache
/// counts a few KiB).
#[test]
fn cached_batches_do_not_pin_their_request_frames() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        0,
        &[("STRATA_MESSAGE_MAX_BYTES", "16777216")],
    )?;
    let topic = topic_name("pin");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let rss_before = broker.status_field("VmRSS")?;
    let mut c = raw::connect(broker.addr())?;
    let padding = Bytes::from(vec![0u8; 8 << 20]);
    for i in 0..40 {
        let small = BatchBuilder::new(1_700_000_000_000)
            .record(1_700_000_000_000, None, b"tiny")
            .build();
        let req = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(&topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(small))),
                    PartitionProduceData::default()
                        .with_index(99)
                        .with_records(Some(padding.clone())),
                ])]);
        let resp = raw::call(&mut c, 9, i, &req)?;
        let parts = &resp.responses[0].partition_responses;
        ensure!(
            parts[0].error_code == 0,
            "small batch: {}",
            parts[0].error_code
        );
        ensure!(parts[1].error_code != 0, "partition 99 does not exist");
    }
    let rss_after = broker.status_field("VmRSS")?;
    ensure!(
        rss_after < rss_before + 160 * 1024,
        "broker RSS {rss_before} -> {rss_after} KiB after 40 padded 8 MiB produce requests"
    );
    Ok(())
}

/// queued_max_request_bytes: a client pipelining twenty 40 MiB long-poll fetches (each padded
/// with an unknown tagged field, which the decoder keeps as a slice of the frame) does not get
/// them all read into memory at once (800 MiB): the broker reads on as answers go out. Every
/// request is still answered, in order.
#[test]
fn queued_request_bytes_are_bounded_per_connection() -> Result<()> {
    const REQUESTS: i32 = 20;
    const PAD: usize = 40 << 20;
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        0,
        &[
            ("STRATA_QUEUED_MAX_REQUEST_BYTES", "104857600"),
            ("STRATA_NON_PRODUCE_REQUEST_MAX_BYTES", "52428800"),
        ],
    )?;
    let topic = topic_name("queued");
    create_topic(&broker.bootstrap(), &topic, 1)?;
    let peak_before = broker.peak_rss_kib()?;
    let pad = Bytes::from(vec![0u8; PAD]);
    let mut frames = Vec::new();
    for i in 0..REQUESTS {
        let req = fetch(&topic, 300, 1 << 20).with_unknown_tagged_field(1000, pad.clone());
        frames.push(raw::encode_request(12, i, &req)?);
    }
    let mut c = raw::connect(broker.addr())?;
    let mut w = c.try_clone()?;
    let writer = std::thread::spawn(move || -> Result<()> {
        for f in frames {
            w.write_all(&f)?;
        }
        Ok(())
    });
    for i in 0..REQUESTS {
        let mut body = raw::read_frame(&mut c)?;
        let header = kafka_protocol::messages::ResponseHeader::decode(&mut body, 1)?;
        ensure!(
            header.correlation_id == i,
            "answer {i} has correlation id {}",
            header.correlation_id
        );
    }
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let peak_after = broker.peak_rss_kib()?;
    let grew_mib = peak_after.saturating_sub(peak_before) / 1024;
    println!("broker peak RSS grew by {grew_mib} MiB for {REQUESTS} pipelined 40 MiB requests");
    ensure!(
        grew_mib < 400,
        "broker peak RSS grew by {grew_mib} MiB: the requests were queued, not bounded"
    );
    Ok(())
}

/// A Metadata v1 request naming 4.7 million empty topics is 9.4 MB on the wire and would
/// decode into ~350 MB (each 2-byte name becomes an ~75-byte entry): past
/// non_produce_request_max_bytes (8 MiB) it closes the connection before it is decoded.
/// The same request within the limit is decoded and answered.
#[test]
fn large_non_produce_requests_are_refused_before_decoding() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::spawn(
        &dir.path().join("data"),
        0,
        &[("STRATA_AUTO_CREATE_TOPICS", "false")],
    )?;
    let peak_before = broker.peak_rss_kib()?;
    let metadata = |topics: usize| {
        let mut body = Vec::with_capacity(12 + 2 * topics);
        body.extend_from_slice(&3i16.to_be_bytes()); // Metadata
        body.extend_from_slice(&1i16.to_be_bytes()); // v1
        body.extend_from_slice(&1i32.to_be_bytes()); // correlation id
        body.extend_from_slice(&(-1i16).to_be_bytes()); // no client id
        body.extend_from_slice(&(topics as i32).to_be_bytes());
        body.resize(body.len() + 2 * topics, 0); // empty names
        raw::frame(&body)
    };
    let mut c = raw::connect(broker.addr())?;
    raw::write_tolerant(&mut c, &metadata(4_700_000))?;
    let outcome = raw::outcome(&mut c, Duration::from_secs(10))?;
    ensure!(
        outcome == Outcome::Closed,
        "9.4 MB Metadata request: {outcome:?}"
    );
    let peak_after = broker.peak_rss_kib()?;
    ensure!(
        peak_after < peak_before + 64 * 1024,
        "broker peak RSS {peak_before} -> {peak_after} KiB"
    );
    let mut c = raw::connect(broker.addr())?;
    raw::write_tolerant(&mut c, &metadata(1000))?;
    let outcome = raw::outcome(&mut c, Duration::from_secs(10))?;
    ensure!(
        matches!(outcome, Outcome::Answered(_)),
        "small request: {outcome:?}"
    );
    ensure!(broker.is_running());
    Ok(())
}
