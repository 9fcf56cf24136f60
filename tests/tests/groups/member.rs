//! Group members observed from the test: in-process consumers and SIGKILLable child processes.

use super::*;

// ------------------------------------------------------------------ observed members

/// A rebalance callback as the member saw it (partitions of the callback's list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Assign(BTreeSet<i32>),
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// What one member has seen so far.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// The member's whole assignment after its latest rebalance callback.
    pub(crate) assignment: BTreeSet<i32>,
    pub(crate) events: Vec<Event>,
    /// Records consumed, in order (child members report partition, offset and message
    /// number only).
    pub(crate) records: Vec<Rec>,
    /// Consume errors (transport errors during broker restarts are expected).
    pub(crate) errors: Vec<String>,
}

pub(crate) fn lock(o: &Mutex<Observed>) -> MutexGuard<'_, Observed> {
    o.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records every rebalance callback and the resulting assignment.
pub(crate) struct Recording {
    pub(crate) observed: Arc<Mutex<Observed>>,
    /// When set (the child process), also reports each rebalance on stdout.
    pub(crate) print: bool,
}

impl ClientContext for Recording {}

impl ConsumerContext for Recording {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => Event::Assign(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => Event::Revoke(partitions_of(tpl)),
            Rebalance::Error(e) => Event::Error(e.to_string()),
        };
        let assignment = consumer
            .assignment()
            .map(|t| partitions_of(&t))
            .unwrap_or_default();
        if self.print {
            match &event {
                Event::Assign(s) => println!("@@ASSIGN {}", fmt_set(s)),
                Event::Revoke(s) => println!("@@REVOKE {}", fmt_set(s)),
                Event::Error(e) => println!("@@ERROR {e}"),
            }
            println!("@@ASSIGNMENT {}", fmt_set(&assignment));
        }
        let mut o = lock(&self.observed);
        o.events.push(event);
        o.assignment = assignment;
    }
}

pub(crate) fn to_rec(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
        timestamp: m.timestamp(),
    }
}

/// A group member: a consumer polled by a thread of this process (closed, hence leaving
/// the group, when stopped), or a child process (killed with SIGKILL, never leaving).
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) observed: Arc<Mutex<Observed>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<Result<()>>>,
    pub(crate) child: Option<Child>,
}

