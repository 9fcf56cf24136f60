//! The `strata-client` library against a broker started by the test, with librdkafka on the
//! other side: what the library's producer writes librdkafka reads back identical, what
//! librdkafka writes the library's consumer reads, keyed records land where the Java client
//! would put them, group members share partitions (with each other and with librdkafka), and
//! admin calls made with the library are what librdkafka then sees.
//!
//! Each test is a plain `#[test]`: the broker runs on its own runtime, the library on one the
//! test builds, and librdkafka's blocking calls run on the test thread (or a thread of their
//! own when they must run alongside the library).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::producer::{BaseRecord, Producer as _};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use strata_client::{
    Client, ClientConfig, Compression, ConfigOp, Consumer, ConsumerConfig, ConsumerRecord, Error,
    GroupConfig, GroupConsumer, NewTopic, Producer, ProducerConfig, ProducerRecord, StartOffset,
    TopicPartition,
};
use strata_tests::{
    broker_with_topic, consume_all, consumer_config, create_topic, message_index, produce_and_wait,
    producer_config, recording_producer, send, topic_name, verify_test_messages, wait_reports,
    wait_until, watermarks, InProcessBroker, Rec, TestMessage, BASE_TIMESTAMP, CONSUME_TIMEOUT,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime the library runs on (the broker has its own).
fn runtime() -> tokio::runtime::Runtime {
    // RUST_LOG=strata_client=debug shows what the library does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` on `rt`, failing if it takes longer than `TIMEOUT` (a hang is a failure).
fn run<T>(rt: &tokio::runtime::Runtime, f: impl Future<Output = Result<T>>) -> Result<T> {
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, f)
            .await
            .map_err(|_| anyhow!("timed out after {TIMEOUT:?}"))?
    })
}

async fn connect(bs: &str) -> Result<Client> {
    Ok(Client::connect(ClientConfig::new(bs)).await?)
}

fn headers(m: &TestMessage) -> Vec<(String, Option<Bytes>)> {
    m.headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map(Bytes::from)))
        .collect()
}

/// Test message `i` as a record for partition `i % partitions`.
fn test_record(topic: &str, i: u64, partitions: i32, size: usize) -> ProducerRecord {
    let m = TestMessage::new(i, size);
    ProducerRecord {
        topic: topic.to_string(),
        partition: Some((i % partitions as u64) as i32),
        key: Some(Bytes::from(m.key.clone())),
        value: Some(Bytes::from(m.value.clone())),
        headers: headers(&m),
        timestamp: Some(m.timestamp),
    }
}

/// A record the library consumed, in the shape the test helpers compare.
fn rec(r: &ConsumerRecord) -> Rec {
    let c = &r.record;
    Rec {
        partition: r.partition,
        offset: c.offset,
        key: c.key.as_ref().map(|b| b.to_vec()),
        payload: c.value.as_ref().map(|b| b.to_vec()),
        headers: c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map(|b| b.to_vec())))
            .collect(),
        timestamp: if c.log_append_time {
            Timestamp::LogAppendTime(c.timestamp)
        } else {
            Timestamp::CreateTime(c.timestamp)
        },
    }
}

/// Polls `consumer` until every assigned partition's position reaches its entry in `ends`.
async fn read_to(
    consumer: &mut Consumer,
    ends: &BTreeMap<TopicPartition, i64>,
) -> Result<BTreeMap<i32, Vec<Rec>>> {
    let mut out: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while ends
        .iter()
        .any(|(tp, end)| consumer.position(tp).is_none_or(|p| p < *end))
    {
        ensure!(
            Instant::now() < deadline,
            "positions {:?} did not reach {ends:?}",
            consumer.positions()
        );
        for r in consumer.poll(Duration::from_millis(500)).await? {
            out.entry(r.partition).or_default().push(rec(&r));
        }
    }
    Ok(out)
}

fn sizes(i: u64) -> usize {
    16 + (i as usize * 131) % 3000
}

