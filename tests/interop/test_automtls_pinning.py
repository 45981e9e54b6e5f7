"""AutoMTLS pins exactly one certificate on each side; anything else is refused.

* plugin side: a Go plugin (grpc-go) and our Python plugin (grpcio for a P-256 host, our
  ssl relay for a Go-style P-521 host) answer a TLS client holding the host's certificate
  and refuse one holding any other, P-256 or P-521.
* host side: when a plugin serves a certificate other than the one in its handshake line,
  launch() refuses to talk to it, through the relay (P-521) and through grpcio (P-256).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aog_plugins import RestartPolicy, launch
from aog_plugins.errors import PluginConnectError
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    CertificateBundle,
    HandshakeLine,
    certificate_curve,
    der_to_pem,
    encode_server_cert,
    generate_certificate,
    host_plugin_env,
    parse_handshake_line,
)
from tests.interop.conftest import FAMILY, Family, scrub_env
from tests.process.conftest import LeakCheck

SWAP_CERT = Path(__file__).with_name("swap_cert.py")
# The HTTP/2 client preface and an empty SETTINGS frame: any h2 server answers it.
H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@contextlib.contextmanager
def raw_plugin(
    family: Family, host: CertificateBundle, check: LeakCheck
) -> Iterator[HandshakeLine]:
    """Start a plugin the way a host would (AutoMTLS with ``host``'s certificate), without
    connecting to it; kill its process group afterwards."""
    with tempfile.TemporaryDirectory(prefix="aogi-") as sockets:
        env = scrub_env()
        env.update(family.plugin_env("unix"))
        env.update(check.env)
        env.update(
            host_plugin_env(AOG_HANDSHAKE, [1], client_cert_pem=host.cert_pem, socket_dir=sockets)
        )
        proc = subprocess.Popen(
            family.argv(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            assert select.select([proc.stdout], [], [], 30)[0], "no handshake within 30 s"
            yield parse_handshake_line(proc.stdout.readline().decode())
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()


def answers(line: HandshakeLine, client: CertificateBundle) -> bool:
    """True when the plugin completes mutual TLS with ``client`` and speaks HTTP/2;
    False when it refuses the certificate (an alert, a reset or a closed connection)."""
    assert line.server_cert is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=der_to_pem(line.server_cert).decode())
    ctx.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory(prefix="aogi-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(client.cert_pem)
        key.write_bytes(client.key_pem)
        ctx.load_cert_chain(cert, key)
    raw = socket.socket(socket.AF_UNIX)
    raw.settimeout(15)
    raw.connect(line.address)
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(H2_HELLO)
            # Under TLS 1.3 the server judges our certificate after we think we are done:
            # a refusal shows up on the first read.
            return bool(tls.recv(9))
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return False
    finally:
        raw.close()


@pytest.mark.parametrize("host_curve", ["P-256", "P-521"])
@pytest.mark.parametrize("family", [FAMILY["go-local"], FAMILY["py-remote"]], ids=lambda f: f.id)
def test_plugin_answers_only_the_host_certificate(
    family: Family, host_curve: str, leak_check: LeakCheck
) -> None:
    host = generate_certificate(host_curve)
    with raw_plugin(family, host, leak_check) as line:
        assert line.server_cert is not None
        assert certificate_curve(line.server_cert) == family.cert_curve
        for stranger_curve in ("P-256", "P-521"):
            stranger = generate_certificate(stranger_curve)
            assert not answers(line, stranger), f"accepted a stranger's {stranger_curve} cert"
        assert answers(line, host), "refused the host's own certificate"


@pytest.mark.parametrize(
    "fake_curve",
    [
        pytest.param(None, id="control-real-cert"),
        pytest.param("P-256", id="grpcio-path"),
        pytest.param("P-521", id="relay-path"),
    ],
)
def test_host_refuses_a_plugin_serving_another_certificate(
    fake_curve: str | None, leak_check: LeakCheck
) -> None:
    go = FAMILY["go-local"]
    fake = (
        "" if fake_curve is None else encode_server_cert(generate_certificate(fake_curve).cert_der)
    )
    argv = [sys.executable, str(SWAP_CERT), *go.argv()]
    env = {**leak_check.env, **go.plugin_env(), "AOG_INTEROP_FAKE_CERT": fake}
    if fake_curve is None:
        with launch(argv, auto_mtls=True, extra_env=env, restart=RestartPolicy.never()) as plugin:
            assert plugin.client.get_manifest(timeout=30).provider.name == go.provider_name
        assert plugin.exit_code == 0
        return
    # Refused, and named: not a wait for the start timeout that ends in "cannot connect".
    with pytest.raises(PluginConnectError, match="other than the one in its handshake line"):
        launch(
            argv,
            auto_mtls=True,
            extra_env=env,
            start_timeout=30.0,
            restart=RestartPolicy.never(),
        )
