//! Groups coming back from the storage: all of them at start-up (like Kafka loading
//! `__consumer_offsets`), and one at a time when an actor starts on a group whose previous
//! actor ended (an Empty group keeps its generation and protocol type).

use std::sync::Arc;

use strata_storage::{GroupMetadata, StorageError};
use tokio::time::Instant;

use super::state::Group;
use super::Coordinator;

/// KV prefix under which earlier versions recorded a group's protocol type once it had
/// members (value: the type). Read once at start-up and rewritten as group metadata.
const LEGACY_TYPE_PREFIX: &str = "group.type/";

impl Coordinator {
    /// Loads every stored group before the broker serves clients. A group stored with
    /// members comes back in its stored generation (Stable, or rebalancing if it was), each
    /// member's session starting now, with an actor to run its timers: members that
    /// heartbeat with their generation carry on without a rebalance, and those that never
    /// return expire after their session timeout. Empty groups stay in the storage until
    /// someone joins. A damaged record is logged and skipped. Returns how many groups came
    /// back with members.
    pub async fn load(self: &Arc<Self>) -> Result<usize, StorageError> {
        let (stored, legacy) = self
            .blocking(|s| {
                Ok((
                    s.all_group_metadata()?,
                    s.scan_kv(LEGACY_TYPE_PREFIX.as_bytes())?,
                ))
            })
            .await?;
        self.migrate_legacy_types(&stored, legacy).await?;
        let now = Instant::now();
        let mut loaded = 0;
        let mut groups = self.lock();
        for (name, metadata) in stored {
            if metadata.members.is_empty() {
                continue;
            }
            match Group::restore(name.clone(), self.settings, metadata, now) {
                Ok(g) => {
                    tracing::info!(
                        group = %name, generation = g.generation, state = g.state.name(),
                        "group loaded"
                    );
                    self.spawn(&mut groups, g, true);
                    loaded += 1;
                }
                Err(why) => {
                    tracing::warn!(group = %name, %why, "stored group metadata is damaged; ignored");
                }
            }
        }
        Ok(loaded)
    }

    /// Rewrites the protocol types recorded by earlier versions as group metadata (an Empty
    /// group of that type), unless the group has metadata already, then drops the old
    /// records. Each group's record is durable before its old one goes, so a crash midway
    /// loses nothing, and the next start finishes the job.
    async fn migrate_legacy_types(
        &self,
        stored: &[(String, GroupMetadata)],
        legacy: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        for (key, value) in legacy {
            let name = key.get(LEGACY_TYPE_PREFIX.len()..).unwrap_or_default();
            let name = String::from_utf8_lossy(name).into_owned();
            if !stored.iter().any(|(g, _)| *g == name) {
                let m = GroupMetadata {
                    protocol_type: String::from_utf8_lossy(&value).into_owned(),
                    ..GroupMetadata::default()
                };
                self.store.store_group_metadata(&name, &m).await?;
            }
            self.blocking(move |s| s.delete_kv(&key)).await?;
        }
        Ok(())
    }

    /// The stored group `group`, restored as of now (see [`Group::restore`]), for an actor
    /// starting on it. A damaged record is logged and counts as none: the group starts
    /// afresh, and its next stored change replaces the record.
    pub(super) async fn stored_group(&self, group: &str) -> Option<Group> {
        let name = group.to_string();
        let found = self.blocking(move |s| s.group_metadata(&name)).await;
        let why = match found {
            Ok(None) => return None,
            Ok(Some(m)) => {
                match Group::restore(group.to_string(), self.settings, m, Instant::now()) {
                    Ok(g) => return Some(g),
                    Err(why) => why,
                }
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(%group, %why, "stored group metadata is damaged; ignored");
        None
    }
}

#[cfg(test)]
mod tests;
