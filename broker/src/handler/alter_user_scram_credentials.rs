//! AlterUserScramCredentials (key 51): stores and deletes users' SCRAM credentials. Needs
//! ALTER on the cluster. The answer has one result per user named; a user whose changes
//! are all valid has them applied, together with every other such user's, in one durable
//! write; a user with any invalid change has none applied.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::scram::{Mechanism, Upsert, MAX_ITERATIONS, MIN_ITERATIONS};

/// Longest salt accepted (Kafka's clients send 64 bytes at most... of randomness; a few
/// KiB of salt would only cost every login more).
const MAX_SALT_BYTES: usize = 1024;

/// One user's changes, in request order.
#[derive(Default)]
struct UserChanges {
    upserts: Vec<Upsert>,
    deletes: Vec<Mechanism>,
    error: Option<(i16, String)>,
}

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Users in the order they first appear, found by name (a request may name a great
    // many: lookups stay constant-time).
    let mut users: Vec<(String, UserChanges)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut entry = |users: &mut Vec<(String, UserChanges)>, name: &str| -> usize {
        *index.entry(name.to_string()).or_insert_with(|| {
            users.push((name.to_string(), UserChanges::default()));
            users.len() - 1
        })
    };
    let fail = |c: &mut UserChanges, code: i16, msg: &str| {
        if c.error.is_none() {
            c.error = Some((code, msg.to_string()));
        }
    };
    let mut seen: HashSet<(String, i8)> = HashSet::new();
    let mut twice = |user: &str, mechanism: i8| !seen.insert((user.to_string(), mechanism));
    for d in &req.deletions {
        let dup = twice(&d.name, d.mechanism);
        let i = entry(&mut users, &d.name);
        let c = &mut users[i].1;
        match Mechanism::from_code(d.mechanism) {
            _ if dup => fail(
                c,
                code::DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            ),
            None => fail(
                c,
                code::UNSUPPORTED_SASL_MECHANISM,
                "Unknown SCRAM mechanism",
            ),
            Some(m) if !ctx.scram.contains(&d.name, m) => fail(
                c,
                code::RESOURCE_NOT_FOUND,
                "Attempt to delete a user credential that does not exist",
            ),
            Some(m) => c.deletes.push(m),
        }
    }
    for u in req.upsertions {
        let dup = twice(&u.name, u.mechanism);
        let i = entry(&mut users, &u.name);
        let c = &mut users[i].1;
        let Some(m) = Mechanism::from_code(u.mechanism) else {
            fail(
                c,
                code::UNSUPPORTED_SASL_MECHANISM,
                "Unknown SCRAM mechanism",
            );
            continue;
        };
        let problem = if dup {
            Some((
                code::DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            ))
        } else if u.iterations < MIN_ITERATIONS {
            Some((code::UNACCEPTABLE_CREDENTIAL, "Too few iterations"))
        } else if u.iterations > MAX_ITERATIONS {
            Some((code::UNACCEPTABLE_CREDENTIAL, "Too many iterations"))
        } else if u.salt.is_empty() || u.salt.len() > MAX_SALT_BYTES {
            Some((
                code::UNACCEPTABLE_CREDENTIAL,
                "The salt must hold 1 to 1024 bytes",
            ))
        } else if u.salted_password.len() != m.key_len() {
            Some((
                code::UNACCEPTABLE_CREDENTIAL,
                "The salted password is not as long as the mechanism's hash",
            ))
        } else {
            None
        };
        match problem {
            Some((code, msg)) => fail(c, code, msg),
            None => c.upserts.push(Upsert {
                user: u.name.to_string(),
                mechanism: m,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            }),
        }
    }
    for (name, c) in users.iter_mut() {
        if name.is_empty() {
            c.error = Some((
                code::UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty".into(),
            ));
        }
    }
    if !authorize(ctx, session, op::ALTER, Resource::Cluster) {
        for (_, c) in users.iter_mut() {
            c.error = Some((
                code::CLUSTER_AUTHORIZATION_FAILED,
                "altering SCRAM credentials needs ALTER on the cluster".into(),
            ));
        }
    }
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (name, c) in &users {
        if c.error.is_none() {
            upserts.extend(c.upserts.iter().cloned());
            deletes.extend(c.deletes.iter().map(|m| (name.clone(), *m)));
        }
    }
    let outcome: Result<bool, (i16, String)> = if upserts.is_empty() && deletes.is_empty() {
        Ok(true)
    } else {
        let limit = ctx.config.max_scram_credentials;
        let ctx2 = ctx.clone();
        tokio::task::spawn_blocking(move || {
            ctx2.scram.alter(&ctx2.store, &upserts, &deletes, limit)
        })
        .await
        .map_err(|e| {
            (
                code::KAFKA_STORAGE_ERROR,
                format!("storage task failed: {e}"),
            )
        })
        .and_then(|r| r.map_err(|e| (storage_code(&e), e.to_string())))
    };
    let results = users
        .into_iter()
        .map(|(name, c)| {
            let error = c.error.or_else(|| match &outcome {
                Ok(true) => None,
                Ok(false) => Some((
                    code::POLICY_VIOLATION,
                    format!(
                        "the broker keeps at most {} SCRAM credentials (max_scram_credentials)",
                        ctx.config.max_scram_credentials
                    ),
                )),
                Err(e) => Some(e.clone()),
            });
            let r = AlterUserScramCredentialsResult::default().with_user(str_bytes(name));
            match error {
                Some((c, msg)) => r
                    .with_error_code(c)
                    .with_error_message(Some(str_bytes(msg))),
                None => r,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
