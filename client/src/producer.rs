//! The producer: records accumulate per partition into batches (sealed at `batch_size` or
//! after `linger`), a sender task ships the ready batches of each leader in one Produce
//! request, with up to `max_in_flight` requests pipelined per broker.
//!
//! Idempotence (on by default with `acks=all`, as in the Java client): the producer takes an
//! id from InitProducerId and numbers every partition's batches; a batch is resent with the
//! same bytes, so the broker drops what it already has. Retriable failures go back to the
//! front of their partition's queue, in sequence order, until `delivery_timeout` passes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::{FutureExt, Shared};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::produce_request::ProduceRequest;
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::cluster::Client;
use crate::error::{Error, Result};
use crate::records::{max_record_size, BatchBuilder, Compression, Header};

#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// -1 (all), 0 or 1.
    pub acks: i16,
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// Uncompressed bytes at which a batch is sealed.
    pub batch_size: usize,
    pub compression: Compression,
    /// Number batches so that retries never duplicate (needs `acks=all`).
    pub idempotent: bool,
    /// Produce requests in flight per broker.
    pub max_in_flight: usize,
    /// Bytes of records held before `send` waits for room.
    pub buffer_memory: usize,
    /// How long a record may take, retries included, before its delivery fails.
    pub delivery_timeout: Duration,
    /// Most bytes of batches in one Produce request.
    pub max_request_size: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            linger: Duration::from_millis(5),
            batch_size: 1_000_000,
            compression: Compression::None,
            idempotent: true,
            max_in_flight: 5,
            buffer_memory: 64 << 20,
            delivery_timeout: Duration::from_secs(120),
            max_request_size: 16 << 20,
        }
    }
}

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: by key hash (murmur2, as the Java client), or sticky for records without a key.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; `None` for now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// Where a record landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 with `acks=0` (the broker does not say).
    pub offset: i64,
    pub timestamp: i64,
}

/// The batch's base offset (-1 with acks=0) and when the broker's answer arrived.
type BatchOutcome = std::result::Result<(i64, Instant), Arc<Error>>;
type BatchReceiver = Shared<oneshot::Receiver<BatchOutcome>>;

/// Resolves when the record's batch is acknowledged (or has failed for good).
pub struct DeliveryFuture {
    rx: BatchReceiver,
    topic: Arc<str>,
    partition: i32,
    delta: i32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Resolves to the outcome and the moment the broker's answer arrived (when it failed:
    /// the moment that was known), whenever the future is polled: what latency measurements
    /// need.
    pub fn timed(self) -> TimedDelivery {
        TimedDelivery(self)
    }

    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<(Result<RecordMetadata>, Instant)> {
        let outcome = match self.rx.poll_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(o) => o,
        };
        Poll::Ready(match outcome {
            Err(_) => (Err(Error::Closed), Instant::now()),
            Ok(Err(e)) => (Err(shared_error(&e)), Instant::now()),
            Ok(Ok((base, at))) => (
                Ok(RecordMetadata {
                    topic: self.topic.to_string(),
                    partition: self.partition,
                    offset: if base < 0 {
                        -1
                    } else {
                        base + i64::from(self.delta)
                    },
                    timestamp: self.timestamp,
                }),
                at,
            ),
        })
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_outcome(cx).map(|(r, _)| r)
    }
}

/// [`DeliveryFuture::timed`].
pub struct TimedDelivery(DeliveryFuture);

impl Future for TimedDelivery {
    type Output = (Result<RecordMetadata>, Instant);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll_outcome(cx)
    }
}

/// Errors are shared by every record of a batch; each caller gets its own copy.
fn shared_error(e: &Error) -> Error {
    match e {
        Error::Kafka { error, context } => Error::Kafka {
            error: *error,
            context: context.clone(),
        },
        Error::Timeout(s) => Error::Timeout(s.clone()),
        Error::Closed => Error::Closed,
        other => Error::Protocol(other.to_string()),
    }
}

struct OpenBatch {
    builder: BatchBuilder,
    created: Instant,
    tx: oneshot::Sender<BatchOutcome>,
    rx: BatchReceiver,
    memory: usize,
}

