"""fixtures/plugins/local_provider.py as a real process, driven with raw ProviderService
stubs so that the wire behaviour of serve_provider is what is checked."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from aog_plugins._proto import provider_pb2 as pb
from tests.process.conftest import LeakCheck
from tests.server.test_provider_support import (
    TIMEOUT,
    Running,
    bidi_first,
    collect,
    leak_check,
    local,
    run_fixture,
)

__all__ = ["leak_check", "local"]

T = TIMEOUT


def _ok(reply: Any) -> Any:
    assert (reply.code, reply.message) == (0, "success")
    return reply


def _failed(reply: Any) -> tuple[int, str]:
    return reply.code, reply.message


def _state(running: Running) -> dict[str, Any]:
    reply = _ok(
        running.stub.InvokeService(pb.InvokeServiceRequest(service_name="state"), timeout=T)
    )
    result: dict[str, Any] = json.loads(reply.response_data)
    return result


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def test_manifest_is_a_local_plugin_with_chat_and_embed(local: Running) -> None:
    reply = _ok(local.stub.GetManifest(pb.GetManifestRequest(), timeout=T))
    manifest = json.loads(reply.manifest_json)
    assert manifest["provider"]["type"] == "local"
    assert manifest["provider"]["name"] == "local-fixture"
    services = {s["service_name"]: s for s in manifest["services"]}
    assert services["chat"]["capabilities"] == {"support_streaming": True}
    assert services["embed"]["capabilities"] == {}
    assert {"fail", "fail-stream", "big", "crash", "slow", "slow-stream"} <= set(services)


def test_engine_lifecycle(leak_check: LeakCheck) -> None:
    with run_fixture("local_provider.py", leak_check.env) as running:
        stub = running.stub
        assert _ok(stub.CheckEngine(pb.CheckEngineRequest(), timeout=T)).installed is False
        started = stub.StartEngine(pb.StartEngineRequest(mode="daemon"), timeout=T)
        assert _failed(started) == (2001, "engine not installed")
        _ok(stub.InstallEngine(pb.InstallEngineRequest(), timeout=T))
        again = stub.InstallEngine(pb.InstallEngineRequest(cover=False), timeout=T)
        assert _failed(again) == (2004, "engine already installed (set cover to reinstall)")
        _ok(stub.InstallEngine(pb.InstallEngineRequest(cover=True), timeout=T))
        assert _ok(stub.CheckEngine(pb.CheckEngineRequest(), timeout=T)).installed is True

        bad_mode = stub.StartEngine(pb.StartEngineRequest(mode="turbo"), timeout=T)
        assert _failed(bad_mode) == (2002, "unknown start mode 'turbo'")
        _ok(stub.StartEngine(pb.StartEngineRequest(mode="standard"), timeout=T))
        _ok(stub.InitEnv(pb.InitEnvRequest(), timeout=T))
        state = _state(running)
        assert state["install_count"] == 2
        assert (state["running"], state["mode"], state["env_ready"]) == (True, "standard", True)
        _ok(stub.StopEngine(pb.StopEngineRequest(), timeout=T))
        assert _state(running)["running"] is False

        version = _ok(stub.GetVersion(pb.GetVersionRequest(), timeout=T))
        assert version.response_json == b'{"version":"0.1.0"}'
        _ok(stub.UpgradeEngine(pb.UpgradeEngineRequest(), timeout=T))
        asked = pb.GetVersionRequest(request_json=b'{"version":"0.1.0"}')
        version = _ok(stub.GetVersion(asked, timeout=T))
        assert json.loads(version.response_json) == {"version": "0.2.0", "asked": "0.1.0"}


def test_get_config(local: Running) -> None:
    config = json.loads(_ok(local.stub.GetConfig(pb.GetConfigRequest(), timeout=T)).config_json)
    assert config["host"] == "127.0.0.1:16677"
    assert config["exec_file"] == "fake-engine"
    assert set(config) >= {"origin", "scheme", "recommend_model", "download_url", "device_type"}


EXPECTED_PULL = [
    {"status": "pulling manifest"},
    *(
        {"status": "downloading {short}", "digest": "{digest}", "total": 3000, "completed": n}
        for n in (1000, 2000, 3000)
    ),
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


def test_models_pull_list_load_unload_delete(leak_check: LeakCheck) -> None:
    with run_fixture("local_provider.py", leak_check.env) as running:
        stub = running.stub
        listed = _ok(stub.ListModels(pb.ListModelsRequest(), timeout=T))
        assert listed.response_json == b'{"models":[]}'

        request = pb.PullModelStreamRequest(request_json=_json({"model": "m-stream"}))
        items = [_ok(i) for i in stub.PullModelStream(request, timeout=T)]
        progress = [json.loads(i.data) for i in items]
        digest = progress[1]["digest"]
        expected = json.loads(
            json.dumps(EXPECTED_PULL).replace("{digest}", digest).replace("{short}", digest[7:19])
        )
        assert progress == expected

        pulled = stub.PullModel(pb.PullModelRequest(request_json=_json({"model": "m-unary"})))
        assert _ok(pulled).response_json == b'{"status":"success"}'
        models = json.loads(_ok(stub.ListModels(pb.ListModelsRequest(), timeout=T)).response_json)
        assert [m["name"] for m in models["models"]] == ["m-stream", "m-unary"]
        first = models["models"][0]
        assert first["modified_at"] == "2024-01-02T03:04:05Z"
        assert first["digest"] == digest[7:]
        assert first["details"]["format"] == "gguf"

        load = pb.LoadModelRequest(request_json=_json({"model": "m-unary"}))
        _ok(stub.LoadModel(load, timeout=T))
        running_models = _ok(stub.GetRunningModels(pb.GetRunningModelsRequest(), timeout=T))
        assert [m["name"] for m in json.loads(running_models.response_json)["models"]] == [
            "m-unary"
        ]
        not_loaded = pb.UnloadModelRequest(request_json=_json({"models": ["m-stream"]}))
        assert _failed(stub.UnloadModel(not_loaded, timeout=T)) == (
            3004,
            "model 'm-stream' is not loaded",
        )
        unload = pb.UnloadModelRequest(request_json=_json({"models": ["m-unary"]}))
        _ok(stub.UnloadModel(unload, timeout=T))
        assert _state(running)["loaded"] == []

        delete = pb.DeleteModelRequest(request_json=_json({"model": "m-stream"}))
        _ok(stub.DeleteModel(delete, timeout=T))
        assert _state(running)["models"] == ["m-unary"]


@pytest.mark.parametrize(
    ("rpc", "request_type", "body"),
    [
        ("DeleteModel", pb.DeleteModelRequest, {"model": "nope"}),
        ("LoadModel", pb.LoadModelRequest, {"model": "nope"}),
        ("UnloadModel", pb.UnloadModelRequest, {"models": ["nope"]}),
        ("PullModel", pb.PullModelRequest, {"model": "missing-1"}),
    ],
)
def test_unknown_models_fail_with_a_model_error_code(
    local: Running, rpc: str, request_type: Any, body: dict[str, Any]
) -> None:
    reply = getattr(local.stub, rpc)(request_type(request_json=_json(body)), timeout=T)
    name = body.get("model") or body["models"][0]
    assert _failed(reply) == (3000, f"model {name!r} not found")


@pytest.mark.parametrize(
    ("model", "sent", "code", "message"),
    [
        ("missing-2", 0, 3000, "model 'missing-2' not found"),
        ("broken-1", 2, 3001, "pull of 'broken-1' failed: connection reset"),
    ],
)
def test_pull_stream_failure_is_an_error_item_then_grpc_unknown(
    local: Running, model: str, sent: int, code: int, message: str
) -> None:
    received: list[pb.PullModelStreamResponse] = []
    request = pb.PullModelStreamRequest(request_json=_json({"model": model}))
    with pytest.raises(grpc.RpcError) as info:
        collect(local.stub.PullModelStream(request, timeout=T), received)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() == message
    assert [i.code for i in received] == [0] * sent + [code]
    assert received[-1].message == message


def test_operate_status_and_health_check(leak_check: LeakCheck) -> None:
    with run_fixture("local_provider.py", leak_check.env) as running:
        stub = running.stub
        assert stub.GetOperateStatus(pb.GetOperateStatusRequest(), timeout=T).status == 0
        _ok(stub.HealthCheck(pb.HealthCheckRequest(), timeout=T))
        stub.SetOperateStatus(pb.SetOperateStatusRequest(status=2), timeout=T)
        assert stub.GetOperateStatus(pb.GetOperateStatusRequest(), timeout=T).status == 2
        health = stub.HealthCheck(pb.HealthCheckRequest(), timeout=T)
        assert _failed(health) == (1005, "plugin is in error state")
        stub.SetOperateStatus(pb.SetOperateStatusRequest(status=1), timeout=T)
        _ok(stub.HealthCheck(pb.HealthCheckRequest(), timeout=T))


def test_invoke_chat_and_embed(local: Running) -> None:
    body = _json({"model": "fixture-small", "messages": [{"role": "user", "content": "hi"}]})
    chat = local.stub.InvokeService(
        pb.InvokeServiceRequest(service_name="chat", request_data=body), timeout=T
    )
    assert json.loads(_ok(chat).response_data) == {
        "model": "fixture-small",
        "message": {"role": "assistant", "content": "echo: hi"},
        "done": True,
    }
    embed = local.stub.InvokeService(
        pb.InvokeServiceRequest(service_name="embed", request_data=_json({"input": ["ab"]})),
        timeout=T,
    )
    assert json.loads(_ok(embed).response_data)["embeddings"] == [[2.0, 1.0, 0.667, 0.5]]
    unknown = local.stub.InvokeService(pb.InvokeServiceRequest(service_name="tts"), timeout=T)
    assert _failed(unknown) == (4000, "unknown service 'tts'")


def test_chat_stream_is_ndjson_chunks_then_a_final_one(local: Running) -> None:
    body = _json({"messages": [{"content": "a b"}]})
    request = pb.InvokeServiceRequest(service_name="chat", request_data=body)
    chunks = [_ok(c) for c in local.stub.InvokeServiceStream(request, timeout=T)]
    assert [json.loads(c.chunk_data).get("message", {}).get("content") for c in chunks] == [
        "echo:",
        "a",
        "b",
        None,
    ]
    assert [c.is_final for c in chunks] == [False, False, False, True]
    assert json.loads(chunks[-1].chunk_data)["done"] is True
    assert all(c.metadata == {"content-type": "application/x-ndjson"} for c in chunks)


def test_streaming_a_unary_service_is_a_final_error_chunk(local: Running) -> None:
    request = pb.InvokeServiceRequest(service_name="embed")
    chunks = list(local.stub.InvokeServiceStream(request, timeout=T))
    assert [(c.code, c.message, c.is_final) for c in chunks] == [
        (4005, "service 'embed' does not support streaming", True)
    ]


def test_a_local_plugin_refuses_auth_and_bidi(local: Running) -> None:
    stub = local.stub
    for reply in (
        stub.SetAuth(pb.SetAuthRequest(auth_type="apikey", credentials={"api_key": "k"})),
        stub.ValidateAuth(pb.ValidateAuthRequest(), timeout=T),
        stub.RefreshAuth(pb.RefreshAuthRequest(), timeout=T),
    ):
        assert _failed(reply) == (11, "not a remote plugin")
    replies = list(stub.InvokeServiceBidi(iter([bidi_first("chat")]), timeout=T))
    assert [_failed(r) for r in replies] == [
        (11, "plugin does not implement bidirectional interface")
    ]


def test_serves_over_tcp(leak_check: LeakCheck) -> None:
    env = {**leak_check.env, "AOG_PLUGINS_NETWORK": "tcp"}
    with run_fixture("local_provider.py", env) as running:
        assert running.plugin.handshake.network == "tcp"
        manifest = _ok(running.stub.GetManifest(pb.GetManifestRequest(), timeout=T))
        assert b'"type":"local"' in manifest.manifest_json
