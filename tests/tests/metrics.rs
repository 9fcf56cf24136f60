//! The admin listener and `/metrics`, scraped as Prometheus would: health and readiness,
//! counts of what librdkafka produced and consumed, partition offsets, consumer lag that goes
//! to zero when the group catches up, and an error counter that moves when a request is
//! refused. Brokers in one process share the metrics recorder: every check uses its own topic
//! and group, and counters are compared before and after.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use strata_tests::scrape::{get, http, scrape, value};
use strata_tests::*;

fn admin(broker: &InProcessBroker) -> Result<SocketAddr> {
    broker.admin_addr().context("admin listener off")
}

#[test]
fn health_ready_and_unknown_paths() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let a = admin(&broker)?;
    let (status, body) = get(a, "/health")?;
    ensure!(
        status.contains("200") && body == "ok\n",
        "{status} {body:?}"
    );
    ensure!(get(a, "/ready")?.0.contains("200"));
    ensure!(get(a, "/nope")?.0.contains("404"));
    ensure!(http(a, "POST /metrics HTTP/1.1\r\n\r\n")?.0.contains("405"));
    // Hostile: a request head that never ends is refused, and the listener goes on serving.
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000));
    let (status, _) = http(a, &long).unwrap_or_else(|_| ("closed".into(), String::new()));
    ensure!(!status.contains("200"), "{status}");
    ensure!(get(a, "/health")?.0.contains("200"));
    // Hostile: more idle connections than the listener serves at once. Those past its limit
    // are closed at once; once the idle ones go, it answers again.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(a))
        .collect::<Result<_, _>>()?;
    let mut closed = 0;
    for mut s in idle.iter().skip(32) {
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        if matches!(s.read(&mut [0u8; 16]), Ok(0)) {
            closed += 1;
        }
    }
    ensure!(closed > 0, "no connection past the limit was closed");
    drop(idle);
    wait_until(
        "the admin listener to answer again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match get(a, "/health") {
            Ok((s, _)) if s.contains("200") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    broker.shutdown()
}

#[test]
fn produce_consume_lag_and_errors_are_counted() -> Result<()> {
    const N: u64 = 100;
    const SIZE: usize = 1000;
    let broker = InProcessBroker::start_temp(|_| {})?;
    let (bs, a) = (broker.bootstrap(), admin(&broker)?);
    let topic = topic_name("metrics");
    let group = format!("{topic}-group");
    create_topic(&bs, &topic, 1)?;
    let before = scrape(a)?;
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &topic, 0..N, 1, |_| SIZE)?;
    drop(producer);

    let s = scrape(a)?;
    let t = [("topic", topic.as_str())];
    ensure!(
        value(&s, "strata_topic_records_in_total", &t) == N as f64,
        "records in"
    );
    ensure!(value(&s, "strata_topic_bytes_in_total", &t) >= (N as usize * SIZE) as f64);
    let p0 = [("topic", topic.as_str()), ("partition", "0")];
    ensure!(value(&s, "strata_partition_high_watermark", &p0) == N as f64);
    ensure!(value(&s, "strata_partition_log_start_offset", &p0) == 0.0);
    ensure!(value(&s, "strata_partition_log_bytes", &p0) >= (N as usize * SIZE) as f64);
    let produce = [("api", "Produce")];
    ensure!(
        value(&s, "strata_requests_total", &produce)
            > value(&before, "strata_requests_total", &produce),
        "Produce requests"
    );
    ensure!(value(&s, "strata_request_duration_seconds_count", &produce) > 0.0);
    ensure!(value(&s, "strata_produce_durable_seconds_count", &[]) > 0.0);
    ensure!(value(&s, "strata_group_commit_partitions_count", &[]) > 0.0);
    ensure!(s.contains_key("strata_rocksdb_wal_bytes"), "RocksDB series");
    ensure!(value(&s, "strata_connections_open", &[]) >= 0.0);

    // A group that commits offset 40 lags by 60, then by 0 once it commits the end.
    let mut cfg = consumer_config(&bs);
    cfg.set("group.id", &group);
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(40))?;
    consumer.commit(&tpl, CommitMode::Sync)?;
    let lag = [("group", group.as_str()), ("topic", topic.as_str())];
    let s = scrape(a)?;
    ensure!(
        value(&s, "strata_consumer_group_lag", &lag) == 60.0,
        "lag 60"
    );
    let lag0 = [
        ("group", group.as_str()),
        ("topic", topic.as_str()),
        ("partition", "0"),
    ];
    ensure!(value(&s, "strata_consumer_lag", &lag0) == 60.0);
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    ensure!(recs[&0].len() as u64 == N);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(N as i64))?;
    consumer.commit(&tpl, CommitMode::Sync)?;
    let s = scrape(a)?;
    ensure!(value(&s, "strata_consumer_group_lag", &lag) == 0.0, "lag 0");
    ensure!(
        value(&s, "strata_topic_records_out_total", &t) >= N as f64,
        "records out"
    );
    ensure!(value(&s, "strata_topic_bytes_out_total", &t) >= (N as usize * SIZE) as f64);

    // A refused request (the topic exists) moves the error counter for its API and code.
    let exists = [("api", "CreateTopics"), ("code", "36")];
    let errors = value(&s, "strata_request_errors_total", &exists);
    match try_create_topic(&bs, &topic, 1)? {
        Err(_) => {}
        Ok(()) => bail!("creating {topic} twice succeeded"),
    }
    let s = scrape(a)?;
    ensure!(
        value(&s, "strata_request_errors_total", &exists) == errors + 1.0,
        "TOPIC_ALREADY_EXISTS counted"
    );
    broker.shutdown()
}

/// With per-partition series off, offsets and lag show per topic and group only.
#[test]
fn partition_series_can_be_switched_off() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.metrics_partition_series = false)?;
    let (bs, a) = (broker.bootstrap(), admin(&broker)?);
    let topic = topic_name("no-partition-series");
    create_topic(&bs, &topic, 3)?;
    let s = scrape(a)?;
    let t = [("topic", topic.as_str())];
    ensure!(value(&s, "strata_topic_partitions", &t) == 3.0);
    let rows = s
        .get("strata_partition_high_watermark")
        .into_iter()
        .flatten()
        .filter(|(l, _)| l.get("topic") == Some(&topic))
        .count();
    ensure!(rows == 0, "{rows} per-partition series for {topic}");
    broker.shutdown()
}