struct SealedBatch {
    /// `None` until the sender first takes it (then numbered and compressed).
    builder: Option<BatchBuilder>,
    bytes: Option<Bytes>,
    count: i32,
    sequence: Option<i32>,
    created: Instant,
    tx: oneshot::Sender<BatchOutcome>,
    memory: usize,
}

#[derive(Default)]
struct PartQueue {
    open: Option<OpenBatch>,
    sealed: VecDeque<SealedBatch>,
    next_sequence: i32,
    in_flight: usize,
    /// Bytes of the last batch sealed: the next one starts with that much room, so a busy
    /// partition's batches do not grow (and copy) their way up to `batch_size`.
    last_size: usize,
}

/// The queues of one topic.
struct TopicQueues {
    name: Arc<str>,
    /// Partitions the metadata knows; `parts` may be longer after a shrink-then-refresh.
    count: i32,
    /// The partition keyless records go to now (sticky partitioning).
    sticky: i32,
    parts: Vec<PartQueue>,
    /// A leader or partition error: look the topic up again before the next record.
    stale: bool,
}

#[derive(Default)]
struct State {
    topics: HashMap<Arc<str>, TopicQueues>,
    in_flight: HashMap<i32, usize>,
    /// Batches not yet completed (open, sealed or in flight).
    outstanding: usize,
    flushing: usize,
    closed: bool,
}

struct Shared_ {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    wake: Notify,
    idle: Notify,
    memory: Semaphore,
    leaders_stale: AtomicBool,
    producer_id: i64,
    producer_epoch: i16,
}

/// A producer. Cheap to clone; clones share batches and the sender.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared_>,
}

