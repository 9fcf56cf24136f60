//! The topic catalog: creating, growing, reconfiguring and deleting topics, and looking
//! them up. Every change is one synced RocksDB write, then applied to the in-memory catalog.
//! Changes are serialised by their own lock, held across the synced write; the catalog's
//! read-write lock, which every append and read takes to find its partition, is only held
//! to apply a change in memory, never across an fsync.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use rocksdb::WriteBatch;
use uuid::Uuid;

use super::{
    empty_state, now_ms, Catalog, Inner, Store, TopicEntry, TopicInfo, CF_IDX, CF_LOG, CF_META,
    NEXT_PID_KEY,
};
use crate::config::TopicLimits;
use crate::error::{StorageError, StorageResult};
use crate::keys::{self, Tag};
use crate::meta::{PartitionRecord, TopicRecord};
use crate::partition::{Partition, PartitionState};

impl Store {
    /// Creates a topic with `partitions` empty partitions, atomically and durably.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> StorageResult<TopicInfo> {
        self.create(name, None, partitions, None, configs, now_ms())
    }

    /// Creates a topic again from what an archive holds of it (restore after the local disk
    /// was lost): with its old `id` (so that archive keys and the connector's progress carry
    /// on), `created_ms`, `configs`, and one partition per entry of `start_offsets`, whose
    /// log starts empty at that offset (log start = next offset = high watermark), so new
    /// writes continue after what the archive holds and no offset is used twice. Atomic and
    /// durable, like [`Store::create_topic`]; refused when the name or the id is in use.
    pub fn restore_topic(
        &self,
        name: &str,
        id: Uuid,
        start_offsets: &[i64],
        configs: BTreeMap<String, String>,
        created_ms: i64,
    ) -> StorageResult<TopicInfo> {
        if id.is_nil() {
            return Err(StorageError::InvalidRequest("nil topic id".into()));
        }
        if let Some(bad) = start_offsets.iter().find(|&&o| o < 0) {
            return Err(StorageError::InvalidRequest(format!(
                "negative start offset {bad}"
            )));
        }
        let partitions = i32::try_from(start_offsets.len()).map_err(|_| {
            StorageError::InvalidRequest(format!("{} partitions", start_offsets.len()))
        })?;
        self.create(
            name,
            Some(id),
            partitions,
            Some(start_offsets),
            configs,
            created_ms,
        )
    }

    /// [`Store::create_topic`] and [`Store::restore_topic`]: a new id unless `id` is given;
    /// partition `i` starts at `start_offsets[i]` (0 without them).
    fn create(
        &self,
        name: &str,
        id: Option<Uuid>,
        partitions: i32,
        start_offsets: Option<&[i64]>,
        configs: BTreeMap<String, String>,
        created_ms: i64,
    ) -> StorageResult<TopicInfo> {
        if name.is_empty() {
            return Err(StorageError::InvalidRequest("empty topic name".into()));
        }
        if partitions < 1 {
            return Err(StorageError::InvalidRequest(format!(
                "partition count {partitions} (must be at least 1)"
            )));
        }
        let inner = &self.inner;
        let _change = inner.lock_changes();
        let id = {
            let catalog = inner.read_catalog();
            if catalog.topics.contains_key(name) {
                return Err(StorageError::TopicExists(name.to_string()));
            }
            check_partition_limit(&catalog, partitions as u64, inner.config.max_partitions)?;
            match id {
                Some(id) if catalog.by_id.contains_key(&id) => {
                    return Err(StorageError::InvalidRequest(format!(
                        "topic id {id} is in use by topic {}",
                        catalog.by_id[&id]
                    )));
                }
                Some(id) => id,
                None => {
                    let mut id = Uuid::new_v4();
                    while catalog.by_id.contains_key(&id) || id.is_nil() {
                        id = Uuid::new_v4();
                    }
                    id
                }
            }
        };
        let limits = TopicLimits::from_configs(&configs, &inner.config);
        let mut batch = WriteBatch::default();
        let pids = inner.allocate_pids(&mut batch, partitions as u64);
        let record = TopicRecord {
            name: name.to_string(),
            id: id.as_bytes().to_vec(),
            partition_ids: pids.clone(),
            configs: configs.clone(),
            created_ms,
        };
        batch.put_cf(
            inner.cf(CF_META),
            keys::topic_key(name),
            record.encode_to_vec(),
        );
        let parts = inner.new_partitions(&mut batch, name, 0, &pids, start_offsets, limits);
        inner.write_synced(batch)?;
        let info = TopicInfo {
            name: name.to_string(),
            id,
            partitions,
            configs,
        };
        let mut catalog = inner.write_catalog();
        catalog.by_id.insert(id, name.to_string());
        catalog.topics.insert(
            name.to_string(),
            TopicEntry {
                info: info.clone(),
                created_ms,
                partitions: parts,
            },
        );
        Ok(info)
    }

    /// Grows a topic to `total` partitions (it can only grow), atomically and durably.
    pub fn create_partitions(&self, name: &str, total: i32) -> StorageResult<TopicInfo> {
        let inner = &self.inner;
        let _change = inner.lock_changes();
        let (current, configs, mut all, record) = {
            let catalog = inner.read_catalog();
            let entry = catalog
                .topics
                .get(name)
                .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
            let pids: Vec<u64> = entry.partitions.iter().map(|p| p.pid).collect();
            (
                entry.info.partitions,
                entry.info.configs.clone(),
                pids.clone(),
                entry.record(pids),
            )
        };
        if total <= current {
            return Err(StorageError::InvalidRequest(format!(
                "topic {name} has {current} partitions; the new count {total} must be larger"
            )));
        }
        check_partition_limit(
            &inner.read_catalog(),
            (total - current) as u64,
            inner.config.max_partitions,
        )?;
        let mut batch = WriteBatch::default();
        let pids = inner.allocate_pids(&mut batch, (total - current) as u64);
        let limits = TopicLimits::from_configs(&configs, &inner.config);
        let parts = inner.new_partitions(&mut batch, name, current, &pids, None, limits);
        all.extend(&pids);
        let record = TopicRecord {
            partition_ids: all,
            ..record
        };
        batch.put_cf(
            inner.cf(CF_META),
            keys::topic_key(name),
            record.encode_to_vec(),
        );
        inner.write_synced(batch)?;
        let mut catalog = inner.write_catalog();
        let entry = catalog
            .topics
            .get_mut(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
        entry.partitions.extend(parts);
        entry.info.partitions = total;
        Ok(entry.info.clone())
    }

    /// Replaces a topic's config map, durably; the storage's own settings (segment size and
    /// age, message size limit, timestamp type) apply to the next append.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> StorageResult<TopicInfo> {
        let inner = &self.inner;
        let _change = inner.lock_changes();
        let record = {
            let catalog = inner.read_catalog();
            let entry = catalog
                .topics
                .get(name)
                .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
            TopicRecord {
                configs: configs.clone(),
                ..entry.record(entry.partitions.iter().map(|p| p.pid).collect())
            }
        };
        inner.put_synced(CF_META, &keys::topic_key(name), &record.encode_to_vec())?;
        let mut catalog = inner.write_catalog();
        let entry = catalog
            .topics
            .get_mut(name)
            .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
        entry.info.configs = configs;
        let limits = TopicLimits::from_configs(&entry.info.configs, &inner.config);
        for p in &entry.partitions {
            p.lock().limits = limits;
        }
        Ok(entry.info.clone())
    }

    /// Deletes a topic and all its data, and every group's committed offsets for it,
    /// atomically and durably: afterwards the name is free, and a topic created with it
    /// starts empty, with a new id, and no group resumes at an offset of the old one. Disk
    /// space is reclaimed by a background compaction of the deleted ranges (one worker
    /// thread for all deletes). Blocks: scans the committed offsets and fsyncs.
    pub fn delete_topic(&self, name: &str) -> StorageResult<TopicInfo> {
        self.delete_topic_with_kv(name, None)
    }

    /// [`Store::delete_topic`], also storing `kv` (a `(key, value)` as [`Store::put_kv`]
    /// does) in the same atomic synced write: a record of work the deletion leaves to do
    /// (its archive to delete) that exists exactly when the deletion happened.
    pub fn delete_topic_with_kv(
        &self,
        name: &str,
        kv: Option<(&[u8], &[u8])>,
    ) -> StorageResult<TopicInfo> {
        let inner = &self.inner;
        let _change = inner.lock_changes();
        let (info, partitions) = {
            let catalog = inner.read_catalog();
            let entry = catalog
                .topics
                .get(name)
                .ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
            (entry.info.clone(), entry.partitions.clone())
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(inner.cf(CF_META), keys::topic_key(name));
        if let Some((key, value)) = kv {
            batch.put_cf(inner.cf(CF_META), keys::kv_key(key), value);
        }
        // Appends racing the delete fail from here on and write nothing.
        for p in &partitions {
            p.lock().deleted = true;
            inner.delete_partition_data(&mut batch, p.pid);
        }
        // A commit that checked the topic before this scan and writes after it can still
        // leave an offset behind; commits are refused once the topic is gone.
        let written = inner.topic_offset_keys(name).and_then(|offsets| {
            for k in offsets {
                batch.delete_cf(inner.cf(CF_META), k);
            }
            inner.write_synced(batch)
        });
        if let Err(e) = written {
            for p in &partitions {
                p.lock().deleted = false;
            }
            return Err(e);
        }
        {
            let mut catalog = inner.write_catalog();
            catalog.topics.remove(name);
            catalog.by_id.remove(&info.id);
        }
        if let Some(cache) = &inner.cache {
            for p in &partitions {
                cache.forget_before(p.pid, i64::MAX);
            }
        }
        let ranges: Vec<_> = partitions
            .iter()
            .map(|p| (keys::log_key(p.pid, 0), keys::log_key(p.pid + 1, 0)))
            .collect();
        inner.compact_in_background(ranges)?;
        Ok(info)
    }

    pub fn topics(&self) -> Vec<TopicInfo> {
        let catalog = self.inner.read_catalog();
        let mut v: Vec<_> = catalog.topics.values().map(|t| t.info.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn topic(&self, name: &str) -> Option<TopicInfo> {
        self.inner
            .read_catalog()
            .topics
            .get(name)
            .map(|t| t.info.clone())
    }

    /// Calls `f` with the topic's config map, without copying it (the produce path reads a
    /// few configs of every topic it writes to); `None` when there is no such topic. Holds
    /// the catalog's read lock while `f` runs: keep `f` short.
    pub fn with_topic_configs<R>(
        &self,
        name: &str,
        f: impl FnOnce(&BTreeMap<String, String>) -> R,
    ) -> Option<R> {
        self.inner
            .read_catalog()
            .topics
            .get(name)
            .map(|t| f(&t.info.configs))
    }

    /// When the topic was created (ms since the epoch), as recorded at creation.
    pub fn topic_created_ms(&self, name: &str) -> Option<i64> {
        self.inner
            .read_catalog()
            .topics
            .get(name)
            .map(|t| t.created_ms)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicInfo> {
        let catalog = self.inner.read_catalog();
        let name = catalog.by_id.get(&id)?;
        catalog.topics.get(name).map(|t| t.info.clone())
    }
}

/// Refuses `more` partitions when the store would then hold more than `limit`.
fn check_partition_limit(catalog: &Catalog, more: u64, limit: usize) -> StorageResult<()> {
    let existing: u64 = catalog
        .topics
        .values()
        .map(|t| t.info.partitions.max(0) as u64)
        .sum();
    let total = existing.saturating_add(more);
    if total > limit as u64 {
        return Err(StorageError::TooManyPartitions {
            requested: more,
            total,
            limit,
        });
    }
    Ok(())
}

impl TopicEntry {
    fn record(&self, partition_ids: Vec<u64>) -> TopicRecord {
        TopicRecord {
            name: self.info.name.clone(),
            id: self.info.id.as_bytes().to_vec(),
            partition_ids,
            configs: self.info.configs.clone(),
            created_ms: self.created_ms,
        }
    }
}

impl Inner {
    fn allocate_pids(&self, batch: &mut WriteBatch, n: u64) -> Vec<u64> {
        let first = self.next_pid.fetch_add(n, Ordering::SeqCst);
        batch.put_cf(
            self.cf(CF_META),
            keys::kv_key(NEXT_PID_KEY),
            (first + n).to_be_bytes(),
        );
        (first..first + n).collect()
    }

    fn new_partitions(
        &self,
        batch: &mut WriteBatch,
        topic: &str,
        first_index: i32,
        pids: &[u64],
        start_offsets: Option<&[i64]>,
        limits: TopicLimits,
    ) -> Vec<Arc<Partition>> {
        pids.iter()
            .enumerate()
            .map(|(i, &pid)| {
                let index = first_index + i as i32;
                let start = start_offsets.and_then(|s| s.get(i)).copied().unwrap_or(0);
                let rec = PartitionRecord {
                    topic: topic.to_string(),
                    index,
                    log_start_offset: start,
                    next_offset_floor: start,
                };
                batch.put_cf(
                    self.cf(CF_META),
                    keys::partition_key(pid),
                    rec.encode_to_vec(),
                );
                let state = PartitionState {
                    next_offset: start,
                    log_start: start,
                    ..empty_state(limits)
                };
                Arc::new(Partition::new(pid, topic.to_string(), index, state))
            })
            .collect()
    }

    fn delete_partition_data(&self, batch: &mut WriteBatch, pid: u64) {
        batch.delete_cf(self.cf(CF_META), keys::partition_key(pid));
        for tag in [Tag::Segment, Tag::Producer, Tag::Cleaner] {
            let (start, end) = keys::pid_range(tag, pid);
            batch.delete_range_cf(self.cf(CF_META), start, end);
        }
        for cf in [CF_LOG, CF_IDX] {
            batch.delete_range_cf(
                self.cf(cf),
                keys::log_key(pid, 0),
                keys::log_key(pid + 1, 0),
            );
        }
    }
}
