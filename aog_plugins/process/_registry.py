"""Stop every live plugin at interpreter exit, and on SIGTERM (and SIGINT when it would
otherwise end the process).

A signal handler must never block: the main thread it interrupts may hold the very lock
a kill needs (Ctrl-C during ``kill()``). So the handler only writes the signal number to a
pipe; a "killer" thread reads it and stops the plugins, while the handler goes straight on
to the previous one (chained, never replaced):

- a Python callable (an application's handler) is called at once;
- ``SIG_DFL`` (the process would die): once the killer thread is done, the signal is sent
  again and this time the default action runs; a second signal meanwhile ends the process
  at once (the reaper then kills the plugins);
- SIGINT with Python's own handler (``KeyboardInterrupt``) is left alone: the exception
  unwinds ``with`` blocks, which stop their plugins, and whatever is left is stopped at
  exit. An application that catches KeyboardInterrupt keeps its plugins running.
- ``SIG_IGN`` or a handler not set from Python: left alone, nothing is installed.

Handlers can only be installed on the main thread: :func:`install_signal_handlers` is
called by every ``launch()`` there; an application whose launches all run on other threads
calls it once from the main thread.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

__all__ = ["install_signal_handlers", "kill_all", "register", "unregister"]


class _Killable(Protocol):
    def _kill_for(self, reason: str, grace: float) -> None: ...


_Handler = Callable[[int, FrameType | None], object]

_live: dict[int, _Killable] = {}
_on_signal: set[int] = set()  # ids of plugins a signal stops (not opted out)
_lock = threading.Lock()
_atexit_installed = False
_EXIT_GRACE = 1.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_previous: dict[int, _Handler | int] = {}  # signal -> handler chained to (or SIG_DFL)
_ours: dict[int, _Handler] = {}
_dying: set[int] = set()  # SIG_DFL signals being handled: the next one ends the process
_wake_w = -1
_owner_pid = -1  # the process whose killer thread reads the pipe (a forked child is not)


def register(plugin: _Killable, *, signal_handlers: bool = True) -> None:
    """Track ``plugin`` until it is unregistered; install the exit hooks once."""
    global _atexit_installed
    with _lock:
        _live[id(plugin)] = plugin
        if signal_handlers:
            _on_signal.add(id(plugin))
        first = not _atexit_installed
        _atexit_installed = True
    if first:
        atexit.register(kill_all)
    if signal_handlers and threading.current_thread() is threading.main_thread():
        install_signal_handlers()


def unregister(plugin: _Killable) -> None:
    """Stop tracking ``plugin`` (it has been killed)."""
    with _lock:
        _live.pop(id(plugin), None)
        _on_signal.discard(id(plugin))


def kill_all(grace: float = _EXIT_GRACE, *, reason: str = "the host is exiting") -> None:
    """Kill every tracked plugin, concurrently, and return when all are stopped."""
    _kill(grace, reason, signalled=False)


def _kill(grace: float, reason: str, *, signalled: bool) -> None:
    with _lock:
        plugins = [p for key, p in _live.items() if not signalled or key in _on_signal]
    threads = [
        threading.Thread(target=p._kill_for, args=(reason, grace), name="aog-plugins-kill-all")
        for p in plugins
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def install_signal_handlers() -> bool:
    """Install the SIGTERM/SIGINT handlers described in this module, chained to the
    current ones; a signal whose current handler is already ours is skipped, so calling
    again after the application installed its own handler puts ours in front of it.
    Must run on the main thread; returns False (and does nothing) on any other."""
    if threading.current_thread() is not threading.main_thread():
        return False
    global _wake_w, _owner_pid
    with _lock:
        if _owner_pid != os.getpid():
            _owner_pid = os.getpid()
            read_fd, _wake_w = os.pipe()
            os.set_blocking(_wake_w, False)
            threading.Thread(
                target=_killer, args=(read_fd,), name="aog-plugins-signals", daemon=True
            ).start()
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if current is _ours.get(sig) or current in (signal.SIG_IGN, None):
            continue
        if sig == signal.SIGINT and current is signal.default_int_handler:
            continue  # KeyboardInterrupt unwinds and stops plugins; see the module doc
        assert current is not None
        _previous[sig] = current
        _ours[sig] = _handler
        signal.signal(sig, _handler)
    return True


def _handler(signum: int, frame: FrameType | None) -> None:
    # Runs on the main thread between two bytecodes, maybe inside a kill() holding locks:
    # no lock, no wait here, only a write to the killer thread's pipe.
    previous = _previous.get(signum, signal.SIG_DFL)
    if previous == signal.SIG_DFL:
        if (
            signum in _dying or os.getpid() != _owner_pid
        ):  # the killer is done, or this is a second signal: die now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _dying.add(signum)
    if os.getpid() == _owner_pid:
        with contextlib.suppress(OSError):
            os.write(_wake_w, bytes([signum]))
    if callable(previous):
        previous(signum, frame)


def _killer(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        for signum in data:
            name = signal.Signals(signum).name
            _kill(_EXIT_GRACE, f"{name} received", signalled=True)
            if signum in _dying:
                os.kill(os.getpid(), signum)  # the handler now ends the process
