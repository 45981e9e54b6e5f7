"""Plugin states and events, and two small helpers of the supervisor."""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aog_plugins.errors import AogPluginsError

if TYPE_CHECKING:
    from aog_plugins.process._plugin import Plugin

__all__ = ["PluginEvent", "PluginState", "describe_error", "wait_event"]

_SLICE = 0.1


class PluginState(enum.Enum):
    """Where a plugin is in its life (supervisor's states)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


@dataclass(frozen=True)
class PluginEvent:
    """One state transition of a plugin, with why it happened."""

    plugin: Plugin
    old: PluginState
    new: PluginState
    reason: str
    pid: int | None
    exit_code: int | None = None


def wait_event(event: threading.Event, timeout: float | None) -> bool:
    """``event.wait(timeout)`` in short slices: a signal the kernel hands to another thread
    does not interrupt a blocked lock wait, so the main thread must wake up now and then
    for its Python signal handlers (KeyboardInterrupt, SIGTERM) to run."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
        if event.wait(max(left, 0.0)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def describe_error(exc: BaseException) -> str:
    """Our typed errors say what happened; anything else also needs its type to make sense."""
    if isinstance(exc, AogPluginsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
