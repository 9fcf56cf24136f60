//! Client quotas and per-partition caps end to end: DescribeClientQuotas / AlterClientQuotas
//! over the wire (both versions, hostile input), persistence across a restart, and the
//! throttling itself with librdkafka clients: a producer and a consumer over their byte-rate
//! quotas are slowed to the quota without errors while a neighbour without a quota keeps its
//! rate, librdkafka reports the throttle, a quota set at run time takes effect within
//! seconds, and a partition's ingress cap holds with several producers writing to it.
//!
//! Rates are measured over 10 s after a warm-up, with quota windows of 3 x 1 s instead of
//! Kafka's 11 x 1 s (shorter windows let a short test reach the steady state sooner). Kafka's
//! sampled rate makes a client that keeps pushing swing around its quota, so over 10 s its
//! rate may stray by about one window's worth (about 10%) either way (1 s in 10 s; simulated
//! and observed up to +13%); over the 30 s the swing shrinks to a third of that, which
//! `quota-bench` (tests/src/bin) measures with Kafka's default windows. So client quotas are
//! held to 15% over the quota here, and partition caps, which are token buckets without the
//! swing, to 10%. Below the quota the tolerance is wide (a loaded machine may be slower than
//! the quota; starving is what those checks catch).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use strata_tests::quotas::*;
use strata_tests::*;

const INVALID_REQUEST: i16 = 42;
const MB: f64 = 1024.0 * 1024.0;
/// The throttled clients' quota: slow enough to measure on a loaded machine, fast enough
/// for a few MB in a few seconds.
const QUOTA: f64 = MB;
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A broker with short quota windows (see the module doc).
fn broker() -> Result<InProcessBroker> {
    InProcessBroker::start_temp(|c| c.quota_window_num = 3)
}

/// One described entity: its (type, name) parts and (key, value) pairs.
type Described = (Vec<(String, Option<String>)>, Vec<(String, f64)>);

/// DescribeClientQuotas: (error code, entries sorted).
fn describe(
    stream: &mut TcpStream,
    v: i16,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<(i16, Vec<Described>)> {
    let req = DescribeClientQuotasRequest::default()
        .with_strict(strict)
        .with_components(
            components
                .iter()
                .map(|(t, m, n)| {
                    ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(*m)
                        .with_match(n.map(s))
                })
                .collect(),
        );
    let resp = raw::call(stream, v, 8, &req)?;
    let mut out: Vec<Described> = resp
        .entries
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e.entity
                    .iter()
                    .map(|p| {
                        (
                            p.entity_type.to_string(),
                            p.entity_name.as_ref().map(|n| n.to_string()),
                        )
                    })
                    .collect(),
                e.values
                    .iter()
                    .map(|v| (v.key.to_string(), v.value))
                    .collect(),
            )
        })
        .collect();
    out.sort_by_key(|e| names(std::slice::from_ref(e)));
    Ok((resp.error_code, out))
}

