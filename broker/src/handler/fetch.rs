//! Fetch (key 1): whole batches from each requested offset, within the partition and
//! response byte limits (but at least one batch), long-polling up to `max_wait_ms` until
//! `min_bytes` are available. Fetch sessions are not kept: every response is sessionless
//! (session id 0), which clients handle by sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

use super::{Ctx, Reply, Response, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::protocol::{record_set, RecordRef};

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
/// Isolation level 1: READ_COMMITTED (last stable offset == high watermark without
/// transactions, and an empty aborted-transactions list).
const READ_COMMITTED: i8 = 1;

/// One partition to read, resolved against the catalog.
#[derive(Clone)]
struct Want {
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// Set when the partition cannot be read at all (unknown topic or partition).
    error: Option<i16>,
    /// The high watermark the last read saw: a long poll waits for it to move past this,
    /// so every wake-up has new data to read.
    seen_hw: i64,
}

#[derive(Clone)]
struct TopicWant {
    /// Storage name; `None` when the topic is unknown.
    name: Option<String>,
    wire_name: TopicName,
    topic_id: Uuid,
    parts: Vec<Want>,
    /// The topic's per-partition egress cap (`strata.partition.egress.bytes.per.sec`).
    egress_cap: Option<f64>,
}

/// What one pass over the partitions found.
struct Pass {
    parts: Vec<Vec<PartitionData>>,
    /// The large record sets, sent by reference.
    refs: Vec<RecordRef>,
    bytes: usize,
    any_error: bool,
    /// Each partition's high watermark as read (-1 when it could not be read), in plan order.
    high_watermarks: Vec<Vec<i64>>,
    /// What it read, per partition read: (topic, bytes, records), counted in the metrics
    /// only for the pass that is sent (a long poll discards earlier ones).
    sent: Vec<(String, usize, u64)>,
    /// Partitions of capped topics read: (topic id, topic, partition, cap, bytes), counted
    /// against their egress caps for the pass that is sent.
    capped: Vec<(Uuid, String, i32, f64, usize)>,
    /// The longest throttle an egress cap called for (its partition was not read).
    throttle: Duration,
}

pub async fn handle(ctx: &Arc<Ctx>, session: &Session, version: i16, req: FetchRequest) -> Reply {
    if req.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(FETCH_SESSION_ID_NOT_FOUND)
            .into();
    }
    let plan = resolve(ctx, session, version, &req);
    // The broker's fetch_max_bytes caps what the client asks for (a non-positive ask means
    // "no limit" to old clients); partition limits are capped in `resolve`. A consumer
    // quota caps it further, so that one response can fit the quota at all.
    let max_bytes = usize::try_from(req.max_bytes)
        .ok()
        .filter(|&b| b > 0)
        .map_or(ctx.config.fetch_max_bytes, |b| {
            b.min(ctx.config.fetch_max_bytes)
        });
    let max_bytes = match (!ctx.quotas.is_empty()).then(|| {
        let client = crate::quota::Client::new(&session.principal, &session.quota.client_id);
        ctx.quotas.fetch_bound(&client)
    }) {
        Some(Some(bound)) => max_bytes.min(bound),
        _ => max_bytes,
    };
    let committed = req.isolation_level == READ_COMMITTED;
    let first = read(ctx, plan.clone(), max_bytes, committed).await;
    let min_bytes = req.min_bytes.max(0) as usize;
    let throttled = !first.throttle.is_zero();
    if first.bytes >= min_bytes.max(1) || req.max_wait_ms <= 0 || first.any_error || throttled {
        return Reply::Now(Box::new(response(ctx, version, &plan, first)));
    }
    let ctx = ctx.clone();
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms as u64);
    let mut plan = plan;
    note_high_watermarks(&mut plan, &first);
    Reply::Later(Box::pin(async move {
        loop {
            // Waits for a high watermark to move past what the last read saw (not merely
            // past the fetch offset: with data there but fewer than min_bytes, that would
            // return at once, and the loop would re-read without pause until max_wait).
            let stopping = tokio::select! {
                _ = wait_for_data(&ctx, &plan, deadline) => false,
                _ = ctx.shutdown.cancelled() => true,
            };
            let pass = read(&ctx, plan.clone(), max_bytes, committed).await;
            let done = pass.bytes >= min_bytes.max(1) || pass.any_error || !pass.throttle.is_zero();
            if done || stopping || Instant::now() >= deadline {
                return response(&ctx, version, &plan, pass);
            }
            note_high_watermarks(&mut plan, &pass);
        }
    }))
}

