"""``await launch()`` and :class:`AsyncPlugin`: the sync :class:`~aog_plugins.Plugin` (the
one process core: spawn, handshake, supervision, restarts, kill) driven from asyncio.

Blocking work (start, kill, health check) runs on threads; the process layer's
transitions reach the loop through ``call_soon_threadsafe``. Calls use ``grpc.aio``
channels of their own, one per incarnation, dialled where the process layer's channel
goes (the relay's socket for a Go plugin's P-521 AutoMTLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from types import TracebackType

import grpc
import grpc.aio

from aog_plugins.aio._broker import AsyncBroker
from aog_plugins.aio._client import AsyncGRPCProviderClient
from aog_plugins.aio._source import Link, close_quietly
from aog_plugins.aio._threads import in_thread, on_loop
from aog_plugins.client import ExitInfo, limit_of
from aog_plugins.errors import PluginCallError, PluginFatalError
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig, HandshakeLine
from aog_plugins.process import Plugin, PluginEvent, PluginState, ReattachConfig, RestartPolicy
from aog_plugins.process import install_signal_handlers as install_handlers
from aog_plugins.process import launch as launch_sync
from aog_plugins.transport import open_aio_channel

__all__ = ["AsyncPlugin", "launch"]

_log = logging.getLogger("aog_plugins.aio")
_GONE = (PluginState.BACKOFF, PluginState.EXITED, PluginState.FATAL)
_LAST = (PluginState.EXITED, PluginState.FATAL)


class _Bridge:
    """Carries the plugin's transitions from the process layer's threads to the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, chained: Callable[[PluginEvent], None] | None
    ) -> None:
        self.loop = loop
        self._chained = chained
        self._first = True
        self.handlers: list[Callable[[PluginEvent], None]] = []

    def on_event(self, event: PluginEvent) -> None:  # on the plugin's event lane
        first, self._first = self._first, False
        # Events arrive asynchronously: the first start's STARTING -> RUNNING (always the
        # first event) may come after launch() returned; it is not news to the loop.
        if not (first and event.new is PluginState.RUNNING):
            with contextlib.suppress(RuntimeError):  # a closed loop: the sync side goes on
                self.loop.call_soon_threadsafe(self._deliver, event)
        if self._chained is not None:
            self._chained(event)

    def _deliver(self, event: PluginEvent) -> None:  # on the loop
        for handler in list(self.handlers):
            handler(event)


class _Events:
    """One subscriber's view of the transitions: an async iterator that ends after
    EXITED or FATAL."""

    def __init__(self, owner: AsyncPlugin, ended: bool) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[PluginEvent] = asyncio.Queue()
        self._ended = ended

    def put(self, event: PluginEvent) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> PluginEvent:
        if self._ended and self._queue.empty():
            self._owner._subscribers.discard(self)
            raise StopAsyncIteration
        event = await self._queue.get()
        if event.new in _LAST:
            self._ended = True
        return event

    async def aclose(self) -> None:
        self._ended = True
        self._owner._subscribers.discard(self)


