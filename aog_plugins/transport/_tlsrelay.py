"""The TLS relays of the main and broker connections: a thread per connection.

* host side (:func:`start_client_relay`): grpcio -> ``unix:relay`` -> TLS -> plugin.
* plugin side (:func:`start_server_relay`): host -> TLS -> relay -> ``unix:private`` -> grpcio.

Why threads and not the shared asyncio loop (which the yamux streams still use): a call
crosses the relay four times (request and reply, each in and out), and asyncio's pure-Python
TLS layer costs tens of microseconds of CPU per crossing, under the GIL of the process the
calls come from. Here one thread owns one connection's two sockets and moves its bytes
(:func:`._tlspump.pump`), OpenSSL and the kernel doing the work with the GIL released.

The TLS is the same: mutual, at least TLS 1.2, ALPN h2, the peer's certificate the whole
trust store and then pinned byte for byte (:func:`._relay._context`, :func:`._relay._pin`).

Host side only, for the start's sake (:class:`ClientRelayPlan`): the context is made before
the plugin's certificate is known, a first TLS connection can be opened before grpcio
connects, and later connections resume the first one's TLS 1.3 session.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from aog_plugins.errors import PluginConnectError
from aog_plugins.handshake import CertificateBundle
from aog_plugins.transport._relay import Relay, _context, _own_context, _trust
from aog_plugins.transport._threads import start_thread
from aog_plugins.transport._tlsconn import dial, handshake, listen_socket, private_tmp
from aog_plugins.transport._tlspump import pump

__all__ = ["ClientRelayPlan", "ThreadRelay", "start_client_relay", "start_server_relay"]

_ACCEPT_FATAL = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP})
"""accept() errors that mean the listener itself is gone; any other one passes."""
_ACCEPT_PAUSE_MIN, _ACCEPT_PAUSE_MAX = 0.005, 1.0
"""Seconds between accept() tries while it fails (doubling), as Go's http.Server."""


