//! Storage state that must not half-happen or outlive its purpose: a multi-batch payload
//! is appended all or nothing, a topic delete takes its committed offsets along, and
//! idempotent-producer states expire.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_storage::batch::BatchBuilder;
use strata_storage::{GroupOffset, StorageError, Store, StoreConfig};

fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open")
}

fn sequenced(producer: i64, seq: i32, n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(0).producer(producer, 0, seq);
    for _ in 0..n {
        b = b.record(0, None, b"v");
    }
    b.build()
}

/// Several batches for one partition: a bad one anywhere (corrupt, or a sequence that
/// does not continue the batch before it) refuses the whole payload.
#[test]
fn multi_batch_payloads_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create_topic("t", 1, BTreeMap::new()).unwrap();
    let good = bytes::Bytes::from(sequenced(5, 0, 2));
    let mut corrupt = sequenced(5, 2, 1);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        s.append_batches("t", 0, &[good.clone(), corrupt.into()]),
        Err(StorageError::CorruptBatch(_))
    ));
    assert!(matches!(
        s.append_batches("t", 0, &[good.clone(), sequenced(5, 3, 1).into()]),
        Err(StorageError::OutOfOrderSequence {
            expected: 2,
            got: 3,
            ..
        })
    ));
    assert_eq!(s.offsets("t", 0).unwrap().log_end, 0, "nothing written");
    let o = s
        .append_batches("t", 0, &[good, sequenced(5, 2, 1).into()])
        .unwrap();
    assert_eq!((o.base_offset, o.last_offset), (0, 2));
    s.close();
}

/// Deleting a topic deletes every group's committed offsets for it, and only for it.
#[test]
fn deleting_a_topic_deletes_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create_topic("t", 2, BTreeMap::new()).unwrap();
    s.create_topic("other", 1, BTreeMap::new()).unwrap();
    let offset = |topic: &str, partition, offset| GroupOffset {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: 0,
        metadata: String::new(),
        commit_timestamp_ms: 1,
    };
    let offsets = [offset("t", 0, 5), offset("t", 1, 6), offset("other", 0, 7)];
    let rt = rt();
    for g in ["g1", "g2"] {
        rt.block_on(s.commit_offsets(g, &offsets)).unwrap();
    }
    s.delete_topic("t").unwrap();
    for g in ["g1", "g2"] {
        assert_eq!(s.fetch_offsets(g).unwrap(), vec![offset("other", 0, 7)]);
    }
    s.create_topic("t", 2, BTreeMap::new()).unwrap();
    assert_eq!(s.fetch_offsets("g1").unwrap().len(), 1);
    s.close();
}

/// Offset commits wait for the group-commit syncer: run them on a runtime.
fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

const DAY_MS: i64 = 24 * 3600 * 1000;

fn open_expiring(dir: &std::path::Path, expiration_ms: i64) -> Store {
    let mut c = StoreConfig::new(dir);
    c.producer_id_expiration_ms = expiration_ms;
    Store::open(c).expect("open")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A producer idle for `producer_id_expiration_ms` is forgotten (its next batch is accepted
/// at any sequence, as for a new producer), while an active one keeps its state; and a
/// state that expired while the store was closed is not loaded again.
#[test]
fn idle_producer_states_expire() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open_expiring(dir.path(), DAY_MS);
        s.create_topic("t", 1, BTreeMap::new()).unwrap();
        s.append("t", 0, sequenced(1, 0, 2)).unwrap();
        s.append("t", 0, sequenced(2, 0, 2)).unwrap();
        assert!(matches!(
            s.append("t", 0, sequenced(1, 9, 1)),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        assert_eq!(s.expire_producers().unwrap(), 0, "nobody idle yet");
        assert_eq!(s.expire_producers_at(now_ms() + 2 * DAY_MS).unwrap(), 2);
        // Forgotten: any sequence is accepted again.
        assert!(s.append("t", 0, sequenced(1, 9, 1)).is_ok());
        s.close();
    }
    {
        // Producer 1 wrote just now; reopened with a 1 ms expiration after a pause, its
        // state is dropped at open.
        std::thread::sleep(Duration::from_millis(20));
        let s = open_expiring(dir.path(), 1);
        assert!(
            s.append("t", 0, sequenced(1, 50, 1)).is_ok(),
            "an expired state must not be loaded"
        );
        s.close();
    }
    let s = open_expiring(dir.path(), DAY_MS);
    assert!(matches!(
        s.append("t", 0, sequenced(1, 70, 1)),
        Err(StorageError::OutOfOrderSequence { expected: 51, .. })
    ));
}

/// A topic restored from an archive keeps the id and configs it is given; each partition's
/// log starts empty at its start offset (log start = high watermark), new batches continue
/// there, and all of it survives a reopen. Names and ids in use are refused.
#[test]
fn restored_topics_start_at_the_given_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let id = uuid::Uuid::new_v4();
    let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
    let info = s
        .restore_topic("t", id, &[120, 0, 7], configs.clone(), 1_700_000_000_000)
        .unwrap();
    assert_eq!((info.id, info.partitions, &info.configs), (id, 3, &configs));
    assert_eq!(s.topic_created_ms("t"), Some(1_700_000_000_000));
    let o = s.offsets("t", 0).unwrap();
    assert_eq!((o.log_start, o.high_watermark, o.log_end), (120, 120, 120));
    let a = s.append("t", 0, sequenced(-1, -1, 3)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (120, 122));
    assert!(matches!(
        s.restore_topic("t", uuid::Uuid::new_v4(), &[0], BTreeMap::new(), 0),
        Err(StorageError::TopicExists(_))
    ));
    assert!(matches!(
        s.restore_topic("u", id, &[0], BTreeMap::new(), 0),
        Err(StorageError::InvalidRequest(_))
    ));
    assert!(s
        .restore_topic("u", uuid::Uuid::new_v4(), &[-1], BTreeMap::new(), 0)
        .is_err());
    assert!(s
        .restore_topic("u", uuid::Uuid::new_v4(), &[], BTreeMap::new(), 0)
        .is_err());
    s.close();

    let s = open(dir.path());
    assert_eq!(s.topic("t").unwrap().id, id);
    let o = s.offsets("t", 0).unwrap();
    assert_eq!((o.log_start, o.log_end), (120, 123));
    let o = s.offsets("t", 2).unwrap();
    assert_eq!((o.log_start, o.high_watermark), (7, 7));
    s.close();
}
