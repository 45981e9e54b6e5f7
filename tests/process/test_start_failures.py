"""Every way a start can fail raises its own typed error and leaves nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from aog_plugins import HandshakeConfig, RestartPolicy, launch
from aog_plugins.errors import (
    ChecksumMismatchError,
    ConfigurationError,
    CookieRejectedError,
    IncompatibleAppVersionError,
    IncompatibleCoreVersionError,
    MalformedHandshakeError,
    PluginConnectError,
    PluginExitedError,
    PluginNotExecutableError,
    PluginNotFoundError,
    PluginStartError,
    ServerCertificateError,
    StartTimeoutError,
    UnknownNetworkError,
    UnsupportedProtocolError,
)
from tests.gofixtures.conftest import go_bins
from tests.process.conftest import FIXTURES, LeakCheck, plugin_cmd
from tests.support.gobuild import GoBinaries

__all__ = ["go_bins"]  # the session fixture, used by the Go tests below

LOOKUP_RULE = (
    "a name without '/' is looked up on PATH; a path with '/' is relative to the current "
    "directory (or to cwd= when given)"
)


@pytest.mark.parametrize(
    ("mode", "error", "diagnosis"),
    [
        ("garbage-first", MalformedHandshakeError, "must be its handshake"),
        ("wrong-core", IncompatibleCoreVersionError, "another core protocol"),
        ("wrong-app", IncompatibleAppVersionError, "share no app protocol version"),
        ("netrpc", UnsupportedProtocolError, "only gRPC plugins"),
        ("bad-network", UnknownNetworkError, "a network other than unix or tcp"),
        ("bad-cert", ServerCertificateError, "certificate is missing or unusable"),
        ("huge-version", MalformedHandshakeError, "must be its handshake"),
        ("exit-early", PluginExitedError, "exited (exit code 3) before printing its handshake"),
    ],
)
def test_bad_handshakes(
    mode: str, error: type[PluginStartError], diagnosis: str, leak_check: LeakCheck
) -> None:
    with pytest.raises(error) as info:
        launch(plugin_cmd("misbehave.py", mode), start_timeout=60, extra_env=leak_check.env)
    exc = info.value
    assert type(exc) is error  # seen at once: a start that waited would be a StartTimeoutError
    assert exc.command
    assert exc.command[-1] == mode
    assert diagnosis in exc.diagnosis
    assert f"diagnosis: {exc.diagnosis}" in str(exc)
    if mode != "exit-early":
        # Still running when we refused its handshake: our SIGKILL is not its exit.
        assert exc.exit_code is None
        assert "signal" not in str(exc)


def test_huge_version_is_typed_and_short(leak_check: LeakCheck) -> None:
    with pytest.raises(MalformedHandshakeError, match="not a 64-bit integer") as info:
        launch(plugin_cmd("misbehave.py", "huge-version"), extra_env=leak_check.env)
    assert len(str(info.value)) < 2000


def test_unknown_key_algorithm_certificate(leak_check: LeakCheck) -> None:
    with pytest.raises(ServerCertificateError, match="public key cannot be used") as info:
        launch(
            plugin_cmd("misbehave.py", "unknown-key-cert"),
            auto_mtls=True,
            extra_env=leak_check.env,
        )
    assert info.value.exit_code is None


def test_exit_early_reports_exit_code_and_stderr(leak_check: LeakCheck) -> None:
    with pytest.raises(PluginExitedError) as info:
        launch(plugin_cmd("misbehave.py", "exit-early"), extra_env=leak_check.env)
    exc = info.value
    assert exc.exit_code == 3
    assert exc.stderr_tail.strip(), "the stderr tail is included"
    assert "exit code 3" in str(exc)
    assert exc.stderr_tail.splitlines()[-1] in str(exc)
    assert exc.diagnosis == (
        "the plugin exited (exit code 3) before printing its handshake line: "
        "its stderr is shown below"
    )


def _relay_sockets_open() -> set[str]:
    """Paths of relay listeners (``.../relay-*/s``) this process holds an fd of."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            ours.add(os.readlink(f"/proc/self/fd/{fd}"))
    paths = set()
    with open("/proc/net/unix") as table:
        for row in table.read().splitlines()[1:]:
            fields = row.split()
            if len(fields) == 8 and "/relay-" in fields[7] and f"socket:[{fields[6]}]" in ours:
                paths.add(fields[7])
    return paths


