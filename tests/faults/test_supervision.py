"""Supervision under faults of its own: restarts that fail in any way, kill() racing exit."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from aog_plugins import Plugin, PluginEvent, PluginState, RestartPolicy, launch
from aog_plugins.errors import PluginFatalError
from tests.faults.conftest import gone, short_tmpdir
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.support.wait import wait_until

__all__ = ["leak_check", "short_tmpdir"]

QUICK = RestartPolicy(backoff_base=0.05, max_restarts=2, window=60, min_uptime=30)


def _states(events: list[PluginEvent]) -> list[PluginState]:
    return [e.new for e in events]


def test_restart_failing_with_an_untyped_error_ends_fatal_and_leaves_nothing(
    leak_check: LeakCheck, tmp_path: Path
) -> None:
    # The second start prints a version too long for int(): ValueError, not a start error.
    events: list[PluginEvent] = []
    counter = tmp_path / "starts"
    env = {**leak_check.env, "AOG_FIXTURE_COUNTER": str(counter)}
    with launch(
        plugin_cmd("second_start.py"), restart=QUICK, on_event=events.append, extra_env=env
    ) as plugin:
        os.kill(plugin.pid, signal.SIGKILL)
        wait_until(
            lambda: plugin.state is PluginState.FATAL,
            30,
            lambda: f"FATAL; stuck in {plugin.state}: {_states(events)}",
        )
        assert counter.read_text() == "...", "two restarts were tried"
        left = [p.pid for p in leak_check.tagged() if not gone(p.pid)]
        assert not left, f"a failed restart left its process running: {left}"
        with pytest.raises(PluginFatalError, match="restart failed"):
            plugin.client.health_check()  # no timeout: must not wait for a restart
    assert _states(events)[1:] == [
        PluginState.BACKOFF,
        PluginState.STARTING,
        PluginState.BACKOFF,
        PluginState.STARTING,
        PluginState.FATAL,
        PluginState.STOPPING,
        PluginState.EXITED,
    ]
    failed = [e for e in events if "restart failed" in e.reason]
    assert len(failed) == 2
    assert "budget spent" in failed[-1].reason


def test_restart_failing_in_the_os_backs_off_then_ends_fatal(
    leak_check: LeakCheck, short_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The socket-dir base is replaced by a file between the starts: mkdtemp fails (ENOTDIR)
    # on the restart, before anything is spawned; an OSError, not a start error.
    base = short_tmpdir / "base"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    events: list[PluginEvent] = []
    with launch(
        plugin_cmd("echo_plugin.py"),
        restart=QUICK,
        on_event=events.append,
        extra_env=leak_check.env,
    ) as plugin:
        assert plugin.handshake.address.startswith(str(base))
        base.rename(short_tmpdir / "moved")
        base.write_text("not a directory any more")
        os.kill(plugin.pid, signal.SIGKILL)
        wait_until(
            lambda: plugin.state is PluginState.FATAL,
            30,
            lambda: f"FATAL; stuck in {plugin.state}: {_states(events)}",
        )
        with pytest.raises(PluginFatalError, match="Not a directory"):
            plugin.client.health_check()
    failed = [e for e in events if "restart failed" in e.reason]
    assert [e.new for e in failed] == [PluginState.BACKOFF, PluginState.FATAL]
    assert all("Not a directory" in e.reason for e in failed)
    assert events[-1].new is PluginState.EXITED


def _restart_thread_appears(before: set[threading.Thread]) -> None:
    # A thread is listed from the moment start() is called, before it runs.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        new = [t for t in threading.enumerate() if t not in before]
        if any(t.name == "aog-plugins-restart" for t in new):
            return
        time.sleep(0)


def test_kill_racing_the_plugins_own_exit_never_raises(
    leak_check: LeakCheck, tmp_path: Path
) -> None:
    # kill() runs (on another thread) the moment the plugin's own exit is reported, while
    # the supervisor is still starting the thread that releases the dead process; its
    # STOPPING event waits until that thread is being started. Each round is one chance.
    errors: list[BaseException] = []
    states: list[PluginState] = []
    for _ in range(20):
        before = set(threading.enumerate())
        killers: list[threading.Thread] = []

        def kill(plugin: Plugin) -> None:
            try:
                plugin.kill()
            except Exception as exc:
                errors.append(exc)

        def on_event(
            event: PluginEvent,
            killers: list[threading.Thread] = killers,
            before_round: set[threading.Thread] = before,
        ) -> None:
            if event.old is PluginState.RUNNING and event.new is PluginState.EXITED:
                killer = threading.Thread(target=kill, args=(event.plugin,))
                killer.start()
                killers.append(killer)
            elif event.new is PluginState.STOPPING:
                _restart_thread_appears(before_round)

        # It crashes once the gate exists: after launch() returned, however slow the start.
        gate = tmp_path / f"crash-{len(states)}"
        plugin = launch(
            plugin_cmd("misbehave.py", "crash-soon"),
            restart=RestartPolicy.never(),
            on_event=on_event,
            extra_env={**leak_check.env, "AOG_FIXTURE_GATE": str(gate)},
        )
        gate.touch()
        wait_until(partial(bool, killers), 30, "the plugin's exit to be reported")
        killers[0].join(30)
        plugin.kill()
        states.append(plugin.state)
    assert not errors, f"kill() raised {len(errors)} times in {len(states)} rounds: {errors[0]!r}"
    assert len(states) == 20
    assert set(states) == {PluginState.EXITED}


def test_ping_says_why_there_is_nothing_to_ping(leak_check: LeakCheck) -> None:
    # A health endpoint pings whatever state the plugin is in: a typed answer each time,
    # never grpcio's ValueError of a closed channel.
    from aog_plugins.errors import PluginConnectError

    slow = RestartPolicy(backoff_base=30.0, jitter=0.0, max_restarts=1, window=60)
    plugin = launch(plugin_cmd("echo_plugin.py"), restart=slow, extra_env=leak_check.env)
    try:
        plugin.ping()
        os.kill(plugin.pid, signal.SIGKILL)
        wait_until(lambda: plugin.state is PluginState.BACKOFF, 30, "the restart's backoff")
        with pytest.raises(PluginConnectError, match="BACKOFF"):
            plugin.ping()
    finally:
        plugin.kill()
    with pytest.raises(PluginFatalError, match="EXITED"):
        plugin.ping()


def test_a_client_used_before_kill_raises_what_a_new_one_raises(leak_check: LeakCheck) -> None:
    # docs/lifecycle.md: calls on a stopped plugin raise PluginFatalError at once, whether
    # or not plugin.client was used before the kill (it used to say "client is closed").
    plugin = launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env)
    client = plugin.client
    client.health_check()
    plugin.kill()
    with pytest.raises(PluginFatalError, match="EXITED"):
        client.health_check()


def test_kill_during_a_restart_that_hangs_does_not_wait_out_the_start_timeout(
    leak_check: LeakCheck,
) -> None:
    # kill() waited for the restart thread, and that for its start: a restarted process
    # that never printed its handshake held kill() for the whole start_timeout (60 s by
    # default; "A restart in progress ends within its start timeout"). The restart's start
    # is now given up, its process killed, as a manager's close() gives up a first start.
    plugin = launch(
        plugin_cmd("echo_plugin.py"),
        restart=RestartPolicy(backoff_base=0.01),
        start_timeout=600,
        extra_env=leak_check.env,
    )
    plugin._run_next_start_as(plugin_cmd("misbehave.py", "never-handshake"))
    os.kill(plugin.pid, signal.SIGKILL)
    wait_until(lambda: plugin.state is PluginState.STARTING, 30, "the restart")
    killer = threading.Thread(target=plugin.kill, args=(1.0,), daemon=True)
    killer.start()
    killer.join(60)
    assert not killer.is_alive(), "kill() waited for the hanging restart"
    assert plugin.state is PluginState.EXITED


def test_a_crash_loop_past_the_backoffs_float_range_still_backs_off_then_ends_fatal(
    leak_check: LeakCheck,
) -> None:
    # backoff_base * backoff_factor**n overflowed a float (attempt 1024 for the factor 2,
    # reached by a budget that lets a crash loop run for hours; attempt 2 for this factor):
    # the exit handler raised OverflowError and the plugin stayed RUNNING with a dead
    # process, calls waiting for a restart that never came.
    events: list[PluginEvent] = []
    policy = RestartPolicy(
        backoff_base=0.01, backoff_factor=1e300, backoff_max=0.01, max_restarts=3
    )
    with launch(
        plugin_cmd("misbehave.py", "crash-soon"),
        restart=policy,
        on_event=events.append,
        extra_env={**leak_check.env, "AOG_FIXTURE_DELAY": "0.05"},
    ) as plugin:
        wait_until(
            lambda: plugin.state is PluginState.FATAL,
            30,
            lambda: f"FATAL; stuck in {plugin.state}: {_states(events)}",
        )
    assert _states(events) == [
        PluginState.RUNNING,
        *[PluginState.BACKOFF, PluginState.STARTING, PluginState.RUNNING] * 3,
        PluginState.FATAL,
        PluginState.STOPPING,
        PluginState.EXITED,
    ]
