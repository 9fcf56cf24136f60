//! The archive on S3 (an in-process s3s-fs server, real HTTP and request signing): librdkafka
//! replays from offset 0 after local retention dropped the archived segments; large segments
//! go up as multipart uploads equal to the local export; a store that is down for a while
//! or refuses the credentials is retried with backoff and reported in the log while the
//! broker keeps serving, and the archive catches up with no gap and no duplicate.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use strata_storage::archive::{Archive, ArchiveManifest, PartitionRef};
use strata_tests::archived::{
    replay_from_zero, small_batch_producer, topic_id, wait_archived, wait_archived_for,
    wait_local_log_start_moved, wait_manifest_for,
};
use strata_tests::s3::{S3Server, SECRET_KEY};
use strata_tests::*;

const BUCKET: &str = "strata";
/// Small segments (the minimum is 1 KiB), so a few hundred KiB of records seal dozens.
const SEGMENT_BYTES: u64 = 16 * 1024;
const MESSAGES: u64 = 600;
const SIZE: usize = 1000;

/// A broker process archiving to `url` on `s3` with `secret`, and the settings in `extra`.
fn spawn_broker(
    data: &Path,
    s3: &S3Server,
    url: &str,
    secret: &str,
    extra: &[(&str, &str)],
) -> Result<BrokerProcess> {
    let segment_bytes = SEGMENT_BYTES.to_string();
    let mut env: Vec<(String, String)> = s3.env(secret);
    for (k, v) in [
        ("STRATA_SEGMENT_BYTES", segment_bytes.as_str()),
        ("STRATA_ARCHIVE_URL", url),
        ("STRATA_ARCHIVE_INTERVAL_MS", "100"),
        ("STRATA_RETENTION_CHECK_INTERVAL_MS", "100"),
    ]
    .iter()
    .chain(extra)
    {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    BrokerProcess::spawn(data, 0, &env)
}

/// Creates an archived topic (one partition) with `configs` and returns it with its
/// archive coordinates.
fn archived_topic(
    bs: &str,
    prefix: &str,
    configs: &[(&str, &str)],
) -> Result<(String, uuid::Uuid)> {
    let topic = topic_name(prefix);
    let mut all = vec![("remote.storage.enable", "true")];
    all.extend_from_slice(configs);
    try_create_topic_with(bs, &topic, 1, &all)?
        .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    let id = topic_id(bs, &topic)?;
    Ok((topic, id))
}

/// A one-partition archived topic filled with the test messages, once the archive holds at
/// least half of them and local retention has dropped some: (topic, id, archive, local log
/// start). The test messages are stamped 2023: a minute of local retention has long expired
/// them, so every segment leaves local disk once the archive holds it; the archive keeps all.
fn archived_then_dropped_locally(
    bs: &str,
    s3: &S3Server,
    url: &str,
    prefix: &str,
) -> Result<(String, uuid::Uuid, Archive, i64)> {
    let (topic, id) = archived_topic(
        bs,
        prefix,
        &[("retention.ms", "-1"), ("local.retention.ms", "60000")],
    )?;
    let producer = small_batch_producer(bs)?;
    produce_and_wait(&producer, &topic, 0..MESSAGES, 1, |_| SIZE)?;
    let archive = s3.archive(url)?;
    let p = PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    };
    wait_archived(&archive, p, MESSAGES as i64 / 2)?;
    let start = wait_local_log_start_moved(bs, &topic)?;
    Ok((topic, id, archive, start))
}

/// Names of the objects a manifest's segments have.
fn names(m: &ArchiveManifest) -> BTreeSet<String> {
    m.segments
        .iter()
        .flat_map(|s| ["log", "index"].map(|e| format!("{:020}.{e}", s.base_offset)))
        .chain(["manifest".to_string()])
        .collect()
}

