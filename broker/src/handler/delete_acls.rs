//! DeleteAcls (key 31): removes the bindings each filter matches, all filters in one
//! durable write, and reports what each removed. Needs ALTER on the cluster.

use std::sync::Arc;

use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::{str_bytes, Ctx, Session};
use crate::acl::Filter;
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |c: i16, msg: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(c)
            .with_error_message(Some(str_bytes(msg)))
    };
    if !authorize(ctx, session, op::ALTER, Resource::Cluster) {
        let results = req
            .filters
            .iter()
            .map(|_| {
                failed(
                    code::CLUSTER_AUTHORIZATION_FAILED,
                    "deleting ACLs needs ALTER on the cluster".into(),
                )
            })
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let parsed: Vec<Result<Filter, String>> = req
        .filters
        .into_iter()
        .map(|f| {
            let filter = Filter {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.map(|s| s.to_string()),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.map(|s| s.to_string()),
                host: f.host_filter.map(|s| s.to_string()),
                operation: f.operation,
                permission: f.permission_type,
            };
            filter.validate().map(|()| filter).map_err(|e| e.0)
        })
        .collect();
    let valid: Vec<Filter> = parsed
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .cloned()
        .collect();
    let c = ctx.clone();
    let outcome = tokio::task::spawn_blocking(move || c.acls.delete(&c.store, &valid))
        .await
        .unwrap_or_else(|e| Err(strata_storage::StorageError::Io(e.to_string())));
    let mut removed = match outcome {
        Ok(lists) => lists.into_iter(),
        Err(e) => {
            let (c, msg) = (storage_code(&e), e.to_string());
            let results = parsed.iter().map(|_| failed(c, msg.clone())).collect();
            return DeleteAclsResponse::default().with_filter_results(results);
        }
    };
    let results = parsed
        .into_iter()
        .map(|r| match r {
            Err(msg) => failed(code::INVALID_REQUEST, msg),
            Ok(_) => {
                let matching = removed
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        tracing::info!(principal = %session.principal, acl = ?b, "ACL deleted");
                        DeleteAclsMatchingAcl::default()
                            .with_resource_type(b.resource_type)
                            .with_resource_name(str_bytes(b.resource_name))
                            .with_pattern_type(b.pattern_type)
                            .with_principal(str_bytes(b.principal))
                            .with_host(str_bytes(b.host))
                            .with_operation(b.operation)
                            .with_permission_type(b.permission)
                    })
                    .collect();
                DeleteAclsFilterResult::default().with_matching_acls(matching)
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
