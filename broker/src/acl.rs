//! Access-control lists: Kafka's ACL model (resource and pattern types, principals, hosts,
//! operations, permissions), the bindings held in memory and indexed for checks, and the
//! authorizer's decision (deny wins; ALL and implied operations; super users; what to do
//! when a resource has no ACL at all).
//!
//! Bindings are stored durably by the storage crate; this index is rebuilt from them at
//! start-up and changed only after the store has them (a failed write changes nothing).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};

use strata_storage::{AclBinding, StorageError, Store};

use crate::auth::op;

/// Kafka's resource type codes (`ResourceType`).
pub mod resource_type {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
}

/// Kafka's pattern type codes (`PatternType`); ANY and MATCH only in filters.
pub mod pattern_type {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's permission type codes (`AclPermissionType`); ANY only in filters.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// A literal resource name, host or principal name that matches every one.
pub const WILDCARD: &str = "*";
/// The principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The only name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Why a binding or filter was refused: Kafka answers these with INVALID_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(msg.into()))
}

/// Checks a binding a client asked to create (Kafka's rules for new ACLs).
pub fn validate_binding(b: &AclBinding) -> Result<(), Invalid> {
    use resource_type::*;
    if !matches!(b.resource_type, TOPIC | GROUP | CLUSTER | TRANSACTIONAL_ID) {
        return invalid(format!(
            "resource type {} is not one ACLs can name",
            b.resource_type
        ));
    }
    if !matches!(
        b.pattern_type,
        pattern_type::LITERAL | pattern_type::PREFIXED
    ) {
        return invalid(format!(
            "pattern type {} (an ACL is LITERAL (3) or PREFIXED (4))",
            b.pattern_type
        ));
    }
    if b.resource_name.is_empty() {
        return invalid("the resource name is empty");
    }
    if b.resource_type == CLUSTER
        && (b.resource_name != CLUSTER_NAME || b.pattern_type != pattern_type::LITERAL)
    {
        return invalid(format!(
            "the only cluster resource is the literal {CLUSTER_NAME:?}"
        ));
    }
    if !(op::ALL..=op::IDEMPOTENT_WRITE).contains(&b.operation) {
        return invalid(format!("operation {} is not an ACL operation", b.operation));
    }
    if !matches!(b.permission, permission::DENY | permission::ALLOW) {
        return invalid(format!(
            "permission {} (an ACL is DENY (2) or ALLOW (3))",
            b.permission
        ));
    }
    match b.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => return invalid(format!("principal {:?} is not Type:name", b.principal)),
    }
    if b.host != WILDCARD && b.host.parse::<IpAddr>().is_err() {
        return invalid(format!("host {:?} is neither * nor an IP address", b.host));
    }
    Ok(())
}

/// Which bindings DescribeAcls and DeleteAcls act on. `None` strings match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl Filter {
    /// Refuses codes outside Kafka's ranges (and UNKNOWN, 0, everywhere).
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(resource_type::ANY..=resource_type::TRANSACTIONAL_ID).contains(&self.resource_type) {
            return invalid(format!("resource type filter {}", self.resource_type));
        }
        if !(pattern_type::ANY..=pattern_type::PREFIXED).contains(&self.pattern_type) {
            return invalid(format!("pattern type filter {}", self.pattern_type));
        }
        if !(op::ANY..=op::IDEMPOTENT_WRITE).contains(&self.operation) {
            return invalid(format!("operation filter {}", self.operation));
        }
        if !(permission::ANY..=permission::ALLOW).contains(&self.permission) {
            return invalid(format!("permission filter {}", self.permission));
        }
        Ok(())
    }

    /// Kafka's filter semantics: ANY pattern type with a name matches bindings of exactly
    /// that name; MATCH with a name matches the bindings that would apply to a resource of
    /// that name (the literal, the wildcard, and every prefix of it).
    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type != resource_type::ANY && self.resource_type != b.resource_type {
            return false;
        }
        let pattern_ok = match (self.pattern_type, &self.resource_name) {
            (pattern_type::MATCH, None) | (pattern_type::ANY, None) => true,
            (pattern_type::ANY, Some(name)) => *name == b.resource_name,
            (pattern_type::MATCH, Some(name)) => match b.pattern_type {
                pattern_type::LITERAL => *name == b.resource_name || b.resource_name == WILDCARD,
                pattern_type::PREFIXED => name.starts_with(&b.resource_name),
                _ => false,
            },
            (p, name) => p == b.pattern_type && name.as_ref().is_none_or(|n| *n == b.resource_name),
        };
        pattern_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == op::ANY || self.operation == b.operation)
            && (self.permission == permission::ANY || self.permission == b.permission)
    }
}

