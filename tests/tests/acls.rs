//! ACLs end to end: CreateAcls / DescribeAcls / DeleteAcls over the wire (v1-v3, flexible
//! and not), persistence across restarts, and the authorizer in every handler, with the
//! error codes Kafka clients expect.
//!
//! Until SASL lands every connection is `User:ANONYMOUS`, so the tests tell clients apart
//! by host: the "admin" connects from 127.0.0.2 (bound explicitly) and is granted ALL on
//! the cluster and on every topic and group; librdkafka and the raw "client" connect from
//! 127.0.0.1 and get what each test grants.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use rdkafka::TopicPartitionList;
use strata_tests::raw;
use strata_tests::*;

const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const TXN_ID: i8 = 5;
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const DENY: i8 = 2;
const ALLOW: i8 = 3;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const DELETE: i8 = 6;
const ALTER: i8 = 7;
const DESCRIBE: i8 = 8;
const ME: &str = "User:ANONYMOUS";
const CLIENT_HOST: &str = "127.0.0.1";
const ADMIN_HOST: &str = "127.0.0.2";

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const INVALID_REQUEST: i16 = 42;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn acl(kind: i8, name: &str, pattern: i8, host: &str, op: i8, perm: i8) -> AclCreation {
    AclCreation::default()
        .with_resource_type(kind)
        .with_resource_name(s(name))
        .with_resource_pattern_type(pattern)
        .with_principal(s(ME))
        .with_host(s(host))
        .with_operation(op)
        .with_permission_type(perm)
}

/// A filter matching everything; narrowed with `with_*`. (The codec's default for the
/// nullable strings is "", not null.)
fn any_filter() -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_resource_type_filter(ANY)
        .with_pattern_type_filter(ANY)
        .with_operation(ANY)
        .with_permission_type(ANY)
}

fn delete_filter(f: &DescribeAclsRequest) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(f.resource_type_filter)
        .with_resource_name_filter(f.resource_name_filter.clone())
        .with_pattern_type_filter(f.pattern_type_filter)
        .with_principal_filter(f.principal_filter.clone())
        .with_host_filter(f.host_filter.clone())
        .with_operation(f.operation)
        .with_permission_type(f.permission_type)
}

/// A raw connection from `host` (127.0.0.x) to the broker.
fn connect_from(addr: SocketAddr, host: &str) -> Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{host}:0").parse()?)?;
        anyhow::Ok(socket.connect(addr).await?.into_std()?)
    })?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(raw::RAW_TIMEOUT))?;
    stream.set_write_timeout(Some(raw::RAW_TIMEOUT))?;
    Ok(stream)
}

struct Conn {
    stream: TcpStream,
    next: i32,
}

impl Conn {
    fn from(addr: SocketAddr, host: &str) -> Result<Conn> {
        Ok(Conn {
            stream: connect_from(addr, host)?,
            next: 1,
        })
    }

    fn call<R: kafka_protocol::protocol::Request>(
        &mut self,
        v: i16,
        req: &R,
    ) -> Result<R::Response> {
        self.next += 1;
        raw::call(&mut self.stream, v, self.next, req)
    }

    fn create_acls(&mut self, v: i16, acls: Vec<AclCreation>) -> Result<Vec<i16>> {
        let resp = self.call(v, &CreateAclsRequest::default().with_creations(acls))?;
        Ok(resp.results.iter().map(|r| r.error_code).collect())
    }

    /// (resource type, name, pattern type, host, operation, permission) of every match.
    fn describe(&mut self, v: i16, f: &DescribeAclsRequest) -> Result<(i16, Vec<Described>)> {
        let resp = self.call(v, f)?;
        let mut out = Vec::new();
        for r in &resp.resources {
            for a in &r.acls {
                out.push((
                    r.resource_type,
                    r.resource_name.to_string(),
                    r.pattern_type,
                    a.host.to_string(),
                    a.operation,
                    a.permission_type,
                ));
            }
        }
        out.sort();
        Ok((resp.error_code, out))
    }
}

