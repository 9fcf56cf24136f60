//! Appending to partition logs, their offsets and segments, and truncating them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rocksdb::{ReadOptions, WriteBatch};

use super::{now_ms, Inner, Store, CF_IDX, CF_LOG, CF_META};
use crate::batch::{self, BatchHeader};
use crate::cache::Batch;
use crate::error::{StorageError, StorageResult};
use crate::keys::{self, Tag};
use crate::meta::{BatchIndexRecord, PartitionRecord, ProducerRecord, SegmentRecord};
use crate::partition::{check_sequence, next_producer_state, Partition, PartitionState, SeqCheck};

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The batch repeated one already written by the same idempotent producer; the offsets
    /// are those of the original and nothing new was written.
    pub duplicate: bool,
    /// The timestamp written into the batch when the topic uses LogAppendTime.
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: i64,
    pub high_watermark: i64,
    /// Equal to the high watermark: there are no transactions yet.
    pub last_stable: i64,
    /// Next offset to assign; may be ahead of the high watermark until the syncer runs.
    pub log_end: i64,
}

/// Descriptor of one segment of a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub bytes: u64,
    pub batches: u32,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub created_ms: i64,
    /// Every segment but the last is sealed: no batch will be added to it.
    pub sealed: bool,
}

impl Store {
    /// Makes the read cache keep its own copies of the batches appended at offsets
    /// `first..=last` of a partition. Appended batches are cached as slices of the buffer they
    /// were appended from (no copy on the write path), which keeps that whole buffer alive;
    /// call this when the buffer holds much more than the batches, so that the cache holds
    /// what its budget counts. Takes the cache's lock briefly; does not block on I/O.
    pub fn detach_cached(
        &self,
        topic: &str,
        partition: i32,
        first: i64,
        last: i64,
    ) -> StorageResult<()> {
        if let Some(cache) = &self.inner.cache {
            let p = self.inner.partition(topic, partition)?;
            cache.detach(p.pid, first, last);
        }
        Ok(())
    }

    /// Appends one v2 record batch to a partition; see [`Store::append_batches`].
    pub fn append(
        &self,
        topic: &str,
        partition: i32,
        batch: impl Into<Bytes>,
    ) -> StorageResult<AppendOutcome> {
        self.append_batches(topic, partition, &[batch.into()])
    }

    /// Appends a partition's whole produce payload: one or more v2 record batches, all or
    /// (when any is invalid) none, as Kafka does.
    ///
    /// First validates every batch (magic, length, CRC-32C, record count,
    /// `max.message.bytes`) and the producer sequences across all of them, under the
    /// partition's lock; only then assigns the next offsets and writes each batch with its
    /// index entry, segment descriptor and producer state in one atomic write. Appends to
    /// one partition are ordered; different partitions proceed in parallel. The data is
    /// written but not yet durable: it becomes visible to readers once the high watermark
    /// passes `last_offset` (see [`Store::wait_for_high_watermark`]). When a batch repeats
    /// one of its producer's last 5 batches, nothing is written and the original's offsets
    /// are returned (`duplicate`). The outcome spans from the first batch's base offset to
    /// the last batch's last offset.
    pub fn append_batches(
        &self,
        topic: &str,
        partition: i32,
        batches: &[Bytes],
    ) -> StorageResult<AppendOutcome> {
        if batches.is_empty() {
            return Err(StorageError::InvalidRequest(
                "the payload holds no record batch".into(),
            ));
        }
        let headers = batches
            .iter()
            .map(|b| batch::validate(b))
            .collect::<StorageResult<Vec<BatchHeader>>>()?;
        let p = self.inner.partition(topic, partition)?;
        let mut state = p.lock();
        if state.deleted {
            return Err(StorageError::UnknownTopic(topic.to_string()));
        }
        if let Some(b) = batches
            .iter()
            .find(|b| b.len() > state.limits.max_message_bytes)
        {
            return Err(StorageError::MessageTooLarge {
                size: b.len(),
                max: state.limits.max_message_bytes,
            });
        }
        let now = now_ms();
        if let Some(dup) = check_sequences(&state, &headers, now)? {
            return Ok(AppendOutcome {
                log_start_offset: state.log_start,
                ..dup
            });
        }
        let mut outcome: Option<AppendOutcome> = None;
        for (batch, header) in batches.iter().zip(headers) {
            let one = self.append_locked(&p, &mut state, batch.clone(), header, now)?;
            outcome = Some(match outcome {
                None => one,
                Some(first) => AppendOutcome {
                    last_offset: one.last_offset,
                    ..first
                },
            });
        }
        let log_start = state.log_start;
        drop(state);
        let outcome = outcome.ok_or_else(|| StorageError::InvalidRequest("no batch".into()))?;
        if self.inner.config.fsync {
            self.inner.sync.mark(&p);
        } else {
            p.publish_hw(outcome.last_offset + 1);
        }
        Ok(AppendOutcome {
            log_start_offset: log_start,
            ..outcome
        })
    }

