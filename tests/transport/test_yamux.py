"""The yamux session frame by frame, against a peer that writes frames by hand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator

import pytest

from aog_plugins.transport._relay import _Pipe
from aog_plugins.transport._yamux import (
    ACK,
    DATA,
    FIN,
    GO_AWAY,
    MAX_STREAMS,
    PING,
    RST,
    SYN,
    WINDOW,
    WINDOW_UPDATE,
    YamuxSession,
    YamuxStream,
    frame,
)

HEADER = struct.Struct(">BBHII")


class Peer:
    """The far end: a plain socket we read and write frames on (blocking, with timeouts)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the session closed the connection")
            self.buf += chunk

    def frame(self) -> tuple[int, int, int, int, bytes]:
        self._fill(12)
        _, kind, flags, sid, length = HEADER.unpack(self.buf[:12])
        self.buf = self.buf[12:]
        payload = b""
        if kind == DATA:
            self._fill(length)
            payload, self.buf = self.buf[:length], self.buf[length:]
        return kind, flags, sid, length, payload


class Collect:
    """A stand-in relay pipe: what the stream delivers lands in ``data``."""

    transport = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.data = bytearray()
        self.eof = False
        self.aborted = False
        self.closed: asyncio.Future[None] = loop.create_future()

    def send(self, data: bytes) -> None:
        self.data += data

    def send_eof(self) -> None:
        self.eof = True

    def attach(self, peer: object) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def start(
    loop: asyncio.AbstractEventLoop, *, client: bool
) -> tuple[YamuxSession, Peer, list[YamuxStream]]:
    ours, theirs = socket.socketpair()
    accepted: list[YamuxStream] = []

    async def make() -> YamuxSession:
        session = YamuxSession(client=client, on_stream=accepted.append)
        await loop.create_connection(lambda: session, sock=ours)
        return session

    return loop.run_until_complete(make()), Peer(theirs), accepted


def run(loop: asyncio.AbstractEventLoop, peer: Peer) -> tuple[int, int, int, int, bytes]:
    """Let the loop work until the peer has a frame to read."""
    return loop.run_until_complete(loop.run_in_executor(None, peer.frame))


def ends_with_protocol_error(loop: asyncio.AbstractEventLoop, peer: Peer) -> None:
    """The session closes the connection, saying go away (protocol error) first; the
    frame may be lost to a reset when the session closes with our bytes still unread."""
    while True:
        try:
            got = run(loop, peer)
        except (EOFError, ConnectionResetError):
            return
        assert got[:4] == (GO_AWAY, 0, 0, 1)


def test_incoming_stream_is_acked_and_delivers_data_fin_and_window(
    loop: asyncio.AbstractEventLoop,
) -> None:
    session, peer, accepted = start(loop, client=False)
    peer.send(frame(WINDOW_UPDATE, SYN, 1, 0))
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, ACK, 1, 0)
    (stream,) = accepted
    sink = Collect(loop)
    stream.attach(sink)
    half = WINDOW // 2
    peer.send(frame(DATA, 0, 1, half, b"a" * half))
    # Half the window used: the session grants it back.
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, 0, 1, half)
    assert bytes(sink.data) == b"a" * half
    peer.send(frame(WINDOW_UPDATE, FIN, 1, 0))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sink.eof
    session.close()


def test_sending_respects_the_peer_window(loop: asyncio.AbstractEventLoop) -> None:
    session, peer, _ = start(loop, client=True)

    async def open_and_send() -> YamuxStream:
        stream = session.open_stream()
        stream.send(b"x" * (WINDOW + 100))
        return stream

    stream = loop.run_until_complete(open_and_send())
    assert stream.id == 1  # the dialing side uses odd ids
    assert run(loop, peer)[:3] == (WINDOW_UPDATE, SYN, 1)
    sent = 0
    while sent < WINDOW:
        kind, _, sid, length, _ = run(loop, peer)
        assert (kind, sid) == (DATA, 1)
        sent += length
    assert sent == WINDOW  # exactly the window, the rest waits
    peer.send(frame(WINDOW_UPDATE, ACK, 1, 100))
    kind, _, _, length, payload = run(loop, peer)
    assert (kind, length, payload) == (DATA, 100, b"x" * 100)
    loop.run_until_complete(asyncio.sleep(0))
    stream.send_eof()
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, FIN, 1, 0)
    session.close()