type Described = (i8, String, i8, String, i8, i8);

fn described(a: &AclCreation) -> Described {
    (
        a.resource_type,
        a.resource_name.to_string(),
        a.resource_pattern_type,
        a.host.to_string(),
        a.operation,
        a.permission_type,
    )
}

/// The admin's grants: everything, from 127.0.0.2 only.
fn admin_grants() -> Vec<AclCreation> {
    vec![
        acl(CLUSTER, "kafka-cluster", LITERAL, ADMIN_HOST, ALL, ALLOW),
        acl(TOPIC, "*", LITERAL, ADMIN_HOST, ALL, ALLOW),
        acl(GROUP, "*", LITERAL, ADMIN_HOST, ALL, ALLOW),
    ]
}

fn start(configure: impl FnOnce(&mut strata_broker::Config)) -> Result<(InProcessBroker, Conn)> {
    let broker = InProcessBroker::start_temp(configure)?;
    let admin = Conn::from(broker.addr(), ADMIN_HOST)?;
    Ok((broker, admin))
}

fn create_topic_raw(c: &mut Conn, name: &str) -> Result<i16> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
    Ok(c.call(7, &req)?.topics[0].error_code)
}

#[test]
fn acls_round_trip_validate_filter_and_survive_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = test_config(&dir.path().join("data"))?;
    let broker = InProcessBroker::start(config.clone())?;
    let mut admin = Conn::from(broker.addr(), ADMIN_HOST)?;
    let good = [
        acl(TOPIC, "orders", LITERAL, CLIENT_HOST, READ, ALLOW),
        acl(TOPIC, "pay", PREFIXED, "*", WRITE, ALLOW),
        acl(TOPIC, "payroll", PREFIXED, CLIENT_HOST, ALL, DENY),
        acl(GROUP, "g1", LITERAL, "*", READ, ALLOW),
        acl(CLUSTER, "kafka-cluster", LITERAL, ADMIN_HOST, ALL, ALLOW),
        acl(TXN_ID, "tx", LITERAL, "*", WRITE, ALLOW),
        acl(TOPIC, "v6", LITERAL, "::1", DESCRIBE, ALLOW),
    ];
    // Flexible v3, then v1 for one more: both decode.
    ensure!(admin.create_acls(3, good[..6].to_vec())? == vec![0; 6]);
    ensure!(admin.create_acls(1, good[6..].to_vec())? == vec![0]);
    let bad = vec![
        acl(0, "x", LITERAL, "*", READ, ALLOW),
        acl(ANY, "x", LITERAL, "*", READ, ALLOW),
        acl(TOPIC, "x", MATCH, "*", READ, ALLOW),
        acl(TOPIC, "x", LITERAL, "*", ANY, ALLOW),
        acl(TOPIC, "x", LITERAL, "*", 42, ALLOW),
        acl(TOPIC, "x", LITERAL, "*", READ, ANY),
        acl(TOPIC, "x", LITERAL, "not-an-ip", READ, ALLOW),
        acl(TOPIC, "x", LITERAL, "*", READ, ALLOW).with_principal(s("alice")),
        acl(TOPIC, "", LITERAL, "*", READ, ALLOW),
        acl(CLUSTER, "other", LITERAL, "*", READ, ALLOW),
    ];
    let n = bad.len();
    ensure!(admin.create_acls(2, bad)? == vec![INVALID_REQUEST; n]);
    // Creating an existing binding again is fine and keeps one copy.
    ensure!(admin.create_acls(2, good[..1].to_vec())? == vec![0]);

    let mut all: Vec<Described> = good.iter().map(described).collect();
    all.sort();
    for v in [3, 2, 1] {
        let (err, got) = admin.describe(v, &any_filter())?;
        ensure!(err == 0 && got == all, "v{v}: {err} {got:?}");
    }
    // MATCH: what applies to topic "payroll-2026": both prefixes, not the literal "orders".
    let (_, got) = admin.describe(
        2,
        &any_filter()
            .with_resource_type_filter(TOPIC)
            .with_pattern_type_filter(MATCH)
            .with_resource_name_filter(Some(s("payroll-2026"))),
    )?;
    ensure!(
        got.iter().map(|d| d.1.as_str()).collect::<Vec<_>>() == ["pay", "payroll"],
        "{got:?}"
    );
    // PREFIXED pattern filter, and a principal/host/permission filter.
    let (_, got) = admin.describe(3, &any_filter().with_pattern_type_filter(PREFIXED))?;
    ensure!(got.len() == 2, "{got:?}");
    let (_, got) = admin.describe(
        3,
        &any_filter()
            .with_principal_filter(Some(s(ME)))
            .with_host_filter(Some(s(CLIENT_HOST)))
            .with_permission_type(DENY),
    )?;
    ensure!(got.len() == 1 && got[0].1 == "payroll", "{got:?}");
    let (_, got) = admin.describe(3, &any_filter().with_principal_filter(Some(s("User:bob"))))?;
    ensure!(got.is_empty(), "{got:?}");
    // Invalid filters.
    let (err, _) = admin.describe(3, &any_filter().with_resource_type_filter(0))?;
    ensure!(err == INVALID_REQUEST, "{err}");
    let (err, _) = admin.describe(3, &any_filter().with_operation(0))?;
    ensure!(err == INVALID_REQUEST, "{err}");
    broker.shutdown()?;

    // A restart serves the same ACLs, and enforces them.
    let broker = InProcessBroker::start(config.clone())?;
    let mut admin = Conn::from(broker.addr(), ADMIN_HOST)?;
    let (_, got) = admin.describe(3, &any_filter())?;
    ensure!(got == all, "after restart: {got:?}");
    let mut client = Conn::from(broker.addr(), CLIENT_HOST)?;
    let (err, _) = client.describe(3, &any_filter())?;
    ensure!(
        err == CLUSTER_AUTHORIZATION_FAILED,
        "client describe: {err}"
    );
    ensure!(client.create_acls(3, good[..1].to_vec())? == vec![CLUSTER_AUTHORIZATION_FAILED]);

    // Delete: prefixed topic ACLs (one filter), plus an invalid filter, at v2 and v1.
    let resp = admin.call(
        2,
        &DeleteAclsRequest::default().with_filters(vec![
            delete_filter(
                &any_filter()
                    .with_resource_type_filter(TOPIC)
                    .with_pattern_type_filter(PREFIXED),
            ),
            delete_filter(&any_filter().with_pattern_type_filter(9)),
        ]),
    )?;
    ensure!(resp.filter_results[0].error_code == 0);
    ensure!(resp.filter_results[0].matching_acls.len() == 2);
    ensure!(resp.filter_results[1].error_code == INVALID_REQUEST);
    let resp = admin.call(
        1,
        &DeleteAclsRequest::default().with_filters(vec![delete_filter(
            &any_filter().with_resource_name_filter(Some(s("orders"))),
        )]),
    )?;
    ensure!(resp.filter_results[0].matching_acls.len() == 1);
    let resp = client.call(
        3,
        &DeleteAclsRequest::default().with_filters(vec![delete_filter(&any_filter())]),
    )?;
    ensure!(resp.filter_results[0].error_code == CLUSTER_AUTHORIZATION_FAILED);
    let (_, got) = admin.describe(3, &any_filter())?;
    ensure!(got.len() == 4, "{got:?}");
    broker.shutdown()?;
    let broker = InProcessBroker::start(config)?;
    let mut admin = Conn::from(broker.addr(), ADMIN_HOST)?;
    let (_, got) = admin.describe(3, &any_filter())?;
    ensure!(got.len() == 4, "deletions survive restart: {got:?}");
    broker.shutdown()
}