    /// Writes one validated batch at the partition's next offset; the caller holds the
    /// partition's lock and has checked the producer sequence.
    fn append_locked(
        &self,
        p: &Partition,
        state: &mut PartitionState,
        batch: Bytes,
        header: BatchHeader,
        now: i64,
    ) -> StorageResult<AppendOutcome> {
        let base = state.next_offset;
        // The batch is stored as the producer sent it: its base offset (not covered by the
        // CRC) comes from the key and is patched in by the readers, which copy the bytes
        // anyway. That spares the write path a copy of every byte. LogAppendTime rewrites
        // covered fields, so only then is the batch copied here.
        let stamped = state.limits.log_append_time.then(|| {
            let mut v = batch.to_vec();
            batch::set_log_append_time(&mut v, now);
            v
        });
        let log_append_time = stamped.as_ref().map(|_| now);
        let bytes = stamped.as_deref().unwrap_or(&batch[..]);
        let header = BatchHeader {
            base_offset: base,
            first_timestamp: log_append_time.unwrap_or(header.first_timestamp),
            max_timestamp: log_append_time.unwrap_or(header.max_timestamp),
            ..header
        };
        self.inner.write_batch(p, state, &header, bytes, now)?;
        let end = header.last_offset() + 1;
        if let Some(cache) = &self.inner.cache {
            // Under the partition lock, so batches enter in offset order.
            let stored = stamped.map_or(batch, Bytes::from);
            cache.insert(
                p.pid,
                false,
                [(base, end - 1, Batch::patched(stored, base))],
            );
        }
        p.log_end.store(end, Ordering::Release);
        Ok(AppendOutcome {
            base_offset: base,
            last_offset: end - 1,
            duplicate: false,
            log_append_time,
            log_start_offset: state.log_start,
        })
    }

