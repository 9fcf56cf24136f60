//! DescribeGroups (key 15): state, protocol and members of each group.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, authorized_operations, op, Resource, NOT_REQUESTED};
use crate::error::code;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        if !authorize(ctx, session, op::DESCRIBE, Resource::Group(&id)) {
            groups.push(
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(code::GROUP_AUTHORIZATION_FAILED)
                    .with_authorized_operations(NOT_REQUESTED),
            );
            continue;
        }
        let operations = if req.include_authorized_operations {
            authorized_operations(ctx, session, Resource::Group(&id))
        } else {
            NOT_REQUESTED
        };
        let view = ctx.groups.describe(&id).await;
        let members = view
            .members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(str_bytes(m.member_id))
                    .with_group_instance_id(if version >= 4 {
                        m.instance_id.map(str_bytes)
                    } else {
                        None
                    })
                    .with_client_id(str_bytes(m.client_id))
                    .with_client_host(str_bytes(m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment)
            })
            .collect();
        groups.push(
            DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes(view.state.name()))
                .with_protocol_type(str_bytes(view.protocol_type))
                .with_protocol_data(str_bytes(view.protocol))
                .with_members(members)
                .with_authorized_operations(operations),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