def test_ping_is_answered_with_its_opaque_value(loop: asyncio.AbstractEventLoop) -> None:
    session, peer, _ = start(loop, client=False)
    peer.send(frame(PING, SYN, 0, 0xDEADBEEF))
    assert run(loop, peer)[:4] == (PING, ACK, 0, 0xDEADBEEF)
    session.close()


def test_reset_and_protocol_errors(loop: asyncio.AbstractEventLoop) -> None:
    session, peer, accepted = start(loop, client=False)
    peer.send(frame(WINDOW_UPDATE, SYN, 1, 0))
    run(loop, peer)
    sink = Collect(loop)
    accepted[0].attach(sink)
    peer.send(frame(WINDOW_UPDATE, RST, 1, 0))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sink.aborted
    # More than the window on one stream: a protocol error ends the session.
    peer.send(frame(WINDOW_UPDATE, SYN, 3, 0))
    run(loop, peer)
    too_much = frame(DATA, 0, 3, WINDOW + 1, b"z" * (WINDOW + 1))

    def send_too_much() -> None:
        with contextlib.suppress(OSError):  # the session may close before it has read all
            peer.send(too_much)

    sending = loop.run_in_executor(None, send_too_much)  # bigger than a socket buffer
    ends_with_protocol_error(loop, peer)
    loop.run_until_complete(asyncio.wait([sending], timeout=10))
    assert session.closed.done() or session.transport is None or session.transport.is_closing()


def _bridged_stream(
    loop: asyncio.AbstractEventLoop,
) -> tuple[YamuxSession, Peer, list[YamuxStream], socket.socket]:
    """A server session whose peer opened stream 1, bridged to a real socket via _Pipe:
    (the session, the peer, the streams accepted, the far end of that socket)."""
    session, peer, accepted = start(loop, client=False)
    near, far = socket.socketpair()
    far.settimeout(10)

    async def bridge() -> None:
        _, pipe = await loop.create_connection(_Pipe, sock=near)
        accepted[0].attach(pipe)
        pipe.attach(accepted[0])

    peer.send(frame(WINDOW_UPDATE, SYN, 1, 0))
    run(loop, peer)
    loop.run_until_complete(bridge())
    return session, peer, accepted, far


def test_a_stream_bridges_to_a_relay_pipe(loop: asyncio.AbstractEventLoop) -> None:
    # The piece the multiplexer is built from: yamux stream <-> real socket via _Pipe.
    session, peer, _, far = _bridged_stream(loop)
    peer.send(frame(DATA, 0, 1, 5, b"hello"))
    assert loop.run_until_complete(loop.run_in_executor(None, far.recv, 5)) == b"hello"
    far.sendall(b"world")
    assert run(loop, peer)[:5] == (DATA, 0, 1, 5, b"world")
    far.close()
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, FIN, 1, 0)
    session.close()


@pytest.mark.parametrize("stream_id", [1, 99], ids=["open-stream", "unknown-stream"])
def test_a_data_frame_beyond_the_window_is_refused_before_its_payload_arrives(
    loop: asyncio.AbstractEventLoop, stream_id: int
) -> None:
    # A length of 2**32-1 announces 4 GiB: the session must refuse it at the header
    # (as yamux does), not buffer the payload while it trickles in.
    session, peer, _ = start(loop, client=False)
    peer.send(frame(WINDOW_UPDATE, SYN, 1, 0))
    run(loop, peer)
    flood_size = 64 * 1024 * 1024

    def flood() -> int:
        peer.send(HEADER.pack(0, DATA, 0, stream_id, 0xFFFFFFFF))
        chunk, sent = b"z" * (1 << 20), 0
        try:
            while sent < flood_size:
                peer.sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the session closed the connection (or stopped reading)
            pass
        return sent

    sending = loop.run_in_executor(None, flood)
    ends_with_protocol_error(loop, peer)
    sent = loop.run_until_complete(asyncio.wait_for(sending, 60))
    assert sent < flood_size
    assert len(session._buffer) <= HEADER.size + WINDOW


