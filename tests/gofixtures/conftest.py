"""Fixtures for driving the Go host against the Go fixture plugins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from tests.support.gobuild import GoBinaries, go_binaries

TAG = "AOG_PLUGINS_TEST_TAG"


@pytest.fixture(scope="session")
def go_bins() -> GoBinaries:
    """The built Go fixtures (skips, or fails under CI, without a Go toolchain)."""
    return go_binaries()


@dataclass
class HostRun:
    """One go-host run: exit code, parsed stdout lines and raw stderr."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    tag: str = field(repr=False)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self.of("call")

    @property
    def start(self) -> dict[str, Any]:
        (start,) = self.of("start")
        return start


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


RunHost = Callable[..., HostRun]


@pytest.fixture
def run_host(go_bins: GoBinaries) -> RunHost:
    """Run go-host with flags (and a call script on stdin) against a plugin argv (default:
    aog-provider); asserts nothing it started is left behind."""

    def run(
        *args: str,
        plugin: list[str] | None = None,
        env: dict[str, str] | None = None,
        script: list[dict[str, Any]] | None = None,
        timeout: float = 60.0,
    ) -> HostRun:
        tag = uuid.uuid4().hex
        full_env = {**os.environ, **(env or {}), TAG: tag}
        if script is not None:
            args = (*args, "-script", "-")
        argv = [str(go_bins.go_host), *args, "--", *(plugin or [str(go_bins.aog_provider)])]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            start_new_session=True,  # the plugin joins this group: one killpg ends both
        )
        try:
            stdin = json.dumps(script) if script is not None else ""
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"go-host timed out after {timeout}s\nstdout:\n{out}\nstderr:\n{err}")
        left = _tagged(tag)
        for p in left:
            p.kill()
        assert not left, f"go-host left processes running: {[p.cmdline() for p in left]}"
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        for start in (e for e in events if e.get("event") == "start"):
            if start.get("network") == "unix":
                sock_dir = os.path.dirname(start["address"])
                assert not os.path.exists(sock_dir), f"socket dir left behind: {sock_dir}"
        return HostRun(proc.returncode, events, err, tag)

    return run
