//! Committed offsets across restarts, and static members restarting without a rebalance.

use super::*;

/// Commits on revoke, so that a member handing partitions over never causes duplicates.
struct CommitOnRevoke {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => self
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("commit on revoke: {e}")),
            }
        }
    }
}

type CommittingConsumer = BaseConsumer<CommitOnRevoke>;

fn committing_consumer(
    bs: &str,
    group: &str,
    name: &str,
    topic: &str,
) -> Result<CommittingConsumer> {
    let settings = member_settings(bs, group, name, &[("enable.auto.offset.store", "false")]);
    let c: CommittingConsumer = client_config(&settings).create_with_context(CommitOnRevoke {
        errors: Mutex::default(),
    })?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// Committed offsets of `group` for partitions `0..partitions` (absent: nothing committed).
pub(crate) fn committed(
    bs: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    let c: BaseConsumer =
        client_config(&member_settings(bs, group, "offsets-reader", &[])).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, CALL_TIMEOUT)?;
    let mut out = BTreeMap::new();
    for e in got.elements() {
        e.error()
            .with_context(|| format!("committed offset of partition {}", e.partition()))?;
        if let Offset::Offset(o) = e.offset() {
            out.insert(e.partition(), o);
        }
    }
    Ok(out)
}

/// Polls `consumers` round-robin; `take(i, rec)` decides whether consumer `i` processes the
/// record (then its offset is stored for the next commit). Stops when `done` says so.
fn poll_loop(
    consumers: &[&CommittingConsumer],
    timeout: Duration,
    mut take: impl FnMut(usize, &Rec) -> bool,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "poll loop timed out after {timeout:?}"
        );
        for (i, c) in consumers.iter().enumerate() {
            match c.poll(Duration::from_millis(20)) {
                None => {}
                Some(Ok(m)) if take(i, &to_rec(&m)) => c.store_offset_from_message(&m)?,
                Some(Ok(_)) => {}
                Some(Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                ))) => {}
                Some(Err(e)) => bail!("consumer {i}: {e}"),
            }
            let errors = c
                .context()
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            ensure!(errors.is_empty(), "consumer {i}: {errors:?}");
        }
    }
    Ok(())
}

/// Two members consume part of the topic and commit; both close, the broker is restarted
/// (SIGTERM, same data dir), more records arrive, and two new members resume exactly at the
/// committed offsets: over both sessions every record is processed once.
#[test]
fn committed_offsets_survive_consumer_and_broker_restart() -> Result<()> {
    let (_dir, mut broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-resume");
    let group = topic_name("g-resume");
    const P: i32 = 4;
    const FIRST: u64 = 4000;
    const SECOND: u64 = 2000;
    /// Records each member of the first session processes before committing and stopping.
    const K: usize = 700;
    create_topic(&bs, &topic, P)?;
    produce(&bs, &topic, 0..FIRST, P)?;

    // Session 1: each member processes K records, commits, closes.
    let mut processed: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    {
        let c1 = committing_consumer(&bs, &group, "s1-a", &topic)?;
        let c2 = committing_consumer(&bs, &group, "s1-b", &topic)?;
        let count = [Cell::new(0usize), Cell::new(0usize)];
        poll_loop(
            &[&c1, &c2],
            CONSUME_TIMEOUT,
            |i, rec| {
                if count[i].get() >= K {
                    return false;
                }
                count[i].set(count[i].get() + 1);
                processed
                    .entry(rec.partition)
                    .or_default()
                    .push(rec.clone());
                true
            },
            || count.iter().all(|n| n.get() >= K),
        )?;
        for c in [&c1, &c2] {
            match c.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last commit (made when a rebalance revoked).
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => return Err(e).context("commit"),
            }
        }
    }
    let expected: BTreeMap<i32, i64> = processed
        .iter()
        .map(|(&p, recs)| (p, recs.last().map_or(0, |r| r.offset + 1)))
        .collect();
    let got = committed(&bs, &group, &topic, P)?;
    ensure!(
        got == expected,
        "committed offsets {got:?}, expected {expected:?} (from what was processed)"
    );

    let status = broker.terminate()?;
    ensure!(
        status.success(),
        "broker exited with {status} after SIGTERM"
    );
    broker.restart()?;
    let got = committed(&bs, &group, &topic, P)?;
    ensure!(
        got == expected,
        "after the broker restart: committed offsets {got:?}, expected {expected:?}"
    );
    produce(&bs, &topic, FIRST..FIRST + SECOND, P)?;

    // Session 2: new members resume and read to the end.
    let ends: Vec<i64> = watermarks(&bs, &topic)?
        .into_iter()
        .map(|(_, hi)| hi)
        .collect();
    let mut resumed: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    let c3 = committing_consumer(&bs, &group, "s2-a", &topic)?;
    let c4 = committing_consumer(&bs, &group, "s2-b", &topic)?;
    let last: RefCell<BTreeMap<i32, i64>> =
        RefCell::new(expected.iter().map(|(&p, &o)| (p, o - 1)).collect());
    poll_loop(
        &[&c3, &c4],
        CONSUME_TIMEOUT,
        |_, rec| {
            last.borrow_mut().insert(rec.partition, rec.offset);
            resumed.entry(rec.partition).or_default().push(rec.clone());
            true
        },
        || (0..P).all(|p| last.borrow().get(&p).copied().unwrap_or(-1) + 1 >= ends[p as usize]),
    )?;
    // Duplicates arrive right away if at all: poll a little longer.
    let settle = Instant::now() + Duration::from_millis(500);
    poll_loop(
        &[&c3, &c4],
        CONSUME_TIMEOUT,
        |_, rec| {
            resumed.entry(rec.partition).or_default().push(rec.clone());
            true
        },
        || Instant::now() > settle,
    )?;

    for p in 0..P {
        let first = resumed.get(&p).and_then(|r| r.first()).map(|r| r.offset);
        let want = expected.get(&p).copied().unwrap_or(0);
        ensure!(
            first == Some(want),
            "partition {p}: the resumed session started at {first:?}, committed was {want}"
        );
    }
    let mut all = processed;
    for (p, recs) in resumed {
        all.entry(p).or_default().extend(recs);
    }
    verify_test_messages(&all, 0..FIRST + SECOND, P, size).context("both sessions together")?;
    drop((c3, c4));
    Ok(())
}

