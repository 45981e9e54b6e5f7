"""Faults while calls are in flight: what a caller sees, and how the plugin comes back."""

from __future__ import annotations

import json
import logging
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
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.support.wait import wait_until

__all__ = ["leak_check"]


@pytest.fixture
def echo(leak_check: LeakCheck) -> Iterator[tuple[Plugin, list[PluginEvent]]]:
    events: list[PluginEvent] = []
    with launch(
        plugin_cmd("echo_plugin.py"),
        restart=QUICK,
        on_event=events.append,
        extra_env=leak_check.env,
    ) as plugin:
        yield plugin, events


def _ladder_steps(caplog: pytest.LogCaptureFixture, pid: int) -> list[str]:
    """The signals the kill ladder sent to ``pid`` after its Shutdown RPC, in order."""
    steps = {
        f"plugin {pid} ignored Shutdown; sending SIGTERM": "SIGTERM",
        f"plugin {pid} ignored SIGTERM; sending SIGKILL": "SIGKILL",
    }
    return [steps[r.getMessage()] for r in caplog.records if r.getMessage() in steps]


def _kill_soon(pid: int, delay: float = 0.3) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (pid, signal.SIGKILL))
    timer.start()
    return timer


def test_sigkill_during_unary_call(echo: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, events = echo
    old_pid = plugin.pid
    _kill_soon(old_pid)
    with pytest.raises(PluginCrashedError) as info:
        # The plugin would sleep past the call's deadline: only the crash can end it early.
        plugin.client.invoke_service("chat", b'{"sleep": 600}', timeout=60)
    # The call failed because the plugin died, not because it waited out its deadline.
    assert info.value.code != "DEADLINE_EXCEEDED", "the in-flight call must fail at once"
    assert info.value.exit_code == -signal.SIGKILL
    assert info.value.process_exited
    assert "SIGKILL" in str(info.value)
    # Its stderr tail on lines of their own (not escaped like a plugin's status text).
    assert "last stderr lines:\n" in str(info.value), str(info.value)
    # A new call waits for the restart and reaches the new process.
    assert plugin.client.invoke_service("chat", b'{"x": 1}', timeout=30) == b'{"x": 1}'
    assert plugin.pid != old_pid
    wait_until(lambda: len(events) >= 4, 10, "the restart's events")  # on the event thread
    states = [e.new for e in events]
    assert states == [
        PluginState.RUNNING,  # the first start
        PluginState.BACKOFF,
        PluginState.STARTING,
        PluginState.RUNNING,
    ]
    backoff = next(e for e in events if e.new is PluginState.BACKOFF)
    assert backoff.exit_code == -signal.SIGKILL
    assert "SIGKILL" in backoff.reason


def test_sigkill_during_server_stream(echo: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, _ = echo
    stream = plugin.client.invoke_service_stream(
        "chat", json.dumps({"chunks": 1000, "interval": 0.05}).encode(), timeout=60
    )
    got = []

    def consume() -> None:
        for chunk in stream:
            got.append(chunk)
            if len(got) == 3:
                os.kill(plugin.pid, signal.SIGKILL)

    with pytest.raises(PluginCrashedError) as info:
        consume()
    assert 3 <= len(got) < 1000
    assert info.value.exit_code == -signal.SIGKILL


def test_a_stream_read_after_the_restart_still_reports_the_crash(
    echo: tuple[Plugin, list[PluginEvent]],
) -> None:
    # The restart forgot the dead process's channel, so a stream read only after it was
    # matched with the new, running process: "UNAVAILABLE ... process_exited=False", as if
    # the plugin still ran, instead of PluginCrashedError with the exit of its process.
    plugin, _ = echo
    stream = plugin.client.invoke_service_stream(
        "chat", json.dumps({"chunks": 1000, "interval": 0.05}).encode(), timeout=60
    )
    chunks = iter(stream)
    next(chunks)
    old_pid = plugin.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: plugin.pid != old_pid and plugin.state is PluginState.RUNNING, 30, "restart")
    with pytest.raises(PluginCrashedError) as info:
        for _ in chunks:
            pass
    assert info.value.process_exited
    assert info.value.exit_code == -signal.SIGKILL
    assert f"pid {old_pid}" in str(info.value)


def test_sigkill_during_bidi_stream(echo: tuple[Plugin, list[PluginEvent]]) -> None:
    plugin, _ = echo
    sender, replies = plugin.client.invoke_service_bidi("chat", timeout=60)
    sender.send("hello")
    assert next(replies).data == b"hello"
    os.kill(plugin.pid, signal.SIGKILL)
    sender.send("anyone?")  # queued; the call is already failing
    with pytest.raises(PluginCrashedError):
        next(replies)
    sender.cancel()


def test_idempotent_read_is_retried_across_a_restart(
    echo: tuple[Plugin, list[PluginEvent]],
) -> None:
    plugin, _ = echo
    client = plugin.client
    old = plugin.pid
    os.kill(old, signal.SIGKILL)
    # Whether the crash is seen before or during the call, the read succeeds.
    assert client.get_manifest(timeout=30).provider.name == "echo"
    client.health_check(timeout=30)
    assert plugin.pid != old


def test_sigkill_during_handshake_is_a_typed_start_error(leak_check: LeakCheck) -> None:
    seen: list[int] = []

    def kill_it() -> None:
        for proc in leak_check.tagged():
            seen.append(proc.pid)
            proc.kill()

    timer = threading.Timer(0.5, kill_it)
    timer.start()
    with pytest.raises(PluginExitedError) as info:
        launch(plugin_cmd("misbehave.py", "never-handshake"), extra_env=leak_check.env)
    timer.join()
    assert seen
    assert info.value.exit_code == -signal.SIGKILL


def test_sigkill_during_shutdown(leak_check: LeakCheck, caplog: pytest.LogCaptureFixture) -> None:
    def die_while_stopping(event: PluginEvent) -> None:
        if event.new is PluginState.STOPPING:  # kill() has begun: no restart can follow
            os.kill(event.plugin.pid, signal.SIGKILL)

    plugin = launch(
        plugin_cmd("misbehave.py", "ignore-shutdown"),
        on_event=die_while_stopping,
        extra_env=leak_check.env,
    )
    with caplog.at_level(logging.DEBUG, logger=plugin.logger.name):
        plugin.kill(grace=60.0)  # the plugin ignores Shutdown: only its death ends the grace
    # The ladder saw the death and stopped waiting: no SIGTERM/SIGKILL step followed.
    assert _ladder_steps(caplog, plugin.pid) == []
    assert plugin.state is PluginState.EXITED
    assert plugin.exit_code == -signal.SIGKILL


def test_sigstop_calls_hit_their_deadline_and_kill_still_works(
    echo: tuple[Plugin, list[PluginEvent]], caplog: pytest.LogCaptureFixture
) -> None:
    plugin, _ = echo
    os.kill(plugin.pid, signal.SIGSTOP)
    wait_stopped(plugin.pid)
    try:
        with pytest.raises(PluginCallError) as info:
            plugin.client.invoke_service("chat", b"{}", timeout=0.5)
        assert info.value.code == "DEADLINE_EXCEEDED"
        assert not info.value.process_exited
    finally:
        with caplog.at_level(logging.DEBUG, logger=plugin.logger.name):
            plugin.kill(grace=0.5)
    # A stopped plugin can answer neither Shutdown nor SIGTERM: each step gives up after its
    # bound and the ladder ends in SIGKILL.
    assert _ladder_steps(caplog, plugin.pid) == ["SIGTERM", "SIGKILL"]
    assert plugin.exit_code == -signal.SIGKILL


def test_crash_loop_ends_fatal_and_calls_fail_fast(leak_check: LeakCheck) -> None:
    events: list[PluginEvent] = []
    policy = RestartPolicy(backoff_base=0.05, max_restarts=2, window=60, min_uptime=30)
    with launch(
        plugin_cmd("misbehave.py", "crash-soon"),
        restart=policy,
        on_event=events.append,
        extra_env={**leak_check.env, "AOG_FIXTURE_DELAY": "0.2"},
    ) as plugin:
        wait_until(lambda: plugin.state is PluginState.FATAL, 30, "the crash loop to end FATAL")
        with pytest.raises(PluginFatalError, match="FATAL") as info:
            plugin.client.health_check(timeout=30)
        # Fails fast: a call that waited for a restart would end DEADLINE_EXCEEDED
        # ("did not come back within the call's timeout"), not with the FATAL state.
        assert info.value.code == "FATAL", "FATAL must fail fast, not wait"
        assert "did not come back" not in str(info.value)
        assert "restart budget spent" in str(info.value)
    restarts = [e for e in events if e.new is PluginState.STARTING]
    assert len(restarts) == 2
    fatal = [e for e in events if e.new is PluginState.FATAL]
    assert len(fatal) == 1
    assert fatal[0].exit_code == 5
    assert events[-1].new is PluginState.EXITED  # kill() after FATAL still cleans up


def test_clean_exit_is_not_restarted_on_failure_policy(leak_check: LeakCheck) -> None:
    events: list[PluginEvent] = []
    with launch(
        plugin_cmd("misbehave.py", "exit-zero-soon"),
        on_event=events.append,
        extra_env={**leak_check.env, "AOG_FIXTURE_DELAY": "0.2"},
    ) as plugin:
        wait_until(lambda: plugin.state is PluginState.EXITED, 10, "the plugin to exit on its own")
        with pytest.raises(PluginFatalError, match="EXITED"):
            plugin.client.health_check(timeout=5)
        assert plugin.exit_code == 0
    assert not any(e.new is PluginState.BACKOFF for e in events)


def test_always_policy_restarts_a_clean_exit(leak_check: LeakCheck) -> None:
    with launch(
        plugin_cmd("misbehave.py", "exit-zero-soon"),
        restart=RestartPolicy.always(backoff_base=0.05, max_restarts=50),
        extra_env={**leak_check.env, "AOG_FIXTURE_DELAY": "0.5"},
    ) as plugin:
        first = plugin.pid
        wait_until(
            lambda: plugin.pid != first and plugin.state is PluginState.RUNNING,
            10,
            "a restarted plugin to run",
        )
