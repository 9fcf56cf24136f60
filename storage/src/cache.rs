//! The read cache: recently read batches (base offsets already patched), shared by every
//! reader, so that consumer groups reading the same hot data cost one RocksDB read between
//! them and hand out the same bytes without copying them.
//!
//! Batches below the high watermark never change, and partition ids are never reused, so a
//! cached batch is valid for as long as its partition exists: entries only ever leave by
//! eviction (oldest inserted first, within a byte budget), by a topic delete or by retention.
//! Readers check the log start offset before they look here, so entries below it are never
//! returned even before they are dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// Record batches as a read returns them: chunks to send back to back, each a whole batch
/// (or several), shared with the cache rather than copied.
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

/// A cached batch: its bytes (base offset patched) and its last offset.
struct Entry {
    batch: Bytes,
    last: i64,
}

#[derive(Default)]
struct State {
    /// Per partition id: base offset -> batch.
    parts: HashMap<u64, BTreeMap<i64, Entry>>,
    /// Insertion order, for eviction: (partition id, base offset).
    order: VecDeque<(u64, i64)>,
    bytes: usize,
    hits: u64,
    hit_bytes: u64,
    misses: u64,
    miss_bytes: u64,
}

/// How the cache has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Batches (and their bytes) served from the cache.
    pub hits: u64,
    pub hit_bytes: u64,
    /// Batches (and their bytes) read from RocksDB by reads that used the cache.
    pub misses: u64,
    pub miss_bytes: u64,
    /// Bytes held now.
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

    /// Offers the cached batches of partition `pid` in log order, starting with the one that
    /// contains `from` and stopping at the first offset not cached or when `take` refuses a
    /// batch (given its length). Returns the offset after the last batch taken (`from` when
    /// none was).
    pub fn read(&self, pid: u64, from: i64, mut take: impl FnMut(&Bytes) -> bool) -> i64 {
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
                    if base > next || !take(&e.batch) {
                        break;
                    }
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

    /// Adds batches just read from RocksDB: `(base offset, last offset, bytes)`.
    pub fn insert(&self, pid: u64, batches: impl IntoIterator<Item = (i64, i64, Bytes)>) {
        let mut s = self.lock();
        let s = &mut *s;
        let map = s.parts.entry(pid).or_default();
        for (base, last, batch) in batches {
            s.misses += 1;
            s.miss_bytes += batch.len() as u64;
            if batch.len() > self.budget || map.contains_key(&base) {
                continue;
            }
            s.bytes += batch.len();
            s.order.push_back((pid, base));
            map.insert(base, Entry { batch, last });
        }
        while s.bytes > self.budget {
            let Some((pid, base)) = s.order.pop_front() else {
                break;
            };
            let Some(map) = s.parts.get_mut(&pid) else {
                continue;
            };
            if let Some(e) = map.remove(&base) {
                s.bytes -= e.batch.len();
            }
            if map.is_empty() {
                s.parts.remove(&pid);
            }
        }
    }

    /// Drops partition `pid`'s batches that end before `offset` (all of them for
    /// `i64::MAX`).
    pub fn forget_before(&self, pid: u64, offset: i64) {
        let mut s = self.lock();
        let s = &mut *s;
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
        s.bytes -= dropped.values().map(|e| e.batch.len()).sum::<usize>();
        if map.is_empty() {
            s.parts.remove(&pid);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let s = self.lock();
        CacheStats {
            hits: s.hits,
            hit_bytes: s.hit_bytes,
            misses: s.misses,
            miss_bytes: s.miss_bytes,
            bytes: s.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    fn offsets(c: &ReadCache, pid: u64, from: i64) -> (Vec<usize>, i64) {
        let mut lens = Vec::new();
        let next = c.read(pid, from, |b| {
            lens.push(b.len());
            true
        });
        (lens, next)
    }

    #[test]
    fn serves_contiguous_runs_from_the_batch_containing_the_offset() {
        let c = ReadCache::new(1000).unwrap();
        c.insert(
            1,
            [(0, 9, batch(10)), (10, 19, batch(11)), (30, 39, batch(12))],
        );
        assert_eq!(offsets(&c, 1, 5), (vec![10, 11], 20), "stops at the gap");
        assert_eq!(offsets(&c, 1, 10), (vec![11], 20));
        assert_eq!(offsets(&c, 1, 20), (vec![], 20), "offset not cached");
        assert_eq!(offsets(&c, 1, 35), (vec![12], 40));
        assert_eq!(offsets(&c, 2, 0), (vec![], 0), "other partition");
        let mut n = 0;
        assert_eq!(
            c.read(1, 0, |_| {
                n += 1;
                n < 2
            }),
            10,
            "take refused the second"
        );
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.bytes), (5, 3, 33));
    }

    #[test]
    fn evicts_oldest_first_within_the_budget() {
        let c = ReadCache::new(25).unwrap();
        c.insert(1, [(0, 0, batch(10)), (1, 1, batch(10))]);
        c.insert(2, [(0, 0, batch(10))]);
        assert_eq!(c.stats().bytes, 20);
        assert_eq!(offsets(&c, 1, 0), (vec![], 0), "oldest evicted");
        assert_eq!(offsets(&c, 1, 1).0, vec![10]);
        c.insert(3, [(0, 0, batch(26))]);
        assert_eq!(
            offsets(&c, 3, 0).0,
            Vec::<usize>::new(),
            "larger than the budget"
        );
        c.insert(1, [(1, 1, batch(10))]);
        assert_eq!(
            c.stats().bytes,
            20,
            "a batch already cached is not added twice"
        );
    }

    #[test]
    fn forgets_what_retention_dropped_and_deleted_partitions() {
        let c = ReadCache::new(1000).unwrap();
        c.insert(
            1,
            [(0, 9, batch(10)), (10, 19, batch(10)), (20, 29, batch(10))],
        );
        c.forget_before(1, 15);
        assert_eq!(offsets(&c, 1, 0), (vec![], 0));
        assert_eq!(
            offsets(&c, 1, 15),
            (vec![10, 10], 30),
            "straddling batch kept"
        );
        assert_eq!(c.stats().bytes, 20);
        c.forget_before(1, i64::MAX);
        assert_eq!(c.stats().bytes, 0);
        assert_eq!(offsets(&c, 1, 20), (vec![], 20));
    }
}