impl Member {
    /// A consumer subscribed to `topic`, polled by a thread of this process.
    pub(crate) fn thread(
        name: &str,
        settings: Vec<(String, String)>,
        topic: &str,
    ) -> Result<Member> {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let consumer: BaseConsumer<Recording> = client_config(&settings)
            .create_with_context(Recording {
                observed: observed.clone(),
                print: false,
            })
            .context("create consumer")?;
        consumer.subscribe(&[topic])?;
        let (obs, stop2) = (observed.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("member-{name}"))
            .spawn(move || {
                while !stop2.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(100)) {
                        None => {}
                        Some(Ok(m)) => lock(&obs).records.push(to_rec(&m)),
                        Some(Err(e)) => lock(&obs).errors.push(e.to_string()),
                    }
                }
                // Dropping the consumer closes it: LeaveGroup.
                drop(consumer);
                Ok(())
            })?;
        Ok(Member {
            name: name.to_string(),
            observed,
            stop,
            thread: Some(thread),
            child: None,
        })
    }

    /// A consumer subscribed to `topic` in a child process (this test binary running
    /// [`child_consumer_process`]); its reports are parsed into `observed`.
    pub(crate) fn child(
        name: &str,
        settings: Vec<(String, String)>,
        topic: &str,
    ) -> Result<Member> {
        let config: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "--ignored",
                "--exact",
                "child_consumer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_TOPIC_ENV, topic)
            .env(CHILD_CONFIG_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn child consumer")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no child stdout"))?;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let obs = observed.clone();
        let reader = std::thread::Builder::new()
            .name(format!("child-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some(rest) = line.strip_prefix("@@") else {
                        continue;
                    };
                    let (kind, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                    let mut o = lock(&obs);
                    match kind {
                        "ASSIGN" => o.events.push(Event::Assign(parse_set(arg))),
                        "REVOKE" => o.events.push(Event::Revoke(parse_set(arg))),
                        "ERROR" => o.events.push(Event::Error(arg.to_string())),
                        "ASSIGNMENT" => o.assignment = parse_set(arg),
                        "REC" => {
                            let mut it = arg.split(' ').filter_map(|x| x.parse::<i64>().ok());
                            if let (Some(p), Some(off), Some(idx)) =
                                (it.next(), it.next(), it.next())
                            {
                                // Only the message number travels; it is kept as the value's
                                // prefix, so that `message_index` reads it like a real value's.
                                o.records.push(Rec {
                                    partition: p as i32,
                                    offset: off,
                                    key: None,
                                    payload: (idx >= 0).then(|| format!("msg-{idx}:").into_bytes()),
                                    headers: Vec::new(),
                                    timestamp: rdkafka::Timestamp::NotAvailable,
                                });
                            }
                        }
                        "CONSUME_ERROR" => o.errors.push(arg.to_string()),
                        _ => {}
                    }
                }
                Ok(())
            })?;
        Ok(Member {
            name: name.to_string(),
            observed,
            stop: Arc::new(AtomicBool::new(false)),
            thread: Some(reader),
            child: Some(child),
        })
    }

    pub(crate) fn assignment(&self) -> BTreeSet<i32> {
        lock(&self.observed).assignment.clone()
    }

    pub(crate) fn events(&self) -> Vec<Event> {
        lock(&self.observed).events.clone()
    }

    pub(crate) fn records(&self) -> Vec<Rec> {
        lock(&self.observed).records.clone()
    }

    /// SIGKILL of a child member: no LeaveGroup, no commit, no goodbye.
    pub(crate) fn kill9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not a child process", self.name))?;
        child.kill().context("SIGKILL child consumer")?;
        child.wait()?;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }

    /// Stops the member: a thread member closes its consumer (LeaveGroup), a child is killed.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.finish()
    }

    pub(crate) fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("member {} panicked", self.name))?,
            None => Ok(()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Polls `check` every 50 ms until it returns `Ok(v)` (the suite's shared loop).
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    strata_tests::wait_until(what, timeout, Duration::from_millis(50), check)
}

pub(crate) fn describe(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={{{}}}", m.name, fmt_set(&m.assignment())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until the members' assignments are pairwise disjoint, cover `0..partitions`, and
/// each has `per_member(i)` partitions. Returns the assignments.
pub(crate) fn wait_split(
    members: &[&Member],
    partitions: i32,
    per_member: impl Fn(usize) -> usize,
    timeout: Duration,
) -> Result<Vec<BTreeSet<i32>>> {
    wait_for("the group to split the partitions", timeout, || {
        let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        let sizes_ok = sets
            .iter()
            .enumerate()
            .all(|(i, s)| s.len() == per_member(i));
        if union == (0..partitions).collect() && total == partitions as usize && sizes_ok {
            Ok(sets)
        } else {
            Err(describe(members))
        }
    })
}

pub(crate) fn produce(
    bootstrap: &str,
    topic: &str,
    ids: std::ops::Range<u64>,
    partitions: i32,
) -> Result<()> {
    let producer = recording_producer(&producer_config(bootstrap))?;
    produce_and_wait(&producer, topic, ids, partitions, size)?;
    Ok(())
}

/// Waits until `members` together consumed every record of test messages `ids` (message `i`
/// in partition `i % partitions`); returns each member's records.
pub(crate) fn wait_consumed(
    members: &[&Member],
    ids: std::ops::Range<u64>,
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let wanted: BTreeSet<(i32, u64)> = ids.map(|i| ((i % partitions as u64) as i32, i)).collect();
    wait_for("every record to be consumed", timeout, || {
        let got: BTreeSet<(i32, u64)> = members
            .iter()
            .flat_map(|m| m.records())
            .filter_map(|r| Some((r.partition, message_index(r.payload.as_deref()?)?)))
            .collect();
        let missing: Vec<_> = wanted.difference(&got).take(5).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} missing, e.g. {missing:?}; {}",
                wanted.difference(&got).count(),
                wanted.len(),
                describe(members)
            ))
        }
    })
}
