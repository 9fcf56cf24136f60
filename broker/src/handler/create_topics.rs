//! CreateTopics (key 19): validated names, partition counts, replication factor 1 (or -1
//! for the default), configs, and `validate_only`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{str_bytes, validate_topic_name, Ctx, Session};
use crate::auth::{authorize_cluster_or, op, Resource};
use crate::error::{code, storage_code};
use crate::quota::mutation::Mutations;
use crate::topic_config;

/// DescribeConfigs config sources: set on the topic; the broker's default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    let mut mutations = Mutations::new(ctx, session, version >= 6);
    for t in req.topics {
        let name = t.name.clone();
        // CREATE on the cluster, or on the topic (Kafka's rule).
        let r = if authorize_cluster_or(ctx, session, op::CREATE, Resource::Topic(&name)) {
            match mutations.admit() {
                Ok(()) => create_one(ctx, t, req.validate_only).await,
                Err(e) => Err(e),
            }
        } else {
            Err((
                code::TOPIC_AUTHORIZATION_FAILED,
                format!("not authorized to create topic {}", &*name),
            ))
        };
        let r = match r {
            Ok(r) => {
                if !req.validate_only {
                    mutations.record(r.num_partitions);
                }
                r
            }
            Err((c, msg)) => {
                tracing::debug!(topic = %&*name, error = %msg, "create topic refused");
                CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(c)
                    .with_error_message(Some(str_bytes(msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }
        };
        results.push(if version >= 5 {
            r
        } else {
            r.with_configs(None)
        });
    }
    CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(mutations.throttle_ms())
}

async fn create_one(
    ctx: &Arc<Ctx>,
    t: CreatableTopic,
    validate_only: bool,
) -> Result<CreatableTopicResult, (i16, String)> {
    let name = t.name.to_string();
    validate_topic_name(&name).map_err(|m| (code::INVALID_TOPIC_EXCEPTION, m))?;
    if ctx.store.topic(&name).is_some() {
        return Err((
            code::TOPIC_ALREADY_EXISTS,
            format!("topic {name} already exists"),
        ));
    }
    if t.replication_factor != -1 && t.replication_factor != 1 {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {} (this cluster has one broker)",
                t.replication_factor
            ),
        ));
    }
    let partitions = if t.assignments.is_empty() {
        match t.num_partitions {
            -1 => ctx.config.num_partitions,
            n if n >= 1 => n,
            n => {
                return Err((
                    code::INVALID_PARTITIONS,
                    format!("partition count {n} (must be at least 1)"),
                ))
            }
        }
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                code::INVALID_REQUEST,
                "give either assignments or counts, not both".into(),
            ));
        }
        let node = ctx.node_id();
        let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        indexes.sort_unstable();
        let dense = indexes.iter().enumerate().all(|(i, &p)| p == i as i32);
        if !dense
            || t.assignments
                .iter()
                .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        {
            return Err((
                code::INVALID_REPLICA_ASSIGNMENT,
                format!("partitions 0..n, each on broker {node} alone"),
            ));
        }
        indexes.len() as i32
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let Some(v) = &c.value else { continue };
        let v = topic_config::normalize(&c.name, v).map_err(|m| (code::INVALID_CONFIG, m))?;
        configs.insert(c.name.to_string(), v);
    }
    topic_config::check_together(&configs).map_err(|m| (code::INVALID_CONFIG, m))?;
    // Like Kafka, describe every config of the new topic: the given ones and the defaults.
    let described: Vec<CreatableTopicConfigs> = topic_config::all()
        .map(|d| {
            let (value, source) = match configs.get(d.name) {
                Some(v) => (v.clone(), SOURCE_TOPIC),
                None => ((d.default)(&ctx.config), SOURCE_DEFAULT),
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(d.name))
                .with_value(Some(str_bytes(value)))
                .with_config_source(source)
        })
        .collect();
    let result = CreatableTopicResult::default()
        .with_name(t.name.clone())
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(Some(described));
    if validate_only {
        super::partition_room(ctx, partitions)?;
        return Ok(result);
    }
    let n = name.clone();
    let info = ctx
        .blocking(move |s| s.create_topic(&n, partitions, configs))
        .await
        .map_err(|e| (storage_code(&e), e.to_string()))?;
    tracing::info!(topic = %name, partitions, "created topic");
    Ok(result.with_topic_id(info.id))
}
