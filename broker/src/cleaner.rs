//! The log cleaner task: compacts the partitions of topics whose `cleanup.policy` includes
//! `compact`, one partition at a time on a blocking thread (Kafka's one cleaner thread).
//!
//! Each round looks at every compacted partition and cleans the one that needs it most:
//! first those whose oldest dirty data is older than `max.compaction.lag.ms`, then the one
//! with the highest dirty ratio at or above `min.cleanable.dirty.ratio`, then any whose
//! tombstones are past `delete.retention.ms`. When none qualifies it sleeps
//! `log_cleaner_backoff_ms`. The storage does the cleaning
//! ([`Store::clean`]); this task picks the work, resolves the topic's settings, bounds the
//! I/O rate and reports metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::records::Compression;
use strata_storage::clean::{CleanOptions, CleanReport, RecordsCodec};
use strata_storage::{StorageError, Store};
use tokio_util::sync::CancellationToken;

use crate::codec::{self, MAX_DECOMPRESSED_BYTES};
use crate::config::Config;
use crate::handler::Ctx;
use crate::topic_config::{effective, effective_i64};

/// A partition whose pass failed is left alone this long, so one broken partition cannot
/// keep the cleaner from the others (or spin on it).
const FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// A partition: its topic's name and its index.
type Key = (String, i32);

/// Runs rounds until `cancel`; a round that cleaned something is followed by another at
/// once, otherwise the task sleeps `log_cleaner_backoff_ms`.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    if !ctx.config.log_cleaner_enable {
        return;
    }
    let backoff = Duration::from_millis(ctx.config.log_cleaner_backoff_ms);
    let mut failed: HashMap<Key, Instant> = HashMap::new();
    loop {
        failed.retain(|_, at| at.elapsed() < FAILURE_BACKOFF);
        let skip: Vec<Key> = failed.keys().cloned().collect();
        let (c, stop) = (ctx.clone(), cancel.clone());
        let round = tokio::task::spawn_blocking(move || round(&c.store, &c.config, &skip, &stop));
        let again = match round.await {
            Ok(Ok(Some((key, report)))) => {
                record(&key, &report);
                !report.interrupted
            }
            Ok(Ok(None)) => false,
            // The topic was deleted during the pass: nothing to clean, nothing failed.
            Ok(Err((_, StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }))) => {
                true
            }
            Ok(Err((key, e))) => {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "log cleaning failed; the partition waits before the next try");
                ::metrics::counter!("strata_cleaner_failures_total").increment(1);
                failed.insert(key, Instant::now());
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "log cleaner task failed");
                false
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        if !again {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
}

/// A compacted topic's cleaning settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    min_lag_ms: i64,
    max_lag_ms: i64,
    min_ratio: f64,
    delete_retention_ms: i64,
    segment_bytes: u64,
}

impl Settings {
    /// `None` when the topic is not compacted.
    fn of(configs: &BTreeMap<String, String>, config: &Config) -> Option<Settings> {
        let compact = effective(configs, config, "cleanup.policy")?
            .split(',')
            .any(|p| p.trim() == "compact");
        let long =
            |name: &str, default: i64| effective_i64(configs, config, name).unwrap_or(default);
        compact.then(|| Settings {
            min_lag_ms: long("min.compaction.lag.ms", 0),
            max_lag_ms: long("max.compaction.lag.ms", i64::MAX),
            min_ratio: effective(configs, config, "min.cleanable.dirty.ratio")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.5),
            delete_retention_ms: long("delete.retention.ms", 86_400_000),
            segment_bytes: long("segment.bytes", config.segment_bytes as i64).max(1) as u64,
        })
    }
}

/// Picks the partition that most needs cleaning and cleans it; `None` when none does.
fn round(
    store: &Store,
    config: &Config,
    skip: &[Key],
    cancel: &CancellationToken,
) -> Result<Option<(Key, CleanReport)>, (Key, StorageError)> {
    let now = crate::group::wall_ms();
    let mut best: Option<(f64, Key, Settings, BTreeMap<String, String>)> = None;
    let mut max_ratio: f64 = 0.0;
    for topic in store.topics() {
        let Some(settings) = Settings::of(&topic.configs, config) else {
            continue;
        };
        for p in 0..topic.partitions {
            let key = (topic.name.clone(), p);
            if skip.contains(&key) {
                continue;
            }
            let c = match store.cleanable(&topic.name, p, now, settings.min_lag_ms) {
                Ok(c) => c,
                // Deleted meanwhile.
                Err(_) => continue,
            };
            let ratio = c.dirty_ratio();
            max_ratio = max_ratio.max(ratio);
            let overdue = c
                .oldest_dirty_ms
                .is_some_and(|t| now.saturating_sub(t) > settings.max_lag_ms);
            let dirty = c.dirty_bytes > 0 && (ratio >= settings.min_ratio || overdue);
            let tombstones = c.tombstones_due(now, settings.delete_retention_ms);
            if !dirty && !tombstones {
                continue;
            }
            // Overdue partitions come first, then the dirtiest, then those with tombstones
            // to remove.
            let rank = if overdue { 2.0 + ratio } else { ratio };
            if best.as_ref().is_none_or(|(r, ..)| rank > *r) {
                best = Some((rank, key, settings, topic.configs.clone()));
            }
        }
    }
    ::metrics::gauge!("strata_cleaner_max_dirty_ratio").set(max_ratio);
    let Some((_, key, settings, configs)) = best else {
        return Ok(None);
    };
    let opts = CleanOptions {
        now_ms: now,
        min_compaction_lag_ms: settings.min_lag_ms,
        delete_retention_ms: settings.delete_retention_ms,
        segment_bytes: settings.segment_bytes,
        key_map_bytes: usize::try_from(config.log_cleaner_dedupe_buffer_size).unwrap_or(usize::MAX),
    };
    let codec = TopicCodec::of(&configs, config);
    let mut rate = IoRate::new(config.log_cleaner_io_max_bytes_per_second, cancel);
    store
        .clean(&key.0, key.1, &opts, &codec, &mut |n| rate.pass(n))
        .map(|r| Some((key.clone(), r)))
        .map_err(|e| (key, e))
}

