//! The archive tier: sealed segments copied to object storage (the `object_store` crate), so
//! that data outlives local retention.
//!
//! ## Layout (stable; tools and restores read it)
//! Under the archive's root, per partition, `<topic>/<topic id>/<partition>/`:
//! - `<base offset, 20 digits>.log`: the segment's record batches, byte for byte as consumers
//!   receive them (base offsets set), one after the other;
//! - `<base offset, 20 digits>.index`: an [`ArchiveIndex`] (prost): per batch its base and last
//!   offset, byte position in the `.log` and largest timestamp;
//! - `manifest`: an [`ArchiveManifest`] (prost): the segments archived, in offset order.
//!
//! and per topic `<topic>/<topic id>/topic`: a [`TopicDescriptor`] (prost: name, id,
//! partition count, configs, creation time), so the archive describes itself
//! ([`Archive::list`]) and a topic can be rebuilt from it after the local disk is lost.
//!
//! A segment is uploaded as `.log`, then `.index`, then the manifest naming it: the manifest
//! is the commit point. An upload cut short (crash, store down) leaves objects the manifest
//! does not name (or an unfinished multipart upload, aborted when possible); the retry writes
//! the same keys again, so nothing is duplicated.
//!
//! The root is a local directory (`file:///path`) or an S3 bucket and prefix
//! (`s3://bucket/prefix`): see [`Location`].

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prost::Message;

use crate::error::{StorageError, StorageResult};
use crate::rocks::{ExportChunk, SegmentExport};

mod location;
mod upload;

pub use location::Location;
pub use upload::{SegmentUpload, UploadLimits};

mod listing;
pub use listing::{ArchivedPartition, ArchivedTopic, TopicDescriptor};

/// Per batch of an archived segment.
#[derive(Clone, PartialEq, Message)]
pub struct IndexEntry {
    #[prost(int64, tag = "1")]
    pub base_offset: i64,
    #[prost(int64, tag = "2")]
    pub last_offset: i64,
    #[prost(uint64, tag = "3")]
    pub position: u64,
    #[prost(int64, tag = "4")]
    pub max_timestamp: i64,
}

/// `<base offset>.index`.
#[derive(Clone, PartialEq, Message)]
pub struct ArchiveIndex {
    #[prost(message, repeated, tag = "1")]
    pub batches: Vec<IndexEntry>,
}

/// One archived segment, as the manifest lists it.
#[derive(Clone, PartialEq, Message)]
pub struct ArchivedSegment {
    #[prost(int64, tag = "1")]
    pub base_offset: i64,
    #[prost(int64, tag = "2")]
    pub last_offset: i64,
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
    #[prost(uint32, tag = "4")]
    pub batches: u32,
    #[prost(int64, tag = "5")]
    pub min_timestamp: i64,
    #[prost(int64, tag = "6")]
    pub max_timestamp: i64,
}

/// A partition's `manifest`.
#[derive(Clone, PartialEq, Message)]
pub struct ArchiveManifest {
    #[prost(message, repeated, tag = "1")]
    pub segments: Vec<ArchivedSegment>,
    /// The offset after the last one ever archived: it stays when retention has deleted
    /// every archived segment, so the connector does not upload anything twice.
    #[prost(int64, tag = "2")]
    pub end_offset: i64,
    /// Records below this offset are deleted (DeleteRecords), also where a segment holding
    /// them is still archived because it holds later records too.
    #[prost(int64, tag = "3")]
    pub deleted_below: i64,
}

impl ArchiveManifest {
    /// The offset after the last archived one (0 when nothing was ever archived).
    pub fn next_offset(&self) -> i64 {
        self.segments
            .last()
            .map_or(0, |s| s.last_offset + 1)
            .max(self.end_offset)
    }

    /// The first offset the archive holds (not deleted); `None` when it holds none.
    pub fn start_offset(&self) -> Option<i64> {
        self.start_offset_from(self.deleted_below)
    }

    /// The first offset the archive holds at or after `floor` (not deleted).
    pub fn start_offset_from(&self, floor: i64) -> Option<i64> {
        let floor = floor.max(self.deleted_below);
        let i = self.segments.partition_point(|s| s.last_offset < floor);
        self.segments.get(i).map(|s| s.base_offset.max(floor))
    }

    /// The archived segment holding `offset` (none below `deleted_below`).
    pub fn segment_of(&self, offset: i64) -> Option<&ArchivedSegment> {
        if offset < self.deleted_below {
            return None;
        }
        let i = self.segments.partition_point(|s| s.last_offset < offset);
        self.segments.get(i).filter(|s| s.base_offset <= offset)
    }

