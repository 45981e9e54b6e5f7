"""One plugin directory at run time: start once on first use, count calls, swap in a new
build with zero downtime, stop when idle, removed or closed.

Locking: ``_cond`` guards the fields and is never held while a process starts or stops;
``_ops`` serializes the long operations (replace, stop, remove) of one plugin, so two
of them never interleave; concurrent first uses share one start through ``_starting``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

import grpc

from aog_plugins.errors import (
    AogPluginsError,
    PluginFatalError,
    PluginRemovedError,
)
from aog_plugins.manager._discovery import Found
from aog_plugins.manager._entry import EventKind, ManagerEvent, PluginEntry, alive, entry_of
from aog_plugins.manager._launching import LaunchSettings, launch_found
from aog_plugins.manager._routing import TrackedChannel
from aog_plugins.process import (
    Plugin,
    PluginEvent,
    PluginState,
    StartCancelled,
    cancellable_start,
)

__all__ = ["Slot"]


class _Abandonable(Protocol):
    def abandon(self) -> None: ...


class Slot:
    """The run-time state of one plugin directory (see the module docstring)."""

    def __init__(
        self, found: Found, settings: LaunchSettings, post: Callable[[ManagerEvent], None]
    ) -> None:
        self.found = found
        self._settings = settings
        self._post = post
        self._cond = threading.Condition()
        self._ops = threading.Lock()
        self._plugin: Plugin | None = None
        self._starting: Future[Plugin] | None = None
        self._start_guards: set[_Abandonable] = set()  # the starts under way (remove() ends them)
        self._error: AogPluginsError | None = None
        self._gone: str | None = None
        self._hurry = False  # closing: stop draining
        self._stopping = 0  # stop() calls waiting for _ops: a drain under way ends now
        self._target: Found | None = None  # the newest files handed to replace()
        self._calls: dict[int, int] = {}
        self._ours: set[int] = set()  # launched by us and not being stopped by us
        self._ran: set[int] = set()  # whose first RUNNING event has been seen
        self._tracked: dict[int, TrackedChannel] = {}
        self._last_used = time.monotonic()

    @property
    def name(self) -> str:
        return self.found.name

    @property
    def target(self) -> Found:
        """The files this slot is (or is about to be) running: what a rescan compares."""
        with self._cond:
            return self._target or self.found

    def event(
        self,
        kind: EventKind,
        reason: str,
        *,
        pid: int | None = None,
        old_pid: int | None = None,
        error: AogPluginsError | None = None,
    ) -> None:
        found = self.found
        self._post(ManagerEvent(kind, found.name, found.directory, reason, pid, old_pid, error))

    # ---- starting -----------------------------------------------------------------------
    def acquire(self) -> Plugin:
        """The running plugin, started now if needed (once, whoever else is asking)."""
        dead: Plugin | None = None
        with self._cond:
            if self._gone is not None:
                raise self._removed_error()
            plugin = self._plugin
            if plugin is not None and alive(plugin):
                self._last_used = time.monotonic()
                return plugin
            future = self._starting
            leader = future is None
            if leader:
                if self.found.error is not None:
                    raise self.found.error
                future = self._starting = Future()
                found = self.found
                dead, self._plugin = plugin, None
        assert future is not None
        if leader:
            if dead is not None:
                self._discard(dead)
            self._lead_start(future, found)
        return future.result()  # a failed shared start raises its error in every caller

    def renamed_by(self, found: Found) -> bool:
        """Whether ``found`` (this slot's directory read again) holds another plugin now:
        a name read from its manifest that differs (a nameless broken entry is named after
        the directory and says nothing; the running plugin keeps serving)."""
        return found.name != self.name and not found.nameless

    def serving(self) -> bool:
        """Whether a live process serves this plugin now: one that keeps serving while
        the directory holds a broken newer manifest or build (see :meth:`replace`)."""
        with self._cond:
            plugin = self._plugin
            return plugin is not None and alive(plugin)

    def _lead_start(self, future: Future[Plugin], found: Found) -> None:
        try:
            plugin = self._guarded_launch(found)
        except BaseException as exc:
            with self._cond:
                self._starting = None
                gone = self._gone is not None
                if isinstance(exc, AogPluginsError) and not gone:
                    self._error = exc
            if gone and isinstance(exc, (AogPluginsError, StartCancelled)):
                future.set_exception(self._removed_error())  # given up by remove()
                return
            if isinstance(exc, AogPluginsError):
                self.event("failed", f"start failed: {exc}", error=exc)
            future.set_exception(exc)
            return
        with self._cond:
            self._starting = None
            gone = self._gone is not None
            if not gone:
                self._plugin = plugin
                self._error = None
                self._last_used = time.monotonic()
        if gone:
            self._discard(plugin)
            future.set_exception(self._removed_error())
            return
        self.event("started", "started on first use", pid=plugin.pid)
        future.set_result(plugin)

    def _guarded_launch(self, found: Found) -> Plugin:
        """:meth:`launch`, given up at once by :meth:`remove` (close, the directory's
        removal): raises StartCancelled or the start's error then."""
        with cancellable_start() as guard:
            with self._cond:
                self._start_guards.add(guard)
                if self._gone is not None:
                    guard.abandon()
            try:
                return self.launch(found)
            finally:
                with self._cond:
                    self._start_guards.discard(guard)

    def launch(self, found: Found) -> Plugin:
        """Start ``found``'s executable (checksum first) as a supervised plugin."""
        plugin = launch_found(found, self._settings, self._on_plugin_event)
        with self._cond:
            self._ours.add(id(plugin))
        return plugin

    def _on_plugin_event(self, event: PluginEvent) -> None:
        # Called on the process layer's threads (the I/O loop among them): only post.
        new = event.new
        key = id(event.plugin)
        with self._cond:
            if new is PluginState.RUNNING and key not in self._ran:
                self._ran.add(key)
                return  # its first start: reported by us (delivery is asynchronous)
            if key not in self._ours:
                return  # our own stop: reported by us
        if new is PluginState.RUNNING:
            self.event("started", event.reason, pid=event.pid)
        elif new in (PluginState.BACKOFF, PluginState.FATAL):
            self.event("failed", event.reason, pid=event.pid)
        elif new is PluginState.EXITED:
            self.event("stopped", event.reason, pid=event.pid)

    # ---- calls (the CallRouter of TrackedChannel) ---------------------------------------
    def channel(self, timeout: float | None) -> TrackedChannel:
        """The channel a client should use now: the running plugin's, counted per call."""
        plugin, raw = self._current_channel(timeout)
        with self._cond:
            tracked = self._tracked.get(id(raw))
            if tracked is None or tracked.raw is not raw:
                current = self._plugin
                self._tracked = {k: t for k, t in self._tracked.items() if t.plugin is current}
                tracked = self._tracked[id(raw)] = TrackedChannel(self, plugin, raw)
            return tracked

    def begin_call(self, channel: TrackedChannel) -> tuple[Plugin, grpc.Channel]:
        if self.enter(channel.plugin):
            return channel.plugin, channel.raw
        # That process was swapped out or stopped after the client picked it: re-route.
        while True:
            plugin, raw = self._current_channel(self._settings.start_timeout)
            if self.enter(plugin):
                return plugin, raw

    def enter(self, plugin: Plugin) -> bool:
        """Count a call about to go to ``plugin`` if it still serves this slot (then
        :meth:`end_call` it when done); False when it was swapped out or stopped meanwhile.
        Never blocks (the aio client calls it on its event loop)."""
        with self._cond:
            if plugin is not self._plugin or self._gone is not None:
                return False
            self._calls[id(plugin)] = self._calls.get(id(plugin), 0) + 1
            self._last_used = time.monotonic()
            return True

    def _current_channel(self, timeout: float | None) -> tuple[Plugin, grpc.Channel]:
        """The running plugin and its channel. A plugin swapped out or stopped between the
        two steps (its channel refuses with PluginFatalError) is replaced by the current
        one instead of failing the call."""
        while True:
            plugin = self.acquire()
            try:
                return plugin, plugin.current_channel(timeout)
            except PluginFatalError:
                with self._cond:
                    if self._plugin is plugin or self._gone is not None:
                        raise

    def end_call(self, plugin: Plugin) -> None:
        with self._cond:
            left = self._calls.get(id(plugin), 0) - 1
            if left > 0:
                self._calls[id(plugin)] = left
            else:
                self._calls.pop(id(plugin), None)
            self._last_used = time.monotonic()
            self._cond.notify_all()

    # ---- replacing and stopping ---------------------------------------------------------
    def replace(self, found: Found) -> AogPluginsError | None:
        """The files changed: adopt ``found``; a running plugin is swapped with zero
        downtime, or keeps serving when the new build cannot start (returned)."""
        with self._cond:
            self._target = found  # what a rescan compares with, until the swap is over
        with self._ops:
            self._wait_start()
            with self._cond:
                if self._target is not found:
                    return None  # newer files arrived meanwhile: their replace() handles them
            try:
                return self._swap(found)
            finally:
                with self._cond:
                    if self._target is found:
                        self._target = None

    def _swap(self, found: Found) -> AogPluginsError | None:
        """Swap in ``found`` (the body of :meth:`replace`, under ``_ops``)."""
        with self._cond:
            if self._gone is not None:
                return None
            old = self._plugin
            running = old is not None and alive(old)
            if running and found.nameless:
                # The running plugin keeps its name (the broken manifest gave none): the
                # entry, its events and name lookups stay those of the plugin serving.
                found = dataclasses.replace(found, name=self.found.name)
            if not running or found.error is not None:
                self.found = found
                self._error = None if not running else found.error
        if not running:
            self.event("replaced", "its files changed (not running)")
            return None
        if found.error is not None:
            self.event(
                "failed",
                f"replacement unusable, the old process keeps serving: {found.error}",
                error=found.error,
            )
            return found.error
        try:
            new = self._guarded_launch(found)
        except (AogPluginsError, StartCancelled) as exc:
            with self._cond:
                gone = self._gone is not None
                if not gone and isinstance(exc, AogPluginsError):
                    self.found = found
                    self._error = exc
            if gone:
                return None  # given up by remove(): the old process is stopped there
            if not isinstance(exc, AogPluginsError):
                raise
            self.event(
                "failed", f"replacement failed, the old process keeps serving: {exc}", error=exc
            )
            return exc
        with self._cond:
            gone = self._gone is not None
            if not gone:
                old = self._plugin
                self._plugin = new
                self.found = found
                self._error = None
                if old is not None:
                    self._ours.discard(id(old))
        if gone:
            self._discard(new)
            return None
        self.event("started", "replacement started", pid=new.pid)
        self.event(
            "replaced",
            "new calls go to the new process",
            pid=new.pid,
            old_pid=old.pid if old is not None else None,
        )
        if old is not None:
            self._retire(old, "replaced by a new build", drain=True)
        return None

    def stop(self, reason: str, *, drain: bool = False) -> bool:
        """Stop the running process (the next use starts it again); False if none ran.
        Without ``drain``, a replacement draining its old process meanwhile stops
        draining: "stop now" does not wait up to drain_timeout for that old process."""
        hurry = 0 if drain else 1
        with self._cond:
            self._stopping += hurry
            self._cond.notify_all()
        try:
            self._ops.acquire()
        finally:
            with self._cond:
                self._stopping -= hurry
        try:
            self._wait_start()
            with self._cond:
                plugin, self._plugin = self._plugin, None
                if plugin is not None:
                    self._ours.discard(id(plugin))
            if plugin is None:
                return False
            self._retire(plugin, reason, drain=drain)
            return True
        finally:
            self._ops.release()

    def remove(self, reason: str, *, drain: bool) -> None:
        """Stop for good: no new start (one under way is given up at once), calls fail
        fast with PluginRemovedError."""
        with self._cond:
            if self._gone is None:
                self._gone = reason
            if not drain:
                self._hurry = True  # a drain in progress (a replace) ends now
            for guard in self._start_guards:
                guard.abandon()
            self._cond.notify_all()
        self.stop(reason, drain=drain)

    def idle_due(self, idle_timeout: float) -> bool:
        """Whether :meth:`idle_stop` would stop a process now (never blocks)."""
        if self._ops.locked():
            return False  # busy replacing or stopping
        with self._cond:
            return self._idle(idle_timeout)

    def _idle(self, idle_timeout: float) -> bool:
        plugin = self._plugin
        if plugin is None or self._starting is not None or self._calls.get(id(plugin)):
            return False
        return time.monotonic() - self._last_used >= idle_timeout

    def idle_stop(self, idle_timeout: float) -> None:
        if not self._ops.acquire(blocking=False):
            return  # busy replacing or stopping
        try:
            with self._cond:
                plugin = self._plugin
                if plugin is None or not self._idle(idle_timeout):
                    return
                self._plugin = None
                self._ours.discard(id(plugin))
            self._retire(
                plugin, f"idle for {idle_timeout:g}s (the next use starts it again)", drain=False
            )
        finally:
            self._ops.release()

    def _wait_start(self) -> None:
        with self._cond:
            future = self._starting
        if future is not None:
            with contextlib.suppress(BaseException):  # the starter reported it
                future.result()

    def _retire(self, plugin: Plugin, reason: str, *, drain: bool) -> None:
        """Let calls on ``plugin`` finish (bounded), then stop it and report it."""
        if drain:
            deadline = time.monotonic() + self._settings.drain_timeout
            with self._cond:
                while self._calls.get(id(plugin)) and not (self._hurry or self._stopping):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                pending = self._calls.get(id(plugin), 0)
            if pending:
                cut = f"after {self._settings.drain_timeout:g}s"
                if time.monotonic() < deadline:
                    cut = "when the drain was cut short (stop or close)"
                reason += f" ({pending} calls still in flight {cut})"
        pid = plugin.pid
        was_alive = alive(plugin)
        self._discard(plugin)
        if was_alive:
            self.event("stopped", reason, pid=pid)

    def _discard(self, plugin: Plugin) -> None:
        with self._cond:
            self._ours.discard(id(plugin))
        plugin.kill()  # returns once its events up to EXITED are delivered
        with self._cond:
            self._ran.discard(id(plugin))
            self._calls.pop(id(plugin), None)
            self._tracked = {k: t for k, t in self._tracked.items() if t.plugin is not plugin}

    def _removed_error(self) -> PluginRemovedError:
        return PluginRemovedError(
            f"plugin {self.found.name!r} ({self.found.directory}) is gone: {self._gone}",
            code="REMOVED",
        )

    # ---- reporting ----------------------------------------------------------------------
    def snapshot(self) -> PluginEntry:
        with self._cond:
            found, plugin, error = self.found, self._plugin, self._error
            starting = self._starting is not None
        return entry_of(found, plugin, error, starting=starting)
