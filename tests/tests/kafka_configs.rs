//! Every Kafka topic config, through librdkafka's admin client (the rdkafka crate) and raw
//! requests: accepted, validated with Kafka's rules, stored and described with their source;
//! `compression.type` recompressing batches on produce, compacted topics refusing keyless
//! records, `min.insync.replicas` above one failing acks=all; the broker's settings under
//! Kafka's names; and the admin APIs of partition placement on one broker: DescribeLogDirs,
//! DescribeProducers, ElectLeaders, AlterPartitionReassignments, ListPartitionReassignments.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use rdkafka::admin::{AdminOptions, AlterConfig, ConfigEntry, ConfigSource, ResourceSpecifier};
use rdkafka::producer::{BaseRecord, Producer};
use strata_broker::Config;
use strata_storage::batch;
use strata_tests::*;

/// Kafka's error codes these tests expect.
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const INVALID_RECORD: i16 = 87;

fn start(configure: impl FnOnce(&mut Config)) -> Result<InProcessBroker> {
    InProcessBroker::start_temp(configure)
}

fn opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(CALL_TIMEOUT))
        .request_timeout(Some(CALL_TIMEOUT))
}

fn describe(bs: &str, resource: ResourceSpecifier<'_>) -> Result<BTreeMap<String, ConfigEntry>> {
    describe_configs(bs, resource)
}

fn check(
    entries: &BTreeMap<String, ConfigEntry>,
    name: &str,
    value: &str,
    source: ConfigSource,
) -> Result<()> {
    let e = entries
        .get(name)
        .with_context(|| format!("{name} not described; have {:?}", entries.keys()))?;
    ensure!(
        e.value.as_deref() == Some(value) && e.source == source && !e.is_read_only,
        "{name}: {e:?}; expected {value} from {source:?}"
    );
    Ok(())
}

/// The configs librdkafka's own admin tests set, and more of Kafka's: CreateTopics and
/// AlterConfigs through librdkafka succeed, DescribeConfigs shows each with its value and
/// source (the topic's override, or Kafka's default), and the values survive the replacing
/// AlterConfigs they were not part of only when given again.
#[test]
fn kafka_topic_configs_are_accepted_stored_and_described() -> Result<()> {
    let set = [
        ("flush.ms", "12345678"),
        ("flush.messages", "1000"),
        ("compression.type", "lz4"),
        ("compression.lz4.level", "4"),
        ("cleanup.policy", "compact,delete"),
        ("delete.retention.ms", "3600000"),
        ("min.cleanable.dirty.ratio", "0.3"),
        ("min.compaction.lag.ms", "1000"),
        ("max.compaction.lag.ms", "86400000"),
        ("preallocate", "true"),
        ("index.interval.bytes", "8192"),
        ("segment.index.bytes", "1048576"),
        ("segment.jitter.ms", "10"),
        ("file.delete.delay.ms", "1"),
        ("leader.replication.throttled.replicas", "*"),
        ("follower.replication.throttled.replicas", "0:1"),
        ("unclean.leader.election.enable", "true"),
        ("message.downconversion.enable", "false"),
        ("message.timestamp.after.max.ms", "60000"),
        ("message.timestamp.before.max.ms", "86400000"),
        ("remote.log.copy.disable", "false"),
        ("min.insync.replicas", "1"),
    ];
    let (broker, bs, topic) = broker_with_topic("kafka-cfg", 1, &set)?;
    let e = describe(&bs, ResourceSpecifier::Topic(&topic))?;
    for (name, value) in set {
        check(&e, name, value, ConfigSource::DynamicTopic)?;
    }
    // Those not set: Kafka's defaults.
    for (name, value) in [
        ("compression.zstd.level", "3"),
        ("compression.gzip.level", "-1"),
        ("max.message.bytes", "1048588"),
        ("remote.log.delete.on.disable", "false"),
        ("retention.ms", "604800000"),
    ] {
        check(&e, name, value, ConfigSource::Default)?;
    }
    ensure!(e.len() >= 34, "{} configs described", e.len());

    // AlterConfigs (the replacing kind) through librdkafka: the new set, and only it.
    let admin = admin(&bs)?;
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("flush.ms", "1000")
        .set("compression.type", "zstd")
        .set("compression.zstd.level", "7");
    let r = futures::executor::block_on(admin.alter_configs([&alter], &opts()))?;
    ensure!(matches!(r.as_slice(), [Ok(_)]), "AlterConfigs: {r:?}");
    let e = describe(&bs, ResourceSpecifier::Topic(&topic))?;
    check(&e, "flush.ms", "1000", ConfigSource::DynamicTopic)?;
    check(&e, "compression.type", "zstd", ConfigSource::DynamicTopic)?;
    check(
        &e,
        "compression.zstd.level",
        "7",
        ConfigSource::DynamicTopic,
    )?;
    check(&e, "cleanup.policy", "delete", ConfigSource::Default)?;
    check(
        &e,
        "flush.messages",
        "9223372036854775807",
        ConfigSource::Default,
    )?;

    // IncrementalAlterConfigs (no rdkafka API; the confluent-kafka suite drives it through
    // librdkafka too): SET and APPEND on Kafka's configs.
    let (code, msg) = incremental(
        broker.addr(),
        &topic,
        &[("flush.messages", "5", 0), ("cleanup.policy", "compact", 2)],
    )?;
    ensure!(code == NONE, "IncrementalAlterConfigs: {code} {msg:?}");
    let e = describe(&bs, ResourceSpecifier::Topic(&topic))?;
    check(&e, "flush.messages", "5", ConfigSource::DynamicTopic)?;
    check(
        &e,
        "cleanup.policy",
        "delete,compact",
        ConfigSource::DynamicTopic,
    )?;
    broker.shutdown()
}

