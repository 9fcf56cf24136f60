//! IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT on topic configs.

use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::config_changes::{apply, Change};
use super::{str_bytes, Ctx, Session};
use crate::error::code;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let changes: Result<Vec<_>, String> = r
            .configs
            .iter()
            .map(|c| {
                Ok((
                    c.name.to_string(),
                    Change::incremental(c.config_operation, c.value.as_ref())?,
                ))
            })
            .collect();
        let (c, msg) = match changes {
            Ok(changes) => {
                apply(
                    ctx,
                    session,
                    r.resource_type,
                    &r.resource_name,
                    changes,
                    false,
                    req.validate_only,
                )
                .await
            }
            Err(m) => (code::INVALID_REQUEST, Some(m)),
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(c)
                .with_error_message(msg.map(str_bytes)),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