/// Checks that the manifest's segments tile the offsets from 0 and that the bucket holds
/// exactly their `.log` and `.index` objects under `dir`: nothing orphaned, nothing twice
/// (but the segment after the manifest's end, which may be on its way up). Returns the
/// manifest.
fn check_complete(
    s3: &S3Server,
    archive: &Archive,
    p: PartitionRef<'_>,
    dir: &Path,
) -> Result<ArchiveManifest> {
    let before = block_on(archive.manifest(p))?;
    let root = s3.bucket_dir(BUCKET).join(dir);
    let have: BTreeSet<String> = std::fs::read_dir(&root)
        .with_context(|| format!("read {}", root.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let m = block_on(archive.manifest(p))?;
    let mut expect = 0;
    for s in &m.segments {
        ensure!(
            s.base_offset == expect,
            "segment at {} where {expect} was expected",
            s.base_offset
        );
        expect = s.last_offset + 1;
    }
    let missing: Vec<_> = names(&before).difference(&have).cloned().collect();
    ensure!(
        missing.is_empty(),
        "the manifest names missing objects {missing:?}"
    );
    let under_way = format!("{:020}.", m.next_offset());
    let extra: Vec<_> = have
        .difference(&names(&m))
        .filter(|n| !n.starts_with(&under_way))
        .cloned()
        .collect();
    ensure!(extra.is_empty(), "objects no manifest names: {extra:?}");
    Ok(m)
}

fn partition_dir(prefix: &str, topic: &str, id: uuid::Uuid) -> std::path::PathBuf {
    Path::new(prefix)
        .join(topic)
        .join(id.simple().to_string())
        .join("0")
}

/// Waits for the connector's first warning (`what` it is about).
fn wait_for_warning(broker: &BrokerProcess, what: &str) -> Result<usize> {
    wait_until(
        what,
        Duration::from_secs(60),
        Duration::from_millis(200),
        || match archive_warnings(broker) {
            0 => Err("none yet".to_string()),
            n => Ok(n),
        },
    )
}

/// Warnings of the archive connector in the broker's log.
fn archive_warnings(broker: &BrokerProcess) -> usize {
    broker
        .log_tail(64 << 20)
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("retrying with backoff"))
        .count()
}

#[test]
fn s3_archive_replays_from_offset_zero_after_local_retention() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start(&dir.path().join("s3"), BUCKET)?;
    let url = format!("s3://{BUCKET}/cluster/a");
    let broker = spawn_broker(&dir.path().join("data"), &s3, &url, SECRET_KEY, &[])?;
    let bs = broker.bootstrap();
    let (topic, id, archive, start) = archived_then_dropped_locally(&bs, &s3, &url, "s3-replay")?;
    let p = PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    };
    // Everything below the local log start is in S3, under the prefix, each segment once.
    wait_archived(&archive, p, start)?;
    check_complete(&s3, &archive, p, &partition_dir("cluster/a", &topic, id))?;
    // librdkafka from offset 0: offsets below the local log start come from S3.
    replay_from_zero(&bs, &topic, MESSAGES, SIZE)?;
    println!("local log start {start}: offsets 0..{start} read from S3");
    Ok(())
}

/// Checks that each of `segments` is in the archive byte for byte as the local log in `data`
/// exports it (the broker must be stopped), with the same index, and larger than one part.
fn check_equals_export(
    data: &Path,
    archive: &Archive,
    p: PartitionRef<'_>,
    segments: &[strata_storage::archive::ArchivedSegment],
) -> Result<()> {
    let store = strata_storage::Store::open(strata_storage::StoreConfig::new(data))?;
    for s in segments {
        ensure!(
            s.bytes > 8 << 20,
            "segment {} has {} bytes",
            s.base_offset,
            s.bytes
        );
        let local = store.export_segment(p.topic, 0, s.base_offset)?;
        let remote = block_on(archive.segment_data(p, s.base_offset))?;
        ensure!(remote.len() == local.data.len(), "sizes differ");
        ensure!(
            remote == local.data,
            "segment {} differs from its export",
            s.base_offset
        );
        let index = block_on(archive.segment_index(p, s.base_offset))?;
        let positions: Vec<u64> = index.batches.iter().map(|b| b.position).collect();
        let expected: Vec<u64> = local.index.iter().map(|b| b.position).collect();
        ensure!(positions == expected, "index of {}", s.base_offset);
    }
    Ok(())
}

