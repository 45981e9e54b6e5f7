"""launch(): the happy paths over unix/tcp x plaintext/AutoMTLS, and plugin I/O."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading

import grpc
import psutil
import pytest

from aog_plugins import RestartPolicy, launch
from aog_plugins._proto import provider_pb2, provider_pb2_grpc
from aog_plugins.errors import IncompatibleAppVersionError
from aog_plugins.handshake import generate_certificate
from aog_plugins.process import TRACE, PluginState
from aog_plugins.transport import ClientTLS, open_channel
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.wait import wait_until


def _echo(channel: grpc.Channel, payload: dict[str, object]) -> dict[str, object]:
    stub = provider_pb2_grpc.ProviderServiceStub(channel)
    reply = stub.InvokeService(
        provider_pb2.InvokeServiceRequest(
            service_name="chat", request_data=json.dumps(payload).encode()
        ),
        timeout=10,
    )
    assert reply.code == 0, reply.message
    result: dict[str, object] = json.loads(reply.response_data)
    return result


@pytest.mark.parametrize("network", ["unix", "tcp"])
@pytest.mark.parametrize("auto_mtls", [False, True], ids=["plaintext", "automtls"])
def test_launch_call_and_kill(network: str, auto_mtls: bool, leak_check: LeakCheck) -> None:
    env = {**leak_check.env, "AOG_PLUGINS_NETWORK": network}
    with launch(plugin_cmd("echo_plugin.py"), auto_mtls=auto_mtls, extra_env=env) as plugin:
        assert plugin.handshake.network == network
        assert plugin.handshake.app_version == 1
        assert (plugin.handshake.server_cert is not None) is auto_mtls
        assert plugin.state is PluginState.RUNNING
        assert psutil.pid_exists(plugin.pid)
        plugin.ping()
        assert _echo(plugin.channel, {"hello": "world"}) == {"hello": "world"}
        pid = plugin.pid
    assert plugin.exited
    assert plugin.state.name == "EXITED"  # (mypy keeps the RUNNING narrowing)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_wrong_client_certificate_is_refused(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), auto_mtls=True, extra_env=leak_check.env) as plugin:
        assert plugin.handshake.server_cert is not None
        stranger = ClientTLS(
            host=generate_certificate(), plugin_cert_der=plugin.handshake.server_cert
        )
        channel = open_channel(plugin.handshake.grpc_target, stranger)
        try:
            with pytest.raises(grpc.RpcError) as info:
                _echo(channel, {"x": 1})
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            channel.close()
        assert _echo(plugin.channel, {"x": 2}) == {"x": 2}  # the real host still works


def test_large_response_over_4_mib(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        stub = provider_pb2_grpc.ProviderServiceStub(plugin.channel)
        size = 6 * 1024 * 1024
        reply = stub.InvokeService(
            provider_pb2.InvokeServiceRequest(
                service_name="chat", request_data=json.dumps({"size": size}).encode()
            ),
            timeout=30,
        )
        assert reply.code == 0
        assert len(reply.response_data) >= size


def test_version_negotiation_picks_common_version(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), versions=[2, 1], extra_env=leak_check.env) as plugin:
        assert plugin.app_version == 1


def test_only_unsupported_versions_offered_is_refused(leak_check: LeakCheck) -> None:
    with pytest.raises(IncompatibleAppVersionError) as info:
        launch(plugin_cmd("echo_plugin.py"), versions=[2], extra_env=leak_check.env)
    assert "2" in str(info.value)


def test_stdio_after_handshake_reaches_callbacks(leak_check: LeakCheck) -> None:
    out: list[bytes] = []
    got = threading.Event()

    def on_stdout(data: bytes) -> None:
        out.append(data)
        got.set()

    with launch(plugin_cmd("echo_plugin.py"), stdout=on_stdout, extra_env=leak_check.env):
        assert got.wait(10), "no GRPCStdio stdout data arrived"
    assert b"".join(out).strip()


def test_hclog_lines_become_log_records(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    name = "aog_plugins.plugin.test-hclog"
    logger = logging.getLogger(name)
    with (
        caplog.at_level(TRACE, logger=name),
        launch(
            plugin_cmd("misbehave.py", "hclog"), logger=logger, extra_env=leak_check.env
        ) as plugin,
    ):
        wait_until(
            lambda: any(
                r.levelno == logging.ERROR and "goroutine" in r.getMessage() for r in caplog.records
            ),
            10,
            "the panic's goroutine line as an ERROR record",
        )
        plugin.ping()
    levels = {r.levelno for r in caplog.records if r.name == name}
    assert {TRACE, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR} <= levels
    panic = [r for r in caplog.records if r.getMessage().startswith("panic: ")]
    assert panic
    assert panic[0].levelno == logging.ERROR
    after_panic = caplog.records[caplog.records.index(panic[0]) + 1 :]
    assert after_panic
    assert all(r.levelno == logging.ERROR for r in after_panic if r.name == name)


def test_flood_does_not_stall_calls(leak_check: LeakCheck) -> None:
    received = [0]

    def sink(data: bytes) -> None:
        received[0] += len(data)

    with launch(
        plugin_cmd("misbehave.py", "flood"), stdout=sink, stderr=sink, extra_env=leak_check.env
    ) as plugin:
        for _ in range(50):
            plugin.ping(timeout=5)
        wait_until(
            lambda: received[0] >= 2 * 1024 * 1024,
            15,
            lambda: f"2 MiB of flooded output (got {received[0]} bytes)",
        )


def test_unhealthy_plugin_is_refused(leak_check: LeakCheck) -> None:
    from aog_plugins.errors import PluginUnhealthyError

    with pytest.raises(PluginUnhealthyError, match="NOT_SERVING"):
        launch(plugin_cmd("misbehave.py", "unhealthy"), extra_env=leak_check.env)


@pytest.mark.parametrize("mode", ["no-health", "no-stdio"])
def test_missing_optional_services_are_tolerated(mode: str, leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("misbehave.py", mode), extra_env=leak_check.env) as plugin:
        plugin.ping()


def test_kill_is_idempotent_and_thread_safe(leak_check: LeakCheck) -> None:
    plugin = launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env)
    threads = [threading.Thread(target=plugin.kill) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    plugin.kill()
    assert plugin.exited
    assert plugin.exit_code == 0


def test_plugin_death_is_detected(leak_check: LeakCheck) -> None:
    no_restart = RestartPolicy.never()
    with launch(
        plugin_cmd("echo_plugin.py"), restart=no_restart, extra_env=leak_check.env
    ) as plugin:
        os.kill(plugin.pid, signal.SIGKILL)
        wait_until(lambda: plugin.exited, 5, "the SIGKILLed plugin to be seen exiting")
        assert plugin.exit_code == -signal.SIGKILL
        assert plugin.state is PluginState.EXITED


def test_ignores_shutdown_and_sigterm_ends_in_sigkill(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = launch(plugin_cmd("misbehave.py", "ignore-shutdown"), extra_env=leak_check.env)
    with caplog.at_level(logging.DEBUG, logger=plugin.logger.name):
        plugin.kill(grace=1.0)
    assert plugin.exited
    assert plugin.exit_code == -signal.SIGKILL
    # Each step gave up on the plugin and the next one ran, in order, down to SIGKILL.
    steps = [
        r.getMessage() for r in caplog.records if f"plugin {plugin.pid} ignored" in r.getMessage()
    ]
    assert steps == [
        f"plugin {plugin.pid} ignored Shutdown; sending SIGTERM",
        f"plugin {plugin.pid} ignored SIGTERM; sending SIGKILL",
    ]


def test_grandchild_is_killed_with_the_plugin(
    leak_check: LeakCheck, caplog: pytest.LogCaptureFixture
) -> None:
    name = "aog_plugins.plugin.test-grandchild"
    with caplog.at_level(logging.DEBUG, logger=name):
        plugin = launch(
            plugin_cmd("misbehave.py", "grandchild"),
            logger=logging.getLogger(name),
            extra_env=leak_check.env,
        )
        pids = wait_until(
            lambda: [
                int(r.getMessage().split()[-1])
                for r in caplog.records
                if "grandchild pid" in r.getMessage()
            ],
            10,
            "the fixture to report its grandchild's pid",
        )
        grandchild = psutil.Process(pids[0])
        plugin.kill()
    grandchild.wait(timeout=3)
    assert not grandchild.is_running()


def test_ping_timeouts_are_checked_and_infinity_is_no_limit(leak_check: LeakCheck) -> None:
    # An infinite or huge timeout failed a healthy plugin with DEADLINE_EXCEEDED, and 0,
    # negative or NaN ones were a PluginConnectError instead of naming the bad value.
    from aog_plugins.errors import ConfigurationError

    with launch(plugin_cmd("local_provider.py"), extra_env=leak_check.env) as plugin:
        plugin.ping(timeout=float("inf"))
        plugin.ping(timeout=1e12)
        for bad in (0, -1.0, float("nan"), float("-inf"), True):
            with pytest.raises(ConfigurationError, match="timeout"):
                plugin.ping(timeout=bad)
