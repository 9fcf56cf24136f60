//! Crash under load, shared by the kill -9 and the power-loss tests: a producer sends test
//! messages without pause until some acknowledgements arrived, the broker is brought down
//! mid-stream, and afterwards every acknowledged write is looked for at the offset it was
//! acknowledged with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::producer::Producer;
use rdkafka::ClientConfig;

use crate::{
    check_dense, consume_all, message_index, new_consumer, produce_test_messages,
    recording_producer, watermarks, BrokerProcess, Delivery, TestMessage, CALL_TIMEOUT,
    CONSUME_TIMEOUT,
};

/// Cap on messages sent but not yet reported, so that a crash finds work in flight without
/// librdkafka queueing hundreds of thousands of messages.
const MAX_IN_FLIGHT: u64 = 5_000;

/// How long a round may take to collect its acknowledgements: only a hung broker gets near.
const ROUND_DEADLINE: Duration = Duration::from_secs(120);

/// Value size of test message `i` in crash tests: small and varied.
pub fn crash_size(i: u64) -> usize {
    100 + (i % 50) as usize
}

/// Producer settings for crash rounds: tiny linger and batches, so many requests are in
/// flight when the broker goes down.
pub fn crash_producer_config(bootstrap: &str, idempotent: bool) -> ClientConfig {
    let mut cfg = crate::producer_config(bootstrap);
    cfg.set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .set("batch.num.messages", "200")
        .set(
            "enable.idempotence",
            if idempotent { "true" } else { "false" },
        );
    cfg
}

/// A crash-test load: test messages (message `i` with `size(i)` value bytes, in partition
/// `i % partitions`) sent to `topic` by a producer built from `config`.
pub struct CrashLoad<'a> {
    pub config: &'a ClientConfig,
    pub topic: &'a str,
    pub partitions: i32,
    pub size: fn(u64) -> usize,
}

