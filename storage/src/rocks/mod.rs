//! The RocksDB engine: opening, tuning, and the topic catalog.

mod acls;
mod catalog;
mod clean;
mod export;
mod groups;
mod log;
mod producers;
mod quotas;
pub(crate) mod raw;
mod read;
mod scram;
mod syncer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode,
    Options, WriteBatch, WriteOptions, DB,
};
use uuid::Uuid;

use crate::cache::ReadCache;
use crate::config::{StoreConfig, TopicLimits};
use crate::error::{StorageError, StorageResult};
use crate::keys::{self, Tag};
use crate::meta::{CleanerRecord, PartitionRecord, ProducerRecord, SegmentRecord, TopicRecord};
use crate::partition::{Partition, PartitionState};

pub use self::acls::AclBinding;
pub use self::export::{ExportChunk, ExportedBatch, SegmentExport};
pub use self::groups::{GroupMember, GroupMetadata, GroupOffset};
pub use self::log::{AppendOutcome, PartitionOffsets, SegmentInfo};
pub use self::producers::ProducerInfo;
pub use self::quotas::ClientQuota;
pub use self::read::{BatchAt, ReadOutcome};
pub use self::scram::ScramCredential;
pub use self::syncer::SyncHold;

const CF_LOG: &str = "log";
const CF_IDX: &str = "idx";
const CF_META: &str = "meta";
/// KV key of the partition-id counter (ids are never reused, so stale keys of a deleted
/// topic can never be mistaken for a new topic's data).
const NEXT_PID_KEY: &[u8] = b"storage.next_partition_id";

/// A topic as the storage knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

struct TopicEntry {
    info: TopicInfo,
    created_ms: i64,
    partitions: Vec<Arc<Partition>>,
}

/// `[start, end)` of a log-keyed range.
type KeyRange = ([u8; 16], [u8; 16]);

/// The background compaction worker and its queue.
struct Compactor {
    queue: std::sync::mpsc::Sender<Vec<KeyRange>>,
    handle: std::thread::JoinHandle<()>,
}

#[derive(Default)]
struct Catalog {
    topics: HashMap<String, TopicEntry>,
    by_id: HashMap<Uuid, String>,
}

pub(crate) struct Inner {
    db: DB,
    config: StoreConfig,
    catalog: RwLock<Catalog>,
    next_pid: AtomicU64,
    sync: Arc<syncer::SyncQueue>,
    /// Serialises catalog changes (create, grow, reconfigure, delete topics); held across
    /// their synced write, which the catalog lock itself never is.
    changes: std::sync::Mutex<()>,
    /// The worker compacting the ranges of deleted topics, started by the first delete;
    /// joined at close so the database is really closed when `close` returns.
    compactor: std::sync::Mutex<Option<Compactor>>,
    /// Recently read batches, shared by readers; `None` when configured off.
    cache: Option<ReadCache>,
}

/// RocksDB's state ([`Store::engine_stats`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    /// Bytes compaction estimates it has to rewrite.
    pub pending_compaction_bytes: u64,
    pub running_compactions: u64,
    /// Writes are stopped (a write stall) right now.
    pub write_stopped: bool,
    /// Writes are being slowed to this many bytes/s right now (0: not slowed).
    pub delayed_write_rate: u64,
    pub memtable_bytes: u64,
    /// SST and blob files in use.
    pub live_data_bytes: u64,
    /// Write-ahead log files on disk.
    pub wal_bytes: u64,
}

