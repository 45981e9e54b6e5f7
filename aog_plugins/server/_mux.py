"""The plugin's side of PLUGIN_MULTIPLEX_GRPC: one yamux connection from the host."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import grpc

from aog_plugins.errors import ConfigurationError
from aog_plugins.transport import (
    Bind,
    MuxListener,
    StreamTLS,
    add_unix_port,
    private_socket_dir,
)

__all__ = ["serve_multiplexed"]


def serve_multiplexed(
    server: grpc.Server,
    *,
    socket_dir: str | None,
    credentials: grpc.ServerCredentials | None,
    stream_tls: StreamTLS | None,
    listen: Callable[[Bind], str],
) -> tuple[str, MuxListener, str]:
    """grpcio serves on a private socket (TLS by grpcio with ``credentials``, or by our
    ssl per stream with ``stream_tls``); the handshake address accepts the host's one
    connection and runs yamux on it. Returns the address, the listener and the private
    directory (the caller removes it)."""
    # In the host's socket dir when it gave one (it removes that); otherwise named like a
    # host's socket dir, with our pid, so stale cleanup removes it after a SIGKILL.
    private_dir, private = private_socket_dir("mux", socket_dir)
    try:
        if not add_unix_port(server, private, credentials):
            raise ConfigurationError(f"cannot listen on unix socket {private!r}")
        return _listen_multiplexed(private, private_dir, stream_tls, listen)
    except BaseException:
        shutil.rmtree(private_dir, ignore_errors=True)
        raise


def _listen_multiplexed(
    private: str, private_dir: str, stream_tls: StreamTLS | None, listen: Callable[[Bind], str]
) -> tuple[str, MuxListener, str]:
    listeners: list[MuxListener] = []

    def bind(network: str, address: str) -> bool:
        listener = MuxListener(network, address, private, stream_tls)
        try:
            listener.start()
        except OSError:
            return False
        listeners.append(listener)
        return True

    address = listen(bind)
    return address, listeners[-1], private_dir
