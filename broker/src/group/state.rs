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

    pub fn join(&mut self, a: JoinArgs, reply: oneshot::Sender<JoinGroupResponse>, now: Instant) {
        let s = &self.settings;
        if a.session_timeout < s.min_session_timeout || a.session_timeout > s.max_session_timeout {
            let _ = reply.send(join_error(code::INVALID_SESSION_TIMEOUT, &a.member_id));
            return;
        }
        if a.protocol_type.is_empty() || a.protocols.is_empty() || !self.accepts_protocols(&a) {
            let _ = reply.send(join_error(code::INCONSISTENT_GROUP_PROTOCOL, &a.member_id));
            return;
        }
        if self.state == State::Dead {
            let _ = reply.send(join_error(code::COORDINATOR_NOT_AVAILABLE, &a.member_id));
            return;
        }
        if a.member_id.is_empty() {
            self.join_new(a, reply, now);
        } else {
            self.join_known(a, reply, now);
        }
    }

    /// Whether the group's members could agree on a protocol with this one joining.
    fn accepts_protocols(&self, a: &JoinArgs) -> bool {
        if self.members.is_empty()
            || (self.members.len() == 1 && self.members.contains_key(&a.member_id))
        {
            return true;
        }
        if self.protocol_type.as_deref() != Some(a.protocol_type.as_str()) {
            return false;
        }
        a.protocols.iter().any(|(name, _)| {
            self.members
                .iter()
                .filter(|(id, _)| **id != a.member_id)
                .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn join_new(&mut self, a: JoinArgs, reply: oneshot::Sender<JoinGroupResponse>, now: Instant) {
        if let Some(old_id) = a
            .instance_id
            .as_ref()
            .and_then(|i| self.statics.get(i))
            .cloned()
        {
            // A static member restarted: give it a new member id, fence the old one, and keep
            // its assignment without a rebalance unless the group's protocol would change.
            // (Its metadata may differ — cooperative-sticky lists owned partitions, which a
            // restarted member no longer has — without that calling for a rebalance.)
            let new_id = self.new_member_id(&a.client_id);
            let Some(mut m) = self.members.remove(&old_id) else {
                self.statics
                    .remove(a.instance_id.as_deref().unwrap_or_default());
                return self.join_new(a, reply, now);
            };
            if let Some(r) = m.join_reply.take() {
                let _ = r.send(join_error(code::FENCED_INSTANCE_ID, &old_id));
            }
            if let Some(r) = m.sync_reply.take() {
                let _ = r.send(sync_error(code::FENCED_INSTANCE_ID));
            }
            let was_leader = self.leader.as_deref() == Some(old_id.as_str());
            m.protocols = a.protocols;
            m.session_timeout = a.session_timeout;
            m.rebalance_timeout = a.rebalance_timeout;
            m.last_seen = now;
            self.members.insert(new_id.clone(), m);
            if let Some(i) = &a.instance_id {
                self.statics.insert(i.clone(), new_id.clone());
            }
            if was_leader {
                self.leader = Some(new_id.clone());
            }
            if self.state == State::Stable && self.select_protocol() == self.protocol {
                let mut r = self.join_response(&new_id, false);
                if was_leader {
                    // Named as leader it would compute a new assignment; answered with its
                    // old id as leader it acts as a follower and syncs its current one.
                    r.leader = str_bytes(old_id);
                }
                tracing::info!(group = %self.id, member = %new_id, "static member rejoined without a rebalance");
                let _ = reply.send(r);
                return;
            }
            self.set_join_reply(&new_id, reply);
            self.rebalance(now);
            return;
        }
        let new_id = self.new_member_id(&a.client_id);
        if a.require_known_member_id && a.instance_id.is_none() {
            self.pending.insert(new_id.clone(), now + a.session_timeout);
            let _ = reply.send(join_error(code::MEMBER_ID_REQUIRED, &new_id));
            return;
        }
        self.add_member(new_id, a, reply, now);
    }

    fn join_known(&mut self, a: JoinArgs, reply: oneshot::Sender<JoinGroupResponse>, now: Instant) {
        let id = a.member_id.clone();
        if self.pending.remove(&id).is_some() {
            return self.add_member(id, a, reply, now);
        }
        if let Some(i) = &a.instance_id {
            if self.statics.get(i).is_some_and(|known| *known != id) {
                let _ = reply.send(join_error(code::FENCED_INSTANCE_ID, &id));
                return;
            }
        }
        let Some(m) = self.members.get_mut(&id) else {
            let _ = reply.send(join_error(code::UNKNOWN_MEMBER_ID, &id));
            return;
        };
        let unchanged = m.protocols == a.protocols;
        m.protocols = a.protocols;
        m.session_timeout = a.session_timeout;
        m.rebalance_timeout = a.rebalance_timeout;
        m.last_seen = now;
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.state {
            State::PreparingRebalance => {
                self.set_join_reply(&id, reply);
                self.maybe_complete_join(now);
            }
            // The member missed its JoinGroup answer or rejoins without change: answer with
            // the current generation.
            State::CompletingRebalance | State::Stable
                if unchanged && !(self.state == State::Stable && is_leader) =>
            {
                let _ = reply.send(self.join_response(&id, is_leader));
            }
            _ => {
                self.set_join_reply(&id, reply);
                self.rebalance(now);
            }
        }
    }

    fn add_member(
        &mut self,
        id: String,
        a: JoinArgs,
        reply: oneshot::Sender<JoinGroupResponse>,
        now: Instant,
    ) {
        if let Some(i) = &a.instance_id {
            self.statics.insert(i.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(a.protocol_type.clone());
        }
        // As in Kafka, the first member to join leads until it leaves.
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                instance_id: a.instance_id,
                client_id: a.client_id,
                client_host: a.client_host,
                session_timeout: a.session_timeout,
                rebalance_timeout: a.rebalance_timeout,
                protocols: a.protocols,
                assignment: Bytes::new(),
                join_reply: Some(reply),
                sync_reply: None,
                last_seen: now,
            },
        );
        if self.state == State::PreparingRebalance {
            if let Some(limit) = self.initial_delay_limit {
                // Still gathering the first members: wait one more delay, within the limit.
                self.deadline = Some((now + self.settings.initial_rebalance_delay).min(limit));
            }
            self.maybe_complete_join(now);
        } else {
            self.rebalance(now);
        }
    }

    fn set_join_reply(&mut self, id: &str, reply: oneshot::Sender<JoinGroupResponse>) {
        if let Some(m) = self.members.get_mut(id) {
            m.join_reply = Some(reply);
        }
    }

    /// The longest rebalance timeout among the members: how long a join or sync phase may last.
    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Starts a rebalance: every member must (re)join within the rebalance timeout.
    fn rebalance(&mut self, now: Instant) {
        tracing::info!(group = %self.id, state = self.state.name(), members = self.members.len(), "rebalance");
        if self.state == State::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(r) = m.sync_reply.take() {
                    let _ = r.send(sync_error(code::REBALANCE_IN_PROGRESS));
                }
            }
        }
        let timeout = self.rebalance_timeout();
        if self.state == State::Empty {
            // First join of an empty group: wait a little for the others (Kafka's
            // group.initial.rebalance.delay.ms), at most the rebalance timeout.
            self.initial_delay_limit = Some(now + timeout);
            self.deadline = Some((now + self.settings.initial_rebalance_delay).min(now + timeout));
        } else {
            self.initial_delay_limit = None;
            self.deadline = Some(now + timeout);
        }
        self.state = State::PreparingRebalance;
        self.maybe_complete_join(now);
    }

    /// Ends the join phase once every member has rejoined (and any initial delay passed).
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_reply.is_some());
        let delay_over =
            self.initial_delay_limit.is_none() || self.deadline.is_none_or(|d| now >= d);
        if all_joined && delay_over {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time leave the group.
        self.remove_members_where(|m| m.join_reply.is_none());
        self.initial_delay_limit = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            self.deadline = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = State::CompletingRebalance;
        let timeout = self.rebalance_timeout();
        self.deadline = Some(now + timeout);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let response = self.join_response(&id, is_leader);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_seen = now;
                m.assignment = Bytes::new();
                if let Some(r) = m.join_reply.take() {
                    let _ = r.send(response);
                }
            }
        }
    }

    /// The protocol every member supports that most members list first (ties: the
    /// leader's order, then name).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let common: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(p, _)| common.contains(&p)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        common
            .iter()
            .max_by_key(|n| {
                (
                    votes.get(*n).copied().unwrap_or(0),
                    std::cmp::Reverse(common.iter().position(|c| c == *n)),
                )
            })
            .map(|n| (*n).clone())
    }

    fn join_response(&self, id: &str, is_leader: bool) -> JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if is_leader {
            self.members
                .iter()
                .map(|(mid, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(mid.clone()))
                        .with_group_instance_id(m.instance_id.clone().map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .with_generation_id(self.generation)
            .with_protocol_type(self.protocol_type.clone().map(str_bytes))
            .with_protocol_name(Some(str_bytes(protocol)))
            .with_leader(str_bytes(self.leader.clone().unwrap_or_default()))
            .with_member_id(str_bytes(id))
            .with_members(members)
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
                            let _ = r.send(answer);
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

#[cfg(test)]
mod tests;
