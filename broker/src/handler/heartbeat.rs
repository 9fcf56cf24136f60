//! Heartbeat (key 12): keeps a member's session alive and tells it about rebalances.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub async fn handle(ctx: &Arc<Ctx>, session: &Session, req: HeartbeatRequest) -> HeartbeatResponse {
    if !authorize(ctx, session, op::READ, Resource::Group(&req.group_id)) {
        return HeartbeatResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED);
    }
    let c = ctx
        .groups
        .heartbeat(
            &req.group_id,
            req.member_id.to_string(),
            req.group_instance_id.map(|s| s.to_string()),
            req.generation_id,
        )
        .await;
    HeartbeatResponse::default().with_error_code(c)
}
