//! CreateAcls (key 30): stores ACL bindings durably. Needs ALTER on the cluster; each
//! creation is validated on its own, and the valid ones are stored in one write.

use std::sync::Arc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use strata_storage::AclBinding;

use super::{str_bytes, Ctx, Session};
use crate::acl::validate_binding;
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: CreateAclsRequest,
) -> CreateAclsResponse {
    let failed = |c: i16, msg: String| {
        AclCreationResult::default()
            .with_error_code(c)
            .with_error_message(Some(str_bytes(msg)))
    };
    if !authorize(ctx, session, op::ALTER, Resource::Cluster) {
        let results = req
            .creations
            .iter()
            .map(|_| {
                failed(
                    code::CLUSTER_AUTHORIZATION_FAILED,
                    "creating ACLs needs ALTER on the cluster".into(),
                )
            })
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let mut results: Vec<Result<AclBinding, (i16, String)>> = req
        .creations
        .into_iter()
        .map(|c| {
            let b = AclBinding {
                resource_type: c.resource_type,
                resource_name: c.resource_name.to_string(),
                pattern_type: c.resource_pattern_type,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: c.operation,
                permission: c.permission_type,
            };
            validate_binding(&b)
                .map(|()| b)
                .map_err(|e| (code::INVALID_REQUEST, e.0))
        })
        .collect();
    let valid: Vec<AclBinding> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .cloned()
        .collect();
    if !valid.is_empty() {
        let c = ctx.clone();
        let limit = ctx.config.max_acls;
        let outcome = tokio::task::spawn_blocking(move || c.acls.create(&c.store, &valid, limit))
            .await
            .unwrap_or_else(|e| Err(strata_storage::StorageError::Io(e.to_string())));
        let failure = match outcome {
            Ok(true) => {
                for b in results.iter().flatten() {
                    tracing::info!(principal = %session.principal, acl = ?b, "ACL created");
                }
                None
            }
            Ok(false) => Some((
                code::POLICY_VIOLATION,
                format!("the broker keeps at most {limit} ACLs (max_acls)"),
            )),
            Err(e) => Some((storage_code(&e), e.to_string())),
        };
        if let Some(failure) = failure {
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(failure.clone());
                }
            }
        }
    }
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok(_) => AclCreationResult::default(),
            Err((c, msg)) => failed(c, msg),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}
