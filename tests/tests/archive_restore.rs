//! The archive describes itself and outlives the local disk: `strata-broker archive ls`
//! lists it; after the data dir is lost, `strata-broker archive restore` rebuilds its topics
//! (same ids, partitions, configs) so that a broker serves every archived record again
//! (tiered reads) and new writes continue after them; a broker started on an empty data dir
//! deletes nothing of an archive it finds; corrupt archive objects give clear errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use prost::Message;
use strata_storage::archive::{Archive, ArchiveManifest, ArchivedSegment, PartitionRef};
use strata_tests::archived::{
    archive_in, archive_tool, manifests, small_batch_producer, topic_id, wait_archived,
};
use strata_tests::*;

/// Small segments (the minimum is 1 KiB), so a few hundred KiB of records seal dozens.
const SEGMENT_BYTES: u64 = 16 * 1024;
const PARTITIONS: i32 = 2;
const MESSAGES: u64 = 600;
const SIZE: usize = 1000;

fn start(data: &Path, archive_url: &str) -> Result<InProcessBroker> {
    let mut config = test_config(data)?;
    config.segment_bytes = SEGMENT_BYTES;
    config.archive_interval_ms = 100;
    config.archive_url = Some(archive_url.to_string());
    InProcessBroker::start(config)
}

/// Creates `topic` archived (and kept forever: the test messages are stamped 2023) and
/// produces messages `0..MESSAGES` to it; returns its id.
fn archived_topic(bs: &str, topic: &str) -> Result<uuid::Uuid> {
    try_create_topic_with(
        bs,
        topic,
        PARTITIONS,
        &[("remote.storage.enable", "true"), ("retention.ms", "-1")],
    )?
    .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    let producer = small_batch_producer(bs)?;
    produce_and_wait(&producer, topic, 0..MESSAGES, PARTITIONS, |_| SIZE)?;
    topic_id(bs, topic)
}

