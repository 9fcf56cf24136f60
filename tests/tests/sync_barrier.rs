//! The sync barrier: with the group-commit syncer held (a test hook), an acks=all produce
//! is appended but not answered, and Fetch shows none of its offsets; acks=1 is answered
//! anyway. Released, the acks=all answer and the records arrive.
//!
//! A broker that acknowledged acks=all before its data was durable, or let consumers read
//! past the durable point, fails here; so does one whose acks=1 waited for the fsync.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::ProduceRequest;
use strata_tests::raw::{self, simple_batch};
use strata_tests::*;

/// How long the held acks=all request must stay unanswered once the broker has shown (by
/// answering later requests) that it appended it: an ack that does not wait for the sync
/// is written right after the append, microseconds later, so this is a wide margin.
const SILENCE: Duration = Duration::from_millis(500);

#[test]
fn acks_all_waits_for_the_sync_and_fetch_sees_nothing_before_it() -> Result<()> {
    let (broker, topic) = broker_with_topic("barrier", 1)?;
    let addr = broker.addr();
    let version = raw::best_version::<ProduceRequest>(addr)?;

    let hold = broker.hold_syncer().context("broker not running")?;
    let mut all = raw::connect(addr)?;
    let req = raw::produce_request(&topic, 0, simple_batch("all", 3), -1);
    all.write_all(&raw::encode_request(version, 1, &req)?)?;

    // acks=1 on another connection is answered without the sync. Its offsets show when the
    // acks=all batch (3 records) was appended: before it, a one-record batch lands at the
    // count of acks=1 records so far; after it, 3 further on.
    let mut one = raw::connect(addr)?;
    let deadline = Instant::now() + raw::RAW_TIMEOUT;
    let mut sent_one = 0i64;
    loop {
        let req = raw::produce_request(&topic, 0, simple_batch("one", 1), 1);
        let r = raw::only_partition(raw::call(&mut one, version, 10 + sent_one as i32, &req)?)?;
        ensure!(r.error_code == 0, "acks=1 with the syncer held: {r:?}");
        sent_one += 1;
        match r.base_offset - (sent_one - 1) {
            0 => {}
            3 => break,
            other => bail!("acks=1 batch at offset {}: shift {other}", r.base_offset),
        }
        ensure!(
            Instant::now() < deadline,
            "the acks=all batch was never appended"
        );
    }
    let end = 3 + sent_one;

    ensure!(
        raw::silent_for(&mut all, SILENCE)?,
        "acks=all was answered while the syncer was held"
    );
    let mut reader = raw::connect(addr)?;
    let f = raw::fetch(&mut reader, 1, &raw::fetch_request(&topic, 0, 0, 0, 1))?;
    ensure!(
        f.error_code == 0 && f.high_watermark == 0 && f.batches.is_empty(),
        "fetch with the syncer held shows unsynced data: {f:?}"
    );

    drop(hold);
    let r = raw::only_partition(raw::read_response::<ProduceRequest>(&mut all, version, 1)?)?;
    ensure!(r.error_code == 0, "acks=all after the sync: {r:?}");
    let f = raw::fetch(&mut reader, 2, &raw::fetch_request(&topic, 0, 0, 5_000, 1))?;
    let offsets: Vec<i64> = (0..end).collect();
    ensure!(
        f.high_watermark == end && f.offsets() == offsets,
        "after the sync: acks=all at {}, fetch {f:?}, expected offsets 0..{end}",
        r.base_offset
    );
    broker.shutdown()
}
