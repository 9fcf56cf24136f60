//! Committed consumer-group offsets.

use prost::Message;
use rocksdb::WriteBatch;

use super::{Inner, Store, CF_META};
use crate::error::{StorageError, StorageResult};
use crate::keys;
use crate::meta::GroupOffsetRecord;

/// A committed offset of one group on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

impl Store {
    /// Stores the offsets of `group`, all or none, durably (fsync policy permitting) before
    /// returning. The write itself is an unsynced memtable insert; durability comes from the
    /// group-commit syncer, so concurrent commits (and appends) share one WAL fsync instead
    /// of paying one each. Waits for that sync without holding a thread.
    pub async fn commit_offsets(&self, group: &str, offsets: &[GroupOffset]) -> StorageResult<()> {
        let inner: &Inner = &self.inner;
        let mut wb = WriteBatch::default();
        for o in offsets {
            let rec = GroupOffsetRecord {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.clone(),
                commit_timestamp_ms: o.commit_timestamp_ms,
            };
            wb.put_cf(
                inner.cf(CF_META),
                keys::group_offset_key(group, &o.topic, o.partition),
                rec.encode_to_vec(),
            );
        }
        inner.db.write_opt(wb, &inner.write_options(false))?;
        if inner.config.fsync {
            let synced = match inner.sync.request() {
                Some(ticket) => inner.sync.wait(ticket).await,
                None => false,
            };
            if !synced {
                return Err(StorageError::Io(
                    "the store is closing: the commit may not be durable".into(),
                ));
            }
        }
        Ok(())
    }

    /// Every committed offset of `group`, ordered by topic and partition.
    pub fn fetch_offsets(&self, group: &str) -> StorageResult<Vec<GroupOffset>> {
        let mut out = Vec::new();
        for (k, v) in self.inner.scan_meta(&keys::group_prefix(group))? {
            let Some((_, topic, partition)) = keys::parse_group_offset_key(&k) else {
                continue;
            };
            let rec = GroupOffsetRecord::decode(v.as_slice())?;
            out.push(GroupOffset {
                topic,
                partition,
                offset: rec.offset,
                leader_epoch: rec.leader_epoch,
                metadata: rec.metadata,
                commit_timestamp_ms: rec.commit_timestamp_ms,
            });
        }
        Ok(out)
    }

    /// Deletes the given `(topic, partition)` offsets of `group`, or all of them for `None`.
    pub fn delete_offsets(
        &self,
        group: &str,
        which: Option<&[(String, i32)]>,
    ) -> StorageResult<()> {
        let inner: &Inner = &self.inner;
        let mut wb = WriteBatch::default();
        match which {
            Some(list) => {
                for (t, p) in list {
                    wb.delete_cf(inner.cf(CF_META), keys::group_offset_key(group, t, *p));
                }
            }
            None => {
                let start = keys::group_prefix(group);
                if let Some(end) = keys::prefix_end(&start) {
                    wb.delete_range_cf(inner.cf(CF_META), start, end);
                }
            }
        }
        inner.write_synced(wb)
    }

    /// Names of every group with at least one committed offset. Blocks: scans every
    /// committed offset.
    pub fn groups_with_offsets(&self) -> StorageResult<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for (k, _) in self.inner.scan_meta(&[keys::Tag::GroupOffset as u8])? {
            if let Some((g, _, _)) = keys::parse_group_offset_key(&k) {
                if out.last() != Some(&g) {
                    out.push(g);
                }
            }
        }
        Ok(out)
    }
}

impl Inner {
    /// Keys of every group's committed offsets for `topic` (a scan of all committed offsets:
    /// they are keyed by group first).
    pub(super) fn topic_offset_keys(&self, topic: &str) -> StorageResult<Vec<Vec<u8>>> {
        Ok(self
            .scan_meta(&[keys::Tag::GroupOffset as u8])?
            .into_iter()
            .filter(|(k, _)| keys::parse_group_offset_key(k).is_some_and(|(_, t, _)| t == topic))
            .map(|(k, _)| k)
            .collect())
    }
}
