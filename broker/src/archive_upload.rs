//! How the archive connector moves one segment: exported from RocksDB in chunks on a
//! blocking thread, uploaded as the chunks arrive (multipart for large segments), so memory
//! per upload is bounded by [`UploadLimits`] rather than by `segment.bytes`. Also the
//! connector's counters, its per-partition backoff and its rate-limited warnings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_storage::archive::{Archive, ArchiveManifest, PartitionRef, UploadLimits};
use strata_storage::{ExportChunk, StorageError};

use crate::handler::Ctx;

/// What the archive connector has done since the broker started (for metrics).
#[derive(Debug, Default)]
pub struct ArchiveStats {
    uploaded_bytes: AtomicU64,
    uploaded_segments: AtomicU64,
    failures: AtomicU64,
    pending_segments: AtomicU64,
}

/// A reading of [`ArchiveStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStatsSnapshot {
    /// `.log` bytes of the segments archived.
    pub uploaded_bytes: u64,
    pub uploaded_segments: u64,
    /// Partition uploads that failed (each is retried after a backoff).
    pub failures: u64,
    /// Sealed segments of archived topics not in the archive yet, as of the connector's
    /// last look at each partition.
    pub pending_segments: u64,
}

impl ArchiveStats {
    pub fn snapshot(&self) -> ArchiveStatsSnapshot {
        ArchiveStatsSnapshot {
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
            uploaded_segments: self.uploaded_segments.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            pending_segments: self.pending_segments.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_pending(&self, n: u64) {
        self.pending_segments.store(n, Ordering::Relaxed);
    }
}

/// A segment the connector archived.
pub struct Uploaded {
    /// The manifest as committed.
    pub manifest: ArchiveManifest,
    pub bytes: u64,
    pub multipart: bool,
}

/// Uploads the sealed segment of `p` at `base_offset`: the export runs on a blocking thread
/// and hands over one chunk at a time (a channel of one), the upload sends it on. `None` when
/// the archive held it already.
pub async fn upload_segment(
    ctx: &Arc<Ctx>,
    archive: &Archive,
    p: PartitionRef<'_>,
    base_offset: i64,
    limits: UploadLimits,
) -> Result<Option<Uploaded>, StorageError> {
    let Some(mut upload) = archive.begin_upload(p, base_offset, limits).await? else {
        return Ok(None);
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<ExportChunk>(1);
    let (topic, partition) = (p.topic.to_string(), p.partition);
    let export = ctx.blocking(move |s| {
        s.export_segment_chunks(&topic, partition, base_offset, limits.part_bytes, |c| {
            tx.blocking_send(c)
                .map_err(|_| StorageError::Archive("the upload stopped".into()))
        })
    });
    let send = async {
        // Owned here: a failed write drops the receiver, which stops the export.
        let mut rx = rx;
        while let Some(chunk) = rx.recv().await {
            upload.write(chunk).await?;
        }
        Ok::<_, StorageError>(())
    };
    let (exported, sent) = tokio::join!(export, send);
    let info = match (exported, sent) {
        (Ok(info), Ok(())) => info,
        (_, Err(e)) | (Err(e), Ok(())) => {
            upload.abort().await;
            return Err(e);
        }
    };
    let (bytes, multipart) = (upload.written(), upload.is_multipart());
    let manifest = upload.finish(&info).await?;
    ctx.archive_stats
        .uploaded_bytes
        .fetch_add(bytes, Ordering::Relaxed);
    ctx.archive_stats
        .uploaded_segments
        .fetch_add(1, Ordering::Relaxed);
    Ok(Some(Uploaded {
        manifest,
        bytes,
        multipart,
    }))
}

/// First wait after a partition's upload fails; it doubles with each further failure.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between attempts: a store back after an outage is used again within this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A failing partition's consecutive failures and when to try it next.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub failures: u32,
    pub retry_at: Instant,
}

impl Backoff {
    /// The backoff after one more failure (`prev`: the one before, if any).
    pub fn after_failure(prev: Option<Backoff>, now: Instant) -> Backoff {
        let failures = prev.map_or(0, |b| b.failures).saturating_add(1);
        let wait = BACKOFF_FIRST
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(BACKOFF_MAX);
        Backoff {
            failures,
            retry_at: now + wait,
        }
    }
}

/// At most one warning per this long while the store keeps failing (every partition fails
/// when it is down; one line each pass would flood the log).
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Lets a warning through when none went out for [`WARN_EVERY`]; counts the others.
#[derive(Debug, Default)]
pub struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    /// `Some(warnings suppressed since the last one)` when this one may be logged.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let now = Instant::now();
        let mut b = None;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let next = Backoff::after_failure(b, now);
            waits.push(next.retry_at - now);
            b = Some(next);
        }
        assert_eq!(waits[0], Duration::from_secs(1));
        assert_eq!(waits[1], Duration::from_secs(2));
        assert_eq!(waits[5], Duration::from_secs(32));
        assert_eq!(waits[9], BACKOFF_MAX);
        assert_eq!(b.map(|b| b.failures), Some(10));
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_hid() {
        let t = Instant::now();
        let mut w = WarnLimiter::default();
        assert_eq!(w.allow(t), Some(0));
        assert_eq!(w.allow(t + Duration::from_secs(1)), None);
        assert_eq!(w.allow(t + Duration::from_secs(2)), None);
        assert_eq!(w.allow(t + WARN_EVERY), Some(2));
    }
}
