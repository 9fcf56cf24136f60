//! Joining: JoinGroup for new, known and static members, rebalances and their join
//! phase, protocol selection, and the JoinGroup answers.

use super::*;

impl Group {
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
            self.revision += 1;
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
                // Answered once the group is stored with the new member id (as Kafka does).
                self.held_answers.push(Held::Join(reply, r));
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
    pub(super) fn rebalance(&mut self, now: Instant) {
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
    pub(super) fn maybe_complete_join(&mut self, now: Instant) {
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

    pub(super) fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time leave the group.
        self.remove_members_where(|m| m.join_reply.is_none());
        self.initial_delay_limit = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            self.deadline = None;
            self.revision += 1;
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
}
