//! LeaveGroup (key 13): one member (v0-2) or a batch of members (v3+).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if !authorize(ctx, session, op::READ, Resource::Group(&req.group_id)) {
        return LeaveGroupResponse::default().with_error_code(code::GROUP_AUTHORIZATION_FAILED);
    }
    if version < 3 {
        let codes = ctx
            .groups
            .leave(&req.group_id, vec![(req.member_id.to_string(), None)])
            .await;
        return LeaveGroupResponse::default()
            .with_error_code(codes.first().copied().unwrap_or(code::UNKNOWN_MEMBER_ID));
    }
    let who: Vec<(String, Option<String>)> = req
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|s| s.to_string()),
            )
        })
        .collect();
    let codes = ctx.groups.leave(&req.group_id, who).await;
    let members = req
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, c)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(c)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
