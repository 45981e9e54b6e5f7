"""Every ``ProviderService`` RPC the client makes, as typed descriptors.

A descriptor names the RPC and picks its method off the generated stub, so mypy checks
each call's request and response message types (the stub's ``.pyi`` types the
multi-callables). Whether a unary RPC is an idempotent read, retried once when it hits a
crash (``docs/lifecycle.md``), is declared here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import grpc
import grpc.aio

from aog_plugins._proto import provider_pb2_grpc
from aog_plugins.errors import PayloadError, PluginCallError, PluginError

if TYPE_CHECKING:
    # Only the stub's .pyi has it: at run time ProviderServiceStub(aio_channel) is one.
    from aog_plugins._proto.provider_pb2_grpc import ProviderServiceAsyncStub as AsyncStub

__all__ = [
    "BidiRpc",
    "Cancellable",
    "Coded",
    "StreamCall",
    "StreamRpc",
    "Stub",
    "UnaryRpc",
    "aio_stub",
    "lasting",
]

Stub = provider_pb2_grpc.ProviderServiceStub


def lasting(error: Exception) -> bool:
    """Whether the same call to the same process would fail the same way: a reply that
    cannot be decoded, an AOG failure code, a method the plugin does not implement (for
    what is fetched once per process, such as the manifest ``invoke_service*`` reads)."""
    if isinstance(error, (PayloadError, PluginError)):
        return True
    return isinstance(error, PluginCallError) and error.code == "UNIMPLEMENTED"


def aio_stub(channel: grpc.aio.Channel) -> AsyncStub:
    """The generated stub over a ``grpc.aio`` channel (its methods return aio calls)."""
    return provider_pb2_grpc.ProviderServiceStub(channel)


_Q = TypeVar("_Q")
_R = TypeVar("_R")
_R_co = TypeVar("_R_co", covariant=True)


class Coded(Protocol):
    """A response that carries AOG's ``code``/``message`` pair."""

    @property
    def code(self) -> int: ...

    @property
    def message(self) -> str: ...


class Cancellable(Protocol):
    """Something a client can cancel: a grpcio call (grpc-stubs leaves ``cancel``
    untyped), or one of our streams."""

    def cancel(self) -> object: ...


class StreamCall(Cancellable, Protocol[_R_co]):
    """A response-stream call as grpcio returns it: iterable and cancellable."""

    def __iter__(self) -> Iterator[_R_co]: ...


@dataclass(frozen=True)
class UnaryRpc(Generic[_Q, _R]):
    """A unary RPC; ``idempotent`` reads are retried once on a restarted plugin.
    ``method`` picks it off the sync stub, ``aio`` off the asyncio one."""

    name: str
    method: Callable[[Stub], grpc.UnaryUnaryMultiCallable[_Q, _R]]
    aio: Callable[[AsyncStub], grpc.aio.UnaryUnaryMultiCallable[_Q, _R]]
    idempotent: bool = False


@dataclass(frozen=True)
class StreamRpc(Generic[_Q, _R]):
    """A server-streaming RPC."""

    name: str
    method: Callable[[Stub], grpc.UnaryStreamMultiCallable[_Q, _R]]
    aio: Callable[[AsyncStub], grpc.aio.UnaryStreamMultiCallable[_Q, _R]]


@dataclass(frozen=True)
class BidiRpc(Generic[_Q, _R]):
    """A bidirectional-streaming RPC."""

    name: str
    method: Callable[[Stub], grpc.StreamStreamMultiCallable[_Q, _R]]
    aio: Callable[[AsyncStub], grpc.aio.StreamStreamMultiCallable[_Q, _R]]


# ---- every plugin ---------------------------------------------------------------------
GET_MANIFEST = UnaryRpc(
    "GetManifest", lambda s: s.GetManifest, lambda s: s.GetManifest, idempotent=True
)
GET_OPERATE_STATUS = UnaryRpc(
    "GetOperateStatus", lambda s: s.GetOperateStatus, lambda s: s.GetOperateStatus, idempotent=True
)
SET_OPERATE_STATUS = UnaryRpc(
    "SetOperateStatus", lambda s: s.SetOperateStatus, lambda s: s.SetOperateStatus
)
HEALTH_CHECK = UnaryRpc(
    "HealthCheck", lambda s: s.HealthCheck, lambda s: s.HealthCheck, idempotent=True
)
INVOKE_SERVICE = UnaryRpc("InvokeService", lambda s: s.InvokeService, lambda s: s.InvokeService)
INVOKE_SERVICE_STREAM = StreamRpc(
    "InvokeServiceStream", lambda s: s.InvokeServiceStream, lambda s: s.InvokeServiceStream
)
INVOKE_SERVICE_BIDI = BidiRpc(
    "InvokeServiceBidi", lambda s: s.InvokeServiceBidi, lambda s: s.InvokeServiceBidi
)
# ---- remote plugins -------------------------------------------------------------------
SET_AUTH = UnaryRpc("SetAuth", lambda s: s.SetAuth, lambda s: s.SetAuth)
VALIDATE_AUTH = UnaryRpc("ValidateAuth", lambda s: s.ValidateAuth, lambda s: s.ValidateAuth)
REFRESH_AUTH = UnaryRpc("RefreshAuth", lambda s: s.RefreshAuth, lambda s: s.RefreshAuth)
# ---- local plugins: the engine --------------------------------------------------------
START_ENGINE = UnaryRpc("StartEngine", lambda s: s.StartEngine, lambda s: s.StartEngine)
STOP_ENGINE = UnaryRpc("StopEngine", lambda s: s.StopEngine, lambda s: s.StopEngine)
GET_CONFIG = UnaryRpc("GetConfig", lambda s: s.GetConfig, lambda s: s.GetConfig, idempotent=True)
CHECK_ENGINE = UnaryRpc(
    "CheckEngine", lambda s: s.CheckEngine, lambda s: s.CheckEngine, idempotent=True
)
INSTALL_ENGINE = UnaryRpc("InstallEngine", lambda s: s.InstallEngine, lambda s: s.InstallEngine)
INIT_ENV = UnaryRpc("InitEnv", lambda s: s.InitEnv, lambda s: s.InitEnv)
UPGRADE_ENGINE = UnaryRpc("UpgradeEngine", lambda s: s.UpgradeEngine, lambda s: s.UpgradeEngine)
GET_VERSION = UnaryRpc(
    "GetVersion", lambda s: s.GetVersion, lambda s: s.GetVersion, idempotent=True
)
# ---- local plugins: models ------------------------------------------------------------
PULL_MODEL = UnaryRpc("PullModel", lambda s: s.PullModel, lambda s: s.PullModel)
PULL_MODEL_STREAM = StreamRpc(
    "PullModelStream", lambda s: s.PullModelStream, lambda s: s.PullModelStream
)
DELETE_MODEL = UnaryRpc("DeleteModel", lambda s: s.DeleteModel, lambda s: s.DeleteModel)
LIST_MODELS = UnaryRpc(
    "ListModels", lambda s: s.ListModels, lambda s: s.ListModels, idempotent=True
)
LOAD_MODEL = UnaryRpc("LoadModel", lambda s: s.LoadModel, lambda s: s.LoadModel)
UNLOAD_MODEL = UnaryRpc("UnloadModel", lambda s: s.UnloadModel, lambda s: s.UnloadModel)
GET_RUNNING_MODELS = UnaryRpc(
    "GetRunningModels", lambda s: s.GetRunningModels, lambda s: s.GetRunningModels, idempotent=True
)
