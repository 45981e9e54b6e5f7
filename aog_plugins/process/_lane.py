"""A lane: a serial queue of callables run in order on a thread that exists only while
there is work.

Each plugin gets its own lanes, so a slow user callback (``on_event``, an output callback,
a logging handler) delays only that plugin's deliveries, never the shared I/O thread or
another plugin. An idle lane costs no thread: its worker exits after ``linger`` seconds
without work and the next :meth:`Lane.submit` starts a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from aog_plugins.transport import signals_unblocked, start_thread

__all__ = ["Lane"]

_log = logging.getLogger("aog_plugins.process")
_SLICE = 0.1


class Lane:
    """Runs submitted callables one at a time, in submission order, off the caller's thread.

    A callable that raises is logged and the lane goes on. Thread-safe.
    """

    def __init__(self, name: str, *, linger: float = 2.0) -> None:
        self.name = name
        self._linger = linger
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Callable[[], None]] = deque()
        self._worker: threading.Thread | None = None
        self._submitted = 0
        self._done = 0
        self.pending_bytes = 0
        """Bytes of output queued and not yet delivered (for the I/O loop's flow control)."""

    def submit(self, fn: Callable[[], None]) -> None:
        """Queue ``fn``; it runs after everything submitted before it."""
        with self._cond:
            self._queue.append(fn)
            self._submitted += 1
            worker = self._worker
            if worker is not None and worker.is_alive():  # not alive: we were forked
                self._cond.notify_all()  # the worker, maybe among drain() waiters
                return
            worker = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._worker = worker
            start_thread(worker)

    def on_lane(self) -> bool:
        """True when called from one of this lane's callables."""
        return threading.current_thread() is self._worker

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far has run; False on timeout. Returns at
        once (True) when called from the lane itself, which cannot wait for itself."""
        if self.on_lane():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            # In slices: a blocked lock wait is not interrupted by a signal that the kernel
            # hands to another thread, so the main thread must wake for its handlers to run.
            while self._done < target:
                left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self._linger)
                if not self._queue:
                    if self._worker is me:
                        self._worker = None
                    return
                fn = self._queue.popleft()
            try:
                with signals_unblocked():  # user code: the mask of any app thread
                    fn()
            except Exception:
                _log.exception("callback on %s failed", self.name)
            finally:
                with self._cond:
                    self._done += 1
                    self._cond.notify_all()
