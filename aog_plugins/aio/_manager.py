"""AsyncPluginManager: the :class:`~aog_plugins.PluginManager` (scanning, hot-plug,
supervision, idle stop, all on its own threads) driven from asyncio, with clients on
``grpc.aio``.

Blocking operations (open, stop, reload, rescan, close, a first start) run on threads and
their results are handed to the loop; manager events reach the loop through
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from types import TracebackType

from aog_plugins.aio._client import AsyncGRPCProviderClient
from aog_plugins.aio._source import Link, close_quietly
from aog_plugins.aio._threads import in_thread, on_loop
from aog_plugins.client import ExitInfo
from aog_plugins.errors import PluginCallError, PluginFatalError
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig
from aog_plugins.manager import ManagerEvent, PluginEntry, PluginManager
from aog_plugins.process import Plugin, RestartPolicy
from aog_plugins.process import install_signal_handlers as install_handlers
from aog_plugins.transport import open_aio_channel

__all__ = ["AsyncPluginManager"]

_DEFAULT_RESTART = RestartPolicy()  # PluginManager's default
_GONE = ("failed", "stopped", "removed")
_REPOLL = 0.25  # manager events come from a dispatcher thread: also look again this often


class _ManagedLinks:
    """The aio links of one plugin name: follows restarts, replacements and idle stops
    by asking the manager for the plugin (on a thread) whenever the one it knows is gone."""

    def __init__(self, owner: AsyncPluginManager, name: str) -> None:
        self._owner = owner
        self._name = name
        self._plugin: Plugin | None = None
        self._getting: asyncio.Future[Plugin] | None = None
        self._links: dict[int, Link] = {}
        # The plugin each link reaches, for as long as someone holds the link.
        self._owners: weakref.WeakKeyDictionary[Link, Plugin] = weakref.WeakKeyDictionary()

    async def _get(self) -> Plugin:
        """The manager's plugin for the name (started if needed), one thread for all the
        calls that need it at once."""
        getting = self._getting
        if getting is None:
            get = partial(self._owner.manager.get, self._name)
            getting = self._getting = asyncio.ensure_future(
                in_thread(get, name="aog-aio-manager-get")
            )
        try:
            plugin = await asyncio.shield(getting)
        finally:
            if getting.done() and self._getting is getting:
                self._getting = None
        self._plugin = plugin
        return plugin

    async def link(self, timeout: float | None = None) -> Link:
        self._owner._own_loop()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        ended: Plugin | None = None
        while True:
            changed = self._owner._changed
            plugin = self._plugin or await self._get()
            try:
                channel = plugin.current_channel(0.0)  # never waits
            except PluginFatalError:
                if plugin is ended:
                    raise  # the manager still has it, FATAL: fail fast as the sync client
                ended, self._plugin = plugin, None  # stopped, replaced or removed: ask again
                continue
            except PluginCallError:  # restarting
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise
                wait = _REPOLL if remaining is None else min(remaining, _REPOLL)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
                continue
            # Counted on the manager (atomically with "still the one serving"), so a
            # replacement drains this call before stopping the process.
            end = self._owner.manager.track_call(self._name, plugin)
            if end is None:
                ended, self._plugin = plugin, None  # swapped out just now: ask again
                continue
            link = self._links.get(id(channel))
            if link is None or link.key is not channel:
                dial, pid = plugin.dial_target(channel)
                link = self._links[id(channel)] = Link(open_aio_channel(dial), channel, pid)
                self._owners[link] = plugin
            link.hold(end)
            return link

    async def exit_info(self, link: Link, wait: float = 0.0) -> ExitInfo | None:
        plugin, key = self._owners.get(link), link.key
        if plugin is None or key is None:
            return None
        return await asyncio.to_thread(plugin.exit_info, key, wait)

    def forget(self) -> None:
        """Ask the manager for the plugin again on the next call (it was replaced)."""
        self._plugin = None

    def lose(self, pid: int) -> list[Link]:
        """The process ``pid`` is gone: its links fail their calls and are dropped."""
        lost = [link for link in self._links.values() if link.pid == pid]
        for link in lost:
            self._links.pop(id(link.key))
            link.lose()
        return lost

    def lose_all(self) -> list[Link]:
        lost, self._links = list(self._links.values()), {}
        for link in lost:
            link.lose()
        return lost


class AsyncPluginManager:
    """A plugins directory for asyncio code:
    ``async with await AsyncPluginManager.open(directory, ...) as manager``.

    ``open()`` takes :class:`~aog_plugins.PluginManager`'s arguments. ``entries()``,
    ``entry()`` and ``find()`` answer from memory; ``client(name)`` is an
    :class:`AsyncGRPCProviderClient` that starts the plugin on first call and follows
    restarts, replacements and idle stops; ``events()`` yields :class:`ManagerEvent` s.
    """

    def __init__(self, manager: PluginManager, loop: asyncio.AbstractEventLoop) -> None:
        self._manager = manager
        self._loop = loop
        self._changed = asyncio.Event()
        self._sources: dict[str, _ManagedLinks] = {}
        self._clients: dict[str, AsyncGRPCProviderClient] = {}
        self._queues: set[asyncio.Queue[ManagerEvent | None]] = set()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        handshake: HandshakeConfig = AOG_HANDSHAKE,
        auto_mtls: bool = True,
        restart: RestartPolicy = _DEFAULT_RESTART,
        start_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        eager: bool = False,
        idle_timeout: float | None = None,
        watch: bool | str = True,
        checksums: Mapping[str, str] | None = None,
        on_event: Callable[[ManagerEvent], None] | None = None,
        replace_env: bool = False,
        aog_version: str | None = None,
        drain_timeout: float = 30.0,
        kill_grace: float = 2.0,
        install_signal_handlers: bool = True,
    ) -> AsyncPluginManager:
        """Build the manager on a thread (it scans, and starts plugins when ``eager``);
        the arguments and errors are :class:`~aog_plugins.PluginManager`'s (``on_event``
        is called on the manager's event thread, as there; :meth:`events` is the loop's
        view)."""
        loop = asyncio.get_running_loop()
        holder: list[AsyncPluginManager] = []

        def arrive(event: ManagerEvent) -> None:  # on the loop
            if holder:
                holder[0]._on_event(event)

        def deliver(event: ManagerEvent) -> None:  # on the manager's event thread
            with contextlib.suppress(RuntimeError):  # a closed loop
                loop.call_soon_threadsafe(arrive, event)
            if on_event is not None:
                on_event(event)

        def build() -> PluginManager:
            return PluginManager(
                directory,
                handshake=handshake,
                auto_mtls=auto_mtls,
                restart=restart,
                start_timeout=start_timeout,
                env=env,
                eager=eager,
                idle_timeout=idle_timeout,
                watch=watch,
                checksums=checksums,
                on_event=deliver,
                replace_env=replace_env,
                aog_version=aog_version,
                drain_timeout=drain_timeout,
                kill_grace=kill_grace,
                install_signal_handlers=install_signal_handlers,
            )

        if install_signal_handlers:
            # The manager is built on a thread, where signal handlers cannot be installed;
            # the loop usually runs on the main thread, where they can (as aio.launch).
            install_handlers()
        manager = await in_thread(build, name="aog-aio-manager", orphan=lambda m: m.close())
        holder.append(cls(manager, loop))
        return holder[0]

    @property
    def manager(self) -> PluginManager:
        """The sync :class:`~aog_plugins.PluginManager` underneath."""
        return self._manager

    def entries(self) -> list[PluginEntry]:
        return self._manager.entries()

    def entry(self, name: str) -> PluginEntry:
        return self._manager.entry(name)

    def find(self, service: str | None = None, task_type: str | None = None) -> list[PluginEntry]:
        return self._manager.find(service=service, task_type=task_type)

    def _own_loop(self) -> None:
        on_loop(
            self._loop,
            "AsyncPluginManager",
            "open() ran on (its events and calls are delivered there)",
            "or open a manager on this one (close() works from any)",
        )

    async def get(self, name: str) -> Plugin:
        """The running sync :class:`~aog_plugins.Plugin` ``name``, started (on a thread)
        if needed. Prefer :meth:`client`: it follows replacements."""
        self._own_loop()
        return await in_thread(partial(self._manager.get, name), name="aog-aio-manager-get")

    def client(self, name: str) -> AsyncGRPCProviderClient:
        """The async client of plugin ``name`` (one per name); unknown or broken plugins
        raise their typed error here, as :meth:`PluginManager.client` does."""
        self._own_loop()
        self._manager.client(name)  # the same checks (unknown, broken), nothing started
        client = self._clients.get(name)
        if client is None:
            source = self._sources[name] = _ManagedLinks(self, name)
            client = self._clients[name] = AsyncGRPCProviderClient(source)
        return client

    async def stop(self, name: str) -> None:
        self._own_loop()
        await in_thread(partial(self._manager.stop, name), name="aog-aio-manager")

    async def reload(self, name: str) -> None:
        self._own_loop()
        await in_thread(partial(self._manager.reload, name), name="aog-aio-manager")

    async def rescan(self) -> list[PluginEntry]:
        self._own_loop()
        return await in_thread(self._manager.rescan, name="aog-aio-manager")

    def events(self) -> AsyncIterator[ManagerEvent]:
        """The manager's events delivered from now on (those of :meth:`open`'s first scan
        arrive on the loop after it returns, so an iterator taken at once gets them too);
        ends when the manager is closed, at once if it already is."""
        self._own_loop()
        queue: asyncio.Queue[ManagerEvent | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        else:
            self._queues.add(queue)

        async def follow() -> AsyncIterator[ManagerEvent]:
            try:
                while (event := await queue.get()) is not None:
                    yield event
            finally:
                self._queues.discard(queue)

        return follow()

    async def close(self) -> None:
        """Stop every plugin (on a thread) and the clients; idempotent. If the awaiting
        task is cancelled, the close still completes in the background (event iterators
        end then)."""
        self._closed = True
        task = asyncio.get_running_loop().create_task(self._close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        await asyncio.shield(task)

    async def _close(self) -> None:
        await in_thread(self._manager.close, name="aog-aio-manager")
        for client in self._clients.values():
            await client.close()
        lost = [link for source in self._sources.values() for link in source.lose_all()]
        await asyncio.gather(*(close_quietly(link.channel) for link in lost))
        for queue in self._queues:
            queue.put_nowait(None)

    async def __aenter__(self) -> AsyncPluginManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncPluginManager {self._manager.directory}>"

    def _on_event(self, event: ManagerEvent) -> None:  # on the loop
        source = self._sources.get(event.name)
        if source is not None:
            if event.kind == "replaced":
                source.forget()  # new calls go to the new process
            if event.kind in _GONE and event.pid is not None:
                for link in source.lose(event.pid):  # calls on it fail fast
                    task = self._loop.create_task(close_quietly(link.channel))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for queue in self._queues:
            queue.put_nowait(event)
