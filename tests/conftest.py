"""Suite-wide checks: after the whole run no process started by this run may remain.

Every process a test starts inherits ``AOG_PLUGINS_TEST_RUN`` (plugins are spawned with
the host's environment), so leftovers are found by that marker, including grandchildren
and plugins whose xdist worker has already exited. Leftovers are killed and fail the run.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import psutil
import pytest

MARKER = "AOG_PLUGINS_TEST_RUN"
os.environ.setdefault(MARKER, uuid.uuid4().hex)


def _leftovers() -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(MARKER) == os.environ[MARKER]:
                # xdist workers and their helpers are ours too; only count non-python-test ones.
                cmd = " ".join(proc.cmdline())
                if "execnet" in cmd or "xdist" in cmd or "pytest" in cmd:
                    continue
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.fixture(autouse=True)
def _root_logger_left_as_found() -> Iterator[None]:
    """The CLI run in-process (``aog_plugins.cli.main``) points the root logger at the
    test's captured stderr, closed once the test is over: a later test's plugin lines
    then printed "--- Logging error ---" tracebacks. Handlers a test added to the root
    logger are removed after it and the root level is put back (pytest's own handlers are
    pytest's business)."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before and type(handler).__module__ != "_pytest.logging":
            root.removeHandler(handler)
    root.setLevel(level)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Build the Go fixtures once, before any test's timeout starts (a cold build takes ~45 s).
    if not hasattr(session.config, "workerinput"):
        from tests.support.gobuild import prebuild

        prebuild()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks once, after every worker is gone
    leftovers = [p for p in _leftovers() if p.status() != psutil.STATUS_ZOMBIE]
    if not leftovers:
        return
    lines = []
    for proc in leftovers:
        try:
            lines.append(f"  pid {proc.pid}: {' '.join(proc.cmdline())}")
            proc.kill()
        except psutil.Error:
            continue
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "processes started by the test run were left running (now killed):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_line(text, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