#[test]
fn producer_records_read_back_by_librdkafka_with_every_codec() -> Result<()> {
    const P: i32 = 3;
    const N: u64 = 300;
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let rt = runtime();
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = topic_name(&format!("lib-codec-{codec:?}").to_lowercase());
        create_topic(&bs, &topic, P)?;
        let acked = run(&rt, async {
            let producer = Producer::new(
                connect(&bs).await?,
                ProducerConfig {
                    compression: codec,
                    // Small batches: several per partition, pipelined and numbered.
                    batch_size: 16 << 10,
                    ..ProducerConfig::default()
                },
            )
            .await?;
            ensure!(producer.producer_id() >= 0, "idempotent producer has no id");
            let mut pending = Vec::new();
            for i in 0..N {
                pending.push(producer.send(test_record(&topic, i, P, sizes(i))).await?);
            }
            let acked = futures::future::try_join_all(pending).await?;
            producer.close().await;
            Ok(acked)
        })
        .with_context(|| format!("{codec:?}"))?;
        for (i, md) in (0..N).zip(&acked) {
            let p = (i % P as u64) as i32;
            ensure!(
                md.topic == topic
                    && md.partition == p
                    && md.offset == (i / P as u64) as i64
                    && md.timestamp == BASE_TIMESTAMP + i as i64,
                "{codec:?}: message {i} acknowledged as {md:?}, expected {p}/{}",
                i / P as u64
            );
        }
        let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
        verify_test_messages(&recs, 0..N, P, sizes).with_context(|| format!("{codec:?}"))?;
    }
    Ok(())
}

#[test]
fn consumer_reads_what_librdkafka_wrote() -> Result<()> {
    const P: i32 = 3;
    const N: u64 = 300;
    let (broker, topic) = broker_with_topic("lib-consume", P)?;
    let bs = broker.bootstrap();
    let mut config = producer_config(&bs);
    config.set("compression.type", "lz4");
    let producer = recording_producer(&config)?;
    produce_and_wait(&producer, &topic, 0..N, P, sizes)?;
    let marks = watermarks(&bs, &topic)?;
    let tps: Vec<TopicPartition> = (0..P).map(|p| (topic.clone(), p)).collect();
    let ends: BTreeMap<TopicPartition, i64> = tps
        .iter()
        .map(|tp| (tp.clone(), marks[tp.1 as usize].1))
        .collect();

    // A big record in a partition read with a fetch size far below it.
    let big = topic_name("lib-big");
    create_topic(&bs, &big, 1)?;
    produce_and_wait(&producer, &big, 0..8, 1, |_| 64 << 10)?;

    let rt = runtime();
    run(&rt, async {
        let client = connect(&bs).await?;

        // Everything, from the start.
        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        for tp in &tps {
            consumer.assign(tp.clone(), StartOffset::Earliest);
        }
        let recs = read_to(&mut consumer, &ends).await?;
        verify_test_messages(&recs, 0..N, P, sizes)?;
        ensure!(
            consumer.at_end(),
            "not at end after reading to the high watermarks"
        );

        // ListOffsets agrees with librdkafka's watermarks.
        for (spec, pick) in [(-2i64, 0usize), (-1, 1)] {
            let ask: Vec<_> = tps.iter().map(|tp| (tp.clone(), spec)).collect();
            let listed = client.list_offsets(&ask).await?;
            for tp in &tps {
                let mark = marks[tp.1 as usize];
                let want = if pick == 0 { mark.0 } else { mark.1 };
                ensure!(
                    listed.get(tp).map(|l| l.offset) == Some(want),
                    "list_offsets({spec}) of {tp:?} = {:?}, librdkafka says {want}",
                    listed.get(tp)
                );
            }
        }

        // From an offset, from a timestamp, and from a timestamp past the end.
        // Partition 1 holds messages 1, 4, 7, ...: message 103 (offset 34) is the first
        // at or after BASE + 101.
        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        consumer.assign((topic.clone(), 0), StartOffset::Offset(5));
        consumer.assign(
            (topic.clone(), 1),
            StartOffset::Timestamp(BASE_TIMESTAMP + 101),
        );
        consumer.assign(
            (topic.clone(), 2),
            StartOffset::Timestamp(BASE_TIMESTAMP + N as i64 + 1000),
        );
        let recs = read_to(&mut consumer, &ends).await?;
        let first = |p: i32| recs.get(&p).and_then(|v| v.first()).map(|r| r.offset);
        ensure!(first(0) == Some(5), "Offset(5) started at {:?}", first(0));
        ensure!(first(1) == Some(34), "Timestamp started at {:?}", first(1));
        TestMessage::new(103, sizes(103)).check(&recs[&1][0])?;
        ensure!(
            first(2).is_none()
                && consumer.position(&(topic.clone(), 2)) == Some(ends[&(topic.clone(), 2)]),
            "a timestamp past the end read {:?} and sits at {:?}",
            first(2),
            consumer.position(&(topic.clone(), 2))
        );

        // 64 KiB records with a 1 KiB partition fetch size still come through.
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                partition_max_bytes: 1024,
                ..ConsumerConfig::default()
            },
        );
        consumer.assign((big.clone(), 0), StartOffset::Earliest);
        let recs = read_to(&mut consumer, &BTreeMap::from([((big.clone(), 0), 8)])).await?;
        verify_test_messages(&recs, 0..8, 1, |_| 64 << 10)?;
        Ok(())
    })
}

