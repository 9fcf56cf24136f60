//! Raw Kafka protocol over `std::net::TcpStream`, for requests no real client would send
//! (malformed frames, corrupted batches) and for checking exactly what the broker answers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Read timeout for raw sockets: a broker that neither answers nor closes within this long
/// is considered hung.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(15);

pub fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, RAW_TIMEOUT).context("connect")?;
    stream.set_read_timeout(Some(RAW_TIMEOUT))?;
    stream.set_write_timeout(Some(RAW_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Encodes header + body of `req` at `version` as one length-prefixed frame.
pub fn encode_request<R: Request>(version: i16, correlation_id: i32, req: &R) -> Result<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("strata-raw-test")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, R::header_version(version))?;
    req.encode(&mut buf, version)?;
    Ok(frame(&buf))
}

/// Prefixes `body` with its length as a big-endian i32.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one length-prefixed frame.
pub fn read_frame(stream: &mut TcpStream) -> Result<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).context("read frame length")?;
    let len = i32::from_be_bytes(len);
    if !(0..=64 << 20).contains(&len) {
        bail!("implausible response frame length {len}");
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).context("read frame body")?;
    Ok(Bytes::from(body))
}

/// Sends `req` and decodes the response, checking the correlation id.
pub fn call<R: Request>(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
    req: &R,
) -> Result<R::Response> {
    stream.write_all(&encode_request(version, correlation_id, req)?)?;
    read_response::<R>(stream, version, correlation_id)
}

/// Reads the response to a request `R` sent earlier, checking the correlation id.
pub fn read_response<R: Request>(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response> {
    let mut body = read_frame(stream)?;
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
    if header.correlation_id != correlation_id {
        bail!(
            "response correlation id {} != request's {correlation_id}",
            header.correlation_id
        );
    }
    let response = R::Response::decode(&mut body, version)?;
    Ok(response)
}

/// True if `stream` has received no byte within `window` (the peer neither answered nor
/// closed). Use only after something positive showed the peer had its chance to answer.
pub fn silent_for(stream: &mut TcpStream, window: Duration) -> Result<bool> {
    stream.set_read_timeout(Some(window))?;
    let mut byte = [0u8; 1];
    let silent = match stream.peek(&mut byte) {
        Ok(_) => false,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
        Err(e) => return Err(e).context("peek"),
    };
    stream.set_read_timeout(Some(RAW_TIMEOUT))?;
    Ok(silent)
}

/// Opens a fresh connection and checks that ApiVersions v0 is answered with error 0: the
/// broker is alive and serving.
pub fn api_versions_ok(addr: SocketAddr) -> Result<()> {
    api_versions_call(&mut connect(addr)?)
}

/// ApiVersions v0 on an open connection, answered with error 0.
pub fn api_versions_call(s: &mut TcpStream) -> Result<()> {
    let resp = call(s, 0, 7, &ApiVersionsRequest::default())?;
    if resp.error_code != 0 || resp.api_keys.is_empty() {
        bail!(
            "ApiVersions: error {} with {} keys",
            resp.error_code,
            resp.api_keys.len()
        );
    }
    Ok(())
}

/// What the broker did with a connection after we sent something bad.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The broker closed the connection (EOF or reset) without a complete response frame.
    Closed,
    /// The broker answered with a frame (then either kept or closed the connection).
    Answered(Bytes),
    /// Neither answer nor close within the timeout.
    Hung,
}

/// Waits for the broker to answer with one frame or close the connection.
pub fn outcome(stream: &mut TcpStream, timeout: Duration) -> Result<Outcome> {
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len >= 0 && buf.len() >= 4 + len as usize {
                return Ok(Outcome::Answered(Bytes::copy_from_slice(
                    &buf[4..4 + len as usize],
                )));
            }
        }
        if Instant::now() > deadline {
            return Ok(Outcome::Hung);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(Outcome::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(Outcome::Closed)
            }
            Err(e) => return Err(e).context("read"),
        }
    }
}

/// Writes `bytes`, tolerating the broker closing the connection part-way (it may reject a
/// frame as soon as it sees the length prefix).
pub fn write_tolerant(stream: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    match stream.write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e).context("write"),
    }
}

/// The (min, max) versions the broker advertises for `api_key`, from ApiVersions v0.
pub fn advertised_versions(addr: SocketAddr, api_key: i16) -> Result<Option<(i16, i16)>> {
    let mut s = connect(addr)?;
    let resp = call(&mut s, 0, 1, &ApiVersionsRequest::default())?;
    Ok(resp
        .api_keys
        .iter()
        .find(|k| k.api_key == api_key)
        .map(|k| (k.min_version, k.max_version)))
}

/// The highest version of request `R` both the broker and kafka-protocol support.
pub fn best_version<R: Request>(addr: SocketAddr) -> Result<i16> {
    let (min, max) = advertised_versions(addr, R::KEY)?
        .with_context(|| format!("broker does not advertise API key {}", R::KEY))?;
    let version = max.min(R::VERSIONS.max);
    if version < min.max(R::VERSIONS.min) {
        bail!("no common version for API key {}", R::KEY);
    }
    Ok(version)
}

