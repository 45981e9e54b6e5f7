"""Moving bytes between one TLS socket and one plain socket, on the calling thread.

A relayed connection's thread (:mod:`._tlsrelay`) owns both of its sockets, so an
``SSLSocket`` is never used by two threads at once; it moves bytes with
``poll``/``recv``/``send`` on non-blocking sockets, OpenSSL and the kernel doing the work
with the GIL released. Backpressure: a side is not read while more than 4 MiB wait to be
written to the other.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from collections import deque
from collections.abc import Callable

__all__ = ["pump"]

_READ_SIZE = 256 * 1024
_HIGH_WATER = 4 * 1024 * 1024
_IN, _OUT = select.POLLIN, select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


class _Outbox:
    """Bytes waiting to be written to one socket (chunks, no copying on partial writes)."""

    def __init__(self) -> None:
        self._chunks: deque[memoryview] = deque()
        self.size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(memoryview(data))
        self.size += len(data)

    def flush(self, sock: socket.socket) -> None:
        """Write what the socket takes now; raises only for a broken connection."""
        while self._chunks:
            head = self._chunks[0]
            try:
                sent = sock.send(head)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            self.size -= sent
            if sent < len(head):
                self._chunks[0] = head[sent:]
            else:
                self._chunks.popleft()

    def drain(self, sock: socket.socket) -> None:
        """Write everything, blocking (the socket has a timeout)."""
        while self._chunks:
            sock.sendall(self._chunks.popleft())
        self.size = 0


def _read(sock: socket.socket, into: _Outbox) -> bool:
    """Move what can be read now into ``into``; False at end of stream."""
    while into.size < _HIGH_WATER:
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        if not data:
            return False
        into.add(data)
        if not isinstance(sock, ssl.SSLSocket):
            return True  # one read per wake-up; TLS drains its decrypted records too
    return True


def _mask(incoming: _Outbox, outgoing: _Outbox) -> int:
    """Poll for reading unless backpressured, for writing while something waits."""
    return (_IN if incoming.size < _HIGH_WATER else 0) | (_OUT if outgoing.size else 0)


def pump(
    tls: ssl.SSLSocket,
    plain: socket.socket,
    wake: int,
    first_read: Callable[[ssl.SSLSocket], None] | None = None,
) -> None:
    """Move bytes both ways until either side ends or ``wake`` becomes readable.

    ``first_read`` is called once, on this thread, after the first read from ``tls`` (by
    then a TLS 1.3 session ticket the peer sent with its first records has arrived)."""
    tls.setblocking(False)
    plain.setblocking(False)
    to_tls, to_plain = _Outbox(), _Outbox()
    poller = select.poll()
    poller.register(wake, _IN)
    tls_fd, plain_fd = tls.fileno(), plain.fileno()
    open_ = True
    while open_:
        poller.register(tls_fd, _mask(to_plain, to_tls))
        poller.register(plain_fd, _mask(to_tls, to_plain))
        events = dict(poller.poll())
        if wake in events:
            return
        if events.get(tls_fd, 0) & (_IN | _GONE):
            open_ = _read(tls, to_plain)
            if first_read is not None:
                first_read(tls)
                first_read = None
        if events.get(plain_fd, 0) & (_IN | _GONE):
            open_ = _read(plain, to_tls) and open_
        to_plain.flush(plain)
        to_tls.flush(tls)
    # One side ended: hand the other what is already here (bounded), then both close.
    with contextlib.suppress(OSError):
        for box, sock in ((to_plain, plain), (to_tls, tls)):
            sock.settimeout(1.0)
            box.drain(sock)
