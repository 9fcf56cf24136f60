//! Reading partition logs: fetches (through the read cache) and timestamp look-ups.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::{Inner, Store, CF_IDX, CF_LOG};
use crate::batch;
use crate::cache::{Batch, CacheStats, ReadCache, Records};
use crate::error::{StorageError, StorageResult};
use crate::keys;
use crate::meta::{BatchIndexRecord, SegmentRecord};
use crate::partition::Partition;

/// Whole batches returned by a read, in log order, with the partition's offsets at the time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    pub records: Records,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// The offset after the last batch returned (the offset read from when none was).
    pub next_offset: i64,
}

/// One stored batch and its base offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAt {
    pub base_offset: i64,
    pub bytes: Vec<u8>,
}

impl Store {
    /// Reads whole batches from the one containing `from` onwards, up to `max_bytes` — but
    /// at least one batch when `at_least_one`, however large — and never at or past the
    /// high watermark. `from` below the log start or past the log end is
    /// [`StorageError::OffsetOutOfRange`]; `from` at the high watermark gives no records.
    /// Batches come from the read cache while it has them (in order, from the one containing
    /// `from`), the rest from RocksDB, which then go into the cache; either way each chunk
    /// of the result is whole batches with their real base offsets.
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> StorageResult<ReadOutcome> {
        let p = self.inner.partition(topic, partition)?;
        let hw = p.high_watermark();
        let log_start = p.log_start.load(Ordering::Acquire);
        let mut out = ReadOutcome {
            records: Records::default(),
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: log_start,
            next_offset: from,
        };
        if from < log_start || from > p.log_end() {
            return Err(StorageError::OffsetOutOfRange {
                offset: from,
                log_start,
                log_end: p.log_end(),
            });
        }
        if from >= hw {
            return Ok(out);
        }
        let mut limit = Limit {
            max_bytes,
            at_least_one,
            taken: 0,
            full: false,
        };
        let mut next = from;
        if let Some(cache) = &self.inner.cache {
            next = cache.read(p.pid, from, hw, &mut out.records, |len| limit.admits(len));
            out.next_offset = next;
        }
        if limit.full || next >= hw {
            return Ok(out);
        }
        // The rest comes from RocksDB: each batch copied once, into a buffer of its own size
        // (shared with the cache).
        let mut read = Vec::new();
        let mut it = self.inner.log_iter(CF_LOG, p.pid, 0, hw);
        it.seek_for_prev(keys::log_key(p.pid, next));
        if !it.valid() {
            it.seek_to_first();
        }
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            // The stored header holds the producer's base offset; the key holds the real one.
            let base = keys::parse_log_key(key).map_or(0, |(_, o)| o);
            let last = base + i64::from(batch::read_header(value)?.last_offset_delta);
            if last >= next {
                if !limit.admits(value.len()) {
                    break;
                }
                let mut copy = value.to_vec();
                batch::patch_offset_and_epoch(&mut copy, base, 0);
                let copy = Bytes::from(copy);
                if self.inner.cache.is_some() {
                    read.push((base, last, Batch::Whole(copy.clone())));
                }
                out.records.push(copy);
                out.next_offset = last + 1;
                if limit.full {
                    break;
                }
            }
            it.next();
        }
        it.status()?;
        if let Some(cache) = &self.inner.cache {
            cache.insert(p.pid, true, read);
        }
        Ok(out)
    }

    /// How the read cache has done (all zeros when it is off).
    pub fn read_cache_stats(&self) -> CacheStats {
        self.inner
            .cache
            .as_ref()
            .map(ReadCache::stats)
            .unwrap_or_default()
    }

    /// The first batch (below the high watermark, ending at or after both the log start
    /// and `from`) whose max timestamp is >= `timestamp`. The offset Kafka's ListOffsets
    /// wants — the first record with timestamp >= target — lies in this batch, and every
    /// record of earlier batches is older, also when CreateTime timestamps are not
    /// monotonic; unless the matching records of this batch lie below the log start (a
    /// batch cut by DeleteRecords), when the caller searches again from the batch's end.
    /// `None` when no record is that recent.
    pub fn find_batch_by_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        from: i64,
    ) -> StorageResult<Option<BatchAt>> {
        let p = self.inner.partition(topic, partition)?;
        let (hw, first, start) = {
            let s = p.lock();
            let hw = p.high_watermark();
            let first = s.log_start.max(from);
            let seg = s.segments.iter().find(|s| {
                s.max_timestamp >= timestamp && s.base_offset < hw && s.last_offset >= first
            });
            match seg {
                Some(seg) => (hw, first, seg.base_offset),
                None => return Ok(None),
            }
        };
        self.inner.find_batch(&p, start, hw, |base, idx| {
            base + i64::from(idx.last_offset_delta) >= first && idx.max_timestamp >= timestamp
        })
    }

    /// The first batch holding the partition's largest timestamp (for ListOffsets
    /// MAX_TIMESTAMP); `None` when the partition is empty.
    pub fn find_max_timestamp_batch(
        &self,
        topic: &str,
        partition: i32,
    ) -> StorageResult<Option<BatchAt>> {
        let p = self.inner.partition(topic, partition)?;
        let (hw, start, max) = {
            let s = p.lock();
            let hw = p.high_watermark();
            let mut best: Option<&SegmentRecord> = None;
            for seg in s.segments.iter().filter(|s| s.base_offset < hw) {
                if best.is_none_or(|b| seg.max_timestamp > b.max_timestamp) {
                    best = Some(seg);
                }
            }
            match best {
                Some(b) => (hw, b.base_offset, b.max_timestamp),
                None => return Ok(None),
            }
        };
        self.inner
            .find_batch(&p, start, hw, |_, idx| idx.max_timestamp >= max)
    }
}

/// A read's byte limits: whole batches up to `max_bytes`, but at least one batch when
/// `at_least_one` (clients depend on getting a batch larger than their limit).
struct Limit {
    max_bytes: usize,
    at_least_one: bool,
    taken: usize,
    /// No further batch is taken.
    full: bool,
}

impl Limit {
    /// Whether a batch of `len` bytes is taken (and counted).
    fn admits(&mut self, len: usize) -> bool {
        let fits = self.taken + len <= self.max_bytes;
        if !(fits || self.at_least_one && self.taken == 0) {
            self.full = true;
            return false;
        }
        self.full = !fits;
        self.taken += len;
        true
    }
}

impl Inner {
    /// Scans the batch index from `from` below `to` and returns the first batch `pick`
    /// accepts, read from the log.
    fn find_batch(
        &self,
        p: &Arc<Partition>,
        from: i64,
        to: i64,
        pick: impl Fn(i64, &BatchIndexRecord) -> bool,
    ) -> StorageResult<Option<BatchAt>> {
        let mut it = self.log_iter(CF_IDX, p.pid, from, to);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let idx = BatchIndexRecord::decode(v)?;
            let base = keys::parse_log_key(k).map_or(0, |(_, o)| o);
            if pick(base, &idx) {
                let mut bytes = self.db.get_cf(self.cf(CF_LOG), k)?.ok_or_else(|| {
                    StorageError::Io(format!("batch at {base} is indexed but missing"))
                })?;
                batch::patch_offset_and_epoch(&mut bytes, base, 0);
                return Ok(Some(BatchAt {
                    base_offset: base,
                    bytes,
                }));
            }
            it.next();
        }
        it.status()?;
        Ok(None)
    }
}
