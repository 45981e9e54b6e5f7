"""ProviderServicer's unary wire behaviour, served in-process over a unix socket.

The servicer is the real one (grpc.server, real channel); the providers here are small
Python classes that record what reached them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from aog_plugins._proto import provider_pb2 as pb
from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.client import ProgressCallback
from aog_plugins.errors import ConfigurationError, PluginError
from aog_plugins.server import ProviderServicer, serve_provider
from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    EngineRecommendConfig,
    EngineVersionResponse,
    ListResponse,
    LoadRequest,
    ModelInfo,
    PluginManifest,
    ProgressResponse,
    ProviderInfo,
    PullModelRequest,
    StreamChunk,
    UnloadModelRequest,
)
from tests.server.test_provider_support import AUTH_RPCS, ENGINE_RPCS

Stub = provider_pb2_grpc.ProviderServiceStub
T = 5.0


class Base:
    """Only the PluginProvider methods."""

    def __init__(self) -> None:
        self.status = 0
        self.healthy: Exception | None = None

    def get_manifest(self) -> PluginManifest:
        return PluginManifest(version="1.0", provider=ProviderInfo(name="unit", type="remote"))

    def get_operate_status(self) -> int:
        if self.status < 0:
            raise RuntimeError("status is broken")
        return self.status

    def set_operate_status(self, status: int) -> None:
        if status < 0:
            raise PluginError(1002, "negative status")
        self.status = status

    def health_check(self) -> None:
        if self.healthy is not None:
            raise self.healthy

    def invoke_service(self, service_name: str, request: bytes, auth_info: str = "") -> bytes:
        if service_name == "ok":
            return b"ok:" + request + b":" + auth_info.encode()
        if service_name == "plugin-error":
            raise PluginError(3002, "delete failed")
        if service_name == "value-error":
            raise ValueError("bad value")
        if service_name == "bare":
            raise RuntimeError
        if service_name == "not-bytes":
            return 42  # type: ignore[return-value]
        if service_name == "exit":
            raise SystemExit(3)  # sys.exit() in a call: it used to go unanswered
        if service_name in _AUTHOR_BUGS:
            raise _AUTHOR_BUGS[service_name]
        raise KeyError(service_name)


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class _Custom(BaseException):
    pass


# Failures that used to leave the call unanswered until its deadline (BaseExceptions
# grpcio does not catch) or end it with a bare gRPC UNKNOWN (text protobuf cannot send).
_AUTHOR_BUGS: dict[str, BaseException] = {
    "interrupt": KeyboardInterrupt("ki"),
    "cancelled": asyncio.CancelledError(),
    "custom-base": _Custom("mine"),
    "str-raises": _StrRaises(),
    "surrogate": ValueError("bad \udcff byte"),
    "surrogate-plugin-error": PluginError(4001, "bad \udcff byte"),
    "code-too-big": PluginError(1 << 40, "huge code"),
    "code-not-int": PluginError("4001", "text code"),  # type: ignore[arg-type]
}


class Full(Base):
    """Every protocol; records arguments in ``calls``; stream behaviour by service name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closed = threading.Event()

    # remote
    def set_auth(self, auth_type: str, credentials: Mapping[str, str]) -> None:
        self.calls.append(("set_auth", (auth_type, dict(credentials))))

    def validate_auth(self) -> None:
        raise PluginError(1002, "no key")

    def refresh_auth(self) -> None:
        self.calls.append(("refresh_auth", None))

    # local
    def start_engine(self, mode: str) -> None:
        self.calls.append(("start_engine", mode))

    def stop_engine(self) -> None:
        raise OSError("engine stuck")

    def get_config(self) -> EngineRecommendConfig:
        return EngineRecommendConfig(host="h:1", scheme="http")

    def check_engine(self) -> bool:
        return True

    def install_engine(self, cover: bool = False) -> None:
        self.calls.append(("install_engine", cover))

    def init_env(self) -> None:
        self.calls.append(("init_env", None))

    def upgrade_engine(self) -> None:
        raise PluginError(2005, "upgrade failed")

    def pull_model(
        self, request: PullModelRequest, progress: ProgressCallback | None = None
    ) -> ProgressResponse:
        self.calls.append(("pull_model", (request, progress)))
        return ProgressResponse(status="success")

    def pull_model_stream(self, request: PullModelRequest) -> Iterator[ProgressResponse]:
        if request.model == "fail-first":
            raise PluginError(3001, "no such registry")
        return self._pull(request.model)

    def _pull(self, model: str) -> Iterator[Any]:
        try:
            yield b'{"status":"raw"}'
            yield ProgressResponse(status="downloading", total=10, completed=5)
            if model == "fail-mid":
                raise PluginError(3001, "connection reset")
            while model == "forever":
                yield ProgressResponse(status="downloading")
                time.sleep(0.02)
            yield ProgressResponse(status="success")
        finally:
            self.closed.set()

    def delete_model(self, request: DeleteRequest) -> None:
        self.calls.append(("delete_model", request))

    def list_models(self) -> ListResponse:
        return ListResponse(models=[ModelInfo(name="a", model="a", size=1)])

    def load_model(self, request: LoadRequest) -> None:
        self.calls.append(("load_model", request))

    def unload_model(self, request: UnloadModelRequest) -> None:
        self.calls.append(("unload_model", request))

    def get_running_models(self) -> ListResponse:
        return ListResponse()

    def get_version(self, request: EngineVersionResponse | None = None) -> EngineVersionResponse:
        self.calls.append(("get_version", request))
        return EngineVersionResponse(version="9.9")

    # streams
    def invoke_service_stream(
        self, service_name: str, request: bytes, auth_info: str = ""
    ) -> Iterator[StreamChunk]:
        if service_name == "raise-first":
            raise PluginError(4002, "upstream timeout")
        return self._chunks(service_name)

    def _chunks(self, service: str) -> Iterator[StreamChunk]:
        try:
            yield StreamChunk(data=b"a", metadata={"k": "v"})
            if service == "raise-mid":
                raise ValueError("mid")
            if service == "interrupt-mid":
                raise KeyboardInterrupt
            if service == "wrong-item":
                yield b"raw"  # type: ignore[misc]  # an author bug, on purpose
            if service == "final-then-finally-raises":
                try:
                    yield StreamChunk(data=b"b", is_final=True)
                finally:
                    raise asyncio.CancelledError  # an author bug, on purpose
            if service == "error-chunk":
                yield StreamChunk(data=b"lost", error=PluginError(4004, "bad chunk"))
            if service == "final-then-more":
                yield StreamChunk(data=b"b", is_final=True)
            while service == "forever":
                yield StreamChunk(data=b"tick")
                time.sleep(0.02)
            yield StreamChunk(data=b"c")
        finally:
            self.closed.set()

    def invoke_service_bidirectional(
        self, service_name: str, ws_conn_id: str, auth_info: str, inbound: Iterable[BidiMessage]
    ) -> Iterator[BidiMessage]:
        self.calls.append(("bidi", (service_name, ws_conn_id, auth_info)))
        if service_name == "raise":
            raise PluginError(4006, "not bidirectional")
        return self._bidi(service_name, inbound)

    def _bidi(self, service: str, inbound: Iterable[BidiMessage]) -> Iterator[BidiMessage]:
        try:
            if service == "push":
                while True:
                    yield BidiMessage(data=b"push", message_type="text")
                    time.sleep(0.02)
            for message in inbound:
                if message.message_type == "close":
                    yield BidiMessage(data=b"bye", message_type="close")
                    return
                if message.data == b"raise":
                    raise ValueError("mid-bidi")
                if message.data == b"wrong-item":
                    yield "raw"  # type: ignore[misc]  # an author bug, on purpose
                if message.data == b"error-item":
                    yield BidiMessage(data=b"d", error=PluginError(4004, "bad item"))
                    continue
                yield BidiMessage(data=message.data, message_type=message.message_type,
                                  metadata=message.metadata)  # fmt: skip
        finally:
            self.closed.set()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[object], Stub]]:
    """Serve providers in-process; every handler must have returned by the end."""
    started: list[tuple[grpc.Server, ThreadPoolExecutor, grpc.Channel]] = []

    def start(provider: object) -> Stub:
        pool = ThreadPoolExecutor(8)
        server = grpc.server(pool)
        servicer = ProviderServicer(provider)  # type: ignore[arg-type]
        provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)
        address = f"unix:{tmp_path}/p{len(started)}"
        assert server.add_insecure_port(address)
        server.start()
        channel = grpc.insecure_channel(address)
        started.append((server, pool, channel))
        return Stub(channel)

    yield start
    for server, pool, channel in started:
        channel.close()
        server.stop(None).wait()
        pool.shutdown(wait=True)  # hangs (test timeout) if a handler never returned


