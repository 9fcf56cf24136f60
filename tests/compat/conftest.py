"""Fixtures: a real strata-broker process per test session, plus a factory for tests that
need their own broker (restart / durability).

Every failing test's report carries the broker's stderr written while that test ran.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from harness import BrokerProcess, broker_binary, unique_topic

# Brokers started by this session, so that failure reports can show their logs.
_BROKERS: list[BrokerProcess] = []
_LOG_OFFSETS_KEY = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def _session_dir():
    d = Path(tempfile.mkdtemp(prefix="strata-compat-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _start_broker(base: Path, name: str, data_dir: Path | None = None, port: int | None = None,
                  env: dict[str, str] | None = None):
    broker = BrokerProcess(
        binary=broker_binary(),
        data_dir=data_dir or (base / f"{name}-data"),
        log_path=base / f"{name}.stderr.log",
        port=port,
        extra_env=env,
    )
    _BROKERS.append(broker)
    broker.start()
    return broker


@pytest.fixture(scope="session")
def broker(_session_dir):
    """The shared broker: started once, stopped with SIGTERM at the end (must exit 0)."""
    b = _start_broker(_session_dir, "shared")
    yield b
    if not b.alive():
        pytest.fail(f"shared broker died during the session (exit code {b.proc.returncode}):\n"
                    f"{b.log_tail()}")
    rc = b.stop()
    assert rc == 0, f"broker exited with code {rc} after SIGTERM:\n{b.log_tail()}"


@pytest.fixture
def bootstrap(broker):
    """host:port of the shared broker; fails fast if the broker has died."""
    assert broker.alive(), f"shared broker is not running:\n{broker.log_tail()}"
    return broker.bootstrap


@pytest.fixture
def broker_factory(tmp_path):
    """Start extra brokers (e.g. to restart one on the same data dir, or with STRATA_*
    settings); those still running at the end are SIGTERMed and must exit 0."""
    started: list[BrokerProcess] = []

    def start(name: str = "own", data_dir: Path | None = None, port: int | None = None,
              env: dict[str, str] | None = None):
        b = _start_broker(tmp_path, f"{name}{len(started)}", data_dir=data_dir, port=port,
                          env=env)
        started.append(b)
        return b

    yield start
    failures = []
    for b in started:
        if b.exit_code is None:
            rc = b.stop()
            if rc != 0:
                failures.append(f"{b.bootstrap}: exit code {rc} after SIGTERM\n{b.log_tail()}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def topic(request):
    """A fresh topic name derived from the test name."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")
    return unique_topic(base[:60])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[_LOG_OFFSETS_KEY] = {id(b): b.log_size() for b in _BROKERS}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.passed or report.skipped:
        return
    offsets = item.stash.get(_LOG_OFFSETS_KEY, {})
    for b in _BROKERS:
        text = b.log_text(offsets.get(id(b), 0))
        if text.strip():
            lines = text.splitlines()
            if len(lines) > 200:
                lines = ["... (earlier lines cut)"] + lines[-200:]
            report.sections.append((f"broker {b.bootstrap} stderr during {report.when}",
                                    "\n".join(lines)))
