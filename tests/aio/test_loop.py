"""The event loop keeps running while a plugin starts, crashes, restarts and is killed.

A ticker task counts loop turns; the process layer's own threads note the count at each
transition (``on_event`` runs there). Between two transitions of one operation the count
must move: had the loop been blocked by that operation, it could not have. How long the
loop stalls is measured by benchmarks/bench_aio.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import os
import signal

from aog_plugins import PluginEvent, PluginState, RestartPolicy
from aog_plugins.aio import launch
from tests.aio.conftest import run
from tests.process.conftest import LeakCheck, plugin_cmd

QUICK = RestartPolicy(backoff_base=0.05, jitter=0.0, min_uptime=0.0)
S = PluginState


class Ticker:
    """Counts how often the loop got to run it; ``seen`` the count at each transition."""

    def __init__(self) -> None:
        self.ticks = 0
        self.seen: list[tuple[PluginState, int]] = []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1

    def on_event(self, event: PluginEvent) -> None:  # on a process-layer thread
        self.seen.append((event.new, self.ticks))

    def at(self, state: PluginState, nth: int = 0) -> int:
        return [ticks for new, ticks in self.seen if new is state][nth]


def test_the_loop_runs_during_start_crash_restart_and_kill(leak_check: LeakCheck) -> None:
    ticker = Ticker()

    async def main() -> int:
        task = asyncio.ensure_future(ticker.run())
        await asyncio.sleep(0.01)
        before_start = ticker.ticks
        plugin = await launch(
            plugin_cmd("local_provider.py"),
            restart=QUICK,
            extra_env=leak_check.env,
            on_event=ticker.on_event,
        )
        first = plugin.pid
        os.kill(first, signal.SIGKILL)
        # Waits on the loop for the crash to be seen and the plugin restarted.
        manifest = await plugin.client.get_manifest(timeout=60)
        assert manifest.provider.name == "local-fixture"
        assert plugin.pid != first
        await plugin.kill()
        task.cancel()
        return before_start

    before_start = run(main())
    states = [new for new, _ in ticker.seen]
    assert states == [S.RUNNING, S.BACKOFF, S.STARTING, S.RUNNING, S.STOPPING, S.EXITED]
    moved = {
        "start": ticker.at(S.RUNNING) - before_start,
        "crash to restarted": ticker.at(S.RUNNING, 1) - ticker.at(S.BACKOFF),
        "kill": ticker.at(S.EXITED) - ticker.at(S.STOPPING),
    }
    assert all(ticks > 0 for ticks in moved.values()), moved
