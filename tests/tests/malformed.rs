//! Malformed input on raw sockets: the broker closes (or answers) the offending connection
//! promptly, never hangs on it or crashes, and a separate librdkafka client keeps producing
//! and consuming. A batch with a bad CRC is rejected with CORRUPT_MESSAGE and not stored.

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::Buf;
use kafka_protocol::messages::{ApiVersionsResponse, ProduceRequest};
use kafka_protocol::protocol::Decodable;
use rand::{Rng, SeedableRng};
use strata_storage::batch::BatchBuilder;
use strata_tests::raw::{self, Outcome};
use strata_tests::*;

/// How long the broker may take to react to a bad frame before we call it hung.
const REACT: Duration = Duration::from_secs(15);
/// A broker that buffers a 2 GiB "frame" instead of rejecting it would exceed this.
const MAX_BROKER_PEAK_RSS_KIB: u64 = 1024 * 1024;
const CORRUPT_MESSAGE: i16 = 2;

/// A broker process with a topic and a producer that stay in use across the bad input.
struct Fixture {
    broker: BrokerProcess,
    topic: String,
    producer: RecordingProducer,
    produced: u64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &[])?;
        let topic = topic_name("malformed");
        create_topic(&broker.bootstrap(), &topic, 1)?;
        let producer = recording_producer(&producer_config(&broker.bootstrap()))?;
        let mut f = Fixture {
            broker,
            topic,
            producer,
            produced: 0,
            _dir: dir,
        };
        f.healthy("before any bad input")?;
        Ok(f)
    }

    fn raw(&self) -> Result<std::net::TcpStream> {
        raw::connect(self.broker.addr())
    }

    /// The broker process is alive, answers ApiVersions on a new connection, acknowledges
    /// more writes from the long-lived producer and serves everything back to a new consumer.
    fn healthy(&mut self, after: &str) -> Result<()> {
        ensure!(
            self.broker.is_running(),
            "broker died after {after}; log tail:\n{}",
            self.broker.log_tail(3000)
        );
        let ctx = |e: anyhow::Error| {
            anyhow::anyhow!(
                "broker unhealthy after {after}: {e:#}\nlog tail:\n{}",
                self.broker.log_tail(3000)
            )
        };
        raw::api_versions_ok(self.broker.addr()).map_err(ctx)?;
        let bs = self.broker.bootstrap();
        let ids = self.produced..self.produced + 10;
        produce_and_wait(&self.producer, &self.topic, ids, 1, |_| 50).map_err(ctx)?;
        self.produced += 10;
        let recs = consume_all(&bs, &self.topic, CONSUME_TIMEOUT).map_err(ctx)?;
        verify_test_messages(&recs, 0..self.produced, 1, |_| 50).map_err(ctx)?;
        ensure!(self.broker.is_running(), "broker died after {after}");
        Ok(())
    }
}

/// A request header v1 (api key, version, correlation id, client id) for any api key.
fn header_v1(api_key: i16, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api_key.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&correlation_id.to_be_bytes());
    h.extend_from_slice(&4i16.to_be_bytes());
    h.extend_from_slice(b"evil");
    h
}

/// Noise (`body`, a request frame's content) was rejected: the connection was closed, or,
/// the one case Kafka answers rather than closes (KIP-511), an ApiVersions request it
/// cannot read got an ApiVersions answer with an error code.
fn expect_rejected(body: &[u8], outcome: Outcome, what: &str) -> Result<()> {
    const API_VERSIONS: i16 = 18;
    let api_key = body.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]));
    match outcome {
        Outcome::Closed => Ok(()),
        Outcome::Answered(mut frame) if api_key == Some(API_VERSIONS) && frame.len() >= 6 => {
            frame.advance(4); // correlation id (response header v0)
            let code = frame.get_i16();
            ensure!(
                code != 0,
                "{what}: ApiVersions noise answered without an error"
            );
            Ok(())
        }
        other => anyhow::bail!("{what}: noise (api key {api_key:?}) was not rejected: {other:?}"),
    }
}

/// The connection must be closed or answered, not left hanging.
fn expect_reaction(stream: &mut std::net::TcpStream, what: &str) -> Result<Outcome> {
    let outcome = raw::outcome(stream, REACT)?;
    ensure!(
        outcome != Outcome::Hung,
        "{what}: the broker neither answered nor closed the connection within {REACT:?}"
    );
    Ok(outcome)
}

