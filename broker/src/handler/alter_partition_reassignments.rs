//! AlterPartitionReassignments (key 45) on a one-broker cluster: moving a partition to the
//! replicas it already has (this broker alone) is a no-op success; cancelling (null
//! replicas) finds no reassignment in progress (NO_REASSIGNMENT_IN_PROGRESS); any other
//! replica list names a broker that does not exist, or repeats one, so it is
//! INVALID_REPLICA_ASSIGNMENT — the answers Kafka's controller gives. Needs ALTER on the
//! cluster.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
};

use super::{partition_exists, str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    if !authorize(ctx, session, op::ALTER, Resource::Cluster) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes(
                "reassigning partitions needs ALTER on the cluster",
            )));
    }
    let node = ctx.node_id();
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (c, msg) = if !partition_exists(ctx, &t.name, p.partition_index) {
                        (
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                            Some(format!("{}-{} does not exist", &*t.name, p.partition_index)),
                        )
                    } else {
                        match p.replicas.as_deref() {
                            None => (
                                code::NO_REASSIGNMENT_IN_PROGRESS,
                                Some("no reassignment is in progress".to_string()),
                            ),
                            Some([BrokerId(b)]) if *b == node => (code::NONE, None),
                            Some(other) => (
                                code::INVALID_REPLICA_ASSIGNMENT,
                                Some(format!(
                                    "replicas {:?}: this cluster has one broker, {node}",
                                    other.iter().map(|b| b.0).collect::<Vec<_>>()
                                )),
                            ),
                        }
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(c)
                        .with_error_message(msg.map(str_bytes))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}