/// Every API, from a client denied it, answers with Kafka's error code; an allowed
/// client on the same broker is served.
#[test]
fn denied_operations_get_kafkas_error_codes() -> Result<()> {
    let (broker, mut admin) = start(|_| {})?;
    let addr = broker.addr();
    let topic = topic_name("acl-deny");
    ensure!(admin.create_acls(3, admin_grants())? == vec![0; 3]);
    ensure!(create_topic_raw(&mut admin, &topic)? == 0);
    // The client may do nothing on this topic and this group (an ACL exists for each, for
    // someone else), nothing on the cluster.
    let mut client = Conn::from(addr, CLIENT_HOST)?;

    let p = raw::produce(
        &mut client.stream,
        9,
        50,
        &topic,
        0,
        raw::simple_batch("x", 1),
    )?;
    ensure!(
        p.error_code == TOPIC_AUTHORIZATION_FAILED,
        "produce {}",
        p.error_code
    );
    // A missing topic the client may not touch is not revealed as missing either.
    let p = raw::produce(
        &mut client.stream,
        9,
        51,
        "acl-nowhere",
        0,
        raw::simple_batch("x", 1),
    )?;
    ensure!(
        p.error_code == TOPIC_AUTHORIZATION_FAILED,
        "produce missing {}",
        p.error_code
    );
    let resp = client.call(12, &raw::fetch_request(&topic, 0, 0, 0, 1))?;
    ensure!(resp.responses[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED);

    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let lo = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(s(&topic)))
        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]);
    ensure!(client.call(7, &lo)?.topics[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED);

    // Metadata: named → 29; all topics → the topic is left out; auto-create → 29.
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let md = |names: Option<Vec<&str>>| {
        MetadataRequest::default()
            .with_topics(names.map(|n| {
                n.into_iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(true)
    };
    let r = client.call(12, &md(Some(vec![&topic, "acl-auto-new"])))?;
    ensure!(
        r.topics
            .iter()
            .all(|t| t.error_code == TOPIC_AUTHORIZATION_FAILED),
        "{r:?}"
    );
    let r = client.call(12, &md(None))?;
    ensure!(
        r.topics.is_empty(),
        "unauthorized topics listed: {:?}",
        r.topics
    );
    let r = admin.call(12, &md(None))?;
    ensure!(r.topics.len() == 1, "the admin sees the topic");

    // Topic admin.
    ensure!(create_topic_raw(&mut client, "acl-new")? == TOPIC_AUTHORIZATION_FAILED);
    let dt = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s(&topic))]);
    ensure!(client.call(5, &dt)?.responses[0].error_code == TOPIC_AUTHORIZATION_FAILED);
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    let cp = CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
        .with_name(TopicName(s(&topic)))
        .with_count(3)]);
    ensure!(client.call(3, &cp)?.results[0].error_code == TOPIC_AUTHORIZATION_FAILED);
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let dr = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
        .with_name(TopicName(s(&topic)))
        .with_partitions(vec![DeleteRecordsPartition::default().with_offset(0)])]);
    ensure!(client.call(2, &dr)?.topics[0].partitions[0].error_code == TOPIC_AUTHORIZATION_FAILED);
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let dc = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(&topic)),
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(s("1")),
    ]);
    let r = client.call(4, &dc)?;
    ensure!(r.results[0].error_code == TOPIC_AUTHORIZATION_FAILED);
    ensure!(r.results[1].error_code == CLUSTER_AUTHORIZATION_FAILED);
    let r = admin.call(4, &dc)?;
    ensure!(r.results.iter().all(|r| r.error_code == 0));
    let (c, _) = {
        // alter_topic_configs connects from 127.0.0.1: the client.
        raw::alter_topic_configs(addr, &topic, &[("retention.ms", "1000")], false)?
    };
    ensure!(c == TOPIC_AUTHORIZATION_FAILED, "alter configs {c}");

    // Cluster.
    let ip = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    ensure!(client.call(4, &ip)?.error_code == CLUSTER_AUTHORIZATION_FAILED);
    ensure!(admin.call(4, &ip)?.error_code == 0);
    // DescribeCluster answers everyone (as Kafka does); only those who may DESCRIBE the
    // cluster learn its authorized operations.
    let dcl = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let r = client.call(1, &dcl)?;
    ensure!(
        r.error_code == 0 && r.brokers.len() == 1 && r.cluster_authorized_operations == 0,
        "{r:?}"
    );
    let r = admin.call(1, &dcl)?;
    ensure!(
        r.error_code == 0 && r.cluster_authorized_operations == 8096,
        "{r:?}"
    );

    // Groups: the admin commits an offset for group g; the client may not touch it.
    let group = "acl-group";
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(&topic)))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_offset(0)
            ])]);
    ensure!(admin.call(8, &commit)?.topics[0].partitions[0].error_code == 0);
    ensure!(
        client.call(8, &commit)?.topics[0].partitions[0].error_code == GROUP_AUTHORIZATION_FAILED
    );
    let fc = FindCoordinatorRequest::default().with_key(s(group));
    ensure!(client.call(3, &fc)?.error_code == GROUP_AUTHORIZATION_FAILED);
    ensure!(admin.call(3, &fc)?.error_code == 0);
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(s("range"))
        ]);
    ensure!(client.call(5, &join)?.error_code == GROUP_AUTHORIZATION_FAILED);
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s("m"));
    ensure!(client.call(3, &hb)?.error_code == GROUP_AUTHORIZATION_FAILED);
    let sg = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s("m"));
    ensure!(client.call(3, &sg)?.error_code == GROUP_AUTHORIZATION_FAILED);
    let lg = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s("m"));
    ensure!(client.call(1, &lg)?.error_code == GROUP_AUTHORIZATION_FAILED);
    let of = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(None);
    ensure!(client.call(7, &of)?.error_code == GROUP_AUTHORIZATION_FAILED);
    // v1 has no group-level error: the refusal is on every partition asked for.
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let of1 = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(&topic)))
            .with_partition_indexes(vec![0, 1])]));
    let r = client.call(1, &of1)?;
    ensure!(
        r.topics[0].partitions.len() == 2
            && r.topics[0]
                .partitions
                .iter()
                .all(|p| p.error_code == GROUP_AUTHORIZATION_FAILED && p.committed_offset == -1),
        "{r:?}"
    );
    ensure!(admin.call(1, &of1)?.topics[0].partitions[0].error_code == 0);
    let r = admin.call(7, &of)?;
    ensure!(r.error_code == 0 && r.topics.len() == 1, "{r:?}");
    let dg = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    ensure!(client.call(5, &dg)?.groups[0].error_code == GROUP_AUTHORIZATION_FAILED);
    let r = client.call(4, &ListGroupsRequest::default())?;
    ensure!(r.groups.is_empty(), "groups listed: {:?}", r.groups);
    let r = admin.call(4, &ListGroupsRequest::default())?;
    ensure!(r.groups.iter().any(|g| g.group_id.as_str() == group));
    let od = OffsetDeleteRequest::default().with_group_id(GroupId(s(group)));
    ensure!(client.call(0, &od)?.error_code == GROUP_AUTHORIZATION_FAILED);
    let del = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
    ensure!(client.call(2, &del)?.results[0].error_code == GROUP_AUTHORIZATION_FAILED);
    ensure!(admin.call(2, &del)?.results[0].error_code == 0);
    broker.shutdown()
}

