"""The AOG SDK server's ``code``/``message`` conventions, shared by unary and stream RPCs,
and :func:`reply`, the one shape every unary ProviderService RPC has."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

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
    "PROVIDER_FAILURES",
    "SUCCESS_MESSAGE",
    "Status",
    "error_status",
    "failure",
    "refuse",
    "reply",
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
_INT32 = range(-(2**31), 2**31)


def _text(value: object, form: Callable[[object], str] = str) -> str:
    """``form(value)`` as protobuf can send it: never raises, lone surrogates escaped."""
    try:
        text = value if isinstance(value, str) and form is str else form(value)
    except Exception as exc:  # a __str__ that raises: the author's bug
        return f"<str() failed: {type(exc).__name__}>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_status(exc: BaseException) -> tuple[int, str]:
    """The ``code``/``message`` pair for a failure: a PluginError's own, else 11 and its name.

    Never raises: a message that is not valid text (a ``__str__`` that raises, lone
    surrogates) is escaped, and a PluginError whose code is no int32 answers 11 saying so,
    so the host still gets the SDK's answer rather than a bare gRPC UNKNOWN.
    """
    name = type(exc).__name__
    if isinstance(exc, PluginError):
        code: object = exc.code
        message = _text(exc.message)
        if isinstance(code, int) and code in _INT32:
            return code, message
        return INTERNAL, f"{name} with invalid code {_text(code, repr)}: {message}"
    text = _text(exc)
    return INTERNAL, f"{name}: {text}" if text else name


def failure(exc: BaseException, rpc: str) -> tuple[int, str]:
    """:func:`error_status`, logging unexpected exceptions (code 11) with their traceback."""
    code, message = error_status(exc)
    if not isinstance(exc, PluginError):
        _log.error("%s: the provider raised %s", rpc, message, exc_info=exc)
    return code, message


class Status(Protocol):
    """A ProviderService response with AOG's ``code``/``message`` pair."""

    code: int
    message: str


_M = TypeVar("_M", bound=Status)


def refuse(response: type[_M], code: int, message: str) -> _M:
    """An empty ``response`` carrying only a failure."""
    answer = response()
    answer.code, answer.message = code, message
    return answer


PROVIDER_FAILURES: tuple[type[BaseException], ...] = (BaseException,)
"""What a provider method may raise that is answered as a failure: anything. grpcio answers
only an ``Exception``; any other exception (``sys.exit()``'s ``SystemExit``,
``KeyboardInterrupt``, ``asyncio.CancelledError`` from code run with ``asyncio.run``)
would end the worker's call and leave the host's call unanswered until its deadline.
(Signals reach only the main thread, which never runs provider code.)"""


def reply(response: type[_M], action: Callable[[], object]) -> _M:
    """Run one provider call and answer it the SDK's way: always a ``response``.

    ``action`` returns the filled-in response (its payload fields), or anything else when
    the RPC has no payload (a provider's return value is then ignored). Success sets code 0
    "success"; any exception (a payload that cannot be encoded included) becomes an empty
    response with the failure's code and message.
    """
    try:
        result = action()
    except PROVIDER_FAILURES as exc:
        return refuse(response, *failure(exc, response.__name__))
    answer = result if isinstance(result, response) else response()
    answer.code, answer.message = 0, SUCCESS_MESSAGE
    return answer