/// Every file under `dir` with its size, by path relative to `dir`.
fn files(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir)?.display().to_string();
                out.insert(rel, e.metadata()?.len());
            }
        }
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn restore_after_the_data_dir_is_lost_serves_every_archived_record() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (lost, restored) = (dir.path().join("lost"), dir.path().join("restored"));
    let (_, url) = archive_in(dir.path());
    let archive = Archive::open(&url)?;
    let topic = topic_name("restored");

    let broker = start(&lost, &url)?;
    let bs = broker.bootstrap();
    let id = archived_topic(&bs, &topic)?;
    for partition in 0..PARTITIONS {
        let p = PartitionRef {
            topic: &topic,
            topic_id: id,
            partition,
        };
        wait_archived(&archive, p, MESSAGES as i64 / PARTITIONS as i64 / 2)?;
    }
    let before = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    broker.shutdown()?;
    // What the archive holds once the broker is gone; the disk goes too.
    let held = manifests(&archive, &topic, id, PARTITIONS)?;
    std::fs::remove_dir_all(&lost)?;

    // The listing, as JSON and as a table.
    let out = archive_tool(&["ls", "--archive-url", &url, "--output", "json"])?;
    ensure!(out.status.success(), "ls: {}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let t = &listed["topics"][0];
    ensure!(
        t["name"] == topic.as_str() && t["id"] == id.to_string(),
        "{t}"
    );
    ensure!(
        t["described"] == true && t["partition_count"] == PARTITIONS,
        "{t}"
    );
    ensure!(t["configs"]["remote.storage.enable"] == "true", "{t}");
    for (p, m) in held.iter().enumerate() {
        let expected = serde_json::json!({
            "partition": p,
            "start_offset": 0,
            "next_offset": m.next_offset(),
            "segments": m.segments.len(),
            "bytes": m.segments.iter().map(|s| s.bytes).sum::<u64>(),
            "min_timestamp": m.segments.iter().map(|s| s.min_timestamp).min(),
            "max_timestamp": m.segments.iter().map(|s| s.max_timestamp).max(),
        });
        ensure!(
            t["partitions"][p] == expected,
            "listed {}, expected {expected}",
            t["partitions"][p]
        );
    }
    let out = archive_tool(&["ls", "--archive-url", &url, "--topic", &topic])?;
    let table = text(&out.stdout);
    ensure!(
        out.status.success() && table.starts_with("TOPIC"),
        "{table}"
    );
    ensure!(table.lines().count() == 1 + PARTITIONS as usize, "{table}");
    let m = &held[0];
    let row = [
        topic.clone(),
        id.to_string(),
        "0".into(),
        "0".into(),
        m.next_offset().to_string(),
        m.segments.len().to_string(),
    ];
    ensure!(
        table.lines().any(|l| l
            .split_whitespace()
            .take(6)
            .eq(row.iter().map(String::as_str))),
        "no row starting {row:?} in\n{table}"
    );

    // Restore through the binary, then serve.
    let restored_dir = restored.display().to_string();
    let restore = |more: &[&str]| {
        let args = [
            "restore",
            "--data-dir",
            &restored_dir,
            "--archive-url",
            &url,
        ];
        archive_tool(&[&args[..], more].concat())
    };
    let out = restore(&[])?;
    ensure!(out.status.success(), "restore: {}", text(&out.stderr));
    ensure!(text(&out.stdout).contains(&format!("restored topic {topic}")));
    let broker = start(&restored, &url)?;
    let bs = broker.bootstrap();
    ensure!(
        topic_id(&bs, &topic)? == id,
        "the restored topic has another id"
    );
    let marks = watermarks(&bs, &topic)?;
    let expected: Vec<(i64, i64)> = held.iter().map(|m| (0, m.next_offset())).collect();
    ensure!(
        marks == expected,
        "watermarks {marks:?}, expected {expected:?}"
    );
    let after = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    for (p, m) in held.iter().enumerate() {
        let p = p as i32;
        let (got, was) = (&after[&p], &before[&p]);
        ensure!(
            got[..] == was[..m.next_offset() as usize],
            "partition {p}: the records read after the restore differ from those before"
        );
    }

    // New writes continue after the archive, and everything reads back from offset 0.
    let producer = small_batch_producer(&bs)?;
    let more = MESSAGES..MESSAGES + 100;
    let reports = produce_and_wait(&producer, &topic, more.clone(), PARTITIONS, |_| SIZE)?;
    check_delivery_offsets(
        &reports,
        PARTITIONS,
        |p| held[p as usize].next_offset(),
        MESSAGES,
    )?;
    let all = consume_all(&bs, &topic, CONSUME_TIMEOUT)?;
    for (p, m) in held.iter().enumerate() {
        let got = &all[&(p as i32)];
        check_dense(got, 0, m.next_offset() + 50)?;
        ensure!(got[..m.next_offset() as usize] == before[&(p as i32)][..m.next_offset() as usize]);
    }
    drop(producer);
    broker.shutdown()?;

    // A second restore into the same data dir is refused: the topic exists there.
    let out = restore(&["--topic", &topic])?;
    ensure!(
        !out.status.success(),
        "a restore over an existing topic succeeded"
    );
    let err = text(&out.stderr);
    ensure!(
        err.contains("already exists") && !err.contains("panicked"),
        "{err}"
    );
    println!(
        "restored {topic}: archived next offsets {:?}",
        held.iter()
            .map(ArchiveManifest::next_offset)
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// A broker whose data dir is empty (a new machine, a lost disk) finds an archive holding
/// another broker's topic: it deletes none of it, while the archive of a topic it deletes
/// itself goes.
#[test]
fn a_broker_on_an_empty_data_dir_deletes_nothing_it_did_not_delete() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (archive_dir, url) = archive_in(dir.path());
    let archive = Archive::open(&url)?;
    let theirs = topic_name("theirs");
    let broker = start(&dir.path().join("first"), &url)?;
    let their_id = archived_topic(&broker.bootstrap(), &theirs)?;
    let p = PartitionRef {
        topic: &theirs,
        topic_id: their_id,
        partition: 0,
    };
    wait_archived(&archive, p, 1)?;
    broker.shutdown()?;
    let held = files(&archive_dir)?;

    let broker = start(&dir.path().join("empty"), &url)?;
    let bs = broker.bootstrap();
    let ours = topic_name("ours");
    let our_id = archived_topic(&bs, &ours)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    // Waits until the archive holds our topic (`true`) or not.
    let archived = |want: bool, what: &str| {
        wait_until(
            what,
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let held = rt.block_on(archive.topics()).map_err(|e| e.to_string())?;
                match held.iter().any(|(_, i)| *i == our_id) {
                    has if has == want => Ok(()),
                    _ => Err(format!("{held:?}")),
                }
            },
        )
    };
    archived(true, "the connector to archive the new broker's topic")?;
    delete_topic(&bs, &ours)?.map_err(|c| anyhow::anyhow!("delete {ours}: {c:?}"))?;
    archived(false, "the deleted topic's archive to go")?;
    // Several more passes (one every 100 ms).
    std::thread::sleep(Duration::from_millis(500));
    broker.shutdown()?;
    let now: BTreeMap<String, u64> = files(&archive_dir)?
        .into_iter()
        .filter(|(k, _)| k.starts_with(&theirs))
        .collect();
    ensure!(
        now == held,
        "the other broker's archive changed:\nbefore {held:?}\nafter {now:?}"
    );
    Ok(())
}

