"""The TLS relay: AutoMTLS with P-521 certificates, which grpcio cannot do by itself."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aog_plugins import launch
from aog_plugins._proto import provider_pb2, provider_pb2_grpc
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    CertificateBundle,
    certificate_curve,
    der_to_pem,
    generate_certificate,
    host_plugin_env,
    parse_handshake_line,
)
from aog_plugins.transport import (
    ClientRelayPlan,
    open_channel,
    start_client_relay,
    start_server_relay,
)
from tests.process.conftest import FIXTURES, LeakCheck, plugin_cmd


def _echo(channel: grpc.Channel, payload: bytes) -> bytes:
    stub = provider_pb2_grpc.ProviderServiceStub(channel)
    reply = stub.InvokeService(
        provider_pb2.InvokeServiceRequest(service_name="chat", request_data=payload), timeout=30
    )
    assert reply.code == 0
    return bytes(reply.response_data)


@pytest.mark.parametrize("network", ["unix", "tcp"])
def test_p521_plugin_certificate_goes_through_the_relay(
    network: str, leak_check: LeakCheck
) -> None:
    env = {**leak_check.env, "AOG_PLUGINS_CERT_CURVE": "P-521", "AOG_PLUGINS_NETWORK": network}
    with launch(plugin_cmd("echo_plugin.py"), auto_mtls=True, extra_env=env) as plugin:
        assert plugin.handshake.server_cert is not None
        assert certificate_curve(plugin.handshake.server_cert) == "P-521"
        plugin.ping()
        assert _echo(plugin.channel, b'{"a": 1}') == b'{"a": 1}'
        big = _echo(plugin.channel, json.dumps({"size": 16 << 20}).encode())
        assert len(big) > 16 << 20
        chunks = list(plugin.client.invoke_service_stream("chat", b'{"chunks": 50}'))
        assert len(chunks) == 51


def _tls_connect(address: str, network: str, cert_pem: bytes, key_pem: bytes, peer: bytes) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=der_to_pem(peer).decode())
    ctx.set_alpn_protocols(["h2"])
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    cert_file, key_file = tmp / f"c{os.getpid()}.pem", tmp / f"k{os.getpid()}.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    finally:
        cert_file.unlink()
        key_file.unlink()
    if network == "unix":
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(address)
    else:
        host, _, port = address.rpartition(":")
        raw = socket.create_connection((host, int(port)))
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        if not tls.recv(1):  # TLS 1.3: a refused client cert shows up on first read
            raise ConnectionResetError("closed")


def test_p521_plugin_refuses_another_client_certificate(leak_check: LeakCheck) -> None:
    env = {**leak_check.env, "AOG_PLUGINS_CERT_CURVE": "P-521"}
    with launch(plugin_cmd("echo_plugin.py"), auto_mtls=True, extra_env=env) as plugin:
        assert plugin.handshake.server_cert is not None
        stranger = generate_certificate("P-521")
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _tls_connect(
                plugin.handshake.address,
                "unix",
                stranger.cert_pem,
                stranger.key_pem,
                plugin.handshake.server_cert,
            )
        plugin.ping()


@pytest.mark.parametrize("network", ["unix", "tcp"])
def test_python_plugin_accepts_a_go_style_p521_host(network: str, tmp_path: Path) -> None:
    """A Go host presents a P-521 client cert: our plugin serves it through its relay."""
    host = generate_certificate("P-521")
    env = {
        **os.environ,
        **host_plugin_env(
            AOG_HANDSHAKE, [1], client_cert_pem=host.cert_pem, socket_dir=str(tmp_path)
        ),
        "AOG_PLUGINS_NETWORK": network,
    }
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "echo_plugin.py")], env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = parse_handshake_line(proc.stdout.readline().decode())
        assert line.server_cert is not None
        relay = start_client_relay(
            str(tmp_path), (line.network, line.address), host, line.server_cert
        )
        try:
            with open_channel(f"unix:{relay.address}") as channel:
                assert _echo(channel, b'{"go": "host"}') == b'{"go": "host"}'
        finally:
            relay.close()
        stranger = generate_certificate("P-521")
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _tls_connect(
                line.address, line.network, stranger.cert_pem, stranger.key_pem, line.server_cert
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert not list(tmp_path.iterdir()), "the plugin left files in its socket dir"


def _ed25519_bundle() -> CertificateBundle:
    """An AutoMTLS-shaped certificate with an Ed25519 key (Go's crypto/tls can use one)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, None)
    )
    return CertificateBundle(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        curve="Ed25519",
    )