/// librdkafka: a producer denied WRITE gets TopicAuthorizationFailed while a READ grant
/// still lets the consumer in; a deny on READ then stops the consumer; a group READ deny
/// stops a subscribing consumer.
#[test]
fn librdkafka_sees_denied_produce_fetch_and_group() -> Result<()> {
    let (broker, mut admin) = start(|_| {})?;
    let bs = broker.bootstrap();
    let topic = topic_name("acl-rdk");
    let mut grants = admin_grants();
    grants.push(acl(TOPIC, &topic, LITERAL, "*", ALL, ALLOW));
    grants.push(acl(TOPIC, &topic, LITERAL, CLIENT_HOST, WRITE, DENY));
    // The assign-only consumer's group (librdkafka looks its coordinator up).
    grants.push(acl(GROUP, "strata-tests", LITERAL, CLIENT_HOST, ALL, ALLOW));
    ensure!(admin.create_acls(3, grants)?.iter().all(|&c| c == 0));
    ensure!(create_topic_raw(&mut admin, &topic)? == 0);
    // The admin writes three records.
    for i in 0..3 {
        let p = raw::produce(
            &mut admin.stream,
            9,
            100 + i,
            &topic,
            0,
            raw::simple_batch("a", 1),
        )?;
        ensure!(p.error_code == 0, "admin produce {}", p.error_code);
    }

    let mut cfg = producer_config(&bs);
    cfg.set("message.timeout.ms", "15000");
    let producer = recording_producer(&cfg)?;
    produce_test_messages(&producer, &topic, 0..1, 1, |_| 10)?;
    producer.flush(Duration::from_secs(30))?;
    wait_reports(&producer, 1, Duration::from_secs(30))?;
    let reports = producer.context().take();
    ensure!(
        reports[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("uthoriz")),
        "{reports:?}"
    );

    // READ is still allowed: the consumer reads the admin's records.
    let read_all = || -> Result<usize> {
        let consumer = new_consumer(&bs)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let mut n = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while n < 3 && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(_)) => n += 1,
                Some(Err(e)) => anyhow::bail!("consume: {e}"),
                None => {}
            }
        }
        Ok(n)
    };
    ensure!(read_all()? == 3);
    ensure!(
        admin.create_acls(
            3,
            vec![acl(TOPIC, &topic, LITERAL, CLIENT_HOST, READ, DENY)]
        )? == vec![0]
    );
    let err = read_all().err().context("a denied consumer read")?;
    ensure!(
        err.to_string().contains("uthoriz"),
        "consume error is not about authorization: {err}"
    );

    // Group: READ on the group denied; a subscribing consumer gets GroupAuthorizationFailed.
    let group = format!("acl-rdk-{topic}");
    // DESCRIBE allowed (FindCoordinator succeeds), READ denied (JoinGroup fails).
    let rules = vec![
        acl(GROUP, &group, LITERAL, CLIENT_HOST, DESCRIBE, ALLOW),
        acl(GROUP, &group, LITERAL, CLIENT_HOST, READ, DENY),
    ];
    ensure!(admin.create_acls(3, rules)? == vec![0, 0]);
    let mut ccfg = consumer_config(&bs);
    ccfg.set("group.id", &group);
    let consumer: rdkafka::consumer::BaseConsumer = ccfg.create()?;
    consumer.subscribe(&[&topic])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while seen.is_none() && std::time::Instant::now() < deadline {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            seen = Some(e);
        }
    }
    let e = seen.context("no error for a denied group")?;
    ensure!(
        e.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "{e}"
    );
    broker.shutdown()
}