/// Does an ALLOW for `granted` allow `wanted`? ALL allows everything; READ, WRITE, DELETE
/// and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
fn implies(granted: i8, wanted: i8) -> bool {
    granted == op::ALL
        || granted == wanted
        || (wanted == op::DESCRIBE
            && matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER))
        || (wanted == op::DESCRIBE_CONFIGS && granted == op::ALTER_CONFIGS)
}

/// Who asks, and from where.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub principal: &'a str,
    pub host: IpAddr,
}

impl Requester<'_> {
    fn is_subject_of(&self, b: &AclBinding) -> bool {
        (b.principal == self.principal || b.principal == WILDCARD_PRINCIPAL)
            && (b.host == WILDCARD
                || b.host
                    .parse::<IpAddr>()
                    .is_ok_and(|h| h.to_canonical() == self.host.to_canonical()))
    }
}

/// The bindings, indexed by what they apply to.
#[derive(Default)]
struct Index {
    /// Every binding (for describe and delete).
    all: BTreeSet<AclBinding>,
    /// LITERAL bindings by resource type, then name; the wildcard name `*` is a key too.
    /// (Nested so a check looks names up as `&str`, without allocating.)
    literal: HashMap<i8, HashMap<String, Vec<AclBinding>>>,
    /// PREFIXED bindings by resource type, then prefix.
    prefixed: HashMap<i8, HashMap<String, Vec<AclBinding>>>,
    /// The prefix lengths present per resource type: a check looks up only those.
    prefix_lengths: BTreeSet<(i8, usize)>,
    /// Bindings per resource type (for "allowed on any resource of this type").
    per_type: HashMap<i8, usize>,
}

impl Index {
    fn build(bindings: impl IntoIterator<Item = AclBinding>) -> Index {
        let mut index = Index::default();
        for b in bindings {
            index.all.insert(b);
        }
        for b in &index.all {
            let map = match b.pattern_type {
                pattern_type::PREFIXED => {
                    index
                        .prefix_lengths
                        .insert((b.resource_type, b.resource_name.len()));
                    &mut index.prefixed
                }
                _ => &mut index.literal,
            };
            map.entry(b.resource_type)
                .or_default()
                .entry(b.resource_name.clone())
                .or_default()
                .push(b.clone());
            *index.per_type.entry(b.resource_type).or_default() += 1;
        }
        index
    }

    /// Every binding that applies to the resource `(kind, name)`, whoever it is for.
    fn applying<'a>(&'a self, kind: i8, name: &str, mut each: impl FnMut(&'a AclBinding)) {
        if let Some(literal) = self.literal.get(&kind) {
            for n in [name, WILDCARD] {
                if let Some(list) = literal.get(n) {
                    list.iter().for_each(&mut each);
                }
                if name == WILDCARD {
                    break;
                }
            }
        }
        let Some(prefixed) = self.prefixed.get(&kind) else {
            return;
        };
        for &(_, len) in self.prefix_lengths.range((kind, 0)..=(kind, usize::MAX)) {
            if let Some(list) = name.get(..len).and_then(|prefix| prefixed.get(prefix)) {
                list.iter().for_each(&mut each);
            }
        }
    }
}

/// The authorizer: bindings in memory, super users, and the no-ACL default.
pub struct Acls {
    index: RwLock<Index>,
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
    /// Serializes changes: store write, then index update, one change at a time.
    changes: Mutex<()>,
}

impl Acls {
    /// Loads the stored bindings. Blocks: scans them (start-up only).
    pub fn load(
        store: &Store,
        super_users: &str,
        allow_if_no_acl: bool,
    ) -> Result<Acls, StorageError> {
        Ok(Acls::new(store.acls()?, super_users, allow_if_no_acl))
    }