def test_data_after_fin_resets_that_stream_and_the_session_goes_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    session, peer, accepted, far = _bridged_stream(loop)
    peer.send(frame(DATA, FIN, 1, 5, b"hello"))
    assert loop.run_until_complete(loop.run_in_executor(None, far.recv, 5)) == b"hello"
    assert loop.run_until_complete(loop.run_in_executor(None, far.recv, 5)) == b""  # the EOF
    peer.send(frame(DATA, 0, 1, 5, b"after"))  # a peer bug: data after its FIN
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, RST, 1, 0)
    # The session is unharmed: a new stream is acknowledged and carries data.
    peer.send(frame(WINDOW_UPDATE, SYN, 3, 0))
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, ACK, 3, 0)
    sink = Collect(loop)
    accepted[1].attach(sink)
    peer.send(frame(DATA, 0, 3, 2, b"ok"))
    peer.send(frame(PING, SYN, 0, 7))
    assert run(loop, peer)[:4] == (PING, ACK, 0, 7)
    assert bytes(sink.data) == b"ok"
    assert errors == []
    session.close()
    far.close()


@pytest.mark.parametrize("stream_id", [0, 2], ids=["session-id", "our-parity"])
def test_a_stream_id_the_peer_may_not_use_is_a_protocol_error(
    loop: asyncio.AbstractEventLoop, stream_id: int
) -> None:
    # Accepted before: stream 0 is the session's, and an even id on the accepting side
    # collides with the stream it opens next.
    session, peer, accepted = start(loop, client=False)
    peer.send(frame(WINDOW_UPDATE, SYN, stream_id, 0))
    ends_with_protocol_error(loop, peer)
    assert accepted == []
    assert session.end_reason is not None


def test_streams_beyond_the_limit_are_reset_and_the_session_goes_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # Every stream the peer opened was accepted (on the plugin side, each one a
    # connection to the gRPC server): a peer could exhaust our file descriptors.
    session, peer, accepted = start(loop, client=False)
    ids = [2 * i + 1 for i in range(MAX_STREAMS + 1)]
    peer.send(b"".join(frame(WINDOW_UPDATE, SYN, sid, 0) for sid in ids))
    answers = [run(loop, peer)[:4] for _ in ids]
    assert answers[:-1] == [(WINDOW_UPDATE, ACK, sid, 0) for sid in ids[:-1]]
    assert answers[-1] == (WINDOW_UPDATE, RST, ids[-1], 0)
    assert len(accepted) == MAX_STREAMS
    # Once one is reset, a new stream is accepted again.
    peer.send(frame(WINDOW_UPDATE, RST, ids[0], 0) + frame(WINDOW_UPDATE, SYN, ids[-1] + 2, 0))
    assert run(loop, peer)[:4] == (WINDOW_UPDATE, ACK, ids[-1] + 2, 0)
    session.close()


def test_a_peer_that_pings_without_reading_cannot_grow_our_output(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # Each ping is answered; a peer that never reads used to have every answer buffered.
    session, peer, _ = start(loop, client=False)
    pings = frame(PING, SYN, 0, 1) * 400_000  # 4.8 MB of pings, as many answers
    peer.sock.settimeout(1)

    def flood() -> int:
        view, sent = memoryview(pings), 0
        with contextlib.suppress(OSError):  # a timeout: the session stopped reading
            while sent < len(pings):
                sent += peer.sock.send(view[sent:])
        return sent

    sent = loop.run_until_complete(loop.run_in_executor(None, flood))
    assert session.transport is not None
    assert session.transport.get_write_buffer_size() <= 2 * 1024 * 1024
    assert sent < len(pings)
    # Once the peer reads, the session reads again: every ping and a last one are answered.
    peer.sock.settimeout(10)

    def until_the_last_answer() -> int:
        answers = 0
        while peer.frame()[:4] != (PING, ACK, 0, 0xFEED):
            answers += 1
        return answers

    rest = pings[sent:] + frame(PING, SYN, 0, 0xFEED)
    sending = loop.run_in_executor(None, lambda: peer.send(rest))
    answers = loop.run_until_complete(loop.run_in_executor(None, until_the_last_answer))
    loop.run_until_complete(sending)
    assert answers == 400_000
    session.close()
