"""A TLS relay for certificates grpcio cannot handle (Go's P-521 AutoMTLS keys).

grpcio's BoringSSL does not offer ecdsa_secp521r1_sha512 under TLS 1.3, so it can neither
verify a Go plugin's certificate nor accept a Go host's client certificate. Python's ``ssl``
(OpenSSL) can. The relay terminates mutual TLS itself, pinning exactly the peer's
certificate and presenting ours, and forwards plaintext over a private unix socket in a
0700 directory, where grpcio speaks h2c.

The main and broker connections are relayed by :mod:`._tlsrelay` (a thread per
connection). This module has what both use (the TLS context, the pinning) and the asyncio
pipes that the yamux streams (:mod:`._mux`) are relayed with: all of those share one
event loop thread; bytes move through transports with flow control (256 KiB reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Protocol

from aog_plugins.errors import HostResourceError, PluginConnectError
from aog_plugins.handshake import CertificateBundle, der_to_pem
from aog_plugins.transport._threads import start_thread

__all__ = ["Relay"]

_READ_SIZE = 256 * 1024
_HIGH_WATER = 4 * 1024 * 1024
_RESOURCE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
)


class _Loop:
    """The process-wide relay event loop, started on first use."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid = 0

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="aog-plugins-relay", daemon=True
                )
                start_thread(thread)
                cls._loop, cls._pid = loop, os.getpid()
            return cls._loop


def _run(coro: Awaitable[object], timeout: float | None = None) -> object:
    future: Future[object] = asyncio.run_coroutine_threadsafe(coro, _Loop.get())  # type: ignore[arg-type]
    return future.result(timeout)


class _Flow(Protocol):
    """The flow control a pipe asks of its peer's transport."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


class PipePeer(Protocol):
    """What a pipe forwards to: another pipe, or a multiplexed stream."""

    @property
    def transport(self) -> _Flow | None: ...

    @property
    def closed(self) -> asyncio.Future[None]: ...

    def send(self, data: bytes) -> None: ...

    def send_eof(self) -> None: ...

    def attach(self, peer: PipePeer) -> None: ...

    def abort(self) -> None: ...


class _Pipe(asyncio.Protocol):
    """One direction-pair endpoint: forwards what it reads to its peer, with backpressure."""

    def __init__(self, on_made: Callable[[_Pipe], object] | None = None) -> None:
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.peer: PipePeer | None = None
        self._pending: list[bytes] = []
        self._eof = False
        self._paused = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        with contextlib.suppress(AttributeError, NotImplementedError):
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
        if self._on_made is not None:
            # For TLS listeners this runs after the handshake: the peer cert is known.
            self._on_made(self)

    def attach(self, peer: PipePeer) -> None:
        self.peer = peer
        for chunk in self._pending:
            peer.send(chunk)
        self._pending.clear()
        if self._eof:
            peer.send_eof()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._pending.append(data)
        else:
            self.peer.send(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        if self.peer is not None:
            self.peer.send_eof()
        # Plain sockets half-close: keep our write side open until the peer finishes.
        # TLS has no half-close (asyncio warns if we ask), so there it just closes.
        return self.transport is None or self.transport.get_extra_info("sslcontext") is None

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_eof(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # TLS has no half-close
            self.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _pin(expected_der: bytes) -> Callable[[ssl.SSLObject | ssl.SSLSocket], None]:
    def check(obj: ssl.SSLObject | ssl.SSLSocket) -> None:
        if obj.getpeercert(binary_form=True) != expected_der:
            raise ssl.SSLError("peer certificate is not the pinned one")

    return check


def _context(side: int, ours: CertificateBundle, peer_der: bytes, tmp: str) -> ssl.SSLContext:
    ctx = _own_context(side, ours, tmp)
    _trust(ctx, peer_der)
    return ctx


def _own_context(side: int, ours: CertificateBundle, tmp: str) -> ssl.SSLContext:
    """A context with our certificate that trusts nothing yet (:func:`_trust` adds the
    peer): the costly part, which needs nothing from the peer."""
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        _load_cert_chain(ctx, ours, tmp)
    except OSError as exc:
        message = f"cannot load the TLS relay's own certificate and key: {exc}"
        if exc.errno in _RESOURCE_ERRNOS:
            raise HostResourceError(
                message,
                diagnosis="the host is out of memory, disk or file size limit (ulimit -f)",
            ) from exc
        raise PluginConnectError(message) from exc
    if side == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = True  # against "localhost", as go-plugin's certs say
    return ctx


def _trust(ctx: ssl.SSLContext, peer_der: bytes) -> None:
    # The peer's self-signed certificate is the whole trust store: nothing else verifies.
    ctx.load_verify_locations(cadata=der_to_pem(peer_der).decode("ascii"))


def _load_cert_chain(ctx: ssl.SSLContext, ours: CertificateBundle, tmp: str) -> None:
    """Load our certificate and private key into ``ctx``.

    Python's ssl only loads a key from a path. On Linux that path is an anonymous memory
    file (memfd) seen through /proc/self/fd: the key never touches a file system, and only
    a process allowed to ptrace us could read it. Elsewhere it is a file in ``tmp`` (a
    fresh 0700 dir only we can enter), created 0600 with O_EXCL|O_NOFOLLOW and unlinked
    as soon as OpenSSL has read it.
    """
    pem = ours.cert_pem + ours.key_pem  # one PEM with both: certfile alone is enough
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("aog-plugins-relay-key", os.MFD_CLOEXEC)
        try:
            _write_all(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    path = os.path.join(tmp, "key.pem")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        try:
            _write_all(fd, pem)
        finally:
            os.close(fd)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Relay:
    """A running relay: ``address`` is where its listener is; ``close()`` stops it all."""

    def __init__(self, address: str, server: asyncio.AbstractServer, tmp: str) -> None:
        self.address = address
        self._server = server
        self._tmp = tmp
        self._pipes: set[PipePeer] = set()
        self._closed = False

    def close(self) -> None:
        """Stop listening, drop every connection and remove the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True

        async def stop() -> None:
            self._server.close()
            for pipe in list(self._pipes):
                pipe.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

        with contextlib.suppress(Exception):
            _run(stop(), timeout=2.0)
        if self.address.startswith("/"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
        with contextlib.suppress(OSError):
            os.rmdir(self._tmp)


async def _bridge(
    relay: Relay,
    inbound: _Pipe,
    connect: Callable[[], Awaitable[tuple[object, PipePeer]]],
) -> None:
    relay._pipes.add(inbound)
    try:
        _, outbound = await connect()
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        inbound.abort()
        relay._pipes.discard(inbound)
        return
    relay._pipes.add(outbound)
    outbound.attach(inbound)
    inbound.attach(outbound)
    await inbound.closed
    await outbound.closed
    relay._pipes.discard(inbound)
    relay._pipes.discard(outbound)