    /// Waits until the partition's high watermark is above `offset` (so `offset` is durable
    /// and readable) or `timeout` passes; returns the high watermark then. No polling: the
    /// syncer wakes the waiters.
    pub async fn wait_for_high_watermark(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> StorageResult<i64> {
        let p = self.inner.partition(topic, partition)?;
        let mut rx = p.hw.subscribe();
        // Timing out, or the partition being dropped (topic deleted) meanwhile, ends the
        // wait too; the caller compares the returned high watermark with `offset`.
        let _ = tokio::time::timeout(timeout, async {
            let _ = rx.wait_for(|hw| *hw > offset).await;
        })
        .await;
        Ok(p.high_watermark())
    }

    pub fn offsets(&self, topic: &str, partition: i32) -> StorageResult<PartitionOffsets> {
        let p = self.inner.partition(topic, partition)?;
        let hw = p.high_watermark();
        Ok(PartitionOffsets {
            log_start: p.log_start.load(Ordering::Acquire),
            high_watermark: hw,
            last_stable: hw,
            log_end: p.log_end(),
        })
    }

    /// The partition's segments, oldest first.
    pub fn segments(&self, topic: &str, partition: i32) -> StorageResult<Vec<SegmentInfo>> {
        let p = self.inner.partition(topic, partition)?;
        let s = p.lock();
        let n = s.segments.len();
        Ok(s.segments
            .iter()
            .enumerate()
            .map(|(i, r)| SegmentInfo {
                base_offset: r.base_offset,
                last_offset: r.last_offset,
                bytes: r.bytes,
                batches: r.batches,
                min_timestamp: r.min_timestamp,
                max_timestamp: r.max_timestamp,
                created_ms: r.created_ms,
                sealed: i + 1 < n,
            })
            .collect())
    }

    /// Moves the log start offset up to `offset` (DeleteRecords, retention) and deletes every
    /// whole segment below it, atomically and durably. Offsets past the high watermark are
    /// out of range; an offset at or below the current log start changes nothing. Returns
    /// the new log start offset.
    pub fn truncate_before(&self, topic: &str, partition: i32, offset: i64) -> StorageResult<i64> {
        let p = self.inner.partition(topic, partition)?;
        let mut s = p.lock();
        let hw = p.high_watermark();
        if offset > hw || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: s.log_start,
                log_end: hw,
            });
        }
        if offset <= s.log_start {
            return Ok(s.log_start);
        }
        let inner = &self.inner;
        let dropped = s
            .segments
            .iter()
            .take_while(|seg| seg.last_offset < offset)
            .count();
        let mut wb = WriteBatch::default();
        if dropped > 0 {
            let end = s
                .segments
                .get(dropped)
                .map_or(s.next_offset, |seg| seg.base_offset);
            for cf in [CF_LOG, CF_IDX] {
                wb.delete_range_cf(
                    inner.cf(cf),
                    keys::log_key(p.pid, 0),
                    keys::log_key(p.pid, end),
                );
            }
            for seg in &s.segments[..dropped] {
                wb.delete_cf(
                    inner.cf(CF_META),
                    keys::pid_key(Tag::Segment, p.pid, seg.base_offset),
                );
            }
        }
        let rec = PartitionRecord {
            topic: p.topic.clone(),
            index: p.index,
            log_start_offset: offset,
            next_offset_floor: s.next_offset,
        };
        wb.put_cf(
            inner.cf(CF_META),
            keys::partition_key(p.pid),
            rec.encode_to_vec(),
        );
        inner.write_synced(wb)?;
        s.segments.drain(..dropped);
        s.log_start = offset;
        p.log_start.store(offset, Ordering::Release);
        if let Some(cache) = &inner.cache {
            cache.forget_before(p.pid, offset);
        }
        Ok(offset)
    }

    /// Compacts the partition's log below its start offset so space freed by
    /// [`Store::truncate_before`] returns to the file system now rather than at the next
    /// natural compaction. Can take long: call it off the request path.
    pub fn reclaim_space(&self, topic: &str, partition: i32) -> StorageResult<()> {
        let p = self.inner.partition(topic, partition)?;
        let start = p.log_start.load(Ordering::Acquire);
        self.inner
            .compact_ranges(&[(keys::log_key(p.pid, 0), keys::log_key(p.pid, start))]);
        Ok(())
    }
}