/// The durable log store. Cheap to clone; the database closes (after a final sync) when the
/// last clone is dropped or [`Store::close`] is called.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    syncer: Arc<syncer::SyncerGuard>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RocksDB options, with the reasons for each choice.
fn db_options(config: &StoreConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut db = Options::default();
    db.create_if_missing(true);
    db.create_missing_column_families(true);
    // Flush and compaction threads: one each is plenty on small machines and leaves the
    // cores to the network path; RocksDB needs at least 2 background jobs to flush while
    // compacting.
    db.set_max_background_jobs(2);
    // The WAL is the only copy of unflushed data; keep at most ~4 memtables' worth so
    // recovery after a crash replays a bounded amount.
    db.set_max_total_wal_size((config.write_buffer_bytes as u64) * 4);
    // Large sequential writes: ask the OS to write back SST/blob files as they are written
    // rather than in one burst at fsync.
    db.set_bytes_per_sync(1 << 20);
    // RocksDB's own info log: bounded to 5 files of 16 MiB (retention passes log each
    // compaction they trigger, which otherwise grows the file without end).
    db.set_max_log_file_size(16 << 20);
    db.set_keep_log_file_num(5);
    db.set_wal_bytes_per_sync(0);
    // Reuse old WAL files instead of creating new ones: overwriting a file in place leaves
    // its size unchanged, so the group commit's fdatasync flushes data only, without an
    // ext4 journal commit that would also wait for the flush's blob-file writes. Measured
    // at 20 MB/s of acks=all produce with linger 0 (e2e-bench, 3 runs each): p99 produce
    // latency 3.9-10 ms without recycling, 1.4-1.6 ms with it.
    db.set_recycle_log_file_num(4);
    let cache = Cache::new_lru_cache(config.block_cache_bytes);

    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_cache_index_and_filter_blocks(true);
    table.set_bloom_filter(10.0, false);

    // log: keys are [partition][offset], values are whole batches (typically 16 KiB-1 MiB).
    // - BlobDB (key-value separation): values >= 4 KiB go to blob files at flush and are
    //   never rewritten by compaction, which only moves the 16-byte keys. Measured with the
    //   storage benchmark: write amplification ~2.0 (WAL + blob file) instead of ~3-5 with
    //   values inside SSTs, because partitions interleave in the key space and level
    //   compaction would rewrite the values again and again. Retention drops keys with range
    //   deletes; a blob file is deleted once no SST references it, so no blob GC is needed.
    // - No compression: producers compress batches themselves (gzip/snappy/lz4/zstd), and
    //   compressing again costs CPU for little gain.
    // - Level compaction with dynamic level sizes: only keys remain in SSTs, so compaction
    //   is cheap whatever the style.
    let mut log = Options::default();
    log.set_write_buffer_size(config.write_buffer_bytes);
    log.set_max_write_buffer_number(4);
    log.set_compression_type(DBCompressionType::None);
    log.set_enable_blob_files(true);
    log.set_min_blob_size(4096);
    log.set_blob_file_size(256 << 20);
    log.set_blob_compression_type(DBCompressionType::None);
    log.set_enable_blob_gc(false);
    log.set_level_compaction_dynamic_level_bytes(true);
    log.set_block_based_table_factory(&table);

    // idx and meta: small records, compressible, read by key and prefix scans.
    let mut small = Options::default();
    small.set_write_buffer_size(16 << 20);
    small.set_compression_type(DBCompressionType::Lz4);
    small.set_level_compaction_dynamic_level_bytes(true);
    small.set_block_based_table_factory(&table);

    let cfs = vec![
        ColumnFamilyDescriptor::new(CF_LOG, log),
        ColumnFamilyDescriptor::new(CF_IDX, small.clone()),
        ColumnFamilyDescriptor::new(CF_META, small),
    ];
    (db, cfs)
}

