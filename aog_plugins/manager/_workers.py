"""The manager's short-lived worker threads (starts, swaps, drops, idle stops), so that
``rescan()`` and ``close()`` can wait for every one of them."""

from __future__ import annotations

import threading
from collections.abc import Callable

from aog_plugins.transport import start_thread

__all__ = ["Workers"]


class Workers:
    """Runs each task on a thread of its own and knows which still run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()

    def spawn(self, target: Callable[..., object], *args: object) -> threading.Thread:
        """Run ``target(*args)`` on a new thread; returns it (started)."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name="aog-plugins-manager", daemon=True)
        with self._lock:
            self._threads.add(thread)
        start_thread(thread)
        return thread

    def join(self) -> None:
        """Wait until every worker has ended, those they spawn included (a worker that
        calls this does not wait for itself)."""
        while True:
            with self._lock:
                workers = [t for t in self._threads if t is not threading.current_thread()]
            if not workers:
                return
            for thread in workers:
                thread.join()
