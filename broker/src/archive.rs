//! The archive connector: copies every sealed segment of topics with
//! `remote.storage.enable=true` to the archive (`archive_url`), in offset order, one
//! partition after another. Progress lives in the archive itself (each partition's manifest),
//! so a restart resumes where the last committed upload ended, with no gap and no duplicate.
//! Several partitions upload at once (`archive_max_concurrent_uploads`), each segment
//! streamed in bounded memory (see `archive_upload`). A failing partition is retried after
//! an exponential backoff, with rate-limited warnings, while the broker serves on.
//!
//! Each archived topic gets a descriptor (name, id, partitions, configs) when first seen and
//! whenever its partitions or configs change. A deleted topic's archive is deleted only when
//! DeleteTopics recorded it (`archive_delete_with_topic`): a topic this broker never knew
//! (another broker's, or one whose data dir was lost) is never deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_storage::archive::{Archive, PartitionRef, TopicDescriptor, UploadLimits};
use strata_storage::{StorageError, TopicInfo};
use tokio_util::sync::CancellationToken;

use crate::archive_upload::{upload_segment, Backoff, WarnLimiter};
use crate::handler::Ctx;
use crate::topic_config::effective;

/// Whether `remote.storage.enable` is on for a topic with these config overrides.
pub fn remote_storage(
    overrides: &std::collections::BTreeMap<String, String>,
    config: &crate::Config,
) -> bool {
    effective(overrides, config, "remote.storage.enable").as_deref() == Some("true")
}

/// A partition: its topic's id and its index.
type Key = (uuid::Uuid, i32);

/// What the connector remembers of a partition between passes.
#[derive(Default)]
struct Progress {
    /// The offset after the last archived one, once known.
    next: Option<i64>,
    /// Sealed segments not archived yet, as of the last look.
    pending: u64,
    /// Set while the partition's uploads fail.
    backoff: Option<Backoff>,
}

/// Runs a pass every `archive_interval_ms` until `cancel`. A pass uploads the partitions'
/// new sealed segments, up to `archive_max_concurrent_uploads` partitions at once (each one's
/// segments in offset order, then its archive retention); a partition whose upload failed
/// waits out its backoff.
pub async fn run(ctx: Arc<Ctx>, archive: Archive, cancel: CancellationToken) {
    let every = Duration::from_millis(ctx.config.archive_interval_ms);
    let concurrency = ctx.config.archive_max_concurrent_uploads.max(1);
    let mut progress: HashMap<Key, Progress> = HashMap::new();
    let mut warn = WarnLimiter::default();
    // Per archived topic: the descriptor the archive is known to hold.
    let mut described: HashMap<uuid::Uuid, TopicDescriptor> = HashMap::new();
    // Per archived topic whose descriptor could not be written: when to try again.
    let mut describe_backoff: HashMap<uuid::Uuid, Backoff> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let live: HashSet<uuid::Uuid> = ctx.store.topics().iter().map(|t| t.id).collect();
        delete_requested(&ctx, &archive).await;
        // Forget the progress of topics that are gone.
        progress.retain(|(id, _), _| live.contains(id));
        ctx.tier.retain_topics(&ctx.store, &live);
        described.retain(|id, _| live.contains(id));
        describe_backoff.retain(|id, _| live.contains(id));
        ctx.archived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _), _| live.contains(id));
        let now = Instant::now();
        let mut work = Vec::new();
        for topic in ctx.store.topics() {
            if !archived(&ctx, &topic) {
                continue;
            }
            let held_back = describe_backoff.get(&topic.id).copied();
            if held_back.is_none_or(|b| b.retry_at <= now) {
                match describe(&ctx, &archive, &topic, &mut described).await {
                    Ok(()) => {
                        describe_backoff.remove(&topic.id);
                    }
                    Err(e) => {
                        let b = Backoff::after_failure(held_back, now);
                        describe_backoff.insert(topic.id, b);
                        if let Some(suppressed) = warn.allow(now) {
                            tracing::warn!(topic = %topic.name, archive = archive.url(), error = %e, failures = b.failures, suppressed, "writing the topic's archive descriptor failed; retrying with backoff");
                        }
                    }
                }
            }
            for partition in 0..topic.partitions {
                let known = progress.get(&(topic.id, partition));
                if known
                    .and_then(|k| k.backoff)
                    .is_some_and(|b| b.retry_at > now)
                {
                    continue;
                }
                work.push((topic.clone(), partition, known.and_then(|k| k.next)));
            }
        }
        let (ctx_ref, archive_ref) = (&ctx, &archive);
        let mut uploads = futures::stream::iter(work)
            .map(|(topic, partition, known)| async move {
                let p = PartitionRef {
                    topic: &topic.name,
                    topic_id: topic.id,
                    partition,
                };
                let outcome = archive_partition(ctx_ref, archive_ref, p, known).await;
                if outcome.result.is_ok() {
                    let expired = crate::retention::archive_pass(
                        ctx_ref,
                        archive_ref,
                        &topic,
                        p,
                        known.is_none(),
                    )
                    .await;
                    if let Err(e) = expired {
                        tracing::warn!(topic = %topic.name, partition, archive = archive_ref.url(), error = %e, "archive retention failed; retrying on the next pass");
                    }
                }
                (topic.name.clone(), (topic.id, partition), outcome)
            })
            .buffer_unordered(concurrency);
        loop {
            let (name, key, outcome) = tokio::select! {
                _ = cancel.cancelled() => return,
                next = uploads.next() => match next {
                    Some(done) => done,
                    None => break,
                },
            };
            let entry = progress.entry(key).or_default();
            if let Some(n) = outcome.next {
                entry.next = Some(n);
            }
            if let Some(n) = outcome.pending {
                entry.pending = n;
            }
            match outcome.result {
                Ok(()) => {
                    if let Some(b) = entry.backoff.take() {
                        tracing::info!(topic = %name, partition = key.1, archive = archive.url(), failures = b.failures, "archiving works again");
                    }
                }
                // Deleted meanwhile.
                Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {}
                Err(e) => {
                    ::metrics::counter!("strata_archive_failures_total").increment(1);
                    ctx.archive_stats.failed();
                    let now = Instant::now();
                    let b = Backoff::after_failure(entry.backoff, now);
                    entry.backoff = Some(b);
                    match warn.allow(now) {
                        Some(suppressed) => tracing::warn!(
                            topic = %name,
                            partition = key.1,
                            archive = archive.url(),
                            error = %e,
                            failures = b.failures,
                            retry_in_ms = b.retry_at.saturating_duration_since(now).as_millis() as u64,
                            suppressed,
                            "archiving failed; retrying with backoff"
                        ),
                        None => {
                            tracing::debug!(topic = %name, partition = key.1, error = %e, "archiving failed")
                        }
                    }
                }
            }
        }
        drop(uploads);
        ctx.archive_stats
            .set_pending(progress.values().map(|p| p.pending).sum());
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
/// reading it once per broker run, then remembered in `described`). A failure is retried
/// after a backoff (see `run`).
async fn describe(
    ctx: &Ctx,
    archive: &Archive,
    topic: &TopicInfo,
    described: &mut HashMap<uuid::Uuid, TopicDescriptor>,
) -> Result<(), StorageError> {
    let want = TopicDescriptor {
        name: topic.name.clone(),
        id: topic.id.as_bytes().to_vec(),
        partitions: topic.partitions,
        configs: topic.configs.clone(),
        created_ms: ctx.store.topic_created_ms(&topic.name).unwrap_or(0),
    };
    if described.get(&topic.id) == Some(&want) {
        return Ok(());
    }
    let held = archive.descriptor(&topic.name, topic.id).await;
    if !matches!(&held, Ok(Some(d)) if *d == want) {
        archive.put_descriptor(&want).await?;
    }
    described.insert(topic.id, want);
    Ok(())
}

