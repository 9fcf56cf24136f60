//! JoinGroup (key 11): answered when the group's join phase ends (the actor holds the
//! reply), so the connection keeps serving other requests meanwhile.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};

use super::{Ctx, Reply, Response, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;
use crate::group::JoinArgs;

pub async fn handle(
    ctx: &Arc<Ctx>,
    client: &Session,
    header: &RequestHeader,
    req: JoinGroupRequest,
) -> Reply {
    let version = header.request_api_version;
    if req.group_id.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(code::INVALID_GROUP_ID)
            .with_generation_id(-1)
            .into();
    }
    if !authorize(ctx, client, op::READ, Resource::Group(&req.group_id)) {
        return JoinGroupResponse::default()
            .with_error_code(code::GROUP_AUTHORIZATION_FAILED)
            .with_generation_id(-1)
            .into();
    }
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout; Kafka uses the session timeout then.
    let rebalance = if version >= 1 {
        Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let args = JoinArgs {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: header.client_id.as_deref().unwrap_or("").to_string(),
        // Kafka shows the client's address as "/ip".
        client_host: format!("/{}", client.peer.ip()),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let groups = ctx.groups.clone();
    let group = req.group_id.to_string();
    Reply::Later(Box::pin(async move {
        let mut r = groups.join(&group, args).await;
        if version < 7 {
            // protocol_type is a v7+ field; the codec refuses it earlier.
            r.protocol_type = None;
        }
        Response::from(r)
    }))
}
