//! Crash test of the log cleaner: a child process keeps appending updates of 40 keys to a
//! compacted partition (fsync on), printing each one it saw become durable, and keeps cleaning
//! the partition with slowed-down passes; the parent `kill -9`s it at random moments, reopens
//! the store and checks that the crash left a whole log: every record read is one that was
//! written at that offset, and the latest acknowledged record of every key is there.
//! Repeated on the same directory, so each round also recovers from the previous crash.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;
use strata_storage::batch::BatchBuilder;
use strata_storage::clean::{CleanOptions, NoCodec};
use strata_storage::{Store, StoreConfig};

#[allow(dead_code)]
#[path = "common/read_back.rs"]
mod read_back;

const CHILD_DIR_ENV: &str = "STRATA_CLEAN_CRASH_CHILD_DIR";
const KEYS: u64 = 40;
/// Kill rounds: enough for kills to land mid-append, mid-pass and between passes.
const ROUNDS: usize = 6;

fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store")
}

fn key_of(seq: u64) -> String {
    format!("key-{}", seq % KEYS)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The child: appends `seq` (value) under `key_of(seq)`, prints `ACK offset seq` once
/// durable, and runs a slowed cleaning pass every 8 appends.
#[test]
#[ignore = "run by cleaner_crash_keeps_the_latest_of_every_key as a child process"]
fn clean_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    if store.topic("c").is_none() {
        let configs = [("cleanup.policy", "compact"), ("segment.bytes", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        store.create_topic("c", 1, configs).expect("create");
    }
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        * 1000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in 0.. {
        let seq = start + n;
        let b = BatchBuilder::new(0)
            .record(0, Some(key_of(seq).as_bytes()), seq.to_string().as_bytes())
            .build();
        let o = store.append("c", 0, b).expect("append");
        let hw = rt
            .block_on(store.wait_for_high_watermark("c", 0, o.last_offset, Duration::from_secs(30)))
            .unwrap();
        assert!(hw > o.last_offset);
        println!("ACK {} {seq}", o.base_offset);
        if n % 8 == 7 {
            let opts = CleanOptions {
                now_ms: now_ms(),
                min_compaction_lag_ms: 0,
                delete_retention_ms: 0,
                segment_bytes: 4096,
                key_map_bytes: 1 << 20,
            };
            store
                .clean("c", 0, &opts, &NoCodec, &mut |_| {
                    std::thread::sleep(Duration::from_micros(300));
                    true
                })
                .expect("clean");
        }
    }
}

#[test]
fn cleaner_crash_keeps_the_latest_of_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    // offset -> seq of every acknowledged append, over all rounds.
    let mut acked: HashMap<i64, u64> = HashMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["clean_crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ACK") {
                    continue;
                }
                let (Some(o), Some(s)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let _ = tx.send((o.parse::<i64>().unwrap(), s.parse::<u64>().unwrap()));
            }
        });
        // Wait for the first acknowledgement (the store opened), then a random while.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child never acked");
        acked.insert(first.0, first.1);
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        let store = open(dir.path());
        let read = read_back::read_from(&store, "c", 0);
        let mut last = i64::MIN;
        let mut present: HashMap<i64, u64> = HashMap::new();
        for (offset, key, value) in &read {
            assert!(
                *offset > last,
                "round {round}: offsets not increasing at {offset}"
            );
            last = *offset;
            let seq: u64 = String::from_utf8_lossy(value.as_deref().unwrap())
                .parse()
                .unwrap();
            assert_eq!(key, key_of(seq).as_bytes(), "round {round}: key of {seq}");
            if let Some(&s) = acked.get(offset) {
                assert_eq!(
                    s, seq,
                    "round {round}: offset {offset} holds {seq}, acked {s}"
                );
            }
            present.insert(*offset, seq);
        }
        let mut latest: HashMap<String, i64> = HashMap::new();
        for (&offset, &seq) in &acked {
            let k = key_of(seq);
            if latest.get(&k).is_none_or(|&o| o < offset) {
                latest.insert(k, offset);
            }
        }
        for (k, offset) in &latest {
            assert!(
                present.contains_key(offset),
                "round {round}: the latest acknowledged record of {k} (offset {offset}) is gone"
            );
        }
        store.close();
        if round + 1 == ROUNDS {
            assert!(read.len() < acked.len(), "nothing was compacted");
        }
    }
}
