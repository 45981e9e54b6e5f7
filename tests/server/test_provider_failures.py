"""The failure services both fixture providers share (fixtures/plugins/_providers): error
codes, errors mid-stream, a 16 MiB response, a crash, timeouts and host cancellation."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from aog_plugins._proto import provider_pb2 as pb
from tests.process.conftest import LeakCheck
from tests.server.test_provider_support import (
    TIMEOUT,
    Running,
    leak_check,
    local,
    remote,
    rpc_error,
    run_fixture,
    streaming,
)
from tests.support.wait import wait_until

__all__ = ["leak_check", "local", "remote"]

T = TIMEOUT
FIXTURES = ["local", "remote"]
SCRIPTS = {"local": "local_provider.py", "remote": "remote_provider.py"}


@pytest.fixture(params=FIXTURES)
def provider(request: pytest.FixtureRequest) -> Running:
    """Each test here runs against both fixture providers."""
    running: Running = request.getfixturevalue(request.param)
    return running


def _request(service: str, body: dict[str, object] | None = None) -> pb.InvokeServiceRequest:
    data = json.dumps(body).encode() if body is not None else b""
    return pb.InvokeServiceRequest(service_name=service, request_data=data)


def _chunks(running: Running, service: str) -> list[tuple[int, str, bytes, bool]]:
    call = streaming(running.stub.InvokeServiceStream(_request(service), timeout=T))
    chunks = [(c.code, c.message, c.chunk_data, c.is_final) for c in call]
    assert call.code() is grpc.StatusCode.OK  # stream failures travel in code/message
    return chunks


def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def test_fail_is_code_4001(provider: Running) -> None:
    reply = provider.stub.InvokeService(_request("fail"), timeout=T)
    assert (reply.code, reply.message) == (4001, "fail: failing on purpose")


def test_fail_as_a_stream_is_one_final_error_chunk(provider: Running) -> None:
    assert _chunks(provider, "fail") == [(4001, "fail: failing on purpose", b"", True)]


def test_fail_stream_sends_two_chunks_then_a_final_error_chunk(provider: Running) -> None:
    assert _chunks(provider, "fail-stream") == [
        (0, "success", b'{"index": 0}', False),
        (0, "success", b'{"index": 1}', False),
        (4001, "fail-stream: failing after 2 chunks", b"", True),
    ]


def test_an_error_chunk_ends_the_stream(provider: Running) -> None:
    assert _chunks(provider, "fail-chunk") == [
        (0, "success", b'{"index": 0}', False),
        (4004, "fail-chunk: bad upstream chunk", b"", True),
    ]


@pytest.mark.parametrize(
    ("fixture", "size"), [("local", 16 * 1024 * 1024), ("remote", 5 * 1024 * 1024 + 3)]
)
def test_big_responses_arrive_intact(
    request: pytest.FixtureRequest, fixture: str, size: int
) -> None:
    running: Running = request.getfixturevalue(fixture)
    reply = running.stub.InvokeService(_request("big", {"size": size}), timeout=60)
    assert (reply.code, reply.message) == (0, "success")
    assert len(reply.response_data) == size
    assert reply.response_data == _pattern(size)


def test_big_beyond_its_limit_is_a_request_error(local: Running) -> None:
    reply = local.stub.InvokeService(_request("big", {"size": 1 << 30}), timeout=T)
    assert reply.code == 4003


@pytest.mark.parametrize("fixture", FIXTURES)
def test_a_slow_call_hits_the_host_deadline_and_the_plugin_goes_on(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    running: Running = request.getfixturevalue(fixture)
    with pytest.raises(grpc.RpcError) as info:
        running.stub.InvokeService(_request("slow", {"seconds": 1.0}), timeout=0.2)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    reply = running.stub.InvokeService(_request("slow", {"seconds": 0.01}), timeout=T)
    assert json.loads(reply.response_data) == {"slept": 0.01}


@pytest.mark.parametrize("end", ["cancel", "deadline"])
def test_host_ending_a_slow_stream_closes_the_provider_generator(
    provider: Running, end: str
) -> None:
    before = provider.logs.count("stream cancelled")
    timeout = 0.6 if end == "deadline" else T
    call = streaming(provider.stub.InvokeServiceStream(_request("slow-stream"), timeout=timeout))
    for index in range(3):
        assert json.loads(next(call).chunk_data) == {"index": index}
    if end == "cancel":
        call.cancel()
    expected = grpc.StatusCode.CANCELLED if end == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED
    assert rpc_error(call).code() is expected
    provider.logs.wait_for("stream cancelled", 3.0, more_than=before)


@pytest.mark.parametrize(("script", "stream"), [("local", False), ("remote", True)])
def test_crash_exits_the_plugin_mid_call(
    leak_check: LeakCheck, script: str, stream: bool, tmp_path: Path
) -> None:
    with run_fixture(SCRIPTS[script], leak_check.env) as running:
        if stream:
            # The plugin exits once the chunk was read: an exit that overtook it (the
            # chunk dying in flight, or the host closing its channel on seeing the exit
            # before the chunk was read) would be a race of this test, not its subject.
            go = tmp_path / "crash-now"
            request = _request("crash", {"after": str(go)})
            call = streaming(running.stub.InvokeServiceStream(request, timeout=T))
            assert next(call).chunk_data == b'{"index": 0}'
            go.touch()
            error = rpc_error(call)
        else:
            with pytest.raises(grpc.RpcError) as info:
                running.stub.InvokeService(_request("crash"), timeout=T)
            error = info.value
        # UNAVAILABLE when the socket drops first; CANCELLED ("Channel closed!") when the
        # host noticed the exit first and closed its channel.
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        wait_until(lambda: running.plugin.exited, 5.0, "the crashed plugin to be seen exiting")
        assert running.plugin.exit_code == 7
        running.logs.wait_for("crashing on purpose")
