"""GRPCProviderClient: every method of AOG's Go client, typed, thread-safe and stricter.

Differences from Go, on purpose: a failure ``code`` always raises :class:`PluginError`
(Go swallows GetManifest and GetOperateStatus failures); transport failures raise
:class:`PluginCallError` saying whether the plugin died; bad JSON raises
:class:`PayloadError`; pull_model's progress callback is really called (over
PullModelStream, falling back to PullModel when the plugin lacks the stream).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping

import grpc

from aog_plugins.client import _methods as methods
from aog_plugins.client import _rpcs as rpcs
from aog_plugins.client._calls import RpcCalls
from aog_plugins.client._pull import stream_missing
from aog_plugins.client._source import ConnectionSource, StaticSource
from aog_plugins.client._streams import BidiSender, ResponseStream, pump
from aog_plugins.contract import ProgressCallback
from aog_plugins.errors import AogPluginsError, PluginCallError, PluginError
from aog_plugins.transport import start_thread
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
    RecommendModelData,
    StreamChunk,
    UnloadModelRequest,
)

__all__ = ["DEFAULT_STREAM_TIMEOUT", "DEFAULT_UNARY_TIMEOUT", "GRPCProviderClient"]

_log = logging.getLogger("aog_plugins.client")
DEFAULT_UNARY_TIMEOUT = 60.0
DEFAULT_STREAM_TIMEOUT = 300.0


class GRPCProviderClient(RpcCalls):
    """A typed client for a plugin's ``protocol.ProviderService``.

    Built from a :class:`ConnectionSource` (a launched plugin gives itself) or a
    ``grpc.Channel``. Safe to share between threads. Every method takes ``timeout``
    (seconds; ``None`` means none, except for ``invoke_service*`` where ``None`` applies the
    manifest's per-service rule: 0 -> 60 s unary / 300 s stream, negative -> no deadline;
    pass ``math.inf`` for no deadline there).
    """

    def __init__(self, source: ConnectionSource | grpc.Channel, *, owns_channel: bool = False):
        if isinstance(source, grpc.Channel):
            self._owned: grpc.Channel | None = source if owns_channel else None
            source = StaticSource(source)
        else:
            self._owned = None
        super().__init__(source)
        self._manifest: PluginManifest | None = None
        # Why this process's manifest cannot be had (rpcs.lasting): not asked again.
        self._no_manifest: AogPluginsError | None = None
        self._pumps: set[threading.Thread] = set()

    def _channel_changed(self) -> None:
        self._manifest = None  # a restarted plugin may have another manifest
        self._no_manifest = None

    def _service_timeout(self, service_name: str, streaming: bool) -> float | None:
        default = DEFAULT_STREAM_TIMEOUT if streaming else DEFAULT_UNARY_TIMEOUT
        try:
            manifest = self._cached_manifest()
            service = manifest.service(service_name)
        except (AogPluginsError, KeyError, LookupError):
            return default
        return service.effective_timeout(streaming)

    def _cached_manifest(self) -> PluginManifest:
        self._stub(DEFAULT_UNARY_TIMEOUT, "GetManifest")  # refreshes the cache on a new channel
        with self._lock:
            manifest, failure = self._manifest, self._no_manifest
        if failure is not None:
            raise failure
        if manifest is None:
            try:
                manifest = self.get_manifest(timeout=DEFAULT_UNARY_TIMEOUT)
            except AogPluginsError as exc:
                if rpcs.lasting(exc):
                    with self._lock:
                        self._no_manifest = exc
                raise
        return manifest

    # ---- PluginProvider ---------------------------------------------------------------

    def get_manifest(self, *, timeout: float | None = None) -> PluginManifest:
        """The plugin's manifest (raises on failure, unlike Go's nil)."""
        manifest = self._call(methods.get_manifest(), timeout)
        with self._lock:
            self._manifest = manifest
        return manifest

    def get_operate_status(self, *, timeout: float | None = None) -> int:
        """The plugin's operate status (raises on transport failure, unlike Go's 0)."""
        return self._call(methods.get_operate_status(), timeout)

    def set_operate_status(self, status: int, *, timeout: float | None = None) -> None:
        self._call(methods.set_operate_status(status), timeout)

    def health_check(self, *, timeout: float | None = None) -> None:
        """ProviderService.HealthCheck; raises :class:`PluginError` when unhealthy."""
        self._call(methods.health_check(), timeout)

    def invoke_service(
        self,
        service_name: str,
        request: bytes,
        auth_info: str = "",
        *,
        timeout: float | None = None,
    ) -> bytes:
        """One unary service call: request bytes (usually JSON) in, response bytes out."""
        call = methods.invoke_service(service_name, request, auth_info)  # checked first
        if timeout is None:
            timeout = self._service_timeout(service_name, streaming=False)
        return self._call(call, timeout)

    def get_support_model_list(self, *, timeout: float | None = None) -> list[RecommendModelData]:
        """One entry per (service, supported model) of the manifest, as AOG's host builds it."""
        return self.get_manifest(timeout=timeout).support_model_list()

    # ---- StreamablePlugin / BidirectionalPlugin ---------------------------------------

    def invoke_service_stream(
        self,
        service_name: str,
        request: bytes,
        auth_info: str = "",
        *,
        timeout: float | None = None,
    ) -> ResponseStream[StreamChunk]:
        """Stream a service's response: yields chunks, ends after ``is_final``, raises
        :class:`PluginError` on a failure chunk. Stop iterating (or ``close()``) to cancel."""
        call = methods.invoke_service_stream(service_name, request, auth_info)  # checked first
        if timeout is None:
            timeout = self._service_timeout(service_name, streaming=True)
        return self._stream(call, timeout)

    def invoke_service_bidi(
        self,
        service_name: str,
        auth_info: str = "",
        *,
        ws_conn_id: str = "",
        timeout: float | None = None,
    ) -> tuple[BidiSender, ResponseStream[BidiMessage]]:
        """Open a bidi call: returns a sender (``send``/``close``/``cancel``) and an iterator
        of the plugin's messages, which raises :class:`PluginError` on a failure code."""
        methods.bidi_opening(service_name, auth_info, ws_conn_id)
        if timeout is None:
            timeout = self._service_timeout(service_name, streaming=True)
        sender = BidiSender(service_name, auth_info, ws_conn_id)
        stream = self._open_bidi(
            rpcs.INVOKE_SERVICE_BIDI, sender.requests(), timeout, methods.bidi_reply, sender.ended
        )
        sender.call = stream.call
        return sender, stream

    def invoke_service_bidirectional(
        self,
        service_name: str,
        ws_conn_id: str,
        auth_info: str,
        inbound: Iterable[BidiMessage] | queue.Queue[BidiMessage | None],
        *,
        outbound: queue.Queue[BidiMessage | None] | None = None,
        timeout: float | None = None,
    ) -> Iterator[BidiMessage]:
        """Bridge a caller's messages to a bidi call, like Go's channel bridge.

        ``inbound`` is an iterable or a queue (``None`` ends it). The plugin's messages are
        returned as an iterator, or, when ``outbound`` is a queue, put there followed by
        ``None`` (the call then blocks until the stream ends and returns an empty iterator).
        """
        sender, replies = self.invoke_service_bidi(
            service_name, auth_info, ws_conn_id=ws_conn_id, timeout=timeout
        )
        stopped = threading.Event()
        thread = threading.Thread(
            target=self._run_pump,
            args=(inbound, sender, stopped),
            name="aog-bidi-pump",
            daemon=True,
        )
        with self._lock:
            self._pumps.add(thread)
        start_thread(thread)

        def receive() -> Iterator[BidiMessage]:
            try:
                yield from replies
            finally:
                stopped.set()
                replies.cancel()

        if outbound is None:
            return receive()
        try:
            for message in receive():
                outbound.put(message)
        finally:
            outbound.put(None)
        return iter(())

    def _run_pump(
        self,
        inbound: Iterable[BidiMessage] | queue.Queue[BidiMessage | None],
        sender: BidiSender,
        stopped: threading.Event,
    ) -> None:
        try:
            pump(inbound, sender, stopped)
        finally:
            with self._lock:
                self._pumps.discard(threading.current_thread())

    # ---- RemotePluginProvider ---------------------------------------------------------

    def set_auth(
        self, auth_type: str, credentials: Mapping[str, str], *, timeout: float | None = None
    ) -> None:
        self._call(methods.set_auth(auth_type, credentials), timeout)

    def validate_auth(self, *, timeout: float | None = None) -> None:
        self._call(methods.validate_auth(), timeout)

    def refresh_auth(self, *, timeout: float | None = None) -> None:
        self._call(methods.refresh_auth(), timeout)

    # ---- LocalPluginProvider ----------------------------------------------------------

    def start_engine(self, mode: str, *, timeout: float | None = None) -> None:
        """Start the engine; AOG passes ``"daemon"`` or ``"standard"``."""
        self._call(methods.start_engine(mode), timeout)

    def stop_engine(self, *, timeout: float | None = None) -> None:
        self._call(methods.stop_engine(), timeout)

    def get_config(self, *, timeout: float | None = None) -> EngineRecommendConfig:
        return self._call(methods.get_config(), timeout)

    def check_engine(self, *, timeout: float | None = None) -> bool:
        """True when the engine is installed."""
        return self._call(methods.check_engine(), timeout)

    def install_engine(self, cover: bool = False, *, timeout: float | None = None) -> None:
        """Install the engine (``cover``: reinstall over an existing one; Go never sends it)."""
        self._call(methods.install_engine(cover), timeout)

    def init_env(self, *, timeout: float | None = None) -> None:
        self._call(methods.init_env(), timeout)

    def upgrade_engine(self, *, timeout: float | None = None) -> None:
        self._call(methods.upgrade_engine(), timeout)

    def pull_model(
        self,
        request: PullModelRequest,
        progress: ProgressCallback | None = None,
        *,
        timeout: float | None = None,
    ) -> ProgressResponse:
        """Pull a model and return the final progress item.

        Without ``progress`` this is the unary PullModel RPC, as in Go's client. With
        ``progress`` the PullModelStream RPC is used and the callback sees every item (Go's
        client never calls it); if the plugin does not implement that stream (gRPC
        UNIMPLEMENTED, AOG code 10 or 4005, a code-11 "not implemented" text, or a stream
        that ends without any item) the pull falls back to PullModel, within the same
        ``timeout``, and the callback sees its answer once. Errors: as
        :meth:`pull_model_stream`.
        """
        methods.progress_callback(progress)
        if progress is None:
            return self._call(methods.pull_model(request), timeout)
        started = time.monotonic()
        last: ProgressResponse | None = None
        try:
            for item in self.pull_model_stream(request, timeout=timeout):
                progress(item)
                last = item
        except (PluginError, PluginCallError) as exc:
            if last is not None or not stream_missing(exc):
                raise
            why = str(exc)
        else:
            if last is not None:
                return last
            why = "it ended without any progress item"
        _log.debug("PullModelStream unusable (%s); pulling with PullModel", why)
        if timeout is not None:
            timeout = max(timeout - (time.monotonic() - started), 0.001)
        answer = self._call(methods.pull_model(request), timeout)
        progress(answer)
        return answer

    def pull_model_stream(
        self, request: PullModelRequest, *, timeout: float | None = None
    ) -> ResponseStream[ProgressResponse]:
        """Progress items of a pull. A failure code raises :class:`PluginError` with the
        plugin's code and message; an ``{"error": "..."}`` item (no code of its own) raises
        ``PluginError(3001, "...")``: AOG's ErrCodeModelPullFailed, the plugin's text."""
        return self._stream(methods.pull_model_stream(request), timeout)

    def delete_model(self, request: DeleteRequest, *, timeout: float | None = None) -> None:
        self._call(methods.delete_model(request), timeout)

    def list_models(self, *, timeout: float | None = None) -> ListResponse:
        return self._call(methods.list_models(), timeout)

    def load_model(self, request: LoadRequest, *, timeout: float | None = None) -> None:
        self._call(methods.load_model(request), timeout)

    def unload_model(self, request: UnloadModelRequest, *, timeout: float | None = None) -> None:
        self._call(methods.unload_model(request), timeout)

    def get_running_models(self, *, timeout: float | None = None) -> ListResponse:
        return self._call(methods.get_running_models(), timeout)

    def get_version(
        self, request: EngineVersionResponse | None = None, *, timeout: float | None = None
    ) -> EngineVersionResponse:
        """The engine version (Go sends an EngineVersionResponse as the request, too)."""
        return self._call(methods.get_version(request), timeout)

    # ---- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Cancel open streams, stop bridge threads; close the channel if we own it."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._streams.cancel_all()
        with self._lock:
            pumps = list(self._pumps)
        for thread in pumps:
            thread.join(timeout=1.0)
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> GRPCProviderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