    pub fn new(bindings: Vec<AclBinding>, super_users: &str, allow_if_no_acl: bool) -> Acls {
        Acls {
            index: RwLock::new(Index::build(bindings)),
            super_users: parse_principals(super_users).into_iter().collect(),
            allow_if_no_acl,
            changes: Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// May `who` perform `operation` on the resource `(kind, name)`? Super users may do
    /// anything; a DENY that applies wins over every ALLOW; a resource no binding applies to
    /// (for anyone) is allowed iff `allow_everyone_if_no_acl_found`.
    pub fn authorize(&self, who: Requester<'_>, operation: i8, kind: i8, name: &str) -> bool {
        if self.is_super_user(who.principal) {
            return true;
        }
        let index = self.read();
        if index.all.is_empty() {
            return self.allow_if_no_acl;
        }
        let (mut any, mut denied, mut allowed) = (false, false, false);
        index.applying(kind, name, |b| {
            any = true;
            if denied || !who.is_subject_of(b) {
                return;
            }
            match b.permission {
                permission::DENY if b.operation == op::ALL || b.operation == operation => {
                    denied = true
                }
                permission::ALLOW if implies(b.operation, operation) => allowed = true,
                _ => {}
            }
        });
        if denied {
            return false;
        }
        if !any {
            return self.allow_if_no_acl;
        }
        allowed
    }

    /// May `who` perform `operation` on at least one resource of type `kind` (Kafka's
    /// authorize-by-resource-type, e.g. WRITE on some topic for an idempotent producer)?
    pub fn authorize_any(&self, who: Requester<'_>, operation: i8, kind: i8) -> bool {
        if self.is_super_user(who.principal) {
            return true;
        }
        let index = self.read();
        if index.per_type.get(&kind).copied().unwrap_or(0) == 0 {
            return self.allow_if_no_acl;
        }
        let subject = |b: &&AclBinding| b.resource_type == kind && who.is_subject_of(b);
        let denies: Vec<&AclBinding> = index
            .all
            .iter()
            .filter(subject)
            .filter(|b| {
                b.permission == permission::DENY
                    && (b.operation == op::ALL || b.operation == operation)
            })
            .collect();
        let covered = |name: &str| {
            denies.iter().any(|d| match d.pattern_type {
                pattern_type::PREFIXED => name.starts_with(&d.resource_name),
                _ => d.resource_name == WILDCARD || d.resource_name == name,
            })
        };
        index.all.iter().filter(subject).any(|b| {
            b.permission == permission::ALLOW
                && implies(b.operation, operation)
                && !covered(&b.resource_name)
        })
    }

    /// Every binding `filter` matches, in a stable order.
    pub fn describe(&self, filter: &Filter) -> Vec<AclBinding> {
        self.read()
            .all
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Stores `add` durably, then serves it; `Ok(false)` (and nothing stored) when the
    /// broker would then hold more than `limit` bindings. Blocks: a synced write.
    pub fn create(
        &self,
        store: &Store,
        add: &[AclBinding],
        limit: usize,
    ) -> Result<bool, StorageError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        {
            let index = self.read();
            let new = add
                .iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|b| !index.all.contains(*b))
                .count();
            if new > 0 && index.all.len() + new > limit {
                return Ok(false);
            }
        }
        store.update_acls(add, &[])?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let all = std::mem::take(&mut index.all);
        *index = Index::build(all.into_iter().chain(add.iter().cloned()));
        Ok(true)
    }

    /// Removes every binding each filter matches, durably and all at once; returns what
    /// each filter removed. Blocks: a synced write.
    pub fn delete(
        &self,
        store: &Store,
        filters: &[Filter],
    ) -> Result<Vec<Vec<AclBinding>>, StorageError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let per_filter: Vec<Vec<AclBinding>> = filters.iter().map(|f| self.describe(f)).collect();
        let gone: BTreeSet<AclBinding> = per_filter.iter().flatten().cloned().collect();
        if gone.is_empty() {
            return Ok(per_filter);
        }
        let list: Vec<AclBinding> = gone.iter().cloned().collect();
        store.update_acls(&[], &list)?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let all = std::mem::take(&mut index.all);
        *index = Index::build(all.into_iter().filter(|b| !gone.contains(b)));
        Ok(per_filter)
    }

    pub fn len(&self) -> usize {
        self.read().all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `super_users`: principals separated by `;` or `,`, blanks ignored.
pub fn parse_principals(list: &str) -> Vec<String> {
    list.split([';', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        kind: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        host: &str,
        o: i8,
        p: i8,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: host.into(),
            operation: o,
            permission: p,
        }
    }

    fn who<'a>(principal: &'a str, host: &str) -> Requester<'a> {
        Requester {
            principal,
            host: host.parse().unwrap(),
        }
    }

    const T: i8 = resource_type::TOPIC;
    const L: i8 = pattern_type::LITERAL;
    const P: i8 = pattern_type::PREFIXED;
    const A: i8 = permission::ALLOW;
    const D: i8 = permission::DENY;

    #[test]
    fn no_acls_follows_the_default() {
        let open = Acls::new(vec![], "", true);
        assert!(open.authorize(who("User:a", "1.2.3.4"), op::WRITE, T, "t"));
        let closed = Acls::new(vec![], "User:root", false);
        assert!(!closed.authorize(who("User:a", "1.2.3.4"), op::WRITE, T, "t"));
        assert!(closed.authorize(who("User:root", "1.2.3.4"), op::WRITE, T, "t"));
    }

