"""The call plumbing under :class:`GRPCProviderClient`: one typed path for every RPC.

Each call asks the :class:`ConnectionSource` for the current channel (waiting, bounded,
while a crashed plugin restarts), calls the stub's method for the RPC's descriptor
(``_rpcs``) so mypy checks request and response types, and turns gRPC failures into the
typed errors of :mod:`aog_plugins.errors`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.client._rpcs import BidiRpc, Coded, StreamCall, StreamRpc, Stub, UnaryRpc
from aog_plugins.client._source import ConnectionSource, check_code, transport_error
from aog_plugins.client._streams import ResponseStream, StreamRegistry
from aog_plugins.errors import AogPluginsError, PayloadError, PluginCrashedError
from aog_plugins.types import GoStruct

__all__ = ["RpcCalls", "limit_of"]

_Q = TypeVar("_Q")
_R = TypeVar("_R")
_C = TypeVar("_C", bound=Coded)
_T = TypeVar("_T")
_G = TypeVar("_G", bound=GoStruct)


def limit_of(timeout: float | None) -> float | None:
    """A call's timeout for grpcio: None (or infinity) means none; it must be positive."""
    if timeout is None or math.isinf(timeout):
        return None
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return timeout


class RpcCalls:
    """Typed unary and streaming calls over a source's current channel."""

    def __init__(self, source: ConnectionSource) -> None:
        self._source: ConnectionSource = source
        self._lock = threading.Lock()
        self._stub_for: tuple[grpc.Channel, Stub] | None = None
        self._streams = StreamRegistry()
        self._closed = threading.Event()

    def _channel_changed(self) -> None:
        """Called (under the lock) when calls move to a new channel, e.g. after a restart."""

    def _stub(self, timeout: float | None = None) -> tuple[grpc.Channel, Stub]:
        if self._closed.is_set():
            raise AogPluginsError("this GRPCProviderClient is closed")
        # Waits (bounded) while a crashed plugin is being restarted; raises when FATAL.
        channel = self._source.current_channel(timeout)
        with self._lock:
            if self._stub_for is None or self._stub_for[0] is not channel:
                self._stub_for = (channel, provider_pb2_grpc.ProviderServiceStub(channel))
                self._channel_changed()
            return self._stub_for

    def _unary(self, rpc: UnaryRpc[_Q, _R], request: _Q, timeout: float | None) -> _R:
        """One unary RPC; an idempotent read is retried once on a restarted plugin."""
        limit = limit_of(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        for attempt in (0, 1):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            channel, stub = self._stub(remaining)
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            try:
                return rpc.method(stub)(request, timeout=remaining)
            except grpc.RpcError as exc:
                error = transport_error(rpc.name, exc, self._source, channel)
                if rpc.idempotent and attempt == 0 and isinstance(error, PluginCrashedError):
                    continue
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _checked(self, rpc: UnaryRpc[_Q, _C], request: _Q, timeout: float | None) -> _C:
        response = self._unary(rpc, request, timeout)
        check_code(response.code, response.message)
        return response

    def _open_stream(
        self,
        rpc: StreamRpc[_Q, _R],
        request: _Q,
        timeout: float | None,
        convert: Callable[[_R], tuple[_T | None, bool]],
    ) -> ResponseStream[_T]:
        limit = limit_of(timeout)
        channel, stub = self._stub(limit)
        return self._track(rpc.name, rpc.method(stub)(request, timeout=limit), convert, channel)

    def _open_bidi(
        self,
        rpc: BidiRpc[_Q, _R],
        requests: Iterator[_Q],
        timeout: float | None,
        convert: Callable[[_R], tuple[_T | None, bool]],
    ) -> ResponseStream[_T]:
        limit = limit_of(timeout)
        channel, stub = self._stub(limit)
        return self._track(rpc.name, rpc.method(stub)(requests, timeout=limit), convert, channel)

    def _track(
        self,
        name: str,
        call: StreamCall[_R],
        convert: Callable[[_R], tuple[_T | None, bool]],
        channel: grpc.Channel,
    ) -> ResponseStream[_T]:
        stream = ResponseStream(name, call, convert, self._source, channel)
        self._streams.add(stream)
        return stream

    @staticmethod
    def _decode(kind: type[_G], data: bytes, what: str) -> _G:
        try:
            return kind.from_json(data)
        except PayloadError as exc:
            raise PayloadError(f"the plugin's {what} is not valid: {exc}") from None
