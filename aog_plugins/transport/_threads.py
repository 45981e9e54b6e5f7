"""Keep the process's asynchronous signals on the threads that can act on them.

The kernel hands a process-directed signal (``kill``, Ctrl-C) to any thread that does not
block it, but Python runs signal handlers only on the main thread, and only between two
bytecodes. When one of the library's threads (or one of grpcio's) takes the signal while
the main thread waits in a blocking call (``time.sleep``, a lock, ``select``), nothing wakes
the main thread: ``KeyboardInterrupt`` and the SIGTERM handler that stops the plugins are
both late by as long as that call lasts.

So every thread the library starts blocks :data:`ASYNC_SIGNALS`. A thread inherits the
mask of the thread that creates it, so :func:`start_thread` starts ours with the signals
blocked in the creating thread for that moment, and :func:`signals_blocked` wraps the calls
that make grpcio start threads (the first channel or server of the process starts grpcio's
core threads; a streaming call starts a channel's polling thread). A signal that arrives on
the main thread inside such a window stays pending and is delivered when it ends.

A child process inherits the mask too; :func:`signals_unblocked` wraps process spawns, so
a plugin always starts with these signals deliverable (SIGTERM is a step of the kill
ladder), whichever thread starts it. User callbacks run under it as well, like on any
thread the application starts itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ASYNC_SIGNALS", "signals_blocked", "signals_unblocked", "start_thread"]

ASYNC_SIGNALS: frozenset[signal.Signals] = frozenset(
    {
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGTERM,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
        signal.SIGCHLD,
        signal.SIGWINCH,
    }
)
"""Signals an application handles (or dies of) as a process: never the synchronous ones
(SIGSEGV, SIGPIPE...) a thread raises for itself, nor the profiling timers."""


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Block :data:`ASYNC_SIGNALS` in this thread for the block; threads started inside
    inherit the block. The previous mask is restored on exit."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def signals_unblocked() -> Iterator[None]:
    """Unblock :data:`ASYNC_SIGNALS` in this thread for the block (a child process spawned
    inside gets them deliverable); the previous mask is restored on exit."""
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, ASYNC_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_thread(thread: threading.Thread) -> threading.Thread:
    """``thread.start()``, the new thread (and every thread it starts) blocking
    :data:`ASYNC_SIGNALS` from its first instruction."""
    with signals_blocked():
        thread.start()
    return thread