fn names(entries: &[Described]) -> Vec<String> {
    entries
        .iter()
        .map(|(e, _)| {
            e.iter()
                .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// At most `over` above the quota (exceeding it is the bug), and not starved: at least half
/// of it (a loaded machine may be slower than the quota; the wide margin cannot flake).
fn near_quota(rate: f64, over: f64, who: &str) -> Result<()> {
    ensure!(
        rate <= (1.0 + over) * QUOTA,
        "{who} ran at {rate:.0} B/s, over the quota of {QUOTA} B/s by more than {over}"
    );
    ensure!(rate >= 0.5 * QUOTA, "{who} starved: {rate:.0} B/s");
    Ok(())
}

/// See the module doc.
const CLIENT_QUOTA_SWING: f64 = 0.15;
const CAP_SWING: f64 = 0.10;

fn measure_rates(counts: &[&dyn Fn() -> u64]) -> Vec<f64> {
    measure(counts, WARM_UP, MEASURE)
}

#[test]
fn admin_apis_describe_alter_and_validate() -> Result<()> {
    let b = broker()?;
    let mut c = raw::connect(b.addr())?;
    let advertised = |key| raw::advertised_versions(b.addr(), key);
    ensure!(advertised(48)? == Some((0, 1)), "DescribeClientQuotas 0-1");
    ensure!(advertised(49)? == Some((0, 1)), "AlterClientQuotas 0-1");
    for v in 0..=1 {
        // A clean slate per version: remove what the previous version set.
        let (_, all) = describe(&mut c, v, &[], false)?;
        for (e, values) in &all {
            let ent: Vec<(&str, Option<&str>)> =
                e.iter().map(|(t, n)| (t.as_str(), n.as_deref())).collect();
            let ops: Vec<(&str, f64, bool)> = values
                .iter()
                .map(|(k, _)| (k.as_str(), 0.0, true))
                .collect();
            ensure!(alter(&mut c, v, vec![entry(&ent, &ops)], false)? == [0]);
        }
        let set = vec![
            entry(
                &[("user", Some("alice"))],
                &[("producer_byte_rate", 1024.0, false)],
            ),
            entry(
                &[("user", Some("alice")), ("client-id", Some("app"))],
                &[
                    ("consumer_byte_rate", 2048.0, false),
                    ("request_percentage", 12.5, false),
                ],
            ),
            entry(
                &[("user", None)],
                &[("controller_mutation_rate", 0.5, false)],
            ),
            entry(
                &[("client-id", None)],
                &[("producer_byte_rate", 4096.0, false)],
            ),
        ];
        // validate_only checks and changes nothing.
        ensure!(alter(&mut c, v, set.clone(), true)? == [0, 0, 0, 0]);
        ensure!(
            describe(&mut c, v, &[], false)?.1.is_empty(),
            "validate_only stored"
        );
        ensure!(alter(&mut c, v, set, false)? == [0, 0, 0, 0]);
        let (code, all) = describe(&mut c, v, &[], false)?;
        ensure!(code == 0 && all.len() == 4, "{code} {all:?}");
        // Exact, default, any; strict.
        let (_, alice) = describe(&mut c, v, &[("user", 0, Some("alice"))], false)?;
        ensure!(
            names(&alice) == ["user=alice", "user=alice,client-id=app"],
            "{alice:?}"
        );
        let (_, strict) = describe(&mut c, v, &[("user", 0, Some("alice"))], true)?;
        ensure!(names(&strict) == ["user=alice"], "{strict:?}");
        ensure!(strict[0].1 == [("producer_byte_rate".to_string(), 1024.0)]);
        let (_, default) = describe(&mut c, v, &[("user", 1, None)], false)?;
        ensure!(names(&default) == ["user=<default>"], "{default:?}");
        let (_, any_client) = describe(&mut c, v, &[("client-id", 2, None)], false)?;
        ensure!(
            names(&any_client) == ["client-id=<default>", "user=alice,client-id=app"],
            "{any_client:?}"
        );
        let (_, both) = describe(
            &mut c,
            v,
            &[("user", 2, None), ("client-id", 0, Some("app"))],
            true,
        )?;
        ensure!(names(&both) == ["user=alice,client-id=app"], "{both:?}");
        // Removing one key keeps the others; removing the last removes the entity.
        let drop_rate = entry(
            &[("user", Some("alice")), ("client-id", Some("app"))],
            &[("request_percentage", 0.0, true)],
        );
        ensure!(alter(&mut c, v, vec![drop_rate], false)? == [0]);
        let (_, app) = describe(&mut c, v, &[("client-id", 0, Some("app"))], false)?;
        ensure!(
            app[0].1 == [("consumer_byte_rate".to_string(), 2048.0)],
            "{app:?}"
        );
        let drop_all = entry(
            &[("user", None)],
            &[("controller_mutation_rate", 0.0, true)],
        );
        ensure!(alter(&mut c, v, vec![drop_all], false)? == [0]);
        ensure!(describe(&mut c, v, &[("user", 1, None)], false)?
            .1
            .is_empty());
    }
    Ok(())
}

#[test]
fn hostile_quota_requests_get_invalid_request() -> Result<()> {
    let b = broker()?;
    let mut c = raw::connect(b.addr())?;
    let rate = |v: f64| vec![("producer_byte_rate", v, false)];
    let user = [("user", Some("u"))];
    let bad = vec![
        entry(&user, &rate(-1.0)),
        entry(&user, &rate(0.0)),
        entry(&user, &rate(f64::NAN)),
        entry(&user, &rate(f64::INFINITY)),
        entry(&user, &rate(1e300)),
        entry(&user, &rate(1.5)),
        entry(&user, &[("request_percentage", -0.5, false)]),
        entry(&user, &[("no_such_quota", 1.0, false)]),
        entry(
            &user,
            &[
                ("producer_byte_rate", 1.0, false),
                ("producer_byte_rate", 2.0, false),
            ],
        ),
        entry(&[("group", Some("g"))], &rate(1.0)),
        entry(
            &[("ip", Some("127.0.0.1"))],
            &[("connection_creation_rate", 1.0, false)],
        ),
        entry(&[("user", Some("a")), ("user", Some("b"))], &rate(1.0)),
        entry(&[], &rate(1.0)),
        entry(&[("user", Some(""))], &rate(1.0)),
    ];
    let n = bad.len();
    ensure!(alter(&mut c, 1, bad, false)? == vec![INVALID_REQUEST; n]);
    // The same entity twice in one request: both refused; other entries are applied.
    let twice = vec![
        entry(&[("client-id", Some("x"))], &rate(100.0)),
        entry(&[("client-id", Some("x"))], &rate(200.0)),
        entry(&[("client-id", Some("y"))], &rate(300.0)),
    ];
    ensure!(alter(&mut c, 1, twice, false)? == [INVALID_REQUEST, INVALID_REQUEST, 0]);
    let (_, all) = describe(&mut c, 1, &[], false)?;
    ensure!(
        names(&all) == ["client-id=y"],
        "only the valid entry is stored: {all:?}"
    );
    // A huge but valid value is kept as given.
    let huge = 9.0e18;
    ensure!(alter(&mut c, 0, vec![entry(&user, &rate(huge))], false)? == [0]);
    let (_, u) = describe(&mut c, 0, &[("user", 0, Some("u"))], true)?;
    ensure!(
        u[0].1 == [("producer_byte_rate".to_string(), huge)],
        "{u:?}"
    );
    for filter in [
        vec![("user", 0, None)],
        vec![("user", 1, Some("u"))],
        vec![("user", 2, Some("u"))],
        vec![("user", 7, None)],
        vec![("group", 2, None)],
        vec![("user", 2, None), ("user", 1, None)],
        vec![("ip", 2, None), ("client-id", 2, None)],
    ] {
        let (code, entries) = describe(&mut c, 1, &filter, false)?;
        ensure!(
            code == INVALID_REQUEST && entries.is_empty(),
            "{filter:?}: {code}"
        );
    }
    // The connection survived all of it.
    raw::api_versions_call(&mut c)?;
    Ok(())
}

#[test]
fn quotas_survive_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = {
        let mut c = test_config(&dir.path().join("data"))?;
        c.quota_window_num = 3;
        c
    };
    let b = InProcessBroker::start(config.clone())?;
    let mut c = raw::connect(b.addr())?;
    let set = vec![
        entry(
            &[("user", Some("alice")), ("client-id", None)],
            &[("producer_byte_rate", 1000.0, false)],
        ),
        entry(
            &[("client-id", Some("batch"))],
            &[("consumer_byte_rate", 2000.0, false)],
        ),
    ];
    ensure!(alter(&mut c, 1, set, false)? == [0, 0]);
    let (_, before) = describe(&mut c, 1, &[], false)?;
    drop(c);
    b.shutdown()?;
    let b = InProcessBroker::start(config)?;
    let mut c = raw::connect(b.addr())?;
    let (_, after) = describe(&mut c, 1, &[], false)?;
    ensure!(
        before.len() == 2 && after == before,
        "{before:?} then {after:?}"
    );
    Ok(())
}

#[test]
fn producer_over_quota_is_throttled_while_its_neighbour_keeps_its_rate() -> Result<()> {
    let b = broker()?;
    let bs = b.bootstrap();
    let topic = topic_name("quota-produce");
    create_topic(&bs, &topic, 2)?;
    // Both start without a quota; the neighbour paces itself to 3x the quota.
    let slow = Load::start(&metered_config(&bs, "slow-producer"), &topic, None)?;
    let neighbour_pace = 3.0 * QUOTA;
    let neighbour = Load::start(
        &metered_config(&bs, "neighbour"),
        &topic,
        Some(neighbour_pace),
    )?;
    wait_until(
        "the producers to deliver",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            if slow.bytes() > 0 && neighbour.bytes() > 0 {
                Ok(())
            } else {
                Err("nothing yet".into())
            }
        },
    )?;
    // The quota is set at run time and takes effect within seconds.
    set_quota(
        b.addr(),
        &[("client-id", Some("slow-producer"))],
        "producer_byte_rate",
        Some(QUOTA),
    )?;
    let set_at = Instant::now();
    wait_until(
        "a throttle reported by librdkafka",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || match slow.meter().throttle_events.load(Ordering::SeqCst) {
            0 => Err("no throttle event yet".into()),
            _ => Ok(()),
        },
    )?;
    let took = set_at.elapsed();
    let rates = measure_rates(&[&|| slow.bytes(), &|| neighbour.bytes()]);
    let (slow_rate, neighbour_rate) = (rates[0], rates[1]);
    eprintln!(
        "quota {:.2} MB/s: throttled producer {:.3} MB/s, neighbour {:.3} MB/s (paced at {:.2}); throttle seen {took:?} after the quota was set",
        QUOTA / MB,
        slow_rate / MB,
        neighbour_rate / MB,
        neighbour_pace / MB
    );
    let max_ms = slow.meter().throttle_max_ms.load(Ordering::SeqCst);
    let (slow_errors, _) = slow.finish()?;
    let (neighbour_errors, neighbour_throttles) = neighbour.finish()?;
    ensure!(
        slow_errors == 0 && neighbour_errors == 0,
        "delivery errors: {slow_errors} {neighbour_errors}"
    );
    // Records count a little less than the request bytes the quota measures.
    near_quota(slow_rate, CLIENT_QUOTA_SWING, "the throttled producer")?;
    ensure!(max_ms > 0, "librdkafka saw throttle_time_ms");
    let admin = b.admin_addr().context("admin listener")?;
    let label = "client_id=\"slow-producer\"";
    ensure!(metric(admin, "strata_throttle_time_ms_total", label)? > 0.0);
    ensure!(neighbour_throttles == 0, "the neighbour was throttled");
    ensure!(
        neighbour_rate >= 0.8 * neighbour_pace,
        "neighbour slowed to {neighbour_rate:.0} B/s"
    );
    Ok(())
}

#[test]
fn consumer_over_quota_is_throttled_while_its_neighbour_reads_freely() -> Result<()> {
    let b = broker()?;
    let bs = b.bootstrap();
    let topic = topic_name("quota-fetch");
    create_topic(&bs, &topic, 1)?;
    // Enough for the burst, the warm-up and the measured window at the quota.
    let total = 16 * MB as u64;
    let filler = Load::start(&metered_config(&bs, "filler"), &topic, None)?;
    wait_until(
        "the topic to fill",
        Duration::from_secs(120),
        Duration::from_millis(100),
        || match filler.bytes() {
            n if n >= total => Ok(()),
            n => Err(format!("{n} bytes")),
        },
    )?;
    let (errors, _) = filler.finish()?;
    ensure!(errors == 0);
    set_quota(
        b.addr(),
        &[("client-id", Some("slow-consumer"))],
        "consumer_byte_rate",
        Some(QUOTA),
    )?;
    let slow = Reader::start(&bs, &topic, 1, "slow-consumer")?;
    let neighbour = Reader::start(&bs, &topic, 1, "free-consumer")?;
    let rates = measure_rates(&[&|| slow.bytes.load(Ordering::SeqCst)]);
    let neighbour_bytes = neighbour.bytes.load(Ordering::SeqCst);
    eprintln!(
        "quota {:.2} MB/s: throttled consumer {:.3} MB/s; the neighbour read {:.1} MB in {:?}",
        QUOTA / MB,
        rates[0] / MB,
        neighbour_bytes as f64 / MB,
        WARM_UP + MEASURE
    );
    let slow_throttles = slow.finish()?;
    let neighbour_throttles = neighbour.finish()?;
    near_quota(rates[0], CLIENT_QUOTA_SWING, "the throttled consumer")?;
    ensure!(slow_throttles > 0, "librdkafka reported no throttle");
    ensure!(neighbour_throttles == 0, "the neighbour was throttled");
    ensure!(
        neighbour_bytes >= total,
        "the neighbour read only {neighbour_bytes} bytes"
    );
    Ok(())
}

/// The value of the first `/metrics` series named `name` whose labels include `label`.
fn metric(addr: SocketAddr, name: &str, label: &str) -> Result<f64> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr)?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .with_context(|| format!("no {name} series with {label}"))?;
    Ok(line.rsplit_once(' ').context("no value")?.1.parse()?)
}

