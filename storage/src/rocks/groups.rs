//! Consumer groups: committed offsets, and each group's metadata (membership, generation,
//! assignments) so that a group survives a restart.

use bytes::Bytes;
use prost::Message;
use rocksdb::WriteBatch;

use super::{Inner, Store, CF_META};
use crate::error::{StorageError, StorageResult};
use crate::keys;
use crate::meta::{GroupMemberRecord, GroupMetadataRecord, GroupOffsetRecord, GroupProtocolRecord};

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

/// A consumer group's metadata as stored for restarts: what the group coordinator needs to
/// bring the group back in the same generation. What the fields mean is the broker's business.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMetadata {
    pub protocol_type: String,
    /// The protocol (assignor) selected for the generation; empty without members.
    pub protocol: String,
    pub generation: i32,
    /// The leader's member id; empty without members.
    pub leader: String,
    /// Members left after the generation completed: the group is due a rebalance.
    pub rebalance_pending: bool,
    pub members: Vec<GroupMember>,
}

/// One member of a stored group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// `(name, metadata)` of each protocol the member supports, in its order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
}

impl GroupMetadata {
    fn record(&self) -> GroupMetadataRecord {
        GroupMetadataRecord {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            rebalance_pending: self.rebalance_pending,
            members: self
                .members
                .iter()
                .map(|m| GroupMemberRecord {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(name, metadata)| GroupProtocolRecord {
                            name: name.clone(),
                            metadata: metadata.clone(),
                        })
                        .collect(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn from_record(r: GroupMetadataRecord) -> GroupMetadata {
        GroupMetadata {
            protocol_type: r.protocol_type,
            protocol: r.protocol,
            generation: r.generation,
            leader: r.leader,
            rebalance_pending: r.rebalance_pending,
            members: r
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|p| (p.name, p.metadata))
                        .collect(),
                    assignment: m.assignment,
                })
                .collect(),
        }
    }
}

impl Store {
    /// Stores the offsets of `group`, all or none, durably (fsync policy permitting) before
    /// returning. The write itself is an unsynced memtable insert; durability comes from the
    /// group-commit syncer, so concurrent commits (and appends) share one WAL fsync instead
    /// of paying one each. Waits for that sync without holding a thread.
    pub async fn commit_offsets(&self, group: &str, offsets: &[GroupOffset]) -> StorageResult<()> {
        let mut wb = WriteBatch::default();
        for o in offsets {
            let rec = GroupOffsetRecord {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.clone(),
                commit_timestamp_ms: o.commit_timestamp_ms,
            };
            wb.put_cf(
                self.inner.cf(CF_META),
                keys::group_offset_key(group, &o.topic, o.partition),
                rec.encode_to_vec(),
            );
        }
        self.inner.write_group_committed(wb).await
    }

    /// Replaces the stored metadata of `group` with `metadata`, in one atomic write, durable
    /// (fsync policy permitting) before returning: like [`Store::commit_offsets`], an unsynced
    /// write followed by a wait for the group-commit syncer, without holding a thread.
    pub async fn store_group_metadata(
        &self,
        group: &str,
        metadata: &GroupMetadata,
    ) -> StorageResult<()> {
        let mut wb = WriteBatch::default();
        wb.put_cf(
            self.inner.cf(CF_META),
            keys::group_metadata_key(group),
            metadata.record().encode_to_vec(),
        );
        self.inner.write_group_committed(wb).await
    }

    /// The stored metadata of `group`, if any; a record that does not decode is an error.
    /// Blocks: a point read.
    pub fn group_metadata(&self, group: &str) -> StorageResult<Option<GroupMetadata>> {
        let inner = &self.inner;
        match inner
            .db
            .get_cf(inner.cf(CF_META), keys::group_metadata_key(group))?
        {
            Some(v) => Ok(Some(GroupMetadata::from_record(
                GroupMetadataRecord::decode(v.as_slice())?,
            ))),
            None => Ok(None),
        }
    }

    /// The stored metadata of every group, in key order (by group id bytes). A record that
    /// does not decode (or whose key is not a UTF-8 group id) is logged and left out, so that
    /// one damaged record cannot keep the broker from starting. Blocks: scans them.
    pub fn all_group_metadata(&self) -> StorageResult<Vec<(String, GroupMetadata)>> {
        let mut out = Vec::new();
        for (k, v) in self.inner.scan_meta(&[keys::Tag::GroupMetadata as u8])? {
            let Some(group) = keys::parse_group_metadata_key(&k) else {
                tracing::warn!(key = ?k, "skipping group metadata under a key that is no group id");
                continue;
            };
            match GroupMetadataRecord::decode(v.as_slice()) {
                Ok(r) => out.push((group, GroupMetadata::from_record(r))),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "skipping group metadata that does not decode");
                }
            }
        }
        Ok(out)
    }

    /// Deletes the stored metadata of `group` (missing: no error), durably (fsync policy
    /// permitting) before returning. Blocks: a synced write.
    pub fn delete_group_metadata(&self, group: &str) -> StorageResult<()> {
        let mut wb = WriteBatch::default();
        wb.delete_cf(self.inner.cf(CF_META), keys::group_metadata_key(group));
        self.inner.write_synced(wb)
    }

    /// Deletes `group` whole: its metadata and every committed offset, in one atomic write,
    /// durably (fsync policy permitting) before returning. Blocks: a synced write.
    pub fn delete_group(&self, group: &str) -> StorageResult<()> {
        let inner = &self.inner;
        let mut wb = WriteBatch::default();
        inner.delete_all_offsets(&mut wb, group);
        wb.delete_cf(inner.cf(CF_META), keys::group_metadata_key(group));
        inner.write_synced(wb)
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
            None => inner.delete_all_offsets(&mut wb, group),
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
    /// Writes `wb` unsynced, then waits (without holding a thread) until the group-commit
    /// syncer has made it durable, when the fsync policy is on.
    async fn write_group_committed(&self, wb: WriteBatch) -> StorageResult<()> {
        self.db.write_opt(wb, &self.write_options(false))?;
        if self.config.fsync {
            let synced = match self.sync.request() {
                Some(ticket) => self.sync.wait(ticket).await,
                None => false,
            };
            if !synced {
                return Err(StorageError::Io(
                    "the store is closing: the write may not be durable".into(),
                ));
            }
        }
        Ok(())
    }

    /// Adds to `wb` the deletion of every committed offset of `group`.
    fn delete_all_offsets(&self, wb: &mut WriteBatch, group: &str) {
        let start = keys::group_prefix(group);
        if let Some(end) = keys::prefix_end(&start) {
            wb.delete_range_cf(self.cf(CF_META), start, end);
        }
    }

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

#[cfg(test)]
mod tests;
