//! The read cache: recently appended and recently read batches, ready to send (base offsets
//! patched), shared by every reader, so that consumer groups reading the same hot data cost
//! at most one RocksDB read between them and hand out the same bytes without copying them.
//!
//! Batches enter when they are appended (as the producer sent them, sharing the request's
//! buffer: only their first 16 bytes, which hold the base offset and leader epoch, are
//! copied and patched) and when a read had to go to RocksDB for them. Readers get nothing at
//! or above the high watermark, so a batch appended but not yet durable stays invisible.
//!
//! Partition ids are never reused, and a stored batch changes only when the log cleaner
//! compacts it, so a cached batch is valid for as long as its partition exists: entries
//! leave by eviction (oldest inserted first, within a byte budget), by a topic delete, by
//! retention, and when the cleaner rewrites or removes them. Readers check
//! the log start offset before they look here, so entries below it are never returned even
//! before they are dropped. An appended batch keeps the buffer its request was read into
//! alive while cached, so the memory held can exceed the budget by the rest of those
//! buffers (request headers, other small requests read with it, batches that failed).
//!
//! Eviction is oldest first within two classes, appended batches and batches reads brought
//! in: when the budget is exceeded, the class holding more than half of it gives way. So a
//! consumer replaying old data can take the whole cache while nothing is produced, but never
//! pushes out the newest half-budget of appended data that tail readers need, and a burst of
//! produce cannot flush out what replaying groups are sharing either.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::batch;

/// Record batches as a read returns them: chunks to send back to back (together, whole
/// batches; a cached appended batch is two chunks, its patched header and the rest), shared
/// with the cache rather than copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Records {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in log order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// All bytes in one buffer (a copy when there is more than one chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }

    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }
}

/// A cached batch, ready to send: the patched copy a read made, or the patched header plus
/// the rest of the batch as appended.
#[derive(Debug, Clone)]
pub(crate) enum Batch {
    Whole(Bytes),
    Split { head: Bytes, body: Bytes },
}

impl Batch {
    /// A batch as stored (base offset and leader epoch as the producer sent them), patched
    /// without copying more than its header.
    pub fn patched(stored: Bytes, base_offset: i64) -> Batch {
        if stored.len() < HEAD {
            return Batch::Whole(stored); // not a batch: appends validate first
        }
        let mut head = [0u8; HEAD];
        head.copy_from_slice(&stored[..HEAD]);
        batch::patch_offset_and_epoch(&mut head, base_offset, 0);
        Batch::Split {
            head: Bytes::copy_from_slice(&head),
            body: stored.slice(HEAD..),
        }
    }

