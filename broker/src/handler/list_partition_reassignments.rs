//! ListPartitionReassignments (key 46): a one-broker cluster never has a reassignment in
//! progress, so the list is always empty (Kafka leaves out partitions without one, and
//! unknown ones). Needs DESCRIBE on the cluster.

use kafka_protocol::messages::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub fn handle(
    ctx: &Ctx,
    session: &Session,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !authorize(ctx, session, op::DESCRIBE, Resource::Cluster) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes(
                "listing reassignments needs DESCRIBE on the cluster",
            )));
    }
    ListPartitionReassignmentsResponse::default()
}