/// Whether sealed segments of `topic` go to the archive (`remote.storage.enable`).
pub fn archived(ctx: &Ctx, topic: &TopicInfo) -> bool {
    remote_storage(&topic.configs, &ctx.config)
}

/// What one partition's turn achieved.
struct Outcome {
    /// The offset after the last archived one, when it got that far.
    next: Option<i64>,
    /// Sealed segments left to upload, when known.
    pending: Option<u64>,
    result: Result<(), StorageError>,
}

/// Uploads the partition's sealed segments from `known_next` (or the manifest's end) on,
/// in offset order, publishing the progress (`Ctx::archived`) after each one.
async fn archive_partition(
    ctx: &Arc<Ctx>,
    archive: &Archive,
    p: PartitionRef<'_>,
    known_next: Option<i64>,
) -> Outcome {
    let mut out = Outcome {
        next: None,
        pending: None,
        result: Ok(()),
    };
    out.result = upload_partition(ctx, archive, p, known_next, &mut out).await;
    out
}

async fn upload_partition(
    ctx: &Arc<Ctx>,
    archive: &Archive,
    p: PartitionRef<'_>,
    known_next: Option<i64>,
    out: &mut Outcome,
) -> Result<(), StorageError> {
    let mut next = match known_next {
        Some(n) => n,
        None => ctx.tier.manifest(p).await?.next_offset(),
    };
    let publish = |next: i64| {
        ctx.archived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((p.topic_id, p.partition), next);
    };
    out.next = Some(next);
    publish(next);
    let (topic, partition) = (p.topic.to_string(), p.partition);
    let (segments, hw) = ctx
        .blocking(move |s| {
            Ok((
                s.segments(&topic, partition)?,
                s.offsets(&topic, partition)?.high_watermark,
            ))
        })
        .await?;
    // Only what is durable locally: a sealed segment whose end is not synced yet could be
    // lost locally by a power cut while the archive kept it (and its offsets would then be
    // written again).
    let todo: Vec<_> = segments
        .iter()
        .filter(|s| s.sealed && s.last_offset >= next && s.last_offset < hw)
        .collect();
    out.pending = Some(todo.len() as u64);
    for (done, seg) in todo.iter().enumerate() {
        let started = std::time::Instant::now();
        let base = seg.base_offset;
        let (bytes, multipart) = match upload_segment(
            ctx,
            archive,
            p,
            base,
            UploadLimits::default(),
        )
        .await?
        {
            Some(up) => {
                next = up.manifest.next_offset();
                ctx.tier.set_manifest(p, up.manifest);
                let topic_label = p.topic.to_string();
                ::metrics::counter!("strata_archive_uploaded_bytes_total", "topic" => topic_label.clone())
                        .increment(up.bytes);
                ::metrics::counter!("strata_archive_uploaded_segments_total", "topic" => topic_label)
                        .increment(1);
                ::metrics::histogram!("strata_archive_upload_seconds")
                    .record(started.elapsed().as_secs_f64());
                (up.bytes, up.multipart)
            }
            // Already archived (the progress known here was behind the manifest's).
            None => {
                next = archive.manifest(p).await?.next_offset();
                (0, false)
            }
        };
        out.next = Some(next);
        out.pending = Some((todo.len() - done - 1) as u64);
        publish(next);
        tracing::info!(
            topic = p.topic,
            partition,
            base_offset = base,
            last_offset = seg.last_offset,
            bytes,
            multipart,
            ms = started.elapsed().as_millis() as u64,
            "archived segment"
        );
    }
    Ok(())
}
