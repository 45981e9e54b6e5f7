"""AsyncGRPCProviderClient: every method of GRPCProviderClient as a coroutine on grpc.aio.

Requests, code checks and decoding come from :mod:`aog_plugins.client` (one place per
RPC), so both clients answer alike: a failure ``code`` raises :class:`PluginError`, a
transport failure :class:`PluginCallError` (:class:`PluginCrashedError` when the plugin
died), bad JSON :class:`PayloadError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import grpc.aio

from aog_plugins.aio._calls import AsyncRpcCalls
from aog_plugins.aio._source import (
    AsyncConnectionSource,
    StaticAsyncSource,
    close_quietly,
    closed_link_error,
)
from aog_plugins.aio._streams import AsyncBidiCall, AsyncResponseStream
from aog_plugins.client import (
    DEFAULT_STREAM_TIMEOUT,
    DEFAULT_UNARY_TIMEOUT,
    limit_of,
    methods,
    rpcs,
    stream_missing,
)
from aog_plugins.errors import AogPluginsError, PluginCallError, PluginError
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

__all__ = ["AsyncGRPCProviderClient", "AsyncProgress"]

_log = logging.getLogger("aog_plugins.aio")

AsyncProgress = Callable[[ProgressResponse], "Awaitable[None] | None"]
"""A pull's progress callback: a plain function or a coroutine function."""

Inbound = AsyncIterable[BidiMessage] | Iterable[BidiMessage] | asyncio.Queue[BidiMessage | None]