class AsyncPlugin:
    """A launched plugin for asyncio code: ``async with await launch(...) as plugin``.

    Mirrors :class:`~aog_plugins.Plugin`: ``handshake``, ``pid``, ``state`` (current
    process), ``await ping()``, ``await kill()``, ``client`` (an
    :class:`AsyncGRPCProviderClient` that follows restarts) and ``events()``. ``plugin``
    is the sync object underneath, for what is not mirrored.
    """

    def __init__(self, plugin: Plugin, bridge: _Bridge) -> None:
        self._plugin = plugin
        self._loop = bridge.loop
        self._links: dict[int, Link] = {}
        self._changed = asyncio.Event()
        # Weak: an iterator left (a ``break``) and dropped must not keep getting events.
        self._subscribers: weakref.WeakSet[_Events] = weakref.WeakSet()
        self._client: AsyncGRPCProviderClient | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._broker: AsyncBroker | None = None
        self._broker_pid: int | None = None
        bridge.handlers.append(self._on_event)

    # ---- facts ------------------------------------------------------------------------
    @property
    def plugin(self) -> Plugin:
        """The sync :class:`~aog_plugins.Plugin` that does the process work."""
        return self._plugin

    @property
    def handshake(self) -> HandshakeLine:
        return self._plugin.handshake

    @property
    def pid(self) -> int:
        return self._plugin.pid

    @property
    def state(self) -> PluginState:
        return self._plugin.state

    @property
    def exited(self) -> bool:
        return self._plugin.exited

    @property
    def exit_code(self) -> int | None:
        return self._plugin.exit_code

    @property
    def app_version(self) -> int:
        return self._plugin.app_version

    @property
    def restart_policy(self) -> RestartPolicy:
        return self._plugin.restart_policy

    async def stderr_tail(self) -> str:
        """The current process's last stderr lines (after an exit this waits, on a
        thread, a moment for the pipe to drain)."""
        return await asyncio.to_thread(self._plugin.stderr_tail)

    def reattach_config(self) -> ReattachConfig:
        return self._plugin.reattach_config()

    async def channel(self, timeout: float | None = None) -> grpc.aio.Channel:
        """The ``grpc.aio`` channel to the running process, for services of your own on
        the main connection (waits for a restart as calls do). It closes when that
        process ends: ask again after a restart."""
        return (await self.link(limit_of(timeout))).channel

    @property
    def broker(self) -> AsyncBroker:
        """The GRPCBroker of the current process, for asyncio (see :class:`AsyncBroker`;
        :class:`~aog_plugins.errors.BrokerError` when there is no broker stream). A
        restarted plugin has a new one."""
        pid, sync = self._plugin.pid, self._plugin.broker
        if self._broker is None or self._broker.sync is not sync:
            self._drop_broker()
            self._broker, self._broker_pid = AsyncBroker(sync), pid
        return self._broker

    def _drop_broker(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            task = asyncio.get_running_loop().create_task(broker.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @property
    def client(self) -> AsyncGRPCProviderClient:
        """An :class:`AsyncGRPCProviderClient` that follows restarts."""
        if self._client is None:
            self._client = AsyncGRPCProviderClient(self)
        return self._client

    def events(self) -> AsyncIterator[PluginEvent]:
        """The transitions from now on, as an async iterator that ends after EXITED or
        FATAL (at once if the plugin is already there)."""
        self._own_loop()
        subscriber = _Events(self, ended=self._plugin.state in _LAST)
        self._subscribers.add(subscriber)
        return subscriber

    async def ping(self, timeout: float = 5.0) -> None:
        """Health-check the plugin now, as :meth:`Plugin.ping <aog_plugins.Plugin.ping>`
        does: :class:`PluginFatalError` when FATAL or stopped, :class:`PluginConnectError`
        when not running or the check fails."""
        await in_thread(lambda: self._plugin.ping(timeout), name="aog-aio-ping")

    async def kill(self, grace: float | None = None) -> None:
        """Stop the plugin for good (the sync kill ladder, on a thread). Idempotent. If the
        awaiting task is cancelled, the kill still completes in the background."""
        await in_thread(lambda: self._plugin.kill(grace), name="aog-aio-kill")
        if self._client is not None:
            self._client._closed_error = self._plugin._stopped_error  # as for a new client
            await self._client.close()
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.close()
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.lose()
        await asyncio.gather(*(close_quietly(link.channel) for link in links))

    async def __aenter__(self) -> AsyncPlugin:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.kill()

    def __repr__(self) -> str:
        return f"<AsyncPlugin pid={self.pid} state={self.state.value}>"

    def _own_loop(self) -> None:
        on_loop(
            self._loop,
            "AsyncPlugin",
            "launch() ran on (its transitions and channels are bound to it)",
            "or launch the plugin on this one (kill() works from any)",
        )

    # ---- AsyncConnectionSource (for the client) ---------------------------------------
    async def link(self, timeout: float | None = None) -> Link:
        """The aio link to the running process, waiting on the loop (up to ``timeout`` s)
        while the plugin restarts; FATAL or stopped raise at once."""
        self._own_loop()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            changed = self._changed
            try:
                # Never waits (timeout 0): RUNNING gives the channel, FATAL/EXITED raise.
                channel = self._plugin.current_channel(0.0)
            except PluginFatalError:
                raise
            except PluginCallError:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
                continue
            return self._link_for(channel)

    def _link_for(self, channel: grpc.Channel) -> Link:
        link = self._links.get(id(channel))
        if link is None or link.key is not channel:
            dial, pid = self._plugin.dial_target(channel)
            link = Link(open_aio_channel(dial), key=channel, pid=pid)
            self._links[id(channel)] = link
        return link

    async def exit_info(self, link: Link, wait: float = 0.0) -> ExitInfo | None:
        key = link.key
        if key is None:
            return None
        return await asyncio.to_thread(self._plugin.exit_info, key, wait)

    def _on_event(self, event: PluginEvent) -> None:  # on the loop
        if event.new in _GONE:
            if self._broker is not None and self._broker_pid == event.pid:
                self._drop_broker()  # its process is gone: so are its sub-connections
            for key, link in list(self._links.items()):
                if link.pid == event.pid:
                    del self._links[key]
                    link.lose()  # calls in flight fail fast with PluginCrashedError
                    task = asyncio.get_running_loop().create_task(close_quietly(link.channel))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for subscriber in list(self._subscribers):
            subscriber.put(event)


async def launch(
    cmd: str | os.PathLike[str] | Sequence[str],
    *,
    handshake: HandshakeConfig = AOG_HANDSHAKE,
    versions: Collection[int] | None = None,
    auto_mtls: bool = False,
    start_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    restart: RestartPolicy | None = None,
    on_event: Callable[[PluginEvent], None] | None = None,
    kill_grace: float = 2.0,
    stdout: Callable[[bytes], None] | None = None,
    stderr: Callable[[bytes], None] | None = None,
    logger: logging.Logger | None = None,
    checksum: str | None = None,
    unix_socket_group: str | None = None,
    cwd: str | None = None,
    install_signal_handlers: bool = True,
    multiplex: bool = False,
) -> AsyncPlugin:
    """Start a plugin without blocking the loop; the arguments and errors are those of
    :func:`aog_plugins.launch` (``on_event``, ``stdout`` and ``stderr`` are called on the
    process layer's threads, as there; use :meth:`AsyncPlugin.events` on the loop).

    Use as ``async with await launch(...) as plugin:``. Cancelling the awaiting task
    kills the plugin once its start completes; nothing is left running.
    """
    bridge = _Bridge(asyncio.get_running_loop(), on_event)

    def start() -> Plugin:
        return launch_sync(
            cmd,
            handshake=handshake,
            versions=versions,
            auto_mtls=auto_mtls,
            start_timeout=start_timeout,
            env=env,
            extra_env=extra_env,
            inherit_env=inherit_env,
            restart=restart,
            on_event=bridge.on_event,
            kill_grace=kill_grace,
            stdout=stdout,
            stderr=stderr,
            logger=logger,
            checksum=checksum,
            unix_socket_group=unix_socket_group,
            cwd=cwd,
            install_signal_handlers=install_signal_handlers,
            multiplex=multiplex,
        )

    plugin = await in_thread(start, name="aog-aio-launch", orphan=lambda p: p.kill())
    if install_signal_handlers:
        # The start ran on a thread, where signal handlers cannot be installed; the loop
        # usually runs on the main thread, where they can (elsewhere this does nothing).
        install_handlers()
    return AsyncPlugin(plugin, bridge)
