"""Ctrl-C inside ``launch()`` leaves nothing behind, wherever in the start it lands.

Each round runs a real host that calls ``launch()`` and sends it SIGINT after a delay
that differs from round to round: with a plugin that never prints its handshake the
whole start is a window for the interrupt (the first rounds land in the spawn itself,
where the pid was lost with Popen's return value, the reaper's first start and the pipe
setup; later ones in the handshake wait); with a plugin that starts, the later rounds
land in its connect and supervision. The host catches the KeyboardInterrupt and reports,
while it is still alive (so its reaper has not cleaned up for it), which plugin processes
and socket dirs are left.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
from typing import Any

import pytest

from tests.faults.conftest import HostFactory, plugin_cmd
from tests.process.conftest import LeakCheck, leak_check

__all__ = ["leak_check"]

HOST = textwrap.dedent(
    """
    import json, os, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    import psutil
    import aog_plugins

    cmd, mode = json.loads(sys.argv[1]), sys.argv[2]
    if mode == "fork-window":
        # Widen the window between the plugin's fork and Popen's return, where the pid
        # is lost with the return value if the interrupt lands in this thread: report
        # that we are in it, then linger there.
        import subprocess, time
        fork_exec = subprocess._fork_exec

        def forked_then_linger(*args):
            pid = fork_exec(*args)
            if cmd[-1] in args[0]:  # the plugin's argv, not the reaper's
                print("{}", flush=True)
                time.sleep(1)
            return pid

        subprocess._fork_exec = forked_then_linger
    try:
        if mode == "anywhere":
            print("{}", flush=True)  # the test interrupts from now on
        plugin = aog_plugins.launch(cmd, start_timeout=60)
        # Too late for this round's interrupt (set before Python checks for a signal again).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        outcome = "started"
    except KeyboardInterrupt:
        outcome = "interrupted"
    else:
        plugin.kill()
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if cmd[-1] in child.cmdline() or child.status() == psutil.STATUS_ZOMBIE:
                left.append([child.pid, child.status()])
        except psutil.NoSuchProcess:
            continue
    dirs = [n for n in os.listdir(os.environ["TMPDIR"]) if n.startswith("aogp-")]
    print(json.dumps({"outcome": outcome, "left": left, "dirs": dirs}), flush=True)
    """
)

STALLED = plugin_cmd("misbehave.py", "never-handshake")
QUICK = plugin_cmd("echo_plugin.py")


def _interrupt(make_host: HostFactory, cmd: list[str], mode: str, delay: float) -> Any:
    """Start a host in ``mode``, SIGINT it ``delay`` s after its signal; its report."""
    host = make_host(HOST, json.dumps(cmd), mode)
    assert host.read() == {}
    time.sleep(delay)
    host.proc.send_signal(signal.SIGINT)
    report = host.read()
    assert report["left"] == [], f"plugin processes left after the launch: {report}"
    assert report["dirs"] == [], f"socket dirs left after the launch: {report}"
    assert host.proc.wait(30) == 0, host.stderr_text()
    return report


def test_sigint_between_the_fork_and_popen_returning(
    make_host: HostFactory, leak_check: LeakCheck
) -> None:
    report = _interrupt(make_host, STALLED, "fork-window", 0.0)
    assert report["outcome"] == "interrupted"


# (plugin, delay before SIGINT): the stalled plugin keeps every round inside the start,
# down to its first milliseconds; a plugin that does start gets interrupted anywhere up
# to the end of its start (connect, health check, supervision) or just after it.
ROUNDS = [(STALLED, 0.005 * i + 0.001 * (i % 3)) for i in range(14)] + [
    (QUICK, 0.06 * i) for i in range(6)
]


@pytest.mark.parametrize(
    ("cmd", "delay"),
    [pytest.param(c, d, id=f"{c[-1].rsplit('/', 1)[-1]}-{d:.3f}s") for c, d in ROUNDS],
)
def test_sigint_anywhere_in_launch_leaves_no_plugin_and_no_socket_dir(
    make_host: HostFactory, leak_check: LeakCheck, cmd: list[str], delay: float
) -> None:
    report = _interrupt(make_host, cmd, "anywhere", delay)
    if cmd is STALLED:
        assert report["outcome"] == "interrupted"
