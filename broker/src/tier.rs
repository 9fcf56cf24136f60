//! Tiered reads: Fetch and ListOffsets below a partition's local log start, served from the
//! archive through three caches.
//!
//! - Manifests, per partition. The broker is the archive's only writer, and its connector
//!   hands every manifest it writes to [`Tier::set_manifest`], so the cached copy is the
//!   archive's; a partition's manifest is read from the store once.
//! - Segment indexes (immutable once written), least recently used first out.
//! - Read-ahead chunks: a segment's `.log` is read in ranged GETs of about
//!   `archive_read_chunk_bytes`, cut at batch boundaries, so that a consumer replaying the
//!   archive costs one GET per chunk rather than one per Fetch; while it reads one chunk, the
//!   next is fetched in the background. Chunks and indexes share `archive_read_cache_mb`, which
//!   bounds what tiered reads hold in memory (beyond the responses being sent).
//!
//! Loads are shared: consumers asking for the same chunk at once wait for one GET.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_storage::archive::{
    Archive, ArchiveIndex, ArchiveManifest, ArchivedSegment, PartitionRef,
};
use strata_storage::{BatchAt, StorageError, Store};
use tokio::sync::OnceCell;
use uuid::Uuid;

type PartitionKey = (Uuid, i32);

/// Store keys of DeleteRecords offsets not yet in manifests: prefix, topic id, partition.
const FLOOR_PREFIX: &[u8] = b"archive-floor/";

