//! Expiry of committed offsets (Kafka's `offsets.retention.minutes`, KIP-211): a group's
//! offsets expire only once the group has been Empty for the retention period, counted
//! from when it became Empty, and never before retention has passed since the offset was
//! committed. A group not seen since the broker started counts as Empty from the start
//! (Kafka counts from load), so a restart never expires a live group's offsets. As in Kafka,
//! a group left with neither members nor offsets is then removed (its metadata deleted).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strata_storage::StorageError;

use super::actor::Cmd;
use super::{wall_ms, Coordinator};

/// How often expiry runs: Kafka's `offsets.retention.check.interval.ms` default (10 min);
/// retention itself is counted in days.
const EVERY: Duration = Duration::from_secs(600);

impl Coordinator {
    /// Runs an expiry pass every [`EVERY`] until the broker stops. The first pass runs
    /// after one interval, not at start-up: right after a start nothing can have expired.
    pub async fn expire_offsets(self: Arc<Self>, retention: Duration) {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            match self.expire_offsets_at(wall_ms(), retention_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(offsets = n, "expired committed offsets"),
                Err(e) => tracing::warn!(error = %e, "offset expiry failed"),
            }
        }
    }

    /// One expiry pass as of wall-clock `now_ms` (a parameter, so tests can move time):
    /// deletes the offsets of every group that has been Empty for more than `retention_ms`
    /// and committed none of them within that time. Returns how many were deleted.
    pub async fn expire_offsets_at(
        self: &Arc<Self>,
        now_ms: i64,
        retention_ms: i64,
    ) -> Result<usize, StorageError> {
        // Running groups: `None` while they have members (their offsets stay).
        let running: Vec<(String, tokio::sync::mpsc::Sender<Cmd>)> = self
            .lock()
            .iter()
            .map(|(g, r)| (g.clone(), r.tx.clone()))
            .collect();
        let mut since: HashMap<String, Option<i64>> = HashMap::new();
        for (group, tx) in running {
            let (reply, rx) = tokio::sync::oneshot::channel();
            if tx.send(Cmd::EmptySince(reply)).await.is_ok() {
                if let Ok(s) = rx.await {
                    since.insert(group, s);
                }
            }
            // Otherwise the actor ended meanwhile and its group is in `idle_since` now.
        }
        for (group, s) in self.idle().iter() {
            since.entry(group.clone()).or_insert(Some(*s));
        }
        let started = self.started_ms;
        let (expired, emptied, with_offsets, memberless) = self
            .blocking(move |store| {
                let mut expired = 0;
                let mut emptied = Vec::new();
                let with_offsets = store.groups_with_offsets()?;
                // Groups whose stored metadata has no members (Empty when they were stored).
                let memberless: Vec<String> = store
                    .all_group_metadata()?
                    .into_iter()
                    .filter(|(_, m)| m.members.is_empty())
                    .map(|(g, _)| g)
                    .collect();
                for group in &with_offsets {
                    let group = group.clone();
                    let empty_since = match since.get(&group) {
                        Some(None) => continue,
                        Some(Some(t)) => (*t).max(started),
                        None => started,
                    };
                    let offsets = store.fetch_offsets(&group)?;
                    let old: Vec<(String, i32)> = offsets
                        .iter()
                        .filter(|o| {
                            let reference = empty_since.max(o.commit_timestamp_ms);
                            now_ms.saturating_sub(reference) > retention_ms
                        })
                        .map(|o| (o.topic.clone(), o.partition))
                        .collect();
                    if old.is_empty() {
                        continue;
                    }
                    expired += old.len();
                    // By key: a commit made meanwhile stays.
                    store.delete_offsets(&group, Some(&old))?;
                    if old.len() == offsets.len() {
                        emptied.push(group);
                    }
                }
                Ok((expired, emptied, with_offsets, memberless))
            })
            .await?;
        // Only groups with offsets need to remember since when they have been Empty: the
        // others have nothing to expire (and a commit made later is its own reference).
        let mut with_offsets: std::collections::HashSet<String> =
            with_offsets.into_iter().collect();
        for group in &emptied {
            with_offsets.remove(group);
        }
        self.idle().retain(|g, _| with_offsets.contains(g));
        // A group left with neither members nor offsets is gone (Kafka: Dead, removed): the
        // groups whose offsets all expired now, and Empty ones that never committed any. A
        // group with an actor is not (it may have members again).
        let gone: std::collections::BTreeSet<String> = emptied
            .into_iter()
            .chain(memberless.into_iter().filter(|g| !with_offsets.contains(g)))
            .collect();
        for group in gone {
            if self.running(&group).is_none() {
                self.idle().remove(&group);
                if let Err(e) = self
                    .blocking(move |s| s.delete_group_metadata(&group))
                    .await
                {
                    tracing::warn!(error = %e, "cannot delete the metadata of a removed group");
                }
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests;