    /// How many segments from the front lie wholly below `offset`.
    pub fn segments_below(&self, offset: i64) -> usize {
        self.segments.partition_point(|s| s.last_offset < offset)
    }

    /// Bytes archived.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// Which partition: the topic's name and id (a topic deleted and created again under the same
/// name archives elsewhere) and the partition index.
#[derive(Debug, Clone, Copy)]
pub struct PartitionRef<'a> {
    pub topic: &'a str,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
}

/// An archive location.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archive({})", self.url)
    }
}

fn archive_err(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Archive(format!("{what}: {e}"))
}

impl Archive {
    /// An archive on any object store (tests use `object_store::memory::InMemory`).
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Archive {
        Archive {
            store,
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn dir(p: PartitionRef<'_>) -> String {
        format!("{}/{}/{}", p.topic, p.topic_id.simple(), p.partition)
    }

    /// The key of a segment's `.log` (`ext` "log") or `.index` (`ext` "index").
    pub fn segment_key(p: PartitionRef<'_>, base_offset: i64, ext: &str) -> Path {
        Path::from(format!("{}/{base_offset:020}.{ext}", Self::dir(p)))
    }

    fn manifest_key(p: PartitionRef<'_>) -> Path {
        Path::from(format!("{}/manifest", Self::dir(p)))
    }

    /// The partition's manifest; empty when nothing is archived.
    pub async fn manifest(&self, p: PartitionRef<'_>) -> StorageResult<ArchiveManifest> {
        let key = Self::manifest_key(p);
        match self.store.get(&key).await {
            Ok(r) => {
                let bytes = r
                    .bytes()
                    .await
                    .map_err(|e| archive_err("read manifest", e))?;
                ArchiveManifest::decode(bytes).map_err(|e| archive_err("decode manifest", e))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(ArchiveManifest::default()),
            Err(e) => Err(archive_err("get manifest", e)),
        }
    }

    /// Uploads a sealed segment held in memory (see [`Archive::begin_upload`] for one that
    /// arrives in chunks): `.log`, `.index`, then the manifest with it appended. A segment the
    /// manifest already holds (an earlier attempt got that far) is not added again. Returns
    /// the manifest as written.
    pub async fn upload(
        &self,
        p: PartitionRef<'_>,
        seg: &SegmentExport,
    ) -> StorageResult<ArchiveManifest> {
        let Some(mut upload) = self
            .begin_upload(p, seg.info.base_offset, UploadLimits::default())
            .await?
        else {
            return self.manifest(p).await;
        };
        // A shared handle on the exported bytes, not a copy of the segment.
        upload
            .write(ExportChunk {
                data: seg.data.clone(),
                batches: seg.index.clone(),
            })
            .await?;
        upload.finish(&seg.info).await
    }

    async fn put_manifest(&self, p: PartitionRef<'_>, m: &ArchiveManifest) -> StorageResult<()> {
        self.put_manifest_in(&Self::dir(p), m).await
    }

    /// Writes the manifest of the partition whose objects are under `dir`.
    async fn put_manifest_in(&self, dir: &str, m: &ArchiveManifest) -> StorageResult<()> {
        self.store
            .put(
                &Path::from(format!("{dir}/manifest")),
                PutPayload::from(m.encode_to_vec()),
            )
            .await
            .map_err(|e| archive_err("put manifest", e))?;
        Ok(())
    }

    /// Deletes the first `count` segments of the partition's archive (retention) and the
    /// records below `deleted_below` (DeleteRecords; segments wholly below it go too): the
    /// manifest without them is written first (the commit point: readers stop seeing them),
    /// then their objects are deleted. A crash in between leaves objects no manifest names,
    /// which [`Archive::delete_orphans`] removes. Returns the manifest as written.
    pub async fn expire(
        &self,
        p: PartitionRef<'_>,
        mut manifest: ArchiveManifest,
        count: usize,
        deleted_below: i64,
    ) -> StorageResult<ArchiveManifest> {
        let deleted_below = deleted_below.max(manifest.deleted_below);
        let count = count
            .max(manifest.segments_below(deleted_below))
            .min(manifest.segments.len());
        if count == 0 && deleted_below == manifest.deleted_below {
            return Ok(manifest);
        }
        manifest.end_offset = manifest.next_offset();
        manifest.deleted_below = deleted_below;
        let gone: Vec<ArchivedSegment> = manifest.segments.drain(..count).collect();
        self.put_manifest(p, &manifest).await?;
        for s in &gone {
            self.delete_segment_objects(p, s.base_offset).await?;
        }
        Ok(manifest)
    }

    async fn delete_segment_objects(&self, p: PartitionRef<'_>, base: i64) -> StorageResult<()> {
        for ext in ["log", "index"] {
            let key = Self::segment_key(p, base, ext);
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(archive_err(&format!("delete {key}"), e)),
            }
        }
        Ok(())
    }

    /// Deletes the segment objects of a partition that lie below the manifest's first
    /// segment (left by a retention pass cut short); returns how many were deleted.
    pub async fn delete_orphans(
        &self,
        p: PartitionRef<'_>,
        manifest: &ArchiveManifest,
    ) -> StorageResult<usize> {
        use futures::TryStreamExt;
        let below = manifest.start_offset().unwrap_or(manifest.next_offset());
        let dir = Path::from(Self::dir(p));
        let objects: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| archive_err("list partition archive", e))?;
        let mut deleted = 0;
        for o in objects {
            let name = o.location.filename().unwrap_or_default();
            let base = name
                .split_once('.')
                .filter(|(_, ext)| matches!(*ext, "log" | "index"))
                .and_then(|(b, _)| b.parse::<i64>().ok());
            if base.is_some_and(|b| b < below) {
                match self.store.delete(&o.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(archive_err(&format!("delete {}", o.location), e)),
                }
            }
        }
        Ok(deleted)
    }

    async fn get(&self, key: &Path) -> StorageResult<Bytes> {
        let r = self
            .store
            .get(key)
            .await
            .map_err(|e| archive_err(&format!("get {key}"), e))?;
        r.bytes()
            .await
            .map_err(|e| archive_err(&format!("read {key}"), e))
    }

    /// The (topic, topic id) pairs the archive holds data for: `<topic>/<32 hex digits>/`
    /// prefixes; anything else under the root is not the archive's and is ignored.
    pub async fn topics(&self) -> StorageResult<Vec<(String, uuid::Uuid)>> {
        use futures::TryStreamExt;
        let mut out = Vec::new();
        let root = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(|e| archive_err("list archive", e))?;
        for topic in root.common_prefixes {
            let ids = self
                .store
                .list_with_delimiter(Some(&topic))
                .await
                .map_err(|e| archive_err("list archive", e))?;
            for id in ids.common_prefixes {
                let name = id.filename().unwrap_or_default();
                let (32, Ok(uuid)) = (name.len(), uuid::Uuid::try_parse(name)) else {
                    continue;
                };
                // A file-system store keeps the empty directories of deleted objects.
                let any = self
                    .store
                    .list(Some(&id))
                    .try_next()
                    .await
                    .map_err(|e| archive_err("list archive", e))?;
                if any.is_some() {
                    let topic = topic.filename().unwrap_or_default().to_string();
                    out.push((topic, uuid));
                }
            }
        }
        Ok(out)
    }

    /// Deletes everything archived for one topic (all partitions); returns the number of
    /// objects deleted. The descriptor and the manifests go first, so a deletion cut short
    /// leaves no listing that names missing segments.
    pub async fn delete_topic(&self, topic: &str, topic_id: uuid::Uuid) -> StorageResult<usize> {
        use futures::TryStreamExt;
        let prefix = Path::from(format!("{topic}/{}", topic_id.simple()));
        let mut objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| archive_err("list topic archive", e))?;
        objects.sort_by_key(|o| !matches!(o.location.filename(), Some("topic" | "manifest")));
        for o in &objects {
            self.store
                .delete(&o.location)
                .await
                .map_err(|e| archive_err(&format!("delete {}", o.location), e))?;
        }
        Ok(objects.len())
    }

    /// Bytes `range` of an archived segment's `.log` (one ranged GET).
    pub async fn segment_range(
        &self,
        p: PartitionRef<'_>,
        base_offset: i64,
        range: std::ops::Range<u64>,
    ) -> StorageResult<Bytes> {
        let key = Self::segment_key(p, base_offset, "log");
        self.store
            .get_range(&key, range)
            .await
            .map_err(|e| archive_err(&format!("get range of {key}"), e))
    }

    /// An archived segment's `.log` bytes.
    pub async fn segment_data(
        &self,
        p: PartitionRef<'_>,
        base_offset: i64,
    ) -> StorageResult<Bytes> {
        self.get(&Self::segment_key(p, base_offset, "log")).await
    }

    /// An archived segment's index.
    pub async fn segment_index(
        &self,
        p: PartitionRef<'_>,
        base_offset: i64,
    ) -> StorageResult<ArchiveIndex> {
        let bytes = self
            .get(&Self::segment_key(p, base_offset, "index"))
            .await?;
        ArchiveIndex::decode(bytes).map_err(|e| archive_err("decode index", e))
    }
}

#[cfg(test)]
mod tests;
