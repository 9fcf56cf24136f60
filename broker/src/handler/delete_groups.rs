//! DeleteGroups (key 42): removes empty groups with their committed offsets.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let c = if authorize(ctx, session, op::DELETE, Resource::Group(&g)) {
            ctx.groups.delete(&g).await
        } else {
            code::GROUP_AUTHORIZATION_FAILED
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(c),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
