//! A group's metadata as the storage keeps it across restarts (Kafka's group metadata
//! record): what is written ([`Group::snapshot`]) and how a group comes back from it
//! ([`Group::restore`]), checking everything it reads, since stored bytes may be damaged.

use std::collections::HashSet;

use strata_storage::{GroupMember, GroupMetadata};

use super::*;

/// The longest timeout a stored member may have: the most a JoinGroup can ask for (its
/// timeouts are i32 milliseconds). Larger stored values are damage, and are clamped so that
/// deadlines computed from them cannot overflow.
const MAX_STORED_TIMEOUT_MS: u64 = i32::MAX as u64;

impl Group {
    /// How many changes a restart must see have happened (see the field's doc); the actor
    /// stores the group when this moves.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Sends the answers held until the change they announce was stored.
    pub fn release_answers(&mut self) {
        for held in self.held_answers.drain(..) {
            // A member that went away meanwhile has nobody to answer.
            match held {
                Held::Sync(reply, answer) => {
                    let _ = reply.send(answer);
                }
                Held::Join(reply, answer) => {
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// The group as the storage keeps it. A group in the middle of a rebalance is stored
    /// with its members as they are and `rebalance_pending`, so that after a restart it
    /// rebalances (members that left are not waited for).
    pub fn snapshot(&self) -> GroupMetadata {
        GroupMetadata {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            generation: self.generation,
            leader: self.leader.clone().unwrap_or_default(),
            rebalance_pending: !matches!(self.state, State::Stable | State::Empty),
            members: self
                .members
                .iter()
                .map(|(id, m)| GroupMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: millis(m.session_timeout),
                    rebalance_timeout_ms: millis(m.rebalance_timeout),
                    protocols: m.protocols.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The group `id` as stored in `stored`, as of `now`: Empty when it has no members;
    /// otherwise Stable in its stored generation, with every member's session starting at
    /// `now` (as Kafka does on loading a group), or rebalancing when the record says one is
    /// due. Refuses records that are not consistent (they are damaged), saying why.
    pub fn restore(
        id: String,
        settings: GroupSettings,
        stored: GroupMetadata,
        now: Instant,
    ) -> Result<Group, String> {
        if stored.generation < 0 {
            return Err(format!("negative generation {}", stored.generation));
        }
        let mut g = Group::new(id, settings);
        g.generation = stored.generation;
        g.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
        if stored.members.is_empty() {
            return Ok(g);
        }
        if g.protocol_type.is_none() || stored.protocol.is_empty() {
            return Err("members without a protocol type and protocol".into());
        }
        let mut instances = HashSet::new();
        for m in stored.members {
            if m.member_id.is_empty() || g.members.contains_key(&m.member_id) {
                return Err(format!("empty or repeated member id {:?}", m.member_id));
            }
            if !m.protocols.iter().any(|(name, _)| *name == stored.protocol) {
                return Err(format!(
                    "member {} does not support the group's protocol {}",
                    m.member_id, stored.protocol
                ));
            }
            if let Some(i) = &m.instance_id {
                if !instances.insert(i.clone()) {
                    return Err(format!("instance id {i} held by two members"));
                }
                g.statics.insert(i.clone(), m.member_id.clone());
            }
            let s = &g.settings;
            // Within today's settings (they may have changed since), without `clamp`'s panic.
            let session = Duration::from_millis(m.session_timeout_ms.min(MAX_STORED_TIMEOUT_MS))
                .max(s.min_session_timeout)
                .min(s.max_session_timeout);
            let rebalance =
                Duration::from_millis(m.rebalance_timeout_ms.min(MAX_STORED_TIMEOUT_MS));
            g.members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: session,
                    rebalance_timeout: rebalance,
                    protocols: m.protocols,
                    assignment: m.assignment,
                    join_reply: None,
                    sync_reply: None,
                    last_seen: now,
                },
            );
        }
        if !g.members.contains_key(&stored.leader) {
            return Err(format!("leader {:?} is not a member", stored.leader));
        }
        g.leader = Some(stored.leader);
        g.protocol = Some(stored.protocol);
        g.state = State::Stable;
        if stored.rebalance_pending {
            g.rebalance(now);
        }
        Ok(g)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
