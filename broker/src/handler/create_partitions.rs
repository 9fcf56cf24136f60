//! CreatePartitions (key 37): grow a topic's partition count.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::quota::mutation::Mutations;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    let mut mutations = Mutations::new(ctx, session, version >= 3);
    for t in req.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let fail = |c: i16, msg: String| {
            result
                .clone()
                .with_error_code(c)
                .with_error_message(Some(str_bytes(msg)))
        };
        if !authorize(ctx, session, op::ALTER, Resource::Topic(&t.name)) {
            results.push(fail(
                code::TOPIC_AUTHORIZATION_FAILED,
                format!("not authorized to alter topic {}", &*t.name),
            ));
            continue;
        }
        let Some(info) = ctx.store.topic(&t.name) else {
            results.push(fail(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {} does not exist", &*t.name),
            ));
            continue;
        };
        if t.count <= info.partitions {
            results.push(fail(
                code::INVALID_PARTITIONS,
                format!(
                    "topic {} has {} partitions; the new count {} must be larger",
                    info.name, info.partitions, t.count
                ),
            ));
            continue;
        }
        if let Err((c, msg)) = mutations.admit() {
            results.push(fail(c, msg));
            continue;
        }
        let added = (t.count - info.partitions) as usize;
        let node = ctx.node_id();
        if let Some(a) = &t.assignments {
            if a.len() != added || a.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != node)) {
                results.push(fail(
                    code::INVALID_REPLICA_ASSIGNMENT,
                    format!("the only broker is {node}"),
                ));
                continue;
            }
        }
        if req.validate_only {
            results.push(
                match super::partition_room(ctx, t.count - info.partitions) {
                    Ok(()) => result,
                    Err((c, msg)) => fail(c, msg),
                },
            );
            continue;
        }
        let (name, count) = (info.name.clone(), t.count);
        results.push(
            match ctx
                .blocking(move |s| s.create_partitions(&name, count))
                .await
            {
                Ok(_) => {
                    tracing::info!(topic = %info.name, partitions = count, "added partitions");
                    mutations.record(count - info.partitions);
                    result
                }
                Err(e) => fail(storage_code(&e), e.to_string()),
            },
        );
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(mutations.throttle_ms())
}
