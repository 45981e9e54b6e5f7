"""The call plumbing under :class:`AsyncGRPCProviderClient`: the sync client's typed path
(descriptors and call builders from :mod:`aog_plugins.client`), awaited on ``grpc.aio``.

Each call asks the :class:`AsyncConnectionSource` for the current link (waiting on the
loop, bounded, while a crashed plugin restarts), calls the descriptor's aio stub method,
and maps failures with the sync client's rules (``call_error``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import grpc
import grpc.aio

from aog_plugins.aio._source import (
    AsyncConnectionSource,
    Link,
    closed_link_error,
    failure,
    lost_under_us,
)
from aog_plugins.aio._streams import AsyncResponseStream
from aog_plugins.client import StreamRegistry, limit_of, methods, rpcs
from aog_plugins.errors import AogPluginsError, PluginCallError, PluginCrashedError

__all__ = ["AsyncRpcCalls"]

_Q = TypeVar("_Q")
_R = TypeVar("_R")
_T = TypeVar("_T")


class AsyncRpcCalls:
    """Typed unary and streaming calls over a source's current link."""

    def __init__(self, source: AsyncConnectionSource) -> None:
        self._source = source
        self._seen: Link | None = None
        self._streams = StreamRegistry()
        self._closed = False
        self._closed_error: Callable[[], AogPluginsError] | None = None
        """Set by the plugin that closed this client: the error its calls raise then."""

    def _link_changed(self) -> None:
        """Called when calls move to a new link, e.g. after a restart."""

    async def _link(self, timeout: float | None) -> Link:
        if self._closed:
            if self._closed_error is not None:
                raise self._closed_error()
            raise AogPluginsError("this AsyncGRPCProviderClient is closed")
        # Waits (bounded) while a crashed plugin is being restarted; raises when FATAL.
        link = await self._source.link(timeout)
        if link is not self._seen:
            self._seen = link
            self._link_changed()
        return link

    async def _unary(self, rpc: rpcs.UnaryRpc[_Q, _R], request: _Q, timeout: float | None) -> _R:
        """One unary RPC; an idempotent read is retried once on a restarted plugin."""
        limit = limit_of(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit

        def remaining() -> float | None:
            return None if deadline is None else max(deadline - loop.time(), 0.001)

        crash: PluginCrashedError | None = None
        for attempt in (0, 1):
            try:
                link = await self._link(remaining())
            except PluginCallError:
                if crash is None:
                    raise
                # No plugin to retry on (stopped, FATAL, or not back in time): the caller
                # is told of the crash the call hit, with its exit code and stderr tail.
                raise crash from None
            error: PluginCallError
            call = None
            try:
                call = rpc.aio(link.stub)(request, timeout=remaining())
                link.track(call)
                return await call
            except grpc.aio.UsageError:  # its channel closed meanwhile: its process exited
                error = await closed_link_error(self._source, rpc.name, link)
            except grpc.RpcError as exc:
                error = await failure(self._source, rpc.name, link, exc)
            except asyncio.CancelledError:
                if not lost_under_us(link):
                    raise  # the caller's task was cancelled: grpc cancelled the RPC
                error = await failure(self._source, rpc.name, link, None)
            finally:
                if call is not None:
                    link.untrack(call)
            if rpc.idempotent and attempt == 0 and isinstance(error, PluginCrashedError):
                crash = error
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, call: methods.Unary[_Q, _R, _T], timeout: float | None) -> _T:
        """A client method's unary call (built by ``aog_plugins.client.methods``)."""
        return call.result(await self._unary(call.rpc, call.request, timeout))

    async def _stream(
        self, call: methods.Streamed[_Q, _R, _T], timeout: float | None
    ) -> AsyncResponseStream[_T]:
        limit = limit_of(timeout)
        link = await self._link(limit)
        try:
            grpc_call = call.rpc.aio(link.stub)(call.request, timeout=limit)
        except grpc.aio.UsageError:  # its channel closed meanwhile: its process exited
            raise await closed_link_error(self._source, call.rpc.name, link) from None
        stream = AsyncResponseStream(call.rpc.name, grpc_call, call.convert, self._source, link)
        self._streams.add(stream)
        return stream
