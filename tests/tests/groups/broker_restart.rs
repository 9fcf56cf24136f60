//! Groups across broker restarts: a Stable group stays Stable in its generation with its
//! members and assignments (no rebalance callback fires, no record is lost), a member that
//! never comes back expires after its session timeout, and an Empty group keeps its type
//! and counts its generations on.

use std::net::SocketAddr;

use kafka_protocol::messages::{GroupId, HeartbeatRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::Producer;
use strata_tests::raw;

use super::offsets::committed;
use super::*;

/// Session timeout of the members that must ride out a restart: well above how long a
/// debug broker takes to stop and start again on a loaded 2-core machine, so that only a
/// broker that forgot the group can make them rejoin.
const RIDE_OUT_SESSION_MS: &str = "15000";

/// Session timeout of the member that does not return after the restart.
const GONE_SESSION_MS: &str = "8000";

/// Kafka's ILLEGAL_GENERATION error code.
const ILLEGAL_GENERATION: i16 = 22;

/// A group as DescribeGroups (through librdkafka) shows it.
#[derive(Debug, PartialEq, Eq)]
struct Described {
    state: String,
    protocol_type: String,
    /// (member id, client id), sorted.
    members: Vec<(String, String)>,
}

fn describe_group(bs: &str, group: &str) -> Result<Described> {
    let c = new_consumer(bs)?;
    let list = c.fetch_group_list(Some(group), CALL_TIMEOUT)?;
    let g = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .ok_or_else(|| anyhow!("{group} not described"))?;
    let mut members: Vec<(String, String)> = g
        .members()
        .iter()
        .map(|m| (m.id().to_string(), m.client_id().to_string()))
        .collect();
    members.sort();
    Ok(Described {
        state: g.state().to_string(),
        protocol_type: g.protocol_type().to_string(),
        members,
    })
}

/// A broker of the test's own, a topic of `partitions` partitions and a group name, both
/// named after `name`: (data dir, broker, topic, group).
fn broker_topic_group(
    name: &str,
    partitions: i32,
) -> Result<(tempfile::TempDir, BrokerProcess, String, String)> {
    let (dir, broker) = start_broker()?;
    let topic = topic_name(&format!("groups-{name}"));
    create_topic(&broker.bootstrap(), &topic, partitions)?;
    Ok((dir, broker, topic, topic_name(&format!("g-{name}"))))
}

/// Stops the broker (SIGTERM, which must exit cleanly), starts it again on the same port
/// and data, and describes `group` right away.
fn restart_and_describe(broker: &mut BrokerProcess, group: &str) -> Result<Described> {
    let status = broker.terminate()?;
    ensure!(
        status.success(),
        "broker exited with {status} after SIGTERM"
    );
    broker.restart()?;
    describe_group(&broker.bootstrap(), group)
}

/// The generation `member` of `group` is in, found with Heartbeats (answered NONE only in
/// the member's generation, ILLEGAL_GENERATION otherwise). Such a heartbeat only refreshes
/// the member's session, as its own would.
fn generation_of(addr: SocketAddr, group: &str, member: &str) -> Result<i32> {
    let mut s = raw::connect(addr)?;
    for generation in 0..100 {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_generation_id(generation);
        let r = raw::call(&mut s, 3, generation + 1, &req)?;
        match r.error_code {
            0 => return Ok(generation),
            ILLEGAL_GENERATION => {}
            other => bail!("heartbeat of {member} in {group}: error {other}"),
        }
    }
    bail!("{member} of {group} is in no generation below 100")
}

/// Sends test message `i` to partition `i % partitions` until `stop`; returns how many.
fn produce_until(
    producer: &RecordingProducer,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
) -> Result<u64> {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        produce_test_messages(producer, topic, i..i + 1, partitions, size)?;
        i += 1;
        std::thread::sleep(Duration::from_millis(4));
    }
    Ok(i)
}

