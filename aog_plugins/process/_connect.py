"""Host-side go-plugin services on a connected channel: health, shutdown, stdio, broker."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aog_plugins._proto import (
    grpc_broker_pb2,
    grpc_broker_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)
from aog_plugins.errors import PluginConnectError, PluginUnhealthyError
from aog_plugins.transport import HEALTH_SERVICE

__all__ = ["BrokerStream", "StdioPump", "health_check", "request_shutdown"]


def health_check(channel: grpc.Channel, timeout: float) -> None:
    """Check ``grpc.health.v1`` service ``plugin``; UNIMPLEMENTED counts as reachable."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise PluginConnectError(
            f"health check failed: {getattr(code, 'name', code)}: {detail}"
        ) from exc
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise PluginUnhealthyError(f"the plugin's health service reports {status} for 'plugin'")


def request_shutdown(channel: grpc.Channel, timeout: float) -> None:
    """Ask the plugin to exit (GRPCController.Shutdown); errors are expected and ignored."""
    stub = grpc_controller_pb2_grpc.GRPCControllerStub(channel)
    # The server usually dies mid-call (UNAVAILABLE); a plugin without the controller
    # answers UNIMPLEMENTED. Either way the kill ladder goes on.
    with contextlib.suppress(grpc.RpcError):
        stub.Shutdown(grpc_controller_pb2.Empty(), timeout=max(timeout, 0.05))


class StdioPump:
    """Reads GRPCStdio.StreamStdio on a daemon thread and hands the bytes on.

    A Go plugin blocks once ~64 KiB of unread stdout/stderr pile up, so this starts
    right after connecting and reads until the stream ends.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        logger: logging.Logger,
    ) -> None:
        stub = grpc_stdio_pb2_grpc.GRPCStdioStub(channel)
        self._call = stub.StreamStdio(empty_pb2.Empty())
        self._handlers = {
            grpc_stdio_pb2.StdioData.STDOUT: on_stdout,
            grpc_stdio_pb2.StdioData.STDERR: on_stderr,
        }
        self._logger = logger
        self._thread = threading.Thread(target=self._run, name="aog-plugins-stdio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._call:
                handler = self._handlers.get(item.channel)
                if handler is not None:
                    handler(item.data)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
                self._logger.debug("plugin stdio stream ended: %s", code)
        except Exception:
            self._logger.exception("plugin stdio handler failed")

    def close(self) -> None:
        """Cancel the stream and wait for the reader thread."""
        self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        self._thread.join(timeout=2.0)


class BrokerStream:
    """Holds GRPCBroker.StartStream open as go-plugin's host does (no broker features yet)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._closed = threading.Event()
        stub = grpc_broker_pb2_grpc.GRPCBrokerStub(channel)
        self._call = stub.StartStream(self._requests())

    def _requests(self) -> Iterator[grpc_broker_pb2.ConnInfo]:
        self._closed.wait()
        return
        yield  # pragma: no cover - makes this a generator

    def close(self) -> None:
        """End the stream."""
        self._closed.set()
        self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