/// Prefixed grants with `allow_everyone_if_no_acl_found=false`; what no ACL grants is
/// refused, and a super user bypasses everything.
#[test]
fn prefixed_grants_default_deny_and_super_users() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = test_config(&dir.path().join("data"))?;
    let broker = InProcessBroker::start(config.clone())?;
    let mut admin = Conn::from(broker.addr(), ADMIN_HOST)?;
    let mut grants = admin_grants();
    grants.push(acl(TOPIC, "pay", PREFIXED, CLIENT_HOST, WRITE, ALLOW));
    grants.push(acl(TOPIC, "pay", PREFIXED, CLIENT_HOST, CREATE, ALLOW));
    ensure!(admin.create_acls(3, grants)?.iter().all(|&c| c == 0));
    let other = topic_name("other");
    ensure!(create_topic_raw(&mut admin, &other)? == 0);
    broker.shutdown()?;

    let mut closed = config.clone();
    closed.allow_everyone_if_no_acl_found = false;
    let broker = InProcessBroker::start(closed.clone())?;
    let mut client = Conn::from(broker.addr(), CLIENT_HOST)?;
    let pay = topic_name("payments");
    // CREATE under the prefix: creatable by the client; produce allowed under the prefix.
    ensure!(create_topic_raw(&mut client, &pay)? == 0);
    ensure!(
        raw::produce(
            &mut client.stream,
            9,
            60,
            &pay,
            0,
            raw::simple_batch("p", 2)
        )?
        .error_code
            == 0
    );
    // Elsewhere: nothing grants the client anything.
    ensure!(create_topic_raw(&mut client, "elsewhere")? == TOPIC_AUTHORIZATION_FAILED);
    let p = raw::produce(
        &mut client.stream,
        9,
        61,
        &other,
        0,
        raw::simple_batch("o", 1),
    )?;
    ensure!(
        p.error_code == TOPIC_AUTHORIZATION_FAILED,
        "{}",
        p.error_code
    );
    // WRITE implies DESCRIBE: Metadata lists the payments topic only.
    let r = client.call(12, &MetadataRequest::default().with_topics(None))?;
    let names: Vec<String> = r
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    ensure!(names == vec![pay.clone()], "{names:?}");
    // Idempotent producers: WRITE on some topic is enough for InitProducerId.
    let ip = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    ensure!(client.call(4, &ip)?.error_code == 0);
    // librdkafka (idempotent) produces under the prefix.
    let mut cfg = producer_config(&broker.bootstrap());
    cfg.set("enable.idempotence", "true");
    let producer = recording_producer(&cfg)?;
    produce_and_wait(&producer, &pay, 0..5, 1, |_| 10)?;
    // A group nobody granted: refused.
    let fc = FindCoordinatorRequest::default().with_key(s("g"));
    ensure!(client.call(3, &fc)?.error_code == GROUP_AUTHORIZATION_FAILED);
    broker.shutdown()?;

    // Super user: everything, despite a DENY ALL.
    let mut root = closed;
    root.super_users = format!("User:admin;{ME}");
    let broker = InProcessBroker::start(root)?;
    let mut client = Conn::from(broker.addr(), CLIENT_HOST)?;
    ensure!(client.create_acls(3, vec![acl(TOPIC, &other, LITERAL, "*", ALL, DENY)])? == vec![0]);
    let p = raw::produce(
        &mut client.stream,
        9,
        62,
        &other,
        0,
        raw::simple_batch("o", 1),
    )?;
    ensure!(p.error_code == 0, "super user produce {}", p.error_code);
    ensure!(create_topic_raw(&mut client, "root-made")? == 0);
    broker.shutdown()
}