/// Three static members (`group.instance.id`); each in turn is killed and restarted within
/// its session timeout. It gets its previous partitions back, and the other members see no
/// rebalance at all (no callbacks). One of the three is the group leader: Kafka does not
/// rebalance when it returns either (KIP-345; the returning leader is answered as a follower,
/// or with `skip_assignment` from JoinGroup v9), and only a change of the group's selected
/// protocol would make it.
#[test]
fn static_member_restart_keeps_assignment_without_rebalance() -> Result<()> {
    static_restarts(&[])
}

/// The same with cooperative-sticky, whose subscription metadata carries the partitions a
/// member owns (none, for a member that just restarted).
#[test]
fn static_member_restart_keeps_assignment_without_rebalance_cooperative() -> Result<()> {
    static_restarts(&[("partition.assignment.strategy", "cooperative-sticky")])
}

fn static_restarts(extra: &[(&str, &str)]) -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-static");
    let group = topic_name("g-static");
    create_topic(&bs, &topic, 6)?;
    // Session timeout: ample time for a restart (which takes well under a second).
    let settings = |i: usize| {
        let name = format!("static-{i}");
        let mut own = vec![
            ("group.instance.id", name.as_str()),
            ("session.timeout.ms", "20000"),
        ];
        own.extend_from_slice(extra);
        member_settings(&bs, &group, &name, &own)
    };
    let mut members = (0..3)
        .map(|i| Member::child(&format!("static-{i}"), settings(i), &topic))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Member> = members.iter().collect();
    wait_split(&refs, 6, |_| 2, SETTLE_TIMEOUT)
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
    // Let any trailing rebalance finish before counting callbacks.
    std::thread::sleep(Duration::from_secs(2));
    let refs: Vec<&Member> = members.iter().collect();
    let split = wait_split(&refs, 6, |_| 2, SETTLE_TIMEOUT)?;

    // Every restart is checked; problems are collected so that one failure report says
    // which of the three restarts (leader or follower) misbehaved.
    let mut problems = Vec::new();
    let mut split = split;
    for i in 0..3 {
        let seen: Vec<usize> = members.iter().map(|m| m.events().len()).collect();
        members[i].kill9()?;
        let restarted_at = Instant::now();
        members[i] = Member::child(&format!("static-{i}-restarted"), settings(i), &topic)?;
        let got = wait_for("the restarted member's assignment", SETTLE_TIMEOUT, || {
            let a = members[i].assignment();
            if a.is_empty() {
                Err(describe(&members.iter().collect::<Vec<_>>()))
            } else {
                Ok(a)
            }
        })
        .with_context(|| format!("broker log:\n{}", broker.log_tail(3000)))?;
        eprintln!(
            "static-{i} back after {:?} with {got:?}",
            restarted_at.elapsed()
        );
        if got != split[i] {
            problems.push(format!(
                "static-{i} had {:?} before its restart and {got:?} after",
                split[i]
            ));
        }
        // A rebalance would reach the others with their next heartbeat (every 500 ms).
        std::thread::sleep(Duration::from_secs(3));
        for (j, m) in members.iter().enumerate() {
            // (The restarted member is a new process with its own event list.)
            let new: Vec<Event> = if j == i {
                Vec::new()
            } else {
                m.events()[seen[j]..].to_vec()
            };
            if !new.is_empty() {
                problems.push(format!(
                    "restarting static-{i}: static-{j} saw a rebalance: {new:?}"
                ));
            }
            if m.assignment() != split[j] {
                problems.push(format!(
                    "restarting static-{i}: static-{j} went from {:?} to {:?}",
                    split[j],
                    m.assignment()
                ));
            }
        }
        // Continue from wherever the group settled.
        let refs: Vec<&Member> = members.iter().collect();
        split = wait_split(&refs, 6, |_| 2, SETTLE_TIMEOUT)?;
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// A second consumer joins with the `group.instance.id` of a running one: the newer one
/// takes the instance over, and the older one is fenced (FENCED_INSTANCE_ID on its next
/// heartbeat), which librdkafka turns into a fatal error in it, as with Kafka. Neither
/// keeps taking the instance back from the other.
#[test]
fn duplicate_static_instance_fences_the_older_consumer() -> Result<()> {
    /// Far more than a few heartbeat intervals (500 ms): the fence comes with the first
    /// heartbeat after the newer consumer joined.
    const FENCE_WITHIN: Duration = Duration::from_secs(20);
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-fence");
    let group = topic_name("g-fence");
    create_topic(&bs, &topic, 2)?;
    let settings = |name: &str| {
        member_settings(
            &bs,
            &group,
            name,
            &[
                ("group.instance.id", "the-instance"),
                ("session.timeout.ms", "10000"),
            ],
        )
    };
    let old: BaseConsumer = client_config(&settings("old")).create()?;
    old.subscribe(&[&topic])?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while old.assignment()?.count() == 0 {
        ensure!(
            Instant::now() < deadline,
            "the first consumer got no assignment"
        );
        let _ = old.poll(Duration::from_millis(100));
    }
    let new: BaseConsumer = client_config(&settings("new")).create()?;
    new.subscribe(&[&topic])?;
    let deadline = Instant::now() + FENCE_WITHIN;
    let fatal = loop {
        let _ = old.poll(Duration::from_millis(50));
        let _ = new.poll(Duration::from_millis(50));
        if let Some(f) = old.client().fatal_error() {
            break f;
        }
        ensure!(
            Instant::now() < deadline,
            "the older consumer saw no fatal error within {FENCE_WITHIN:?}; broker log:\n{}",
            broker.log_tail(3000)
        );
    };
    ensure!(
        fatal.0 == RDKafkaErrorCode::FencedInstanceId,
        "fatal error {fatal:?}, expected FencedInstanceId"
    );
    // The newer consumer keeps the instance and gets the partitions.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while new.assignment()?.count() != 2 {
        ensure!(
            Instant::now() < deadline,
            "the newer consumer did not get both partitions"
        );
        let _ = new.poll(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let _ = new.poll(Duration::from_millis(100));
    }
    ensure!(
        new.client().fatal_error().is_none(),
        "the newer consumer was fenced: {:?}",
        new.client().fatal_error()
    );
    Ok(())
}

/// Deleting a topic deletes every group's committed offsets for it: a topic recreated with
/// the same name starts with no committed offsets, so a group reads it from the beginning
/// (auto.offset.reset=earliest) instead of resuming at an offset of the old topic.
#[test]
fn deleting_a_topic_deletes_its_committed_offsets() -> Result<()> {
    let (_dir, broker) = start_broker()?;
    let bs = broker.bootstrap();
    let topic = topic_name("groups-recreated");
    let group = topic_name("g-recreated");
    let other = topic_name("groups-kept");
    create_topic(&bs, &topic, 1)?;
    create_topic(&bs, &other, 1)?;
    produce(&bs, &topic, 0..10, 1)?;
    produce(&bs, &other, 0..10, 1)?;
    let c: BaseConsumer =
        client_config(&member_settings(&bs, &group, "committer", &[])).create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(7))?;
    tpl.add_partition_offset(&other, 0, Offset::Offset(4))?;
    c.commit(&tpl, CommitMode::Sync)?;
    drop(c);
    ensure!(
        committed(&bs, &group, &topic, 1)? == BTreeMap::from([(0, 7)]),
        "the commit did not land"
    );

    delete_topic(&bs, &topic)?.map_err(|e| anyhow!("DeleteTopics: {e:?}"))?;
    create_topic(&bs, &topic, 1)?;
    produce(&bs, &topic, 0..3, 1)?;
    let after = committed(&bs, &group, &topic, 1)?;
    ensure!(
        after.is_empty(),
        "the recreated topic has committed offsets {after:?} of the deleted one"
    );
    ensure!(
        committed(&bs, &group, &other, 1)? == BTreeMap::from([(0, 4)]),
        "the other topic's committed offset must stay"
    );
    // A member of the group reads the new topic from its beginning.
    let member = Member::thread(
        "reader",
        member_settings(&bs, &group, "reader", &[]),
        &topic,
    )?;
    let recs = wait_for("the new topic's records", SETTLE_TIMEOUT, || {
        let r = member.records();
        if r.len() >= 3 {
            Ok(r)
        } else {
            Err(format!("{} records", r.len()))
        }
    })?;
    let offsets: Vec<i64> = recs.iter().map(|r| r.offset).collect();
    ensure!(
        offsets == vec![0, 1, 2],
        "the group read offsets {offsets:?}"
    );
    member.stop()
}
