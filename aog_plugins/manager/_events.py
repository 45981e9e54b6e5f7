"""Deliver manager events in order on one thread of their own, never on the I/O thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from aog_plugins.manager._entry import ManagerEvent
from aog_plugins.transport import signals_unblocked, start_thread

__all__ = ["EventBus"]

_log = logging.getLogger("aog_plugins.manager")
_STOP = object()


class EventBus:
    """Logs every event at once and hands it to ``callback`` from a dispatcher thread, in
    the order they were posted. A failing callback is logged and does not stop delivery."""

    def __init__(self, callback: Callable[[ManagerEvent], None] | None) -> None:
        self._callback = callback
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def post(self, event: ManagerEvent) -> None:
        level = logging.WARNING if event.kind == "failed" else logging.INFO
        _log.log(level, "%s", event, extra={"plugin_event": event.kind})
        if self._callback is None:
            return
        with self._lock:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="aog-plugins-manager-events", daemon=True
                )
                start_thread(self._thread)
            self._queue.put(event)

    def on_thread(self) -> bool:
        """True when called from a callback (the dispatcher thread)."""
        return threading.current_thread() is self._thread

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, then stop the thread (not waiting on itself)."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        assert self._callback is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, ManagerEvent)
            try:
                with signals_unblocked():  # user code: the mask of any app thread
                    self._callback(item)
            except Exception:
                _log.exception("the manager's on_event callback failed on %s", item)
