"""The executor of a plugin's own calls (aog_plugins/server/_executor.py): quick calls from
many callers share a thread, a call stuck behind a busy thread gets one of its own, and
``max_workers`` still caps them. Real threads throughout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aog_plugins.server._executor import GrowingExecutor
from aog_plugins.server._pools import ServerThreads
from tests.support.wait import wait_until


def _names_of_quick_calls(pool: GrowingExecutor, callers: int, calls: int) -> set[str]:
    seen: set[str] = set()
    gate = threading.Barrier(callers)

    def caller() -> None:
        gate.wait()
        for _ in range(calls):
            seen.add(pool.submit(lambda: threading.current_thread().name).result(timeout=30))

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


def test_quick_calls_from_eight_callers_share_one_thread() -> None:
    # A thread per concurrent caller (ThreadPoolExecutor's rule) only adds GIL contention
    # for calls this short; they queue for the one thread instead. (grow_after is long
    # here so that a slow CI machine cannot make a queued call look stuck.)
    pool = GrowingExecutor(None, thread_name_prefix="quick", grow_after=60.0)
    try:
        assert len(_names_of_quick_calls(pool, callers=8, calls=200)) == 1
    finally:
        pool.shutdown()


def test_the_servers_pool_for_plugin_calls_is_the_growing_one() -> None:
    threads = ServerThreads(None)
    assert isinstance(threads.calls, GrowingExecutor)
    threads.calls.shutdown()
    threads.plumbing.shutdown()


def test_a_call_behind_a_stuck_one_gets_a_thread_of_its_own() -> None:
    pool = GrowingExecutor(None, thread_name_prefix="stuck")
    release = threading.Event()
    try:
        stuck = pool.submit(release.wait, 60)
        quick = pool.submit(lambda: "done")
        assert quick.result(timeout=30) == "done"  # not after the stuck call: it never ends
        assert not stuck.done()
        assert pool.threads == 2
    finally:
        release.set()
        pool.shutdown()


def test_a_call_that_waits_for_another_call_does_not_deadlock() -> None:
    pool = GrowingExecutor(None, thread_name_prefix="nested")
    try:
        outer = pool.submit(lambda: pool.submit(lambda: 42).result(timeout=30))
        assert outer.result(timeout=30) == 42
    finally:
        pool.shutdown()


def test_max_workers_caps_the_threads() -> None:
    pool = GrowingExecutor(2, thread_name_prefix="capped")
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def block(i: int) -> None:
        with lock:
            started.append(i)
        release.wait(60)

    try:
        futures = [pool.submit(block, i) for i in range(3)]
        wait_until(lambda: len(started) == 2, 30.0, "two calls to start")
        # Long past the growth delay, the third still waits: the cap holds.
        assert not release.wait(0.3)
        assert len(started) == 2
        assert pool.threads == 2
        release.set()
        for f in futures:
            f.result(timeout=30)
        assert sorted(started) == [0, 1, 2]
    finally:
        release.set()
        pool.shutdown()


def test_idle_threads_beyond_the_first_leave() -> None:
    pool = GrowingExecutor(None, thread_name_prefix="linger", linger=0.1)
    release = threading.Event()
    try:
        blocked = [pool.submit(release.wait, 60) for _ in range(3)]
        wait_until(lambda: pool.threads == 3, 30.0, "a thread for each blocked call")
        release.set()
        for f in blocked:
            f.result(timeout=30)
        wait_until(lambda: pool.threads == 1, 30.0, "the extra threads to leave")
        assert pool.submit(lambda: 1).result(timeout=30) == 1
    finally:
        release.set()
        pool.shutdown()


def test_errors_reach_the_caller_and_shutdown_ends_the_threads() -> None:
    pool = GrowingExecutor(None, thread_name_prefix="errors")

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.submit(fail).result(timeout=30)
    assert pool.submit(lambda: "still serving").result(timeout=30) == "still serving"
    pool.shutdown(wait=True)
    assert pool.threads == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("errors")]
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


_NO_THREADS_FOR_A_WHILE = """
import resource, sys, threading, psutil
from aog_plugins.server._executor import GrowingExecutor

pool = GrowingExecutor(None, thread_name_prefix="starved")
release = threading.Event()
a = pool.submit(release.wait, 120)
b = pool.submit(release.wait, 120)  # starts the watchdog, which gives it a thread
while pool.threads < 2:
    release.wait(0.01)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
# No room for one more thread stack (8 MiB): the next threads cannot start.
resource.setrlimit(resource.RLIMIT_AS, (psutil.Process().memory_info().vms + (4 << 20), hard))
try:
    c = pool.submit(release.wait, 120)
    d = pool.submit(release.wait, 120)
    release.wait(0.5)  # (the watchdog tries to start threads for them, and cannot)
finally:
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
e = pool.submit(lambda: "quick")
print(e.result(timeout=30), pool.threads, flush=True)
release.set()
pool.shutdown()
"""


def test_a_pool_that_could_not_start_threads_grows_again_once_it_can() -> None:
    """A real thread-start failure (address space full), in a process of its own: it
    used to kill the watchdog (or raise from submit()), so no call ever got a thread of
    its own again and a quick call waited behind the stuck ones for good."""
    done = subprocess.run(
        [sys.executable, "-c", _NO_THREADS_FOR_A_WHILE],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    answer, threads = done.stdout.split()
    assert answer == "quick"
    assert int(threads) >= 5  # a, b, c, d and e: one each
