"""The GRPCBroker's bookkeeping, the same on the host and on the plugin side.

Either side serves a gRPC server under a numeric id (:meth:`BrokerCore.accept_and_serve`)
and tells the other side where, in a connection-info message on the broker stream; the
other side dials by id (:meth:`BrokerCore.dial`). Sub-connections use the main
connection's network and, with AutoMTLS, its certificates: the side that serves presents
its own certificate and requires exactly the peer's, the side that dials presents its own
and pins the peer's. Certificates grpcio cannot handle (Go's P-521) go through the TLS
relay, both ways.

This module knows nothing of protobuf: each side converts its stream's messages to and
from :class:`ConnInfo` and hands them to :meth:`BrokerCore.received`.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from aog_plugins.errors import BrokerError, ConfigurationError
from aog_plugins.transport._brokerbind import (
    BrokerServer,
    BrokerTLS,
    ConnInfo,
    Knock,
    bind_multiplexed,
    bind_served,
    stream_tls,
)
from aog_plugins.transport._dial import ClientTLS, DialTarget, open_channel
from aog_plugins.transport._listen import grpc_target, pid_named_dir
from aog_plugins.transport._mux import Mux
from aog_plugins.transport._relay import Relay
from aog_plugins.transport._threads import signals_blocked
from aog_plugins.transport._tlsrelay import start_client_relay

__all__ = [
    "DIAL_TIMEOUT",
    "BrokerCore",
    "BrokerServer",
    "BrokerTLS",
    "ConnInfo",
    "Knock",
    "dial_timeout",
]

_log = logging.getLogger("aog_plugins.broker")

DIAL_TIMEOUT = 5.0
"""How long :meth:`BrokerCore.dial` waits for the peer's connection info (go-plugin: 5 s)."""

_SERVER_OPTIONS: list[tuple[str, object]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.so_reuseport", 0),
]


