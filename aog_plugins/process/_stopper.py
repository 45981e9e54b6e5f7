"""Ending a :class:`~aog_plugins.process.Plugin` for good, once.

:class:`Stopper` owns how a plugin ends: :meth:`Stopper.kill_for` stops it on a thread of
its own (so an interrupted caller never leaves a stop half done, and a second caller waits
for the first), :meth:`Stopper.detach` lets go of an attached one and leaves it running.
The kill ladder itself is :meth:`Incarnation.stop`; the state machine stays the plugin's:
the stopper changes states only through it, under its lock.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING

from aog_plugins.process import _registry
from aog_plugins.process._events import PluginState, wait_event
from aog_plugins.process._spawn import describe_exit
from aog_plugins.transport import start_thread

if TYPE_CHECKING:
    from aog_plugins.process._plugin import Plugin

__all__ = ["Stopper"]


class Stopper:
    """The one thread that stops a plugin (or the caller that detached it), an event set
    once that is done, and why this host stopped it."""

    def __init__(self, plugin: Plugin) -> None:
        self._plugin = plugin
        self._stopper: threading.Thread | None = None
        self._stopped = threading.Event()
        self.kill_reason: str | None = None  # why this host stopped it for good

    def kill_for(self, reason: str, grace: float, *, events_wait: float | None = None) -> None:
        """What :meth:`Plugin.kill` does, with the reason the exit info reports; once the
        plugin is stopped, waits up to ``events_wait`` s (None: no limit) for its events
        to be delivered."""
        plugin = self._plugin
        with plugin._cond:
            stopper = self._stopper
            first = stopper is None
            if stopper is None:
                plugin._killed = True
                self.kill_reason = reason
                plugin._supervisor.cancel()
                stopper = self._stopper = threading.Thread(
                    target=self._stop_for_good,
                    args=(reason, grace),
                    name="aog-plugins-kill",
                    daemon=True,
                )
                start_thread(stopper)
        if threading.current_thread() is not stopper:
            if not stopper.is_alive() and not self._stopped.is_set():
                # The first caller was interrupted (KeyboardInterrupt) between making the
                # thread and starting it: start it now (a racing starter's error is moot).
                with contextlib.suppress(RuntimeError):
                    start_thread(stopper)
            if not first and not wait_event(self._stopped, grace):
                plugin._current.process.signal_group(signal.SIGKILL)  # hurry the first kill()
            wait_event(self._stopped, None)
        plugin._events.drain(events_wait)
        _registry.unregister(plugin)

    def _stop_for_good(self, reason: str, grace: float) -> None:
        plugin = self._plugin
        try:
            plugin._transition(PluginState.STOPPING, reason)
            plugin._supervisor.join()
            incarnation = plugin._current
            try:
                incarnation.stop(grace, plugin.logger)
            finally:
                if plugin._client is not None:
                    plugin._client._closed_error = plugin._stopped_error  # as for a new client
                    plugin._client.close()
                incarnation.release()
            plugin._transition(
                PluginState.EXITED, f"stopped ({describe_exit(incarnation.process.exit_code)})"
            )
        except Exception as exc:
            plugin._lifecycle.exception("stopping the plugin failed")
            plugin._current.process.signal_group(signal.SIGKILL)
            plugin._transition(PluginState.EXITED, f"stopped after an error: {exc!r}")
        finally:
            self._stopped.set()

    def detach(self) -> None:
        """What :meth:`Plugin.detach` does once it has checked the plugin was attached."""
        plugin = self._plugin
        with plugin._cond:
            if plugin._killed or self._stopper is not None:
                return
            plugin._killed = True
            plugin._supervisor.cancel()
            self._stopper = threading.current_thread()  # a later kill() finds it done
        try:
            if plugin._client is not None:
                plugin._client.close()
            plugin._current.release()
            plugin._transition(PluginState.EXITED, "detached: the plugin keeps running")
        finally:
            self._stopped.set()
        plugin._events.drain()
        _registry.unregister(plugin)
