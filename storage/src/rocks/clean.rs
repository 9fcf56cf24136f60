//! The log cleaner's engine side: compacts a partition's sealed segments in place, keeping
//! the latest record of every key (Kafka's `cleanup.policy=compact`).
//!
//! A pass, as in Kafka: build a map of the latest offset of each key in the dirty part of the
//! log (from the checkpoint to the end of the cleanable segments, as far as the map's memory
//! allows), then go through the log from its start to where the map ends and drop every
//! record a later one supersedes, every record without a key, and tombstones older than
//! `delete.retention.ms`. Then the checkpoint moves to where the map ended.
//!
//! - Offsets never change. A batch keeps its key (`[partition][base offset]`), its base
//!   offset and its last offset delta (so the producer's sequence range stays whole); one
//!   left with no record is deleted. A read at an offset inside a gap finds the next batch
//!   (the read path seeks for the batch at or before the offset and skips it when it ends
//!   before).
//! - A segment with anything to drop is rewritten whole (its unchanged batches too, as
//!   Kafka copies a segment), so the old copies of all its batches become garbage that
//!   RocksDB's compaction frees; a segment with nothing to drop is only read.
//! - Crash safety comes from RocksDB's atomic writes: each write replaces some whole batches
//!   of one segment together with that segment's descriptor, so after a crash every batch
//!   is either the original or its cleaned copy, never missing, and the descriptor agrees.
//!   Cleaning is idempotent, so a pass cut short is simply done again.
//! - Only sealed segments wholly below the high watermark are cleaned, never the active one,
//!   so appends and cleaning never touch the same segment. Each write takes the partition's
//!   lock and first checks that retention or a topic delete has not removed the segment.
//! - Producer states live in their own records, not in the log, so idempotence is unaffected.

use std::cell::Cell;
use std::sync::Arc;

use prost::Message;
use rocksdb::WriteBatch;

use super::{Inner, Store, CF_IDX, CF_LOG, CF_META};
use crate::batch::{self, BatchHeader};
use crate::clean::{
    self, CleanOptions, CleanReport, Cleanable, Filtered, KeyMap, RecordsCodec, Verdict,
};
use crate::error::{StorageError, StorageResult};
use crate::keys::{self, Tag};
use crate::meta::{BatchIndexRecord, CleanerRecord, SegmentRecord};
use crate::partition::{Partition, PartitionState};

/// Batch bytes rewritten per atomic write: large enough that the per-write cost (a lock, a
/// memtable insert) is noise, small enough that the partition's lock is held briefly and a
/// write buffers little memory.
const WRITE_CHUNK: usize = 4 << 20;

/// Log bytes a pass must free for it to compact the cleaned range at once: a memtable's
/// worth (the store's default write buffer), so the flush that compaction forces writes no
/// more than the garbage it frees. Measured with `compaction-bench` (10 MB/s of updates to a
/// compacted topic next to 10 MB/s of acks=all produce on 2 cores): compacting after every
/// pass took produce p99 from 3 ms (cleaner off) to 10 ms; with this threshold it is 3-4 ms.
const RECLAIM_NOW_BYTES: u64 = 64 << 20;

/// The caller's IO budget: told the bytes each step read or wrote, it may sleep to hold a
/// rate; `false` stops the pass (shutdown).
pub type IoGate<'a> = dyn FnMut(u64) -> bool + 'a;

/// How far the log can be cleaned, from a partition's state.
fn plan(s: &PartitionState, hw: i64, now: i64, min_lag_ms: i64) -> Cleanable {
    let first_dirty = s.first_dirty.max(s.log_start);
    let mut out = Cleanable {
        first_dirty,
        end: s.segments.first().map_or(first_dirty, |x| x.base_offset),
        tombstones_since_ms: s.tombstones_since,
        ..Cleanable::default()
    };
    for pair in s.segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        // Every write to a sealed segment happened before its successor was created: that
        // bounds the age of its newest record by the broker's own clock.
        if seg.last_offset >= hw || now.saturating_sub(next.created_ms) < min_lag_ms {
            break;
        }
        out.end = seg.last_offset + 1;
        if seg.last_offset < first_dirty {
            out.clean_bytes += seg.bytes;
        } else {
            out.dirty_bytes += seg.bytes;
            out.oldest_dirty_ms.get_or_insert(seg.created_ms);
        }
    }
    out
}

