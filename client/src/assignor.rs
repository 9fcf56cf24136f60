//! Consumer-group partition assignors for the classic group protocol (protocol type
//! `"consumer"`), and the wire encoding of the consumer protocol's subscription and assignment
//! blobs that travel inside JoinGroup and SyncGroup.
//!
//! # Wire format
//!
//! A subscription (JoinGroup member metadata) and an assignment (SyncGroup member assignment)
//! are framed the way the Java client and librdkafka frame them: a big-endian `i16` version
//! followed by `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` encoded at that
//! version. Decoding accepts versions 0..=3; a newer version is read with the version-3 layout
//! (the schemas only ever append fields), and trailing bytes are ignored. Malformed input is an
//! error, never a panic. An empty assignment blob is an empty assignment: the coordinator sends
//! empty bytes to members the leader gave nothing.
//!
//! Subscriptions are encoded at the caller's version; [`SUBSCRIPTION_VERSION`] (3, what the
//! Java client sends) carries owned partitions (v1+), the generation (v2+) and the rack (v3).
//! Assignments are encoded at [`ASSIGNMENT_VERSION`] (1); every assignment version has the same
//! layout, so any reader accepts it.
//!
//! # Assignors
//!
//! * [`RangeAssignor`] (`"range"`, eager): for each topic, the members subscribed to it are
//!   sorted (static members first by `group.instance.id`, then dynamic members by member id)
//!   and the partitions are cut into contiguous ranges; the first `count % members` members get
//!   one partition more.
//! * [`CooperativeStickyAssignor`] (`"cooperative-sticky"`, cooperative): balanced, sticky and
//!   incremental.
//!
//! ## Cooperative-sticky
//!
//! 1. *Ownership.* Each member reports the partitions it owns and its generation. A claim counts
//!    only if the partition still exists and the member still subscribes to its topic. When
//!    several members claim one partition, the highest generation wins; on a tie, the member
//!    that sorts first (see above) wins. A subscription without a generation (v0/v1) whose user
//!    data is exactly 4 bytes is read as the Java cooperative-sticky user data: the generation.
//! 2. *Keep.* Every partition stays with its owner.
//! 3. *Fill.* Unowned partitions, topics with the fewest subscribers first, go one by one to
//!    the least-loaded subscribed member.
//! 4. *Balance.* While some member X holds a partition of a topic that a member Y subscribes
//!    to and `count(Y) + 1 < count(X)`, one partition moves from the most loaded such X to the
//!    least-loaded such Y, preferring partitions X did not own before (they cost nothing to
//!    move). At the end no partition can move to a member holding at least two fewer: members
//!    with equal subscriptions differ by at most one partition, and with unequal subscriptions
//!    no single move improves the balance. Only the partitions balance requires ever move.
//! 5. *Cooperate.* A partition given to a member other than its owner, while another member
//!    claims it (whether its claim won or not), is left out of everybody's assignment for this
//!    round. The old owner no longer
//!    finds it in its assignment, so it revokes it and rejoins; in the next rebalance nobody
//!    owns it and step 3 gives it to the member that needed it. So no partition is ever revoked
//!    from one member and added to another in the same round, which is the rule the Java
//!    client's leader enforces for cooperative assignors. Partitions nobody owns (new
//!    partitions, or those of a member that left the group) are assigned at once.
//!
//! Topics nobody subscribes to are ignored. Outputs depend only on the set of members (not on
//! their order in the slice) and on the partition counts; member ids are assumed unique
//! (a repeated id keeps its first entry in sorted order).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedPartitions;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The subscription version the Java client sends and the one to use by default.
pub const SUBSCRIPTION_VERSION: i16 = 3;
/// The assignment version [`encode_assignment`] writes.
pub const ASSIGNMENT_VERSION: i16 = 1;
/// Highest version of either schema this module knows.
const MAX_KNOWN_VERSION: i16 = 3;

/// What a member sends in JoinGroup: the topics it wants and, for cooperative assignors, what
/// it currently owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions the member owns now, per topic (subscription v1+).
    pub owned_partitions: Vec<(String, Vec<i32>)>,
    /// The generation in which `owned_partitions` were assigned; -1 if unknown (v2+).
    pub generation_id: i32,
    /// Assignor-specific opaque data.
    pub user_data: Option<Bytes>,
    /// The member's rack (v3+).
    pub rack_id: Option<String>,
}

impl Default for Subscription {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            owned_partitions: Vec::new(),
            generation_id: -1,
            user_data: None,
            rack_id: None,
        }
    }
}

/// One group member's subscription as the leader sees it in the JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub subscription: Subscription,
}

/// What a member receives in SyncGroup.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Topic -> assigned partitions.
    pub partitions: BTreeMap<String, Vec<i32>>,
    pub user_data: Option<Bytes>,
}

/// How members move partitions between generations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member revokes everything before each rebalance.
    Eager,
    /// Members keep their partitions across a rebalance and revoke only what they lose.
    Cooperative,
}

/// A partition assignment strategy run by the group leader.
pub trait Assignor: Send + Sync {
    /// The protocol name members advertise in JoinGroup ("range", "cooperative-sticky").
    fn name(&self) -> &'static str;
    fn protocol(&self) -> RebalanceProtocol;
    /// partitions: topic -> partition count (only topics someone subscribes to). Returns
    /// member_id -> Assignment for EVERY member (empty assignment if none).
    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Assignment>;
}

/// Kafka's `range` assignor (eager).
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeAssignor;

/// Kafka's `cooperative-sticky` assignor (cooperative). See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct CooperativeStickyAssignor;

