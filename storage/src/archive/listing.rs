//! What the archive says about itself: each topic's descriptor (`<topic>/<topic id>/topic`)
//! and, read from the manifests, what each partition holds. Tools list it; restores rebuild
//! topics from it. Everything read is checked: a corrupt or foreign object is an error that
//! names its key, never a panic.

use std::collections::BTreeMap;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use prost::Message;

use super::{archive_err, Archive, ArchiveManifest, PartitionRef};
use crate::error::{StorageError, StorageResult};

/// `<topic>/<topic id>/topic`: the topic as it was when last archived. Written by the
/// connector when it first archives the topic and again when its partitions or configs
/// change.
#[derive(Clone, PartialEq, Message)]
pub struct TopicDescriptor {
    #[prost(string, tag = "1")]
    pub name: String,
    /// UUID bytes (16).
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub partitions: i32,
    /// The topic's config overrides (Kafka names).
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: BTreeMap<String, String>,
    /// When the topic was created, ms since the epoch.
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
}

/// What the archive holds of one partition, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedPartition {
    pub partition: i32,
    /// First offset the archive holds, past retention and DeleteRecords (equal to
    /// `next_offset` when it holds none).
    pub start_offset: i64,
    /// The offset after the last one ever archived (0 when nothing was).
    pub next_offset: i64,
    /// Smallest and largest record timestamps (-1 when nothing is archived).
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Bytes of record batches archived.
    pub bytes: u64,
    pub segments: usize,
}

/// What the archive holds of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedTopic {
    pub name: String,
    pub id: uuid::Uuid,
    /// `None` for topics archived before descriptors existed.
    pub descriptor: Option<TopicDescriptor>,
    /// In partition order: every partition with a manifest, and every partition the
    /// descriptor counts (empty when nothing of it is archived yet).
    pub partitions: Vec<ArchivedPartition>,
}

impl ArchivedTopic {
    /// The partition count a restore creates: the descriptor's, or more when the archive
    /// holds partitions beyond it.
    pub fn partition_count(&self) -> i32 {
        let seen = self.partitions.last().map_or(0, |p| p.partition + 1);
        self.descriptor
            .as_ref()
            .map_or(seen, |d| d.partitions.max(seen))
    }
}

impl ArchiveManifest {
    /// Checks that the segments are well formed and contiguous (each starts right after the
    /// previous one); the error says where not.
    pub fn check(&self) -> Result<(), String> {
        if self.end_offset < 0 || self.deleted_below < 0 {
            return Err(format!(
                "negative end ({}) or deletion point ({})",
                self.end_offset, self.deleted_below
            ));
        }
        let mut expect: Option<i64> = None;
        for s in &self.segments {
            if s.base_offset < 0 || s.last_offset < s.base_offset {
                return Err(format!(
                    "segment {}..={} is not an offset range",
                    s.base_offset, s.last_offset
                ));
            }
            if expect.is_some_and(|e| e != s.base_offset) {
                return Err(format!(
                    "segment at {} follows one ending before {}",
                    s.base_offset,
                    expect.unwrap_or_default()
                ));
            }
            expect = s.last_offset.checked_add(1);
            if expect.is_none() {
                return Err(format!("segment ends at {}", s.last_offset));
            }
        }
        Ok(())
    }

    fn summary(&self, partition: i32) -> ArchivedPartition {
        let next_offset = self.next_offset();
        let ts = |f: fn(&super::ArchivedSegment) -> i64| self.segments.iter().map(f);
        ArchivedPartition {
            partition,
            start_offset: self.start_offset().unwrap_or(next_offset),
            next_offset,
            min_timestamp: ts(|s| s.min_timestamp).min().unwrap_or(-1),
            max_timestamp: ts(|s| s.max_timestamp).max().unwrap_or(-1),
            bytes: self.segments.iter().map(|s| s.bytes).sum(),
            segments: self.segments.len(),
        }
    }
}

impl Archive {
    fn descriptor_key(topic: &str, id: uuid::Uuid) -> Path {
        Path::from(format!("{topic}/{}/topic", id.simple()))
    }

