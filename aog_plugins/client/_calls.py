"""The call plumbing under :class:`GRPCProviderClient`: one typed path for every RPC.

Each call asks the :class:`ConnectionSource` for the current channel (waiting, bounded,
while a crashed plugin restarts), calls the stub's method for the RPC's descriptor
(``_rpcs``) so mypy checks request and response types, and turns gRPC failures into the
typed errors of :mod:`aog_plugins.errors`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.client._methods import Streamed, Unary
from aog_plugins.client._rpcs import BidiRpc, StreamCall, StreamRpc, Stub, UnaryRpc
from aog_plugins.client._source import ConnectionSource, closed_channel_error, transport_error
from aog_plugins.client._streams import ResponseStream, StreamRegistry
from aog_plugins.errors import AogPluginsError, PluginCallError, PluginCrashedError
from aog_plugins.transport import NO_LIMIT_BEYOND, make_stub, seconds, signals_blocked

__all__ = ["RpcCalls", "limit_of"]

_Q = TypeVar("_Q")
_R = TypeVar("_R")
_T = TypeVar("_T")


def limit_of(timeout: float | None) -> float | None:
    """A call's timeout for grpcio: None, infinity or more than ten years means none;
    anything but a positive number is a :class:`ConfigurationError`."""
    if timeout is None:
        return None
    limit = seconds("timeout", timeout, finite=False)
    return None if limit > NO_LIMIT_BEYOND else limit


class RpcCalls:
    """Typed unary and streaming calls over a source's current channel."""

    def __init__(self, source: ConnectionSource) -> None:
        self._source: ConnectionSource = source
        self._lock = threading.Lock()
        self._stub_for: tuple[grpc.Channel, Stub] | None = None
        self._streams = StreamRegistry()
        self._closed = threading.Event()
        self._closed_error: Callable[[], AogPluginsError] | None = None
        """Set by the plugin that closed this client: the error its calls raise then."""

    def _channel_changed(self) -> None:
        """Called (under the lock) when calls move to a new channel, e.g. after a restart."""

    def _stub(self, timeout: float | None, rpc: str) -> tuple[grpc.Channel, Stub]:
        if self._closed.is_set():
            if self._closed_error is not None:
                raise self._closed_error()
            raise AogPluginsError("this GRPCProviderClient is closed")
        # Waits (bounded) while a crashed plugin is being restarted; raises when FATAL.
        channel = self._source.current_channel(timeout)
        with self._lock:
            if self._stub_for is None or self._stub_for[0] is not channel:
                try:
                    stub = make_stub(provider_pb2_grpc.ProviderServiceStub, channel)
                except ValueError as exc:  # closed meanwhile: its process exited
                    raise closed_channel_error(rpc, exc, self._source, channel) from None
                self._stub_for = (channel, stub)
                self._channel_changed()
            return self._stub_for

    def _unary(self, rpc: UnaryRpc[_Q, _R], request: _Q, timeout: float | None) -> _R:
        """One unary RPC; an idempotent read is retried once on a restarted plugin."""
        limit = limit_of(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        crash: PluginCrashedError | None = None
        for attempt in (0, 1):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            error: PluginCallError
            try:
                channel, stub = self._stub(remaining, rpc.name)
            except PluginCrashedError as exc:  # its channel closed meanwhile: see _stub
                error = exc
            except PluginCallError:
                if crash is None:
                    raise
                # No plugin to retry on (stopped, FATAL, or not back in time): the caller
                # is told of the crash the call hit, with its exit code and stderr tail.
                raise crash from None
            else:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
                try:
                    return rpc.method(stub)(request, timeout=remaining)
                except grpc.RpcError as exc:
                    error = transport_error(rpc.name, exc, self._source, channel)
                except ValueError as exc:  # the channel was closed meanwhile: its process exited
                    error = closed_channel_error(rpc.name, exc, self._source, channel)
            if rpc.idempotent and attempt == 0 and isinstance(error, PluginCrashedError):
                crash = error
                continue
            raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _call(self, call: Unary[_Q, _R, _T], timeout: float | None) -> _T:
        """A client method's unary call (see ``_methods``): run, then make its result."""
        return call.result(self._unary(call.rpc, call.request, timeout))

    def _stream(self, call: Streamed[_Q, _R, _T], timeout: float | None) -> ResponseStream[_T]:
        return self._open_stream(call.rpc, call.request, timeout, call.convert)

    def _open_stream(
        self,
        rpc: StreamRpc[_Q, _R],
        request: _Q,
        timeout: float | None,
        convert: Callable[[_R], tuple[_T | None, bool]],
    ) -> ResponseStream[_T]:
        limit = limit_of(timeout)
        channel, stub = self._stub(limit, rpc.name)
        try:
            with signals_blocked():  # grpcio may start the channel's polling thread here
                call = rpc.method(stub)(request, timeout=limit)
        except ValueError as exc:
            raise closed_channel_error(rpc.name, exc, self._source, channel) from None
        return self._track(rpc.name, call, convert, channel)

    def _open_bidi(
        self,
        rpc: BidiRpc[_Q, _R],
        requests: Iterator[_Q],
        timeout: float | None,
        convert: Callable[[_R], tuple[_T | None, bool]],
        end_requests: Callable[[], None],
    ) -> ResponseStream[_T]:
        """``end_requests`` makes ``requests`` stop: called when the call ends however it
        ends (cancelled, failed, done), as grpcio's thread consuming them waits in it for
        ever otherwise (a thread lost for each call its caller left unclosed)."""
        limit = limit_of(timeout)
        channel, stub = self._stub(limit, rpc.name)
        try:
            with signals_blocked():  # and a thread consuming the requests
                call = rpc.method(stub)(requests, timeout=limit)
        except ValueError as exc:
            end_requests()
            raise closed_channel_error(rpc.name, exc, self._source, channel) from None
        if not call.add_callback(end_requests):  # it has ended already
            end_requests()
        return self._track(rpc.name, call, convert, channel)

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