/// With the default off and no ACLs at all, nothing is allowed (not even managing ACLs).
#[test]
fn no_acls_and_default_deny_refuses_everything() -> Result<()> {
    let broker = InProcessBroker::start_temp(|c| c.allow_everyone_if_no_acl_found = false)?;
    let mut c = Conn::from(broker.addr(), CLIENT_HOST)?;
    ensure!(create_topic_raw(&mut c, "t")? == TOPIC_AUTHORIZATION_FAILED);
    let p = raw::produce(&mut c.stream, 9, 70, "t", 0, raw::simple_batch("t", 1))?;
    ensure!(p.error_code == TOPIC_AUTHORIZATION_FAILED);
    ensure!(c.create_acls(3, admin_grants())? == vec![CLUSTER_AUTHORIZATION_FAILED; 3]);
    ensure!(c.describe(3, &any_filter())?.0 == CLUSTER_AUTHORIZATION_FAILED);
    let ip = InitProducerIdRequest::default().with_transactional_id(None);
    ensure!(c.call(4, &ip)?.error_code == CLUSTER_AUTHORIZATION_FAILED);
    let fc = FindCoordinatorRequest::default().with_key(s("g"));
    ensure!(c.call(3, &fc)?.error_code == GROUP_AUTHORIZATION_FAILED);
    broker.shutdown()
}

