"""How asyncio calls end: bidi messages sent after the end, a crash, a caller whose
messages fail, and a client used again after its plugin was killed (each found by
probing, each as the sync client behaves)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator

import pytest

from aog_plugins import RestartPolicy
from aog_plugins.aio import launch
from aog_plugins.errors import PluginCallError, PluginCrashedError
from aog_plugins.types import BidiMessage
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd

REMOTE = "remote_provider.py"


def test_a_message_sent_after_the_call_ended_is_dropped_and_a_crash_raises(
    leak_check: LeakCheck,
) -> None:
    async def main() -> None:
        plugin = await launch(
            plugin_cmd(REMOTE), restart=RestartPolicy.never(), extra_env=leak_check.env
        )
        async with plugin:
            client = plugin.client
            ended = await client.invoke_service_bidi("realtime", timeout=30)
            await ended.send(BidiMessage(data=b"bye", message_type=BidiMessage.CLOSE))
            assert [m.message_type async for m in ended] == [BidiMessage.CLOSE]
            await ended.send("late")  # the plugin ended the call: dropped

            expired = await client.invoke_service_bidi("realtime", timeout=0.3)
            with pytest.raises(PluginCallError, match="DEADLINE_EXCEEDED"):
                async for _ in expired:
                    pass
            await expired.send("late")  # the deadline passed: dropped
            await expired.close()

            crashed = await client.invoke_service_bidi("realtime", timeout=30)
            await crashed.send("hi")
            os.kill(plugin.pid, signal.SIGKILL)
            with pytest.raises(PluginCrashedError):
                async for _ in crashed:
                    pass
            with pytest.raises(PluginCrashedError):
                await crashed.send("late")

    run(main())


def test_a_failing_inbound_ends_what_is_sent_and_is_logged(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    def inbound() -> Iterator[BidiMessage]:
        yield BidiMessage(data=b"one")
        raise ValueError("the caller's source broke")

    async def main() -> list[bytes]:
        plugin = await launch(
            plugin_cmd("echo_plugin.py"), restart=RestartPolicy.never(), extra_env=leak_check.env
        )
        async with plugin:
            replies = await plugin.client.invoke_service_bidirectional(
                "chat", "c1", "", inbound(), timeout=120
            )

            async def read() -> list[bytes]:
                return [m.data async for m in replies]

            # Before, the plugin never saw the end and the replies waited for the deadline.
            return await asyncio.wait_for(read(), 60)

    with caplog.at_level(logging.ERROR, logger="aog_plugins.aio"):
        assert run(main()) == [b"one"]
    assert "the caller's source broke" in caplog.text


def test_a_client_used_before_kill_raises_plugin_fatal(leak_check: LeakCheck) -> None:
    from aog_plugins.errors import PluginFatalError

    async def main() -> None:
        plugin = await launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env)
        async with plugin:
            client = plugin.client
            await client.health_check()
        with pytest.raises(PluginFatalError, match="EXITED"):
            await client.health_check()

    run(main())
