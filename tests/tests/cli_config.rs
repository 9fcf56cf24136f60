//! The `strata-broker` command line as an operator uses it: a TOML file given with
//! `--config`, overridden by `STRATA_*` variables, overridden by flags; a bad value stops
//! the broker with exit code 2 and a message naming the setting; and `advertise` is what
//! clients are told in Metadata and FindCoordinator.
//!
//! Each layer is observed through the protocol (the port it listens on, the address it
//! advertises, the partitions of an auto-created topic), so a broker that ignored a layer,
//! or applied them in another order, fails here.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{FindCoordinatorRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_tests::broker::bound_addr_in_log;
use strata_tests::raw;
use strata_tests::*;

/// How long a broker may take to start (or to fail to): RocksDB opens a new directory in
/// well under a second; this only bounds a hang.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `strata-broker` child with its own arguments and environment (no `STRATA_*` variable
/// inherited from the developer's shell), stderr in `log`.
struct Cli {
    child: Child,
    log: std::path::PathBuf,
}

impl Cli {
    fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> Result<Cli> {
        let mut cmd = Command::new(broker_binary()?);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        // Brokers run side by side: each its own admin port unless the test sets one.
        cmd.env("STRATA_ADMIN_LISTEN", "127.0.0.1:0");
        cmd.envs(env.iter().copied());
        Ok(Cli {
            child: cmd.spawn().context("spawn strata-test-broker")?,
            log: log.to_path_buf(),
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address the broker listens on, once it is serving.
    fn serving(&mut self) -> Result<SocketAddr> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("broker exited with {status}:\n{}", self.log());
            }
            if let Some(addr) = bound_addr_in_log(&self.log()) {
                raw::api_versions_ok(addr)?;
                return Ok(addr);
            }
            ensure!(
                Instant::now() < deadline,
                "broker not serving:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self) -> Result<Option<i32>> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            ensure!(
                Instant::now() < deadline,
                "broker still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (host, port) of the broker in Metadata, and the partition count of `topic`, which the
/// request auto-creates with the broker's `num_partitions`.
fn metadata(addr: SocketAddr, topic: &str) -> Result<((String, i32), usize)> {
    let version = raw::best_version::<MetadataRequest>(addr)?.min(12);
    let mut s = raw::connect(addr)?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(true);
    let resp = raw::call(&mut s, version, 1, &req)?;
    let b = resp.brokers.first().context("no broker in Metadata")?;
    let t = resp.topics.first().context("no topic in Metadata")?;
    ensure!(
        t.error_code == 0,
        "auto-created topic {topic}: error {}",
        t.error_code
    );
    Ok(((b.host.to_string(), b.port), t.partitions.len()))
}

/// (host, port) FindCoordinator names for a group.
fn coordinator(addr: SocketAddr) -> Result<(String, i32)> {
    // v3: the last version with a single key and a flat answer.
    let version = raw::best_version::<FindCoordinatorRequest>(addr)?.min(3);
    let mut s = raw::connect(addr)?;
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str("cli-group"))
        .with_key_type(0);
    let resp = raw::call(&mut s, version, 1, &req)?;
    ensure!(
        resp.error_code == 0,
        "FindCoordinator: error {}",
        resp.error_code
    );
    Ok((resp.host.to_string(), resp.port))
}

#[test]
fn file_then_environment_then_flags() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("strata.toml");
    // The file and the flag name different loopback addresses (any port): where the broker
    // listens shows which one applied.
    let file_listen = "127.0.0.1:0";
    let data = dir.path().join("data").display().to_string();
    std::fs::write(
        &config,
        format!(
            "listen = \"{file_listen}\"\nadvertise = \"file.example:1001\"\n\
             num_partitions = 2\ndata_dir = \"{data}\"\n"
        ),
    )?;
    let cfg = config.to_str().context("path")?;
    let env = [
        ("STRATA_ADVERTISE", "env.example:1002"),
        ("STRATA_NUM_PARTITIONS", "3"),
    ];

    // All three: flags win over the environment, which wins over the file.
    let all = [
        "--config",
        cfg,
        "--listen",
        "127.0.0.2:0",
        "--advertise",
        "flag.example:1003",
    ];
    expect(
        &all,
        &env,
        dir.path(),
        "127.0.0.2",
        ("flag.example", 1003),
        3,
    )?;
    // File and environment: the environment wins; the file's listen address applies.
    let file = ["--config", cfg];
    expect(
        &file,
        &env,
        dir.path(),
        "127.0.0.1",
        ("env.example", 1002),
        3,
    )?;
    // The file alone.
    expect(
        &file,
        &[],
        dir.path(),
        "127.0.0.1",
        ("file.example", 1001),
        2,
    )
}

/// Starts a broker with `args` and `env` and checks what it does: listens on `ip`,
/// advertises `advertised` in Metadata and FindCoordinator, auto-creates topics with
/// `partitions` partitions.
fn expect(
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
    ip: &str,
    advertised: (&str, i32),
    partitions: usize,
) -> Result<()> {
    let case = format!("args {args:?}, env {env:?}");
    let mut b = Cli::spawn(args, env, &dir.join(format!("{}.log", topic_name("cli"))))?;
    let addr = b.serving()?;
    ensure!(
        addr.ip().to_string() == ip,
        "{case}: listening on {addr}, expected {ip}"
    );
    let (shown, count) = metadata(addr, &topic_name("cli"))?;
    let want = (advertised.0.to_string(), advertised.1);
    ensure!(
        shown == want,
        "{case}: Metadata advertises {shown:?}, expected {want:?}"
    );
    ensure!(
        count == partitions,
        "{case}: auto-created {count} partitions, expected {partitions}"
    );
    let coord = coordinator(addr)?;
    ensure!(
        coord == want,
        "{case}: FindCoordinator names {coord:?}, expected {want:?}"
    );
    Ok(())
}

#[test]
fn bad_values_stop_the_broker_with_exit_code_2_and_a_clear_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data").display().to_string();
    let base = ["--listen", "127.0.0.1:0", "--data-dir", data.as_str()];

    let mut b = Cli::spawn(
        &base,
        &[("STRATA_FSYNC", "maybe")],
        &dir.path().join("env.log"),
    )?;
    ensure!(
        b.exit_code()? == Some(2),
        "exit code for STRATA_FSYNC=maybe:\n{}",
        b.log()
    );
    ensure!(
        b.log().contains("STRATA_FSYNC") && b.log().contains("maybe"),
        "the message does not name the setting and value:\n{}",
        b.log()
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "num_partitions = \"many\"\n")?;
    let cfg = config.to_str().context("path")?;
    let mut args = base.to_vec();
    args.extend(["--config", cfg]);
    let mut b = Cli::spawn(&args, &[], &dir.path().join("file.log"))?;
    ensure!(
        b.exit_code()? == Some(2),
        "exit code for a bad file value:\n{}",
        b.log()
    );
    ensure!(
        b.log().contains("bad.toml") && b.log().contains("num_partitions"),
        "the message does not name the file and key:\n{}",
        b.log()
    );

    let mut b = Cli::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "no-port",
            "--data-dir",
            &data,
        ],
        &[],
        &dir.path().join("flag.log"),
    )?;
    ensure!(
        b.exit_code()? == Some(2),
        "exit code for --advertise no-port:\n{}",
        b.log()
    );
    ensure!(
        b.log().contains("no-port"),
        "the message does not name the value:\n{}",
        b.log()
    );
    Ok(())
}