    #[test]
    fn deny_wins_and_operations_imply() {
        let acls = Acls::new(
            vec![
                acl(T, "t", L, "User:*", "*", op::READ, A),
                acl(T, "t", L, "User:a", "10.0.0.2", op::ALL, D),
                acl(T, "cfg", L, "User:a", "*", op::ALTER_CONFIGS, A),
                acl(T, "all", L, "User:a", "*", op::ALL, A),
            ],
            "",
            true,
        );
        let a1 = who("User:a", "10.0.0.1");
        let a2 = who("User:a", "10.0.0.2");
        assert!(acls.authorize(a1, op::READ, T, "t"));
        assert!(
            acls.authorize(a1, op::DESCRIBE, T, "t"),
            "READ implies DESCRIBE"
        );
        assert!(!acls.authorize(a1, op::WRITE, T, "t"));
        assert!(
            !acls.authorize(a2, op::READ, T, "t"),
            "a host's DENY ALL wins"
        );
        assert!(acls.authorize(a1, op::DESCRIBE_CONFIGS, T, "cfg"));
        assert!(!acls.authorize(a1, op::DESCRIBE, T, "cfg"));
        assert!(acls.authorize(a1, op::DELETE, T, "all"));
        assert!(
            acls.authorize(a1, op::WRITE, T, "other"),
            "no binding applies to it: the default"
        );
        assert!(!acls.authorize(who("User:b", "10.0.0.1"), op::WRITE, T, "t"));
    }

    #[test]
    fn prefixed_and_wildcard_names_apply() {
        let acls = Acls::new(
            vec![
                acl(T, "pay", P, "User:a", "*", op::WRITE, A),
                acl(T, "payroll", P, "User:a", "*", op::WRITE, D),
                acl(T, "*", L, "User:b", "*", op::READ, A),
            ],
            "",
            false,
        );
        let a = who("User:a", "::1");
        assert!(acls.authorize(a, op::WRITE, T, "payments"));
        assert!(!acls.authorize(a, op::WRITE, T, "payroll-2026"));
        assert!(!acls.authorize(a, op::WRITE, T, "pa"));
        assert!(acls.authorize(who("User:b", "::1"), op::READ, T, "anything"));
        assert!(acls.authorize_any(a, op::WRITE, T));
        assert!(!acls.authorize_any(a, op::READ, T));
        assert!(!acls.authorize(a, op::READ, resource_type::GROUP, "g"));
    }

    #[test]
    fn filters_match_like_kafka() {
        let b = acl(T, "pay", P, "User:a", "*", op::WRITE, A);
        let any = Filter {
            resource_type: resource_type::ANY,
            resource_name: None,
            pattern_type: pattern_type::ANY,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        assert!(any.matches(&b));
        let named = |p: i8, n: &str| Filter {
            pattern_type: p,
            resource_name: Some(n.into()),
            ..any.clone()
        };
        assert!(named(pattern_type::ANY, "pay").matches(&b));
        assert!(!named(pattern_type::ANY, "payments").matches(&b));
        assert!(named(pattern_type::MATCH, "payments").matches(&b));
        assert!(!named(pattern_type::LITERAL, "pay").matches(&b));
        assert!(named(pattern_type::PREFIXED, "pay").matches(&b));
        let wildcard = acl(T, "*", L, "User:a", "*", op::WRITE, A);
        assert!(named(pattern_type::MATCH, "x").matches(&wildcard));
        assert!(!Filter {
            operation: op::READ,
            ..any.clone()
        }
        .matches(&b));
        assert!(Filter {
            operation: 0,
            ..any
        }
        .validate()
        .is_err());
    }

    #[test]
    fn bindings_are_validated() {
        let good = acl(T, "t", L, "User:a", "*", op::READ, A);
        assert!(validate_binding(&good).is_ok());
        for bad in [
            AclBinding {
                resource_type: 1,
                ..good.clone()
            },
            AclBinding {
                pattern_type: pattern_type::MATCH,
                ..good.clone()
            },
            AclBinding {
                operation: op::ANY,
                ..good.clone()
            },
            AclBinding {
                permission: permission::ANY,
                ..good.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            AclBinding {
                host: "example.com".into(),
                ..good.clone()
            },
            AclBinding {
                resource_name: String::new(),
                ..good.clone()
            },
            AclBinding {
                resource_type: resource_type::CLUSTER,
                ..good.clone()
            },
        ] {
            assert!(validate_binding(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_principals("User:a; User:b,User:c;"),
            ["User:a", "User:b", "User:c"]
        );
    }
}
