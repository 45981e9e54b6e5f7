"""The Go aog-provider fixture, driven by the Go host through go-plugin's real client."""

from __future__ import annotations

import json
import string
import subprocess
from typing import Any

import pytest

from tests.gofixtures.conftest import RunHost
from tests.support.gobuild import GoBinaries

pytestmark = pytest.mark.timeout(600)  # the first test may pay for a cold Go build

NOT_LOCAL = (11, "not a local plugin")
NOT_REMOTE = (11, "not a remote plugin")
REMOTE = {"AOG_FIXTURE_KIND": "remote"}


def code_msg(call: dict[str, Any]) -> tuple[int, str]:
    return call["code"], call["message"]


@pytest.mark.parametrize("mtls", [False, True], ids=["plaintext", "automtls"])
def test_local_engine_lifecycle(run_host: RunHost, mtls: bool) -> None:
    flags = ["-automtls"] if mtls else []
    run = run_host(
        *flags,
        "-calls",
        "GetManifest,HealthCheck,CheckEngine,StartEngine,InstallEngine,CheckEngine,"
        "StartEngine,ListModels,PullModel,LoadModel:fixture-large:7b,GetRunningModels,"
        "GetVersion,SetAuth,ValidateAuth,StopEngine",
    )
    assert run.returncode == 0, run.stderr
    assert (run.start["app_version"], run.start["protocol"]) == (1, "grpc")
    calls = run.calls
    assert len(calls) == 15
    assert all(c["grpc_code"] == "OK" for c in calls), calls
    manifest = json.loads(calls[0]["payload"])
    assert manifest["provider"]["type"] == "local"
    assert manifest["provider"]["name"] == "go-fixture-local"
    assert [s["service_name"] for s in manifest["services"]][:3] == ["echo", "embed", "fail"]
    assert manifest["services"][0]["capabilities"] == {
        "support_streaming": True,
        "support_bidirectional": True,
    }
    assert code_msg(calls[1]) == (0, "success")
    assert calls[2]["installed"] is False
    assert code_msg(calls[3]) == (2001, "engine not installed")
    assert calls[4]["code"] == 0
    assert calls[5]["installed"] is True
    assert calls[6]["code"] == 0
    listed = json.loads(calls[7]["payload"])["models"]
    assert [m["name"] for m in listed] == ["fixture-small:1b"]
    assert listed[0]["modified_at"] == "2025-01-01T00:00:00Z"
    assert json.loads(calls[8]["payload"]) == {"status": "success"}
    assert calls[9]["code"] == 0  # fixture-large:7b was pulled by the call before
    running = json.loads(calls[10]["payload"])["models"]
    assert [m["name"] for m in running] == ["fixture-large:7b"]
    assert json.loads(calls[11]["payload"]) == {"version": "0.1.0-fixture"}
    assert code_msg(calls[12]) == NOT_REMOTE
    assert code_msg(calls[13]) == NOT_REMOTE
    assert calls[14]["code"] == 0
    assert run.of("end") == [{"event": "end", "plugin_exited": False}]


def test_pull_model_stream_progress_and_failure(run_host: RunHost) -> None:
    run = run_host("-calls", "PullModelStream,PullModelStream:missing-model,DeleteModel:nope")
    assert run.returncode == 0, run.stderr
    ok, missing, delete = run.calls
    steps = [json.loads(c["payload"]) for c in ok["chunks"]]
    assert [s["status"] for s in steps] == [
        "pulling manifest",
        "downloading",
        "downloading",
        "downloading",
        "verifying sha256 digest",
        "success",
    ]
    assert [s["completed"] for s in steps[1:4]] == [100, 200, 300]
    assert ok["grpc_code"] == "OK"
    # The SDK's failure shape: a progress item, a code/message item, then a non-OK status.
    assert [c["code"] for c in missing["chunks"]] == [0, 3000]
    assert code_msg(missing) == (3000, "model not found: missing-model")
    assert missing["grpc_code"] == "Unknown"
    assert code_msg(delete) == (3000, "model not found: nope")


def test_remote_auth_and_kind_gating(run_host: RunHost) -> None:
    run = run_host(
        env=REMOTE,
        script=[
            {"rpc": "ValidateAuth"},
            {"rpc": "SetAuth", "auth_type": "apikey", "credentials": {"api_key": "k"}},
            {"rpc": "ValidateAuth"},
            {"rpc": "RefreshAuth"},
            {"rpc": "InvokeService", "service_name": "echo", "data": "hi", "auth_info": "tok"},
            {"rpc": "StartEngine", "mode": "daemon"},
            {"rpc": "PullModelStream", "data": '{"model":"m"}'},
        ],
    )
    assert run.returncode == 0, run.stderr
    unauth, set_auth, valid, refresh, echo, start, pull = run.calls
    assert code_msg(unauth) == (14, "unauthenticated: no credentials set")
    assert code_msg(set_auth) == (0, "")  # the SDK answers SetAuth with an empty message
    assert (valid["code"], refresh["code"]) == (0, 0)
    assert json.loads(echo["payload"]) == {
        "service": "echo",
        "kind": "remote",
        "auth_info": "tok",
        "request": "hi",
        "auth": {"auth_type": "apikey", "keys": 1, "refreshes": 1},
    }
    assert code_msg(start) == NOT_LOCAL
    assert [code_msg(c) for c in pull["chunks"]] == [NOT_LOCAL]
    assert pull["grpc_code"] == "OK"


