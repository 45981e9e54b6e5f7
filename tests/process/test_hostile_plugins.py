"""Hostile or careless plugins: where the handshake may send us, the socket group, the
plugin's environment, and a host that runs out of resources while starting one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from aog_plugins import launch
from aog_plugins.errors import (
    ConfigurationError,
    MalformedHandshakeError,
    PluginAddressError,
    PluginConnectError,
)
from aog_plugins.handshake import parse_handshake_line
from aog_plugins.process._address import check_plugin_address
from tests.gofixtures.conftest import go_bins
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.gobuild import GoBinaries

__all__ = ["go_bins"]  # the session fixture, used by the Go test below

ROOT = os.geteuid() == 0
USERS_GID = 100  # "users": a group this test process (root) is not running as
NOBODY = 65534


# ---- item 8: the address a plugin we started may send us to -----------------------------


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("tcp-any", "0.0.0.0 means every network interface"),
        ("unix-outside", "outside the directory this host gave it"),
        ("unix-symlink", "reached through the symlink"),
        pytest.param(
            "unix-foreign-owner",
            f"owned by uid {NOBODY}, not by the plugin's uid 0",
            marks=pytest.mark.skipif(not ROOT, reason="chown to another uid needs root"),
        ),
    ],
)
def test_hostile_addresses_are_refused(
    mode: str, fragment: str, tmp_path: Path, leak_check: LeakCheck
) -> None:
    env = {**leak_check.env, "AOG_FIXTURE_DIR": str(tmp_path)}
    with pytest.raises(PluginAddressError) as info:
        launch(plugin_cmd("misbehave.py", mode), extra_env=env)
    exc = info.value
    assert fragment in str(exc)
    assert exc.diagnosis
    assert exc.exit_code is None, "we stopped it; that is not its exit"


def test_nul_in_unix_path_is_refused(leak_check: LeakCheck) -> None:
    with pytest.raises(MalformedHandshakeError, match="NUL"):
        launch(plugin_cmd("misbehave.py", "unix-nul"), extra_env=leak_check.env)


@pytest.mark.parametrize("curve", ["p256", "p521"])  # grpcio's own TLS; our relay's
def test_a_tls_certificate_other_than_the_handshakes_is_refused_and_named(
    curve: str, leak_check: LeakCheck
) -> None:
    # The plugin serves one certificate and announces another: pinning refuses the
    # connection, and the error says so (not "does not accept connections" after the
    # whole start timeout, which is what grpcio's retries alone would give).
    with pytest.raises(PluginConnectError) as info:
        launch(
            plugin_cmd("misbehave.py", f"other-cert-{curve}"),
            auto_mtls=True,
            start_timeout=30.0,
            extra_env=leak_check.env,
        )
    message = str(info.value)
    assert "other than the one in its handshake line" in message
    assert "SHA-256" in message


@pytest.mark.parametrize("curve", ["p256", "p521"])
def test_an_expired_tls_certificate_is_refused_and_named(curve: str, leak_check: LeakCheck) -> None:
    # As go-plugin's host (its x509 check): refused; and the error says why at once.
    with pytest.raises(PluginConnectError, match="is refused: certificate has expired"):
        launch(
            plugin_cmd("misbehave.py", f"expired-cert-{curve}"),
            auto_mtls=True,
            start_timeout=30.0,
            extra_env=leak_check.env,
        )


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("192.0.2.7:1234", "192.0.2.7 is not a loopback address"),
        ("[2001:db8::1]:1234", "2001:db8::1 is not a loopback address"),
        ("[::]:1234", ":: means every network interface"),
        ("plugin.example:1234", "a host name"),
        ("localhost:1234", "a host name"),
    ],
)
def test_non_loopback_tcp_is_refused_without_dialing(address: str, fragment: str) -> None:
    line = parse_handshake_line(f"1|1|tcp|{address}|grpc|")
    with pytest.raises(PluginAddressError, match=fragment):
        check_plugin_address(line, "/nonexistent", os.getpid())


@pytest.mark.parametrize("address", ["127.0.0.1:1", "127.3.4.5:1", "[::1]:1", ":1"])
def test_loopback_tcp_is_accepted(address: str) -> None:
    line = parse_handshake_line(f"1|1|tcp|{address}|grpc|")
    check_plugin_address(line, "/nonexistent", os.getpid())


@pytest.mark.parametrize("path", ["relative/plugin1", "/tmp/dir/../plugin1", "/tmp/dir"])
def test_unix_paths_outside_or_at_the_dir_are_refused(path: str) -> None:
    line = parse_handshake_line(f"1|1|unix|{path}|grpc|")
    with pytest.raises(PluginAddressError, match="outside the directory"):
        check_plugin_address(line, "/tmp/dir", os.getpid())


# ---- item 9: unix_socket_group ------------------------------------------------------------

_CONNECT_AS = """
import os, socket, sys
path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(path)
except OSError as exc:
    print("refused", exc.strerror)
else:
    print("connected")
