//! Topic administration and offset lookups as clients see them: Metadata, CreateTopics,
//! DeleteTopics, CreatePartitions, auto-creation, and ListOffsets (watermarks and times).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use strata_tests::*;

fn topic_error(bs: &str, topic: &str) -> Result<Option<RDKafkaErrorCode>> {
    let consumer = new_consumer(bs)?;
    let md = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    match md.topics() {
        [t] if t.name() == topic => Ok(t.error().map(RDKafkaErrorCode::from)),
        other => bail!("metadata for {topic} returned {} topics", other.len()),
    }
}

fn listed_topics(bs: &str) -> Result<Vec<(String, usize)>> {
    let consumer = new_consumer(bs)?;
    let md = consumer.fetch_metadata(None, CALL_TIMEOUT)?;
    Ok(md
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

/// Produces test messages `0..n` (10 bytes each) to partition 0 and waits for the acks;
/// returns their offsets.
fn produce_n(bs: &str, topic: &str, n: u64) -> Result<Vec<i64>> {
    let producer = recording_producer(&producer_config(bs))?;
    produce_test_messages(&producer, topic, 0..n, 1, |_| 10)?;
    producer.flush(Duration::from_secs(60))?;
    wait_reports(&producer, n, Duration::from_secs(60))?;
    let reports = producer.context().take();
    ensure!(reports.iter().all(|d| d.error.is_none()), "{reports:?}");
    Ok(reports.iter().map(|d| d.offset).collect())
}

#[test]
fn unknown_topic_is_an_error_when_auto_create_is_off() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let topic = topic_name("missing");
    ensure!(
        topic_error(&bs, &topic)? == Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "metadata for a missing topic: {:?}",
        topic_error(&bs, &topic)?
    );

    // Producing to it fails (librdkafka gives up once metadata keeps saying "unknown").
    let mut cfg = producer_config(&bs);
    cfg.set("topic.metadata.propagation.max.ms", "2000")
        .set("message.timeout.ms", "15000");
    let producer = recording_producer(&cfg)?;
    produce_test_messages(&producer, &topic, 0..1, 1, |_| 10)?;
    wait_reports(&producer, 1, Duration::from_secs(60))?;
    let reports = producer.context().take();
    ensure!(
        reports[0].error.is_some(),
        "produce to a missing topic with auto-create off was acknowledged: {reports:?}"
    );
    drop(producer);
    ensure!(
        !listed_topics(&bs)?.iter().any(|(name, _)| *name == topic),
        "topic was created although auto-create is off"
    );
    broker.shutdown()
}

#[test]
fn auto_create_uses_configured_partition_count() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| {
        c.auto_create_topics = true;
        c.num_partitions = 2;
    })?;
    let bs = broker.bootstrap();
    let topic = topic_name("auto");
    let offsets = produce_n(&bs, &topic, 3)?;
    ensure!(offsets == vec![0, 1, 2], "offsets {offsets:?}");
    ensure!(partition_count(&bs, &topic)? == 2);
    broker.shutdown()
}

#[test]
fn create_list_delete_and_recreate_topics() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let a = topic_name("a");
    let b = topic_name("b");
    create_topic(&bs, &a, 1)?;
    create_topic(&bs, &b, 4)?;

    // Listed with their partition counts; this broker leads every partition.
    let consumer = new_consumer(&bs)?;
    let md = consumer.fetch_metadata(None, CALL_TIMEOUT)?;
    ensure!(md.brokers().len() == 1, "brokers {}", md.brokers().len());
    let me = &md.brokers()[0];
    ensure!(
        me.port() == i32::from(broker.addr().port())
            && (me.host() == "127.0.0.1" || me.host() == "localhost"),
        "advertised {}:{}, listening on {}",
        me.host(),
        me.port(),
        broker.addr()
    );
    for (name, n) in [(&a, 1), (&b, 4)] {
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name.as_str())
            .ok_or_else(|| anyhow::anyhow!("{name} not listed"))?;
        ensure!(t.error().is_none() && t.partitions().len() == n, "{name}");
        for p in t.partitions() {
            ensure!(
                p.leader() == me.id() && p.error().is_none(),
                "{name}/{}",
                p.id()
            );
        }
    }
    drop(consumer);

    ensure!(
        try_create_topic(&bs, &a, 1)? == Err(RDKafkaErrorCode::TopicAlreadyExists),
        "creating {a} twice"
    );

    // Data in `a`, then delete it.
    ensure!(produce_n(&bs, &a, 10)? == (0..10).collect::<Vec<_>>());
    ensure!(watermarks(&bs, &a)? == vec![(0, 10)]);
    ensure!(delete_topic(&bs, &a)? == Ok(()), "delete {a}");
    ensure!(
        !listed_topics(&bs)?.iter().any(|(n, _)| *n == a),
        "{a} still listed after delete"
    );
    ensure!(topic_error(&bs, &a)? == Some(RDKafkaErrorCode::UnknownTopicOrPartition));
    ensure!(
        delete_topic(&bs, &a)? == Err(RDKafkaErrorCode::UnknownTopicOrPartition),
        "deleting {a} twice"
    );
    ensure!(
        listed_topics(&bs)?.contains(&(b.clone(), 4)),
        "{b} affected by deleting {a}"
    );

    // Re-created with a different partition count: empty, offsets from 0.
    create_topic(&bs, &a, 2)?;
    ensure!(partition_count(&bs, &a)? == 2);
    ensure!(watermarks(&bs, &a)? == vec![(0, 0), (0, 0)]);
    ensure!(produce_n(&bs, &a, 1)? == vec![0]);
    let recs = consume_all(&bs, &a, CONSUME_TIMEOUT)?;
    ensure!(recs[&0].len() == 1 && recs[&1].is_empty(), "{recs:?}");
    TestMessage::new(0, 10).check(&recs[&0][0])?;

    // CreatePartitions: grow, never shrink.
    ensure!(create_partitions(&bs, &b, 6)? == Ok(()));
    ensure!(partition_count(&bs, &b)? == 6);
    ensure!(watermarks(&bs, &b)?[5] == (0, 0));
    ensure!(
        create_partitions(&bs, &b, 3)? == Err(RDKafkaErrorCode::InvalidPartitions),
        "shrinking {b}"
    );
    ensure!(partition_count(&bs, &b)? == 6);
    broker.shutdown()
}

