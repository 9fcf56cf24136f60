//! Uploading one segment in bounded memory: chunks of whole batches go out as they are
//! exported; a segment larger than one part becomes a multipart upload with a bounded number
//! of parts in flight, a smaller one a single put. The manifest, written last, commits it.

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::{archive_err, Archive, ArchiveManifest, ArchivedSegment, IndexEntry, PartitionRef};
use crate::error::{StorageError, StorageResult};
use crate::rocks::ExportChunk;
use crate::SegmentInfo;

/// How one upload uses memory and the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Size of a multipart upload's parts; a segment up to this size is sent in one put.
    /// S3 wants parts of at least 5 MiB (but the last).
    pub part_bytes: usize,
    /// Parts sent at once per upload; the next chunk waits for one of them to finish.
    pub parts_in_flight: usize,
}

impl Default for UploadLimits {
    /// 8 MiB parts, 2 in flight: with the exporter's chunks of the same size, one upload
    /// holds at most about 5 × 8 MiB (two parts in flight, one being filled, the chunk being
    /// written, the one the exporter builds meanwhile), whatever the segment's size; two parts
    /// in flight keep the link busy while the next part is read from disk.
    fn default() -> Self {
        UploadLimits {
            part_bytes: 8 << 20,
            parts_in_flight: 2,
        }
    }
}

enum Body {
    /// Chunks held until they add up to more than a part.
    Buffered {
        chunks: Vec<Bytes>,
        bytes: usize,
    },
    Multipart(WriteMultipart),
    Done,
}

/// One segment on its way to the archive: [`Archive::begin_upload`], [`SegmentUpload::write`]
/// the chunks in order, then [`SegmentUpload::finish`] (or [`SegmentUpload::abort`]). A
/// failed `write` or `finish` has aborted the multipart upload already. Dropped unfinished,
/// it aborts the multipart upload in the background.
pub struct SegmentUpload {
    archive: Archive,
    dir: String,
    base_offset: i64,
    manifest: ArchiveManifest,
    limits: UploadLimits,
    body: Body,
    /// Bytes written so far: the position of the next batch.
    written: u64,
    /// The `.index` as encoded so far (an `ArchiveIndex` is its entries, each encoded as
    /// field 1, one after the other): ~20 bytes per batch instead of a decoded list.
    index: Vec<u8>,
    batches: u32,
}

impl Archive {
    /// Starts uploading the segment at `base_offset` of `p`. `None` when the manifest already
    /// holds it (an earlier attempt got that far); an error when it would overlap what the
    /// archive holds.
    pub async fn begin_upload(
        &self,
        p: PartitionRef<'_>,
        base_offset: i64,
        limits: UploadLimits,
    ) -> StorageResult<Option<SegmentUpload>> {
        let manifest = self.manifest(p).await?;
        if manifest
            .segments
            .iter()
            .any(|s| s.base_offset == base_offset)
        {
            return Ok(None);
        }
        if base_offset < manifest.next_offset() {
            return Err(StorageError::Archive(format!(
                "segment at {base_offset} overlaps the archive, which ends at {}",
                manifest.next_offset()
            )));
        }
        Ok(Some(SegmentUpload {
            archive: self.clone(),
            dir: Archive::dir(p),
            base_offset,
            manifest,
            limits: UploadLimits {
                part_bytes: limits.part_bytes.max(1),
                parts_in_flight: limits.parts_in_flight.max(1),
            },
            body: Body::Buffered {
                chunks: Vec::new(),
                bytes: 0,
            },
            written: 0,
            index: Vec::new(),
            batches: 0,
        }))
    }
}

impl SegmentUpload {
    fn key(&self, ext: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}/{:020}.{ext}", self.dir, self.base_offset))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the `.log` goes up as a multipart upload (it outgrew one part).
    pub fn is_multipart(&self) -> bool {
        matches!(self.body, Body::Multipart(_))
    }

