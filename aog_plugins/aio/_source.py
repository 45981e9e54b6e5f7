"""Where the async client gets its ``grpc.aio`` channel, and how a failure becomes typed.

A :class:`Link` is one aio channel to one plugin process plus the calls in flight on it.
An :class:`AsyncConnectionSource` (an :class:`~aog_plugins.aio.AsyncPlugin`, or a fixed
channel) hands out the link to use now and explains a dead process; when a process dies
its link is *lost*: the calls on it are cancelled at once and fail with
:class:`~aog_plugins.errors.PluginCrashedError` instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import grpc
import grpc.aio

from aog_plugins.aio._threads import cancelling
from aog_plugins.client import CLOSED_WAIT, ExitInfo, call_error, closed_error, exit_wait, rpcs
from aog_plugins.errors import PluginCallError

if TYPE_CHECKING:
    from aog_plugins._proto.provider_pb2_grpc import ProviderServiceAsyncStub

__all__ = [
    "AsyncCall",
    "AsyncConnectionSource",
    "AsyncStreamCall",
    "Link",
    "StaticAsyncSource",
    "close_quietly",
    "closed_link_error",
    "failure",
    "lost_under_us",
]

_R_co = TypeVar("_R_co", covariant=True)


class AsyncCall(Protocol):
    """What a link needs of an aio call: it can be cancelled."""

    def cancel(self) -> bool: ...


class AsyncStreamCall(AsyncCall, Protocol[_R_co]):
    """An aio call with a response stream."""

    def __aiter__(self) -> AsyncIterator[_R_co]: ...


class Link:
    """One ``grpc.aio`` channel to one plugin process, and the calls in flight on it.

    ``key`` is the process layer's sync channel of the same process (how the plugin
    names that process when asked how it ended); ``pid`` its process id.
    """

    def __init__(
        self, channel: grpc.aio.Channel, key: grpc.Channel | None = None, pid: int | None = None
    ) -> None:
        self.channel = channel
        self.stub: ProviderServiceAsyncStub = rpcs.aio_stub(channel)
        self.key = key
        self.pid = pid
        self.lost = False
        self._calls: set[AsyncCall] = set()
        self._held: list[Callable[[], None]] = []
        self._ends: dict[AsyncCall, Callable[[], None]] = {}

    def hold(self, end: Callable[[], None]) -> None:
        """A count the source took for a call about to start on this link (a manager's
        drain waits for it): the next :meth:`track` adopts it and ends it with the call.
        One not adopted by the time the loop runs its next callback is ended then (the
        client asks for a link and starts its call in one step)."""
        self._held.append(end)
        asyncio.get_running_loop().call_soon(self._release_held)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for end in held:
            end()

    def track(self, call: AsyncCall) -> None:
        if self.lost:
            call.cancel()
        self._calls.add(call)
        if self._held:
            self._ends[call] = self._held.pop()
        done = getattr(call, "add_done_callback", None)
        if done is not None:
            # A stream left unread, or dropped unfinished (then cancelled), is over when
            # its call is: it ends its count and is not kept here for the link's life.
            done(lambda _call: self.untrack(call))

    def untrack(self, call: AsyncCall) -> None:
        self._calls.discard(call)
        end = self._ends.pop(call, None)
        if end is not None:
            end()

    def lose(self) -> None:
        """The process is gone: cancel every call on this link (they raise the crash)."""
        self.lost = True
        calls, self._calls = self._calls, set()
        ends, self._ends = self._ends, {}
        for call in calls:
            call.cancel()
        for end in ends.values():
            end()


@runtime_checkable
class AsyncConnectionSource(Protocol):
    """Hands an async client the link to use now, and explains a dead plugin."""

    async def link(self, timeout: float | None = None) -> Link:
        """The link to the running plugin, waiting up to ``timeout`` s for a restart;
        raises :class:`~aog_plugins.errors.PluginCallError` if there is none (at once
        when FATAL)."""
        ...

    async def exit_info(self, link: Link, wait: float = 0.0) -> ExitInfo | None:
        """None while the process behind ``link`` runs (after waiting up to ``wait`` s for
        it to be seen dead); else how it ended."""
        ...


class StaticAsyncSource:
    """A fixed aio channel to a plugin whose process we do not know."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._link = Link(channel)

    async def link(self, timeout: float | None = None) -> Link:
        return self._link

    async def exit_info(self, link: Link, wait: float = 0.0) -> ExitInfo | None:
        return None


async def failure(
    source: AsyncConnectionSource, rpc: str, link: Link, exc: grpc.RpcError | None
) -> PluginCallError:
    """The typed error for a failed call on ``link``: ``exc`` is grpc's error, or None
    when the call was cancelled because its process died (the link was lost)."""
    if exc is None:
        code: grpc.StatusCode | None = grpc.StatusCode.CANCELLED
        details: str | None = "the call was cancelled: the plugin process exited"
    else:
        code, details = exc.code(), exc.details()
    info = await source.exit_info(link, exit_wait(code) if not link.lost else 1.0)
    return call_error(rpc, code, details, info)


async def closed_link_error(source: AsyncConnectionSource, rpc: str, link: Link) -> PluginCallError:
    """The typed error for grpc.aio's ``UsageError("Channel is closed.")``: the link's
    channel is closed when its process exits (calls in flight fail at once), so a call that
    took the link a moment before is told of that exit as they are."""
    return closed_error(rpc, await source.exit_info(link, CLOSED_WAIT))


def lost_under_us(link: Link) -> bool:
    """Whether a CancelledError on ``link`` means its process died, not that the task
    awaiting the call was cancelled (then the cancellation must propagate)."""
    return link.lost and not cancelling()


async def close_quietly(channel: grpc.aio.Channel) -> None:
    """Close an aio channel (it cancels what is still on it), ignoring a closed loop."""
    with contextlib.suppress(RuntimeError):
        await channel.close(None)
