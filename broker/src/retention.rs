//! The retention task: applies `retention.ms` and `retention.bytes` by dropping whole
//! segments, moves log start offsets, and compacts the dropped ranges so disk space returns;
//! and drops the state of idempotent producers idle for `producer_id_expiration_ms`.
//!
//! Topics with `remote.storage.enable=true` have two tiers. The local disk keeps what
//! `local.retention.ms` / `local.retention.bytes` say (-2: as `retention.*`; never more than
//! `retention.*`), and drops only segments the archive already holds. The whole log, archive
//! included, keeps what `retention.ms` / `retention.bytes` say: the archive connector deletes
//! archived segments past them ([`archive_pass`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strata_storage::{SegmentInfo, StorageError, Store};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::handler::Ctx;
use crate::topic_config::effective_i64;

/// Runs a pass every `retention_check_interval_ms`, and when nudged.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let every = Duration::from_millis(ctx.config.retention_check_interval_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = ctx.retention.notified() => {}
        }
        let c = ctx.clone();
        let c2 = ctx.clone();
        let archived = move |id: uuid::Uuid, p: i32| {
            c2.archived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(id, p))
                .copied()
        };
        match tokio::task::spawn_blocking(move || pass(&c.store, &c.config, now_ms(), &archived))
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(segments = n, "retention dropped segments"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
        // Idle producers' states go too (producer_id_expiration_ms).
        let c = ctx.clone();
        match tokio::task::spawn_blocking(move || c.store.expire_producers()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(states = n, "expired idle producer states"),
            Ok(Err(e)) => tracing::warn!(error = %e, "producer state expiry failed"),
            Err(e) => tracing::error!(error = %e, "producer state expiry task failed"),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One pass over every partition; returns how many segments were dropped. For topics with
/// `remote.storage.enable=true`, `archived(topic id, partition)` gives the offset after the
/// last one archived (`None`: not known yet): nothing past it is dropped, so no record leaves
/// the local disk before it is in the archive.
pub fn pass(
    store: &Store,
    config: &Config,
    now: i64,
    archived: &dyn Fn(uuid::Uuid, i32) -> Option<i64>,
) -> Result<usize, StorageError> {
    let mut dropped = 0;
    for topic in store.topics() {
        let remote = crate::archive::remote_storage(&topic.configs, config);
        let limits = Limits::of(&topic.configs, config);
        let Limits {
            ms: retention_ms,
            bytes: retention_bytes,
        } = if remote {
            limits.local(&topic.configs, config)
        } else {
            limits
        };
        for p in 0..topic.partitions {
            let offsets = match store.offsets(&topic.name, p) {
                Ok(o) => o,
                // Deleted meanwhile.
                Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let segments = store.segments(&topic.name, p)?;
            let mut keep = first_kept(
                &segments,
                offsets.high_watermark,
                retention_ms,
                retention_bytes,
                now,
                0,
            );
            if remote {
                let upto = archived(topic.id, p).unwrap_or(0);
                keep = keep.min(segments.iter().take_while(|s| s.last_offset < upto).count());
            }
            let new_start = segments
                .get(keep)
                .map_or(offsets.high_watermark, |s| s.base_offset);
            if keep == 0 || new_start <= offsets.log_start {
                continue;
            }
            store.truncate_before(&topic.name, p, new_start)?;
            let bytes: u64 = segments[..keep].iter().map(|s| s.bytes).sum();
            ::metrics::counter!("strata_retention_deleted_bytes_total", "tier" => "local")
                .increment(bytes);
            store.reclaim_space(&topic.name, p)?;
            dropped += keep;
        }
    }
    Ok(dropped)
}

/// Retention limits; -1: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub ms: i64,
    pub bytes: i64,
}

impl Limits {
    /// `retention.ms` / `retention.bytes` of a topic with these overrides; none when its
    /// `cleanup.policy` lacks `delete` (Kafka deletes nothing of a compact-only topic by time
    /// or size; its log is compacted instead).
    pub fn of(overrides: &BTreeMap<String, String>, config: &Config) -> Limits {
        let policy = crate::topic_config::effective(overrides, config, "cleanup.policy");
        if policy.is_some_and(|p| !p.split(',').any(|p| p.trim() == "delete")) {
            return Limits { ms: -1, bytes: -1 };
        }
        Limits {
            ms: effective_i64(overrides, config, "retention.ms").unwrap_or(-1),
            bytes: effective_i64(overrides, config, "retention.bytes").unwrap_or(-1),
        }
    }

    /// The local tier's limits under these (whole-log) ones: `local.retention.*`, where -2
    /// means "as the whole log", and a local limit never keeps more than the whole log does.
    pub fn local(self, overrides: &BTreeMap<String, String>, config: &Config) -> Limits {
        let pick = |name: &str, total: i64| {
            let local = effective_i64(overrides, config, name).unwrap_or(-2);
            match (local, total) {
                (-2, _) => total,
                (_, -1) => local,
                (-1, _) => total,
                _ => local.min(total),
            }
        };
        Limits {
            ms: pick("local.retention.ms", self.ms),
            bytes: pick("local.retention.bytes", self.bytes),
        }
    }
}

/// Applies the whole log's retention to a partition's archive: deletes the archived
/// segments past `retention.ms` (by their newest record) or beyond `retention.bytes`
/// (counting the archive and the local segments not archived yet), oldest first. With
/// `sweep`, first deletes objects an earlier pass left behind (it was cut short between
/// writing the manifest and deleting the objects).
pub async fn archive_pass(
    ctx: &Ctx,
    archive: &strata_storage::archive::Archive,
    topic: &strata_storage::TopicInfo,
    p: strata_storage::archive::PartitionRef<'_>,
    sweep: bool,
) -> Result<(), StorageError> {
    let manifest = ctx.tier.manifest(p).await?;
    if sweep {
        let n = archive.delete_orphans(p, &manifest).await?;
        if n > 0 {
            tracing::info!(
                topic = p.topic,
                partition = p.partition,
                objects = n,
                "deleted archive objects left by an interrupted retention pass"
            );
        }
    }
    let floor = ctx.tier.floor(p);
    if manifest.segments.is_empty() && floor <= manifest.deleted_below {
        return Ok(());
    }
    let limits = Limits::of(&topic.configs, &ctx.config);
    let archived_end = manifest.next_offset();
    let local_beyond: u64 = ctx
        .store
        .segments(p.topic, p.partition)?
        .iter()
        .filter(|s| s.base_offset >= archived_end)
        .map(|s| s.bytes)
        .sum();
    let segments: Vec<SegmentInfo> = manifest
        .segments
        .iter()
        .map(|s| SegmentInfo {
            base_offset: s.base_offset,
            last_offset: s.last_offset,
            bytes: s.bytes,
            batches: s.batches,
            min_timestamp: s.min_timestamp,
            max_timestamp: s.max_timestamp,
            created_ms: 0,
            sealed: true,
        })
        .collect();
    let n = first_kept(
        &segments,
        i64::MAX,
        limits.ms,
        limits.bytes,
        now_ms(),
        local_beyond,
    );
    if n == 0 && floor <= manifest.deleted_below {
        return Ok(());
    }
    let m = archive.expire(p, (*manifest).clone(), n, floor).await?;
    let gone = manifest.segments.len() - m.segments.len();
    ::metrics::counter!("strata_retention_deleted_bytes_total", "tier" => "archive")
        .increment(segments[..gone].iter().map(|s| s.bytes).sum());
    if gone > 0 {
        tracing::info!(
            topic = p.topic,
            partition = p.partition,
            segments = gone,
            from = segments[0].base_offset,
            to = segments[gone - 1].last_offset,
            "deleted archived segments (retention, DeleteRecords)"
        );
    }
    ctx.tier.floor_applied(&ctx.store, p, &m);
    ctx.tier.set_manifest(p, m);
    Ok(())
}

/// Index of the first segment retention keeps (`segments.len()` when none). `beyond` counts
/// bytes of the log after these segments (toward `retention_bytes`).
fn first_kept(
    segments: &[SegmentInfo],
    hw: i64,
    retention_ms: i64,
    retention_bytes: i64,
    now: i64,
    beyond: u64,
) -> usize {
    let mut keep = 0;
    if retention_ms >= 0 {
        // Oldest first, while a segment's newest record is past retention. The active
        // segment counts too once all of it is durable: a partition that stopped receiving
        // data still empties out.
        while let Some(s) = segments.get(keep) {
            // Saturating: a client may send any timestamp, i64::MIN+1 included.
            let expired = now.saturating_sub(s.max_timestamp) > retention_ms && s.last_offset < hw;
            if !expired {
                break;
            }
            keep += 1;
        }
    }
    if retention_bytes >= 0 {
        let mut size: u64 = segments[keep..].iter().map(|s| s.bytes).sum::<u64>() + beyond;
        // Only sealed segments, and only while the rest still holds retention.bytes.
        while let Some(s) = segments.get(keep).filter(|s| s.sealed) {
            if size.saturating_sub(s.bytes) < retention_bytes as u64 {
                break;
            }
            size -= s.bytes;
            keep += 1;
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, last: i64, bytes: u64, max_ts: i64, sealed: bool) -> SegmentInfo {
        SegmentInfo {
            base_offset: base,
            last_offset: last,
            bytes,
            batches: 1,
            min_timestamp: 0,
            max_timestamp: max_ts,
            created_ms: 0,
            sealed,
        }
    }

    #[test]
    fn time_and_size_limits_pick_whole_old_segments() {
        let segs = [
            seg(0, 9, 100, 1000, true),
            seg(10, 19, 100, 5000, true),
            seg(20, 29, 100, 9000, false),
        ];
        assert_eq!(first_kept(&segs, 30, -1, -1, 10_000, 0), 0, "no limits");
        assert_eq!(
            first_kept(&segs, 30, 6000, -1, 10_000, 0),
            1,
            "only the first is older than 6 s"
        );
        assert_eq!(
            first_kept(&segs, 30, 500, -1, 10_000, 0),
            3,
            "everything expired, active segment included"
        );
        assert_eq!(
            first_kept(&segs, 25, 500, -1, 10_000, 0),
            2,
            "not the active one while it is not all durable"
        );
        assert_eq!(
            first_kept(&segs, 30, -1, 150, 10_000, 0),
            1,
            "keep at least retention.bytes"
        );
        assert_eq!(
            first_kept(&segs, 30, -1, 0, 10_000, 0),
            2,
            "never the active segment for size"
        );
    }

    #[test]
    fn bytes_beyond_the_segments_count_toward_the_size_limit() {
        let segs = [seg(0, 9, 100, 0, true), seg(10, 19, 100, 0, true)];
        assert_eq!(first_kept(&segs, i64::MAX, -1, 250, 10, 0), 0);
        assert_eq!(first_kept(&segs, i64::MAX, -1, 250, 10, 100), 0);
        assert_eq!(first_kept(&segs, i64::MAX, -1, 250, 10, 150), 1);
        assert_eq!(first_kept(&segs, i64::MAX, -1, 250, 10, 1000), 2);
    }

    fn o(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn compact_only_topics_keep_everything() {
        let c = Config::default();
        let limits = |policy: &str| {
            Limits::of(
                &o(&[
                    ("cleanup.policy", policy),
                    ("retention.ms", "10"),
                    ("retention.bytes", "5"),
                ]),
                &c,
            )
        };
        assert_eq!(limits("compact"), Limits { ms: -1, bytes: -1 });
        assert_eq!(limits("compact,delete"), Limits { ms: 10, bytes: 5 });
        assert_eq!(limits("delete"), Limits { ms: 10, bytes: 5 });
    }

    #[test]
    fn local_limits_default_to_and_never_exceed_the_whole_log() {
        let c = Config::default();
        let total = Limits {
            ms: 1000,
            bytes: -1,
        };
        assert_eq!(total.local(&o(&[]), &c), total, "-2: as the whole log");
        let l = total.local(
            &o(&[("local.retention.ms", "10"), ("local.retention.bytes", "0")]),
            &c,
        );
        assert_eq!(l, Limits { ms: 10, bytes: 0 });
        let l = total.local(&o(&[("local.retention.ms", "5000")]), &c);
        assert_eq!(l.ms, 1000, "never longer than retention.ms");
        let l = total.local(&o(&[("local.retention.ms", "-1")]), &c);
        assert_eq!(l.ms, 1000, "unlimited locally is bounded by the whole log");
        let forever = Limits { ms: -1, bytes: -1 };
        assert_eq!(forever.local(&o(&[("local.retention.ms", "7")]), &c).ms, 7);
    }

    #[test]
    fn extreme_timestamps_count_as_old_without_overflow() {
        let segs = [
            seg(0, 9, 100, i64::MIN + 1, true),
            seg(10, 19, 100, i64::MAX, false),
        ];
        assert_eq!(first_kept(&segs, 20, 1000, -1, i64::MAX, 0), 1);
        assert_eq!(first_kept(&segs, 20, 1000, -1, 0, 0), 1);
    }
}