/// Three members consume six partitions (auto-committing) while a producer keeps producing;
/// the broker restarts (SIGTERM, same port and data). Nobody sees a rebalance callback, the
/// group is Stable again in the same generation with the same members, commits go on, and
/// every acknowledged record is consumed: offsets per partition contiguous, and duplicates
/// (there should be none without a rebalance) only in the window not committed before the
/// restart.
#[test]
fn a_stable_group_stays_stable_across_a_broker_restart() -> Result<()> {
    const P: i32 = 6;
    let (_dir, mut broker, topic, group) = broker_topic_group("restart", P)?;
    let bs = broker.bootstrap();
    let extra = [
        ("session.timeout.ms", RIDE_OUT_SESSION_MS),
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "200"),
    ];
    let members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| Member::thread(n, member_settings(&bs, &group, n, &extra), &topic))
        .collect::<Result<_>>()?;
    let refs: Vec<&Member> = members.iter().collect();
    wait_split(&refs, P, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;

    let mut cfg = producer_config(&bs);
    // Idempotent: a batch retried across the restart is not written twice.
    cfg.set("enable.idempotence", "true");
    let producer = Arc::new(recording_producer(&cfg)?);
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (producer, topic, stop) = (producer.clone(), topic.clone(), stop.clone());
        std::thread::spawn(move || produce_until(&producer, &topic, P, &stop))
    };
    // Every partition consumed and committed from, before the restart.
    let committed_before = wait_for("commits on every partition", SETTLE_TIMEOUT, || {
        let c = committed(&bs, &group, &topic, P).map_err(|e| e.to_string())?;
        if c.len() == P as usize && c.values().all(|&o| o > 0) {
            Ok(c)
        } else {
            Err(format!("{c:?}"))
        }
    })?;
    let before = describe_group(&bs, &group)?;
    ensure!(before.state == "Stable", "before the restart: {before:?}");
    let generation = generation_of(broker.addr(), &group, &before.members[0].0)?;
    let events_before: Vec<usize> = members.iter().map(|m| m.events().len()).collect();

    let after = restart_and_describe(&mut broker, &group)?;
    ensure!(
        after == before,
        "before the restart: {before:?}, after: {after:?}; broker log:\n{}",
        broker.log_tail(3000)
    );
    for (id, _) in &after.members {
        let g = generation_of(broker.addr(), &group, id)?;
        ensure!(
            g == generation,
            "{id}: generation {g} after, {generation} before"
        );
    }
    // Records keep flowing through the restarted broker, then the producer stops.
    let consumed_so_far: usize = members.iter().map(|m| m.records().len()).sum();
    wait_for("records consumed after the restart", SETTLE_TIMEOUT, || {
        let n: usize = members.iter().map(|m| m.records().len()).sum();
        if n > consumed_so_far + 600 {
            Ok(())
        } else {
            Err(format!("{} new", n - consumed_so_far))
        }
    })?;
    stop.store(true, Ordering::SeqCst);
    let sent = producing
        .join()
        .map_err(|_| anyhow!("producer thread panicked"))??;
    wait_reports(&producer, sent, CONSUME_TIMEOUT)?;
    ensure!(
        producer.context().failed() == 0,
        "{} of {sent} deliveries failed",
        producer.context().failed()
    );
    wait_consumed(&refs, 0..sent, P, CONSUME_TIMEOUT)?;

    for (m, before) in members.iter().zip(&events_before) {
        let events = m.events();
        ensure!(
            events.len() == *before,
            "{} saw rebalance callbacks across the restart: {:?}",
            m.name,
            &events[*before..]
        );
    }
    // Commits of the stored generation are accepted after the restart: they reach the end.
    let ends: Vec<i64> = watermarks(&bs, &topic)?.iter().map(|w| w.1).collect();
    wait_for(
        "commits up to the end of every partition",
        SETTLE_TIMEOUT,
        || {
            let c = committed(&bs, &group, &topic, P).map_err(|e| e.to_string())?;
            let done = (0..P).all(|p| c.get(&p).copied() == Some(ends[p as usize]));
            if done {
                Ok(())
            } else {
                Err(format!("committed {c:?}, ends {ends:?}"))
            }
        },
    )?;
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for m in &members {
        for r in m.records() {
            by_partition.entry(r.partition).or_default().push(r.offset);
        }
    }
    let mut duplicates = 0;
    for (p, offsets) in &mut by_partition {
        offsets.sort_unstable();
        let unique: BTreeSet<i64> = offsets.iter().copied().collect();
        ensure!(
            unique.iter().copied().eq(0..ends[*p as usize]),
            "partition {p}: consumed offsets are not 0..{}",
            ends[*p as usize]
        );
        let floor = committed_before.get(p).copied().unwrap_or(0);
        for w in offsets.windows(2).filter(|w| w[0] == w[1]) {
            duplicates += 1;
            ensure!(
                w[0] >= floor,
                "partition {p}: offset {} consumed twice, though committed ({floor}) before the restart",
                w[0]
            );
        }
    }
    eprintln!("{sent} records, {duplicates} consumed twice, generation {generation} kept");
    for m in members {
        m.stop()?;
    }
    Ok(())
}

