"""BrokerCore on its own: real sockets and gRPC servers, the stream replaced by a list."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator

import grpc
import pytest

from aog_plugins._proto import callback_pb2, callback_pb2_grpc
from aog_plugins.errors import BrokerError, ConfigurationError
from aog_plugins.handshake import generate_certificate
from aog_plugins.process._tempdir import remove_stale_dirs
from aog_plugins.transport import BrokerCore, BrokerTLS, ConnInfo, Knock


class Answer(callback_pb2_grpc.CallbackServicer):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def Call(
        self, request: callback_pb2.CallRequest, context: grpc.ServicerContext
    ) -> callback_pb2.CallReply:
        return callback_pb2.CallReply(text=self.prefix + request.text)


def register(prefix: str) -> Callable[[grpc.Server], None]:
    return lambda s: callback_pb2_grpc.add_CallbackServicer_to_server(Answer(prefix), s)


def call(channel: grpc.Channel, text: str) -> str:
    stub = callback_pb2_grpc.CallbackStub(channel)
    return stub.Call(callback_pb2.CallRequest(text=text), timeout=10).text


@pytest.fixture
def short_tmpdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bt-", dir="/tmp") as d:
        yield d


@pytest.fixture
def socket_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bc-") as d:
        yield d


def pair(
    socket_dir: str, curve_a: str | None, curve_b: str | None
) -> tuple[BrokerCore, BrokerCore]:
    """Two cores wired to each other as the two ends of one broker stream."""
    tls_a = tls_b = None
    if curve_a and curve_b:
        a_cert, b_cert = generate_certificate(curve_a), generate_certificate(curve_b)
        tls_a = BrokerTLS(a_cert, b_cert.cert_der)
        tls_b = BrokerTLS(b_cert, a_cert.cert_der)
    cores: list[BrokerCore] = []

    def to(index: int) -> Callable[[ConnInfo], None]:
        def send(info: ConnInfo) -> None:
            cores[index].received(info)

        return send

    a = BrokerCore(to(1), network="unix", socket_dir=socket_dir, tls=tls_a)
    b = BrokerCore(to(0), network="unix", socket_dir=socket_dir, tls=tls_b)
    cores.extend([a, b])
    return a, b


@pytest.mark.parametrize(
    "curves", [(None, None), ("P-256", "P-256"), ("P-256", "P-521"), ("P-521", "P-521")]
)
def test_serve_and_dial_with_each_tls(socket_dir: str, curves: tuple[str | None, ...]) -> None:
    a, b = pair(socket_dir, curves[0], curves[1])
    try:
        sid = a.next_id()
        server = a.accept_and_serve(sid, register("a: "))
        assert call(b.dial(sid), "x") == "a: x"
        # And the other way round.
        sid_b = b.next_id()
        b.accept_and_serve(sid_b, register("b: "))
        assert call(a.dial(sid_b), "y") == "b: y"
    finally:
        a.close()
        b.close()
    assert not os.path.exists(server.address)
    assert os.listdir(socket_dir) == []


def test_connection_info_waits_for_its_dial_and_repeats_queue(socket_dir: str) -> None:
    # go-plugin keeps an unclaimed ConnInfo 5 s and drops a second one for the same id;
    # here each stays until a dial takes it.
    a, b = pair(socket_dir, None, None)
    try:
        a.accept_and_serve(7, register("one: "))
        a.accept_and_serve(7, register("two: "))
        assert call(b.dial(7), "x") == "one: x"
        assert call(b.dial(7), "x") == "two: x"
        with pytest.raises(BrokerError, match="broker id 7"):
            b.dial(7, timeout=0.05)
    finally:
        a.close()
        b.close()


def test_a_knock_without_multiplexing_is_refused_at_once(socket_dir: str) -> None:
    sent: list[ConnInfo] = []
    core = BrokerCore(sent.append, network="unix", socket_dir=socket_dir, tls=None)
    core.received(ConnInfo(3, knock=Knock(knock=True)))
    core.close()
    (ack,) = sent
    assert ack.service_id == 3
    assert ack.knock is not None
    assert ack.knock.knock
    assert ack.knock.ack
    assert "multiplexing is not enabled" in ack.knock.error


def test_refused_address_and_bad_input(socket_dir: str) -> None:
    def refuse(network: str, address: str) -> None:
        raise BrokerError(f"not dialing {address}")

    core = BrokerCore(
        lambda i: None, network="unix", socket_dir=socket_dir, tls=None, check_address=refuse
    )
    try:
        core.received(ConnInfo(1, "unix", "/elsewhere/sock"))
        with pytest.raises(BrokerError, match="not dialing /elsewhere/sock"):
            core.dial(1)
        core.received(ConnInfo(2, "udp", "x"))
        with pytest.raises(BrokerError, match="unknown network 'udp'"):
            core.dial(2)
        with pytest.raises(ConfigurationError):
            core.accept_and_serve(0, register(""))
    finally:
        core.close()
    with pytest.raises(ConfigurationError):
        BrokerCore(lambda i: None, network="udp", socket_dir=None, tls=None)


def test_close_stops_servers_and_channels(socket_dir: str) -> None:
    a, b = pair(socket_dir, None, None)
    server = a.accept_and_serve(1, register("a: "))
    channel = b.dial(1)
    assert call(channel, "x") == "a: x"
    b.close()
    with pytest.raises(ValueError, match="closed"):
        call(channel, "x")
    a.close()
    assert not os.path.exists(server.address)
    with pytest.raises(BrokerError, match="closed"):
        a.accept_and_serve(2, register(""))


# Serves through a BrokerCore given no socket dir (a host that set no
# PLUGIN_UNIX_SOCKET_DIR), prints the dir it made, then dies of SIGKILL.
KILLED_WITH_OWN_DIR = textwrap.dedent(
    """
    import os, signal
    from aog_plugins.transport import BrokerCore

    core = BrokerCore(lambda info: None, network="unix", socket_dir=None, tls=None)
    server = core.accept_and_serve(1, lambda s: None)
    print(os.path.dirname(server.address), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_processs_own_broker_dir_is_swept(
    short_tmpdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dir was named aogp-broker-*, with no pid: once its process had died of SIGKILL,
    # no stale-dir sweep recognized it, and it stayed in TMPDIR for good.
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WITH_OWN_DIR],
        env={**os.environ, "TMPDIR": short_tmpdir},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    own_dir = proc.stdout.strip()
    assert os.path.dirname(own_dir) == short_tmpdir
    assert os.path.isdir(own_dir)
    monkeypatch.setattr(tempfile, "tempdir", short_tmpdir)  # the sweep's base dir
    assert own_dir in remove_stale_dirs()
    assert os.listdir(short_tmpdir) == []
