//! Groups across a coordinator restart (a new coordinator on the same store, the old one's
//! actors stopped), as the broker restarting sees them.

use std::time::Duration;

use bytes::Bytes;
use strata_storage::{Store, StoreConfig};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::error::code;
use crate::group::testkit::{coordinator_on, eventually, join_args};
use crate::group::{wall_ms, State, SyncArgs};

/// Joins one member, syncs its assignment: returns (member id, generation) of the Stable group.
async fn stable_member(c: &Arc<Coordinator>, group: &str, session: Duration) -> (String, i32) {
    let mut args = join_args();
    args.session_timeout = session;
    let joined = c.join(group, args).await;
    assert_eq!(joined.error_code, code::NONE);
    let member = joined.member_id.to_string();
    let synced = c
        .sync(
            group,
            SyncArgs {
                member_id: member.clone(),
                instance_id: None,
                generation: joined.generation_id,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignments: vec![(member.clone(), Bytes::from_static(b"assigned"))],
            },
        )
        .await;
    assert_eq!(synced.error_code, code::NONE);
    assert_eq!(c.describe(group).await.state, State::Stable);
    (member, joined.generation_id)
}

/// Stops `old` (its actors end, as at shutdown) and starts a coordinator on its store.
async fn restart(old: Arc<Coordinator>, cancel: CancellationToken) -> Arc<Coordinator> {
    cancel.cancel();
    old.tasks.close();
    old.tasks.wait().await;
    coordinator_on(old.store.clone(), CancellationToken::new())
}

async fn wait_state(c: &Arc<Coordinator>, group: &str, want: State) {
    eventually(&format!("{group} to become {}", want.name()), || async {
        c.describe(group).await.state == want
    })
    .await;
}

/// A coordinator on a new store in `dir`, and the token that stops its actors.
fn fresh(dir: &std::path::Path) -> (Arc<Coordinator>, CancellationToken) {
    let store = Store::open(StoreConfig::new(dir)).unwrap();
    let cancel = CancellationToken::new();
    (coordinator_on(store, cancel.clone()), cancel)
}

#[tokio::test]
async fn a_stable_group_stays_stable_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (c, cancel) = fresh(dir.path());
    assert_eq!(c.load().await.unwrap(), 0);
    let (member, generation) = stable_member(&c, "g", Duration::from_secs(30)).await;
    let c = restart(c, cancel).await;
    assert_eq!(c.load().await.unwrap(), 1);
    let view = c.describe("g").await;
    assert_eq!(view.state, State::Stable);
    assert_eq!(view.members.len(), 1);
    assert_eq!(view.members[0].member_id, member);
    assert_eq!(view.members[0].assignment, Bytes::from_static(b"assigned"));
    assert_eq!(
        c.heartbeat("g", member.clone(), None, generation).await,
        code::NONE
    );
    assert_eq!(
        c.may_commit("g", member.clone(), None, generation).await,
        code::NONE
    );
    let again = c
        .sync(
            "g",
            SyncArgs {
                member_id: member.clone(),
                instance_id: None,
                generation,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![],
            },
        )
        .await;
    assert_eq!(
        (again.error_code, again.assignment),
        (code::NONE, Bytes::from_static(b"assigned"))
    );
    assert_eq!(
        c.heartbeat("g", member, None, generation + 1).await,
        code::ILLEGAL_GENERATION
    );
}

/// A member that does not come back after the restart expires after its session timeout;
/// the group empties (it had no one else), and is stored Empty in its next generation.
#[tokio::test]
async fn a_member_that_never_returns_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (c, cancel) = fresh(dir.path());
    // Long enough not to lapse before the restart, even on a slow machine.
    let (member, generation) = stable_member(&c, "g", Duration::from_secs(2)).await;
    let c = restart(c, cancel).await;
    assert_eq!(c.load().await.unwrap(), 1);
    assert_eq!(c.describe("g").await.state, State::Stable);
    wait_state(&c, "g", State::Empty).await;
    assert_eq!(
        c.heartbeat("g", member, None, generation).await,
        code::UNKNOWN_MEMBER_ID
    );
    let stored = c.store.group_metadata("g").unwrap().unwrap();
    assert!(stored.members.is_empty());
    assert_eq!(stored.protocol_type, "consumer");
    assert!(stored.generation > generation);
    // Joining again continues the generations.
    let (_, next) = stable_member(&c, "g", Duration::from_secs(30)).await;
    assert_eq!(next, stored.generation + 1);
}

/// A member leaving stores the group at once; DeleteGroups and the expiry of an Empty group
/// with no offsets delete the stored metadata.
#[tokio::test]
async fn leaving_deleting_and_expiry_update_the_stored_group() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _cancel) = fresh(dir.path());
    for g in ["deleted", "expired"] {
        let (member, _) = stable_member(&c, g, Duration::from_secs(30)).await;
        assert_eq!(c.leave(g, vec![(member, None)]).await, vec![code::NONE]);
        wait_state(&c, g, State::Empty).await;
        let stored = c.store.group_metadata(g).unwrap().unwrap();
        assert!(stored.members.is_empty(), "{g}: {stored:?}");
    }
    assert_eq!(c.delete("deleted").await, code::NONE);
    assert_eq!(c.store.group_metadata("deleted").unwrap(), None);
    assert_eq!(c.describe("deleted").await.state, State::Dead);
    eventually("every group actor to end", || async {
        c.live_actors() == 0
    })
    .await;
    assert_eq!(c.describe("expired").await.state, State::Empty);
    c.expire_offsets_at(wall_ms(), 24 * 3600 * 1000)
        .await
        .unwrap();
    assert_eq!(c.store.group_metadata("expired").unwrap(), None);
    assert_eq!(c.describe("expired").await.state, State::Dead);
}

/// Protocol types recorded by earlier versions become Empty groups' metadata; damaged
/// metadata does not stop the others from loading.
#[tokio::test]
async fn legacy_types_migrate_and_damaged_groups_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (c, cancel) = fresh(dir.path());
    let store = c.store.clone();
    let (member, _) = stable_member(&c, "good", Duration::from_secs(30)).await;
    let c = restart(c, cancel).await;
    store.put_kv(b"group.type/old", b"consumer").unwrap();
    let mut damaged = store.group_metadata("good").unwrap().unwrap();
    damaged.leader = "not-a-member".into();
    store
        .store_group_metadata("damaged", &damaged)
        .await
        .unwrap();
    assert_eq!(c.load().await.unwrap(), 1, "only the good group comes back");
    assert_eq!(store.get_kv(b"group.type/old").unwrap(), None);
    let old = store.group_metadata("old").unwrap().unwrap();
    assert_eq!(
        (old.protocol_type.as_str(), old.members.len()),
        ("consumer", 0)
    );
    let listed: Vec<(String, &str, String)> = c
        .list()
        .await
        .into_iter()
        .map(|(g, v)| (g, v.state.name(), v.protocol_type))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("damaged".into(), "Empty", "consumer".into()),
            ("good".into(), "Stable", "consumer".into()),
            ("old".into(), "Empty", "consumer".into()),
        ]
    );
    assert_eq!(c.heartbeat("good", member, None, 1).await, code::NONE);
    // The damaged group starts afresh when someone joins, and its record is replaced.
    let (_, generation) = stable_member(&c, "damaged", Duration::from_secs(30)).await;
    assert_eq!(generation, 1);
    let replaced = store.group_metadata("damaged").unwrap().unwrap();
    assert_eq!(replaced.members.len(), 1);
}
