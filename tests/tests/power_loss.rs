//! Power loss under an idempotent acks=all load: the broker's data directory is a
//! [`PowerFs`] mount, which keeps only what was fsynced when the power is cut. With the
//! fsync policy on, every acknowledged record is there afterwards, at its offset, with
//! dense offsets; with it off, acknowledged records are lost — so the test can tell a
//! broker that makes writes durable before acknowledging them from one that does not
//! (a plain kill -9 cannot: the page cache survives it).
//!
//! Skipped, with a message saying why, where FUSE is unavailable.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use strata_tests::crashload::{
    crash_producer_config, crash_size, record_acks, AckCheck, CrashLoad,
};
use strata_tests::powerfs::{self, PowerFs};
use strata_tests::*;

/// Two partitions: one group commit then covers appends to several partitions, and a cut
/// can land between them.
const PARTITIONS: i32 = 2;
/// Power cuts with fsync on: each one lands at a different point of the broker's work
/// (random ack count below); 5 take ~15 s on 2 cores.
const CYCLES: usize = 5;
/// Acknowledged records per cycle before the cut (the producer keeps sending meanwhile): a
/// random number in this range, so cuts land at different points of the broker's work.
const ACKED_PER_CYCLE: std::ops::Range<u64> = 1_000..4_000;
/// Half the records are 64 KiB (the others ~100 bytes, both in each partition): a cycle then
/// writes more than the 64 MiB memtable, so the cuts also land around memtable flushes (new
/// table and blob files, MANIFEST and CURRENT updates) and switches to new or recycled WAL
/// files, not only in the middle of WAL appends.
fn record_size(i: u64) -> usize {
    if i % 4 >= 2 {
        64 << 10
    } else {
        crash_size(i)
    }
}

/// Mounts a PowerFs at `mountpoint`, or says why this machine cannot (then the test passes
/// as skipped: FUSE is a property of the machine, not of the broker).
fn mount_or_skip(mountpoint: &Path, test: &str) -> Result<Option<PowerFs>> {
    if let Some(reason) = powerfs::unavailable_reason() {
        eprintln!("SKIPPED {test}: FUSE unavailable: {reason}");
        return Ok(None);
    }
    std::fs::create_dir_all(mountpoint)?;
    match PowerFs::mount(mountpoint) {
        Ok(fs) => Ok(Some(fs)),
        Err(e) => {
            eprintln!("SKIPPED {test}: FUSE mount failed: {e:#}");
            Ok(None)
        }
    }
}

struct Outcome {
    cycles: usize,
    acked: usize,
    checks: Vec<AckCheck>,
}

/// Runs `cycles` rounds of: idempotent acks=all load, SIGKILL, power cut, restart, check.
/// Returns None when skipped.
fn power_cut_cycles(fsync: bool, cycles: usize, test: &str) -> Result<Option<Outcome>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let Some(mut fs) = mount_or_skip(&data, test)? else {
        return Ok(None);
    };
    let env = [
        ("STRATA_FSYNC", if fsync { "true" } else { "false" }),
        // A lost topic must stay lost, not come back empty through auto-creation.
        ("STRATA_AUTO_CREATE_TOPICS", "false"),
    ];
    let mut broker = BrokerProcess::spawn(&data, 0, &env)?;
    let bs = broker.bootstrap();
    let topic = topic_name("power");
    create_topic(&bs, &topic, PARTITIONS)?;

    let config = crash_producer_config(&bs, true);
    let load = CrashLoad {
        config: &config,
        topic: &topic,
        partitions: PARTITIONS,
        size: record_size,
    };
    let mut acked: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut next_id = 0;
    let mut checks = Vec::new();
    for cycle in 0..cycles {
        let acks_before_cut = rand::random_range(ACKED_PER_CYCLE);
        let mut cut = None;
        let (reports, next) =
            load.produce_until_crash(&mut broker, next_id, acks_before_cut, |b| {
                b.kill9()?;
                cut = Some(fs.cut_power()?);
                Ok(())
            })?;
        next_id = next;
        let ok = record_acks(&mut acked, &reports).with_context(|| format!("cycle {cycle}"))?;
        broker.restart()?;
        let check = load.check_acked(&bs, &acked, next_id).with_context(|| {
            format!(
                "fsync={fsync}, after power cut #{}; broker log tail:\n{}",
                cycle + 1,
                broker.log_tail(3000)
            )
        })?;
        eprintln!(
            "fsync={fsync} cycle {cycle}: cut after {ok} acks; power cut dropped {:?}; \
             {} acked so far, {} sent, {} stored, {} acknowledged lost; watermarks {:?}",
            cut,
            acked.len(),
            next_id,
            check.stored,
            check.lost.len(),
            check.marks
        );
        let lost_any = !check.lost.is_empty();
        checks.push(check);
        if lost_any {
            // Later cycles cannot tell new losses from old ones.
            break;
        }
    }
    let status = broker.terminate()?;
    ensure!(status.success(), "final SIGTERM: exit {status}");
    let mut files: Vec<String> = std::fs::read_dir(fs.path())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    // A restart flushes the WAL it recovered into one blob file, and so does each memtable
    // flush while the load runs: the count shows whether cuts met flushes too.
    let blobs = files.iter().filter(|f| f.ends_with(".blob")).count();
    eprintln!(
        "fsync={fsync}: {blobs} blob files after {} restarts; data directory at the end: {files:?}",
        checks.len()
    );
    drop(fs);
    Ok(Some(Outcome {
        cycles: checks.len(),
        acked: acked.len(),
        checks,
    }))
}

#[test]
fn acked_writes_survive_power_loss_with_fsync() -> Result<()> {
    let test = "acked_writes_survive_power_loss_with_fsync";
    let Some(out) = power_cut_cycles(true, CYCLES, test)? else {
        return Ok(());
    };
    let checked: usize = out.checks.iter().map(|c| c.stored).sum();
    for (i, check) in out.checks.iter().enumerate() {
        check
            .ensure_nothing_lost()
            .with_context(|| format!("power cut #{}", i + 1))?;
    }
    eprintln!(
        "power loss with fsync: {} cycles, {} records acknowledged, {checked} record reads \
         checked, 0 acknowledged records lost",
        out.cycles, out.acked
    );
    Ok(())
}

/// The control: the same cut with the fsync policy off loses acknowledged records. If this
/// fails, the power-loss test above proves nothing.
#[test]
fn power_loss_without_fsync_loses_acked_writes() -> Result<()> {
    let test = "power_loss_without_fsync_loses_acked_writes";
    let Some(out) = power_cut_cycles(false, 1, test)? else {
        return Ok(());
    };
    let lost: usize = out.checks.iter().map(|c| c.lost.len()).sum();
    eprintln!(
        "power loss without fsync: {} acknowledged, {lost} lost after {} cut(s)",
        out.acked, out.cycles
    );
    ensure!(
        lost > 0,
        "with fsync=false a power cut lost none of {} acknowledged records: the file system \
         does not drop unsynced data, so the fsync test would pass without fsync too",
        out.acked
    );
    Ok(())
}