/// A broker with default settings and a new topic on it: (broker, bootstrap, topic).
fn broker_with_topic(
    prefix: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(InProcessBroker, String, String)> {
    let broker = start(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name(prefix);
    create_topic_with(&bs, &topic, partitions, configs)?;
    Ok((broker, bs, topic))
}

fn create_topic_with(bs: &str, topic: &str, partitions: i32, c: &[(&str, &str)]) -> Result<()> {
    try_create_topic_with(bs, topic, partitions, c)?
        .map_err(|e| anyhow!("CreateTopics {topic} with {c:?}: {e:?}"))
}

/// IncrementalAlterConfigs of one topic: `(name, value, operation)` with Kafka's operation
/// codes (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT); the resource's error code and message.
fn incremental(
    addr: SocketAddr,
    topic: &str,
    ops: &[(&str, &str, i8)],
) -> Result<(i16, Option<String>)> {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.into()))
            .with_configs(
                ops.iter()
                    .map(|&(name, value, op)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(name.into()))
                            .with_value(Some(StrBytes::from_string(value.into())))
                            .with_config_operation(op)
                    })
                    .collect(),
            ),
    ]);
    let resp = call_best(addr, &req)?;
    let r = resp.responses.first().context("no resource in response")?;
    Ok((
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// Sends `req` at the highest version both sides support, on a new connection.
fn call_best<R: Request>(addr: SocketAddr, req: &R) -> Result<R::Response> {
    let version = raw::best_version::<R>(addr)?;
    let mut s = raw::connect(addr)?;
    raw::call(&mut s, version, 1, req)
}

/// Values Kafka's validators refuse, unknown names (including configs Kafka 4 removed) and
/// huge values are INVALID_CONFIG with a message naming the config, on every path in; the
/// topic keeps its configs.
#[test]
fn invalid_kafka_values_are_invalid_config() -> Result<()> {
    let (broker, bs, topic) = broker_with_topic("kafka-bad", 1, &[("flush.ms", "5000")])?;
    let huge = "7".repeat(1 << 20);
    let bad: Vec<(&str, &str)> = vec![
        ("flush.ms", "-1"),
        ("flush.messages", "0"),
        ("delete.retention.ms", "-1"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("min.cleanable.dirty.ratio", "half"),
        ("compression.type", "brotli"),
        ("compression.type", "LZ4"),
        ("compression.gzip.level", "0"),
        ("compression.lz4.level", "18"),
        ("compression.zstd.level", "-131073"),
        ("preallocate", "yes"),
        ("segment.index.bytes", "3"),
        ("index.interval.bytes", "99999999999"),
        ("leader.replication.throttled.replicas", "0:1,*"),
        ("follower.replication.throttled.replicas", "one:two"),
        ("min.insync.replicas", "0"),
        ("cleanup.policy", "compact,shred"),
        ("message.format.version", "3.0"),
        ("message.timestamp.difference.max.ms", "1000"),
        ("no.such.config", "1"),
        ("flush.ms", huge.as_str()),
    ];
    for (name, value) in &bad {
        let (code, msg) = raw::alter_topic_configs(broker.addr(), &topic, &[(name, value)], false)?;
        let shown = &value[..value.len().min(20)];
        ensure!(
            code == INVALID_CONFIG && msg.as_deref().is_some_and(|m| m.contains(name)),
            "AlterConfigs {name}={shown}: {code} {msg:?}"
        );
        let (code, msg) = incremental(broker.addr(), &topic, &[(name, value, 0)])?;
        ensure!(
            code == INVALID_CONFIG,
            "IncrementalAlterConfigs {name}={shown}: {code} {msg:?}"
        );
        let r = try_create_topic_with(&bs, &topic_name("kafka-bad-new"), 1, &[(name, value)])?;
        ensure!(
            r == Err(rdkafka::error::RDKafkaErrorCode::InvalidConfig),
            "CreateTopics {name}={shown}: {r:?}"
        );
    }
    let e = describe(&bs, ResourceSpecifier::Topic(&topic))?;
    check(&e, "flush.ms", "5000", ConfigSource::DynamicTopic)?;
    broker.shutdown()
}

/// The codec bits of every batch of partition 0 of `topic`, read raw.
fn stored_codecs(addr: SocketAddr, topic: &str) -> Result<Vec<i16>> {
    let mut s = raw::connect(addr)?;
    let req = raw::fetch_request(topic, 0, 0, 100, 1);
    let resp = raw::call(&mut s, raw::FETCH_VERSION, 1, &req)?;
    let records = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .find_map(|p| p.records.clone())
        .unwrap_or_default();
    Ok(batch::split(&records)?
        .iter()
        .map(|b| batch::read_header(b).map(|h| h.attributes & batch::ATTR_CODEC_MASK))
        .collect::<Result<_, _>>()?)
}

/// Produces `n` keyed records with librdkafka at `codec` (idempotent, so the producer fields
/// must survive recompression); returns the delivery errors.
fn produce_keyed(
    bs: &str,
    topic: &str,
    codec: &str,
    n: usize,
    keyless: bool,
) -> Result<Vec<Delivery>> {
    let mut cfg = producer_config(bs);
    cfg.set("compression.type", codec)
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .set("message.timeout.ms", "20000");
    let p = recording_producer(&cfg)?;
    for i in 0..n {
        let key = format!("key-{i}");
        let value = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "abc".repeat(100));
        let mut r = BaseRecord::<[u8], [u8], _>::with_opaque_to(
            topic,
            Box::new((i as u64, Instant::now())),
        )
        .partition(0)
        .payload(value.as_bytes());
        if !keyless {
            r = r.key(key.as_bytes());
        }
        send(&p, r)?;
    }
    p.flush(Duration::from_secs(60))?;
    wait_reports(&p, n as u64, CONSUME_TIMEOUT)?;
    Ok(p.context().take())
}

/// A topic with `compression.type=zstd` stores every batch as zstd whatever the producer
/// sent (gzip, none, lz4), consumers read back exactly what was sent, idempotent producers
/// keep working; `producer` keeps each batch's own codec.
#[test]
fn compression_type_recompresses_batches_on_produce() -> Result<()> {
    let broker = start(|_| {})?;
    let bs = broker.bootstrap();
    let zstd = topic_name("to-zstd");
    create_topic_with(&bs, &zstd, 1, &[("compression.type", "zstd")])?;
    let mut sent = 0i64;
    for codec in ["gzip", "none", "lz4", "zstd"] {
        let d = produce_keyed(&bs, &zstd, codec, 300, false)?;
        ensure!(
            d.iter().all(|d| d.error.is_none()),
            "{codec}: {:?}",
            d.iter().find(|d| d.error.is_some())
        );
        sent += 300;
    }
    let codecs = stored_codecs(broker.addr(), &zstd)?;
    ensure!(
        !codecs.is_empty() && codecs.iter().all(|&c| c == 4),
        "stored codecs {codecs:?}"
    );
    let got = consume_ranges(&bs, &zstd, &[(0, 0, sent)], CONSUME_TIMEOUT)?;
    let recs = &got[&0];
    ensure!(
        recs.len() as i64 == sent,
        "{} of {sent} records",
        recs.len()
    );
    for (i, r) in recs.iter().enumerate() {
        let n = i % 300;
        ensure!(
            r.offset == i as i64
                && r.key.as_deref() == Some(format!("key-{n}").as_bytes())
                && r.payload
                    .as_deref()
                    .is_some_and(|p| p.starts_with(format!("{{\"n\":{n},").as_bytes())),
            "record {i}: {r:?}"
        );
    }

    // uncompressed: compressed batches are expanded.
    let plain = topic_name("to-plain");
    create_topic_with(&bs, &plain, 1, &[("compression.type", "uncompressed")])?;
    produce_keyed(&bs, &plain, "snappy", 100, false)?;
    let codecs = stored_codecs(broker.addr(), &plain)?;
    ensure!(codecs.iter().all(|&c| c == 0), "stored codecs {codecs:?}");

    // producer: as sent.
    let asis = topic_name("as-sent");
    create_topic_with(&bs, &asis, 1, &[])?;
    produce_keyed(&bs, &asis, "gzip", 100, false)?;
    let codecs = stored_codecs(broker.addr(), &asis)?;
    ensure!(codecs.iter().all(|&c| c == 1), "stored codecs {codecs:?}");
    broker.shutdown()
}

/// `cleanup.policy=compact` (alone or with delete): a batch holding a record without a key
/// is refused with INVALID_RECORD and nothing of it is written; keyed records are accepted,
/// also compressed. Topics with `delete` alone take keyless records.
#[test]
fn compacted_topics_refuse_records_without_keys() -> Result<()> {
    let broker = start(|_| {})?;
    let bs = broker.bootstrap();
    for policy in ["compact", "delete,compact"] {
        let topic = topic_name("compacted");
        create_topic_with(&bs, &topic, 1, &[("cleanup.policy", policy)])?;
        let ok = produce_keyed(&bs, &topic, "lz4", 50, false)?;
        ensure!(
            ok.iter().all(|d| d.error.is_none()),
            "keyed: {:?}",
            ok.first()
        );
        let refused = produce_keyed(&bs, &topic, "none", 5, true)?;
        ensure!(
            refused.iter().all(|d| d
                .error
                .as_deref()
                .is_some_and(|e| e.contains("InvalidRecord") || e.contains("invalid"))),
            "keyless on {policy}: {refused:?}"
        );
        // Raw, to see the code itself: one keyless record among keyed ones.
        let b = batch::BatchBuilder::new(1_700_000_000_000)
            .record(1_700_000_000_000, Some(b"k"), b"v")
            .record(1_700_000_000_001, None, b"v")
            .build();
        let version = raw::best_version::<kafka_protocol::messages::ProduceRequest>(broker.addr())?;
        let mut s = raw::connect(broker.addr())?;
        let r = raw::produce(&mut s, version, 2, &topic, 0, b)?;
        ensure!(r.error_code == INVALID_RECORD, "raw keyless: {r:?}");
        let w = watermarks(&bs, &topic)?;
        ensure!(w == vec![(0, 50)], "{policy}: watermarks {w:?}");
    }
    let open = topic_name("delete-only");
    create_topic_with(&bs, &open, 1, &[("cleanup.policy", "delete")])?;
    let d = produce_keyed(&bs, &open, "none", 5, true)?;
    ensure!(
        d.iter().all(|d| d.error.is_none()),
        "keyless on delete: {d:?}"
    );
    broker.shutdown()
}

/// `min.insync.replicas=2` on one broker: acks=all gets NOT_ENOUGH_REPLICAS and writes
/// nothing; acks=1 still works.
#[test]
fn min_insync_replicas_above_one_fails_acks_all() -> Result<()> {
    use kafka_protocol::messages::ProduceRequest;
    let (broker, _, topic) = broker_with_topic("min-isr", 1, &[("min.insync.replicas", "2")])?;
    let version = raw::best_version::<ProduceRequest>(broker.addr())?;
    let mut s = raw::connect(broker.addr())?;
    let all = raw::produce_request(&topic, 0, raw::simple_batch("a", 3), -1);
    let r = raw::only_partition(raw::call(&mut s, version, 1, &all)?)?;
    ensure!(r.error_code == NOT_ENOUGH_REPLICAS, "acks=all: {r:?}");
    let one = raw::produce_request(&topic, 0, raw::simple_batch("b", 3), 1);
    let r = raw::only_partition(raw::call(&mut s, version, 2, &one)?)?;
    ensure!(r.error_code == NONE && r.base_offset == 0, "acks=1: {r:?}");
    broker.shutdown()
}

/// DescribeConfigs on the broker: Kafka's names for its settings and for every topic
/// config's broker default, read-only, with their sources.
#[test]
fn broker_configs_have_kafkas_names() -> Result<()> {
    let broker = start(|c| c.fetch_max_bytes = 1 << 20)?;
    let bs = broker.bootstrap();
    let e = describe(&bs, ResourceSpecifier::Broker(1))?;
    for (name, value) in [
        ("log.flush.interval.ms", "9223372036854775807"),
        ("log.flush.interval.messages", "9223372036854775807"),
        ("log.cleaner.min.cleanable.ratio", "0.5"),
        ("log.cleaner.delete.retention.ms", "86400000"),
        ("compression.type", "producer"),
        ("compression.zstd.level", "3"),
        ("default.replication.factor", "1"),
        ("offsets.topic.replication.factor", "1"),
        ("broker.id", "1"),
        ("unclean.leader.election.enable", "false"),
        ("log.message.timestamp.after.max.ms", "3600000"),
        ("fetch.max.bytes", "1048576"),
        ("num.partitions", "1"),
        ("auto.create.topics.enable", "true"),
        ("group.min.session.timeout.ms", "6000"),
    ] {
        let c = e
            .get(name)
            .with_context(|| format!("{name} missing: {:?}", e.keys()))?;
        ensure!(
            c.value.as_deref() == Some(value) && c.is_read_only,
            "{name}: {c:?}"
        );
    }
    ensure!(
        e["fetch.max.bytes"].source == ConfigSource::StaticBroker,
        "{:?}",
        e["fetch.max.bytes"]
    );
    ensure!(e["log.flush.interval.ms"].source == ConfigSource::Default);
    ensure!(e["log.dirs"].value.is_some() && e["advertised.listeners"].value.is_some());
    broker.shutdown()
}

fn log_dirs(
    addr: SocketAddr,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> Result<kafka_protocol::messages::DescribeLogDirsResponse> {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::DescribeLogDirsRequest;
    let req = DescribeLogDirsRequest::default().with_topics(topics.map(|ts| {
        ts.into_iter()
            .map(|(t, parts)| {
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.into())))
                    .with_partitions(parts)
            })
            .collect()
    }));
    let mut s = raw::connect(addr)?;
    raw::call(&mut s, version, 1, &req)
}

