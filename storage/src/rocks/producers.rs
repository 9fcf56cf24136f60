//! Expiry of idempotent-producer state (Kafka's `producer.id.expiration.ms`): a producer
//! that has not written to a partition for that long is forgotten there, in memory and on
//! disk, so the state does not grow with every producer session ever seen.

use std::sync::Arc;

use rocksdb::WriteBatch;

use super::{now_ms, Inner, Store, CF_META};
use crate::error::StorageResult;
use crate::keys::{self, Tag};
use crate::meta::ProducerRecord;
use crate::partition::Partition;

/// Whether a producer whose last write was at `last_write_ms` has expired at `now_ms`.
pub(super) fn expired(last_write_ms: i64, now_ms: i64, expiration_ms: i64) -> bool {
    now_ms.saturating_sub(last_write_ms) >= expiration_ms
}

/// An idempotent producer's state on one partition (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub epoch: i16,
    /// Sequence number of the last record written; -1 when none is remembered.
    pub last_sequence: i32,
    /// Offset of the last record written; -1 when none is remembered.
    pub last_offset: i64,
    /// When the producer last wrote here (the broker's clock, ms since the epoch).
    pub last_write_ms: i64,
}

impl Store {
    /// The idempotent producers the partition remembers (those that wrote to it within
    /// `producer_id_expiration_ms`), by producer id. Takes the partition's lock briefly;
    /// does not block on I/O.
    pub fn producers(&self, topic: &str, partition: i32) -> StorageResult<Vec<ProducerInfo>> {
        let p = self.inner.partition(topic, partition)?;
        let state = p.lock();
        let mut out: Vec<ProducerInfo> = state
            .producers
            .iter()
            .map(|(&id, r)| {
                let last = r.batches.last();
                ProducerInfo {
                    producer_id: id,
                    epoch: i16::try_from(r.epoch).unwrap_or(-1),
                    last_sequence: last.map_or(-1, |b| b.last_seq),
                    last_offset: last.map_or(-1, |b| b.last_offset),
                    last_write_ms: r.last_timestamp,
                }
            })
            .collect();
        out.sort_by_key(|i| i.producer_id);
        Ok(out)
    }

    /// Forgets every producer that has not written to a partition for
    /// `producer_id_expiration_ms` (see [`crate::StoreConfig`]) as of now; returns how many
    /// producer states were dropped. A forgotten producer is treated as new: its next batch
    /// is accepted at any sequence, as Kafka does. Blocks: writes to RocksDB (unsynced: a
    /// state lost in a crash is dropped again at the next open).
    pub fn expire_producers(&self) -> StorageResult<usize> {
        self.expire_producers_at(now_ms())
    }

    /// [`Store::expire_producers`] as of `now_ms`.
    pub fn expire_producers_at(&self, now_ms: i64) -> StorageResult<usize> {
        let partitions: Vec<Arc<Partition>> = self
            .inner
            .read_catalog()
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect();
        let mut dropped = 0;
        for p in partitions {
            dropped += self.inner.expire_partition_producers(&p, now_ms)?;
        }
        Ok(dropped)
    }
}

impl Inner {
    fn expire_partition_producers(&self, p: &Partition, now_ms: i64) -> StorageResult<usize> {
        let expiration = self.config.producer_id_expiration_ms;
        // Under the partition's lock: an append cannot write a producer's state between
        // the decision and the delete.
        let mut state = p.lock();
        if state.deleted {
            return Ok(0);
        }
        let gone: Vec<i64> = state
            .producers
            .iter()
            .filter(|(_, r)| expired(r.last_timestamp, now_ms, expiration))
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let mut wb = WriteBatch::default();
        for id in &gone {
            wb.delete_cf(self.cf(CF_META), keys::pid_key(Tag::Producer, p.pid, *id));
        }
        self.db.write_opt(wb, &self.write_options(false))?;
        for id in &gone {
            state.producers.remove(id);
        }
        Ok(gone.len())
    }

    /// Drops the on-disk states in `expired` (found expired while opening the store).
    pub(super) fn delete_expired_producers(&self, expired: &[(u64, i64)]) -> StorageResult<()> {
        if expired.is_empty() {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        for (pid, id) in expired {
            wb.delete_cf(self.cf(CF_META), keys::pid_key(Tag::Producer, *pid, *id));
        }
        tracing::info!(states = expired.len(), "dropped expired producer states");
        Ok(self.db.write_opt(wb, &self.write_options(false))?)
    }
}

/// Whether a stored producer state is still live when opening the store.
pub(super) fn live_at_open(rec: &ProducerRecord, now_ms: i64, expiration_ms: i64) -> bool {
    !expired(rec.last_timestamp, now_ms, expiration_ms)
}
