//! DescribeAcls (key 29): the bindings a filter matches, grouped by resource pattern.
//! Needs DESCRIBE on the cluster.

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};

use super::{str_bytes, Ctx, Session};
use crate::acl::Filter;
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub fn handle(ctx: &Ctx, session: &Session, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let error = |c: i16, msg: String| {
        DescribeAclsResponse::default()
            .with_error_code(c)
            .with_error_message(Some(str_bytes(msg)))
    };
    if !authorize(ctx, session, op::DESCRIBE, Resource::Cluster) {
        return error(
            code::CLUSTER_AUTHORIZATION_FAILED,
            "describing ACLs needs DESCRIBE on the cluster".into(),
        );
    }
    let filter = Filter {
        resource_type: req.resource_type_filter,
        resource_name: req.resource_name_filter.map(|s| s.to_string()),
        pattern_type: req.pattern_type_filter,
        principal: req.principal_filter.map(|s| s.to_string()),
        host: req.host_filter.map(|s| s.to_string()),
        operation: req.operation,
        permission: req.permission_type,
    };
    if let Err(e) = filter.validate() {
        return error(code::INVALID_REQUEST, e.0);
    }
    // Sorted by resource type, name, pattern type first: one entry per resource pattern.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in ctx.acls.describe(&filter) {
        let same = resources.last().is_some_and(|r| {
            r.resource_type == b.resource_type
                && *r.resource_name == *b.resource_name
                && r.pattern_type == b.pattern_type
        });
        if !same {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type)
                    .with_resource_name(str_bytes(b.resource_name.clone()))
                    .with_pattern_type(b.pattern_type),
            );
        }
        if let Some(r) = resources.last_mut() {
            r.acls.push(
                AclDescription::default()
                    .with_principal(str_bytes(b.principal))
                    .with_host(str_bytes(b.host))
                    .with_operation(b.operation)
                    .with_permission_type(b.permission),
            );
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}
