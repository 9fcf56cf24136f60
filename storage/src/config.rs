//! Store settings and the topic configs the storage itself interprets.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Kafka's default `message.max.bytes`: 1 MiB plus the 12-byte log overhead.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;
/// Kafka's default `segment.bytes` (1 GiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
/// Kafka's default `segment.ms` (7 days).
pub const DEFAULT_SEGMENT_MS: i64 = 7 * 24 * 3600 * 1000;
/// Kafka's default `producer.id.expiration.ms` (1 day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// How to open a [`crate::Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the RocksDB database; created when missing.
    pub dir: PathBuf,
    /// Make writes durable (fsync of the write-ahead log) before they become visible. Off
    /// trades durability on power loss for latency; a process crash loses nothing either way.
    pub fsync: bool,
    /// Defaults for topics that do not set `segment.bytes`, `segment.ms`, `max.message.bytes`.
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: usize,
    /// Default of `message.timestamp.type`: LogAppendTime when true.
    pub log_append_time: bool,
    /// Size of each RocksDB memtable of the log column family.
    pub write_buffer_bytes: usize,
    /// Shared block cache (index/filter blocks and the metadata column family).
    pub block_cache_bytes: usize,
    /// Budget of the read cache (the newest appended and recently read batches, shared by
    /// all readers: tail readers and groups reading the same data need no RocksDB read and
    /// no copy); 0 turns it off.
    pub read_cache_bytes: usize,
    /// Partitions the store holds in all; creating more fails with
    /// [`StorageError::TooManyPartitions`](crate::StorageError::TooManyPartitions) before
    /// anything is allocated.
    pub max_partitions: usize,
    /// An idempotent producer's state on a partition is dropped once it has not written
    /// there for this long (Kafka's `producer.id.expiration.ms`); see
    /// [`crate::Store::expire_producers`]. States already expired are not loaded at open.
    pub producer_id_expiration_ms: i64,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            fsync: true,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            log_append_time: false,
            // 64 MiB memtables: large enough that a flush writes a sizable file (few L0
            // files, little compaction), small enough that 4 of them stay well under the
            // broker's 512 MiB memory budget.
            write_buffer_bytes: 64 << 20,
            // Batches bypass the block cache (they live in blob files, read through the OS
            // page cache); the cache only holds keys, indexes and metadata.
            block_cache_bytes: 64 << 20,
            // 64 MiB: a window of the newest data for tail readers (a fraction of a second at
            // full produce speed), within the broker's 512 MiB memory budget next to the
            // memtables.
            read_cache_bytes: 64 << 20,
            // Each partition costs in-memory state (~1 KiB) and keys: 100,000 is far beyond
            // what one broker serves well and far below what exhausts its memory.
            max_partitions: 100_000,
            producer_id_expiration_ms: DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        }
    }
}

/// The topic settings the storage applies on append, parsed from the topic's config map
/// with the store's defaults for missing keys. Unparseable values fall back to the default;
/// the broker validates values before they reach the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`: the broker's clock replaces batch timestamps.
    pub log_append_time: bool,
}

impl TopicLimits {
    pub fn from_configs(configs: &BTreeMap<String, String>, defaults: &StoreConfig) -> Self {
        fn get<T: std::str::FromStr>(c: &BTreeMap<String, String>, k: &str, d: T) -> T {
            c.get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(d)
        }
        let mut segment_ms = get(configs, "segment.ms", defaults.segment_ms);
        // A compacted topic's active segment is never cleaned: roll it once it is as old as
        // `max.compaction.lag.ms`, so no record stays uncompacted for longer (as Kafka does).
        let compacted = configs
            .get("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"));
        if compacted {
            segment_ms = segment_ms.min(get(configs, "max.compaction.lag.ms", i64::MAX));
        }
        TopicLimits {
            segment_bytes: get(configs, "segment.bytes", defaults.segment_bytes),
            segment_ms,
            max_message_bytes: get(configs, "max.message.bytes", defaults.max_message_bytes),
            log_append_time: configs
                .get("message.timestamp.type")
                .map_or(defaults.log_append_time, |v| v == "LogAppendTime"),
        }
    }
}
