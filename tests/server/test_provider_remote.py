"""fixtures/plugins/remote_provider.py as a real process: auth, SSE streams and the bidi
``realtime`` echo, driven with raw ProviderService stubs."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from aog_plugins._proto import provider_pb2 as pb
from tests.process.conftest import LeakCheck
from tests.server.test_provider_support import (
    ENGINE_RPCS,
    TIMEOUT,
    Running,
    Sender,
    bidi_first,
    leak_check,
    remote,
    rpc_error,
    run_fixture,
    streaming,
    text,
)

__all__ = ["leak_check", "remote"]

T = TIMEOUT


def _status(reply: Any) -> tuple[int, str]:
    return reply.code, reply.message


def _auth_info(running: Running) -> dict[str, Any]:
    reply = running.stub.InvokeService(pb.InvokeServiceRequest(service_name="auth"), timeout=T)
    assert reply.code == 0
    result: dict[str, Any] = json.loads(reply.response_data)
    return result


def test_manifest_is_a_remote_plugin_with_stream_and_bidi_services(remote: Running) -> None:
    reply = remote.stub.GetManifest(pb.GetManifestRequest(), timeout=T)
    assert _status(reply) == (0, "success")
    manifest = json.loads(reply.manifest_json)
    assert manifest["provider"]["type"] == "remote"
    services = {s["service_name"]: s for s in manifest["services"]}
    assert services["chat"]["capabilities"] == {"support_streaming": True}
    assert services["chat"]["auth_type"] == "apikey"
    assert services["realtime"]["expose_protocol"] == "WEBSOCKET"
    assert services["realtime"]["capabilities"]["support_bidirectional"] is True


def test_auth_fails_until_set_auth_gets_an_api_key(leak_check: LeakCheck) -> None:
    with run_fixture("remote_provider.py", leak_check.env) as running:
        stub = running.stub
        no_key = (1002, "no api_key set: call SetAuth first")
        assert _status(stub.ValidateAuth(pb.ValidateAuthRequest(), timeout=T)) == no_key
        assert _status(stub.RefreshAuth(pb.RefreshAuthRequest(), timeout=T)) == no_key
        empty = stub.SetAuth(pb.SetAuthRequest(auth_type="apikey"), timeout=T)
        assert _status(empty) == (1002, "an api_key credential is required")

        good = pb.SetAuthRequest(auth_type="apikey", credentials={"api_key": "sk-1"})
        assert _status(stub.SetAuth(good, timeout=T)) == (0, "success")
        assert _status(stub.ValidateAuth(pb.ValidateAuthRequest(), timeout=T)) == (0, "success")
        for _ in range(2):
            assert _status(stub.RefreshAuth(pb.RefreshAuthRequest(), timeout=T)) == (0, "success")
        assert _auth_info(running) == {"auth_type": "apikey", "has_key": True, "refreshes": 2}

        revoked = pb.SetAuthRequest(auth_type="token", credentials={"api_key": "revoked"})
        assert _status(stub.SetAuth(revoked, timeout=T)) == (0, "success")
        validated = stub.ValidateAuth(pb.ValidateAuthRequest(), timeout=T)
        assert _status(validated) == (4001, "api key was revoked")


def test_a_remote_plugin_refuses_every_engine_rpc(remote: Running) -> None:
    for name, request in ENGINE_RPCS:
        reply = getattr(remote.stub, name)(request, timeout=T)
        assert _status(reply) == (11, "not a local plugin"), name
    pulls = list(remote.stub.PullModelStream(pb.PullModelStreamRequest(), timeout=T))
    assert [_status(p) for p in pulls] == [(11, "not a local plugin")]


def test_chat_is_deterministic_and_sees_auth_info(remote: Running) -> None:
    body = json.dumps({"model": "cloud-large", "messages": [{"content": "yo"}]}).encode()
    request = pb.InvokeServiceRequest(service_name="chat", request_data=body, auth_info="k=v")
    first = remote.stub.InvokeService(request, timeout=T)
    assert _status(first) == (0, "success")
    answer = json.loads(first.response_data)
    assert answer["model"] == "cloud-large"
    assert answer["choices"][0]["message"]["content"] == "echo: yo"
    assert answer["auth_info"] == "k=v"
    assert remote.stub.InvokeService(request, timeout=T).response_data == first.response_data


def test_chat_stream_is_sse_chunks_then_a_final_done(remote: Running) -> None:
    body = json.dumps({"chunks": 4}).encode()
    request = pb.InvokeServiceRequest(service_name="chat", request_data=body)
    chunks = list(remote.stub.InvokeServiceStream(request, timeout=T))
    assert [_status(c) for c in chunks] == [(0, "success")] * 5
    assert [c.is_final for c in chunks] == [False] * 4 + [True]
    for index, chunk in enumerate(chunks[:4]):
        assert chunk.chunk_data == (
            f'data: {{"index": {index}, "delta": "tok{index}"}}\n\n'.encode()
        )
    assert chunks[-1].chunk_data == b"data: [DONE]\n\n"
    assert all(c.metadata == {"content-type": "text/event-stream"} for c in chunks)


def test_a_stream_without_a_final_chunk_just_ends_ok(remote: Running) -> None:
    body = json.dumps({"chunks": 2, "final": False}).encode()
    call = streaming(
        remote.stub.InvokeServiceStream(
            pb.InvokeServiceRequest(service_name="chat", request_data=body), timeout=T
        )
    )
    chunks = list(call)
    assert [c.is_final for c in chunks] == [False, False]
    assert call.code() is grpc.StatusCode.OK


def test_realtime_echo_ping_binary_whoami_and_close(remote: Running) -> None:
    requests = [
        bidi_first(ws_conn_id="ws-42", auth_info="Bearer t", data=b"hello", message_type="text"),
        text("ping-data", kind="ping"),
        text(b"\x00\x01", kind="binary"),
        text("whoami"),
        text("", kind="close"),
        text("after close"),
    ]
    call = streaming(remote.stub.InvokeServiceBidi(iter(requests), timeout=T))
    replies = list(call)
    assert call.code() is grpc.StatusCode.OK
    assert all(_status(r) == (0, "success") for r in replies)
    assert all(r.metadata == {"ws_conn_id": "ws-42"} for r in replies)
    assert [(r.message_type, r.data) for r in replies[:3]] == [
        ("text", b"echo: hello"),
        ("pong", b"ping-data"),
        ("binary", b"\x00\x01"),
    ]
    assert json.loads(replies[3].data) == {
        "service": "realtime",
        "ws_conn_id": "ws-42",
        "auth_info": "Bearer t",
    }
    assert [(r.message_type, r.data) for r in replies[4:]] == [("close", b"bye")]
    remote.logs.wait_for("realtime ended (close) for 'ws-42'")


def test_realtime_close_ends_the_call_while_the_host_side_stays_open(remote: Running) -> None:
    sender = Sender([bidi_first(), text("one"), text("", kind="close")])
    try:
        call = streaming(remote.stub.InvokeServiceBidi(iter(sender), timeout=T))
        assert [r.message_type for r in call] == ["text", "close"]
        assert call.code() is grpc.StatusCode.OK
    finally:
        sender.close()


def test_realtime_error_item_then_a_crash_of_the_handler(remote: Running) -> None:
    requests = [bidi_first(), text("error-item"), text("still here"), text("boom"), text("x")]
    replies = list(remote.stub.InvokeServiceBidi(iter(requests), timeout=T))
    assert [(r.code, r.message, r.data) for r in replies] == [
        (4004, "error-item: bad message", b""),
        (0, "success", b"echo: still here"),
        (11, "RuntimeError: boom", b""),
    ]


@pytest.mark.parametrize(
    ("requests", "status"),
    [
        ([], (11, "failed to read first bidirectional message: EOF")),
        ([bidi_first(is_first=False)], (11, "first bidirectional message must set is_first=true")),
        ([bidi_first("")], (11, "service_name is required in first bidirectional message")),
        ([bidi_first("fail")], (4001, "fail: failing on purpose")),
        ([bidi_first("chat")], (4006, "service 'chat' is not bidirectional")),
    ],
)
def test_bidi_refusals(
    remote: Running, requests: list[pb.InvokeServiceBidiRequest], status: tuple[int, str]
) -> None:
    call = streaming(remote.stub.InvokeServiceBidi(iter(requests), timeout=T))
    assert [_status(r) for r in call] == [status]
    assert call.code() is grpc.StatusCode.OK


@pytest.mark.parametrize("how", ["half-close", "cancel"])
def test_bidi_inbound_ends_when_the_host_half_closes_or_cancels(
    leak_check: LeakCheck, how: str
) -> None:
    with run_fixture("remote_provider.py", leak_check.env) as running:
        sender = Sender([bidi_first(ws_conn_id="ws-end"), text("one")])
        try:
            call = streaming(running.stub.InvokeServiceBidi(iter(sender), timeout=T))
            assert next(call).data == b"echo: one"
            if how == "cancel":
                call.cancel()
                assert rpc_error(call).code() is grpc.StatusCode.CANCELLED
            else:
                sender.close()
                assert list(call) == []
                assert call.code() is grpc.StatusCode.OK
            running.logs.wait_for("realtime ended")
            ended = [m for m in running.logs.messages() if "realtime ended" in m]
            # On cancel the generator is either waiting for input (its inbound ends) or
            # suspended after a yield (the server closes it): both are the end of it.
            allowed = (
                ["inbound-ended"] if how == "half-close" else ["inbound-ended", "closed-by-server"]
            )
            assert ended in ([f"realtime ended ({a}) for 'ws-end'"] for a in allowed)
        finally:
            sender.close()
        # The plugin is still fine afterwards.
        replies = list(running.stub.InvokeServiceBidi(iter([bidi_first(data=b"x")]), timeout=T))
        assert [r.data for r in replies] == [b"echo: x"]
