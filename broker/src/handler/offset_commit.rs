//! OffsetCommit (key 8): members of the current generation commit; commits from outside
//! the group (admin resets, `generation -1`) only while the group has no members.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use strata_storage::GroupOffset;

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

/// Kafka's `offset.metadata.max.bytes`: longer metadata strings are refused.
const MAX_METADATA_BYTES: usize = 4096;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = req.group_id.to_string();
    // READ on the group first (every partition fails without it), then READ on each topic.
    let gate = if group.is_empty() {
        code::INVALID_GROUP_ID
    } else if !authorize(ctx, session, op::READ, Resource::Group(&group)) {
        code::GROUP_AUTHORIZATION_FAILED
    } else {
        ctx.groups
            .may_commit(
                &group,
                req.member_id.to_string(),
                req.group_instance_id.map(|s| s.to_string()),
                req.generation_id_or_member_epoch,
            )
            .await
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Per partition: Ok(offset to store) or Err(code).
    let mut verdicts: Vec<Vec<Result<GroupOffset, i16>>> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let partitions = ctx.store.topic(&t.name).map_or(-1, |i| i.partitions);
        let topic_allowed = authorize(ctx, session, op::READ, Resource::Topic(&t.name));
        verdicts.push(
            t.partitions
                .iter()
                .map(|p| {
                    if gate != code::NONE {
                        return Err(gate);
                    }
                    if !topic_allowed {
                        return Err(code::TOPIC_AUTHORIZATION_FAILED);
                    }
                    if p.partition_index < 0 || p.partition_index >= partitions {
                        return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
                    }
                    let metadata = p.committed_metadata.as_deref().unwrap_or("").to_string();
                    if metadata.len() > MAX_METADATA_BYTES {
                        return Err(code::OFFSET_METADATA_TOO_LARGE);
                    }
                    Ok(GroupOffset {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                    })
                })
                .collect(),
        );
    }
    let to_store: Vec<GroupOffset> = verdicts
        .iter()
        .flatten()
        .filter_map(|v| v.as_ref().ok().cloned())
        .collect();
    let stored = if to_store.is_empty() {
        code::NONE
    } else {
        // An unsynced write, then a wait for the group-commit syncer: commits arriving
        // together share one fsync, and no thread is held while waiting.
        match ctx.store.commit_offsets(&group, &to_store).await {
            Ok(()) => code::NONE,
            Err(e) => {
                tracing::error!(group = %group, error = %e, "offset commit failed");
                storage_code(&e)
            }
        }
    };
    let topics = req
        .topics
        .iter()
        .zip(verdicts)
        .map(|(t, parts)| {
            let partitions = t
                .partitions
                .iter()
                .zip(parts)
                .map(|(p, v)| {
                    let c = match v {
                        Ok(_) => stored,
                        Err(c) => c,
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(c)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