/// Waits until the archive holds two segments of `p`.
fn two_segments(archive: &Archive, p: PartitionRef<'_>, what: &str) -> Result<ArchiveManifest> {
    let timeout = Duration::from_secs(120);
    wait_manifest_for(archive, p, what, timeout, |m| match m.segments.len() {
        0 | 1 => Err(format!("{} segments", m.segments.len())),
        _ => Ok(()),
    })
}

/// Segments larger than a part (8 MiB) go up as multipart uploads; each archived `.log` is
/// byte for byte the local export of its segment.
#[test]
fn large_segments_are_uploaded_in_parts_equal_to_the_export() -> Result<()> {
    const BIG: usize = 64 * 1024;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let s3 = S3Server::start(&dir.path().join("s3"), BUCKET)?;
    let url = format!("s3://{BUCKET}");
    let segment = (20u64 << 20).to_string();
    let mut broker = spawn_broker(
        &data,
        &s3,
        &url,
        SECRET_KEY,
        &[("STRATA_SEGMENT_BYTES", &segment)],
    )?;
    let bs = broker.bootstrap();
    // Kept locally (the test messages are stamped 2023), to compare with the archive.
    let (topic, id) = archived_topic(&bs, "s3-multipart", &[("retention.ms", "-1")])?;
    let producer = recording_producer(&producer_config(&bs))?;
    // 45 MiB: two sealed segments of ~20 MiB, each three parts.
    let n = 720;
    produce_and_wait(&producer, &topic, 0..n, 1, |_| BIG)?;
    drop(producer);
    let archive = s3.archive(&url)?;
    let p = PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    };
    let m = two_segments(&archive, p, "two segments archived")?;
    ensure!(
        broker
            .log_tail(1 << 20)
            .lines()
            .any(|l| l.contains("archived segment")
                && l.contains("multipart")
                && l.contains("true")),
        "no multipart upload in the log"
    );
    broker.terminate()?;
    check_equals_export(&data, &archive, p, &m.segments[..2])?;
    // No multipart upload left behind (s3s-fs keeps parts as `.upload_id-*` files).
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("s3"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id"))
        .collect();
    ensure!(
        leftovers.is_empty(),
        "{} parts left behind",
        leftovers.len()
    );
    Ok(())
}

/// The store goes away: the broker keeps taking and serving records, warns (rate-limited)
/// and backs off; once the store is back the archive catches up with no gap and no duplicate.
#[test]
fn uploads_catch_up_after_the_store_was_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s3 = S3Server::start(&dir.path().join("s3"), BUCKET)?;
    let url = format!("s3://{BUCKET}/outage");
    let broker = spawn_broker(&dir.path().join("data"), &s3, &url, SECRET_KEY, &[])?;
    let bs = broker.bootstrap();
    // Everything stays local too (the test messages are stamped 2023): while the store is
    // down, consumers read it all from local disk.
    let (topic, id) = archived_topic(&bs, "s3-outage", &[("retention.ms", "-1")])?;
    let archive = s3.archive(&url)?;
    let p = PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    };
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &topic, 0..MESSAGES, 1, |_| SIZE)?;
    let before = wait_archived(&archive, p, MESSAGES as i64 / 2)?;

    s3.stop();
    produce_and_wait(&producer, &topic, MESSAGES..2 * MESSAGES, 1, |_| SIZE)?;
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..2 * MESSAGES, 1, |_| SIZE)?;
    wait_for_warning(&broker, "a warning about the store")?;
    std::thread::sleep(Duration::from_secs(3));
    let warnings = archive_warnings(&broker);
    ensure!(
        warnings <= 2,
        "{warnings} warnings within seconds: not rate-limited"
    );

    s3.restart()?;
    let m = wait_archived_for(
        &archive,
        p,
        3 * MESSAGES as i64 / 2,
        Duration::from_secs(120),
    )?;
    ensure!(
        m.segments[..before.segments.len()] == before.segments[..],
        "segments archived before the outage changed"
    );
    check_complete(&s3, &archive, p, &partition_dir("outage", &topic, id))?;
    wait_until(
        "the connector to say it works again",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match broker.log_tail(64 << 20).contains("archiving works again") {
            true => Ok(()),
            false => Err(broker.log_tail(2000)),
        },
    )?;
    // The object store client's own per-request retry lines stay out of the log.
    ensure!(!broker
        .log_tail(64 << 20)
        .contains("Encountered transport error"));
    Ok(())
}