/// ListOffsets: watermarks, and the first offset whose timestamp is at or after a time —
/// including inside a batch, and -1 (End) for a time after every record.
#[test]
fn list_offsets_watermarks_and_times() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("times");
    create_topic(&bs, &topic, 1)?;

    let consumer = new_consumer(&bs)?;
    let lookup = |ts: i64| -> Result<Offset> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(ts))?;
        let out = consumer.offsets_for_times(tpl, CALL_TIMEOUT)?;
        let elems = out.elements();
        ensure!(elems.len() == 1, "{} elements", elems.len());
        ensure!(elems[0].error().is_ok(), "{:?}", elems[0].error());
        Ok(elems[0].offset())
    };

    // Empty partition.
    ensure!(consumer.fetch_watermarks(&topic, 0, CALL_TIMEOUT)? == (0, 0));
    ensure!(
        lookup(BASE_TIMESTAMP)? == Offset::End,
        "empty: {:?}",
        lookup(BASE_TIMESTAMP)?
    );

    // 100 records, timestamps BASE + 10*i, in four separately flushed batches of 25.
    let producer = recording_producer(&producer_config(&bs))?;
    for chunk in 0..4u64 {
        for i in chunk * 25..(chunk + 1) * 25 {
            let value = format!("t{i}");
            let record = rdkafka::producer::BaseRecord::<[u8], [u8], _>::with_opaque_to(
                &topic,
                Box::new((i, std::time::Instant::now())),
            )
            .partition(0)
            .payload(value.as_bytes())
            .timestamp(BASE_TIMESTAMP + 10 * i as i64);
            send(&producer, record)?;
        }
        producer.flush(Duration::from_secs(60))?;
    }
    wait_reports(&producer, 100, Duration::from_secs(60))?;
    ensure!(producer.context().failed() == 0);
    drop(producer);

    ensure!(consumer.fetch_watermarks(&topic, 0, CALL_TIMEOUT)? == (0, 100));
    let cases = [
        (BASE_TIMESTAMP - 1_000_000, Offset::Offset(0)),
        (BASE_TIMESTAMP, Offset::Offset(0)),
        (BASE_TIMESTAMP + 1, Offset::Offset(1)),
        (BASE_TIMESTAMP + 255, Offset::Offset(26)), // inside the second batch
        (BASE_TIMESTAMP + 250, Offset::Offset(25)), // first record of the second batch
        (BASE_TIMESTAMP + 990, Offset::Offset(99)), // the last record exactly
        (BASE_TIMESTAMP + 991, Offset::End),        // after every record: -1
        (BASE_TIMESTAMP + 1_000_000_000, Offset::End),
    ];
    for (ts, want) in cases {
        let got = lookup(ts)?;
        ensure!(
            got == want,
            "offsets_for_times(BASE{:+}) = {got:?}, expected {want:?}",
            ts - BASE_TIMESTAMP
        );
    }
    broker.shutdown()
}

