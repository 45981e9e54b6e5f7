"""AsyncPlugin mirrors Plugin: facts, ping, kill, events as an async iterator; a failed
start raises the sync API's typed error; a cancelled launch leaves nothing running."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from aog_plugins import PluginState, RestartPolicy
from aog_plugins.aio import AsyncGRPCProviderClient, AsyncPlugin, launch
from aog_plugins.errors import (
    ConfigurationError,
    PluginExitedError,
    PluginFatalError,
)
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.leaks import socket_dirs
from tests.support.wait import wait_until

QUICK = RestartPolicy(backoff_base=0.05, jitter=0.0, min_uptime=0.0)


def test_async_plugin_mirrors_plugin(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        plugin = await launch(cmd, auto_mtls=True, extra_env=leak_check.env)
        async with plugin:
            assert plugin.state is PluginState.RUNNING
            assert plugin.pid == plugin.plugin.pid
            assert plugin.handshake == plugin.plugin.handshake
            assert plugin.handshake.server_cert is not None
            assert plugin.app_version == 1
            assert not plugin.exited
            assert plugin.restart_policy == plugin.plugin.restart_policy
            assert "fixture provider serving" in await plugin.stderr_tail()
            await plugin.ping()
            assert isinstance(plugin.client, AsyncGRPCProviderClient)
            assert plugin.client is plugin.client
            events = plugin.events()
        assert plugin.plugin.state is PluginState.EXITED  # (mypy keeps the narrowed .state)
        assert plugin.exit_code == 0  # it left through the Shutdown RPC
        seen = [(e.old, e.new) async for e in events]
        assert seen == [
            (PluginState.RUNNING, PluginState.STOPPING),
            (PluginState.STOPPING, PluginState.EXITED),
        ]
        await plugin.kill()  # idempotent
        assert [e async for e in plugin.events()] == []  # already EXITED: ends at once
        with pytest.raises(PluginFatalError, match="EXITED"):  # as the sync client after kill
            await plugin.client.get_manifest()

    run(main())


def test_events_follow_a_crash_and_the_restart(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        async with await launch(cmd, restart=QUICK, extra_env=leak_check.env) as plugin:
            events = plugin.events()
            first = plugin.pid
            os.kill(first, signal.SIGKILL)
            seen = []
            async for event in events:
                seen.append(event.new)
                if event.new is PluginState.RUNNING:
                    break
            assert seen == [PluginState.BACKOFF, PluginState.STARTING, PluginState.RUNNING]
            assert plugin.pid != first
            await plugin.ping()

    run(main())


def test_an_events_iterator_left_and_dropped_is_let_go(leak_check: LeakCheck) -> None:
    # The plugin held every iterator events() returned until the plugin ended: one left
    # with a break kept queuing every later transition, for good.
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        async with await launch(cmd, restart=QUICK, extra_env=leak_check.env) as plugin:
            events = plugin.events()
            os.kill(plugin.pid, signal.SIGKILL)
            async for _ in events:
                break
            left = weakref.ref(events)
            del events
            gc.collect()
            assert left() is None

    run(main())


def test_a_failed_start_raises_the_typed_error(leak_check: LeakCheck) -> None:
    async def main() -> None:
        with pytest.raises(PluginExitedError) as info:
            await launch(plugin_cmd("misbehave.py", "exit-early"), extra_env=leak_check.env)
        assert info.value.exit_code == 3
        with pytest.raises(ConfigurationError):
            await launch(plugin_cmd("local_provider.py"), start_timeout=0)
        for endless in (float("inf"), float("nan"), 1e12):  # OverflowError / "nans" / overflow
            with pytest.raises(ConfigurationError, match="start_timeout"):
                await launch(plugin_cmd("local_provider.py"), start_timeout=endless)

    run(main())


def _run_leaving_nothing(
    main: Callable[[], Coroutine[Any, Any, None]], leak_check: LeakCheck
) -> None:
    """Run ``main()``, then wait until no plugin of the test runs and no socket dir it
    made is left (a plugin nobody received is killed on a thread of its own)."""
    dirs = socket_dirs()
    run(main())
    wait_until(
        lambda: not leak_check.tagged() and not socket_dirs() - dirs,
        30,
        "the plugin nobody received to be killed and its socket dir removed",
    )


def test_a_cancelled_launch_leaves_nothing_running(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        task = asyncio.ensure_future(launch(cmd, extra_env=leak_check.env))
        while not await asyncio.to_thread(leak_check.tagged):  # the plugin is spawned
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # The start completes on its thread, then the plugin nobody received is killed (and
    # its socket dir removed) on another thread.
    _run_leaving_nothing(main, leak_check)


def test_a_launch_cancelled_as_its_result_arrives_leaves_nothing_running(
    leak_check: LeakCheck,
) -> None:
    """The task is cancelled after the start handed its plugin to the loop but before the
    task woke up to take it: that plugin is nobody's, and is killed too."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(
            launch(plugin_cmd("local_provider.py"), extra_env=leak_check.env)
        )
        await asyncio.sleep(0)  # the start thread runs

        def hold_the_loop() -> None:
            # Until the start thread has queued its result; the cancel then runs after the
            # result is set and before the task wakes up.
            while any(t.name == "aog-aio-launch" for t in threading.enumerate()):
                time.sleep(0.01)
            loop.call_soon(task.cancel)

        loop.call_soon(hold_the_loop)
        with pytest.raises(asyncio.CancelledError):
            await task

    _run_leaving_nothing(main, leak_check)


def test_on_another_event_loop_calls_raise_a_typed_error(leak_check: LeakCheck) -> None:
    async def start() -> AsyncPlugin:
        plugin = await launch(plugin_cmd("local_provider.py"), extra_env=leak_check.env)
        await plugin.client.get_manifest()
        return plugin

    plugin = run(start())

    async def elsewhere() -> None:
        with pytest.raises(ConfigurationError, match="event loop that launch"):
            await plugin.client.get_manifest()
        with pytest.raises(ConfigurationError, match="event loop that launch"):
            await plugin.channel()
        with pytest.raises(ConfigurationError, match="event loop that launch"):
            plugin.events()
        await plugin.kill()  # works from any loop
        assert plugin.state is PluginState.EXITED

    run(elsewhere())


def test_bad_timeouts_are_a_typed_error(leak_check: LeakCheck) -> None:
    # channel(nan) waited for ever while the plugin restarted; ping(inf) failed a healthy
    # plugin (the sync ping's defect, awaited on a thread).
    async def main() -> None:
        async with await launch(plugin_cmd("local_provider.py"), extra_env=leak_check.env) as p:
            await p.channel(float("inf"))
            await p.ping(float("inf"))
            for bad in (0, -1.0, float("nan"), True):
                with pytest.raises(ConfigurationError, match="timeout"):
                    await p.channel(bad)
                with pytest.raises(ConfigurationError, match="timeout"):
                    await p.ping(bad)

    run(main())


async def _awaited(result: object, case: str) -> object:
    assert inspect.isawaitable(result), case
    return await result


def test_bad_arguments_are_a_configuration_error(leak_check: LeakCheck) -> None:
    # The sync client's cases: both build their requests in aog_plugins.client.methods.
    from tests.client.test_client_echo import BAD_ARGUMENTS

    async def main() -> None:
        cmd = plugin_cmd("echo_plugin.py")
        async with await launch(cmd, extra_env=leak_check.env) as p:
            for case, (call, message) in BAD_ARGUMENTS.items():
                with pytest.raises(ConfigurationError, match=re.escape(message)):
                    await _awaited(call(p.client), case)

    run(main())
