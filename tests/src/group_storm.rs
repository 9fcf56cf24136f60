//! Many consumer-group members at once, each with its own connection as a real consumer has,
//! speaking the classic group protocol directly (a librdkafka instance per member would cost
//! threads and memory the test machine does not have): every member joins (with the
//! member-id round trip of KIP-394), syncs (the leader assigns each member its own id),
//! and heartbeats, rejoining whenever the broker says a rebalance is in progress, as real
//! clients do. Used by the many-groups test and by `groups-bench`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, ResponseHeader,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::raw::encode_request;

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
/// Connections opened at once: the listen backlog (somaxconn, often 4096) must not overflow,
/// or connects wait for SYN retries.
const CONNECT_PARALLELISM: usize = 256;
/// Read timeout of one call; JoinGroup waits for the whole rebalance, which may be long
/// when thousands of members join on two cores.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub struct Storm {
    pub groups: usize,
    pub members: usize,
    /// Group ids are `<prefix>-<n>`.
    pub prefix: String,
    pub session_timeout_ms: i32,
    pub heartbeat_interval: Duration,
}

/// One member's latest stable membership.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    pub member_id: String,
    pub generation: i32,
    /// What SyncGroup handed this member (the leader assigns each member its own id).
    pub assignment: Bytes,
}

/// A running storm: every member's task, and its latest membership.
pub struct Running {
    pub members: Vec<Arc<Mutex<Membership>>>,
    pub joins: Arc<AtomicUsize>,
    pub heartbeats: Arc<AtomicUsize>,
    pub heartbeat_latencies_us: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
}

impl Storm {
    pub fn group_id(&self, g: usize) -> String {
        format!("{}-{g}", self.prefix)
    }