def test_python_plugin_accepts_an_ed25519_host(tmp_path: Path) -> None:
    """grpcio's TLS refuses an Ed25519 client certificate, which a Go host may present:
    the plugin serves such a host through its relay too, and still refuses a stranger."""
    host = _ed25519_bundle()
    env = {
        **os.environ,
        **host_plugin_env(
            AOG_HANDSHAKE, [1], client_cert_pem=host.cert_pem, socket_dir=str(tmp_path)
        ),
    }
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "echo_plugin.py")], env=env, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = parse_handshake_line(proc.stdout.readline().decode())
        assert line.server_cert is not None
        _tls_connect(line.address, line.network, host.cert_pem, host.key_pem, line.server_cert)
        stranger = _ed25519_bundle()
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _tls_connect(
                line.address, line.network, stranger.cert_pem, stranger.key_pem, line.server_cert
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert not list(tmp_path.iterdir()), "the plugin left files in its socket dir"


_opened_for_writing: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or _opened_for_writing is None:
        return
    path, mode, flags = args
    writes = isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    if writes or (isinstance(mode, str) and any(c in mode for c in "wax+")):
        _opened_for_writing.append(os.fsdecode(path) if isinstance(path, (str, bytes)) else "?")


sys.addaudithook(_audit)


def test_relays_never_write_their_private_key_to_a_file(tmp_path: Path) -> None:
    """Issue 9 item 11: the key is loaded from memory (a memfd), not from a temp file."""
    global _opened_for_writing
    ours, peer = generate_certificate("P-521"), generate_certificate("P-521")
    _opened_for_writing = []
    try:
        client = start_client_relay(str(tmp_path), ("unix", "/nonexistent"), ours, peer.cert_der)
        server = start_server_relay(
            ("unix", str(tmp_path / "tls")), str(tmp_path / "private"), ours, peer.cert_der
        )
        written, _opened_for_writing = _opened_for_writing, None
    finally:
        _opened_for_writing = None
    try:
        assert written == [], f"files written while starting the relays: {written}"
    finally:
        client.close()
        server.close()
    assert list(tmp_path.iterdir()) == [], "relay dirs and sockets are removed"


def _echo_server(path: str) -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _relay_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("aog-plugins-relay")}


def test_relay_pair_moves_more_than_its_buffers_both_ways_and_close_ends_it(
    tmp_path: Path,
) -> None:
    """Host relay -> mutual TLS -> plugin relay -> an echo server: 24 MiB each way (over
    the 4 MiB a side may buffer, so backpressure works), then close() drops the live
    connection and leaves no thread, socket or directory behind."""
    host, plugin = generate_certificate("P-521"), generate_certificate("P-521")
    before = _relay_threads()
    listener, echo = _echo_server(str(tmp_path / "private"))
    server = start_server_relay(
        ("unix", str(tmp_path / "tls")), str(tmp_path / "private"), plugin, host.cert_der
    )
    client = start_client_relay(str(tmp_path), ("unix", server.address), host, plugin.cert_der)
    payload = os.urandom(24 * 1024 * 1024)
    got = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(client.address)
        writer = threading.Thread(target=conn.sendall, args=(payload,), daemon=True)
        writer.start()
        while len(got) < len(payload):
            chunk = conn.recv(1 << 20)
            assert chunk, f"connection ended after {len(got)} bytes"
            got += chunk
        writer.join(timeout=60)
        assert bytes(got) == payload
        client.close()
        assert conn.recv(1) == b"", "close() ends the relayed connection"
    server.close()
    echo.join(timeout=10)
    listener.close()
    os.unlink(tmp_path / "private")
    assert _relay_threads() - before == set()
    assert list(tmp_path.iterdir()) == [], "relay dirs and sockets are removed"