/// Logs a pass and counts it in the metrics.
fn record(key: &Key, r: &CleanReport) {
    let removed = r.records_superseded + r.records_keyless + r.tombstones_removed;
    ::metrics::counter!("strata_cleaner_passes_total").increment(1);
    ::metrics::counter!("strata_cleaner_bytes_read_total").increment(r.bytes_read);
    ::metrics::counter!("strata_cleaner_bytes_reclaimed_total")
        .increment(r.bytes_before.saturating_sub(r.bytes_after));
    ::metrics::counter!("strata_cleaner_records_removed_total").increment(removed);
    tracing::info!(
        topic = %key.0,
        partition = key.1,
        bytes_before = r.bytes_before,
        bytes_after = r.bytes_after,
        records_removed = removed,
        tombstones_removed = r.tombstones_removed,
        segments_merged = r.segments_merged,
        cleaned_to = r.cleaned_to,
        complete = r.complete,
        "log cleaned"
    );
}

/// Holds the cleaner's I/O to a rate by sleeping (on its blocking thread) whenever it is
/// ahead of schedule, and stops it on shutdown.
struct IoRate<'a> {
    /// Bytes per second; 0: unlimited.
    limit: u64,
    started: Instant,
    bytes: u64,
    cancel: &'a CancellationToken,
}

/// Longest single sleep, so shutdown is noticed promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(100);

impl<'a> IoRate<'a> {
    fn new(limit: u64, cancel: &'a CancellationToken) -> Self {
        IoRate {
            limit,
            started: Instant::now(),
            bytes: 0,
            cancel,
        }
    }

    /// Counts `n` bytes and waits until the rate allows them; `false` on shutdown.
    fn pass(&mut self, n: u64) -> bool {
        self.bytes = self.bytes.saturating_add(n);
        if self.limit > 0 {
            let due = Duration::from_secs_f64(self.bytes as f64 / self.limit as f64);
            loop {
                let ahead = due.saturating_sub(self.started.elapsed());
                if ahead.is_zero() || self.cancel.is_cancelled() {
                    break;
                }
                std::thread::sleep(ahead.min(SLEEP_SLICE));
            }
        }
        !self.cancel.is_cancelled()
    }
}

/// Expands and re-packs batches with the broker's bounded codecs, at the topic's
/// `compression.*.level`.
struct TopicCodec {
    gzip: i32,
    lz4: i32,
    zstd: i32,
}

impl TopicCodec {
    fn of(configs: &BTreeMap<String, String>, config: &Config) -> TopicCodec {
        let level = |name: &str| {
            effective_i64(configs, config, name)
                .and_then(|l| i32::try_from(l).ok())
                .unwrap_or(-1)
        };
        TopicCodec {
            gzip: level("compression.gzip.level"),
            lz4: level("compression.lz4.level"),
            zstd: level("compression.zstd.level"),
        }
    }
}

impl RecordsCodec for TopicCodec {
    fn decompress(&self, c: i16, section: &[u8]) -> Result<Vec<u8>, String> {
        let c = codec::of_attributes(c).ok_or_else(|| format!("unknown codec {c}"))?;
        codec::decompress(c, section, MAX_DECOMPRESSED_BYTES).map_err(|e| e.to_string())
    }

    fn compress(&self, c: i16, records: &[u8]) -> Result<Vec<u8>, String> {
        let c = codec::of_attributes(c).ok_or_else(|| format!("unknown codec {c}"))?;
        let level = match c {
            Compression::Gzip => self.gzip,
            Compression::Lz4 => self.lz4,
            Compression::Zstd => self.zstd,
            _ => 0,
        };
        codec::compress(c, level, records).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_rate_paces_and_stops() {
        let cancel = CancellationToken::new();
        let mut r = IoRate::new(1_000_000, &cancel);
        let t = Instant::now();
        assert!(r.pass(100_000));
        assert!(t.elapsed() >= Duration::from_millis(90));
        let mut free = IoRate::new(0, &cancel);
        assert!(free.pass(u64::MAX));
        cancel.cancel();
        assert!(!r.pass(1));
    }

    #[test]
    fn only_compacted_topics_have_settings() {
        let config = Config::default();
        let mut c = BTreeMap::new();
        assert!(Settings::of(&c, &config).is_none());
        c.insert("cleanup.policy".to_string(), "delete,compact".to_string());
        c.insert("min.cleanable.dirty.ratio".to_string(), "0.2".to_string());
        let s = Settings::of(&c, &config).unwrap();
        assert_eq!(s.min_ratio, 0.2);
        assert_eq!(s.max_lag_ms, i64::MAX);
        assert_eq!(s.delete_retention_ms, 86_400_000);
    }
}
