//! Offset expiry and actor reaping, driven through the coordinator with the clock passed in.

use strata_storage::GroupOffset;

use super::*;
use crate::error::code;
use crate::group::testkit::{coordinator, eventually, join_args};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn offset(topic: &str, offset: i64, commit_timestamp_ms: i64) -> GroupOffset {
    GroupOffset {
        topic: topic.into(),
        partition: 0,
        offset,
        leader_epoch: 0,
        metadata: String::new(),
        commit_timestamp_ms,
    }
}

/// Runs an expiry pass at `at` and checks how many offsets it expired and how many of the
/// group's are left.
async fn expire(c: &Arc<Coordinator>, at: i64, expired: usize, left: usize) {
    assert_eq!(c.expire_offsets_at(at, DAY_MS).await.unwrap(), expired);
    assert_eq!(c.store.fetch_offsets("g").unwrap().len(), left);
}

async fn wait_no_actors(c: &Coordinator) {
    eventually("every group actor to end", || async {
        c.live_actors() == 0
    })
    .await;
}

/// Offsets committed long ago survive a restart: the first passes after it count the
/// group as Empty only from the start, not from the old commit.
#[tokio::test]
async fn a_restart_never_expires_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    // Committed 30 days ago, by a group that is not loaded (no actor) after the start.
    let ancient = wall_ms() - 30 * DAY_MS;
    c.store
        .commit_offsets("g", &[offset("t", 5, ancient)])
        .await
        .unwrap();
    let now = wall_ms();
    expire(&c, now, 0, 1).await;
    expire(&c, now + DAY_MS / 2, 0, 1).await;
    // Empty for a whole retention period since the start: expired.
    expire(&c, now + DAY_MS + 60_000, 1, 0).await;
}

/// A group with members keeps its offsets however old; once it is Empty (and its actor
/// has been reaped) they expire a retention period after it became Empty, not after the
/// commit. The reaped group still works: a member can join it again.
#[tokio::test]
async fn offsets_expire_only_after_the_group_was_empty_for_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    let ancient = wall_ms() - 30 * DAY_MS;
    c.store
        .commit_offsets("g", &[offset("t", 5, ancient)])
        .await
        .unwrap();
    let joined = c.join("g", join_args()).await;
    assert_eq!(joined.error_code, code::NONE);
    assert_eq!(c.live_actors(), 1);
    // Members: nothing expires, even 100 days on.
    expire(&c, wall_ms() + 100 * DAY_MS, 0, 1).await;
    let member = joined.member_id.to_string();
    assert_eq!(c.leave("g", vec![(member, None)]).await, vec![code::NONE]);
    let left = wall_ms();
    // The Empty group's actor ends.
    wait_no_actors(&c).await;
    // Empty for less than the retention: kept.
    expire(&c, left + DAY_MS - 60_000, 0, 1).await;
    // The group works after being reaped.
    let again = c.join("g", join_args()).await;
    assert_eq!(again.error_code, code::NONE);
    assert_eq!(again.generation_id, 1);
    // Members again.
    expire(&c, left + 100 * DAY_MS, 0, 1).await;
    let member = again.member_id.to_string();
    assert_eq!(c.leave("g", vec![(member, None)]).await, vec![code::NONE]);
    let left = wall_ms();
    wait_no_actors(&c).await;
    expire(&c, left + DAY_MS + 60_000, 1, 0).await;
}

/// Requests for groups nobody is in (heartbeats of unknown members, admin commits) leave
/// no actor behind, and many groups that came and went leave none either.
#[tokio::test]
async fn actors_of_empty_groups_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    for i in 0..50 {
        let g = format!("g{i}");
        let joined = c.join(&g, join_args()).await;
        assert_eq!(joined.error_code, code::NONE);
        let member = joined.member_id.to_string();
        assert_eq!(c.leave(&g, vec![(member, None)]).await, vec![code::NONE]);
    }
    wait_no_actors(&c).await;
    assert_eq!(
        c.heartbeat("g1", "nobody".into(), None, 1).await,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.may_commit("g2", String::new(), None, -1).await,
        code::NONE
    );
    let view = c.describe("g3").await;
    assert_eq!(view.state, crate::group::State::Dead);
    wait_no_actors(&c).await;
    // Groups without offsets keep no trace once an expiry pass ran.
    assert!(!c.idle().is_empty());
    c.expire_offsets_at(wall_ms(), DAY_MS).await.unwrap();
    assert!(c.idle().is_empty());
}

/// ListGroups after reaping: groups known only from the storage (committed offsets) are
/// listed as Empty, running ones as they are, and groups that left nothing are gone.
#[tokio::test]
async fn reaped_groups_are_listed_from_the_storage() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path());
    for g in ["left-nothing", "committed"] {
        let joined = c.join(g, join_args()).await;
        let member = joined.member_id.to_string();
        assert_eq!(c.leave(g, vec![(member, None)]).await, vec![code::NONE]);
    }
    c.store
        .commit_offsets("committed", &[offset("t", 1, wall_ms())])
        .await
        .unwrap();
    let running = c.join("running", join_args()).await;
    assert_eq!(running.error_code, code::NONE);
    let listed: Vec<(String, &str)> = c
        .list()
        .await
        .into_iter()
        .map(|(g, v)| (g, v.state.name()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("committed".to_string(), "Empty"),
            ("running".to_string(), "CompletingRebalance"),
        ]
    );
}
