"""Streaming calls as async iterators that cancel their RPC when the caller stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Generic, Protocol, TypeVar

import grpc
import grpc.aio

from aog_plugins._proto import provider_pb2
from aog_plugins.aio._source import (
    AsyncCall,
    AsyncConnectionSource,
    AsyncStreamCall,
    Link,
    closed_link_error,
    failure,
    lost_under_us,
)
from aog_plugins.aio._threads import not_cancelling
from aog_plugins.client import call_error, methods
from aog_plugins.errors import ConfigurationError, PluginCallError, PluginCrashedError
from aog_plugins.types import BidiMessage

__all__ = ["AsyncBidiCall", "AsyncResponseStream"]

T = TypeVar("T")
_R = TypeVar("_R")
_CANCELLED = "the call was cancelled on the host (a send on it, or the grpc call, was cancelled)"


class AsyncResponseStream(Generic[T]):
    """``async for`` over a server stream's items; ``cancel()``/``aclose()`` end the RPC.

    Cancelling the task that awaits the next item cancels the RPC on the plugin, as do
    ``async with`` exit and garbage collection. A crash of the plugin mid-stream raises
    :class:`~aog_plugins.errors.PluginCrashedError` from the pending ``__anext__``.
    """

    def __init__(
        self,
        rpc: str,
        call: AsyncStreamCall[_R],
        convert: Callable[[_R], tuple[T | None, bool]],
        source: AsyncConnectionSource,
        link: Link,
    ) -> None:
        self._rpc = rpc
        self._call: AsyncCall = call
        responses = call.__aiter__()

        async def receive() -> Callable[[], tuple[T | None, bool]]:
            # Receiving (may end or raise) is apart from converting.
            response = await responses.__anext__()
            return lambda: convert(response)

        self._receive = receive
        self._source = source
        self._link = link
        self._cancelled = False  # by cancel(), or after the last reply / a bad one
        self._cancelled_by_caller = False
        self._crash: PluginCrashedError | None = None
        self._done = False
        self._reading = asyncio.Lock()
        link.track(call)

    def __aiter__(self) -> AsyncResponseStream[T]:
        return self

    async def __anext__(self) -> T:
        # One read at a time: grpc.aio fails a second concurrent one with a bare
        # RuntimeError ("anext(): asynchronous generator is already running").
        async with self._reading:
            return await self._next()

    async def _next(self) -> T:
        while not self._done:
            try:
                convert = await self._receive()
            except StopAsyncIteration:
                self._finish()
                break
            except grpc.aio.UsageError:  # its channel closed meanwhile: its process exited
                self._finish()
                error = await closed_link_error(self._source, self._rpc, self._link)
                raise self._failed(error) from None
            except grpc.RpcError as exc:
                self._finish()
                if self._cancelled:
                    break
                error = await failure(self._source, self._rpc, self._link, exc)
                raise self._failed(error) from None
            except asyncio.CancelledError:
                self._finish()
                if self._cancelled and not lost_under_us(self._link):
                    break  # cancelled by us (cancel/aclose): just stop
                if lost_under_us(self._link):
                    error = await failure(self._source, self._rpc, self._link, None)
                    raise self._failed(error) from None
                if not_cancelling():
                    # Not this task's cancellation: the RPC was cancelled under it (another
                    # task's send on the call was cancelled, or grpc's call.cancel()).
                    error = call_error(self._rpc, grpc.StatusCode.CANCELLED, _CANCELLED, None)
                    raise error from None
                raise  # the awaiting task was cancelled; grpc has cancelled the RPC
            try:
                item, last = convert()
            except BaseException:
                self._stop()
                raise
            if last:
                self._cancelled = True
                self._finish()
                self._call.cancel()
            if item is not None:
                return item
        raise StopAsyncIteration

    def _failed(self, error: PluginCallError) -> PluginCallError:
        """Remember a crash the replies reported (a bidi sender raises it too)."""
        if isinstance(error, PluginCrashedError):
            self._crash = error
        return error

    def _finish(self) -> None:
        self._done = True
        self._link.untrack(self._call)

    @property
    def call(self) -> AsyncCall:
        """The underlying ``grpc.aio`` call."""
        return self._call

    def cancel(self) -> bool:
        """Stop the stream now (the plugin sees the cancellation)."""
        self._cancelled_by_caller = True
        return self._stop()

    def _stop(self) -> bool:
        self._cancelled = True
        self._finish()
        return self._call.cancel()

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> AsyncResponseStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self._done:
            with contextlib.suppress(Exception):  # e.g. the loop is gone
                self._call.cancel()


class _Writable(AsyncStreamCall[provider_pb2.InvokeServiceBidiResponse], Protocol):
    async def write(self, request: provider_pb2.InvokeServiceBidiRequest) -> None: ...

    async def done_writing(self) -> None: ...


class AsyncBidiCall(AsyncResponseStream[BidiMessage]):
    """A bidi call: ``await send(...)`` messages, ``await close()`` to half-close, and
    ``async for`` over the plugin's messages (a failure code raises
    :class:`~aog_plugins.errors.PluginError`). ``cancel()`` aborts both directions. A
    message sent after the call ended is dropped, as with the sync sender: reading the
    replies tells why (a crash raises at once, from both sides).

    The first message sent carries ``is_first``, the service name, auth info and the
    ``ws_conn_id`` metadata, as AOG's host sends them.
    """

    def __init__(
        self,
        call: _Writable,
        source: AsyncConnectionSource,
        link: Link,
        *,
        service_name: str,
        auth_info: str,
        ws_conn_id: str,
    ) -> None:
        super().__init__("InvokeServiceBidi", call, methods.bidi_reply, source, link)
        self._writer = call
        self._service_name = service_name
        self._auth_info = auth_info
        self._ws_conn_id = ws_conn_id
        self._first = True
        self._send_closed = False
        self._ended = False
        self._send_lock = asyncio.Lock()

    async def send(self, message: BidiMessage | bytes | str, message_type: str = "text") -> None:
        """Send one message; bytes/str are wrapped with ``message_type``."""
        message = methods.bidi_message(message, message_type)
        async with self._send_lock:  # keeps is_first on the message that goes first
            if self._send_closed or self._cancelled_by_caller:
                raise ConfigurationError("this bidi stream is closed for sending")
            if self._ended or self._done:
                if self._crash is not None:  # a crash raises, from both sides
                    raise self._crash
                if lost_under_us(self._link):
                    raise await failure(self._source, self._rpc, self._link, None)
                return  # dropped, as the sync sender drops it: the replies say why
            request = methods.bidi_request(
                message, self._first, self._service_name, self._auth_info, self._ws_conn_id
            )
            self._first = False
            await self._io(self._writer.write(request))

    async def close(self) -> None:
        """No more messages (the plugin sees end of stream); receiving goes on."""
        async with self._send_lock:
            if self._send_closed or self._cancelled:
                return
            self._send_closed = True
            if self._ended:
                return
            await self._io(self._writer.done_writing())

    async def _io(self, step: Coroutine[object, object, None]) -> None:
        try:
            await step
        except (grpc.RpcError, asyncio.InvalidStateError):
            # The call has ended (the plugin answered and finished, failed, or the
            # deadline passed; grpc.aio says "RPC already finished" with the latter):
            # like the sync sender, the message is dropped and the replies say why. But a
            # crash raises at once, as reading does.
            if lost_under_us(self._link):
                raise await failure(self._source, self._rpc, self._link, None) from None
            self._ended = True
        except asyncio.CancelledError:
            if lost_under_us(self._link):
                raise await failure(self._source, self._rpc, self._link, None) from None
            raise
