"""Stop every live plugin at interpreter exit, and on SIGTERM (and SIGINT when it would
otherwise end the process).

A signal handler must never block: the main thread it interrupts may hold the very lock
a kill needs (Ctrl-C during ``kill()``). Nor can the plugins wait for the main thread:
Python runs a handler only when the main thread gets to it, and a signal that lands while
the main thread is about to block (waiting for the GIL, then in ``time.sleep``) waits as
long as that call. So a "killer" thread stops the plugins, woken through a pipe by
Python's C-level handler (the wakeup fd) the moment the signal arrives, on whatever thread;
the Python-level handler writes to the same pipe too (the only news when the application
has a wakeup fd of its own, such as asyncio's) and goes straight on to the previous
handler (chained, never replaced):

- a Python callable (an application's handler) is called at once;
- ``SIG_DFL`` (the process would die): once the killer thread has stopped the plugins, the
  process dies of the signal's default action; a second signal meanwhile ends it at once
  (the reaper then kills the plugins);
- SIGINT with Python's own handler (``KeyboardInterrupt``) is left alone: the exception
  unwinds ``with`` blocks, which stop their plugins, and whatever is left is stopped at
  exit. An application that catches KeyboardInterrupt keeps its plugins running.
- ``SIG_IGN`` or a handler not set from Python: left alone, nothing is installed.

Handlers can only be installed on the main thread: :func:`install_signal_handlers` is
called by every ``launch()`` there; an application whose launches all run on other threads
calls it once from the main thread. The library's own threads block these signals (see
``transport``), so the kernel hands them to the main thread or the application's threads.
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

from aog_plugins.transport import start_thread

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
_FROM_HANDLER = 0x80  # marks the byte _handler writes (the C level writes the bare number)
_NOT_OURS = object()


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
        atexit.register(_at_exit)
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


def _at_exit() -> None:
    """Stop every plugin at interpreter exit. A second Ctrl-C meanwhile does not cut the
    stop short (it is bounded: a grace, then SIGKILL), nor print a traceback. And when a
    signal whose default action ends the process is being handled (the main thread's
    code finished first: say a call failed because its plugin was being stopped), the
    process ends of that signal, as it would have without this library."""
    done = threading.Event()

    def stop() -> None:
        try:
            kill_all()
        finally:
            done.set()

    start_thread(threading.Thread(target=stop, name="aog-plugins-exit", daemon=True))
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            continue
    dying = sorted(_dying)
    if dying and _owner_pid == os.getpid():
        _die(dying[0])


def _kill(grace: float, reason: str, *, signalled: bool) -> None:
    with _lock:
        plugins = [p for key, p in _live.items() if not signalled or key in _on_signal]
    threads = [
        threading.Thread(target=p._kill_for, args=(reason, grace), name="aog-plugins-kill-all")
        for p in plugins
    ]
    for t in threads:
        start_thread(t)
    for t in threads:
        t.join()


def install_signal_handlers() -> bool:
    """Install the SIGTERM/SIGINT handlers described in this module, chained to the
    current ones; a signal whose current handler is already ours is skipped, so calling
    again after the application installed its own handler puts ours in front of it.
    Must run on the main thread; returns False (and does nothing) on any other."""
    if threading.current_thread() is not threading.main_thread():
        return False
    global _wake_w, _owner_pid, _fork_hooks
    with _lock:
        if _owner_pid != os.getpid():
            _owner_pid = os.getpid()
            read_fd, _wake_w = os.pipe()
            os.set_blocking(_wake_w, False)
            start_thread(
                threading.Thread(
                    target=_killer, args=(read_fd,), name="aog-plugins-signals", daemon=True
                )
            )
            # Python's C-level handler writes the signal number here at once, on whichever
            # thread takes the signal: the killer acts even while the main thread is stuck
            # in a blocking call with the Python-level handler still pending. An
            # application's own wakeup fd (asyncio's) is left in place: then the handler's
            # write below is the only news, and the main thread is awake to run it.
            previous_fd = signal.set_wakeup_fd(_wake_w)
            if previous_fd != -1:
                signal.set_wakeup_fd(previous_fd)
            if not _fork_hooks:  # once per interpreter: a forked child inherits them
                _fork_hooks = True
                os.register_at_fork(
                    before=_before_fork,
                    after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child,
                )
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


# os.fork() (not subprocess, whose child execs at once): the child inherits the wakeup
# fd, a pipe to this process's killer thread, and must not wake it: a SIGTERM meant for
# the child would stop the parent's plugins. The child forgets the fd in its first Python
# code after the fork; until then it keeps SIGTERM and SIGINT blocked (the mask is
# inherited), so a signal that arrives meanwhile waits and is the child's own.
_mask_before_fork: set[int | signal.Signals] | None = None
_fork_hooks = False  # registered (twice, a second _before_fork would save the blocked mask)


def _before_fork() -> None:
    global _mask_before_fork
    _mask_before_fork = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def _restore_mask() -> None:
    if _mask_before_fork is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask_before_fork)


def _after_fork_in_parent() -> None:
    _restore_mask()


def _after_fork_in_child() -> None:
    try:
        with contextlib.suppress(ValueError, OSError):  # ValueError: forked off the main thread
            fd = signal.set_wakeup_fd(-1)
            if fd not in (-1, _wake_w):
                signal.set_wakeup_fd(fd)
    finally:
        _restore_mask()


def _handler(signum: int, frame: FrameType | None) -> None:
    # Runs on the main thread between two bytecodes, maybe inside a kill() holding locks:
    # no lock, no wait here, only a write to the killer thread's pipe.
    previous = _previous.get(signum, signal.SIG_DFL)
    if os.getpid() != _owner_pid:  # a forked child: no killer thread of its own
        if previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
    else:
        with contextlib.suppress(OSError):
            os.write(_wake_w, bytes([signum | _FROM_HANDLER]))
    if callable(previous):
        previous(signum, frame)


def _killer(read_fd: int) -> None:
    # Two writers: the C-level handler (the wakeup fd: the bare number, at once) and
    # _handler (the number | _FROM_HANDLER, when the main thread gets to it). A delivery
    # announced by both is acted on once; several deliveries of one signal may share one
    # _handler call (Python runs the handler once for all that arrived meanwhile).
    announced: set[int] = set()  # seen from the C level, its _handler call not yet
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        for byte in data:
            signum = byte & ~_FROM_HANDLER
            if byte & _FROM_HANDLER:
                if signum in announced:
                    announced.discard(signum)
                    continue
            elif signal.getsignal(signum) is not _ours.get(signum, _NOT_OURS):
                continue  # a signal that is not ours to act on (KeyboardInterrupt's...)
            else:
                announced.add(signum)
            _act_on(signum)


def _act_on(signum: int) -> None:
    name = signal.Signals(signum).name
    if _previous.get(signum, signal.SIG_DFL) != signal.SIG_DFL:
        work = threading.Thread(
            target=_kill, args=(_EXIT_GRACE, f"{name} received"), kwargs={"signalled": True}
        )
    elif signum in _dying:
        _die(signum)  # a second one while the plugins are being stopped: die now
        return
    else:
        _dying.add(signum)
        work = threading.Thread(target=_stop_then_die, args=(signum, f"{name} received"))
    work.daemon = True
    work.name = "aog-plugins-signalled"
    start_thread(work)  # the reader goes on reading: a second signal must get through


def _stop_then_die(signum: int, reason: str) -> None:
    _kill(_EXIT_GRACE, reason, signalled=True)
    _die(signum)


def _die(signum: int) -> None:
    """End the process as the signal's default action would, from any thread: the
    Python-level handler (ours) is replaced at the C level, the signal unblocked here and
    sent to this very thread."""
    import ctypes  # only ever needed here

    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal.restype = ctypes.c_void_p
    libc.signal(signum, None)  # SIG_DFL is the null pointer
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    signal.pthread_kill(threading.get_ident(), signum)
    os._exit(128 + signum)  # pragma: no cover - not reached: the default action ends us