/// A member that is gone when the broker comes back (the broker was killed, and so was the
/// member meanwhile) is still in the group after the restart, until its session timeout
/// passes; then the others rebalance and take its partitions.
#[test]
fn a_member_gone_after_a_restart_expires_and_the_others_take_over() -> Result<()> {
    let (_dir, mut broker, topic, group) = broker_topic_group("restart-gone", 6)?;
    let bs = broker.bootstrap();
    let ride_out = [("session.timeout.ms", RIDE_OUT_SESSION_MS)];
    let a = Member::thread("a", member_settings(&bs, &group, "a", &ride_out), &topic)?;
    let b = Member::thread("b", member_settings(&bs, &group, "b", &ride_out), &topic)?;
    // c's session (counted afresh from the restart) only has to outlast one DescribeGroups.
    let short = [("session.timeout.ms", GONE_SESSION_MS)];
    let mut c = Member::child("c", member_settings(&bs, &group, "c", &short), &topic)?;
    wait_split(&[&a, &b, &c], 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    let before = describe_group(&bs, &group)?;

    // A crash of the broker, and of member c while the broker is down.
    broker.kill9()?;
    c.kill9()?;
    broker.restart()?;
    let after = describe_group(&bs, &group)?;
    ensure!(
        after == before,
        "right after the restart: {after:?}; before: {before:?}"
    );
    let bound = Duration::from_millis(GONE_SESSION_MS.parse()?) + TAKEOVER_SLACK;
    wait_split(&[&a, &b], 6, |_| 3, bound).with_context(|| {
        format!(
            "the survivors did not take over; broker log:\n{}",
            broker.log_tail(3000)
        )
    })?;
    let left = describe_group(&bs, &group)?;
    let clients: Vec<&str> = left.members.iter().map(|(_, c)| c.as_str()).collect();
    ensure!(
        left.state == "Stable" && clients == ["a", "b"],
        "after c expired: {left:?}"
    );
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// An Empty group (its member committed and left) is still listed after a restart, Empty
/// and of protocol type "consumer"; a new member resumes at the committed offsets, in a
/// generation after the ones before the restart.
#[test]
fn an_empty_group_keeps_its_type_offsets_and_generations_across_a_restart() -> Result<()> {
    const P: i32 = 3;
    let (_dir, mut broker, topic, group) = broker_topic_group("restart-empty", P)?;
    let bs = broker.bootstrap();
    produce(&bs, &topic, 0..300, P)?;
    let committing = [
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "200"),
    ];
    let a = Member::thread("a", member_settings(&bs, &group, "a", &committing), &topic)?;
    wait_consumed(&[&a], 0..300, P, CONSUME_TIMEOUT)?;
    let first = describe_group(&bs, &group)?;
    let first_generation = generation_of(broker.addr(), &group, &first.members[0].0)?;
    a.stop()?; // commits, then LeaveGroup
    wait_for(
        "the group to become Empty",
        SETTLE_TIMEOUT,
        || match describe_group(&bs, &group) {
            Ok(d) if d.state == "Empty" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    let committed_before = committed(&bs, &group, &topic, P)?;
    ensure!(
        committed_before.values().sum::<i64>() == 300,
        "{committed_before:?}"
    );

    let after = restart_and_describe(&mut broker, &group)?;
    ensure!(
        (after.state.as_str(), after.protocol_type.as_str()) == ("Empty", "consumer")
            && after.members.is_empty(),
        "after the restart: {after:?}"
    );
    produce(&bs, &topic, 300..360, P)?;
    let b = Member::thread("b", member_settings(&bs, &group, "b", &committing), &topic)?;
    wait_split(&[&b], P, |_| P as usize, SETTLE_TIMEOUT)?;
    wait_consumed(&[&b], 300..360, P, CONSUME_TIMEOUT)?;
    let read_again: Vec<Rec> = b
        .records()
        .into_iter()
        .filter(|r| r.offset < committed_before.get(&r.partition).copied().unwrap_or(0))
        .collect();
    ensure!(
        read_again.is_empty(),
        "{} committed records read again",
        read_again.len()
    );
    let rejoined = describe_group(&bs, &group)?;
    let generation = generation_of(broker.addr(), &group, &rejoined.members[0].0)?;
    ensure!(
        generation > first_generation,
        "generation {generation} after the restart, {first_generation} before it"
    );
    b.stop()?;
    Ok(())
}