/// With the store down and nothing of it cached (a restarted broker), offsets only the
/// archive holds are neither skipped nor reported out of range: ListOffsets EARLIEST and a
/// Fetch below the local log start answer KAFKA_STORAGE_ERROR (retriable), and once the store
/// is back librdkafka reads everything from offset 0.
#[test]
fn archive_reads_fail_retriably_while_the_store_is_down() -> Result<()> {
    const KAFKA_STORAGE_ERROR: i16 = 56;
    let dir = tempfile::tempdir()?;
    let mut s3 = S3Server::start(&dir.path().join("s3"), BUCKET)?;
    let url = format!("s3://{BUCKET}/down");
    let mut broker = spawn_broker(&dir.path().join("data"), &s3, &url, SECRET_KEY, &[])?;
    let bs = broker.bootstrap();
    let (topic, _, _, start) = archived_then_dropped_locally(&bs, &s3, &url, "s3-down-reads")?;
    broker.terminate()?;
    s3.stop();
    broker.restart()?;
    let addr = broker.addr();
    let earliest = raw::list_offset(addr, &topic, 0, -2);
    ensure!(
        earliest
            .as_ref()
            .is_err_and(|e| e.to_string().contains(&KAFKA_STORAGE_ERROR.to_string())),
        "EARLIEST with the store down: {earliest:?} (local start {start})"
    );
    let mut c = raw::connect(addr)?;
    let f = raw::fetch(&mut c, 1, &raw::fetch_request(&topic, 0, 0, 0, 1))?;
    ensure!(
        f.error_code == KAFKA_STORAGE_ERROR,
        "Fetch at 0 with the store down: {f:?}"
    );
    s3.restart()?;
    replay_from_zero(&broker.bootstrap(), &topic, MESSAGES, SIZE)?;
    Ok(())
}

/// Credentials the store refuses: reported in the log, retried with backoff (a handful of
/// requests, not one per pass), and the broker serves on.
#[test]
fn refused_credentials_are_reported_and_retried_while_the_broker_serves() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start(&dir.path().join("s3"), BUCKET)?;
    let url = format!("s3://{BUCKET}/denied");
    let broker = spawn_broker(&dir.path().join("data"), &s3, &url, "not-the-secret", &[])?;
    let bs = broker.bootstrap();
    let (topic, id) = archived_topic(&bs, "s3-denied", &[])?;
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &topic, 0..MESSAGES, 1, |_| SIZE)?;
    let recs = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    verify_test_messages(&recs, 0..MESSAGES, 1, |_| SIZE)?;
    wait_for_warning(&broker, "a warning about the credentials")?;
    let log = broker.log_tail(64 << 20);
    let line = log
        .lines()
        .find(|l| l.contains("retrying with backoff"))
        .unwrap_or_default();
    ensure!(
        line.contains("403") || line.contains("Forbidden") || line.contains("Signature"),
        "{line}"
    );
    // Passes run every 100 ms; with backoff (1 s, 2 s, 4 s ...) the store sees a few
    // attempts in 8 s, not 80 passes' worth.
    let first = s3.requests();
    std::thread::sleep(Duration::from_secs(8));
    let during = s3.requests() - first;
    ensure!((1..=30).contains(&during), "{during} requests in 8 s");
    println!("{during} requests in 8 s with refused credentials");
    ensure!(
        archive_warnings(&broker) <= 2,
        "warnings are not rate-limited"
    );
    let archive = s3.archive(&url)?;
    let m = block_on(archive.manifest(PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    }))?;
    ensure!(m.segments.is_empty(), "archived with refused credentials");
    // Still serving.
    produce_and_wait(&producer, &topic, MESSAGES..MESSAGES + 10, 1, |_| SIZE)?;
    let (_, high) = watermarks(&bs, &topic)?[0];
    ensure!(high == MESSAGES as i64 + 10);
    Ok(())
}