def test_a_failed_automtls_start_removes_its_prepared_relay(leak_check: LeakCheck) -> None:
    """With AutoMTLS the host readies the TLS relay while the plugin boots; a plugin that
    exits before its handshake leaves no relay listener, dir or thread behind."""
    threads = {t for t in threading.enumerate() if t.name.startswith("aog-plugins-relay")}
    sockets = _relay_sockets_open()
    with pytest.raises(PluginExitedError):
        launch(plugin_cmd("misbehave.py", "exit-early"), auto_mtls=True, extra_env=leak_check.env)
    assert {t for t in threading.enumerate() if t.name.startswith("aog-plugins-relay")} <= threads
    assert _relay_sockets_open() <= sockets


def test_exit_without_stderr_says_so(leak_check: LeakCheck) -> None:
    with pytest.raises(PluginExitedError) as info:
        launch(plugin_cmd("misbehave.py", "exit-silent"), extra_env=leak_check.env)
    exc = info.value
    assert exc.exit_code == 4
    assert exc.stderr_tail == ""
    assert "wrote nothing on stderr" in exc.diagnosis
    assert "stderr above" not in str(exc)
    assert "shown below" not in str(exc)


def test_long_stderr_lines_are_capped(leak_check: LeakCheck) -> None:
    with pytest.raises(PluginExitedError) as info:
        launch(plugin_cmd("misbehave.py", "long-lines"), extra_env=leak_check.env)
    exc = info.value
    assert exc.exit_code == 6
    # 50 lines of 100 kB each: the message keeps the last lines, each cut, in ~10 kB.
    assert len(str(exc)) < 16 * 1024
    assert "line 49 yyy" in exc.stderr_tail
    assert "more characters]" in exc.stderr_tail
    assert "earlier lines not shown" in exc.stderr_tail


def test_crash_after_long_stderr_lines_has_a_capped_tail(leak_check: LeakCheck) -> None:
    with launch(
        plugin_cmd("misbehave.py", "long-lines-later"),
        restart=RestartPolicy.never(),
        extra_env=leak_check.env,
    ) as plugin:
        channel = plugin.channel
        info = plugin.exit_info(channel, wait=60)
        assert info is not None
        assert info.exit_code == 5
        assert "late line 49 yyy" in info.stderr_tail
        assert len(info.reason) < 16 * 1024, "2.5 MB before the cap"


def test_never_handshakes_times_out(leak_check: LeakCheck) -> None:
    with pytest.raises(StartTimeoutError) as info:
        launch(
            plugin_cmd("misbehave.py", "never-handshake"),
            start_timeout=1.0,
            extra_env=leak_check.env,
        )
    exc = info.value
    assert "no handshake line within 1s" in str(exc)
    # We killed it: no exit code of its own (errors.py), and not "killed by signal 9".
    assert exc.exit_code is None
    assert "signal" not in str(exc)
    assert "did not print its handshake" in exc.diagnosis


def test_handshake_without_a_listener_is_a_connect_error(leak_check: LeakCheck) -> None:
    # The start's one health check also waits for the connection: it must still say
    # that nothing accepts connections at the announced address (not a bare deadline).
    with pytest.raises(PluginConnectError) as info:
        launch(
            plugin_cmd("misbehave.py", "not-listening"),
            start_timeout=4.0,
            extra_env=leak_check.env,
            restart=RestartPolicy.never(),
        )
    assert "could not connect to the plugin at unix" in str(info.value)
    assert "does not accept connections there" in str(info.value)


