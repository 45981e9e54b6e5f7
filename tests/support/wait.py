"""Waiting in tests for what happens asynchronously: one polling loop for every test.

A wait that runs out is a test failure (AssertionError) that names what was awaited;
a bound is a ceiling for slow machines, never a speed requirement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil

__all__ = ["gone", "wait_gone", "wait_until"]

T = TypeVar("T")
POLL_INTERVAL = 0.02


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str | Callable[[], str]
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    After ``timeout`` seconds (checking once more at the end) raise AssertionError saying
    ``what`` was awaited; pass a callable to describe the state at that moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {detail}")
        time.sleep(POLL_INTERVAL)


def gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie that nobody reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: Iterable[int], timeout: float, what: str = "the processes to end") -> None:
    """Wait until every pid is :func:`gone`; the failure lists those still running."""
    pids = list(pids)

    def running() -> list[int]:
        return [p for p in pids if not gone(p)]

    wait_until(lambda: not running(), timeout, lambda: f"{what}; still running: {running()}")
