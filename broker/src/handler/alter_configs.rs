//! AlterConfigs (key 33): replaces a topic's whole set of overrides.

use std::sync::Arc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::config_changes::{apply, Change};
use super::{str_bytes, Ctx, Session};

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let changes = r
            .configs
            .iter()
            .map(|c| {
                let change = match &c.value {
                    Some(v) => Change::Set(v.to_string()),
                    None => Change::Delete,
                };
                (c.name.to_string(), change)
            })
            .collect();
        let (c, msg) = apply(
            ctx,
            session,
            r.resource_type,
            &r.resource_name,
            changes,
            true,
            req.validate_only,
        )
        .await;
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(c)
                .with_error_message(msg.map(str_bytes)),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}