def test_cookie_mismatch(leak_check: LeakCheck) -> None:
    config = HandshakeConfig(1, "AOG_PLUGIN", "wrong-cookie")
    with pytest.raises(CookieRejectedError) as info:
        launch(plugin_cmd("echo_plugin.py"), handshake=config, extra_env=leak_check.env)
    assert info.value.exit_code == 1
    assert "magic cookie" in str(info.value)


def test_missing_executable(tmp_path: Path, leak_check: LeakCheck) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        launch(tmp_path / "nope", extra_env=leak_check.env)
    assert f"not at {tmp_path / 'nope'}" in str(info.value)
    assert info.value.diagnosis.endswith(LOOKUP_RULE)


def test_bare_name_is_looked_up_on_path(
    tmp_path: Path, leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file of that name in the current directory does not count: PATH does.
    (tmp_path / "aog-no-such-plugin").write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginNotFoundError) as info:
        launch("aog-no-such-plugin", extra_env=leak_check.env)
    assert "'aog-no-such-plugin' is not on PATH" in str(info.value)
    assert LOOKUP_RULE in info.value.diagnosis
    script = tmp_path / "bin" / "aog-path-plugin"
    script.parent.mkdir()
    script.write_text("#!/nonexistent/python9\n")
    script.chmod(0o755)
    with pytest.raises(PluginNotFoundError, match="interpreter") as info:
        launch("aog-path-plugin", env={"PATH": str(script.parent)}, extra_env=leak_check.env)
    assert str(script) in str(info.value)


def test_relative_path_is_relative_to_cwd_argument(tmp_path: Path, leak_check: LeakCheck) -> None:
    (tmp_path / "plugin").write_text("#!/bin/sh\necho not a handshake\n")
    (tmp_path / "plugin").chmod(0o755)
    with pytest.raises(MalformedHandshakeError):
        launch("./plugin", cwd=str(tmp_path), extra_env=leak_check.env)
    (tmp_path / "sub").mkdir()
    with pytest.raises(PluginNotFoundError) as info:
        launch("./plugin", cwd=str(tmp_path / "sub"), extra_env=leak_check.env)
    assert f"not at {tmp_path / 'sub' / 'plugin'}" in str(info.value)
    with pytest.raises(PluginNotFoundError, match=r"cwd=.* does not exist"):
        launch("./plugin", cwd=str(tmp_path / "nowhere"), extra_env=leak_check.env)


def test_missing_interpreter(tmp_path: Path, leak_check: LeakCheck) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/nonexistent/python9\n")
    script.chmod(0o755)
    with pytest.raises(PluginNotFoundError, match="interpreter") as info:
        launch(script, extra_env=leak_check.env)
    assert info.value.diagnosis == (
        "missing interpreter or loader; check the first line of the script"
    )


def test_not_executable(tmp_path: Path, leak_check: LeakCheck) -> None:
    script = tmp_path / "plugin"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(PluginNotExecutableError, match="execute permission") as info:
        launch(script, extra_env=leak_check.env)
    assert info.value.diagnosis == f"chmod +x {script}"


def test_directory_is_not_executable(tmp_path: Path, leak_check: LeakCheck) -> None:
    with pytest.raises(PluginNotExecutableError, match="it is a directory") as info:
        launch(tmp_path, extra_env=leak_check.env)
    assert "chmod" not in str(info.value)
    assert "not the directory" in info.value.diagnosis


def _elf_header(machine: int) -> bytes:
    return (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + (2).to_bytes(2, "little")
        + machine.to_bytes(2, "little")
    )


def test_wrong_architecture(tmp_path: Path, leak_check: LeakCheck) -> None:
    machine = 183 if os.uname().machine == "x86_64" else 62  # arm64 on amd64, else amd64
    binary = tmp_path / "plugin"
    binary.write_bytes(_elf_header(machine) + b"\0" * 100)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(PluginNotExecutableError, match="wrong architecture") as info:
        launch(binary, extra_env=leak_check.env)
    name = "arm64" if machine == 183 else "amd64"
    assert info.value.diagnosis.startswith(f"wrong architecture: built for {name}")


