//! Log compaction cases of the conformance suite: what a compacted partition reads back as
//! after cleaning passes, on every engine.

use std::collections::{BTreeMap, HashMap};

use strata_storage::batch::BatchBuilder;
use strata_storage::clean::{CleanOptions, CleanReport, NoCodec};
use strata_storage::Store;

use super::{append_durable, Engine};

#[path = "../common/read_back.rs"]
mod read_back;
use read_back::{read_from, Rec};

const HOUR_MS: i64 = 3_600_000;

/// A compacted topic whose every batch is a segment of its own (so each is sealed as soon
/// as the next one comes).
fn compacted(s: &Store, topic: &str) {
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), "1".to_string()),
    ]);
    s.create_topic(topic, 1, configs).expect("create");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn opts(delete_retention_ms: i64, key_map_bytes: usize) -> CleanOptions {
    CleanOptions {
        now_ms: now_ms(),
        min_compaction_lag_ms: 0,
        delete_retention_ms,
        segment_bytes: 1 << 30,
        key_map_bytes,
    }
}

/// Cleans until a pass reports the log clean; returns the passes' reports.
fn clean_fully(s: &Store, topic: &str, o: &CleanOptions) -> Vec<CleanReport> {
    let mut reports = Vec::new();
    loop {
        let r = s
            .clean(topic, 0, o, &NoCodec, &mut |_| true)
            .expect("clean");
        reports.push(r);
        assert!(reports.len() < 1000, "cleaning does not converge");
        if r.complete {
            return reports;
        }
    }
}

/// Appends one batch of `(key, value)` records (value `None`: a tombstone); returns its base
/// offset.
fn put(s: &Store, topic: &str, recs: &[(&str, Option<&str>)]) -> i64 {
    let mut b = BatchBuilder::new(1_700_000_000_000);
    for (k, v) in recs {
        b = match v {
            Some(v) => b.record(1_700_000_000_000, Some(k.as_bytes()), v.as_bytes()),
            None => b.tombstone(1_700_000_000_000, k.as_bytes()),
        };
    }
    append_durable(s, topic, 0, b.build()).base_offset
}

/// What a compacted log must read as: the last record of each key among `written`, in
/// offset order (tombstones only when `with_tombstones`), plus whatever lies at or past
/// `untouched_from` as written.
fn latest(written: &[Rec], with_tombstones: bool, untouched_from: i64) -> Vec<Rec> {
    let mut last: HashMap<&[u8], &Rec> = HashMap::new();
    for r in written.iter().filter(|r| r.0 < untouched_from) {
        last.insert(&r.1, r);
    }
    let mut out: Vec<Rec> = last
        .into_values()
        .filter(|r| with_tombstones || r.2.is_some())
        .cloned()
        .collect();
    out.extend(written.iter().filter(|r| r.0 >= untouched_from).cloned());
    out.sort_by_key(|r| r.0);
    out
}

pub fn compaction_keeps_the_latest_value_per_key(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    compacted(&s, "c");
    // Ten batches over 30 keys, each overlapping the last: batches are rewritten, dropped
    // whole and kept as they are.
    for round in 0..10 {
        let recs: Vec<(String, String)> = (0..6)
            .map(|j| {
                (
                    format!("k{}", (round * 3 + j) % 30),
                    format!("v{round}-{j}"),
                )
            })
            .collect();
        let refs: Vec<(&str, Option<&str>)> = recs
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        put(&s, "c", &refs);
    }
    let active = put(&s, "c", &[("tail", Some("t"))]);
    let written = read_from(&s, "c", 0);
    assert_eq!(written.len(), 61);
    let before = s.cleanable("c", 0, now_ms(), 0).unwrap();
    assert_eq!((before.first_dirty, before.end), (0, active));
    assert!(before.dirty_bytes > 0 && before.clean_bytes == 0);

    let reports = clean_fully(&s, "c", &opts(HOUR_MS, 1 << 20));
    assert_eq!(reports.len(), 1, "one pass when every key fits the map");
    let r = reports[0];
    assert_eq!(r.cleaned_to, active);
    assert!(
        r.records_superseded > 0 && r.batches_removed > 0 && r.batches_written > 0,
        "{r:?}"
    );
    assert!(r.bytes_after < r.bytes_before, "{r:?}");
    let expected = latest(&written, true, active);
    assert_eq!(read_from(&s, "c", 0), expected);
    // Offsets never change; a read from inside a gap starts at the next record.
    let gap = (0..active)
        .find(|o| !expected.iter().any(|r| r.0 == *o))
        .unwrap();
    let after_gap: Vec<Rec> = expected.iter().filter(|r| r.0 >= gap).cloned().collect();
    assert_eq!(read_from(&s, "c", gap), after_gap);
    let after = s.cleanable("c", 0, now_ms(), 0).unwrap();
    assert_eq!((after.first_dirty, after.dirty_bytes), (active, 0));
    assert!(
        s.segments("c", 0).unwrap().len() < 11,
        "cleaned segments are merged"
    );
    // Nothing is dirty: another pass does nothing.
    let again = s
        .clean("c", 0, &opts(HOUR_MS, 1 << 20), &NoCodec, &mut |_| true)
        .unwrap();
    assert_eq!(again.bytes_read, 0);
    // New updates make the log dirty again; the clean part is compacted against them.
    put(&s, "c", &[("k0", Some("new")), ("tail", Some("t2"))]);
    let active2 = put(&s, "c", &[("z", Some("z"))]);
    let written2 = read_from(&s, "c", 0);
    clean_fully(&s, "c", &opts(HOUR_MS, 1 << 20));
    let expected2 = latest(&written2, true, active2);
    assert_eq!(read_from(&s, "c", 0), expected2);
    s.close();
    // All of it survives a restart, the checkpoint too.
    let s = engine(dir.path());
    assert_eq!(read_from(&s, "c", 0), expected2);
    assert_eq!(
        s.cleanable("c", 0, now_ms(), 0).unwrap().first_dirty,
        active2
    );
    assert_eq!(s.offsets("c", 0).unwrap().log_end, active2 + 1);
}

