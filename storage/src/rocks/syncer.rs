//! Group commit: one thread makes the write-ahead log durable for every append written so
//! far, then publishes the new high watermarks. Other unsynced writes (offset commits) ask
//! for a sync with a ticket and wait until the syncer has passed it, so they share fsyncs
//! with each other and with the appends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::Inner;
use crate::error::{StorageError, StorageResult};
use crate::partition::Partition;

/// Back-off after a failed WAL sync (disk full, I/O error) before the next attempt; the
/// failed partitions stay queued so their waiters are released as soon as a sync succeeds.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

pub(crate) struct SyncQueue {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// The last ticket (see [`SyncQueue::request`]) whose writes are durable.
    synced: watch::Sender<u64>,
}

impl Default for SyncQueue {
    fn default() -> Self {
        SyncQueue {
            state: Mutex::default(),
            wake: Condvar::default(),
            synced: watch::Sender::new(0),
        }
    }
}

#[derive(Default)]
struct QueueState {
    dirty: Vec<Arc<Partition>>,
    stop: bool,
    /// Test hook ([`SyncHold`]): while held, no sync starts and no high watermark moves.
    held: bool,
    /// A sync is running (taken, not yet published).
    busy: bool,
    /// The last ticket handed out, and the last one a sync has started for.
    requested: u64,
    taken: u64,
}

impl SyncQueue {
    /// Queues `p` for the next sync unless it is already queued.
    pub fn mark(&self, p: &Arc<Partition>) {
        if !p.dirty.swap(true, Ordering::SeqCst) {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.dirty.push(p.clone());
            self.wake.notify_all();
        }
    }

    /// Asks for a sync of everything written so far; the returned ticket is passed once
    /// that is durable (see [`SyncQueue::wait`]). `None` once the syncer is stopping: a
    /// ticket asked for before that is still served by its last rounds.
    pub fn request(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.stop {
            return None;
        }
        s.requested += 1;
        self.wake.notify_one();
        Some(s.requested)
    }

    /// Waits until the syncer has made the writes before `ticket` durable.
    pub async fn wait(&self, ticket: u64) -> bool {
        let mut rx = self.synced.subscribe();
        let passed = rx.wait_for(|synced| *synced >= ticket).await.is_ok();
        passed
    }

    /// Waits for work; `None` once stopped with nothing left to sync. Also returns the
    /// last ticket requested: a successful sync passes it.
    fn take(&self) -> Option<(Vec<Arc<Partition>>, u64)> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // A hold never blocks the last sync at stop.
            if (!s.dirty.is_empty() || s.requested > s.taken) && (!s.held || s.stop) {
                s.busy = true;
                s.taken = s.requested;
                return Some((std::mem::take(&mut s.dirty), s.requested));
            }
            if s.stop {
                return None;
            }
            s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The sync taken last is published (or requeued).
    fn done(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.busy = false;
        self.wake.notify_all();
    }

    /// Holds the syncer once any sync in progress has published; see [`SyncHold`].
    pub fn hold(self: &Arc<Self>) -> SyncHold {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.held = true;
        while s.busy {
            s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        SyncHold {
            queue: self.clone(),
        }
    }

    fn requeue(&self, parts: Vec<Arc<Partition>>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The tickets of the failed sync are still owed.
        s.taken = *self.synced.borrow();
        for p in parts {
            if !p.dirty.swap(true, Ordering::SeqCst) {
                s.dirty.push(p);
            }
        }
    }
}

/// A test hook: while this value lives, the syncer makes nothing durable, so `acks=all`
/// produce requests stay unanswered and readers see no new offsets (appends still happen).
/// Dropping it releases the syncer. Not for production use.
pub struct SyncHold {
    queue: Arc<SyncQueue>,
}

impl Drop for SyncHold {
    fn drop(&mut self) {
        let mut s = self.queue.state.lock().unwrap_or_else(|e| e.into_inner());
        s.held = false;
        self.queue.wake.notify_all();
    }
}

/// Owns the syncer thread; stopping it (explicitly or on drop) runs one last sync.
pub(crate) struct SyncerGuard {
    queue: Arc<SyncQueue>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl SyncerGuard {
    pub fn start(inner: Arc<Inner>) -> StorageResult<Self> {
        let queue = inner.sync.clone();
        let handle = std::thread::Builder::new()
            .name("strata-syncer".into())
            .spawn(move || run(&inner))
            .map_err(|e| StorageError::Io(format!("spawn syncer thread: {e}")))?;
        Ok(SyncerGuard {
            queue,
            handle: Mutex::new(Some(handle)),
        })
    }

    pub fn stop(&self) {
        {
            let mut s = self.queue.state.lock().unwrap_or_else(|e| e.into_inner());
            s.stop = true;
            self.queue.wake.notify_all();
        }
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the syncer thread panicked");
            }
        }
    }
}

impl Drop for SyncerGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(inner: &Inner) {
    while let Some((parts, ticket)) = inner.sync.take() {
        // Clear each flag before reading the log end: an append that finishes after this
        // read re-queues its partition, so nothing written is left unsynced.
        let ends: Vec<i64> = parts
            .iter()
            .map(|p| {
                p.dirty.store(false, Ordering::SeqCst);
                p.log_end()
            })
            .collect();
        let started = std::time::Instant::now();
        let result = if inner.config.fsync {
            inner.db.flush_wal(true)
        } else {
            Ok(())
        };
        // One group commit: how many partitions it made durable, and what the sync cost.
        metrics::histogram!("strata_group_commit_partitions").record(parts.len() as f64);
        metrics::histogram!("strata_wal_sync_seconds").record(started.elapsed().as_secs_f64());
        let failed = match result {
            Ok(()) => {
                for (p, end) in parts.iter().zip(ends) {
                    p.publish_hw(end);
                }
                inner.sync.synced.send_if_modified(|synced| {
                    let newer = ticket > *synced;
                    *synced = (*synced).max(ticket);
                    newer
                });
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "syncing the write-ahead log failed; retrying");
                inner.sync.requeue(parts);
                true
            }
        };
        inner.sync.done();
        if failed {
            std::thread::sleep(RETRY_AFTER_FAILURE);
        }
    }
}
