"""User code (event callbacks, logging handlers) never runs on the shared I/O thread: a
slow callback of one plugin must not delay noticing that another plugin died."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from aog_plugins import Plugin, PluginEvent, PluginState, RestartPolicy, launch
from tests.faults.conftest import HostFactory, gone
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd

__all__ = ["leak_check"]

BLOCK = 60.0  # how long a callback blocks unless released; far beyond every wait below


def _exit_reported(exited: threading.Event) -> Callable[[PluginEvent], None]:
    def on_event(event: PluginEvent) -> None:
        if event.old is PluginState.RUNNING and event.new is PluginState.EXITED:
            exited.set()

    return on_event


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test, so no callback stays blocked."""
    event = threading.Event()
    yield event
    event.set()


def _watched(leak_check: LeakCheck) -> tuple[Plugin, threading.Event]:
    exited = threading.Event()
    plugin = launch(
        plugin_cmd("echo_plugin.py"),
        restart=RestartPolicy.never(),
        on_event=_exit_reported(exited),
        extra_env=leak_check.env,
    )
    return plugin, exited


def test_a_blocked_event_callback_does_not_hide_another_plugins_death(
    leak_check: LeakCheck, release: threading.Event
) -> None:
    blocked = threading.Event()

    def slow(event: PluginEvent) -> None:
        if event.new is PluginState.EXITED:
            blocked.set()
            release.wait(BLOCK)

    a = launch(
        plugin_cmd("echo_plugin.py"),
        restart=RestartPolicy.never(),
        on_event=slow,
        extra_env=leak_check.env,
    )
    b, b_exited = _watched(leak_check)
    with a, b:
        os.kill(a.pid, signal.SIGKILL)
        assert blocked.wait(30), "plugin A's exit was not reported"
        os.kill(b.pid, signal.SIGKILL)
        assert b_exited.wait(30), "B's death went unnoticed while A's callback was blocked"
        assert not release.is_set()
        release.set()


def test_a_blocked_logging_handler_does_not_hide_another_plugins_death(
    leak_check: LeakCheck, release: threading.Event
) -> None:
    blocked = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            blocked.set()
            release.wait(BLOCK)

    logger = logging.getLogger(f"test.slow.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(Slow())
    b, b_exited = _watched(leak_check)
    # Writes hclog lines on its real stderr pipe after the handshake.
    a = launch(plugin_cmd("misbehave.py", "hclog"), logger=logger, extra_env=leak_check.env)
    with a, b:
        assert blocked.wait(30), "plugin A's stderr was not logged"
        os.kill(b.pid, signal.SIGKILL)
        assert b_exited.wait(30), "B's death went unnoticed while A's log handler was blocked"
        release.set()


STUCK_HOST = """
import json, sys, threading
import aog_plugins

def on_event(event):  # never returns once the plugin is being stopped
    if event.new.value == "STOPPING":
        threading.Event().wait()

plugin = aog_plugins.launch(json.loads(sys.argv[1]), on_event=on_event)
print(json.dumps({"pid": plugin.pid}), flush=True)
if sys.argv[2] == "sigterm":
    threading.Event().wait()
"""


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_a_blocked_event_callback_does_not_keep_the_host_from_ending(
    make_host: HostFactory, leak_check: LeakCheck, ending: str
) -> None:
    # The stop at interpreter exit (or on SIGTERM) waited for every event to be delivered,
    # like kill(): an on_event stuck at STOPPING kept the host alive for good, with its
    # plugin stopped, deaf to SIGTERM and to Ctrl-C (swallowed by the exit hook).
    host = make_host(STUCK_HOST, json.dumps(plugin_cmd("echo_plugin.py")), ending)
    pid = host.read()["pid"]
    if ending == "sigterm":
        host.proc.send_signal(signal.SIGTERM)
    try:
        code = host.proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the host did not end; its stderr:\n{host.stderr_text()}")
    assert code == (0 if ending == "exit" else -signal.SIGTERM), host.stderr_text()
    assert gone(pid)
