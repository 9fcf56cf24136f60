//! The `strata` CLI end to end against a broker started by the test, with librdkafka on the
//! other side: what `strata produce` writes librdkafka reads, what librdkafka writes
//! `strata consume` prints, and the group commands act on groups librdkafka made.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use assert_cmd::Command;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::Message;
use serde_json::Value;
use strata_tests::{
    broker_with_topic, consume_all, create_topic, produce_and_wait, producer_config,
    recording_producer, topic_name, InProcessBroker, TestMessage, BASE_TIMESTAMP,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `strata -b BOOTSTRAP ...`, unaffected by the caller's environment.
fn strata(bs: &str) -> Command {
    let mut c = Command::cargo_bin("strata").expect("strata binary");
    c.env_remove("STRATA_BOOTSTRAP")
        .env_remove("STRATA_ARCHIVE_URL")
        .args(["-b", bs, "--timeout", "20"])
        .timeout(Duration::from_secs(120));
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("strata runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and requires exit code `code`; returns stdout.
fn expect(cmd: &mut Command, code: i32) -> String {
    let r = run(cmd);
    assert_eq!(
        r.code, code,
        "exit code; stdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

fn json(cmd: &mut Command) -> Value {
    let out = expect(cmd, 0);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// One JSON object per line.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `strata consume TOPIC -g GROUP -f json EXTRA...`: the records it printed.
fn group_consume(bs: &str, topic: &str, group: &str, extra: &[&str]) -> Vec<Value> {
    let out = expect(
        strata(bs)
            .args(["consume", topic, "-g", group, "-f", "json"])
            .args(extra),
        0,
    );
    json_lines(&out)
}

/// `strata group describe GROUP -o json`.
fn describe_group(bs: &str, group: &str) -> Value {
    json(strata(bs).args(["group", "describe", group, "-o", "json"]))
}

#[test]
fn topic_create_list_describe_alter_delete() -> Result<()> {
    let broker = InProcessBroker::start_temp(|_| {})?;
    let bs = broker.bootstrap();
    let t = topic_name("cli-topic");
    expect(
        strata(&bs).args([
            "topic",
            "create",
            &t,
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ]),
        0,
    );
    // Again: exists (6), unless --if-not-exists.
    let again = run(strata(&bs).args(["topic", "create", &t, "-p", "3"]));
    assert_eq!(again.code, 6, "{}", again.stderr);
    assert!(again.stderr.contains(&t), "{}", again.stderr);
    expect(
        strata(&bs).args(["topic", "create", &t, "--if-not-exists"]),
        0,
    );

    let list = json(strata(&bs).args(["topic", "list", "-o", "json"]));
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["topic"] == t.as_str())
        .expect("listed");
    assert_eq!(row["partitions"], 3);
    let table = expect(strata(&bs).args(["topic", "list"]), 0);
    assert!(
        table.contains(&t) && table.contains("PARTITIONS"),
        "{table}"
    );

    let d = json(strata(&bs).args(["topic", "describe", &t, "-o", "json"]));
    let d = &d[0];
    assert_eq!(d["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(d["partitions"][0]["end_offset"], 0);
    let retention = d["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .expect("retention.ms described");
    assert_eq!(retention["value"], "3600000");
    assert_eq!(retention["source"], "topic");

    expect(
        strata(&bs).args([
            "topic",
            "alter",
            &t,
            "--partitions",
            "5",
            "--set",
            "segment.ms=600000",
            "--delete",
            "retention.ms",
        ]),
        0,
    );
    let d = json(strata(&bs).args(["topic", "describe", &t, "--overrides", "-o", "json"]));
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 5);
    let names: Vec<&str> = d[0]["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["segment.ms"], "overrides after alter");
    // Shrinking is refused by the broker with a clear message.
    let shrink = run(strata(&bs).args(["topic", "alter", &t, "--partitions", "2"]));
    assert_eq!(shrink.code, 1, "{}", shrink.stderr);
    assert!(shrink.stderr.contains("error:"), "{}", shrink.stderr);
    // An unknown config is refused.
    let bad = run(strata(&bs).args(["topic", "alter", &t, "--set", "no.such.config=1"]));
    assert_ne!(bad.code, 0);

    expect(strata(&bs).args(["topic", "delete", &t]), 0);
    let gone = run(strata(&bs).args(["topic", "describe", &t]));
    assert_eq!(gone.code, 4, "describe a deleted topic: {}", gone.stderr);
    assert_eq!(run(strata(&bs).args(["topic", "delete", &t])).code, 4);
    expect(strata(&bs).args(["topic", "delete", &t, "--if-exists"]), 0);
    Ok(())
}

#[test]
fn what_strata_produces_librdkafka_reads() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-produce", 3)?;
    let bs = broker.bootstrap();
    let input: String = (0..300)
        .map(|i| format!("k{}|value {i}\n", i % 7))
        .collect();
    let r = run(strata(&bs)
        .args([
            "produce",
            &t,
            "-K",
            "|",
            "-H",
            "source=cli",
            "-H",
            "empty=",
            "--compression",
            "zstd",
        ])
        .write_stdin(input));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("produced 300 of 300 records"),
        "{}",
        r.stderr
    );
    let recs = consume_all(&bs, &t, TIMEOUT)?;
    let all: Vec<_> = recs.values().flatten().collect();
    assert_eq!(all.len(), 300);
    // Keyed records land by key: every key in exactly one partition, and each partition
    // keeps the input order of its keys.
    let mut key_partition: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for rec in &all {
        let key = rec.key.clone().expect("key");
        let p = *key_partition.entry(key.clone()).or_insert(rec.partition);
        assert_eq!(
            p,
            rec.partition,
            "key {:?} in two partitions",
            String::from_utf8_lossy(&key)
        );
        let value = String::from_utf8(rec.payload.clone().unwrap())?;
        let i: usize = value.strip_prefix("value ").unwrap().parse()?;
        assert_eq!(key, format!("k{}", i % 7).into_bytes());
        assert_eq!(
            rec.headers,
            vec![
                ("source".to_string(), Some(b"cli".to_vec())),
                ("empty".to_string(), Some(Vec::new()))
            ]
        );
    }
    for recs in recs.values() {
        let values: Vec<usize> = recs
            .iter()
            .map(|r| {
                String::from_utf8_lossy(r.payload.as_ref().unwrap())[6..]
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(values, sorted, "order within a partition");
    }
    // A file, to one partition, acks=1, with CRLF line ends.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("in.txt");
    std::fs::write(&file, "a\r\nb\r\n\r\nc")?;
    let r = run(strata(&bs).args([
        "produce",
        &t,
        "-f",
        file.to_str().unwrap(),
        "-p",
        "2",
        "--acks",
        "1",
        "-q",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "--quiet: {}", r.stderr);
    let recs = consume_all(&bs, &t, TIMEOUT)?;
    let tail: Vec<String> = recs[&2]
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|r| String::from_utf8_lossy(r.payload.as_ref().unwrap()).into_owned())
        .collect();
    assert_eq!(tail, vec!["a", "b", "", "c"]);
    // Hostile and wrong arguments: clear errors, no panic.
    let r = run(strata(&bs)
        .args(["produce", &t, "-p", "7"])
        .write_stdin("x\n"));
    assert_eq!(r.code, 4, "partition out of range: {}", r.stderr);
    let r = run(strata(&bs)
        .args(["produce", &t, "-p=-1"])
        .write_stdin("x\n"));
    assert_eq!(r.code, 4, "partition -1: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let r = run(strata(&bs)
        .args(["produce", &t, "--acks", "2"])
        .write_stdin("x\n"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let r = run(strata(&bs)
        .args(["produce", &t, "--compression", "brotli"])
        .write_stdin("x\n"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("unknown compression"), "{}", r.stderr);
    let r = run(strata(&bs)
        .args(["produce", &t, "--rate=-5"])
        .write_stdin("x\n"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let r = run(strata(&bs)
        .args(["produce", "no-such-topic"])
        .write_stdin("x\n"));
    assert_eq!(r.code, 4, "{}", r.stderr);
    // A record bigger than the broker takes fails its delivery with the broker's reason.
    let big = "x".repeat(2 << 20);
    let r = run(strata(&bs)
        .args(["produce", &t, "--batch-size", "4096"])
        .write_stdin(big));
    assert_ne!(r.code, 0, "a 2 MiB record: {}", r.stderr);
    assert!(r.stderr.contains("produce to"), "{}", r.stderr);
    Ok(())
}

#[test]
fn what_librdkafka_produces_strata_prints() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-consume", 2)?;
    let bs = broker.bootstrap();
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &t, 0..200, 2, |_| 64)?;
    let out = expect(
        strata(&bs).args([
            "consume",
            &t,
            "--from-beginning",
            "--exit-at-end",
            "-f",
            "json",
        ]),
        0,
    );
    let recs = json_lines(&out);
    assert_eq!(recs.len(), 200);
    for r in &recs {
        let p = r["partition"].as_i64().unwrap();
        let offset = r["offset"].as_i64().unwrap();
        let i = (offset * 2 + p) as u64;
        let m = TestMessage::new(i, 64);
        assert_eq!(r["key"], String::from_utf8(m.key.clone())?);
        assert_eq!(r["timestamp"], m.timestamp);
        assert_eq!(r["topic"], t.as_str());
        // Binary values are base64 in JSON, text ones plain.
        match std::str::from_utf8(&m.value) {
            Ok(text) => assert_eq!(r["value"], text),
            Err(_) => assert_eq!(r["value_encoding"], "base64"),
        }
        assert!(r["headers"].as_object().unwrap().contains_key("idx"));
        assert_eq!(r["headers"]["null"], Value::Null);
        assert_eq!(r["headers"]["empty"], "");
    }
    // --count, --partition, --offset.
    let out = expect(
        strata(&bs).args([
            "consume", &t, "-p", "1", "--offset", "90", "-n", "5", "-f", "json",
        ]),
        0,
    );
    let offsets: Vec<i64> = json_lines(&out)
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![90, 91, 92, 93, 94]);
    // --from-timestamp: message i has timestamp BASE + i.
    let from = (BASE_TIMESTAMP + 150).to_string();
    let out = expect(
        strata(&bs).args(["consume", &t, "--from-timestamp", &from, "-e", "-f", "json"]),
        0,
    );
    let got: Vec<i64> = json_lines(&out)
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|ts| *ts >= BASE_TIMESTAMP + 150));
    let rfc = "2023-11-14T22:13:20.190Z";
    let out = expect(
        strata(&bs).args(["consume", &t, "--from-timestamp", rfc, "-e", "-f", "json"]),
        0,
    );
    assert_eq!(json_lines(&out).len(), 10);
    // The future: nothing, and it still ends.
    let out = expect(
        strata(&bs).args(["consume", &t, "--from-timestamp", "now", "-e"]),
        0,
    );
    assert!(out.is_empty(), "{out}");
    // Text with keys.
    let text_topic = topic_name("cli-text");
    create_topic(&bs, &text_topic, 1)?;
    expect(
        strata(&bs)
            .args(["produce", &text_topic, "-K", "="])
            .write_stdin("a=1\nb=2\n"),
        0,
    );
    let out = expect(
        strata(&bs).args([
            "consume",
            &text_topic,
            "--from-beginning",
            "-e",
            "--print-key",
            "-K",
            ":",
        ]),
        0,
    );
    assert_eq!(out, "a:1\nb:2\n");
    // Bad input.
    let r = run(strata(&bs).args(["consume", &t, "--from-timestamp", "yesterday-ish", "-e"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a time"), "{}", r.stderr);
    let r = run(strata(&bs).args(["consume", &t, "--offset=-3", "-e"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--offset must be 0 or more"),
        "{}",
        r.stderr
    );
    let r = run(strata(&bs).args(["consume", &t, "--from-beginning", "--offset", "3"]));
    assert_eq!(
        r.code, 2,
        "conflicting starts are a usage error: {}",
        r.stderr
    );
    assert_eq!(
        run(strata(&bs).args(["consume", &t, "-p", "9", "-e"])).code,
        4
    );
    assert_eq!(
        run(strata(&bs).args(["consume", "no-such-topic", "-e"])).code,
        4
    );
    Ok(())
}

/// A librdkafka group member reads and commits `n` records of `topic`, then closes.
fn librdkafka_group_reads(bs: &str, group: &str, topic: &str, n: usize) -> Result<()> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bs)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut got = 0;
    while got < n {
        ensure!(
            std::time::Instant::now() < deadline,
            "group read {got} of {n}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m?;
            got += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    consumer.unsubscribe();
    Ok(())
}

#[test]
fn groups_list_describe_reset_delete() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-group", 2)?;
    let bs = broker.bootstrap();
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &t, 0..100, 2, |_| 32)?;
    let g = topic_name("cli-g");
    librdkafka_group_reads(&bs, &g, &t, 100)?;

    let list = json(strata(&bs).args(["group", "list", "-o", "json"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["group"] == g.as_str()),
        "{list}"
    );
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 0, "{d}");
    assert_eq!(d["offsets"].as_array().unwrap().len(), 2);
    assert_eq!(d["offsets"][0]["committed_offset"], 50);
    let table = expect(strata(&bs).args(["group", "describe", &g]), 0);
    assert!(table.contains("LAG") && table.contains(&t), "{table}");

    // Dry run (the default): a plan, no change.
    let plan = json(strata(&bs).args([
        "group",
        "reset-offsets",
        &g,
        "-t",
        &t,
        "--to-earliest",
        "-o",
        "json",
    ]));
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["plan"][0]["new_offset"], 0);
    assert_eq!(plan["plan"][0]["current_offset"], 50);
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 0, "a dry run changed nothing");

    // Shift back 10 in partition 1 only; clamped shifts stay in range.
    expect(
        strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "-t",
            &format!("{t}:1"),
            "--shift-by",
            "-10",
            "--execute",
        ]),
        0,
    );
    let d = describe_group(&bs, &g);
    assert_eq!(d["offsets"][0]["committed_offset"], 50);
    assert_eq!(d["offsets"][1]["committed_offset"], 40);
    assert_eq!(d["total_lag"], 10);
    expect(
        strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "--all-topics",
            "--shift-by",
            "-1000",
            "--execute",
        ]),
        0,
    );
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 100, "shift clamps at the start");
    expect(
        strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "--all-topics",
            "--to-offset",
            "999999",
            "--execute",
        ]),
        0,
    );
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 0, "to-offset clamps at the end");
    // Message i has timestamp BASE + i: from BASE+60, partition 0 holds 60,62,.. (offset 30),
    // partition 1 holds 61,63,.. (offset 30).
    let at = (BASE_TIMESTAMP + 60).to_string();
    expect(
        strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "-t",
            &t,
            "--to-datetime",
            &at,
            "--execute",
        ]),
        0,
    );
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 40);
    expect(
        strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "-t",
            &t,
            "--to-latest",
            "--execute",
        ]),
        0,
    );

    // Usage errors.
    assert_eq!(
        run(strata(&bs).args(["group", "reset-offsets", &g, "-t", &t])).code,
        2
    );
    assert_eq!(
        run(strata(&bs).args(["group", "reset-offsets", &g, "--to-earliest"])).code,
        2
    );
    assert_eq!(
        run(strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "-t",
            &format!("{t}:7"),
            "--to-earliest"
        ]))
        .code,
        4
    );
    assert_eq!(
        run(strata(&bs).args([
            "group",
            "reset-offsets",
            &g,
            "-t",
            &format!("{t}:x"),
            "--to-earliest"
        ]))
        .code,
        1
    );

    // An unknown group.
    assert_eq!(
        run(strata(&bs).args(["group", "describe", "no-such-group"])).code,
        4
    );

    expect(strata(&bs).args(["group", "delete", &g]), 0);
    let list = json(strata(&bs).args(["group", "list", "-o", "json"]));
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["group"] == g.as_str()),
        "{list}"
    );
    Ok(())
}

