//! ElectLeaders (key 43): this broker leads every partition and there is no other replica
//! to elect, so every existing partition answers ELECTION_NOT_NEEDED (as Kafka does when the
//! preferred or a live leader already leads) and others UNKNOWN_TOPIC_OR_PARTITION. A
//! request for all partitions (null) gets an empty list: no election happened anywhere.
//! Needs ALTER on the cluster.

use std::sync::Arc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use super::{partition_exists, str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

/// Kafka's election types: preferred replica, unclean.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub fn handle(ctx: &Arc<Ctx>, session: &Session, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let allowed = authorize(ctx, session, op::ALTER, Resource::Cluster);
    let known_type = matches!(req.election_type, PREFERRED | UNCLEAN);
    let results = req
        .topic_partitions
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    let (c, msg) = if !allowed {
                        (
                            code::CLUSTER_AUTHORIZATION_FAILED,
                            "electing leaders needs ALTER on the cluster".to_string(),
                        )
                    } else if !known_type {
                        (
                            code::INVALID_REQUEST,
                            format!("unknown election type {}", req.election_type),
                        )
                    } else if !partition_exists(ctx, &t.topic, p) {
                        (
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("{}-{p} does not exist", &*t.topic),
                        )
                    } else {
                        (
                            code::ELECTION_NOT_NEEDED,
                            "this broker already leads the partition (it is the only replica)"
                                .to_string(),
                        )
                    };
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(c)
                        .with_error_message(Some(str_bytes(msg)))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(t.topic)
                .with_partition_result(partitions)
        })
        .collect();
    let top = if allowed {
        code::NONE
    } else {
        code::CLUSTER_AUTHORIZATION_FAILED
    };
    ElectLeadersResponse::default()
        .with_error_code(top)
        .with_replica_election_results(results)
}
