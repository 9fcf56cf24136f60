//! ListOffsets (key 2): earliest, latest, max-timestamp and by-timestamp offsets.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use strata_storage::{batch, BatchAt, StorageError, Store};

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

/// Special timestamps of ListOffsets requests.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-405: earliest offset still on local disk. With no remote tier, the log start.
const EARLIEST_LOCAL: i64 = -4;
/// KIP-1005: earliest offset not yet uploaded to the remote tier; none without one.
const EARLIEST_PENDING_UPLOAD: i64 = -5;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    // Per topic: DESCRIBE allowed, (partition, current leader epoch, timestamp).
    type Wants = Vec<(String, bool, Vec<(i32, i32, i64)>)>;
    let wants: Wants = req
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.current_leader_epoch, p.timestamp))
                .collect();
            let allowed = authorize(ctx, session, op::DESCRIBE, Resource::Topic(&t.name));
            (t.name.to_string(), allowed, parts)
        })
        .collect();
    let answers = ctx
        .blocking(move |store| {
            Ok(wants
                .iter()
                .map(|(topic, allowed, parts)| {
                    parts
                        .iter()
                        .map(|&(p, epoch, ts)| {
                            let base =
                                ListOffsetsPartitionResponse::default().with_partition_index(p);
                            if !allowed {
                                return base
                                    .with_error_code(code::TOPIC_AUTHORIZATION_FAILED)
                                    .with_timestamp(-1)
                                    .with_offset(-1);
                            }
                            if epoch > 0 {
                                return base
                                    .with_error_code(code::UNKNOWN_LEADER_EPOCH)
                                    .with_timestamp(-1)
                                    .with_offset(-1);
                            }
                            match lookup(store, topic, p, ts) {
                                Ok((offset, timestamp)) => {
                                    // Leader epochs exist from v4 on; the codec refuses them earlier.
                                    let epoch = if version >= 4 { 0 } else { -1 };
                                    base.with_offset(offset)
                                        .with_timestamp(timestamp)
                                        .with_leader_epoch(epoch)
                                }
                                Err(e) => base
                                    .with_error_code(storage_code(&e))
                                    .with_timestamp(-1)
                                    .with_offset(-1),
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>())
        })
        .await;
    let mut answers = match answers {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "list offsets failed");
            return ListOffsetsResponse::default();
        }
    };
    in_archive(ctx, &req, &mut answers).await;
    let topics = req
        .topics
        .iter()
        .zip(answers)
        .map(|(t, parts)| {
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(offset, timestamp)` for one partition; `(-1, -1)` when no record matches.
fn lookup(store: &Store, topic: &str, partition: i32, ts: i64) -> Result<(i64, i64), StorageError> {
    let offsets = store.offsets(topic, partition)?;
    Ok(match ts {
        LATEST => (offsets.high_watermark, -1),
        EARLIEST | EARLIEST_LOCAL => (offsets.log_start, -1),
        EARLIEST_PENDING_UPLOAD => (-1, -1),
        MAX_TIMESTAMP => match store.find_max_timestamp_batch(topic, partition)? {
            Some(b) => record_at(&b, offsets.log_start, |_| true, true).unwrap_or((-1, -1)),
            None => (-1, -1),
        },
        ts if ts >= 0 => {
            let mut from = offsets.log_start;
            loop {
                let Some(b) = store.find_batch_by_timestamp(topic, partition, ts, from)? else {
                    break (-1, -1);
                };
                if let Some(found) = record_at(&b, offsets.log_start, |t| t >= ts, false) {
                    break found;
                }
                // The matching records of this batch lie below the log start: look further.
                from = batch::read_header(&b.bytes)?.last_offset() + 1;
            }
        }
        other => {
            return Err(StorageError::InvalidRequest(format!(
                "timestamp {other} has no meaning"
            )))
        }
    })
}

/// Finds a record of the batch at or after `log_start`: the first one whose timestamp
/// satisfies `accept`, or with `max` the first one holding the batch's largest timestamp.
/// Decodes (and decompresses) the batch; the batch header alone does not say which record
/// holds which timestamp.
fn record_at(
    b: &BatchAt,
    log_start: i64,
    accept: impl Fn(i64) -> bool,
    max: bool,
) -> Option<(i64, i64)> {
    let mut bytes = Bytes::from(b.bytes.clone());
    let set = match crate::codec::decode_batch(&mut bytes) {
        Ok(s) => s,
        Err(e) => {
            // A batch the broker will not expand (over the decompression limit, or not
            // decodable) still answers from its header: its first offset at or after the log
            // start, with the batch's largest timestamp. Consumers then read a few records
            // more than they asked for, never fewer.
            tracing::warn!(base_offset = b.base_offset, error = %e, "answering from the batch header");
            let h = batch::read_header(&b.bytes).ok()?;
            return (h.last_offset() >= log_start)
                .then(|| (b.base_offset.max(log_start), h.max_timestamp));
        }
    };
    let records = set.records.iter().filter(|r| r.offset >= log_start);
    if max {
        let best = records.clone().map(|r| r.timestamp).max()?;
        return records
            .clone()
            .find(|r| r.timestamp == best)
            .map(|r| (r.offset, r.timestamp));
    }
    records
        .clone()
        .find(|r| accept(r.timestamp))
        .map(|r| (r.offset, r.timestamp))
}

/// For topics with `remote.storage.enable=true`, offsets the archive holds below the local
/// log start count too: EARLIEST is the archive's first offset when it reaches further back,
/// and a timestamp lookup searches the archive's batches below the local log start first
/// (the answer is the first record at or after the time, in offset order).
async fn in_archive(
    ctx: &Arc<Ctx>,
    req: &ListOffsetsRequest,
    answers: &mut [Vec<ListOffsetsPartitionResponse>],
) {
    for (t, parts) in req.topics.iter().zip(answers.iter_mut()) {
        let Some(info) = ctx.store.topic(&t.name) else {
            continue;
        };
        if !crate::archive::remote_storage(&info.configs, &ctx.config) {
            continue;
        }
        for (want, part) in t.partitions.iter().zip(parts.iter_mut()) {
            if !(want.timestamp == EARLIEST || want.timestamp >= 0) || part.error_code != code::NONE
            {
                continue;
            }
            let p = strata_storage::archive::PartitionRef {
                topic: &info.name,
                topic_id: info.id,
                partition: want.partition_index,
            };
            if let Err(e) = archive_answer(ctx, p, want.timestamp, part).await {
                // Not the local answer: EARLIEST would skip what only the archive holds, and
                // a consumer would silently miss it. A retriable error makes it ask again.
                tracing::warn!(topic = %info.name, partition = want.partition_index, error = %e, "reading the archive failed");
                part.error_code = code::KAFKA_STORAGE_ERROR;
                part.offset = -1;
                part.timestamp = -1;
            }
        }
    }
}

async fn archive_answer(
    ctx: &Arc<Ctx>,
    p: strata_storage::archive::PartitionRef<'_>,
    ts: i64,
    part: &mut ListOffsetsPartitionResponse,
) -> Result<(), StorageError> {
    // Nothing lies below the local log start when it is where the log begins (0, or where
    // DeleteRecords put it): the archive is not asked, so an unreachable one costs nothing.
    let local_start = ctx.store.offsets(p.topic, p.partition)?.log_start;
    if local_start <= ctx.tier.floor(p) {
        return Ok(());
    }
    let Some(archive_start) = ctx.tier.start(p).await? else {
        return Ok(());
    };
    if ts == EARLIEST {
        part.offset = part.offset.min(archive_start);
        return Ok(());
    }
    if archive_start >= local_start {
        return Ok(());
    }
    if let Some(b) = ctx.tier.find_by_timestamp(p, ts, local_start).await? {
        if let Some((offset, timestamp)) = record_at(&b, archive_start, |t| t >= ts, false) {
            part.offset = offset;
            part.timestamp = timestamp;
        }
    }
    Ok(())
}
