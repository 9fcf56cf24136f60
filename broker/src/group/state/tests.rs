//! The group state machine driven directly: no network, and time passed in explicitly.

use super::*;

pub(super) const SECOND: Duration = Duration::from_secs(1);

pub(super) fn settings() -> GroupSettings {
    GroupSettings {
        initial_rebalance_delay: Duration::from_millis(100),
        min_session_timeout: SECOND,
        max_session_timeout: 100 * SECOND,
    }
}

pub(super) fn args(member_id: &str, instance: Option<&str>) -> JoinArgs {
    JoinArgs {
        member_id: member_id.into(),
        instance_id: instance.map(String::from),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: 10 * SECOND,
        rebalance_timeout: 20 * SECOND,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        require_known_member_id: true,
    }
}

/// JoinGroup; answers held for storing are released right away (the actor stores first).
pub(super) fn join(
    g: &mut Group,
    a: JoinArgs,
    now: Instant,
) -> oneshot::Receiver<JoinGroupResponse> {
    let (tx, rx) = oneshot::channel();
    g.join(a, tx, now);
    g.release_answers();
    rx
}

/// SyncGroup; answers held for storing are released right away (the actor stores first).
pub(super) fn sync(
    g: &mut Group,
    member: &str,
    generation: i32,
    assignments: Vec<(String, Bytes)>,
    now: Instant,
) -> oneshot::Receiver<SyncGroupResponse> {
    let (tx, rx) = oneshot::channel();
    let a = SyncArgs {
        member_id: member.into(),
        instance_id: None,
        generation,
        protocol_type: None,
        protocol_name: None,
        assignments,
    };
    g.sync(a, tx, now);
    g.release_answers();
    rx
}

/// Joins a dynamic member through the KIP-394 round trip; returns its id.
pub(super) fn member_id(g: &mut Group, now: Instant) -> String {
    let r = join(g, args("", None), now).try_recv().unwrap();
    assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
    r.member_id.to_string()
}

#[test]
fn single_member_joins_after_the_initial_delay_and_syncs() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), settings());
    let id = member_id(&mut g, t0);
    let mut rx = join(&mut g, args(&id, None), t0);
    assert!(rx.try_recv().is_err(), "waits for the initial delay");
    assert_eq!(g.state, State::PreparingRebalance);
    g.tick(t0 + Duration::from_millis(100));
    let r = rx.try_recv().unwrap();
    assert_eq!(
        (r.error_code, r.generation_id, r.leader.as_str()),
        (0, 1, id.as_str())
    );
    assert_eq!(r.members.len(), 1, "the leader gets the member list");
    let mut s = sync(
        &mut g,
        &id,
        1,
        vec![(id.clone(), Bytes::from_static(b"a"))],
        t0,
    );
    assert_eq!(s.try_recv().unwrap().assignment, Bytes::from_static(b"a"));
    assert_eq!(g.state, State::Stable);
    assert_eq!(g.heartbeat(&id, None, 1, t0), code::NONE);
    assert_eq!(g.heartbeat(&id, None, 0, t0), code::ILLEGAL_GENERATION);
    assert_eq!(g.heartbeat("nobody", None, 1, t0), code::UNKNOWN_MEMBER_ID);
}

/// A group whose one dynamic member has joined generation 1 (not synced yet); its id.
pub(super) fn joined_alone(t0: Instant) -> (Group, String) {
    let mut g = Group::new("g".into(), settings());
    let a = member_id(&mut g, t0);
    let mut ra = join(&mut g, args(&a, None), t0);
    g.tick(t0 + SECOND);
    assert_eq!(ra.try_recv().unwrap().generation_id, 1);
    (g, a)
}

#[test]
fn a_second_member_triggers_a_rebalance_and_an_expired_one_leaves() {
    let t0 = Instant::now();
    let (mut g, a) = joined_alone(t0);
    drop(sync(&mut g, &a, 1, vec![], t0 + SECOND));
    let b = member_id(&mut g, t0 + SECOND);
    let mut rb = join(&mut g, args(&b, None), t0 + SECOND);
    assert_eq!(g.state, State::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, None, 1, t0 + SECOND),
        code::REBALANCE_IN_PROGRESS
    );
    let mut ra = join(&mut g, args(&a, None), t0 + SECOND);
    let (ja, jb) = (ra.try_recv().unwrap(), rb.try_recv().unwrap());
    assert_eq!(
        (ja.generation_id, jb.generation_id),
        (2, 2),
        "all rejoined: no waiting for the timeout"
    );
    assert_eq!(ja.leader, jb.leader);
    let leader = ja.leader.to_string();
    let other = if leader == a { b.clone() } else { a.clone() };
    let mut so = sync(&mut g, &other, 2, vec![], t0 + SECOND);
    assert!(
        so.try_recv().is_err(),
        "followers wait for the leader's assignment"
    );
    drop(sync(
        &mut g,
        &leader,
        2,
        vec![(other.clone(), Bytes::from_static(b"x"))],
        t0 + SECOND,
    ));
    assert_eq!(so.try_recv().unwrap().assignment, Bytes::from_static(b"x"));
    // The follower stops heartbeating; the leader keeps going.
    let later = t0 + 12 * SECOND;
    assert_eq!(g.heartbeat(&leader, None, 2, t0 + 9 * SECOND), code::NONE);
    g.tick(later);
    assert_eq!(
        g.state,
        State::PreparingRebalance,
        "expiry starts a rebalance"
    );
    assert_eq!(g.heartbeat(&other, None, 2, later), code::UNKNOWN_MEMBER_ID);
    let mut rl = join(&mut g, args(&leader, None), later);
    let r = rl.try_recv().unwrap();
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
}

