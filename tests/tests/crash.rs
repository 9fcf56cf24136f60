//! kill -9 under acks=all load: every write the broker acknowledged before it was killed is
//! readable after a restart, at the offset it was acknowledged with, and offsets stay dense.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::producer::Producer;
use strata_tests::*;

const PARTITIONS: i32 = 2;
/// Kill/restart cycles.
const ROUNDS: usize = 4;
/// Acknowledged messages per round before the kill (the producer keeps sending meanwhile):
/// a random number in this range, so kills land at different points of the broker's work.
const ACKED_PER_ROUND: std::ops::Range<u64> = 500..4_000;
/// Cap on messages sent but not yet reported, so that a kill finds work in flight without
/// librdkafka queueing hundreds of thousands of messages.
const MAX_IN_FLIGHT: u64 = 5_000;

fn size(i: u64) -> usize {
    100 + (i % 50) as usize
}

/// Runs one producer until `ACKED_PER_ROUND` acks arrived, SIGKILLs the broker while the
/// producer is still sending, and returns all delivery reports and the next unused id.
fn round(
    broker: &mut BrokerProcess,
    topic: &str,
    first_id: u64,
    acks_before_kill: u64,
) -> Result<(Vec<Delivery>, u64)> {
    let bs = broker.bootstrap();
    let mut cfg = producer_config(&bs);
    cfg.set("linger.ms", "1")
        .set("message.timeout.ms", "30000")
        .set("batch.num.messages", "200");
    let producer = recording_producer(&cfg)?;
    let recorder = producer.context().clone();
    let stop = AtomicBool::new(false);
    let next_id = AtomicU64::new(first_id);

    let kill_result = std::thread::scope(|s| {
        let sender = s.spawn(|| -> Result<()> {
            let mut i = first_id;
            while !stop.load(Ordering::SeqCst) {
                if i - first_id - recorder.reported() > MAX_IN_FLIGHT {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                produce_test_messages(&producer, topic, i..i + 1, PARTITIONS, size)?;
                i += 1;
                next_id.store(i, Ordering::SeqCst);
            }
            Ok(())
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let waited = loop {
            if recorder.acked() >= acks_before_kill {
                break Ok(());
            }
            if sender.is_finished() || Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "only {} acks ({} failures) before the deadline",
                    recorder.acked(),
                    recorder.failed()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // Kill mid-stream: the sender is still running.
        let killed = waited.and_then(|()| broker.kill9());
        stop.store(true, Ordering::SeqCst);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))?;
        sent.context("sender")?;
        killed
    });
    // Dropping the producer purges what is still queued or in flight (reported as failed).
    drop(producer);
    kill_result?;
    Ok((recorder.take(), next_id.load(Ordering::SeqCst)))
}

/// Reads the whole topic and checks it against the acknowledged writes.
fn verify(
    bs: &str,
    topic: &str,
    acked: &BTreeMap<(i32, i64), u64>,
    sent: u64,
) -> Result<Vec<(i64, i64)>> {
    let marks = watermarks(bs, topic)?;
    let recs = consume_all(bs, topic, CONSUME_TIMEOUT)?;
    for (p, &(lo, hi)) in marks.iter().enumerate() {
        let p = p as i32;
        ensure!(
            lo == 0,
            "partition {p}: log start {lo}, nothing was deleted"
        );
        let got = recs.get(&p).map(Vec::as_slice).unwrap_or_default();
        check_dense(got, 0, hi).map_err(|e| anyhow::anyhow!("partition {p}: {e}"))?;
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
            TestMessage::new(id, size(id)).check(rec)?;
            ensure!(
                id % PARTITIONS as u64 == p as u64,
                "id {id} in partition {p}"
            );
        }
    }
    let mut lost = Vec::new();
    for (&(p, offset), &id) in acked {
        let found = recs
            .get(&p)
            .and_then(|r| r.get(offset as usize))
            .and_then(|r| r.payload.as_deref())
            .and_then(message_index);
        if found != Some(id) {
            lost.push((p, offset, id, found));
        }
    }
    ensure!(
        lost.is_empty(),
        "{} acknowledged messages missing or moved (partition, offset, id, found id): first {:?}; watermarks {marks:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    Ok(marks)
}

/// Runs `ROUNDS` produce/kill -9/restart/verify cycles against a broker with `fsync` set.
fn kill9_rounds(fsync: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let fsync_env = if fsync { "true" } else { "false" };
    let mut broker = BrokerProcess::spawn(&data, free_port()?, &[("STRATA_FSYNC", fsync_env)])?;
    let bs = broker.bootstrap();
    let topic = topic_name("crash");
    create_topic(&bs, &topic, PARTITIONS)?;

    let mut acked: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut next_id = 0;
    for r in 0..ROUNDS {
        let acks_before_kill = rand::random_range(ACKED_PER_ROUND);
        let (reports, next) = round(&mut broker, &topic, next_id, acks_before_kill)?;
        next_id = next;
        let ok: Vec<_> = reports.iter().filter(|d| d.error.is_none()).collect();
        for d in &ok {
            if let Some(prev) = acked.insert((d.partition, d.offset), d.id) {
                bail!(
                    "round {r}: ids {prev} and {} both acknowledged at {}/{}",
                    d.id,
                    d.partition,
                    d.offset
                );
            }
        }
        broker.restart()?;
        let marks = verify(&bs, &topic, &acked, next_id).with_context(|| {
            format!(
                "fsync={fsync}, after kill -9 #{}; broker log tail:\n{}",
                r + 1,
                broker.log_tail(3000)
            )
        })?;
        eprintln!(
            "fsync={fsync} round {r}: killed after {} acks ({} unacknowledged purged); \
             {} acked in total, {} sent; watermarks after restart {marks:?}",
            ok.len(),
            reports.len() - ok.len(),
            acked.len(),
            next_id
        );
    }
    let status = broker.terminate()?;
    ensure!(status.success(), "final SIGTERM: exit {status}");
    Ok(())
}

#[test]
fn acked_writes_survive_kill9_under_load() -> Result<()> {
    kill9_rounds(true)
}

/// A process crash (unlike a power loss) does not lose what the broker handed to the OS, so
/// acknowledged writes survive kill -9 even with fsync off.
#[test]
fn acked_writes_survive_kill9_with_fsync_off() -> Result<()> {
    kill9_rounds(false)
}

/// Topic creation and deletion, once acknowledged, survive kill -9 too.
#[test]
fn topic_changes_survive_kill9() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), free_port()?, &[])?;
    let bs = broker.bootstrap();
    let kept = topic_name("kept");
    let gone = topic_name("gone");
    create_topic(&bs, &gone, 1)?;
    broker.kill9()?;
    broker.restart()?;
    ensure!(partition_count(&bs, &gone)? == 1, "{gone} lost by kill -9");

    create_topic(&bs, &kept, 3)?;
    ensure!(delete_topic(&bs, &gone)? == Ok(()));
    broker.kill9()?;
    broker.restart()?;
    ensure!(partition_count(&bs, &kept)? == 3, "{kept} lost by kill -9");
    let consumer = new_consumer(&bs)?;
    let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, CALL_TIMEOUT)?;
    ensure!(
        !md.topics().iter().any(|t| t.name() == gone),
        "deleted topic {gone} is back after kill -9"
    );
    Ok(())
}
