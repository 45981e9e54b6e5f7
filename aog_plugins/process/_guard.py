"""Run a plugin's start where an exception raised in the caller cannot orphan the plugin.

Python raises KeyboardInterrupt (or whatever a signal handler raises) on the main thread
between any two steps, even inside ``subprocess.Popen`` after the fork, where the pid is
lost with the return value. So a start that ``launch()`` makes on the main thread runs on
a helper thread, which no signal handler interrupts, and the caller only waits for it. If
the wait is interrupted, :meth:`StartGuard.run` cancels the start before it lets the
exception go on: it kills the process the helper adopted (so a handshake or connect the
helper is waiting for fails at once), and waits until the helper has reaped it and
removed what it made; a start that had already finished is discarded the same way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from aog_plugins.errors import HostResourceError
from aog_plugins.process._events import wait_event
from aog_plugins.transport import start_thread

__all__ = ["StartCancelled", "StartGuard"]

T = TypeVar("T")


class StartCancelled(BaseException):
    """The caller of this start was interrupted: the helper stops and cleans up.

    A BaseException, like the KeyboardInterrupt it stands for, so that no ``except
    Exception`` on the way turns it into a start error."""


class _Signalable(Protocol):
    def signal_group(self, sig: int) -> None: ...


class StartGuard(Generic[T]):
    """One start, run by :meth:`run` on a helper thread; ``discard`` undoes a finished one."""

    def __init__(self, discard: Callable[[T], None]) -> None:
        self._discard = discard
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._cancelled = False
        self._process: _Signalable | None = None
        self._result: tuple[T] | None = None
        self._error: BaseException | None = None

    # ---- the helper's side ------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`StartCancelled` if the caller has given up."""
        with self._lock:
            if self._cancelled:
                raise StartCancelled

    def adopt(self, process: _Signalable) -> None:
        """Let a cancel kill ``process`` (the helper still reaps it); raise
        :class:`StartCancelled` if the caller has given up already."""
        with self._lock:
            self._process = process
            if self._cancelled:
                raise StartCancelled

    def disown(self) -> None:
        """The start is complete: a cancel from now on discards its result instead (a
        SIGKILL now would only make the plugin's supervisor restart it)."""
        with self._lock:
            self._process = None

    def abandon(self) -> None:
        """Give the start up from another thread (its owner is closing): the process it
        adopted is killed now, so a handshake or connect waited for fails at once, and a
        start that has not spawned yet raises :class:`StartCancelled` at its next check.
        A start that completes anyway returns its plugin: the owner discards it."""
        with self._lock:
            self._cancelled = True
            if self._process is not None:
                self._process.signal_group(signal.SIGKILL)

    # ---- the caller's side ------------------------------------------------------------
    def run(self, work: Callable[[StartGuard[T]], T]) -> T:
        """``work(self)`` on a helper thread; its result, or its exception re-raised.
        Off the main thread ``work(self)`` simply runs here.

        Whatever interrupts the caller meanwhile propagates only after the start is
        undone (unless a second interrupt cuts that short: then the helper finishes the
        cleanup on its own)."""
        if threading.current_thread() is not threading.main_thread():
            return work(self)  # no signal handler raises on this thread: nothing to guard
        helper = threading.Thread(
            target=self._work, args=(work,), name="aog-plugins-start", daemon=True
        )
        try:
            try:
                start_thread(helper)
            except RuntimeError as exc:  # "can't start new thread"
                raise HostResourceError(
                    f"cannot start a thread to start the plugin in: {exc}",
                    diagnosis="the host is out of threads or memory; free some and retry",
                ) from exc
            wait_event(self._done, None)
            with self._lock:
                error, result = self._error, self._result
            if error is not None:
                raise error
            assert result is not None
            return result[0]
        except BaseException:
            self._cancel(helper)
            raise

    def _work(self, work: Callable[[StartGuard[T]], T]) -> None:
        try:
            result = work(self)
        except BaseException as exc:
            with self._lock:
                self._error = exc
                self._process = None  # the failed start has reaped it
            self._done.set()
            return
        with self._lock:
            keep = not self._cancelled
            if keep:
                self._result = (result,)
        try:
            if not keep:
                self._discard(result)  # the caller gave up while it finished
        finally:
            self._done.set()

    def _cancel(self, helper: threading.Thread) -> None:
        with self._lock:
            self._cancelled = True
            result, self._result = self._result, None
            if self._process is not None:
                self._process.signal_group(signal.SIGKILL)  # the helper sees it die, cleans up
        if result is not None:
            self._discard(result[0])  # finished before the cancel: ours to undo
            return
        # Until the helper is done (it checks for the cancel before it spawns anything,
        # so one that has not started running yet will do nothing).
        while not wait_event(self._done, 0.5):
            if not helper.is_alive():
                break
