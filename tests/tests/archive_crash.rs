//! kill -9 while the archive connector uploads: after restarts the archive is complete and
//! holds each segment once. Segments are tiny and the connector runs every few ms, so the
//! kills land while uploads are in flight (the archive lag at each kill is printed).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use strata_storage::archive::{Archive, ArchiveManifest, PartitionRef};
use strata_tests::archived::{archive_in, archived_records, manifests, topic_id};
use strata_tests::crashload::{crash_producer_config, crash_size, record_acks, CrashLoad};
use strata_tests::*;

const PARTITIONS: i32 = 2;
/// Kill/restart cycles.
const ROUNDS: usize = 8;
/// Acknowledged messages per round before the kill: random, so kills land at different
/// points of the connector's work (each round seals a few hundred segments).
const ACKED_PER_ROUND: std::ops::Range<u64> = 2_000..6_000;

/// Checks one partition's folder: the manifest's segments are contiguous from 0, each has
/// its `.log` (of the size listed) and `.index`, and no other object is there (an upload
/// cut short was redone under the same keys). The object store's staging files of writes
/// cut short are not objects; they are counted.
fn check_partition(dir: &Path, m: &ArchiveManifest) -> Result<usize> {
    let mut expect = 0;
    let mut wanted = BTreeMap::new();
    for s in &m.segments {
        ensure!(
            s.base_offset == expect,
            "segment at {} after one ending at {}",
            s.base_offset,
            expect - 1
        );
        expect = s.last_offset + 1;
        wanted.insert(format!("{:020}.log", s.base_offset), Some(s.bytes));
        wanted.insert(format!("{:020}.index", s.base_offset), None);
    }
    wanted.insert("manifest".to_string(), None);
    let mut staging = 0;
    let mut found = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains('#') {
            staging += 1;
            continue;
        }
        found.insert(name, e.metadata()?.len());
    }
    for (name, size) in &wanted {
        let got = found
            .get(name)
            .with_context(|| format!("{name} is missing"))?;
        ensure!(
            size.is_none_or(|s| s == *got),
            "{name}: {got} bytes, manifest says {size:?}"
        );
    }
    let extra: Vec<_> = found.keys().filter(|k| !wanted.contains_key(*k)).collect();
    ensure!(
        extra.is_empty(),
        "objects no manifest entry names: {extra:?}"
    );
    Ok(staging)
}

#[test]
fn the_archive_is_complete_after_kill9_during_uploads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (archive_dir, url) = archive_in(dir.path());
    let env = [
        ("STRATA_ARCHIVE_URL", url.as_str()),
        // The smallest segments allowed: nearly every produce request seals one.
        ("STRATA_SEGMENT_BYTES", "1024"),
        ("STRATA_ARCHIVE_INTERVAL_MS", "5"),
    ];
    let mut broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &env)?;
    let bs = broker.bootstrap();
    let topic = topic_name("archive-crash");
    try_create_topic_with(
        &bs,
        &topic,
        PARTITIONS,
        &[("remote.storage.enable", "true"), ("retention.ms", "-1")],
    )?
    .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    let id = topic_id(&bs, &topic)?;
    let archive = Archive::open(&url)?;
    let config = crash_producer_config(&bs, false);
    let load = CrashLoad {
        config: &config,
        topic: &topic,
        partitions: PARTITIONS,
        size: crash_size,
    };
    let mut acked: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    let mut next_id = 0;
    for round in 0..ROUNDS {
        let acks = rand::random_range(ACKED_PER_ROUND);
        let (reports, next) =
            load.produce_until_crash(&mut broker, next_id, acks, BrokerProcess::kill9)?;
        next_id = next;
        record_acks(&mut acked, &reports).with_context(|| format!("round {round}"))?;
        let archived: Vec<i64> = manifests(&archive, &topic, id, PARTITIONS)?
            .iter()
            .map(ArchiveManifest::next_offset)
            .collect();
        let acked_ends: Vec<i64> = (0..PARTITIONS)
            .map(|p| {
                acked
                    .range((p, 0)..(p + 1, 0))
                    .next_back()
                    .map_or(0, |(k, _)| k.1 + 1)
            })
            .collect();
        eprintln!("round {round}: killed with the archive at {archived:?}, acknowledged up to {acked_ends:?}");
        broker.restart()?;
    }

    // The connector catches up; then the archive must stay as it is (all sealed segments in).
    let mut last = Vec::new();
    let settled = wait_until(
        "the archive to settle",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let now = manifests(&archive, &topic, id, PARTITIONS).map_err(|e| e.to_string())?;
            let ends: Vec<i64> = now.iter().map(ArchiveManifest::next_offset).collect();
            if ends == last && ends.iter().all(|&e| e > 0) {
                Ok(now)
            } else {
                let was = std::mem::replace(&mut last, ends);
                Err(format!("archive ends {was:?}, then {last:?}"))
            }
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut staging = 0;
    for (p, m) in settled.iter().enumerate() {
        let folder = archive_dir
            .join(&topic)
            .join(id.simple().to_string())
            .join(p.to_string());
        staging += check_partition(&folder, m).with_context(|| format!("partition {p}"))?;
        // Every archived record is one we sent, where it was acknowledged.
        let part = PartitionRef {
            topic: &topic,
            topic_id: id,
            partition: p as i32,
        };
        let records = archived_records(&archive, part, m)?;
        ensure!(
            records.len() as i64 == m.next_offset(),
            "partition {p}: offsets not dense"
        );
        for (offset, _, value) in &records {
            let found = value.as_deref().and_then(message_index);
            if let Some(&want) = acked.get(&(p as i32, *offset)) {
                ensure!(
                    found == Some(want),
                    "partition {p} offset {offset}: {found:?}, acknowledged {want}"
                );
            }
        }
        rt.block_on(archive.checked_manifest(part))?;
    }
    let check = load
        .verify_acked(&bs, &acked, next_id)
        .with_context(|| broker.log_tail(3000))?;
    eprintln!(
        "archive ends {:?} ({} segments), watermarks {:?}, {} acknowledged, {staging} staging files of cut writes",
        settled.iter().map(ArchiveManifest::next_offset).collect::<Vec<_>>(),
        settled.iter().map(|m| m.segments.len()).sum::<usize>(),
        check.marks,
        acked.len()
    );
    let status = broker.terminate()?;
    ensure!(status.success(), "final SIGTERM: exit {status}");
    Ok(())
}
