//! # strata-storage
//!
//! Strata's durable partition log. It knows topics, partitions, offsets and Kafka v2 record
//! batches — as opaque bytes plus the few header fields it must read — committed consumer-group
//! offsets, segments and small broker metadata. It knows nothing of the Kafka wire protocol
//! (no `kafka-protocol` dependency) and its public API exposes no RocksDB type.
//!
//! ## Write path
//! [`Store::append`] validates a batch, assigns its offsets under the partition's lock and
//! writes batch + segment/producer metadata in one atomic RocksDB write, without fsync. The
//! batch is stored as sent; its base offset (which the CRC does not cover) is the key's, and
//! reads patch it into the bytes they return. One syncer thread then makes the write-ahead log durable for
//! everything written so far (group commit across partitions) and advances each partition's
//! high watermark. Readers never see offsets at or above the high watermark.
//!
//! ## Read path
//! [`Store::read`] returns whole batches from the one containing the wanted offset, below
//! the high watermark, as shared byte chunks ([`Records`]). Batches read from RocksDB are
//! copied once (patching in the base offset) and kept in a bounded read cache, so consumers
//! reading the same recent data (consumer groups fanning out) are served from memory
//! without another read or copy.
//!
//! ## Layout
//! Column family `log`: `[partition id][base offset]` → batch bytes (big values live in blob
//! files). `idx`: same key → a small per-batch index record (timestamps, size). `meta`: topic,
//! partition, segment, producer, group-offset, group-metadata, ACL, SCRAM, client-quota and
//! log-cleaner records, encoded with prost.
//!
//! ## Compaction
//! [`Store::clean`] compacts a partition's sealed segments in place (Kafka's
//! `cleanup.policy=compact`): the latest record of each key stays at its offset, batches are
//! rewritten or deleted under their own keys, and each write replaces whole batches of one
//! segment with its descriptor atomically (see the [`clean`] module for the types).

pub mod archive;
pub mod batch;
mod cache;
pub mod clean;
mod config;
mod error;
mod keys;
mod meta;
mod partition;
pub mod records;
mod rocks;

pub use cache::{CacheStats, Records};
pub use config::{
    StoreConfig, TopicLimits, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PRODUCER_ID_EXPIRATION_MS,
};
pub use error::{StorageError, StorageResult};
/// The benchmark's bare-RocksDB baseline (same options, no engine); not a stable API.
#[doc(hidden)]
pub mod raw {
    pub use crate::rocks::raw::RawDb;
}
pub use rocks::{
    AclBinding, AppendOutcome, BatchAt, ClientQuota, EngineStats, ExportChunk, ExportedBatch,
    GroupMember, GroupMetadata, GroupOffset, PartitionOffsets, ProducerInfo, ReadOutcome,
    ScramCredential, SegmentExport, SegmentInfo, Store, SyncHold, TopicInfo,
};
