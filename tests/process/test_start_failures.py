"""Every way a start can fail raises its own typed error and leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from aog_plugins import HandshakeConfig, launch
from aog_plugins.errors import (
    ChecksumMismatchError,
    ConfigurationError,
    CookieRejectedError,
    IncompatibleAppVersionError,
    IncompatibleCoreVersionError,
    MalformedHandshakeError,
    PluginExitedError,
    PluginNotExecutableError,
    PluginNotFoundError,
    PluginStartError,
    ServerCertificateError,
    StartTimeoutError,
    UnknownNetworkError,
    UnsupportedProtocolError,
)
from tests.process.conftest import FIXTURES, LeakCheck, plugin_cmd


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("garbage-first", MalformedHandshakeError),
        ("wrong-core", IncompatibleCoreVersionError),
        ("wrong-app", IncompatibleAppVersionError),
        ("netrpc", UnsupportedProtocolError),
        ("bad-network", UnknownNetworkError),
        ("bad-cert", ServerCertificateError),
        ("exit-early", PluginExitedError),
    ],
)
def test_bad_handshakes(mode: str, error: type[PluginStartError], leak_check: LeakCheck) -> None:
    start = time.monotonic()
    with pytest.raises(error) as info:
        launch(plugin_cmd("misbehave.py", mode), start_timeout=20, extra_env=leak_check.env)
    assert time.monotonic() - start < 20
    exc = info.value
    assert type(exc) is error
    assert exc.command
    assert exc.command[-1] == mode
    assert exc.diagnosis, "every start failure carries a diagnosis"


def test_exit_early_reports_exit_code_and_stderr(leak_check: LeakCheck) -> None:
    with pytest.raises(PluginExitedError) as info:
        launch(plugin_cmd("misbehave.py", "exit-early"), extra_env=leak_check.env)
    exc = info.value
    assert exc.exit_code == 3
    assert exc.stderr_tail.strip(), "the stderr tail is included"
    assert "exit code 3" in str(exc)
    assert exc.stderr_tail.splitlines()[-1] in str(exc)


def test_never_handshakes_times_out(leak_check: LeakCheck) -> None:
    with pytest.raises(StartTimeoutError) as info:
        launch(
            plugin_cmd("misbehave.py", "never-handshake"),
            start_timeout=1.0,
            extra_env=leak_check.env,
        )
    assert "1s" in str(info.value)
    assert info.value.exit_code is not None  # it was killed and reaped


def test_cookie_mismatch(leak_check: LeakCheck) -> None:
    config = HandshakeConfig(1, "AOG_PLUGIN", "wrong-cookie")
    with pytest.raises(CookieRejectedError) as info:
        launch(plugin_cmd("echo_plugin.py"), handshake=config, extra_env=leak_check.env)
    assert info.value.exit_code == 1
    assert "magic cookie" in str(info.value)


def test_missing_executable(tmp_path: Path, leak_check: LeakCheck) -> None:
    with pytest.raises(PluginNotFoundError, match="not found"):
        launch(tmp_path / "nope", extra_env=leak_check.env)


def test_missing_interpreter(tmp_path: Path, leak_check: LeakCheck) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/nonexistent/python9\n")
    script.chmod(0o755)
    with pytest.raises(PluginNotFoundError, match="interpreter"):
        launch(script, extra_env=leak_check.env)


def test_not_executable(tmp_path: Path, leak_check: LeakCheck) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(PluginNotExecutableError, match="execute permission"):
        launch(script, extra_env=leak_check.env)


def test_directory_is_not_executable(tmp_path: Path, leak_check: LeakCheck) -> None:
    with pytest.raises(PluginNotExecutableError, match="directory"):
        launch(tmp_path, extra_env=leak_check.env)


def test_wrong_architecture(tmp_path: Path, leak_check: LeakCheck) -> None:
    machine = 183 if os.uname().machine == "x86_64" else 62  # arm64 on amd64, else amd64
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + (2).to_bytes(2, "little")
        + machine.to_bytes(2, "little")
    )
    binary = tmp_path / "plugin"
    binary.write_bytes(header + b"\0" * 100)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(PluginNotExecutableError, match="wrong architecture"):
        launch(binary, extra_env=leak_check.env)


def test_not_an_executable_format(tmp_path: Path, leak_check: LeakCheck) -> None:
    blob = tmp_path / "plugin"
    blob.write_bytes(b"\x00\x01binary garbage")
    blob.chmod(0o755)
    with pytest.raises(PluginNotExecutableError, match="not a binary"):
        launch(blob, extra_env=leak_check.env)


def test_checksum(tmp_path: Path, leak_check: LeakCheck) -> None:
    path = FIXTURES / "echo_plugin.py"
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    with launch([sys.executable, str(path)], extra_env=leak_check.env) as plugin:
        plugin.ping()
    with pytest.raises(ChecksumMismatchError, match="refusing"):
        launch(path, checksum="sha256:" + "0" * 64, extra_env=leak_check.env)
    with launch(path, checksum=f"sha256:{good}", extra_env=leak_check.env) as plugin:
        plugin.ping()


@pytest.mark.parametrize(
    "kwargs",
    [{"start_timeout": 0}, {"versions": []}, {"versions": [0]}],
)
def test_bad_arguments(kwargs: dict[str, object], leak_check: LeakCheck) -> None:
    with pytest.raises(ConfigurationError):
        launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env, **kwargs)  # type: ignore[arg-type]


def test_empty_command() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        launch([])