/// Sizes by (topic, partition) in a DescribeLogDirs response with exactly one log dir.
fn sizes(
    r: &kafka_protocol::messages::DescribeLogDirsResponse,
) -> Result<BTreeMap<(String, i32), i64>> {
    ensure!(r.error_code == NONE && r.results.len() == 1, "{r:?}");
    let dir = &r.results[0];
    ensure!(dir.error_code == NONE && !dir.log_dir.is_empty(), "{dir:?}");
    dir.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                ensure!(p.offset_lag == 0 && !p.is_future_key, "{p:?}");
                Ok(((t.name.to_string(), p.partition_index), p.partition_size))
            })
        })
        .collect::<Result<_>>()
}

/// DescribeLogDirs (v1 and v4): the data dir as the one log dir, with the disk's sizes (v4),
/// and every partition's size in bytes, which grows by what was produced; asking for
/// partitions or topics that do not exist leaves them out.
#[test]
fn describe_log_dirs_reports_partition_sizes() -> Result<()> {
    let (broker, bs, topic) = broker_with_topic("log-dirs", 2, &[])?;
    let before = sizes(&log_dirs(broker.addr(), 4, None)?)?;
    ensure!(before.get(&(topic.clone(), 0)) == Some(&0), "{before:?}");
    let mut cfg = producer_config(&bs);
    cfg.set("compression.type", "none");
    let p = recording_producer(&cfg)?;
    let value = noise(1, 1000);
    for i in 0..200u64 {
        send(
            &p,
            BaseRecord::with_opaque_to(&topic, Box::new((i, Instant::now())))
                .partition(0)
                .payload(&value[..]),
        )?;
    }
    p.flush(Duration::from_secs(60))?;
    wait_reports(&p, 200, CONSUME_TIMEOUT)?;

    let r = log_dirs(broker.addr(), 4, None)?;
    let dir = &r.results[0];
    ensure!(
        dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes,
        "volume: {} / {}",
        dir.usable_bytes,
        dir.total_bytes
    );
    let after = sizes(&r)?;
    let size0 = after[&(topic.clone(), 0)];
    ensure!(
        (200_000..260_000).contains(&size0),
        "partition 0 holds {size0} bytes"
    );
    ensure!(after[&(topic.clone(), 1)] == 0, "{after:?}");

    // v1 (no volume sizes) with a filter: the known partition only.
    let missing = topic_name("no-such-topic");
    let r = log_dirs(
        broker.addr(),
        1,
        Some(vec![(&topic, vec![0, 7, -1]), (&missing, vec![0])]),
    )?;
    let only = sizes(&r)?;
    ensure!(
        only.len() == 1 && only[&(topic.clone(), 0)] == size0,
        "{only:?}"
    );
    let r = log_dirs(broker.addr(), 4, Some(vec![(&missing, vec![0])]))?;
    ensure!(sizes(&r)?.is_empty(), "{r:?}");
    broker.shutdown()
}

