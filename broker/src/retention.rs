//! The retention task: applies `retention.ms` and `retention.bytes` by dropping whole
//! segments, moves log start offsets, and compacts the dropped ranges so disk space returns;
//! and drops the state of idempotent producers idle for `producer_id_expiration_ms`.

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
        let retention_ms = effective_i64(&topic.configs, config, "retention.ms").unwrap_or(-1);
        let retention_bytes =
            effective_i64(&topic.configs, config, "retention.bytes").unwrap_or(-1);
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
            store.reclaim_space(&topic.name, p)?;
            dropped += keep;
        }
    }
    Ok(dropped)
}

/// Index of the first segment retention keeps (`segments.len()` when none).
fn first_kept(
    segments: &[SegmentInfo],
    hw: i64,
    retention_ms: i64,
    retention_bytes: i64,
    now: i64,
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
        let mut size: u64 = segments[keep..].iter().map(|s| s.bytes).sum();
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
        assert_eq!(first_kept(&segs, 30, -1, -1, 10_000), 0, "no limits");
        assert_eq!(
            first_kept(&segs, 30, 6000, -1, 10_000),
            1,
            "only the first is older than 6 s"
        );
        assert_eq!(
            first_kept(&segs, 30, 500, -1, 10_000),
            3,
            "everything expired, active segment included"
        );
        assert_eq!(
            first_kept(&segs, 25, 500, -1, 10_000),
            2,
            "not the active one while it is not all durable"
        );
        assert_eq!(
            first_kept(&segs, 30, -1, 150, 10_000),
            1,
            "keep at least retention.bytes"
        );
        assert_eq!(
            first_kept(&segs, 30, -1, 0, 10_000),
            2,
            "never the active segment for size"
        );
    }

    #[test]
    fn extreme_timestamps_count_as_old_without_overflow() {
        let segs = [
            seg(0, 9, 100, i64::MIN + 1, true),
            seg(10, 19, 100, i64::MAX, false),
        ];
        assert_eq!(first_kept(&segs, 20, 1000, -1, i64::MAX), 1);
        assert_eq!(first_kept(&segs, 20, 1000, -1, 0), 1);
    }
}
