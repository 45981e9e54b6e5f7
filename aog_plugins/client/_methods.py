"""What each client method sends and what it makes of the answer, in one place.

The sync :class:`GRPCProviderClient` and ``aog_plugins.aio``'s client both build a call
here (the RPC's descriptor, the request message, and how the response becomes the
method's result: code checked, JSON decoded), then run it their own way. So an RPC's
semantics cannot drift between the two clients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from aog_plugins._proto import provider_pb2 as pb
from aog_plugins.client import _rpcs as rpcs
from aog_plugins.client._pull import MODEL_PULL_FAILED, error_item
from aog_plugins.client._rpcs import Coded, StreamRpc, UnaryRpc
from aog_plugins.client._source import check_code
from aog_plugins.errors import AogPluginsError, ConfigurationError, PayloadError, PluginError
from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    EngineRecommendConfig,
    EngineVersionResponse,
    GoStruct,
    ListResponse,
    LoadRequest,
    PluginManifest,
    ProgressResponse,
    PullModelRequest,
    StreamChunk,
    UnloadModelRequest,
)

__all__ = [
    "Streamed",
    "Unary",
    "bidi_message",
    "bidi_opening",
    "bidi_reply",
    "bidi_request",
    "decode",
    "progress_callback",
]

_Q = TypeVar("_Q")
_R = TypeVar("_R")
_T = TypeVar("_T")
_C = TypeVar("_C", bound=Coded)
_G = TypeVar("_G", bound=GoStruct)


@dataclass(frozen=True)
class Unary(Generic[_Q, _R, _T]):
    """One unary call as a client method makes it."""

    rpc: UnaryRpc[_Q, _R]
    request: _Q
    result: Callable[[_R], _T]


@dataclass(frozen=True)
class Streamed(Generic[_Q, _R, _T]):
    """One server-streaming call: ``convert`` gives (item or None to skip, last?)."""

    rpc: StreamRpc[_Q, _R]
    request: _Q
    convert: Callable[[_R], tuple[_T | None, bool]]


def decode(kind: type[_G], data: bytes, what: str) -> _G:
    """Decode the plugin's JSON ``data`` as ``kind``; :class:`PayloadError` says which part."""
    try:
        return kind.from_json(data)
    except PayloadError as exc:
        raise PayloadError(f"the plugin's {what} is not valid: {exc}") from None


def _text(rpc: str, what: str, value: object) -> str:
    """A caller's text argument; protobuf would send ``None`` as ``""`` without a word."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{rpc}: {what} must be a str, got {type(value).__name__}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{rpc}: {what} is not UTF-8 text (it holds a lone surrogate): {value!a}"
        ) from None
    return value


def _data(rpc: str, what: str, value: object) -> bytes:
    """A caller's bytes argument; ``bytes(5)`` would send five zero bytes."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigurationError(
            f"{rpc}: {what} must be bytes, got {type(value).__name__} (encode text first)"
        )
    return bytes(value)


def _body(rpc: str, value: object, kind: type[GoStruct]) -> bytes:
    """A caller's request struct as JSON."""
    if not isinstance(value, kind):
        raise ConfigurationError(
            f"{rpc}: the request must be an aog_plugins.types.{kind.__name__}, "
            f"got {type(value).__name__}"
        )
    return value.to_json()


def _message(rpc: str, build: Callable[[], _Q]) -> _Q:
    """The wire request; what protobuf refuses (a lone surrogate in a str, an int out of
    int32 range, a wrong type) is the caller's :class:`ConfigurationError`."""
    try:
        return build()
    except AogPluginsError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{rpc}: the request cannot be sent: {exc}") from None


def _checked(response: _C) -> _C:
    check_code(response.code, response.message)
    return response


def _done(response: Coded) -> None:
    check_code(response.code, response.message)


def _ignored(response: object) -> None:
    return None


# ---- every plugin ---------------------------------------------------------------------
def get_manifest() -> Unary[pb.GetManifestRequest, pb.GetManifestResponse, PluginManifest]:
    return Unary(
        rpcs.GET_MANIFEST,
        pb.GetManifestRequest(),
        lambda r: decode(PluginManifest, _checked(r).manifest_json, "manifest JSON"),
    )


def get_operate_status() -> Unary[pb.GetOperateStatusRequest, pb.GetOperateStatusResponse, int]:
    return Unary(rpcs.GET_OPERATE_STATUS, pb.GetOperateStatusRequest(), lambda r: int(r.status))


def set_operate_status(
    status: int,
) -> Unary[pb.SetOperateStatusRequest, pb.SetOperateStatusResponse, None]:
    # The response has no code: Go's client ignores it too.
    request = _message("SetOperateStatus", lambda: pb.SetOperateStatusRequest(status=status))
    return Unary(rpcs.SET_OPERATE_STATUS, request, _ignored)


def health_check() -> Unary[pb.HealthCheckRequest, pb.HealthCheckResponse, None]:
    return Unary(rpcs.HEALTH_CHECK, pb.HealthCheckRequest(), _done)


