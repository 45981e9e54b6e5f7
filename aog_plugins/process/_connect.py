"""Host-side go-plugin services on a connected channel: health, shutdown, stdio, broker."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterable

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aog_plugins._proto import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)
from aog_plugins.errors import PluginConnectError, PluginUnhealthyError
from aog_plugins.handshake import HandshakeLine
from aog_plugins.transport import (
    HEALTH_SERVICE,
    is_connected,
    is_failing,
    make_stub,
    start_thread,
)

__all__ = [
    "STDIO_MAX_MESSAGE",
    "StdioPump",
    "health_check",
    "request_shutdown",
]


def health_check(
    channel: grpc.Channel,
    timeout: float,
    *,
    connecting: HandshakeLine | None = None,
    on_exit: Callable[[Callable[[object], None]], None] | None = None,
    on_lost: Callable[[Callable[[str], None]], None] | None = None,
    diagnose: Callable[[], str | None] | None = None,
) -> None:
    """Check ``grpc.health.v1`` service ``plugin``; UNIMPLEMENTED counts as reachable.

    With ``connecting`` (the handshake of the plugin a new channel goes to: one just
    started, or one reattached) the call also waits for the channel to connect
    (``wait_for_ready``), so connecting and checking take one round trip instead of a
    readiness poll plus a call; a plugin that cannot be reached within ``timeout`` gives
    :class:`PluginConnectError` naming its address. ``on_exit`` (a process's
    ``add_exit_callback``) ends the wait as soon as the plugin exits; ``on_lost`` (a
    multiplexed connection's :meth:`~aog_plugins.transport.Mux.on_lost`) as soon as the
    only connection to the plugin has ended, with its reason. ``diagnose`` is asked once,
    when a connection attempt has failed while the call waits: a reason it returns (e.g.
    a TLS certificate that is not the pinned one) ends the wait at once, with that reason,
    instead of grpcio retrying until ``timeout``.
    """
    stub = make_stub(health_pb2_grpc.HealthStub, channel)
    request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)
    call = stub.Check.future(request, timeout=timeout, wait_for_ready=connecting is not None)
    exited = "it exited before the host had connected"
    ended: dict[str, str] = {}  # why the wait was given up: "exit" and/or "lost"

    def give_up(kind: str, why: str) -> None:
        ended.setdefault(kind, why)
        call.cancel()

    if on_exit is not None:
        on_exit(lambda _process: give_up("exit", exited))
    if on_lost is not None:
        on_lost(lambda reason: give_up("lost", f"its multiplexed connection ended: {reason}"))
    try:
        reply = _result(call, channel, diagnose, give_up)
    except grpc.FutureCancelledError as exc:
        where = f" at {connecting.network} {connecting.address}" if connecting else ""
        # An exit ends the connection too.
        why = ended.get("exit") or ended.get("lost") or ended.get("refused") or exited
        raise PluginConnectError(f"could not connect to the plugin{where}: {why}") from exc
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return
        if connecting is not None and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            _raise_if_not_connected(channel, connecting, timeout)
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise PluginConnectError(
            f"health check failed: {getattr(code, 'name', code)}: {detail}"
        ) from exc
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise PluginUnhealthyError(f"the plugin's health service reports {status} for 'plugin'")


_DIAGNOSE_EVERY = 0.05
"""Seconds between looks at a connecting channel's state, while a ``diagnose`` waits."""


def _result(
    call: grpc.Future[health_pb2.HealthCheckResponse],
    channel: grpc.Channel,
    diagnose: Callable[[], str | None] | None,
    give_up: Callable[[str, str], None],
) -> health_pb2.HealthCheckResponse:
    """``call.result()``; with ``diagnose``, asked once the channel's connecting fails
    (grpcio only retries, and a wait_for_ready call waits out its deadline)."""
    while diagnose is not None:
        try:
            return call.result(timeout=_DIAGNOSE_EVERY)
        except grpc.FutureTimeoutError:
            pass
        if is_failing(channel):
            why, diagnose = diagnose(), None
            if why:
                give_up("refused", why)
    return call.result()


def _raise_if_not_connected(channel: grpc.Channel, line: HandshakeLine, timeout: float) -> None:
    # Not grpc.channel_ready_future(): its polling thread outlives this check, and the
    # caller closes the channel next (a "Channel closed!" traceback from that thread).
    if not is_connected(channel):
        raise PluginConnectError(
            f"could not connect to the plugin at {line.network} {line.address} within "
            f"{timeout:.1f}s: the plugin printed its handshake but does not accept "
            "connections there (or the TLS handshake fails)"
        )


def request_shutdown(channel: grpc.Channel, timeout: float) -> None:
    """Ask the plugin to exit (GRPCController.Shutdown); errors are expected and ignored."""
    # The server usually dies mid-call (UNAVAILABLE); a plugin without the controller
    # answers UNIMPLEMENTED; a channel closed meanwhile (the plugin exited) refuses the
    # call with a ValueError. Either way the kill ladder goes on.
    with contextlib.suppress(grpc.RpcError, ValueError):
        stub = make_stub(grpc_controller_pb2_grpc.GRPCControllerStub, channel)
        stub.Shutdown(grpc_controller_pb2.Empty(), timeout=max(timeout, 0.05))


STDIO_MAX_MESSAGE = 4 * 1024 * 1024
"""Largest GRPCStdio message the host accepts (Go plugins send a few KiB at a time)."""
STDIO_CHUNK = 64 * 1024
"""Output is handed to the stdout/stderr handlers in pieces of at most this size."""
_TOO_BIG = re.compile(r"larger than max \((\d+) vs")


class StdioPump:
    """Reads GRPCStdio.StreamStdio on a daemon thread and hands the bytes on.

    A Go plugin blocks once ~64 KiB of unread stdout/stderr pile up, so this starts
    right after connecting and reads until the stream ends. ``channel`` is the pump's own,
    opened with ``max_receive_message_length`` = :data:`STDIO_MAX_MESSAGE`: a plugin that
    sends a bigger message (one 200 MiB write, say) costs the host no more than that. Such a
    message is dropped and counted in :attr:`dropped`, one WARNING record says so (later
    ones go to DEBUG), and the stream is opened again (while the plugin still holds the
    dropped one, the pump asks again, backing off, until it lets go, fails or the pump is
    closed). Handlers get at most
    :data:`STDIO_CHUNK` bytes per call. The pump closes ``channel`` in :meth:`close`.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        logger: logging.Logger,
    ) -> None:
        self._channel = channel
        self._stub = grpc_stdio_pb2_grpc.GRPCStdioStub(channel)
        self._handlers = {
            grpc_stdio_pb2.StdioData.STDOUT: on_stdout,
            grpc_stdio_pb2.StdioData.STDERR: on_stderr,
        }
        self._logger = logger
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self.dropped = 0
        """Bytes of plugin output dropped (messages over STDIO_MAX_MESSAGE)."""
        self.dropped_messages = 0
        # The stream is opened on the pump's thread: grpcio starts a thread of its own for
        # it, and that start (a wait for a CPU on a loaded host) stays off launch()'s path.
        self._call: grpc.CallIterator[grpc_stdio_pb2.StdioData] | None = None
        self._thread = threading.Thread(target=self._run, name="aog-plugins-stdio", daemon=True)
        start_thread(self._thread)

    def _run(self) -> None:
        busy = 0  # ALREADY_EXISTS answers in a row
        if not self._reopen():
            return
        while True:
            try:
                assert self._call is not None  # opened by _reopen()
                self._pump(self._call)
                return
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self._count_drop(exc)
                    busy = 0
                elif code == grpc.StatusCode.ALREADY_EXISTS and self.dropped_messages:
                    # The plugin has not yet let go of the stream we dropped. It will (or
                    # it exits and the stream fails otherwise): ask again, backing off,
                    # until then or until close(). A fixed number of tries gave up on a
                    # plugin that was merely slow under load, and all later output was lost.
                    busy += 1
                    if busy == 50:
                        self._logger.debug("plugin stdio: the plugin still holds the old stream")
                    if self._stop.wait(min(0.02 * busy, 1.0)):
                        return
                else:
                    if code not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
                        self._logger.debug("plugin stdio stream ended: %s", code)
                    return
                if not self._reopen():
                    return

    def _pump(self, call: Iterable[grpc_stdio_pb2.StdioData]) -> None:
        for item in call:
            handler = self._handlers.get(item.channel)
            if handler is None:
                continue
            data = item.data
            for start in range(0, len(data), STDIO_CHUNK):
                try:
                    handler(data[start : start + STDIO_CHUNK])
                except Exception:
                    # The output goes on being read: a Go plugin blocks once ~64 KiB of it
                    # are left unread, so a failing callback must not stop the reader.
                    self._logger.exception("plugin stdio handler failed (the output goes on)")

    def _count_drop(self, exc: grpc.RpcError) -> None:
        details = exc.details() if isinstance(exc, grpc.Call) else ""
        match = _TOO_BIG.search(details or "")
        size = int(match.group(1)) if match else 0
        self.dropped += size
        self.dropped_messages += 1
        level = logging.WARNING if self.dropped_messages == 1 else logging.DEBUG
        self._logger.log(
            level,
            "plugin output over GRPCStdio: dropped a message of %d bytes (more than %d); "
            "%d bytes in %d messages dropped so far (only the first drop is logged at WARNING)",
            size,
            STDIO_MAX_MESSAGE,
            self.dropped,
            self.dropped_messages,
        )

    def _reopen(self) -> bool:
        """Open the stream (again); False once closed."""
        if self.dropped_messages > 3 and self._stop.wait(min(0.05 * self.dropped_messages, 1.0)):
            return False  # (the wait backs off from a plugin that keeps at it)
        with self._lock:
            if self._closed:
                return False
            self._call = self._stub.StreamStdio(empty_pb2.Empty())
        return True

    def close(self) -> None:
        """Cancel the stream, wait for the reader thread and close the pump's channel."""
        with self._lock:
            self._closed = True
            self._stop.set()
            if self._call is not None:
                self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        self._thread.join(timeout=2.0)
        self._channel.close()
