//! A thousand groups of ten members, each member on its own connection: all of them settle
//! (Stable, every member holding the assignment its leader gave it), the broker adds no
//! thread per group, and produce and fetch keep working meanwhile.

use super::*;
use strata_tests::group_storm::{wait_stable, Storm};

#[test]
fn a_thousand_groups_of_ten_members_settle() -> Result<()> {
    const GROUPS: usize = 1000;
    const MEMBERS: usize = 10;
    // One socket per member here, and as many in the broker (which inherits the limit),
    // plus the test's clients and RocksDB's files.
    const OPEN_FILES: u64 = (GROUPS * MEMBERS) as u64 + 2_000;
    if let Err(why) = strata_tests::procstat::raise_open_file_limit(OPEN_FILES) {
        eprintln!("SKIPPED a_thousand_groups_of_ten_members_settle: {why}");
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("strata-groups").tempdir()?;
    let mut env = BROKER_ENV.to_vec();
    // One connection per member, plus the test's own clients.
    env.push(("STRATA_MAX_CONNECTIONS", "12000"));
    let broker = BrokerProcess::spawn(&dir.path().join("data"), 0, &env)?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-many");
    create_topic(&bs, &topic, 2)?;
    let producer = recording_producer(&producer_config(&bs))?;
    // Warm up produce and fetch first, so their threads exist before the count below.
    produce_and_wait(&producer, &topic, 0..100, 2, size)?;
    verify_test_messages(&consume_all(&bs, &topic, CONSUME_TIMEOUT)?, 0..100, 2, size)?;
    let threads_before = broker.status_field("Threads")?;

    let storm = Storm {
        groups: GROUPS,
        members: MEMBERS,
        prefix: topic_name("storm"),
        session_timeout_ms: 60_000,
        heartbeat_interval: Duration::from_secs(2),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let running = rt.block_on(async { storm.start(broker.addr()) });

    // Produce and fetch while ten thousand members join.
    produce_and_wait(&producer, &topic, 100..400, 2, size)?;
    verify_test_messages(&consume_all(&bs, &topic, CONSUME_TIMEOUT)?, 0..400, 2, size)
        .context("consuming while the groups form")?;

    let took = rt.block_on(wait_stable(
        broker.addr(),
        &storm,
        &running,
        Duration::from_secs(300),
    ))?;
    let threads_after = broker.status_field("Threads")?;
    eprintln!(
        "{GROUPS} groups x {MEMBERS} members stable after {took:?}; {} joins; broker threads \
         {threads_before} -> {threads_after}, RSS {} MiB",
        running.joins.load(std::sync::atomic::Ordering::Relaxed),
        broker.status_field("VmRSS")? / 1024
    );
    // Per-group threads would add a thousand; allow for the runtime's blocking pool.
    ensure!(
        threads_after < threads_before + 64,
        "broker threads grew from {threads_before} to {threads_after}"
    );
    let mut ids = BTreeSet::new();
    for m in &running.members {
        let m = m.lock().unwrap_or_else(|e| e.into_inner());
        ensure!(
            ids.insert(m.member_id.clone()),
            "member id {} given twice",
            m.member_id
        );
    }
    ensure!(ids.len() == GROUPS * MEMBERS);

    let listed: BTreeSet<String> = admin(&bs)?
        .inner()
        .fetch_group_list(None, Duration::from_secs(30))?
        .groups()
        .iter()
        .map(|g| g.name().to_string())
        .collect();
    let missing = (0..GROUPS)
        .filter(|&g| !listed.contains(&storm.group_id(g)))
        .count();
    ensure!(missing == 0, "ListGroups lacks {missing} of the groups");
    rt.block_on(running.stop())
}