impl Producer {
    pub async fn new(client: Client, mut config: ProducerConfig) -> Result<Producer> {
        if !matches!(config.acks, -1..=1) {
            return Err(Error::Config(format!(
                "acks must be -1 (all), 0 or 1, not {}",
                config.acks
            )));
        }
        if config.acks != -1 {
            config.idempotent = false;
        }
        config.max_in_flight = config.max_in_flight.max(1);
        config.batch_size = config.batch_size.max(1024);
        let (producer_id, producer_epoch) = if config.idempotent {
            client
                .retry("init producer id", || async {
                    let conn = client.any_broker().await?;
                    let request = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000)
                        .with_producer_id((-1).into())
                        .with_producer_epoch(-1);
                    let r = client.timed(conn.call(&request)).await?;
                    Error::check(r.error_code, || "InitProducerId".into())?;
                    Ok((r.producer_id.0, r.producer_epoch))
                })
                .await?
        } else {
            (-1, -1)
        };
        let shared = Arc::new(Shared_ {
            memory: Semaphore::new(config.buffer_memory),
            client,
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            leaders_stale: AtomicBool::new(false),
            producer_id,
            producer_epoch,
        });
        tokio::spawn(sender(shared.clone()));
        Ok(Producer { shared })
    }

    /// The producer id the broker gave (-1 when not idempotent).
    pub fn producer_id(&self) -> i64 {
        self.shared.producer_id
    }

    /// Queues a record; waits only when `buffer_memory` is full. The returned future
    /// resolves when the broker has acknowledged the record.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let s = &self.shared;
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let size = max_record_size(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let permits = size.min(s.config.buffer_memory);
        s.memory
            .acquire_many(permits as u32)
            .await
            .map_err(|_| Error::Closed)?
            .forget();
        let result = loop {
            match self.append(&record, timestamp, size, permits) {
                Ok(Some(f)) => break Ok(f),
                Ok(None) => {
                    if let Err(e) = self.learn_topic(&record.topic).await {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if result.is_err() {
            s.memory.add_permits(permits);
        }
        result
    }

    /// Appends under the state lock; `Ok(None)` when the topic's partitions must be looked
    /// up first.
    fn append(
        &self,
        record: &ProducerRecord,
        timestamp: i64,
        size: usize,
        permits: usize,
    ) -> Result<Option<DeliveryFuture>> {
        let s = &self.shared;
        let mut st = s.state.lock().unwrap();
        let st = &mut *st;
        if st.closed {
            return Err(Error::Closed);
        }
        let Some(tq) = st
            .topics
            .get_mut(record.topic.as_str())
            .filter(|t| !t.stale)
        else {
            return Ok(None);
        };
        let count = tq.count;
        let partition = match record.partition {
            Some(p) if (0..count).contains(&p) => p,
            Some(p) => {
                return Err(Error::kafka(
                    3,
                    format!(
                        "partition {p} of topic {} ({count} partitions)",
                        record.topic
                    ),
                ))
            }
            None => match &record.key {
                Some(k) => ((murmur2(k) & 0x7fff_ffff) as i32) % count,
                None => tq.sticky,
            },
        };
        let batch_size = s.config.batch_size;
        let q = &mut tq.parts[partition as usize];
        let mut sealed_one = false;
        if let Some(open) = &q.open {
            if open.builder.count() > 0 && open.builder.size() + size > batch_size {
                seal(q);
                sealed_one = true;
            }
        }
        let mut new_batch = false;
        let last_size = q.last_size;
        let open = q.open.get_or_insert_with(|| {
            new_batch = true;
            let (tx, rx) = oneshot::channel();
            let room = (last_size + size).max(size.max(16 << 10) * 4);
            OpenBatch {
                builder: BatchBuilder::new(timestamp, room.min(batch_size + size)),
                created: Instant::now(),
                tx,
                rx: rx.shared(),
                memory: 0,
            }
        });
        let delta = open.builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        open.memory += permits;
        let future = DeliveryFuture {
            rx: open.rx.clone(),
            topic: tq.name.clone(),
            partition,
            delta,
            timestamp,
        };
        if open.builder.size() >= batch_size {
            seal(q);
            sealed_one = true;
        }
        if sealed_one && record.partition.is_none() && record.key.is_none() && count > 1 {
            // Sticky partitioning: a new partition for keyless records once a batch is full.
            tq.sticky = rand::random_range(0..count);
        }
        if new_batch {
            st.outstanding += 1;
        }
        if new_batch || sealed_one {
            s.wake.notify_one();
        }
        Ok(Some(future))
    }

    /// Looks up a topic's partitions (again, if it went stale) and makes its queues.
    async fn learn_topic(&self, topic: &str) -> Result<()> {
        let info = self.shared.client.refresh_topic(topic).await?;
        let count = info.partitions.len() as i32;
        if count == 0 {
            return Err(Error::kafka(5, format!("topic {topic} has no partitions")));
        }
        let mut st = self.shared.state.lock().unwrap();
        let tq = st
            .topics
            .entry(Arc::from(topic))
            .or_insert_with(|| TopicQueues {
                name: Arc::from(topic),
                count,
                sticky: rand::random_range(0..count),
                parts: Vec::new(),
                stale: false,
            });
        tq.count = count;
        tq.stale = false;
        if tq.sticky >= count {
            tq.sticky = 0;
        }
        if tq.parts.len() < count as usize {
            tq.parts.resize_with(count as usize, PartQueue::default);
        }
        Ok(())
    }

    /// Sends everything queued now and waits until every record sent so far is resolved.
    pub async fn flush(&self) {
        let s = &self.shared;
        s.state.lock().unwrap().flushing += 1;
        loop {
            let idle = s.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if s.state.lock().unwrap().outstanding == 0 {
                break;
            }
            s.wake.notify_one();
            idle.await;
        }
        s.state.lock().unwrap().flushing -= 1;
    }

    /// Flushes, then stops the sender.
    pub async fn close(&self) {
        self.flush().await;
        self.shared.state.lock().unwrap().closed = true;
        self.shared.wake.notify_one();
    }
}

fn seal(q: &mut PartQueue) {
    if let Some(open) = q.open.take() {
        q.last_size = open.builder.size();
        q.sealed.push_back(SealedBatch {
            count: open.builder.count(),
            builder: Some(open.builder),
            bytes: None,
            sequence: None,
            created: open.created,
            tx: open.tx,
            memory: open.memory,
        });
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The Java client's murmur2 (seed 0x9747b28c), so keyed records land where a Java producer
/// would put them.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A batch taken for one request.
struct InFlight {
    topic: Arc<str>,
    partition: i32,
    batch: SealedBatch,
}

async fn sender(s: Arc<Shared_>) {
    let mut leaders: HashMap<Arc<str>, Vec<i32>> = HashMap::new();
    // Per broker: resolves once the last request handed out is queued on the connection.
    let mut queued: HashMap<i32, oneshot::Receiver<()>> = HashMap::new();
    loop {
        let notified = s.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Which topics have something to send, and when the next open batch ripens.
        let (topics, closed, oldest) = {
            let st = s.state.lock().unwrap();
            let oldest = st
                .topics
                .values()
                .flat_map(|t| t.parts.iter())
                .filter_map(|q| match q.sealed.front() {
                    Some(b) => Some(b.created),
                    None => q.open.as_ref().map(|o| o.created),
                })
                .min();
            let topics: Vec<Arc<str>> = st
                .topics
                .values()
                .filter(|t| {
                    t.parts
                        .iter()
                        .any(|q| !q.sealed.is_empty() || q.open.is_some())
                })
                .map(|t| t.name.clone())
                .collect();
            (topics, st.closed && st.outstanding == 0, oldest)
        };
        if closed {
            return;
        }
        let mut unknown = false;
        // A lookup retries for as long as the client's `retry_timeout`: the queued batches
        // must not wait for it past their delivery timeout.
        let lookup_until = oldest
            .map_or(Instant::now(), |o| o + s.config.delivery_timeout)
            .max(Instant::now() + s.client.config().retry_backoff);
        for t in &topics {
            if !leaders.contains_key(t) {
                let lookup = tokio::time::timeout_at(lookup_until.into(), s.client.topic(t));
                match lookup
                    .await
                    .unwrap_or_else(|_| Err(Error::Timeout(format!("metadata of {t}"))))
                {
                    Ok(info) => {
                        let mut l = vec![-1; info.partitions.len()];
                        for p in &info.partitions {
                            if let Some(slot) = l.get_mut(p.partition as usize) {
                                *slot = p.leader;
                            }
                        }
                        leaders.insert(t.clone(), l);
                    }
                    Err(e) => {
                        tracing::debug!(topic = %t, error = %e, "no metadata yet");
                        unknown = true;
                    }
                }
            }
        }
        let (requests, mut next_ripe) = drain(&s, &leaders);
        if unknown {
            let retry_at = Instant::now() + s.client.config().retry_backoff;
            next_ripe = Some(next_ripe.map_or(retry_at, |n| n.min(retry_at)));
        }
        for (node, batches) in requests {
            let s = s.clone();
            let (done, next) = oneshot::channel();
            let after = queued.insert(node, next);
            tokio::spawn(async move { send_request(&s, node, batches, after, done).await });
        }
        match next_ripe {
            Some(at) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => notified.await,
        }
        expire(&s);
        // A request found a leader moved: look the leaders up again.
        if s.leaders_stale.swap(false, Ordering::Relaxed) {
            for t in leaders.keys() {
                s.client.invalidate(t);
            }
            leaders.clear();
        }
    }
}

/// Takes the batches that are ready and whose leader has room, grouped by leader. Returns
/// them and when the next open batch will be ready.
#[allow(clippy::type_complexity)]
fn drain(
    s: &Shared_,
    leaders: &HashMap<Arc<str>, Vec<i32>>,
) -> (Vec<(i32, Vec<InFlight>)>, Option<Instant>) {
    let now = Instant::now();
    let cfg = &s.config;
    let mut st = s.state.lock().unwrap();
    let st = &mut *st;
    let force = st.flushing > 0 || st.closed;
    let mut next_ripe: Option<Instant> = None;
    let mut by_node: HashMap<i32, (usize, Vec<InFlight>)> = HashMap::new();
    let parts = st.topics.values_mut().flat_map(|t| {
        let name = &t.name;
        t.parts
            .iter_mut()
            .enumerate()
            .map(move |(p, q)| (name, p as i32, q))
    });
    for (topic, partition, q) in parts {
        if let Some(open) = &q.open {
            let ripe = open.created + cfg.linger;
            if force || ripe <= now {
                seal(q);
            } else {
                next_ripe = Some(next_ripe.map_or(ripe, |n: Instant| n.min(ripe)));
            }
        }
        if q.sealed.is_empty() {
            continue;
        }
        let Some(&leader) = leaders.get(topic).and_then(|l| l.get(partition as usize)) else {
            continue;
        };
        if leader < 0 {
            continue;
        }
        let node_in_flight = st.in_flight.get(&leader).copied().unwrap_or(0);
        let entry = by_node.entry(leader).or_insert((0, Vec::new()));
        if node_in_flight >= cfg.max_in_flight {
            continue;
        }
        // One batch per partition per request (as the protocol expects).
        if entry.0 > 0 && entry.0 + q.sealed[0].size_hint() > cfg.max_request_size {
            continue;
        }
        let mut batch = q.sealed.pop_front().expect("not empty");
        if batch.sequence.is_none() && s.producer_id >= 0 {
            batch.sequence = Some(q.next_sequence);
            q.next_sequence = q.next_sequence.wrapping_add(batch.count);
        }
        entry.0 += batch.size_hint();
        q.in_flight += 1;
        entry.1.push(InFlight {
            topic: topic.clone(),
            partition,
            batch,
        });
    }
    let mut out = Vec::new();
    for (node, (_, batches)) in by_node {
        if batches.is_empty() {
            continue;
        }
        *st.in_flight.entry(node).or_default() += 1;
        out.push((node, batches));
    }
    (out, next_ripe)
}

impl SealedBatch {
    fn size_hint(&self) -> usize {
        match (&self.bytes, &self.builder) {
            (Some(b), _) => b.len(),
            (None, Some(b)) => b.size(),
            (None, None) => 0,
        }
    }
}

/// Fails batches that have waited longer than the delivery timeout.
fn expire(s: &Shared_) {
    let limit = s.config.delivery_timeout;
    let mut st = s.state.lock().unwrap();
    let mut done = Vec::new();
    let parts = st.topics.values_mut().flat_map(|t| {
        let name = &t.name;
        t.parts
            .iter_mut()
            .enumerate()
            .map(move |(p, q)| (name, p, q))
    });
    for (topic, partition, q) in parts {
        while q
            .sealed
            .front()
            .is_some_and(|b| b.created.elapsed() > limit)
        {
            let b = q.sealed.pop_front().expect("checked");
            done.push((b, format!("delivery to {topic}/{partition}")));
        }
    }
    let n = done.len();
    drop(st);
    for (b, what) in done {
        s.memory.add_permits(b.memory);
        let _ = b.tx.send(Err(Arc::new(Error::Timeout(format!(
            "{what}: not acknowledged within {limit:?}"
        )))));
    }
    finish_batches(s, n);
}

fn finish_batches(s: &Shared_, n: usize) {
    if n == 0 {
        return;
    }
    let mut st = s.state.lock().unwrap();
    st.outstanding -= n;
    if st.outstanding == 0 {
        s.idle.notify_waiters();
    }
}

/// The body of a Produce request (v3 to v12) as parts: the batches are not copied. The
/// layout is the protocol's: transactional id (null), acks, timeout, then per topic its name
/// and per partition its index and records; v9 and later use compact lengths and tagged
/// fields.
fn encode_produce(version: i16, acks: i16, timeout_ms: i32, batches: &[InFlight]) -> Vec<Bytes> {
    let flexible = version >= 9;
    let mut topics: Vec<(&Arc<str>, Vec<&InFlight>)> = Vec::new();
    for b in batches {
        match topics.iter_mut().find(|(t, _)| **t == b.topic) {
            Some((_, v)) => v.push(b),
            None => topics.push((&b.topic, vec![b])),
        }
    }
    let mut parts = Vec::with_capacity(batches.len() * 2 + 1);
    let mut head = BytesMut::with_capacity(256);
    let put_len = |buf: &mut BytesMut, n: usize, compact: bool| {
        if compact {
            let mut v = n as u64 + 1;
            while v >= 0x80 {
                buf.put_u8((v as u8) | 0x80);
                v >>= 7;
            }
            buf.put_u8(v as u8);
        } else {
            buf.put_i32(n as i32);
        }
    };
    if flexible {
        head.put_u8(0); // null transactional id
    } else {
        head.put_i16(-1);
    }
    head.put_i16(acks);
    head.put_i32(timeout_ms);
    put_len(&mut head, topics.len(), flexible);
    for (topic, batches) in topics {
        if flexible {
            put_len(&mut head, topic.len(), true);
        } else {
            head.put_i16(topic.len() as i16);
        }
        head.put_slice(topic.as_bytes());
        put_len(&mut head, batches.len(), flexible);
        for b in batches {
            let records = b.batch.bytes.clone().unwrap_or_default();
            head.put_i32(b.partition);
            put_len(&mut head, records.len(), flexible);
            parts.push(head.split().freeze());
            parts.push(records);
            if flexible {
                head.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            head.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        head.put_u8(0); // request tagged fields
    }
    parts.push(head.freeze());
    parts
}

fn queue_of<'a>(st: &'a mut State, b: &InFlight) -> Option<&'a mut PartQueue> {
    st.topics
        .get_mut(&*b.topic)
        .and_then(|t| t.parts.get_mut(b.partition as usize))
}

/// Sends one Produce request and settles its batches.
/// Requests to one broker are queued on its connection in the order the sender took their
/// batches (`after` resolves when the one before is queued; `done` tells the next), so a
/// partition's batches reach the broker in sequence order.
async fn send_request(
    s: &Shared_,
    node: i32,
    mut batches: Vec<InFlight>,
    after: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
) {
    let cfg = &s.config;
    // Number and compress the batches taken for the first time (off the state lock).
    for b in &mut batches {
        if b.batch.bytes.is_none() {
            let builder = b
                .batch
                .builder
                .take()
                .expect("unsent batch has its records");
            match builder.finish(
                cfg.compression,
                s.producer_id,
                s.producer_epoch,
                b.batch.sequence.unwrap_or(-1),
            ) {
                Ok(bytes) => b.batch.bytes = Some(bytes),
                Err(e) => tracing::error!(error = %e, "cannot build a batch"),
            }
        }
    }
    let timeout_ms = cfg.delivery_timeout.as_millis().min(30_000) as i32;
    // Per partition: error code and base offset (`None`: acks=0, no answer).
    type Answers = HashMap<(String, i32), (i16, i64)>;
    let result: Result<Option<Answers>> = async {
        if let Some(after) = after {
            let _ = after.await;
        }
        let conn = s.client.broker(node).await?;
        let version = conn.version_in::<ProduceRequest>(3, 12)?;
        let body = encode_produce(version, cfg.acks, timeout_ms, &batches);
        let answer = s
            .client
            .timed(conn.queue_parts::<ProduceRequest>(version, body, cfg.acks != 0))
            .await;
        drop(done);
        let Some(response) = s.client.timed(answer?).await? else {
            return Ok(None);
        };
        let mut out = HashMap::new();
        for t in response.responses {
            for p in t.partition_responses {
                out.insert(
                    (t.name.0.to_string(), p.index),
                    (p.error_code, p.base_offset),
                );
            }
        }
        Ok(Some(out))
    }
    .await;
    let mut stale = false;
    let mut settled = Vec::new();
    let mut retry = Vec::new();
    match result {
        Ok(None) => settled.extend(batches.into_iter().map(|b| (b, Ok(-1)))),
        Ok(Some(answers)) => {
            for b in batches {
                match answers.get(&(b.topic.to_string(), b.partition)) {
                    Some(&(0, base)) => settled.push((b, Ok(base))),
                    // DUPLICATE_SEQUENCE_NUMBER: the broker has this batch already.
                    Some(&(46, base)) => settled.push((b, Ok(base))),
                    Some(&(code, _)) => {
                        let e =
                            Error::kafka(code, format!("produce to {}/{}", b.topic, b.partition));
                        // OUT_OF_ORDER_SEQUENCE_NUMBER follows an earlier batch's retry.
                        if e.is_retriable() || code == 45 {
                            stale |= e.needs_metadata_refresh();
                            retry.push((b, e));
                        } else {
                            settled.push((b, Err(e)));
                        }
                    }
                    None => retry.push((
                        b,
                        Error::Protocol("partition missing from the answer".into()),
                    )),
                }
            }
        }
        Err(e) if e.is_retriable() => {
            stale = true;
            retry.extend(batches.into_iter().map(|b| (b, shared_error(&e))));
        }
        Err(e) => settled.extend(batches.into_iter().map(|b| (b, Err(shared_error(&e))))),
    }
    let stale_topics: Vec<Arc<str>> = if stale {
        retry.iter().map(|(b, _)| b.topic.clone()).collect()
    } else {
        Vec::new()
    };
    let mut finished = Vec::new();
    {
        let mut st = s.state.lock().unwrap();
        if let Some(n) = st.in_flight.get_mut(&node) {
            *n = n.saturating_sub(1);
        }
        let at = Instant::now();
        for (b, outcome) in settled {
            if let Some(q) = queue_of(&mut st, &b) {
                q.in_flight -= 1;
            }
            finished.push((b.batch, outcome.map(|base| (base, at))));
        }
        for (b, e) in retry {
            let Some(q) = queue_of(&mut st, &b) else {
                finished.push((b.batch, Err(e)));
                continue;
            };
            q.in_flight -= 1;
            if b.batch.created.elapsed() > cfg.delivery_timeout {
                finished.push((b.batch, Err(e)));
                continue;
            }
            tracing::debug!(topic = %b.topic, partition = b.partition, error = %e, "retrying a batch");
            // Back in sequence order, ahead of batches never sent.
            let seq = b.batch.sequence;
            let at = q
                .sealed
                .iter()
                .position(|o| o.sequence.is_none() || (seq.is_some() && o.sequence > seq))
                .unwrap_or(q.sealed.len());
            q.sealed.insert(at, b.batch);
        }
        if stale {
            for t in &stale_topics {
                if let Some(tq) = st.topics.get_mut(&**t) {
                    tq.stale = true;
                }
            }
        }
    }
    let n = finished.len();
    for (batch, outcome) in finished {
        s.memory.add_permits(batch.memory);
        let _ = batch.tx.send(outcome.map_err(Arc::new));
    }
    finish_batches(s, n);
    if stale {
        s.leaders_stale.store(true, Ordering::Relaxed);
        tokio::time::sleep(s.client.config().retry_backoff).await;
    }
    s.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn produce_bodies_match_the_protocol_crate_at_every_version() {
        let batch = |topic: &str, partition: i32, len: usize| {
            let (tx, _) = oneshot::channel();
            InFlight {
                topic: Arc::from(topic),
                partition,
                batch: SealedBatch {
                    builder: None,
                    bytes: Some(Bytes::from(vec![partition as u8; len])),
                    count: 1,
                    sequence: None,
                    created: Instant::now(),
                    tx,
                    memory: 0,
                },
            }
        };
        let batches = vec![batch("a", 0, 10), batch("bb", 3, 300), batch("a", 1, 0)];
        for version in 3..=12 {
            let ours: Vec<u8> = encode_produce(version, -1, 1234, &batches).concat();
            let request = ProduceRequest::default()
                .with_transactional_id(None)
                .with_acks(-1)
                .with_timeout_ms(1234)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("a")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(vec![0u8; 10]))),
                            PartitionProduceData::default()
                                .with_index(1)
                                .with_records(Some(Bytes::new())),
                        ]),
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("bb")))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(3)
                            .with_records(Some(Bytes::from(vec![3u8; 300])))]),
                ]);
            let mut theirs = BytesMut::new();
            request.encode(&mut theirs, version).unwrap();
            assert_eq!(ours, theirs.to_vec(), "version {version}");
        }
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values the Java client's Utils.murmur2 gives for these keys.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
