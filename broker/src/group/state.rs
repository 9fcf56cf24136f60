//! The classic group protocol's state machine for one group: members, generations,
//! rebalances, assignments. Pure logic: the actor (`actor.rs`) feeds it commands and the
//! clock, and it answers through the oneshot senders it is given.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{GroupSettings, MemberView};
use crate::error::code;
use crate::handler::str_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// Kafka's names, as DescribeGroups and ListGroups report them.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// What a JoinGroup brings.
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ gets MEMBER_ID_REQUIRED for a first join (KIP-394).
    pub require_known_member_id: bool,
}

pub struct SyncArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_reply: Option<oneshot::Sender<JoinGroupResponse>>,
    sync_reply: Option<oneshot::Sender<SyncGroupResponse>>,
    last_seen: Instant,
}

pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet, and when they lapse.
    pending: HashMap<String, Instant>,
    /// Static members: instance id → member id.
    statics: HashMap<String, String>,
    /// When the current phase (join window, initial delay, sync window) ends.
    deadline: Option<Instant>,
    /// While the first rebalance of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`), it may not end before `deadline`, but
    /// never after this.
    initial_delay_limit: Option<Instant>,
    settings: GroupSettings,
    /// Counts the changes a restart must see (a generation completing, members leaving or
    /// being replaced, the group emptying): the actor stores the group when it moves.
    revision: u64,
    /// Answers held until the change they announce is stored (see
    /// [`Group::release_answers`]), so no member acts on a state a restart would lose.
    held_answers: Vec<Held>,
}

/// An answer waiting for the group to be stored: SyncGroup answers completing a generation,
/// and the JoinGroup answer giving a restarted static member its new member id.
enum Held {
    Sync(oneshot::Sender<SyncGroupResponse>, SyncGroupResponse),
    Join(oneshot::Sender<JoinGroupResponse>, JoinGroupResponse),
}

fn join_error(c: i16, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(c)
        .with_generation_id(-1)
        .with_member_id(str_bytes(member_id))
}

fn sync_error(c: i16) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(c)
}

impl Group {
    pub fn new(id: String, settings: GroupSettings) -> Self {
        Group {
            id,
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            deadline: None,
            initial_delay_limit: None,
            settings,
            revision: 0,
            held_answers: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Empty with nothing pending: no members, no member ids handed out, no phase timer.
    /// Its actor may end; the group lives on in the storage.
    pub fn is_idle(&self) -> bool {
        self.state == State::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.deadline.is_none()
    }

    /// Kafka's `isStaticMemberFenced`: the instance id now belongs to another member id (a
    /// newer instance joined with it), so this older one must stop (FENCED_INSTANCE_ID), not
    /// rejoin and fence the newer one in turn.
    fn static_member_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.statics.get(i))
            .is_some_and(|known| known != member_id)
    }

    fn new_member_id(&self, client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// The earliest moment `tick` has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.join_reply.is_none())
            .map(|m| m.last_seen + m.session_timeout);
        let pending = self.pending.values().copied();
        self.deadline
            .into_iter()
            .chain(sessions)
            .chain(pending)
            .min()
    }

