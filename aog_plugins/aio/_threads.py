"""Hand blocking process work to a thread and its result back to the event loop.

The process layer's threads keep doing what they do for the sync API (spawn, handshake,
supervision, the kill ladder); here a coroutine starts such work on a thread of its own
and awaits a future the thread completes with ``loop.call_soon_threadsafe``, so the loop
never blocks on a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from aog_plugins.errors import ConfigurationError
from aog_plugins.transport import start_thread

__all__ = ["cancelling", "in_thread", "not_cancelling", "on_loop"]

_T = TypeVar("_T")
_log = logging.getLogger("aog_plugins.aio")


async def in_thread(
    work: Callable[[], _T], *, name: str, orphan: Callable[[_T], None] | None = None
) -> _T:
    """Run ``work()`` on a new daemon thread and await its result.

    If the awaiting task is cancelled first, the work still finishes (a half-done start
    or kill would leak), and its result goes to ``orphan`` (e.g. kill the plugin nobody
    will receive) on a thread, never on the loop.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def give_away(value: _T) -> None:  # on the loop: nobody will receive ``value``
        if orphan is not None:
            start_thread(
                threading.Thread(target=_quietly, args=(orphan, value), name=name, daemon=True)
            )

    def succeed(value: _T) -> None:  # on the loop
        if not future.cancelled():
            future.set_result(value)
        else:
            give_away(value)

    def fail(error: BaseException) -> None:  # on the loop
        if not future.cancelled():
            future.set_exception(error)

    def run() -> None:
        try:
            value = work()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                loop.call_soon_threadsafe(fail, exc)
            return
        try:
            loop.call_soon_threadsafe(succeed, value)
        except RuntimeError:  # the loop is closed: nobody will receive the result
            if orphan is not None:
                _quietly(orphan, value)

    start_thread(threading.Thread(target=run, name=name, daemon=True))
    try:
        return await future
    except asyncio.CancelledError:
        # The task may be cancelled after the result arrived but before it woke up to
        # take it: the result is then nobody's either.
        if future.done() and not future.cancelled() and future.exception() is None:
            give_away(future.result())
        raise


def _quietly(orphan: Callable[[_T], None], value: _T) -> None:
    try:
        orphan(value)
    except Exception:
        _log.exception("cleaning up after a cancelled operation failed")


def cancelling() -> bool:
    """True when the current task has been asked to cancel (Python >= 3.11 can tell; on
    3.10 a CancelledError is then taken as the RPC's own)."""
    task = asyncio.current_task()
    count = getattr(task, "cancelling", None)
    return bool(count()) if callable(count) else False


def not_cancelling() -> bool:
    """True when the current task has surely not been asked to cancel (Python >= 3.11
    can tell; on 3.10 this is False): a CancelledError it sees then is the RPC's own."""
    task = asyncio.current_task()
    count = getattr(task, "cancelling", None)
    return callable(count) and not count()


def on_loop(loop: asyncio.AbstractEventLoop, what: str, bound: str, hint: str) -> None:
    """ConfigurationError when running on another event loop than ``loop``, the one
    ``what`` belongs to (``bound``: what of it is bound there; ``hint``: what to do);
    fine outside any loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is not loop:
        raise ConfigurationError(
            f"this {what} belongs to the event loop that {bound}: use it on that loop, {hint}"
        )