@pytest.mark.parametrize(
    ("service", "code", "message"),
    [
        ("ok", 0, "success"),
        ("plugin-error", 3002, "delete failed"),
        ("value-error", 11, "ValueError: bad value"),
        ("bare", 11, "RuntimeError"),
        ("missing", 11, "KeyError: 'missing'"),
        ("not-bytes", 11, "TypeError"),
        ("exit", 11, "SystemExit: 3"),
        ("interrupt", 11, "KeyboardInterrupt: ki"),
        ("cancelled", 11, "CancelledError"),
        ("custom-base", 11, "_Custom: mine"),
        ("str-raises", 11, "_StrRaises: <str() failed: RuntimeError>"),
        ("code-too-big", 11, "PluginError with invalid code 1099511627776: huge code"),
        ("code-not-int", 11, "PluginError with invalid code '4001': text code"),
    ],
)
def test_invoke_service_failures_become_code_and_message(
    serve: Callable[[object], Stub], service: str, code: int, message: str
) -> None:
    stub = serve(Base())
    reply = stub.InvokeService(
        pb.InvokeServiceRequest(service_name=service, request_data=b"{}", auth_info="tok"),
        timeout=T,
    )
    assert reply.code == code
    assert reply.message.startswith(message)
    assert reply.response_data == (b"ok:{}:tok" if code == 0 else b"")


