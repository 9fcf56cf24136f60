//! OffsetForLeaderEpoch (key 23): there is one leader epoch (0) for every partition, so
//! epoch 0 ends at the log end offset. Clients use this to validate their position after
//! metadata changes.

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let allowed = authorize(ctx, session, op::DESCRIBE, Resource::Topic(&t.topic));
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition);
                    if !allowed {
                        return r
                            .with_error_code(code::TOPIC_AUTHORIZATION_FAILED)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                    }
                    if p.current_leader_epoch > 0 {
                        return r
                            .with_error_code(code::UNKNOWN_LEADER_EPOCH)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                    }
                    match ctx.store.offsets(&t.topic, p.partition) {
                        // Asking about an epoch after ours: Kafka answers "undefined".
                        Ok(_) if p.leader_epoch > 0 => r.with_leader_epoch(-1).with_end_offset(-1),
                        Ok(o) => r.with_leader_epoch(0).with_end_offset(o.log_end),
                        Err(e) => r
                            .with_error_code(storage_code(&e))
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
