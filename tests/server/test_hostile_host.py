"""A Python plugin against a host (or a neighbour) that pushes it to its limits: the
plugin may refuse work while a resource is exhausted, never stay broken after it."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aog_plugins._proto import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
)
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    HandshakeLine,
    generate_certificate,
    host_plugin_env,
    parse_handshake_line,
)
from aog_plugins.transport import open_channel, start_client_relay
from tests.support.wait import wait_until

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "plugins"

Start = Callable[[dict[str, str]], "tuple[subprocess.Popen[bytes], HandshakeLine]"]


@pytest.fixture
def start_echo(tmp_path: Path) -> Iterator[Start]:
    """Starts ``echo_plugin.py`` the way a host does; returns it and its handshake."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], HandshakeLine]:
        proc = subprocess.Popen(
            [sys.executable, str(FIXTURES / "echo_plugin.py")],
            env={**os.environ, **env, "PYTHONPATH": str(FIXTURES)},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        procs.append(proc)
        assert proc.stdout is not None
        return proc, parse_handshake_line(proc.stdout.readline().decode())

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _echo(channel: grpc.Channel, payload: bytes) -> bytes:
    reply = provider_pb2_grpc.ProviderServiceStub(channel).InvokeService(
        provider_pb2.InvokeServiceRequest(service_name="chat", request_data=payload), timeout=30
    )
    assert reply.code == 0
    return bytes(reply.response_data)


def test_the_relay_accepts_again_once_the_plugin_has_file_descriptors_again(
    tmp_path: Path, start_echo: Start
) -> None:
    """A Go host's P-521 certificate: the plugin's own TLS relay accepts its connections.
    While the plugin is out of file descriptors accept() fails (EMFILE); the relay used
    to stop accepting for good then, so the host could never connect again."""
    host = generate_certificate("P-521")
    proc, line = start_echo(
        host_plugin_env(AOG_HANDSHAKE, [1], client_cert_pem=host.cert_pem, socket_dir=str(tmp_path))
    )
    assert line.server_cert is not None
    plugin = psutil.Process(proc.pid)
    soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
    spare = 4
    limit = plugin.num_fds() + spare
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (limit, hard))
    # Silent connections: each one the relay accepts holds a descriptor in its TLS
    # handshake until that times out (10 s); the one left over waits in the backlog
    # while every accept() of it fails with EMFILE.
    silent = []
    for _ in range(spare + 1):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(line.address)
        silent.append(sock)
    try:
        wait_until(lambda: plugin.num_fds() >= limit, 30, "the plugin to run out of fds")
        # The relay gives up on the silent handshakes: descriptors are free again.
        wait_until(lambda: plugin.num_fds() < limit, 60, "the silent handshakes to time out")
    finally:
        for sock in silent:
            sock.close()
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    relay = start_client_relay(str(tmp_path), (line.network, line.address), host, line.server_cert)
    try:
        with open_channel(f"unix:{relay.address}") as channel:
            assert _echo(channel, b'{"after": "emfile"}') == b'{"after": "emfile"}'
    finally:
        relay.close()


def test_a_plugin_that_could_not_start_threads_answers_again_once_it_can(
    tmp_path: Path, start_echo: Start
) -> None:
    """Calls arrive while the plugin cannot start a thread (its address space is full:
    no room for a stack). grpcio's serving thread used to die of the RuntimeError the
    executors raised (the plugin deaf for good, Shutdown included), and the executor's
    watchdog with it (calls never got a thread of their own again)."""
    proc, line = start_echo(host_plugin_env(AOG_HANDSHAKE, [1], socket_dir=str(tmp_path)))
    plugin = psutil.Process(proc.pid)
    with open_channel(f"unix:{line.address}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="plugin")
        assert health.Check(check, timeout=30).status == health_pb2.HealthCheckResponse.SERVING
        # Every thread the plugin has is busy: its provider thread with a long call, its
        # go-plugin thread with the stdio stream.
        provider = provider_pb2_grpc.ProviderServiceStub(channel)
        long_call = provider.InvokeService.future(
            provider_pb2.InvokeServiceRequest(service_name="chat", request_data=b'{"sleep": 120}'),
            timeout=180,
        )
        stdio = grpc_stdio_pb2_grpc.GRPCStdioStub(channel).StreamStdio(empty_pb2.Empty())
        for output in stdio:  # its handler runs: the greeting has arrived
            assert b"echo plugin ready" in output.data
            break
        soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_AS)
        # Room for a few allocations, not for one more thread stack (8 MiB).
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (plugin.memory_info().vms + (4 << 20), hard))
        try:
            # Each needs a new thread, and none can be had.
            with pytest.raises(grpc.RpcError):
                health.Check(check, timeout=2)
            with pytest.raises(grpc.RpcError):
                _echo_within(provider, 2)
        finally:
            resource.prlimit(proc.pid, resource.RLIMIT_AS, (soft, hard))
        assert health.Check(check, timeout=30).status == health_pb2.HealthCheckResponse.SERVING
        assert not long_call.done()
        assert _echo_within(provider, 30) == b'{"quick": true}'
        with contextlib.suppress(grpc.RpcError):  # the server may go away mid-call
            grpc_controller_pb2_grpc.GRPCControllerStub(channel).Shutdown(
                grpc_controller_pb2.Empty(), timeout=30
            )
        stdio.cancel()  # type: ignore[no-untyped-call]
    assert proc.wait(timeout=30) == 0


def _echo_within(provider: provider_pb2_grpc.ProviderServiceStub, timeout: float) -> bytes:
    reply = provider.InvokeService(
        provider_pb2.InvokeServiceRequest(service_name="chat", request_data=b'{"quick": true}'),
        timeout=timeout,
    )
    return bytes(reply.response_data)


GO_PLUGIN_KILL_GRACE = 2.0
"""go-plugin's host SIGKILLs a plugin that has not exited this long after Shutdown."""


def test_connections_stuck_in_the_relays_tls_handshake_do_not_hold_up_shutdown(
    tmp_path: Path, start_echo: Start
) -> None:
    """Connections that never finish their TLS handshake (on TCP any local user can open
    them) each held a relay thread for the handshake's 10 s timeout, and the plugin's
    exit joined those threads: Shutdown took up to 10 s, so a go-plugin host, which
    waits 2 s, SIGKILLed it. Now the relay's close() ends those handshakes at once."""
    host = generate_certificate("P-521")
    proc, line = start_echo(
        host_plugin_env(AOG_HANDSHAKE, [1], client_cert_pem=host.cert_pem, socket_dir=str(tmp_path))
    )
    assert line.server_cert is not None
    plugin = psutil.Process(proc.pid)
    idle_threads = plugin.num_threads()
    stuck = []
    for _ in range(3):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(line.address)
        stuck.append(sock)
    relay = start_client_relay(str(tmp_path), (line.network, line.address), host, line.server_cert)
    try:
        wait_until(
            lambda: plugin.num_threads() >= idle_threads + len(stuck),
            30,
            "the relay to take the silent connections",
        )
        # (The server may go away mid-call.)
        with open_channel(f"unix:{relay.address}") as channel, contextlib.suppress(grpc.RpcError):
            grpc_controller_pb2_grpc.GRPCControllerStub(channel).Shutdown(
                grpc_controller_pb2.Empty(), timeout=30
            )
        # A bound that is the host's protocol, not a speed requirement: past it the
        # plugin would be killed; the stuck handshakes alone would last 10 s.
        assert proc.wait(timeout=GO_PLUGIN_KILL_GRACE + 2.0) == 0
    finally:
        relay.close()
        for sock in stuck:
            sock.close()
