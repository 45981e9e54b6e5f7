"""The three streaming RPCs of ``ProviderService``, with the AOG SDK server's end rules.

- InvokeServiceStream: each chunk goes out with code 0; the stream ends after a chunk with
  ``is_final`` or when the provider's iterator ends (no final chunk is made up). A failure
  (an exception, or a chunk with ``error``) becomes one last ``is_final`` chunk carrying
  code/message, and the call still ends with gRPC OK.
- PullModelStream: each progress item is a JSON ``data`` message; a provider failure is
  one message with code/message, then the call ends with gRPC UNKNOWN (grpc-go's status
  for a plain error) carrying the same message. An undecodable request gets the error
  message and gRPC OK.
- InvokeServiceBidi: the first request must set ``is_first`` and ``service_name``; the
  provider reads the host's messages from an iterator that ends when the host half-closes
  or cancels, and its outbound iterator is closed whenever the call ends.

When a call ends early (the host cancelled, or its deadline passed) the provider's
generator is closed (GeneratorExit at its ``yield``, so its ``finally`` runs) as soon as
it next yields, or, in bidi, once it next reads the inbound iterator, which then ends.
No thread is started here, so none is left behind; code blocked elsewhere inside the
provider cannot be interrupted from Python and is noticed when it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import grpc

from aog_plugins._proto import provider_pb2 as pb
from aog_plugins.contract import (
    BidirectionalPlugin,
    LocalPluginProvider,
    StreamablePlugin,
)
from aog_plugins.server._provider_status import (
    FIRST_EOF,
    INTERNAL,
    NO_BIDI,
    NO_SERVICE,
    NO_STREAMING,
    NOT_FIRST,
    NOT_LOCAL,
    PROVIDER_FAILURES,
    SUCCESS_MESSAGE,
    error_status,
    failure,
)
from aog_plugins.types import BidiMessage, ProgressResponse, PullModelRequest, StreamChunk

__all__ = ["Inbound", "invoke_bidi", "invoke_stream", "pull_stream"]

WS_CONN_ID = "ws_conn_id"
_log = logging.getLogger("aog_plugins.server.provider")
_I = TypeVar("_I")
_M = TypeVar("_M")


def _close(iterator: object, rpc: str) -> None:
    """Close a provider's generator (runs its ``finally``); other iterators are left alone."""
    close = getattr(iterator, "close", None)
    if callable(close):
        try:
            close()
        except PROVIDER_FAILURES:  # its ``finally`` raised: the call still ends
            _log.warning("%s: closing the provider's iterator failed", rpc, exc_info=True)


def _check_item(item: object, kind: type, method: str) -> None:
    """A provider's generator yields ``kind``: anything else is the author's bug, said so
    (instead of the AttributeError converting it would raise)."""
    if not isinstance(item, kind):
        raise TypeError(f"{method} yielded {type(item).__name__}, not a {kind.__name__}")


def _forward(
    rpc: str,
    what: str,
    context: grpc.ServicerContext,
    *,
    open_items: Callable[[], Iterable[_I]],
    convert: Callable[[_I], tuple[_M, bool]],
    fail: Callable[[BaseException], _M],
    ended: Callable[[], None] = lambda: None,
) -> Iterator[_M]:
    """The one shape of every provider stream: open the provider's iterator, send each
    item as ``convert`` makes it (ending after one it marks last), end when it ends,
    answer a failure (opening included) with ``fail`` and end, stop when the host has
    gone; at the end call ``ended``, then close the provider's generator."""
    items: Iterator[_I] | None = None
    try:
        while True:
            try:
                if items is None:
                    items = iter(open_items())
                response, last = convert(next(items))
            except StopIteration:
                return
            except PROVIDER_FAILURES as exc:
                yield fail(exc)
                return
            if not context.is_active():
                _log.debug("%s%s: the host went away", rpc, what)
                return
            yield response
            if last:
                return
    finally:
        ended()
        _close(items, rpc)


def invoke_stream(
    streamable: StreamablePlugin | None,
    request: pb.InvokeServiceRequest,
    context: grpc.ServicerContext,
) -> Iterator[pb.InvokeServiceStreamResponse]:
    """InvokeServiceStream: forward the provider's StreamChunks until final, end or failure."""
    rpc = "InvokeServiceStream"

    def last(code: int, message: str) -> pb.InvokeServiceStreamResponse:
        return pb.InvokeServiceStreamResponse(code=code, message=message, is_final=True)

    if streamable is None:
        yield last(INTERNAL, NO_STREAMING)
        return

    def convert(chunk: StreamChunk) -> tuple[pb.InvokeServiceStreamResponse, bool]:
        _check_item(chunk, StreamChunk, "invoke_service_stream")
        if chunk.error is not None:
            return last(*error_status(chunk.error)), True
        response = pb.InvokeServiceStreamResponse(
            code=0,
            message=SUCCESS_MESSAGE,
            chunk_data=chunk.data,
            is_final=chunk.is_final,
            metadata=chunk.metadata,
        )
        return response, chunk.is_final

    yield from _forward(
        rpc,
        f" {request.service_name!r}",
        context,
        open_items=lambda: streamable.invoke_service_stream(
            request.service_name, request.request_data, request.auth_info
        ),
        convert=convert,
        fail=lambda exc: last(*failure(exc, rpc)),
    )