class _TLSServer:
    """A plain TLS 1.3 echo server with the plugin's certificate that requires the host's,
    recording for each connection whether its TLS session was resumed."""

    def __init__(self, path: str, ours: CertificateBundle, peer_der: bytes, tmp: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["h2"])
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=der_to_pem(peer_der).decode())
        pem = tmp / "server.pem"
        pem.write_bytes(ours.cert_pem + ours.key_pem)
        ctx.load_cert_chain(pem)
        pem.unlink()
        self.resumed: list[bool] = []
        self.accepted = threading.Semaphore(0)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(8)
        self._ctx = ctx
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, raw: socket.socket) -> None:
        with raw, self._ctx.wrap_socket(raw, server_side=True) as tls:
            self.resumed.append(tls.session_reused is True)
            self.accepted.release()
            with contextlib.suppress(OSError):
                while data := tls.recv(65536):
                    tls.sendall(data)

    def close(self) -> None:
        self._listener.close()


def _round_trip(address: str, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(address)
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            assert chunk, "the relayed connection ended"
            got += chunk
        assert got == payload


def test_client_relay_resumes_the_tls_session_of_its_first_connection(tmp_path: Path) -> None:
    """The second and later connections through one host relay resume the session the
    pinned certificate authenticated (no new certificate checks, less CPU on both
    sides); the first is a full handshake."""
    host, plugin = generate_certificate("P-521"), generate_certificate("P-521")
    server = _TLSServer(str(tmp_path / "tls"), plugin, host.cert_der, tmp_path)
    relay = start_client_relay(
        str(tmp_path), ("unix", str(tmp_path / "tls")), host, plugin.cert_der
    )
    try:
        for n in range(3):
            _round_trip(relay.address, f"hello {n}".encode())
    finally:
        relay.close()
        server.close()
    assert server.resumed == [False, True, True]


def test_client_relay_plan_dials_ahead_for_the_first_connection(tmp_path: Path) -> None:
    """``ahead=1``: the TLS connection is made before anything connects to the relay, the
    first inbound connection uses it (the server sees no second one), and a dialled-ahead
    connection nobody used is closed with the relay, leaving nothing behind."""
    host, plugin = generate_certificate("P-521"), generate_certificate("P-521")
    before = _relay_threads()
    server = _TLSServer(str(tmp_path / "tls"), plugin, host.cert_der, tmp_path)
    try:
        relay = ClientRelayPlan(str(tmp_path), host).start(
            ("unix", str(tmp_path / "tls")), plugin.cert_der, ahead=1
        )
        assert server.accepted.acquire(timeout=30), "dialled before any inbound connection"
        _round_trip(relay.address, b"first")
        assert server.resumed == [False], "the first inbound connection used the early one"
        relay.close()

        unused = ClientRelayPlan(str(tmp_path), host).start(
            ("unix", str(tmp_path / "tls")), plugin.cert_der, ahead=1
        )
        assert server.accepted.acquire(timeout=30)
        unused.close()
    finally:
        server.close()
    for thread in server._threads[1:]:
        thread.join(timeout=30)
        assert not thread.is_alive(), "close() closed the unused early connection"
    assert _relay_threads() - before == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tls"], "relay dirs are removed"


def test_a_discarded_client_relay_plan_leaves_nothing(tmp_path: Path) -> None:
    host, plugin = generate_certificate("P-521"), generate_certificate("P-521")
    plan = ClientRelayPlan(str(tmp_path), host)
    assert len(list(tmp_path.iterdir())) == 1
    plan.discard()
    plan.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="already started or discarded"):
        plan.start(("unix", str(tmp_path / "x")), plugin.cert_der)
