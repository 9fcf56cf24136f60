//! The archive connector: copies every sealed segment of topics with
//! `remote.storage.enable=true` to the archive (`archive_url`), in offset order, one
//! partition after another. Progress lives in the archive itself (each partition's manifest),
//! so a restart resumes where the last committed upload ended, with no gap and no duplicate.
//! Several partitions upload at once (`archive_max_concurrent_uploads`), each segment
//! streamed in bounded memory (see `archive_upload`). A failing partition is retried after
//! an exponential backoff, with rate-limited warnings, while the broker serves on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_storage::archive::{Archive, PartitionRef, UploadLimits};
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
/// segments in offset order); a partition whose upload failed waits out its backoff.
pub async fn run(ctx: Arc<Ctx>, archive: Archive, cancel: CancellationToken) {
    let every = Duration::from_millis(ctx.config.archive_interval_ms);
    let concurrency = ctx.config.archive_max_concurrent_uploads.max(1);
    let mut progress: HashMap<Key, Progress> = HashMap::new();
    let mut warn = WarnLimiter::default();
    // Set while listing the archive (for deleted topics' archives) fails.
    let mut list_backoff: Option<Backoff> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let live: HashSet<uuid::Uuid> = ctx.store.topics().iter().map(|t| t.id).collect();
        if ctx.config.archive_delete_with_topic
            && list_backoff.is_none_or(|b| b.retry_at <= Instant::now())
        {
            match delete_deleted(&archive, &live).await {
                Ok(()) => list_backoff = None,
                Err(e) => {
                    let now = Instant::now();
                    let b = Backoff::after_failure(list_backoff, now);
                    list_backoff = Some(b);
                    if let Some(suppressed) = warn.allow(now) {
                        tracing::warn!(archive = archive.url(), error = %e, failures = b.failures, suppressed, "listing the archive failed; retrying with backoff");
                    }
                }
            }
        }
        // Forget the progress of topics that are gone.
        progress.retain(|(id, _), _| live.contains(id));
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
            for partition in 0..topic.partitions {
                let known = progress.get(&(topic.id, partition));
                if known
                    .and_then(|k| k.backoff)
                    .is_some_and(|b| b.retry_at > now)
                {
                    continue;
                }
                work.push((
                    topic.name.clone(),
                    topic.id,
                    partition,
                    known.and_then(|k| k.next),
                ));
            }
        }
        let (ctx_ref, archive_ref) = (&ctx, &archive);
        let mut uploads = futures::stream::iter(work)
            .map(|(name, id, partition, known)| async move {
                let p = PartitionRef {
                    topic: &name,
                    topic_id: id,
                    partition,
                };
                let outcome = archive_partition(ctx_ref, archive_ref, p, known).await;
                (name, (id, partition), outcome)
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

/// Deletes the archives of topics not in `live` (deleted, or deleted and created again
/// under the same name, which gives a new topic id). Done by the connector rather than by
/// DeleteTopics, so that it also happens for topics deleted while the archive was down.
async fn delete_deleted(archive: &Archive, live: &HashSet<uuid::Uuid>) -> Result<(), StorageError> {
    let archived = archive.topics().await?;
    for (topic, id) in archived.into_iter().filter(|(_, id)| !live.contains(id)) {
        match archive.delete_topic(&topic, id).await {
            Ok(n) => {
                tracing::info!(topic, topic_id = %id, objects = n, "deleted the archive of a deleted topic")
            }
            Err(e) => {
                tracing::warn!(topic, topic_id = %id, error = %e, "deleting a deleted topic's archive failed")
            }
        }
    }
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
        None => archive.manifest(p).await?.next_offset(),
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
    let segments = ctx.blocking(move |s| s.segments(&topic, partition)).await?;
    let todo: Vec<_> = segments
        .iter()
        .filter(|s| s.sealed && s.last_offset >= next)
        .collect();
    out.pending = Some(todo.len() as u64);
    for (done, seg) in todo.iter().enumerate() {
        let started = std::time::Instant::now();
        let base = seg.base_offset;
        let limits = UploadLimits::default();
        let (bytes, multipart) = match upload_segment(ctx, archive, p, base, limits).await? {
            Some(up) => {
                next = up.manifest.next_offset();
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

/// What the archive holds of a partition at an offset (tiered read).
pub struct ArchivedRead {
    /// Whole batches from the one containing the offset.
    pub records: bytes::Bytes,
    /// The first offset the archive holds.
    pub archive_start: i64,
}

/// Reads whole archived batches of `p` from the one containing `offset`: at most `max_bytes`,
/// but at least one batch when `at_least_one` (as Fetch does locally: only for the first
/// records of a response). `None` when the archive does not hold `offset`. One manifest and
/// one index read, then (unless nothing fits) one ranged read of the segment.
pub async fn read(
    archive: &Archive,
    p: PartitionRef<'_>,
    offset: i64,
    max_bytes: usize,
    at_least_one: bool,
) -> Result<Option<ArchivedRead>, StorageError> {
    let manifest = archive.manifest(p).await?;
    let Some(first) = manifest.segments.first() else {
        return Ok(None);
    };
    let archive_start = first.base_offset;
    let Some(seg) = manifest
        .segments
        .iter()
        .find(|s| s.base_offset <= offset && offset <= s.last_offset)
    else {
        return Ok(None);
    };
    let index = archive.segment_index(p, seg.base_offset).await?;
    let Some(i) = index.batches.iter().position(|b| b.last_offset >= offset) else {
        return Ok(None);
    };
    let start = index.batches[i].position;
    let end_of = |j: usize| index.batches.get(j + 1).map_or(seg.bytes, |b| b.position);
    let mut end = end_of(i);
    if !at_least_one && end - start > max_bytes as u64 {
        return Ok(Some(ArchivedRead {
            records: bytes::Bytes::new(),
            archive_start,
        }));
    }
    for j in i + 1..index.batches.len() {
        if end_of(j) - start > max_bytes as u64 {
            break;
        }
        end = end_of(j);
    }
    let records = archive
        .segment_range(p, seg.base_offset, start..end)
        .await?;
    Ok(Some(ArchivedRead {
        records,
        archive_start,
    }))
}
