//! DeleteRecords (key 21): moves each partition's log start offset up (-1: to the high
//! watermark); whole segments below it are deleted. On topics with remote storage the
//! archive's records below it are deleted too: reads stop at once, the connector deletes the
//! archived segments on its next pass.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        if !authorize(ctx, session, op::DELETE, Resource::Topic(&t.name)) {
            for p in t.partitions {
                partitions.push(
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code::TOPIC_AUTHORIZATION_FAILED)
                        .with_low_watermark(-1),
                );
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
            continue;
        }
        let archived = ctx
            .store
            .topic(&t.name)
            .filter(|info| crate::archive::remote_storage(&info.configs, &ctx.config));
        for p in t.partitions {
            let (topic, index, offset) = (t.name.to_string(), p.partition_index, p.offset);
            let mut result = ctx
                .blocking(move |s| {
                    let to = if offset == -1 {
                        s.offsets(&topic, index)?.high_watermark
                    } else {
                        offset
                    };
                    Ok((to, s.truncate_before(&topic, index, to)?))
                })
                .await;
            if let (Some(info), Ok((to, low))) = (&archived, &result) {
                let (to, low) = (*to, *low);
                let p = strata_storage::archive::PartitionRef {
                    topic: &info.name,
                    topic_id: info.id,
                    partition: index,
                };
                result = in_archive(ctx, p, to, low).await.map(|low| (to, low));
            }
            let result = result.map(|(_, low)| low);
            let r = DeleteRecordsPartitionResult::default().with_partition_index(index);
            partitions.push(match result {
                Ok(low) => r.with_low_watermark(low),
                Err(e) => r.with_error_code(storage_code(&e)).with_low_watermark(-1),
            });
        }
        ctx.retention_nudge();
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Applies DeleteRecords at `to` to the archive of a partition whose local log now starts at
/// `local_start`; returns the partition's new log start (archive included).
async fn in_archive(
    ctx: &Arc<Ctx>,
    p: strata_storage::archive::PartitionRef<'_>,
    to: i64,
    local_start: i64,
) -> Result<i64, strata_storage::StorageError> {
    let start = ctx
        .tier
        .start(p)
        .await?
        .map_or(local_start, |a| a.min(local_start));
    if to <= start {
        return Ok(start);
    }
    let (tier, topic, id, partition) = (
        ctx.tier.clone(),
        p.topic.to_string(),
        p.topic_id,
        p.partition,
    );
    ctx.blocking(move |store| {
        let p = strata_storage::archive::PartitionRef {
            topic: &topic,
            topic_id: id,
            partition,
        };
        tier.delete_below(store, p, to)
    })
    .await?;
    Ok(to)
}