/// Runs one archive call from a test thread.
fn block_on<T>(
    f: impl std::future::Future<Output = strata_storage::StorageResult<T>>,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f)?)
}

/// Multipart uploads under way in the server's root (s3s-fs keeps their parts as files).
fn parts_under_way(root: &Path) -> usize {
    std::fs::read_dir(root).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id"))
            .count()
    })
}

/// A broker killed (SIGKILL) in the middle of a multipart upload resumes after a restart:
/// the segment goes up again under the same keys, and the archive ends complete, with no gap
/// and no duplicate, each segment equal to its export.
#[test]
fn a_broker_killed_mid_upload_resumes_without_gap_or_duplicate() -> Result<()> {
    const BIG: usize = 64 * 1024;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let s3_root = dir.path().join("s3");
    let s3 = S3Server::start(&s3_root, BUCKET)?;
    let url = format!("s3://{BUCKET}/crash");
    let segment = (20u64 << 20).to_string();
    let settings = |interval: &'static str| {
        [
            ("STRATA_SEGMENT_BYTES", segment.clone()),
            ("STRATA_ARCHIVE_INTERVAL_MS", interval.to_string()),
        ]
    };
    let spawn = |interval: &'static str| {
        let s = settings(interval);
        let extra: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spawn_broker(&data, &s3, &url, SECRET_KEY, &extra)
    };
    // The connector idle (an hour) while two segments of ~20 MiB fill and seal.
    let mut broker = spawn("3600000")?;
    let bs = broker.bootstrap();
    let (topic, id) = archived_topic(&bs, "s3-crash", &[("retention.ms", "-1")])?;
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &topic, 0..720, 1, |_| BIG)?;
    drop(producer);
    broker.terminate()?;

    // A slow store (each request answered after 300 ms): an upload takes seconds.
    s3.set_delay(Duration::from_millis(300));
    let mut broker = spawn("100")?;
    wait_until(
        "a multipart upload under way",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || match parts_under_way(&s3_root) {
            0 => Err("no parts yet".to_string()),
            n => Ok(n),
        },
    )?;
    broker.kill9()?;
    let archive = s3.archive(&url)?;
    let p = PartitionRef {
        topic: &topic,
        topic_id: id,
        partition: 0,
    };
    let before = block_on(archive.manifest(p))?;
    ensure!(
        before.segments.len() < 2,
        "killed after both segments went up"
    );

    s3.set_delay(Duration::ZERO);
    let mut broker = spawn("100")?;
    let m = two_segments(&archive, p, "two segments archived after the restart")?;
    broker.terminate()?;
    ensure!(
        m.segments[..before.segments.len()] == before.segments[..],
        "segments archived before the kill changed"
    );
    check_complete(&s3, &archive, p, &partition_dir("crash", &topic, id))?;
    check_equals_export(&data, &archive, p, &m.segments[..2])
}