impl CrashLoad<'_> {
    /// Sends messages `first_id..` until `acks_before_kill` were acknowledged, then runs
    /// `crash` on the broker while the producer is still sending. Returns every delivery
    /// report (what was in flight is reported as failed when the producer is dropped) and
    /// the next unused message id.
    pub fn produce_until_crash(
        &self,
        broker: &mut BrokerProcess,
        first_id: u64,
        acks_before_kill: u64,
        crash: impl FnOnce(&mut BrokerProcess) -> Result<()>,
    ) -> Result<(Vec<Delivery>, u64)> {
        let (topic, partitions, size) = (self.topic, self.partitions, self.size);
        let producer = recording_producer(self.config)?;
        let recorder = producer.context().clone();
        let stop = AtomicBool::new(false);
        let next_id = AtomicU64::new(first_id);

        let crash_result = std::thread::scope(|s| {
            let sender = s.spawn(|| -> Result<()> {
                let mut i = first_id;
                while !stop.load(Ordering::SeqCst) {
                    if i - first_id - recorder.reported() > MAX_IN_FLIGHT {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    produce_test_messages(&producer, topic, i..i + 1, partitions, size)?;
                    i += 1;
                    next_id.store(i, Ordering::SeqCst);
                }
                Ok(())
            });
            let deadline = Instant::now() + ROUND_DEADLINE;
            let waited = loop {
                if recorder.acked() >= acks_before_kill {
                    break Ok(());
                }
                if sender.is_finished() || Instant::now() > deadline {
                    break Err(anyhow!(
                        "only {} acks ({} failures) before the deadline",
                        recorder.acked(),
                        recorder.failed()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            // Crash mid-stream: the sender is still running.
            let crashed = waited.and_then(|()| crash(broker));
            stop.store(true, Ordering::SeqCst);
            let sent = sender.join().map_err(|_| anyhow!("sender panicked"))?;
            sent.context("sender")?;
            crashed
        });
        // Dropping the producer purges what is still queued or in flight (reported as failed).
        drop(producer);
        crash_result?;
        Ok((recorder.take(), next_id.load(Ordering::SeqCst)))
    }
}

/// Adds the successful reports to `acked` ((partition, offset) -> message id); fails if two
/// messages were acknowledged at one offset. Returns how many were added.
pub fn record_acks(acked: &mut BTreeMap<(i32, i64), u64>, reports: &[Delivery]) -> Result<usize> {
    let mut n = 0;
    for d in reports.iter().filter(|d| d.error.is_none()) {
        if let Some(prev) = acked.insert((d.partition, d.offset), d.id) {
            bail!(
                "ids {prev} and {} both acknowledged at {}/{}",
                d.id,
                d.partition,
                d.offset
            );
        }
        n += 1;
    }
    Ok(n)
}

/// What [`check_acked`] found.
#[derive(Debug)]
pub struct AckCheck {
    /// (low, high) watermark per partition; empty when the topic itself is gone.
    pub marks: Vec<(i64, i64)>,
    /// Records read back (all intact, dense from offset 0, each one a message we sent).
    pub stored: usize,
    /// Acknowledged messages not found at their offset: (partition, offset, id, id found).
    pub lost: Vec<(i32, i64, u64, Option<u64>)>,
}

/// Whether `topic` exists (Metadata without auto-creation).
fn topic_exists(bootstrap: &str, topic: &str) -> Result<bool> {
    let consumer = new_consumer(bootstrap)?;
    let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, CALL_TIMEOUT)?;
    Ok(md.topics().iter().any(|t| t.name() == topic))
}

impl CrashLoad<'_> {
    /// Reads the whole topic and compares it with the acknowledged writes. Fails on
    /// anything a crash may never cause (a gap, a corrupt or foreign record, a message in
    /// the wrong partition); reports acknowledged messages that are missing in
    /// [`AckCheck::lost`] (a vanished topic loses every one of them).
    pub fn check_acked(
        &self,
        bootstrap: &str,
        acked: &BTreeMap<(i32, i64), u64>,
        sent: u64,
    ) -> Result<AckCheck> {
        let (topic, partitions) = (self.topic, self.partitions);
        if !topic_exists(bootstrap, topic)? {
            let lost = acked
                .iter()
                .map(|(&(p, o), &id)| (p, o, id, None))
                .collect();
            return Ok(AckCheck {
                marks: Vec::new(),
                stored: 0,
                lost,
            });
        }
        let marks = watermarks(bootstrap, topic)?;
        let recs = consume_all(bootstrap, topic, CONSUME_TIMEOUT)?;
        let mut stored = 0;
        for (p, &(lo, hi)) in marks.iter().enumerate() {
            let p = p as i32;
            ensure!(
                lo == 0,
                "partition {p}: log start {lo}, nothing was deleted"
            );
            let got = recs.get(&p).map(Vec::as_slice).unwrap_or_default();
            check_dense(got, 0, hi).map_err(|e| anyhow!("partition {p}: {e}"))?;
            for rec in got {
                // Every stored record is one we sent (acknowledged or not), intact.
                let value = rec.payload.as_deref().unwrap_or_default();
                let Some(id) = message_index(value) else {
                    bail!(
                        "partition {p} offset {}: foreign value {value:?}",
                        rec.offset
                    );
                };
                ensure!(
                    id < sent,
                    "offset {} holds id {id} that was never sent",
                    rec.offset
                );
                TestMessage::new(id, (self.size)(id)).check(rec)?;
                ensure!(
                    id % partitions as u64 == p as u64,
                    "id {id} in partition {p}"
                );
            }
            stored += got.len();
        }
        let lost = acked
            .iter()
            .filter_map(|(&(p, offset), &id)| {
                let found = recs
                    .get(&p)
                    .and_then(|r| r.get(offset as usize))
                    .and_then(|r| r.payload.as_deref())
                    .and_then(message_index);
                (found != Some(id)).then_some((p, offset, id, found))
            })
            .collect();
        Ok(AckCheck {
            marks,
            stored,
            lost,
        })
    }

    /// [`CrashLoad::check_acked`], failing unless every acknowledged message is there.
    pub fn verify_acked(
        &self,
        bootstrap: &str,
        acked: &BTreeMap<(i32, i64), u64>,
        sent: u64,
    ) -> Result<AckCheck> {
        let check = self.check_acked(bootstrap, acked, sent)?;
        check.ensure_nothing_lost()?;
        Ok(check)
    }
}

impl AckCheck {
    /// Fails, naming the first few, if any acknowledged message is missing.
    pub fn ensure_nothing_lost(&self) -> Result<()> {
        ensure!(
            self.lost.is_empty(),
            "{} acknowledged messages missing or moved (partition, offset, id, found id): first {:?}; watermarks {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)],
            self.marks
        );
        Ok(())
    }
}
