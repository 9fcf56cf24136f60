//! FindCoordinator (key 10): this broker coordinates every group (one key before v4, a
//! batch of keys from v4). Transactions are not supported: a transaction coordinator is
//! refused with a non-retriable error, so a transactional producer fails at once instead of
//! retrying until its timeout.

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, Ctx, Listener};
use crate::error::code;

/// Key type 0: consumer group (1 would be a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(
    ctx: &Arc<Ctx>,
    listener: &Listener,
    version: i16,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let error = if req.key_type == KEY_TYPE_GROUP {
        code::NONE
    } else {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    };
    let (node, host, port) = if error == code::NONE {
        (
            ctx.node_id(),
            listener.advertised_host.clone(),
            listener.advertised_port,
        )
    } else {
        (-1, String::new(), -1)
    };
    if version < 4 {
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
            Coordinator::default()
                .with_key(key)
                .with_error_code(error)
                .with_node_id(BrokerId(node))
                .with_host(str_bytes(host.clone()))
                .with_port(port)
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}
