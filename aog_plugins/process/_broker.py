"""The host's GRPCBroker: extra connections to and from the plugin, by id.

The host opens ``plugin.GRPCBroker/StartStream`` right after connecting (as go-plugin's
host does) and keeps it for the life of the plugin process; :class:`Broker` is what
``Plugin.broker`` returns.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Literal, Protocol, cast

import grpc

from aog_plugins._proto import grpc_broker_pb2, grpc_broker_pb2_grpc
from aog_plugins.errors import BrokerError
from aog_plugins.handshake import HandshakeLine
from aog_plugins.process._address import check_plugin_address
from aog_plugins.transport import (
    DIAL_TIMEOUT,
    NO_LIMIT_BEYOND,
    BrokerCore,
    BrokerServer,
    BrokerTLS,
    ClientTLS,
    ConnInfo,
    DialTarget,
    Mux,
    conninfo_from_pb,
    conninfo_to_pb,
    seconds,
    start_thread,
)

__all__ = ["Broker"]

_log = logging.getLogger("aog_plugins.broker")


def _dial_timeout(timeout: float) -> float:
    """A dial's wait: a positive number of seconds, infinity (or over ten years) none."""
    return min(seconds("timeout", timeout, finite=False), NO_LIMIT_BEYOND)


_END = object()


class _Cancellable(Protocol):
    def cancel(self) -> bool: ...


class Broker:
    """Sub-connections between this host and one plugin process, by numeric id.

    * :meth:`next_id` reserves an id; :meth:`accept_and_serve` serves a gRPC server on a
      new socket under that id and tells the plugin where (the plugin then dials it);
    * :meth:`dial` connects to what the plugin serves under an id.

    Sub-connections use the main connection's network and AutoMTLS certificates, and are
    closed when the plugin exits or is killed (a restarted plugin has a new broker).
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        network: str,
        socket_dir: str | None,
        tls: BrokerTLS | None,
        check_address: Callable[[str, str], None] | None = None,
        socket_group: str | None = None,
        mux: Callable[[], Mux | None] | None = None,
    ) -> None:
        self._outbox: queue.Queue[object] = queue.Queue()
        self._closed = threading.Event()
        self._core = BrokerCore(
            self._send,
            network=network,
            socket_dir=socket_dir,
            tls=tls,
            check_address=check_address,
            socket_group=socket_group,
            mux=mux,
        )
        self._stub = grpc_broker_pb2_grpc.GRPCBrokerStub(channel)
        # The stream is opened on the reader's thread: grpcio starts two threads for it
        # (request iterator, polling), and those starts stay off launch()'s path.
        self._call_lock = threading.Lock()
        self._call: grpc.CallIterator[grpc_broker_pb2.ConnInfo] | None = None
        self._reader = threading.Thread(target=self._read, name="aog-plugins-broker", daemon=True)
        start_thread(self._reader)

    def _requests(self) -> Iterator[grpc_broker_pb2.ConnInfo]:
        while True:
            item = self._outbox.get()
            if item is _END:
                return
            assert isinstance(item, ConnInfo)
            yield conninfo_to_pb(item)

    def _read(self) -> None:
        with self._call_lock:
            if self._closed.is_set():
                return
            self._call = self._stub.StartStream(self._requests())
        try:
            for msg in self._call:
                self._core.received(conninfo_from_pb(msg))
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code is not grpc.StatusCode.CANCELLED:
                _log.debug("broker stream ended: %s", code)
        except Exception:
            _log.exception("broker stream reader failed")

    def _send(self, info: ConnInfo) -> None:
        if self._closed.is_set():
            raise BrokerError("the broker is closed: the plugin or this host has gone away")
        self._outbox.put(info)

    @classmethod
    def for_launched(
        cls,
        channel: grpc.Channel,
        line: HandshakeLine,
        socket_dir: str,
        pid: int,
        *,
        tls: ClientTLS | None,
        group: str | None,
        mux: Mux | None,
    ) -> Broker:
        """The broker of a plugin this host started: the addresses it sends obey the
        handshake's address rules (loopback TCP, or a socket in its socket dir)."""

        def check(network: str, address: str) -> None:
            kind: Literal["unix", "tcp"] = "tcp" if network == "tcp" else "unix"
            check_plugin_address(replace(line, network=kind, address=address), socket_dir, pid)

        return cls(
            channel,
            network=line.network,
            socket_dir=socket_dir,
            tls=None if tls is None else BrokerTLS(tls.host, tls.plugin_cert_der),
            check_address=check,
            socket_group=group,
            mux=None if mux is None else (lambda: mux),
        )

    # ---- public -----------------------------------------------------------------------
    def next_id(self) -> int:
        """A fresh broker id for :meth:`accept_and_serve`."""
        return self._core.next_id()

    def accept_and_serve(
        self, service_id: int, register_servicers: Callable[[grpc.Server], None]
    ) -> BrokerServer:
        """Serve the servicers ``register_servicers(server)`` adds under ``service_id`` and
        tell the plugin where. Returns at once (go-plugin's blocks: run it in a goroutine);
        the server runs until ``.stop()`` or until the plugin goes away."""
        return self._core.accept_and_serve(service_id, register_servicers)

    def dial(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> grpc.Channel:
        """A channel to what the plugin serves under ``service_id``; waits up to
        ``timeout`` s for the plugin's connection info (:class:`BrokerError` after).
        Multiplexed, it waits as long for the plugin's answer to the knock for the id, and
        raises :class:`BrokerError` at once if the plugin refuses it."""
        return self._core.dial(service_id, _dial_timeout(timeout))

    def dial_target(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> DialTarget:
        """Where :meth:`dial` would connect for ``service_id``, with the pinned TLS (waits
        the same way): for a channel of your own, e.g. ``transport.open_aio_channel``
        (``aog_plugins.aio``'s broker uses it). You close that channel."""
        return self._core.dial_target(service_id, _dial_timeout(timeout))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """End the stream and every sub-connection (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._outbox.put(_END)
        self._core.close()
        with self._call_lock:
            if self._call is not None:
                cast(_Cancellable, self._call).cancel()
        self._reader.join(timeout=2.0)