#[test]
fn keyed_records_land_where_murmur2_puts_them() -> Result<()> {
    const P: i32 = 7;
    let (broker, topic) = broker_with_topic("lib-keys", P)?;
    let bs = broker.bootstrap();
    // Keys of every length remainder mod 4 (murmur2's tail cases), and some long ones.
    let keys: Vec<Vec<u8>> = (0..200u64)
        .map(|i| format!("{}-{i}", "k".repeat((i % 9) as usize)).into_bytes())
        .chain([
            b"a-little-bit-longer-string".to_vec(),
            vec![0xff; 33],
            vec![0; 1],
        ])
        .collect();

    let rt = runtime();
    let ours: Vec<i32> = run(&rt, async {
        let producer = Producer::new(connect(&bs).await?, ProducerConfig::default()).await?;
        let mut pending = Vec::new();
        for k in &keys {
            pending.push(
                producer
                    .send(ProducerRecord {
                        topic: topic.clone(),
                        key: Some(Bytes::from(k.clone())),
                        value: Some(Bytes::from_static(b"strata")),
                        ..ProducerRecord::default()
                    })
                    .await?,
            );
        }
        let acked = futures::future::try_join_all(pending).await?;
        producer.close().await;
        Ok(acked.into_iter().map(|m| m.partition).collect())
    })?;

    let mut config = producer_config(&bs);
    config.set("partitioner", "murmur2_random");
    let producer = recording_producer(&config)?;
    for (i, k) in keys.iter().enumerate() {
        let record = BaseRecord::with_opaque_to(&topic, Box::new((i as u64, Instant::now())))
            .key(&k[..])
            .payload(&b"librdkafka"[..]);
        send(&producer, record)?;
    }
    wait_reports(&producer, keys.len() as u64, TIMEOUT)?;
    let mut theirs = vec![-1; keys.len()];
    for d in producer.context().take() {
        ensure!(
            d.error.is_none(),
            "librdkafka delivery {} failed: {:?}",
            d.id,
            d.error
        );
        theirs[d.id as usize] = d.partition;
    }
    let differ: Vec<_> = keys
        .iter()
        .zip(ours.iter().zip(&theirs))
        .filter(|(_, (a, b))| a != b)
        .map(|(k, (a, b))| {
            format!(
                "{:?}: strata {a}, librdkafka {b}",
                String::from_utf8_lossy(k)
            )
        })
        .collect();
    ensure!(differ.is_empty(), "keys placed differently: {differ:?}");
    let used: BTreeSet<_> = ours.iter().collect();
    ensure!(
        used.len() == P as usize,
        "keys used only partitions {used:?}"
    );
    Ok(())
}