/// What became of one batch in a rewrite.
struct Change {
    base: i64,
    old_size: u64,
    /// The batch to store (the original when unchanged) and its index entry; `None`: the
    /// batch goes.
    new: Option<(Vec<u8>, BatchIndexRecord)>,
    /// Its bytes differ from what readers may have cached.
    changed: bool,
}

impl Store {
    /// How much of the partition's log is clean and how much is dirty and cleanable now
    /// (`now_ms`, with `min.compaction.lag.ms` = `min_lag_ms`). Takes the partition's lock
    /// briefly; no I/O.
    pub fn cleanable(
        &self,
        topic: &str,
        partition: i32,
        now_ms: i64,
        min_lag_ms: i64,
    ) -> StorageResult<Cleanable> {
        let p = self.inner.partition(topic, partition)?;
        let s = p.lock();
        Ok(plan(&s, p.high_watermark(), now_ms, min_lag_ms))
    }

    /// Runs one cleaning pass over the partition (see the module doc). Blocks for as long as
    /// it takes to read and rewrite the log: call it off the async runtime. `io` is told every
    /// step's bytes and may sleep to bound the pass's I/O rate, or stop it. Compressed
    /// batches are expanded and re-packed with their own codec through `codec`; a batch it
    /// cannot expand is kept as it is.
    pub fn clean(
        &self,
        topic: &str,
        partition: i32,
        opts: &CleanOptions,
        codec: &dyn RecordsCodec,
        io: &mut IoGate<'_>,
    ) -> StorageResult<CleanReport> {
        let p = self.inner.partition(topic, partition)?;
        let (plan, segments) = {
            let s = p.lock();
            let plan = plan(
                &s,
                p.high_watermark(),
                opts.now_ms,
                opts.min_compaction_lag_ms,
            );
            (plan, s.segments.clone())
        };
        let mut report = CleanReport {
            cleaned_to: plan.first_dirty,
            ..CleanReport::default()
        };
        let dirty = plan.first_dirty < plan.end;
        if !dirty && !plan.tombstones_due(opts.now_ms, opts.delete_retention_ms) {
            report.complete = true;
            return Ok(report);
        }
        let mut map = KeyMap::with_budget(opts.key_map_bytes);
        let inner = &self.inner;
        // With nothing dirty, the pass only removes the tombstones now due, from the clean
        // part of the log.
        let map_end = if dirty {
            inner.map_keys(
                &p,
                plan.first_dirty,
                plan.end,
                &mut map,
                codec,
                io,
                &mut report,
            )?
        } else {
            Some(plan.first_dirty)
        };
        let Some(map_end) = map_end else {
            report.interrupted = true;
            return Ok(report);
        };
        let mut tombstones_since: Option<i64> = None;
        for (i, seg) in segments.iter().enumerate() {
            if seg.base_offset >= map_end {
                break;
            }
            // `map_end` is at most the active segment's base, so a successor exists.
            let sealed_at = segments.get(i + 1).map_or(i64::MAX, |n| n.created_ms);
            let pass = SegmentPass {
                seg,
                to: (seg.last_offset + 1).min(map_end),
                expire_tombstones: opts.now_ms.saturating_sub(sealed_at)
                    >= opts.delete_retention_ms,
                map: &map,
                codec,
                kept_tombstone: Cell::new(false),
            };
            match inner.clean_segment(&p, &pass, io, &mut report)? {
                Step::Done => {
                    if pass.kept_tombstone.get() {
                        tombstones_since =
                            Some(tombstones_since.map_or(sealed_at, |t| t.min(sealed_at)));
                    }
                }
                Step::Stop => {
                    report.interrupted = true;
                    return Ok(report);
                }
                // Retention or a delete took the segment meanwhile: what is left is newer.
                Step::Gone => {}
            }
        }
        let checkpoint = CleanerRecord {
            first_dirty_offset: map_end.max(plan.first_dirty),
            tombstones_since_ms: tombstones_since,
        };
        inner.finish_pass(&p, checkpoint, opts.segment_bytes, &mut report)?;
        report.cleaned_to = map_end.max(plan.first_dirty);
        report.complete = map_end >= plan.end;
        // Have RocksDB drop the replaced copies now, so the space returns (on this thread:
        // the cleaner's own work, like Kafka's cleaner deleting the old segment files) —
        // when that is worth a memtable flush (a manual compaction flushes the memtable
        // first, which every partition shares); smaller passes leave it to RocksDB's own
        // compactions, which new writes bring about anyway.
        if report.bytes_before.saturating_sub(report.bytes_after) >= RECLAIM_NOW_BYTES {
            let first = segments.first().map_or(0, |s| s.base_offset);
            inner.compact_ranges(&[(keys::log_key(p.pid, first), keys::log_key(p.pid, map_end))]);
        }
        Ok(report)
    }
}