class BrokerCore:
    """Connection bookkeeping of one broker stream.

    ``send`` puts a :class:`ConnInfo` on the stream (it raises :class:`BrokerError` once
    the stream is gone). ``network`` is the main connection's (``unix`` or ``tcp``);
    unix sockets go into ``socket_dir`` (a private temporary directory when None).
    ``check_address(network, address)`` may refuse where the peer asks us to dial.
    """

    def __init__(
        self,
        send: Callable[[ConnInfo], None],
        *,
        network: str,
        socket_dir: str | None,
        tls: BrokerTLS | None,
        check_address: Callable[[str, str], None] | None = None,
        socket_group: str | None = None,
        port_range: tuple[int, int] = (10000, 25000),
        mux: Callable[[], Mux | None] | None = None,
    ) -> None:
        if network not in ("unix", "tcp"):
            raise ConfigurationError(f"broker network must be unix or tcp, got {network!r}")
        self._send = send
        self._network = network
        self._socket_dir = socket_dir
        self._own_dir: str | None = None
        self._tls = tls
        self._check = check_address
        self._group = socket_group
        self._ports = port_range
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: dict[int, collections.deque[ConnInfo]] = {}
        self._servers: list[BrokerServer] = []
        self._channels: list[grpc.Channel] = []
        self._relays: list[Relay] = []
        self._closed = False
        self._mux_source = mux
        self.on_info: Callable[[], None] | None = None
        """Called after connection info arrived (the plugin side watches several cores)."""
        self._acks: dict[int, collections.deque[Knock]] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def _mux(self) -> Mux | None:
        return None if self._mux_source is None else self._mux_source()

    def next_id(self) -> int:
        """A fresh id (1, 2, ...) for :meth:`accept_and_serve` on this side."""
        with self._id_lock:
            return next(self._ids) & 0xFFFFFFFF

    # ---- the stream -------------------------------------------------------------------
    def received(self, info: ConnInfo) -> None:
        """Take one message from the peer (called by the stream's reader)."""
        if info.knock is not None and info.knock.knock:
            if info.knock.ack:
                with self._cond:
                    self._acks.setdefault(info.service_id, collections.deque()).append(info.knock)
                    self._cond.notify_all()
                return
            # The peer will open a stream for this id next; without multiplexing, say at
            # once that it cannot, instead of letting it time out.
            mux = self._mux()
            if mux is None:
                error = "gRPC broker multiplexing is not enabled on this connection"
            elif not mux.expect(info.service_id):
                error = f"no listener for broker id {info.service_id}"
            else:
                error = ""
            ack = Knock(knock=True, ack=True, error=error)
            with contextlib.suppress(BrokerError):
                self._send(ConnInfo(info.service_id, knock=ack))
            return
        with self._cond:
            if self._closed:
                return
            self._pending.setdefault(info.service_id, collections.deque()).append(info)
            self._cond.notify_all()
        if self.on_info is not None:
            self.on_info()

    @property
    def multiplexed(self) -> bool:
        """Whether sub-connections are multiplexed streams (no info to wait for)."""
        return self._mux() is not None

    def has_info(self, service_id: int) -> bool:
        """Whether connection info for ``service_id`` waits for a :meth:`dial`."""
        with self._cond:
            return bool(self._pending.get(service_id))

    # ---- serving ----------------------------------------------------------------------
    def accept_and_serve(
        self,
        service_id: int,
        register: Callable[[grpc.Server], None],
        *,
        max_workers: int = 16,
    ) -> BrokerServer:
        """Serve a new gRPC server (``register`` adds the servicers) under ``service_id``
        and tell the peer where; it runs until :meth:`BrokerServer.stop` or :meth:`close`."""
        if self._closed:
            raise BrokerError("the broker is closed: the plugin or its host has gone away")
        if not 0 < service_id <= 0xFFFFFFFF:
            raise ConfigurationError(f"broker ids are 1..2**32-1, got {service_id}")
        with signals_blocked():  # grpcio's threads (see _threads)
            server = grpc.server(
                ThreadPoolExecutor(max_workers, thread_name_prefix="aog-plugins-broker"),
                options=_SERVER_OPTIONS,
            )
        register(server)
        mux = self._mux()
        try:
            if mux is None:
                address, cleanup = bind_served(
                    server,
                    self._network,
                    self._dir(),
                    self._tls,
                    group=self._group,
                    ports=self._ports,
                )
            else:
                address, cleanup = bind_multiplexed(server, mux, service_id, self._dir(), self._tls)
        except BaseException:
            server.stop(None)
            raise
        with signals_blocked():
            server.start()
        network = self._network if mux is None else "unix"  # mux: the private socket
        handle = BrokerServer(service_id, network, address, server, cleanup)
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                self._servers.append(handle)
        if closed:
            handle.stop(None)
            raise BrokerError("the broker closed while the server was starting")
        if mux is not None:
            return handle  # the peer knocks for this id when it dials
        try:
            self._send(ConnInfo(service_id, self._network, address))
        except BaseException:
            handle.stop(None)
            raise
        return handle

    def _dir(self) -> str:
        if self._socket_dir is not None:
            return self._socket_dir
        with self._cond:
            if self._own_dir is None:
                self._own_dir = pid_named_dir("broker")
            return self._own_dir

    # ---- dialing ----------------------------------------------------------------------
    def dial(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> grpc.Channel:
        """A channel to what the peer serves under ``service_id``, once its connection
        info has arrived (waiting up to ``timeout`` s); multiplexed, once the peer has
        acknowledged the knock for it (a refusal raises at once). The channel is closed
        with the broker; closing it earlier is fine."""
        target = self.dial_target(service_id, timeout)
        channel = open_channel(target.target, target.tls)
        with self._cond:
            if self._closed:
                channel.close()
                raise BrokerError("the broker closed while dialing")
            self._channels.append(channel)
        return channel

    def dial_target(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> DialTarget:
        """Where a channel to what the peer serves under ``service_id`` goes, with its
        pinned TLS (waiting as :meth:`dial` does): for a channel of the caller's own, such
        as a ``grpc.aio`` one, which the caller closes. A relay it needs (P-521) closes
        with the broker."""
        mux = self._mux()
        if mux is not None:
            return self._target_mux(mux, service_id, timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise BrokerError("the broker is closed: the plugin or its host has gone away")
                queue = self._pending.get(service_id)
                if queue:
                    info = queue.popleft()
                    if not queue:
                        del self._pending[service_id]
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise dial_timeout(service_id, timeout)
                self._cond.wait(left)
        return self._target(info)

    def _target_mux(self, mux: Mux, service_id: int, timeout: float) -> DialTarget:
        def knock() -> None:
            self._knock(service_id, timeout)

        if self._closed:
            raise BrokerError("the broker is closed: the plugin or its host has gone away")
        # Knock now, not when grpcio first connects: a refused or unanswered knock is
        # this dial's error, instead of a channel whose calls wait for their deadline.
        try:
            path = mux.forward(tls=stream_tls(self._tls), knock=knock, open_first=True)
        except ConnectionError as exc:
            raise BrokerError(
                f"cannot open a stream for broker id {service_id}: the multiplexed "
                f"connection is closed (the plugin or its host has gone away)"
            ) from exc
        tls = self._tls
        native = None if tls is None or not tls.grpcio_native else tls
        return DialTarget(
            f"unix:{path}", None if native is None else ClientTLS(native.ours, native.peer_cert_der)
        )

    def _knock(self, service_id: int, timeout: float) -> None:
        """Announce our next stream for ``service_id`` and wait for the peer's ack."""
        self._send(ConnInfo(service_id, knock=Knock(knock=True)))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                acks = self._acks.get(service_id)
                if acks:
                    ack = acks.popleft()
                    break
                if self._closed:
                    raise BrokerError("the broker is closed: the plugin or its host has gone away")
                left = deadline - time.monotonic()
                if left <= 0:
                    # A Go peer does not answer a knock for an id it does not serve.
                    raise BrokerError(
                        f"timeout waiting for the answer to the knock for multiplexed broker "
                        f"id {service_id} ({timeout:g}s): the other side did not "
                        f"accept_and_serve that id"
                    )
                self._cond.wait(left)
        if ack.error:
            raise BrokerError(
                f"the other side refused multiplexed broker id {service_id} ({ack.error}): "
                f"dial an id only once the other side serves it (accept_and_serve)"
            )

    def _target(self, info: ConnInfo) -> DialTarget:
        if info.network not in ("unix", "tcp"):
            raise BrokerError(
                f"broker id {info.service_id}: unknown network {info.network!r} "
                f"(address {info.address!r})"
            )
        if self._check is not None:
            self._check(info.network, info.address)
        tls = self._tls
        if tls is None:
            return DialTarget(grpc_target(info.network, info.address))
        if tls.grpcio_native:
            return DialTarget(
                grpc_target(info.network, info.address), ClientTLS(tls.ours, tls.peer_cert_der)
            )
        relay = start_client_relay(
            self._dir(), (info.network, info.address), tls.ours, tls.peer_cert_der
        )
        with self._cond:
            closed = self._closed
            if not closed:
                self._relays.append(relay)
        if closed:
            relay.close()
            raise BrokerError("the broker closed while dialing")
        return DialTarget(f"unix:{relay.address}")

    # ---- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop every server, close every channel and relay (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            servers, self._servers = self._servers, []
            channels, self._channels = self._channels, []
            relays, self._relays = self._relays, []
            self._pending.clear()
            self._cond.notify_all()
        for channel in channels:
            channel.close()
        for server in servers:
            server.stop(None)
        for relay in relays:
            relay.close()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)


def dial_timeout(service_id: int, timeout: float) -> BrokerError:
    """The error of a dial that waited ``timeout`` s for ``service_id``'s connection info."""
    return BrokerError(
        f"timeout waiting for connection info for broker id {service_id} "
        f"({timeout:g}s): the other side did not accept_and_serve that id"
    )
