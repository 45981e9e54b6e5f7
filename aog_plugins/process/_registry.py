"""Kill every live plugin at interpreter exit and on SIGTERM/SIGINT.

Signal handlers are chained, not replaced: after our cleanup the previous handler runs
(a Python callable is called; ``SIG_DFL`` is restored and the signal re-raised).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

__all__ = ["kill_all", "register", "unregister"]


class _Killable(Protocol):
    def kill(self, grace: float | None = None) -> None: ...


_live: dict[int, _Killable] = {}
_lock = threading.Lock()
_installed = False
_EXIT_GRACE = 1.0


def register(plugin: _Killable) -> None:
    """Track ``plugin`` until it is unregistered; install the exit hooks once."""
    with _lock:
        _live[id(plugin)] = plugin
    _install()


def unregister(plugin: _Killable) -> None:
    """Stop tracking ``plugin`` (it has been killed)."""
    with _lock:
        _live.pop(id(plugin), None)


def kill_all(grace: float = _EXIT_GRACE) -> None:
    """Kill every tracked plugin, concurrently."""
    with _lock:
        plugins = list(_live.values())
    threads = [
        threading.Thread(target=p.kill, args=(grace,), name="aog-plugins-kill-all") for p in plugins
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    atexit.register(kill_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            _chain(sig)


def _chain(sig: signal.Signals) -> None:
    previous = signal.getsignal(sig)

    def handler(signum: int, frame: FrameType | None) -> None:
        kill_all()
        if callable(previous):
            prev: Callable[[int, FrameType | None], object] = previous
            prev(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(sig, handler)
