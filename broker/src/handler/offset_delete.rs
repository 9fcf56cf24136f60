//! OffsetDelete (key 47): deletes a group's committed offsets for some partitions, unless
//! the group's members are subscribed to the topic.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::group::State;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    if !authorize(ctx, session, op::DELETE, Resource::Group(&req.group_id)) {
        return OffsetDeleteResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED);
    }
    let view = ctx.groups.describe(&req.group_id).await;
    if view.state == State::Dead {
        return OffsetDeleteResponse::default().with_error_code(code::GROUP_ID_NOT_FOUND);
    }
    // Topics the members subscribe to (consumer protocol metadata: version i16, then the
    // subscription).
    let subscribed: Vec<String> = if view.protocol_type == "consumer" {
        view.members
            .iter()
            .filter_map(|m| {
                let mut b = m.metadata.clone();
                let version = i16::from_be_bytes(b.get(..2)?.try_into().ok()?);
                let _ = bytes::Buf::get_i16(&mut b);
                ConsumerProtocolSubscription::decode(&mut b, version).ok()
            })
            .flat_map(|s| s.topics.into_iter().map(|t| t.to_string()))
            .collect()
    } else {
        Vec::new()
    };
    let mut delete = Vec::new();
    let topics: Vec<OffsetDeleteResponseTopic> = req
        .topics
        .iter()
        .map(|t| {
            let busy = subscribed.iter().any(|s| s.as_str() == t.name.as_str());
            let allowed = authorize(ctx, session, op::READ, Resource::Topic(&t.name));
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let c = if !allowed {
                        code::TOPIC_AUTHORIZATION_FAILED
                    } else if busy {
                        code::GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        delete.push((t.name.to_string(), p.partition_index));
                        code::NONE
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(c)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let group = req.group_id.to_string();
    if let Err(e) = ctx
        .blocking(move |s| s.delete_offsets(&group, Some(&delete)))
        .await
    {
        return OffsetDeleteResponse::default().with_error_code(storage_code(&e));
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