/// What the members of a group test report: each member's current assignment and every
/// message id it consumed.
#[derive(Default)]
struct GroupView {
    owned: BTreeMap<usize, Vec<i32>>,
    seen: Vec<u64>,
}

/// Runs a group member until `stop` is set: poll, record what came, commit, report the
/// assignment; then close (commit and leave).
async fn member(
    id: usize,
    mut gc: GroupConsumer,
    view: Arc<Mutex<GroupView>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let recs = gc.poll(Duration::from_millis(200)).await?;
        {
            let mut v = view.lock().unwrap();
            for r in &recs {
                let value = r.record.value.as_deref().unwrap_or_default();
                v.seen
                    .push(message_index(value).context("not a test message")?);
            }
        }
        gc.commit().await?;
        let owned = gc.assignment().into_iter().map(|(_, p)| p).collect();
        view.lock().unwrap().owned.insert(id, owned);
    }
    view.lock().unwrap().owned.remove(&id);
    gc.close().await?;
    Ok(())
}

/// `Ok` when the members in `view` own partitions `0..partitions` exactly once between them,
/// each of `members` owning `each` (if given).
fn covers(
    view: &GroupView,
    members: &[usize],
    partitions: i32,
    each: Option<usize>,
) -> Result<(), String> {
    let mut all: Vec<i32> = members
        .iter()
        .flat_map(|m| view.owned.get(m).cloned().unwrap_or_default())
        .collect();
    let sizes_ok = members.iter().all(|m| {
        view.owned
            .get(m)
            .map(Vec::len)
            .is_some_and(|n| each.is_none_or(|e| n == e))
    });
    all.sort();
    if sizes_ok && all == (0..partitions).collect::<Vec<_>>() {
        Ok(())
    } else {
        Err(format!("owned {:?}", view.owned))
    }
}

#[test]
fn cooperative_group_members_share_partitions_and_consume_everything() -> Result<()> {
    const P: i32 = 6;
    let broker = InProcessBroker::start_temp(|c| c.group_initial_rebalance_delay_ms = 100)?;
    let bs = broker.bootstrap();
    let topic = topic_name("lib-coop");
    create_topic(&bs, &topic, P)?;
    let group = topic_name("lib-coop-group");
    let rt = runtime();
    let view = Arc::new(Mutex::new(GroupView::default()));
    let stops: Vec<_> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let (producer, client, members) = run(&rt, async {
        let client = connect(&bs).await?;
        let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
        let mut members = Vec::new();
        for (id, stop) in stops.iter().enumerate() {
            let mut config = GroupConfig::new(&group, vec![topic.clone()]);
            config.assignors = vec!["cooperative-sticky".into()];
            config.reset = StartOffset::Earliest;
            config.auto_commit = None;
            config.session_timeout = Duration::from_secs(10);
            config.rebalance_timeout = Duration::from_secs(10);
            config.heartbeat_interval = Duration::from_millis(300);
            let gc = GroupConsumer::new(client.clone(), config)?;
            members.push(tokio::spawn(member(id, gc, view.clone(), stop.clone())));
        }
        Ok((producer, client, members))
    })?;
    let produce = |ids: std::ops::Range<u64>| {
        run(&rt, async {
            let mut pending = Vec::new();
            for i in ids {
                pending.push(producer.send(test_record(&topic, i, P, 100)).await?);
            }
            futures::future::try_join_all(pending).await?;
            Ok(())
        })
    };
    let settle = |what: &str, members: &[usize], each: Option<usize>| {
        wait_until(what, TIMEOUT, Duration::from_millis(50), || {
            covers(&view.lock().unwrap(), members, P, each)
        })
    };

    produce(0..120)?;
    settle(
        "three members owning two partitions each",
        &[0, 1, 2],
        Some(2),
    )?;
    produce(120..240)?;
    stops[2].store(true, Ordering::Relaxed);
    produce(240..360)?;
    settle("two members covering all partitions", &[0, 1], None)?;
    produce(360..480)?;
    wait_until(
        "every record consumed",
        TIMEOUT,
        Duration::from_millis(50),
        || {
            let seen: BTreeSet<u64> = view.lock().unwrap().seen.iter().copied().collect();
            let missing: Vec<u64> = (0..480).filter(|i| !seen.contains(i)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} missing, first {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ))
            }
        },
    )?;
    for s in &stops {
        s.store(true, Ordering::Relaxed);
    }
    run(&rt, async {
        for m in members {
            m.await??;
        }
        // What was committed is everything there is: no record left uncommitted.
        let committed = client.committed_offsets(&group, None).await?;
        let want: BTreeMap<TopicPartition, i64> = (0..P)
            .map(|p| ((topic.clone(), p), 480 / P as i64))
            .collect();
        ensure!(
            committed == want,
            "committed {committed:?}, expected {want:?}"
        );
        Ok(())
    })
}

