//! The archive connector: copies every sealed segment of topics with
//! `remote.storage.enable=true` to the archive (`archive_url`), in offset order, one
//! partition after another. Progress lives in the archive itself (each partition's manifest),
//! so a restart resumes where the last committed upload ended, with no gap and no duplicate.
//! A failing store is retried on the next pass, with a warning, while the broker serves on.
//!
//! Each archived topic gets a descriptor (name, id, partitions, configs) when first seen and
//! whenever its partitions or configs change. A deleted topic's archive is deleted only when
//! DeleteTopics recorded it (`archive_delete_with_topic`): a topic this broker never knew
//! (another broker's, or one whose data dir was lost) is never deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use strata_storage::archive::{Archive, PartitionRef, TopicDescriptor};
use strata_storage::{StorageError, TopicInfo};
use tokio_util::sync::CancellationToken;

use crate::handler::Ctx;
use crate::topic_config::effective;

/// Whether `remote.storage.enable` is on for a topic with these config overrides.
pub fn remote_storage(
    overrides: &std::collections::BTreeMap<String, String>,
    config: &crate::Config,
) -> bool {
    effective(overrides, config, "remote.storage.enable").as_deref() == Some("true")
}

/// Runs a pass every `archive_interval_ms` until `cancel`.
pub async fn run(ctx: Arc<Ctx>, archive: Archive, cancel: CancellationToken) {
    let every = Duration::from_millis(ctx.config.archive_interval_ms);
    // Per (topic id, partition): the offset after the last archived one, once known.
    let mut next: HashMap<(uuid::Uuid, i32), i64> = HashMap::new();
    // Per archived topic: the descriptor the archive is known to hold.
    let mut described: HashMap<uuid::Uuid, TopicDescriptor> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let live: HashSet<uuid::Uuid> = ctx.store.topics().iter().map(|t| t.id).collect();
        delete_requested(&ctx, &archive).await;
        // Forget the progress of topics that are gone.
        next.retain(|(id, _), _| live.contains(id));
        ctx.tier.retain_topics(&ctx.store, &live);
        described.retain(|id, _| live.contains(id));
        ctx.archived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _), _| live.contains(id));
        for topic in ctx.store.topics() {
            if !archived(&ctx, &topic) {
                continue;
            }
            describe(&ctx, &archive, &topic, &mut described).await;
            for partition in 0..topic.partitions {
                if cancel.is_cancelled() {
                    return;
                }
                let p = PartitionRef {
                    topic: &topic.name,
                    topic_id: topic.id,
                    partition,
                };
                let known = next.get(&(topic.id, partition)).copied();
                let archived = archive_partition(&ctx, &archive, p, known).await;
                let expired = match archived {
                    Ok(_) => {
                        crate::retention::archive_pass(&ctx, &archive, &topic, p, known.is_none())
                            .await
                    }
                    Err(_) => Ok(()),
                };
                if let Err(e) = expired {
                    tracing::warn!(topic = %topic.name, partition, archive = archive.url(), error = %e, "archive retention failed; retrying on the next pass");
                }
                match archived {
                    Ok(n) => {
                        next.insert((topic.id, partition), n);
                        ctx.archived
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert((topic.id, partition), n);
                    }
                    // Deleted meanwhile.
                    Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {}
                    Err(e) => {
                        ::metrics::counter!("strata_archive_failures_total").increment(1);
                        tracing::warn!(topic = %topic.name, partition, archive = archive.url(), error = %e, "archiving failed; retrying on the next pass");
                    }
                }
            }
        }
    }
}

/// KV keys (in the store's metadata) of topics whose archive is to be deleted:
/// this prefix + the topic id (32 hex digits); the value is the topic's name.
const DELETE_PREFIX: &[u8] = b"archive.delete.";

/// The record DeleteTopics stores, in the same write as the deletion, when the deleted
/// topic's archive is to go too (`archive_delete_with_topic`).
pub fn delete_record(topic: &TopicInfo) -> (Vec<u8>, Vec<u8>) {
    let mut key = DELETE_PREFIX.to_vec();
    key.extend_from_slice(topic.id.simple().to_string().as_bytes());
    (key, topic.name.clone().into_bytes())
}

