//! Log compaction (Kafka's `cleanup.policy=compact`): the cleaner's public types and its
//! record-level work — the key map and the filtering of one batch. The engine's side (which
//! batches, in which writes, crash safety) is in `rocks/clean.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

use crate::batch::{self, BatchHeader, ATTR_CODEC_MASK, ATTR_LOG_APPEND_TIME, HEADER_LEN};
use crate::error::{StorageError, StorageResult};
use crate::records::{self, Record};

/// Expands and packs records sections of compressed batches for the cleaner, which must see
/// every record's key. The storage has no codecs of its own: the broker supplies its bounded
/// decompression (a batch can expand to far more than it occupies).
pub trait RecordsCodec: Send + Sync {
    /// The uncompressed records of a section compressed with `codec` (attribute bits 0-2).
    fn decompress(&self, codec: i16, section: &[u8]) -> Result<Vec<u8>, String>;
    /// `records` compressed with `codec`, in the framing Kafka's clients read.
    fn compress(&self, codec: i16, records: &[u8]) -> Result<Vec<u8>, String>;
}

/// A codec for logs whose batches are all uncompressed (tests and tools): a compressed
/// batch is an error and is left as it is.
pub struct NoCodec;

impl RecordsCodec for NoCodec {
    fn decompress(&self, codec: i16, _: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!("codec {codec} is not available"))
    }

    fn compress(&self, codec: i16, _: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!("codec {codec} is not available"))
    }
}

/// How one cleaning pass of a partition behaves (the topic's compaction configs, resolved
/// by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    /// The wall clock (ms) the pass judges ages by.
    pub now_ms: i64,
    /// `min.compaction.lag.ms`: a segment is cleaned only once its last write is this old.
    pub min_compaction_lag_ms: i64,
    /// `delete.retention.ms`: a tombstone is removed only once it has been in the log this
    /// long (and everything older for its key is gone).
    pub delete_retention_ms: i64,
    /// Cleaned neighbouring segments are merged while the result stays within this many
    /// bytes (`segment.bytes`).
    pub segment_bytes: u64,
    /// Memory for the key map (`log.cleaner.dedupe.buffer.size`): bounds how many distinct
    /// keys one pass dedupes; a log with more dirty keys takes several passes.
    pub key_map_bytes: usize,
}

/// How much of a partition's log awaits cleaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanable {
    /// Below this offset the log is clean (each key at most once).
    pub first_dirty: i64,
    /// Offsets from here on may not be cleaned yet: the active segment, segments younger
    /// than `min.compaction.lag.ms`, data not yet durable.
    pub end: i64,
    /// Bytes of the segments below `first_dirty`, and from there to `end`.
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// When the oldest segment holding cleanable dirty records was created (for
    /// `max.compaction.lag.ms`); `None` when there is none.
    pub oldest_dirty_ms: Option<i64>,
    /// When the oldest segment still holding a tombstone was sealed: its tombstones are due
    /// for removal `delete.retention.ms` after that, dirty data or not.
    pub tombstones_since_ms: Option<i64>,
}

impl Cleanable {
    /// Whether tombstones are due for removal at `now_ms`.
    pub fn tombstones_due(&self, now_ms: i64, delete_retention_ms: i64) -> bool {
        self.tombstones_since_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= delete_retention_ms)
    }

    /// Dirty bytes over all cleanable bytes (Kafka's dirty ratio); 0 for an empty log.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            return 0.0;
        }
        self.dirty_bytes as f64 / total as f64
    }
}

/// What a cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Batch bytes read (building the key map, then cleaning).
    pub bytes_read: u64,
    /// Bytes of the cleaned segments before and after the pass.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records dropped because a later record has their key, because they had no key, or
    /// because they were tombstones past `delete.retention.ms`.
    pub records_superseded: u64,
    pub records_keyless: u64,
    pub tombstones_removed: u64,
    /// Batches left with no record (deleted), and batches rewritten.
    pub batches_removed: u64,
    pub batches_written: u64,
    /// Segments folded into their predecessor.
    pub segments_merged: u64,
    /// The log is clean below this offset after the pass.
    pub cleaned_to: i64,
    /// The key map held every dirty key: nothing cleanable is left dirty.
    pub complete: bool,
    /// The pass was stopped by its caller (shutdown) before it finished.
    pub interrupted: bool,
}

