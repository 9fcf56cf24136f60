//! Groups stored and restored, as across a broker restart, and stored records that are
//! damaged: refused (or clamped), never trusted into a panic.

use super::super::tests::{
    args, dynamic_and_static, join, joined_alone, member_id, settings, sync, SECOND,
};
use super::*;

fn restore(stored: GroupMetadata, now: Instant) -> Result<Group, String> {
    Group::restore("g".into(), settings(), stored, now)
}

#[test]
fn the_leaders_sync_answers_wait_until_released() {
    let t0 = Instant::now();
    let (mut g, a) = joined_alone(t0);
    let before = g.revision();
    let (tx, mut rx) = oneshot::channel();
    let leader_sync = SyncArgs {
        member_id: a.clone(),
        instance_id: None,
        generation: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(a.clone(), Bytes::from_static(b"A"))],
    };
    g.sync(leader_sync, tx, t0 + SECOND);
    assert_eq!(g.state, State::Stable);
    assert!(
        g.revision() > before,
        "a completed generation must be stored"
    );
    assert!(rx.try_recv().is_err(), "held until stored");
    g.release_answers();
    assert_eq!(rx.try_recv().unwrap().assignment, Bytes::from_static(b"A"));
}

#[test]
fn a_restarted_static_members_new_id_is_answered_once_stored() {
    let t0 = Instant::now();
    let (mut g, _, old) = dynamic_and_static(t0);
    let before = g.revision();
    let (tx, mut rx) = oneshot::channel();
    g.join(args("", Some("i1")), tx, t0 + SECOND);
    assert_eq!(g.state, State::Stable, "no rebalance");
    assert!(g.revision() > before, "the replacement must be stored");
    assert!(
        g.snapshot().members.iter().all(|m| m.member_id != old),
        "stored under its new id"
    );
    assert!(rx.try_recv().is_err(), "held until stored");
    g.release_answers();
    let r = rx.try_recv().unwrap();
    assert_eq!((r.error_code, r.generation_id), (code::NONE, 1));
    assert_ne!(r.member_id.as_str(), old);
}

#[test]
fn a_stable_group_comes_back_stable_in_its_generation() {
    let t0 = Instant::now();
    let (g, a, s) = dynamic_and_static(t0);
    let stored = g.snapshot();
    assert!(!stored.rebalance_pending);
    assert_eq!((stored.generation, stored.leader.as_str()), (1, a.as_str()));
    // Restored long after every session would have lapsed: sessions start afresh.
    let t1 = t0 + 1000 * SECOND;
    let mut back = restore(stored.clone(), t1).unwrap();
    assert_eq!(back.snapshot(), stored, "nothing lost or changed");
    assert_eq!((back.state, back.generation), (State::Stable, 1));
    assert_eq!(back.next_deadline(), Some(t1 + 10 * SECOND));
    back.tick(t1 + 5 * SECOND);
    assert_eq!(back.state, State::Stable);
    assert_eq!(back.heartbeat(&a, None, 1, t1), code::NONE);
    assert_eq!(back.heartbeat(&s, Some("i1"), 1, t1), code::NONE);
    assert_eq!(back.heartbeat(&a, None, 2, t1), code::ILLEGAL_GENERATION);
    assert_eq!(back.may_commit(&s, Some("i1"), 1), code::NONE);
    let r = sync(&mut back, &s, 1, vec![], t1).try_recv().unwrap();
    assert_eq!(
        (r.error_code, r.assignment),
        (code::NONE, Bytes::from_static(b"s"))
    );
    // The static member's instance id still fences others, and rejoins without a rebalance.
    assert_eq!(
        back.heartbeat("someone-else", Some("i1"), 1, t1),
        code::FENCED_INSTANCE_ID
    );
    let r = join(&mut back, args("", Some("i1")), t1)
        .try_recv()
        .unwrap();
    assert_eq!((r.error_code, r.generation_id), (code::NONE, 1));
    assert_eq!(back.state, State::Stable);
}

