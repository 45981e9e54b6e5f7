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
from typing import Any, TypeVar

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
    SUCCESS_MESSAGE,
    error_status,
    failure,
)
from aog_plugins.server._provider_streams import invoke_bidi, invoke_stream, pull_stream
from aog_plugins.server._serve import serve
from aog_plugins.types import (
    DeleteRequest,
    EngineVersionResponse,
    LoadRequest,
    PullModelRequest,
    UnloadModelRequest,
)

__all__ = ["ProviderServicer", "serve_provider"]

_log = logging.getLogger("aog_plugins.server.provider")
_R = TypeVar("_R")
_L = TypeVar("_L")


def _call(make: Callable[..., _R], action: Callable[[], object]) -> _R:
    """Run one provider call and build its response: code 0 "success" or the failure.

    ``action`` returns the response's payload fields as a :class:`_Payload`; a payload that
    cannot be encoded counts as a failure too.
    """
    try:
        result = action()
        fields = result if isinstance(result, _Payload) else {}
        return make(code=0, message=SUCCESS_MESSAGE, **fields)
    except Exception as exc:
        code, message = failure(exc, getattr(make, "__name__", "call"))
        return make(code=code, message=message)


class _Payload(dict[str, Any]):
    """A response's payload fields; anything else a provider method returns is ignored."""


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
        self,
        target: _L | None,
        refusal: str,
        make: Callable[..., _R],
        action: Callable[[_L], object],
    ) -> _R:
        if target is None:
            return make(code=INTERNAL, message=refusal)
        return _call(make, lambda: action(target))

    def _local(
        self,
        make: Callable[..., _R],
        action: Callable[[LocalPluginProvider], object],
    ) -> _R:
        return self._only(self.local, NOT_LOCAL, make, action)

    def _remote(
        self,
        make: Callable[..., _R],
        action: Callable[[RemotePluginProvider], object],
    ) -> _R:
        return self._only(self.remote, NOT_REMOTE, make, action)

    # ---- every plugin --------------------------------------------------------------
    def GetManifest(
        self, request: pb.GetManifestRequest, context: grpc.ServicerContext
    ) -> pb.GetManifestResponse:
        return _call(
            pb.GetManifestResponse,
            lambda: _Payload(manifest_json=self.provider.get_manifest().to_json()),
        )

    def InvokeService(
        self, request: pb.InvokeServiceRequest, context: grpc.ServicerContext
    ) -> pb.InvokeServiceResponse:
        return _call(
            pb.InvokeServiceResponse,
            lambda: _Payload(
                response_data=self.provider.invoke_service(
                    request.service_name, request.request_data, request.auth_info
                )
            ),
        )

    def HealthCheck(
        self, request: pb.HealthCheckRequest, context: grpc.ServicerContext
    ) -> pb.HealthCheckResponse:
        return _call(pb.HealthCheckResponse, self.provider.health_check)

    def GetOperateStatus(
        self, request: pb.GetOperateStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetOperateStatusResponse:
        # No code/message here: a failure can only be a gRPC status (grpc-go's UNKNOWN).
        try:
            status = self.provider.get_operate_status()
        except Exception as exc:
            context.abort(grpc.StatusCode.UNKNOWN, error_status(exc)[1])
        return pb.GetOperateStatusResponse(status=status)

    def SetOperateStatus(
        self, request: pb.SetOperateStatusRequest, context: grpc.ServicerContext
    ) -> pb.SetOperateStatusResponse:
        try:
            self.provider.set_operate_status(request.status)
        except Exception as exc:
            context.abort(grpc.StatusCode.UNKNOWN, error_status(exc)[1])
        return pb.SetOperateStatusResponse()

    # ---- streams (see _provider_streams) --------------------------------------------
    def InvokeServiceStream(
        self, request: pb.InvokeServiceRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.InvokeServiceStreamResponse]:
        return invoke_stream(self.streamable, request, context)

    def InvokeServiceBidi(
        self, request_iterator: Iterator[pb.InvokeServiceBidiRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.InvokeServiceBidiResponse]:
        return invoke_bidi(self.bidirectional, request_iterator, context)

    def PullModelStream(
        self, request: pb.PullModelStreamRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PullModelStreamResponse]:
        return pull_stream(self.local, request, context)

    # ---- remote plugins ------------------------------------------------------------
    def SetAuth(
        self, request: pb.SetAuthRequest, context: grpc.ServicerContext
    ) -> pb.SetAuthResponse:
        # The Go SDK never calls the plugin here (the call is commented out); we do.
        return self._remote(
            pb.SetAuthResponse,
            lambda remote: remote.set_auth(request.auth_type, dict(request.credentials)),
        )

    def ValidateAuth(
        self, request: pb.ValidateAuthRequest, context: grpc.ServicerContext
    ) -> pb.ValidateAuthResponse:
        return self._remote(pb.ValidateAuthResponse, lambda remote: remote.validate_auth())

    def RefreshAuth(
        self, request: pb.RefreshAuthRequest, context: grpc.ServicerContext
    ) -> pb.RefreshAuthResponse:
        return self._remote(pb.RefreshAuthResponse, lambda remote: remote.refresh_auth())

    # ---- local plugins: the engine -------------------------------------------------
    def StartEngine(
        self, request: pb.StartEngineRequest, context: grpc.ServicerContext
    ) -> pb.StartEngineResponse:
        return self._local(pb.StartEngineResponse, lambda local: local.start_engine(request.mode))

    def StopEngine(
        self, request: pb.StopEngineRequest, context: grpc.ServicerContext
    ) -> pb.StopEngineResponse:
        return self._local(pb.StopEngineResponse, lambda local: local.stop_engine())

    def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigResponse:
        return self._local(
            pb.GetConfigResponse, lambda local: _Payload(config_json=local.get_config().to_json())
        )

    def CheckEngine(
        self, request: pb.CheckEngineRequest, context: grpc.ServicerContext
    ) -> pb.CheckEngineResponse:
        return self._local(
            pb.CheckEngineResponse, lambda local: _Payload(installed=bool(local.check_engine()))
        )

    def InstallEngine(
        self, request: pb.InstallEngineRequest, context: grpc.ServicerContext
    ) -> pb.InstallEngineResponse:
        return self._local(
            pb.InstallEngineResponse, lambda local: local.install_engine(request.cover)
        )

    def InitEnv(
        self, request: pb.InitEnvRequest, context: grpc.ServicerContext
    ) -> pb.InitEnvResponse:
        return self._local(pb.InitEnvResponse, lambda local: local.init_env())

    def UpgradeEngine(
        self, request: pb.UpgradeEngineRequest, context: grpc.ServicerContext
    ) -> pb.UpgradeEngineResponse:
        return self._local(pb.UpgradeEngineResponse, lambda local: local.upgrade_engine())

    def GetVersion(
        self, request: pb.GetVersionRequest, context: grpc.ServicerContext
    ) -> pb.GetVersionResponse:
        def action(local: LocalPluginProvider) -> _Payload:
            # Like the SDK: an empty request_json gives the zero value, never None.
            asked = (
                EngineVersionResponse.from_json(request.request_json)
                if request.request_json
                else EngineVersionResponse()
            )
            return _Payload(response_json=local.get_version(asked).to_json())

        return self._local(pb.GetVersionResponse, action)

    # ---- local plugins: models -----------------------------------------------------
    def PullModel(
        self, request: pb.PullModelRequest, context: grpc.ServicerContext
    ) -> pb.PullModelResponse:
        def action(local: LocalPluginProvider) -> _Payload:
            pull = PullModelRequest.from_json(request.request_json)
            return _Payload(response_json=local.pull_model(pull, None).to_json())

        return self._local(pb.PullModelResponse, action)

    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelResponse:
        return self._local(
            pb.DeleteModelResponse,
            lambda local: local.delete_model(DeleteRequest.from_json(request.request_json)),
        )

    def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.ServicerContext
    ) -> pb.LoadModelResponse:
        return self._local(
            pb.LoadModelResponse,
            lambda local: local.load_model(LoadRequest.from_json(request.request_json)),
        )

    def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.ServicerContext
    ) -> pb.UnloadModelResponse:
        return self._local(
            pb.UnloadModelResponse,
            lambda local: local.unload_model(UnloadModelRequest.from_json(request.request_json)),
        )

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return self._local(
            pb.ListModelsResponse,
            lambda local: _Payload(response_json=local.list_models().to_json()),
        )

    def GetRunningModels(
        self, request: pb.GetRunningModelsRequest, context: grpc.ServicerContext
    ) -> pb.GetRunningModelsResponse:
        return self._local(
            pb.GetRunningModelsResponse,
            lambda local: _Payload(response_json=local.get_running_models().to_json()),
        )


def serve_provider(
    provider: PluginProvider, handshake: HandshakeConfig = AOG_HANDSHAKE, **options: Any
) -> None:
    """Serve ``provider`` as an AOG plugin until the host shuts it down.

    ``options`` go to :func:`aog_plugins.server.serve` (``network``, ``log_level``,
    ``on_ready``, ``max_workers``, ...). The provider is checked before anything is printed.
    """
    servicer = ProviderServicer(provider)

    def register(server: grpc.Server) -> None:
        provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)

    serve(register, handshake=handshake, **options)