/// DescribeProducers: the idempotent producer that wrote to a partition, with its epoch and
/// last sequence; nothing for partitions only plain producers wrote to; unknown partitions and
/// topics are UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn describe_producers_lists_idempotent_producers() -> Result<()> {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::DescribeProducersRequest;
    let (broker, bs, topic) = broker_with_topic("producers", 2, &[])?;
    produce_keyed(&bs, &topic, "none", 40, false)?;
    let missing = topic_name("no-such-topic");
    let req = DescribeProducersRequest::default().with_topics(vec![
        TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(topic.clone())))
            .with_partition_indexes(vec![0, 1, 5]),
        TopicRequest::default()
            .with_name(TopicName(StrBytes::from_string(missing)))
            .with_partition_indexes(vec![0]),
    ]);
    let resp = call_best(broker.addr(), &req)?;
    let parts = &resp.topics[0].partitions;
    ensure!(parts.len() == 3, "{resp:?}");
    ensure!(
        parts[0].error_code == NONE && parts[0].active_producers.len() == 1,
        "{:?}",
        parts[0]
    );
    let p = &parts[0].active_producers[0];
    ensure!(
        p.producer_id.0 >= 0
            && p.producer_epoch >= 0
            && p.last_sequence == 39
            && p.last_timestamp > 0
            && p.coordinator_epoch == -1
            && p.current_txn_start_offset == -1,
        "{p:?}"
    );
    ensure!(
        parts[1].error_code == NONE && parts[1].active_producers.is_empty(),
        "{:?}",
        parts[1]
    );
    ensure!(
        parts[2].error_code == UNKNOWN_TOPIC_OR_PARTITION,
        "{:?}",
        parts[2]
    );
    let other = &resp.topics[1].partitions[0];
    ensure!(other.error_code == UNKNOWN_TOPIC_OR_PARTITION, "{other:?}");
    broker.shutdown()
}

/// ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments on one broker:
/// Kafka's answers when nothing can move (ELECTION_NOT_NEEDED; a no-op success for the
/// current replica set; NO_REASSIGNMENT_IN_PROGRESS to cancel; INVALID_REPLICA_ASSIGNMENT for
/// other brokers; an empty list); unknown partitions are UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn replica_management_apis_answer_as_a_single_broker() -> Result<()> {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, ElectLeadersRequest, ListPartitionReassignmentsRequest,
    };
    let (broker, bs, topic) = broker_with_topic("placement", 2, &[])?;
    let name = || TopicName(StrBytes::from_string(topic.clone()));
    for version in [0, 1, 2] {
        let req = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(name())
                .with_partitions(vec![0, 1, 9])]));
        let mut s = raw::connect(broker.addr())?;
        let r = raw::call(&mut s, version, 1, &req)?;
        let codes = r.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code);
        let want = [
            ELECTION_NOT_NEEDED,
            ELECTION_NOT_NEEDED,
            UNKNOWN_TOPIC_OR_PARTITION,
        ];
        expect_codes(
            &format!("ElectLeaders v{version}: {r:?}"),
            r.error_code,
            codes,
            &want,
        )?;
    }
    let all = call_best(
        broker.addr(),
        &ElectLeadersRequest::default().with_topic_partitions(None),
    )?;
    ensure!(
        all.error_code == NONE && all.replica_election_results.is_empty(),
        "{all:?}"
    );

    let part = |i: i32, replicas: Option<Vec<i32>>| {
        ReassignablePartition::default()
            .with_partition_index(i)
            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))
    };
    let req = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(name())
            .with_partitions(vec![
                part(0, Some(vec![1])),
                part(1, None),
                part(0, Some(vec![1, 2])),
                part(1, Some(vec![2])),
                part(0, Some(vec![])),
                part(0, Some(vec![1, 1])),
                part(5, Some(vec![1])),
            ]),
    ]);
    let r = call_best(broker.addr(), &req)?;
    let codes = r.responses[0].partitions.iter().map(|p| p.error_code);
    let want = [
        NONE,
        NO_REASSIGNMENT_IN_PROGRESS,
        INVALID_REPLICA_ASSIGNMENT,
        INVALID_REPLICA_ASSIGNMENT,
        INVALID_REPLICA_ASSIGNMENT,
        INVALID_REPLICA_ASSIGNMENT,
        UNKNOWN_TOPIC_OR_PARTITION,
    ];
    expect_codes(
        &format!("AlterPartitionReassignments: {r:?}"),
        r.error_code,
        codes,
        &want,
    )?;
    let r = call_best(broker.addr(), &ListPartitionReassignmentsRequest::default())?;
    ensure!(r.error_code == NONE && r.topics.is_empty(), "{r:?}");
    ensure!(partition_count(&bs, &topic)? == 2);
    broker.shutdown()
}

