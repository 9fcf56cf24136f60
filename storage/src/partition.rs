//! In-memory state of one partition: next offset, high watermark, segments, producers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use crate::batch::{wrapping_seq_add, BatchHeader};
use crate::config::TopicLimits;
use crate::error::{StorageError, StorageResult};
use crate::meta::{ProducerBatch, ProducerRecord, SegmentRecord};

/// How many recent batches per producer are remembered for duplicate detection; Kafka
/// allows up to 5 in-flight requests per idempotent producer, so 5 suffice.
pub const PRODUCER_BATCHES_KEPT: usize = 5;

pub(crate) struct Partition {
    pub pid: u64,
    pub topic: String,
    pub index: i32,
    pub state: Mutex<PartitionState>,
    /// Offsets below this are durable (or written, with fsync off) and visible to readers.
    pub hw: watch::Sender<i64>,
    /// Offset after the last batch written to RocksDB (not necessarily durable yet).
    pub log_end: AtomicI64,
    pub log_start: AtomicI64,
    /// Queued for the syncer.
    pub dirty: AtomicBool,
}

pub(crate) struct PartitionState {
    pub next_offset: i64,
    pub log_start: i64,
    /// Ordered by base offset; the last one is the active segment.
    pub segments: Vec<SegmentRecord>,
    pub producers: HashMap<i64, ProducerRecord>,
    pub limits: TopicLimits,
    /// Set when the topic is deleted, so an append racing the delete writes nothing.
    pub deleted: bool,
    /// The log cleaner's checkpoint: below this offset the log is compacted.
    pub first_dirty: i64,
    /// When the oldest segment the cleaner left a tombstone in was sealed.
    pub tombstones_since: Option<i64>,
}

impl Partition {
    pub fn new(pid: u64, topic: String, index: i32, state: PartitionState) -> Self {
        let next = state.next_offset;
        let log_start = state.log_start;
        Partition {
            pid,
            topic,
            index,
            state: Mutex::new(state),
            hw: watch::Sender::new(next),
            log_end: AtomicI64::new(next),
            log_start: AtomicI64::new(log_start),
            dirty: AtomicBool::new(false),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }

    /// Raises the high watermark to `to` (never lowers it) and wakes its waiters.
    pub fn publish_hw(&self, to: i64) {
        self.hw.send_if_modified(|hw| {
            if to > *hw {
                *hw = to;
                true
            } else {
                false
            }
        });
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, PartitionState> {
        // A panic while holding the lock leaves state that was only ever updated after a
        // successful write; continuing with it is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn log_end(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }
}

/// What the sequence check decided for an idempotent batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SeqCheck {
    Append,
    /// The batch was already written at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

/// Kafka's idempotence rules for a batch from producer `h.producer_id` given its known state.
pub(crate) fn check_sequence(
    known: Option<&ProducerRecord>,
    h: &BatchHeader,
) -> StorageResult<SeqCheck> {
    let Some(state) = known else {
        // No state (new producer, or its batches were all removed by retention): accept any
        // sequence, as Kafka does.
        return Ok(SeqCheck::Append);
    };
    let epoch = i32::from(h.producer_epoch);
    if epoch < state.epoch {
        return Err(StorageError::ProducerFenced {
            producer_id: h.producer_id,
            current: state.epoch as i16,
            got: h.producer_epoch,
        });
    }
    if epoch > state.epoch {
        if h.base_sequence != 0 {
            return Err(StorageError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected: 0,
                got: h.base_sequence,
            });
        }
        return Ok(SeqCheck::Append);
    }
    let last_seq = h.last_sequence();
    if let Some(dup) = state
        .batches
        .iter()
        .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
    {
        return Ok(SeqCheck::Duplicate {
            base_offset: dup.base_offset,
            last_offset: dup.last_offset,
        });
    }
    if let Some(last) = state.batches.last() {
        let expected = wrapping_seq_add(last.last_seq, 1);
        if h.base_sequence != expected {
            return Err(StorageError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            });
        }
    }
    Ok(SeqCheck::Append)
}

/// The producer state after appending `h` at `base_offset`.
pub(crate) fn next_producer_state(
    known: Option<&ProducerRecord>,
    h: &BatchHeader,
    base_offset: i64,
    now_ms: i64,
) -> ProducerRecord {
    let epoch = i32::from(h.producer_epoch);
    let mut batches = match known {
        Some(s) if s.epoch == epoch => s.batches.clone(),
        _ => Vec::new(),
    };
    if batches.len() == PRODUCER_BATCHES_KEPT {
        batches.remove(0);
    }
    batches.push(ProducerBatch {
        first_seq: h.base_sequence,
        last_seq: h.last_sequence(),
        base_offset,
        last_offset: base_offset + i64::from(h.last_offset_delta),
    });
    ProducerRecord {
        epoch,
        batches,
        last_timestamp: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{validate, BatchBuilder};

    fn header(epoch: i16, seq: i32, n: usize) -> BatchHeader {
        let mut b = BatchBuilder::new(0).producer(7, epoch, seq);
        for _ in 0..n {
            b = b.record(0, None, b"x");
        }
        validate(&b.build()).unwrap()
    }

    #[test]
    fn sequences_advance_detect_duplicates_and_gaps() {
        let h0 = header(0, 0, 3);
        assert_eq!(check_sequence(None, &h0).unwrap(), SeqCheck::Append);
        let s = next_producer_state(None, &h0, 100, 0);
        let h1 = header(0, 3, 2);
        assert_eq!(check_sequence(Some(&s), &h1).unwrap(), SeqCheck::Append);
        let s = next_producer_state(Some(&s), &h1, 103, 0);
        assert_eq!(
            check_sequence(Some(&s), &h0).unwrap(),
            SeqCheck::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert!(matches!(
            check_sequence(Some(&s), &header(0, 9, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
    }

    #[test]
    fn epochs_fence_and_reset() {
        let s = next_producer_state(None, &header(3, 0, 1), 0, 0);
        assert!(matches!(
            check_sequence(Some(&s), &header(2, 1, 1)),
            Err(StorageError::ProducerFenced {
                current: 3,
                got: 2,
                ..
            })
        ));
        assert!(check_sequence(Some(&s), &header(4, 5, 1)).is_err());
        assert_eq!(
            check_sequence(Some(&s), &header(4, 0, 1)).unwrap(),
            SeqCheck::Append
        );
        let s2 = next_producer_state(Some(&s), &header(4, 0, 1), 1, 0);
        assert_eq!(s2.batches.len(), 1);
    }

    #[test]
    fn only_the_last_five_batches_are_kept() {
        let mut s: Option<ProducerRecord> = None;
        for i in 0..8 {
            let h = header(0, i, 1);
            s = Some(next_producer_state(s.as_ref(), &h, i64::from(i), 0));
        }
        let s = s.unwrap();
        assert_eq!(s.batches.len(), PRODUCER_BATCHES_KEPT);
        assert_eq!(s.batches[0].first_seq, 3);
    }
}
