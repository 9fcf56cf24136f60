//! DeleteTopics (key 20): by name (all versions) or by topic id (v6+).

use std::sync::Arc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::quota::mutation::Mutations;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics`, each by name or by id.
    let targets: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    let mut mutations = Mutations::new(ctx, session, version >= 5);
    for (name, id) in targets {
        let result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        // By name, DELETE is checked before existence (nothing leaks); by id, a topic the
        // client may not even DESCRIBE stays unknown.
        if let Some(n) = &name {
            if !authorize(ctx, session, op::DELETE, Resource::Topic(n)) {
                responses.push(result.with_error_code(code::TOPIC_AUTHORIZATION_FAILED));
                continue;
            }
        }
        let info = match &name {
            Some(n) => ctx.store.topic(n),
            None => ctx
                .store
                .topic_by_id(id)
                .filter(|i| authorize(ctx, session, op::DESCRIBE, Resource::Topic(&i.name))),
        };
        let Some(info) = info else {
            let c = if name.is_none() {
                code::UNKNOWN_TOPIC_ID
            } else {
                code::UNKNOWN_TOPIC_OR_PARTITION
            };
            responses.push(result.with_error_code(c));
            continue;
        };
        if !authorize(ctx, session, op::DELETE, Resource::Topic(&info.name)) {
            responses.push(result.with_error_code(code::TOPIC_AUTHORIZATION_FAILED));
            continue;
        }
        if let Err((c, msg)) = mutations.admit() {
            responses.push(
                result
                    .with_error_code(c)
                    .with_error_message(Some(str_bytes(msg))),
            );
            continue;
        }
        let topic = info.name.clone();
        // Recorded in the deletion's own write, so the archive goes exactly when the topic
        // did, even across a crash (the connector deletes it and clears the record).
        let record = ctx
            .config
            .archive_delete_with_topic
            .then(|| crate::archive::delete_record(&info));
        let deleted = ctx.blocking(move |s| {
            let kv = record.as_ref().map(|(k, v)| (k.as_slice(), v.as_slice()));
            s.delete_topic_with_kv(&topic, kv)
        });
        let r = match deleted.await {
            Ok(_) => {
                tracing::info!(topic = %info.name, "deleted topic");
                mutations.record(info.partitions);
                result.with_error_code(code::NONE)
            }
            Err(e) => result
                .with_error_code(storage_code(&e))
                .with_error_message(Some(str_bytes(e.to_string()))),
        };
        responses.push(
            r.with_name(Some(TopicName(str_bytes(info.name.clone()))))
                .with_topic_id(info.id),
        );
    }
    DeleteTopicsResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(mutations.throttle_ms())
}