/// A Produce request for one partition's `records` with the given `acks`.
pub fn produce_request(
    topic: &str,
    partition: i32,
    records: Vec<u8>,
    acks: i16,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

/// The single partition of a Produce response.
pub fn only_partition(
    resp: kafka_protocol::messages::ProduceResponse,
) -> Result<kafka_protocol::messages::produce_response::PartitionProduceResponse> {
    let mut partitions = resp
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .collect::<Vec<_>>();
    if partitions.len() != 1 {
        bail!("Produce response has {} partitions", partitions.len());
    }
    Ok(partitions.remove(0))
}

/// Sends one acks=all Produce request with a single partition's `records` and returns that
/// partition's response.
pub fn produce(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> Result<kafka_protocol::messages::produce_response::PartitionProduceResponse> {
    let req = produce_request(topic, partition, records, -1);
    only_partition(call(stream, version, correlation_id, &req)?)
}

/// Fetch version the raw helpers use: the last one that names topics (v13+ uses ids).
pub const FETCH_VERSION: i16 = 12;

/// A Fetch request (v12 layout) for one partition from `offset`.
pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(10 << 20)])])
}

/// What one partition of a Fetch response held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub error_code: i16,
    pub high_watermark: i64,
    /// (base offset, record count) of each batch returned.
    pub batches: Vec<(i64, i32)>,
    pub bytes: usize,
}

impl Fetched {
    /// Offsets covered by the returned batches.
    pub fn offsets(&self) -> Vec<i64> {
        self.batches
            .iter()
            .flat_map(|&(base, n)| base..base + n as i64)
            .collect()
    }
}

/// Sends `req` (built by [`fetch_request`]) and sums up its only partition.
pub fn fetch(
    stream: &mut TcpStream,
    correlation_id: i32,
    req: &kafka_protocol::messages::FetchRequest,
) -> Result<Fetched> {
    let resp = call(stream, FETCH_VERSION, correlation_id, req)?;
    let p = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .next()
        .context("Fetch response without partitions")?;
    let records = p.records.clone().unwrap_or_default();
    let mut rest = &records[..];
    let mut batches = Vec::new();
    while !rest.is_empty() {
        let h = strata_storage::batch::read_header(rest)?;
        batches.push((h.base_offset, h.record_count));
        rest = rest
            .get(h.size..)
            .context("truncated batch in Fetch response")?;
    }
    Ok(Fetched {
        error_code: p.error_code,
        high_watermark: p.high_watermark,
        batches,
        bytes: records.len(),
    })
}

/// A batch of `n` small records (values `prefix-0`, `prefix-1`, ...), without producer id.
pub fn simple_batch(prefix: &str, n: usize) -> Vec<u8> {
    let mut b = strata_storage::batch::BatchBuilder::new(crate::BASE_TIMESTAMP);
    for i in 0..n {
        b = b.record(
            crate::BASE_TIMESTAMP + i as i64,
            Some(&b"k"[..]),
            format!("{prefix}-{i}").as_bytes(),
        );
    }
    b.build()
}

/// InitProducerId for an idempotent (non-transactional) producer: (producer id, epoch).
pub fn init_producer_id(addr: SocketAddr) -> Result<(i64, i16)> {
    use kafka_protocol::messages::InitProducerIdRequest;
    let version = best_version::<InitProducerIdRequest>(addr)?;
    let mut s = connect(addr)?;
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let resp = call(&mut s, version, 3, &req)?;
    if resp.error_code != 0 {
        bail!("InitProducerId v{version}: error {}", resp.error_code);
    }
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// Kafka's INVALID_CONFIG error code.
pub const INVALID_CONFIG: i16 = 40;

/// AlterConfigs (the replacing, non-incremental kind) on one topic: the resource's error
/// code and message, which the rdkafka crate does not report.
pub fn alter_topic_configs(
    addr: SocketAddr,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> Result<(i16, Option<String>)> {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::AlterConfigsRequest;
    /// ConfigResource.Type.TOPIC in Kafka.
    const TOPIC_RESOURCE: i8 = 2;
    let version = best_version::<AlterConfigsRequest>(addr)?;
    let mut s = connect(addr)?;
    let req = AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(
                configs
                    .iter()
                    .map(|&(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )]);
    let resp = call(&mut s, version, 1, &req)?;
    let r = resp
        .responses
        .first()
        .context("AlterConfigs response without resources")?;
    Ok((
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// ListOffsets (v1) for one partition at `timestamp` (or a special one: -1 latest, -2
/// earliest, -4 earliest on local disk): the offset answered.
pub fn list_offset(addr: SocketAddr, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut c = connect(addr)?;
    let req = kafka_protocol::messages::ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                topic.to_string(),
            )))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let resp = call(&mut c, 9, 1, &req)?;
    let p = &resp.topics[0].partitions[0];
    if p.error_code != 0 {
        bail!(
            "ListOffsets {topic}/{partition} at {timestamp}: error {}",
            p.error_code
        );
    }
    Ok(p.offset)
}

/// A topic's id, from Metadata (v12).
pub fn topic_id(addr: SocketAddr, topic: &str) -> Result<uuid::Uuid> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let mut c = connect(addr)?;
    let req = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(kafka_protocol::messages::TopicName(
            StrBytes::from_string(topic.to_string()),
        ))),
    ]));
    let resp = call(&mut c, 12, 1, &req)?;
    let t = resp.topics.first().context("Metadata without topics")?;
    if t.error_code != 0 {
        bail!("Metadata {topic}: error {}", t.error_code);
    }
    Ok(t.topic_id)
}
