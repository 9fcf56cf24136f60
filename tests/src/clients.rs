//! rdkafka (librdkafka) clients for tests: configs, admin calls, a producer that records
//! every delivery report, and a consumer that reads exact offset ranges with `assign()`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Timeout for metadata, admin and watermark calls against a local broker.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Base settings shared by every client: fast reconnects, so that a restarted broker is
/// found again quickly.
fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "strata-tests")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("socket.connection.setup.timeout.ms", "10000");
    c
}

/// Producer settings: acks=all, small linger, generous timeouts for slow debug builds.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = base_config(bootstrap);
    c.set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("request.timeout.ms", "60000")
        .set("enable.idempotence", "false");
    c
}

/// Consumer settings for `assign()`-only use: the broker has no consumer groups yet, so no
/// commits; `group.id` is set only because librdkafka wants one. Out-of-range positions are
/// errors rather than silent resets.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = base_config(bootstrap);
    c.set("group.id", "strata-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    c
}

pub fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    Ok(base_config(bootstrap).create()?)
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT))
}

/// CreateTopics with `partitions` partitions; fails on any per-topic error.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<()> {
    let results = try_create_topic(bootstrap, name, partitions)?;
    results.map_err(|code| anyhow!("CreateTopics {name}: {code:?}"))
}

/// CreateTopics, returning the per-topic result code.
pub fn try_create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    try_create_topic_with(bootstrap, name, partitions, &[])
}

/// CreateTopics with topic configs (Kafka names, e.g. `max.message.bytes`).
pub fn try_create_topic_with(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let admin = admin(bootstrap)?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for &(k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = futures::executor::block_on(admin.create_topics([&topic], &admin_opts()))?;
    match results.as_slice() {
        [Ok(_)] => Ok(Ok(())),
        [Err((_, code))] => Ok(Err(*code)),
        other => bail!("CreateTopics returned {} results", other.len()),
    }
}

/// DescribeConfigs of one resource: its entries by name.
pub fn describe_configs(
    bootstrap: &str,
    spec: rdkafka::admin::ResourceSpecifier<'_>,
) -> Result<BTreeMap<String, rdkafka::admin::ConfigEntry>> {
    let admin = admin(bootstrap)?;
    let opts = admin_opts().request_timeout(Some(CALL_TIMEOUT));
    let mut results = futures::executor::block_on(admin.describe_configs([&spec], &opts))?;
    if results.len() != 1 {
        bail!("DescribeConfigs: {} results", results.len());
    }
    let r = results
        .remove(0)
        .map_err(|c| anyhow!("DescribeConfigs {spec:?}: {c:?}"))?;
    Ok(r.entries.into_iter().map(|e| (e.name.clone(), e)).collect())
}

/// DeleteTopics; returns the per-topic result code.
pub fn delete_topic(
    bootstrap: &str,
    name: &str,
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let admin = admin(bootstrap)?;
    let results = futures::executor::block_on(admin.delete_topics(&[name], &admin_opts()))?;
    match results.as_slice() {
        [Ok(_)] => Ok(Ok(())),
        [Err((_, code))] => Ok(Err(*code)),
        other => bail!("DeleteTopics returned {} results", other.len()),
    }
}

/// CreatePartitions: grow `name` to `total` partitions.
pub fn create_partitions(
    bootstrap: &str,
    name: &str,
    total: usize,
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let admin = admin(bootstrap)?;
    let req = NewPartitions::new(name, total);
    let results = futures::executor::block_on(admin.create_partitions([&req], &admin_opts()))?;
    match results.as_slice() {
        [Ok(_)] => Ok(Ok(())),
        [Err((_, code))] => Ok(Err(*code)),
        other => bail!("CreatePartitions returned {} results", other.len()),
    }
}

pub fn new_consumer(bootstrap: &str) -> Result<BaseConsumer> {
    Ok(consumer_config(bootstrap).create()?)
}

/// Partition count of `topic` from a fresh Metadata request.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<usize> {
    let consumer = new_consumer(bootstrap)?;
    let md = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} missing from metadata"))?;
    if let Some(err) = t.error() {
        bail!("metadata for {topic}: {err:?}");
    }
    Ok(t.partitions().len())
}

/// (low, high) watermarks of every partition of `topic`, indexed by partition.
pub fn watermarks(bootstrap: &str, topic: &str) -> Result<Vec<(i64, i64)>> {
    let consumer = new_consumer(bootstrap)?;
    let n = partition_count(bootstrap, topic)?;
    (0..n as i32)
        .map(|p| Ok(consumer.fetch_watermarks(topic, p, CALL_TIMEOUT)?))
        .collect()
}

/// One delivery report.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The id the test gave the message when sending it.
    pub id: u64,
    pub partition: i32,
    /// Offset assigned by the broker (-1 on error).
    pub offset: i64,
    /// Time from `send` to the delivery report.
    pub latency: Duration,
    pub error: Option<String>,
}