#[test]
fn random_bytes_are_rejected() -> Result<()> {
    let mut f = Fixture::new()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5742_7a7a);
    for round in 0..5 {
        // Pure noise (the "length" is whatever the first four bytes say) ...
        let mut noise = vec![0u8; 4096];
        rng.fill(&mut noise[..]);
        let mut s = f.raw()?;
        raw::write_tolerant(&mut s, &noise)?;
        let _ = s.shutdown(Shutdown::Write);
        let what = format!("4 KiB of noise #{round}");
        expect_rejected(&noise[4..], expect_reaction(&mut s, &what)?, &what)?;

        // ... and a correctly framed body of noise, which reaches the request decoder.
        let mut body = vec![0u8; 1 + rng.random_range(0..2000)];
        rng.fill(&mut body[..]);
        let mut s = f.raw()?;
        raw::write_tolerant(&mut s, &raw::frame(&body))?;
        let what = format!("framed noise #{round}");
        expect_rejected(&body, expect_reaction(&mut s, &what)?, &what)?;
    }
    f.healthy("random bytes")
}

#[test]
fn truncated_frame_then_close() -> Result<()> {
    let mut f = Fixture::new()?;
    // Announce 100 bytes, send a plausible header and stop; close without a word.
    let mut partial = 100i32.to_be_bytes().to_vec();
    partial.extend_from_slice(&header_v1(18, 0, 1));
    let mut s = f.raw()?;
    s.write_all(&partial)?;
    drop(s);
    // The same, but half-close: the broker must see EOF mid-frame and close its side too.
    let mut s = f.raw()?;
    s.write_all(&partial)?;
    s.shutdown(Shutdown::Write)?;
    let outcome = expect_reaction(&mut s, "truncated frame + half-close")?;
    ensure!(
        outcome == Outcome::Closed,
        "truncated frame was answered: {outcome:?}"
    );
    f.healthy("truncated frames")
}

#[test]
fn huge_and_negative_length_prefixes() -> Result<()> {
    let mut f = Fixture::new()?;
    for len in [i32::MAX, 0x4000_0000, -1, i32::MIN] {
        let mut s = f.raw()?;
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&header_v1(18, 0, 9));
        raw::write_tolerant(&mut s, &bytes)?;
        // No half-close: the broker must act on the length alone, not wait for 2 GiB.
        expect_reaction(&mut s, &format!("length prefix {len:#x}"))?;
    }
    let peak = f.broker.peak_rss_kib()?;
    ensure!(
        peak < MAX_BROKER_PEAK_RSS_KIB,
        "broker peak RSS {peak} KiB after huge length prefixes"
    );
    f.healthy("huge length prefixes")
}

#[test]
fn unknown_api_key_and_versions() -> Result<()> {
    let mut f = Fixture::new()?;
    // API key 9999 with a well-formed v1 header: closed, or answered with our correlation id.
    let mut s = f.raw()?;
    s.write_all(&raw::frame(&header_v1(9999, 0, 42)))?;
    if let Outcome::Answered(mut body) = expect_reaction(&mut s, "api key 9999")? {
        ensure!(
            body.len() >= 4 && body.get_i32() == 42,
            "answer to api key 9999"
        );
    }
    // A known API (Metadata) at a version nobody supports.
    let mut s = f.raw()?;
    s.write_all(&raw::frame(&header_v1(3, 999, 43)))?;
    if let Outcome::Answered(mut body) = expect_reaction(&mut s, "Metadata v999")? {
        ensure!(
            body.len() >= 4 && body.get_i32() == 43,
            "answer to Metadata v999"
        );
    }
    // ApiVersions from the future (KIP-511): a v0 response with UNSUPPORTED_VERSION (35) and
    // the broker's ranges, so that the client can retry with a version we know.
    let mut req = Vec::new();
    req.extend_from_slice(&18i16.to_be_bytes());
    req.extend_from_slice(&99i16.to_be_bytes());
    req.extend_from_slice(&44i32.to_be_bytes());
    req.extend_from_slice(&4i16.to_be_bytes());
    req.extend_from_slice(b"evil");
    req.push(0); // header tagged fields
    req.extend_from_slice(&[2, b'x', 2, b'1', 0]); // a v3-style body
    let mut s = f.raw()?;
    s.write_all(&raw::frame(&req))?;
    match expect_reaction(&mut s, "ApiVersions v99")? {
        Outcome::Answered(mut body) => {
            ensure!(body.get_i32() == 44, "correlation id");
            let resp = ApiVersionsResponse::decode(&mut body, 0)?;
            ensure!(
                resp.error_code == 35 && resp.api_keys.iter().any(|k| k.api_key == 18),
                "ApiVersions v99: error {} with {} keys",
                resp.error_code,
                resp.api_keys.len()
            );
        }
        other => anyhow::bail!("ApiVersions v99: expected a v0 error response, got {other:?}"),
    }
    f.healthy("unknown api key and versions")
}

