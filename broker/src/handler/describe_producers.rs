//! DescribeProducers (key 61): the idempotent producers each partition remembers, with
//! their epoch and last sequence. There are no transactions, so no coordinator epoch and no
//! open transaction (-1 both). Needs READ on the topic, per topic (Kafka's rule).

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let allowed = authorize(ctx, session, op::READ, Resource::Topic(&t.name));
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let base = PartitionResponse::default().with_partition_index(p);
                    if !allowed {
                        return base.with_error_code(code::TOPIC_AUTHORIZATION_FAILED);
                    }
                    match ctx.store.producers(&t.name, p) {
                        Ok(producers) => base.with_active_producers(
                            producers
                                .into_iter()
                                .map(|s| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(s.producer_id))
                                        .with_producer_epoch(i32::from(s.epoch))
                                        .with_last_sequence(s.last_sequence)
                                        .with_last_timestamp(s.last_write_ms)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect(),
                        ),
                        Err(e) => base
                            .with_error_code(storage_code(&e))
                            .with_error_message(Some(str_bytes(e.to_string()))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
