"""Plugins die with their host (atexit, SIGTERM, SIGINT); reattach to a running plugin."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aog_plugins import ReattachConfig, attach, launch
from aog_plugins.errors import ConfigurationError, ReattachError
from tests.process.conftest import FIXTURES, LeakCheck, plugin_cmd
from tests.support.wait import gone, wait_gone, wait_until

HOST = textwrap.dedent(
    """
    import os, signal, sys, time
    from aog_plugins import launch
    plugins = [launch([sys.executable, {plugin!r}]) for _ in range(2)]
    print(" ".join(str(p.pid) for p in plugins), flush=True)
    mode = sys.argv[1]
    if mode == "exit":
        sys.exit(0)
    if mode == "chained":
        seen = []
        signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
        from aog_plugins.process import install_signal_handlers
        install_signal_handlers()  # chains ours in front of the one just set
        print("ready", flush=True)
        while not seen:
            time.sleep(0.01)
        print("previous handler ran", flush=True)
        sys.exit(0)
    print("ready", flush=True)
    if mode == "wait-sliced":
        # CPython runs a Python-level handler (KeyboardInterrupt's) only on the main thread,
        # between bytecodes: a SIGINT that lands while it waits for the GIL right before a
        # blocking call waits for that call. Applications wait in slices for Ctrl-C.
        for _ in range(600):
            time.sleep(0.1)
    time.sleep(60)
    """
)


HostRunner = Callable[[str], tuple[subprocess.Popen[str], list[int]]]


@pytest.fixture
def run_host(leak_check: LeakCheck, tmp_path: Path) -> Iterator[HostRunner]:
    """Start host processes; one still running at teardown has its threads dumped
    (faulthandler, on SIGABRT) into the failure, then is killed and reaped, so a hung
    host never leaves an unreaped child behind for the tests after it."""
    hosts: list[tuple[subprocess.Popen[str], Path]] = []

    def run(mode: str) -> tuple[subprocess.Popen[str], list[int]]:
        code = HOST.format(plugin=str(FIXTURES / "echo_plugin.py"))
        err = tmp_path / f"host-{len(hosts)}.stderr"
        with err.open("w") as sink:
            host = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-c", code, mode],
                stdout=subprocess.PIPE,
                stderr=sink,
                text=True,
                env={**os.environ, **leak_check.env},
            )
        hosts.append((host, err))
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2
        return host, pids

    yield run
    hung = []
    for host, err in hosts:
        if host.poll() is None:
            host.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.wait(10)
            host.kill()
            host.wait()
            hung.append(err.read_text()[-6000:])
        if host.stdout is not None:
            host.stdout.close()
    assert not hung, "a host did not exit; its threads:\n" + "\n".join(hung)


def test_plugins_are_killed_at_interpreter_exit(run_host: HostRunner) -> None:
    host, pids = run_host("exit")
    assert host.wait(timeout=30) == 0
    wait_gone(pids, 5.0, "the plugins of the exited host to end")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_plugins_are_killed_when_host_gets_signal(
    sig: signal.Signals, run_host: HostRunner
) -> None:
    # SIGTERM's handler is ours and does not need the main thread (see _registry).
    host, pids = run_host("wait" if sig == signal.SIGTERM else "wait-sliced")
    assert host.stdout is not None
    assert host.stdout.readline().strip() == "ready"
    host.send_signal(sig)
    code = host.wait(timeout=30)
    assert code != 0  # default SIGTERM action / KeyboardInterrupt still happen after cleanup
    wait_gone(pids, 5.0, "the plugins of the exited host to end")


def test_existing_signal_handler_is_chained(run_host: HostRunner) -> None:
    host, pids = run_host("chained")
    assert host.stdout is not None
    assert host.stdout.readline().strip() == "ready"
    host.send_signal(signal.SIGTERM)
    assert host.stdout.readline().strip() == "previous handler ran"
    assert host.wait(timeout=30) == 0
    wait_gone(pids, 5.0, "the plugins of the exited host to end")


def test_attach_to_running_plugin(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as owner:
        config = ReattachConfig.from_json(owner.reattach_config().to_json("echo"))
        assert config.pid == owner.pid
        attached = attach(config)
        attached.ping()
        assert attached.handshake.address == owner.handshake.address
        attached.kill(grace=2.0)
        wait_until(lambda: owner.exited or gone(owner.pid), 5.0, "the killed plugin to end")


def test_attach_to_dead_pid_fails(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        config = plugin.reattach_config()
    with pytest.raises(ReattachError, match="gone"):
        attach(config)


def test_attach_to_wrong_address_fails(leak_check: LeakCheck, tmp_path: object) -> None:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        config = ReattachConfig("grpc", 1, "unix", "/nonexistent/sock", plugin.pid)
        with pytest.raises(ReattachError, match="cannot reattach"):
            attach(config, timeout=0.5)


def test_attach_refuses_a_pid_that_does_not_hold_the_address(leak_check: LeakCheck) -> None:
    # A stale config whose pid now names another process: kill() would have SIGTERMed it.
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
            address = plugin.handshake.address
            config = ReattachConfig("grpc", 1, "unix", address, bystander.pid)
            with pytest.raises(ReattachError, match="does not listen at"):
                attach(config, timeout=5)
        assert bystander.poll() is None, "the bystander was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_failed_attach_leaves_no_descriptor_behind(leak_check: LeakCheck) -> None:
    # Each failed attach() kept a pidfd watched until the plugin exited.
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        config = ReattachConfig("grpc", 1, "unix", "/nonexistent/sock", plugin.pid)

        def pidfds() -> int:
            fds = os.listdir("/proc/self/fd")
            return sum(1 for fd in fds if "pidfd" in _link(f"/proc/self/fd/{fd}"))

        before = pidfds()
        for _ in range(20):
            with pytest.raises(ReattachError):
                attach(config, timeout=0.5)
        wait_until(lambda: pidfds() <= before, 10, lambda: f"pidfds: {before} -> {pidfds()}")


NO_WAIT_ATTACHES = textwrap.dedent(
    """
    import sys
    from aog_plugins import ReattachConfig, attach
    from aog_plugins.errors import ConfigurationError
    config = ReattachConfig.from_json(sys.stdin.read())
    for _ in range(int(sys.argv[1])):
        try:
            attach(config, timeout=0).detach()
            print("attached", flush=True)
        except ConfigurationError as exc:
            print(exc, flush=True)
    """
)


def test_attach_without_a_wait_is_refused_and_prints_no_grpc_traceback(
    leak_check: LeakCheck,
) -> None:
    # attach(timeout=0) could only fail (a new connection is never ready at once), and
    # failing, it closed its channel under grpcio's readiness poll (channel_ready_future),
    # whose thread often printed "Cannot monitor channel state: Channel closed!" with a
    # traceback on the host's stderr (in most of 100 attaches on a two-core machine). Such
    # a timeout is now refused before anything is opened, as for launch(start_timeout=0).
    attempts = 100
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        host = subprocess.run(
            [sys.executable, "-c", NO_WAIT_ATTACHES, str(attempts)],
            input=plugin.reattach_config().to_json("echo"),
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **leak_check.env},
        )
        plugin.ping()  # the refused attaches left the plugin alone
    assert host.returncode == 0, host.stderr
    results = host.stdout.splitlines()
    assert results == ["timeout must be a positive number of seconds, got 0"] * attempts
    assert "Traceback" not in host.stderr, host.stderr
    assert "Channel closed" not in host.stderr, host.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("timeout", float("inf"), "timeout must be a finite number of seconds"),
        ("timeout", -1.0, "timeout must be a positive number of seconds"),
        ("kill_grace", float("nan"), "kill_grace must be a number of seconds >= 0"),
        ("kill_grace", float("inf"), "kill_grace must be a finite number of seconds"),
        ("kill_grace", "2", "kill_grace must be a number of seconds"),
        # An int too large for a float was a bare OverflowError; one too long to print, too.
        pytest.param("kill_grace", 10**400, "kill_grace must be a finite", id="kill_grace-10**400"),
        pytest.param(
            "kill_grace", 10**5000, "kill_grace must be a finite", id="kill_grace-10**5000"
        ),
    ],
)
def test_attach_refuses_bad_durations_before_connecting(
    leak_check: LeakCheck, option: str, value: object, message: str
) -> None:
    # timeout=inf raised grpcio's bare OverflowError and left the channel, the relay and
    # the private socket dir behind; a bad kill_grace only failed later, in kill().
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        config = plugin.reattach_config()
        fds = len(os.listdir("/proc/self/fd"))
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            attach(config, **{option: value})  # type: ignore[arg-type]
        assert len(os.listdir("/proc/self/fd")) == fds, "nothing opened (no pidfd, no channel)"
        plugin.ping()


ACCEPT_ONCE = textwrap.dedent(
    """
    import socket, sys
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sys.argv[1])
    listener.listen(1)
    print("listening", flush=True)
    listener.accept()  # the host's connection; no gRPC is ever spoken on it
    """
)


def test_an_attach_stops_waiting_when_the_plugin_exits(leak_check: LeakCheck) -> None:
    # The "plugin" takes the host's connection, never answers it and exits: the attach
    # says so at once, instead of dialing the dead address again until its timeout.
    with tempfile.TemporaryDirectory(prefix="aog-attach-") as where:
        address = os.path.join(where, "plugin.sock")
        plugin = subprocess.Popen(
            [sys.executable, "-c", ACCEPT_ONCE, address],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **leak_check.env},
        )
        try:
            assert plugin.stdout is not None
            assert plugin.stdout.readline().strip() == "listening"
            config = ReattachConfig("grpc", 1, "unix", address, plugin.pid)
            with pytest.raises(ReattachError, match="exited before the host had connected"):
                attach(config, timeout=30)
        finally:
            plugin.kill()
            plugin.wait()
            if plugin.stdout is not None:
                plugin.stdout.close()


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_protocol_env_of_a_host_that_is_itself_a_plugin_is_not_inherited(
    leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bogus client cert inherited from our own environment would break the plugin's TLS.
    monkeypatch.setenv("PLUGIN_CLIENT_CERT", "garbage")
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        assert plugin.handshake.server_cert is None
        plugin.ping()


def test_long_tmpdir_still_gets_a_short_socket_path(
    leak_check: LeakCheck, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import tempfile
    from pathlib import Path

    long_dir = Path(str(tmp_path)) / ("x" * 90)
    long_dir.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_dir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    try:
        with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
            assert len(plugin.handshake.address) < 100
            plugin.ping()
    finally:
        tempfile.tempdir = None
