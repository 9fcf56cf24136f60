//! Exporting a sealed segment as one byte run, for the archive tier.

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
    /// Byte position of the batch in [`SegmentExport::data`].
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

impl Store {
    /// Reads the sealed segment of `topic`/`partition` that starts at `base_offset`, for
    /// upload to the archive. Reads RocksDB directly (a scan: may block on disk) and leaves
    /// the read cache alone, so archiving does not push out what consumers read. Fails with
    /// [`StorageError::InvalidRequest`] when no sealed segment starts there.
    pub fn export_segment(
        &self,
        topic: &str,
        partition: i32,
        base_offset: i64,
    ) -> StorageResult<SegmentExport> {
        let info = self
            .segments(topic, partition)?
            .into_iter()
            .find(|s| s.base_offset == base_offset && s.sealed)
            .ok_or_else(|| {
                StorageError::InvalidRequest(format!(
                    "{topic}/{partition} has no sealed segment at {base_offset}"
                ))
            })?;
        let p = self.inner.partition(topic, partition)?;
        let mut data = Vec::with_capacity(usize::try_from(info.bytes).unwrap_or(0));
        let mut index = Vec::with_capacity(info.batches as usize);
        let end = info.last_offset.saturating_add(1);
        let mut it = self.inner.log_iter(CF_LOG, p.pid, info.base_offset, end);
        it.seek(keys::log_key(p.pid, info.base_offset));
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let base = keys::parse_log_key(key).map_or(0, |(_, o)| o);
            let header = batch::read_header(value)?;
            let position = data.len() as u64;
            data.extend_from_slice(value);
            batch::patch_offset_and_epoch(&mut data[position as usize..], base, 0);
            index.push(ExportedBatch {
                base_offset: base,
                last_offset: base + i64::from(header.last_offset_delta),
                position,
                max_timestamp: header.max_timestamp,
            });
            it.next();
        }
        it.status()?;
        Ok(SegmentExport {
            info,
            data: data.into(),
            index,
        })
    }
}