/// A response's top-level code is NONE and its per-partition codes are `want`, in order.
fn expect_codes(
    what: &str,
    top: i16,
    codes: impl Iterator<Item = i16>,
    want: &[i16],
) -> Result<()> {
    let codes: Vec<i16> = codes.collect();
    ensure!(top == NONE && codes == want, "{what}");
    Ok(())
}

/// Without DESCRIBE / ALTER on the cluster (no ACLs, and nothing allowed without one), the
/// cluster-wide APIs answer CLUSTER_AUTHORIZATION_FAILED and reveal nothing.
#[test]
fn placement_apis_need_cluster_rights() -> Result<()> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ElectLeadersRequest, ListPartitionReassignmentsRequest};
    let broker = start(|c| c.allow_everyone_if_no_acl_found = false)?;
    let addr = broker.addr();
    let r = log_dirs(addr, 4, None)?;
    ensure!(
        r.error_code == CLUSTER_AUTHORIZATION_FAILED && r.results.is_empty(),
        "{r:?}"
    );
    let req =
        ElectLeadersRequest::default()
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0])]));
    let r = call_best(addr, &req)?;
    ensure!(
        r.error_code == CLUSTER_AUTHORIZATION_FAILED
            && r.replica_election_results[0].partition_result[0].error_code
                == CLUSTER_AUTHORIZATION_FAILED,
        "{r:?}"
    );
    let r = call_best(addr, &ListPartitionReassignmentsRequest::default())?;
    ensure!(r.error_code == CLUSTER_AUTHORIZATION_FAILED, "{r:?}");
    broker.shutdown()
}

