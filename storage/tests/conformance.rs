//! The storage conformance suite: behavioural tests every engine must pass. Each case is a
//! function over an [`Engine`] (how to open a store on a directory); `suite!` instantiates
//! all cases for one engine. The RocksDB engine runs with fsync on and with fsync off.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use strata_storage::batch::{self, BatchBuilder};
use strata_storage::{
    AclBinding, ClientQuota, GroupOffset, Records, ScramCredential, StorageError, Store,
    StoreConfig,
};

#[path = "conformance/compaction.rs"]
mod compaction;
use compaction::*;

/// Opens a store of one engine (and configuration) on a directory, fresh or existing.
type Engine = fn(&Path) -> Store;

#[path = "conformance/group_metadata.rs"]
mod group_metadata;
use group_metadata::group_metadata_persists;

fn rocks_fsync(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open")
}

fn rocks_no_fsync(dir: &Path) -> Store {
    let mut c = StoreConfig::new(dir);
    c.fsync = false;
    Store::open(c).expect("open")
}

fn rocks_no_cache(dir: &Path) -> Store {
    let mut c = StoreConfig::new(dir);
    c.read_cache_bytes = 0;
    Store::open(c).expect("open")
}

/// A read cache so small that it evicts all the time: reads mix cached and RocksDB batches.
fn rocks_tiny_cache(dir: &Path) -> Store {
    let mut c = StoreConfig::new(dir);
    c.read_cache_bytes = 1500;
    Store::open(c).expect("open")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A batch of `n` records with values `tag-i` and timestamps `ts + i`.
fn batch_of(n: usize, ts: i64, tag: &str) -> Vec<u8> {
    let mut b = BatchBuilder::new(ts);
    for i in 0..n {
        b = b.record(
            ts + i as i64,
            Some(format!("k{i}").as_bytes()),
            format!("{tag}-{i}").as_bytes(),
        );
    }
    b.build()
}

fn no_configs() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Appends and waits until the batch is visible.
fn append_durable(s: &Store, topic: &str, p: i32, bytes: Vec<u8>) -> strata_storage::AppendOutcome {
    let o = s.append(topic, p, bytes).expect("append");
    let hw = rt()
        .block_on(s.wait_for_high_watermark(topic, p, o.last_offset, Duration::from_secs(10)))
        .expect("wait");
    assert!(
        hw > o.last_offset,
        "high watermark {hw} did not pass {}",
        o.last_offset
    );
    o
}

/// `(base offset, record count)` of each batch in a read.
fn batches(records: &Records) -> Vec<(i64, i32)> {
    batch::split(&records.to_bytes())
        .expect("whole batches")
        .iter()
        .map(|b| {
            let h = batch::validate(b).expect("valid batch");
            (h.base_offset, h.record_count)
        })
        .collect()
}

fn append_read_round_trip(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    s.create_topic("t", 2, no_configs()).unwrap();
    let originals = [
        batch_of(3, 1000, "a"),
        batch_of(1, 2000, "b"),
        batch_of(5, 3000, "c"),
    ];
    let mut bases = Vec::new();
    for b in &originals {
        bases.push(append_durable(&s, "t", 1, b.clone()).base_offset);
    }
    assert_eq!(bases, vec![0, 3, 4], "offsets are dense");
    let r = s.read("t", 1, 0, usize::MAX, true).unwrap();
    assert_eq!(r.high_watermark, 9);
    assert_eq!(r.log_start_offset, 0);
    let records = r.records.to_bytes();
    let parts = batch::split(&records).unwrap();
    assert_eq!(parts.len(), 3);
    for ((stored, original), base) in parts.iter().zip(&originals).zip(&bases) {
        // Only base offset (0..8) and leader epoch (12..16) differ; the rest is byte-exact.
        assert_eq!(&stored[8..12], &original[8..12]);
        assert_eq!(&stored[16..], &original[16..]);
        assert_eq!(batch::read_header(stored).unwrap().base_offset, *base);
    }
    assert!(
        s.read("t", 0, 0, usize::MAX, true)
            .unwrap()
            .records
            .is_empty(),
        "other partition untouched"
    );
}

fn read_starts_with_batch_containing_offset(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    s.create_topic("t", 1, no_configs()).unwrap();
    for i in 0..4 {
        append_durable(&s, "t", 0, batch_of(10, 0, &format!("b{i}")));
    }
    for (from, first_base) in [(0, 0), (9, 0), (10, 10), (15, 10), (39, 30)] {
        let r = s.read("t", 0, from, usize::MAX, true).unwrap();
        assert_eq!(batches(&r.records)[0].0, first_base, "read from {from}");
    }
    assert!(
        s.read("t", 0, 40, usize::MAX, true)
            .unwrap()
            .records
            .is_empty(),
        "at the high watermark: nothing"
    );
    assert!(matches!(
        s.read("t", 0, 41, 100, true),
        Err(StorageError::OffsetOutOfRange { offset: 41, .. })
    ));
}

fn max_bytes_edges(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    s.create_topic("t", 1, no_configs()).unwrap();
    let b = batch_of(4, 0, "x");
    let size = b.len();
    for _ in 0..3 {
        append_durable(&s, "t", 0, b.clone());
    }
    let r = s.read("t", 0, 0, 1, true).unwrap();
    assert_eq!(
        batches(&r.records).len(),
        1,
        "at least one batch even past max_bytes"
    );
    assert!(
        s.read("t", 0, 0, 1, false).unwrap().records.is_empty(),
        "without at_least_one, the limit holds"
    );
    assert_eq!(
        batches(&s.read("t", 0, 0, 2 * size, true).unwrap().records).len(),
        2,
        "exactly two fit"
    );
    assert_eq!(
        batches(&s.read("t", 0, 0, 2 * size - 1, true).unwrap().records).len(),
        1,
        "a partial batch is never returned"
    );
    assert_eq!(
        batches(&s.read("t", 0, 0, 0, true).unwrap().records).len(),
        1
    );
}

/// Reads from every offset with several limits, each twice and in two orders: whatever a
/// read cache holds, the same read returns the same bytes, starting with the batch that
/// contains the offset and never past the limit (but at least one batch).
fn repeated_reads_agree(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    s.create_topic("t", 1, no_configs()).unwrap();
    let mut end = 0;
    for i in 0..12 {
        end = append_durable(&s, "t", 0, batch_of(1 + i % 4, 0, &format!("b{i}"))).last_offset + 1;
    }
    let limits = [0, 1, 150, 300, 700, usize::MAX];
    let read_all = |reverse: bool| {
        let mut froms: Vec<i64> = (0..end).collect();
        if reverse {
            froms.reverse();
        }
        let mut out = BTreeMap::new();
        for from in froms {
            for max in limits {
                let r = s.read("t", 0, from, max, true).unwrap();
                let got = batches(&r.records);
                let (base, n) = got[0];
                assert!(
                    base <= from && from < base + i64::from(n),
                    "from {from}: {got:?}"
                );
                assert!(
                    got.len() == 1 || r.records.len() <= max,
                    "from {from} max {max}"
                );
                assert!(got.windows(2).all(|w| w[0].0 + i64::from(w[0].1) == w[1].0));
                let (last_base, last_n) = got[got.len() - 1];
                assert_eq!(r.next_offset, last_base + i64::from(last_n), "from {from}");
                out.insert((from, max), r.records.to_bytes());
            }
        }
        out
    };
    let first = read_all(false);
    assert_eq!(first, read_all(true));
    assert_eq!(first, read_all(false));
    let all = &first[&(0, usize::MAX)];
    assert_eq!(
        batches(&s.read("t", 0, 0, usize::MAX, true).unwrap().records).len(),
        12
    );
    assert_eq!(batch::split(all).unwrap().len(), 12);
}

fn high_watermark_bounds_reads(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    s.create_topic("t", 1, no_configs()).unwrap();
    for i in 0..200 {
        let o = s.append("t", 0, batch_of(2, 0, &format!("{i}"))).unwrap();
        let r = s.read("t", 0, 0, usize::MAX, true).unwrap();
        let end = batches(&r.records)
            .last()
            .map_or(0, |(b, n)| b + i64::from(*n));
        assert!(
            end <= r.high_watermark,
            "read returned offsets up to {end} past high watermark {}",
            r.high_watermark
        );
        let off = s.offsets("t", 0).unwrap();
        assert!(off.high_watermark <= off.log_end);
        assert_eq!(off.log_end, o.last_offset + 1);
    }
    let hw = rt()
        .block_on(s.wait_for_high_watermark("t", 0, 399, Duration::from_secs(10)))
        .unwrap();
    assert_eq!(hw, 400);
    // Waiting for an offset nobody writes times out and reports the current mark.
    let hw = rt()
        .block_on(s.wait_for_high_watermark("t", 0, 400, Duration::from_millis(50)))
        .unwrap();
    assert_eq!(hw, 400);
}

fn timestamps(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    let mut c = no_configs();
    c.insert("segment.bytes".into(), "300".into());
    s.create_topic("t", 1, c).unwrap();
    // CreateTime timestamps out of order across batches: 1000, 5000, 3000, 9000, 2000.
    for ts in [1000, 5000, 3000, 9000, 2000] {
        append_durable(&s, "t", 0, batch_of(2, ts, "v"));
    }
    assert!(
        s.segments("t", 0).unwrap().len() > 1,
        "small segment.bytes rolls segments"
    );
    let at = |ts| {
        s.find_batch_by_timestamp("t", 0, ts, 0)
            .unwrap()
            .map(|b| b.base_offset)
    };
    assert_eq!(at(0), Some(0));
    assert_eq!(at(1001), Some(0), "batch 0 holds 1001");
    assert_eq!(
        at(1002),
        Some(2),
        "first batch with a record >= 1002 is the 5000 one"
    );
    assert_eq!(
        at(5002),
        Some(6),
        "9000 batch, though 3000 and 2000 batches are around it"
    );
    assert_eq!(at(9002), None, "later than every record");
    assert_eq!(
        s.find_max_timestamp_batch("t", 0)
            .unwrap()
            .map(|b| b.base_offset),
        Some(6)
    );
}

fn truncation_and_segments(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = engine(dir.path());
        let mut c = no_configs();
        c.insert("segment.bytes".into(), "1000".into());
        s.create_topic("t", 1, c).unwrap();
        for i in 0..20 {
            append_durable(&s, "t", 0, batch_of(5, i, "seg"));
        }
        let segs = s.segments("t", 0).unwrap();
        assert!(segs.len() >= 3, "{} segments", segs.len());
        assert!(segs[..segs.len() - 1].iter().all(|g| g.sealed) && !segs.last().unwrap().sealed);
        assert_eq!(segs.iter().map(|g| g.batches).sum::<u32>(), 20);
        assert!(
            segs.windows(2)
                .all(|w| w[0].last_offset + 1 == w[1].base_offset),
            "segments tile the log"
        );
        let cut = segs[1].base_offset + 2; // inside the second segment
        assert_eq!(s.truncate_before("t", 0, cut).unwrap(), cut);
        let after = s.segments("t", 0).unwrap();
        assert_eq!(
            after.len(),
            segs.len() - 1,
            "only whole segments below the cut are dropped"
        );
        assert!(
            matches!(s.read("t", 0, cut - 1, 100, true), Err(StorageError::OffsetOutOfRange { log_start, .. }) if log_start == cut)
        );
        let r = s.read("t", 0, cut, usize::MAX, true).unwrap();
        let first = batches(&r.records)[0];
        assert!(
            first.0 <= cut && cut < first.0 + i64::from(first.1),
            "the batch containing the new start comes back"
        );
        assert_eq!(
            s.truncate_before("t", 0, 3).unwrap(),
            cut,
            "moving back changes nothing"
        );
        assert!(matches!(
            s.truncate_before("t", 0, 101),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        s.close();
    }
    let s = engine(dir.path());
    let off = s.offsets("t", 0).unwrap();
    assert_eq!((off.high_watermark, off.log_end), (100, 100));
    assert!(off.log_start > 0, "log start survives reopen");
    assert_eq!(
        s.truncate_before("t", 0, 100).unwrap(),
        100,
        "truncate everything"
    );
    assert!(s.segments("t", 0).unwrap().is_empty());
    assert_eq!(
        append_durable(&s, "t", 0, batch_of(1, 0, "z")).base_offset,
        100,
        "offsets continue after a full truncation"
    );
}

fn topic_delete_and_recreate(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    let first = s.create_topic("t", 2, no_configs()).unwrap();
    assert!(matches!(
        s.create_topic("t", 1, no_configs()),
        Err(StorageError::TopicExists(_))
    ));
    append_durable(&s, "t", 0, batch_of(3, 0, "old"));
    s.delete_topic("t").unwrap();
    assert!(s.topic("t").is_none() && s.topic_by_id(first.id).is_none());
    assert!(matches!(
        s.append("t", 0, batch_of(1, 0, "x")),
        Err(StorageError::UnknownTopic(_))
    ));
    let second = s.create_topic("t", 1, no_configs()).unwrap();
    assert_ne!(first.id, second.id, "a re-created topic has a new id");
    assert!(
        s.read("t", 0, 0, usize::MAX, true)
            .unwrap()
            .records
            .is_empty(),
        "and starts empty"
    );
    assert_eq!(
        append_durable(&s, "t", 0, batch_of(1, 0, "new")).base_offset,
        0
    );
    assert!(matches!(
        s.delete_topic("nope"),
        Err(StorageError::UnknownTopic(_))
    ));
    let grown = s.create_partitions("t", 3).unwrap();
    assert_eq!(grown.partitions, 3);
    append_durable(&s, "t", 2, batch_of(1, 0, "p2"));
    assert!(s.create_partitions("t", 2).is_err(), "partitions only grow");
    s.close();
    let s = engine(dir.path());
    assert_eq!(
        s.topic("t").unwrap(),
        grown.clone(),
        "topics survive reopen"
    );
    assert_eq!(s.offsets("t", 2).unwrap().high_watermark, 1);
}

fn idempotent_producers(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let batch = |epoch: i16, seq: i32, n: usize| {
        let mut b = BatchBuilder::new(0).producer(42, epoch, seq);
        for _ in 0..n {
            b = b.record(0, None, b"v");
        }
        b.build()
    };
    {
        let s = engine(dir.path());
        s.create_topic("t", 1, no_configs()).unwrap();
        let a = append_durable(&s, "t", 0, batch(0, 0, 3));
        let b = append_durable(&s, "t", 0, batch(0, 3, 2));
        let dup = s.append("t", 0, batch(0, 0, 3)).unwrap();
        assert!(
            dup.duplicate && dup.base_offset == a.base_offset && dup.last_offset == a.last_offset
        );
        assert!(matches!(
            s.append("t", 0, batch(0, 7, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 5,
                got: 7,
                ..
            })
        ));
        assert_eq!(
            s.offsets("t", 0).unwrap().log_end,
            b.last_offset + 1,
            "refused batches write nothing"
        );
        s.close();
    }
    let s = engine(dir.path());
    let dup = s.append("t", 0, batch(0, 3, 2)).unwrap();
    assert!(
        dup.duplicate && dup.base_offset == 3,
        "producer state survives reopen"
    );
    assert_eq!(s.append("t", 0, batch(0, 5, 1)).unwrap().base_offset, 5);
    assert!(
        matches!(
            s.append("t", 0, batch(1, 4, 1)),
            Err(StorageError::OutOfOrderSequence { expected: 0, .. })
        ),
        "a new epoch starts at 0"
    );
    assert_eq!(s.append("t", 0, batch(1, 0, 1)).unwrap().base_offset, 6);
    assert!(matches!(
        s.append("t", 0, batch(0, 6, 1)),
        Err(StorageError::ProducerFenced {
            current: 1,
            got: 0,
            ..
        })
    ));
    // A non-idempotent batch skips the checks entirely.
    assert_eq!(
        s.append("t", 0, batch_of(1, 0, "plain"))
            .unwrap()
            .base_offset,
        7
    );
}

fn group_offsets_and_kv(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let offset = |topic: &str, partition, offset| GroupOffset {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: 0,
        metadata: format!("meta-{offset}"),
        commit_timestamp_ms: 123,
    };
    {
        let s = engine(dir.path());
        rt().block_on(s.commit_offsets(
            "g1",
            &[offset("a", 0, 5), offset("a", 1, 7), offset("b", 0, 1)],
        ))
        .unwrap();
        rt().block_on(s.commit_offsets("g1", &[offset("a", 0, 6)]))
            .unwrap();
        rt().block_on(s.commit_offsets("g10", &[offset("a", 0, 99)]))
            .unwrap();
        s.put_kv(b"k1", b"v1").unwrap();
        assert_eq!(s.allocate_ids(b"ids", 1).unwrap(), 0);
        assert_eq!(s.allocate_ids(b"ids", 10).unwrap(), 1);
        s.close();
    }
    let s = engine(dir.path());
    let got = s.fetch_offsets("g1").unwrap();
    assert_eq!(
        got,
        vec![offset("a", 0, 6), offset("a", 1, 7), offset("b", 0, 1)],
        "latest commit wins; metadata kept; g10 not mixed in"
    );
    assert_eq!(
        s.groups_with_offsets().unwrap(),
        vec!["g1".to_string(), "g10".to_string()]
    );
    s.delete_offsets("g1", Some(&[("a".to_string(), 1)]))
        .unwrap();
    assert_eq!(s.fetch_offsets("g1").unwrap().len(), 2);
    s.delete_offsets("g1", None).unwrap();
    assert!(s.fetch_offsets("g1").unwrap().is_empty());
    assert_eq!(s.fetch_offsets("g10").unwrap().len(), 1);
    assert_eq!(s.get_kv(b"k1").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        s.allocate_ids(b"ids", 1).unwrap(),
        11,
        "counters survive reopen"
    );
    assert_eq!(s.scan_kv(b"k").unwrap().len(), 1);
}

fn acls_persist(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let acl = |name: &str, principal: &str, op: i8| AclBinding {
        resource_type: 2,
        resource_name: name.into(),
        pattern_type: 3,
        principal: principal.into(),
        host: "*".into(),
        operation: op,
        permission: 3,
    };
    {
        let s = engine(dir.path());
        assert!(s.acls().unwrap().is_empty());
        s.update_acls(&[acl("a", "User:x", 3), acl("a", "User:x", 4)], &[])
            .unwrap();
        // Storing a binding twice keeps one; a long name and odd characters round-trip.
        s.update_acls(
            &[acl("a", "User:x", 3), acl(&"é".repeat(300), "User:*", 8)],
            &[],
        )
        .unwrap();
        s.close();
    }
    let s = engine(dir.path());
    let mut got = s.acls().unwrap();
    got.sort();
    let mut want = vec![
        acl("a", "User:x", 3),
        acl("a", "User:x", 4),
        acl(&"é".repeat(300), "User:*", 8),
    ];
    want.sort();
    assert_eq!(got, want, "bindings survive reopen, once each");
    // Removing and adding in one call; removing a missing binding is no error.
    s.update_acls(
        &[acl("b", "User:y", 6)],
        &[acl("a", "User:x", 3), acl("zz", "User:q", 1)],
    )
    .unwrap();
    let got = s.acls().unwrap();
    assert_eq!(got.len(), 3);
    assert!(!got.contains(&acl("a", "User:x", 3)));
    assert!(got.contains(&acl("b", "User:y", 6)));
}

fn scram_credentials_persist(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let cred = |user: &str, mechanism: i8, iterations: i32| ScramCredential {
        user: user.into(),
        mechanism,
        iterations,
        salt: vec![1, 2, 3],
        stored_key: vec![mechanism as u8; 32],
        server_key: vec![9; 32],
    };
    {
        let s = engine(dir.path());
        assert!(s.scram_credentials().unwrap().is_empty());
        s.update_scram_credentials(&[cred("alice", 1, 4096), cred("alice", 2, 4096)], &[])
            .unwrap();
        // An upsert replaces; "al" is a different user from "alice".
        s.update_scram_credentials(&[cred("alice", 1, 8192), cred("al", 1, 4096)], &[])
            .unwrap();
        s.close();
    }
    let s = engine(dir.path());
    assert_eq!(
        s.scram_credentials().unwrap(),
        vec![
            cred("al", 1, 4096),
            cred("alice", 1, 8192),
            cred("alice", 2, 4096)
        ],
        "credentials survive reopen, one per user and mechanism"
    );
    // Removing and upserting in one call; removing a missing one is no error.
    s.update_scram_credentials(
        &[cred("bob", 2, 4096)],
        &[("alice".into(), 1), ("nobody".into(), 1), ("al".into(), 2)],
    )
    .unwrap();
    // Listed in key order: shorter names first.
    assert_eq!(
        s.scram_credentials().unwrap(),
        vec![
            cred("al", 1, 4096),
            cred("bob", 2, 4096),
            cred("alice", 2, 4096)
        ]
    );
}

fn client_quotas_persist(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let quota = |entity: &[(&str, Option<&str>)], values: &[(&str, f64)]| ClientQuota {
        entity: entity
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
            .collect(),
        values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    let alice = quota(
        &[("user", Some("alice")), ("client-id", None)],
        &[("producer_byte_rate", 1e6), ("request_percentage", 12.5)],
    );
    // A named entity and the default of the same type are different keys.
    let default_user = quota(&[("user", None)], &[("consumer_byte_rate", 5.0)]);
    let empty_name = quota(&[("user", Some(""))], &[("consumer_byte_rate", 7.0)]);
    {
        let s = engine(dir.path());
        assert!(s.client_quotas().unwrap().is_empty());
        s.put_client_quotas(&[alice.clone(), default_user.clone(), empty_name.clone()])
            .unwrap();
        s.close();
    }
    let s = engine(dir.path());
    let got = s.client_quotas().unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    for q in [&alice, &default_user, &empty_name] {
        assert!(got.contains(q), "{q:?} survives reopen");
    }
    // No values removes the entity; replacing values replaces them all.
    s.put_client_quotas(&[
        quota(&[("user", None)], &[]),
        quota(&[("user", Some(""))], &[("producer_byte_rate", 1.0)]),
    ])
    .unwrap();
    let got = s.client_quotas().unwrap();
    assert_eq!(
        got,
        vec![
            quota(&[("user", Some(""))], &[("producer_byte_rate", 1.0)]),
            alice,
        ],
        "in key order: the empty name sorts before alice"
    );
}

fn bad_input_is_refused(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    let mut c = no_configs();
    c.insert("max.message.bytes".into(), "500".into());
    s.create_topic("t", 1, c).unwrap();
    assert!(matches!(
        s.append("nope", 0, batch_of(1, 0, "x")),
        Err(StorageError::UnknownTopic(_))
    ));
    assert!(matches!(
        s.append("t", 1, batch_of(1, 0, "x")),
        Err(StorageError::UnknownPartition { partition: 1, .. })
    ));
    assert!(matches!(
        s.append("t", -1, batch_of(1, 0, "x")),
        Err(StorageError::UnknownPartition { .. })
    ));
    let mut corrupt = batch_of(2, 0, "x");
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        s.append("t", 0, corrupt),
        Err(StorageError::CorruptBatch(_))
    ));
    assert!(matches!(
        s.append("t", 0, vec![0; 10]),
        Err(StorageError::CorruptBatch(_))
    ));
    assert!(matches!(
        s.append("t", 0, batch_of(20, 0, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")),
        Err(StorageError::MessageTooLarge { max: 500, .. })
    ));
    assert_eq!(s.offsets("t", 0).unwrap().log_end, 0, "nothing was written");
    let mut lat = no_configs();
    lat.insert("message.timestamp.type".into(), "LogAppendTime".into());
    s.set_topic_configs("t", lat).unwrap();
    let o = append_durable(&s, "t", 0, batch_of(2, 5, "x"));
    let stamped = o.log_append_time.expect("LogAppendTime stamps the batch");
    let r = s.read("t", 0, 0, usize::MAX, true).unwrap();
    let h = batch::validate(&r.records.to_bytes()).expect("CRC rewritten");
    assert_eq!((h.first_timestamp, h.max_timestamp), (stamped, stamped));
}

/// A sealed segment exported in chunks is the whole export cut at batch boundaries: each
/// chunk at least the chunk size (but the last), positions counted from the segment's start;
/// an error from the sink stops the export.
fn chunked_export(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    let mut c = no_configs();
    c.insert("segment.bytes".into(), "4000".into());
    s.create_topic("t", 1, c).unwrap();
    for i in 0..40 {
        append_durable(&s, "t", 0, batch_of(3, i, "chunk"));
    }
    let seg = s.segments("t", 0).unwrap()[0];
    assert!(seg.sealed && seg.batches > 5, "{seg:?}");
    let whole = s.export_segment("t", 0, seg.base_offset).unwrap();
    assert_eq!(whole.data.len() as u64, seg.bytes);
    let mut chunks = Vec::new();
    let info = s
        .export_segment_chunks("t", 0, seg.base_offset, 300, |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
    assert_eq!(info, seg);
    assert!(chunks.len() > 2);
    let (last, full) = chunks.split_last().unwrap();
    assert!(full.iter().all(|c| c.data.len() >= 300) && !last.data.is_empty());
    let data: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
    let index: Vec<_> = chunks.iter().flat_map(|c| c.batches.clone()).collect();
    assert_eq!(data, whole.data.to_vec());
    assert_eq!(index, whole.index);
    let mut calls = 0;
    let stopped = s.export_segment_chunks("t", 0, seg.base_offset, 300, |_| {
        calls += 1;
        Err(StorageError::Archive("stop".into()))
    });
    assert!(matches!(stopped, Err(StorageError::Archive(_))) && calls == 1);
    let active = s.segments("t", 0).unwrap().last().unwrap().base_offset;
    assert!(matches!(
        s.export_segment_chunks("t", 0, active, 300, |_| Ok(())),
        Err(StorageError::InvalidRequest(_))
    ));
}

/// `suite!(engines...; [cases...])`: one test module per engine with every case.
macro_rules! suite {
    ($($engine:ident),* ; $cases:tt) => {
        $(cases!($engine $cases);)*
    };
}

macro_rules! cases {
    ($engine:ident [$($case:ident),* $(,)?]) => {
        mod $engine {
            $(#[test] fn $case() { super::$case(super::$engine); })*
        }
    };
}

suite!(rocks_fsync, rocks_no_fsync, rocks_no_cache, rocks_tiny_cache; [
    append_read_round_trip, read_starts_with_batch_containing_offset, max_bytes_edges,
    repeated_reads_agree, high_watermark_bounds_reads, timestamps, truncation_and_segments,
    topic_delete_and_recreate, idempotent_producers, group_offsets_and_kv, bad_input_is_refused,
    chunked_export, acls_persist, scram_credentials_persist, client_quotas_persist,
    compaction_keeps_the_latest_value_per_key, compaction_removes_tombstones_after_delete_retention,
    compaction_takes_several_passes_with_a_small_key_map, compaction_cut_short_leaves_a_whole_log,
    compaction_keeps_idempotent_producers_whole,
    group_metadata_persists,
]);