#[test]
fn a_partition_ingress_cap_holds_with_several_producers() -> Result<()> {
    let b = broker()?;
    let bs = b.bootstrap();
    let topic = topic_name("quota-cap");
    let cap = QUOTA as i64;
    try_create_topic_with(
        &bs,
        &topic,
        1,
        &[("strata.partition.ingress.bytes.per.sec", &cap.to_string())],
    )?
    .map_err(|e| anyhow::anyhow!("create: {e:?}"))?;
    let loads = (0..3)
        .map(|i| Load::start(&metered_config(&bs, &format!("cap-{i}")), &topic, None))
        .collect::<Result<Vec<_>>>()?;
    let total = || loads.iter().map(Load::bytes).sum::<u64>();
    let rates = measure_rates(&[&total]);
    let each: Vec<u64> = loads.iter().map(Load::bytes).collect();
    eprintln!(
        "partition cap {:.2} MB/s: 3 producers together {:.3} MB/s (bytes each {each:?})",
        QUOTA / MB,
        rates[0] / MB
    );
    for l in loads {
        let (errors, _) = l.finish()?;
        ensure!(errors == 0, "delivery errors under a cap");
    }
    near_quota(rates[0], CAP_SWING, "the capped partition")?;
    ensure!(
        each.iter().all(|&n| n > 0),
        "a producer got nothing through: {each:?}"
    );
    let admin = b.admin_addr().context("admin listener")?;
    let label = format!("topic=\"{topic}\"");
    ensure!(metric(admin, "strata_partition_throttled_total", &label)? > 0.0);
    Ok(())
}

