//! DescribeUserScramCredentials (key 50): which SCRAM mechanisms each user has a
//! credential for, and its iteration count (never the credential). Needs DESCRIBE on the
//! cluster. No users named (null or empty): every user with a credential.

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

pub fn handle(
    ctx: &Ctx,
    session: &Session,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !authorize(ctx, session, op::DESCRIBE, Resource::Cluster) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes(
                "describing SCRAM credentials needs DESCRIBE on the cluster",
            )));
    }
    let known = ctx.scram.describe();
    let found = |user: &str, mechanisms: &[(crate::scram::Mechanism, i32)]| {
        DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_credential_infos(
                mechanisms
                    .iter()
                    .map(|(m, iterations)| {
                        CredentialInfo::default()
                            .with_mechanism(m.code())
                            .with_iterations(*iterations)
                    })
                    .collect(),
            )
    };
    let failed = |user: &str, c: i16, msg: &str| {
        DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_error_code(c)
            .with_error_message(Some(str_bytes(msg)))
    };
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => known.iter().map(|(u, ms)| found(u, ms)).collect(),
        Some(asked) => {
            let mut results: Vec<DescribeUserScramCredentialsResult> = Vec::new();
            let mut index: std::collections::HashMap<&str, usize> = Default::default();
            for name in asked.iter().map(|u| &*u.name) {
                // A name asked twice gets one result, the error.
                if let Some(&i) = index.get(name) {
                    results[i] = failed(
                        name,
                        code::DUPLICATE_RESOURCE,
                        "Cannot describe SCRAM credentials for the same user twice in a single request",
                    );
                    continue;
                }
                index.insert(name, results.len());
                results.push(match known.get(name) {
                    Some(ms) => found(name, ms),
                    None => failed(
                        name,
                        code::RESOURCE_NOT_FOUND,
                        "Attempt to describe a user credential that does not exist",
                    ),
                });
            }
            results
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
