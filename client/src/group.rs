//! A consumer-group member (the classic protocol): JoinGroup / SyncGroup with the range or
//! cooperative-sticky assignor, heartbeats in the background, commits, LeaveGroup on close.
//!
//! With an eager assignor every rebalance revokes everything first; with cooperative-sticky
//! a member keeps what it still owns and gives up only what moves, then joins once more so the
//! partitions it released can go to their new owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::GroupId;
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinHandle;

use crate::assignor::{
    assignor_by_name, decode_assignment, decode_subscription, encode_assignment,
    encode_subscription, Assignment, Assignor, MemberSubscription, RebalanceProtocol, Subscription,
};
use crate::cluster::Client;
use crate::conn::Connection;
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, StartOffset, TopicPartition};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub group: String,
    pub topics: Vec<String>,
    /// Assignor names in order of preference ("range", "cooperative-sticky").
    pub assignors: Vec<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// A static member's id (KIP-345), kept across restarts.
    pub instance_id: Option<String>,
    /// Where a partition without a committed offset starts (`Earliest` or `Latest`).
    pub reset: StartOffset,
    /// Commit positions this often from `poll` (`None`: only on `commit`).
    pub auto_commit: Option<Duration>,
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> GroupConfig {
        GroupConfig {
            group: group.into(),
            topics,
            assignors: vec!["range".into(), "cooperative-sticky".into()],
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            instance_id: None,
            reset: StartOffset::Latest,
            auto_commit: Some(Duration::from_secs(5)),
            consumer: ConsumerConfig::default(),
        }
    }
}

/// What a rebalance did to this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

#[derive(Default)]
struct Membership {
    member_id: String,
    generation: i32,
}

