//! The task that owns one group's state: commands in, answers out through oneshots, and a
//! timer for session expiry and rebalance phases. No group work blocks produce or fetch.
//! The task ends once its group is Empty with nothing pending; the group's offsets and
//! metadata stay in the storage, and the next command for it starts a new task, which
//! picks the group up from there. Changes a restart must see are stored before the task
//! goes on (see [`store_changes`]).

use std::sync::Arc;

use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::{Group, JoinArgs, State, SyncArgs};
use super::{wall_ms, Coordinator, GroupView};

pub enum Cmd {
    Join(Box<JoinArgs>, oneshot::Sender<JoinGroupResponse>),
    Sync(Box<SyncArgs>, oneshot::Sender<SyncGroupResponse>),
    Heartbeat {
        member: String,
        instance: Option<String>,
        generation: i32,
        reply: oneshot::Sender<i16>,
    },
    Leave {
        members: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<Vec<i16>>,
    },
    MayCommit {
        member: String,
        instance: Option<String>,
        generation: i32,
        reply: oneshot::Sender<i16>,
    },
    Describe(oneshot::Sender<GroupView>),
    /// Ends the group if it has no members; answers whether it did.
    Delete(oneshot::Sender<bool>),
    /// Since when (wall-clock ms) the group has been Empty; `None` while it has members.
    EmptySince(oneshot::Sender<Option<i64>>),
}

/// One group's task state.
pub struct Actor {
    /// Tells this task from a successor for the same group.
    pub id: u64,
    pub group: Group,
    /// The group was restored from the storage at start-up. Otherwise it is new, and the
    /// task looks for the group's stored metadata before serving it.
    pub loaded: bool,
    /// Wall-clock ms since the group has been Empty (Kafka's "current state timestamp" for
    /// offset expiry); meaningless while it has members.
    pub empty_since: i64,
}

pub async fn run(
    actor: Actor,
    mut rx: mpsc::Receiver<Cmd>,
    coordinator: Arc<Coordinator>,
    cancel: CancellationToken,
) {
    let Actor {
        id,
        group: mut g,
        loaded,
        mut empty_since,
    } = actor;
    // Whether the group's metadata is in the storage: then every later change is stored.
    let mut stored = loaded;
    if !loaded {
        if let Some(found) = coordinator.stored_group(&g.id).await {
            g = found;
            stored = true;
        }
    }
    let mut revision = g.revision();
    loop {
        let deadline = g.next_deadline();
        let cmd = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_until(deadline) => {
                let was_empty = g.state == State::Empty;
                g.tick(Instant::now());
                if !was_empty && g.state == State::Empty {
                    empty_since = wall_ms();
                }
                store_changes(&coordinator, &mut g, &mut revision, &mut stored).await;
                if reaped(&coordinator, &g, id, &mut rx, empty_since).await {
                    return;
                }
                continue;
            }
            cmd = rx.recv() => cmd,
        };
        let Some(cmd) = cmd else { return };
        let now = Instant::now();
        let was_empty = g.state == State::Empty;
        match cmd {
            Cmd::Join(args, reply) => g.join(*args, reply, now),
            Cmd::Sync(args, reply) => g.sync(*args, reply, now),
            Cmd::Heartbeat {
                member,
                instance,
                generation,
                reply,
            } => {
                let _ = reply.send(g.heartbeat(&member, instance.as_deref(), generation, now));
            }
            Cmd::Leave { members, reply } => {
                let codes = members
                    .iter()
                    .map(|(m, i)| g.leave(m, i.as_deref(), now))
                    .collect();
                let _ = reply.send(codes);
            }
            Cmd::MayCommit {
                member,
                instance,
                generation,
                reply,
            } => {
                let _ = reply.send(g.may_commit(&member, instance.as_deref(), generation));
            }
            Cmd::Describe(reply) => {
                let _ = reply.send(GroupView {
                    state: g.state,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: g.protocol.clone().unwrap_or_default(),
                    members: g.members_view(),
                });
            }
            Cmd::EmptySince(reply) => {
                let _ = reply.send((g.state == State::Empty).then_some(empty_since));
            }
            Cmd::Delete(reply) => {
                let empty = g.is_empty();
                if empty {
                    g.state = State::Dead;
                }
                let _ = reply.send(empty);
                if empty {
                    return;
                }
            }
        }
        if !was_empty && g.state == State::Empty {
            empty_since = wall_ms();
        }
        store_changes(&coordinator, &mut g, &mut revision, &mut stored).await;
        if reaped(&coordinator, &g, id, &mut rx, empty_since).await {
            return;
        }
    }
}

/// Stores the group when a change a restart must see happened since `revision` (see
/// [`Group::revision`]), then sends the SyncGroup answers held for it: a generation is
/// durable before any member hears it is complete, as in Kafka (which writes the group before
/// answering the leader's SyncGroup). Only groups that completed a generation are stored
/// (`stored`: now or before a restart); a group that never did leaves nothing behind.
///
/// Commands wait meanwhile: a write shares its fsync with every other one under way (the
/// storage's group commit), and changes are rare (not on heartbeats). A failed write is
/// logged and the members are answered all the same: the group works, and only a restart
/// would make it rebalance, which is better than failing every generation while the disk
/// misbehaves.
async fn store_changes(
    coordinator: &Coordinator,
    g: &mut Group,
    revision: &mut u64,
    stored: &mut bool,
) {
    if g.revision() != *revision && (*stored || g.state == State::Stable) {
        match coordinator
            .store
            .store_group_metadata(&g.id, &g.snapshot())
            .await
        {
            Ok(()) => *stored = true,
            Err(e) => tracing::error!(
                group = %g.id, error = %e,
                "cannot store the group's metadata: after a restart its members would rejoin"
            ),
        }
    }
    *revision = g.revision();
    g.release_answers();
}

/// Ends this actor when its group is idle (Empty, nothing pending, no queued command): the
/// coordinator forgets it, and commands that raced into the mailbox go to a new actor.
async fn reaped(
    coordinator: &Arc<Coordinator>,
    g: &Group,
    id: u64,
    rx: &mut mpsc::Receiver<Cmd>,
    empty_since: i64,
) -> bool {
    if !g.is_idle() || !rx.is_empty() || !coordinator.reap(&g.id, id, rx, empty_since) {
        return false;
    }
    while let Ok(cmd) = rx.try_recv() {
        coordinator.forward(&g.id, cmd).await;
    }
    true
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
