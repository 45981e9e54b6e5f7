"""Where a client gets its channel, and how gRPC failures become typed errors.

The client never touches a process: a :class:`ConnectionSource` (a launched
:class:`~aog_plugins.Plugin`, or a fixed channel) hands out the current channel and says
whether the plugin process is gone, so an error can tell a crash from a slow plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import grpc

from aog_plugins.errors import PluginCallError, PluginCrashedError, PluginError, printable

__all__ = [
    "CLOSED_WAIT",
    "ConnectionSource",
    "ExitInfo",
    "StaticSource",
    "call_error",
    "check_code",
    "closed_channel_error",
    "closed_error",
    "exit_wait",
    "is_success",
    "transport_error",
]


@dataclass(frozen=True)
class ExitInfo:
    """How a plugin process ended."""

    reason: str
    exit_code: int | None = None
    stderr_tail: str = ""
    stopped_by_host: str | None = None
    """Why this host stopped it for good (``kill()``, a signal), if it did."""


@runtime_checkable
class ConnectionSource(Protocol):
    """Hands a client the channel to use now, and explains a dead plugin."""

    def current_channel(self, timeout: float | None = None) -> grpc.Channel:
        """The channel to the running plugin, waiting up to ``timeout`` s for a restart;
        raises :class:`~aog_plugins.errors.PluginCallError` if there is none."""
        ...

    def exit_info(self, channel: grpc.Channel, wait: float = 0.0) -> ExitInfo | None:
        """None while the process behind ``channel`` runs (after waiting up to ``wait`` s
        for it to be seen dead); else how it ended."""
        ...


class StaticSource:
    """A fixed channel to a plugin whose process we do not know (e.g. an external one)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def current_channel(self, timeout: float | None = None) -> grpc.Channel:
        return self._channel

    def exit_info(self, channel: grpc.Channel, wait: float = 0.0) -> ExitInfo | None:
        return None


def is_success(code: int) -> bool:
    """AOG's success rule: 0, or HTTP-style 200."""
    return code in (0, 200)


def check_code(code: int, message: str) -> None:
    """Raise :class:`PluginError` for a failure ``code`` in a response body."""
    if not is_success(code):
        raise PluginError(code, message)


_MAYBE_DEATH = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)


def exit_wait(code: grpc.StatusCode | None) -> float:
    """How long to wait for a plugin's exit to be seen before calling a failure with
    ``code`` a slow plugin's: a dead plugin's socket may close a moment before its exit is
    observed."""
    return 0.5 if code in _MAYBE_DEATH else 0.0


def call_error(
    rpc: str, code: grpc.StatusCode | None, details: str | None, info: ExitInfo | None
) -> PluginCallError:
    """The typed error for a failed RPC; ``info`` (how the process ended, or None while it
    runs) makes it a :class:`PluginCrashedError`."""
    name = code.name if code is not None else "UNKNOWN"
    if info is not None:
        return PluginCrashedError(
            f"{rpc} failed: the plugin process is gone ({info.reason}); gRPC said {name}",
            code=name,
            exit_code=info.exit_code,
            stderr_tail=info.stderr_tail,
            stopped_by_host=info.stopped_by_host,
        )
    if details is not None:  # the plugin's status text: one line, no terminal escapes
        details = printable(details)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        text = f"{rpc} failed: no answer within the deadline ({name}); the plugin is still running"
    elif code is grpc.StatusCode.UNIMPLEMENTED:
        text = f"{rpc} failed: the plugin does not implement this RPC ({name}: {details})"
    else:
        text = f"{rpc} failed: {name}: {details}"
    return PluginCallError(text, code=name, process_exited=False)


_CLOSED_CHANNEL = ("on closed channel", "Channel closed")


CLOSED_WAIT = exit_wait(grpc.StatusCode.UNAVAILABLE)
"""Seconds a call its closed channel refused waits for its process's exit to be seen."""


def closed_error(rpc: str, info: ExitInfo | None) -> PluginCallError:
    """The error of a call its channel refused because the host had closed it, as it does
    when the plugin's process exits: ``info``, that exit (as for a call in flight), or
    while the process runs, UNAVAILABLE saying so. Sync and asyncio alike."""
    details = "the host's channel to the plugin was closed"
    return call_error(rpc, grpc.StatusCode.UNAVAILABLE, details, info)


def closed_channel_error(
    rpc: str, exc: ValueError, source: ConnectionSource, channel: grpc.Channel
) -> PluginCallError:
    """grpcio refuses a call on a closed channel with a bare ``ValueError``. The host closes
    a plugin's channel when its process exits (calls in flight then fail at once), so a
    call that took the channel a moment before is told of that exit as they are; any other
    ``ValueError`` is re-raised."""
    if not any(text in str(exc) for text in _CLOSED_CHANNEL):
        raise exc
    return closed_error(rpc, source.exit_info(channel, wait=CLOSED_WAIT))


def transport_error(
    rpc: str, exc: grpc.RpcError, source: ConnectionSource, channel: grpc.Channel
) -> PluginCallError:
    """A typed error for a failed RPC, saying whether the plugin process is gone."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return call_error(rpc, code, details, source.exit_info(channel, wait=exit_wait(code)))
