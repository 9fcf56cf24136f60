//! FindCoordinator (key 10): this broker coordinates every group (one key before v4, a
//! batch of keys from v4). Transactions are not supported: a transaction coordinator is
//! refused with a non-retriable error, so a transactional producer fails at once instead of
//! retrying until its timeout.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

/// Key type 0: consumer group (1 would be a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let listener = &session.listener;
    // DESCRIBE on the group, per key.
    let error_for = |key: &str| {
        if req.key_type != KEY_TYPE_GROUP {
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        } else if !authorize(ctx, session, op::DESCRIBE, Resource::Group(key)) {
            code::GROUP_AUTHORIZATION_FAILED
        } else {
            code::NONE
        }
    };
    let address = |error: i16| {
        if error == code::NONE {
            (
                ctx.node_id(),
                listener.advertised_host.clone(),
                listener.advertised_port,
            )
        } else {
            (-1, String::new(), -1)
        }
    };
    if version < 4 {
        let error = error_for(&req.key);
        let (node, host, port) = address(error);
        return FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port);
    }
    let coordinators = req
        .coordinator_keys
        .into_iter()
        .map(|key| {
            let error = error_for(&key);
            let (node, host, port) = address(error);
            Coordinator::default()
                .with_key(key)
                .with_error_code(error)
                .with_node_id(BrokerId(node))
                .with_host(str_bytes(host))
                .with_port(port)
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}