/// Producer context that records every delivery report.
#[derive(Default)]
pub struct Recorder {
    deliveries: Mutex<Vec<Delivery>>,
    acked: AtomicU64,
    failed: AtomicU64,
}

impl Recorder {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
    pub fn reported(&self) -> u64 {
        self.acked() + self.failed()
    }
    /// Takes the reports recorded so far.
    pub fn take(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<(u64, Instant)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (id, sent) = *opaque;
        let latency = sent.elapsed();
        let d = match result {
            Ok(m) => Delivery {
                id,
                partition: m.partition(),
                offset: m.offset(),
                latency,
                error: None,
            },
            Err((e, m)) => Delivery {
                id,
                partition: m.partition(),
                offset: -1,
                latency,
                error: Some(e.to_string()),
            },
        };
        let counter = if d.error.is_none() {
            &self.acked
        } else {
            &self.failed
        };
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(d);
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

pub type RecordingProducer = ThreadedProducer<Recorder>;

pub fn recording_producer(config: &ClientConfig) -> Result<RecordingProducer> {
    Ok(config.create_with_context(Recorder::default())?)
}

/// Sends `record`, waiting while librdkafka's local queue is full.
pub fn send<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => return Err(e).context("send"),
        }
    }
}

/// Waits until `expected` delivery reports arrived (acked or failed).
pub fn wait_reports(producer: &RecordingProducer, expected: u64, timeout: Duration) -> Result<()> {
    crate::wait_until(
        &format!("{expected} delivery reports"),
        timeout,
        Duration::from_millis(5),
        || match producer.context().reported() {
            n if n >= expected => Ok(()),
            n => Err(format!("{n} reports")),
        },
    )
}

/// A consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Timestamp,
}

/// Reads `[start, end)` of each listed partition `(partition, start, end)` with `assign()`.
/// Fails on any fetch error, on a record outside the range, or if the ranges are not read
/// completely within `timeout`. Records come back per partition in offset order, as read
/// (duplicates or gaps are left for the caller to detect with [`check_dense`]).
pub fn consume_ranges(
    bootstrap: &str,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<Rec>>> {
    consume_ranges_with(&consumer_config(bootstrap), topic, ranges, timeout)
}

/// [`consume_ranges`] with a consumer built from `config` (e.g. with small fetch limits).
pub fn consume_ranges_with(
    config: &ClientConfig,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<Rec>>> {
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    let mut next: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut out: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for &(p, start, end) in ranges {
        out.insert(p, Vec::new());
        if end > start {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            next.insert(p, (start, end));
        }
    }
    if next.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut client_errors = 0u32;
    while next.values().any(|(pos, end)| pos < end) {
        if Instant::now() > deadline {
            bail!("consume {topic}: timed out; positions (next, end) = {next:?}");
        }
        let msg = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(KafkaError::MessageConsumption(code)))
                if code == RDKafkaErrorCode::BrokerTransportFailure
                    || code == RDKafkaErrorCode::AllBrokersDown =>
            {
                client_errors += 1;
                if client_errors > 100 {
                    bail!("consume {topic}: repeated transport errors ({code:?})");
                }
                continue;
            }
            Some(Err(e)) => return Err(e).context(format!("consume {topic}")),
        };
        let p = msg.partition();
        let (pos, end) = next
            .get_mut(&p)
            .ok_or_else(|| anyhow!("record from unassigned partition {p}"))?;
        if msg.offset() >= *end {
            // Records past the requested range (others kept producing): ignore.
            continue;
        }
        *pos = msg.offset() + 1;
        let headers = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.entry(p).or_default().push(Rec {
            partition: p,
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: msg.timestamp(),
        });
    }
    Ok(out)
}

/// Reads every partition of `topic` from its low to its high watermark.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<Rec>>> {
    let ranges: Vec<(i32, i64, i64)> = watermarks(bootstrap, topic)?
        .into_iter()
        .enumerate()
        .map(|(p, (lo, hi))| (p as i32, lo, hi))
        .collect();
    consume_ranges(bootstrap, topic, &ranges, timeout)
}

/// Checks that `recs` hold exactly the offsets `start..end`, each once, in order.
pub fn check_dense(recs: &[Rec], start: i64, end: i64) -> Result<()> {
    let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
    let expected: Vec<i64> = (start..end).collect();
    if offsets != expected {
        let first_bad = offsets
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(offsets.len().min(expected.len()));
        bail!(
            "offsets not dense in [{start}, {end}): got {} records, first mismatch at index {first_bad}: got {:?}, expected {:?}",
            offsets.len(),
            offsets.get(first_bad),
            expected.get(first_bad)
        );
    }
    Ok(())
}