/// One segment's share of a pass.
struct SegmentPass<'a> {
    seg: &'a SegmentRecord,
    /// Clean the batches below this offset (the key map's end may cut the segment).
    to: i64,
    expire_tombstones: bool,
    map: &'a KeyMap,
    codec: &'a dyn RecordsCodec,
    /// Set when a tombstone was kept (not yet due).
    kept_tombstone: Cell<bool>,
}

impl SegmentPass<'_> {
    /// What becomes of `stored` (with header `h`, base offset from its key).
    fn filter(&self, stored: &[u8], h: &BatchHeader) -> StorageResult<Option<Filtered>> {
        if h.is_control() {
            return Ok(None);
        }
        let filtered = clean::records_of(stored, self.codec).and_then(|section| {
            clean::filter(stored, h, &section, self.codec, |offset, r| {
                self.verdict(offset, r)
            })
        });
        match filtered {
            Ok(f) => Ok(Some(f)),
            // Stored bytes a producer sent to a topic that was not compacted then (nothing
            // looked into its records): keep them as they are rather than stop cleaning.
            Err(e) => {
                tracing::warn!(base_offset = h.base_offset, error = %e, "log cleaner keeps a batch it cannot read");
                Ok(None)
            }
        }
    }

    fn verdict(&self, offset: i64, r: &crate::records::Record<'_>) -> Verdict {
        let Some(key) = r.key else {
            return Verdict::Keyless;
        };
        if self.map.latest(key).is_some_and(|latest| latest > offset) {
            Verdict::Superseded
        } else if r.tombstone && self.expire_tombstones {
            Verdict::ExpiredTombstone
        } else {
            if r.tombstone {
                self.kept_tombstone.set(true);
            }
            Verdict::Keep
        }
    }
}

/// How a segment's cleaning ended.
enum Step {
    Done,
    Stop,
    Gone,
}

/// The header of a stored batch, with the base offset its key holds.
fn header_at(key: &[u8], value: &[u8]) -> StorageResult<BatchHeader> {
    let mut h = batch::read_header(value)?;
    h.base_offset = keys::parse_log_key(key).map_or(0, |(_, o)| o);
    Ok(h)
}

