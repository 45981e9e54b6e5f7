"""A minimal yamux session (hashicorp/yamux framing), as go-plugin multiplexes gRPC.

Frames are a 12-byte header (version 0, type, flags, stream id, length) and, for data
frames, ``length`` payload bytes. Types: data, window update, ping, go away; flags SYN,
ACK, FIN, RST. The dialing side numbers its streams 1, 3, 5..., the accepting side 2, 4,
6.... Each stream has a 256 KiB receive window; the receiver grants more with window
updates once half is used, and a sender never has more than the window in flight.

Streams plug into the relay's pipes: a :class:`YamuxStream` has the ``send``,
``send_eof`` and ``transport`` (``pause_reading``/``resume_reading``/``close``) that a
relay pipe expects of its peer, and hands what it receives to the pipe attached to it.
Everything runs on the relay's event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from aog_plugins.transport._relay import PipePeer

__all__ = [
    "ACK",
    "DATA",
    "FIN",
    "GO_AWAY",
    "MAX_STREAMS",
    "PING",
    "RST",
    "SYN",
    "WINDOW",
    "WINDOW_UPDATE",
    "YamuxError",
    "YamuxSession",
    "YamuxStream",
    "frame",
]

_log = logging.getLogger("aog_plugins.yamux")

HEADER = struct.Struct(">BBHII")
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
WINDOW = 256 * 1024
_MAX_FRAME = 64 * 1024
_HIGH_WATER = 1024 * 1024
MAX_STREAMS = 1024
"""Streams open at once on one session; a SYN beyond that is reset (yamux resets those
beyond its accept backlog the same way)."""
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL = 0, 1


class YamuxError(Exception):
    """The peer broke the yamux protocol (the session is closed)."""


def frame(kind: int, flags: int, stream_id: int, length: int, payload: bytes = b"") -> bytes:
    """One encoded frame."""
    return HEADER.pack(0, kind, flags, stream_id, length) + payload


class YamuxStream:
    """One yamux stream, usable as the peer of a relay pipe."""

    def __init__(self, session: YamuxSession, stream_id: int) -> None:
        self.session = session
        self.id = stream_id
        self.peer: PipePeer | None = None
        self._inbox: list[bytes] = []
        self._fin_in = False
        self._fin_out = False
        self._fin_sent = False
        self._reset = False
        self._out = bytearray()
        self._send_window = WINDOW
        self._recv_window = WINDOW
        self._consumed = 0
        self._paused = False
        self._upstream_paused = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def transport(self) -> YamuxStream:
        """A pipe pauses, resumes and closes "its peer's transport": that is us."""
        return self

    # ---- the peer-facing side (a relay pipe calls these) --------------------------
    def attach(self, peer: PipePeer) -> None:
        """Deliver to ``peer`` from now on (what arrived before goes first)."""
        self.peer = peer
        inbox, self._inbox = self._inbox, []
        for chunk in inbox:
            peer.send(chunk)
            self._consume(len(chunk))
        if self._reset:
            peer.abort()
        elif self._fin_in:
            peer.send_eof()

    def send(self, data: bytes) -> None:
        if self._fin_out or self._reset:
            return
        self._out += data
        self._flush()

    def send_eof(self) -> None:
        if self._fin_out or self._reset:
            return
        self._fin_out = True
        self._flush()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._grant()

    def is_closing(self) -> bool:
        return self._reset or (self._fin_in and self._fin_out and not self._out)

    @property
    def peer_closed(self) -> bool:
        """Whether the peer finished or reset the stream: nothing more comes from it."""
        return self._fin_in or self._reset

    def close(self) -> None:
        """Finish our side (FIN) once what is queued is sent."""
        self.send_eof()

    def abort(self) -> None:
        """Reset the stream."""
        if not self._reset:
            self._reset = True
            self.session.write(frame(WINDOW_UPDATE, RST, self.id, 0))
            self._finish()

    # ---- the session-facing side ---------------------------------------------------
    def _flush(self) -> None:
        while self._out and self._send_window > 0 and not self._reset:
            size = min(len(self._out), self._send_window, _MAX_FRAME)
            chunk = bytes(self._out[:size])
            del self._out[:size]
            self._send_window -= size
            self.session.write(frame(DATA, 0, self.id, size, chunk))
        peer_transport = self.peer.transport if self.peer is not None else None
        if peer_transport is not None:
            if len(self._out) > _HIGH_WATER and not self._upstream_paused:
                self._upstream_paused = True
                peer_transport.pause_reading()
            elif not self._out and self._upstream_paused:
                self._upstream_paused = False
                peer_transport.resume_reading()
        if self._fin_out and not self._out and not self._reset:
            if not self._fin_sent:
                self._fin_sent = True
                self.session.write(frame(WINDOW_UPDATE, FIN, self.id, 0))
            self._maybe_done()

    def _received(self, data: bytes) -> None:
        if len(data) > self._recv_window:
            raise YamuxError(f"stream {self.id}: peer exceeded the receive window")
        self._recv_window -= len(data)
        if self.peer is None:
            self._inbox.append(data)
            return
        self.peer.send(data)
        self._consume(len(data))

    def _consume(self, size: int) -> None:
        self._consumed += size
        self._grant()

    def _grant(self) -> None:
        # Like yamux: grant the used part back once it is at least half the window.
        if self._paused or self._reset or self._consumed < WINDOW // 2:
            return
        delta, self._consumed = self._consumed, 0
        self._recv_window += delta
        self.session.write(frame(WINDOW_UPDATE, 0, self.id, delta))

    def _window(self, delta: int) -> None:
        self._send_window += delta
        self._flush()

    def _fin(self) -> None:
        self._fin_in = True
        if self.peer is not None:
            self.peer.send_eof()
        self._maybe_done()

    def _rst(self) -> None:
        self._reset = True
        if self.peer is not None:
            self.peer.abort()
        self._finish()

    def _refuse(self) -> None:
        """The peer broke this stream's rules: reset it, here and there."""
        self.abort()
        if self.peer is not None:
            self.peer.abort()

    def _maybe_done(self) -> None:
        if self._fin_in and self._fin_sent:
            self._finish()

    def _finish(self) -> None:
        self.session._forget(self.id)
        if not self.closed.done():
            self.closed.set_result(None)


