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

/// Sends one Produce request with a single partition's `records` and returns that
/// partition's response.
pub fn produce(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> Result<kafka_protocol::messages::produce_response::PartitionProduceResponse> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    let req = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])]);
    let resp = call(stream, version, correlation_id, &req)?;
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
