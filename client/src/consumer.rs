//! Reading: ListOffsets, and a fetcher over a set of assigned partitions that keeps one
//! Fetch in flight per leader, so the broker reads the next records while the caller handles
//! the last ones.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinHandle;

use crate::cluster::Client;
use crate::error::{Error, Result};
use crate::records::{parse_batches, ConsumedRecord};

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// Where reading a partition starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    Earliest,
    Latest,
    Offset(i64),
    /// The first record with a timestamp at or after this (ms since the epoch); the end of
    /// the log if there is none.
    Timestamp(i64),
}

impl StartOffset {
    /// The ListOffsets timestamp that asks for this position (`None` for a plain offset).
    fn list_timestamp(self) -> Option<i64> {
        match self {
            StartOffset::Earliest => Some(-2),
            StartOffset::Latest => Some(-1),
            StartOffset::Timestamp(t) => Some(t),
            StartOffset::Offset(_) => None,
        }
    }
}

/// An answer of ListOffsets for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    /// -1 when a timestamp lookup found no record at or after the time.
    pub offset: i64,
    pub timestamp: i64,
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

impl Client {
    /// ListOffsets for each partition, asked of each partition's leader. `spec` is a
    /// ListOffsets timestamp: -2 earliest, -1 latest, -3 max timestamp, or ms since the epoch.
    pub async fn list_offsets(
        &self,
        wanted: &[(TopicPartition, i64)],
    ) -> Result<BTreeMap<TopicPartition, ListedOffset>> {
        self.retry("list offsets", || async {
            let mut by_leader: HashMap<i32, Vec<&(TopicPartition, i64)>> = HashMap::new();
            for w in wanted {
                let (leader, _) = self.leader(&w.0 .0, w.0 .1).await?;
                by_leader.entry(leader).or_default().push(w);
            }
            let mut out = BTreeMap::new();
            for (leader, parts) in by_leader {
                let conn = self.broker(leader).await?;
                let mut topics: Vec<ListOffsetsTopic> = Vec::new();
                for ((t, p), ts) in parts.iter().map(|w| (&w.0, w.1)) {
                    let part = ListOffsetsPartition::default()
                        .with_partition_index(*p)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(ts);
                    match topics.iter_mut().find(|x| *x.name.0 == **t) {
                        Some(x) => x.partitions.push(part),
                        None => topics.push(
                            ListOffsetsTopic::default()
                                .with_name(topic_name(t))
                                .with_partitions(vec![part]),
                        ),
                    }
                }
                let min = if parts.iter().any(|w| w.1 == -3) {
                    7
                } else {
                    1
                };
                let version = conn.version_in::<ListOffsetsRequest>(min, 10)?;
                let request = ListOffsetsRequest::default()
                    .with_replica_id((-1).into())
                    .with_topics(topics);
                let response = self.timed(conn.call_at(&request, version)).await?;
                for t in response.topics {
                    for p in t.partitions {
                        let tp = (t.name.0.to_string(), p.partition_index);
                        Error::check(p.error_code, || {
                            format!("list offsets of {}/{}", tp.0, tp.1)
                        })?;
                        out.insert(
                            tp,
                            ListedOffset {
                                offset: p.offset,
                                timestamp: p.timestamp,
                            },
                        );
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Resolves start positions to offsets (a timestamp past the end resolves to the end).
    pub async fn resolve_offsets(
        &self,
        starts: &[(TopicPartition, StartOffset)],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut out = BTreeMap::new();
        let mut ask = Vec::new();
        for (tp, s) in starts {
            match s.list_timestamp() {
                None => {
                    if let StartOffset::Offset(o) = s {
                        out.insert(tp.clone(), *o);
                    }
                }
                Some(ts) => ask.push((tp.clone(), ts)),
            }
        }
        if ask.is_empty() {
            return Ok(out);
        }
        let listed = self.list_offsets(&ask).await?;
        let mut past_end = Vec::new();
        for (tp, _) in &ask {
            match listed.get(tp) {
                Some(l) if l.offset >= 0 => {
                    out.insert(tp.clone(), l.offset);
                }
                _ => past_end.push((tp.clone(), -1)),
            }
        }
        if !past_end.is_empty() {
            for (tp, l) in self.list_offsets(&past_end).await? {
                out.insert(tp, l.offset);
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// How long the broker may hold a fetch waiting for `min_bytes`.
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// Most bytes in one fetch answer.
    pub max_bytes: i32,
    /// Most bytes per partition in one fetch answer (raised for a batch larger than this).
    pub partition_max_bytes: i32,
    /// Where to go when a position is out of range (`Earliest` or `Latest`).
    pub reset: StartOffset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            reset: StartOffset::Latest,
        }
    }
}

/// A record with where it came from.
#[derive(Clone, Debug)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub record: ConsumedRecord,
}

/// What one fetch answer said about one partition.
struct FetchedPartition {
    tp: TopicPartition,
    fetch_offset: i64,
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    records: Vec<ConsumedRecord>,
    next_offset: Option<i64>,
    /// The first batch did not fit in `partition_max_bytes`: its size.
    needs_bytes: Option<usize>,
}

type FetchTask = JoinHandle<(i32, Result<Vec<FetchedPartition>>)>;

/// Reads assigned partitions from their positions on.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    positions: BTreeMap<TopicPartition, i64>,
    /// Positions still to resolve with ListOffsets.
    unresolved: BTreeMap<TopicPartition, StartOffset>,
    high_watermarks: BTreeMap<TopicPartition, i64>,
    /// Per-partition fetch size raised for oversized batches.
    max_bytes_for: HashMap<TopicPartition, i32>,
    in_flight: FuturesUnordered<FetchTask>,
    busy_nodes: HashSet<i32>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for t in self.in_flight.iter() {
            t.abort();
        }
    }
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            unresolved: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
            max_bytes_for: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            busy_nodes: HashSet::new(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Adds (or moves) a partition to read from `start`.
    pub fn assign(&mut self, tp: TopicPartition, start: StartOffset) {
        self.positions.remove(&tp);
        self.unresolved.insert(tp, start);
    }

    /// Moves an assigned partition's position to `offset` at once.
    pub fn seek(&mut self, tp: TopicPartition, offset: i64) {
        self.unresolved.remove(&tp);
        self.positions.insert(tp, offset);
    }

    /// Stops reading a partition.
    pub fn unassign(&mut self, tp: &TopicPartition) {
        self.positions.remove(tp);
        self.unresolved.remove(tp);
    }

    /// Every assigned partition.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self
            .positions
            .keys()
            .chain(self.unresolved.keys())
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The offset of the next record to return, once resolved.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.positions.get(tp).copied()
    }

    pub fn positions(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.positions
    }

    /// The high watermark the last fetch of `tp` reported.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        self.high_watermarks.get(tp).copied()
    }

    /// True when every assigned partition is resolved and read up to the high watermark its
    /// last fetch reported.
    pub fn at_end(&self) -> bool {
        self.unresolved.is_empty()
            && self
                .positions
                .iter()
                .all(|(tp, pos)| self.high_watermarks.get(tp).is_some_and(|hw| *pos >= *hw))
    }

    /// Resolves the end offsets of every assigned partition (so `at_end` can be decided
    /// before any fetch answered).
    pub async fn fetch_end_offsets(&mut self) -> Result<()> {
        let ask: Vec<_> = self.assignment().into_iter().map(|tp| (tp, -1)).collect();
        for (tp, l) in self.client.list_offsets(&ask).await? {
            self.high_watermarks.insert(tp, l.offset);
        }
        Ok(())
    }

    /// Waits up to `timeout` for records; returns what the first answering fetch brought
    /// (possibly nothing).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.resolve().await?;
        self.start_fetches().await?;
        if self.in_flight.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(Vec::new());
        }
        let done = match tokio::time::timeout(timeout, self.in_flight.next()).await {
            Err(_) | Ok(None) => return Ok(Vec::new()),
            Ok(Some(done)) => done,
        };
        let (node, result) = done.map_err(|e| Error::Protocol(format!("fetch task: {e}")))?;
        self.busy_nodes.remove(&node);
        let out = match result {
            Ok(parts) => self.absorb(parts),
            Err(e) if e.is_retriable() => {
                tracing::debug!(error = %e, node, "fetch failed, retrying");
                self.client.metadata(Some(&[])).await.ok();
                tokio::time::sleep(self.client.config().retry_backoff).await;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        };
        // Prefetch: the next request goes out before the caller handles these records.
        self.start_fetches().await?;
        out
    }

    async fn resolve(&mut self) -> Result<()> {
        if self.unresolved.is_empty() {
            return Ok(());
        }
        let starts: Vec<_> = self
            .unresolved
            .iter()
            .map(|(tp, s)| (tp.clone(), *s))
            .collect();
        let resolved = self.client.resolve_offsets(&starts).await?;
        for (tp, offset) in resolved {
            self.unresolved.remove(&tp);
            self.positions.insert(tp, offset);
        }
        Ok(())
    }

    /// Sends a fetch to every leader with assigned partitions and none in flight.
    async fn start_fetches(&mut self) -> Result<()> {
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        let positions: Vec<_> = self
            .positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        for (tp, offset) in positions {
            let leader = match self.client.leader(&tp.0, tp.1).await {
                Ok((leader, _)) => leader,
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            if !self.busy_nodes.contains(&leader) {
                by_leader.entry(leader).or_default().push((tp, offset));
            }
        }
        for (node, parts) in by_leader {
            let conn = match self.client.broker(node).await {
                Ok(c) => c,
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            let version = conn.version_in::<FetchRequest>(4, 12)?;
            let mut topics: Vec<FetchTopic> = Vec::new();
            for ((t, p), offset) in &parts {
                let max = self
                    .max_bytes_for
                    .get(&(t.clone(), *p))
                    .copied()
                    .unwrap_or(self.config.partition_max_bytes);
                let part = FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(*offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(max);
                match topics.iter_mut().find(|x| *x.topic.0 == **t) {
                    Some(x) => x.partitions.push(part),
                    None => topics.push(
                        FetchTopic::default()
                            .with_topic(topic_name(t))
                            .with_partitions(vec![part]),
                    ),
                }
            }
            let request = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(self.config.max_wait.as_millis() as i32)
                .with_min_bytes(self.config.min_bytes)
                .with_max_bytes(self.config.max_bytes)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(topics);
            let client = self.client.clone();
            let timeout = self.config.max_wait + client.config().request_timeout;
            self.busy_nodes.insert(node);
            self.in_flight.push(tokio::spawn(async move {
                let result = async {
                    let response = tokio::time::timeout(timeout, conn.call_at(&request, version))
                        .await
                        .map_err(|_| Error::Timeout(format!("fetch from broker {node}")))??;
                    Error::check(response.error_code, || "fetch".into())?;
                    let offsets: HashMap<TopicPartition, i64> = parts.into_iter().collect();
                    let mut out = Vec::new();
                    for t in response.responses {
                        let topic = t.topic.0.to_string();
                        for p in t.partitions {
                            let tp = (topic.clone(), p.partition_index);
                            let Some(&fetch_offset) = offsets.get(&tp) else {
                                continue;
                            };
                            let mut fp = FetchedPartition {
                                tp,
                                fetch_offset,
                                error_code: p.error_code,
                                high_watermark: p.high_watermark,
                                log_start_offset: p.log_start_offset,
                                records: Vec::new(),
                                next_offset: None,
                                needs_bytes: None,
                            };
                            if p.error_code == 0 {
                                if let Some(data) = p.records {
                                    let parsed = parse_batches(data, fetch_offset)?;
                                    fp.next_offset = parsed.next_offset;
                                    fp.needs_bytes = parsed.first_batch_len;
                                    fp.records = parsed.records;
                                }
                            }
                            out.push(fp);
                        }
                    }
                    Ok(out)
                }
                .await;
                (node, result)
            }));
        }
        Ok(())
    }

    fn absorb(&mut self, parts: Vec<FetchedPartition>) -> Result<Vec<ConsumerRecord>> {
        let mut out = Vec::new();
        for fp in parts {
            // Seeked or unassigned while the fetch was out: its answer is stale.
            if self.positions.get(&fp.tp) != Some(&fp.fetch_offset) {
                continue;
            }
            match fp.error_code {
                0 => {}
                // OFFSET_OUT_OF_RANGE: go where the reset policy says.
                1 => {
                    tracing::debug!(topic = %fp.tp.0, partition = fp.tp.1, offset = fp.fetch_offset,
                        log_start = fp.log_start_offset, "offset out of range, resetting");
                    self.positions.remove(&fp.tp);
                    self.unresolved.insert(fp.tp, self.config.reset);
                    continue;
                }
                code => {
                    let e = Error::kafka(code, format!("fetch {}/{}", fp.tp.0, fp.tp.1));
                    if e.is_retriable() {
                        self.client.invalidate(&fp.tp.0);
                        continue;
                    }
                    return Err(e);
                }
            }
            self.high_watermarks
                .insert(fp.tp.clone(), fp.high_watermark);
            let mut next = fp.fetch_offset;
            if let Some(last) = fp.records.last() {
                next = next.max(last.offset + 1);
            }
            if let Some(n) = fp.next_offset {
                next = next.max(n);
            }
            if let Some(need) = fp.needs_bytes {
                let need = i32::try_from(need).unwrap_or(i32::MAX);
                self.max_bytes_for
                    .insert(fp.tp.clone(), need.max(self.config.partition_max_bytes));
            }
            self.positions.insert(fp.tp.clone(), next);
            let topic: Arc<str> = Arc::from(fp.tp.0.as_str());
            out.extend(fp.records.into_iter().map(|record| ConsumerRecord {
                topic: topic.clone(),
                partition: fp.tp.1,
                record,
            }));
        }
        Ok(out)
    }
}
