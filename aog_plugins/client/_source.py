"""Where a client gets its channel, and how gRPC failures become typed errors.

The client never touches a process: a :class:`ConnectionSource` (a launched
:class:`~aog_plugins.Plugin`, or a fixed channel) hands out the current channel and says
whether the plugin process is gone, so an error can tell a crash from a slow plugin.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import grpc

from aog_plugins.errors import PluginCallError, PluginError

__all__ = ["ConnectionSource", "StaticSource", "check_code", "is_success", "transport_error"]


@runtime_checkable
class ConnectionSource(Protocol):
    """Hands a client the channel to use now, and explains a dead plugin."""

    def current_channel(self) -> grpc.Channel:
        """The channel to the running plugin (may raise if there is none)."""
        ...

    def exit_reason(self) -> str | None:
        """None while the plugin runs; else how it ended (exit code, signal, stderr tail)."""
        ...


class StaticSource:
    """A fixed channel to a plugin whose process we do not know (e.g. an external one)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def current_channel(self) -> grpc.Channel:
        return self._channel

    def exit_reason(self) -> str | None:
        return None


def is_success(code: int) -> bool:
    """AOG's success rule: 0, or HTTP-style 200."""
    return code in (0, 200)


def check_code(code: int, message: str) -> None:
    """Raise :class:`PluginError` for a failure ``code`` in a response body."""
    if not is_success(code):
        raise PluginError(code, message)


def transport_error(rpc: str, exc: grpc.RpcError, source: ConnectionSource) -> PluginCallError:
    """A typed error for a failed RPC, saying whether the plugin process is gone."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    name = code.name if code is not None else "UNKNOWN"
    reason = source.exit_reason()
    if reason is not None:
        text = f"{rpc} failed: the plugin process is gone ({reason}); gRPC said {name}: {details}"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        text = f"{rpc} failed: no answer within the deadline ({name}); the plugin is still running"
    elif code is grpc.StatusCode.UNIMPLEMENTED:
        text = f"{rpc} failed: the plugin does not implement this RPC ({name}: {details})"
    else:
        text = f"{rpc} failed: {name}: {details}"
    return PluginCallError(text, code=name, process_exited=reason is not None)
