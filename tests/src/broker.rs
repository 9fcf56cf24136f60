//! Running a broker for a test: in-process on its own tokio runtime, or as a child process
//! that can be stopped gracefully (SIGTERM) or killed (SIGKILL) and restarted on the same
//! data directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use strata_broker::{Broker, Config};

/// How long a broker may take to accept connections after start. Generous because a restart
/// after kill -9 replays the RocksDB WAL, and debug builds on 2 cores are slow.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a graceful shutdown (SIGTERM) may take before the test calls it a hang.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The one `STRATA_*` variable passed on to child brokers: the log filter. All other
/// `STRATA_*` variables are configuration and are cleared, so that a developer's shell cannot
/// change what a test runs.
const KEEP_ENV: &str = "STRATA_LOG";

/// A free TCP port on 127.0.0.1 (bound, then released: another process may take it before
/// the broker binds it). Tests pass port 0 to [`BrokerProcess::spawn`] instead, which lets
/// the broker bind any port and reads back the one it got; this is for the benchmarks.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A broker configuration for tests: any free port on 127.0.0.1 (the broker binds port 0
/// and reports the address it got) and the given data dir.
pub fn test_config(data_dir: &Path) -> Result<Config> {
    Ok(Config {
        listen: "127.0.0.1:0".into(),
        // Tests run brokers side by side: each its own admin port.
        admin_listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    })
}

/// The address in the broker's "listening" log line (`... listening addr=HOST:PORT ...`),
/// the last one in `log` (a restarted broker appends to the same log).
pub fn bound_addr_in_log(log: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(log);
    plain
        .lines()
        .rev()
        .filter(|l| l.contains(" listening"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .and_then(|a| a.parse().ok())
        })
}

/// Removes terminal colour sequences (`ESC [ ... m`), which the broker's log may contain.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls until `addr` accepts a TCP connection.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    crate::wait_until(
        &format!("{addr} to accept connections"),
        timeout,
        Duration::from_millis(50),
        || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
}

/// A broker running in this process on a dedicated tokio runtime, so that tests and the
/// benchmark can stay synchronous (librdkafka's blocking calls never stall the broker).
pub struct InProcessBroker {
    broker: Option<Broker>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    /// Keeps a temporary data directory alive for the broker's lifetime (when we made one).
    _dir: Option<tempfile::TempDir>,
}

impl InProcessBroker {
    /// Starts a broker on a fresh temporary directory; `configure` may change the config.
    pub fn start_temp(configure: impl FnOnce(&mut Config)) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("strata-test").tempdir()?;
        let mut config = test_config(&dir.path().join("data"))?;
        configure(&mut config);
        let mut broker = Self::start(config)?;
        broker._dir = Some(dir);
        Ok(broker)
    }

    /// Starts a broker with exactly this configuration.
    pub fn start(config: Config) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-broker")
            .enable_all()
            .build()?;
        let broker = runtime.block_on(Broker::start(config))?;
        let addr = broker.local_addr();
        wait_for_port(addr, READY_TIMEOUT)?;
        Ok(InProcessBroker {
            broker: Some(broker),
            runtime: Some(runtime),
            addr,
            _dir: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's read-cache counters.
    pub fn read_cache_stats(&self) -> strata_storage::CacheStats {
        self.broker
            .as_ref()
            .map(Broker::read_cache_stats)
            .unwrap_or_default()
    }

    /// How many consumer-group actors the broker runs.
    pub fn live_group_actors(&self) -> usize {
        self.broker
            .as_ref()
            .map_or(0, strata_broker::Broker::live_group_actors)
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        let b = self.broker.as_ref()?;
        b.listener_addrs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Where the admin listener (`/metrics`) accepts, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(Broker::admin_addr)
    }

    /// The `bootstrap.servers` value for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Holds the broker's group-commit syncer until the value is dropped: nothing new
    /// becomes durable, so acks=all stays unanswered and fetches see no new offsets.
    pub fn hold_syncer(&self) -> Option<strata_storage::SyncHold> {
        self.broker.as_ref().map(Broker::hold_syncer)
    }

    /// Graceful shutdown; afterwards the data directory can be opened again.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let result = match (self.broker.take(), self.runtime.as_ref()) {
            (Some(broker), Some(rt)) => rt.block_on(broker.shutdown()),
            _ => Ok(()),
        };
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
        result
    }
}

impl Drop for InProcessBroker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("broker shutdown failed: {e:#}");
        }
    }
}

