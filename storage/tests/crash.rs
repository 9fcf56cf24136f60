//! Crash test: a child process appends with fsync on and prints each batch it saw become
//! durable; the parent `kill -9`s it at random moments, reopens the store, and checks that
//! every acknowledged batch is there byte for byte and that offsets are dense. Repeated on
//! the same directory, so each round also recovers from the previous crash.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;
use strata_storage::batch::{self, BatchBuilder};
use strata_storage::{Store, StoreConfig};

const CHILD_DIR_ENV: &str = "STRATA_CRASH_CHILD_DIR";
const PARTITIONS: i32 = 3;
/// Kill rounds: enough for crashes to land in different phases (mid-append, mid-sync,
/// mid-flush), few enough to keep the test to seconds.
const ROUNDS: usize = 8;

/// The batch with sequence number `seq`: contents derive from `seq` alone, so the parent
/// can rebuild it to compare.
fn batch_for(seq: u64) -> Vec<u8> {
    let ts = 1_700_000_000_000 + seq as i64;
    let mut b = BatchBuilder::new(ts);
    for i in 0..(1 + seq % 7) {
        let value = format!("{seq}-{i}-{}", "x".repeat((seq % 300) as usize));
        b = b.record(ts, Some(&seq.to_be_bytes()), value.as_bytes());
    }
    b.build()
}

fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store")
}

/// The child: appends from several concurrent tasks and prints `ACK partition base seq`
/// once the high watermark passed the batch.
#[test]
#[ignore = "run by crash_kill9_keeps_every_acknowledged_batch as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    if store.topic("crash").is_none() {
        store
            .create_topic("crash", PARTITIONS, Default::default())
            .expect("create");
    }
    // Start sequence numbers after what earlier rounds may have written.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
        * 1000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..6u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let seq = start + n * 6 + task;
                    let p = (seq % PARTITIONS as u64) as i32;
                    let s = store.clone();
                    let o =
                        tokio::task::spawn_blocking(move || s.append("crash", p, batch_for(seq)))
                            .await
                            .unwrap()
                            .expect("append");
                    let hw = store
                        .wait_for_high_watermark("crash", p, o.last_offset, Duration::from_secs(30))
                        .await
                        .unwrap();
                    assert!(hw > o.last_offset);
                    println!("ACK {p} {} {seq}", o.base_offset);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn crash_kill9_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: Vec<(i32, i64, u64)> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let f: Vec<&str> = rest.split(' ').collect();
                    let _ = tx.send((
                        f[0].parse().unwrap(),
                        f[1].parse().unwrap(),
                        f[2].parse().unwrap(),
                    ));
                }
            }
        });
        // Let it get going (first ack), then kill it at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child acknowledged nothing");
        acked.push(first);
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());

        let store = open(dir.path());
        let mut all = Vec::new();
        for p in 0..PARTITIONS {
            let hw = store.offsets("crash", p).unwrap().high_watermark;
            let r = store.read("crash", p, 0, usize::MAX, true).unwrap();
            let mut next = 0;
            for b in batch::split(&r.records.to_bytes()).unwrap() {
                let h = batch::validate(b).expect("stored batches stay valid");
                assert_eq!(
                    h.base_offset, next,
                    "round {round}: offsets dense in partition {p}"
                );
                next = h.last_offset() + 1;
                all.push((p, h.base_offset, b.to_vec()));
            }
            assert_eq!(
                next, hw,
                "round {round}: the log ends at the high watermark"
            );
        }
        for &(p, base, seq) in &acked {
            let stored = all
                .iter()
                .find(|(sp, sb, _)| *sp == p && *sb == base)
                .unwrap_or_else(|| {
                    panic!("round {round}: acknowledged batch {seq} at {p}/{base} lost")
                });
            let expect = batch_for(seq);
            assert_eq!(
                &stored.2[16..],
                &expect[16..],
                "round {round}: batch {seq} differs"
            );
        }
        store.close();
    }
    assert!(
        acked.len() > ROUNDS,
        "the child acknowledged {} batches",
        acked.len()
    );
}