/// Writes `bytes` as the archive object `key` (a file under the archive's directory).
fn plant(archive_dir: &Path, key: &str, bytes: &[u8]) -> Result<()> {
    let path = archive_dir.join(key);
    std::fs::create_dir_all(path.parent().context("key without a folder")?)?;
    Ok(std::fs::write(path, bytes)?)
}

/// Runs the tool and expects a failure whose message contains `want` (no panic).
fn fails_with(args: &[&str], want: &str) -> Result<()> {
    let out = archive_tool(args)?;
    let err = text(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains(want) && !err.contains("panicked"),
        "{args:?}: exit {:?}, stderr {err}",
        out.status.code()
    );
    Ok(())
}

#[test]
fn corrupt_manifests_and_descriptors_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (archive_dir, url) = archive_in(dir.path());
    let data = dir.path().join("data").display().to_string();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let ls = ["ls", "--archive-url", url.as_str()];
    let restore = ["restore", "--data-dir", &data, "--archive-url", &url];

    // A manifest that is not one (a length running past its end).
    plant(
        &archive_dir,
        &format!("t/{id}/0/manifest"),
        &[0x0a, 0xff, 0xff, 0x7f],
    )?;
    fails_with(&ls, &format!("t/{id}/0/manifest"))?;
    fails_with(&restore, "manifest")?;
    // A manifest of segments with these offset ranges.
    let manifest = |ranges: &[(i64, i64)]| {
        let m = ArchiveManifest {
            segments: ranges
                .iter()
                .map(|&(base_offset, last_offset)| ArchivedSegment {
                    base_offset,
                    last_offset,
                    bytes: 1,
                    batches: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        plant(
            &archive_dir,
            &format!("t/{id}/0/manifest"),
            &m.encode_to_vec(),
        )
    };
    // One whose segments leave a gap, then a good one.
    manifest(&[(0, 9), (20, 29)])?;
    fails_with(&ls, "corrupt manifest")?;
    manifest(&[(0, 9), (10, 29)])?;
    let out = archive_tool(&ls)?;
    ensure!(out.status.success(), "{}", text(&out.stderr));

    // A descriptor that is not one, then one naming another topic.
    plant(&archive_dir, &format!("t/{id}/topic"), &[0xff; 8])?;
    fails_with(&ls, "corrupt descriptor")?;
    fails_with(&restore, "corrupt descriptor")?;
    let other = strata_storage::archive::TopicDescriptor {
        name: "u".into(),
        id: uuid::Uuid::new_v4().as_bytes().to_vec(),
        partitions: 1,
        configs: Default::default(),
        created_ms: 0,
    };
    plant(
        &archive_dir,
        &format!("t/{id}/topic"),
        &other.encode_to_vec(),
    )?;
    fails_with(&restore, "corrupt descriptor")?;
    // A descriptor claiming more partitions than a store holds.
    let huge = strata_storage::archive::TopicDescriptor {
        name: "t".into(),
        id: uuid::Uuid::try_parse(&id)?.as_bytes().to_vec(),
        partitions: i32::MAX,
        ..other
    };
    plant(
        &archive_dir,
        &format!("t/{id}/topic"),
        &huge.encode_to_vec(),
    )?;
    fails_with(&restore, "more than a store holds")?;
    let missing = format!("file://{}/nowhere", dir.path().display());
    fails_with(&["ls", "--archive-url", &missing], "no archive at")?;
    // Nothing was restored by any of these.
    ensure!(
        !Path::new(&data).exists(),
        "a failed restore created the data dir"
    );
    fails_with(
        &[
            "restore",
            "--data-dir",
            &data,
            "--archive-url",
            &url,
            "--topic",
            "absent",
        ],
        "no topic of that name",
    )
}

/// The connector writes a topic's descriptor when it first archives it and again when its
/// partitions or configs change.
#[test]
fn descriptors_follow_partition_and_config_changes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, url) = archive_in(dir.path());
    let archive = Archive::open(&url)?;
    let broker = start(&dir.path().join("data"), &url)?;
    let bs = broker.bootstrap();
    let topic = topic_name("described");
    try_create_topic_with(&bs, &topic, 1, &[("remote.storage.enable", "true")])?
        .map_err(|c| anyhow::anyhow!("create {topic}: {c:?}"))?;
    let id = topic_id(&bs, &topic)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let described = |partitions: i32, retention: Option<&str>| {
        wait_until(
            "the descriptor",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let d = rt
                    .block_on(archive.descriptor(&topic, id))
                    .map_err(|e| e.to_string())?;
                match &d {
                    Some(d)
                        if d.partitions == partitions
                            && d.configs.get("retention.ms").map(String::as_str) == retention
                            && d.configs.get("remote.storage.enable").map(String::as_str)
                                == Some("true")
                            && d.created_ms > 0 =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("{d:?}")),
                }
            },
        )
    };
    described(1, None)?;
    create_partitions(&bs, &topic, 3)?.map_err(|c| anyhow::anyhow!("grow {topic}: {c:?}"))?;
    described(3, None)?;
    let (code, msg) = raw::alter_topic_configs(
        broker.addr(),
        &topic,
        &[("remote.storage.enable", "true"), ("retention.ms", "-1")],
        false,
    )?;
    ensure!(code == 0, "AlterConfigs: {code} {msg:?}");
    described(3, Some("-1"))?;
    broker.shutdown()
}

