"""Reattach from another host process, plaintext and AutoMTLS, Go and Python plugins.

The first host (this test process) launches the plugin and writes its reattach config
(mode 0600: with AutoMTLS it holds the host's private key). A second host, a separate
Python process, reads it, attaches, calls the plugin, and detaches without stopping it;
the first host then still calls it and finally kills it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from aog_plugins import ReattachConfig
from aog_plugins.errors import ReattachError
from tests.interop.conftest import Target, targets
from tests.process.conftest import LeakCheck

REPO = Path(__file__).resolve().parents[2]

SECOND_HOST = """
import json, sys
from aog_plugins import ReattachConfig, attach
config = ReattachConfig.read(sys.argv[1])
plugin = attach(config, timeout=20)
plugin.ping()
reply = plugin.client.invoke_service(sys.argv[2], sys.argv[3].encode(), timeout=30)
print(json.dumps({"pid": plugin.pid, "reply": reply.decode(), "tls": config.auto_mtls}))
plugin.detach()
"""


def second_host(path: Path, service: str, data: bytes) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", SECOND_HOST, str(path), service, data.decode()],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("target", targets(lambda f: f.id in ("go-local", "py-local")))
def test_second_host_attaches_calls_and_detaches(
    target: Target, leak_check: LeakCheck, tmp_path: Path
) -> None:
    family = target.family
    with target.launch(leak_check) as plugin:
        config = plugin.reattach_config()
        assert config.auto_mtls is target.tls
        path = tmp_path / "reattach.json"
        config.write(path, "fixture")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        marker = f"second-{uuid.uuid4().hex}"
        result = second_host(path, family.echo_service, family.echo_request(marker))
        assert result["pid"] == plugin.pid
        assert result["tls"] is target.tls
        assert marker in family.echoed(str(result["reply"]).encode())
        # The second host detached: the plugin still runs and still answers us.
        assert not plugin.exited
        again = f"first-{uuid.uuid4().hex}"
        reply = plugin.client.invoke_service(
            family.echo_service, family.echo_request(again), timeout=30
        )
        assert again in family.echoed(reply)
    assert plugin.exit_code == 0


def test_reattach_file_holding_a_key_is_private(tmp_path: Path) -> None:
    from aog_plugins.handshake import generate_certificate

    host, plugin = generate_certificate(), generate_certificate("P-521")
    config = ReattachConfig(
        "grpc",
        1,
        "unix",
        "/tmp/x",
        42,
        client_cert_pem=host.cert_pem,
        client_key_pem=host.key_pem,
        server_cert_der=plugin.cert_der,
    )
    assert "PRIVATE" not in repr(config)
    path = tmp_path / "r.json"
    config.write(path)
    assert ReattachConfig.read(path) == config
    with pytest.raises(ReattachError, match="must not exist"):
        config.write(path)
    os.chmod(path, 0o644)
    with pytest.raises(ReattachError, match="chmod 600"):
        ReattachConfig.read(path)
    # Without AutoMTLS there is no secret: the Terraform form, readable as before.
    plain = ReattachConfig("grpc", 1, "unix", "/tmp/x", 42)
    assert "AutoMTLS" not in plain.to_json("p")
    with pytest.raises(ReattachError, match="ClientKey"):
        ReattachConfig.from_dict({**config.to_dict(), "AutoMTLS": {"ClientCert": "x"}})
