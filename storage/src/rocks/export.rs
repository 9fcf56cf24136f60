//! Exporting a sealed segment for the archive tier: in chunks of bounded size (uploads of
//! large segments), or as one byte run (small segments, tests).

use super::{Store, CF_LOG};
use crate::batch;
use crate::error::{StorageError, StorageResult};
use crate::keys;
use crate::SegmentInfo;

/// One batch's place in an exported segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Byte position of the batch in the exported segment (from the segment's first byte,
    /// whatever chunk it arrives in).
    pub position: u64,
    pub max_timestamp: i64,
}

/// A sealed segment's batches, byte for byte as consumers receive them (base offsets
/// patched in), one after the other, with an index entry per batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentExport {
    pub info: SegmentInfo,
    pub data: bytes::Bytes,
    pub index: Vec<ExportedBatch>,
}

/// A run of whole consecutive batches of a segment being exported, and their index entries
/// (positions counted from the segment's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportChunk {
    pub data: bytes::Bytes,
    pub batches: Vec<ExportedBatch>,
}

impl Store {
    /// The sealed segment of `topic`/`partition` that starts at `base_offset`; fails with
    /// [`StorageError::InvalidRequest`] when there is none. Reads metadata only.
    pub fn sealed_segment(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> StorageResult<SegmentInfo> {
        self.segments(topic, partition)?
            .into_iter()
            .find(|s| s.base_offset == base_offset && s.sealed)
            .ok_or_else(|| {
                StorageError::InvalidRequest(format!(
                    "{topic}/{partition} has no sealed segment at {base_offset}"
                ))
            })
    }

    /// Reads the sealed segment of `topic`/`partition` that starts at `base_offset`, for
    /// upload to the archive, handing it to `sink` in chunks of whole batches, in order: each
    /// chunk holds at least `chunk_bytes` (the last one: what is left) unless one batch alone
    /// is larger, so memory is bounded by `chunk_bytes` plus one batch, not by the segment.
    /// An error from `sink` stops the export and is returned. Reads RocksDB directly (a
    /// scan: blocks on disk; call it from a blocking thread) and leaves the read cache alone,
    /// so archiving does not push out what consumers read. Fails with
    /// [`StorageError::InvalidRequest`] when no sealed segment starts there. Returns the
    /// segment's descriptor.
    pub fn export_segment_chunks(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
        chunk_bytes: usize,
        mut sink: impl FnMut(ExportChunk) -> StorageResult<()>,
    ) -> StorageResult<SegmentInfo> {
        let info = self.sealed_segment(topic, partition, base_offset)?;
        let p = self.inner.partition(topic, partition)?;
        let capacity = chunk_bytes.min(usize::try_from(info.bytes).unwrap_or(usize::MAX));
        let mut data = Vec::with_capacity(capacity);
        let mut batches = Vec::new();
        // Bytes of the segment handed to `sink` so far.
        let mut sent = 0u64;
        let end = info.last_offset.saturating_add(1);
        let mut it = self.inner.log_iter(CF_LOG, p.pid, info.base_offset, end);
        it.seek(keys::log_key(p.pid, info.base_offset));
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let base = keys::parse_log_key(key).map_or(0, |(_, o)| o);
            let header = batch::read_header(value)?;
            let at = data.len();
            data.extend_from_slice(value);
            batch::patch_offset_and_epoch(&mut data[at..], base, 0);
            batches.push(ExportedBatch {
                base_offset: base,
                last_offset: base + i64::from(header.last_offset_delta),
                position: sent + at as u64,
                max_timestamp: header.max_timestamp,
            });
            if data.len() >= chunk_bytes {
                sent += data.len() as u64;
                let full = std::mem::replace(&mut data, Vec::with_capacity(capacity));
                sink(ExportChunk {
                    data: full.into(),
                    batches: std::mem::take(&mut batches),
                })?;
            }
            it.next();
        }
        it.status()?;
        if !data.is_empty() {
            sink(ExportChunk {
                data: data.into(),
                batches,
            })?;
        }
        Ok(info)
    }

    /// The whole sealed segment at `base_offset` in memory (see
    /// [`Store::export_segment_chunks`], which the archive connector uses instead: this one
    /// holds the whole segment).
    pub fn export_segment(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> StorageResult<SegmentExport> {
        // With no chunk limit, everything arrives as one chunk (none for an empty segment).
        let mut whole = None;
        let info = self.export_segment_chunks(topic, partition, base_offset, usize::MAX, |c| {
            whole = Some(c);
            Ok(())
        })?;
        let (data, index) = whole.map_or_else(Default::default, |c| (c.data, c.batches));
        Ok(SegmentExport { info, data, index })
    }
}
