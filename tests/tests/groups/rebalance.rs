//! Partitions split among members, moving after a crash, and groups fanning out.

use super::*;

// ------------------------------------------------------------------ tests

/// Three members split six partitions two each; one crashes (SIGKILL, no LeaveGroup); the
/// two survivors own all six within the session timeout and consume from all of them.
#[test]
fn crashed_member_partitions_move_to_survivors_within_session_timeout() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-crash");
    let group = topic_name("g-crash");
    create_topic(&bs, &topic, 6)?;

    let a = Member::thread("a", member_settings(&bs, &group, "a", &[]), &topic)?;
    let b = Member::thread("b", member_settings(&bs, &group, "b", &[]), &topic)?;
    let mut c = Member::child("c", member_settings(&bs, &group, "c", &[]), &topic)?;
    let split = wait_split(&[&a, &b, &c], 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    eprintln!("split: a={:?} b={:?} c={:?}", split[0], split[1], split[2]);

    // Each member consumes exactly its own partitions.
    produce(&bs, &topic, 0..600, 6)?;
    wait_consumed(&[&a, &b, &c], 0..600, 6, CONSUME_TIMEOUT)?;
    for (m, own) in [&a, &b, &c].iter().zip(&split) {
        let from: BTreeSet<i32> = m.records().iter().map(|r| r.partition).collect();
        ensure!(
            from == *own,
            "{} consumed from partitions {from:?}, but was assigned {own:?}",
            m.name
        );
    }

    let killed_at = Instant::now();
    c.kill9()?;
    let bound = Duration::from_millis(SESSION_MS) + TAKEOVER_SLACK;
    wait_split(&[&a, &b], 6, |_| 3, bound).with_context(|| {
        format!(
            "survivors did not take over; broker log:\n{}",
            broker.log_tail(3000)
        )
    })?;
    eprintln!(
        "survivors own all partitions {:?} after the crash: a={:?} b={:?}",
        killed_at.elapsed(),
        a.assignment(),
        b.assignment()
    );

    // The survivors consume new records from every partition, the dead member's included.
    produce(&bs, &topic, 600..1200, 6)?;
    wait_consumed(&[&a, &b], 600..1200, 6, CONSUME_TIMEOUT)?;
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// With cooperative-sticky, a crash moves only the dead member's partitions: the survivors
/// revoke nothing and keep what they had.
#[test]
fn cooperative_sticky_survivors_keep_their_partitions_after_a_crash() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-coop");
    let group = topic_name("g-coop");
    create_topic(&bs, &topic, 6)?;
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];

    let a = Member::thread("a", member_settings(&bs, &group, "a", &coop), &topic)?;
    let b = Member::thread("b", member_settings(&bs, &group, "b", &coop), &topic)?;
    let mut c = Member::child("c", member_settings(&bs, &group, "c", &coop), &topic)?;
    let split = wait_split(&[&a, &b, &c], 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    let (events_a, events_b) = (a.events().len(), b.events().len());

    c.kill9()?;
    let bound = Duration::from_millis(SESSION_MS) + TAKEOVER_SLACK;
    let after = wait_split(&[&a, &b], 6, |_| 3, bound).with_context(|| {
        format!(
            "survivors did not take over; broker log:\n{}",
            broker.log_tail(3000)
        )
    })?;
    for (m, (before, now, seen)) in [&a, &b].iter().zip([
        (&split[0], &after[0], events_a),
        (&split[1], &after[1], events_b),
    ]) {
        ensure!(
            now.is_superset(before),
            "{} had {before:?} before the crash and {now:?} after",
            m.name
        );
        let revoked: Vec<Event> = m.events()[seen..]
            .iter()
            .filter(|e| matches!(e, Event::Revoke(_) | Event::Error(_)))
            .cloned()
            .collect();
        ensure!(
            revoked.is_empty(),
            "{} saw {revoked:?} after the crash (events: {:?})",
            m.name,
            m.events()
        );
    }

    // And they read the dead member's partitions.
    produce(&bs, &topic, 0..600, 6)?;
    wait_consumed(&[&a, &b], 0..600, 6, CONSUME_TIMEOUT)?;
    a.stop()?;
    b.stop()?;
    Ok(())
}

/// Two groups on one topic each receive every record exactly once: group one has two
/// members that split the topic, group two a single member.
#[test]
fn two_groups_each_receive_every_record() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-fanout");
    let (g1, g2) = (topic_name("g-fan1"), topic_name("g-fan2"));
    const P: i32 = 4;
    const N: u64 = 4000;
    create_topic(&bs, &topic, P)?;

    let a = Member::thread("g1-a", member_settings(&bs, &g1, "g1-a", &[]), &topic)?;
    let b = Member::thread("g1-b", member_settings(&bs, &g1, "g1-b", &[]), &topic)?;
    let c = Member::thread("g2-c", member_settings(&bs, &g2, "g2-c", &[]), &topic)?;
    // Settle first: a rebalance in the middle of consumption would legitimately re-read
    // uncommitted records.
    wait_split(&[&a, &b], P, |_| 2, SETTLE_TIMEOUT)?;
    wait_split(&[&c], P, |_| P as usize, SETTLE_TIMEOUT)?;

    produce(&bs, &topic, 0..N, P)?;
    wait_consumed(&[&a, &b], 0..N, P, CONSUME_TIMEOUT)?;
    wait_consumed(&[&c], 0..N, P, CONSUME_TIMEOUT)?;
    // Then one more record per partition: a member reads each partition in order, so any
    // duplicate of the first N comes before these last ones (no waiting "for a moment").
    let all = 0..N + P as u64;
    produce(&bs, &topic, N..all.end, P)?;
    wait_consumed(&[&a, &b], all.clone(), P, CONSUME_TIMEOUT)?;
    wait_consumed(&[&c], all.clone(), P, CONSUME_TIMEOUT)?;

    let by_partition = |members: &[&Member]| {
        let mut map: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
        for m in members {
            for r in m.records() {
                map.entry(r.partition).or_default().push(r);
            }
        }
        map
    };
    verify_test_messages(&by_partition(&[&a, &b]), all.clone(), P, size).context("group one")?;
    verify_test_messages(&by_partition(&[&c]), all, P, size).context("group two")?;
    for m in [a, b, c] {
        m.stop()?;
    }
    Ok(())
}
