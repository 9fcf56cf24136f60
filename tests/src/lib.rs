//! Test harness for Strata's end-to-end tests: brokers (in-process or as a child process
//! that can be SIGTERMed, SIGKILLed and restarted), rdkafka client helpers, raw protocol
//! helpers, deterministic test messages, and /proc readings for the benchmark.

pub mod archived;
pub mod broker;
pub mod clients;
pub mod crashload;
pub mod group_storm;
pub mod hostile;
pub mod powerfs;
pub mod procstat;
pub mod quotas;
pub mod raw;
pub mod s3;
pub mod scrape;

pub use broker::{broker_binary, free_port, test_config, BrokerProcess, InProcessBroker};
pub use clients::*;

use std::time::Duration;

use rdkafka::producer::Producer as _;

/// Generous upper bound for reading back a test's data; only a hang should ever reach it.
pub const CONSUME_TIMEOUT: Duration = Duration::from_secs(180);

/// `size` bytes of xorshift noise from `seed`: incompressible, so codecs cannot flatter
/// benchmark numbers.
pub fn noise(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A unique topic name for one test (tests in a binary share nothing, but a readable prefix
/// helps when reading broker logs).
pub fn topic_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Polls `check` every `interval` until it returns `Ok(v)`; on timeout fails with the last
/// state it described (its `Err`). The one poll-until loop of the test suite.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(state) if std::time::Instant::now() > deadline => {
                anyhow::bail!("timed out after {timeout:?} waiting for {what}; last state: {state}")
            }
            Err(_) => std::thread::sleep(interval),
        }
    }
}

/// An in-process broker with default settings on a temporary directory, and a new topic
/// named after `prefix` with `partitions` partitions.
pub fn broker_with_topic(
    prefix: &str,
    partitions: i32,
) -> anyhow::Result<(InProcessBroker, String)> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let topic = topic_name(prefix);
    create_topic(&broker.bootstrap(), &topic, partitions)?;
    Ok((broker, topic))
}

/// Deterministic test message number `i`: key, value (`size` bytes, varying with `i`),
/// headers (including one with a null value) and a CreateTime timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestMessage {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

/// Timestamp of test message 0 (2023-11-14T22:13:20Z): fixed, so that runs are reproducible
/// and clearly not "now".
pub const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

impl TestMessage {
    pub fn new(i: u64, size: usize) -> Self {
        let mut value = Vec::with_capacity(size);
        let seed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // A text prefix keeps values readable in failures; the rest mixes a cheap PRNG
        // stream (incompressible) with runs (compressible), so every codec does real work.
        value.extend_from_slice(format!("msg-{i}:").as_bytes());
        let mut x = seed | 1;
        while value.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(4) {
                value.extend(std::iter::repeat_n(b'a' + (x % 26) as u8, 16));
            } else {
                value.extend_from_slice(&x.to_le_bytes());
            }
        }
        value.truncate(size.max(format!("msg-{i}:").len()));
        TestMessage {
            key: format!("key-{i}").into_bytes(),
            value,
            headers: vec![
                ("idx".to_string(), Some(i.to_be_bytes().to_vec())),
                ("empty".to_string(), Some(Vec::new())),
                ("null".to_string(), None),
            ],
            timestamp: BASE_TIMESTAMP + i as i64,
        }
    }

    pub fn owned_headers(&self) -> rdkafka::message::OwnedHeaders {
        let mut h = rdkafka::message::OwnedHeaders::new();
        for (key, value) in &self.headers {
            h = h.insert(rdkafka::message::Header {
                key: key.as_str(),
                value: value.as_deref(),
            });
        }
        h
    }

    /// Compares a consumed record against this message; returns a description of the first
    /// difference.
    pub fn check(&self, rec: &Rec) -> anyhow::Result<()> {
        let at = format!("partition {} offset {}", rec.partition, rec.offset);
        anyhow::ensure!(
            rec.key.as_deref() == Some(&self.key[..]),
            "{at}: key {:?} != {:?}",
            rec.key.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(&self.key)
        );
        anyhow::ensure!(
            rec.payload.as_deref() == Some(&self.value[..]),
            "{at}: value differs (len {:?} vs {}, starts {:?})",
            rec.payload.as_ref().map(Vec::len),
            self.value.len(),
            rec.payload
                .as_deref()
                .map(|p| String::from_utf8_lossy(&p[..p.len().min(24)]).into_owned())
        );
        anyhow::ensure!(
            rec.headers == self.headers,
            "{at}: headers {:?} != {:?}",
            rec.headers,
            self.headers
        );
        anyhow::ensure!(
            rec.timestamp == rdkafka::Timestamp::CreateTime(self.timestamp),
            "{at}: timestamp {:?} != CreateTime({})",
            rec.timestamp,
            self.timestamp
        );
        Ok(())
    }
}