impl Inner {
    /// A raw iterator over `[pid][from] .. [pid][to]` of a log-keyed family.
    pub(super) fn log_iter(
        &self,
        cf: &str,
        pid: u64,
        from: i64,
        to: i64,
    ) -> rocksdb::DBRawIterator<'_> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::log_key(pid, from).to_vec());
        ro.set_iterate_upper_bound(keys::log_key(pid, to).to_vec());
        // Fetches read sequentially: let the OS read ahead within blob files.
        ro.set_readahead_size(1 << 20);
        // Skip RocksDB's checksum of every value read: each batch carries Kafka's own
        // CRC-32C, which clients verify (librdkafka's check.crcs), and recomputing RocksDB's
        // took ~5% of the broker's CPU when serving consumers. Compactions still verify
        // RocksDB's checksums.
        ro.set_verify_checksums(false);
        self.db.raw_iterator_cf_opt(self.cf(cf), ro)
    }

    /// Writes one batch with its index entry, segment descriptor and producer state in one
    /// atomic write, rolling the segment when it is full or old. Updates `state` only after
    /// the write succeeded.
    fn write_batch(
        &self,
        p: &Partition,
        state: &mut PartitionState,
        h: &BatchHeader,
        bytes: &[u8],
        now: i64,
    ) -> StorageResult<()> {
        let size = bytes.len() as u64;
        let roll = state.segments.last().is_none_or(|seg| {
            seg.last_offset + 1 != h.base_offset
                || seg.bytes + size > state.limits.segment_bytes
                || now.saturating_sub(seg.created_ms) >= state.limits.segment_ms
        });
        let mut seg = match (roll, state.segments.last()) {
            (false, Some(active)) => active.clone(),
            _ => SegmentRecord {
                base_offset: h.base_offset,
                last_offset: h.base_offset - 1,
                bytes: 0,
                min_timestamp: h.first_timestamp.min(h.max_timestamp),
                max_timestamp: h.max_timestamp,
                created_ms: now,
                batches: 0,
            },
        };
        seg.last_offset = h.last_offset();
        seg.bytes += size;
        seg.batches += 1;
        seg.min_timestamp = seg
            .min_timestamp
            .min(h.first_timestamp.min(h.max_timestamp));
        seg.max_timestamp = seg.max_timestamp.max(h.max_timestamp);

        let key = keys::log_key(p.pid, h.base_offset);
        let idx = BatchIndexRecord {
            last_offset_delta: h.last_offset_delta,
            max_timestamp: h.max_timestamp,
            size: bytes.len() as u32,
        };
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_LOG), key, bytes);
        wb.put_cf(self.cf(CF_IDX), key, idx.encode_to_vec());
        wb.put_cf(
            self.cf(CF_META),
            keys::pid_key(Tag::Segment, p.pid, seg.base_offset),
            seg.encode_to_vec(),
        );
        let producer = h.is_idempotent().then(|| {
            let next =
                next_producer_state(state.producers.get(&h.producer_id), h, h.base_offset, now);
            wb.put_cf(
                self.cf(CF_META),
                keys::pid_key(Tag::Producer, p.pid, h.producer_id),
                next.encode_to_vec(),
            );
            next
        });
        self.db.write_opt(wb, &self.write_options(false))?;

        if roll {
            state.segments.push(seg);
        } else if let Some(active) = state.segments.last_mut() {
            *active = seg;
        }
        if let Some(next) = producer {
            state.producers.insert(h.producer_id, next);
        }
        state.next_offset = h.last_offset() + 1;
        Ok(())
    }
}

/// Checks the producer sequences of a whole payload against the partition's producer
/// states, as if each batch were appended in turn (so the second batch of a producer must
/// continue the first). `Some` when a batch repeats one already written: Kafka then answers
/// the whole payload with the original's offsets and writes nothing.
fn check_sequences(
    state: &PartitionState,
    headers: &[BatchHeader],
    now: i64,
) -> StorageResult<Option<AppendOutcome>> {
    let mut pending: Vec<(i64, ProducerRecord)> = Vec::new();
    let mut next = state.next_offset;
    for h in headers {
        if h.is_idempotent() {
            let known = pending
                .iter()
                .rev()
                .find(|(id, _)| *id == h.producer_id)
                .map(|(_, r)| r)
                .or_else(|| state.producers.get(&h.producer_id));
            match check_sequence(known, h)? {
                SeqCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    return Ok(Some(AppendOutcome {
                        base_offset,
                        last_offset,
                        duplicate: true,
                        log_append_time: None,
                        log_start_offset: state.log_start,
                    }))
                }
                SeqCheck::Append => {
                    let after = next_producer_state(known, h, next, now);
                    pending.push((h.producer_id, after));
                }
            }
        }
        next = next.saturating_add(i64::from(h.last_offset_delta) + 1);
    }
    Ok(None)
}