/// Authorized-operations fields follow the ACLs.
#[test]
fn authorized_operations_reflect_acls() -> Result<()> {
    let (broker, mut admin) = start(|_| {})?;
    let topic = topic_name("acl-ops");
    let mut grants = admin_grants();
    grants.push(acl(TOPIC, &topic, LITERAL, CLIENT_HOST, READ, ALLOW));
    grants.push(acl(GROUP, "ops-g", LITERAL, CLIENT_HOST, DESCRIBE, ALLOW));
    grants.push(acl(GROUP, "ops-g", LITERAL, CLIENT_HOST, DELETE, ALLOW));
    ensure!(admin.create_acls(3, grants)?.iter().all(|&c| c == 0));
    ensure!(create_topic_raw(&mut admin, &topic)? == 0);
    let mut client = Conn::from(broker.addr(), CLIENT_HOST)?;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s(&topic))))
        ]))
        .with_include_topic_authorized_operations(true)
        .with_include_cluster_authorized_operations(true);
    let r = client.call(10, &md)?;
    ensure!(r.topics[0].error_code == 0);
    // READ, and DESCRIBE which READ implies.
    ensure!(
        r.topics[0].topic_authorized_operations == (1 << READ) | (1 << DESCRIBE),
        "{:b}",
        r.topics[0].topic_authorized_operations
    );
    ensure!(
        r.cluster_authorized_operations == 0,
        "{:b}",
        r.cluster_authorized_operations
    );
    let r = admin.call(10, &md)?;
    ensure!(r.topics[0].topic_authorized_operations == 3576);
    ensure!(r.cluster_authorized_operations == 8096);
    let dg = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(s("ops-g"))])
        .with_include_authorized_operations(true);
    let r = client.call(5, &dg)?;
    ensure!(r.groups[0].error_code == 0);
    ensure!(
        r.groups[0].authorized_operations == (1 << DESCRIBE) | (1 << DELETE),
        "{:b}",
        r.groups[0].authorized_operations
    );
    let _ = (ALTER, CREATE);
    broker.shutdown()
}

