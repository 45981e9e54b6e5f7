"""Plugin side of GRPCStdio: what the plugin writes to sys.stdout/sys.stderr after the
handshake is buffered and streamed to the host, as go-plugin plugins do.

Unlike Go (whose writes block once ~64 KiB are unread) a plugin never blocks on its own
output here: past ``limit`` buffered bytes the oldest output is dropped and counted.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import io
import sys
import threading
from collections.abc import Iterator
from typing import IO

import grpc
from google.protobuf import empty_pb2

from aog_plugins._proto import grpc_stdio_pb2, grpc_stdio_pb2_grpc

__all__ = ["StdioBuffer", "StdioRedirect", "StdioServicer", "StreamWriter"]

STDOUT = grpc_stdio_pb2.StdioData.STDOUT
STDERR = grpc_stdio_pb2.StdioData.STDERR
_CHUNK = 64 * 1024


class StdioBuffer:
    """A bounded queue of (channel, bytes) waiting for the host's StreamStdio reader."""

    def __init__(self, limit: int = 8 * 1024 * 1024) -> None:
        self._limit = limit
        self._items: collections.deque[tuple[int, bytes]] = collections.deque()
        self._size = 0
        self._dropped = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def dropped(self) -> int:
        """Bytes thrown away because nobody read them in time."""
        return self._dropped

    def put(self, channel: int, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._closed:
                return
            self._items.append((channel, data))
            self._size += len(data)
            while self._size > self._limit and len(self._items) > 1:
                _, old = self._items.popleft()
                self._size -= len(old)
                self._dropped += len(old)
            self._cond.notify_all()

    def get(self, timeout: float) -> tuple[int, bytes] | None:
        """The next chunk (adjacent writes to one channel merged), None on timeout/close."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            channel, data = self._items.popleft()
            parts = [data]
            size = len(data)
            while self._items and self._items[0][0] == channel and size < _CHUNK:
                _, more = self._items.popleft()
                parts.append(more)
                size += len(more)
            self._size -= size
            self._cond.notify_all()
            return channel, b"".join(parts)

    def unget(self, channel: int, data: bytes) -> None:
        """Put back, in front, what :meth:`get` returned to a reader that is gone."""
        with self._cond:
            self._items.appendleft((channel, data))
            self._size += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_empty(self, timeout: float) -> bool:
        """Wait until a reader took everything (used before shutdown); True if it did."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items, timeout)


class StreamWriter(io.RawIOBase):
    """A binary sink that queues everything written to it on one stdio channel."""

    def __init__(self, buffer: StdioBuffer, channel: int) -> None:
        super().__init__()
        self._buffer = buffer
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        self._buffer.put(self._channel, chunk)
        return len(chunk)


def text_stream(buffer: StdioBuffer, channel: int, encoding: str = "utf-8") -> io.TextIOWrapper:
    """A line-buffered text stream suitable as ``sys.stdout``/``sys.stderr``."""
    raw = StreamWriter(buffer, channel)
    return io.TextIOWrapper(
        io.BufferedWriter(raw, buffer_size=_CHUNK),
        encoding=encoding,
        errors="backslashreplace",
        line_buffering=True,
        write_through=False,
    )


def _report_fatal_errors() -> None:
    """Have a fatal error (a segfault in a C extension, an abort) print the Python
    traceback to the real stderr, where the host reads it and shows it with the exit, as
    it shows a Go plugin's panic; without it the process just died of SIGSEGV. Only the
    thread that failed, as Go prints only the goroutine that panicked (and a dump of
    every thread would push it out of the host's stderr tail). Left as it is when the
    plugin (or pytest) has turned faulthandler on itself."""
    if faulthandler.is_enabled() or sys.stderr is None:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no usable fd
        faulthandler.enable(file=sys.stderr, all_threads=False)


class StdioRedirect:
    """sys.stdout/sys.stderr sent to a :class:`StdioBuffer` from :meth:`install` until
    :meth:`restore`, which puts the process's own streams back.

    GRPCStdio ends when the server stops; what the plugin writes after that (a call
    finishing within the grace, code after ``serve()`` returns, the traceback it dies
    with, atexit output) then reaches the real stdout/stderr, which the host reads until
    the process is gone, instead of a buffer nobody will read again.
    """

    def __init__(self, buffer: StdioBuffer) -> None:
        self._buffer = buffer
        self._real: tuple[IO[str] | None, IO[str] | None] = (None, None)
        self._ours: tuple[IO[str], IO[str]] | None = None

    def install(self) -> None:
        _report_fatal_errors()
        self._real = (sys.stdout, sys.stderr)
        self._ours = (text_stream(self._buffer, STDOUT), text_stream(self._buffer, STDERR))
        sys.stdout, sys.stderr = self._ours

    def restore(self) -> None:
        """Put the real streams back (unless the plugin replaced ours), then flush ours
        into the buffer; without :meth:`install`, flush the current ones."""
        if self._ours is not None:
            if sys.stdout is self._ours[0]:
                sys.stdout = self._real[0]
            if sys.stderr is self._ours[1]:
                sys.stderr = self._real[1]
        for stream in self._ours or (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass


class StdioServicer(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """Streams the buffer to the host, one reader at a time: a second reader (a second
    host attached to the plugin) waits until the first is gone, then gets the output.
    go-plugin's Go plugins serve every reader at once (each gets part of the output) and
    a Go host logs an ERROR for a stream that fails, so a waiting reader is never failed.

    The reader's slot is freed as soon as gRPC ends its call (an RPC termination
    callback), not when this generator gets to notice: gRPC stops resuming a streaming
    handler whose call was cancelled while a response was in flight (the host drops an
    oversized message that way), and the host's next StreamStdio must not find the slot
    taken by a reader that is gone.
    """

    def __init__(self, buffer: StdioBuffer) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._reader: object | None = None

    def _claim(self, context: grpc.ServicerContext) -> object | None:
        """The reader's slot, once free; None if the call or the buffer ends first."""
        with self._lock:
            while self._reader is not None:
                if self._buffer.closed or not context.is_active():
                    return None
                self._freed.wait(0.2)
            self._reader = token = object()
            return token

    def _release(self, token: object) -> None:
        with self._lock:
            if self._reader is token:
                self._reader = None
                self._freed.notify_all()

    def StreamStdio(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[grpc_stdio_pb2.StdioData]:
        token = self._claim(context)
        if token is None:
            return
        try:
            if not context.add_callback(lambda: self._release(token)):
                return  # the call has already ended
            while context.is_active() and self._reader is token:
                item = self._buffer.get(timeout=0.2)
                if item is None:
                    if self._buffer.closed:
                        return
                    continue
                if self._reader is not token:  # the call ended while we waited
                    self._buffer.unget(*item)
                    return
                yield grpc_stdio_pb2.StdioData(channel=item[0], data=item[1])  # type: ignore[arg-type]
        finally:
            self._release(token)
