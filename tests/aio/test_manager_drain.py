"""Zero-downtime replacement for asyncio callers: the manager counts aio calls too
(``PluginManager.track_call``), so a replacement drains them on the old process and new
aio calls go to the new one. The sync versions are in tests/manager/test_hotplug.py."""

from __future__ import annotations

import asyncio
import json

import psutil

from aog_plugins import PluginState
from aog_plugins.aio import AsyncGRPCProviderClient, AsyncPluginManager
from aog_plugins.errors import AogPluginsError
from tests.aio.conftest import run
from tests.manager.conftest import EventLog, Layout, go_layout, layout, leaks
from tests.support.leaks import LeakCheck

__all__ = ["go_layout", "layout", "leaks"]


def pid_of(reply: bytes) -> int:
    value = json.loads(reply)["pid"]
    assert isinstance(value, int)
    return value


class AsyncCaller:
    """Tasks calling a plugin back to back, recording every reply and failure."""

    def __init__(self, client: AsyncGRPCProviderClient, service: str, request: bytes) -> None:
        self.client = client
        self.service = service
        self.request = request
        self.replies: list[bytes] = []
        self.failures: list[BaseException] = []
        self._stop = False
        self._tasks: list[asyncio.Task[None]] = []

    async def _run(self, index: int) -> None:
        await asyncio.sleep(index * 0.4)  # staggered: some call has always just started
        while not self._stop:
            try:
                reply = await self.client.invoke_service(self.service, self.request, timeout=30)
            except AogPluginsError as exc:
                self.failures.append(exc)
            else:
                self.replies.append(reply)

    async def more(self, count: int) -> None:
        """Wait until ``count`` more calls succeeded (bounded: 60 s)."""
        target = len(self.replies) + count
        for _ in range(6000):
            if len(self.replies) >= target:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} more calls did not succeed: failures {self.failures}")

    async def __aenter__(self) -> AsyncCaller:
        self._tasks = [asyncio.ensure_future(self._run(i)) for i in range(8)]
        await self.more(5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop = True
        await asyncio.gather(*self._tasks)


def test_replace_while_aio_tasks_call_loses_no_call(layout: Layout, leaks: LeakCheck) -> None:
    layout.add("p", version="1.0.0")
    events = EventLog()

    async def main() -> tuple[int, AsyncCaller]:
        async with await AsyncPluginManager.open(
            layout.root, env=leaks.env, watch=False, on_event=events
        ) as manager:
            # Calls are always in flight, each longer than a Python plugin's own grace for
            # calls in flight when told to stop (1 s) and than the kill grace (2 s).
            async with AsyncCaller(manager.client("p"), "chat", b'{"ms": 3000}') as caller:
                old_pid = pid_of(caller.replies[-1])
                for version in ("2.0.0", "3.0.0"):
                    layout.add("p", version=version)
                    await manager.rescan()  # returns once the old process is drained, stopped
                    await caller.more(8)
            assert manager.entry("p").state is PluginState.RUNNING
            return old_pid, caller

    old_pid, caller = run(main())
    assert caller.failures == []
    versions = [json.loads(r)["version"] for r in caller.replies]
    assert versions[0] == "1.0.0"
    assert {"2.0.0", "3.0.0"} <= set(versions)
    assert versions[-1] == "3.0.0"
    # In order: once a call saw the new build, no later call went to the old one.
    assert versions == sorted(versions)
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"
    kinds = events.kinds("p")
    assert kinds.count("replaced") == 2
    assert "failed" not in kinds


def test_replace_a_go_plugin_while_aio_tasks_call(go_layout: Layout, leaks: LeakCheck) -> None:
    go_layout.add_go("g")

    async def main() -> tuple[int | None, int | None, AsyncCaller]:
        async with await AsyncPluginManager.open(
            go_layout.root, env=leaks.env, watch=False
        ) as manager:
            async with AsyncCaller(manager.client("g"), "echo", b"x") as caller:
                old = manager.entry("g").pid
                go_layout.add_go("g")  # a fresh copy of the binary renamed over the old one
                await manager.rescan()
                await caller.more(20)
            return old, manager.entry("g").pid, caller

    old, new, caller = run(main())
    assert caller.failures == []
    assert new not in (None, old)


def test_an_aio_call_in_flight_finishes_on_the_old_process(
    layout: Layout, leaks: LeakCheck
) -> None:
    layout.add("p", version="1.0.0")
    events = EventLog()

    async def main() -> tuple[int, bytes, bytes]:
        async with await AsyncPluginManager.open(
            layout.root, env=leaks.env, watch=False, on_event=events
        ) as manager:
            client = manager.client("p")
            old_pid = pid_of(await client.invoke_service("chat", b"{}"))
            slow = asyncio.ensure_future(client.invoke_service("chat", b'{"ms": 3000}'))
            await asyncio.sleep(0.3)  # the slow call is under way on the old process
            layout.add("p", version="2.0.0")
            rescan = asyncio.ensure_future(manager.rescan())  # drains, then stops the old
            # While the old process drains, new calls already go to the new one.
            while "replaced" not in events.kinds("p"):
                await asyncio.sleep(0.01)
            during = await client.invoke_service("chat", b"{}")
            assert not rescan.done()
            await rescan
            return old_pid, await slow, during

    old_pid, slow, during = run(main())
    assert pid_of(slow) == old_pid
    assert json.loads(slow)["version"] == "1.0.0"
    assert json.loads(during)["version"] == "2.0.0"
    assert pid_of(during) != old_pid
    kinds = events.kinds("p")
    assert kinds.index("replaced") < kinds.index("stopped")


def test_an_aio_stream_in_flight_finishes_on_the_old_go_process(
    go_layout: Layout, leaks: LeakCheck
) -> None:
    go_layout.add_go("g")
    events = EventLog()

    async def main() -> tuple[list[bytes], int | None]:
        async with await AsyncPluginManager.open(
            go_layout.root, env=leaks.env, watch=False, on_event=events
        ) as manager:
            client = manager.client("g")
            stream = await client.invoke_service_stream(
                "slow", json.dumps({"chunks": 15, "ms": 200}).encode(), timeout=120
            )
            chunks = [(await stream.__anext__()).data]  # under way on the old process
            old = manager.entry("g").pid
            go_layout.add_go("g")
            rescan = asyncio.ensure_future(manager.rescan())
            async for chunk in stream:
                chunks.append(chunk.data)
            await rescan
            assert manager.entry("g").pid != old
            assert (await client.invoke_service("echo", b"x")) != b""
            return chunks, old

    chunks, old = run(main())
    assert [c for c in chunks if b"chunk" in c] == [
        f'data: {{"index":{i},"text":"chunk {i}"}}\n\n'.encode() for i in range(15)
    ]
    stopped = events.of("stopped", "g")
    assert stopped[0].pid == old  # (the second: the new process, at close)
    assert "calls still in flight" not in stopped[0].reason