def pull_stream(
    local: LocalPluginProvider | None,
    request: pb.PullModelStreamRequest,
    context: grpc.ServicerContext,
) -> Iterator[pb.PullModelStreamResponse]:
    """PullModelStream: each ProgressResponse (or raw JSON bytes) as one ``data`` message."""
    rpc = "PullModelStream"
    if local is None:
        yield pb.PullModelStreamResponse(code=INTERNAL, message=NOT_LOCAL)
        return
    try:
        pull = PullModelRequest.from_json(request.request_json)
    except Exception as exc:  # like the SDK: an error message, then gRPC OK
        code, message = failure(exc, rpc)
        yield pb.PullModelStreamResponse(code=code, message=message)
        return

    def convert(item: ProgressResponse | bytes) -> tuple[pb.PullModelStreamResponse, bool]:
        data = bytes(item) if isinstance(item, (bytes, bytearray)) else item.to_json()
        return pb.PullModelStreamResponse(code=0, message=SUCCESS_MESSAGE, data=data), False

    def fail(exc: BaseException) -> pb.PullModelStreamResponse:
        # One message with code/message, then gRPC UNKNOWN with the same text.
        code, message = failure(exc, rpc)
        context.set_code(grpc.StatusCode.UNKNOWN)
        context.set_details(message)
        return pb.PullModelStreamResponse(code=code, message=message)

    def opened() -> Iterable[ProgressResponse | bytes]:
        return local.pull_model_stream(pull)

    yield from _forward(rpc, "", context, open_items=opened, convert=convert, fail=fail)


def _message(request: pb.InvokeServiceBidiRequest) -> BidiMessage:
    return BidiMessage(
        data=request.data, message_type=request.message_type, metadata=dict(request.metadata)
    )


class Inbound(Iterator[BidiMessage]):
    """The host's bidi messages as the provider sees them.

    Ends when the host half-closes, cancels, or the call is over (:meth:`close`). grpcio
    may report a cancellation as a plain end of the requests, so the two are not told apart.
    """

    def __init__(
        self, requests: Iterator[pb.InvokeServiceBidiRequest], first: BidiMessage | None
    ) -> None:
        self._requests = requests
        self._pending = first
        self._ended = False

    def __next__(self) -> BidiMessage:
        pending, self._pending = self._pending, None
        if pending is not None:
            return pending
        if self._ended:
            raise StopIteration
        try:
            request = next(self._requests)
        except StopIteration:
            self._ended = True
            raise
        except grpc.RpcError:  # grpcio's request iterator raises this on cancellation
            self._ended = True
            raise StopIteration from None
        if self._ended:  # the call ended while we waited
            raise StopIteration
        return _message(request)

    def close(self) -> None:
        """End the iteration (the call is over); later ``next()`` raise StopIteration."""
        self._ended = True
        self._pending = None


def invoke_bidi(
    bidi: BidirectionalPlugin | None,
    requests: Iterator[pb.InvokeServiceBidiRequest],
    context: grpc.ServicerContext,
) -> Iterator[pb.InvokeServiceBidiResponse]:
    """InvokeServiceBidi: check the first request, then pump messages both ways."""
    rpc = "InvokeServiceBidi"

    def error(code: int, message: str) -> pb.InvokeServiceBidiResponse:
        return pb.InvokeServiceBidiResponse(code=code, message=message)

    if bidi is None:
        yield error(INTERNAL, NO_BIDI)
        return
    try:
        first = next(requests)
    except StopIteration:
        yield error(INTERNAL, FIRST_EOF)
        return
    except grpc.RpcError:
        return  # cancelled before the first message: nobody to answer
    if not first.is_first:
        yield error(INTERNAL, NOT_FIRST)
        return
    if not first.service_name:
        yield error(INTERNAL, NO_SERVICE)
        return
    forward_first = bool(first.data) or bool(first.message_type)
    inbound = Inbound(requests, _message(first) if forward_first else None)

    def convert(message: BidiMessage) -> tuple[pb.InvokeServiceBidiResponse, bool]:
        _check_item(message, BidiMessage, "invoke_service_bidirectional")
        response = pb.InvokeServiceBidiResponse(
            code=0,
            message=SUCCESS_MESSAGE,
            data=message.data,
            message_type=message.message_type,
            metadata=message.metadata,
        )
        if message.error is not None:  # an error item; the stream goes on
            response.code, response.message = error_status(message.error)
        return response, False

    # The inbound iterator ends before the provider's generator is closed, so code in
    # its ``finally`` that still reads never waits for the host.
    yield from _forward(
        rpc,
        f" {first.service_name!r}",
        context,
        open_items=lambda: bidi.invoke_service_bidirectional(
            first.service_name, first.metadata.get(WS_CONN_ID, ""), first.auth_info, inbound
        ),
        convert=convert,
        fail=lambda exc: error(*failure(exc, rpc)),
        ended=inbound.close,
    )