/// `max_acls` caps how many bindings the broker keeps: a creation that would go beyond it is
/// refused with POLICY_VIOLATION (and nothing of it stored), storing a binding it holds
/// already is fine, and deleting makes room.
#[test]
fn the_number_of_acls_is_capped() -> Result<()> {
    const POLICY_VIOLATION: i16 = 44;
    let (broker, mut admin) = start(|c| c.max_acls = 3)?;
    let grant = |name: &str| acl(TOPIC, name, LITERAL, "*", READ, ALLOW);
    ensure!(admin.create_acls(3, vec![grant("a"), grant("b"), grant("c")])? == vec![0; 3]);
    ensure!(
        admin.create_acls(3, vec![grant("a")])? == vec![0],
        "held already"
    );
    ensure!(admin.create_acls(3, vec![grant("d")])? == vec![POLICY_VIOLATION]);
    // One over the cap and one invalid: each refused for its own reason.
    let invalid = acl(TOPIC, "e", ANY, "*", READ, ALLOW);
    ensure!(
        admin.create_acls(3, vec![grant("d"), invalid])? == vec![POLICY_VIOLATION, INVALID_REQUEST]
    );
    let (_, all) = admin.describe(3, &any_filter())?;
    ensure!(all.len() == 3, "{all:?}");
    let del = DeleteAclsRequest::default().with_filters(vec![delete_filter(
        &any_filter().with_resource_name_filter(Some(s("a"))),
    )]);
    ensure!(admin.call(3, &del)?.filter_results[0].error_code == 0);
    ensure!(admin.create_acls(3, vec![grant("d")])? == vec![0]);
    broker.shutdown()
}
