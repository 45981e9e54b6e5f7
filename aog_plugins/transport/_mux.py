"""go-plugin's gRPC broker multiplexing (``PLUGIN_MULTIPLEX_GRPC``) over one yamux session.

The host dials the plugin's address once and runs a yamux client session on it; the
plugin accepts that one connection and runs the server side. Every gRPC connection is
then a yamux stream: the host's channels (main, stdio) open streams that the plugin
hands to its gRPC server; broker sub-connections open streams too, announced first by a
*knock* on the broker stream for their id, which the other side acknowledges before the
stream is opened. The side that receives streams gives the next one to the id that was
knocked for (the plugin gives unannounced ones to its main server; the host refuses them).

grpcio cannot speak over a yamux stream, so each gRPC connection meets it at a private
unix socket: :meth:`Mux.forward` listens for grpcio's outgoing connections and turns each
into a stream; :meth:`Mux.route` connects incoming streams to a private gRPC server
socket. With AutoMTLS, TLS runs end to end inside each stream: by grpcio itself, or for
certificates grpcio cannot handle (P-521) by Python's ``ssl`` over a socket pair bridged
to the stream, pinned exactly as the relay does.

Unlike go-plugin, a side opens its streams one at a time (a knock, its ack and the
stream's SYN are not interleaved with another open), so an incoming stream can never be
handed to the wrong id. Also unlike go-plugin, whose broker dial knocks only when gRPC
first connects, a broker dial here knocks and opens its first stream before it returns
(:meth:`Mux.forward` with ``open_first``), so an id the peer does not serve fails the
dial; grpcio's first connection then gets that stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable

from aog_plugins.errors import PluginConnectError
from aog_plugins.handshake import CertificateBundle, split_host_port
from aog_plugins.transport._relay import (
    PipePeer,
    Relay,
    _bridge,
    _context,
    _Loop,
    _pin,
    _Pipe,
    _run,
)
from aog_plugins.transport._yamux import YamuxSession, YamuxStream

__all__ = ["Mux", "MuxListener", "StreamTLS"]

_log = logging.getLogger("aog_plugins.broker")

StreamTLS = tuple[CertificateBundle, bytes]
"""(our certificate, the peer's certificate DER) for TLS done by Python's ssl per stream."""
Knock = Callable[[], None]
"""Blocking: announce the next stream to the peer and wait for its ack (raises if refused)."""


class Mux:
    """One yamux session and the routing of its streams."""

    def __init__(self, session: YamuxSession, *, accept_default: bool, directory: str) -> None:
        """``directory``: where the private sockets go (a subdirectory of it, removed by
        :meth:`close`); the owner's own private dir, so that it removes them even when
        this process is killed before :meth:`close` (the host's socket dir, which the
        reaper and the stale-dir sweep remove; the plugin's pid-named private dir)."""
        self.session = session
        session.on_stream = self._incoming
        self._accept_default = accept_default
        self._expected: collections.deque[int] = collections.deque()
        self._routes: dict[int, Callable[[YamuxStream], None]] = {}
        self._default: Callable[[YamuxStream], None] | None = None
        self._open_lock = asyncio.Lock()
        self._forwards: list[Relay] = []
        self._tmp = tempfile.mkdtemp(prefix="mux-", dir=directory)

    # ---- opening ------------------------------------------------------------------
    @classmethod
    def dial(cls, network: str, address: str, directory: str, timeout: float = 10.0) -> Mux:
        """Host side: connect to the plugin and start the yamux client session (private
        sockets under ``directory``, see :class:`Mux`)."""
        loop = _Loop.get()

        async def connect() -> Mux:
            session = YamuxSession(client=True)
            if network == "unix":
                await loop.create_unix_connection(lambda: session, address)
            else:
                host, port = split_host_port(address)
                await loop.create_connection(lambda: session, host, port)
            return cls(session, accept_default=False, directory=directory)

        try:
            mux = _run(asyncio.wait_for(connect(), timeout), timeout + 1)
        except (OSError, asyncio.TimeoutError) as exc:
            raise PluginConnectError(
                f"cannot open the multiplexed connection to {network} {address}: {exc}"
            ) from exc
        assert isinstance(mux, Mux)
        return mux

    async def _open(self, knock: Knock | None) -> YamuxStream:
        async with self._open_lock:
            if knock is not None:
                await asyncio.get_running_loop().run_in_executor(None, knock)
            return self.session.open_stream()

    # ---- outgoing: grpcio -> private socket -> stream -------------------------------
    def forward(
        self, *, tls: StreamTLS | None = None, knock: Knock | None = None, open_first: bool = False
    ) -> str:
        """A private unix socket whose every connection becomes a new stream (after
        ``knock``); with ``tls`` the stream carries TLS made here. Returns the path.

        With ``open_first`` the first stream is knocked for and opened before this
        returns, so what ``knock`` raises (the peer refused, or did not answer) reaches
        the caller instead of a connection that grpcio would wait on; the first
        connection then gets that stream, unless the peer closed it meanwhile (a gRPC
        server drops a connection that sends nothing for long), and knocks anew.
        A later connection whose knock fails is closed at once and the failure logged.
        """
        loop = _Loop.get()
        spare: list[YamuxStream] = []
        if open_first:
            first = _run(self._open(knock))
            assert isinstance(first, YamuxStream)
            spare.append(first)
        try:
            path = self._forward(loop, tls, knock, spare)
        except BaseException:
            for stream in spare:
                loop.call_soon_threadsafe(stream.abort)
            raise
        return path

    def _forward(
        self,
        loop: asyncio.AbstractEventLoop,
        tls: StreamTLS | None,
        knock: Knock | None,
        spare: list[YamuxStream],
    ) -> str:
        directory = tempfile.mkdtemp(prefix="f-", dir=self._tmp)
        path = os.path.join(directory, "s")
        ctx = None if tls is None else _context(ssl.PROTOCOL_TLS_CLIENT, tls[0], tls[1], directory)
        pin = None if tls is None else _pin(tls[1])

        async def start() -> Relay:
            holder: list[Relay] = []

            async def stream() -> YamuxStream:
                while spare:
                    first = spare.pop()
                    holder[0]._pipes.discard(first)
                    if not first.peer_closed:
                        return first
                    first.abort()
                try:
                    return await self._open(knock)
                except ConnectionError:
                    raise  # the session is gone: nothing to report
                except Exception as exc:
                    _log.warning("dropped a new multiplexed connection, its knock failed: %s", exc)
                    raise ConnectionError(str(exc)) from exc  # the relay drops the connection

            def made(pipe: _Pipe) -> None:
                async def connect() -> tuple[object, PipePeer]:
                    opened = await stream()
                    if ctx is None:
                        return opened, opened
                    transport, out = await _tls_over(opened, ctx, server=False)
                    assert pin is not None
                    pin(transport.get_extra_info("ssl_object"))
                    return transport, out

                loop.create_task(_bridge(holder[0], pipe, connect))

            server = await loop.create_unix_server(lambda: _Pipe(made), path)
            relay = Relay(path, server, directory)
            relay._pipes.update(spare)  # a spare stream no connection took closes with it
            holder.append(relay)
            return relay

        relay = _run(start(), timeout=10.0)
        assert isinstance(relay, Relay)
        os.chmod(path, 0o600)
        self._forwards.append(relay)
        return path

    # ---- incoming: stream -> private gRPC server socket -----------------------------
    def route(self, service_id: int | None, private_path: str, tls: StreamTLS | None) -> None:
        """Incoming streams for ``service_id`` (None: the main server) go to the gRPC
        server at ``private_path``; with ``tls`` the TLS is terminated here."""
        handler = _connector(private_path, tls, self._tmp)

        def install() -> None:
            if service_id is None:
                self._default = handler
            else:
                self._routes[service_id] = handler

        _Loop.get().call_soon_threadsafe(install)

    def unroute(self, service_id: int) -> None:
        _Loop.get().call_soon_threadsafe(self._routes.pop, service_id, None)

    def expect(self, service_id: int) -> bool:
        """A knock for ``service_id``: the next incoming stream is its (False: no route)."""

        async def note() -> bool:
            if service_id not in self._routes:
                return False
            self._expected.append(service_id)
            return True

        return bool(_run(note(), timeout=5.0))

    def _incoming(self, stream: YamuxStream) -> None:
        handler = None
        if self._expected:
            handler = self._routes.get(self._expected.popleft())
        elif self._accept_default:
            handler = self._default
        if handler is None:
            stream.abort()
            return
        handler(stream)

    # ---- the end ------------------------------------------------------------------
    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` (on the relay loop) once the session has ended: a
        protocol error, or the peer closed the connection. Nothing more can be opened."""
        _Loop.get().call_soon_threadsafe(self.session.on_end, callback)

    def close(self) -> None:
        """Close the session, every stream and every private socket (idempotent)."""
        for relay in self._forwards:
            relay.close()
        self._forwards.clear()
        with contextlib.suppress(Exception):
            _Loop.get().call_soon_threadsafe(self.session.close)
        shutil.rmtree(self._tmp, ignore_errors=True)


async def _tls_over(
    stream: YamuxStream, ctx: ssl.SSLContext, *, server: bool
) -> tuple[asyncio.Transport, _Pipe]:
    """TLS by Python's ssl over ``stream`` (through a socket pair); returns the TLS side."""
    loop = asyncio.get_running_loop()
    near, far = socket.socketpair()
    _, plain = await loop.create_connection(_Pipe, sock=near)
    plain.attach(stream)
    stream.attach(plain)
    if server:
        transport, out = await loop.connect_accepted_socket(_Pipe, sock=far, ssl=ctx)
    else:
        transport, out = await loop.create_connection(
            _Pipe, sock=far, ssl=ctx, server_hostname="localhost"
        )
    assert isinstance(transport, asyncio.Transport)
    return transport, out


def _connector(private_path: str, tls: StreamTLS | None, tmp: str) -> Callable[[YamuxStream], None]:
    loop = _Loop.get()
    ctx = None if tls is None else _context(ssl.PROTOCOL_TLS_SERVER, tls[0], tls[1], tmp)
    pin = None if tls is None else _pin(tls[1])

    def handle(stream: YamuxStream) -> None:
        loop.create_task(_serve_stream(stream, private_path, ctx, pin))

    return handle


async def _serve_stream(
    stream: YamuxStream,
    private_path: str,
    ctx: ssl.SSLContext | None,
    pin: Callable[[ssl.SSLObject], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        if ctx is None:
            inbound: PipePeer = stream
        else:
            transport, inbound = await asyncio.wait_for(_tls_over(stream, ctx, server=True), 10)
            assert pin is not None
            pin(transport.get_extra_info("ssl_object"))
        _, outbound = await loop.create_unix_connection(_Pipe, private_path)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        stream.abort()
        return
    outbound.attach(inbound)
    inbound.attach(outbound)


class MuxListener:
    """Plugin side: listens raw at the handshake address; the first connection becomes the
    yamux server session (go-plugin accepts just that one), later ones are refused."""

    def __init__(
        self, network: str, address: str, private_path: str, tls: StreamTLS | None
    ) -> None:
        self.network = network
        self.address = address
        self._private = private_path
        self._directory = os.path.dirname(private_path)
        self._tls = tls
        self._loop = _Loop.get()
        self.ready: asyncio.Future[Mux] | None = None
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        async def start() -> None:
            loop = asyncio.get_running_loop()
            self.ready = loop.create_future()
            ready = self.ready

            def factory() -> asyncio.Protocol:
                if ready.done():
                    return _Refuse()
                session = YamuxSession(client=False)
                mux = Mux(session, accept_default=True, directory=self._directory)
                mux._default = _connector(self._private, self._tls, mux._tmp)
                ready.set_result(mux)
                return session

            if self.network == "unix":
                self._server = await loop.create_unix_server(factory, self.address)
            else:
                host, port = split_host_port(self.address)
                self._server = await loop.create_server(factory, host, port)

        _run(start(), timeout=10.0)

    def current(self) -> Mux | None:
        """The session's :class:`Mux` once the host has connected, else None."""
        ready = self.ready
        if ready is None or not ready.done() or ready.cancelled():
            return None
        return ready.result()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            if self.ready is not None and self.ready.done() and not self.ready.cancelled():
                self.ready.result().session.close()

        with contextlib.suppress(Exception):
            _run(stop(), timeout=2.0)
        mux = self.current()
        if mux is not None:
            mux.close()
        if self.network == "unix":
            with contextlib.suppress(OSError):
                os.unlink(self.address)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
