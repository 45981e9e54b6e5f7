"""Crashes seen from asyncio: calls in flight fail fast with PluginCrashedError (also over
the relay of a Go plugin's AutoMTLS), new calls wait for the restart within their
timeout, FATAL fails fast, and an idempotent read is retried on the restarted plugin."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from aog_plugins import PluginState, RestartPolicy
from aog_plugins.aio import AsyncPlugin, launch
from aog_plugins.errors import PluginCallError, PluginCrashedError, PluginFatalError
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.gobuild import go_binaries

_T = TypeVar("_T")
QUICK = RestartPolicy(backoff_base=0.05, jitter=0.0, min_uptime=0.0)
BOUND = 30.0  # a bound for a loaded machine: far below the 60 s the plugin would hang


async def bounded(step: Awaitable[_T]) -> _T:
    return await asyncio.wait_for(step, BOUND)


async def _until_state(plugin: AsyncPlugin, *states: PluginState) -> None:
    async def wait() -> None:
        async for event in plugin.events():
            if event.new in states:
                return

    if plugin.state not in states:
        await bounded(wait())


def test_crash_during_a_stream_then_the_restarted_plugin_answers(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        async with await launch(cmd, restart=QUICK, extra_env=leak_check.env) as plugin:
            first = plugin.pid
            stream = await plugin.client.invoke_service_stream("crash", b"{}", timeout=60)
            received = []

            async def drain() -> None:
                async for chunk in stream:
                    received.append(json.loads(chunk.data))

            with pytest.raises(PluginCrashedError) as crashed:
                await bounded(drain())
            # The chunk sent right before the exit may or may not have left the process.
            assert received in ([], [{"index": 0}])
            assert crashed.value.exit_code == 7
            assert "crashing on purpose" in crashed.value.stderr_tail
            manifest = await plugin.client.get_manifest(timeout=60)  # waits for the restart
            assert manifest.provider.name == "local-fixture"
            assert plugin.pid != first

    run(main())


def test_sigkill_mid_stream_over_the_automtls_relay(leak_check: LeakCheck) -> None:
    async def main() -> None:
        binary = str(go_binaries().aog_provider)
        async with await launch(
            binary, auto_mtls=True, restart=RestartPolicy.never(), extra_env=leak_check.env
        ) as plugin:
            request = json.dumps({"chunks": 100000, "ms": 100}).encode()
            stream = await plugin.client.invoke_service_stream("slow", request, timeout=600)
            await stream.__anext__()
            pending = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0)
            os.kill(plugin.pid, signal.SIGKILL)
            with pytest.raises(PluginCrashedError) as crashed:
                await bounded(pending)
            assert crashed.value.exit_code == -signal.SIGKILL
            with pytest.raises(PluginFatalError):  # EXITED (no restarts): fails at once
                await plugin.client.get_manifest()

    run(main())


def test_calls_in_flight_fail_fast_when_the_plugin_dies(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        async with await launch(cmd, restart=QUICK, extra_env=leak_check.env) as plugin:
            client = plugin.client
            slow = json.dumps({"seconds": 60}).encode()
            calls = [
                asyncio.ensure_future(client.invoke_service("slow", slow, timeout=120))
                for _ in range(8)
            ]
            stream = await client.invoke_service_stream("slow-stream", b"{}", timeout=120)

            async def drain() -> None:
                async for _ in stream:
                    pass

            reader = asyncio.ensure_future(drain())
            await asyncio.sleep(0.5)  # let the calls reach the plugin
            os.kill(plugin.pid, signal.SIGKILL)
            results = await bounded(asyncio.gather(*calls, reader, return_exceptions=True))
            assert [type(r).__name__ for r in results] == ["PluginCrashedError"] * 9, results
            assert {r.exit_code for r in results if isinstance(r, PluginCrashedError)} == {-9}

    run(main())


def test_new_calls_wait_for_the_restart_within_their_timeout(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        slow_restart = RestartPolicy(backoff_base=1.5, jitter=0.0, min_uptime=0.0)
        async with await launch(cmd, restart=slow_restart, extra_env=leak_check.env) as plugin:
            first = plugin.pid
            os.kill(first, signal.SIGKILL)
            await _until_state(plugin, PluginState.BACKOFF)
            with pytest.raises(PluginCallError) as too_soon:  # 1.5 s backoff > 0.1 s timeout
                await plugin.client.get_operate_status(timeout=0.1)
            assert too_soon.value.code == "DEADLINE_EXCEEDED"
            assert too_soon.value.process_exited
            assert not isinstance(too_soon.value, PluginFatalError)
            assert (await plugin.client.get_manifest(timeout=60)).provider.name == "local-fixture"
            assert plugin.pid != first

    run(main())


def test_fatal_fails_fast(leak_check: LeakCheck) -> None:
    async def main() -> None:
        cmd = plugin_cmd("local_provider.py")
        no_budget = RestartPolicy(max_restarts=0)
        async with await launch(cmd, restart=no_budget, extra_env=leak_check.env) as plugin:
            os.kill(plugin.pid, signal.SIGKILL)
            await _until_state(plugin, PluginState.FATAL)
            with pytest.raises(PluginFatalError):
                await bounded(plugin.client.get_manifest())  # no timeout: must not wait

    run(main())


def test_an_idempotent_read_is_retried_on_the_restarted_plugin(
    leak_check: LeakCheck, tmp_path: Path
) -> None:
    async def main() -> None:
        env = {**leak_check.env, "AOG_FIXTURE_HANG_ONCE": str(tmp_path / "hung")}
        cmd = plugin_cmd("local_provider.py")
        async with await launch(cmd, restart=QUICK, extra_env=env) as plugin:
            first = plugin.pid
            call = asyncio.ensure_future(plugin.client.get_version(timeout=120))
            while not (tmp_path / "hung").exists():  # the read is inside the provider
                await asyncio.sleep(0.01)
            os.kill(first, signal.SIGKILL)
            version = await bounded(call)
            assert version.version
            assert plugin.pid != first

    run(main())


@pytest.mark.parametrize("stop", ["sigkill", "kill()"])
def test_a_read_with_no_plugin_to_retry_on_raises_the_crash(
    leak_check: LeakCheck, tmp_path: Path, stop: str
) -> None:
    # The retry of a crashed read found the plugin EXITED (no restarts) or STOPPING (a
    # kill()) and raised that PluginFatalError, losing the crash, as the sync client did.
    async def main() -> None:
        env = {**leak_check.env, "AOG_FIXTURE_HANG_ONCE": str(tmp_path / "hung")}
        cmd = plugin_cmd("local_provider.py")
        async with await launch(cmd, restart=RestartPolicy.never(), extra_env=env) as plugin:
            call = asyncio.ensure_future(plugin.client.get_version(timeout=120))
            while not (tmp_path / "hung").exists():  # the read is inside the provider
                await asyncio.sleep(0.01)
            if stop == "sigkill":
                os.kill(plugin.pid, signal.SIGKILL)
            else:
                await plugin.kill()
            with pytest.raises(PluginCrashedError) as crashed:
                await bounded(call)
            if stop == "sigkill":
                assert crashed.value.exit_code == -signal.SIGKILL
            else:
                assert crashed.value.stopped_by_host == "kill() called"

    run(main())


def test_a_call_on_a_link_closed_under_it_is_a_typed_error(leak_check: LeakCheck) -> None:
    # A link's channel is closed when its process exits (calls in flight fail at once); a
    # call that took the link a moment before got grpc.aio's bare UsageError("Channel is
    # closed."). Closing the channel by hand makes that moment last.
    async def main() -> None:
        cmd = plugin_cmd("echo_plugin.py")
        async with await launch(
            cmd, restart=RestartPolicy.never(), extra_env=leak_check.env
        ) as plugin:
            await plugin.client.health_check(timeout=30)
            link = await plugin.client._source.link(30)
            await link.channel.close(None)
            calls = (
                lambda: plugin.client.get_manifest(timeout=30),
                lambda: plugin.client.invoke_service_stream("chat", b"{}", timeout=30),
                lambda: plugin.client.invoke_service_bidi("chat", timeout=30),
            )
            for call in calls:
                with pytest.raises(
                    PluginCallError, match="channel to the plugin was closed"
                ) as info:
                    await bounded(call())
                assert info.value.code == "UNAVAILABLE"
                assert not info.value.process_exited  # its process still runs

    run(main())
