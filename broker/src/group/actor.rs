//! The task that owns one group's state: commands in, answers out through oneshots, and a
//! timer for session expiry and rebalance phases. No group work blocks produce or fetch.

use std::sync::Arc;

use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::{Group, JoinArgs, State, SyncArgs};
use super::{Coordinator, GroupView};

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
}

pub async fn run(
    mut g: Group,
    mut rx: mpsc::Receiver<Cmd>,
    coordinator: Arc<Coordinator>,
    cancel: CancellationToken,
) {
    loop {
        let deadline = g.next_deadline();
        let cmd = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_until(deadline) => {
                g.tick(Instant::now());
                continue;
            }
            cmd = rx.recv() => cmd,
        };
        let Some(cmd) = cmd else { return };
        let now = Instant::now();
        let was_stable = g.state == State::Stable;
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
        if !was_stable && g.state == State::Stable {
            if let Some(t) = g.protocol_type.clone() {
                let (c, id) = (coordinator.clone(), g.id.clone());
                // A small synced write: off the actor's thread.
                let _ = tokio::task::spawn_blocking(move || c.record_type(&id, &t)).await;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