/// The assignor Kafka knows by `name`, if this module implements it.
pub fn assignor_by_name(name: &str) -> Option<Box<dyn Assignor>> {
    match name {
        "range" => Some(Box::new(RangeAssignor)),
        "cooperative-sticky" => Some(Box::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Wire encoding
// ---------------------------------------------------------------------------------------------

/// Encodes `s` as JoinGroup member metadata at `version` (0..=3). Fields the version cannot
/// carry are left out: owned partitions below v1, the generation below v2, the rack below v3.
pub fn encode_subscription(s: &Subscription, version: i16) -> Result<Bytes> {
    if !(0..=MAX_KNOWN_VERSION).contains(&version) {
        bail!("unsupported consumer subscription version {version}");
    }
    let mut msg = ConsumerProtocolSubscription::default()
        .with_topics(
            s.topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_user_data(s.user_data.clone());
    if version >= 1 {
        msg = msg.with_owned_partitions(
            s.owned_partitions
                .iter()
                .map(|(topic, parts)| {
                    OwnedPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(parts.clone())
                })
                .collect(),
        );
    }
    if version >= 2 {
        msg = msg.with_generation_id(s.generation_id);
    }
    if version >= 3 {
        msg = msg.with_rack_id(s.rack_id.clone().map(StrBytes::from_string));
    }
    let size = msg.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(2 + size);
    buf.put_i16(version);
    msg.encode(&mut buf, version)
        .context("encoding consumer subscription")?;
    Ok(buf.freeze())
}

/// Decodes JoinGroup member metadata of any version. Fields absent at the sent version take
/// their defaults (no owned partitions, generation -1, no rack).
pub fn decode_subscription(bytes: &[u8]) -> Result<Subscription> {
    let (version, mut body) = split_version(bytes, "subscription")?;
    let msg = ConsumerProtocolSubscription::decode(&mut body, version)
        .with_context(|| format!("decoding consumer subscription v{version}"))?;
    Ok(Subscription {
        topics: msg.topics.iter().map(|t| t.as_str().to_owned()).collect(),
        owned_partitions: msg
            .owned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.as_str().to_owned(), tp.partitions))
            .collect(),
        generation_id: msg.generation_id,
        user_data: msg.user_data,
        rack_id: msg.rack_id.map(|r| r.as_str().to_owned()),
    })
}

/// Encodes `a` as a SyncGroup member assignment at [`ASSIGNMENT_VERSION`].
pub fn encode_assignment(a: &Assignment) -> Result<Bytes> {
    let msg = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(
            a.partitions
                .iter()
                .map(|(topic, parts)| {
                    AssignedPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(parts.clone())
                })
                .collect(),
        )
        .with_user_data(a.user_data.clone());
    let size = msg.compute_size(ASSIGNMENT_VERSION)?;
    let mut buf = BytesMut::with_capacity(2 + size);
    buf.put_i16(ASSIGNMENT_VERSION);
    msg.encode(&mut buf, ASSIGNMENT_VERSION)
        .context("encoding consumer assignment")?;
    Ok(buf.freeze())
}

/// Decodes a SyncGroup member assignment of any version; empty input is an empty assignment.
/// A topic listed twice has its partition lists concatenated.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment> {
    if bytes.is_empty() {
        return Ok(Assignment::default());
    }
    let (version, mut body) = split_version(bytes, "assignment")?;
    let msg = ConsumerProtocolAssignment::decode(&mut body, version)
        .with_context(|| format!("decoding consumer assignment v{version}"))?;
    let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in msg.assigned_partitions {
        partitions
            .entry(tp.topic.0.as_str().to_owned())
            .or_default()
            .extend(tp.partitions);
    }
    Ok(Assignment {
        partitions,
        user_data: msg.user_data,
    })
}

/// Reads the `i16` version header; returns the version to decode the body at (newer versions
/// are read with the newest known layout) and the body.
fn split_version<'a>(bytes: &'a [u8], what: &str) -> Result<(i16, &'a [u8])> {
    let Some((head, body)) = bytes.split_first_chunk::<2>() else {
        bail!(
            "consumer {what} too short for its version header ({} bytes)",
            bytes.len()
        );
    };
    let version = i16::from_be_bytes(*head);
    if version < 0 {
        bail!("consumer {what} has negative version {version}");
    }
    Ok((version.min(MAX_KNOWN_VERSION), body))
}

// ---------------------------------------------------------------------------------------------
// Assignors
// ---------------------------------------------------------------------------------------------

/// Kafka's member order: static members first, by `group.instance.id`; then dynamic members
/// by member id.
fn member_order(a: &MemberSubscription, b: &MemberSubscription) -> Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

/// Members in [`member_order`], each member id once.
fn sorted_members(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
    sorted.sort_by(|a, b| member_order(a, b));
    let mut seen = BTreeSet::new();
    sorted.retain(|m| seen.insert(m.member_id.as_str()));
    sorted
}

fn empty_assignments(members: &[&MemberSubscription]) -> BTreeMap<String, Assignment> {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Assignment::default()))
        .collect()
}

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Assignment> {
        let members = sorted_members(members);
        let mut out = empty_assignments(&members);
        for (topic, &count) in partitions {
            if count <= 0 {
                continue;
            }
            let subscribers: Vec<&str> = members
                .iter()
                .filter(|m| m.subscription.topics.iter().any(|t| t == topic))
                .map(|m| m.member_id.as_str())
                .collect();
            let Ok(n) = i32::try_from(subscribers.len()) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            let (per_member, with_extra) = (count / n, count % n);
            let mut start = 0;
            for (i, member) in (0..).zip(&subscribers) {
                let len = per_member + i32::from(i < with_extra);
                if len > 0 {
                    if let Some(a) = out.get_mut(*member) {
                        a.partitions
                            .insert(topic.clone(), (start..start + len).collect());
                    }
                }
                start += len;
            }
        }
        out
    }
}