/// Deletes the archives DeleteTopics recorded, then their records. Done by the connector
/// rather than by DeleteTopics, so that it also happens for topics deleted while the archive
/// was down (a record stays until its archive is gone). Only recorded topics are deleted:
/// archived topics the broker does not know are someone else's, or a restore's to come.
async fn delete_requested(ctx: &Arc<Ctx>, archive: &Archive) {
    let records = match ctx.blocking(|s| s.scan_kv(DELETE_PREFIX)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "reading the archives to delete failed");
            return;
        }
    };
    for (key, name) in records {
        let id = key
            .strip_prefix(DELETE_PREFIX)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| uuid::Uuid::try_parse(hex).ok());
        let (Some(id), Ok(topic)) = (id, String::from_utf8(name)) else {
            tracing::warn!(key = ?String::from_utf8_lossy(&key), "dropping a malformed archive-deletion record");
            forget(ctx, key).await;
            continue;
        };
        match archive.delete_topic(&topic, id).await {
            Ok(n) => {
                tracing::info!(topic, topic_id = %id, objects = n, "deleted the archive of a deleted topic");
                forget(ctx, key).await;
            }
            Err(e) => {
                tracing::warn!(topic, topic_id = %id, error = %e, "deleting a deleted topic's archive failed; retrying on the next pass")
            }
        }
    }
}

/// Drops an archive-deletion record (a failure leaves it for the next pass, which deletes
/// nothing more).
async fn forget(ctx: &Arc<Ctx>, key: Vec<u8>) {
    if let Err(e) = ctx.blocking(move |s| s.delete_kv(&key)).await {
        tracing::warn!(error = %e, "clearing an archive-deletion record failed");
    }
}

/// Writes `topic`'s descriptor unless the archive is known to hold it as it is (checked by
/// reading it once per broker run, then remembered in `described`).
async fn describe(
    ctx: &Ctx,
    archive: &Archive,
    topic: &TopicInfo,
    described: &mut HashMap<uuid::Uuid, TopicDescriptor>,
) {
    let want = TopicDescriptor {
        name: topic.name.clone(),
        id: topic.id.as_bytes().to_vec(),
        partitions: topic.partitions,
        configs: topic.configs.clone(),
        created_ms: ctx.store.topic_created_ms(&topic.name).unwrap_or(0),
    };
    if described.get(&topic.id) == Some(&want) {
        return;
    }
    let held = archive.descriptor(&topic.name, topic.id).await;
    if !matches!(&held, Ok(Some(d)) if *d == want) {
        if let Err(e) = archive.put_descriptor(&want).await {
            tracing::warn!(topic = %topic.name, error = %e, "writing the topic's archive descriptor failed; retrying on the next pass");
            return;
        }
    }
    described.insert(topic.id, want);
}

/// Whether sealed segments of `topic` go to the archive (`remote.storage.enable`).
pub fn archived(ctx: &Ctx, topic: &TopicInfo) -> bool {
    remote_storage(&topic.configs, &ctx.config)
}

/// Uploads the partition's sealed segments from `known_next` (or the manifest's end) on;
/// returns the offset after the last one archived.
async fn archive_partition(
    ctx: &Arc<Ctx>,
    archive: &Archive,
    p: PartitionRef<'_>,
    known_next: Option<i64>,
) -> Result<i64, StorageError> {
    let mut next = match known_next {
        Some(n) => n,
        None => ctx.tier.manifest(p).await?.next_offset(),
    };
    let (topic, partition) = (p.topic.to_string(), p.partition);
    let (segments, hw) = ctx
        .blocking(move |s| {
            Ok((
                s.segments(&topic, partition)?,
                s.offsets(&topic, partition)?.high_watermark,
            ))
        })
        .await?;
    for seg in &segments {
        // Only what is durable locally: a sealed segment whose end is not synced yet could
        // be lost locally by a power cut while the archive kept it (and its offsets would
        // then be written again).
        if !seg.sealed || seg.last_offset < next || seg.last_offset >= hw {
            continue;
        }
        let (topic, partition, base) = (p.topic.to_string(), p.partition, seg.base_offset);
        let export = ctx
            .blocking(move |s| s.export_segment(&topic, partition, base))
            .await?;
        let started = std::time::Instant::now();
        let manifest = archive.upload(p, &export).await?;
        next = manifest.next_offset();
        let topic_label = p.topic.to_string();
        ::metrics::counter!("strata_archive_uploaded_bytes_total", "topic" => topic_label.clone())
            .increment(export.data.len() as u64);
        ::metrics::counter!("strata_archive_uploaded_segments_total", "topic" => topic_label)
            .increment(1);
        ::metrics::histogram!("strata_archive_upload_seconds")
            .record(started.elapsed().as_secs_f64());
        ctx.tier.set_manifest(p, manifest);
        tracing::info!(
            topic = p.topic,
            partition,
            base_offset = base,
            last_offset = seg.last_offset,
            bytes = export.data.len(),
            ms = started.elapsed().as_millis() as u64,
            "archived segment"
        );
    }
    Ok(next)
}