fn floor_key((id, partition): PartitionKey) -> Vec<u8> {
    let mut k = FLOOR_PREFIX.to_vec();
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// What the archive holds of a partition at an offset.
pub struct ArchivedRead {
    /// Whole batches from the one containing the offset, in order (slices of cached chunks).
    pub records: Vec<Bytes>,
    /// The first offset the archive holds.
    pub archive_start: i64,
    /// The offset after the last batch returned (the offset asked for when none was).
    pub next_offset: i64,
}

/// The archive as Fetch and ListOffsets read it.
pub struct Tier {
    archive: Archive,
    manifests: Mutex<HashMap<PartitionKey, Arc<ArchiveManifest>>>,
    /// DeleteRecords offsets not yet written to the manifest (the connector does that on its
    /// next pass); reads honour them at once. Kept durably in the store meanwhile.
    floors: Mutex<HashMap<PartitionKey, i64>>,
    indexes: Lru<(Uuid, i32, i64), Arc<ArchiveIndex>>,
    chunks: Lru<(Uuid, i32, i64, u64), Bytes>,
    chunk_bytes: u64,
}

impl Tier {
    /// `cache_bytes` bounds the cached indexes and chunks (each kind gets its share);
    /// `chunk_bytes` is the read-ahead unit.
    pub fn new(archive: Archive, cache_bytes: usize, chunk_bytes: usize) -> Tier {
        let chunk_bytes = chunk_bytes.max(1);
        Tier {
            archive,
            manifests: Mutex::default(),
            floors: Mutex::default(),
            // An index costs ~40 bytes a batch: a tenth of the budget holds the indexes of
            // thousands of segments.
            indexes: Lru::new(cache_bytes / 10),
            // At least two chunks, so that read-ahead never evicts the chunk being read.
            chunks: Lru::new((cache_bytes - cache_bytes / 10).max(2 * chunk_bytes)),
            chunk_bytes: chunk_bytes as u64,
        }
    }

    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// The partition's manifest (cached).
    pub async fn manifest(
        &self,
        p: PartitionRef<'_>,
    ) -> Result<Arc<ArchiveManifest>, StorageError> {
        let key = (p.topic_id, p.partition);
        if let Some(m) = lock(&self.manifests).get(&key) {
            return Ok(m.clone());
        }
        let loaded = Arc::new(self.archive.manifest(p).await?);
        // A manifest the connector set meanwhile is newer than the one just read.
        Ok(lock(&self.manifests).entry(key).or_insert(loaded).clone())
    }

    /// Records the manifest the connector has just written.
    pub fn set_manifest(&self, p: PartitionRef<'_>, m: ArchiveManifest) {
        lock(&self.manifests).insert((p.topic_id, p.partition), Arc::new(m));
    }

    /// Forgets the manifests and DeleteRecords offsets of topics not in `live` (deleted).
    pub fn retain_topics(&self, store: &Store, live: &HashSet<Uuid>) {
        lock(&self.manifests).retain(|(id, _), _| live.contains(id));
        let gone: Vec<PartitionKey> = lock(&self.floors)
            .keys()
            .filter(|(id, _)| !live.contains(id))
            .copied()
            .collect();
        for key in gone {
            if store.delete_kv(&floor_key(key)).is_ok() {
                lock(&self.floors).remove(&key);
            }
        }
    }

    /// Loads the DeleteRecords offsets not yet in manifests (at start-up).
    pub fn load_floors(&self, store: &Store) -> Result<(), StorageError> {
        let mut floors = lock(&self.floors);
        for (k, v) in store.scan_kv(FLOOR_PREFIX)? {
            let parsed = k
                .strip_prefix(FLOOR_PREFIX)
                .filter(|rest| rest.len() == 20)
                .zip(<[u8; 8]>::try_from(v.as_slice()).ok());
            if let Some((rest, value)) = parsed {
                let id = Uuid::from_slice(&rest[..16]).unwrap_or_default();
                let partition = i32::from_be_bytes([rest[16], rest[17], rest[18], rest[19]]);
                floors.insert((id, partition), i64::from_be_bytes(value));
            }
        }
        Ok(())
    }

    /// DeleteRecords on an archived partition: records below `offset` are no longer read
    /// from the archive (from now on, and after a restart); the connector deletes them from
    /// the archive on its next pass.
    pub fn delete_below(
        &self,
        store: &Store,
        p: PartitionRef<'_>,
        offset: i64,
    ) -> Result<(), StorageError> {
        let key = (p.topic_id, p.partition);
        let mut floors = lock(&self.floors);
        if floors.get(&key).is_some_and(|&f| f >= offset) {
            return Ok(());
        }
        store.put_kv(&floor_key(key), &offset.to_be_bytes())?;
        floors.insert(key, offset);
        Ok(())
    }

    /// The DeleteRecords offset of a partition (0: none).
    pub fn floor(&self, p: PartitionRef<'_>) -> i64 {
        lock(&self.floors)
            .get(&(p.topic_id, p.partition))
            .copied()
            .unwrap_or(0)
    }

    /// Drops the durable DeleteRecords offset once the manifest records it.
    pub fn floor_applied(&self, store: &Store, p: PartitionRef<'_>, manifest: &ArchiveManifest) {
        let key = (p.topic_id, p.partition);
        let mut floors = lock(&self.floors);
        if floors
            .get(&key)
            .is_some_and(|&f| f <= manifest.deleted_below)
            && store.delete_kv(&floor_key(key)).is_ok()
        {
            floors.remove(&key);
        }
    }

    /// The first offset the archive holds of a partition (not deleted); `None` when none.
    pub async fn start(&self, p: PartitionRef<'_>) -> Result<Option<i64>, StorageError> {
        Ok(self.manifest(p).await?.start_offset_from(self.floor(p)))
    }

    async fn index(
        &self,
        p: PartitionRef<'_>,
        seg: &ArchivedSegment,
    ) -> Result<Arc<ArchiveIndex>, StorageError> {
        self.indexes
            .get_or_load(
                (p.topic_id, p.partition, seg.base_offset),
                |i| i.batches.len() * 40 + 64,
                async {
                    let index = self.archive.segment_index(p, seg.base_offset).await?;
                    check_index(seg, &index)?;
                    Ok(Arc::new(index))
                },
            )
            .await
    }

    /// The chunk of `seg` holding batch `i`: its first byte's position and its bytes.
    async fn chunk(
        &self,
        p: PartitionRef<'_>,
        seg: &ArchivedSegment,
        index: &ArchiveIndex,
        i: usize,
    ) -> Result<(u64, Bytes), StorageError> {
        let c = index.batches[i].position / self.chunk_bytes;
        let range = chunk_range(index, seg.bytes, c, self.chunk_bytes);
        let start = range.start;
        let bytes = self
            .chunks
            .get_or_load(
                (p.topic_id, p.partition, seg.base_offset, c),
                Bytes::len,
                async {
                    let b = self
                        .archive
                        .segment_range(p, seg.base_offset, range.clone())
                        .await?;
                    if b.len() as u64 != range.end - range.start {
                        return Err(StorageError::Archive(format!(
                            "segment {} of {}/{}: read {} bytes of {range:?}",
                            seg.base_offset,
                            p.topic,
                            p.partition,
                            b.len()
                        )));
                    }
                    Ok(b)
                },
            )
            .await?;
        Ok((start, bytes))
    }

    /// Reads whole archived batches of `p` from the one containing `offset`: at most
    /// `max_bytes`, but at least one batch when `at_least_one` (as Fetch does locally: only
    /// for the first records of a response). `None` when the archive does not hold `offset`.
    /// Starts loading the chunk after the last one read, for the consumer's next Fetch.
    pub async fn read(
        self: &Arc<Self>,
        p: PartitionRef<'_>,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Result<Option<ArchivedRead>, StorageError> {
        let manifest = self.manifest(p).await?;
        let floor = self.floor(p);
        let Some(archive_start) = manifest.start_offset_from(floor) else {
            return Ok(None);
        };
        let Some(seg) = manifest.segment_of(offset).filter(|_| offset >= floor) else {
            return Ok(None);
        };
        let index = self.index(p, seg).await?;
        let first = index.batches.partition_point(|b| b.last_offset < offset);
        if first == index.batches.len() {
            return Ok(None);
        }
        let end_of = |j: usize| index.batches.get(j + 1).map_or(seg.bytes, |b| b.position);
        let start = index.batches[first].position;
        // Batches first..last are taken.
        let mut last = first;
        if !at_least_one && end_of(first) - start > max_bytes as u64 {
            return Ok(Some(ArchivedRead {
                records: Vec::new(),
                archive_start,
                next_offset: offset,
            }));
        }
        while last + 1 < index.batches.len() && end_of(last + 1) - start <= max_bytes as u64 {
            last += 1;
        }
        // One slice per chunk the batches lie in.
        let mut records = Vec::new();
        let mut j = first;
        while j <= last {
            let (chunk_start, chunk) = self.chunk(p, seg, &index, j).await?;
            let chunk_end = chunk_start + chunk.len() as u64;
            let mut k = j;
            while k < last && end_of(k + 1) <= chunk_end {
                k += 1;
            }
            let (from, to) = (index.batches[j].position, end_of(k));
            if to > chunk_end {
                return Err(StorageError::Archive(format!(
                    "segment {} of {}/{}: batch index does not match the chunks",
                    seg.base_offset, p.topic, p.partition
                )));
            }
            records.push(chunk.slice((from - chunk_start) as usize..(to - chunk_start) as usize));
            j = k + 1;
        }
        self.read_ahead(p, &manifest, seg, &index, last);
        Ok(Some(ArchivedRead {
            records,
            archive_start,
            next_offset: index.batches[last].last_offset + 1,
        }))
    }

    /// Loads, in the background, the chunk after the one holding batch `last` of `seg` (the
    /// next segment's first chunk at a segment's end), unless it is cached.
    fn read_ahead(
        self: &Arc<Self>,
        p: PartitionRef<'_>,
        manifest: &Arc<ArchiveManifest>,
        seg: &ArchivedSegment,
        index: &Arc<ArchiveIndex>,
        last: usize,
    ) {
        let c = index.batches[last].position / self.chunk_bytes;
        let next = index
            .batches
            .iter()
            .skip(last + 1)
            .position(|b| b.position / self.chunk_bytes > c)
            .map(|n| last + 1 + n);
        // The segment, the batch whose chunk to load, and the index when it is known.
        let (seg, batch, known) = match next {
            Some(n) => (seg.clone(), n, Some(index.clone())),
            None => match manifest.segment_of(seg.last_offset + 1) {
                Some(following) => (following.clone(), 0, None),
                None => return,
            },
        };
        let chunk = known
            .as_ref()
            .map_or(0, |i| i.batches[batch].position / self.chunk_bytes);
        let (topic, topic_id, partition) = (p.topic.to_string(), p.topic_id, p.partition);
        if self
            .chunks
            .contains(&(topic_id, partition, seg.base_offset, chunk))
        {
            return;
        }
        let tier = self.clone();
        tokio::spawn(async move {
            let p = PartitionRef {
                topic: &topic,
                topic_id,
                partition,
            };
            let index = match known {
                Some(i) => i,
                None => match tier.index(p, &seg).await {
                    Ok(i) => i,
                    Err(_) => return,
                },
            };
            if batch < index.batches.len() {
                // A failure here is the consumer's to see, on its next Fetch.
                let _ = tier.chunk(p, &seg, &index, batch).await;
            }
        });
    }

    /// The first archived batch below `below` whose largest timestamp is at least
    /// `timestamp` (ListOffsets by time for offsets no longer on local disk); `None` when no
    /// archived record below `below` is that recent.
    pub async fn find_by_timestamp(
        &self,
        p: PartitionRef<'_>,
        timestamp: i64,
        below: i64,
    ) -> Result<Option<BatchAt>, StorageError> {
        let manifest = self.manifest(p).await?;
        let floor = self.floor(p).max(manifest.deleted_below);
        for seg in manifest
            .segments
            .iter()
            .take_while(|s| s.base_offset < below)
            .filter(|s| s.max_timestamp >= timestamp && s.last_offset >= floor)
        {
            let index = self.index(p, seg).await?;
            let found = index.batches.iter().position(|b| {
                b.base_offset < below && b.last_offset >= floor && b.max_timestamp >= timestamp
            });
            let Some(i) = found else { continue };
            let (chunk_start, chunk) = self.chunk(p, seg, &index, i).await?;
            let from = (index.batches[i].position - chunk_start) as usize;
            let to = index
                .batches
                .get(i + 1)
                .map_or(seg.bytes, |b| b.position)
                .saturating_sub(chunk_start) as usize;
            let bytes = chunk.get(from..to).ok_or_else(|| {
                StorageError::Archive("batch index does not match the chunks".into())
            })?;
            return Ok(Some(BatchAt {
                base_offset: index.batches[i].base_offset,
                bytes: bytes.to_vec(),
            }));
        }
        Ok(None)
    }
}

/// The byte range of chunk `c` of a segment of `len` bytes: from the first batch starting
/// at or after `c * size` to the first starting at or after `(c + 1) * size` (or the end).
/// Every batch lies in exactly one chunk: the one its first byte falls in.
fn chunk_range(index: &ArchiveIndex, len: u64, c: u64, size: u64) -> std::ops::Range<u64> {
    let at = |bound: u64| {
        let i = index.batches.partition_point(|b| b.position < bound);
        index.batches.get(i).map_or(len, |b| b.position)
    };
    at(c.saturating_mul(size))..at(c.saturating_add(1).saturating_mul(size))
}

/// An index must describe its segment: positions rising from 0 within the segment's bytes,
/// offsets rising within the segment's range. A damaged index is an error, not a panic or a
/// read of the wrong bytes.
fn check_index(seg: &ArchivedSegment, index: &ArchiveIndex) -> Result<(), StorageError> {
    let mut position = 0;
    let mut offset = seg.base_offset;
    for (i, b) in index.batches.iter().enumerate() {
        let ok = (i > 0 || b.position == 0)
            && b.position >= position
            && b.position < seg.bytes.max(1)
            && b.base_offset >= offset
            && b.last_offset >= b.base_offset
            && b.last_offset <= seg.last_offset;
        if !ok {
            return Err(StorageError::Archive(format!(
                "the index of archived segment {} is damaged at batch {i}",
                seg.base_offset
            )));
        }
        position = b.position + 1;
        offset = b.last_offset + 1;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cache of values loaded asynchronously, bounded by their total size (least recently used
/// out first). Callers wanting the same key while it loads wait for the one load; a failed
/// load is forgotten, so the next caller tries again.
struct Lru<K, V> {
    inner: Mutex<LruInner<K, V>>,
    capacity: usize,
}

struct LruInner<K, V> {
    map: HashMap<K, Slot<V>>,
    used: usize,
    tick: u64,
}

struct Slot<V> {
    cell: Arc<OnceCell<V>>,
    /// 0 while loading.
    size: usize,
    used_at: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Lru {
            inner: Mutex::new(LruInner {
                map: HashMap::new(),
                used: 0,
                tick: 0,
            }),
            capacity,
        }
    }

    fn contains(&self, key: &K) -> bool {
        lock(&self.inner).map.contains_key(key)
    }

    async fn get_or_load(
        &self,
        key: K,
        size: impl Fn(&V) -> usize,
        load: impl Future<Output = Result<V, StorageError>>,
    ) -> Result<V, StorageError> {
        let cell = {
            let mut g = lock(&self.inner);
            g.tick += 1;
            let tick = g.tick;
            let slot = g.map.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                size: 0,
                used_at: tick,
            });
            slot.used_at = tick;
            slot.cell.clone()
        };
        let result = cell.get_or_try_init(|| load).await.cloned();
        let mut g = lock(&self.inner);
        let g = &mut *g;
        let same = g.map.get(&key).is_some_and(|s| Arc::ptr_eq(&s.cell, &cell));
        match &result {
            Ok(v) if same => {
                let slot = g.map.get_mut(&key).expect("checked above");
                if slot.size == 0 {
                    slot.size = size(v).max(1);
                    g.used += slot.size;
                    while g.used > self.capacity {
                        let oldest = g
                            .map
                            .iter()
                            .filter(|(_, s)| s.size > 0)
                            .min_by_key(|(_, s)| s.used_at)
                            .map(|(k, _)| k.clone());
                        let Some(k) = oldest else { break };
                        if let Some(s) = g.map.remove(&k) {
                            g.used -= s.size;
                        }
                    }
                }
            }
            Err(_) if same && cell.get().is_none() => {
                g.map.remove(&key);
            }
            _ => {}
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_storage::archive::IndexEntry;

    fn index(positions: &[u64]) -> ArchiveIndex {
        ArchiveIndex {
            batches: positions
                .iter()
                .enumerate()
                .map(|(i, &position)| IndexEntry {
                    base_offset: 10 * i as i64,
                    last_offset: 10 * i as i64 + 9,
                    position,
                    max_timestamp: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn chunks_cut_at_batch_boundaries_and_cover_every_batch_once() {
        let idx = index(&[0, 300, 700, 1500, 1600]);
        assert_eq!(chunk_range(&idx, 2000, 0, 1000), 0..1500);
        assert_eq!(chunk_range(&idx, 2000, 1, 1000), 1500..2000);
        // A window no batch starts in is empty; a batch larger than the window is whole.
        let idx = index(&[0, 3500]);
        assert_eq!(chunk_range(&idx, 4000, 0, 1000), 0..3500);
        assert_eq!(chunk_range(&idx, 4000, 1, 1000), 3500..3500);
        assert_eq!(chunk_range(&idx, 4000, 3, 1000), 3500..4000);
        assert_eq!(chunk_range(&idx, 4000, u64::MAX, 1000), 4000..4000);
    }

    #[test]
    fn damaged_indexes_are_refused() {
        let seg = ArchivedSegment {
            base_offset: 0,
            last_offset: 29,
            bytes: 900,
            batches: 3,
            min_timestamp: 0,
            max_timestamp: 0,
        };
        assert!(check_index(&seg, &index(&[0, 300, 600])).is_ok());
        assert!(
            check_index(&seg, &index(&[0, 600, 300])).is_err(),
            "positions fall"
        );
        assert!(
            check_index(&seg, &index(&[0, 300, 900])).is_err(),
            "past the end"
        );
        assert!(
            check_index(&seg, &index(&[100, 300, 600])).is_err(),
            "gap at the start"
        );
        let mut bad = index(&[0, 300, 600]);
        bad.batches[2].last_offset = 40;
        assert!(
            check_index(&seg, &bad).is_err(),
            "offsets beyond the segment"
        );
    }

    #[tokio::test]
    async fn lru_evicts_least_recently_used_and_shares_loads() {
        let lru: Lru<u32, Bytes> = Lru::new(250);
        let load = |n: usize| async move { Ok(Bytes::from(vec![0u8; n])) };
        lru.get_or_load(1, Bytes::len, load(100)).await.unwrap();
        lru.get_or_load(2, Bytes::len, load(100)).await.unwrap();
        lru.get_or_load(1, Bytes::len, load(999)).await.unwrap();
        lru.get_or_load(3, Bytes::len, load(100)).await.unwrap();
        assert!(lru.contains(&1) && lru.contains(&3) && !lru.contains(&2));
        let failed = lru
            .get_or_load(4, Bytes::len, async {
                Err(StorageError::Archive("down".into()))
            })
            .await;
        assert!(failed.is_err() && !lru.contains(&4));
        let v = lru.get_or_load(4, Bytes::len, load(10)).await.unwrap();
        assert_eq!(v.len(), 10);
    }
}