impl Store {
    /// Opens (or creates) the store in `config.dir`. Reads only metadata records (topics,
    /// partitions, segment descriptors, producer states): open time does not grow with the
    /// amount of log data. Every batch that was synced before a crash is there afterwards,
    /// with the same offsets; the log of each partition is recovered as a prefix of what was
    /// written.
    pub fn open(config: StoreConfig) -> StorageResult<Store> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| StorageError::Io(format!("create {}: {e}", config.dir.display())))?;
        let (opts, cfs) = db_options(&config);
        let db = DB::open_cf_descriptors(&opts, &config.dir, cfs)?;
        let inner = Inner {
            db,
            cache: ReadCache::new(config.read_cache_bytes),
            config,
            catalog: RwLock::new(Catalog::default()),
            next_pid: AtomicU64::new(0),
            sync: Arc::new(syncer::SyncQueue::default()),
            changes: std::sync::Mutex::new(()),
            compactor: std::sync::Mutex::new(None),
        };
        inner.recover()?;
        let inner = Arc::new(inner);
        let syncer = Arc::new(syncer::SyncerGuard::start(inner.clone())?);
        Ok(Store { inner, syncer })
    }

    /// Stops the syncer after a last sync and closes the database once every other clone of
    /// this store is gone.
    pub fn close(self) {
        self.syncer.stop();
        let compactor = self
            .inner
            .compactor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Compactor { queue, handle }) = compactor {
            // Closing the queue ends the worker once it has compacted what was queued.
            drop(queue);
            if handle.join().is_err() {
                tracing::error!("the background compaction thread panicked");
            }
        }
    }

    /// Benchmark hook: writes every memtable to files, so that what RocksDB holds on disk
    /// can be measured. Blocks until done. Not for production use.
    #[doc(hidden)]
    pub fn flush_memtables(&self) -> StorageResult<()> {
        for cf in [CF_LOG, CF_IDX, CF_META] {
            self.inner.db.flush_cf(self.inner.cf(cf))?;
        }
        Ok(())
    }

    /// Test hook: holds the group-commit syncer until the returned value is dropped (see
    /// [`SyncHold`]). Waits for a sync in progress to publish first. Not for production use.
    #[doc(hidden)]
    pub fn hold_syncer(&self) -> SyncHold {
        self.inner.sync.hold()
    }

    /// What RocksDB reports of its state, for metrics.
    pub fn engine_stats(&self) -> EngineStats {
        let db = &self.inner.db;
        let int = |name: &str| {
            [CF_LOG, CF_IDX, CF_META]
                .iter()
                .filter_map(|cf| self.inner.db.cf_handle(cf))
                .filter_map(|cf| db.property_int_value_cf(cf, name).ok().flatten())
                .sum::<u64>()
        };
        // Write-ahead log files: `<number>.log` in the database directory.
        let wal_bytes = std::fs::read_dir(&self.inner.config.dir)
            .map(|dir| {
                dir.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        EngineStats {
            pending_compaction_bytes: int("rocksdb.estimate-pending-compaction-bytes"),
            running_compactions: db
                .property_int_value("rocksdb.num-running-compactions")
                .ok()
                .flatten()
                .unwrap_or(0),
            write_stopped: int("rocksdb.is-write-stopped") > 0,
            delayed_write_rate: db
                .property_int_value("rocksdb.actual-delayed-write-rate")
                .ok()
                .flatten()
                .unwrap_or(0),
            memtable_bytes: int("rocksdb.cur-size-all-mem-tables"),
            live_data_bytes: int("rocksdb.live-sst-files-size")
                + int("rocksdb.live-blob-file-size"),
            wal_bytes,
        }
    }

    /// Stores a small broker value (group state, counters) durably under `key`.
    pub fn put_kv(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        self.inner.put_synced(CF_META, &keys::kv_key(key), value)
    }

    pub fn get_kv(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self
            .inner
            .db
            .get_cf(self.inner.cf(CF_META), keys::kv_key(key))?)
    }

    pub fn delete_kv(&self, key: &[u8]) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.inner.cf(CF_META), keys::kv_key(key));
        self.inner.write_synced(batch)
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn scan_kv(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let full = keys::kv_key(prefix);
        Ok(self
            .inner
            .scan_meta(&full)?
            .into_iter()
            .map(|(k, v)| (k[1..].to_vec(), v))
            .collect())
    }

    /// Atomically adds `n` to the durable counter `key` and returns the first of the `n`
    /// values reserved (the counter starts at 0).
    pub fn allocate_ids(&self, key: &[u8], n: u64) -> StorageResult<u64> {
        // One lock for every counter: allocation is rare (one per producer session).
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let first = self.get_kv(key)?.map(|v| read_u64(&v)).unwrap_or(0);
        self.put_kv(key, &(first + n).to_be_bytes())?;
        Ok(first)
    }
}