def _service_request(
    rpc: str, service_name: str, request: bytes, auth_info: str
) -> pb.InvokeServiceRequest:
    name = _text(rpc, "service_name", service_name)
    data = _data(rpc, "request", request)
    auth = _text(rpc, "auth_info", auth_info)
    return _message(
        rpc, lambda: pb.InvokeServiceRequest(service_name=name, request_data=data, auth_info=auth)
    )


def invoke_service(
    service_name: str, request: bytes, auth_info: str
) -> Unary[pb.InvokeServiceRequest, pb.InvokeServiceResponse, bytes]:
    message = _service_request("InvokeService", service_name, request, auth_info)
    return Unary(rpcs.INVOKE_SERVICE, message, lambda r: bytes(_checked(r).response_data))


def invoke_service_stream(
    service_name: str, request: bytes, auth_info: str
) -> Streamed[pb.InvokeServiceRequest, pb.InvokeServiceStreamResponse, StreamChunk]:
    """Chunks until ``is_final``; a failure chunk raises :class:`PluginError`."""
    message = _service_request("InvokeServiceStream", service_name, request, auth_info)

    def convert(item: pb.InvokeServiceStreamResponse) -> tuple[StreamChunk, bool]:
        check_code(item.code, item.message)
        chunk = StreamChunk(
            data=bytes(item.chunk_data), is_final=item.is_final, metadata=dict(item.metadata)
        )
        return chunk, item.is_final

    return Streamed(rpcs.INVOKE_SERVICE_STREAM, message, convert)


def bidi_message(message: BidiMessage | bytes | str, message_type: str = "text") -> BidiMessage:
    """A message to send on a bidi call; bytes/str are wrapped with ``message_type``."""
    if isinstance(message, BidiMessage):
        return message
    if isinstance(message, str):
        data = _message("InvokeServiceBidi", message.encode)
    else:
        data = _data("InvokeServiceBidi", "a message", message)
    return BidiMessage(
        data=data, message_type=_text("InvokeServiceBidi", "message_type", message_type)
    )


def bidi_opening(service_name: str, auth_info: str, ws_conn_id: str) -> None:
    """Check a bidi call's arguments before it is opened (its first message sends them)."""
    rpc = "InvokeServiceBidi"
    _text(rpc, "service_name", service_name)
    _text(rpc, "auth_info", auth_info)
    _text(rpc, "ws_conn_id", ws_conn_id)


def bidi_request(
    message: BidiMessage, first: bool, service_name: str, auth_info: str, ws_conn_id: str
) -> pb.InvokeServiceBidiRequest:
    """The wire request for ``message``; the first one carries ``is_first``, the service
    name, auth info and the ``ws_conn_id`` metadata (checked by :func:`bidi_opening`), as
    AOG's host sends them."""

    def build() -> pb.InvokeServiceBidiRequest:
        request = pb.InvokeServiceBidiRequest(
            data=message.data,
            message_type=message.message_type,
            metadata=dict(message.metadata or {}),
        )
        if first:
            request.is_first = True
            request.service_name = service_name
            request.auth_info = auth_info
            if ws_conn_id:
                request.metadata["ws_conn_id"] = ws_conn_id
        return request

    return _message("InvokeServiceBidi", build)


def bidi_reply(item: pb.InvokeServiceBidiResponse) -> tuple[BidiMessage, bool]:
    """One message of the plugin's side of a bidi call; a failure code raises."""
    check_code(item.code, item.message)
    message = BidiMessage(
        data=bytes(item.data), message_type=item.message_type, metadata=dict(item.metadata)
    )
    return message, False


def progress_callback(progress: object) -> None:
    """Check a pull's progress callback before the pull starts."""
    if progress is not None and not callable(progress):
        raise ConfigurationError(
            f"PullModel: progress must be a callable taking each ProgressResponse, "
            f"got {type(progress).__name__}"
        )


# ---- remote plugins -------------------------------------------------------------------
def set_auth(
    auth_type: str, credentials: Mapping[str, str]
) -> Unary[pb.SetAuthRequest, pb.SetAuthResponse, None]:
    kind = _text("SetAuth", "auth_type", auth_type)
    request = _message(
        "SetAuth", lambda: pb.SetAuthRequest(auth_type=kind, credentials=dict(credentials))
    )
    return Unary(rpcs.SET_AUTH, request, _done)


def validate_auth() -> Unary[pb.ValidateAuthRequest, pb.ValidateAuthResponse, None]:
    return Unary(rpcs.VALIDATE_AUTH, pb.ValidateAuthRequest(), _done)


def refresh_auth() -> Unary[pb.RefreshAuthRequest, pb.RefreshAuthResponse, None]:
    return Unary(rpcs.REFRESH_AUTH, pb.RefreshAuthRequest(), _done)


# ---- local plugins: the engine --------------------------------------------------------
def start_engine(mode: str) -> Unary[pb.StartEngineRequest, pb.StartEngineResponse, None]:
    text = _text("StartEngine", "mode", mode)
    return Unary(
        rpcs.START_ENGINE, _message("StartEngine", lambda: pb.StartEngineRequest(mode=text)), _done
    )