/// The generation a member's owned partitions belong to (see the module documentation).
fn owned_generation(s: &Subscription) -> i32 {
    if s.generation_id < 0 {
        if let Some(ud) = &s.user_data {
            if let Ok(raw) = <[u8; 4]>::try_from(ud.as_ref()) {
                return i32::from_be_bytes(raw);
            }
        }
    }
    s.generation_id
}

/// Working state of one cooperative-sticky run. Members are indexed in [`member_order`];
/// partitions are numbered densely in (topic, partition) order.
struct StickyState<'a> {
    /// topic name -> (topic index, first partition id, partition count).
    topics: BTreeMap<&'a str, (usize, usize, i32)>,
    /// topic index -> name.
    topic_names: Vec<&'a str>,
    /// partition id -> topic index.
    topic_of: Vec<usize>,
    /// topic index -> members subscribed, ascending.
    eligible: Vec<Vec<usize>>,
    /// partition id -> the member whose claim won, if any.
    owner: Vec<Option<usize>>,
    /// partition id -> every member claiming it (subscribed or not), ascending.
    claimants: Vec<Vec<usize>>,
    /// partition id -> member it is assigned to.
    assigned: Vec<Option<usize>>,
    /// member -> assigned partition ids.
    held: Vec<BTreeSet<usize>>,
}

impl<'a> StickyState<'a> {
    fn new(members: &[&'a MemberSubscription], partitions: &'a BTreeMap<String, i32>) -> Self {
        let subscribed: Vec<BTreeSet<&str>> = members
            .iter()
            .map(|m| m.subscription.topics.iter().map(String::as_str).collect())
            .collect();
        let mut state = StickyState {
            topics: BTreeMap::new(),
            topic_names: Vec::new(),
            topic_of: Vec::new(),
            eligible: Vec::new(),
            owner: Vec::new(),
            claimants: Vec::new(),
            assigned: Vec::new(),
            held: vec![BTreeSet::new(); members.len()],
        };
        for (topic, &count) in partitions {
            let eligible: Vec<usize> = (0..members.len())
                .filter(|&i| subscribed[i].contains(topic.as_str()))
                .collect();
            if count <= 0 || eligible.is_empty() {
                continue;
            }
            let index = state.topic_names.len();
            state
                .topics
                .insert(topic.as_str(), (index, state.topic_of.len(), count));
            state.topic_names.push(topic.as_str());
            state.eligible.push(eligible);
            for _ in 0..count {
                state.topic_of.push(index);
            }
        }
        let total = state.topic_of.len();
        state.owner = vec![None; total];
        state.claimants = vec![Vec::new(); total];
        state.assigned = vec![None; total];

        // Ownership: the best (generation, member order) claim among subscribed claimants.
        let mut best: Vec<Option<(i32, usize)>> = vec![None; total];
        for (i, m) in members.iter().enumerate() {
            let generation = owned_generation(&m.subscription);
            for (topic, parts) in &m.subscription.owned_partitions {
                let Some(&(_, first, count)) = state.topics.get(topic.as_str()) else {
                    continue;
                };
                for &p in parts {
                    let Some(pid) = partition_id(first, count, p) else {
                        continue;
                    };
                    if state.claimants[pid].last() != Some(&i) {
                        state.claimants[pid].push(i);
                    }
                    if !subscribed[i].contains(topic.as_str()) {
                        continue;
                    }
                    let wins = match best[pid] {
                        None => true,
                        Some((g, _)) => generation > g,
                    };
                    if wins {
                        best[pid] = Some((generation, i));
                    }
                }
            }
        }
        for (owner, claim) in state.owner.iter_mut().zip(&best) {
            *owner = claim.map(|(_, i)| i);
        }
        state
    }

    fn give(&mut self, pid: usize, member: usize) {
        if let Some(prev) = self.assigned[pid].replace(member) {
            self.held[prev].remove(&pid);
        }
        self.held[member].insert(pid);
    }

    fn count(&self, member: usize) -> usize {
        self.held[member].len()
    }

    /// The least-loaded member subscribed to `topic`, other than `except`.
    fn least_loaded(&self, topic: usize, except: Option<usize>) -> Option<usize> {
        self.eligible[topic]
            .iter()
            .copied()
            .filter(|&m| Some(m) != except)
            .min_by_key(|&m| (self.count(m), m))
    }

    fn keep_owned(&mut self) {
        for pid in 0..self.owner.len() {
            if let Some(owner) = self.owner[pid] {
                self.give(pid, owner);
            }
        }
    }

    fn fill_unowned(&mut self) {
        let mut free: Vec<usize> = (0..self.assigned.len())
            .filter(|&pid| self.assigned[pid].is_none())
            .collect();
        free.sort_by_key(|&pid| (self.eligible[self.topic_of[pid]].len(), pid));
        for pid in free {
            if let Some(m) = self.least_loaded(self.topic_of[pid], None) {
                self.give(pid, m);
            }
        }
    }

    /// Moves one partition from the most loaded member that can give one to a member holding
    /// at least two fewer. Returns false when no such move exists.
    fn balance_step(&mut self) -> bool {
        let mut order: Vec<usize> = (0..self.held.len()).collect();
        order.sort_by_key(|&m| (Reverse(self.count(m)), m));
        for x in order {
            let load = self.count(x);
            if load < 2 {
                return false;
            }
            // Best receiver per topic, computed once per giver.
            let mut receiver: BTreeMap<usize, Option<usize>> = BTreeMap::new();
            // Partitions x did not own cost nothing to move: try them first.
            let candidates = self.held[x]
                .iter()
                .filter(|&&pid| self.owner[pid] != Some(x))
                .chain(
                    self.held[x]
                        .iter()
                        .filter(|&&pid| self.owner[pid] == Some(x)),
                )
                .copied();
            let mut chosen = None;
            for pid in candidates {
                let topic = self.topic_of[pid];
                // Prefer handing a partition back to its owner.
                if let Some(owner) = self.owner[pid] {
                    if owner != x && self.count(owner) + 1 < load {
                        chosen = Some((pid, owner));
                        break;
                    }
                }
                let y = *receiver
                    .entry(topic)
                    .or_insert_with(|| self.least_loaded(topic, Some(x)));
                if let Some(y) = y {
                    if self.count(y) + 1 < load {
                        chosen = Some((pid, y));
                        break;
                    }
                }
            }
            if let Some((pid, y)) = chosen {
                self.give(pid, y);
                return true;
            }
        }
        false
    }

    /// Withholds every partition assigned to a member other than its owner while another
    /// member still claims it.
    fn withhold_transfers(&mut self) {
        for pid in 0..self.assigned.len() {
            let Some(m) = self.assigned[pid] else {
                continue;
            };
            if self.owner[pid] != Some(m) && self.claimants[pid].iter().any(|&c| c != m) {
                self.assigned[pid] = None;
                self.held[m].remove(&pid);
            }
        }
    }

    fn into_assignments(self, members: &[&MemberSubscription]) -> BTreeMap<String, Assignment> {
        let mut out = empty_assignments(members);
        for (m, held) in members.iter().zip(&self.held) {
            let Some(a) = out.get_mut(&m.member_id) else {
                continue;
            };
            for &pid in held {
                let topic = self.topic_names[self.topic_of[pid]];
                let (_, first, _) = self.topics[topic];
                let Ok(p) = i32::try_from(pid - first) else {
                    continue;
                };
                a.partitions.entry(topic.to_owned()).or_default().push(p);
            }
        }
        out
    }
}

fn partition_id(first: usize, count: i32, p: i32) -> Option<usize> {
    if (0..count).contains(&p) {
        usize::try_from(p).ok().map(|p| first + p)
    } else {
        None
    }
}

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Assignment> {
        let members = sorted_members(members);
        let mut state = StickyState::new(&members, partitions);
        state.keep_owned();
        state.fill_unowned();
        while state.balance_step() {}
        state.withhold_transfers();
        state.into_assignments(&members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_owned(),
            group_instance_id: None,
            subscription: Subscription {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
                ..Subscription::default()
            },
        }
    }