impl Inner {
    /// Fills `map` with the latest offset of each key in `[from, to)`, whole batches at a
    /// time, until the map is full. Returns where it stopped (`to` when everything fit), or
    /// `None` when `io` stopped the pass.
    #[allow(clippy::too_many_arguments)]
    fn map_keys(
        &self,
        p: &Partition,
        from: i64,
        to: i64,
        map: &mut KeyMap,
        codec: &dyn RecordsCodec,
        io: &mut IoGate<'_>,
        report: &mut CleanReport,
    ) -> StorageResult<Option<i64>> {
        let mut it = self.log_iter(CF_LOG, p.pid, from, to);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let h = header_at(k, v)?;
            if !map.has_room(h.record_count.max(0) as usize) && map.len() > 0 {
                return Ok(Some(h.base_offset));
            }
            report.bytes_read += v.len() as u64;
            if !h.is_control() {
                // A batch that cannot be expanded is kept whole by the cleaning; its keys
                // are unknown, so it supersedes nothing.
                if let Ok(section) = clean::records_of(v, codec) {
                    for r in crate::records::records(&section) {
                        let Ok(r) = r else { break };
                        if let Some(key) = r.key {
                            map.insert(key, h.base_offset + i64::from(r.offset_delta));
                        }
                    }
                }
            }
            if !io(v.len() as u64) {
                return Ok(None);
            }
            it.next();
        }
        it.status()?;
        Ok(Some(to))
    }

    /// Cleans one segment's batches below `pass.to`: first looks for anything to drop
    /// (stopping at the first), then, if there is, rewrites them all in chunks.
    fn clean_segment(
        &self,
        p: &Partition,
        pass: &SegmentPass<'_>,
        io: &mut IoGate<'_>,
        report: &mut CleanReport,
    ) -> StorageResult<Step> {
        let from = pass.seg.base_offset;
        let mut dirty = false;
        let mut it = self.log_iter(CF_LOG, p.pid, from, pass.to);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let h = header_at(k, v)?;
            report.bytes_read += v.len() as u64;
            let f = pass.filter(v, &h)?;
            if !io(v.len() as u64) {
                return Ok(Step::Stop);
            }
            if f.is_some_and(|f| f.kept != h.record_count.max(0) as u32) {
                dirty = true;
                break;
            }
            it.next();
        }
        it.status()?;
        drop(it);
        if !dirty {
            return Ok(Step::Done);
        }
        report.bytes_before += pass.seg.bytes;
        let mut changes: Vec<Change> = Vec::new();
        let mut pending = 0usize;
        let mut it = self.log_iter(CF_LOG, p.pid, from, pass.to);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let h = header_at(k, v)?;
            report.bytes_read += v.len() as u64;
            let change = match pass.filter(v, &h)? {
                None => unchanged(&h, v),
                Some(f) => {
                    report.records_superseded += u64::from(f.superseded);
                    report.records_keyless += u64::from(f.keyless);
                    report.tombstones_removed += u64::from(f.tombstones);
                    match f.bytes {
                        Some(bytes) => {
                            let idx = BatchIndexRecord {
                                last_offset_delta: h.last_offset_delta,
                                max_timestamp: f.max_timestamp,
                                size: bytes.len() as u32,
                            };
                            Change {
                                base: h.base_offset,
                                old_size: v.len() as u64,
                                new: Some((bytes, idx)),
                                changed: true,
                            }
                        }
                        None if f.kept == 0 => Change {
                            base: h.base_offset,
                            old_size: v.len() as u64,
                            new: None,
                            changed: true,
                        },
                        None => unchanged(&h, v),
                    }
                }
            };
            let written = change.new.as_ref().map_or(0, |(b, _)| b.len());
            pending += written;
            changes.push(change);
            if !io((v.len() + written) as u64) {
                return Ok(Step::Stop);
            }
            if pending >= WRITE_CHUNK {
                if !self.commit(p, pass.seg.base_offset, &mut changes, report)? {
                    return Ok(Step::Gone);
                }
                pending = 0;
            }
            it.next();
        }
        it.status()?;
        if !self.commit(p, pass.seg.base_offset, &mut changes, report)? {
            return Ok(Step::Gone);
        }
        let s = p.lock();
        if let Some(seg) = s.segments.iter().find(|x| x.base_offset == from) {
            report.bytes_after += seg.bytes;
        }
        Ok(Step::Done)
    }

    /// Writes `changes` (batches of the segment based at `segment`) with the segment's new
    /// descriptor in one atomic write, under the partition's lock; `false` (writing nothing)
    /// when the segment is gone.
    fn commit(
        &self,
        p: &Partition,
        segment: i64,
        changes: &mut Vec<Change>,
        report: &mut CleanReport,
    ) -> StorageResult<bool> {
        if changes.is_empty() {
            return Ok(true);
        }
        let mut s = p.lock();
        if s.deleted {
            return Err(StorageError::UnknownTopic(p.topic.clone()));
        }
        let Some(i) = s.segments.iter().position(|x| x.base_offset == segment) else {
            return Ok(false);
        };
        let mut seg = s.segments[i].clone();
        let mut wb = WriteBatch::default();
        for c in changes.iter() {
            let key = keys::log_key(p.pid, c.base);
            seg.bytes = seg.bytes.saturating_sub(c.old_size);
            match &c.new {
                Some((bytes, idx)) => {
                    seg.bytes += bytes.len() as u64;
                    wb.put_cf(self.cf(CF_LOG), key, bytes);
                    if c.changed {
                        wb.put_cf(self.cf(CF_IDX), key, idx.encode_to_vec());
                        report.batches_written += 1;
                    }
                }
                None => {
                    seg.batches = seg.batches.saturating_sub(1);
                    wb.delete_cf(self.cf(CF_LOG), key);
                    wb.delete_cf(self.cf(CF_IDX), key);
                    report.batches_removed += 1;
                }
            }
        }
        wb.put_cf(
            self.cf(CF_META),
            keys::pid_key(Tag::Segment, p.pid, segment),
            seg.encode_to_vec(),
        );
        // Not synced: a later write (the next append's sync, or the checkpoint) makes it
        // durable, and the write-ahead log replays writes in order, so a crash keeps a
        // prefix of the pass, which is a valid log.
        self.db.write_opt(wb, &self.write_options(false))?;
        s.segments[i] = seg;
        drop(s);
        if let Some(cache) = &self.cache {
            let changed: Vec<i64> = changes
                .iter()
                .filter(|c| c.changed)
                .map(|c| c.base)
                .collect();
            cache.forget(p.pid, &changed);
        }
        changes.clear();
        Ok(true)
    }

    /// Ends a pass: writes the checkpoint and merges neighbouring cleaned segments while they
    /// fit in `segment_bytes`, in one atomic write.
    fn finish_pass(
        &self,
        p: &Arc<Partition>,
        checkpoint: CleanerRecord,
        segment_bytes: u64,
        report: &mut CleanReport,
    ) -> StorageResult<()> {
        let cleaned_to = checkpoint.first_dirty_offset;
        let mut s = p.lock();
        if s.deleted {
            return Err(StorageError::UnknownTopic(p.topic.clone()));
        }
        let mut wb = WriteBatch::default();
        let meta = self.cf(CF_META);
        let mut merged: Vec<SegmentRecord> = Vec::with_capacity(s.segments.len());
        let last = s.segments.len().saturating_sub(1);
        for (i, seg) in s.segments.iter().enumerate() {
            let foldable = i < last && seg.last_offset < cleaned_to;
            match merged.last_mut() {
                Some(prev)
                    if foldable
                        && prev.last_offset < cleaned_to
                        && prev.last_offset + 1 == seg.base_offset
                        && prev.bytes + seg.bytes <= segment_bytes =>
                {
                    prev.last_offset = seg.last_offset;
                    prev.bytes += seg.bytes;
                    prev.batches += seg.batches;
                    prev.min_timestamp = prev.min_timestamp.min(seg.min_timestamp);
                    prev.max_timestamp = prev.max_timestamp.max(seg.max_timestamp);
                    wb.put_cf(
                        meta,
                        keys::pid_key(Tag::Segment, p.pid, prev.base_offset),
                        prev.encode_to_vec(),
                    );
                    wb.delete_cf(meta, keys::pid_key(Tag::Segment, p.pid, seg.base_offset));
                    report.segments_merged += 1;
                }
                _ => merged.push(seg.clone()),
            }
        }
        wb.put_cf(meta, keys::cleaner_key(p.pid), checkpoint.encode_to_vec());
        self.db.write_opt(wb, &self.write_options(false))?;
        s.segments = merged;
        s.first_dirty = cleaned_to;
        s.tombstones_since = checkpoint.tombstones_since_ms;
        Ok(())
    }
}

/// A batch kept as it is (rewritten with the same bytes, so its old copy becomes garbage).
fn unchanged(h: &BatchHeader, stored: &[u8]) -> Change {
    Change {
        base: h.base_offset,
        old_size: stored.len() as u64,
        new: Some((
            stored.to_vec(),
            BatchIndexRecord {
                last_offset_delta: h.last_offset_delta,
                max_timestamp: h.max_timestamp,
                size: stored.len() as u32,
            },
        )),
        changed: false,
    }
}
