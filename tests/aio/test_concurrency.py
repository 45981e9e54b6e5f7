"""Many tasks on one plugin at once: every task gets its own answer, over a Python
plugin and over a Go plugin behind the AutoMTLS relay."""

from __future__ import annotations

import asyncio
import json

import pytest

from aog_plugins import RestartPolicy
from aog_plugins.aio import AsyncGRPCProviderClient, launch
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.gobuild import go_binaries

TASKS = 400
STREAMS = 16


async def _unary(client: AsyncGRPCProviderClient, service: str, i: int) -> bool:
    body = json.dumps({"messages": [{"content": f"task-{i}"}], "task": i}).encode()
    reply = await client.invoke_service(service, body, timeout=120)
    return f"task-{i}" in reply.decode()


async def _stream(client: AsyncGRPCProviderClient, service: str, body: bytes) -> int:
    stream = await client.invoke_service_stream(service, body, timeout=120)
    return len([chunk async for chunk in stream])


@pytest.mark.parametrize("lang", ["py", "go"])
def test_many_concurrent_tasks_on_one_plugin(leak_check: LeakCheck, lang: str) -> None:
    if lang == "py":
        cmd, tls, service = plugin_cmd("local_provider.py"), False, "chat"
        stream_body, chunks = json.dumps({"messages": [{"content": "a b c"}]}).encode(), 5
    else:
        cmd, tls, service = [str(go_binaries().aog_provider)], True, "echo"
        stream_body, chunks = json.dumps({"chunks": 3}).encode(), 4

    async def main() -> None:
        async with await launch(
            cmd, auto_mtls=tls, restart=RestartPolicy.never(), extra_env=leak_check.env
        ) as plugin:
            client = plugin.client
            unary = [_unary(client, service, i) for i in range(TASKS)]
            streams = [_stream(client, service, stream_body) for _ in range(STREAMS)]
            results = await asyncio.gather(*unary, *streams)
            assert results[:TASKS] == [True] * TASKS
            assert results[TASKS:] == [chunks] * STREAMS
            assert plugin.plugin.state.value == "RUNNING"

    run(main())


def test_one_stream_read_from_two_tasks(leak_check: LeakCheck) -> None:
    # grpc.aio fails a read made while another task's read waits with a bare
    # "RuntimeError: anext(): asynchronous generator is already running": reads now take
    # turns, each chunk once.
    async def main() -> None:
        async with await launch(
            plugin_cmd("echo_plugin.py"), restart=RestartPolicy.never(), extra_env=leak_check.env
        ) as plugin:
            request = json.dumps({"chunks": 10, "interval": 0.05}).encode()
            stream = await plugin.client.invoke_service_stream("chat", request, timeout=60)

            async def read() -> list[bytes]:
                return [chunk.data async for chunk in stream]

            first, second = await asyncio.wait_for(asyncio.gather(read(), read()), 60)
            chunks = sorted(first + second)
            assert chunks[1:] == [json.dumps({"index": i}).encode() for i in range(10)]
            assert chunks[0] == b""  # the final chunk

    run(main())
