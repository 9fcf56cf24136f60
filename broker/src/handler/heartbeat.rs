//! Heartbeat (key 12): keeps a member's session alive and tells it about rebalances.

use std::sync::Arc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::Ctx;

pub async fn handle(ctx: &Arc<Ctx>, req: HeartbeatRequest) -> HeartbeatResponse {
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