/// CreateTopics at `version` for topics of `partitions` partitions each: (each topic's error
/// code, throttle_time_ms).
fn create_topics(
    c: &mut TcpStream,
    version: i16,
    names: &[String],
    partitions: i32,
) -> Result<(Vec<i16>, i32)> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let topics = names
        .iter()
        .map(|n| {
            CreatableTopic::default()
                .with_name(TopicName(s(n)))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    let resp = raw::call(c, version, 9, &req)?;
    let codes = resp.topics.iter().map(|t| t.error_code).collect();
    Ok((codes, resp.throttle_time_ms))
}

/// The raw helpers' client id (`raw::encode_request`).
const RAW_CLIENT: &str = "strata-raw-test";

#[test]
fn mutation_and_request_quotas_throttle() -> Result<()> {
    const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    let b = broker()?;
    let mut c = raw::connect(b.addr())?;
    let client = [("client-id", Some(RAW_CLIENT))];
    // 1 partition per second, so a bucket of 3 (three windows of 1 s).
    set_quota(b.addr(), &client, "controller_mutation_rate", Some(1.0))?;
    let names: Vec<String> = (0..3).map(|_| topic_name("quota-mutation")).collect();
    // v7 understands the error: the first topic runs the bucket into debt (5 > 3), the
    // others are refused until it is paid, and the answer says for how long.
    let (codes, throttle) = create_topics(&mut c, 7, &names, 5)?;
    ensure!(
        codes == [0, THROTTLING_QUOTA_EXCEEDED, THROTTLING_QUOTA_EXCEEDED],
        "{codes:?}"
    );
    ensure!(throttle > 1000, "throttle_time_ms {throttle}");
    // v5 does not: its topics are created, and it is throttled instead (the connection was
    // muted meanwhile, so this request waited for the debt above).
    let started = Instant::now();
    let (codes, throttle) = create_topics(&mut c, 5, &names[1..], 1)?;
    ensure!(codes == [0, 0] && throttle > 0, "{codes:?} {throttle}");
    ensure!(
        started.elapsed() >= Duration::from_millis(1000),
        "the muted connection answered at once"
    );
    // A request_percentage so small that any handling time exceeds it.
    set_quota(b.addr(), &client, "request_percentage", Some(0.000_001))?;
    let mut throttled = false;
    for _ in 0..3 {
        let resp = raw::call(
            &mut c,
            12,
            10,
            &MetadataRequest::default().with_topics(None),
        )?;
        throttled |= resp.throttle_time_ms > 0;
    }
    ensure!(
        throttled,
        "Metadata never throttled under request_percentage"
    );
    // ApiVersions is exempt (a client must be able to connect), even on this connection.
    raw::api_versions_call(&mut raw::connect(b.addr())?)?;
    Ok(())
}
