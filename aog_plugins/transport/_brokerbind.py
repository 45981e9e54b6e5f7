"""What a broker serves on: the connection-info types, the server handle and the binding
of a sub-connection's gRPC server (its own socket, or a route of the multiplexed session)."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from aog_plugins._proto import grpc_broker_pb2
from aog_plugins.errors import BrokerError
from aog_plugins.handshake import CertificateBundle, der_to_pem, grpcio_can_verify
from aog_plugins.transport._listen import (
    add_unix_port,
    grpc_target,
    listen,
    private_socket_dir,
    set_group_writable,
)
from aog_plugins.transport._mux import Mux, StreamTLS
from aog_plugins.transport._relay import Relay
from aog_plugins.transport._tlsrelay import start_server_relay

__all__ = [
    "BrokerServer",
    "BrokerTLS",
    "ConnInfo",
    "Knock",
    "bind_multiplexed",
    "bind_served",
    "conninfo_from_pb",
    "conninfo_to_pb",
    "stream_tls",
]


@dataclass(frozen=True)
class Knock:
    """The multiplexing handshake inside a connection-info message."""

    knock: bool = False
    ack: bool = False
    error: str = ""


@dataclass(frozen=True)
class ConnInfo:
    """One broker-stream message: where the sender serves ``service_id``, or a knock."""

    service_id: int
    network: str = ""
    address: str = ""
    knock: Knock | None = None


@dataclass(frozen=True)
class BrokerTLS:
    """This side's AutoMTLS certificate and the peer's certificate it pins."""

    ours: CertificateBundle
    peer_cert_der: bytes

    @property
    def grpcio_native(self) -> bool:
        """Whether grpcio can do this TLS itself (no relay needed)."""
        return grpcio_can_verify(self.ours.cert_der) and grpcio_can_verify(self.peer_cert_der)


def conninfo_to_pb(info: ConnInfo) -> grpc_broker_pb2.ConnInfo:
    """The broker stream's wire message for ``info`` (both sides send the same one)."""
    msg = grpc_broker_pb2.ConnInfo(
        service_id=info.service_id, network=info.network, address=info.address
    )
    if info.knock is not None:
        msg.knock.CopyFrom(
            grpc_broker_pb2.ConnInfo.Knock(
                knock=info.knock.knock, ack=info.knock.ack, error=info.knock.error
            )
        )
    return msg


def conninfo_from_pb(msg: grpc_broker_pb2.ConnInfo) -> ConnInfo:
    """The :class:`ConnInfo` a broker stream message carries."""
    knock = None
    if msg.HasField("knock"):
        knock = Knock(msg.knock.knock, msg.knock.ack, msg.knock.error)
    return ConnInfo(msg.service_id, msg.network, msg.address, knock)


class BrokerServer:
    """A gRPC server one side serves on a broker id; :meth:`stop` ends it."""

    def __init__(
        self,
        service_id: int,
        network: str,
        address: str,
        server: grpc.Server,
        cleanup: Callable[[], None],
    ) -> None:
        self.service_id = service_id
        self.network = network
        self.address = address
        self.server = server
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self, grace: float | None = 0.5) -> None:
        """Stop serving (calls in flight get ``grace`` seconds) and remove the socket."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.server.stop(grace).wait(5.0)
        self._cleanup()

    def __repr__(self) -> str:
        return f"<BrokerServer id={self.service_id} {self.network}:{self.address}>"


def stream_tls(tls: BrokerTLS | None) -> StreamTLS | None:
    """TLS that Python's ssl does per stream (None: none, or grpcio does it)."""
    if tls is None or tls.grpcio_native:
        return None
    return (tls.ours, tls.peer_cert_der)


def bind_served(
    server: grpc.Server,
    network: str,
    directory: str,
    tls: BrokerTLS | None,
    *,
    group: str | None,
    ports: tuple[int, int],
) -> tuple[str, Callable[[], None]]:
    """Serve ``server`` on a new socket of ``network`` (TLS as ``tls`` says, through
    the relay when grpcio cannot); returns the address and the cleanup."""
    paths: list[str] = []
    relay: list[Relay] = []
    private_dir: list[str] = []

    def cleanup() -> None:
        for r in relay:
            r.close()
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for d in private_dir:
            shutil.rmtree(d, ignore_errors=True)

    if tls is not None and not tls.grpcio_native:
        # grpcio serves h2c on a private socket; the relay does the TLS.
        made, private = private_socket_dir("relay", directory)
        private_dir.append(made)
        if not add_unix_port(server, private):
            cleanup()
            raise BrokerError(f"cannot listen on the private socket {private!r}")

        def bind(network: str, address: str) -> bool:
            try:
                relay.append(
                    start_server_relay((network, address), private, tls.ours, tls.peer_cert_der)
                )
            except OSError:
                return False
            return True

    else:
        creds = None
        if tls is not None:
            creds = grpc.ssl_server_credentials(
                [(tls.ours.key_pem, tls.ours.cert_pem)],
                root_certificates=der_to_pem(tls.peer_cert_der),
                require_client_auth=True,
            )

        def bind(network: str, address: str) -> bool:
            target = grpc_target(network, address)
            try:
                if creds is None:
                    return bool(server.add_insecure_port(target))
                return bool(server.add_secure_port(target, creds))
            except RuntimeError:
                return False

    try:
        address = listen(
            network,
            bind,
            socket_dir=directory,
            min_port=ports[0],
            max_port=ports[1],
        )
        if network == "unix":
            paths.append(address)
            if group:
                set_group_writable(address, group, 0o660)
    except BaseException:
        cleanup()
        raise
    return address, cleanup


def bind_multiplexed(
    server: grpc.Server, mux: Mux, service_id: int, directory: str, tls: BrokerTLS | None
) -> tuple[str, Callable[[], None]]:
    """Serve ``server`` on a private socket for the streams the peer knocks ``service_id``
    for; returns the socket path and the cleanup."""
    private_dir, private = private_socket_dir("brk", directory)
    creds = None
    if tls is not None and tls.grpcio_native:
        creds = grpc.ssl_server_credentials(
            [(tls.ours.key_pem, tls.ours.cert_pem)],
            root_certificates=der_to_pem(tls.peer_cert_der),
            require_client_auth=True,
        )
    if not add_unix_port(server, private, creds):
        shutil.rmtree(private_dir, ignore_errors=True)
        raise BrokerError(f"cannot listen on the private socket {private!r}")
    mux.route(service_id, private, stream_tls(tls))

    def cleanup() -> None:
        mux.unroute(service_id)
        shutil.rmtree(private_dir, ignore_errors=True)

    return private, cleanup