#[test]
fn an_active_group_is_not_moved_and_strata_group_members_commit_what_they_print() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-active", 2)?;
    let bs = broker.bootstrap();
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &t, 0..40, 2, |_| 16)?;
    let g = topic_name("cli-active-g");
    // `strata consume --group` reads 15 and commits exactly those.
    let recs = group_consume(&bs, &t, &g, &["--from-beginning", "-n", "15"]);
    assert_eq!(recs.len(), 15);
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 25, "{d}");
    // The next member continues where the first stopped.
    let recs = group_consume(&bs, &t, &g, &["-e"]);
    assert_eq!(recs.len(), 25);

    // A live librdkafka member: reset refuses with "in use" (6).
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", &g)
        .create()?;
    consumer.subscribe(&[&t])?;
    strata_tests::wait_until(
        "a librdkafka assignment",
        TIMEOUT,
        Duration::from_millis(100),
        || {
            consumer.poll(Duration::from_millis(100));
            if consumer.assignment().map(|a| a.count()).unwrap_or(0) > 0 {
                Ok(())
            } else {
                Err("no assignment yet".to_string())
            }
        },
    )?;
    let r = run(strata(&bs).args([
        "group",
        "reset-offsets",
        &g,
        "-t",
        &t,
        "--to-earliest",
        "--execute",
    ]));
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("active member"), "{}", r.stderr);
    let d = describe_group(&bs, &g);
    assert_eq!(d["members"].as_array().unwrap().len(), 1);
    assert_eq!(d["members"][0]["assignment"][0], format!("{t}:0,1"));
    assert_eq!(run(strata(&bs).args(["group", "delete", &g])).code, 6);
    drop(consumer);
    Ok(())
}