#[test]
fn a_member_that_does_not_return_expires_and_the_rest_rebalance() {
    let t0 = Instant::now();
    let (g, a, s) = dynamic_and_static(t0);
    let t1 = t0 + 100 * SECOND;
    let mut back = restore(g.snapshot(), t1).unwrap();
    // `a` heartbeats, `s` never comes back.
    assert_eq!(back.heartbeat(&a, None, 1, t1 + 8 * SECOND), code::NONE);
    back.tick(t1 + 10 * SECOND);
    assert_eq!(back.state, State::PreparingRebalance);
    assert_eq!(
        back.heartbeat(&a, None, 1, t1 + 10 * SECOND),
        code::REBALANCE_IN_PROGRESS
    );
    let r = join(&mut back, args(&a, None), t1 + 10 * SECOND)
        .try_recv()
        .unwrap();
    assert_eq!((r.generation_id, r.members.len()), (2, 1), "{r:?}");
    assert_eq!(back.heartbeat(&s, None, 1, t1), code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_group_stored_mid_rebalance_rebalances_without_the_members_that_left() {
    let t0 = Instant::now();
    let (mut g, a, s) = dynamic_and_static(t0);
    let before = g.revision();
    assert_eq!(g.leave(&s, Some("i1"), t0 + 2 * SECOND), code::NONE);
    assert!(g.revision() > before);
    let stored = g.snapshot();
    assert!(stored.rebalance_pending);
    assert_eq!(stored.members.len(), 1);
    let t1 = t0 + 100 * SECOND;
    let mut back = restore(stored, t1).unwrap();
    assert_eq!(back.state, State::PreparingRebalance);
    assert_eq!(back.heartbeat(&a, None, 1, t1), code::REBALANCE_IN_PROGRESS);
    // The only member left rejoins: the join completes at once, nobody else is waited for.
    let r = join(&mut back, args(&a, None), t1).try_recv().unwrap();
    assert_eq!((r.error_code, r.generation_id), (code::NONE, 2));
    assert_eq!(back.state, State::CompletingRebalance);
}

#[test]
fn an_empty_group_keeps_its_generation_and_protocol_type() {
    let t0 = Instant::now();
    let (mut g, a, s) = dynamic_and_static(t0);
    assert_eq!(g.leave(&a, None, t0), code::NONE);
    assert_eq!(g.leave(&s, Some("i1"), t0), code::NONE);
    g.tick(t0 + 30 * SECOND);
    assert_eq!(g.state, State::Empty);
    let stored = g.snapshot();
    assert!(stored.members.is_empty() && !stored.rebalance_pending);
    let mut back = restore(stored.clone(), t0).unwrap();
    assert!(back.is_idle());
    assert_eq!(back.generation, stored.generation);
    assert_eq!(back.protocol_type.as_deref(), Some("consumer"));
    let id = member_id(&mut back, t0);
    let mut r = join(&mut back, args(&id, None), t0);
    back.tick(t0 + SECOND);
    assert_eq!(
        r.try_recv().unwrap().generation_id,
        stored.generation + 1,
        "generations go on counting"
    );
}

#[test]
fn damaged_records_are_refused() {
    let t0 = Instant::now();
    let (g, a, s) = dynamic_and_static(t0);
    let good = g.snapshot();
    assert!(restore(good.clone(), t0).is_ok());
    type Damage = fn(&mut GroupMetadata);
    let damaged: [(&str, Damage); 9] = [
        ("negative generation", |m| m.generation = -5),
        ("unknown leader", |m| m.leader = "nobody".into()),
        ("no leader", |m| m.leader.clear()),
        ("no protocol", |m| m.protocol.clear()),
        ("no protocol type", |m| m.protocol_type.clear()),
        ("repeated member", |m| {
            let again = m.members[0].clone();
            m.members.push(again);
        }),
        ("empty member id", |m| m.members[1].member_id.clear()),
        ("shared instance id", |m| {
            for member in &mut m.members {
                member.instance_id = Some("dup".into());
            }
        }),
        ("protocol not supported", |m| {
            m.members[1].protocols = vec![("other".into(), Bytes::new())]
        }),
    ];
    for (what, damage) in damaged {
        let mut m = good.clone();
        damage(&mut m);
        assert!(restore(m, t0).is_err(), "{what} must be refused");
    }
    // Timeouts beyond what a client can ask for are clamped, so no deadline overflows.
    let mut huge = good.clone();
    for m in &mut huge.members {
        m.session_timeout_ms = u64::MAX;
        m.rebalance_timeout_ms = u64::MAX;
    }
    huge.rebalance_pending = true;
    let mut back = restore(huge, t0).unwrap();
    assert_eq!(back.state, State::PreparingRebalance);
    let far = t0 + 1_000_000 * SECOND;
    back.tick(far);
    assert_eq!(back.heartbeat(&a, None, 1, far), code::UNKNOWN_MEMBER_ID);
    assert_eq!(back.heartbeat(&s, None, 1, far), code::UNKNOWN_MEMBER_ID);
    assert_eq!(back.state, State::Empty);
}
