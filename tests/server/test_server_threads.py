"""A plugin busy with many long calls still answers the host: health checks and Shutdown
never wait behind provider calls (aog_plugins/server/_pools.py), in a Python plugin as in
a Go one. "Graceful" is checked on the host's side: its kill ladder logs when a plugin
ignored Shutdown and had to be signalled."""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest

from aog_plugins import Plugin, RestartPolicy, launch
from aog_plugins._proto import provider_pb2 as pb
from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.client import ResponseStream
from aog_plugins.errors import ConfigurationError
from aog_plugins.server import PluginServer
from aog_plugins.types import StreamChunk
from tests.gofixtures.conftest import go_bins
from tests.process.conftest import FIXTURES, LeakCheck, leak_check, plugin_cmd
from tests.server.test_provider_support import Collected, collect
from tests.support.gobuild import GoBinaries

__all__ = ["go_bins", "leak_check"]

STREAMS = 70  # more than the old fixed pool of 64 threads (2 of them held by stdio/broker)
STREAM_TIMEOUT = 30.0  # bounds a stream that is never served, so a regression fails
pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def _launched(cmd: list[str] | str, env: dict[str, str]) -> Iterator[tuple[Plugin, Collected]]:
    logger = logging.getLogger(f"tests.server.threads.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs = Collected()
    logger.addHandler(logs)
    try:
        with launch(cmd, extra_env=env, logger=logger, restart=RestartPolicy.never()) as plugin:
            yield plugin, logs
    finally:
        logger.removeHandler(logs)


def _open(
    plugin: Plugin, count: int, service: str, body: bytes
) -> list[ResponseStream[StreamChunk]]:
    return [
        plugin.client.invoke_service_stream(service, body, timeout=STREAM_TIMEOUT)
        for _ in range(count)
    ]


def _kill_gracefully(plugin: Plugin, logs: Collected) -> None:
    """kill() must end the plugin through its Shutdown RPC: no SIGTERM, no SIGKILL."""
    plugin.kill(grace=30.0)
    signalled = [m for m in logs.messages() if "ignored Shutdown" in m or "ignored SIGTERM" in m]
    assert not signalled, f"the plugin did not exit via Shutdown: {signalled}"
    assert plugin.exit_code == 0


@pytest.mark.parametrize("script", ["local_provider.py", "remote_provider.py"])
def test_python_plugin_serves_70_streams_and_still_answers(
    leak_check: LeakCheck, script: str
) -> None:
    with _launched(plugin_cmd(script), leak_check.env) as (plugin, logs):
        streams = _open(plugin, STREAMS, "slow-stream", b'{"interval": 0.2}')
        # Every stream is being served at once: each delivers its first chunk.
        for stream in streams:
            assert next(stream).data == b'{"index": 0}'
        plugin.ping(timeout=10)
        assert plugin.client.get_manifest(timeout=10).provider.name
        for stream in streams[:5]:
            assert next(stream).data  # still flowing
        _kill_gracefully(plugin, logs)


def test_full_provider_pool_never_starves_health_or_shutdown(leak_check: LeakCheck) -> None:
    # max_workers=4: four streams take every provider thread, two more wait for one.
    env = {**leak_check.env, "AOG_FIXTURE_MAX_WORKERS": "4"}
    with _launched(plugin_cmd("remote_provider.py"), env) as (plugin, logs):
        # One at a time: which of several calls opened together the server takes first
        # is not ordered, and a stream left waiting for a thread never answers.
        streams: list[ResponseStream[StreamChunk]] = []
        for _ in range(4):
            streams += _open(plugin, 1, "slow-stream", b'{"interval": 0.2}')
            assert next(streams[-1]).data == b'{"index": 0}'
        streams += _open(plugin, 2, "slow-stream", b'{"interval": 0.2}')  # these wait
        for _ in range(3):
            plugin.ping(timeout=10)
        _kill_gracefully(plugin, logs)


def test_go_plugin_serves_70_streams_and_still_answers(
    go_bins: GoBinaries, leak_check: LeakCheck
) -> None:
    env = {**leak_check.env, "AOG_FIXTURE_KIND": "remote"}
    with _launched(str(go_bins.aog_provider), env) as (plugin, logs):
        streams = _open(plugin, STREAMS, "slow", b'{"ms": 200, "chunks": 100000}')
        for stream in streams:
            assert next(stream).data.startswith(b'data: {"index":0')
        plugin.ping(timeout=10)
        assert plugin.client.get_manifest(timeout=10).provider.name
        _kill_gracefully(plugin, logs)


@pytest.mark.parametrize("bad", [0, -1, True])
def test_max_workers_must_be_a_positive_int(bad: int) -> None:
    with pytest.raises(ConfigurationError, match="max_workers"):
        PluginServer(lambda server: None, max_workers=bad)


# A servicer of the author's own (serve(), not serve_provider()) whose calls end with
# exceptions grpcio does not catch: they used to leave the call unanswered, silently,
# until the host's deadline.
NOT_AN_EXCEPTION = """
import _fixture_path
from aog_plugins._proto import provider_pb2 as pb, provider_pb2_grpc
from aog_plugins.server import serve

class Servicer(provider_pb2_grpc.ProviderServiceServicer):
    def InvokeService(self, request, context):
        raise KeyboardInterrupt("in a unary call")

    def InvokeServiceStream(self, request, context):
        yield pb.InvokeServiceStreamResponse(chunk_data=b"one")
        raise SystemExit(4)

serve(lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(Servicer(), server))
"""


def test_a_handler_raising_a_base_exception_is_answered_unknown(leak_check: LeakCheck) -> None:
    env = {**leak_check.env, "PYTHONPATH": str(FIXTURES)}
    with _launched([sys.executable, "-c", NOT_AN_EXCEPTION], env) as (plugin, logs):
        stub = provider_pb2_grpc.ProviderServiceStub(plugin.channel)
        for _ in range(2):  # and the plugin goes on serving
            with pytest.raises(grpc.RpcError) as info:
                stub.InvokeService(pb.InvokeServiceRequest(service_name="x"), timeout=5)
            assert info.value.code() is grpc.StatusCode.UNKNOWN
            assert "KeyboardInterrupt: in a unary call" in str(info.value.details())
        stream = stub.InvokeServiceStream(pb.InvokeServiceRequest(service_name="x"), timeout=5)
        received: list[pb.InvokeServiceStreamResponse] = []
        with pytest.raises(grpc.RpcError) as info:
            collect(stream, received)
        assert [item.chunk_data for item in received] == [b"one"]
        assert info.value.code() is grpc.StatusCode.UNKNOWN
        assert "SystemExit: 4" in str(info.value.details())
        logs.wait_for("KeyboardInterrupt")  # the plugin logged it too
        _kill_gracefully(plugin, logs)
