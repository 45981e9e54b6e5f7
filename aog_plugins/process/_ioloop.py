"""One selector thread that reads every plugin's stdout/stderr pipes and watches its exit.

A host may run dozens of plugins; a reader thread per pipe would cost two or three threads
each. Instead all pipes and pidfds are registered with one ``selectors`` loop, started
lazily, and callbacks run on that thread (they must be quick and must not block).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Callable

__all__ = ["IOLoop", "io_loop"]

ReadCallback = Callable[[bytes], None]
"""Called with each chunk read; with ``b""`` once, at end of file."""

_CHUNK = 256 * 1024


class IOLoop:
    """A daemon thread multiplexing non-blocking reads over many file descriptors."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="aog-plugins-io", daemon=True)
        self._thread.start()

    def add_reader(self, fd: int, on_data: ReadCallback) -> None:
        """Read ``fd`` until EOF, passing chunks to ``on_data``; the loop closes ``fd`` at EOF."""
        os.set_blocking(fd, False)

        def register() -> None:
            self._selector.register(fd, selectors.EVENT_READ, on_data)

        self._call_soon(register)

    def add_exit_watch(self, pidfd: int, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit`` once when ``pidfd`` (from ``os.pidfd_open``) becomes readable."""

        def fire(_: bytes) -> None:
            on_exit()

        def register() -> None:
            self._selector.register(pidfd, selectors.EVENT_READ, ("pidfd", fire))

        self._call_soon(register)

    def remove(self, fd: int) -> None:
        """Stop watching ``fd`` and close it (no callback is called)."""

        def drop() -> None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
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
                    continue
                self._dispatch(key)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            pending, self._pending = self._pending, []
        for fn in pending:
            fn()

    def _dispatch(self, key: selectors.SelectorKey) -> None:
        fd = key.fd
        data = key.data
        if isinstance(data, tuple):  # a pidfd: fires once
            self._selector.unregister(fd)
            os.close(fd)
            self._safe(data[1], b"")
            return
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._selector.unregister(fd)
            os.close(fd)
        self._safe(data, chunk)

    @staticmethod
    def _safe(callback: ReadCallback, chunk: bytes) -> None:
        # A failing callback must not kill the loop every plugin depends on.
        try:
            callback(chunk)
        except Exception:  # pragma: no cover - reported, never raised into the loop
            import logging

            logging.getLogger("aog_plugins.process").exception("I/O callback failed")


_loop: IOLoop | None = None
_loop_lock = threading.Lock()


def io_loop() -> IOLoop:
    """The process-wide loop, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = IOLoop()
        return _loop