/// A Stable group of generation 1: a dynamic member first (it leads, assigned "d"), then a
/// static one (instance "i1", assigned "s"). Returns it with the two member ids.
pub(super) fn dynamic_and_static(t0: Instant) -> (Group, String, String) {
    let mut g = Group::new("g".into(), settings());
    let a = member_id(&mut g, t0);
    let mut ra = join(&mut g, args(&a, None), t0);
    let mut rs = join(&mut g, args("", Some("i1")), t0);
    g.tick(t0 + SECOND);
    let (ja, js) = (ra.try_recv().unwrap(), rs.try_recv().unwrap());
    assert_eq!(ja.leader.as_str(), a);
    let s = js.member_id.to_string();
    let assignments = vec![
        (s.clone(), Bytes::from_static(b"s")),
        (a.clone(), Bytes::from_static(b"d")),
    ];
    drop(sync(&mut g, &a, 1, assignments, t0 + SECOND));
    assert_eq!(g.state, State::Stable);
    (g, a, s)
}

#[test]
fn static_member_rejoins_without_rebalance_and_fences_the_old_id() {
    let t0 = Instant::now();
    let (mut g, a, old) = dynamic_and_static(t0);
    // The static member restarts: same instance id, no member id.
    let r = join(&mut g, args("", Some("i1")), t0 + 2 * SECOND)
        .try_recv()
        .unwrap();
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(r.generation_id, 1, "no new generation");
    assert_eq!(g.state, State::Stable);
    let new_id = r.member_id.to_string();
    assert_ne!(new_id, old);
    let s = sync(&mut g, &new_id, 1, vec![], t0 + 2 * SECOND)
        .try_recv()
        .unwrap();
    assert_eq!(
        s.assignment,
        Bytes::from_static(b"s"),
        "keeps its assignment"
    );
    assert_eq!(
        g.heartbeat(&a, None, 1, t0 + 2 * SECOND),
        code::NONE,
        "the others see no rebalance"
    );
    assert_eq!(
        g.heartbeat(&old, None, 1, t0 + 2 * SECOND),
        code::UNKNOWN_MEMBER_ID
    );
    let dup = join(&mut g, args(&old, Some("i1")), t0 + 2 * SECOND)
        .try_recv()
        .unwrap();
    assert_eq!(dup.error_code, code::FENCED_INSTANCE_ID);
    // The old instance, still running with its old member id, is fenced on every request
    // that names its instance id (so librdkafka raises a fatal error in it), and its
    // requests change nothing.
    let later = t0 + 3 * SECOND;
    assert_eq!(
        g.heartbeat(&old, Some("i1"), 1, later),
        code::FENCED_INSTANCE_ID
    );
    assert_eq!(g.may_commit(&old, Some("i1"), 1), code::FENCED_INSTANCE_ID);
    let (tx, mut rx) = oneshot::channel();
    let a = SyncArgs {
        member_id: old.clone(),
        instance_id: Some("i1".into()),
        generation: 1,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![],
    };
    g.sync(a, tx, later);
    assert_eq!(rx.try_recv().unwrap().error_code, code::FENCED_INSTANCE_ID);
    assert_eq!(g.leave(&old, Some("i1"), later), code::FENCED_INSTANCE_ID);
    assert_eq!(g.heartbeat(&new_id, Some("i1"), 1, later), code::NONE);
    assert_eq!(g.state, State::Stable);
}

#[test]
fn static_leader_rejoins_as_a_follower_without_rebalance() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), settings());
    let mut rs = join(&mut g, args("", Some("lead")), t0);
    let b = member_id(&mut g, t0);
    let mut rb = join(&mut g, args(&b, None), t0);
    g.tick(t0 + SECOND);
    let (js, jb) = (rs.try_recv().unwrap(), rb.try_recv().unwrap());
    let old = js.member_id.to_string();
    assert_eq!(
        jb.leader.as_str(),
        old,
        "the static member joined first and leads"
    );
    let assignments = vec![
        (old.clone(), Bytes::from_static(b"L")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    drop(sync(&mut g, &old, 1, assignments, t0 + SECOND));
    // It restarts with different metadata (as cooperative-sticky's owned partitions are).
    let mut again = args("", Some("lead"));
    again.protocols = vec![("range".into(), Bytes::from_static(b"other"))];
    let r = join(&mut g, again, t0 + 2 * SECOND).try_recv().unwrap();
    assert_eq!((r.error_code, r.generation_id), (code::NONE, 1));
    assert_ne!(r.leader, r.member_id, "answered as a follower");
    assert!(r.members.is_empty());
    assert_eq!(g.state, State::Stable);
    let s = sync(&mut g, r.member_id.as_str(), 1, vec![], t0 + 2 * SECOND)
        .try_recv()
        .unwrap();
    assert_eq!(s.assignment, Bytes::from_static(b"L"));
    assert_eq!(g.heartbeat(&b, None, 1, t0 + 2 * SECOND), code::NONE);
}

#[test]
fn admin_commits_only_while_empty() {
    let t0 = Instant::now();
    let mut g = Group::new("g".into(), settings());
    assert_eq!(g.may_commit("", None, -1), code::NONE);
    drop(join(&mut g, args("", Some("i")), t0));
    assert_eq!(g.may_commit("", None, -1), code::UNKNOWN_MEMBER_ID);
    assert_eq!(g.leave("", Some("i"), t0), code::NONE);
    assert!(g.is_empty());
    assert_eq!(g.may_commit("", None, -1), code::NONE);
}
