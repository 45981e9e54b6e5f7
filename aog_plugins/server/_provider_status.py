"""The AOG SDK server's ``code``/``message`` conventions, shared by unary and stream RPCs."""

from __future__ import annotations

import logging

from aog_plugins.errors import PluginError

__all__ = [
    "FIRST_EOF",
    "INTERNAL",
    "NOT_FIRST",
    "NOT_LOCAL",
    "NOT_REMOTE",
    "NO_BIDI",
    "NO_SERVICE",
    "NO_STREAMING",
    "SUCCESS_MESSAGE",
    "error_status",
    "failure",
]

INTERNAL = 11
"""types.ErrCodeInternal: what every failure that is not a PluginError becomes."""
SUCCESS_MESSAGE = "success"

# The SDK's exact texts (plugin-sdk/server/grpc_server.go), all sent with code 11.
NOT_LOCAL = "not a local plugin"
NOT_REMOTE = "not a remote plugin"
NO_STREAMING = "plugin does not support streaming"
NO_BIDI = "plugin does not implement bidirectional interface"
FIRST_EOF = "failed to read first bidirectional message: EOF"
NOT_FIRST = "first bidirectional message must set is_first=true"
NO_SERVICE = "service_name is required in first bidirectional message"

_log = logging.getLogger("aog_plugins.server.provider")


def error_status(exc: BaseException) -> tuple[int, str]:
    """The ``code``/``message`` pair for a failure: a PluginError's own, else 11 and its name."""
    if isinstance(exc, PluginError):
        return exc.code, exc.message
    text = str(exc)
    return INTERNAL, f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure(exc: BaseException, rpc: str) -> tuple[int, str]:
    """:func:`error_status`, logging unexpected exceptions (code 11) with their traceback."""
    code, message = error_status(exc)
    if not isinstance(exc, PluginError):
        _log.error("%s: the provider raised %s", rpc, message, exc_info=exc)
    return code, message