class ThreadRelay(Relay):
    """A running relay: ``address`` is where its listener is; ``close()`` stops it all."""

    def __init__(
        self,
        address: str,
        listener: socket.socket,
        tmp: str,
        connect: Callable[[socket.socket, int], tuple[ssl.SSLSocket, socket.socket]],
        *,
        dial_ahead: Callable[[], ssl.SSLSocket] | None = None,
        ahead: int = 0,
        first_read: Callable[[ssl.SSLSocket], None] | None = None,
    ) -> None:
        self.address = address
        self._listener = listener
        self._tmp = tmp
        self._connect = connect
        self._first_read = first_read
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._closed = False
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._ahead: deque[Future[ssl.SSLSocket]] = deque()
        if dial_ahead is not None:
            for _ in range(ahead):
                self._start_ahead(dial_ahead)
        self._accept = threading.Thread(
            target=self._accepting, name="aog-plugins-relay", daemon=True
        )
        start_thread(self._accept)

    def _start_ahead(self, dial: Callable[[], ssl.SSLSocket]) -> None:
        """Open one TLS connection now, for the next inbound one to use."""
        future: Future[ssl.SSLSocket] = Future()

        def run() -> None:
            try:
                tls = dial()
            except BaseException as exc:  # the inbound connection dials anew
                future.set_exception(exc)
                tls = None
            with self._lock:
                self._threads.discard(threading.current_thread())
                if tls is None:
                    return
                if not self._closed:  # else close() has looked at the futures already
                    future.set_result(tls)
                    return
            tls.close()
            future.set_exception(OSError("the relay is closed"))

        thread = threading.Thread(target=run, name="aog-plugins-relay-dial", daemon=True)
        self._ahead.append(future)
        self._threads.add(thread)
        start_thread(thread)

    def _take_ahead(self, inbound: socket.socket) -> tuple[ssl.SSLSocket, socket.socket] | None:
        with self._lock:
            future = self._ahead.popleft() if self._ahead else None
        if future is None:
            return None
        try:
            return future.result(), inbound
        except (OSError, ValueError):
            return None

    def _accepting(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(self._listener.fileno(), select.POLLIN)
        woken = select.poll()  # for pauses: the wake pipe only
        woken.register(self._wake_r, select.POLLIN)
        pause = 0.0
        while True:
            if any(fd == self._wake_r for fd, _ in poller.poll()):
                return
            try:
                inbound, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in _ACCEPT_FATAL:
                    return
                # Out of fds (EMFILE, ENFILE), of memory, or a connection aborted: the
                # listener is fine, and stopping here would leave it deaf for good (the
                # host could never connect again). The waiting connection stays in the
                # backlog, so pause before the next try, as Go's http.Server does.
                pause = min(pause * 2, _ACCEPT_PAUSE_MAX) if pause else _ACCEPT_PAUSE_MIN
                if woken.poll(pause * 1000):
                    return
                continue
            pause = 0.0
            with self._lock:
                if self._closed:
                    inbound.close()
                    return
                thread = threading.Thread(
                    target=self._serve, args=(inbound,), name="aog-plugins-relay-conn", daemon=True
                )
                self._threads.add(thread)
            try:
                start_thread(thread)
            except RuntimeError:  # no thread to be had now: drop this one connection
                with self._lock:
                    self._threads.discard(thread)
                inbound.close()

    def _serve(self, inbound: socket.socket) -> None:
        pair: tuple[ssl.SSLSocket, socket.socket] | None = None
        try:
            pair = self._take_ahead(inbound) or self._connect(inbound, self._wake_r)
            pump(*pair, self._wake_r, self._first_read)
        except (OSError, ValueError):
            pass  # a refused TLS handshake, a wrong certificate, a peer gone: drop it
        finally:
            for sock in (inbound, *(pair or ())):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self) -> None:
        """Stop listening, drop every connection and remove the socket (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        os.write(self._wake_w, b"x")  # never read: every poller of this relay wakes up
        for thread in (self._accept, *threads):
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._listener.close()
        for future in self._ahead:  # dialled ahead, never used
            if future.done() and future.exception() is None:
                with contextlib.suppress(OSError):
                    future.result().close()
        if not any(t.is_alive() for t in (self._accept, *threads)):
            # (A thread still in a TLS handshake polls the pipe when it is done.)
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self.address.startswith("/"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
        with contextlib.suppress(OSError):
            os.rmdir(self._tmp)


class ClientRelayPlan:
    """A host-side relay made ready before the plugin's certificate is known.

    The TLS context with our certificate, the private dir and the listener cost about
    1-2 ms (more on a process's first start); made while the plugin boots, they are off
    the start's critical path. :meth:`start` pins the plugin's certificate and runs the
    relay; :meth:`discard` drops an unused plan. Either is final.
    """

    def __init__(self, socket_dir: str, host: CertificateBundle) -> None:
        self._tmp = private_tmp(socket_dir)
        try:
            self._ctx = _own_context(ssl.PROTOCOL_TLS_CLIENT, host, self._tmp)
            self._path = os.path.join(self._tmp, "s")
            self._listener, _ = listen_socket("unix", self._path)
        except BaseException as exc:
            os.rmdir(self._tmp)
            if isinstance(exc, OSError):
                raise PluginConnectError(
                    f"cannot start the TLS relay in {self._tmp}: {exc}"
                ) from exc
            raise
        os.chmod(self._path, 0o600)
        self._used = False

    def start(
        self,
        plugin_target: tuple[str, str],
        plugin_cert_der: bytes,
        timeout: float = 10.0,
        *,
        ahead: int = 0,
    ) -> Relay:
        """Relay to the plugin at ``plugin_target`` (``("unix", path)`` or ``("tcp",
        "host:port")``), pinning ``plugin_cert_der``. ``ahead`` TLS connections are
        opened at once, for the first inbound ones (a channel's connection waits for its
        TLS handshake otherwise)."""
        self._claim()
        ctx = self._ctx
        _trust(ctx, plugin_cert_der)
        network, address = plugin_target
        # A TLS 1.3 session the plugin issued on one connection: the next ones resume it
        # (no certificate signatures or checks, about 0.6 ms of host CPU less, and the
        # plugin's share too). Resumption needs the key of the session that the pinned
        # certificate authenticated, so it proves the same peer; key exchange is still
        # ephemeral (OpenSSL offers psk_dhe_ke only).
        sessions: list[ssl.SSLSession] = []

        def keep_session(tls: ssl.SSLSocket) -> None:
            session = tls.session
            if session is not None and session.has_ticket and not tls.session_reused:
                sessions[:] = [session]

        def dial_tls() -> ssl.SSLSocket:
            raw = dial(network, address, timeout)
            session = sessions[0] if sessions else None
            return handshake(
                ctx, raw, server=False, pinned=plugin_cert_der, timeout=timeout, session=session
            )

        def connect(inbound: socket.socket, wake: int) -> tuple[ssl.SSLSocket, socket.socket]:
            return dial_tls(), inbound

        return ThreadRelay(
            self._path,
            self._listener,
            self._tmp,
            connect,
            dial_ahead=dial_tls,
            ahead=ahead,
            first_read=keep_session,
        )

    def discard(self) -> None:
        """Close the listener and remove the dir (idempotent; a no-op once started)."""
        if self._used:
            return
        self._claim()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        with contextlib.suppress(OSError):
            os.rmdir(self._tmp)

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("this relay plan was already started or discarded")
        self._used = True


def start_client_relay(
    socket_dir: str,
    plugin_target: tuple[str, str],
    host: CertificateBundle,
    plugin_cert_der: bytes,
    timeout: float = 10.0,
) -> Relay:
    """Host side: a plaintext unix listener in ``socket_dir`` whose connections are relayed
    over mutual TLS to the plugin at ``plugin_target`` (``("unix", path)`` or
    ``("tcp", "host:port")``)."""
    return ClientRelayPlan(socket_dir, host).start(plugin_target, plugin_cert_der, timeout)


def start_server_relay(
    listen: tuple[str, str],
    private_path: str,
    ours: CertificateBundle,
    host_cert_der: bytes,
    timeout: float = 10.0,
) -> Relay:
    """Plugin side: a TLS listener at ``listen`` (``("unix", path)`` or ``("tcp", "h:p")``)
    requiring exactly the host's certificate, relaying plaintext to ``private_path``."""
    tmp = tempfile.mkdtemp(prefix="relay-", dir=os.path.dirname(private_path))
    try:
        ctx = _context(ssl.PROTOCOL_TLS_SERVER, ours, host_cert_der, tmp)
        listener, address = listen_socket(*listen)
    except BaseException:
        os.rmdir(tmp)
        raise

    def connect(inbound: socket.socket, wake: int) -> tuple[ssl.SSLSocket, socket.socket]:
        # Whoever connects (on TCP any local user) gets up to ``timeout`` for the TLS
        # handshake, but no longer than the relay runs: close() wakes it.
        tls = handshake(ctx, inbound, server=True, pinned=host_cert_der, timeout=timeout, wake=wake)
        try:
            return tls, dial("unix", private_path, timeout)
        except BaseException:
            tls.close()
            raise

    return ThreadRelay(address, listener, tmp, connect)
