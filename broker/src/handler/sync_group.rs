//! SyncGroup (key 14): members wait for the leader's assignment.

use std::sync::Arc;

use kafka_protocol::messages::SyncGroupRequest;

use super::{Ctx, Reply, Response};
use crate::group::SyncArgs;

pub async fn handle(ctx: &Arc<Ctx>, req: SyncGroupRequest) -> Reply {
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