class YamuxSession(asyncio.Protocol):
    """A yamux session over one connection; ``client`` is the side that dialed.

    ``on_stream(stream)`` gets every stream the peer opens (already acknowledged).
    """

    def __init__(
        self, *, client: bool, on_stream: Callable[[YamuxStream], None] | None = None
    ) -> None:
        self._next_id = 1 if client else 2
        self.on_stream = on_stream
        self._streams: dict[int, YamuxStream] = {}
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._remote_go_away = False
        self.end_reason: str | None = None
        """Why the session ended (None while it runs): no new stream can be opened."""
        self._on_end: list[Callable[[str], None]] = []
        self._refused_streams = 0

    # ---- connection ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)

    def pause_writing(self) -> None:
        # The peer does not read what we write (answers to its pings and SYNs, window
        # updates, data): read nothing more of it until it does, so that frames which
        # each need an answer cannot grow our output without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except YamuxError as exc:
            _log.warning("yamux: %s; closing the session", exc)
            self.close(GO_AWAY_PROTOCOL, reason=f"yamux protocol error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended("the peer closed the connection" + (f" ({exc})" if exc else ""))
        for stream in list(self._streams.values()):
            stream._rst()
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self, code: int = GO_AWAY_NORMAL, *, reason: str = "closed by this side") -> None:
        """Say go away (with ``code``) and close the connection; every stream is reset."""
        self._ended(reason)
        if self.transport is not None and not self.transport.is_closing():
            self.write(frame(GO_AWAY, 0, 0, code))
            self.transport.close()
        for stream in list(self._streams.values()):
            stream._rst()

    def on_end(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the session ends (now if it has ended)."""
        if self.end_reason is not None:
            callback(self.end_reason)
        else:
            self._on_end.append(callback)

    def _ended(self, reason: str) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(reason)

    # ---- streams ------------------------------------------------------------------
    def open_stream(self) -> YamuxStream:
        """Open a new stream (a SYN window update, as yamux does)."""
        if self._remote_go_away or self.transport is None or self.transport.is_closing():
            raise ConnectionError("the multiplexed connection is closed")
        stream_id = self._next_id
        self._next_id += 2
        stream = YamuxStream(self, stream_id)
        self._streams[stream_id] = stream
        self.write(frame(WINDOW_UPDATE, SYN, stream_id, 0))
        return stream

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def _parse(self) -> None:
        buf = self._buffer
        while len(buf) >= HEADER.size:
            version, kind, flags, stream_id, length = HEADER.unpack_from(buf)
            if version != 0:
                raise YamuxError(f"unknown yamux version {version}")
            if kind == DATA:
                # Checked before waiting for the payload: a length far beyond the window
                # (up to 4 GiB) must not be buffered first (yamux checks it there too).
                self._check_window(stream_id, flags, length)
                if len(buf) < HEADER.size + length:
                    return
                payload = bytes(buf[HEADER.size : HEADER.size + length])
                del buf[: HEADER.size + length]
            else:
                payload = b""
                del buf[: HEADER.size]
            if kind == PING:
                if flags & SYN:
                    self.write(frame(PING, ACK, 0, length))
            elif kind == GO_AWAY:
                self._remote_go_away = True
                if length != GO_AWAY_NORMAL:
                    raise YamuxError(f"the peer went away with error code {length}")
            elif kind in (DATA, WINDOW_UPDATE):
                self._stream_frame(kind, flags, stream_id, length, payload)
            else:
                raise YamuxError(f"unknown yamux frame type {kind}")

    def _check_window(self, stream_id: int, flags: int, length: int) -> None:
        stream = None if flags & SYN else self._streams.get(stream_id)
        # A new or unknown stream (one we already forgot) has at most a full window.
        window = WINDOW if stream is None else stream._recv_window
        if length > window:
            raise YamuxError(
                f"stream {stream_id}: a data frame of {length} bytes exceeds the "
                f"receive window ({window} bytes)"
            )

    def _stream_frame(
        self, kind: int, flags: int, stream_id: int, length: int, payload: bytes
    ) -> None:
        stream = self._streams.get(stream_id)
        if flags & SYN:
            if stream is not None:
                raise YamuxError(f"duplicate stream {stream_id}")
            if stream_id == 0 or stream_id % 2 == self._next_id % 2:
                # Ours to number (or the session's own id): it would collide with a
                # stream we open.
                raise YamuxError(f"the peer opened stream {stream_id}, an id it may not use")
            if len(self._streams) >= MAX_STREAMS:
                if not self._refused_streams:
                    _log.warning(
                        "yamux: the peer has %d streams open; resetting the new ones",
                        len(self._streams),
                    )
                self._refused_streams += 1
                self.write(frame(WINDOW_UPDATE, RST, stream_id, 0))
                return
            stream = YamuxStream(self, stream_id)
            self._streams[stream_id] = stream
            self.write(frame(WINDOW_UPDATE, ACK, stream_id, 0))
            if self.on_stream is None:
                stream.abort()
                return
            self.on_stream(stream)
        if stream is None:
            return  # a late frame for a stream already gone (yamux discards it too)
        if kind == WINDOW_UPDATE:
            stream._window(length)
        elif payload:
            if stream._fin_in:
                # Nothing can follow a FIN (the pipe behind has had its EOF): a broken
                # stream, not a broken session; the other streams go on.
                _log.warning("yamux: stream %d: data after the peer's FIN; resetting it", stream_id)
                stream._refuse()
                return
            stream._received(payload)
        if flags & RST:
            stream._rst()
        elif flags & FIN:
            stream._fin()