    fn owning(
        mut m: MemberSubscription,
        generation: i32,
        owned: &[(&str, &[i32])],
    ) -> MemberSubscription {
        m.subscription.generation_id = generation;
        m.subscription.owned_partitions = owned
            .iter()
            .map(|(t, p)| ((*t).to_owned(), p.to_vec()))
            .collect();
        m
    }

    fn topics(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn parts(a: &Assignment, topic: &str) -> Vec<i32> {
        a.partitions.get(topic).cloned().unwrap_or_default()
    }

    fn total(a: &Assignment) -> usize {
        a.partitions.values().map(Vec::len).sum()
    }

    /// Every member present; every partition valid, subscribed and assigned at most once.
    fn check_valid(
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, i32>,
        out: &BTreeMap<String, Assignment>,
    ) -> BTreeSet<(String, i32)> {
        assert_eq!(out.len(), members.len());
        let mut seen = BTreeSet::new();
        for m in members {
            let a = &out[&m.member_id];
            for (t, ps) in &a.partitions {
                assert!(m.subscription.topics.contains(t), "{t} not subscribed");
                assert!(!ps.is_empty(), "empty partition list for {t}");
                for &p in ps {
                    assert!((0..partitions[t]).contains(&p), "{t}-{p} does not exist");
                    assert!(seen.insert((t.clone(), p)), "{t}-{p} assigned twice");
                }
            }
        }
        seen
    }

    /// Java's leader check: nothing is revoked from one member and added to another at once.
    fn check_cooperative(members: &[MemberSubscription], out: &BTreeMap<String, Assignment>) {
        let mut revoked = BTreeSet::new();
        let mut added = BTreeSet::new();
        for m in members {
            let owned: BTreeSet<(String, i32)> = m
                .subscription
                .owned_partitions
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                .collect();
            let now: BTreeSet<(String, i32)> = out[&m.member_id]
                .partitions
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                .collect();
            revoked.extend(owned.difference(&now).cloned());
            added.extend(now.difference(&owned).cloned());
        }
        let both: Vec<_> = revoked.intersection(&added).collect();
        assert!(both.is_empty(), "revoked and added in one round: {both:?}");
    }

    /// No member could take a partition from a member holding two or more partitions more.
    fn check_balanced(members: &[MemberSubscription], out: &BTreeMap<String, Assignment>) {
        for x in members {
            let from = total(&out[&x.member_id]);
            for t in out[&x.member_id].partitions.keys() {
                for y in members {
                    if y.subscription.topics.contains(t) {
                        let to = total(&out[&y.member_id]);
                        assert!(
                            to + 1 >= from,
                            "{} ({to}) could take {t} from {} ({from})",
                            y.member_id,
                            x.member_id
                        );
                    }
                }
            }
        }
    }

    /// The members of the next round: each owns what it was just assigned.
    fn next_round(
        members: &[MemberSubscription],
        out: &BTreeMap<String, Assignment>,
        generation: i32,
    ) -> Vec<MemberSubscription> {
        members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.subscription.generation_id = generation;
                m.subscription.owned_partitions = out[&m.member_id]
                    .partitions
                    .iter()
                    .map(|(t, p)| (t.clone(), p.clone()))
                    .collect();
                m
            })
            .collect()
    }

    // ---- range --------------------------------------------------------------------------

    #[test]
    fn range_one_to_four_members_uneven() {
        let p = topics(&[("t", 7)]);
        let expected: [&[&[i32]]; 4] = [
            &[&[0, 1, 2, 3, 4, 5, 6]],
            &[&[0, 1, 2, 3], &[4, 5, 6]],
            &[&[0, 1, 2], &[3, 4], &[5, 6]],
            &[&[0, 1], &[2, 3], &[4, 5], &[6]],
        ];
        for (n, want) in expected.iter().enumerate() {
            let members: Vec<_> = (0..=n).map(|i| member(&format!("m{i}"), &["t"])).collect();
            let out = RangeAssignor.assign(&members, &p);
            check_valid(&members, &p, &out);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(parts(&out[&format!("m{i}")], "t"), w.to_vec());
            }
        }
    }

    #[test]
    fn range_more_members_than_partitions() {
        let p = topics(&[("t", 2)]);
        let members: Vec<_> = ["d", "c", "b", "a"]
            .iter()
            .map(|id| member(id, &["t"]))
            .collect();
        let out = RangeAssignor.assign(&members, &p);
        check_valid(&members, &p, &out);
        assert_eq!(parts(&out["a"], "t"), vec![0]);
        assert_eq!(parts(&out["b"], "t"), vec![1]);
        assert!(out["c"].partitions.is_empty());
        assert!(out["d"].partitions.is_empty());
    }

    #[test]
    fn range_multiple_topics() {
        let p = topics(&[("x", 3), ("y", 5)]);
        let members = vec![member("b", &["x", "y"]), member("a", &["y", "x"])];
        let out = RangeAssignor.assign(&members, &p);
        check_valid(&members, &p, &out);
        assert_eq!(parts(&out["a"], "x"), vec![0, 1]);
        assert_eq!(parts(&out["b"], "x"), vec![2]);
        assert_eq!(parts(&out["a"], "y"), vec![0, 1, 2]);
        assert_eq!(parts(&out["b"], "y"), vec![3, 4]);
    }

    #[test]
    fn range_member_subscribed_to_subset() {
        let p = topics(&[("x", 4), ("y", 4), ("unused", 3)]);
        let members = vec![
            member("a", &["x"]),
            member("b", &["x", "y"]),
            member("c", &["y", "gone"]),
        ];
        let out = RangeAssignor.assign(&members, &p);
        check_valid(&members, &p, &out);
        assert_eq!(
            out["a"].partitions,
            BTreeMap::from([("x".into(), vec![0, 1])])
        );
        assert_eq!(
            out["b"].partitions,
            BTreeMap::from([("x".into(), vec![2, 3]), ("y".into(), vec![0, 1])])
        );
        assert_eq!(
            out["c"].partitions,
            BTreeMap::from([("y".into(), vec![2, 3])])
        );
    }

    #[test]
    fn range_sorts_static_members_by_instance_id() {
        let p = topics(&[("t", 3)]);
        let mut a = member("a", &["t"]);
        a.group_instance_id = Some("z".into());
        let mut b = member("b", &["t"]);
        b.group_instance_id = Some("y".into());
        let c = member("c", &["t"]);
        let members = vec![a, b, c];
        let out = RangeAssignor.assign(&members, &p);
        assert_eq!(parts(&out["b"], "t"), vec![0]);
        assert_eq!(parts(&out["a"], "t"), vec![1]);
        assert_eq!(parts(&out["c"], "t"), vec![2]);
    }

    #[test]
    fn range_empty_topic_and_no_members() {
        let p = topics(&[("t", 0)]);
        let members = vec![member("a", &["t"])];
        let out = RangeAssignor.assign(&members, &p);
        assert_eq!(out["a"], Assignment::default());
        assert!(RangeAssignor.assign(&[], &topics(&[("t", 3)])).is_empty());
    }

    // ---- cooperative-sticky ---------------------------------------------------------------

    #[test]
    fn sticky_initial_balance() {
        let p = topics(&[("x", 5), ("y", 3)]);
        let members: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| member(id, &["x", "y"]))
            .collect();
        let out = CooperativeStickyAssignor.assign(&members, &p);
        assert_eq!(check_valid(&members, &p, &out).len(), 8);
        let mut counts: Vec<usize> = out.values().map(total).collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![2, 3, 3]);
        check_balanced(&members, &out);
    }

    #[test]
    fn sticky_member_joins_over_two_rounds() {
        let p = topics(&[("t", 6)]);
        let a = owning(member("a", &["t"]), 1, &[("t", &[0, 1, 2])]);
        let b = owning(member("b", &["t"]), 1, &[("t", &[3, 4, 5])]);
        let c = member("c", &["t"]);
        let members = vec![a, b, c];

        // Round 1: a and b each give up one partition, which nobody receives yet.
        let out = CooperativeStickyAssignor.assign(&members, &p);
        check_valid(&members, &p, &out);
        check_cooperative(&members, &out);
        assert_eq!(total(&out["a"]), 2);
        assert_eq!(total(&out["b"]), 2);
        assert!(parts(&out["a"], "t").iter().all(|p| [0, 1, 2].contains(p)));
        assert!(parts(&out["b"], "t").iter().all(|p| [3, 4, 5].contains(p)));
        assert!(out["c"].partitions.is_empty());

        // Round 2: a and b revoked them; c gets both and nothing else moves.
        let members2 = next_round(&members, &out, 2);
        let out2 = CooperativeStickyAssignor.assign(&members2, &p);
        assert_eq!(check_valid(&members2, &p, &out2).len(), 6);
        check_cooperative(&members2, &out2);
        assert_eq!(out2["a"], out["a"]);
        assert_eq!(out2["b"], out["b"]);
        assert_eq!(total(&out2["c"]), 2);
        check_balanced(&members2, &out2);

        // Round 3: stable.
        let members3 = next_round(&members2, &out2, 3);
        assert_eq!(CooperativeStickyAssignor.assign(&members3, &p), out2);
    }

    #[test]
    fn sticky_member_leaves() {
        let p = topics(&[("t", 6)]);
        let members = vec![
            owning(member("a", &["t"]), 4, &[("t", &[0, 1])]),
            owning(member("b", &["t"]), 4, &[("t", &[2, 3])]),
        ];
        // c, which owned 4 and 5, has left: its partitions are free at once.
        let out = CooperativeStickyAssignor.assign(&members, &p);
        assert_eq!(check_valid(&members, &p, &out).len(), 6);
        check_cooperative(&members, &out);
        assert_eq!(total(&out["a"]), 3);
        assert_eq!(total(&out["b"]), 3);
        assert!(parts(&out["a"], "t").starts_with(&[0, 1]));
        assert!(parts(&out["b"], "t").starts_with(&[2, 3]));
    }

    #[test]
    fn sticky_conflicting_claims_higher_generation_wins() {
        let p = topics(&[("t", 4)]);
        let members = vec![
            owning(member("a", &["t"]), 3, &[("t", &[0, 1])]),
            owning(member("b", &["t"]), 5, &[("t", &[1, 2, 3])]),
        ];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        check_valid(&members, &p, &out);
        check_cooperative(&members, &out);
        // b (generation 5) owns 1: a's stale claim does not count, a keeps only 0, and the
        // partition b gives up for balance waits a round.
        assert_eq!(parts(&out["a"], "t"), vec![0]);
        assert_eq!(total(&out["b"]), 2);
        let members2 = next_round(&members, &out, 6);
        let out2 = CooperativeStickyAssignor.assign(&members2, &p);
        assert_eq!(check_valid(&members2, &p, &out2).len(), 4);
        assert_eq!(out2["b"], out["b"]);
        assert_eq!(total(&out2["a"]), 2);

        // Equal generations: the member sorting first wins; the other revokes.
        let members = vec![
            owning(member("a", &["t"]), 5, &[("t", &[0, 1])]),
            owning(member("b", &["t"]), 5, &[("t", &[1, 2, 3])]),
        ];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        check_cooperative(&members, &out);
        assert_eq!(parts(&out["a"], "t"), vec![0, 1]);
        assert_eq!(parts(&out["b"], "t"), vec![2, 3]);

        // The same with the generations swapped: a wins partition 1.
        let members = vec![
            owning(member("a", &["t"]), 6, &[("t", &[0, 1])]),
            owning(member("b", &["t"]), 5, &[("t", &[1, 2, 3])]),
        ];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        check_cooperative(&members, &out);
        assert_eq!(parts(&out["a"], "t"), vec![0, 1]);
        assert_eq!(parts(&out["b"], "t"), vec![2, 3]);

        // Generation carried in 4 bytes of user data (Java cooperative-sticky, v1 subscription).
        let mut a = owning(member("a", &["t"]), -1, &[("t", &[0, 1])]);
        a.subscription.user_data = Some(Bytes::from_static(&[0, 0, 0, 9]));
        let b = owning(member("b", &["t"]), 5, &[("t", &[1, 2, 3])]);
        let members = vec![a, b];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        assert_eq!(parts(&out["a"], "t"), vec![0, 1]);
    }

    #[test]
    fn sticky_unequal_subscriptions() {
        let p = topics(&[("x", 4), ("y", 2)]);
        let members = vec![member("a", &["x"]), member("b", &["x", "y"])];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        assert_eq!(check_valid(&members, &p, &out).len(), 6);
        assert_eq!(total(&out["a"]), 3);
        assert_eq!(parts(&out["b"], "y"), vec![0, 1]);
        assert_eq!(total(&out["b"]), 3);

        // A member alone on a big topic cannot be helped; the shared topic goes to the other.
        let p = topics(&[("x", 2), ("big", 10)]);
        let members = vec![member("a", &["x"]), member("b", &["x", "big"])];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        assert_eq!(parts(&out["a"], "x"), vec![0, 1]);
        assert_eq!(total(&out["b"]), 10);
        check_balanced(&members, &out);
    }

    #[test]
    fn sticky_drops_stale_ownership() {
        let p = topics(&[("x", 2), ("y", 2)]);
        let members = vec![
            // a no longer subscribes to y, and x-7 does not exist.
            owning(
                member("a", &["x"]),
                2,
                &[("x", &[0, 7]), ("y", &[0, 1]), ("gone", &[0])],
            ),
            member("b", &["x", "y"]),
        ];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        check_valid(&members, &p, &out);
        check_cooperative(&members, &out);
        // y-0 and y-1 are planned for b, but a still holds them until it revokes them.
        assert_eq!(
            out["a"].partitions,
            BTreeMap::from([("x".into(), vec![0, 1])])
        );
        assert!(out["b"].partitions.is_empty());
        let members2 = next_round(&members, &out, 3);
        let out2 = CooperativeStickyAssignor.assign(&members2, &p);
        assert_eq!(out2["a"], out["a"]);
        assert_eq!(parts(&out2["b"], "y"), vec![0, 1]);
        assert_eq!(check_valid(&members2, &p, &out2).len(), 4);
    }

    #[test]
    fn sticky_is_deterministic_and_order_independent() {
        let p = topics(&[("x", 7), ("y", 3)]);
        let members = vec![
            owning(member("c", &["x", "y"]), 2, &[("x", &[0, 1, 2, 3])]),
            member("a", &["x"]),
            owning(member("b", &["y", "x"]), 2, &[("y", &[0]), ("x", &[4])]),
        ];
        let out = CooperativeStickyAssignor.assign(&members, &p);
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(CooperativeStickyAssignor.assign(&reversed, &p), out);
        assert_eq!(CooperativeStickyAssignor.assign(&members, &p), out);
    }

    fn random_group(rng: &mut StdRng) -> (Vec<MemberSubscription>, BTreeMap<String, i32>) {
        let topic_count = rng.random_range(1..=4);
        let p: BTreeMap<String, i32> = (0..topic_count)
            .map(|t| (format!("t{t}"), rng.random_range(0..=9)))
            .collect();
        let names: Vec<String> = p.keys().cloned().collect();
        let member_count = rng.random_range(1..=6);
        let same = rng.random_bool(0.3);
        let members = (0..member_count)
            .map(|i| {
                let mut subs: Vec<&str> = names
                    .iter()
                    .filter(|_| same || rng.random_bool(0.6))
                    .map(String::as_str)
                    .collect();
                if subs.is_empty() {
                    subs.push(&names[0]);
                }
                member(&format!("m{i:02}"), &subs)
            })
            .collect();
        (members, p)
    }

    fn subscribed_partitions(members: &[MemberSubscription], p: &BTreeMap<String, i32>) -> usize {
        p.iter()
            .filter(|(t, _)| members.iter().any(|m| m.subscription.topics.contains(t)))
            .map(|(_, &n)| usize::try_from(n).unwrap_or(0))
            .sum()
    }

    #[test]
    fn sticky_property_fresh_groups_balanced() {
        let mut rng = StdRng::seed_from_u64(0x0574_7a7a);
        for _ in 0..500 {
            let (members, p) = random_group(&mut rng);
            let out = CooperativeStickyAssignor.assign(&members, &p);
            let assigned = check_valid(&members, &p, &out);
            assert_eq!(assigned.len(), subscribed_partitions(&members, &p));
            check_balanced(&members, &out);
            let range = RangeAssignor.assign(&members, &p);
            assert_eq!(check_valid(&members, &p, &range).len(), assigned.len());
        }
    }

    #[test]
    fn sticky_property_churn_converges() {
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..200 {
            let (mut members, p) = random_group(&mut rng);
            let names: Vec<String> = p.keys().cloned().collect();
            let mut generation = 1;
            let mut out = CooperativeStickyAssignor.assign(&members, &p);
            for step in 0..8 {
                generation += 1;
                members = next_round(&members, &out, generation);
                // Churn for a few rounds: members leave or join.
                if step < 4 {
                    if members.len() > 1 && rng.random_bool(0.3) {
                        let i = rng.random_range(0..members.len());
                        members.remove(i);
                    }
                    if rng.random_bool(0.4) {
                        let topic = &names[rng.random_range(0..names.len())];
                        members.push(member(&format!("n{step}"), &[topic]));
                    }
                }
                // Now and then a stale member also claims a partition at an older generation.
                if step < 4 && rng.random_bool(0.3) {
                    let i = rng.random_range(0..members.len());
                    let topic = names[rng.random_range(0..names.len())].clone();
                    let partition = rng.random_range(0..10);
                    let m = &mut members[i].subscription;
                    m.generation_id = generation - 1;
                    m.owned_partitions.push((topic, vec![partition]));
                }
                out = CooperativeStickyAssignor.assign(&members, &p);
                check_valid(&members, &p, &out);
                check_cooperative(&members, &out);
            }
            // After four quiet rounds everything is assigned and balanced, and stays put.
            assert_eq!(
                check_valid(&members, &p, &out).len(),
                subscribed_partitions(&members, &p)
            );
            check_balanced(&members, &out);
            let members = next_round(&members, &out, generation + 1);
            assert_eq!(CooperativeStickyAssignor.assign(&members, &p), out);
        }
    }

    #[test]
    fn sticky_large_group_is_quick_and_sticky() {
        let p = topics(&[("a", 1000), ("b", 1000), ("c", 999)]);
        let all = ["a", "b", "c"];
        // One member owns everything; 99 join.
        let owned: Vec<i32> = (0..1000).collect();
        let mut members = vec![owning(
            member("m000", &all),
            1,
            &[("a", &owned), ("b", &owned), ("c", &owned[..999])],
        )];
        members.extend((1..100).map(|i| member(&format!("m{i:03}"), &all)));
        let out = CooperativeStickyAssignor.assign(&members, &p);
        check_cooperative(&members, &out);
        assert_eq!(total(&out["m000"]), 30);
        let members = next_round(&members, &out, 2);
        let out = CooperativeStickyAssignor.assign(&members, &p);
        assert_eq!(check_valid(&members, &p, &out).len(), 2999);
        check_balanced(&members, &out);
        // One more member: exactly the partitions it needs move, each from a different member.
        let mut grown = next_round(&members, &out, 3);
        grown.push(member("m100", &all));
        let next = CooperativeStickyAssignor.assign(&grown, &p);
        check_cooperative(&grown, &next);
        let lost: usize = members
            .iter()
            .map(|m| total(&out[&m.member_id]) - total(&next[&m.member_id]))
            .sum();
        assert_eq!(lost, 29);
        assert!(members
            .iter()
            .all(|m| total(&out[&m.member_id]) - total(&next[&m.member_id]) <= 1));
    }

    #[test]
    fn assignor_names() {
        assert_eq!(assignor_by_name("range").map(|a| a.name()), Some("range"));
        let sticky = assignor_by_name("cooperative-sticky").expect("known");
        assert_eq!(sticky.name(), "cooperative-sticky");
        assert_eq!(sticky.protocol(), RebalanceProtocol::Cooperative);
        assert_eq!(RangeAssignor.protocol(), RebalanceProtocol::Eager);
        assert!(assignor_by_name("roundrobin-ish").is_none());
    }

    // ---- encoding -------------------------------------------------------------------------

    fn full_subscription() -> Subscription {
        Subscription {
            topics: vec!["orders".into(), "payments".into()],
            owned_partitions: vec![("orders".into(), vec![0, 2]), ("payments".into(), vec![1])],
            generation_id: 7,
            user_data: Some(Bytes::from_static(b"\x01\x02")),
            rack_id: Some("rack-a".into()),
        }
    }

    #[test]
    fn subscription_round_trip_every_version() {
        let s = full_subscription();
        for version in 0..=3 {
            let bytes = encode_subscription(&s, version).expect("encode");
            assert_eq!(i16::from_be_bytes([bytes[0], bytes[1]]), version);
            let d = decode_subscription(&bytes).expect("decode");
            let mut want = s.clone();
            if version < 1 {
                want.owned_partitions.clear();
            }
            if version < 2 {
                want.generation_id = -1;
            }
            if version < 3 {
                want.rack_id = None;
            }
            assert_eq!(d, want, "v{version}");

            // Trailing bytes are ignored; a newer version is read with the v3 layout.
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[9, 9, 9]);
            assert_eq!(decode_subscription(&longer).expect("trailing"), want);
        }
        let mut v4 = encode_subscription(&s, 3).expect("encode").to_vec();
        v4[1] = 4;
        v4.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decode_subscription(&v4).expect("v4"), s);

        let empty = Subscription::default();
        let bytes = encode_subscription(&empty, SUBSCRIPTION_VERSION).expect("encode");
        assert_eq!(decode_subscription(&bytes).expect("decode"), empty);
        assert!(encode_subscription(&s, 4).is_err());
        assert!(encode_subscription(&s, -1).is_err());
    }

    #[test]
    fn assignment_round_trip() {
        for a in [
            Assignment::default(),
            Assignment {
                partitions: BTreeMap::from([("a".into(), vec![3, 1]), ("b".into(), vec![0])]),
                user_data: Some(Bytes::from_static(b"hi")),
            },
        ] {
            let bytes = encode_assignment(&a).expect("encode");
            assert_eq!(i16::from_be_bytes([bytes[0], bytes[1]]), ASSIGNMENT_VERSION);
            assert_eq!(decode_assignment(&bytes).expect("decode"), a);
            for version in [0u8, 2, 3, 5] {
                let mut other = bytes.to_vec();
                other[1] = version;
                other.push(0xff);
                assert_eq!(decode_assignment(&other).expect("other version"), a);
            }
        }
        assert_eq!(
            decode_assignment(&[]).expect("empty"),
            Assignment::default()
        );
    }

    #[test]
    fn decode_java_shaped_bytes() {
        // v0 subscription: version, topics ["t1", "topic2"], user_data null.
        let mut v0 = vec![0, 0, 0, 0, 0, 2, 0, 2];
        v0.extend_from_slice(b"t1");
        v0.extend_from_slice(&[0, 6]);
        v0.extend_from_slice(b"topic2");
        v0.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let s = decode_subscription(&v0).expect("decode v0");
        assert_eq!(s.topics, vec!["t1".to_owned(), "topic2".to_owned()]);
        assert_eq!(s.user_data, None);
        assert!(s.owned_partitions.is_empty());
        assert_eq!(s.generation_id, -1);
        assert_eq!(s.rack_id, None);

        // v1 subscription with owned partitions: topics ["t"], user_data null, owned t:[0, 5].
        let v1: Vec<u8> = [
            &[0, 1][..],
            &[0, 0, 0, 1, 0, 1, b't'],
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5],
        ]
        .concat();
        let s = decode_subscription(&v1).expect("decode v1");
        assert_eq!(s.owned_partitions, vec![("t".to_owned(), vec![0, 5])]);

        // v0 assignment: t:[1, 2], user_data empty (not null).
        let a: Vec<u8> = [
            &[0, 0][..],
            &[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2],
            &[0, 0, 0, 0],
        ]
        .concat();
        let a = decode_assignment(&a).expect("decode assignment");
        assert_eq!(a.partitions, BTreeMap::from([("t".into(), vec![1, 2])]));
        assert_eq!(a.user_data, Some(Bytes::new()));
    }

    #[test]
    fn decode_truncated_and_garbage_is_error() {
        let full = encode_subscription(&full_subscription(), 3).expect("encode");
        for version in 0..=3 {
            let bytes = encode_subscription(&full_subscription(), version).expect("encode");
            for cut in 0..bytes.len() {
                assert!(
                    decode_subscription(&bytes[..cut]).is_err(),
                    "v{version} cut {cut}"
                );
            }
        }
        let assignment = Assignment {
            partitions: BTreeMap::from([("t".into(), vec![1, 2])]),
            user_data: None,
        };
        let bytes = encode_assignment(&assignment).expect("encode");
        for cut in 1..bytes.len() {
            assert!(decode_assignment(&bytes[..cut]).is_err(), "cut {cut}");
        }
        // Negative version, absurd counts and lengths, bad UTF-8.
        assert!(decode_subscription(&[0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_subscription(&[0, 0, 0, 0, 0, 1, 0x7f, 0xff]).is_err());
        assert!(
            decode_subscription(&[0, 0, 0, 0, 0, 1, 0, 1, 0xc3, 0xff, 0xff, 0xff, 0xff]).is_err()
        );
        assert!(decode_assignment(&[0, 1, 0x80, 0, 0, 0]).is_err());
        assert!(decode_assignment(&[0, 1, 0, 0, 0, 0, 0x7f, 0, 0, 0]).is_err());

        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..5000 {
            let len = rng.random_range(0..40);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && junk.len() >= 2 {
                junk[0] = 0;
                junk[1] = rng.random_range(0..4);
            }
            let _ = decode_subscription(&junk);
            let _ = decode_assignment(&junk);
            // Flip one byte of a valid encoding.
            let mut flipped = full.to_vec();
            let i = rng.random_range(0..flipped.len());
            flipped[i] = rng.random();
            let _ = decode_subscription(&flipped);
        }
    }
}