    /// The topic's descriptor; `None` when there is none. An undecodable one, or one naming
    /// another topic or id than its key, is an error.
    pub async fn descriptor(
        &self,
        topic: &str,
        id: uuid::Uuid,
    ) -> StorageResult<Option<TopicDescriptor>> {
        let key = Self::descriptor_key(topic, id);
        let bytes = match self.store.get(&key).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| archive_err(&format!("read {key}"), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(archive_err(&format!("get {key}"), e)),
        };
        let corrupt =
            |what: String| StorageError::Archive(format!("corrupt descriptor {key}: {what}"));
        let d = TopicDescriptor::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        if d.name != topic || uuid::Uuid::from_slice(&d.id).ok() != Some(id) {
            return Err(corrupt(format!(
                "it describes topic {:?} with id {:02x?}",
                d.name, d.id
            )));
        }
        if d.partitions < 1 {
            return Err(corrupt(format!("{} partitions", d.partitions)));
        }
        Ok(Some(d))
    }

    /// Writes the descriptor of topic `d.name` (id `d.id`), replacing any earlier one.
    pub async fn put_descriptor(&self, d: &TopicDescriptor) -> StorageResult<()> {
        let id = uuid::Uuid::from_slice(&d.id).map_err(|e| archive_err("descriptor id", e))?;
        let key = Self::descriptor_key(&d.name, id);
        self.store
            .put(&key, PutPayload::from(d.encode_to_vec()))
            .await
            .map_err(|e| archive_err(&format!("put {key}"), e))?;
        Ok(())
    }

    /// The partition's manifest, checked with [`ArchiveManifest::check`].
    pub async fn checked_manifest(&self, p: PartitionRef<'_>) -> StorageResult<ArchiveManifest> {
        let key = Self::manifest_key(p);
        let m = self
            .manifest(p)
            .await
            .map_err(|e| StorageError::Archive(format!("{key}: {e}")))?;
        m.check()
            .map_err(|e| StorageError::Archive(format!("corrupt manifest {key}: {e}")))?;
        Ok(m)
    }

    /// What the archive holds of one topic (descriptor and every partition's manifest).
    pub async fn describe(&self, topic: &str, id: uuid::Uuid) -> StorageResult<ArchivedTopic> {
        let descriptor = self.descriptor(topic, id).await?;
        let prefix = Path::from(format!("{topic}/{}", id.simple()));
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| archive_err(&format!("list {prefix}"), e))?;
        // Partition folders are named by their index; anything else is not the archive's.
        let mut indexes: Vec<i32> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.parse().ok())
            .filter(|&i: &i32| i >= 0)
            .collect();
        indexes.sort_unstable();
        let mut partitions = Vec::with_capacity(indexes.len());
        for partition in indexes {
            let p = PartitionRef {
                topic,
                topic_id: id,
                partition,
            };
            let m = self.checked_manifest(p).await?;
            // A folder with no manifest (an upload cut short before its first commit)
            // holds nothing yet.
            partitions.push(m.summary(partition));
        }
        // A descriptor's count beyond this is listed by its count only, so a corrupt one
        // cannot make the listing allocate without bound (it is the broker's default
        // `max_partitions`).
        const LISTED_EMPTY_MAX: i32 = 100_000;
        let counted = descriptor
            .as_ref()
            .map_or(0, |d| d.partitions.min(LISTED_EMPTY_MAX));
        let seen: std::collections::HashSet<i32> = partitions.iter().map(|p| p.partition).collect();
        let missing: Vec<i32> = (0..counted).filter(|i| !seen.contains(i)).collect();
        for partition in missing {
            partitions.push(ArchiveManifest::default().summary(partition));
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(ArchivedTopic {
            name: topic.to_string(),
            id,
            descriptor,
            partitions,
        })
    }

    /// [`Archive::describe`] for every topic the archive holds (only those named `topic`
    /// when given), by name then id.
    pub async fn list(&self, topic: Option<&str>) -> StorageResult<Vec<ArchivedTopic>> {
        let mut topics = self.topics().await?;
        topics.retain(|(name, _)| topic.is_none_or(|t| t == name));
        topics.sort();
        let mut out = Vec::with_capacity(topics.len());
        for (name, id) in topics {
            out.push(self.describe(&name, id).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
