//! Helpers shared by the retention, replay and config tests.

use super::*;

// ------------------------------------------------------------------ local helpers

/// Generous deadline for anything retention has to do (passes run every 200 ms here).
pub(crate) const RETENTION_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(CALL_TIMEOUT))
        .request_timeout(Some(CALL_TIMEOUT))
}

/// An in-process broker on a data directory the test can measure; retention passes every
/// 200 ms unless `configure` says otherwise.
pub(crate) fn start_broker(
    dir: &Path,
    configure: impl FnOnce(&mut Config),
) -> Result<InProcessBroker> {
    let mut config = test_config(dir)?;
    config.retention_check_interval_ms = 200;
    configure(&mut config);
    InProcessBroker::start(config)
}

pub(crate) fn create_with(
    bs: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    try_create_topic_with(bs, topic, partitions, configs)?
        .map_err(|c| anyhow!("CreateTopics {topic} with {configs:?}: {c:?}"))
}

/// Bytes under `dir` by kind: RocksDB write-ahead log files (`*.log` other than `LOG*`),
/// table and blob files (`*.sst`, `*.blob`), and everything else.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DiskUse {
    pub(crate) wal: u64,
    pub(crate) tables: u64,
    pub(crate) other: u64,
}

impl DiskUse {
    pub(crate) fn total(&self) -> u64 {
        self.wal + self.tables + self.other
    }
}

pub(crate) fn disk_use(dir: &Path) -> DiskUse {
    let mut u = DiskUse::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return u;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let d = disk_use(&e.path());
            u.wal += d.wal;
            u.tables += d.tables;
            u.other += d.other;
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") && !name.starts_with("LOG") {
            u.wal += m.len();
        } else if name.ends_with(".sst") || name.ends_with(".blob") {
            u.tables += m.len();
        } else {
            u.other += m.len();
        }
    }
    u
}

/// Sends `(timestamp, value)` records to one partition (ids from `first_id`), flushes, and
/// returns the delivery reports; fails unless all were acknowledged.
pub(crate) fn produce_records(
    producer: &RecordingProducer,
    topic: &str,
    partition: i32,
    first_id: u64,
    records: &[(Option<i64>, Vec<u8>)],
) -> Result<Vec<Delivery>> {
    let before = producer.context().reported();
    for (i, (ts, value)) in records.iter().enumerate() {
        let id = first_id + i as u64;
        let key = format!("key-{id}");
        let mut r =
            BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, Box::new((id, Instant::now())))
                .partition(partition)
                .key(key.as_bytes())
                .payload(&value[..]);
        if let Some(ts) = ts {
            r = r.timestamp(*ts);
        }
        send(producer, r)?;
    }
    producer.flush(Duration::from_secs(120))?;
    wait_reports(producer, before + records.len() as u64, CONSUME_TIMEOUT)?;
    let mut reports = producer.context().take();
    reports.sort_by_key(|d| d.id);
    if let Some(bad) = reports.iter().find(|d| d.error.is_some()) {
        bail!(
            "message {} to {topic}/{partition} failed: {:?}",
            bad.id,
            bad.error
        );
    }
    Ok(reports)
}

/// Values `"v-<id>:"` padded to `size` bytes, so consumed records can be matched to ids.
pub(crate) fn value(id: u64, size: usize) -> Vec<u8> {
    let mut v = format!("v-{id}:").into_bytes();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

pub(crate) fn value_id(v: &[u8]) -> Option<u64> {
    let rest = v.strip_prefix(b"v-")?;
    let end = rest.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Producer that batches whatever is sent before a flush into one batch per partition.
pub(crate) fn batching_producer(bs: &str) -> Result<RecordingProducer> {
    let mut cfg = producer_config(bs);
    cfg.set("linger.ms", "1000")
        .set("batch.num.messages", "100000");
    recording_producer(&cfg)
}

/// What one consumer saw: records `(offset, value, timestamp)` and errors, in order.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) records: Vec<(i64, Vec<u8>, Timestamp)>,
    pub(crate) errors: Vec<KafkaError>,
}

/// Assigns partition 0 of `topic` at `start` with the given `auto.offset.reset` and polls
/// until `want` records arrived, `stop_on_error` and an error arrived, or `timeout`.
pub(crate) fn consume_from(
    bs: &str,
    topic: &str,
    start: Offset,
    reset: &str,
    want: usize,
    stop_on_error: bool,
    timeout: Duration,
) -> Result<Seen> {
    let mut cfg = consumer_config(bs);
    cfg.set("auto.offset.reset", reset);
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, start)?;
    consumer.assign(&tpl)?;
    let mut seen = Seen::default();
    let deadline = Instant::now() + timeout;
    while seen.records.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => seen.records.push((
                m.offset(),
                m.payload().unwrap_or_default().to_vec(),
                m.timestamp(),
            )),
            Some(Err(e)) => {
                seen.errors.push(e);
                if stop_on_error {
                    break;
                }
            }
        }
    }
    Ok(seen)
}

pub(crate) fn is_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

pub(crate) fn low_high(bs: &str, topic: &str, p: i32) -> Result<(i64, i64)> {
    Ok(new_consumer(bs)?.fetch_watermarks(topic, p, CALL_TIMEOUT)?)
}

