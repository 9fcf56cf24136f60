//! kill -9 under acks=all load: every write the broker acknowledged before it was killed is
//! readable after a restart, at the offset it was acknowledged with, and offsets stay dense.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use strata_tests::crashload::{crash_producer_config, crash_size, record_acks, CrashLoad};
use strata_tests::*;

const PARTITIONS: i32 = 2;
/// Kill/restart cycles.
const ROUNDS: usize = 4;
/// Acknowledged messages per round before the kill (the producer keeps sending meanwhile):
/// a random number in this range, so kills land at different points of the broker's work.
const ACKED_PER_ROUND: std::ops::Range<u64> = 500..4_000;

/// Runs `ROUNDS` produce/kill -9/restart/verify cycles against a broker with `fsync` set.
fn kill9_rounds(fsync: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let fsync_env = if fsync { "true" } else { "false" };
    let mut broker = BrokerProcess::spawn(&data, 0, &[("STRATA_FSYNC", fsync_env)])?;
    let bs = broker.bootstrap();
    let topic = topic_name("crash");
    create_topic(&bs, &topic, PARTITIONS)?;

    let config = crash_producer_config(&bs, false);
    let load = CrashLoad {
        config: &config,
        topic: &topic,
        partitions: PARTITIONS,
        size: crash_size,
    };
    let mut acked: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut next_id = 0;
    for r in 0..ROUNDS {
        let acks_before_kill = rand::random_range(ACKED_PER_ROUND);
        let (reports, next) =
            load.produce_until_crash(&mut broker, next_id, acks_before_kill, BrokerProcess::kill9)?;
        next_id = next;
        let ok = record_acks(&mut acked, &reports).with_context(|| format!("round {r}"))?;
        broker.restart()?;
        let check = load.verify_acked(&bs, &acked, next_id).with_context(|| {
            format!(
                "fsync={fsync}, after kill -9 #{}; broker log tail:\n{}",
                r + 1,
                broker.log_tail(3000)
            )
        })?;
        eprintln!(
            "fsync={fsync} round {r}: killed after {} acks ({} unacknowledged purged); \
             {} acked in total, {} sent; watermarks after restart {:?}",
            ok,
            reports.len() - ok,
            acked.len(),
            next_id,
            check.marks
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
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &[])?;
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