/// Path of the `strata-test-broker` binary: `$STRATA_TEST_BROKER_BIN`, or next to the running
/// test executable (`target/<profile>/deps/<test>` → `target/<profile>/strata-test-broker`),
/// where cargo puts it before running this crate's integration tests.
pub fn broker_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STRATA_TEST_BROKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("strata-test-broker");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "strata-test-broker binary not found near {}; set STRATA_TEST_BROKER_BIN",
        exe.display()
    )
}

/// The broker as a child process (`strata-test-broker --listen --data-dir`), stderr appended
/// to `<data_dir>.log` so that restarts of one broker share one log.
pub struct BrokerProcess {
    child: Option<Child>,
    /// 0 until the first start has bound a port; restarts reuse it, so clients find the
    /// broker where they left it.
    port: u16,
    /// Length of the log when the current run started: its "listening" line comes later.
    log_start: u64,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl BrokerProcess {
    /// Spawns the broker and waits until it accepts TCP connections. Port 0: the broker
    /// binds any free port, read back from its log (no bind-and-release race).
    pub fn spawn(data_dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Result<Self> {
        let mut process = BrokerProcess {
            child: None,
            port,
            log_start: 0,
            data_dir: data_dir.to_path_buf(),
            env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        process.start()?;
        Ok(process)
    }

    /// Starts the process again on the same port and data directory (after `kill9` or
    /// `terminate`).
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("restart: broker (pid {}) is still running", self.pid());
        }
        self.start()
    }

    fn start(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open broker log")?;
        self.log_start = log.metadata()?.len();
        let mut cmd = Command::new(broker_binary()?);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            // The test's own settings only (AWS_*: an S3 archive's endpoint and credentials).
            let name = key.to_string_lossy();
            if (name.starts_with("STRATA_") || name.starts_with("AWS_")) && key != KEEP_ENV {
                cmd.env_remove(key);
            }
        }
        // Brokers run side by side in tests: each its own admin port unless a test says.
        cmd.env("STRATA_ADMIN_LISTEN", "127.0.0.1:0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawn strata-test-broker")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "broker exited during start-up with {status}; log tail:\n{}",
                    self.log_tail(4000)
                );
            }
            if self.port == 0 {
                if let Some(addr) = bound_addr_in_log(&self.log_since(self.log_start)) {
                    self.port = addr.port();
                }
            }
            if self.port != 0
                && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "broker did not accept connections on port {} within {READY_TIMEOUT:?}; log tail:\n{}",
                    self.port,
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// True while the child process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The broker's peak resident set size in KiB (VmHWM from /proc/<pid>/status).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        crate::procstat::status_field_kib(&status, "VmHWM")
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", self.pid()))
    }

    /// A numeric field of /proc/<pid>/status (e.g. "VmRSS" in KiB, "Threads").
    pub fn status_field(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        crate::procstat::status_field_kib(&status, field)
            .ok_or_else(|| anyhow!("no {field} in /proc/{}/status", self.pid()))
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("kill9: not running"))?;
        child.kill().context("SIGKILL broker")?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM (via `kill -TERM <pid>`), then wait for the exit; returns the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("terminate: not running"))?;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", child.id());
        }
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "broker did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; log tail:\n{}",
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        let mut name = self.data_dir.as_os_str().to_owned();
        name.push(".log");
        PathBuf::from(name)
    }

    /// The last `max_bytes` of the broker's log (for error messages).
    pub fn log_tail(&self, max_bytes: u64) -> String {
        let len = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
        self.log_since(len.saturating_sub(max_bytes))
    }

    /// The broker's log from byte `offset` on.
    fn log_since(&self, offset: u64) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(self.log_path())?;
            file.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        };
        read().unwrap_or_else(|e| format!("<no log: {e}>"))
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_address_is_read_from_the_last_listening_line_with_or_without_colours() {
        let log = "2026-12-04T21:00:00Z  INFO strata_broker::server: listening addr=127.0.0.1:4000 advertised=x:1\n\
                   \u{1b}[2m2026-12-04T21:00:01Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mstrata_broker::server\u{1b}[0m\u{1b}[2m:\u{1b}[0m listening \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:4001 \u{1b}[3madvertised\u{1b}[0m\u{1b}[2m=\u{1b}[0mx:1\n\
                   2026-12-04T21:00:02Z  INFO strata_broker::server: shut down\n";
        assert_eq!(
            bound_addr_in_log(log),
            Some("127.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(bound_addr_in_log("no such line\n"), None);
    }
}