/// Named listeners: each tells its clients the address advertised for it (a client inside a
/// Docker network and one on the host get different answers), and clients of either can
/// produce and consume.
#[test]
fn each_listener_advertises_its_own_address() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| {
        c.listeners = "CLIENT://127.0.0.1:0,INTERNAL://127.0.0.1:0".into();
        c.advertised_listeners = "INTERNAL://strata.internal:29092".into();
    })?;
    let client = broker.listener_addr("CLIENT").context("CLIENT listener")?;
    let internal = broker
        .listener_addr("INTERNAL")
        .context("INTERNAL listener")?;
    let brokers = |addr: std::net::SocketAddr| -> Result<Vec<(String, i32)>> {
        let mut c = raw::connect(addr)?;
        let req = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![]));
        let resp = raw::call(&mut c, 12, 1, &req)?;
        Ok(resp
            .brokers
            .iter()
            .map(|b| (b.host.to_string(), b.port))
            .collect())
    };
    ensure!(brokers(internal)? == vec![("strata.internal".to_string(), 29092)]);
    ensure!(brokers(client)? == vec![("127.0.0.1".to_string(), i32::from(client.port()))]);
    // A real client on the CLIENT listener follows its advertised address.
    let bs = client.to_string();
    let topic = topic_name("listeners");
    create_topic(&bs, &topic, 1)?;
    ensure!(produce_n(&bs, &topic, 5)? == vec![0, 1, 2, 3, 4]);
    broker.shutdown()
}

/// A listener's allowlist: a client from 127.0.0.1 (listed) produces as usual; a connection
/// from 127.0.0.2 (not listed) is closed before the broker reads a byte, however many times
/// it tries, and the broker serves on.
#[test]
fn connections_from_outside_the_allowlist_are_closed() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| {
        c.listeners = "CLIENT://127.0.0.1:0".into();
        c.listener_allowlists = "CLIENT=127.0.0.1/32".into();
    })?;
    let addr = broker.listener_addr("CLIENT").context("CLIENT listener")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Bytes read back after an ApiVersions request from `source` (0: closed unanswered).
    let answered_from = |source: &str| {
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(format!("{source}:0").parse()?)?;
            let mut s = socket.connect(addr).await?;
            // An ApiVersions request: no answer comes, the connection is closed.
            let _ = s
                .write_all(&raw::encode_request(
                    3,
                    1,
                    &kafka_protocol::messages::ApiVersionsRequest::default(),
                )?)
                .await;
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
            anyhow::Ok(match n {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => anyhow::bail!("neither answered nor closed within 10 s"),
            })
        })
    };
    ensure!(
        answered_from("127.0.0.1")? > 0,
        "the listed source got no answer"
    );
    for _ in 0..20 {
        ensure!(
            answered_from("127.0.0.2")? == 0,
            "a connection from 127.0.0.2 was served"
        );
    }
    let bs = addr.to_string();
    let topic = topic_name("allowlist");
    create_topic(&bs, &topic, 1)?;
    ensure!(produce_n(&bs, &topic, 3)? == vec![0, 1, 2]);
    broker.shutdown()
}

/// Without ACLs every operation is allowed, and the authorized-operations fields say so when
/// asked (as Kafka without an authorizer does; librdkafka's DescribeTopics and
/// DescribeCluster read them), and hold INT32_MIN when not asked (kafka-python breaks on -1).
#[test]
fn authorized_operations_are_every_supported_one_when_asked() -> Result<()> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        DescribeClusterRequest, DescribeGroupsRequest, GroupId, MetadataRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let (broker, topic) = broker_with_topic("authops", 1)?;
    let mut s = raw::connect(broker.addr())?;
    let ask = |topic_ops: bool, cluster_ops: bool| {
        MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(topic.clone()))))]))
            .with_include_topic_authorized_operations(topic_ops)
            .with_include_cluster_authorized_operations(cluster_ops)
    };
    let m = raw::call(&mut s, 12, 1, &ask(true, false))?;
    ensure!(
        m.topics[0].topic_authorized_operations == 3576,
        "{:?}",
        m.topics[0]
    );
    // The cluster's operations are asked of Metadata up to v10 only.
    let m = raw::call(&mut s, 10, 2, &ask(true, true))?;
    ensure!(
        m.cluster_authorized_operations == 8096,
        "v10 cluster ops {}",
        m.cluster_authorized_operations
    );
    let m = raw::call(&mut s, 10, 3, &ask(false, false))?;
    ensure!(m.topics[0].topic_authorized_operations == i32::MIN);
    ensure!(m.cluster_authorized_operations == i32::MIN);
    let c = raw::call(
        &mut s,
        1,
        4,
        &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
    )?;
    ensure!(c.cluster_authorized_operations == 8096, "{c:?}");
    let c = raw::call(&mut s, 1, 5, &DescribeClusterRequest::default())?;
    ensure!(c.cluster_authorized_operations == i32::MIN, "{c:?}");
    let ask_group = |include: bool| {
        DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("some-group"))])
            .with_include_authorized_operations(include)
    };
    let g = raw::call(&mut s, 5, 6, &ask_group(true))?;
    ensure!(
        g.groups[0].authorized_operations == 328,
        "{:?}",
        g.groups[0]
    );
    let g = raw::call(&mut s, 5, 7, &ask_group(false))?;
    ensure!(g.groups[0].authorized_operations == i32::MIN);
    Ok(())
}