fn resolve(ctx: &Ctx, session: &Session, version: i16, req: &FetchRequest) -> Vec<TopicWant> {
    req.topics
        .iter()
        .map(|t| {
            let info = if version >= 13 {
                ctx.store.topic_by_id(t.topic_id)
            } else {
                ctx.store.topic(&t.topic)
            };
            let unknown = if version >= 13 {
                code::UNKNOWN_TOPIC_ID
            } else {
                code::UNKNOWN_TOPIC_OR_PARTITION
            };
            // READ on the topic: by name, checked before existence (nothing leaks); by id,
            // an unknown id stays UNKNOWN_TOPIC_ID (there is no name to check).
            let allowed = match (&info, version >= 13) {
                (Some(i), _) => authorize(ctx, session, op::READ, Resource::Topic(&i.name)),
                (None, false) => authorize(ctx, session, op::READ, Resource::Topic(&t.topic)),
                (None, true) => true,
            };
            let egress_cap = info.as_ref().and_then(|i| {
                crate::quota::partition::cap(&i.configs, crate::quota::partition::EGRESS_BYTES)
            });
            let bound = egress_cap.map_or(usize::MAX, |c| ctx.quotas.partitions.read_bound(c));
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let error = match &info {
                        _ if !allowed => Some(code::TOPIC_AUTHORIZATION_FAILED),
                        None => Some(unknown),
                        Some(i) if p.partition < 0 || p.partition >= i.partitions => {
                            Some(code::UNKNOWN_TOPIC_OR_PARTITION)
                        }
                        // Leader epoch 0 forever: a client that claims a later one is ahead of us.
                        Some(_) if p.current_leader_epoch > 0 => Some(code::UNKNOWN_LEADER_EPOCH),
                        Some(_) => None,
                    };
                    Want {
                        partition: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: (p.partition_max_bytes.max(0) as usize)
                            .min(ctx.config.fetch_max_bytes)
                            .min(bound),
                        error,
                        seen_hw: -1,
                    }
                })
                .collect();
            TopicWant {
                name: info.as_ref().map(|i| i.name.clone()),
                wire_name: t.topic.clone(),
                topic_id: info.map_or(t.topic_id, |i| i.id),
                parts,
                egress_cap,
            }
        })
        .collect()
}

