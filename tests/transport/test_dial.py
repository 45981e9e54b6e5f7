"""Dialing: asking a channel whether it is connected, without a thread left polling it."""

from __future__ import annotations

import threading
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from aog_plugins import launch
from aog_plugins.transport import HEALTH_SERVICE, is_connected, open_channel
from tests.process.conftest import LeakCheck, plugin_cmd


def test_a_channel_nobody_answers_is_not_connected_and_no_thread_is_left(
    tmp_path: Path,
) -> None:
    # grpc.channel_ready_future() answers this too, but leaves a thread polling the channel
    # that dies with a traceback once the channel is closed.
    channel = open_channel(f"unix:{tmp_path / 'nobody'}")
    before = set(threading.enumerate())
    try:
        assert not is_connected(channel)
        assert set(threading.enumerate()) - before == set()
    finally:
        channel.close()
    assert not is_connected(channel)  # closed: not connected, and no error


def test_a_channel_that_made_a_call_is_connected_until_closed(leak_check: LeakCheck) -> None:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        channel = open_channel(plugin.handshake.grpc_target)
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=30
            )
            assert is_connected(channel)
        finally:
            channel.close()
        assert not is_connected(channel)
