"""Serve a Python AOG provider as ``protocol.ProviderService``, the way the AOG SDK's Go
server (plugin-sdk/server/grpc_server.go) answers on the wire.

Unary calls always end with gRPC OK and carry failures in ``code``/``message``: a raised
:class:`~aog_plugins.errors.PluginError` keeps its code and message, anything else becomes
code 11 naming the exception. Engine and model RPCs on a provider that is not a
:class:`LocalPluginProvider` answer code 11 "not a local plugin", auth RPCs on one that is
not a :class:`RemotePluginProvider` "not a remote plugin". Streams: ``_provider_streams``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import grpc

from aog_plugins._proto import provider_pb2 as pb
from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.contract import (
    BidirectionalPlugin,
    LocalPluginProvider,
    PluginProvider,
    RemotePluginProvider,
    StreamablePlugin,
)
from aog_plugins.errors import ConfigurationError
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig
from aog_plugins.server._provider_status import (
    INTERNAL,
    NOT_LOCAL,
    NOT_REMOTE,
    PROVIDER_FAILURES,
    Status,
    error_status,
    refuse,
    reply,
)
from aog_plugins.server._provider_streams import invoke_bidi, invoke_stream, pull_stream
from aog_plugins.server._serve import ServerOptions, serve
from aog_plugins.types import (
    DeleteRequest,
    EngineVersionResponse,
    LoadRequest,
    PullModelRequest,
    UnloadModelRequest,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ProviderServicer", "serve_provider"]

_log = logging.getLogger("aog_plugins.server.provider")
_M = TypeVar("_M", bound=Status)
_L = TypeVar("_L")
Context = grpc.ServicerContext


def _own_methods(protocol: type) -> list[str]:
    return [name for name in vars(protocol) if not name.startswith("_")]


def _warn_partial(provider: object, protocol: type, kind: str) -> None:
    """Warn when ``provider`` has only some of ``protocol``'s methods (likely a mistake)."""
    methods = _own_methods(protocol)
    missing = [name for name in methods if not callable(getattr(provider, name, None))]
    if len(missing) < len(methods):
        _log.warning(
            "provider %s has some %s methods but lacks %s: it is served as not %s",
            type(provider).__name__,
            kind,
            ", ".join(missing),
            kind,
        )


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    """A ``ProviderService`` servicer for any object implementing the provider protocols.

    Which optional protocols the object implements (local, remote, streamable,
    bidirectional) is decided once, here, like the SDK's type assertions.
    """

    def __init__(self, provider: PluginProvider) -> None:
        if not isinstance(provider, PluginProvider):
            missing = [m for m in _own_methods(PluginProvider) if not hasattr(provider, m)]
            raise ConfigurationError(
                f"{type(provider).__name__} is not a PluginProvider (missing: {', '.join(missing)})"
            )
        self.provider = provider
        self.local: LocalPluginProvider | None = None
        self.remote: RemotePluginProvider | None = None
        if isinstance(provider, LocalPluginProvider):
            self.local = provider
        else:
            _warn_partial(provider, LocalPluginProvider, "local")
        if isinstance(provider, RemotePluginProvider):
            self.remote = provider
        else:
            _warn_partial(provider, RemotePluginProvider, "remote")
        self.streamable = provider if isinstance(provider, StreamablePlugin) else None
        self.bidirectional = provider if isinstance(provider, BidirectionalPlugin) else None

    def _only(
        self, target: _L | None, refusal: str, response: type[_M], action: Callable[[_L], object]
    ) -> _M:
        """:func:`reply`, or ``refusal`` (code 11) when the provider is not of that kind."""
        if target is None:
            return refuse(response, INTERNAL, refusal)
        return reply(response, lambda: action(target))

    def _local(self, response: type[_M], action: Callable[[LocalPluginProvider], object]) -> _M:
        return self._only(self.local, NOT_LOCAL, response, action)

    def _remote(self, response: type[_M], action: Callable[[RemotePluginProvider], object]) -> _M:
        return self._only(self.remote, NOT_REMOTE, response, action)

    # ---- every plugin --------------------------------------------------------------
    def GetManifest(
        self, request: pb.GetManifestRequest, context: Context
    ) -> pb.GetManifestResponse:
        return reply(
            pb.GetManifestResponse,
            lambda: pb.GetManifestResponse(manifest_json=self.provider.get_manifest().to_json()),
        )

    def InvokeService(
        self, request: pb.InvokeServiceRequest, context: Context
    ) -> pb.InvokeServiceResponse:
        return reply(
            pb.InvokeServiceResponse,
            lambda: pb.InvokeServiceResponse(
                response_data=self.provider.invoke_service(
                    request.service_name, request.request_data, request.auth_info
                )
            ),
        )

    def HealthCheck(
        self, request: pb.HealthCheckRequest, context: Context
    ) -> pb.HealthCheckResponse:
        return reply(pb.HealthCheckResponse, self.provider.health_check)

    def GetOperateStatus(
        self, request: pb.GetOperateStatusRequest, context: Context
    ) -> pb.GetOperateStatusResponse:
        # No code/message here: a failure can only be a gRPC status (grpc-go's UNKNOWN).
        try:
            status = self.provider.get_operate_status()
        except PROVIDER_FAILURES as exc:
            context.abort(grpc.StatusCode.UNKNOWN, error_status(exc)[1])
        return pb.GetOperateStatusResponse(status=status)

    def SetOperateStatus(
        self, request: pb.SetOperateStatusRequest, context: Context
    ) -> pb.SetOperateStatusResponse:
        try:
            self.provider.set_operate_status(request.status)
        except PROVIDER_FAILURES as exc:
            context.abort(grpc.StatusCode.UNKNOWN, error_status(exc)[1])
        return pb.SetOperateStatusResponse()

    # ---- streams (see _provider_streams) --------------------------------------------
    def InvokeServiceStream(
        self, request: pb.InvokeServiceRequest, context: Context
    ) -> Iterator[pb.InvokeServiceStreamResponse]:
        return invoke_stream(self.streamable, request, context)

    def InvokeServiceBidi(
        self, request_iterator: Iterator[pb.InvokeServiceBidiRequest], context: Context
    ) -> Iterator[pb.InvokeServiceBidiResponse]:
        return invoke_bidi(self.bidirectional, request_iterator, context)

    def PullModelStream(
        self, request: pb.PullModelStreamRequest, context: Context
    ) -> Iterator[pb.PullModelStreamResponse]:
        return pull_stream(self.local, request, context)

    # ---- remote plugins ------------------------------------------------------------
    def SetAuth(self, request: pb.SetAuthRequest, context: Context) -> pb.SetAuthResponse:
        # The Go SDK never calls the plugin here (the call is commented out); we do.
        credentials = dict(request.credentials)
        return self._remote(
            pb.SetAuthResponse, lambda remote: remote.set_auth(request.auth_type, credentials)
        )

    def ValidateAuth(
        self, request: pb.ValidateAuthRequest, context: Context
    ) -> pb.ValidateAuthResponse:
        return self._remote(pb.ValidateAuthResponse, lambda remote: remote.validate_auth())

    def RefreshAuth(
        self, request: pb.RefreshAuthRequest, context: Context
    ) -> pb.RefreshAuthResponse:
        return self._remote(pb.RefreshAuthResponse, lambda remote: remote.refresh_auth())

    # ---- local plugins: the engine -------------------------------------------------
    def StartEngine(
        self, request: pb.StartEngineRequest, context: Context
    ) -> pb.StartEngineResponse:
        return self._local(pb.StartEngineResponse, lambda local: local.start_engine(request.mode))

    def StopEngine(self, request: pb.StopEngineRequest, context: Context) -> pb.StopEngineResponse:
        return self._local(pb.StopEngineResponse, lambda local: local.stop_engine())

    def GetConfig(self, request: pb.GetConfigRequest, context: Context) -> pb.GetConfigResponse:
        return self._local(
            pb.GetConfigResponse,
            lambda local: pb.GetConfigResponse(config_json=local.get_config().to_json()),
        )

    def CheckEngine(
        self, request: pb.CheckEngineRequest, context: Context
    ) -> pb.CheckEngineResponse:
        return self._local(
            pb.CheckEngineResponse,
            lambda local: pb.CheckEngineResponse(installed=bool(local.check_engine())),
        )

    def InstallEngine(
        self, request: pb.InstallEngineRequest, context: Context
    ) -> pb.InstallEngineResponse:
        return self._local(
            pb.InstallEngineResponse, lambda local: local.install_engine(request.cover)
        )

    def InitEnv(self, request: pb.InitEnvRequest, context: Context) -> pb.InitEnvResponse:
        return self._local(pb.InitEnvResponse, lambda local: local.init_env())

    def UpgradeEngine(
        self, request: pb.UpgradeEngineRequest, context: Context
    ) -> pb.UpgradeEngineResponse:
        return self._local(pb.UpgradeEngineResponse, lambda local: local.upgrade_engine())

    def GetVersion(self, request: pb.GetVersionRequest, context: Context) -> pb.GetVersionResponse:
        def action(local: LocalPluginProvider) -> pb.GetVersionResponse:
            # Like the SDK: an empty request_json gives the zero value, never None.
            asked = (
                EngineVersionResponse.from_json(request.request_json)
                if request.request_json
                else EngineVersionResponse()
            )
            return pb.GetVersionResponse(response_json=local.get_version(asked).to_json())

        return self._local(pb.GetVersionResponse, action)

    # ---- local plugins: models -----------------------------------------------------
    def PullModel(self, request: pb.PullModelRequest, context: Context) -> pb.PullModelResponse:
        def action(local: LocalPluginProvider) -> pb.PullModelResponse:
            pull = PullModelRequest.from_json(request.request_json)
            return pb.PullModelResponse(response_json=local.pull_model(pull, None).to_json())

        return self._local(pb.PullModelResponse, action)

    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: Context
    ) -> pb.DeleteModelResponse:
        return self._local(
            pb.DeleteModelResponse,
            lambda local: local.delete_model(DeleteRequest.from_json(request.request_json)),
        )

    def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        return self._local(
            pb.LoadModelResponse,
            lambda local: local.load_model(LoadRequest.from_json(request.request_json)),
        )

    def UnloadModel(
        self, request: pb.UnloadModelRequest, context: Context
    ) -> pb.UnloadModelResponse:
        return self._local(
            pb.UnloadModelResponse,
            lambda local: local.unload_model(UnloadModelRequest.from_json(request.request_json)),
        )

    def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return self._local(
            pb.ListModelsResponse,
            lambda local: pb.ListModelsResponse(response_json=local.list_models().to_json()),
        )

    def GetRunningModels(
        self, request: pb.GetRunningModelsRequest, context: Context
    ) -> pb.GetRunningModelsResponse:
        return self._local(
            pb.GetRunningModelsResponse,
            lambda local: pb.GetRunningModelsResponse(
                response_json=local.get_running_models().to_json()
            ),
        )


def serve_provider(
    provider: PluginProvider,
    handshake: HandshakeConfig = AOG_HANDSHAKE,
    *,
    log_level: int = logging.DEBUG,
    on_ready: Callable[[], None] | None = None,
    **options: Unpack[ServerOptions],
) -> None:
    """Serve ``provider`` as an AOG plugin until the host shuts it down.

    ``log_level``, ``on_ready`` and ``options`` (:class:`ServerOptions`: ``network``,
    ``max_workers``, ...) go to :func:`aog_plugins.server.serve`. The provider is checked
    before anything is printed.
    """
    servicer = ProviderServicer(provider)

    def register(server: grpc.Server) -> None:
        provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)

    serve(register, handshake=handshake, log_level=log_level, on_ready=on_ready, **options)