/// Polls the watermarks of partition `p` until `done(low, high)`; returns the last pair and
/// every distinct low watermark seen on the way.
pub(crate) fn wait_watermarks(
    bs: &str,
    topic: &str,
    p: i32,
    timeout: Duration,
    what: &str,
    done: impl Fn(i64, i64) -> bool,
) -> Result<((i64, i64), Vec<i64>)> {
    let consumer = new_consumer(bs)?;
    let deadline = Instant::now() + timeout;
    let mut lows = Vec::new();
    loop {
        let (lo, hi) = consumer.fetch_watermarks(topic, p, CALL_TIMEOUT)?;
        if lows.last() != Some(&lo) {
            lows.push(lo);
        }
        if done(lo, hi) {
            return Ok(((lo, hi), lows));
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached within {timeout:?}; watermarks ({lo}, {hi}), lows seen {lows:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `offsets_for_times` for one partition: `Some(offset)`, or `None` when librdkafka answers
/// "end" (the broker's -1: no record that recent).
pub(crate) fn offset_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    p: i32,
    ts: i64,
) -> Result<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
    let r = consumer.offsets_for_times(tpl, CALL_TIMEOUT)?;
    let e = r
        .find_partition(topic, p)
        .ok_or_else(|| anyhow!("no answer for {topic}/{p}"))?;
    e.error()
        .with_context(|| format!("offsets_for_times {topic}/{p} @ {ts}"))?;
    match e.offset() {
        Offset::Offset(o) => Ok(Some(o)),
        Offset::End => Ok(None),
        other => bail!("offsets_for_times {topic}/{p} @ {ts}: unexpected {other:?}"),
    }
}

/// The answer Kafka defines: the first offset at or after `log_start` whose timestamp is
/// >= `target`.
pub(crate) fn expected_offset(ts_by_offset: &[i64], log_start: i64, target: i64) -> Option<i64> {
    ts_by_offset
        .iter()
        .enumerate()
        .skip(log_start as usize)
        .find(|&(_, &t)| t >= target)
        .map(|(o, _)| o as i64)
}

pub(crate) fn admin_client(bs: &str) -> Result<AdminClient<DefaultClientContext>> {
    admin(bs)
}

pub(crate) fn describe(
    bs: &str,
    spec: ResourceSpecifier<'_>,
) -> Result<BTreeMap<String, ConfigEntry>> {
    describe_configs(bs, spec)
}

pub(crate) fn describe_topic(bs: &str, topic: &str) -> Result<BTreeMap<String, ConfigEntry>> {
    describe(bs, ResourceSpecifier::Topic(topic))
}

pub(crate) fn config_value(bs: &str, topic: &str, name: &str) -> Result<Option<String>> {
    let entries = describe_topic(bs, topic)?;
    Ok(entries.get(name).and_then(|e| e.value.clone()))
}

/// AlterConfigs (replaces the topic's whole set of overrides); the per-resource result.
pub(crate) fn alter_topic(
    bs: &str,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let admin = admin_client(bs)?;
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for &(k, v) in configs {
        alter = alter.set(k, v);
    }
    let opts = admin_opts().validate_only(validate_only);
    let results = futures::executor::block_on(admin.alter_configs([&alter], &opts))?;
    match results.as_slice() {
        [Ok(OwnedResourceSpecifier::Topic(t))] if t == topic => Ok(Ok(())),
        [Err((_, code))] => Ok(Err(*code)),
        other => bail!("AlterConfigs returned {other:?}"),
    }
}

pub(crate) fn delete_records(
    bs: &str,
    topic: &str,
    offsets: &[(i32, Offset)],
) -> Result<Vec<(i32, Result<i64, String>)>> {
    let admin = admin_client(bs)?;
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, o)?;
    }
    let out = futures::executor::block_on(admin.delete_records(&tpl, &admin_opts()))?;
    Ok(out
        .elements()
        .iter()
        .map(|e| {
            let r = match (e.error(), e.offset()) {
                (Err(err), _) => Err(err.to_string()),
                (Ok(()), Offset::Offset(o)) => Ok(o),
                (Ok(()), other) => Err(format!("offset {other:?}")),
            };
            (e.partition(), r)
        })
        .collect())
}

/// One record to partition 0, delivery report back (for MESSAGE_TOO_LARGE checks).
pub(crate) fn produce_one(bs: &str, topic: &str, size: usize) -> Result<Delivery> {
    let mut cfg = producer_config(bs);
    cfg.set("message.max.bytes", "2000000")
        .set("linger.ms", "0")
        .set("retries", "0");
    let producer = recording_producer(&cfg)?;
    let v = vec![b'x'; size];
    let r = BaseRecord::<[u8], [u8], _>::with_opaque_to(topic, Box::new((0, Instant::now())))
        .partition(0)
        .payload(&v[..]);
    send(&producer, r)?;
    producer.flush(Duration::from_secs(60))?;
    wait_reports(&producer, 1, Duration::from_secs(60))?;
    producer
        .context()
        .take()
        .pop()
        .ok_or_else(|| anyhow!("no delivery report"))
}

pub(crate) fn too_large(d: &Delivery) -> bool {
    d.error
        .as_deref()
        .is_some_and(|e| e.contains(&RDKafkaErrorCode::MessageSizeTooLarge.to_string()))
}