@pytest.mark.parametrize(
    "content",
    [
        b"\x7fELFabcdefghijklmnopqrstuvwxyz",  # text after the magic ("machine 26465" before)
        b"\x7fELF\x02\x01\x01",  # cut inside e_ident
    ],
)
def test_truncated_elf(content: bytes, tmp_path: Path, leak_check: LeakCheck) -> None:
    binary = tmp_path / "plugin"
    binary.write_bytes(content)
    binary.chmod(0o755)
    with pytest.raises(PluginNotExecutableError) as info:
        launch(binary, extra_env=leak_check.env)
    assert info.value.diagnosis == (
        f"not a valid executable: a truncated or corrupt ELF file ({len(content)} bytes)"
    )
    assert "machine" not in str(info.value)


def test_not_an_executable_format(tmp_path: Path, leak_check: LeakCheck) -> None:
    blob = tmp_path / "plugin"
    blob.write_bytes(b"\x00\x01binary garbage")
    blob.chmod(0o755)
    with pytest.raises(PluginNotExecutableError, match="not a binary") as info:
        launch(blob, extra_env=leak_check.env)
    assert "no #! line" in info.value.diagnosis


def test_checksum(tmp_path: Path, leak_check: LeakCheck) -> None:
    path = FIXTURES / "echo_plugin.py"
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    with launch([sys.executable, str(path)], extra_env=leak_check.env) as plugin:
        plugin.ping()
    with pytest.raises(ChecksumMismatchError, match="refusing"):
        launch(path, checksum="sha256:" + "0" * 64, extra_env=leak_check.env)
    with launch(path, checksum=f"sha256:{good}", extra_env=leak_check.env) as plugin:
        plugin.ping()
    # A malformed checksum was compared as it was: "the executable is not the one
    # configured", which sent its author looking at the file instead of the setting.
    for bad in ("sha256:zz", "sha256:" + good[:-1], good + "0", "sha256:" + good.upper() + "0"):
        with pytest.raises(ConfigurationError, match="hex digits"):
            launch(path, checksum=bad, extra_env=leak_check.env)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_timeout": 0},
        {"versions": []},
        {"versions": [0]},
        # kill_grace=inf or 1e12 made kill() log an OverflowError traceback ("stopping the
        # plugin failed"), "2" a TypeError: refused before the plugin runs.
        {"kill_grace": float("inf")},
        {"kill_grace": 1e12},
        {"kill_grace": float("nan")},
        {"kill_grace": -1},
        {"kill_grace": "2"},
    ],
)
def test_bad_arguments(kwargs: dict[str, object], leak_check: LeakCheck) -> None:
    with pytest.raises(ConfigurationError):
        launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env, **kwargs)  # type: ignore[arg-type]


def test_kill_grace_zero_is_no_grace_and_a_bad_one_is_refused(leak_check: LeakCheck) -> None:
    plugin = launch(plugin_cmd("echo_plugin.py"), kill_grace=0, extra_env=leak_check.env)
    with pytest.raises(ConfigurationError, match="grace must be a finite number"):
        plugin.kill(float("inf"))
    plugin.ping()  # a refused kill() did nothing
    plugin.kill(0)
    assert plugin.state.name == "EXITED"


def test_nul_bytes_in_the_command_are_a_configuration_error(leak_check: LeakCheck) -> None:
    with pytest.raises(ConfigurationError, match="without NUL bytes"):
        launch(["/bin/true\0/evil"], extra_env=leak_check.env)
    with pytest.raises(ConfigurationError, match="without NUL bytes"):
        launch("/bin/true", extra_env={**leak_check.env, "X": "a\0b"})
    with pytest.raises(ConfigurationError, match="without NUL bytes"):
        launch("/bin/true", cwd="/tmp\0x", extra_env=leak_check.env)


