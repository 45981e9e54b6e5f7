"""BrokerCore over a real multiplexed session: a host-side :class:`Mux` dialed to a
plugin-side :class:`MuxListener` on a unix socket, real gRPC servers behind the routes,
only the broker stream replaced by direct calls (which also record every message)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from aog_plugins._proto import callback_pb2, callback_pb2_grpc
from aog_plugins.errors import BrokerError
from aog_plugins.handshake import generate_certificate
from aog_plugins.transport import BrokerCore, BrokerTLS, ConnInfo, Mux, MuxListener
from tests.support.wait import wait_until
from tests.transport.test_broker_core import call, register

CURVES = [(None, None), ("P-256", "P-256"), ("P-521", "P-521")]


def knocks(sent: list[ConnInfo], service_id: int) -> int:
    """How many knocks (not acks) for ``service_id`` went over the broker stream."""
    return sum(
        1
        for info in sent
        if info.service_id == service_id
        and info.knock is not None
        and info.knock.knock
        and not info.knock.ack
    )


@contextlib.contextmanager
def mux_pair(
    curves: tuple[str | None, str | None] = (None, None),
) -> Iterator[tuple[BrokerCore, BrokerCore, Mux, list[ConnInfo]]]:
    """(host core, plugin core, the host's Mux, every broker message sent either way)."""
    tls_a = tls_b = None
    if curves[0] and curves[1]:
        a_cert, b_cert = generate_certificate(curves[0]), generate_certificate(curves[1])
        tls_a = BrokerTLS(a_cert, b_cert.cert_der)
        tls_b = BrokerTLS(b_cert, a_cert.cert_der)
    with tempfile.TemporaryDirectory(prefix="mxb-") as directory:
        address = os.path.join(directory, "plugin.sock")
        # No main server behind the listener: these tests only open knocked-for streams.
        listener = MuxListener("unix", address, os.path.join(directory, "main"), None)
        listener.start()
        host = Mux.dial("unix", address, directory)
        plugin = wait_until(listener.current, 10, "the plugin side of the session")
        sent: list[ConnInfo] = []
        cores: list[BrokerCore] = []

        def to(index: int) -> Callable[[ConnInfo], None]:
            def send(info: ConnInfo) -> None:
                sent.append(info)
                cores[index].received(info)

            return send

        a = BrokerCore(to(1), network="unix", socket_dir=directory, tls=tls_a, mux=lambda: host)
        b = BrokerCore(to(0), network="unix", socket_dir=directory, tls=tls_b, mux=lambda: plugin)
        cores.extend([a, b])
        try:
            yield a, b, host, sent
        finally:
            a.close()
            b.close()
            host.close()
            listener.close()


def leaves_ready(channel: grpc.Channel) -> threading.Event:
    """Set once ``channel``, READY now, is seen in another state (grpcio's callbacks
    may skip states, so this watches from a moment it is known to be READY)."""
    left = threading.Event()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state is not grpc.ChannelConnectivity.READY:
            left.set()

    channel.subscribe(watch)
    return left


@pytest.mark.parametrize("curves", CURVES)
def test_a_multiplexed_dial_of_an_unserved_id_raises(curves: tuple[str | None, str | None]) -> None:
    with mux_pair(curves) as (a, b, _, _):
        with pytest.raises(BrokerError, match=r"refused multiplexed broker id 9 \(no listener"):
            a.dial(9)
        with pytest.raises(BrokerError, match="refused multiplexed broker id 8"):
            b.dial_target(8)
        # A refused knock opens no stream: the next stream still goes where it should.
        b.accept_and_serve(9, register("b: "))
        assert call(a.dial(9), "x") == "b: x"
        a.accept_and_serve(8, register("a: "))
        assert call(b.dial(8), "y") == "a: y"


def test_the_first_connection_gets_the_stream_the_dial_knocked_for() -> None:
    with mux_pair() as (a, b, _, sent):
        b.accept_and_serve(3, register("b: "))
        channel = a.dial(3)
        assert knocks(sent, 3) == 1  # at dial time, before any call
        assert call(channel, "x") == "b: x"
        assert call(channel, "y") == "b: y"
        assert knocks(sent, 3) == 1  # the call used the stream the dial opened


def test_a_first_stream_the_peer_closed_meanwhile_is_replaced() -> None:
    with mux_pair() as (a, b, host, sent):
        server = b.accept_and_serve(4, register("old: "))
        channel = a.dial(4)
        (first,) = host.session._streams.values()  # the stream the dial opened
        server.stop(None)  # its server drops the connection behind that stream
        wait_until(lambda: first.peer_closed, 10, "the plugin side closing the first stream")
        b.accept_and_serve(4, register("new: "))
        assert call(channel, "x") == "new: x"
        assert knocks(sent, 4) == 2


def test_a_later_connection_whose_knock_is_refused_fails_its_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with mux_pair() as (a, b, _, _), caplog.at_level(logging.WARNING):
        server = b.accept_and_serve(5, register("b: "))
        channel = a.dial(5)
        assert call(channel, "x") == "b: x"
        left = leaves_ready(channel)
        server.stop(None)  # the connection goes; grpcio's next one knocks and is refused
        assert left.wait(20), "the channel still READY after its server stopped"
        stub = callback_pb2_grpc.CallbackStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Call(callback_pb2.CallRequest(text="y"), timeout=20)  # the bound ends a hang
        assert isinstance(failed.value, grpc.Call)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE, failed.value.details()
        gc.collect()  # an unretrieved task exception is logged when the task is collected
    assert "refused multiplexed broker id 5" in caplog.text
    assert "never retrieved" not in caplog.text
