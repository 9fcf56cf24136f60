//! Authorization: Kafka's ACL operations per resource type, and what a session may do.
//!
//! Until ACLs exist every session may do everything (Kafka without an authorizer): the
//! authorized-operations fields of Metadata, DescribeGroups and DescribeCluster then carry
//! every operation the resource type supports, as Kafka's do.

use crate::handler::{Ctx, Session};

/// Kafka's ACL operation codes (`AclOperation`).
pub mod op {
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
}

impl Resource<'_> {
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

/// May `session` perform `operation` on `resource`?
pub fn authorize(_ctx: &Ctx, _session: &Session, _operation: i8, _resource: Resource<'_>) -> bool {
    true
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