/// A 128-bit hash of a record key, keyed with random seeds per map: two keys collide with
/// probability ~2^-128, and a client cannot pick keys that collide (with a fixed hash such
/// as MD5 one could, and make the cleaner drop another key's records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyHash(u64, u64);

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The map's own hasher: the key is already a random hash, so its first word is the bucket.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Memory one key-map entry costs: the 24-byte (hash, offset) slot and hashbrown's control
/// byte.
const ENTRY_BYTES: usize = 25;

/// The latest offset of each key seen, within a memory budget.
pub(crate) struct KeyMap {
    map: HashMap<KeyHash, i64, BuildHasherDefault<Prehashed>>,
    seeds: (RandomState, RandomState),
    limit: usize,
}

impl KeyMap {
    /// A map whose table never outgrows `budget` bytes: hashbrown's tables have a power-of-two
    /// number of slots, filled to at most 7/8, so the limit is 7/8 of the largest such table
    /// that fits (at least a few entries, so every pass makes progress).
    pub fn with_budget(budget: usize) -> KeyMap {
        let slots = (budget / ENTRY_BYTES).max(8);
        let slots = 1usize << (usize::BITS - 1 - slots.leading_zeros());
        KeyMap {
            map: HashMap::default(),
            seeds: (RandomState::new(), RandomState::new()),
            limit: slots / 8 * 7,
        }
    }

    fn hash(&self, key: &[u8]) -> KeyHash {
        KeyHash(self.seeds.0.hash_one(key), self.seeds.1.hash_one(key))
    }

    /// Whether `n` more keys surely fit.
    pub fn has_room(&self, n: usize) -> bool {
        self.map.len().saturating_add(n) <= self.limit
    }

    pub fn insert(&mut self, key: &[u8], offset: i64) {
        let h = self.hash(key);
        self.map.insert(h, offset);
    }

    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.map.get(&self.hash(key)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// The uncompressed records section of a batch.
pub(crate) fn records_of<'a>(
    bytes: &'a [u8],
    codec: &dyn RecordsCodec,
) -> StorageResult<Cow<'a, [u8]>> {
    let section = bytes.get(HEADER_LEN..).unwrap_or_default();
    let h = batch::read_header(bytes)?;
    match h.attributes & ATTR_CODEC_MASK {
        0 => Ok(Cow::Borrowed(section)),
        c => codec
            .decompress(c, section)
            .map(Cow::Owned)
            .map_err(StorageError::CorruptBatch),
    }
}

/// Why a record leaves the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    Superseded,
    Keyless,
    ExpiredTombstone,
}

/// What filtering one batch gave.
#[derive(Debug, Default)]
pub(crate) struct Filtered {
    /// The new batch; `None` when every record was kept (the batch stays as it is) or none
    /// was (`kept == 0`: the batch goes).
    pub bytes: Option<Vec<u8>>,
    pub kept: u32,
    pub superseded: u32,
    pub keyless: u32,
    pub tombstones: u32,
    /// The new batch's max timestamp.
    pub max_timestamp: i64,
}