def test_streams_and_bidi(run_host: RunHost) -> None:
    run = run_host(
        "-calls",
        "InvokeServiceStream,InvokeServiceStream:fail-mid-stream,InvokeServiceStream:fail,"
        "InvokeServiceBidi",
        env=REMOTE,
    )
    assert run.returncode == 0, run.stderr
    ok, mid, fail, bidi = run.calls
    assert [c["payload"] for c in ok["chunks"]] == [
        'data: {"index":0,"text":"chunk 0"}\n\n',
        'data: {"index":1,"text":"chunk 1"}\n\n',
        'data: {"index":2,"text":"chunk 2"}\n\n',
        "data: [DONE]\n\n",
    ]
    assert [c.get("is_final", False) for c in ok["chunks"]] == [False, False, False, True]
    assert ok["chunks"][0]["metadata"] == {"content-type": "text/event-stream", "index": "0"}
    assert [c["code"] for c in mid["chunks"]] == [0, 0, 4001]
    assert mid["chunks"][-1]["is_final"] is True
    assert mid["grpc_code"] == "OK"
    assert [code_msg(c) for c in fail["chunks"]] == [
        (4001, "service unavailable: fixture service always fails")
    ]
    assert [(c["message_type"], c["payload"]) for c in bidi["chunks"]] == [
        ("text", "echo: hello"),
        ("pong", "p"),
        ("close", "bye"),
    ]
    assert bidi["chunks"][0]["metadata"] == {"ws_conn_id": "conn-1", "seq": "1"}


def test_bidi_first_message_rules(run_host: RunHost) -> None:
    run = run_host(
        script=[
            {"rpc": "InvokeServiceBidi", "service_name": "echo", "not_first": True},
            {"rpc": "InvokeServiceBidi", "service_name": ""},
            {"rpc": "InvokeServiceBidi", "service_name": "nope"},
            {
                "rpc": "InvokeServiceBidi",
                "service_name": "realtime",
                "data": "first",
                "message_type": "text",
                "messages": [{"type": "binary", "data": "raw"}],
            },
        ]
    )
    not_first, no_name, unknown, forwarded = run.calls
    assert code_msg(not_first) == (11, "first bidirectional message must set is_first=true")
    assert code_msg(no_name) == (11, "service_name is required in first bidirectional message")
    assert code_msg(unknown) == (4000, "service not found: nope")
    assert [c["payload"] for c in forwarded["chunks"]] == ["echo: first", "raw"]


def test_big_responses_cross_4_mib(run_host: RunHost) -> None:
    size = 5 * 1024 * 1024 + 3
    data = json.dumps({"size": size})
    run = run_host(
        "-automtls",
        script=[
            {"rpc": "InvokeService", "service_name": "big", "data": data},
            {"rpc": "InvokeServiceStream", "service_name": "big", "data": data},
            {"rpc": "InvokeService", "service_name": "big", "data": "{}"},
        ],
    )
    unary, stream, bad = run.calls
    pattern = (string.ascii_lowercase * (size // 26 + 1))[:size]
    assert unary["payload_len"] == size
    assert unary["payload"] == pattern
    assert stream["payload"] == pattern
    assert len(stream["chunks"]) == 2
    assert bad["code"] == 2


def test_unknown_service_and_panic(run_host: RunHost) -> None:
    run = run_host("-calls", "InvokeService:nope,InvokeService:panic,HealthCheck")
    assert run.returncode == 0
    unknown, panicked, after = run.calls
    assert code_msg(unknown) == (4000, "service not found: nope")
    assert panicked["grpc_code"] == "Unavailable"
    assert after["error"]
    assert run.of("end") == [{"event": "end", "plugin_exited": True}]
    assert "fixture panic in InvokeService" in run.stderr


def test_bench_mode(run_host: RunHost) -> None:
    run = run_host("-bench", "unary:50", "-parallel", "2")
    assert run.returncode == 0, run.stderr
    (bench,) = run.of("bench")
    assert (bench["kind"], bench["n"], bench["errors"]) == ("unary", 50, 0)
    assert bench["ns_per_op"] > 0
    assert bench["payload_bytes"] > 0


def test_plugin_refuses_to_run_without_cookie(go_bins: GoBinaries) -> None:
    proc = subprocess.run(
        [str(go_bins.aog_provider)], check=False, capture_output=True, text=True, timeout=30, env={}
    )
    assert proc.returncode == 1
    assert "This binary is a plugin" in proc.stderr