def stop_engine() -> Unary[pb.StopEngineRequest, pb.StopEngineResponse, None]:
    return Unary(rpcs.STOP_ENGINE, pb.StopEngineRequest(), _done)


def get_config() -> Unary[pb.GetConfigRequest, pb.GetConfigResponse, EngineRecommendConfig]:
    return Unary(
        rpcs.GET_CONFIG,
        pb.GetConfigRequest(),
        lambda r: decode(EngineRecommendConfig, _checked(r).config_json, "engine config JSON"),
    )


def check_engine() -> Unary[pb.CheckEngineRequest, pb.CheckEngineResponse, bool]:
    return Unary(rpcs.CHECK_ENGINE, pb.CheckEngineRequest(), lambda r: bool(_checked(r).installed))


def install_engine(cover: bool) -> Unary[pb.InstallEngineRequest, pb.InstallEngineResponse, None]:
    if not isinstance(cover, bool):
        raise ConfigurationError(f"InstallEngine: cover must be a bool, got {type(cover).__name__}")
    return Unary(rpcs.INSTALL_ENGINE, pb.InstallEngineRequest(cover=cover), _done)


def init_env() -> Unary[pb.InitEnvRequest, pb.InitEnvResponse, None]:
    return Unary(rpcs.INIT_ENV, pb.InitEnvRequest(), _done)


def upgrade_engine() -> Unary[pb.UpgradeEngineRequest, pb.UpgradeEngineResponse, None]:
    return Unary(rpcs.UPGRADE_ENGINE, pb.UpgradeEngineRequest(), _done)


def get_version(
    request: EngineVersionResponse | None,
) -> Unary[pb.GetVersionRequest, pb.GetVersionResponse, EngineVersionResponse]:
    # Go sends an EngineVersionResponse as the request, too.
    body = _body(
        "GetVersion", EngineVersionResponse() if request is None else request, EngineVersionResponse
    )
    return Unary(
        rpcs.GET_VERSION,
        pb.GetVersionRequest(request_json=body),
        lambda r: decode(EngineVersionResponse, _checked(r).response_json, "version JSON"),
    )


# ---- local plugins: models ------------------------------------------------------------
def pull_model(
    request: PullModelRequest,
) -> Unary[pb.PullModelRequest, pb.PullModelResponse, ProgressResponse]:
    return Unary(
        rpcs.PULL_MODEL,
        pb.PullModelRequest(request_json=_body("PullModel", request, PullModelRequest)),
        lambda r: decode(ProgressResponse, _checked(r).response_json, "pull response JSON"),
    )


def pull_model_stream(
    request: PullModelRequest,
) -> Streamed[pb.PullModelStreamRequest, pb.PullModelStreamResponse, ProgressResponse]:
    """Progress items; a failure code raises :class:`PluginError` with the plugin's code,
    an ``{"error": "..."}`` item ``PluginError(3001, "...")`` (AOG's ErrCodeModelPullFailed)."""

    def convert(item: pb.PullModelStreamResponse) -> tuple[ProgressResponse, bool]:
        check_code(item.code, item.message)
        data = bytes(item.data)
        error = error_item(data)
        if error is not None:
            raise PluginError(MODEL_PULL_FAILED, error)
        return decode(ProgressResponse, data, "pull progress JSON"), False

    message = pb.PullModelStreamRequest(
        request_json=_body("PullModelStream", request, PullModelRequest)
    )
    return Streamed(rpcs.PULL_MODEL_STREAM, message, convert)


def delete_model(
    request: DeleteRequest,
) -> Unary[pb.DeleteModelRequest, pb.DeleteModelResponse, None]:
    body = _body("DeleteModel", request, DeleteRequest)
    return Unary(rpcs.DELETE_MODEL, pb.DeleteModelRequest(request_json=body), _done)


def list_models() -> Unary[pb.ListModelsRequest, pb.ListModelsResponse, ListResponse]:
    return Unary(
        rpcs.LIST_MODELS,
        pb.ListModelsRequest(),
        lambda r: decode(ListResponse, _checked(r).response_json, "model list JSON"),
    )


def load_model(request: LoadRequest) -> Unary[pb.LoadModelRequest, pb.LoadModelResponse, None]:
    body = _body("LoadModel", request, LoadRequest)
    return Unary(rpcs.LOAD_MODEL, pb.LoadModelRequest(request_json=body), _done)


def unload_model(
    request: UnloadModelRequest,
) -> Unary[pb.UnloadModelRequest, pb.UnloadModelResponse, None]:
    body = _body("UnloadModel", request, UnloadModelRequest)
    return Unary(rpcs.UNLOAD_MODEL, pb.UnloadModelRequest(request_json=body), _done)


def get_running_models() -> Unary[
    pb.GetRunningModelsRequest, pb.GetRunningModelsResponse, ListResponse
]:
    return Unary(
        rpcs.GET_RUNNING_MODELS,
        pb.GetRunningModelsRequest(),
        lambda r: decode(ListResponse, _checked(r).response_json, "running model list JSON"),
    )
