//! DescribeClientQuotas (key 48): the quota entities a filter matches, with their values.
//! Each filter component names an entity type and matches it exactly (match type 0), as the
//! default entity (1) or with any name (2, the default included); `strict` also requires
//! the entity to have no other component. Needs DESCRIBE_CONFIGS on the cluster.

use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;
use crate::quota::{Entity, CLIENT_ID, IP, USER};

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_ANY: i8 = 2;

/// What one component requires of an entity's part of its type.
#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// This name (`None`: the default entity).
    Is(Option<String>),
    /// Any name, the default included.
    Any,
}

/// A parsed filter: per entity type (user, client-id, ip), what it requires.
#[derive(Debug, Default)]
struct Filter {
    user: Option<Want>,
    client_id: Option<Want>,
    ip: Option<Want>,
    strict: bool,
}

impl Filter {
    fn parse(req: &DescribeClientQuotasRequest) -> Result<Filter, String> {
        let mut f = Filter {
            strict: req.strict,
            ..Filter::default()
        };
        for c in &req.components {
            let want = match (c.match_type, &c._match) {
                (MATCH_EXACT, Some(name)) => Want::Is(Some(name.to_string())),
                (MATCH_EXACT, None) => return Err("match type 0 (exact) needs a name".into()),
                (MATCH_DEFAULT, None) => Want::Is(None),
                (MATCH_ANY, None) => Want::Any,
                (MATCH_DEFAULT | MATCH_ANY, Some(_)) => {
                    return Err(format!(
                        "match type {} takes no name to match",
                        c.match_type
                    ))
                }
                (other, _) => return Err(format!("unknown match type {other}")),
            };
            let slot = match &*c.entity_type {
                USER => &mut f.user,
                CLIENT_ID => &mut f.client_id,
                IP => &mut f.ip,
                other => return Err(format!("unknown entity type {other:?}")),
            };
            if slot.is_some() {
                return Err(format!(
                    "entity type {:?} appears more than once",
                    &*c.entity_type
                ));
            }
            *slot = Some(want);
        }
        if f.ip.is_some() && (f.user.is_some() || f.client_id.is_some()) {
            return Err("an ip component cannot be combined with user or client-id".into());
        }
        Ok(f)
    }

    fn matches(&self, e: &Entity) -> bool {
        // No IP entity is ever stored (IP quotas are not supported).
        if self.ip.is_some() {
            return false;
        }
        let part = |want: &Option<Want>, have: &Option<Option<String>>| match (want, have) {
            (None, _) => !self.strict || have.is_none(),
            (Some(_), None) => false,
            (Some(Want::Any), Some(_)) => true,
            (Some(Want::Is(name)), Some(h)) => name == h,
        };
        part(&self.user, &e.user) && part(&self.client_id, &e.client_id)
    }
}

pub fn handle(
    ctx: &Ctx,
    session: &Session,
    req: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let failed = |c: i16, msg: String| {
        DescribeClientQuotasResponse::default()
            .with_error_code(c)
            .with_error_message(Some(str_bytes(msg)))
            .with_entries(None)
    };
    if !authorize(ctx, session, op::DESCRIBE_CONFIGS, Resource::Cluster) {
        return failed(
            code::CLUSTER_AUTHORIZATION_FAILED,
            "not authorized to describe client quotas".into(),
        );
    }
    let filter = match Filter::parse(&req) {
        Ok(f) => f,
        Err(msg) => return failed(code::INVALID_REQUEST, msg),
    };
    let entries = ctx
        .quotas
        .entries()
        .into_iter()
        .filter(|(e, _)| filter.matches(e))
        .map(|(e, values)| {
            EntryData::default()
                .with_entity(
                    e.components()
                        .into_iter()
                        .map(|(t, n)| {
                            EntityData::default()
                                .with_entity_type(str_bytes(t))
                                .with_entity_name(n.map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .into_iter()
                        .map(|(k, v)| ValueData::default().with_key(str_bytes(k)).with_value(v))
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;

    /// A filter of (entity type, match type, name) components.
    fn filter(components: &[(&str, i8, Option<&str>)], strict: bool) -> Result<Filter, String> {
        let mut req = DescribeClientQuotasRequest::default().with_strict(strict);
        for &(kind, match_type, name) in components {
            let mut c = ComponentData::default();
            c.entity_type = str_bytes(kind);
            c.match_type = match_type;
            c._match = name.map(str_bytes);
            req.components.push(c);
        }
        Filter::parse(&req)
    }

    fn entity(user: Option<Option<&str>>, client: Option<Option<&str>>) -> Entity {
        Entity {
            user: user.map(|u| u.map(str::to_string)),
            client_id: client.map(|c| c.map(str::to_string)),
        }
    }

    #[test]
    fn match_types_and_strict() {
        let alice = entity(Some(Some("alice")), None);
        let alice_app = entity(Some(Some("alice")), Some(Some("app")));
        let default_user = entity(Some(None), None);
        let exact = filter(&[(USER, MATCH_EXACT, Some("alice"))], false).unwrap();
        assert!(exact.matches(&alice) && exact.matches(&alice_app));
        assert!(!exact.matches(&default_user));
        let strict = filter(&[(USER, MATCH_EXACT, Some("alice"))], true).unwrap();
        assert!(strict.matches(&alice) && !strict.matches(&alice_app));
        let default = filter(&[(USER, MATCH_DEFAULT, None)], false).unwrap();
        assert!(default.matches(&default_user) && !default.matches(&alice));
        let any = filter(&[(CLIENT_ID, MATCH_ANY, None)], false).unwrap();
        assert!(any.matches(&alice_app) && !any.matches(&alice));
        let everything = filter(&[], false).unwrap();
        assert!(everything.matches(&alice) && everything.matches(&default_user));
        assert!(!filter(&[], true).unwrap().matches(&alice));
        assert!(!filter(&[(IP, MATCH_ANY, None)], false)
            .unwrap()
            .matches(&alice));
    }

    #[test]
    fn bad_filters_are_refused() {
        for (components, why) in [
            (vec![(USER, MATCH_EXACT, None)], "exact without a name"),
            (
                vec![(USER, MATCH_DEFAULT, Some("a"))],
                "default with a name",
            ),
            (vec![(USER, MATCH_ANY, Some("a"))], "any with a name"),
            (vec![(USER, 3, None)], "unknown match type"),
            (vec![(USER, -1, None)], "negative match type"),
            (vec![("group", MATCH_ANY, None)], "unknown entity type"),
            (
                vec![(USER, MATCH_ANY, None), (USER, MATCH_DEFAULT, None)],
                "a type twice",
            ),
            (
                vec![(IP, MATCH_ANY, None), (USER, MATCH_ANY, None)],
                "ip with user",
            ),
        ] {
            assert!(filter(&components, false).is_err(), "{why}");
        }
    }
}
