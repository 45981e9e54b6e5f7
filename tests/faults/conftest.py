"""Helpers for fault tests: host subprocesses, and waiting for processes to be gone."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from aog_plugins import RestartPolicy
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.support.wait import gone, wait_gone, wait_until

__all__ = [
    "QUICK",
    "Host",
    "HostFactory",
    "gone",
    "leak_check",
    "plugin_cmd",
    "short_tmpdir",
    "wait_gone",
    "wait_stopped",
]

ROOT = Path(__file__).resolve().parents[2]

QUICK = RestartPolicy(backoff_base=0.05, max_restarts=3, min_uptime=30)
"""Restarts that come fast and end FATAL after 3: the crash tests, Python and Go alike."""


class Host:
    """A host process (``python -c code``) that prints one JSON line when it is ready.

    Its stderr goes to a file (read with :meth:`stderr_text`), so it can never block.
    Its TMPDIR is :attr:`tmpdir`, a private short dir: the socket dirs it makes (and
    those its plugins make) live there, where no other host looks. Every host removes
    the socket dirs of dead hosts from its own temp dir and /tmp on its first start, so a
    dir that a test's host leaves behind on purpose, or one the test waits for the reaper
    to remove, would otherwise be fair game for any host started meanwhile (another
    xdist worker, a CLI test, another checkout's test run).
    """

    def __init__(
        self, code: str, args: list[str], leak: LeakCheck, env: Mapping[str, str] | None
    ) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="aogt-", dir="/tmp")
        full_env = {
            **os.environ,
            **leak.env,
            "PYTHONPATH": str(ROOT),
            "TMPDIR": self.tmpdir,
            **(env or {}),
        }
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,  # unbuffered: select() must not miss a line already in our buffer
            env=full_env,
            cwd=ROOT,
        )

    def stderr_text(self) -> str:
        """What the host wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def read(self, timeout: float = 60.0) -> Any:
        """The host's JSON line; fails if it exits or stays silent for ``timeout`` s."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.send_signal(signal.SIGUSR1)  # hosts that register faulthandler dump stacks
            time.sleep(0.5)
        assert ready, f"the host printed nothing; its stderr:\n{self.stderr_text()}"
        line = self.proc.stdout.readline()
        assert line, f"the host exited with {self.proc.wait()}"
        return json.loads(line)

    def in_tmpdir(self, path: str) -> bool:
        """Whether ``path`` is directly in this host's private TMPDIR."""
        return os.path.dirname(path) == self.tmpdir

    def kill(self) -> None:
        """SIGKILL the host and reap it (its TMPDIR stays: what the reaper removes there
        is for the test to see; the fixture removes the dir at the end)."""
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


HostFactory = Callable[..., Host]


@pytest.fixture
def make_host(leak_check: LeakCheck) -> Iterator[HostFactory]:
    """``make_host(code, *args, env=None)``: start a host; SIGKILLed and reaped afterwards."""
    hosts: list[Host] = []

    def make(code: str, *args: str, env: Mapping[str, str] | None = None) -> Host:
        hosts.append(Host(code, list(args), leak_check, env))
        return hosts[-1]

    yield make
    for host in hosts:
        host.kill()
        shutil.rmtree(host.tmpdir, ignore_errors=True)


@pytest.fixture
def short_tmpdir() -> Iterator[Path]:
    """A private directory with a path short enough to be a socket base dir."""
    path = tempfile.mkdtemp(prefix="aogt-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def wait_stopped(pid: int) -> None:
    """SIGSTOP takes effect asynchronously: wait until every thread of ``pid`` is stopped."""

    def states() -> list[str]:
        found = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                found.append(stat.read().rsplit(")", 1)[1].split()[0])
        return found

    wait_until(
        lambda: all(state in ("T", "t") for state in states()),
        5,
        lambda: f"pid {pid} to stop; thread states: {states()}",
    )
