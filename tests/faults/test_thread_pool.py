"""Plugins started from pool threads outlive those threads (no PR_SET_PDEATHSIG).

Each is tracked by the reaper while it runs and untracked once killed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aog_plugins import launch
from aog_plugins.process._reaper import reaper
from tests.faults.conftest import gone, plugin_cmd, wait_gone
from tests.process.conftest import LeakCheck

COUNT = 50
WORKERS = 8


def test_plugins_from_a_shut_down_pool_live_on_and_die_cleanly(leak_check: LeakCheck) -> None:
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="aogp-test-pool") as pool:
        futures = [
            pool.submit(
                launch, plugin_cmd("echo_plugin.py"), extra_env=leak_check.env, start_timeout=90
            )
            for _ in range(COUNT)
        ]
    # Every thread that started a plugin has exited now.
    plugins = [f.result() for f in futures if f.exception() is None]
    errors = [f.exception() for f in futures if f.exception() is not None]
    pids = [p.pid for p in plugins]
    try:
        assert not errors, f"{len(errors)} launches failed, the first: {errors[0]!r}"
        assert not [pid for pid in pids if gone(pid)], "a plugin died with its pool thread"
        for plugin in plugins:
            plugin.ping()
        assert set(pids) <= set(reaper().tracked_pids()), "spawn() did not track its plugins"
    finally:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda p: p.kill(grace=2.0), plugins))
    wait_gone(pids, 5.0, "the killed plugins to end")
    assert not set(reaper().tracked_pids()) & set(pids), "killing a plugin did not untrack it"
