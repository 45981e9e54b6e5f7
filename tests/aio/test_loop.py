"""The event loop keeps running while a plugin starts, crashes, restarts and is killed:
a ticker task must advance during each of those awaits (a blocking implementation
freezes it: zero ticks). How long the loop stalls is measured by benchmarks/bench_aio.py,
not asserted here."""

from __future__ import annotations

import asyncio
import os
import signal

from aog_plugins import PluginState, RestartPolicy
from aog_plugins.aio import launch
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd

QUICK = RestartPolicy(backoff_base=0.05, jitter=0.0, min_uptime=0.0)


class Ticker:
    """Counts how often the loop got to run it."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1


def test_the_loop_runs_during_start_crash_restart_and_kill(leak_check: LeakCheck) -> None:
    async def main() -> dict[str, int]:
        ticker = Ticker()
        task = asyncio.ensure_future(ticker.run())
        await asyncio.sleep(0.01)
        during: dict[str, int] = {}

        before = ticker.ticks
        plugin = await launch(
            plugin_cmd("local_provider.py"), restart=QUICK, extra_env=leak_check.env
        )
        during["start"] = ticker.ticks - before

        first = plugin.pid
        before = ticker.ticks
        os.kill(first, signal.SIGKILL)
        # Waits on the loop for the crash to be seen and the plugin restarted.
        manifest = await plugin.client.get_manifest(timeout=60)
        during["crash and restart"] = ticker.ticks - before
        assert manifest.provider.name == "local-fixture"
        assert plugin.pid != first

        before = ticker.ticks
        await plugin.kill()
        during["kill"] = ticker.ticks - before
        assert plugin.plugin.state is PluginState.EXITED
        task.cancel()
        return during

    during = run(main())
    assert all(ticks > 0 for ticks in during.values()), during