fn read_u64(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Inner {
    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // The three families are created at open, so the handle always exists.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| unreachable!("column family {name} is created at open"))
    }

    fn read_catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_catalog(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }

    fn partition(&self, topic: &str, index: i32) -> StorageResult<Arc<Partition>> {
        let catalog = self.read_catalog();
        let entry = catalog
            .topics
            .get(topic)
            .ok_or_else(|| StorageError::UnknownTopic(topic.to_string()))?;
        usize::try_from(index)
            .ok()
            .and_then(|i| entry.partitions.get(i))
            .cloned()
            .ok_or_else(|| StorageError::UnknownPartition {
                topic: topic.to_string(),
                partition: index,
            })
    }

    fn write_options(&self, sync: bool) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(sync && self.config.fsync);
        w
    }

    /// Metadata changes are rare and small: they are written with their own fsync (when the
    /// fsync policy is on) rather than through the group-commit syncer.
    fn write_synced(&self, batch: WriteBatch) -> StorageResult<()> {
        Ok(self.db.write_opt(batch, &self.write_options(true))?)
    }

    fn put_synced(&self, cf: &str, key: &[u8], value: &[u8]) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf), key, value);
        self.write_synced(batch)
    }

    /// Compacts deleted key ranges so their space returns to the file system.
    fn compact_ranges(&self, ranges: &[KeyRange]) {
        for (start, end) in ranges {
            for cf in [CF_LOG, CF_IDX] {
                self.db
                    .compact_range_cf(self.cf(cf), Some(start), Some(end));
            }
        }
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues key ranges for compaction by the background worker (started on first use).
    fn compact_in_background(self: &Arc<Self>, ranges: Vec<KeyRange>) -> StorageResult<()> {
        let mut slot = self.compactor.lock().unwrap_or_else(|e| e.into_inner());
        let ranges = match slot.as_ref() {
            Some(c) => match c.queue.send(ranges) {
                Ok(()) => return Ok(()),
                // The worker is gone (it panicked): start another.
                Err(std::sync::mpsc::SendError(r)) => r,
            },
            None => ranges,
        };
        let (queue, rx) = std::sync::mpsc::channel::<Vec<KeyRange>>();
        // The worker holds the store weakly: a store dropped without `close` still closes.
        let inner = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("strata-compact".into())
            .spawn(move || {
                while let Ok(ranges) = rx.recv() {
                    if let Some(inner) = inner.upgrade() {
                        inner.compact_ranges(&ranges);
                    }
                }
            })
            .map_err(|e| StorageError::Io(format!("spawn compaction thread: {e}")))?;
        // A send on a fresh channel whose receiver is alive cannot fail.
        let _ = queue.send(ranges);
        *slot = Some(Compactor { queue, handle });
        Ok(())
    }

    fn scan_meta(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Rebuilds the catalog and each partition's state from metadata records.
    fn recover(&self) -> StorageResult<()> {
        let next_pid = self
            .db
            .get_cf(self.cf(CF_META), keys::kv_key(NEXT_PID_KEY))?
            .map(|v| read_u64(&v))
            .unwrap_or(0);
        self.next_pid.store(next_pid, Ordering::SeqCst);

        let mut segments: HashMap<u64, Vec<SegmentRecord>> = HashMap::new();
        for (k, v) in self.scan_meta(&[Tag::Segment as u8])? {
            let pid = u64::from_be_bytes(k[1..9].try_into().unwrap_or_default());
            segments
                .entry(pid)
                .or_default()
                .push(SegmentRecord::decode(v.as_slice())?);
        }
        let mut producers: HashMap<u64, HashMap<i64, ProducerRecord>> = HashMap::new();
        let mut expired = Vec::new();
        let now = now_ms();
        for (k, v) in self.scan_meta(&[Tag::Producer as u8])? {
            let pid = u64::from_be_bytes(k[1..9].try_into().unwrap_or_default());
            let producer = i64::from_be_bytes(k[9..17].try_into().unwrap_or_default());
            let rec = ProducerRecord::decode(v.as_slice())?;
            if !producers::live_at_open(&rec, now, self.config.producer_id_expiration_ms) {
                expired.push((pid, producer));
                continue;
            }
            producers.entry(pid).or_default().insert(producer, rec);
        }
        self.delete_expired_producers(&expired)?;
        let mut cleaned: HashMap<u64, CleanerRecord> = HashMap::new();
        for (k, v) in self.scan_meta(&[Tag::Cleaner as u8])? {
            let pid = u64::from_be_bytes(k[1..9].try_into().unwrap_or_default());
            cleaned.insert(pid, CleanerRecord::decode(v.as_slice())?);
        }
        let mut catalog = self.write_catalog();
        for (_, v) in self.scan_meta(&[Tag::Topic as u8])? {
            let rec = TopicRecord::decode(v.as_slice())?;
            let id = Uuid::from_slice(&rec.id)
                .map_err(|e| StorageError::Io(format!("corrupt topic id: {e}")))?;
            let limits = TopicLimits::from_configs(&rec.configs, &self.config);
            let mut parts = Vec::with_capacity(rec.partition_ids.len());
            for (index, &pid) in rec.partition_ids.iter().enumerate() {
                let prec = match self.db.get_cf(self.cf(CF_META), keys::partition_key(pid))? {
                    Some(v) => PartitionRecord::decode(v.as_slice())?,
                    None => PartitionRecord::default(),
                };
                let segs = segments.remove(&pid).unwrap_or_default();
                let next_offset = segs
                    .last()
                    .map(|s| s.last_offset + 1)
                    .unwrap_or(0)
                    .max(prec.next_offset_floor)
                    .max(prec.log_start_offset);
                let state = PartitionState {
                    next_offset,
                    log_start: prec.log_start_offset,
                    segments: segs,
                    producers: producers.remove(&pid).unwrap_or_default(),
                    limits,
                    deleted: false,
                    first_dirty: cleaned.get(&pid).map_or(0, |c| c.first_dirty_offset),
                    tombstones_since: cleaned.remove(&pid).and_then(|c| c.tombstones_since_ms),
                };
                parts.push(Arc::new(Partition::new(
                    pid,
                    rec.name.clone(),
                    index as i32,
                    state,
                )));
            }
            let info = TopicInfo {
                name: rec.name.clone(),
                id,
                partitions: parts.len() as i32,
                configs: rec.configs.clone(),
            };
            catalog.by_id.insert(id, rec.name.clone());
            catalog.topics.insert(
                rec.name.clone(),
                TopicEntry {
                    info,
                    created_ms: rec.created_ms,
                    partitions: parts,
                },
            );
        }
        Ok(())
    }
}

fn empty_state(limits: TopicLimits) -> PartitionState {
    PartitionState {
        next_offset: 0,
        log_start: 0,
        segments: Vec::new(),
        producers: HashMap::new(),
        limits,
        deleted: false,
        first_dirty: 0,
        tombstones_since: None,
    }
}