/// Sends test messages `ids` to `topic`, message `i` to partition `i % partitions` with
/// `size(i)` value bytes and its CreateTime timestamp; does not wait for delivery.
pub fn produce_test_messages(
    producer: &RecordingProducer,
    topic: &str,
    ids: std::ops::Range<u64>,
    partitions: i32,
    size: impl Fn(u64) -> usize,
) -> anyhow::Result<()> {
    for i in ids {
        let m = TestMessage::new(i, size(i));
        let record = rdkafka::producer::BaseRecord::with_opaque_to(
            topic,
            Box::new((i, std::time::Instant::now())),
        )
        .partition((i % partitions as u64) as i32)
        .key(&m.key[..])
        .payload(&m.value[..])
        .headers(m.owned_headers())
        .timestamp(m.timestamp);
        send(producer, record)?;
    }
    Ok(())
}

/// Produces test messages `ids` (see [`produce_test_messages`]), waits for every delivery
/// report and fails unless all were acknowledged. Returns the reports.
pub fn produce_and_wait(
    producer: &RecordingProducer,
    topic: &str,
    ids: std::ops::Range<u64>,
    partitions: i32,
    size: impl Fn(u64) -> usize,
) -> anyhow::Result<Vec<Delivery>> {
    let before = producer.context().reported();
    let n = ids.end - ids.start;
    produce_test_messages(producer, topic, ids, partitions, size)?;
    wait_reports(producer, before + n, CONSUME_TIMEOUT)?;
    let reports = producer.context().take();
    if let Some(bad) = reports.iter().find(|d| d.error.is_some()) {
        anyhow::bail!(
            "{} of {} messages failed; first: id {} -> {:?}",
            reports.iter().filter(|d| d.error.is_some()).count(),
            reports.len(),
            bad.id,
            bad.error
        );
    }
    Ok(reports)
}

/// Checks that `recs` (one topic, read from offset 0) hold exactly test messages `ids`,
/// message `i` in partition `i % partitions`, in send order, with dense offsets from 0, and
/// with key, value, headers and timestamp intact.
pub fn verify_test_messages(
    recs: &std::collections::BTreeMap<i32, Vec<Rec>>,
    ids: std::ops::Range<u64>,
    partitions: i32,
    size: impl Fn(u64) -> usize,
) -> anyhow::Result<()> {
    for p in 0..partitions {
        let expected: Vec<u64> = ids
            .clone()
            .filter(|i| i % partitions as u64 == p as u64)
            .collect();
        let got = recs.get(&p).map(Vec::as_slice).unwrap_or_default();
        check_dense(got, 0, expected.len() as i64)
            .map_err(|e| anyhow::anyhow!("partition {p}: {e}"))?;
        for (rec, &i) in got.iter().zip(&expected) {
            TestMessage::new(i, size(i)).check(rec)?;
        }
    }
    let extra: Vec<_> = recs.keys().filter(|&&p| p >= partitions).collect();
    anyhow::ensure!(
        extra.is_empty(),
        "records from unexpected partitions {extra:?}"
    );
    Ok(())
}

/// Checks that each delivery report of test messages carries offset `i / partitions` in
/// partition `i % partitions`: offsets were assigned densely in send order.
pub fn check_delivery_offsets(
    reports: &[Delivery],
    partitions: i32,
    first_offset: impl Fn(i32) -> i64,
    first_id: u64,
) -> anyhow::Result<()> {
    for d in reports {
        let p = (d.id % partitions as u64) as i32;
        let expected = first_offset(p) + ((d.id - first_id) / partitions as u64) as i64;
        anyhow::ensure!(
            d.partition == p && d.offset == expected,
            "message {} acknowledged at {}/{}, expected {p}/{expected}",
            d.id,
            d.partition,
            d.offset
        );
    }
    Ok(())
}

/// Prints `what: N samples, p50 .. p99 .. max ..` for latencies in ms sorted ascending
/// (the benchmarks' report line).
pub fn print_latencies(what: &str, sorted_ms: &[f64]) {
    if sorted_ms.is_empty() {
        println!("{what}: no samples");
        return;
    }
    let q = |p: f64| sorted_ms[((sorted_ms.len() - 1) as f64 * p) as usize];
    println!(
        "{what}: {} samples, p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        sorted_ms.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

/// Parses the message number out of a value produced by [`TestMessage::new`].
pub fn message_index(value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(b"msg-")?;
    let end = rest.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_messages_are_deterministic_and_sized() {
        let a = TestMessage::new(42, 100);
        assert_eq!(a, TestMessage::new(42, 100));
        assert_ne!(a.value, TestMessage::new(43, 100).value);
        assert_eq!(a.value.len(), 100);
        assert_eq!(message_index(&a.value), Some(42));
        assert_eq!(TestMessage::new(7, 1).value, b"msg-7:".to_vec());
    }
}
