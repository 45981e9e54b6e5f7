"""The AOG provider interfaces as ``typing.Protocol``s, shared by both sides.

:class:`GRPCProviderClient` satisfies all of them (its extra keyword arguments, such as
``timeout``, are optional), and :func:`aog_plugins.server.serve_provider` serves any
object that implements them. They mirror the AOG SDK's Go interfaces, made Pythonic:
errors are exceptions, streams are iterators, Go's channels become iterables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    EngineRecommendConfig,
    EngineVersionResponse,
    ListResponse,
    LoadRequest,
    PluginManifest,
    ProgressResponse,
    PullModelRequest,
    StreamChunk,
    UnloadModelRequest,
)

__all__ = [
    "BidirectionalPlugin",
    "LocalPluginProvider",
    "PluginProvider",
    "ProgressCallback",
    "RemotePluginProvider",
    "StreamablePlugin",
]

ProgressCallback = Callable[[ProgressResponse], None]


@runtime_checkable
class PluginProvider(Protocol):
    """What every plugin offers: manifest, status, health and unary service calls."""

    def get_manifest(self) -> PluginManifest: ...

    def get_operate_status(self) -> int: ...

    def set_operate_status(self, status: int) -> None: ...

    def health_check(self) -> None:
        """Return if healthy; raise (e.g. :class:`~aog_plugins.errors.PluginError`) if not."""
        ...

    def invoke_service(self, service_name: str, request: bytes, auth_info: str = "") -> bytes:
        """Run one request of ``service_name`` (e.g. ``"chat"``): JSON bytes in, bytes out."""
        ...


@runtime_checkable
class LocalPluginProvider(PluginProvider, Protocol):
    """A plugin that runs a local engine (Ollama, OpenVINO, ...) and manages its models."""

    def start_engine(self, mode: str) -> None: ...

    def stop_engine(self) -> None: ...

    def get_config(self) -> EngineRecommendConfig: ...

    def check_engine(self) -> bool:
        """True when the engine is installed."""
        ...

    def install_engine(self, cover: bool = False) -> None: ...

    def init_env(self) -> None: ...

    def upgrade_engine(self) -> None: ...

    def pull_model(
        self, request: PullModelRequest, progress: ProgressCallback | None = None
    ) -> ProgressResponse:
        """Pull a model to completion; ``progress`` (if given) sees every progress item."""
        ...

    def pull_model_stream(self, request: PullModelRequest) -> Iterator[ProgressResponse]: ...

    def delete_model(self, request: DeleteRequest) -> None: ...

    def list_models(self) -> ListResponse: ...

    def load_model(self, request: LoadRequest) -> None: ...

    def unload_model(self, request: UnloadModelRequest) -> None: ...

    def get_running_models(self) -> ListResponse: ...

    def get_version(
        self, request: EngineVersionResponse | None = None
    ) -> EngineVersionResponse: ...


@runtime_checkable
class RemotePluginProvider(PluginProvider, Protocol):
    """A plugin in front of a remote (cloud) service: it manages credentials."""

    def set_auth(self, auth_type: str, credentials: Mapping[str, str]) -> None: ...

    def validate_auth(self) -> None: ...

    def refresh_auth(self) -> None: ...


@runtime_checkable
class StreamablePlugin(PluginProvider, Protocol):
    """A plugin with server-streaming services (SSE, NDJSON chat, ...)."""

    def invoke_service_stream(
        self, service_name: str, request: bytes, auth_info: str = ""
    ) -> Iterator[StreamChunk]:
        """Chunks of the response; the last one has ``is_final`` set."""
        ...


@runtime_checkable
class BidirectionalPlugin(PluginProvider, Protocol):
    """A plugin with bidirectional (WebSocket-like) services."""

    def invoke_service_bidirectional(
        self,
        service_name: str,
        ws_conn_id: str,
        auth_info: str,
        inbound: Iterable[BidiMessage],
    ) -> Iterator[BidiMessage]:
        """Consume ``inbound`` messages and yield outbound ones until either side ends."""
        ...