def test_failure_text_protobuf_cannot_send_is_escaped(
    serve: Callable[[object], Stub], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lone surrogates (bytes decoded with surrogateescape) used to end the call with a
    # bare gRPC UNKNOWN. The server logs the exception with its raw text, which pytest-xdist
    # cannot send from a worker: keep that record out of pytest's log capture.
    logger = logging.getLogger("aog_plugins.server.provider")
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "handlers", [logging.NullHandler()])
    stub = serve(Base())
    for service, code in (("surrogate", 11), ("surrogate-plugin-error", 4001)):
        request = pb.InvokeServiceRequest(service_name=service, request_data=b"{}")
        reply = stub.InvokeService(request, timeout=T)
        assert (reply.code, reply.message.rpartition("bad ")[2]) == (code, "\\udcff byte")


def test_base_provider_answers_engine_and_auth_rpcs_with_the_sdk_texts(
    serve: Callable[[object], Stub],
) -> None:
    stub = serve(Base())
    for name, request in ENGINE_RPCS:
        reply = getattr(stub, name)(request, timeout=T)
        assert (reply.code, reply.message) == (11, "not a local plugin"), name
    for name, request in AUTH_RPCS:
        reply = getattr(stub, name)(request, timeout=T)
        assert (reply.code, reply.message) == (11, "not a remote plugin"), name
    manifest = stub.GetManifest(pb.GetManifestRequest(), timeout=T)
    assert (manifest.code, manifest.message) == (0, "success")
    assert json.loads(manifest.manifest_json)["provider"]["name"] == "unit"


def test_base_provider_refuses_the_streams_with_one_message_and_grpc_ok(
    serve: Callable[[object], Stub],
) -> None:
    stub = serve(Base())
    chunks = list(stub.InvokeServiceStream(pb.InvokeServiceRequest(service_name="x"), timeout=T))
    assert [(c.code, c.message, c.is_final) for c in chunks] == [
        (11, "plugin does not support streaming", True)
    ]
    pulls = list(stub.PullModelStream(pb.PullModelStreamRequest(request_json=b"{}"), timeout=T))
    assert [(p.code, p.message) for p in pulls] == [(11, "not a local plugin")]
    # The refusal comes without reading any request, like the SDK.
    replies = list(stub.InvokeServiceBidi(iter([]), timeout=T))
    assert [(r.code, r.message) for r in replies] == [
        (11, "plugin does not implement bidirectional interface")
    ]


def test_an_object_that_is_not_a_provider_is_refused_up_front(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ConfigurationError, match="get_manifest"):
        ProviderServicer(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"missing: .*health_check"):
        serve_provider(object())  # type: ignore[arg-type]
    assert capfd.readouterr().out == ""  # refused before any handshake line


def test_a_provider_with_only_some_local_methods_is_not_local_and_warned_about(
    serve: Callable[[object], Stub], caplog: pytest.LogCaptureFixture
) -> None:
    class HalfLocal(Base):
        def start_engine(self, mode: str) -> None:
            raise AssertionError("must not be called")

    with caplog.at_level(logging.WARNING, logger="aog_plugins.server.provider"):
        stub = serve(HalfLocal())
    assert "lacks" in caplog.text
    assert "stop_engine" in caplog.text
    reply = stub.StartEngine(pb.StartEngineRequest(mode="daemon"), timeout=T)
    assert (reply.code, reply.message) == (11, "not a local plugin")


