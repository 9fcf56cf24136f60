//! OffsetFetch (key 9): committed offsets with their metadata and leader epoch; one group
//! before v8, several from v8. Partitions without a commit get offset -1.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use strata_storage::GroupOffset;

use super::{str_bytes, Ctx};
use crate::error::{code, storage_code};

/// One group's answer: `(topic, [(partition, offset, epoch, metadata)])`.
type Found = Vec<(String, Vec<(i32, i64, i32, String)>)>;

pub async fn handle(ctx: &Arc<Ctx>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version < 8 {
        let wanted = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        return match lookup(ctx, req.group_id.to_string(), wanted).await {
            Ok(found) => {
                let topics = found
                    .into_iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(p, offset, epoch, meta)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
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
            Err(c) => OffsetFetchResponse::default().with_error_code(if version >= 2 {
                c
            } else {
                code::NONE
            }),
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
        groups.push(match lookup(ctx, g.group_id.to_string(), wanted).await {
            Ok(found) => group.with_topics(
                found
                    .into_iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(p, offset, epoch, meta)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
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
        });
    }
    OffsetFetchResponse::default().with_groups(groups)
}

/// The committed offsets of `group` for the wanted topics (all committed ones when `None`).
async fn lookup(
    ctx: &Arc<Ctx>,
    group: String,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Found, i16> {
    if group.is_empty() {
        return Err(code::INVALID_GROUP_ID);
    }
    let committed = ctx
        .blocking(move |s| s.fetch_offsets(&group))
        .await
        .map_err(|e| storage_code(&e))?;
    let by_key: HashMap<(&str, i32), &GroupOffset> = committed
        .iter()
        .map(|o| ((o.topic.as_str(), o.partition), o))
        .collect();
    let entry = |topic: &str, p: i32| match by_key.get(&(topic, p)) {
        Some(o) => (p, o.offset, o.leader_epoch, o.metadata.clone()),
        None => (p, -1, -1, String::new()),
    };
    Ok(match wanted {
        Some(list) => list
            .into_iter()
            .map(|(topic, parts)| {
                let found = parts.iter().map(|&p| entry(&topic, p)).collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut out: Found = Vec::new();
            for o in &committed {
                match out.last_mut() {
                    Some((t, parts)) if *t == o.topic => parts.push(entry(&o.topic, o.partition)),
                    _ => out.push((o.topic.clone(), vec![entry(&o.topic, o.partition)])),
                }
            }
            out
        }
    })
}