#[test]
fn replay_resets_a_group_to_a_time_and_the_group_rereads_exactly_that() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-replay", 3)?;
    let bs = broker.bootstrap();
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &t, 0..300, 3, |_| 24)?;
    let g = topic_name("cli-replay-g");
    let recs = group_consume(&bs, &t, &g, &["--from-beginning", "-e"]);
    assert_eq!(recs.len(), 300);
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 0);

    let from = (BASE_TIMESTAMP + 210).to_string();
    let r = run(strata(&bs).args([
        "replay",
        &t,
        "-g",
        &g,
        "--from-timestamp",
        &from,
        "--dry-run",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("would re-read 90 records"),
        "{}",
        r.stderr
    );
    let d = describe_group(&bs, &g);
    assert_eq!(d["total_lag"], 0, "dry run moved nothing");

    let r = run(strata(&bs).args(["replay", &t, "-g", &g, "--from-timestamp", &from]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("will re-read 90 records"), "{}", r.stderr);
    let recs = group_consume(&bs, &t, &g, &["-e"]);
    let mut ts: Vec<i64> = recs
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .collect();
    ts.sort();
    let expected: Vec<i64> = (210..300).map(|i| BASE_TIMESTAMP + i).collect();
    assert_eq!(
        ts, expected,
        "the group re-read exactly the records from the time on"
    );
    Ok(())
}

#[test]
fn perf_produce_and_consume_report_throughput_and_latency() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-perf", 2)?;
    let bs = broker.bootstrap();
    let p = json(strata(&bs).args([
        "perf", "produce", &t, "-n", "2000", "-s", "100", "--json", "-q",
    ]));
    assert_eq!(p["records"], 2000);
    assert_eq!(p["failed"], 0);
    assert!(p["records_per_sec"].as_f64().unwrap() > 0.0);
    let l = &p["latency_ms"];
    assert!(l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
    assert!(l["p99"].as_f64().unwrap() <= l["max"].as_f64().unwrap());
    let c = json(strata(&bs).args(["perf", "consume", &t, "--json", "-q"]));
    assert_eq!(c["records"], 2000);
    assert_eq!(c["bytes"], 200_000);
    let text = expect(
        strata(&bs).args([
            "perf", "produce", &t, "-n", "100", "-s", "10", "--rate", "1000", "--acks", "1",
        ]),
        0,
    );
    assert!(
        text.contains("100 records sent") && text.contains("p99.9"),
        "{text}"
    );
    let recs = consume_all(&bs, &t, TIMEOUT)?;
    assert_eq!(recs.values().map(Vec::len).sum::<usize>(), 2100);
    assert_eq!(
        run(strata(&bs).args(["perf", "produce", &t, "-n", "0"])).code,
        1
    );
    Ok(())
}

#[test]
fn errors_have_clear_messages_and_exit_codes() -> Result<()> {
    // Nothing listens on this port.
    let port = strata_tests::free_port()?;
    let bs = format!("127.0.0.1:{port}");
    for args in [
        vec!["topic", "list"],
        vec!["group", "list"],
        vec!["consume", "t", "-e"],
    ] {
        let r = run(strata(&bs).args(&args));
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("cannot connect to"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let r = run(strata(&bs).args(["produce", "t"]).write_stdin("x\n"));
    assert_eq!(r.code, 3, "{}", r.stderr);
    // STRATA_BOOTSTRAP is honoured.
    let mut c = Command::cargo_bin("strata")?;
    let r = run(c.env("STRATA_BOOTSTRAP", &bs).args(["topic", "list"]));
    assert!(r.stderr.contains(&bs), "{}", r.stderr);
    // Usage errors are 2; help is 0 and names the exit codes.
    assert_eq!(run(strata(&bs).args(["topic", "frobnicate"])).code, 2);
    let help = expect(strata(&bs).arg("--help"), 0);
    assert!(help.contains("Exit codes"), "{help}");
    // Completions for the shells.
    for shell in ["bash", "zsh", "fish"] {
        let out = expect(strata(&bs).args(["completions", shell]), 0);
        assert!(
            out.contains("strata") && out.contains("reset-offsets"),
            "{shell}"
        );
    }
    Ok(())
}

#[test]
fn archive_ls_and_restore_through_the_cli() -> Result<()> {
    use strata_storage::archive::{Archive, PartitionRef};
    use strata_tests::archived::{archive_in, small_batch_producer, topic_id, wait_archived};
    let dir = tempfile::tempdir()?;
    let (_, url) = archive_in(dir.path());
    // A broker archiving 16 KiB segments every 100 ms.
    let start = |data: &std::path::Path| -> Result<InProcessBroker> {
        let mut config = strata_tests::test_config(data)?;
        config.segment_bytes = 16 * 1024;
        config.archive_interval_ms = 100;
        config.archive_url = Some(url.clone());
        InProcessBroker::start(config)
    };
    let (lost, restored) = (dir.path().join("lost"), dir.path().join("restored"));
    let broker = start(&lost)?;
    let bs = broker.bootstrap();
    let t = topic_name("cli-archive");
    expect(
        strata(&bs).args([
            "topic",
            "create",
            &t,
            "-p",
            "2",
            "-c",
            "remote.storage.enable=true",
            "-c",
            "retention.ms=-1",
        ]),
        0,
    );
    let producer = small_batch_producer(&bs)?;
    produce_and_wait(&producer, &t, 0..400, 2, |_| 1000)?;
    let id = topic_id(&bs, &t)?;
    let archive = Archive::open(&url)?;
    for partition in 0..2 {
        let p = PartitionRef {
            topic: &t,
            topic_id: id,
            partition,
        };
        wait_archived(&archive, p, 100)?;
    }
    broker.shutdown()?;
    std::fs::remove_dir_all(&lost)?;

    let none = "127.0.0.1:1"; // no broker is needed
    let listed = json(strata(none).args(["archive", "ls", "--archive-url", &url, "-o", "json"]));
    let topic = &listed["topics"][0];
    assert_eq!(topic["name"], t.as_str(), "{listed}");
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 2);
    let archived: Vec<i64> = (0..2)
        .map(|p| topic["partitions"][p]["next_offset"].as_i64().unwrap())
        .collect();
    assert!(archived.iter().all(|n| *n >= 100), "{listed}");
    let table = expect(
        strata(none).args(["archive", "ls", "--archive-url", &url]),
        0,
    );
    assert!(table.contains(&t), "{table}");

    let restore = json(strata(none).args([
        "archive",
        "restore",
        "--archive-url",
        &url,
        "--data-dir",
        restored.to_str().context("path")?,
        "-o",
        "json",
    ]));
    assert_eq!(restore[0]["topic"], t.as_str(), "{restore}");
    assert_eq!(restore[0]["start_offsets"], serde_json::json!(archived));
    // A broker on the restored dir serves every archived record (tiered reads).
    let broker = start(&restored)?;
    let out = expect(
        strata(&broker.bootstrap()).args(["consume", &t, "--from-beginning", "-e", "-f", "json"]),
        0,
    );
    let recs = json_lines(&out);
    assert_eq!(recs.len() as i64, archived.iter().sum::<i64>());
    for r in &recs {
        let i = (r["offset"].as_i64().unwrap() * 2 + r["partition"].as_i64().unwrap()) as u64;
        assert_eq!(r["key"], format!("key-{i}"));
    }

    // A missing archive, a topic it does not hold: clear errors.
    let r = run(strata(none).args(["archive", "ls", "--archive-url", "file:///no/such/dir"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no archive at"), "{}", r.stderr);
    let r = run(strata(none).args([
        "archive",
        "restore",
        "--archive-url",
        &url,
        "--data-dir",
        dir.path().join("other").to_str().context("path")?,
        "--topic",
        "nothing",
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("nothing"), "{}", r.stderr);
    Ok(())
}

/// librdkafka commits for a group; `strata group describe` reads the same numbers, and a
/// strata group member continues where librdkafka stopped.
#[test]
fn librdkafka_and_strata_share_a_group() -> Result<()> {
    let (broker, t) = broker_with_topic("cli-shared", 1)?;
    let bs = broker.bootstrap();
    let producer = recording_producer(&producer_config(&bs))?;
    produce_and_wait(&producer, &t, 0..30, 1, |_| 8)?;
    let g = topic_name("cli-shared-g");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bs)
        .set("group.id", &g)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&t])?;
    let mut last = -1;
    while last < 9 {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            last = m?.offset();
        }
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&t, 0, rdkafka::Offset::Offset(10))?;
    consumer.commit(&tpl, CommitMode::Sync)?;
    drop(consumer);
    let recs = group_consume(&bs, &t, &g, &["-e"]);
    let offsets: Vec<i64> = recs.iter().map(|r| r["offset"].as_i64().unwrap()).collect();
    assert_eq!(offsets, (10..30).collect::<Vec<_>>());
    Ok(())
}

/// The CLI over an SSL listener: `--tls-ca` (and `--tls-cert`/`--tls-key` where the broker
/// requires client certificates).
#[test]
fn the_cli_speaks_tls_and_mtls() -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n);
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cli test CA");
    let ca_key = KeyPair::generate()?;
    std::fs::write(p("ca.pem"), ca_params.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    for (who, names) in [
        ("server", vec!["127.0.0.1".to_string()]),
        ("alice", vec!["alice".to_string()]),
    ] {
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, who);
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let key = KeyPair::generate()?;
        std::fs::write(
            p(&format!("{who}.pem")),
            params.signed_by(&key, &issuer)?.pem(),
        )?;
        std::fs::write(p(&format!("{who}.key")), key.serialize_pem())?;
    }
    let mut config = strata_tests::test_config(&p("data"))?;
    config.listeners = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0".into();
    config.ssl_certificate_location = Some(p("server.pem"));
    config.ssl_key_location = Some(p("server.key"));
    config.ssl_truststore_location = Some(p("ca.pem"));
    config.ssl_client_auth = "required".into();
    let broker = InProcessBroker::start(config)?;
    let ssl = broker
        .listener_addr("SSL")
        .context("SSL listener")?
        .to_string();
    let tls = |c: &mut Command| {
        c.env_remove("STRATA_TLS_CA").args([
            "--tls-ca",
            p("ca.pem").to_str().unwrap(),
            "--tls-cert",
            p("alice.pem").to_str().unwrap(),
            "--tls-key",
            p("alice.key").to_str().unwrap(),
        ]);
    };
    let t = topic_name("cli-tls");
    let mut c = strata(&ssl);
    tls(&mut c);
    expect(c.args(["topic", "create", &t, "-p", "1"]), 0);
    let mut c = strata(&ssl);
    tls(&mut c);
    expect(c.args(["produce", &t]).write_stdin("over\ntls\n"), 0);
    let mut c = strata(&ssl);
    tls(&mut c);
    let out = expect(c.args(["consume", &t, "--from-beginning", "-e"]), 0);
    assert_eq!(out, "over\ntls\n");
    // No client certificate: the handshake fails, reported as unreachable (3).
    let r = run(strata(&ssl).args(["--tls-ca", p("ca.pem").to_str().unwrap(), "topic", "list"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    // With TLS 1.3 the client's handshake ends before the broker checks for a certificate:
    // the broker's alert reaches the client unless the connection is reset first (the
    // client's ApiVersions crossing the close), and then the report is a lost connection.
    assert!(
        r.stderr.contains("CertificateRequired") || r.stderr.contains("lost"),
        "{}",
        r.stderr
    );
    // Plaintext to the SSL listener fails too; a missing CA file is a usage error.
    let r = run(strata(&ssl).args(["topic", "list"]));
    assert_eq!(r.code, 3, "plaintext to an SSL listener: {}", r.stderr);
    let r = run(strata(&ssl).args(["--tls-ca", "/no/such.pem", "topic", "list"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    Ok(())
}

/// The CLI logs in with SASL/PLAIN; a wrong password is "denied" (exit code 5).
#[test]
fn the_cli_logs_in_with_sasl_plain() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        strata_broker::sasl::users_file_line("alice", "alice-secret", b"cli-test-salt-16", 4096),
    )?;
    let mut config = strata_tests::test_config(&dir.path().join("data"))?;
    config.listeners = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into();
    config.sasl_plain_users_file = Some(users);
    let broker = InProcessBroker::start(config)?;
    let sasl = broker
        .listener_addr("SASL_PLAINTEXT")
        .context("SASL listener")?
        .to_string();
    let t = topic_name("cli-sasl");
    let login = |c: &mut Command, password: &str| {
        c.env("STRATA_SASL_USER", "alice")
            .env("STRATA_SASL_PASSWORD", password);
    };
    let mut c = strata(&sasl);
    login(&mut c, "alice-secret");
    expect(c.args(["topic", "create", &t, "-p", "1"]), 0);
    let mut c = strata(&sasl);
    login(&mut c, "alice-secret");
    expect(c.args(["produce", &t]).write_stdin("logged\nin\n"), 0);
    let mut c = strata(&sasl);
    login(&mut c, "alice-secret");
    assert_eq!(
        expect(c.args(["consume", &t, "--from-beginning", "-e"]), 0),
        "logged\nin\n"
    );
    let mut c = strata(&sasl);
    login(&mut c, "guess");
    let r = run(c.args(["topic", "list"]));
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("Authentication failed"), "{}", r.stderr);
    // Without credentials the SASL listener closes the connection: unreachable (3).
    let r = run(strata(&sasl).args(["topic", "list"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    Ok(())
}

#[test]
fn the_cli_manages_scram_users_and_logs_in_with_scram() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = strata_tests::test_config(&dir.path().join("data"))?;
    config.listeners = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0".into();
    config.sasl_enabled_mechanisms = "SCRAM-SHA-256,SCRAM-SHA-512".into();
    let broker = InProcessBroker::start(config)?;
    let sasl = broker
        .listener_addr("SASL_PLAINTEXT")
        .context("SASL listener")?
        .to_string();
    let bs = broker.bootstrap();
    // The password from the environment, then from stdin.
    expect(
        strata(&bs).env("STRATA_NEW_PASSWORD", "bob-secret").args([
            "user",
            "scram-set",
            "bob",
            "-m",
            "SCRAM-SHA-512",
        ]),
        0,
    );
    expect(
        strata(&bs)
            .env_remove("STRATA_NEW_PASSWORD")
            .args(["user", "scram-set", "carol", "-i", "4096"])
            .write_stdin("carol-secret\n"),
        0,
    );
    let users = json(strata(&bs).args(["user", "list", "-o", "json"]));
    assert_eq!(
        users,
        serde_json::json!([
            {"user": "bob", "credentials": ["SCRAM-SHA-512 (8192 iterations)"]},
            {"user": "carol", "credentials": ["SCRAM-SHA-256 (4096 iterations)"]},
        ])
    );
    let t = topic_name("cli-scram");
    let login = |c: &mut Command, user: &str, mechanism: &str, password: &str| {
        c.env("STRATA_SASL_USER", user)
            .env("STRATA_SASL_PASSWORD", password)
            .env("STRATA_SASL_MECHANISM", mechanism);
    };
    let mut c = strata(&sasl);
    login(&mut c, "bob", "SCRAM-SHA-512", "bob-secret");
    expect(c.args(["topic", "create", &t, "-p", "1"]), 0);
    let mut c = strata(&sasl);
    login(&mut c, "carol", "SCRAM-SHA-256", "carol-secret");
    expect(c.args(["produce", &t]).write_stdin("scram\n"), 0);
    let mut c = strata(&sasl);
    c.args(["--sasl-mechanism", "scram-sha-512"]);
    login(&mut c, "bob", "SCRAM-SHA-512", "bob-secret");
    assert_eq!(
        expect(c.args(["consume", &t, "--from-beginning", "-e"]), 0),
        "scram\n"
    );
    // Refusals: a wrong password (5), a mechanism the user has no credential for (5), an
    // unknown mechanism name (2), too few iterations (1), deleting what is not there (4),
    // listing a user who has none (4).
    let mut c = strata(&sasl);
    login(&mut c, "bob", "SCRAM-SHA-512", "guess");
    let r = run(c.args(["topic", "list"]));
    assert_eq!(r.code, 5, "{}", r.stderr);
    let mut c = strata(&sasl);
    login(&mut c, "bob", "SCRAM-SHA-256", "bob-secret");
    assert_eq!(run(c.args(["topic", "list"])).code, 5);
    let mut c = strata(&sasl);
    login(&mut c, "bob", "SCRAM-MD5", "bob-secret");
    assert_eq!(run(c.args(["topic", "list"])).code, 2);
    let r = run(strata(&bs).env("STRATA_NEW_PASSWORD", "x").args([
        "user",
        "scram-set",
        "dave",
        "-i",
        "100",
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("Too few iterations"), "{}", r.stderr);
    let r = run(strata(&bs).args(["user", "scram-delete", "bob", "-m", "SCRAM-SHA-256"]));
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(run(strata(&bs).args(["user", "list", "nobody"])).code, 4);
    expect(
        strata(&bs).args(["user", "scram-delete", "bob", "-m", "SCRAM-SHA-512"]),
        0,
    );
    let mut c = strata(&sasl);
    login(&mut c, "bob", "SCRAM-SHA-512", "bob-secret");
    assert_eq!(run(c.args(["topic", "list"])).code, 5, "a deleted user");
    Ok(())
}
