//! DescribeConfigs (key 32): topic configs (overrides and broker defaults, with sources,
//! synonyms and documentation) and the broker's own settings (read-only).

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{str_bytes, Ctx, Session};
use crate::config::Config;
use crate::error::code;
use crate::topic_config::{self, Kind};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Config sources (DescribeConfigs v1+).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let docs = version >= 3 && req.include_documentation;
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let keys: Option<Vec<String>> = r
                .configuration_keys
                .as_ref()
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            if let Err((c, msg)) = crate::auth::authorize_config(
                ctx,
                session,
                crate::auth::op::DESCRIBE_CONFIGS,
                r.resource_type,
                &r.resource_name,
            ) {
                return base
                    .with_error_code(c)
                    .with_error_message(Some(str_bytes(msg)));
            }
            let configs = match r.resource_type {
                RESOURCE_TOPIC => match ctx.store.topic(&r.resource_name) {
                    Some(t) => topic_config::all()
                        .filter(|d| wanted(d.name))
                        .map(|d| {
                            let default = (d.default)(&ctx.config);
                            let broker_source = broker_source(d.broker_name, &default);
                            let (value, source) = match t.configs.get(d.name) {
                                Some(v) => (v.clone(), SOURCE_TOPIC),
                                None => (default.clone(), broker_source),
                            };
                            let mut synonyms = Vec::new();
                            if req.include_synonyms {
                                if let Some(v) = t.configs.get(d.name) {
                                    synonyms.push(synonym(d.name, v, SOURCE_TOPIC));
                                }
                                synonyms.push(synonym(d.broker_name, &default, broker_source));
                            }
                            entry(
                                d.name,
                                &value,
                                source,
                                false,
                                d.kind.wire_type(),
                                docs.then_some(d.doc),
                            )
                            .with_synonyms(synonyms)
                        })
                        .collect(),
                    None => {
                        return base
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(str_bytes(format!(
                                "topic {} does not exist",
                                &*r.resource_name
                            ))));
                    }
                },
                RESOURCE_BROKER
                    if r.resource_name.is_empty()
                        || r.resource_name.as_str() == ctx.node_id().to_string() =>
                {
                    broker_configs(&ctx.config)
                        .into_iter()
                        .filter(|(n, _, _)| wanted(n))
                        .map(|(name, value, kind)| {
                            let source = broker_source(name, &value);
                            let e = entry(name, &value, source, true, kind.wire_type(), None);
                            if req.include_synonyms {
                                e.with_synonyms(vec![synonym(name, &value, source)])
                            } else {
                                e
                            }
                        })
                        .collect()
                }
                other => {
                    return base
                        .with_error_code(code::INVALID_REQUEST)
                        .with_error_message(Some(str_bytes(format!(
                            "resource type {other} / {} is not served here",
                            &*r.resource_name
                        ))));
                }
            };
            base.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    read_only: bool,
    config_type: i8,
    doc: Option<&str>,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_read_only(read_only)
        .with_config_source(source)
        .with_config_type(config_type)
        .with_documentation(doc.map(str_bytes))
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source)
}

/// DEFAULT_CONFIG when the broker runs with the built-in value, else STATIC_BROKER_CONFIG.
fn broker_source(broker_name: &str, value: &str) -> i8 {
    static BUILTIN: std::sync::OnceLock<Vec<(&'static str, String, Kind)>> =
        std::sync::OnceLock::new();
    let builtin = BUILTIN.get_or_init(|| broker_configs(&Config::default()));
    match builtin.iter().find(|(n, _, _)| *n == broker_name) {
        Some((_, v, _)) if v == value => SOURCE_DEFAULT,
        Some(_) => SOURCE_STATIC_BROKER,
        None => SOURCE_DEFAULT,
    }
}

/// The broker's settings under Kafka's names.
pub fn broker_configs(c: &Config) -> Vec<(&'static str, String, Kind)> {
    let long = Kind::Long(i64::MIN);
    let int = Kind::Int(i64::MIN);
    let mut configs = vec![
        ("node.id", c.node_id.to_string(), int),
        (
            "listeners",
            match c.listeners.is_empty() {
                true => format!("PLAINTEXT://{}", c.listen),
                false => c.listeners.clone(),
            },
            Kind::OneOf(&[]),
        ),
        (
            "advertised.listeners",
            match c.advertised_listeners.is_empty() {
                true => format!(
                    "PLAINTEXT://{}",
                    c.advertise.clone().unwrap_or_else(|| c.listen.clone())
                ),
                false => c.advertised_listeners.clone(),
            },
            Kind::OneOf(&[]),
        ),
        (
            "log.dirs",
            c.data_dir.display().to_string(),
            Kind::OneOf(&[]),
        ),
        ("num.partitions", c.num_partitions.to_string(), int),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            Kind::Bool,
        ),
        ("message.max.bytes", c.message_max_bytes.to_string(), int),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
            int,
        ),
        ("max.connections", c.max_connections.to_string(), int),
        ("log.segment.bytes", c.segment_bytes.to_string(), int),
        ("log.roll.ms", c.segment_ms.to_string(), long),
        ("log.retention.ms", c.retention_ms.to_string(), long),
        ("log.retention.bytes", c.retention_bytes.to_string(), long),
        (
            "log.retention.check.interval.ms",
            c.retention_check_interval_ms.to_string(),
            long,
        ),
        (
            "log.message.timestamp.type",
            c.message_timestamp_type.clone(),
            Kind::OneOf(&[]),
        ),
        ("log.cleanup.policy", "delete".into(), Kind::ListOf(&[])),
        ("min.insync.replicas", "1".into(), int),
        ("compression.type", "producer".into(), Kind::OneOf(&[])),
        (
            "remote.log.storage.system.enable",
            "false".into(),
            Kind::Bool,
        ),
        ("log.local.retention.ms", "-2".into(), long),
        ("log.local.retention.bytes", "-2".into(), long),
        ("log.flush.fsync", c.fsync.to_string(), Kind::Bool),
        (
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
            int,
        ),
        (
            "group.min.session.timeout.ms",
            c.group_min_session_timeout_ms.to_string(),
            int,
        ),
        (
            "group.max.session.timeout.ms",
            c.group_max_session_timeout_ms.to_string(),
            int,
        ),
        (
            "offsets.retention.minutes",
            c.offsets_retention_minutes.to_string(),
            int,
        ),
    ];
    crate::broker_configs::add_kafka_names(c, &mut configs);
    configs
}