    pub fn sync(&mut self, a: SyncArgs, reply: oneshot::Sender<SyncGroupResponse>, now: Instant) {
        if self.static_member_fenced(&a.member_id, a.instance_id.as_deref()) {
            let _ = reply.send(sync_error(code::FENCED_INSTANCE_ID));
            return;
        }
        let Some(m) = self.members.get(&a.member_id) else {
            let _ = reply.send(sync_error(code::UNKNOWN_MEMBER_ID));
            return;
        };
        if a.instance_id.is_some() && m.instance_id != a.instance_id {
            let _ = reply.send(sync_error(code::FENCED_INSTANCE_ID));
            return;
        }
        if a.generation != self.generation {
            let _ = reply.send(sync_error(code::ILLEGAL_GENERATION));
            return;
        }
        let type_ok = a.protocol_type.is_none() || a.protocol_type == self.protocol_type;
        let name_ok = a.protocol_name.is_none() || a.protocol_name == self.protocol;
        if !type_ok || !name_ok {
            let _ = reply.send(sync_error(code::INCONSISTENT_GROUP_PROTOCOL));
            return;
        }
        match self.state {
            State::PreparingRebalance => {
                let _ = reply.send(sync_error(code::REBALANCE_IN_PROGRESS));
            }
            State::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(&a.member_id) {
                    m.sync_reply = Some(reply);
                    m.last_seen = now;
                }
                if self.leader.as_deref() == Some(a.member_id.as_str()) {
                    let given: HashMap<String, Bytes> = a.assignments.into_iter().collect();
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.get(id).cloned().unwrap_or_default();
                    }
                    self.state = State::Stable;
                    self.deadline = None;
                    self.revision += 1;
                    let response = |m: &Member| self.sync_response(m);
                    let answers: Vec<_> = self
                        .members
                        .values()
                        .filter(|m| m.sync_reply.is_some())
                        .map(response)
                        .collect();
                    for (m, answer) in self
                        .members
                        .values_mut()
                        .filter(|m| m.sync_reply.is_some())
                        .zip(answers)
                    {
                        if let Some(r) = m.sync_reply.take() {
                            self.held_answers.push(Held::Sync(r, answer));
                        }
                    }
                }
            }
            State::Stable => {
                let _ = reply.send(self.sync_response(m));
            }
            State::Empty | State::Dead => {
                let _ = reply.send(sync_error(code::UNKNOWN_MEMBER_ID));
            }
        }
    }

    fn sync_response(&self, m: &Member) -> SyncGroupResponse {
        SyncGroupResponse::default()
            .with_protocol_type(self.protocol_type.clone().map(str_bytes))
            .with_protocol_name(self.protocol.clone().map(str_bytes))
            .with_assignment(m.assignment.clone())
    }

    /// Heartbeat: the error code for the member, refreshing its session when it is known.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> i16 {
        if self.static_member_fenced(member_id, instance_id) {
            return code::FENCED_INSTANCE_ID;
        }
        let state = self.state;
        let current = self.generation;
        let Some(m) = self.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if instance_id.is_some() && m.instance_id.as_deref() != instance_id {
            return code::FENCED_INSTANCE_ID;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        m.last_seen = now;
        match state {
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            State::CompletingRebalance | State::Stable => code::NONE,
            State::Empty | State::Dead => code::UNKNOWN_MEMBER_ID,
        }
    }

    /// LeaveGroup for one member (by member id, or by instance id for static members).
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> i16 {
        let id = match instance_id {
            Some(i) => match self.statics.get(i) {
                Some(known) if member_id.is_empty() || known == member_id => known.clone(),
                Some(_) => return code::FENCED_INSTANCE_ID,
                None => return code::UNKNOWN_MEMBER_ID,
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            return code::NONE;
        }
        if !self.members.contains_key(&id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        self.remove_member(&id);
        self.after_departure(now);
        code::NONE
    }

    /// Removes every member `gone` picks; returns their ids.
    fn remove_members_where(&mut self, gone: impl Fn(&Member) -> bool) -> Vec<String> {
        let ids: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| gone(m))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.remove_member(id);
        }
        ids
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            self.revision += 1;
            if let Some(r) = m.join_reply.take() {
                let _ = r.send(join_error(code::UNKNOWN_MEMBER_ID, id));
            }
            if let Some(r) = m.sync_reply.take() {
                let _ = r.send(sync_error(code::UNKNOWN_MEMBER_ID));
            }
            if let Some(i) = m.instance_id {
                self.statics.remove(&i);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    fn after_departure(&mut self, now: Instant) {
        match self.state {
            State::Stable | State::CompletingRebalance => self.rebalance(now),
            State::PreparingRebalance => self.maybe_complete_join(now),
            State::Empty | State::Dead => {}
        }
        if self.members.is_empty() && self.state != State::PreparingRebalance {
            self.state = State::Empty;
            self.deadline = None;
        }
    }

    /// Expires sessions and ends phases whose time is up.
    pub fn tick(&mut self, now: Instant) {
        self.pending.retain(|_, lapse| *lapse > now);
        let expired = self.remove_members_where(|m| {
            m.join_reply.is_none() && m.last_seen + m.session_timeout <= now
        });
        if !expired.is_empty() {
            tracing::info!(group = %self.id, members = ?expired, "sessions expired; members removed");
            self.after_departure(now);
        }
        if self.deadline.is_some_and(|d| d <= now) {
            match self.state {
                State::PreparingRebalance => {
                    self.deadline = None;
                    self.complete_join(now);
                }
                State::CompletingRebalance => {
                    // The leader never sent the assignment: try again without the members
                    // that did not sync.
                    self.remove_members_where(|m| m.sync_reply.is_none());
                    self.deadline = None;
                    self.after_departure(now);
                }
                _ => self.deadline = None,
            }
        }
    }

    /// Whether `member_id` of `generation` may commit offsets now; `generation < 0` with an
    /// empty member id is a commit from outside the group (admin tools), allowed only while
    /// the group has no members.
    pub fn may_commit(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        if generation < 0 && member_id.is_empty() {
            return if self.members.is_empty() {
                code::NONE
            } else {
                code::UNKNOWN_MEMBER_ID
            };
        }
        if self.static_member_fenced(member_id, instance_id) {
            return code::FENCED_INSTANCE_ID;
        }
        let Some(m) = self.members.get(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if instance_id.is_some() && m.instance_id.as_deref() != instance_id {
            return code::FENCED_INSTANCE_ID;
        }
        if generation != self.generation {
            return code::ILLEGAL_GENERATION;
        }
        match self.state {
            State::CompletingRebalance => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    pub fn members_view(&self) -> Vec<MemberView> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }
}

mod join;
mod persist;
#[cfg(test)]
mod tests;
