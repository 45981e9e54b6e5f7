#!/usr/bin/env python3
"""Test plugin: records, on the plugin side, which calls the host cancelled.

InvokeService / InvokeServiceStream / InvokeServiceBidi with service ``wait`` count
themselves as started, then run (streams send a chunk every 50 ms, bidi echoes) until
gRPC says the call is no longer active, and count themselves as cancelled. Service
``state`` (unary) answers ``{"started": {...}, "cancelled": {...}}`` per kind.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from aog_plugins._proto import provider_pb2 as pb
from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.server import serve

_lock = threading.Lock()
_started = {"unary": 0, "stream": 0, "bidi": 0}
_cancelled = {"unary": 0, "stream": 0, "bidi": 0}


def _count(table: dict[str, int], kind: str) -> None:
    with _lock:
        table[kind] += 1


def _until_cancelled(context: grpc.ServicerContext, kind: str) -> None:
    while context.is_active():
        time.sleep(0.01)
    _count(_cancelled, kind)


class Watcher(provider_pb2_grpc.ProviderServiceServicer):
    def InvokeService(
        self, request: pb.InvokeServiceRequest, context: grpc.ServicerContext
    ) -> pb.InvokeServiceResponse:
        if request.service_name == "state":
            with _lock:
                state = {"started": dict(_started), "cancelled": dict(_cancelled)}
            return pb.InvokeServiceResponse(response_data=json.dumps(state).encode())
        _count(_started, "unary")
        _until_cancelled(context, "unary")
        return pb.InvokeServiceResponse(response_data=b"{}")

    def InvokeServiceStream(
        self, request: pb.InvokeServiceRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.InvokeServiceStreamResponse]:
        _count(_started, "stream")
        sent = 0
        while context.is_active():
            yield pb.InvokeServiceStreamResponse(chunk_data=json.dumps({"index": sent}).encode())
            sent += 1
            time.sleep(0.05)
        _count(_cancelled, "stream")

    def InvokeServiceBidi(
        self,
        request_iterator: Iterator[pb.InvokeServiceBidiRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[pb.InvokeServiceBidiResponse]:
        first = next(request_iterator)
        _count(_started, "bidi")
        yield pb.InvokeServiceBidiResponse(data=first.data, message_type=first.message_type)
        _until_cancelled(context, "bidi")


def _register(server: grpc.Server) -> None:
    # Only the watched RPCs are implemented; the rest answer UNIMPLEMENTED.
    make: Callable[[], provider_pb2_grpc.ProviderServiceServicer] = Watcher
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(make(), server)


if __name__ == "__main__":
    serve(_register)
