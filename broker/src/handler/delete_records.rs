//! DeleteRecords (key 21): moves each partition's log start offset up (-1: to the high
//! watermark); whole segments below it are deleted.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::Ctx;
use crate::error::storage_code;

pub async fn handle(ctx: &Arc<Ctx>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let (topic, index, offset) = (t.name.to_string(), p.partition_index, p.offset);
            let result = ctx
                .blocking(move |s| {
                    let to = if offset == -1 {
                        s.offsets(&topic, index)?.high_watermark
                    } else {
                        offset
                    };
                    s.truncate_before(&topic, index, to)
                })
                .await;
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
