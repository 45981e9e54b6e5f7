"""PluginServer.stop() in-process: the host's long-lived streams end at once, because the
plugin's exit joins the threads they run on (a poll interval would delay every exit)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from aog_plugins._proto import grpc_broker_pb2, grpc_broker_pb2_grpc
from aog_plugins.server import PluginServer
from aog_plugins.server._broker import BrokerServicer
from tests.server.test_serve import _env
from tests.support.wait import wait_until


def test_stop_ends_the_broker_stream_without_waiting_for_its_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing but a wake-up can end the handler's wait in time: its poll is an hour.
    monkeypatch.setattr(BrokerServicer, "poll_interval", 3600.0)
    started, ended = threading.Event(), threading.Event()
    serve_stream = BrokerServicer.StartStream

    def tracked(
        self: BrokerServicer,
        requests: Iterator[grpc_broker_pb2.ConnInfo],
        context: grpc.ServicerContext,
    ) -> Iterator[grpc_broker_pb2.ConnInfo]:
        started.set()
        try:
            yield from serve_stream(self, requests, context)
        finally:
            ended.set()

    monkeypatch.setattr(BrokerServicer, "StartStream", tracked)
    server = PluginServer(lambda s: None, environ=_env(tmp_path))
    line = server.start()
    host_done = threading.Event()

    def host_requests() -> Iterator[grpc_broker_pb2.ConnInfo]:
        host_done.wait(60)  # the host sends nothing and keeps its side open
        yield from ()

    channel = grpc.insecure_channel(f"unix:{line.address}")
    try:
        call = grpc_broker_pb2_grpc.GRPCBrokerStub(channel).StartStream(host_requests())
        wait_until(started.is_set, 30, "the broker stream to reach the plugin")
        server.stop()
        wait_until(ended.is_set, 30, "the broker stream's handler to end after stop()")
    finally:
        host_done.set()
        channel.close()
        server.stop()
    assert call is not None
