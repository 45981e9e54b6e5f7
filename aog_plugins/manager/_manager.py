"""PluginManager: a directory of on-disk AOG plugins, started on first use, supervised,
and kept in step with the directory while the host runs (see docs/manager.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from types import TracebackType

from aog_plugins.client import GRPCProviderClient
from aog_plugins.errors import (
    ConfigurationError,
    DuplicatePluginError,
    PluginEntryError,
    PluginRemovedError,
    UnknownPluginError,
)
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig
from aog_plugins.manager._discovery import (
    Found,
    check_checksum,
    disk_state,
    executable_dirs,
    inspect_dir,
    scan,
)
from aog_plugins.manager._entry import ManagerEvent, PluginEntry
from aog_plugins.manager._events import EventBus
from aog_plugins.manager._launching import LaunchSettings
from aog_plugins.manager._routing import ManagedSource
from aog_plugins.manager._slot import Slot
from aog_plugins.manager._watch import Watcher
from aog_plugins.manager._workers import Workers
from aog_plugins.process import Plugin, RestartPolicy, wait_event
from aog_plugins.process import install_signal_handlers as install_handlers
from aog_plugins.transport import seconds, start_thread

__all__ = ["PluginManager"]

_DEFAULT_RESTART = RestartPolicy()
_log = logging.getLogger("aog_plugins.manager")


class PluginManager:
    """Load every plugin of an AOG plugins directory; start each on first use.

    ``directory`` holds one subdirectory per plugin (``plugin.yaml``/``.yml``/``.json``
    and the executable its ``platforms.<goos>_<goarch>.executable`` names). ``handshake``,
    ``auto_mtls``, ``restart`` and ``start_timeout`` apply to every plugin as in
    :func:`~aog_plugins.launch`. ``env`` is added to the host's environment (with
    ``replace_env=True`` it replaces it); ``aog_version`` is passed as ``AOG_VERSION``.
    ``eager`` starts every usable plugin now, in parallel. ``idle_timeout`` (seconds)
    stops a plugin nobody called for that long; the next use starts it again. ``watch``:
    ``True`` follows the directory with file events (polling where unavailable),
    ``"poll"`` polls, ``False`` only on :meth:`rescan`. ``checksums`` maps a plugin name
    to ``sha256:<hex>``, checked before every start and restart. ``on_event`` receives
    :class:`ManagerEvent` s in order on a thread of their own. A replaced plugin's calls
    in flight get ``drain_timeout`` seconds to finish; stopping gives ``kill_grace``.

    Built on the main thread, it installs the SIGTERM/SIGINT handlers
    :func:`~aog_plugins.launch` installs (the plugins are stopped, then the signal takes
    its course), since its plugins start on other threads, where that cannot be done
    (``eager``, the watcher); ``install_signal_handlers=False`` leaves the signals to the
    application, as for ``launch``.
    """

    def __init__(
        self,
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
    ) -> None:
        root = Path(os.path.abspath(os.fspath(directory)))
        try:
            is_dir = root.is_dir()
        except OSError as exc:  # EACCES on a directory above it
            raise ConfigurationError(
                f"cannot look at the plugins directory {root}: {exc.strerror}: "
                "let this user search the directories above it"
            ) from exc
        if not is_dir:
            raise ConfigurationError(
                f"plugins directory {root} does not exist or is not a directory: "
                "create it, or pass the directory that holds one folder per plugin"
            )
        if idle_timeout is not None:
            idle_timeout = seconds("idle_timeout (None: never)", idle_timeout)
        if watch not in (True, False, "poll"):
            raise ConfigurationError(f"watch must be True, False or 'poll', got {watch!r}")
        self.directory = root
        self._settings = LaunchSettings(
            handshake=handshake,
            auto_mtls=auto_mtls,
            restart=restart,
            start_timeout=start_timeout,
            env=env,
            replace_env=replace_env,
            aog_version=aog_version,
            checksums=checksums or {},
            kill_grace=kill_grace,
            drain_timeout=drain_timeout,
            install_signal_handlers=install_signal_handlers,
        )
        if install_signal_handlers:
            install_handlers()  # does nothing off the main thread
        self._eager = eager
        self._idle_timeout = idle_timeout
        self._bus = EventBus(on_event)
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()
        self._slots: dict[Path, Slot] = {}
        self._names: dict[str, Slot] = {}
        self._removed: dict[str, str] = {}
        self._clients: dict[str, GRPCProviderClient] = {}
        self._workers = Workers()
        self._closed = threading.Event()
        self._close_done = threading.Event()
        self._watcher: Watcher | None = None
        self._janitor: threading.Thread | None = None
        try:
            # Taken first: the watcher then also catches what changes while the first scan
            # starts its plugins (eager starts take a while).
            before = self._disk_state() if watch else None
            self._sync(initial=True, wait=True)
            if idle_timeout is not None:
                self._janitor = threading.Thread(
                    target=self._idle_loop,
                    args=(idle_timeout,),
                    name="aog-plugins-idle",
                    daemon=True,
                )
                start_thread(self._janitor)
            if watch:
                self._watcher = Watcher(
                    root,
                    self._disk_state,
                    self._watched_change,
                    mode="poll" if watch == "poll" else "events",
                    extra_dirs=self._executable_dirs,
                )
                self._watcher.start(before)
        except BaseException:
            self.close()
            raise

    # ---- queries ------------------------------------------------------------------------
    def entries(self) -> list[PluginEntry]:
        """Every plugin directory found, in directory-name order, broken ones included."""
        with self._lock:
            slots = sorted(self._slots.values(), key=lambda s: s.found.directory.name)
        return [slot.snapshot() for slot in slots]

    def entry(self, name: str) -> PluginEntry:
        """The entry of plugin ``name`` (raises :class:`UnknownPluginError`)."""
        return self._slot(name).snapshot()

    def find(self, service: str | None = None, task_type: str | None = None) -> list[PluginEntry]:
        """Usable plugins with a service named ``service`` and/or of ``task_type``."""
        matches = []
        for entry in self.entries():
            if not entry.usable or entry.manifest is None:
                continue  # broken (a broken replacement of a running plugin still serves)
            if any(
                (service is None or s.service_name == service)
                and (task_type is None or s.task_type == task_type)
                for s in entry.manifest.services
            ):
                matches.append(entry)
        return matches

    # ---- use ----------------------------------------------------------------------------
    def get(self, name: str) -> Plugin:
        """The running :class:`~aog_plugins.Plugin` ``name``, started now if needed (one
        start for all concurrent callers). Raises the plugin's typed error when unknown,
        broken or failing to start. Prefer :meth:`client`: it follows replacements."""
        return self._slot(name).acquire()

    def client(self, name: str) -> GRPCProviderClient:
        """A client for plugin ``name`` that starts it on first call and follows restarts,
        replacements and idle stops (one per name, shared, thread-safe). A broken plugin
        raises its typed error here, unless an earlier build of it still serves."""
        slot = self._slot(name)
        if slot.found.error is not None and not slot.serving():
            raise slot.found.error
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = GRPCProviderClient(ManagedSource(self._slot, name))
            return client

    def track_call(self, name: str, plugin: Plugin) -> Callable[[], None] | None:
        """For a client of your own over :meth:`get`'s plugin (``aog_plugins.aio`` uses
        it): count a call about to go to ``plugin``, so a replacement drains it and an idle
        stop waits for it. Returns the function to call once the call is over (later calls
        of it do nothing), or None when ``plugin`` no longer serves ``name`` (swapped out
        or stopped meanwhile: :meth:`get` the current one). Never blocks."""
        slot = self._slot(name)
        if not slot.enter(plugin):
            return None
        held = [plugin]

        def end() -> None:
            with contextlib.suppress(IndexError):  # the call was already ended
                slot.end_call(held.pop())

        return end

    def stop(self, name: str) -> None:
        """Stop plugin ``name`` now (its next use starts it again)."""
        self._slot(name).stop("stop() called")

    def reload(self, name: str) -> None:
        """Read plugin ``name``'s directory again and, if it runs, swap in a fresh process
        with zero downtime. Raises the failure (the old process keeps serving)."""
        slot = self._slot(name)
        found = inspect_dir(slot.found.directory)
        if found.error is None:
            found = found.named(bad) if (bad := self._checksum_error(found)) else found
        if slot.renamed_by(found):
            self._sync(wait=True)
            return
        error = slot.replace(found)
        if error is not None:
            raise error

    def rescan(self) -> list[PluginEntry]:
        """Bring the manager in step with the directory now (added, removed, replaced),
        waiting for the resulting starts, swaps and stops, those the watcher began
        included; returns :meth:`entries`. A directory that cannot be read raises
        :class:`ConfigurationError` and changes nothing; a closed manager raises
        :class:`PluginRemovedError`."""
        if self._closed.is_set():
            raise PluginRemovedError("the plugin manager is closed", code="CLOSED")
        self._sync(wait=True)
        self._workers.join()
        return self.entries()

    # ---- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop watching and stop every plugin; nothing is left running. Idempotent: a
        second caller returns once the first one is done (an ``on_event`` callback, which
        that first call may be waiting for, returns at once)."""
        if self._closed.is_set():
            if not self._bus.on_thread():
                wait_event(self._close_done, None)  # in slices: the main thread's signals
            return
        self._closed.set()
        try:
            self._close()
        finally:
            self._close_done.set()

    def _close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._janitor is not None:
            self._janitor.join(10.0)
        with self._scan_lock, self._lock:
            slots = list(self._slots.values())
            for slot in slots:
                self._removed[slot.name] = "the manager is closed"
        stoppers = [
            threading.Thread(
                target=s.remove, args=("the manager is closed",), kwargs={"drain": False}
            )
            for s in slots
        ]
        for thread in stoppers:
            start_thread(thread)
        for thread in stoppers:
            thread.join()
        self._workers.join()
        with self._lock:
            clients = list(self._clients.values())
        for client in clients:
            client.close()
        self._bus.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> PluginManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PluginManager {self.directory} plugins={len(self._slots)}>"

    # ---- internals ----------------------------------------------------------------------
    def _slot(self, name: str) -> Slot:
        with self._lock:
            if self._closed.is_set():
                raise PluginRemovedError("the plugin manager is closed", code="CLOSED")
            slot = self._names.get(name)
            if slot is not None:
                return slot
            gone = self._removed.get(name)
            known = ", ".join(sorted(self._names)) or "none"
        if gone is not None:
            raise PluginRemovedError(f"plugin {name!r} is gone: {gone}", code="REMOVED")
        raise UnknownPluginError(
            f"no such plugin (plugins: {known})",
            plugin=name,
            directory=str(self.directory / name),
            hint=f"add a directory with a plugin.yaml whose provider.name is {name!r}",
        )

    def _checksum_error(self, found: Found) -> PluginEntryError | None:
        return check_checksum(found, self._settings.checksums.get(found.name))

    def _disk_state(self) -> Hashable:
        with self._lock:
            cache = {d: s.target for d, s in self._slots.items()}
        return disk_state(self.directory, cache)

    def _executable_dirs(self) -> list[Path]:
        with self._lock:
            found = [slot.target for slot in self._slots.values()]
        return executable_dirs(found)

    def _watched_change(self) -> None:
        if self._closed.is_set():
            return
        try:
            self._sync(wait=False)
        except ConfigurationError as exc:  # the directory exists but cannot be read now
            _log.warning("%s; the plugins are kept as they are until it can be read", exc)

    def _sync(self, *, initial: bool = False, wait: bool) -> None:
        started: list[threading.Thread] = []
        with self._scan_lock:
            if self._closed.is_set():
                return
            with self._lock:
                previous = {d: s.target for d, s in self._slots.items()}
            found = scan(self.directory, previous, self._settings.checksums)
            seen = {f.directory for f in found}
            with self._lock:
                gone = [s for d, s in self._slots.items() if d not in seen]
                renamed = [
                    self._slots[f.directory]
                    for f in found
                    if f.directory in self._slots and self._slots[f.directory].renamed_by(f)
                ]
                for slot in (*gone, *renamed):
                    del self._slots[slot.found.directory]
                    self._removed[slot.name] = f"its directory {slot.found.directory} was removed"
                added: list[Slot] = []
                changed: list[tuple[Slot, Found]] = []
                for item in found:
                    existing = self._slots.get(item.directory)
                    if existing is None:
                        fresh = Slot(item, self._settings, self._bus.post)
                        self._slots[item.directory] = fresh
                        self._removed.pop(item.name, None)
                        added.append(fresh)
                    elif existing.target is not item:
                        changed.append((existing, item))
                self._reindex()
            for slot in (*gone, *renamed):
                started.append(self._workers.spawn(self._drop, slot))
            for slot in added:
                why = "found at start" if initial else "appeared in the plugins directory"
                err = slot.found.error
                slot.event("added", f"{why} (unusable: {err})" if err else why, error=err)
                if self._eager and err is None:
                    started.append(self._workers.spawn(self._eager_start, slot))
            for slot, item in changed:
                started.append(self._workers.spawn(slot.replace, item))
        if wait:
            for thread in started:
                thread.join()

    def _reindex(self) -> None:
        names: dict[str, Slot] = {}
        for slot in sorted(self._slots.values(), key=lambda s: s.found.directory.name):
            current = names.get(slot.name)
            if current is None or isinstance(current.found.error, DuplicatePluginError):
                names[slot.name] = slot
        self._names = names

    def _drop(self, slot: Slot) -> None:
        slot.remove(f"its directory {slot.found.directory} was removed", drain=True)
        slot.event("removed", "its directory is gone")

    def _eager_start(self, slot: Slot) -> None:
        with contextlib.suppress(Exception):  # reported as an event and in the entry
            slot.acquire()

    def _idle_loop(self, idle_timeout: float) -> None:
        # Each stop on a thread of its own: a plugin slow to stop (up to kill_grace) holds
        # up neither the others' idle stops nor close(), which joins these workers.
        interval = min(max(idle_timeout / 4, 0.05), 1.0)
        while not self._closed.wait(interval):
            with self._lock:
                slots = list(self._slots.values())
            for slot in slots:
                if self._closed.is_set():
                    return
                if slot.idle_due(idle_timeout):
                    self._workers.spawn(slot.idle_stop, idle_timeout)
