"""One relayed connection's sockets: dialing and listening on a unix path or loopback TCP,
the pinned TLS handshake (cut short by the relay's wake-up pipe when given), and the
relay's private directory. Used by :mod:`._tlsrelay`."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import tempfile
import time

from aog_plugins.errors import HostResourceError
from aog_plugins.handshake import CertificateBundle, split_host_port
from aog_plugins.transport._relay import _own_context, _pin, _trust

__all__ = [
    "dial",
    "handshake",
    "listen_socket",
    "presented_certificate",
    "private_tmp",
    "verify_failure",
]


def _socket(network: str, address: str) -> tuple[socket.socket, str | tuple[str, int]]:
    """A stream socket for ``address`` (a unix path or host:port) and its sockaddr."""
    if network == "unix":
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), address
    host, port = split_host_port(address)
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)


def dial(network: str, address: str, timeout: float) -> socket.socket:
    sock, target = _socket(network, address)
    if network != "unix":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except BaseException:
        sock.close()
        raise
    return sock


def handshake(
    ctx: ssl.SSLContext,
    raw: socket.socket,
    *,
    server: bool,
    pinned: bytes,
    timeout: float,
    session: ssl.SSLSession | None = None,
    wake: int | None = None,
) -> ssl.SSLSocket:
    """The TLS handshake on ``raw``, pinned; at most ``timeout`` s, and with ``wake``
    (a pipe's read end) given, given up as soon as it is readable."""
    raw.settimeout(timeout)
    tls = ctx.wrap_socket(
        raw,
        server_side=server,
        server_hostname=None if server else "localhost",
        do_handshake_on_connect=False,
        session=session,
    )
    try:
        if wake is None:
            tls.do_handshake()
        else:
            _handshake_or_wake(tls, wake, timeout)
        _pin(pinned)(tls)
    except BaseException:
        tls.close()
        raise
    return tls


def presented_certificate(
    network: str, address: str, ours: CertificateBundle, directory: str, timeout: float
) -> bytes:
    """The certificate the TLS server at ``address`` presents to a client showing ``ours``,
    NOT verified: for telling why a pinned connection fails, never for trusting it.
    ``directory`` holds the key file for the moment OpenSSL reads it where there is no
    memfd. OSError (ssl.SSLError included) when there is no TLS handshake to be had."""
    ctx = _client_context(ours, directory, None)
    with ctx.wrap_socket(dial(network, address, timeout), server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the TLS server presented no certificate")
    return der


def verify_failure(
    network: str,
    address: str,
    ours: CertificateBundle,
    *,
    pinned: bytes,
    directory: str,
    timeout: float,
) -> str | None:
    """Why OpenSSL refuses ``pinned`` (the whole trust store, as the relays have it) when
    the server at ``address`` presents it: expired, not yet valid, not for "localhost"...;
    None when the handshake succeeds or fails for another reason."""
    ctx = _client_context(ours, directory, pinned)
    try:
        raw = dial(network, address, timeout)
    except OSError:
        return None
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost"):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc.reason or exc)
    except OSError:
        return None


def _client_context(
    ours: CertificateBundle, directory: str, pinned: bytes | None
) -> ssl.SSLContext:
    tmp = private_tmp(directory)
    try:
        ctx = _own_context(ssl.PROTOCOL_TLS_CLIENT, ours, tmp)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(tmp)
    if pinned is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        _trust(ctx, pinned)
    return ctx


def _handshake_or_wake(tls: ssl.SSLSocket, wake: int, timeout: float) -> None:
    """``tls.do_handshake()`` on a non-blocking socket, polling it and ``wake`` in turn."""
    deadline = time.monotonic() + timeout
    tls.setblocking(False)
    poller = select.poll()
    poller.register(wake, select.POLLIN)
    while True:
        try:
            tls.do_handshake()
            return
        except ssl.SSLWantReadError:
            poller.register(tls.fileno(), select.POLLIN)
        except ssl.SSLWantWriteError:
            poller.register(tls.fileno(), select.POLLOUT)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the TLS handshake timed out")
        if any(fd == wake for fd, _ in poller.poll(left * 1000)):
            raise ConnectionAbortedError("the relay is closing")


def private_tmp(directory: str) -> str:
    try:
        return tempfile.mkdtemp(prefix="relay-", dir=directory)
    except OSError as exc:
        raise HostResourceError(
            f"cannot create the TLS relay's directory in {directory}: {exc}",
            diagnosis="free space or inodes in the temp directory (TMPDIR)",
        ) from exc


def listen_socket(network: str, address: str) -> tuple[socket.socket, str]:
    sock, bound = _socket(network, address)
    if network != "unix":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(bound)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, address