#[test]
fn corrupted_batch_is_rejected_with_corrupt_message() -> Result<()> {
    let mut f = Fixture::new()?;
    let addr = f.broker.addr();
    let newest = raw::best_version::<ProduceRequest>(addr)?;
    let topic = topic_name("crc");
    create_topic(&f.broker.bootstrap(), &topic, 1)?;
    for (expected_offset, version) in [3, newest].into_iter().enumerate() {
        let mut s = f.raw()?;
        let ts = BASE_TIMESTAMP;
        let good = BatchBuilder::new(ts)
            .record(ts, Some(&b"key"[..]), b"value-that-gets-corrupted")
            .build();
        let mut bad = good.clone();
        let last_value_byte = bad.len() - 2; // the final byte is the header count
        bad[last_value_byte] ^= 0x01;
        let r = raw::produce(&mut s, version, 1, &topic, 0, bad)?;
        ensure!(
            r.error_code == CORRUPT_MESSAGE,
            "Produce v{version} with a bad CRC: expected error {CORRUPT_MESSAGE}, got {r:?}"
        );
        // The connection stays usable and the good batch lands where the bad one did not.
        let r = raw::produce(&mut s, version, 2, &topic, 0, good)?;
        ensure!(
            r.error_code == 0 && r.base_offset == expected_offset as i64,
            "Produce v{version} valid batch after a corrupt one: {r:?}"
        );
    }
    let recs = consume_all(&f.broker.bootstrap(), &topic, CONSUME_TIMEOUT)?;
    check_dense(&recs[&0], 0, 2)?;
    for rec in &recs[&0] {
        ensure!(rec.payload.as_deref() == Some(&b"value-that-gets-corrupted"[..]));
    }
    f.healthy("corrupted batches")
}

/// Every supported API and version, as an empty request with each i32, i16 and varint in turn
/// set to its largest value (counts of 2^31-1, strings of 32767 bytes, compact arrays of
/// 2^32-2), sent to the broker process on a connection each. Each connection is closed or
/// answered (a mutant may decode into a valid request, e.g. a 24-day max_wait_ms; those are
/// dropped after a moment), the broker keeps serving, and its memory stays flat.
#[test]
fn maximal_counts_in_every_api_version() -> Result<()> {
    use strata_broker::protocol::SUPPORTED;
    use strata_tests::hostile::{empty_request, maximal_mutants, request_frame};
    let mut f = Fixture::new()?;
    let rss_before = f.broker.status_field("VmRSS")?;
    let (mut sent, mut closed, mut answered) = (0, 0, 0);
    for s in SUPPORTED {
        let body = empty_request(s.key).ok_or_else(|| anyhow::anyhow!("{:?}", s.key))?;
        for version in s.min.max(3 * i16::from(s.key as i16 == 0))..=s.max {
            let frame = request_frame(s.key, version, &body);
            for at in 0..frame.len() {
                for m in maximal_mutants(&frame, at) {
                    let mut c = f.raw()?;
                    raw::write_tolerant(&mut c, &raw::frame(&m))?;
                    match raw::outcome(&mut c, Duration::from_millis(100))? {
                        Outcome::Closed => closed += 1,
                        Outcome::Answered(_) => answered += 1,
                        Outcome::Hung => {}
                    }
                    sent += 1;
                }
            }
        }
        ensure!(f.broker.is_running(), "broker died on {:?}", s.key);
    }
    f.healthy("maximal counts in every API version")?;
    let rss_after = f.broker.status_field("VmRSS")?;
    println!(
        "{sent} mutants: {closed} closed, {answered} answered; broker RSS {rss_before} -> {rss_after} KiB"
    );
    ensure!(
        closed > sent / 2,
        "only {closed} of {sent} mutants closed their connection"
    );
    ensure!(
        rss_after < rss_before + 128 * 1024,
        "broker RSS grew from {rss_before} to {rss_after} KiB"
    );
    Ok(())
}