class AsyncGRPCProviderClient(AsyncRpcCalls):
    """A typed asyncio client for a plugin's ``protocol.ProviderService``.

    Built from an :class:`~aog_plugins.aio.AsyncPlugin` (``plugin.client``), any
    :class:`AsyncConnectionSource`, or a ``grpc.aio.Channel``. Use it from the event loop
    it was first used on. ``timeout`` works as in the sync client (``None`` on
    ``invoke_service*`` applies the manifest's per-service rule). Cancelling the task that
    awaits a call cancels the RPC on the plugin.
    """

    def __init__(
        self, source: AsyncConnectionSource | grpc.aio.Channel, *, owns_channel: bool = False
    ) -> None:
        if isinstance(source, grpc.aio.Channel):
            self._owned: grpc.aio.Channel | None = source if owns_channel else None
            source = StaticAsyncSource(source)
        else:
            self._owned = None
        super().__init__(source)
        self._manifest: PluginManifest | None = None
        # Why this process's manifest cannot be had (rpcs.lasting): not asked again.
        self._no_manifest: AogPluginsError | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    def _link_changed(self) -> None:
        self._manifest = None  # a restarted plugin may have another manifest
        self._no_manifest = None

    async def _service_timeout(self, service_name: str, streaming: bool) -> float | None:
        default = DEFAULT_STREAM_TIMEOUT if streaming else DEFAULT_UNARY_TIMEOUT
        try:
            await self._link(DEFAULT_UNARY_TIMEOUT)  # drops the cache after a restart
            if self._no_manifest is not None:
                return default
            try:
                manifest = self._manifest or await self.get_manifest(timeout=DEFAULT_UNARY_TIMEOUT)
            except AogPluginsError as exc:
                if rpcs.lasting(exc):
                    self._no_manifest = exc
                raise
            service = manifest.service(service_name)
        except (AogPluginsError, KeyError, LookupError):
            return default
        return service.effective_timeout(streaming)

    # ---- PluginProvider ---------------------------------------------------------------

    async def get_manifest(self, *, timeout: float | None = None) -> PluginManifest:
        """The plugin's manifest (raises on failure, unlike Go's nil)."""
        manifest = await self._call(methods.get_manifest(), timeout)
        self._manifest = manifest
        return manifest

    async def get_operate_status(self, *, timeout: float | None = None) -> int:
        return await self._call(methods.get_operate_status(), timeout)

    async def set_operate_status(self, status: int, *, timeout: float | None = None) -> None:
        await self._call(methods.set_operate_status(status), timeout)

    async def health_check(self, *, timeout: float | None = None) -> None:
        """ProviderService.HealthCheck; raises :class:`PluginError` when unhealthy."""
        await self._call(methods.health_check(), timeout)

    async def invoke_service(
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
            timeout = await self._service_timeout(service_name, streaming=False)
        return await self._call(call, timeout)

    async def get_support_model_list(
        self, *, timeout: float | None = None
    ) -> list[RecommendModelData]:
        return (await self.get_manifest(timeout=timeout)).support_model_list()

    # ---- StreamablePlugin / BidirectionalPlugin ---------------------------------------

    async def invoke_service_stream(
        self,
        service_name: str,
        request: bytes,
        auth_info: str = "",
        *,
        timeout: float | None = None,
    ) -> AsyncResponseStream[StreamChunk]:
        """``async for`` the chunks; ends after ``is_final``, raises :class:`PluginError` on
        a failure chunk. Stop iterating (``cancel()``/``aclose()``) to cancel the RPC."""
        call = methods.invoke_service_stream(service_name, request, auth_info)  # checked first
        if timeout is None:
            timeout = await self._service_timeout(service_name, streaming=True)
        return await self._stream(call, timeout)

    async def invoke_service_bidi(
        self,
        service_name: str,
        auth_info: str = "",
        *,
        ws_conn_id: str = "",
        timeout: float | None = None,
    ) -> AsyncBidiCall:
        """Open a bidi call: ``await call.send(...)``, ``await call.close()`` (half-close),
        ``async for message in call``."""
        methods.bidi_opening(service_name, auth_info, ws_conn_id)
        if timeout is None:
            timeout = await self._service_timeout(service_name, streaming=True)
        limit = limit_of(timeout)
        link = await self._link(limit)
        try:
            grpc_call = rpcs.INVOKE_SERVICE_BIDI.aio(link.stub)(None, timeout=limit)
        except grpc.aio.UsageError:  # its channel closed meanwhile: its process exited
            raise await closed_link_error(self._source, "InvokeServiceBidi", link) from None
        call = AsyncBidiCall(
            grpc_call,
            self._source,
            link,
            service_name=service_name,
            auth_info=auth_info,
            ws_conn_id=ws_conn_id,
        )
        self._streams.add(call)
        return call

    async def invoke_service_bidirectional(
        self,
        service_name: str,
        ws_conn_id: str,
        auth_info: str,
        inbound: Inbound,
        *,
        outbound: asyncio.Queue[BidiMessage | None] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[BidiMessage]:
        """Bridge a caller's messages to a bidi call, like Go's channel bridge.

        ``inbound`` is an (async) iterable or an ``asyncio.Queue`` (``None`` ends it). The
        plugin's messages come back as an async iterator, or, when ``outbound`` is given,
        are put there followed by ``None`` (this then returns once the stream ended).
        """
        call = await self.invoke_service_bidi(
            service_name, auth_info, ws_conn_id=ws_conn_id, timeout=timeout
        )
        pump = asyncio.get_running_loop().create_task(_pump(inbound, call))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)

        async def receive() -> AsyncIterator[BidiMessage]:
            try:
                async for message in call:
                    yield message
            finally:
                pump.cancel()
                call.cancel()

        if outbound is None:
            return receive()
        try:
            async for message in receive():
                await outbound.put(message)
        finally:
            await outbound.put(None)
        return _empty()

    # ---- RemotePluginProvider ---------------------------------------------------------

    async def set_auth(
        self, auth_type: str, credentials: Mapping[str, str], *, timeout: float | None = None
    ) -> None:
        await self._call(methods.set_auth(auth_type, credentials), timeout)

    async def validate_auth(self, *, timeout: float | None = None) -> None:
        await self._call(methods.validate_auth(), timeout)

    async def refresh_auth(self, *, timeout: float | None = None) -> None:
        await self._call(methods.refresh_auth(), timeout)

    # ---- LocalPluginProvider ----------------------------------------------------------

    async def start_engine(self, mode: str, *, timeout: float | None = None) -> None:
        await self._call(methods.start_engine(mode), timeout)

    async def stop_engine(self, *, timeout: float | None = None) -> None:
        await self._call(methods.stop_engine(), timeout)

    async def get_config(self, *, timeout: float | None = None) -> EngineRecommendConfig:
        return await self._call(methods.get_config(), timeout)

    async def check_engine(self, *, timeout: float | None = None) -> bool:
        return await self._call(methods.check_engine(), timeout)

    async def install_engine(self, cover: bool = False, *, timeout: float | None = None) -> None:
        await self._call(methods.install_engine(cover), timeout)

    async def init_env(self, *, timeout: float | None = None) -> None:
        await self._call(methods.init_env(), timeout)

    async def upgrade_engine(self, *, timeout: float | None = None) -> None:
        await self._call(methods.upgrade_engine(), timeout)

    async def pull_model(
        self,
        request: PullModelRequest,
        progress: AsyncProgress | None = None,
        *,
        timeout: float | None = None,
    ) -> ProgressResponse:
        """Pull a model and return the final progress item; as the sync client's
        ``pull_model`` (PullModelStream with ``progress``, falling back to PullModel when
        the plugin lacks it), except that ``progress`` may also be a coroutine function."""
        methods.progress_callback(progress)
        if progress is None:
            return await self._call(methods.pull_model(request), timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: ProgressResponse | None = None
        try:
            async for item in await self.pull_model_stream(request, timeout=timeout):
                await _report(progress, item)
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
            timeout = max(timeout - (loop.time() - started), 0.001)
        answer = await self._call(methods.pull_model(request), timeout)
        await _report(progress, answer)
        return answer

    async def pull_model_stream(
        self, request: PullModelRequest, *, timeout: float | None = None
    ) -> AsyncResponseStream[ProgressResponse]:
        """Progress items of a pull (errors as the sync client's ``pull_model_stream``)."""
        return await self._stream(methods.pull_model_stream(request), timeout)

    async def delete_model(self, request: DeleteRequest, *, timeout: float | None = None) -> None:
        await self._call(methods.delete_model(request), timeout)

    async def list_models(self, *, timeout: float | None = None) -> ListResponse:
        return await self._call(methods.list_models(), timeout)

    async def load_model(self, request: LoadRequest, *, timeout: float | None = None) -> None:
        await self._call(methods.load_model(request), timeout)

    async def unload_model(
        self, request: UnloadModelRequest, *, timeout: float | None = None
    ) -> None:
        await self._call(methods.unload_model(request), timeout)

    async def get_running_models(self, *, timeout: float | None = None) -> ListResponse:
        return await self._call(methods.get_running_models(), timeout)

    async def get_version(
        self, request: EngineVersionResponse | None = None, *, timeout: float | None = None
    ) -> EngineVersionResponse:
        return await self._call(methods.get_version(request), timeout)

    # ---- lifetime ---------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel open streams and bridge tasks; close the channel if we own it."""
        if self._closed:
            return
        self._closed = True
        self._streams.cancel_all()
        for pump in list(self._pumps):
            pump.cancel()
        if self._owned is not None:
            await close_quietly(self._owned)

    async def __aenter__(self) -> AsyncGRPCProviderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _report(progress: AsyncProgress, item: ProgressResponse) -> None:
    result = progress(item)
    if inspect.isawaitable(result):
        await result


async def _pump(inbound: Inbound, call: AsyncBidiCall) -> None:
    """Forward ``inbound`` into ``call``, then half-close it."""
    try:
        if isinstance(inbound, asyncio.Queue):
            while (item := await inbound.get()) is not None:
                await call.send(item)
        elif isinstance(inbound, AsyncIterable):
            async for message in inbound:
                await call.send(message)
        else:
            for message in inbound:
                await call.send(message)
        await call.close()
    except (AogPluginsError, asyncio.CancelledError):
        pass  # the call was cancelled or failed under us: the receiving side reports it
    except Exception:
        # The caller's messages failed: as with the sync client, the plugin sees their
        # end (the call goes on, its replies still come) and the error is logged.
        _log.exception("the inbound messages of a bidi call failed; ending what is sent")
        with contextlib.suppress(AogPluginsError):
            await call.close()


async def _empty() -> AsyncIterator[BidiMessage]:
    return
    yield  # an async generator with nothing in it
