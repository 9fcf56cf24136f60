//! AlterClientQuotas (key 49): set or remove quota values per entity, all entries that pass
//! validation in one durable write (`validate_only`: checks only). Each entry is answered on
//! its own: INVALID_REQUEST for unknown entity types or keys, repeated types, keys or
//! entities, IP entities, empty names and values that are not positive (or not whole for the
//! byte rates). Needs ALTER_CONFIGS on the cluster.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::alter_client_quotas_request::EntryData;
use kafka_protocol::messages::alter_client_quotas_response::{self as response, EntityData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::quota::{validate_value, Change, Entity, QuotaType};

/// Checks one entry and returns its change.
fn parse(entry: &EntryData) -> Result<Change, String> {
    if let Some(p) = entry
        .entity
        .iter()
        .find(|p| p.entity_name.as_deref() == Some(""))
    {
        return Err(format!(
            "the {:?} entity's name is empty (a null name is the default entity)",
            &*p.entity_type
        ));
    }
    let entity = Entity::from_components(
        entry
            .entity
            .iter()
            .map(|p| (&*p.entity_type, p.entity_name.as_deref())),
    )?;
    let mut keys = HashSet::new();
    let mut ops = Vec::with_capacity(entry.ops.len());
    for o in &entry.ops {
        let Some(kind) = QuotaType::from_key(&o.key) else {
            return Err(format!("unknown quota key {:?}", &*o.key));
        };
        if !keys.insert(kind) {
            return Err(format!("quota key {:?} appears more than once", &*o.key));
        }
        if o.remove {
            ops.push((kind.key().to_string(), None));
        } else {
            validate_value(kind, o.value)?;
            ops.push((kind.key().to_string(), Some(o.value)));
        }
    }
    Ok((entity, ops))
}

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let allowed = authorize(ctx, session, op::ALTER_CONFIGS, Resource::Cluster);
    let mut results: Vec<Result<(), (i16, String)>> = Vec::with_capacity(req.entries.len());
    let mut changes: Vec<Change> = Vec::new();
    // An entity given twice would leave which values win to the order of entries: both
    // are refused.
    let parsed: Vec<Result<Change, String>> = req.entries.iter().map(parse).collect();
    let mut seen = std::collections::HashMap::<&Entity, usize>::new();
    for e in parsed.iter().flatten() {
        *seen.entry(&e.0).or_default() += 1;
    }
    for p in &parsed {
        results.push(match p {
            _ if !allowed => Err((
                code::CLUSTER_AUTHORIZATION_FAILED,
                "not authorized to alter client quotas".into(),
            )),
            Err(msg) => Err((code::INVALID_REQUEST, msg.clone())),
            Ok((e, _)) if seen.get(e).copied().unwrap_or(0) > 1 => Err((
                code::INVALID_REQUEST,
                "the entity appears in more than one entry".into(),
            )),
            Ok(change) => {
                changes.push(change.clone());
                Ok(())
            }
        });
    }
    if !req.validate_only && !changes.is_empty() {
        let c = ctx.clone();
        let stored = tokio::task::spawn_blocking(move || c.quotas.alter(&c.store, &changes))
            .await
            .unwrap_or_else(|e| {
                Err(strata_storage::StorageError::Io(format!(
                    "quota task failed: {e}"
                )))
            });
        match stored {
            Ok(()) => tracing::info!(principal = %session.principal, "client quotas altered"),
            Err(e) => {
                tracing::warn!(error = %e, "storing client quotas failed");
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err((storage_code(&e), e.to_string()));
                }
            }
        }
    }
    let entries = req
        .entries
        .iter()
        .zip(results)
        .map(|(entry, result)| {
            let entity = entry
                .entity
                .iter()
                .map(|p| {
                    EntityData::default()
                        .with_entity_type(p.entity_type.clone())
                        .with_entity_name(p.entity_name.clone())
                })
                .collect();
            let out = response::EntryData::default().with_entity(entity);
            match result {
                Ok(()) => out,
                Err((c, msg)) => out
                    .with_error_code(c)
                    .with_error_message(Some(str_bytes(msg))),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