pub fn compaction_removes_tombstones_after_delete_retention(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    compacted(&s, "c");
    put(
        &s,
        "c",
        &[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))],
    );
    put(&s, "c", &[("a", None), ("b", Some("2"))]);
    let active = put(&s, "c", &[("d", Some("1"))]);
    let written = read_from(&s, "c", 0);
    // Within delete.retention.ms the tombstone stays (and a's older value goes).
    clean_fully(&s, "c", &opts(HOUR_MS, 1 << 20));
    assert_eq!(read_from(&s, "c", 0), latest(&written, true, active));
    let c = s.cleanable("c", 0, now_ms(), 0).unwrap();
    assert!(c.tombstones_since_ms.is_some());
    assert!(!c.tombstones_due(now_ms(), HOUR_MS));
    assert!(c.tombstones_due(now_ms() + HOUR_MS, HOUR_MS));
    s.close();
    // After it, a pass removes the tombstone although nothing is dirty (and after a restart:
    // the tombstones' age is kept with the checkpoint).
    let s = engine(dir.path());
    let r = clean_fully(&s, "c", &opts(0, 1 << 20));
    assert_eq!(r.iter().map(|r| r.tombstones_removed).sum::<u64>(), 1);
    assert_eq!(read_from(&s, "c", 0), latest(&written, false, active));
    let c = s.cleanable("c", 0, now_ms(), 0).unwrap();
    assert_eq!(c.tombstones_since_ms, None);
}

pub fn compaction_takes_several_passes_with_a_small_key_map(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    compacted(&s, "c");
    // 40 keys, each written 3 times, 4 per batch; the map holds 7 keys, so each pass maps
    // about two batches.
    for round in 0..3 {
        for first in (0..40).step_by(4) {
            let recs: Vec<(String, Option<String>)> = (first..first + 4)
                .map(|k| {
                    let value = (round < 2 || k % 5 != 0).then(|| format!("r{round}"));
                    (format!("key-{k}"), value)
                })
                .collect();
            let refs: Vec<(&str, Option<&str>)> = recs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            put(&s, "c", &refs);
        }
    }
    let active = put(&s, "c", &[("tail", Some("t"))]);
    let written = read_from(&s, "c", 0);
    let reports = clean_fully(&s, "c", &opts(HOUR_MS, 0));
    assert!(reports.len() > 5, "{} passes", reports.len());
    assert!(reports[..reports.len() - 1].iter().all(|r| !r.complete));
    let cleaned_to: Vec<i64> = reports.iter().map(|r| r.cleaned_to).collect();
    assert!(cleaned_to.windows(2).all(|w| w[0] < w[1]), "{cleaned_to:?}");
    assert_eq!(read_from(&s, "c", 0), latest(&written, true, active));
}

pub fn compaction_cut_short_leaves_a_whole_log(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    compacted(&s, "c");
    for round in 0..20 {
        let v = format!("v{round}");
        put(&s, "c", &[("a", Some(&v)), ("b", Some(&v))]);
    }
    let active = put(&s, "c", &[("tail", Some("t"))]);
    let written = read_from(&s, "c", 0);
    let full = latest(&written, true, active);
    // Stop passes after ever more steps: each leaves a log in which the latest value of
    // every key is still there and everything read is what was written at its offset.
    for steps in [1usize, 10, 21, 22, 25, 33, 40, 50, 57, 60] {
        let mut n = 0;
        let r = s
            .clean("c", 0, &opts(HOUR_MS, 1 << 20), &NoCodec, &mut |_| {
                n += 1;
                n <= steps
            })
            .unwrap();
        let now = read_from(&s, "c", 0);
        for rec in &now {
            assert!(written.contains(rec), "{rec:?} was never written");
        }
        for rec in &full {
            assert!(
                now.contains(rec),
                "{rec:?} is lost after a pass stopped at {steps}"
            );
        }
        if !r.interrupted {
            break;
        }
    }
    clean_fully(&s, "c", &opts(HOUR_MS, 1 << 20));
    assert_eq!(read_from(&s, "c", 0), full);
}

pub fn compaction_keeps_idempotent_producers_whole(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let s = engine(dir.path());
    compacted(&s, "c");
    let batch = |seq: i32, v: &str| {
        BatchBuilder::new(0)
            .producer(42, 0, seq)
            .record(0, Some(b"k"), v.as_bytes())
            .record(0, Some(b"other"), v.as_bytes())
            .build()
    };
    let first = append_durable(&s, "c", 0, batch(0, "a"));
    append_durable(&s, "c", 0, batch(2, "b"));
    let last = append_durable(&s, "c", 0, batch(4, "c"));
    put(&s, "c", &[("tail", Some("t"))]);
    clean_fully(&s, "c", &opts(HOUR_MS, 1 << 20));
    assert!(read_from(&s, "c", 0)
        .iter()
        .all(|r| r.0 >= last.base_offset));
    // A retry of the last batch is still known (same offsets); the next sequence follows on.
    let retry = s.append("c", 0, batch(4, "c")).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, last.base_offset);
    assert!(s.append("c", 0, batch(6, "d")).is_ok());
    // A retry of a batch whose records were all compacted away is a duplicate too (its
    // state outlives its records), not a sequence error.
    let old = s.append("c", 0, batch(0, "a")).unwrap();
    assert!(old.duplicate && old.base_offset == first.base_offset);
}
