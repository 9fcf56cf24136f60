//! ListGroups (key 16): every group, optionally filtered by state (v4+) and type (v5+).

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};

/// Every group here speaks the classic protocol.
const GROUP_TYPE: &str = "classic";

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    // DESCRIBE on the cluster lists every group; otherwise the groups one may DESCRIBE.
    let all = authorize(ctx, session, op::DESCRIBE, Resource::Cluster);
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = ctx
        .groups
        .list()
        .await
        .into_iter()
        .filter(|(_, v)| states.is_empty() || states.contains(&v.state.name().to_ascii_lowercase()))
        .filter(|_| types.is_empty() || types.iter().any(|t| t == GROUP_TYPE))
        .filter(|(id, _)| all || authorize(ctx, session, op::DESCRIBE, Resource::Group(id)))
        .map(|(id, v)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(v.protocol_type))
                .with_group_state(str_bytes(v.state.name()))
                .with_group_type(str_bytes(GROUP_TYPE))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