/// Reads every wanted partition once, in request order, sharing the response byte budget.
async fn read(ctx: &Arc<Ctx>, plan: Vec<TopicWant>, max_bytes: usize, committed: bool) -> Pass {
    let wants = plan.clone();
    let caps = ctx.clone();
    let result = ctx
        .blocking(move |store| {
            let caps = &caps.quotas.partitions;
            let mut throttle = Duration::ZERO;
            let mut capped = Vec::new();
            let mut budget = max_bytes;
            let mut total = 0usize;
            let mut any_error = false;
            let mut refs = Vec::new();
            let mut sent = Vec::new();
            let mut out = Vec::with_capacity(plan.len());
            let mut high_watermarks = Vec::with_capacity(plan.len());
            for t in &plan {
                let mut parts = Vec::with_capacity(t.parts.len());
                let mut hws = Vec::with_capacity(t.parts.len());
                for w in &t.parts {
                    hws.push(-1);
                    let base = PartitionData::default()
                        .with_partition_index(w.partition)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_aborted_transactions(committed.then(Vec::new));
                    let failed = |c: i16| {
                        base.clone()
                            .with_error_code(c)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                            .with_records(Some(Bytes::new()))
                    };
                    let (Some(name), None) = (&t.name, w.error) else {
                        any_error = true;
                        parts.push(failed(w.error.unwrap_or(code::UNKNOWN_TOPIC_OR_PARTITION)));
                        continue;
                    };
                    // A partition over its egress cap is not read until it is back under.
                    let due = t.egress_cap.map_or(Duration::ZERO, |c| {
                        caps.egress_due(t.topic_id, w.partition, c)
                    });
                    if !due.is_zero() {
                        throttle = throttle.max(due);
                        let o = store.offsets(name, w.partition).ok();
                        parts.push(
                            base.with_high_watermark(o.as_ref().map_or(-1, |o| o.high_watermark))
                                .with_last_stable_offset(o.as_ref().map_or(-1, |o| o.last_stable))
                                .with_log_start_offset(o.as_ref().map_or(-1, |o| o.log_start))
                                .with_records(Some(Bytes::new())),
                        );
                        continue;
                    }
                    let limit = w.max_bytes.min(budget);
                    match store.read(name, w.partition, w.offset, limit, total == 0) {
                        Ok(r) => {
                            if let Some(hw) = hws.last_mut() {
                                *hw = r.high_watermark;
                            }
                            if !r.records.is_empty() {
                                let records = (r.next_offset - w.offset).max(0) as u64;
                                sent.push((name.clone(), r.records.len(), records));
                                if let Some(cap) = t.egress_cap {
                                    let n = r.records.len();
                                    capped.push((t.topic_id, name.clone(), w.partition, cap, n));
                                }
                            }
                            total += r.records.len();
                            budget = budget.saturating_sub(r.records.len());
                            parts.push(
                                base.with_high_watermark(r.high_watermark)
                                    .with_last_stable_offset(r.last_stable_offset)
                                    .with_log_start_offset(r.log_start_offset)
                                    .with_records(Some(record_set(
                                        r.records.into_chunks(),
                                        &mut refs,
                                    ))),
                            );
                        }
                        Err(e) => {
                            any_error = true;
                            let mut p = failed(storage_code(&e));
                            if let Ok(o) = store.offsets(name, w.partition) {
                                p = p
                                    .with_high_watermark(o.high_watermark)
                                    .with_last_stable_offset(o.last_stable)
                                    .with_log_start_offset(o.log_start);
                            }
                            parts.push(p);
                        }
                    }
                }
                out.push(parts);
                high_watermarks.push(hws);
            }
            Ok(Pass {
                parts: out,
                refs,
                bytes: total,
                any_error,
                high_watermarks,
                sent,
                capped,
                throttle,
            })
        })
        .await;
    let mut pass = result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "fetch failed");
        Pass {
            parts: Vec::new(),
            refs: Vec::new(),
            bytes: 0,
            any_error: true,
            high_watermarks: Vec::new(),
            sent: Vec::new(),
            capped: Vec::new(),
            throttle: Duration::ZERO,
        }
    });
    if pass.any_error {
        tiered(ctx, &wants, &mut pass, max_bytes).await;
    }
    pass
}

