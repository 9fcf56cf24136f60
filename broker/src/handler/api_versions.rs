//! ApiVersions (key 18): the versions of every API we implement, from `protocol::SUPPORTED`.

use std::sync::Arc;

use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, RequestHeader};

use super::Ctx;
use crate::error::code;
use crate::protocol::api_version_entries;

pub fn handle(
    _ctx: &Arc<Ctx>,
    header: &RequestHeader,
    req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    tracing::debug!(
        client = header.client_id.as_deref().unwrap_or(""),
        software = %req.client_software_name,
        version = %req.client_software_version,
        "api versions"
    );
    // Optional tagged fields (features, finalized epoch) keep their defaults, so the codec
    // leaves them out: librdkafka < 2.2 fails on tagged fields it does not expect.
    ApiVersionsResponse::default()
        .with_error_code(code::NONE)
        .with_api_keys(api_version_entries())
}
