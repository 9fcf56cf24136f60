//! Authorization: Kafka's ACL operations per resource type, and what a session may do.
//!
//! The decision itself is [`crate::acl::Acls::authorize`]; this module names resources and
//! answers for a session. With no ACLs and `allow_everyone_if_no_acl_found` (the default)
//! every session may do everything, and the authorized-operations fields of Metadata,
//! DescribeGroups and DescribeCluster carry every operation the resource type supports, as
//! Kafka's do.

use crate::acl::{resource_type, Requester, CLUSTER_NAME};
use crate::handler::{Ctx, Session};

/// Kafka's ACL operation codes (`AclOperation`).
pub mod op {
    /// Filters only: any operation.
    pub const ANY: i8 = 1;
    /// In an ACL: every operation.
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
}

/// What an operation acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
    Cluster,
    TransactionalId(&'a str),
}

impl Resource<'_> {
    /// Kafka's resource type code and the resource's name.
    pub fn kind_and_name(&self) -> (i8, &str) {
        match self {
            Resource::Topic(n) => (resource_type::TOPIC, n),
            Resource::Group(n) => (resource_type::GROUP, n),
            Resource::Cluster => (resource_type::CLUSTER, CLUSTER_NAME),
            Resource::TransactionalId(n) => (resource_type::TRANSACTIONAL_ID, n),
        }
    }

    /// The operations Kafka defines for this resource type.
    pub fn supported_operations(&self) -> &'static [i8] {
        use op::*;
        match self {
            Resource::Topic(_) => &[
                READ,
                WRITE,
                CREATE,
                DELETE,
                ALTER,
                DESCRIBE,
                DESCRIBE_CONFIGS,
                ALTER_CONFIGS,
            ],
            Resource::Group(_) => &[READ, DESCRIBE, DELETE],
            Resource::TransactionalId(_) => &[WRITE, DESCRIBE],
            Resource::Cluster => &[
                CREATE,
                ALTER,
                DESCRIBE,
                CLUSTER_ACTION,
                DESCRIBE_CONFIGS,
                ALTER_CONFIGS,
                IDEMPOTENT_WRITE,
            ],
        }
    }
}

fn requester(session: &Session) -> Requester<'_> {
    Requester {
        principal: &session.principal,
        host: session.peer.ip(),
    }
}

/// May `session` perform `operation` on `resource`?
pub fn authorize(ctx: &Ctx, session: &Session, operation: i8, resource: Resource<'_>) -> bool {
    let (kind, name) = resource.kind_and_name();
    ctx.acls
        .authorize(requester(session), operation, kind, name)
}

/// May `session` perform `operation` on at least one resource of the kind of `resource`
/// (its name is ignored)?
pub fn authorize_any(ctx: &Ctx, session: &Session, operation: i8, resource: Resource<'_>) -> bool {
    let (kind, _) = resource.kind_and_name();
    ctx.acls.authorize_any(requester(session), operation, kind)
}

/// May `session` perform `operation` on the cluster or, failing that, on `resource`?
/// (Kafka's rule for CreateTopics, configs of topics, and similar.)
pub fn authorize_cluster_or(
    ctx: &Ctx,
    session: &Session,
    operation: i8,
    resource: Resource<'_>,
) -> bool {
    authorize(ctx, session, operation, Resource::Cluster)
        || authorize(ctx, session, operation, resource)
}

/// The operations `session` may perform on `resource`, as Kafka encodes them in
/// authorized-operations fields: bit `1 << op` set for each.
pub fn authorized_operations(ctx: &Ctx, session: &Session, resource: Resource<'_>) -> i32 {
    resource
        .supported_operations()
        .iter()
        .filter(|&&op| authorize(ctx, session, op, resource))
        .fold(0, |bits, &op| bits | (1 << op))
}

/// The check of the config APIs: `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on the
/// topic for topic resources, on the cluster for broker ones (config resource types 2 and
/// 4). `Err` holds the error code; other resource types are the handler's to refuse.
pub fn authorize_config(
    ctx: &Ctx,
    session: &Session,
    operation: i8,
    config_resource_type: i8,
    name: &str,
) -> Result<(), (i16, String)> {
    use crate::error::code;
    match config_resource_type {
        2 if !authorize(ctx, session, operation, Resource::Topic(name)) => Err((
            code::TOPIC_AUTHORIZATION_FAILED,
            format!("not authorized to the configs of topic {name}"),
        )),
        4 if !authorize(ctx, session, operation, Resource::Cluster) => Err((
            code::CLUSTER_AUTHORIZATION_FAILED,
            "not authorized to the broker's configs".into(),
        )),
        _ => Ok(()),
    }
}

/// What an authorized-operations field holds when the client did not ask for it.
pub const NOT_REQUESTED: i32 = i32::MIN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_bits_are_kafkas() {
        let bits = |r: Resource<'_>| {
            r.supported_operations()
                .iter()
                .fold(0i32, |b, &op| b | (1 << op))
        };
        // The values Kafka's brokers send without an authorizer.
        assert_eq!(bits(Resource::Topic("t")), 3576);
        assert_eq!(bits(Resource::Group("g")), 328);
        assert_eq!(bits(Resource::Cluster), 8096);
    }
}
