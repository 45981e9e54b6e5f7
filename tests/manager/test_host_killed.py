"""A SIGKILLed host with five running managed plugins leaves no process or socket dir:
the process layer's reaper covers plugins the manager started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from tests.manager.conftest import Layout
from tests.support.leaks import LeakCheck
from tests.support.wait import wait_until

HOST = textwrap.dedent(
    """
    import json, os, sys, time
    from aog_plugins import PluginManager

    manager = PluginManager(sys.argv[1], eager=True)
    plugins = [manager.get(e.name) for e in manager.entries()]
    print(json.dumps({
        "pids": [p.pid for p in plugins],
        "dirs": [os.path.dirname(p.handshake.address) for p in plugins],
    }), flush=True)
    time.sleep(600)
    """
)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigkilled_host_with_five_plugins_leaves_nothing(layout: Layout, leaks: LeakCheck) -> None:
    for i in range(5):
        layout.add(f"p{i}")
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(layout.root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **leaks.env},
    )
    try:
        assert host.stdout is not None
        info = json.loads(host.stdout.readline())
        assert len(info["pids"]) == 5
        assert all(os.path.isdir(d) for d in info["dirs"])
        host.send_signal(signal.SIGKILL)
        host.wait()
        started = time.monotonic()
        wait_until(lambda: all(gone(p) for p in info["pids"]), 30.0, "the plugins to die")
        wait_until(
            lambda: not any(os.path.exists(d) for d in info["dirs"]), 30.0, "socket dirs removed"
        )
        # Measured, not asserted (the process layer's own tests hold the 2 s bound).
        print(f"plugins gone {time.monotonic() - started:.2f}s after the host's SIGKILL")
        wait_until(lambda: leaks.processes() == [], 30.0, "the reaper to exit")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if host.stdout is not None:
            host.stdout.close()