/// A member of a consumer group.
pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    consumer: Consumer,
    assignors: Vec<Box<dyn Assignor>>,
    membership: Arc<Mutex<Membership>>,
    /// Set by the heartbeat task when the group starts rebalancing.
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    /// This member's own connection to the coordinator (see
    /// [`Client::connect_group_coordinator`]).
    coordinator: Option<Arc<Connection>>,
    owned: BTreeSet<TopicPartition>,
    protocol: RebalanceProtocol,
    joined: bool,
    last_commit: Instant,
    committed: BTreeMap<TopicPartition, i64>,
    events: Vec<RebalanceEvent>,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl GroupConsumer {
    pub fn new(client: Client, config: GroupConfig) -> Result<GroupConsumer> {
        let mut assignors = Vec::new();
        for name in &config.assignors {
            assignors.push(assignor_by_name(name).ok_or_else(|| {
                Error::Config(format!(
                    "unknown assignor {name:?} (range, cooperative-sticky)"
                ))
            })?);
        }
        if assignors.is_empty() {
            return Err(Error::Config("no assignor given".into()));
        }
        if config.topics.is_empty() {
            return Err(Error::Config(
                "a group member must subscribe to a topic".into(),
            ));
        }
        let mut consumer_config = config.consumer.clone();
        consumer_config.reset = config.reset;
        Ok(GroupConsumer {
            consumer: Consumer::new(client.clone(), consumer_config),
            client,
            config,
            assignors,
            membership: Default::default(),
            rejoin: Arc::new(AtomicBool::new(true)),
            heartbeat: None,
            coordinator: None,
            owned: BTreeSet::new(),
            protocol: RebalanceProtocol::Eager,
            joined: false,
            last_commit: Instant::now(),
            committed: BTreeMap::new(),
            events: Vec::new(),
        })
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    pub fn member_id(&self) -> String {
        self.membership.lock().unwrap().member_id.clone()
    }

    pub fn generation(&self) -> i32 {
        self.membership.lock().unwrap().generation
    }

    /// Rebalance events since the last call.
    pub fn take_events(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut self.events)
    }

    /// Moves an owned partition's position (what the next commit stores).
    pub fn seek(&mut self, tp: TopicPartition, offset: i64) {
        if self.owned.contains(&tp) {
            self.consumer.seek(tp, offset);
        }
    }

    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Joins (or rejoins) the group when needed, then reads.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        while self.rejoin.load(Ordering::Relaxed) {
            self.join().await?;
        }
        if let Some(every) = self.config.auto_commit {
            if self.last_commit.elapsed() >= every {
                self.commit().await.or_else(ignore_rebalance)?;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.consumer.poll(left).await
    }

    /// Commits the position of every owned partition (what `poll` has returned).
    pub async fn commit(&mut self) -> Result<()> {
        let offsets: BTreeMap<TopicPartition, i64> = self
            .owned
            .iter()
            .filter_map(|tp| self.consumer.position(tp).map(|o| (tp.clone(), o)))
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .collect();
        self.last_commit = Instant::now();
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, generation) = {
            let m = self.membership.lock().unwrap();
            (m.member_id.clone(), m.generation)
        };
        let result = self
            .client
            .commit_offsets(
                &self.config.group,
                &offsets,
                Some((&member_id, generation, self.config.instance_id.as_deref())),
            )
            .await;
        if let Err(e) = &result {
            if matches!(e.code(), Some(22 | 25 | 27)) {
                self.rejoin.store(true, Ordering::Relaxed);
            }
        }
        result?;
        self.committed.extend(offsets);
        Ok(())
    }

    /// Commits, then leaves the group so the others rebalance at once.
    pub async fn close(mut self) -> Result<()> {
        if self.joined {
            self.commit().await.or_else(ignore_rebalance)?;
        }
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let member_id = self.member_id();
        if member_id.is_empty() {
            return Ok(());
        }
        let group = self.config.group.clone();
        let conn = self.client.group_coordinator(&group).await?;
        let version = conn.version::<LeaveGroupRequest>()?;
        let mut request = LeaveGroupRequest::default().with_group_id(GroupId(s(&group)));
        if version >= 3 {
            request.members = vec![MemberIdentity::default()
                .with_member_id(s(&member_id))
                .with_group_instance_id(self.config.instance_id.as_deref().map(s))];
        } else {
            request.member_id = s(&member_id);
        }
        let r = self.client.timed(conn.call_at(&request, version)).await?;
        Error::check(r.error_code, || format!("leave group {group}"))
    }

    /// One JoinGroup + SyncGroup round.
    async fn join(&mut self) -> Result<()> {
        if self.protocol == RebalanceProtocol::Eager && !self.owned.is_empty() {
            // Eager: commit and give up everything before joining.
            if self.joined {
                self.commit().await.or_else(ignore_rebalance)?;
            }
            let revoked: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
            for tp in &revoked {
                self.consumer.unassign(tp);
            }
            self.events.push(RebalanceEvent::Revoked(revoked));
        }
        self.rejoin.store(false, Ordering::Relaxed);
        // No heartbeats while joining: one queued behind the JoinGroup would come back with
        // the old generation and undo the join.
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let group = self.config.group.clone();
        let conn = match self.coordinator.as_ref().filter(|c| !c.is_dead()) {
            Some(c) => c.clone(),
            None => self.client.connect_group_coordinator(&group).await?,
        };
        self.coordinator = Some(conn.clone());
        let generation = self.generation();
        let mut protocols = Vec::new();
        for a in &self.assignors {
            let sub = Subscription {
                topics: self.config.topics.clone(),
                owned_partitions: if a.protocol() == RebalanceProtocol::Cooperative {
                    group_by_topic(&self.owned)
                } else {
                    Vec::new()
                },
                generation_id: generation,
                user_data: None,
                rack_id: None,
            };
            let version = if a.protocol() == RebalanceProtocol::Cooperative {
                3
            } else {
                1
            };
            protocols.push(
                JoinGroupRequestProtocol::default()
                    .with_name(s(a.name()))
                    .with_metadata(encode_subscription(&sub, version)?),
            );
        }
        let join_timeout = self.config.rebalance_timeout + Duration::from_secs(5);
        let response = loop {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_session_timeout_ms(self.config.session_timeout.as_millis() as i32)
                .with_rebalance_timeout_ms(self.config.rebalance_timeout.as_millis() as i32)
                .with_member_id(s(&self.member_id()))
                .with_group_instance_id(self.config.instance_id.as_deref().map(s))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(protocols.clone());
            let r = tokio::time::timeout(join_timeout, conn.call(&request))
                .await
                .map_err(|_| Error::Timeout(format!("JoinGroup of {group}")))
                .and_then(|r| r)
                .inspect_err(|_| self.coordinator = None)?;
            match r.error_code {
                // MEMBER_ID_REQUIRED: join again with the id the coordinator chose.
                79 => self.membership.lock().unwrap().member_id = r.member_id.to_string(),
                // UNKNOWN_MEMBER_ID: our id expired; start over.
                25 => self.membership.lock().unwrap().member_id.clear(),
                0 => break r,
                code => {
                    let e = Error::kafka(code, format!("join group {group}"));
                    if e.is_retriable() || code == 27 {
                        if e.needs_metadata_refresh() {
                            self.coordinator = None;
                        }
                        self.rejoin.store(true, Ordering::Relaxed);
                        tokio::time::sleep(self.client.config().retry_backoff).await;
                        return Ok(());
                    }
                    return Err(e);
                }
            }
        };
        let member_id = response.member_id.to_string();
        let generation = response.generation_id;
        {
            let mut m = self.membership.lock().unwrap();
            m.member_id = member_id.clone();
            m.generation = generation;
        }
        let protocol_name = response
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let assignor_index = self
            .assignors
            .iter()
            .position(|a| a.name() == protocol_name)
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "the group chose unknown assignor {protocol_name:?}"
                ))
            })?;
        self.protocol = self.assignors[assignor_index].protocol();
        let assignments = if *response.leader == *member_id && !response.skip_assignment {
            let members: Vec<MemberSubscription> = response
                .members
                .iter()
                .map(|m| {
                    Ok(MemberSubscription {
                        member_id: m.member_id.to_string(),
                        group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                        subscription: decode_subscription(&m.metadata)?,
                    })
                })
                .collect::<Result<_>>()?;
            let topics: BTreeSet<String> = members
                .iter()
                .flat_map(|m| m.subscription.topics.iter().cloned())
                .collect();
            let topics: Vec<String> = topics.into_iter().collect();
            let meta = self.client.metadata(Some(&topics)).await?;
            let counts: BTreeMap<String, i32> = meta
                .topics
                .iter()
                .map(|(n, t)| (n.clone(), t.partitions.len() as i32))
                .collect();
            let plan = self.assignors[assignor_index].assign(&members, &counts);
            plan.into_iter()
                .map(|(m, a)| {
                    Ok(SyncGroupRequestAssignment::default()
                        .with_member_id(s(&m))
                        .with_assignment(encode_assignment(&a)?))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(generation)
            .with_member_id(s(&member_id))
            .with_group_instance_id(self.config.instance_id.as_deref().map(s))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(s(&protocol_name)))
            .with_assignments(assignments);
        // A connection that failed or has an abandoned request on it is not used again.
        let sync = tokio::time::timeout(join_timeout, conn.call(&request))
            .await
            .map_err(|_| Error::Timeout(format!("SyncGroup of {group}")))
            .and_then(|r| r)
            .inspect_err(|_| self.coordinator = None)?;
        match sync.error_code {
            0 => {}
            code @ (22 | 25 | 27) => {
                if code != 27 {
                    self.membership.lock().unwrap().member_id.clear();
                }
                self.rejoin.store(true, Ordering::Relaxed);
                return Ok(());
            }
            code => return Err(Error::kafka(code, format!("sync group {group}"))),
        }
        let assignment: Assignment = if sync.assignment.is_empty() {
            Assignment::default()
        } else {
            decode_assignment(&sync.assignment)?
        };
        let new: BTreeSet<TopicPartition> = assignment
            .partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        let revoked: Vec<_> = self.owned.difference(&new).cloned().collect();
        let added: Vec<_> = new.difference(&self.owned).cloned().collect();
        if !revoked.is_empty() {
            // Cooperative: hand back what moves (after committing it), then join again.
            self.commit().await.or_else(ignore_rebalance)?;
            for tp in &revoked {
                self.consumer.unassign(tp);
                self.owned.remove(tp);
            }
            self.events.push(RebalanceEvent::Revoked(revoked));
            self.rejoin.store(true, Ordering::Relaxed);
        }
        if !added.is_empty() {
            let committed = self.client.committed_offsets(&group, Some(&added)).await?;
            for tp in &added {
                let start = committed
                    .get(tp)
                    .map(|o| StartOffset::Offset(*o))
                    .unwrap_or(self.config.reset);
                if let Some(o) = committed.get(tp) {
                    self.committed.insert(tp.clone(), *o);
                }
                self.consumer.assign(tp.clone(), start);
                self.owned.insert(tp.clone());
            }
        }
        self.events.push(RebalanceEvent::Assigned(added));
        self.joined = true;
        self.start_heartbeat(conn);
        Ok(())
    }

    fn start_heartbeat(&mut self, conn: Arc<crate::conn::Connection>) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let group = self.config.group.clone();
        let instance = self.config.instance_id.clone();
        let membership = self.membership.clone();
        let rejoin = self.rejoin.clone();
        let every = self.config.heartbeat_interval;
        let client = self.client.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            let mut conn = conn;
            loop {
                tokio::time::sleep(every).await;
                let (member_id, generation) = {
                    let m = membership.lock().unwrap();
                    (m.member_id.clone(), m.generation)
                };
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_generation_id(generation)
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(instance.as_deref().map(s));
                match client.timed(conn.call(&request)).await {
                    Ok(r) if r.error_code == 0 => {}
                    Ok(r) => {
                        if matches!(r.error_code, 22 | 25) {
                            membership.lock().unwrap().member_id.clear();
                        }
                        rejoin.store(true, Ordering::Relaxed);
                        if r.error_code != 27 {
                            tracing::debug!(code = r.error_code, "heartbeat refused");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeat failed");
                        if let Ok(c) = client.connect_group_coordinator(&group).await {
                            conn = c;
                        }
                    }
                }
            }
        }));
    }
}

/// A commit refused because the group is rebalancing is not fatal: the member rejoins.
fn ignore_rebalance(e: Error) -> Result<()> {
    match e.code() {
        Some(22 | 25 | 27) => Ok(()),
        _ => Err(e),
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group_by_topic(tps: &BTreeSet<TopicPartition>) -> Vec<(String, Vec<i32>)> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        out.entry(t.clone()).or_default().push(*p);
    }
    out.into_iter().collect()
}
