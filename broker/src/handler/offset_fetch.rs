//! OffsetFetch (key 9): committed offsets with their metadata and leader epoch; one group
//! before v8, several from v8. Partitions without a commit get offset -1. Needs DESCRIBE on
//! the group; topics the client may not DESCRIBE are left out of an all-topics answer and
//! answered TOPIC_AUTHORIZATION_FAILED when named (as Kafka does).

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use strata_storage::GroupOffset;

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};

/// One group's answer: `(topic, [(partition, offset, epoch, metadata, error)])`.
type Found = Vec<(String, Vec<(i32, i64, i32, String, i16)>)>;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if version < 8 {
        let wanted = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        // v0/v1 have no group-level error: a refusal goes on every partition asked for.
        let asked: Found = if version < 2 {
            wanted
                .iter()
                .flatten()
                .map(|(t, ps): &(String, Vec<i32>)| {
                    (
                        t.clone(),
                        ps.iter()
                            .map(|&p| (p, -1, -1, String::new(), code::NONE))
                            .collect(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let found = lookup(ctx, session, req.group_id.to_string(), wanted).await;
        let found = match found {
            Err(c) if version < 2 => Ok(asked
                .into_iter()
                .map(|(t, ps)| {
                    (
                        t,
                        ps.into_iter()
                            .map(|(p, o, e, m, _)| (p, o, e, m, c))
                            .collect(),
                    )
                })
                .collect()),
            other => other,
        };
        return match found {
            Ok(found) => {
                let topics = found
                    .into_iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(p, offset, epoch, meta, error)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(error)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(if version >= 5 {
                                        epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(Some(str_bytes(meta)))
                            })
                            .collect();
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponse::default().with_topics(topics)
            }
            Err(c) => OffsetFetchResponse::default().with_error_code(c),
        };
    }
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let wanted = g.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        groups.push(
            match lookup(ctx, session, g.group_id.to_string(), wanted).await {
                Ok(found) => group.with_topics(
                    found
                        .into_iter()
                        .map(|(name, parts)| {
                            let partitions = parts
                                .into_iter()
                                .map(|(p, offset, epoch, meta, error)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_error_code(error)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(str_bytes(meta)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(name)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                ),
                Err(c) => group.with_error_code(c),
            },
        );
    }
    OffsetFetchResponse::default().with_groups(groups)
}

/// The committed offsets of `group` for the wanted topics (all committed ones when `None`).
async fn lookup(
    ctx: &Arc<Ctx>,
    session: &Session,
    group: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Found, i16> {
    if group.is_empty() {
        return Err(code::INVALID_GROUP_ID);
    }
    if !authorize(ctx, session, op::DESCRIBE, Resource::Group(&group)) {
        return Err(code::GROUP_AUTHORIZATION_FAILED);
    }
    let allowed = |topic: &str| authorize(ctx, session, op::DESCRIBE, Resource::Topic(topic));
    let committed = ctx
        .blocking(move |s| s.fetch_offsets(&group))
        .await
        .map_err(|e| storage_code(&e))?;
    let by_key: HashMap<(&str, i32), &GroupOffset> = committed
        .iter()
        .map(|o| ((o.topic.as_str(), o.partition), o))
        .collect();
    let entry = |topic: &str, p: i32| match by_key.get(&(topic, p)) {
        Some(o) => (p, o.offset, o.leader_epoch, o.metadata.clone(), code::NONE),
        None => (p, -1, -1, String::new(), code::NONE),
    };
    Ok(match wanted {
        Some(list) => list
            .into_iter()
            .map(|(topic, parts)| {
                let found = if allowed(&topic) {
                    parts.iter().map(|&p| entry(&topic, p)).collect()
                } else {
                    let denied = |p| (p, -1, -1, String::new(), code::TOPIC_AUTHORIZATION_FAILED);
                    parts.iter().map(|&p| denied(p)).collect()
                };
                (topic, found)
            })
            .collect(),
        None => {
            let mut out: Found = Vec::new();
            let mut shown: HashMap<&str, bool> = HashMap::new();
            for o in &committed {
                if !*shown
                    .entry(o.topic.as_str())
                    .or_insert_with(|| allowed(&o.topic))
                {
                    continue;
                }
                match out.last_mut() {
                    Some((t, parts)) if *t == o.topic => parts.push(entry(&o.topic, o.partition)),
                    _ => out.push((o.topic.clone(), vec![entry(&o.topic, o.partition)])),
                }
            }
            out
        }
    })
}