    /// Adds the next chunk (whole batches, positions counted from the segment's start, as
    /// [`crate::Store::export_segment_chunks`] makes them). Waits while `parts_in_flight`
    /// parts are being sent.
    pub async fn write(&mut self, chunk: ExportChunk) -> StorageResult<()> {
        for b in &chunk.batches {
            if b.position < self.written || b.position >= self.written + chunk.data.len() as u64 {
                self.abort_body().await;
                return Err(StorageError::Archive(format!(
                    "batch {} at position {} is not in the chunk at {}",
                    b.base_offset, b.position, self.written
                )));
            }
            prost::encoding::message::encode(
                1,
                &IndexEntry {
                    base_offset: b.base_offset,
                    last_offset: b.last_offset,
                    position: b.position,
                    max_timestamp: b.max_timestamp,
                },
                &mut self.index,
            );
        }
        self.batches = self.batches.saturating_add(chunk.batches.len() as u32);
        self.written += chunk.data.len() as u64;
        let result = self.push(chunk.data).await;
        if result.is_err() {
            self.abort_body().await;
        }
        result
    }

    async fn push(&mut self, data: Bytes) -> StorageResult<()> {
        let parts_in_flight = self.limits.parts_in_flight;
        match &mut self.body {
            Body::Buffered { chunks, bytes } => {
                *bytes += data.len();
                chunks.push(data);
                if *bytes <= self.limits.part_bytes {
                    return Ok(());
                }
                // Larger than one part: a multipart upload from here on.
                let chunks = std::mem::take(chunks);
                let key = self.key("log");
                let upload = self
                    .archive
                    .store
                    .put_multipart(&key)
                    .await
                    .map_err(|e| archive_err("start multipart upload", e))?;
                let mut w = WriteMultipart::new_with_chunk_size(upload, self.limits.part_bytes);
                for c in chunks {
                    w.put(c);
                }
                self.body = Body::Multipart(w);
            }
            Body::Multipart(w) => {
                w.wait_for_capacity(parts_in_flight)
                    .await
                    .map_err(|e| archive_err("upload part", e))?;
                w.put(data);
            }
            Body::Done => {
                return Err(StorageError::Archive("write after the upload ended".into()));
            }
        }
        Ok(())
    }

    /// Sends what is left of the `.log`, then the `.index`, then the manifest naming the
    /// segment (the commit point). `info` describes the exported segment. Returns the
    /// manifest as written.
    pub async fn finish(mut self, info: &SegmentInfo) -> StorageResult<ArchiveManifest> {
        let log = self.key("log");
        match std::mem::replace(&mut self.body, Body::Done) {
            Body::Buffered { chunks, .. } => {
                let payload: PutPayload = chunks.into_iter().collect();
                self.archive
                    .store
                    .put(&log, payload)
                    .await
                    .map_err(|e| archive_err("put segment", e))?;
            }
            // Aborts the upload itself when it fails.
            Body::Multipart(w) => {
                w.finish()
                    .await
                    .map_err(|e| archive_err("complete multipart upload", e))?;
            }
            Body::Done => {
                return Err(StorageError::Archive(
                    "finish after the upload ended".into(),
                ));
            }
        }
        let index = std::mem::take(&mut self.index);
        self.archive
            .store
            .put(&self.key("index"), PutPayload::from(index))
            .await
            .map_err(|e| archive_err("put index", e))?;
        let mut manifest = std::mem::take(&mut self.manifest);
        manifest.segments.push(ArchivedSegment {
            base_offset: self.base_offset,
            last_offset: info.last_offset,
            bytes: self.written,
            batches: self.batches,
            min_timestamp: info.min_timestamp,
            max_timestamp: info.max_timestamp,
        });
        manifest.end_offset = manifest.next_offset();
        self.archive.put_manifest_in(&self.dir, &manifest).await?;
        Ok(manifest)
    }

    /// Gives up: a multipart upload under way is aborted (its parts deleted). Nothing the
    /// manifest names is touched.
    pub async fn abort(mut self) {
        self.abort_body().await;
    }

    async fn abort_body(&mut self) {
        if let Body::Multipart(w) = std::mem::replace(&mut self.body, Body::Done) {
            if let Err(e) = w.abort().await {
                tracing::debug!(error = %e, "aborting a multipart upload failed");
            }
        }
    }
}

impl Drop for SegmentUpload {
    fn drop(&mut self) {
        if let Body::Multipart(w) = std::mem::replace(&mut self.body, Body::Done) {
            // Cancelled mid-upload (shutdown): abort in the background when a runtime is
            // still there; otherwise the store's lifecycle rules must clean up the parts.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}
