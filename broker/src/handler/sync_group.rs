//! SyncGroup (key 14): members wait for the leader's assignment.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{Ctx, Reply, Response, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;
use crate::group::SyncArgs;

pub async fn handle(ctx: &Arc<Ctx>, session: &Session, req: SyncGroupRequest) -> Reply {
    if !authorize(ctx, session, op::READ, Resource::Group(&req.group_id)) {
        return SyncGroupResponse::default()
            .with_error_code(code::GROUP_AUTHORIZATION_FAILED)
            .into();
    }
    let args = SyncArgs {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        generation: req.generation_id,
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let groups = ctx.groups.clone();
    let group = req.group_id.to_string();
    Reply::Later(Box::pin(async move {
        Response::from(groups.sync(&group, args).await)
    }))
}