#[test]
fn range_group_shared_with_a_librdkafka_member() -> Result<()> {
    const P: i32 = 5;
    let broker = InProcessBroker::start_temp(|c| c.group_initial_rebalance_delay_ms = 100)?;
    let bs = broker.bootstrap();
    let topic = topic_name("lib-range");
    create_topic(&bs, &topic, P)?;
    let group = topic_name("lib-range-group");
    let view = Arc::new(Mutex::new(GroupView::default()));
    let stop = Arc::new(AtomicBool::new(false));

    // The librdkafka member, polled on a thread of its own.
    let mut config = consumer_config(&bs);
    config
        .set("group.id", &group)
        .set("partition.assignment.strategy", "range")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "300");
    let theirs: BaseConsumer = config.create()?;
    theirs.subscribe(&[&topic])?;
    let rdk = {
        let (view, stop) = (view.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Err(e)) = theirs.poll(Duration::from_millis(100)) {
                    return Err(e.into());
                }
                let owned = theirs
                    .assignment()?
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                view.lock().unwrap().owned.insert(1, owned);
            }
            theirs.unsubscribe();
            Ok(())
        })
    };

    let rt = runtime();
    let ours = run(&rt, async {
        let mut config = GroupConfig::new(&group, vec![topic.clone()]);
        config.assignors = vec!["range".into()];
        config.session_timeout = Duration::from_secs(10);
        config.heartbeat_interval = Duration::from_millis(300);
        let gc = GroupConsumer::new(connect(&bs).await?, config)?;
        Ok(tokio::spawn(member(0, gc, view.clone(), stop.clone())))
    })?;
    let settled = wait_until(
        "both members sharing the partitions",
        TIMEOUT,
        Duration::from_millis(50),
        || {
            let v = view.lock().unwrap();
            covers(&v, &[0, 1], P, None)?;
            // Range over 5 partitions and 2 members: 3 and 2.
            let mut n: Vec<usize> = v.owned.values().map(Vec::len).collect();
            n.sort();
            if n == [2, 3] {
                Ok(())
            } else {
                Err(format!("owned {:?}", v.owned))
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    let ours = run(&rt, async { Ok(ours.await?) });
    rdk.join()
        .map_err(|_| anyhow!("librdkafka thread panicked"))??;
    settled?;
    ours?
}

#[test]
fn admin_calls_are_what_librdkafka_sees() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("lib-admin");
    let group = topic_name("lib-admin-group");
    let rt = runtime();
    let client = run(&rt, async {
        let client = connect(&bs).await?;
        let new = NewTopic {
            name: topic.clone(),
            partitions: 3,
            replication_factor: -1,
            configs: vec![("retention.ms".into(), "3600000".into())],
        };
        let created = client.create_topics(std::slice::from_ref(&new)).await?;
        ensure!(
            matches!(created.as_slice(), [(n, Ok(()))] if *n == topic),
            "create: {created:?}"
        );
        let again = client.create_topics(&[new]).await?;
        match again.as_slice() {
            [(_, Err(e @ Error::Kafka { .. }))] if e.code() == Some(36) => {}
            other => anyhow::bail!("creating it again: {other:?}"),
        }

        let value = |configs: &[strata_client::ConfigEntry]| {
            configs
                .iter()
                .find(|c| c.name == "retention.ms")
                .map(|c| (c.value.clone(), c.source))
        };
        let configs = client.describe_topic_configs(&topic).await?;
        ensure!(
            value(&configs) == Some((Some("3600000".into()), "topic")),
            "retention.ms as created: {:?}",
            value(&configs)
        );
        client
            .alter_topic_configs(
                &topic,
                &[ConfigOp::Set("retention.ms".into(), "7200000".into())],
            )
            .await?;
        let configs = client.describe_topic_configs(&topic).await?;
        ensure!(
            value(&configs) == Some((Some("7200000".into()), "topic")),
            "retention.ms after set: {:?}",
            value(&configs)
        );
        client
            .alter_topic_configs(&topic, &[ConfigOp::Delete("retention.ms".into())])
            .await?;
        let configs = client.describe_topic_configs(&topic).await?;
        ensure!(
            value(&configs).is_some_and(|(_, source)| source != "topic"),
            "retention.ms after delete: {:?}",
            value(&configs)
        );

        // Keep everything: the records below are from 2023.
        client
            .alter_topic_configs(&topic, &[ConfigOp::Set("retention.ms".into(), "-1".into())])
            .await?;

        client.create_partitions(&topic, 5).await?;
        let fewer = client.create_partitions(&topic, 2).await;
        ensure!(
            fewer.as_ref().err().and_then(Error::code) == Some(37),
            "shrinking: {fewer:?}"
        );
        Ok(client)
    })?;
    ensure!(
        strata_tests::partition_count(&bs, &topic)? == 5,
        "librdkafka sees {} partitions",
        strata_tests::partition_count(&bs, &topic)?
    );

    // Delete records: librdkafka sees the new low watermark and reads from it.
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &topic, 0..50, 5, |_| 50)?;
    let lows = run(&rt, async {
        Ok(client
            .delete_records(&BTreeMap::from([
                ((topic.clone(), 0), 4),
                ((topic.clone(), 3), 10),
            ]))
            .await?)
    })?;
    let want = BTreeMap::from([((topic.clone(), 0), 4), ((topic.clone(), 3), 10)]);
    ensure!(lows == want, "delete_records answered {lows:?}");
    let marks = watermarks(&bs, &topic)?;
    ensure!(
        marks == vec![(4, 10), (0, 10), (0, 10), (10, 10), (0, 10)],
        "librdkafka watermarks {marks:?}"
    );
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    ensure!(
        recs[&0].first().map(|r| r.offset) == Some(4) && recs[&3].is_empty(),
        "librdkafka read partition 0 from {:?}, partition 3: {} records",
        recs[&0].first().map(|r| r.offset),
        recs[&3].len()
    );

    // Offsets committed with the library are librdkafka's committed offsets, and back.
    let ours = BTreeMap::from([((topic.clone(), 0), 6), ((topic.clone(), 2), 9)]);
    run(&rt, async {
        Ok(client.commit_offsets(&group, &ours, None).await?)
    })?;
    let mut config = consumer_config(&bs);
    config.set("group.id", &group);
    let theirs: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..5 {
        tpl.add_partition(&topic, p);
    }
    let committed = theirs.committed_offsets(tpl.clone(), TIMEOUT)?;
    let seen: BTreeMap<i32, Offset> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    let expected: BTreeMap<i32, Offset> = (0..5)
        .map(|p| {
            (
                p,
                ours.get(&(topic.clone(), p))
                    .map_or(Offset::Invalid, |o| Offset::Offset(*o)),
            )
        })
        .collect();
    ensure!(
        seen == expected,
        "librdkafka sees committed {seen:?}, expected {expected:?}"
    );
    let mut commit = TopicPartitionList::new();
    commit.add_partition_offset(&topic, 4, Offset::Offset(7))?;
    theirs.commit(&commit, CommitMode::Sync)?;
    drop(theirs);
    run(&rt, async {
        let committed = client.committed_offsets(&group, None).await?;
        let mut want = ours.clone();
        want.insert((topic.clone(), 4), 7);
        ensure!(
            committed == want,
            "library sees committed {committed:?}, expected {want:?}"
        );
        let only = client
            .committed_offsets(&group, Some(&[(topic.clone(), 2), (topic.clone(), 1)]))
            .await?;
        ensure!(
            only == BTreeMap::from([((topic.clone(), 2), 9)]),
            "committed offsets of 2 partitions: {only:?}"
        );

        let deleted = client.delete_groups(std::slice::from_ref(&group)).await?;
        ensure!(
            matches!(deleted.as_slice(), [(g, Ok(()))] if *g == group),
            "delete: {deleted:?}"
        );
        let committed = client.committed_offsets(&group, None).await?;
        ensure!(
            committed.is_empty(),
            "offsets after delete_groups: {committed:?}"
        );
        Ok(())
    })?;
    let theirs: BaseConsumer = config.create()?;
    let committed = theirs.committed_offsets(tpl, TIMEOUT)?;
    ensure!(
        committed
            .elements()
            .iter()
            .all(|e| e.offset() == Offset::Invalid),
        "librdkafka sees offsets of a deleted group: {committed:?}"
    );
    Ok(())
}

