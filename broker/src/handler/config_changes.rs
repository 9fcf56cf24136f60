//! The change logic shared by AlterConfigs (key 33, all overrides at once) and
//! IncrementalAlterConfigs (key 44, one operation per config): validated against the config
//! table, persisted, and in force at once. Broker settings are read-only (they come from
//! the config file).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::protocol::StrBytes;

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::Ctx;
use crate::error::{code, storage_code};
use crate::topic_config;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One requested change to a config.
pub enum Change {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

impl Change {
    pub fn incremental(op: i8, value: Option<&StrBytes>) -> Result<Change, String> {
        let v = || value.map(|s| s.to_string()).unwrap_or_default();
        Ok(match op {
            OP_SET => Change::Set(v()),
            OP_DELETE => Change::Delete,
            OP_APPEND => Change::Append(v()),
            OP_SUBTRACT => Change::Subtract(v()),
            other => return Err(format!("unknown config operation {other}")),
        })
    }
}

/// Applies `changes` to a resource: `replace` drops every override not named (AlterConfigs).
/// Returns the error code and message for the resource.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    ctx: &Arc<Ctx>,
    session: &super::Session,
    resource_type: i8,
    name: &str,
    changes: Vec<(String, Change)>,
    replace: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    if let Err((c, msg)) = crate::auth::authorize_config(
        ctx,
        session,
        crate::auth::op::ALTER_CONFIGS,
        resource_type,
        name,
    ) {
        return (c, Some(msg));
    }
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return (
                code::INVALID_REQUEST,
                Some("broker settings are read-only here; set them in the config file".into()),
            )
        }
        other => {
            return (
                code::INVALID_REQUEST,
                Some(format!("resource type {other} is not served here")),
            )
        }
    }
    let Some(topic) = ctx.store.topic(name) else {
        return (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(format!("topic {name} does not exist")),
        );
    };
    let mut configs = if replace {
        BTreeMap::new()
    } else {
        topic.configs.clone()
    };
    for (key, change) in changes {
        let Some(def) = topic_config::def(&key) else {
            return (
                code::INVALID_CONFIG,
                Some(format!("unknown topic config {key:?}")),
            );
        };
        let list_op = matches!(change, Change::Append(_) | Change::Subtract(_));
        if list_op && !def.kind.is_list() {
            return (
                code::INVALID_CONFIG,
                Some(format!(
                    "{key} is not a list; APPEND and SUBTRACT do not apply"
                )),
            );
        }
        let current = || topic_config::effective(&configs, &ctx.config, &key).unwrap_or_default();
        match change {
            Change::Set(v) => {
                configs.insert(key, v);
            }
            Change::Delete => {
                configs.remove(&key);
            }
            Change::Append(v) => {
                let mut items: Vec<String> = current()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for add in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !items.iter().any(|i| i == add) {
                        items.push(add.to_string());
                    }
                }
                configs.insert(key, items.join(","));
            }
            Change::Subtract(v) => {
                let drop: Vec<&str> = v.split(',').map(str::trim).collect();
                let items: Vec<String> = current()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && !drop.contains(s))
                    .map(String::from)
                    .collect();
                configs.insert(key, items.join(","));
            }
        }
    }
    let configs = match topic_config::normalize_all(configs) {
        Ok(c) => c,
        Err(m) => return (code::INVALID_CONFIG, Some(m)),
    };
    if validate_only {
        return (code::NONE, None);
    }
    let n = name.to_string();
    match ctx
        .blocking(move |s| s.set_topic_configs(&n, configs))
        .await
    {
        Ok(_) => {
            tracing::info!(topic = name, "topic configs changed");
            (code::NONE, None)
        }
        Err(e) => (storage_code(&e), Some(e.to_string())),
    }
}
