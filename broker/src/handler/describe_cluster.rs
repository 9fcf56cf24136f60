//! DescribeCluster (key 60): this broker is the whole cluster and its controller. As in
//! Kafka, anyone may ask (Metadata tells the same); the cluster's authorized operations are
//! filled in only for sessions that may DESCRIBE it, and are 0 for the others.

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, authorized_operations, op, Resource, NOT_REQUESTED};
use crate::error::code;

/// DescribeCluster endpoint type 1: brokers (2 would be controllers, asked only of KRaft
/// controllers).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    if req.endpoint_type != ENDPOINT_TYPE_BROKERS && req.endpoint_type != 0 {
        return DescribeClusterResponse::default()
            .with_error_code(code::UNSUPPORTED_VERSION)
            .with_error_message(Some(str_bytes("only broker endpoints are served here")))
            .with_cluster_id(str_bytes(ctx.cluster_id.clone()));
    }
    let listener = &session.listener;
    let operations = if !req.include_cluster_authorized_operations {
        NOT_REQUESTED
    } else if authorize(ctx, session, op::DESCRIBE, Resource::Cluster) {
        authorized_operations(ctx, session, Resource::Cluster)
    } else {
        0
    };
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(ctx.node_id()))
        .with_host(str_bytes(listener.advertised_host.clone()))
        .with_port(listener.advertised_port);
    DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(str_bytes(ctx.cluster_id.clone()))
        .with_controller_id(BrokerId(ctx.node_id()))
        .with_brokers(vec![broker])
        .with_cluster_authorized_operations(operations)
}