/// ApiVersions advertises the new APIs at Kafka 4.0's ranges.
#[test]
fn new_apis_are_advertised() -> Result<()> {
    let broker = start(|_| {})?;
    for (key, range) in [
        (35, (1, 4)),
        (61, (0, 0)),
        (43, (0, 2)),
        (45, (0, 0)),
        (46, (0, 0)),
    ] {
        let got = raw::advertised_versions(broker.addr(), key)?;
        ensure!(got == Some(range), "API {key}: {got:?}");
    }
    // A connection stays usable after each of them (nothing closes it).
    let mut s: TcpStream = raw::connect(broker.addr())?;
    raw::api_versions_call(&mut s)?;
    broker.shutdown()
}

/// Retention deletes nothing of a compact-only topic (Kafka compacts it instead; until the
/// cleaner exists, it keeps everything), and applies as usual with `compact,delete`.
#[test]
fn retention_spares_compact_only_topics() -> Result<()> {
    let broker = start(|c| c.retention_check_interval_ms = 200)?;
    let bs = broker.bootstrap();
    let small = [("retention.ms", "100"), ("segment.bytes", "1024")];
    let compact = topic_name("compact-only");
    create_topic_with(
        &bs,
        &compact,
        1,
        &[&small[..], &[("cleanup.policy", "compact")]].concat(),
    )?;
    let both = topic_name("compact-delete");
    let both_cfg = [&small[..], &[("cleanup.policy", "compact,delete")]].concat();
    create_topic_with(&bs, &both, 1, &both_cfg)?;
    let version = raw::best_version::<kafka_protocol::messages::ProduceRequest>(broker.addr())?;
    let mut s = raw::connect(broker.addr())?;
    // Old timestamps, one batch per segment: everything but the active segment is expired.
    for (i, topic) in [&compact, &both].into_iter().enumerate() {
        for j in 0..4 {
            let b = batch::BatchBuilder::new(1_000)
                .record(1_000, Some(b"k"), &[b'x'; 900])
                .build();
            let r = raw::produce(&mut s, version, (i * 10 + j) as i32, topic, 0, b)?;
            ensure!(r.error_code == NONE, "produce to {topic}: {r:?}");
        }
    }
    wait_until(
        "retention of the compact,delete topic",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || match watermarks(&bs, &both).map_err(|e| e.to_string())?.first() {
            Some(&(lo, _)) if lo > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    // A pass over both topics has run since: the compact-only one still starts at 0.
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        watermarks(&bs, &compact)? == vec![(0, 4)],
        "{:?}",
        watermarks(&bs, &compact)?
    );
    broker.shutdown()
}
