//! The task that owns one group's state: commands in, answers out through oneshots, and a
//! timer for session expiry and rebalance phases. No group work blocks produce or fetch.
//! The task ends once its group is Empty with nothing pending; the group's offsets and
//! protocol type stay in the storage, and the next command for it starts a new task.

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
        mut empty_since,
    } = actor;
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
                if reaped(&coordinator, &g, id, &mut rx, empty_since).await {
                    return;
                }
                continue;
            }
            cmd = rx.recv() => cmd,
        };
        let Some(cmd) = cmd else { return };
        let now = Instant::now();
        let was_stable = g.state == State::Stable;
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
        if !was_stable && g.state == State::Stable {
            if let Some(t) = g.protocol_type.clone() {
                let (c, id) = (coordinator.clone(), g.id.clone());
                // A small synced write: off the actor's thread.
                let _ = tokio::task::spawn_blocking(move || c.record_type(&id, &t)).await;
            }
        }
        if reaped(&coordinator, &g, id, &mut rx, empty_since).await {
            return;
        }
    }
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
