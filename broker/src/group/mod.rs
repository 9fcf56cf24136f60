//! The group coordinator (classic protocol): one actor task per group, driven by the
//! group handlers; committed offsets live in the storage.

mod actor;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use strata_storage::Store;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::actor::Cmd;
pub use self::state::{JoinArgs, State, SyncArgs};
use crate::error::code;

/// KV prefix recording a group's protocol type once it has had members, so ListGroups
/// and DescribeGroups know it after a restart (when it is Empty).
const GROUP_TYPE_PREFIX: &str = "group.type/";
/// Commands queued per group actor before senders wait; group traffic is light.
const MAILBOX: usize = 64;

/// Coordinator-wide settings (from the broker config).
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups / ListGroups show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

pub struct Coordinator {
    store: Store,
    settings: GroupSettings,
    groups: Mutex<HashMap<String, mpsc::Sender<Cmd>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Coordinator {
    pub fn new(
        store: Store,
        settings: GroupSettings,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Coordinator {
            store,
            settings,
            groups: Mutex::new(HashMap::new()),
            cancel,
            tasks,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Cmd>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The actor of `group`, started when missing (or when the old one ended).
    fn actor(self: &Arc<Self>, group: &str) -> mpsc::Sender<Cmd> {
        let mut groups = self.lock();
        if let Some(tx) = groups.get(group).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        groups.insert(group.to_string(), tx.clone());
        let g = state::Group::new(group.to_string(), self.settings);
        self.tasks
            .spawn(actor::run(g, rx, self.clone(), self.cancel.clone()));
        tx
    }

    /// The actor of `group` if it is running.
    fn running(&self, group: &str) -> Option<mpsc::Sender<Cmd>> {
        self.lock().get(group).filter(|tx| !tx.is_closed()).cloned()
    }

    async fn ask<T>(
        self: &Arc<Self>,
        group: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.actor(group).send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn join(self: &Arc<Self>, group: &str, args: JoinArgs) -> JoinGroupResponse {
        self.ask(group, |reply| Cmd::Join(Box::new(args), reply))
            .await
            .unwrap_or_else(|| {
                JoinGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
            })
    }

    pub async fn sync(self: &Arc<Self>, group: &str, args: SyncArgs) -> SyncGroupResponse {
        self.ask(group, |reply| Cmd::Sync(Box::new(args), reply))
            .await
            .unwrap_or_else(|| {
                SyncGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
            })
    }

    pub async fn heartbeat(
        self: &Arc<Self>,
        group: &str,
        member: String,
        instance: Option<String>,
        generation: i32,
    ) -> i16 {
        if self.running(group).is_none() {
            return code::UNKNOWN_MEMBER_ID;
        }
        self.ask(group, |reply| Cmd::Heartbeat {
            member,
            instance,
            generation,
            reply,
        })
        .await
        .unwrap_or(code::COORDINATOR_NOT_AVAILABLE)
    }

    /// LeaveGroup for each `(member id, instance id)`; one error code per member.
    pub async fn leave(
        self: &Arc<Self>,
        group: &str,
        members: Vec<(String, Option<String>)>,
    ) -> Vec<i16> {
        if self.running(group).is_none() {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        }
        let n = members.len();
        self.ask(group, |reply| Cmd::Leave { members, reply })
            .await
            .unwrap_or_else(|| vec![code::COORDINATOR_NOT_AVAILABLE; n])
    }

    /// Whether a commit from this member and generation is accepted (see
    /// `state::Group::may_commit`). Groups without a running actor have no members.
    pub async fn may_commit(
        self: &Arc<Self>,
        group: &str,
        member: String,
        instance: Option<String>,
        generation: i32,
    ) -> i16 {
        if self.running(group).is_none() {
            return if generation < 0 && member.is_empty() {
                code::NONE
            } else {
                code::UNKNOWN_MEMBER_ID
            };
        }
        self.ask(group, |reply| Cmd::MayCommit {
            member,
            instance,
            generation,
            reply,
        })
        .await
        .unwrap_or(code::COORDINATOR_NOT_AVAILABLE)
    }

    /// The group's current view; a group known only from stored offsets is Empty; an
    /// unknown group is Dead.
    pub async fn describe(self: &Arc<Self>, group: &str) -> GroupView {
        if self.running(group).is_some() {
            if let Some(v) = self.ask(group, Cmd::Describe).await {
                if v.state != State::Empty || !v.protocol_type.is_empty() {
                    return v;
                }
            }
        }
        let stored_type = self.stored_type(group);
        let has_offsets = self.store.fetch_offsets(group).is_ok_and(|o| !o.is_empty());
        GroupView {
            state: if stored_type.is_some() || has_offsets {
                State::Empty
            } else {
                State::Dead
            },
            protocol_type: stored_type.unwrap_or_default(),
            protocol: String::new(),
            members: Vec::new(),
        }
    }

    /// Every group: running ones, plus those known from stored offsets or types.
    pub async fn list(self: &Arc<Self>) -> Vec<(String, GroupView)> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.extend(self.store.groups_with_offsets().unwrap_or_default());
        if let Ok(kv) = self.store.scan_kv(GROUP_TYPE_PREFIX.as_bytes()) {
            names.extend(
                kv.into_iter().map(|(k, _)| {
                    String::from_utf8_lossy(&k[GROUP_TYPE_PREFIX.len()..]).into_owned()
                }),
            );
        }
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let v = self.describe(&n).await;
            if v.state != State::Dead {
                out.push((n, v));
            }
        }
        out
    }

    /// Deletes an empty group and its offsets: NON_EMPTY_GROUP while it has members,
    /// GROUP_ID_NOT_FOUND when there is nothing to delete.
    pub async fn delete(self: &Arc<Self>, group: &str) -> i16 {
        if self.running(group).is_some() {
            match self.ask(group, Cmd::Delete).await {
                Some(true) => {}
                Some(false) => return code::NON_EMPTY_GROUP,
                None => return code::COORDINATOR_NOT_AVAILABLE,
            }
        } else if self.describe(group).await.state == State::Dead {
            return code::GROUP_ID_NOT_FOUND;
        }
        self.lock().remove(group);
        let key = format!("{GROUP_TYPE_PREFIX}{group}");
        match self
            .store
            .delete_offsets(group, None)
            .and_then(|()| self.store.delete_kv(key.as_bytes()))
        {
            Ok(()) => code::NONE,
            Err(e) => crate::error::storage_code(&e),
        }
    }

    /// Every hour (and once at start), deletes committed offsets older than `retention`
    /// of groups that have no members, as Kafka's `offsets.retention.minutes` does.
    pub async fn expire_offsets(self: Arc<Self>, retention: Duration) {
        /// How often expiry runs; retention is counted in minutes to days.
        const EVERY: Duration = Duration::from_secs(3600);
        loop {
            let this = self.clone();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let cutoff = now_ms - retention.as_millis() as i64;
            let active: Vec<String> = self.lock().keys().cloned().collect();
            let mut idle = Vec::new();
            for g in active {
                if self.describe(&g).await.members.is_empty() {
                    idle.push(g);
                }
            }
            let result = tokio::task::spawn_blocking(
                move || -> Result<usize, strata_storage::StorageError> {
                    let mut expired = 0;
                    for group in this.store.groups_with_offsets()? {
                        if this.running(&group).is_some() && !idle.contains(&group) {
                            continue;
                        }
                        let old: Vec<(String, i32)> = this
                            .store
                            .fetch_offsets(&group)?
                            .into_iter()
                            .filter(|o| o.commit_timestamp_ms < cutoff)
                            .map(|o| (o.topic, o.partition))
                            .collect();
                        if !old.is_empty() {
                            expired += old.len();
                            this.store.delete_offsets(&group, Some(&old))?;
                        }
                    }
                    Ok(expired)
                },
            )
            .await;
            match result {
                Ok(Ok(n)) if n > 0 => tracing::info!(offsets = n, "expired committed offsets"),
                Ok(Err(e)) => tracing::warn!(error = %e, "offset expiry failed"),
                _ => {}
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    }

    fn stored_type(&self, group: &str) -> Option<String> {
        let key = format!("{GROUP_TYPE_PREFIX}{group}");
        self.store
            .get_kv(key.as_bytes())
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Remembers that `group` had members of `protocol_type` (called on its first
    /// stable generation).
    fn record_type(&self, group: &str, protocol_type: &str) {
        if self.stored_type(group).as_deref() == Some(protocol_type) {
            return;
        }
        let key = format!("{GROUP_TYPE_PREFIX}{group}");
        if let Err(e) = self.store.put_kv(key.as_bytes(), protocol_type.as_bytes()) {
            tracing::warn!(group, error = %e, "cannot record the group's protocol type");
        }
    }
}
