"""One selector thread that reads every plugin's stdout/stderr pipes and watches its exit.

A host may run dozens of plugins; a reader thread per pipe would cost two or three threads
each. Instead all pipes and pidfds are registered with one ``selectors`` loop, started
lazily. That thread only reads: every callback (line parsing, logging handlers, exit
handling and what it triggers) runs on a :class:`Lane` of the callback's owner, so a slow
callback of one plugin never delays reading or exit detection for another.

Flow control: a pipe whose undelivered output passes ``_HIGH_WATER`` bytes is no longer
read until its lane has caught up, so a slow consumer slows the plugin (its pipe fills)
instead of growing the host's memory.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from aog_plugins.process._lane import Lane
from aog_plugins.transport import start_thread

__all__ = ["IOLoop", "Lane", "io_loop"]

ReadCallback = Callable[[bytes], None]
"""Called with each chunk read; with ``b""`` once, at end of file."""

_CHUNK = 256 * 1024
_HIGH_WATER = 1024 * 1024
_LOW_WATER = 256 * 1024


@dataclass(eq=False)
class _Reader:
    fd: int
    on_data: ReadCallback
    lane: Lane
    queued: int = 0
    paused: bool = False


class IOLoop:
    """A daemon thread multiplexing non-blocking reads over many file descriptors."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []
        self._readers: dict[int, _Reader] = {}  # touched on the loop thread only
        self._lanes: weakref.WeakKeyDictionary[object, Lane] = weakref.WeakKeyDictionary()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="aog-plugins-io", daemon=True)
        start_thread(self._thread)

    def lane_for(self, callback: Callable[..., object]) -> Lane:
        """The lane of ``callback``'s owner (a bound method's object), so one object's
        callbacks run in order; a plain function gets a lane of its own."""
        owner = getattr(callback, "__self__", None)
        if owner is None:
            return Lane("aog-plugins-callbacks")
        with self._lock:
            lane = self._lanes.get(owner)
            if lane is None:
                lane = self._lanes[owner] = Lane(f"aog-plugins-{type(owner).__name__}")
            return lane

    def add_reader(self, fd: int, on_data: ReadCallback, *, lane: Lane | None = None) -> None:
        """Read ``fd`` until EOF, passing chunks to ``on_data`` on ``lane`` (default: see
        :meth:`lane_for`); the loop closes ``fd`` at EOF."""
        os.set_blocking(fd, False)
        reader = _Reader(fd, on_data, lane or self.lane_for(on_data))

        def register() -> None:
            self._readers[fd] = reader
            self._selector.register(fd, selectors.EVENT_READ, reader)

        self._call_soon(register)

    def add_exit_watch(
        self, pidfd: int, on_exit: Callable[[], None], *, lane: Lane | None = None
    ) -> None:
        """Call ``on_exit`` once, on ``lane``, when ``pidfd`` (``os.pidfd_open``) becomes
        readable."""
        target = lane or self.lane_for(on_exit)

        def register() -> None:
            self._selector.register(pidfd, selectors.EVENT_READ, (target, on_exit))

        self._call_soon(register)

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` and close it (no callback is called)."""

        def drop() -> None:
            self._readers.pop(fd, None)
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                return  # dropped already (a pidfd that fired is closed): the number may be reused
            with contextlib.suppress(OSError):
                os.close(fd)

        self._call_soon(drop)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        if threading.current_thread() is self._thread:
            fn()
            return
        with self._lock:
            self._pending.append(fn)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    self._drain_wake()
                elif isinstance(key.data, tuple):  # a pidfd: fires once
                    self._selector.unregister(key.fd)
                    os.close(key.fd)
                    lane, on_exit = key.data
                    lane.submit(on_exit)
                else:
                    self._read(key.data)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            pending, self._pending = self._pending, []
        for fn in pending:
            fn()

    def _read(self, reader: _Reader) -> None:
        try:
            chunk = os.read(reader.fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._readers.pop(reader.fd, None)
            self._selector.unregister(reader.fd)
            os.close(reader.fd)
        else:
            with self._lock:
                reader.queued += len(chunk)
                pause = reader.queued > _HIGH_WATER
                reader.paused = reader.paused or pause
            if pause:
                self._selector.unregister(reader.fd)
        reader.lane.submit(lambda: self._deliver(reader, chunk))

    def _deliver(self, reader: _Reader, chunk: bytes) -> None:
        # On the reader's lane.
        try:
            reader.on_data(chunk)
        finally:
            with self._lock:
                reader.queued -= len(chunk)
                resume = reader.paused and reader.queued <= _LOW_WATER
                if resume:
                    reader.paused = False
            if resume:
                self._call_soon(lambda: self._resume(reader))

    def _resume(self, reader: _Reader) -> None:
        if self._readers.get(reader.fd) is reader:  # not removed meanwhile
            self._selector.register(reader.fd, selectors.EVENT_READ, reader)


_loop: IOLoop | None = None
_loop_lock = threading.Lock()


def io_loop() -> IOLoop:
    """The process-wide loop, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = IOLoop()
        return _loop
