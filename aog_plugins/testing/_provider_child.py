"""``aog_provider``, plugin side: the program that serves the callables of a spec file.

Runs in the plugin process only (never imported by the host): it imports the callables
again by name and serves them through :func:`aog_plugins.server.serve_provider`.

A service callable gets the request bytes and returns bytes, a str (sent as UTF-8) or
anything else JSON-encodable (sent as JSON); a raised
:class:`~aog_plugins.errors.PluginError` keeps its code. A stream callable returns an
iterable of the same kinds of items, or of :class:`~aog_plugins.types.StreamChunk`; a final
chunk is added when the iterable ends without one.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from aog_plugins.errors import PluginError
from aog_plugins.server import serve_provider
from aog_plugins.types import (
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

__all__ = ["main"]

UNKNOWN_SERVICE = 4000


def _module(name: str, file: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        if not file:
            raise
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load(entry: Mapping[str, str]) -> Callable[..., Any]:
    found: Any = _module(entry["module"], entry.get("file", ""))
    for part in entry["qualname"].split("."):
        found = getattr(found, part)
    if not callable(found):
        raise TypeError(f"{entry['module']}.{entry['qualname']} is not callable")
    fn: Callable[..., Any] = found
    return fn


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class Provider:
    """Serves the manifest and the callables; operate status is kept in memory."""

    def __init__(
        self,
        manifest: PluginManifest,
        services: Mapping[str, Callable[..., Any]],
        streams: Mapping[str, Callable[..., Any]],
    ) -> None:
        self.manifest = manifest
        self.services = dict(services)
        self.streams = dict(streams)
        self._status = 1
        self._lock = threading.Lock()

    def get_manifest(self) -> PluginManifest:
        return self.manifest

    def get_operate_status(self) -> int:
        with self._lock:
            return self._status

    def set_operate_status(self, status: int) -> None:
        with self._lock:
            self._status = status

    def health_check(self) -> None:
        return None

    def invoke_service(self, service_name: str, request: bytes, auth_info: str = "") -> bytes:
        fn = self.services.get(service_name)
        if fn is None:
            raise PluginError(UNKNOWN_SERVICE, f"unknown service {service_name!r}")
        return _as_bytes(fn(request))

    def invoke_service_stream(
        self, service_name: str, request: bytes, auth_info: str = ""
    ) -> Iterator[StreamChunk]:
        fn = self.streams.get(service_name)
        if fn is None:
            raise PluginError(UNKNOWN_SERVICE, f"no streaming service {service_name!r}")
        return self._chunks(iter(fn(request)))

    @staticmethod
    def _chunks(items: Iterator[Any]) -> Iterator[StreamChunk]:
        try:
            for item in items:
                chunk = item if isinstance(item, StreamChunk) else StreamChunk(data=_as_bytes(item))
                yield chunk
                if chunk.is_final:
                    return
            yield StreamChunk(is_final=True)
        finally:
            close = getattr(items, "close", None)
            if callable(close):
                close()


class LocalProvider(Provider):
    """A local-engine provider whose engine always works and has no models."""

    def start_engine(self, mode: str) -> None:
        return None

    def stop_engine(self) -> None:
        return None

    def get_config(self) -> EngineRecommendConfig:
        return EngineRecommendConfig()

    def check_engine(self) -> bool:
        return True

    def install_engine(self, cover: bool = False) -> None:
        return None

    def init_env(self) -> None:
        return None

    def upgrade_engine(self) -> None:
        return None

    def pull_model(
        self, request: PullModelRequest, progress: Callable[[ProgressResponse], None] | None = None
    ) -> ProgressResponse:
        done = ProgressResponse(status="success")
        if progress is not None:
            progress(done)
        return done

    def pull_model_stream(self, request: PullModelRequest) -> Iterator[ProgressResponse]:
        yield ProgressResponse(status="success")

    def delete_model(self, request: DeleteRequest) -> None:
        return None

    def list_models(self) -> ListResponse:
        return ListResponse()

    def load_model(self, request: LoadRequest) -> None:
        return None

    def unload_model(self, request: UnloadModelRequest) -> None:
        return None

    def get_running_models(self) -> ListResponse:
        return ListResponse()

    def get_version(self, request: EngineVersionResponse | None = None) -> EngineVersionResponse:
        return EngineVersionResponse(version=self.manifest.version)


class RemoteProvider(Provider):
    """A remote provider that accepts any credentials."""

    def set_auth(self, auth_type: str, credentials: Mapping[str, str]) -> None:
        self.auth = (auth_type, dict(credentials))

    def validate_auth(self) -> None:
        return None

    def refresh_auth(self) -> None:
        return None


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    for entry in reversed(spec["sys_path"]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    manifest = PluginManifest.from_json(spec["manifest"])
    services = {k: _load(v) for k, v in spec["services"].items()}
    streams = {k: _load(v) for k, v in spec["streams"].items()}
    kind = LocalProvider if spec["kind"] == "local" else RemoteProvider
    serve_provider(kind(manifest, services, streams))