    /// Starts every member (on the current tokio runtime); they keep heartbeating until
    /// [`Running::stop`].
    pub fn start(&self, addr: SocketAddr) -> Running {
        let connects = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
        let stop = Arc::new(AtomicBool::new(false));
        let joins = Arc::new(AtomicUsize::new(0));
        let heartbeats = Arc::new(AtomicUsize::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let mut members = Vec::new();
        let mut tasks = Vec::new();
        for g in 0..self.groups {
            for _ in 0..self.members {
                let state = Arc::new(Mutex::new(Membership::default()));
                members.push(state.clone());
                let m = MemberTask {
                    group: self.group_id(g),
                    session_timeout_ms: self.session_timeout_ms,
                    heartbeat_interval: self.heartbeat_interval,
                    state,
                    stop: stop.clone(),
                    joins: joins.clone(),
                    heartbeats: heartbeats.clone(),
                    latencies: latencies.clone(),
                };
                let connects = connects.clone();
                tasks.push(tokio::spawn(async move {
                    let conn = {
                        let _permit = connects.acquire().await?;
                        Conn::connect(addr).await?
                    };
                    m.run(conn).await
                }));
            }
        }
        Running {
            members,
            joins,
            heartbeats,
            heartbeat_latencies_us: latencies,
            stop,
            tasks,
        }
    }
}

impl Running {
    /// Stops every member (they stop heartbeating; their connections close) and returns
    /// the first error any member hit.
    pub async fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let mut first = Ok(());
        for t in self.tasks {
            let r = t
                .await
                .map_err(|e| anyhow!("member task: {e}"))
                .and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Members whose task has ended (with an error: they only end when stopped).
    pub fn failed(&self) -> usize {
        self.tasks.iter().filter(|t| t.is_finished()).count()
    }
}

/// `DescribeGroups` (v5) for `groups`, in batches: (state, member ids) per group.
pub async fn describe(addr: SocketAddr, groups: &[String]) -> Result<Vec<(String, Vec<String>)>> {
    let mut conn = Conn::connect(addr).await?;
    let mut out = Vec::with_capacity(groups.len());
    for chunk in groups.chunks(100) {
        let req = DescribeGroupsRequest::default().with_groups(
            chunk
                .iter()
                .map(|g| GroupId(StrBytes::from_string(g.clone())))
                .collect(),
        );
        let resp = conn.call(5, &req).await?;
        for g in resp.groups {
            if g.error_code != 0 {
                bail!(
                    "DescribeGroups {}: error {}",
                    g.group_id.as_str(),
                    g.error_code
                );
            }
            out.push((
                g.group_state.to_string(),
                g.members.iter().map(|m| m.member_id.to_string()).collect(),
            ));
        }
    }
    Ok(out)
}

/// Waits until every group of `storm` is Stable with all its members, each holding the
/// assignment of the generation it is in. Returns how long that took.
pub async fn wait_stable(
    addr: SocketAddr,
    storm: &Storm,
    running: &Running,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let groups: Vec<String> = (0..storm.groups).map(|g| storm.group_id(g)).collect();
    loop {
        if running.failed() > 0 {
            bail!("{} member task(s) ended early", running.failed());
        }
        let described = describe(addr, &groups).await?;
        let unstable = described
            .iter()
            .filter(|(state, members)| state != "Stable" || members.len() != storm.members)
            .count();
        let unassigned = running
            .members
            .iter()
            .filter(|m| {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                m.generation == 0 || m.assignment != m.member_id.as_bytes()
            })
            .count();
        if unstable == 0 && unassigned == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let example = described
                .iter()
                .find(|(s, m)| s != "Stable" || m.len() != storm.members);
            bail!(
                "after {timeout:?}: {unstable} of {} groups not Stable with {} members (e.g. {example:?}), \
                 {unassigned} members without their assignment",
                storm.groups,
                storm.members
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct MemberTask {
    group: String,
    session_timeout_ms: i32,
    heartbeat_interval: Duration,
    state: Arc<Mutex<Membership>>,
    stop: Arc<AtomicBool>,
    joins: Arc<AtomicUsize>,
    heartbeats: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Vec<u64>>>,
}

impl MemberTask {
    async fn run(self, mut conn: Conn) -> Result<()> {
        let group_id = GroupId(StrBytes::from_string(self.group.clone()));
        let mut member_id = String::new();
        'rejoin: while !self.stop.load(Ordering::SeqCst) {
            // Join, then sync; any "rebalance in progress" answer means joining again.
            let join = JoinGroupRequest::default()
                .with_group_id(group_id.clone())
                .with_session_timeout_ms(self.session_timeout_ms)
                .with_rebalance_timeout_ms(self.session_timeout_ms)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(Bytes::from_static(b"storm"))]);
            let joined = conn.call(9, &join).await?;
            self.joins.fetch_add(1, Ordering::Relaxed);
            match joined.error_code {
                0 => {}
                MEMBER_ID_REQUIRED | REBALANCE_IN_PROGRESS => {
                    if !joined.member_id.is_empty() {
                        member_id = joined.member_id.to_string();
                    }
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    member_id.clear();
                    continue;
                }
                e => bail!("{}: JoinGroup error {e}", self.group),
            }
            member_id = joined.member_id.to_string();
            let assignments = if joined.leader == joined.member_id {
                joined
                    .members
                    .iter()
                    .map(|m| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(m.member_id.clone())
                            .with_assignment(Bytes::copy_from_slice(m.member_id.as_bytes()))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let sync = SyncGroupRequest::default()
                .with_group_id(group_id.clone())
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone())
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(joined.protocol_name.clone())
                .with_assignments(assignments);
            let synced = conn.call(5, &sync).await?;
            match synced.error_code {
                0 => {}
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                UNKNOWN_MEMBER_ID => {
                    member_id.clear();
                    continue;
                }
                e => bail!("{}: SyncGroup error {e}", self.group),
            }
            *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Membership {
                member_id: member_id.clone(),
                generation: joined.generation_id,
                assignment: synced.assignment,
            };
            // Heartbeat until told to rejoin.
            while !self.stop.load(Ordering::SeqCst) {
                tokio::time::sleep(self.heartbeat_interval).await;
                let hb = HeartbeatRequest::default()
                    .with_group_id(group_id.clone())
                    .with_generation_id(joined.generation_id)
                    .with_member_id(joined.member_id.clone());
                let t = Instant::now();
                let r = conn.call(4, &hb).await?;
                self.heartbeats.fetch_add(1, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t.elapsed().as_micros() as u64);
                match r.error_code {
                    0 => {}
                    REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue 'rejoin,
                    UNKNOWN_MEMBER_ID => {
                        member_id.clear();
                        continue 'rejoin;
                    }
                    e => bail!("{}: Heartbeat error {e}", self.group),
                }
            }
        }
        Ok(())
    }
}

/// One connection, one request at a time (as a consumer talks to its coordinator).
struct Conn {
    stream: TcpStream,
    next_correlation: i32,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = tokio::time::timeout(CALL_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .context("connect")?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            next_correlation: 1,
        })
    }

    async fn call<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response> {
        let id = self.next_correlation;
        self.next_correlation += 1;
        self.stream
            .write_all(&encode_request(version, id, req)?)
            .await?;
        let mut body = tokio::time::timeout(CALL_TIMEOUT, self.read_frame())
            .await
            .with_context(|| format!("{:?} v{version}: no answer", R::KEY))??;
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        if header.correlation_id != id {
            bail!("correlation id {} != {id}", header.correlation_id);
        }
        R::Response::decode(&mut body, version)
    }

    async fn read_frame(&mut self) -> Result<Bytes> {
        let len = self.stream.read_i32().await.context("read frame length")?;
        if !(0..=16 << 20).contains(&len) {
            bail!("implausible frame length {len}");
        }
        let mut body = BytesMut::zeroed(len as usize);
        self.stream.read_exact(&mut body).await?;
        Ok(body.freeze())
    }
}
