"""Start and stop a real `strata-broker` process, and small helpers shared by the suites.

The broker under test is the binary named by STRATA_BROKER_BIN, or
$CARGO_TARGET_DIR/debug/strata-broker (the workspace's one build profile is `dev`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# How long a freshly started broker may take to accept TCP connections. Opening RocksDB
# on an empty directory takes well under a second; 30 s covers a loaded 2-core CI machine.
STARTUP_TIMEOUT_S = 30.0
# How long the broker may take to shut down after SIGTERM: it flushes and closes RocksDB.
SHUTDOWN_TIMEOUT_S = 20.0


def broker_binary() -> Path:
    """Path of the broker binary under test (not checked for existence)."""
    explicit = os.environ.get("STRATA_BROKER_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO_ROOT / "target")
    return Path(target) / "debug" / "strata-broker"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_topic(prefix: str) -> str:
    """A topic name no other test uses (legal Kafka characters only)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class BrokerProcess:
    """One `strata-broker` process listening on 127.0.0.1:<port> with its own data dir."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, port: int | None = None,
                 extra_env: dict[str, str] | None = None):
        self.binary = binary
        self.extra_env = dict(extra_env or {})
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "BrokerProcess":
        if not self.binary.is_file():
            raise RuntimeError(
                f"broker binary {self.binary} does not exist: build it with "
                "`cargo build -p strata-broker` or set STRATA_BROKER_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A restarted broker is running again: teardown must stop it.
        self.exit_code = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        # Brokers run side by side: each its own admin port unless the test sets one.
        env["STRATA_ADMIN_LISTEN"] = "127.0.0.1:0"
        env.update(self.extra_env)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("NO_COLOR", "1")  # plain logs in failure reports
        env.setdefault("RUST_BACKTRACE", "1")
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"===== start {self.binary} on {self.bootstrap} "
                             f"env {self.extra_env}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            [str(self.binary), "--listen", self.bootstrap, "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=env,
        )
        self._wait_until_accepting()
        return self

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"broker exited with code {rc} before accepting connections:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"broker did not accept connections on {self.bootstrap} within "
                    f"{STARTUP_TIMEOUT_S:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM the broker (by PID) and return its exit code; SIGKILL if it hangs."""
        if self.proc is None:
            raise RuntimeError("broker was never started")
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                self._close_log()
                raise RuntimeError(
                    f"broker ignored SIGTERM for {SHUTDOWN_TIMEOUT_S:.0f}s; killed it:\n"
                    f"{self.log_tail()}")
        self.exit_code = self.proc.returncode
        self._close_log()
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the broker (by PID), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None:
            self.exit_code = self.proc.returncode
        self._close_log()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class CapturingLogger(logging.Logger):
    """A logger to hand to librdkafka (confluent-kafka `logger` setting) that keeps every line."""

    def __init__(self, name: str):
        super().__init__(name, level=logging.DEBUG)
        self.records: list[str] = []

    def handle(self, record: logging.LogRecord) -> None:  # noqa: D401 - logging API
        self.records.append(f"{record.levelname} {record.getMessage()}")

    def matching(self, needle: str) -> list[str]:
        return [r for r in self.records if needle in r]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    """Poll `predicate` until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last value: {last!r})")
