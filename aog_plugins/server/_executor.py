"""The executor of a plugin's own calls: few threads while calls are quick, one more
whenever a call has waited too long for one.

grpcio runs each call's handler on its executor. ``ThreadPoolExecutor`` starts a thread
whenever a call finds no idle one, so 8 concurrent callers get 8 threads even when every
call takes 100 microseconds; those threads then fight over the GIL, and a plugin answering
quick calls served 2,600 calls/s with 8 threads against 4,000 with one (a Go host, 8
callers, AutoMTLS). Here a call is queued when every thread is busy, and a watchdog adds a
thread for every call that has waited :data:`GROW_AFTER` seconds: quick calls share a
thread or two, while long calls (streams, a provider waiting on a remote API) still each
get their own thread, a moment later, so no call waits behind another for long and a call
that waits for another call of the same plugin cannot deadlock. Threads beyond the first
leave after :data:`LINGER` idle seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from aog_plugins.transport import start_thread

__all__ = ["GROW_AFTER", "LINGER", "GrowingExecutor"]

GROW_AFTER = 0.01
"""How long a queued call waits for a busy thread before the executor adds one."""
LINGER = 30.0
"""Idle seconds after which a thread beyond the first leaves."""

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Item = tuple[float, "Future[Any]", Callable[[], Any]]


class GrowingExecutor(ThreadPoolExecutor):
    """Runs submitted calls on at most ``max_workers`` threads (None: no limit), starting
    one only when the work needs it (see the module doc). A ``ThreadPoolExecutor`` by type
    only (what grpcio's server asks for): its own machinery is never used."""

    def __init__(
        self,
        max_workers: int | None,
        *,
        thread_name_prefix: str,
        grow_after: float = GROW_AFTER,
        linger: float = LINGER,
    ) -> None:
        super().__init__(1, thread_name_prefix=thread_name_prefix)  # idle: no thread made
        self._max = max_workers
        self._grow_after = grow_after
        self._linger = linger
        self._prefix = thread_name_prefix
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # workers wait here for calls
        self._state = threading.Condition(lock)  # the watchdog and shutdown() wait here
        self._queue: deque[_Item] = deque()
        self._workers = 0  # alive
        self._idle = 0  # alive and waiting for work
        self._watching = False
        self._shutdown = False
        self._count = 0

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.append((time.monotonic(), future, lambda: fn(*args, **kwargs)))
            if self._idle > len(self._queue) - 1:
                self._cond.notify()
            elif self._workers == 0 and self._start_worker_locked():
                pass
            elif not self._watching:
                # Never raises: grpcio's server calls submit() on its one serving thread,
                # which an exception here would end (the plugin deaf until killed).
                self._watching = True
                try:
                    start_thread(
                        threading.Thread(
                            target=self._watch, name=f"{self._prefix}-watch", daemon=True
                        )
                    )
                except RuntimeError:  # no thread now: the call waits, the next submit retries
                    self._watching = False
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False)
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[1].cancel()
            self._cond.notify_all()
            self._state.notify_all()
            while wait and (self._workers or self._watching):
                self._state.wait()

    def _start_worker_locked(self) -> bool:
        """Start a worker; False when the system has no thread to give now (a thread
        limit, no address space for its stack): the caller tries again later."""
        self._count += 1
        name = f"{self._prefix}_{self._count}"
        try:
            start_thread(threading.Thread(target=self._work, name=name, daemon=True))
        except RuntimeError:  # "can't start new thread"
            return False
        self._workers += 1
        return True

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                deadline = time.monotonic() + self._linger
                while not self._queue and not self._shutdown:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if self._workers > 1:
                            break  # one thread always stays
                        deadline = time.monotonic() + self._linger
                        continue
                    self._cond.wait(left)
                self._idle -= 1
                if not self._queue:  # shut down, or idle too long
                    self._workers -= 1
                    self._state.notify_all()
                    return
                _, future, call = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # the caller sees it on the future
                    future.set_exception(exc)
            del future, call

    def _watch(self) -> None:
        quiet_since: float | None = None
        step = min(self._grow_after / 2, 0.5)
        with self._state:
            while True:
                self._state.wait(step)  # shutdown() wakes it
                now = time.monotonic()
                if self._shutdown or (
                    not self._queue and quiet_since is not None and now - quiet_since > 1.0
                ):
                    self._watching = False  # a second without a queue: the next one restarts it
                    self._state.notify_all()
                    return
                if not self._queue:
                    quiet_since = quiet_since or now
                    continue
                quiet_since = None
                waited = sum(1 for queued, _, _ in self._queue if now - queued >= self._grow_after)
                room = waited - self._idle
                if self._max is not None:
                    room = min(room, self._max - self._workers)
                for _ in range(max(room, 0)):
                    if not self._start_worker_locked():
                        break  # out of threads for now: the next tick tries again

    @property
    def threads(self) -> int:
        """Worker threads alive now."""
        with self._cond:
            return self._workers
