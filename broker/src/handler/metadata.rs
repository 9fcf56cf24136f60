//! Metadata (key 3): brokers, topics with ids, partitions; auto-creates unknown topics when
//! allowed. This broker is the controller and leader of every partition. Topics the client
//! may not DESCRIBE are left out of an all-topics answer and answered
//! TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs CREATE on the cluster or topic.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use strata_storage::{StorageError, TopicInfo};
use uuid::Uuid;

use super::{str_bytes, validate_topic_name, Ctx, Session};
use crate::auth::{
    authorize, authorize_cluster_or, authorized_operations, op, Resource, NOT_REQUESTED,
};
use crate::error::{code, storage_code};

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let listener = &session.listener;
    let node = BrokerId(ctx.node_id());
    let broker = MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(listener.advertised_host.clone()))
        .with_port(listener.advertised_port);
    // v0 asks for every topic with an empty list; v1+ with a null list.
    let requested = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let topics = match requested {
        None => ctx
            .store
            .topics()
            .iter()
            .filter(|t| authorize(ctx, session, op::DESCRIBE, Resource::Topic(&t.name)))
            .map(|t| topic_metadata(node, t))
            .collect(),
        Some(list) => {
            // Versions before 4 have no flag: they always allow auto-creation.
            let allow_create =
                ctx.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                out.push(match t.name {
                    Some(name) => by_name(ctx, session, node, &name, allow_create).await,
                    None => by_id(ctx, session, node, t.topic_id),
                });
            }
            out
        }
    };
    let mut topics: Vec<MetadataResponseTopic> = topics;
    if req.include_topic_authorized_operations {
        for t in &mut topics {
            if let (0, Some(name)) = (t.error_code, &t.name) {
                t.topic_authorized_operations =
                    authorized_operations(ctx, session, Resource::Topic(name));
            }
        }
    }
    // Asked for in v8-v10 only (DescribeCluster carries it since).
    let cluster_operations =
        if req.include_cluster_authorized_operations && (8..=10).contains(&version) {
            authorized_operations(ctx, session, Resource::Cluster)
        } else {
            NOT_REQUESTED
        };
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_operations)
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str_bytes(ctx.cluster_id.clone())))
        .with_controller_id(node)
        .with_topics(topics)
}

async fn by_name(
    ctx: &Arc<Ctx>,
    session: &Session,
    node: BrokerId,
    name: &TopicName,
    allow_create: bool,
) -> MetadataResponseTopic {
    let error = |c: i16| {
        MetadataResponseTopic::default()
            .with_name(Some(name.clone()))
            .with_error_code(c)
    };
    if !authorize(ctx, session, op::DESCRIBE, Resource::Topic(name)) {
        return error(code::TOPIC_AUTHORIZATION_FAILED);
    }
    if let Some(t) = ctx.store.topic(name) {
        return topic_metadata(node, &t);
    }
    if validate_topic_name(name).is_err() {
        return error(code::INVALID_TOPIC_EXCEPTION);
    }
    if !allow_create {
        return error(code::UNKNOWN_TOPIC_OR_PARTITION);
    }
    if !authorize_cluster_or(ctx, session, op::CREATE, Resource::Topic(name)) {
        return error(code::TOPIC_AUTHORIZATION_FAILED);
    }
    let owned = name.to_string();
    let partitions = ctx.config.num_partitions;
    match ctx
        .blocking(move |s| s.create_topic(&owned, partitions, BTreeMap::new()))
        .await
    {
        Ok(t) => {
            tracing::info!(topic = %t.name, partitions, "auto-created topic");
            topic_metadata(node, &t)
        }
        // Created by a concurrent request meanwhile: describe that one.
        Err(StorageError::TopicExists(_)) => match ctx.store.topic(name) {
            Some(t) => topic_metadata(node, &t),
            None => error(code::UNKNOWN_TOPIC_OR_PARTITION),
        },
        Err(e) => error(storage_code(&e)),
    }
}

fn by_id(ctx: &Ctx, session: &Session, node: BrokerId, id: Uuid) -> MetadataResponseTopic {
    match ctx.store.topic_by_id(id) {
        Some(t) if !authorize(ctx, session, op::DESCRIBE, Resource::Topic(&t.name)) => {
            MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(code::TOPIC_AUTHORIZATION_FAILED)
        }
        Some(t) => topic_metadata(node, &t),
        None => MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(code::UNKNOWN_TOPIC_ID),
    }
}

fn topic_metadata(node: BrokerId, t: &TopicInfo) -> MetadataResponseTopic {
    let partitions = (0..t.partitions)
        .map(|i| {
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(t.id)
        .with_partitions(partitions)
}
