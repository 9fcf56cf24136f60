//! The syncer test hook: while held, appends happen but nothing is published (the high
//! watermark stays, waiters keep waiting); released, everything appended is published.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_storage::batch::BatchBuilder;
use strata_storage::{Store, StoreConfig};

/// How long a held waiter is given to (wrongly) return: a sync takes milliseconds.
const HELD_WAIT: Duration = Duration::from_millis(300);
/// Bound for the release to publish; only a hang gets near it.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

fn batch(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(0);
    for i in 0..n {
        b = b.record(i as i64, None, b"v");
    }
    b.build()
}

#[test]
fn held_syncer_publishes_nothing_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(StoreConfig::new(dir.path())).unwrap();
    s.create_topic("t", 1, BTreeMap::new()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    s.append("t", 0, batch(2)).unwrap();
    assert_eq!(
        rt.block_on(s.wait_for_high_watermark("t", 0, 1, RELEASE_WAIT))
            .unwrap(),
        2
    );

    let hold = s.hold_syncer();
    s.append("t", 0, batch(3)).unwrap();
    let o = s.offsets("t", 0).unwrap();
    assert_eq!(
        (o.log_end, o.high_watermark),
        (5, 2),
        "appended, not published"
    );
    let hw = rt
        .block_on(s.wait_for_high_watermark("t", 0, 4, HELD_WAIT))
        .unwrap();
    assert_eq!(hw, 2, "a waiter was released while the syncer was held");

    drop(hold);
    let hw = rt
        .block_on(s.wait_for_high_watermark("t", 0, 4, RELEASE_WAIT))
        .unwrap();
    assert_eq!(hw, 5);
    s.close();
}
