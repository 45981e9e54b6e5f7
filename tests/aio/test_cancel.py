"""Cancelling the task that awaits a call cancels the RPC on the plugin: the watcher
plugin sees its call end as cancelled (it counts that on its side)."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from typing import Any

import pytest

from aog_plugins import RestartPolicy
from aog_plugins.aio import AsyncGRPCProviderClient, AsyncPlugin, launch
from aog_plugins.errors import PluginCallError
from tests.aio.conftest import run, watcher_cmd
from tests.process.conftest import LeakCheck


async def _state(client: AsyncGRPCProviderClient) -> dict[str, dict[str, int]]:
    reply: Any = json.loads(await client.invoke_service("state", b"{}", timeout=10))
    assert isinstance(reply, dict)
    return reply


async def _until(client: AsyncGRPCProviderClient, table: str, kind: str, count: int) -> None:
    """Poll the plugin's counters until ``table[kind]`` reaches ``count`` (a bound, not a
    speed requirement: a plugin that never sees the cancellation fails here)."""

    async def poll() -> None:
        while (await _state(client))[table][kind] < count:
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), 30)
    except asyncio.TimeoutError:
        pytest.fail(f"the plugin's {table}[{kind}] never reached {count}: {await _state(client)}")


async def _watcher(check: LeakCheck) -> AsyncPlugin:
    return await launch(watcher_cmd(), restart=RestartPolicy.never(), extra_env=check.env)


def test_cancelling_a_unary_call_cancels_it_on_the_plugin(leak_check: LeakCheck) -> None:
    async def main() -> None:
        async with await _watcher(leak_check) as plugin:
            client = plugin.client
            task = asyncio.ensure_future(client.invoke_service("wait", b"{}", timeout=60))
            await _until(client, "started", "unary", 1)
            assert (await _state(client))["cancelled"]["unary"] == 0
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _until(client, "cancelled", "unary", 1)

    run(main())


def test_cancelling_a_stream_reader_cancels_the_stream(leak_check: LeakCheck) -> None:
    async def main() -> None:
        async with await _watcher(leak_check) as plugin:
            client = plugin.client
            stream = await client.invoke_service_stream("wait", b"{}", timeout=60)

            async def read_all() -> None:
                async for _ in stream:
                    pass

            task = asyncio.ensure_future(read_all())
            await _until(client, "started", "stream", 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _until(client, "cancelled", "stream", 1)
            # Leaving an `async for` early (aclose) cancels too.
            second = await client.invoke_service_stream("wait", b"{}", timeout=60)
            async with second:
                assert json.loads((await second.__anext__()).data) == {"index": 0}
            await _until(client, "cancelled", "stream", 2)
            with pytest.raises(StopAsyncIteration):
                await second.__anext__()

    run(main())


def test_cancelling_a_bidi_reader_cancels_the_call(leak_check: LeakCheck) -> None:
    async def main() -> None:
        async with await _watcher(leak_check) as plugin:
            client = plugin.client
            call = await client.invoke_service_bidi("wait", timeout=60)
            await call.send("hello")
            assert (await call.__anext__()).data == b"hello"
            await _until(client, "started", "bidi", 1)
            task = asyncio.ensure_future(call.__anext__())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _until(client, "cancelled", "bidi", 1)

    run(main())


def test_a_stream_dropped_unfinished_is_cancelled_and_not_kept(leak_check: LeakCheck) -> None:
    """A stream garbage collected mid-way is cancelled on the plugin, and its call is not
    held by the client for the rest of the process's life."""

    async def main() -> None:
        async with await _watcher(leak_check) as plugin:
            client = plugin.client
            stream = await client.invoke_service_stream("wait", b"{}", timeout=60)
            assert json.loads((await stream.__anext__()).data) == {"index": 0}
            call = weakref.ref(stream.call)
            del stream
            gc.collect()
            await _until(client, "cancelled", "stream", 1)
            gc.collect()
            assert call() is None, "the cancelled call of a dropped stream is still held"

    run(main())


def test_a_cancelled_send_fails_the_reader_with_a_typed_error(leak_check: LeakCheck) -> None:
    """grpc.aio cancels a bidi call when a send on it is cancelled: the task reading the
    replies (not itself cancelled) used to get a bare CancelledError."""

    async def main() -> None:
        async with await _watcher(leak_check) as plugin:
            client = plugin.client
            call = await client.invoke_service_bidi("wait", timeout=60)
            await call.send("hello")
            assert (await call.__anext__()).data == b"hello"

            async def send_forever() -> None:
                while True:
                    await call.send(b"x" * 65536)

            sender = asyncio.ensure_future(send_forever())
            await asyncio.sleep(0)
            sender.cancel()  # it is in a send: its only await
            with pytest.raises(asyncio.CancelledError):
                await sender
            with pytest.raises(PluginCallError, match="cancelled on the host") as info:
                await call.__anext__()
            assert info.value.code == "CANCELLED"
            await _until(client, "cancelled", "bidi", 1)

    run(main())
