"""The same faults against a real Go plugin (go-plugin v1.8.0), plaintext and AutoMTLS."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from aog_plugins import Plugin, PluginEvent, PluginState, RestartPolicy, launch
from aog_plugins.errors import (
    PluginCallError,
    PluginCrashedError,
    PluginExitedError,
    PluginFatalError,
)
from tests.faults.conftest import QUICK, wait_stopped
from tests.gofixtures.conftest import go_bins
from tests.process.conftest import LeakCheck, leak_check
from tests.support.gobuild import GoBinaries
from tests.support.wait import wait_until

__all__ = ["go_bins", "leak_check"]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=[False, True], ids=["plaintext", "automtls"])
def go_plugin(
    request: pytest.FixtureRequest, go_bins: GoBinaries, leak_check: LeakCheck
) -> Iterator[tuple[Plugin, list[PluginEvent]]]:
    events: list[PluginEvent] = []
    with launch(
        str(go_bins.aog_provider),
        auto_mtls=request.param,
        restart=QUICK,
        on_event=events.append,
        extra_env={**leak_check.env, "AOG_FIXTURE_KIND": "remote"},
    ) as plugin:
        yield plugin, events


def test_sigkill_during_unary_then_restart(go_plugin: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, events = go_plugin
    old_pid, old_cert = plugin.pid, plugin.handshake.server_cert
    threading.Timer(0.3, os.kill, (old_pid, signal.SIGKILL)).start()
    with pytest.raises(PluginCrashedError) as info:
        plugin.client.invoke_service("slow", b'{"ms": 30000}', timeout=60)
    assert info.value.exit_code == -signal.SIGKILL
    reply = json.loads(plugin.client.invoke_service("echo", b"{}", timeout=30))
    assert reply["service"] == "echo"
    assert plugin.pid != old_pid
    if old_cert is not None:
        assert plugin.handshake.server_cert not in (None, old_cert), "a restart brings a new cert"
    wait_until(  # events arrive on the plugin's event thread
        lambda: [e.new for e in events].count(PluginState.RUNNING) >= 2, 10, "the restart's events"
    )
    assert [e.new for e in events][-3:] == [
        PluginState.BACKOFF,
        PluginState.STARTING,
        PluginState.RUNNING,
    ]


def test_sigkill_during_server_stream(go_plugin: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, _ = go_plugin
    stream = plugin.client.invoke_service_stream("slow", b'{"ms": 50, "chunks": 1000}', timeout=60)
    got = []

    def consume() -> None:
        for chunk in stream:
            got.append(chunk)
            if len(got) == 2:
                os.kill(plugin.pid, signal.SIGKILL)

    with pytest.raises(PluginCrashedError):
        consume()
    assert 2 <= len(got) < 1000


def test_sigkill_during_bidi(go_plugin: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, _ = go_plugin
    sender, replies = plugin.client.invoke_service_bidi("realtime", timeout=60)
    sender.send("hi")
    assert next(replies).data == b"echo: hi"
    os.kill(plugin.pid, signal.SIGKILL)
    with pytest.raises(PluginCrashedError):
        next(replies)
    sender.cancel()


def test_panic_is_a_crash_with_the_panic_text(go_plugin: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, _ = go_plugin
    with pytest.raises(PluginCrashedError) as info:
        plugin.client.invoke_service("panic", b"{}", timeout=30)
    assert info.value.exit_code == 2
    assert "panic" in info.value.stderr_tail
    assert "goroutine" in info.value.stderr_tail
    plugin.client.health_check(timeout=30)  # restarted


def test_sigstop_deadline_then_kill(go_plugin: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, _ = go_plugin
    os.kill(plugin.pid, signal.SIGSTOP)
    wait_stopped(plugin.pid)
    try:
        with pytest.raises(PluginCallError) as info:
            plugin.client.invoke_service("echo", b"{}", timeout=0.5)
        assert info.value.code == "DEADLINE_EXCEEDED"
    finally:
        plugin.kill(grace=0.5)
    assert plugin.exit_code == -signal.SIGKILL


def test_crash_loop_to_fatal(go_bins: GoBinaries, leak_check: LeakCheck) -> None:
    policy = RestartPolicy(backoff_base=0.05, max_restarts=2, min_uptime=30)
    with launch(
        str(go_bins.aog_provider),
        restart=policy,
        extra_env={**leak_check.env, "AOG_FIXTURE_KIND": "remote"},
    ) as plugin:
        for _ in range(3):
            with pytest.raises(PluginCallError):
                plugin.client.invoke_service("panic", b"{}", timeout=30)
        wait_until(lambda: plugin.state is PluginState.FATAL, 10, "the crash loop to end FATAL")
        with pytest.raises(PluginFatalError):
            plugin.client.health_check(timeout=30)


def test_sigkill_during_handshake(go_bins: GoBinaries, leak_check: LeakCheck) -> None:
    def kill_tagged() -> None:
        for proc in leak_check.tagged():
            proc.kill()

    threading.Timer(0.5, kill_tagged).start()
    with pytest.raises(PluginExitedError) as info:
        launch(
            str(go_bins.misbehave),
            extra_env={**leak_check.env, "AOG_FIXTURE_MODE": "sleep-before-handshake"},
        )
    assert info.value.exit_code == -signal.SIGKILL


def test_sigkill_during_shutdown(go_bins: GoBinaries, leak_check: LeakCheck) -> None:
    plugin = launch(str(go_bins.misbehave), extra_env={**leak_check.env, "AOG_FIXTURE_MODE": "ok"})
    os.kill(plugin.pid, signal.SIGKILL)  # dies just as the kill ladder begins
    plugin.kill()
    assert plugin.state is PluginState.EXITED
    assert plugin.exit_code == -signal.SIGKILL


def test_clean_exit_is_not_restarted(go_bins: GoBinaries, leak_check: LeakCheck) -> None:
    events: list[PluginEvent] = []
    env = {**leak_check.env, "AOG_FIXTURE_MODE": "exit-zero-soon", "AOG_FIXTURE_DELAY": "200ms"}
    with launch(str(go_bins.misbehave), on_event=events.append, extra_env=env) as plugin:
        wait_until(lambda: plugin.state is PluginState.EXITED, 10, "the plugin to exit on its own")
        assert plugin.exit_code == 0
        with pytest.raises(PluginFatalError, match="EXITED"):
            plugin.client.health_check(timeout=5)
    assert not any(e.new is PluginState.BACKOFF for e in events)