/// Applies `verdict` (given each record's offset) to the records of one stored batch whose
/// header is `h` and whose uncompressed records are `section`.
pub(crate) fn filter(
    stored: &[u8],
    h: &BatchHeader,
    section: &[u8],
    codec: &dyn RecordsCodec,
    mut verdict: impl FnMut(i64, &Record<'_>) -> Verdict,
) -> StorageResult<Filtered> {
    let mut out = Filtered {
        max_timestamp: h.max_timestamp,
        ..Filtered::default()
    };
    let mut kept = Vec::new();
    let mut max_ts = i64::MIN;
    let mut total = 0u32;
    for r in records::records(section) {
        let r = r?;
        total += 1;
        let offset = h.base_offset + i64::from(r.offset_delta);
        match verdict(offset, &r) {
            Verdict::Keep => {
                out.kept += 1;
                kept.extend_from_slice(r.bytes);
                max_ts = max_ts.max(h.first_timestamp.saturating_add(r.timestamp_delta));
            }
            Verdict::Superseded => out.superseded += 1,
            Verdict::Keyless => out.keyless += 1,
            Verdict::ExpiredTombstone => out.tombstones += 1,
        }
    }
    if out.kept == total || out.kept == 0 {
        return Ok(out);
    }
    // LogAppendTime batches keep the broker's timestamp; CreateTime ones get the largest of
    // the records left, as Kafka recomputes it.
    if h.attributes & ATTR_LOG_APPEND_TIME == 0 {
        out.max_timestamp = max_ts;
    }
    let c = h.attributes & ATTR_CODEC_MASK;
    let packed = match c {
        0 => kept,
        c => codec
            .compress(c, &kept)
            .map_err(StorageError::CorruptBatch)?,
    };
    let count = i32::try_from(out.kept).unwrap_or(i32::MAX);
    out.bytes = Some(batch::filtered(
        stored,
        c,
        &packed,
        count,
        out.max_timestamp,
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{validate, BatchBuilder};

    #[test]
    fn key_map_stays_within_its_budget() {
        let mut m = KeyMap::with_budget(1000);
        // 1000 / 25 = 40 slots -> 32 -> 28 entries.
        assert!(m.has_room(28));
        assert!(!m.has_room(29));
        for i in 0..28 {
            m.insert(format!("k{i}").as_bytes(), i);
        }
        m.insert(b"k3", 100);
        assert_eq!(m.len(), 28);
        assert_eq!(m.latest(b"k3"), Some(100));
        assert_eq!(m.latest(b"other"), None);
        assert!(KeyMap::with_budget(0).has_room(7));
    }

    #[test]
    fn filtering_keeps_offsets_and_producer_fields() {
        let stored = BatchBuilder::new(1000)
            .producer(9, 2, 40)
            .record(1000, Some(b"a"), b"1")
            .record(1003, Some(b"b"), b"2")
            .record(1001, Some(b"c"), b"3")
            .build();
        let mut h = validate(&stored).unwrap();
        h.base_offset = 50;
        let section = &stored[HEADER_LEN..];
        let f = filter(&stored, &h, section, &NoCodec, |o, _| {
            if o == 51 {
                Verdict::Superseded
            } else {
                Verdict::Keep
            }
        })
        .unwrap();
        assert_eq!((f.kept, f.superseded), (2, 1));
        let out = f.bytes.unwrap();
        let nh = validate(&out).err();
        // A filtered batch has fewer records than its offset span: `validate` (for produced
        // batches) refuses that, `read_header` accepts it.
        assert!(nh.is_some());
        let nh = batch::read_header(&out).unwrap();
        assert_eq!(nh.record_count, 2);
        assert_eq!(nh.last_offset_delta, 2);
        assert_eq!(nh.max_timestamp, 1001);
        assert_eq!(
            (nh.producer_id, nh.producer_epoch, nh.base_sequence),
            (9, 2, 40)
        );
        assert_eq!(nh.crc, crc32c::crc32c(&out[21..]));
        let offsets: Vec<i32> = records::records(&out[HEADER_LEN..])
            .map(|r| r.unwrap().offset_delta)
            .collect();
        assert_eq!(offsets, [0, 2]);

        let none = filter(&stored, &h, section, &NoCodec, |_, _| Verdict::Superseded).unwrap();
        assert!(none.bytes.is_none() && none.kept == 0);
        let all = filter(&stored, &h, section, &NoCodec, |_, _| Verdict::Keep).unwrap();
        assert!(all.bytes.is_none() && all.kept == 3);
    }
}
