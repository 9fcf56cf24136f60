//! Shared by the coordinator's tests: a coordinator on a real store, with short timers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_storage::{Store, StoreConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Coordinator, GroupSettings, JoinArgs};

/// A coordinator on a fresh store in `dir`.
pub fn coordinator(dir: &std::path::Path) -> Arc<Coordinator> {
    coordinator_on(
        Store::open(StoreConfig::new(dir)).unwrap(),
        CancellationToken::new(),
    )
}

/// A coordinator on `store` whose actors end when `cancel` is cancelled (a broker stopping).
pub fn coordinator_on(store: Store, cancel: CancellationToken) -> Arc<Coordinator> {
    let settings = GroupSettings {
        initial_rebalance_delay: Duration::from_millis(10),
        min_session_timeout: Duration::from_secs(1),
        max_session_timeout: Duration::from_secs(100),
    };
    Arc::new(Coordinator::new(
        store,
        settings,
        cancel,
        TaskTracker::new(),
    ))
}

/// A new member's JoinGroup (no KIP-394 round trip) with a 30 s session.
pub fn join_args() -> JoinArgs {
    JoinArgs {
        member_id: String::new(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(30),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"m"))],
        require_known_member_id: false,
    }
}

/// Polls `check` every 10 ms until it holds; panics after 10 s, naming `what`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
