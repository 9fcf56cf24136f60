//! Helpers of the archive tests: the topic id a broker gives a topic, waiting for the
//! connector, a producer whose batches stay below a small segment, and the `archive` tool
//! run as the operator runs it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use strata_storage::archive::{Archive, ArchiveManifest, PartitionRef};

use crate::{producer_config, raw, recording_producer, wait_until, RecordingProducer};

/// A producer whose batches stay well below a segment (librdkafka would otherwise put the
/// whole test's records in one or two batches, hence one segment).
pub fn small_batch_producer(bs: &str) -> Result<RecordingProducer> {
    let mut cfg = producer_config(bs);
    cfg.set("batch.size", "4096");
    recording_producer(&cfg)
}

/// The topic id the broker at `bs` reports for `topic` (Metadata).
pub fn topic_id(bs: &str, topic: &str) -> Result<uuid::Uuid> {
    raw::topic_id(bs.parse()?, topic)
}

/// Waits until the partition's manifest passes `check` (whose error says what it is instead).
pub fn wait_manifest(
    archive: &Archive,
    p: PartitionRef<'_>,
    what: &str,
    check: impl Fn(&ArchiveManifest) -> Result<(), String>,
) -> Result<ArchiveManifest> {
    wait_manifest_for(archive, p, what, Duration::from_secs(60), check)
}

/// [`wait_manifest`], waiting up to `timeout`.
pub fn wait_manifest_for(
    archive: &Archive,
    p: PartitionRef<'_>,
    what: &str,
    timeout: Duration,
    check: impl Fn(&ArchiveManifest) -> Result<(), String>,
) -> Result<ArchiveManifest> {
    // With I/O and timers: an S3 archive's client needs them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    wait_until(what, timeout, Duration::from_millis(100), || {
        let m = rt
            .block_on(archive.manifest(p))
            .map_err(|e| e.to_string())?;
        check(&m).map(|()| m)
    })
}

/// Waits until the archive holds offsets below `at_least`.
pub fn wait_archived(
    archive: &Archive,
    p: PartitionRef<'_>,
    at_least: i64,
) -> Result<ArchiveManifest> {
    wait_manifest(archive, p, "the archive to catch up", |m| {
        if m.next_offset() >= at_least {
            Ok(())
        } else {
            Err(format!("archived up to {}", m.next_offset()))
        }
    })
}

/// An archived record: offset, key, value.
pub type ArchivedRecord = (i64, Option<Bytes>, Option<Bytes>);

/// Every record of the archived segments, decoded; fails unless the segments are
/// contiguous, sized as the manifest says, and indexed batch by batch.
pub fn archived_records(
    archive: &Archive,
    p: PartitionRef<'_>,
    m: &ArchiveManifest,
) -> Result<Vec<ArchivedRecord>> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let mut out = Vec::new();
    let mut expect_base = m.segments.first().map_or(0, |s| s.base_offset);
    for s in &m.segments {
        ensure!(
            s.base_offset == expect_base,
            "segment at {} after one ending at {}",
            s.base_offset,
            expect_base - 1
        );
        expect_base = s.last_offset + 1;
        let mut data = rt.block_on(archive.segment_data(p, s.base_offset))?;
        ensure!(
            data.len() as u64 == s.bytes,
            "segment {} size",
            s.base_offset
        );
        let index = rt.block_on(archive.segment_index(p, s.base_offset))?;
        ensure!(index.batches.len() as u32 == s.batches);
        let total = data.len();
        for entry in &index.batches {
            ensure!(
                total - data.len() == entry.position as usize,
                "index position {} of batch {}",
                entry.position,
                entry.base_offset
            );
            let set = strata_broker::codec::decode_batch(&mut data)
                .with_context(|| format!("batch at {}", entry.base_offset))?;
            ensure!(set.records.first().map(|r| r.offset) == Some(entry.base_offset));
            ensure!(set.records.last().map(|r| r.offset) == Some(entry.last_offset));
            out.extend(set.records.into_iter().map(|r| (r.offset, r.key, r.value)));
        }
        ensure!(data.is_empty(), "bytes after the last indexed batch");
    }
    Ok(out)
}

/// The manifests of partitions `0..partitions` of a topic.
pub fn manifests(
    archive: &Archive,
    topic: &str,
    id: uuid::Uuid,
    partitions: i32,
) -> Result<Vec<ArchiveManifest>> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    (0..partitions)
        .map(|partition| {
            let p = PartitionRef {
                topic,
                topic_id: id,
                partition,
            };
            Ok(rt.block_on(archive.manifest(p))?)
        })
        .collect()
}

/// A temporary directory's archive folder and its `file://` URL.
pub fn archive_in(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let folder = dir.join("archive");
    let url = format!("file://{}", folder.display());
    (folder, url)
}

/// `strata-broker archive <args>` (the test broker binary), with no `STRATA_*` variable
/// inherited; its exit status, stdout and stderr.
pub fn archive_tool(args: &[&str]) -> Result<std::process::Output> {
    let mut cmd = std::process::Command::new(crate::broker_binary()?);
    cmd.arg("archive").args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            cmd.env_remove(key);
        }
    }
    Ok(cmd.output()?)
}

/// [`wait_archived`], waiting up to `timeout`.
pub fn wait_archived_for(
    archive: &Archive,
    p: PartitionRef<'_>,
    at_least: i64,
    timeout: Duration,
) -> Result<ArchiveManifest> {
    wait_manifest_for(archive, p, "the archive to catch up", timeout, |m| {
        if m.next_offset() >= at_least {
            Ok(())
        } else {
            Err(format!("archived up to {}", m.next_offset()))
        }
    })
}

/// The local log start of partition 0: ListOffsets EARLIEST_LOCAL (KIP-405, -4), which,
/// unlike EARLIEST, does not reach into the archive.
pub fn local_log_start(bs: &str, topic: &str) -> Result<i64> {
    raw::list_offset(bs.parse()?, topic, 0, -4)
}

/// Waits until retention has moved the local log start of partition 0 past 0 (dropped
/// archived segments locally); returns it.
pub fn wait_local_log_start_moved(bs: &str, topic: &str) -> Result<i64> {
    wait_until(
        "retention to drop archived segments locally",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match local_log_start(bs, topic).map_err(|e| e.to_string())? {
            0 => Err("local log start 0".into()),
            n => Ok(n),
        },
    )
}

/// Checks that partition 0 of `topic` starts at offset 0 and ends at `messages`, and that
/// librdkafka reading it from offset 0 gets test messages `0..messages` (values `size`
/// bytes) back intact, wherever they are kept.
pub fn replay_from_zero(bs: &str, topic: &str, messages: u64, size: usize) -> Result<()> {
    let (low, high) = crate::watermarks(bs, topic)?[0];
    anyhow::ensure!(
        low == 0 && high == messages as i64,
        "watermarks {low}..{high}"
    );
    let recs = crate::consume_all(bs, topic, crate::CONSUME_TIMEOUT)?;
    crate::verify_test_messages(&recs, 0..messages, 1, |_| size)
}
