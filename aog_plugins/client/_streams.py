"""Streaming calls as Python iterators that cancel their RPC when the caller stops."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import grpc

from aog_plugins._proto import provider_pb2
from aog_plugins.client._methods import bidi_message, bidi_request
from aog_plugins.client._rpcs import Cancellable, StreamCall
from aog_plugins.client._source import ConnectionSource, transport_error
from aog_plugins.errors import ConfigurationError
from aog_plugins.types import BidiMessage

__all__ = ["BidiSender", "ResponseStream", "StreamRegistry"]

T = TypeVar("T")
_log = logging.getLogger("aog_plugins.client")
_R = TypeVar("_R")


class StreamRegistry:
    """The open streams of one client, so ``close()`` can cancel them all."""

    def __init__(self) -> None:
        self._streams: weakref.WeakSet[Cancellable] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, stream: Cancellable) -> None:
        with self._lock:
            self._streams.add(stream)

    def cancel_all(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()


class ResponseStream(Generic[T]):
    """An iterator over a server stream's items; ``cancel()``/``close()`` end the RPC.

    Leaving a ``for`` loop early, ``with`` exit and garbage collection all cancel it, so a
    caller who stops reading never leaves the plugin streaming into the void.

    ``convert`` turns one response message into (item or None to skip, done after it).
    """

    def __init__(
        self,
        rpc: str,
        call: StreamCall[_R],
        convert: Callable[[_R], tuple[T | None, bool]],
        source: ConnectionSource,
        channel: grpc.Channel,
    ) -> None:
        self._rpc = rpc
        self._call: Cancellable = call
        responses = iter(call)

        def receive() -> Callable[[], tuple[T | None, bool]]:
            # Receiving (may raise StopIteration or RpcError) is apart from converting.
            response = next(responses)
            return lambda: convert(response)

        self._receive = receive
        self._channel = channel
        self._cancelled = False
        self._source = source
        self._done = False
        self._reading = threading.Lock()

    def __iter__(self) -> ResponseStream[T]:
        return self

    def __next__(self) -> T:
        # One read at a time: grpcio fails a second concurrent one with a bare ValueError
        # ("Internal gRPC call error 8"); another thread waits its turn instead.
        with self._reading:
            return self._next()

    def _next(self) -> T:
        while not self._done:
            try:
                convert = self._receive()
            except StopIteration:
                self._done = True
                break
            except grpc.RpcError as exc:
                self._done = True
                if self._cancelled:
                    break  # cancelled by us (close/cancel): just stop
                raise transport_error(self._rpc, exc, self._source, self._channel) from None
            try:
                item, last = convert()
            except BaseException:
                self.cancel()
                raise
            if last:
                self._done = True
                self._cancelled = True
                self._call.cancel()
            if item is not None:
                return item
        raise StopIteration

    @property
    def call(self) -> Cancellable:
        """The underlying grpc call object."""
        return self._call

    def cancel(self) -> None:
        """Stop the stream now (the plugin sees the cancellation)."""
        self._cancelled = True
        self._done = True
        self._call.cancel()

    close = cancel

    def __enter__(self) -> ResponseStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self._done:
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
                self._call.cancel()


_END = object()


class BidiSender:
    """The sending half of a bidi call: ``send()`` messages, then ``close()`` (half-close).

    The first message sent carries ``is_first``, the service name, auth info and the
    ``ws_conn_id`` metadata, as AOG's host sends them.
    """

    def __init__(self, service_name: str, auth_info: str, ws_conn_id: str) -> None:
        self._service_name = service_name
        self._auth_info = auth_info
        self._ws_conn_id = ws_conn_id
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._first = True
        self._closed = False
        self._ended = False
        self._lock = threading.Lock()
        self.call: Cancellable | None = None

    def send(self, message: BidiMessage | bytes | str, message_type: str = "text") -> None:
        """Queue one message; bytes/str are wrapped with ``message_type``."""
        message = bidi_message(message, message_type)
        with self._lock:
            if self._closed:
                raise ConfigurationError("this bidi stream is closed for sending")
            if self._ended:
                return  # the call is over: dropped, reading the replies says why
            request = bidi_request(
                message, self._first, self._service_name, self._auth_info, self._ws_conn_id
            )
            self._first = False
            self._queue.put(request)

    def close(self) -> None:
        """No more messages (the plugin sees end of stream); receiving goes on."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if not self._ended:
                    self._queue.put(_END)

    def ended(self) -> None:
        """The call is over (done, failed or cancelled): end the requests, in which
        grpcio's thread consuming them would wait for ever; later messages are dropped."""
        with self._lock:
            if not self._ended and not self._closed:
                self._queue.put(_END)
            self._ended = True

    def cancel(self) -> None:
        """Abort the whole call, both directions."""
        self.close()
        if self.call is not None:
            self.call.cancel()

    def requests(self) -> Iterator[provider_pb2.InvokeServiceBidiRequest]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            assert isinstance(item, provider_pb2.InvokeServiceBidiRequest)
            yield item


def pump(
    inbound: Iterable[BidiMessage] | queue.Queue[BidiMessage | None],
    sender: BidiSender,
    stopped: threading.Event,
) -> None:
    """Forward ``inbound`` (an iterable, or a queue ended by None) into ``sender``."""
    try:
        if isinstance(inbound, queue.Queue):
            while not stopped.is_set():
                try:
                    item = inbound.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    break
                sender.send(item)
        else:
            for message in inbound:
                if stopped.is_set():
                    break
                sender.send(message)
    except ConfigurationError:
        pass  # the call was cancelled or closed under us
    except Exception:
        # The caller's messages failed: the plugin sees their end (the call goes on, its
        # replies still come) and the error is logged, not left to the thread's excepthook.
        _log.exception("the inbound messages of a bidi call failed; ending what is sent")
    finally:
        sender.close()
