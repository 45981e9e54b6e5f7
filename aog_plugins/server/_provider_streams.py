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
from collections.abc import Iterator
from typing import Any

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
    SUCCESS_MESSAGE,
    error_status,
    failure,
)
from aog_plugins.types import BidiMessage, PullModelRequest

__all__ = ["Inbound", "invoke_bidi", "invoke_stream", "pull_stream"]

WS_CONN_ID = "ws_conn_id"
_log = logging.getLogger("aog_plugins.server.provider")


def _close(iterator: object, rpc: str) -> None:
    """Close a provider's generator (runs its ``finally``); other iterators are left alone."""
    close = getattr(iterator, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            _log.warning("%s: closing the provider's iterator failed", rpc, exc_info=True)


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
    try:
        chunks = iter(
            streamable.invoke_service_stream(
                request.service_name, request.request_data, request.auth_info
            )
        )
    except Exception as exc:
        yield last(*failure(exc, rpc))
        return
    try:
        while True:
            try:
                chunk = next(chunks)
                if chunk.error is not None:
                    yield last(*error_status(chunk.error))
                    return
                response = pb.InvokeServiceStreamResponse(
                    code=0,
                    message=SUCCESS_MESSAGE,
                    chunk_data=chunk.data,
                    is_final=chunk.is_final,
                    metadata=chunk.metadata,
                )
            except StopIteration:
                return
            except Exception as exc:
                yield last(*failure(exc, rpc))
                return
            if not context.is_active():
                _log.debug("%s %r: the host went away", rpc, request.service_name)
                return
            yield response
            if chunk.is_final:
                return
    finally:
        _close(chunks, rpc)


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
    items: Iterator[Any] | None = None
    try:
        while True:
            try:
                if items is None:  # a failure here ends the stream like one mid-way
                    items = iter(local.pull_model_stream(pull))
                item = next(items)
                data = bytes(item) if isinstance(item, (bytes, bytearray)) else item.to_json()
            except StopIteration:
                return
            except Exception as exc:
                code, message = failure(exc, rpc)
                yield pb.PullModelStreamResponse(code=code, message=message)
                context.set_code(grpc.StatusCode.UNKNOWN)
                context.set_details(message)
                return
            if not context.is_active():
                _log.debug("%s: the host went away", rpc)
                return
            yield pb.PullModelStreamResponse(code=0, message=SUCCESS_MESSAGE, data=data)
    finally:
        _close(items, rpc)


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
    try:
        outbound = iter(
            bidi.invoke_service_bidirectional(
                first.service_name, first.metadata.get(WS_CONN_ID, ""), first.auth_info, inbound
            )
        )
    except Exception as exc:
        inbound.close()
        yield error(*failure(exc, rpc))
        return
    try:
        while True:
            try:
                message = next(outbound)
                response = pb.InvokeServiceBidiResponse(
                    code=0,
                    message=SUCCESS_MESSAGE,
                    data=message.data,
                    message_type=message.message_type,
                    metadata=message.metadata,
                )
                if message.error is not None:  # an error item; the stream goes on
                    response.code, response.message = error_status(message.error)
            except StopIteration:
                return
            except Exception as exc:
                yield error(*failure(exc, rpc))
                return
            if not context.is_active():
                _log.debug("%s %r: the host went away", rpc, first.service_name)
                return
            yield response
    finally:
        inbound.close()
        _close(outbound, rpc)
