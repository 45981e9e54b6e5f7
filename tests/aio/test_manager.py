"""AsyncPluginManager over PluginManager: a directory of Go plugins laid out like AOG's,
used from asyncio: lazy start on the first call, stop and restart on the next call,
a crash mid-stream, events, and nothing left running after close()."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal

import psutil
import pytest

from aog_plugins import RestartPolicy
from aog_plugins.aio import AsyncPluginManager
from aog_plugins.errors import PluginCrashedError, UnknownPluginError
from aog_plugins.manager import ManagerEvent, PluginManager
from tests.aio.conftest import run
from tests.manager.conftest import Layout, go_layout, layout, leaks
from tests.support.leaks import LeakCheck

__all__ = ["go_layout", "layout", "leaks"]


def test_async_manager_starts_serves_stops_and_closes(go_layout: Layout, leaks: LeakCheck) -> None:
    go_layout.add_go("alpha")
    go_layout.add_go("beta")

    async def main() -> list[ManagerEvent]:
        manager = await AsyncPluginManager.open(go_layout.root, env=leaks.env, watch=False)
        async with manager:
            events = manager.events()
            seen: list[ManagerEvent] = []

            async def collect() -> None:
                async for event in events:
                    seen.append(event)

            collector = asyncio.ensure_future(collect())
            assert [e.name for e in manager.entries()] == ["alpha", "beta"]
            assert [e.name for e in manager.find(service="echo")] == ["alpha", "beta"]
            with pytest.raises(UnknownPluginError):
                manager.client("gamma")
            alpha, beta = manager.client("alpha"), manager.client("beta")
            assert manager.client("alpha") is alpha
            # First calls start both plugins (one start each, however many callers).
            replies = await asyncio.gather(
                *(c.invoke_service("echo", b'{"n": 1}', timeout=60) for c in [alpha, beta] * 20)
            )
            assert {json.loads(r)["request"] for r in replies} == {'{"n": 1}'}
            first = manager.entry("alpha").pid
            assert first is not None
            await manager.stop("alpha")
            assert (await alpha.get_manifest(timeout=60)).provider.name == "go-fixture-local"
            second = manager.entry("alpha").pid
            assert second not in (None, first)

            body = json.dumps({"chunks": 100000, "ms": 100}).encode()
            stream = await beta.invoke_service_stream("echo", body, timeout=600)
            await stream.__anext__()
            pid = manager.entry("beta").pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(PluginCrashedError):
                async for _ in stream:
                    pass
            assert (await beta.get_manifest(timeout=60)).provider.name == "go-fixture-local"
        await asyncio.wait_for(collector, 30)  # events() ends with close()

        # Taken after close(), events() ends at once (it used to wait forever).
        async def late() -> list[ManagerEvent]:
            return [event async for event in manager.events()]

        assert await asyncio.wait_for(late(), 30) == []
        return seen

    seen = run(main())
    kinds = [(e.kind, e.name) for e in seen]
    assert ("started", "alpha") in kinds
    assert ("stopped", "alpha") in kinds
    assert ("failed", "beta") in kinds or ("stopped", "beta") in kinds


def test_open_takes_the_manager_arguments() -> None:
    sync = inspect.signature(PluginManager).parameters
    mine = inspect.signature(AsyncPluginManager.open).parameters
    assert list(mine) == list(sync)
    assert [p.default for p in mine.values()] == [p.default for p in sync.values()]


def test_reload_moves_the_async_client_to_the_new_process(
    go_layout: Layout, leaks: LeakCheck
) -> None:
    go_layout.add_go("alpha")

    async def main() -> None:
        async with await AsyncPluginManager.open(
            go_layout.root, env=leaks.env, watch=False
        ) as manager:
            client = manager.client("alpha")
            await client.get_manifest(timeout=60)
            first = manager.entry("alpha").pid
            await manager.reload("alpha")
            second = manager.entry("alpha").pid
            assert second not in (None, first)
            assert first is not None
            assert not psutil.pid_exists(first) or psutil.Process(first).status() == "zombie"
            reply = await client.invoke_service("echo", b"{}", timeout=60)
            assert json.loads(reply)["request"] == "{}"
            assert manager.entry("alpha").pid == second

    run(main())


def test_after_fatal_the_next_call_starts_a_fresh_process(
    go_layout: Layout, leaks: LeakCheck
) -> None:
    """As docs/manager.md says for the sync client: FATAL, then a fresh start on next use."""
    go_layout.add_go("alpha")

    async def main() -> None:
        async with await AsyncPluginManager.open(
            go_layout.root, env=leaks.env, watch=False, restart=RestartPolicy(max_restarts=0)
        ) as manager:
            client = manager.client("alpha")
            await client.get_manifest(timeout=60)
            events = manager.events()
            pid = manager.entry("alpha").pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            async for event in events:
                if event.kind == "failed":
                    break
            assert (await client.get_manifest(timeout=60)).provider.name == "go-fixture-local"
            assert manager.entry("alpha").pid not in (None, pid)

    run(main())


def test_a_manager_used_on_another_loop_says_so(layout: Layout, leaks: LeakCheck) -> None:
    # Its events go to open()'s loop: on another one they never came, and nothing said why.
    from aog_plugins.errors import ConfigurationError

    layout.add("alpha")

    async def opened() -> AsyncPluginManager:
        return await AsyncPluginManager.open(layout.root, env=leaks.env, watch=False)

    manager = run(opened())

    async def elsewhere() -> None:
        with pytest.raises(ConfigurationError, match="event loop that open"):
            manager.events()
        with pytest.raises(ConfigurationError, match="event loop that open"):
            manager.client("alpha")
        with pytest.raises(ConfigurationError, match="event loop that open"):
            await manager.rescan()
        await manager.close()  # from any loop

    run(elsewhere())


def test_a_cancelled_close_still_ends_the_event_iterators(layout: Layout, leaks: LeakCheck) -> None:
    # The close went on in the background, but events() never ended: a task following
    # them waited forever.
    layout.add("alpha")

    async def main() -> None:
        manager = await AsyncPluginManager.open(layout.root, env=leaks.env, watch=False)
        events = manager.events()

        async def follow() -> list[str]:
            return [event.kind async for event in events]

        follower = asyncio.ensure_future(follow())
        closing = asyncio.ensure_future(manager.close())
        await asyncio.sleep(0)  # the close is under way, on its thread
        assert closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert isinstance(await asyncio.wait_for(follower, 30), list)  # it ended

    run(main())