def test_empty_command() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        launch([])
    with pytest.raises(ConfigurationError, match="empty path"):
        launch("")  # was resolved to the current directory: "cannot execute ...: a directory"


@pytest.mark.parametrize(
    ("cmd", "kwargs", "named"),
    [
        # TypeError and ValueError tracebacks before:
        (None, {}, "cmd must be a path"),
        (5, {}, "cmd must be a path"),
        (b"/bin/true", {}, "cmd must be a path"),
        ([sys.executable, 5], {}, "cmd has an item"),
        ("PLUGIN", {"env": ["A=1"]}, "env must be a mapping"),
        # Taken as true, or kept until they broke something later:
        ("PLUGIN", {"auto_mtls": "no"}, "auto_mtls must be True or False"),
        ("PLUGIN", {"multiplex": 1}, "multiplex must be True or False"),
        ("PLUGIN", {"logger": "plugin-log"}, "logger must be a logging.Logger"),
        ("PLUGIN", {"stdout": 5}, "stdout must be a callable"),
        ("PLUGIN", {"on_event": "print"}, "on_event must be a callable"),
        ("PLUGIN", {"extra_env": {"A": 1}}, "extra_env must map str to str"),
        ("PLUGIN", {"checksum": 5}, "checksum must be a str"),
        # App protocol versions: int() took "2", 1.5 and True; a bare ValueError for "x".
        ("PLUGIN", {"versions": ["x"]}, "versions must be integers"),
        ("PLUGIN", {"versions": [None]}, "versions must be integers"),
        ("PLUGIN", {"versions": [1.5]}, "versions must be integers"),
        ("PLUGIN", {"versions": [True]}, "versions must be integers"),
        ("PLUGIN", {"versions": [2**63]}, "versions must be integers"),  # not a Go int
        ("PLUGIN", {"versions": "12"}, "versions must be a collection"),
        ("PLUGIN", {"versions": []}, "at least one"),
    ],
)
def test_arguments_of_the_wrong_type_are_configuration_errors(
    cmd: object, kwargs: dict[str, object], named: str, leak_check: LeakCheck
) -> None:
    argv = plugin_cmd("echo_plugin.py") if cmd == "PLUGIN" else cmd
    extra_env = kwargs.pop("extra_env", {})
    assert isinstance(extra_env, dict)
    with pytest.raises(ConfigurationError, match=named):
        launch(argv, extra_env={**leak_check.env, **extra_env}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(600)  # the first Go test may pay for a cold build
@pytest.mark.parametrize(
    ("mode", "error", "diagnosis"),
    [
        ("write-before-handshake", MalformedHandshakeError, "must be its handshake"),
        ("sleep-before-handshake", StartTimeoutError, "did not print its handshake"),
    ],
)
def test_go_plugin_we_stopped_has_no_exit_code(
    mode: str,
    error: type[PluginStartError],
    diagnosis: str,
    go_bins: GoBinaries,
    leak_check: LeakCheck,
) -> None:
    with pytest.raises(error) as info:
        launch(
            str(go_bins.misbehave),
            start_timeout=2.0,
            extra_env={**leak_check.env, "AOG_FIXTURE_MODE": mode},
        )
    exc = info.value
    assert exc.exit_code is None
    assert "signal" not in str(exc)
    assert diagnosis in exc.diagnosis


def test_a_plugin_gone_right_after_its_handshake_is_not_waited_for(leak_check: LeakCheck) -> None:
    # The address it announced was never served; its exit ends the connect, which would
    # otherwise retry the dead address until start_timeout, then blame the address.
    with pytest.raises(PluginConnectError, match="exited before the host had connected") as info:
        launch(
            plugin_cmd("misbehave.py", "gone-after-handshake"),
            restart=RestartPolicy.never(),
            start_timeout=60.0,
            extra_env=leak_check.env,
        )
    assert "exited on its own (exit code 5)" in str(info.value)
