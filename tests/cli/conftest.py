"""Run ``python -m aog_plugins`` as a real subprocess and check it left nothing behind.

Every CLI run gets its own ``AOG_PLUGINS_TEST_TAG``, which the plugins (and the reaper)
it starts inherit; after the CLI exits they must all be gone, and so must its socket dirs.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.wait import wait_until

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "plugins"
TAG = "AOG_PLUGINS_TEST_TAG"
RUN_TIMEOUT = 120


def fixture(name: str) -> str:
    """The path of an executable fixture plugin."""
    return str(FIXTURES / name)


def cli_env(tag: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment, with this interpreter first on PATH (the fixtures' ``python3``)."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, TAG: tag, **(extra or {})}


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def assert_nothing_left(tag: str, cli_pid: int) -> None:
    """No process started by that CLI run may remain (the reaper may take a moment to go)."""
    _gone, alive = psutil.wait_procs(_tagged(tag), timeout=15)
    for proc in alive:
        proc.kill()
    assert not alive, f"left running: {[(p.pid, p.cmdline()) for p in alive]}"
    assert not glob.glob(f"/tmp/aogp-{cli_pid}-*"), "socket dirs left behind"


@dataclass
class Result:
    code: int
    out: str
    err: str
    pid: int

    @property
    def output(self) -> str:
        return self.out + self.err


def cli(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    python: str = sys.executable,
    command: list[str] | None = None,
) -> Result:
    """Run the CLI (``python -m aog_plugins`` unless ``command``) to completion."""
    tag = uuid.uuid4().hex
    with subprocess.Popen(
        [*(command or [python, "-m", "aog_plugins"]), *args],
        cwd=cwd,
        env=cli_env(tag, env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(stdin, timeout=RUN_TIMEOUT)
    assert_nothing_left(tag, proc.pid)
    return Result(proc.returncode, out, err, proc.pid)


@dataclass
class Running:
    """A CLI process under test, started so that SIGINT raises KeyboardInterrupt in it."""

    proc: subprocess.Popen[str]
    tag: str

    def plugin(self, marker: str) -> psutil.Process:
        """Wait until the CLI has spawned the plugin whose command line contains ``marker``.

        A child that has not exec'd yet still shows the CLI's own command line and
        environment (which name the plugin too), so it only counts once it differs. The
        CLI's command line is read after its children: the process starts as a prelude
        that execs the CLI (see ``start_cli``), and compared with the prelude's command
        line a child forked by the CLI but not yet exec'd looked like the plugin (and
        its environment, the CLI's, failed a test once)."""
        me = psutil.Process(self.proc.pid)

        def spawned() -> psutil.Process | None:
            children = me.children(recursive=True)
            own = me.cmdline()  # only the exec'd CLI forks: with children, it is the CLI's
            for child in children:
                try:
                    argv = child.cmdline()
                except psutil.Error:
                    continue
                if argv != own and any(marker in part for part in argv):
                    return child
            assert self.proc.poll() is None, f"the CLI exited before starting {marker!r}"
            return None

        return wait_until(spawned, 30.0, f"the CLI to start a plugin matching {marker!r}")

    def interrupt(self, sig: signal.Signals = signal.SIGINT) -> Result:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=RUN_TIMEOUT)
        assert_nothing_left(self.tag, self.proc.pid)
        return Result(self.proc.returncode, out, err, self.proc.pid)


# A shell or test runner may start us with SIGINT ignored (inherited across exec); a user's
# terminal does not. This prelude restores the default, then becomes the CLI (same pid).
_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.fixture
def start_cli() -> Iterator[Callable[..., Running]]:
    """Start ``python -m aog_plugins ARGS`` in the background; killed if the test fails."""
    started: list[Running] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> Running:
        tag = uuid.uuid4().hex
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGINT_DEFAULT, "-m", "aog_plugins", *args],
            env=cli_env(tag, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(Running(proc, tag))
        return started[-1]

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.communicate()
        assert_nothing_left(running.tag, running.proc.pid)