/// Serves partitions asked for below their local log start from the archive, for topics
/// with `remote.storage.enable=true`: whole archived batches from the one containing the
/// offset (at least one), and the archive's first offset as the log start.
async fn tiered(ctx: &Arc<Ctx>, plan: &[TopicWant], pass: &mut Pass, max_bytes: usize) {
    for (t, parts) in plan.iter().zip(pass.parts.iter_mut()) {
        let Some(info) = t.name.as_deref().and_then(|n| ctx.store.topic(n)) else {
            continue;
        };
        if !crate::archive::remote_storage(&info.configs, &ctx.config) {
            continue;
        }
        for (w, part) in t.parts.iter().zip(parts.iter_mut()) {
            if part.error_code != code::OFFSET_OUT_OF_RANGE || w.offset >= part.log_start_offset {
                continue;
            }
            let p = strata_storage::archive::PartitionRef {
                topic: &info.name,
                topic_id: info.id,
                partition: w.partition,
            };
            let limit = w.max_bytes.min(max_bytes.saturating_sub(pass.bytes));
            let first = pass.bytes == 0;
            match ctx.tier.read(p, w.offset, limit, first).await {
                Ok(Some(r)) => {
                    let bytes = r.records.iter().map(Bytes::len).sum::<usize>();
                    pass.bytes += bytes;
                    let sent = (r.next_offset - w.offset).max(0) as u64;
                    pass.sent.push((info.name.clone(), bytes, sent));
                    ::metrics::counter!("strata_archive_read_bytes_total").increment(bytes as u64);
                    let records = record_set(r.records, &mut pass.refs);
                    *part = std::mem::take(part)
                        .with_error_code(code::NONE)
                        .with_log_start_offset(r.archive_start)
                        .with_records(Some(records));
                }
                Ok(None) => {}
                Err(e) => {
                    // Not OFFSET_OUT_OF_RANGE: the consumer would reset past what only the
                    // archive holds. A retriable error makes it fetch again.
                    tracing::warn!(topic = %info.name, partition = w.partition, error = %e, "reading the archive failed");
                    part.error_code = code::KAFKA_STORAGE_ERROR;
                }
            }
        }
    }
    pass.any_error = pass
        .parts
        .iter()
        .flatten()
        .any(|p| p.error_code != code::NONE);
}

/// Remembers the high watermark each partition had at the last read.
fn note_high_watermarks(plan: &mut [TopicWant], pass: &Pass) {
    for (t, hws) in plan.iter_mut().zip(&pass.high_watermarks) {
        for (w, &hw) in t.parts.iter_mut().zip(hws) {
            w.seen_hw = w.seen_hw.max(hw);
        }
    }
}

/// Returns when any wanted partition's high watermark passes both its fetch offset and the
/// high watermark the last read saw, or at the deadline.
async fn wait_for_data(ctx: &Arc<Ctx>, plan: &[TopicWant], deadline: Instant) {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let mut waits = Vec::new();
    for t in plan {
        let Some(name) = &t.name else { continue };
        for w in t.parts.iter().filter(|w| w.error.is_none()) {
            let store = ctx.store.clone();
            let (name, partition, offset) = (name.clone(), w.partition, w.offset.max(w.seen_hw));
            waits.push(Box::pin(async move {
                let _ = store
                    .wait_for_high_watermark(&name, partition, offset, timeout)
                    .await;
            }));
        }
    }
    if waits.is_empty() {
        tokio::time::sleep_until(deadline).await;
    } else {
        futures::future::select_all(waits).await;
    }
}

fn response(ctx: &Ctx, version: i16, plan: &[TopicWant], pass: Pass) -> Response {
    for (topic, bytes, records) in &pass.sent {
        crate::metrics::fetched(topic, *bytes, *records);
    }
    let mut throttle = pass.throttle;
    for (id, topic, partition, cap, bytes) in &pass.capped {
        let t = ctx
            .quotas
            .partitions
            .egress((*id, topic), *partition, *cap, *bytes);
        throttle = throttle.max(t);
    }
    if !pass.throttle.is_zero() {
        // Counted here, for the answer sent (passes of a long poll are not all sent).
        let capped = plan.iter().filter(|t| t.egress_cap.is_some());
        for t in capped.filter_map(|t| t.name.as_deref()) {
            crate::quota::partition::counted(t, "egress", pass.throttle);
        }
    }
    if pass.parts.len() != plan.len() {
        return FetchResponse::default()
            .with_error_code(code::KAFKA_STORAGE_ERROR)
            .into();
    }
    let topics = plan
        .iter()
        .zip(pass.parts)
        .map(|(t, parts)| {
            let r = FetchableTopicResponse::default().with_partitions(parts);
            if version >= 13 {
                r.with_topic_id(t.topic_id)
            } else {
                r.with_topic(t.wire_name.clone())
            }
        })
        .collect();
    Response {
        body: FetchResponse::default()
            .with_throttle_time_ms(crate::quota::enforce::millis(throttle))
            .with_session_id(0)
            .with_responses(topics)
            .into(),
        records: pass.refs,
    }
}