def test_operate_status_carries_no_code_and_fails_as_a_grpc_status(
    serve: Callable[[object], Stub],
) -> None:
    assert "code" not in pb.GetOperateStatusResponse.DESCRIPTOR.fields_by_name
    assert not pb.SetOperateStatusResponse.DESCRIPTOR.fields
    provider = Base()
    stub = serve(provider)
    stub.SetOperateStatus(pb.SetOperateStatusRequest(status=1), timeout=T)
    assert stub.GetOperateStatus(pb.GetOperateStatusRequest(), timeout=T).status == 1
    with pytest.raises(grpc.RpcError) as info:
        stub.SetOperateStatus(pb.SetOperateStatusRequest(status=-1), timeout=T)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() == "negative status"
    provider.status = -5
    with pytest.raises(grpc.RpcError) as info:
        stub.GetOperateStatus(pb.GetOperateStatusRequest(), timeout=T)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() == "RuntimeError: status is broken"


def test_health_check(serve: Callable[[object], Stub]) -> None:
    provider = Base()
    stub = serve(provider)
    reply = stub.HealthCheck(pb.HealthCheckRequest(), timeout=T)
    assert (reply.code, reply.message) == (0, "success")
    provider.healthy = PluginError(1005, "plugin is in error state")
    reply = stub.HealthCheck(pb.HealthCheckRequest(), timeout=T)
    assert (reply.code, reply.message) == (1005, "plugin is in error state")


def test_arguments_and_results_cross_the_wire(serve: Callable[[object], Stub]) -> None:
    provider = Full()
    stub = serve(provider)
    for name, request in ENGINE_RPCS + AUTH_RPCS:
        getattr(stub, name)(request, timeout=T)
    stub.InstallEngine(pb.InstallEngineRequest(cover=False), timeout=T)
    stub.GetVersion(pb.GetVersionRequest(request_json=b'{"version":"1.2"}'), timeout=T)
    calls = provider.calls
    assert ("start_engine", "daemon") in calls
    assert [c[1] for c in calls if c[0] == "install_engine"] == [True, False]
    assert ("set_auth", ("apikey", {"api_key": "k"})) in calls
    assert ("delete_model", DeleteRequest(model="m")) in calls
    assert ("load_model", LoadRequest(model="m")) in calls
    assert ("unload_model", UnloadModelRequest(models=["m"])) in calls
    assert ("pull_model", (PullModelRequest(model="m"), None)) in calls
    # Like the SDK: an empty request_json gives the zero value, not None.
    versions = [c[1] for c in calls if c[0] == "get_version"]
    assert versions == [EngineVersionResponse(), EngineVersionResponse(version="1.2")]

    version = stub.GetVersion(pb.GetVersionRequest(), timeout=T)
    assert (version.code, version.response_json) == (0, b'{"version":"9.9"}')
    config = stub.GetConfig(pb.GetConfigRequest(), timeout=T)
    assert json.loads(config.config_json)["host"] == "h:1"
    assert stub.CheckEngine(pb.CheckEngineRequest(), timeout=T).installed is True
    listed = stub.ListModels(pb.ListModelsRequest(), timeout=T)
    assert json.loads(listed.response_json)["models"][0]["name"] == "a"
    running = stub.GetRunningModels(pb.GetRunningModelsRequest(), timeout=T)
    assert running.response_json == b'{"models":[]}'
    pulled = stub.PullModel(pb.PullModelRequest(request_json=b'{"model":"m"}'), timeout=T)
    assert pulled.response_json == b'{"status":"success"}'
    stopped = stub.StopEngine(pb.StopEngineRequest(), timeout=T)
    assert (stopped.code, stopped.message) == (11, "OSError: engine stuck")
    upgraded = stub.UpgradeEngine(pb.UpgradeEngineRequest(), timeout=T)
    assert (upgraded.code, upgraded.message) == (2005, "upgrade failed")
    validated = stub.ValidateAuth(pb.ValidateAuthRequest(), timeout=T)
    assert (validated.code, validated.message) == (1002, "no key")


@pytest.mark.parametrize(
    ("rpc", "request_type", "payload"),
    [
        ("PullModel", pb.PullModelRequest, b""),
        ("DeleteModel", pb.DeleteModelRequest, b"{"),
        ("LoadModel", pb.LoadModelRequest, b"[1]"),
        ("UnloadModel", pb.UnloadModelRequest, b'{"models": "m"}'),
        ("GetVersion", pb.GetVersionRequest, b'{"version": 3}'),
    ],
)
def test_undecodable_request_json_is_code_11(
    serve: Callable[[object], Stub], rpc: str, request_type: Any, payload: bytes
) -> None:
    provider = Full()
    stub = serve(provider)
    reply = getattr(stub, rpc)(request_type(request_json=payload), timeout=T)
    assert reply.code == 11
    assert reply.message.startswith("PayloadError: ")
    assert provider.calls == []