/// With `archive_delete_with_topic=false`, a topic deleted and created again under the same
/// name leaves two archives of that name: restore (the library function) picks the newer.
#[test]
fn restore_picks_the_newest_topic_of_a_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, url) = archive_in(dir.path());
    let archive = Archive::open(&url)?;
    let mut config = test_config(&dir.path().join("data"))?;
    config.segment_bytes = SEGMENT_BYTES;
    config.archive_interval_ms = 100;
    config.archive_url = Some(url.clone());
    config.archive_delete_with_topic = false;
    let broker = InProcessBroker::start(config)?;
    let bs = broker.bootstrap();
    let topic = topic_name("again");
    let mut ids = Vec::new();
    for round in 0..2 {
        let id = archived_topic(&bs, &topic)?;
        let p = PartitionRef {
            topic: &topic,
            topic_id: id,
            partition: 0,
        };
        wait_archived(&archive, p, 1)?;
        ids.push(id);
        if round == 0 {
            delete_topic(&bs, &topic)?.map_err(|c| anyhow::anyhow!("delete {topic}: {c:?}"))?;
        }
    }
    broker.shutdown()?;
    let held = strata_broker::archive_tool::list(&url, Some(&topic))?;
    ensure!(held.len() == 2, "{held:?}");
    let restored = strata_broker::archive_tool::restore(
        &dir.path().join("restored"),
        &url,
        std::slice::from_ref(&topic),
    )?;
    ensure!(
        restored.len() == 1 && restored[0].id == ids[1],
        "restored {restored:?}, the newer id is {}",
        ids[1]
    );
    Ok(())
}