"""


def _connect_as(path: str, uid: int, gid: int) -> str:
    run = subprocess.run(
        [sys.executable, "-c", _CONNECT_AS, path, str(uid), str(gid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return run.stdout.strip()


@pytest.mark.skipif(not ROOT, reason="a member of another group is made with setuid/setgid")
@pytest.mark.parametrize("group", [str(USERS_GID), "users"])
def test_unix_socket_group_lets_a_member_connect(group: str, leak_check: LeakCheck) -> None:
    with launch(
        plugin_cmd("echo_plugin.py"), unix_socket_group=group, extra_env=leak_check.env
    ) as plugin:
        path = plugin.handshake.address
        socket_dir = os.path.dirname(path)
        dir_st, sock_st = os.stat(socket_dir), os.stat(path)
        assert (stat.S_IMODE(dir_st.st_mode), dir_st.st_gid) == (0o770, USERS_GID)
        assert (stat.S_IMODE(sock_st.st_mode), sock_st.st_gid) == (0o660, USERS_GID)
        # uid nobody: only its group decides. A member gets in, others do not.
        assert _connect_as(path, NOBODY, USERS_GID) == "connected"
        assert _connect_as(path, NOBODY, NOBODY).startswith("refused")
        plugin.ping()


@pytest.mark.skipif(not ROOT, reason="a member of another group is made with setuid/setgid")
@pytest.mark.timeout(600)  # the first Go test may pay for a cold build
def test_unix_socket_group_with_a_go_plugin(go_bins: GoBinaries, leak_check: LeakCheck) -> None:
    """go-plugin's own PLUGIN_UNIX_SOCKET_GROUP handling meets our socket dir."""
    with launch(
        str(go_bins.misbehave), unix_socket_group="users", extra_env=leak_check.env
    ) as plugin:
        path = plugin.handshake.address
        sock_st = os.stat(path)
        assert (stat.S_IMODE(sock_st.st_mode), sock_st.st_gid) == (0o660, USERS_GID)
        assert _connect_as(path, NOBODY, USERS_GID) == "connected"
        assert _connect_as(path, NOBODY, NOBODY).startswith("refused")
        plugin.ping()


def test_unknown_socket_group_is_a_configuration_error(leak_check: LeakCheck) -> None:
    with pytest.raises(ConfigurationError, match="unknown group 'no-such-group-aogp'"):
        launch(
            plugin_cmd("echo_plugin.py"),
            unix_socket_group="no-such-group-aogp",
            extra_env=leak_check.env,
        )


def test_without_socket_group_the_dir_stays_private(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        socket_dir = os.path.dirname(plugin.handshake.address)
        assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700


# ---- item 11: a minimal environment -------------------------------------------------------


def test_inherit_env_false_passes_no_host_secrets(
    leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOG_TEST_SECRET", "hunter2")
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        assert psutil.Process(plugin.pid).environ()["AOG_TEST_SECRET"] == "hunter2"
    with launch(
        plugin_cmd("echo_plugin.py"), inherit_env=False, extra_env=leak_check.env
    ) as plugin:
        seen = psutil.Process(plugin.pid).environ()
        plugin.ping()
    assert "AOG_TEST_SECRET" not in seen
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["AOG_PLUGINS_TEST_TAG"] == leak_check.tag  # extra_env still applies
    assert seen["AOG_PLUGIN"] == "aog-provider-plugin-v1"  # and the protocol variables
    unexpected = set(seen) - {"PATH", "LANG", "LC_ALL", "TZ", "AOG_PLUGINS_TEST_TAG"}
    assert all(k == "AOG_PLUGIN" or k.startswith("PLUGIN_") for k in unexpected), unexpected


# ---- item 5: the host runs out of something while starting a plugin ----------------------

_HOST = """
import json, os, resource, signal, sys
import psutil
from aog_plugins import launch
from aog_plugins.errors import AogPluginsError, PluginNotFoundError

mode, cmd, tag = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
kwargs = {"extra_env": {"AOG_PLUGINS_TEST_TAG": tag}}
try:  # warm up every import on the start path
    launch("/nonexistent/aog-plugin")
except PluginNotFoundError:
    pass
held = []
if mode == "emfile":
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
elif mode == "fsize":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
    kwargs["auto_mtls"] = True
try:
    launch(cmd, start_timeout=30, **kwargs).kill()
    result = {"type": None}
except BaseException as exc:
    result = {"type": type(exc).__name__, "typed": isinstance(exc, AogPluginsError),
              "message": str(exc)}
for fd in held:
    os.close(fd)
result["children"] = [p.pid for p in psutil.Process().children(recursive=True)
                      if p.status() != psutil.STATUS_ZOMBIE and "aog-plugins-reaper" not in
                      " ".join(p.cmdline())]
print(json.dumps(result))
"""


def _run_host(mode: str, cmd: list[str], leak_check: LeakCheck) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", _HOST, mode, json.dumps(cmd), leak_check.tag],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_out_of_file_descriptors_is_a_host_resource_error(leak_check: LeakCheck) -> None:
    result = _run_host("emfile", plugin_cmd("echo_plugin.py"), leak_check)
    assert result["type"] == "HostResourceError", result
    assert "too many open files" in str(result["message"])
    assert result["children"] == []


def test_relay_key_write_failure_is_typed_and_stops_the_plugin(leak_check: LeakCheck) -> None:
    # A P-521 plugin certificate makes the host start its TLS relay, which must load its
    # key; with a file size limit of 0 that write fails (EFBIG, like ENOSPC on a full disk).
    # The plugin lifts the limit for itself first (soft limit back to the hard one).
    plugin = [
        "/bin/sh",
        "-c",
        'ulimit -f unlimited && exec "$0" "$@"',
        *plugin_cmd("echo_plugin.py"),
    ]
    env_cmd = ["/usr/bin/env", "AOG_PLUGINS_CERT_CURVE=P-521", *plugin]
    result = _run_host("fsize", env_cmd, leak_check)
    assert result["typed"] is True, result
    assert result["type"] == "HostResourceError", result
    assert "TLS relay" in str(result["message"])
    assert result["children"] == []