#[test]
fn producer_fails_cleanly() -> Result<()> {
    let (broker, topic) = broker_with_topic("lib-resilience", 2)?;
    let bs = broker.bootstrap();
    let rt = runtime();
    let delivery_timeout = Duration::from_secs(3);
    let producer = run(&rt, async {
        let producer = Producer::new(
            connect(&bs).await?,
            ProducerConfig {
                delivery_timeout,
                ..ProducerConfig::default()
            },
        )
        .await?;
        // Nothing queued: flush returns at once.
        tokio::time::timeout(Duration::from_secs(5), producer.flush())
            .await
            .context("flush with nothing queued")?;

        // A partition the topic does not have, and a topic that does not exist.
        let mut r = test_record(&topic, 0, 2, 10);
        r.partition = Some(2);
        match producer.send(r).await {
            Err(e @ Error::Kafka { .. }) if e.code() == Some(3) => {}
            Err(e) => anyhow::bail!("partition 2 of 2: {e}"),
            Ok(_) => anyhow::bail!("partition 2 of 2 accepted"),
        }
        let missing = producer.send(test_record("no-such-topic", 0, 1, 10)).await;
        ensure!(
            missing.as_ref().err().and_then(Error::code) == Some(3),
            "unknown topic: {:?}",
            missing.err()
        );

        // Still works for good records.
        let md = producer.send(test_record(&topic, 1, 2, 10)).await?.await?;
        ensure!(
            (md.partition, md.offset) == (1, 0),
            "acknowledged as {md:?}"
        );
        Ok(producer)
    })?;

    broker.shutdown()?;
    let started = Instant::now();
    let outcomes = run(&rt, async {
        let mut pending = Vec::new();
        for i in 0..20 {
            pending.push(producer.send(test_record(&topic, i, 2, 10)).await?);
        }
        let outcomes = futures::future::join_all(pending).await;
        producer.flush().await;
        Ok(outcomes)
    })?;
    let took = started.elapsed();
    let acked: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    ensure!(
        acked.is_empty(),
        "acknowledged by a stopped broker: {acked:?}"
    );
    ensure!(
        took < delivery_timeout + Duration::from_secs(3),
        "deliveries took {took:?} to fail (delivery timeout {delivery_timeout:?}): {:?}",
        outcomes[0]
    );
    Ok(())
}
