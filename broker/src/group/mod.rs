//! The group coordinator (classic protocol): one actor task per group, driven by the
//! group handlers; committed offsets and each group's metadata (generation, members,
//! assignments) live in the storage, so a Stable group stays Stable across a restart (see
//! [`Coordinator::load`]). An actor lives while its group has members (or work pending): an
//! Empty group's actor ends, and the group is served from the storage (its offsets and
//! metadata) until someone joins again.

mod actor;
mod expiry;
mod load;
pub mod state;
#[cfg(test)]
mod testkit;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use strata_storage::{StorageError, Store};
use tokio::sync::mpsc::error::SendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::actor::Cmd;
pub use self::state::{JoinArgs, State, SyncArgs};
use crate::error::code;

/// Commands queued per group actor before senders wait; group traffic is light.
const MAILBOX: usize = 64;
/// Times a command is handed to a fresh actor when the one it was sent to ended meanwhile
/// (reaped as its group went Empty); one retry suffices unless the broker is shutting down.
const SEND_ATTEMPTS: usize = 3;

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

/// A running actor: its number (to tell it from a successor) and its mailbox.
struct Running {
    id: u64,
    tx: mpsc::Sender<Cmd>,
}

pub struct Coordinator {
    store: Store,
    settings: GroupSettings,
    groups: Mutex<HashMap<String, Running>>,
    next_actor: AtomicU64,
    /// Wall-clock ms when this coordinator started: groups not seen since count as Empty
    /// from then on (offset expiry), so a restart never expires a live group's offsets.
    started_ms: i64,
    /// Groups whose actor ended: since when they have been Empty (wall-clock ms).
    idle_since: Mutex<HashMap<String, i64>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
            next_actor: AtomicU64::new(0),
            started_ms: wall_ms(),
            idle_since: Mutex::new(HashMap::new()),
            cancel,
            tasks,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The actor of `group`, started when missing (or when the old one ended).
    fn actor(self: &Arc<Self>, group: &str) -> mpsc::Sender<Cmd> {
        let mut groups = self.lock();
        if let Some(r) = groups.get(group).filter(|r| !r.tx.is_closed()) {
            return r.tx.clone();
        }
        let g = state::Group::new(group.to_string(), self.settings);
        self.spawn(&mut groups, g, false)
    }

    /// Starts the actor of `g` (registered in `groups`, the locked map); `loaded`: `g` was
    /// restored from the storage, else the actor looks for stored metadata first.
    fn spawn(
        self: &Arc<Self>,
        groups: &mut HashMap<String, Running>,
        g: state::Group,
        loaded: bool,
    ) -> mpsc::Sender<Cmd> {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let id = self.next_actor.fetch_add(1, Ordering::Relaxed);
        groups.insert(g.id.clone(), Running { id, tx: tx.clone() });
        let empty_since = self.idle().remove(&g.id).unwrap_or_else(wall_ms);
        self.tasks.spawn(actor::run(
            actor::Actor {
                id,
                group: g,
                loaded,
                empty_since,
            },
            rx,
            self.clone(),
            self.cancel.clone(),
        ));
        tx
    }

    /// The actor of `group` if it is running.
    fn running(&self, group: &str) -> Option<mpsc::Sender<Cmd>> {
        self.lock()
            .get(group)
            .filter(|r| !r.tx.is_closed())
            .map(|r| r.tx.clone())
    }

    /// How many group actors are running (groups with members or work pending).
    pub fn live_actors(&self) -> usize {
        self.lock().values().filter(|r| !r.tx.is_closed()).count()
    }

    /// Ends actor `id` of `group` if it is still the registered one: closes its mailbox
    /// and records since when the group has been Empty. Called by the actor itself, which
    /// then hands any command still queued to a successor (see [`Coordinator::forward`]).
    fn reap(&self, group: &str, id: u64, rx: &mut mpsc::Receiver<Cmd>, empty_since: i64) -> bool {
        let mut groups = self.lock();
        if groups.get(group).is_none_or(|r| r.id != id) {
            return false;
        }
        // Under the lock: no sender can pick up this mailbox any more, and sends racing
        // with the close fail and are retried on a new actor (see `ask`).
        groups.remove(group);
        rx.close();
        self.idle().insert(group.to_string(), empty_since);
        true
    }

    /// Hands `cmd` (queued for an actor that ended) to the group's current actor.
    async fn forward(self: &Arc<Self>, group: &str, cmd: Cmd) {
        let mut cmd = cmd;
        for _ in 0..SEND_ATTEMPTS {
            match self.actor(group).send(cmd).await {
                Ok(()) => return,
                Err(SendError(c)) => cmd = c,
            }
        }
    }

    async fn ask<T>(
        self: &Arc<Self>,
        group: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let mut cmd = make(tx);
        for _ in 0..SEND_ATTEMPTS {
            match self.actor(group).send(cmd).await {
                Ok(()) => return rx.await.ok(),
                // The actor was reaped between lookup and send: a new one takes the command.
                Err(SendError(c)) => cmd = c,
            }
        }
        None
    }

    /// Runs blocking storage work (scans, synced writes) off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|e| Err(StorageError::Io(format!("storage task failed: {e}"))))
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
        let g = group.to_string();
        let (stored_type, has_offsets) = self
            .blocking(move |s| {
                // A damaged record counts as none (see `Coordinator::stored_group`).
                let kind = s.group_metadata(&g).ok().flatten().map(|m| m.protocol_type);
                let has_offsets = s.fetch_offsets(&g).is_ok_and(|o| !o.is_empty());
                Ok((kind, has_offsets))
            })
            .await
            .unwrap_or_default();
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

    /// Every group: running ones, plus those known from stored offsets or metadata.
    pub async fn list(self: &Arc<Self>) -> Vec<(String, GroupView)> {
        let running: HashSet<String> = self.lock().keys().cloned().collect();
        // One storage pass for every group without an actor (each is Empty: it has offsets
        // or stored metadata), instead of one blocking call per group.
        let (with_offsets, types) = self
            .blocking(|s| {
                let with_offsets = s.groups_with_offsets().unwrap_or_default();
                let types: HashMap<String, String> = s
                    .all_group_metadata()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(g, m)| (g, m.protocol_type))
                    .collect();
                Ok((with_offsets, types))
            })
            .await
            .unwrap_or_default();
        let mut names: Vec<String> = running.iter().cloned().collect();
        names.extend(with_offsets);
        names.extend(types.keys().cloned());
        names.sort();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let v = if running.contains(&n) {
                self.describe(&n).await
            } else {
                GroupView {
                    state: State::Empty,
                    protocol_type: types.get(&n).cloned().unwrap_or_default(),
                    protocol: String::new(),
                    members: Vec::new(),
                }
            };
            if v.state != State::Dead {
                out.push((n, v));
            }
        }
        out
    }

    /// Deletes an empty group: its stored metadata and offsets. NON_EMPTY_GROUP while it
    /// has members, GROUP_ID_NOT_FOUND when there is nothing to delete.
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
        self.idle().remove(group);
        let g = group.to_string();
        match self.blocking(move |s| s.delete_group(&g)).await {
            Ok(()) => code::NONE,
            Err(e) => crate::error::storage_code(&e),
        }
    }
}