    /// The same batch in buffers of its own, not slices of whatever buffer it came in.
    fn detached(&self) -> Batch {
        match self {
            Batch::Whole(b) => Batch::Whole(Bytes::copy_from_slice(b)),
            Batch::Split { head, body } => Batch::Split {
                head: head.clone(),
                body: Bytes::copy_from_slice(body),
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            Batch::Whole(b) => b.len(),
            Batch::Split { head, body } => head.len() + body.len(),
        }
    }

    fn push_to(&self, out: &mut Records) {
        match self {
            Batch::Whole(b) => out.push(b.clone()),
            Batch::Split { head, body } => {
                out.push(head.clone());
                out.push(body.clone());
            }
        }
    }
}

/// Bytes of a batch header up to and including the leader epoch (the fields patched).
const HEAD: usize = 16;

struct Entry {
    batch: Batch,
    last: i64,
    /// Eviction class: [`APPENDED`] or [`READ`].
    class: usize,
}

/// Eviction classes (indexes of `State::order` and `State::class_bytes`).
const APPENDED: usize = 0;
const READ: usize = 1;

/// Memory an entry costs beyond its batch bytes (map node, entry, buffer headers, the
/// 16-byte patched header, the eviction queue), counted against the budget so that many
/// tiny batches cannot hold much more memory than the budget says.
const ENTRY_OVERHEAD: usize = 160;

impl Entry {
    fn cost(&self) -> usize {
        self.batch.len() + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct State {
    /// Per partition id: base offset -> batch.
    parts: HashMap<u64, BTreeMap<i64, Entry>>,
    /// Insertion order per class, for eviction: (partition id, base offset).
    order: [VecDeque<(u64, i64)>; 2],
    /// Budget used per class.
    class_bytes: [usize; 2],
    hits: u64,
    hit_bytes: u64,
    misses: u64,
    miss_bytes: u64,
}

impl State {
    /// Accounts for entries just removed from partition `pid`'s map.
    fn dropped(&mut self, pid: u64, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            self.class_bytes[e.class] -= e.cost();
        }
        if self.parts.get(&pid).is_some_and(BTreeMap::is_empty) {
            self.parts.remove(&pid);
        }
        // The eviction queues still name the dropped batches; rebuild them when those are
        // most of them, so that they stay proportional to what is cached.
        let live: usize = self.parts.values().map(BTreeMap::len).sum();
        if self.order[APPENDED].len() + self.order[READ].len() > 2 * live + 1024 {
            let parts = &self.parts;
            for (class, order) in self.order.iter_mut().enumerate() {
                order.retain(|(pid, base)| {
                    parts
                        .get(pid)
                        .and_then(|m| m.get(base))
                        .is_some_and(|e| e.class == class)
                });
            }
        }
    }
}

/// How the cache has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Batches (and their bytes) served from the cache.
    pub hits: u64,
    pub hit_bytes: u64,
    /// Batches (and their bytes) that reads had to get from RocksDB.
    pub misses: u64,
    pub miss_bytes: u64,
    /// Memory held now, by the budget's count (batch bytes plus a fixed cost per batch).
    pub bytes: usize,
}

pub(crate) struct ReadCache {
    budget: usize,
    state: Mutex<State>,
}

impl ReadCache {
    /// A cache holding at most `budget` bytes of batches; `None` when the budget is 0.
    pub fn new(budget: usize) -> Option<ReadCache> {
        (budget > 0).then(|| ReadCache {
            budget,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to `out` the cached batches of partition `pid` in log order, starting with the
    /// one that contains `from` and stopping at the first offset not cached, at the high
    /// watermark `hw`, or when `admit` refuses a batch (given its length). Returns the
    /// offset after the last batch taken (`from` when none was).
    pub fn read(
        &self,
        pid: u64,
        from: i64,
        hw: i64,
        out: &mut Records,
        mut admit: impl FnMut(usize) -> bool,
    ) -> i64 {
        let mut s = self.lock();
        let mut next = from;
        let (mut hits, mut hit_bytes) = (0, 0);
        if let Some(map) = s.parts.get(&pid) {
            let start = map
                .range(..=from)
                .next_back()
                .filter(|(_, e)| e.last >= from)
                .map(|(&base, _)| base);
            if let Some(start) = start {
                for (&base, e) in map.range(start..) {
                    if base > next || e.last >= hw || !admit(e.batch.len()) {
                        break;
                    }
                    e.batch.push_to(out);
                    hits += 1;
                    hit_bytes += e.batch.len() as u64;
                    next = e.last + 1;
                }
            }
        }
        s.hits += hits;
        s.hit_bytes += hit_bytes;
        next
    }

    /// Adds batches read from RocksDB (`read`: counted as misses) or just appended:
    /// `(base offset, last offset, batch)`.
    pub fn insert(
        &self,
        pid: u64,
        read: bool,
        batches: impl IntoIterator<Item = (i64, i64, Batch)>,
    ) {
        let mut s = self.lock();
        let s = &mut *s;
        let class = if read { READ } else { APPENDED };
        let map = s.parts.entry(pid).or_default();
        for (base, last, batch) in batches {
            if read {
                s.misses += 1;
                s.miss_bytes += batch.len() as u64;
            }
            let entry = Entry { batch, last, class };
            if entry.cost() > self.budget || map.contains_key(&base) {
                continue;
            }
            s.class_bytes[class] += entry.cost();
            s.order[class].push_back((pid, base));
            map.insert(base, entry);
        }
        if map.is_empty() {
            s.parts.remove(&pid);
        }
        while s.class_bytes[APPENDED] + s.class_bytes[READ] > self.budget {
            // The class over half the budget gives way (one must be, as the sum is over).
            let class = if s.class_bytes[READ] > self.budget / 2 {
                READ
            } else {
                APPENDED
            };
            let Some((pid, base)) = s.order[class].pop_front() else {
                break;
            };
            let Some(map) = s.parts.get_mut(&pid) else {
                continue;
            };
            // A queue may still name a batch that left and came back in the other class.
            if map.get(&base).is_some_and(|e| e.class == class) {
                if let Some(e) = map.remove(&base) {
                    s.class_bytes[class] -= e.cost();
                }
            }
            if map.is_empty() {
                s.parts.remove(&pid);
            }
        }
    }

    /// Gives partition `pid`'s cached batches based within `first..=last` buffers of their own.
    pub fn detach(&self, pid: u64, first: i64, last: i64) {
        let mut s = self.lock();
        if let Some(map) = s.parts.get_mut(&pid) {
            for e in map.range_mut(first..=last).map(|(_, e)| e) {
                e.batch = e.batch.detached();
            }
        }
    }

    /// Drops partition `pid`'s batches that end before `offset` (all of them for
    /// `i64::MAX`).
    pub fn forget_before(&self, pid: u64, offset: i64) {
        let mut s = self.lock();
        let Some(map) = s.parts.get_mut(&pid) else {
            return;
        };
        let keep = map.split_off(&offset);
        let mut dropped = std::mem::replace(map, keep);
        // The batch that straddles `offset` stays.
        if let Some((&base, e)) = dropped.last_key_value() {
            if e.last >= offset {
                let e = dropped.remove(&base);
                map.extend(e.map(|e| (base, e)));
            }
        }
        s.dropped(pid, dropped.into_values());
    }

    /// Drops partition `pid`'s batches based at `bases` (the log cleaner rewrote or removed
    /// them).
    pub fn forget(&self, pid: u64, bases: &[i64]) {
        let mut s = self.lock();
        let Some(map) = s.parts.get_mut(&pid) else {
            return;
        };
        let dropped: Vec<Entry> = bases.iter().filter_map(|b| map.remove(b)).collect();
        s.dropped(pid, dropped);
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            hits: s.hits,
            hit_bytes: s.hit_bytes,
            misses: s.misses,
            miss_bytes: s.miss_bytes,
            bytes: s.class_bytes[APPENDED] + s.class_bytes[READ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        Batch::Whole(Bytes::from(vec![7u8; n]))
    }

    fn offsets(c: &ReadCache, pid: u64, from: i64) -> (Vec<usize>, i64) {
        let mut out = Records::default();
        let next = c.read(pid, from, i64::MAX, &mut out, |_| true);
        (out.chunks().iter().map(Bytes::len).collect(), next)
    }

    #[test]
    fn serves_contiguous_runs_from_the_batch_containing_the_offset() {
        let c = ReadCache::new(1000).unwrap();
        c.insert(
            1,
            true,
            [(0, 9, batch(10)), (10, 19, batch(11)), (30, 39, batch(12))],
        );
        assert_eq!(offsets(&c, 1, 5), (vec![10, 11], 20), "stops at the gap");
        assert_eq!(offsets(&c, 1, 10), (vec![11], 20));
        assert_eq!(offsets(&c, 1, 20), (vec![], 20), "offset not cached");
        assert_eq!(offsets(&c, 1, 35), (vec![12], 40));
        assert_eq!(offsets(&c, 2, 0), (vec![], 0), "other partition");
        let mut n = 0;
        let mut out = Records::default();
        let next = c.read(1, 0, i64::MAX, &mut out, |_| {
            n += 1;
            n < 2
        });
        assert_eq!((next, out.len()), (10, 10), "admit refused the second");
        let mut out = Records::default();
        assert_eq!(
            c.read(1, 0, 19, &mut out, |_| true),
            10,
            "stops at the high watermark"
        );
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.bytes), (6, 3, 33 + 3 * ENTRY_OVERHEAD));
    }

    #[test]
    fn appended_batches_are_patched_and_not_counted_as_misses() {
        let c = ReadCache::new(10_000).unwrap();
        let mut stored = vec![0xffu8; 61];
        stored[16..].fill(3);
        c.insert(
            1,
            false,
            [(40, 44, Batch::patched(Bytes::from(stored), 40))],
        );
        let mut out = Records::default();
        assert_eq!(c.read(1, 42, 45, &mut out, |_| true), 45);
        let bytes = out.to_bytes();
        assert_eq!(&bytes[..8], &40i64.to_be_bytes(), "base offset patched");
        assert_eq!(&bytes[8..12], &[0xff; 4], "length untouched");
        assert_eq!(&bytes[12..16], &0i32.to_be_bytes(), "leader epoch patched");
        assert!(bytes[16..].iter().all(|&b| b == 3));
        assert_eq!((c.stats().misses, c.stats().hits), (0, 1));
    }

    #[test]
    fn evicts_oldest_first_within_the_budget() {
        let one = 10 + ENTRY_OVERHEAD;
        let c = ReadCache::new(2 * one + 5).unwrap();
        c.insert(1, true, [(0, 0, batch(10)), (1, 1, batch(10))]);
        c.insert(2, true, [(0, 0, batch(10))]);
        assert_eq!(c.stats().bytes, 2 * one);
        assert_eq!(offsets(&c, 1, 0), (vec![], 0), "oldest evicted");
        assert_eq!(offsets(&c, 1, 1).0, vec![10]);
        c.insert(3, true, [(0, 0, batch(2 * one))]);
        assert_eq!(
            offsets(&c, 3, 0).0,
            Vec::<usize>::new(),
            "larger than the budget"
        );
        c.insert(1, true, [(1, 1, batch(10))]);
        assert_eq!(
            c.stats().bytes,
            2 * one,
            "a batch already cached is not added twice"
        );
    }

    #[test]
    fn forgets_what_retention_dropped_and_deleted_partitions() {
        let c = ReadCache::new(1000).unwrap();
        c.insert(
            1,
            true,
            [(0, 9, batch(10)), (10, 19, batch(10)), (20, 29, batch(10))],
        );
        c.forget_before(1, 15);
        assert_eq!(offsets(&c, 1, 0), (vec![], 0));
        assert_eq!(
            offsets(&c, 1, 15),
            (vec![10, 10], 30),
            "straddling batch kept"
        );
        assert_eq!(c.stats().bytes, 2 * (10 + ENTRY_OVERHEAD));
        c.forget_before(1, i64::MAX);
        assert_eq!(c.stats().bytes, 0);
        // Forgotten batches leave the eviction queue too, once they are most of it.
        let c = ReadCache::new(1 << 20).unwrap();
        c.insert(2, true, (0..3000).map(|i| (i, i, batch(1))));
        assert_eq!(c.lock().order[READ].len(), 3000);
        c.forget_before(2, i64::MAX);
        assert!(c.lock().order[READ].is_empty());
        assert_eq!(offsets(&c, 1, 20), (vec![], 20));
    }

    #[test]
    fn replays_do_not_push_out_the_newest_appended_batches() {
        let one = 10 + ENTRY_OVERHEAD;
        let c = ReadCache::new(4 * one).unwrap();
        c.insert(1, false, [(100, 100, batch(10)), (101, 101, batch(10))]);
        c.insert(1, true, (0..10).map(|i| (i, i, batch(10))));
        assert_eq!(offsets(&c, 1, 100), (vec![10, 10], 102), "the tail stays");
        assert_eq!(
            offsets(&c, 1, 8),
            (vec![10, 10], 10),
            "reads keep the other half"
        );
        assert_eq!(offsets(&c, 1, 0).0, Vec::<usize>::new());
        // With nothing appended, reads may use the whole budget; appends then take back
        // their half, oldest reads first.
        let c = ReadCache::new(4 * one).unwrap();
        c.insert(1, true, (0..4).map(|i| (i, i, batch(10))));
        assert_eq!(offsets(&c, 1, 0).0.len(), 4);
        c.insert(
            1,
            false,
            [(4, 4, batch(10)), (5, 5, batch(10)), (6, 6, batch(10))],
        );
        assert_eq!(offsets(&c, 1, 0).0, Vec::<usize>::new());
        assert_eq!(
            offsets(&c, 1, 2),
            (vec![10, 10], 4),
            "the newest reads keep half"
        );
        assert_eq!(offsets(&c, 1, 4), (vec![], 4), "the oldest append gave way");
        assert_eq!(offsets(&c, 1, 5), (vec![10, 10], 7));
        assert_eq!(c.stats().bytes, 4 * one);
    }
}
