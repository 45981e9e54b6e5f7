"""The restart side of a :class:`~aog_plugins.process.Plugin`: what an exit means, and
the restarts it leads to.

:class:`Supervisor` owns the plugin's :class:`RestartPolicy` and the history it is judged
by, the spec a restart starts from (and a one-time override of its argv, for
:func:`aog_plugins.testing.fail_next_start`), and the thread that releases a dead
incarnation or restarts it after a backoff. The state machine stays the plugin's: the
supervisor changes states only through it, under its lock.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aog_plugins.errors import ConfigurationError, PluginStartError
from aog_plugins.process._events import PluginState, describe_error
from aog_plugins.process._guard import StartCancelled, StartGuard
from aog_plugins.process._incarnation import Incarnation
from aog_plugins.process._policy import RestartHistory, RestartPolicy
from aog_plugins.process._spawn import describe_exit
from aog_plugins.process._start import StartSpec, start_incarnation
from aog_plugins.transport import close_channel, start_thread

if TYPE_CHECKING:
    from aog_plugins.process._plugin import Plugin

__all__ = ["Supervisor"]

_LOST_GRACE = 0.5
"""Seconds a plugin whose multiplexed connection ended has to exit by itself (the end of
the connection is usually the end of the process) before it is stopped."""


class Supervisor:
    """Decides, when a plugin's process exits, between EXITED, FATAL and BACKOFF, and runs
    the restart. An attached plugin (no ``spec``) is never restarted."""

    def __init__(
        self, plugin: Plugin, spec: StartSpec | None, restart: RestartPolicy | None
    ) -> None:
        self._plugin = plugin
        self.spec = spec
        self.policy = restart if spec is not None and restart is not None else RestartPolicy.never()
        self._history = RestartHistory(self.policy)
        self._wakeup = threading.Event()
        self._worker: threading.Thread | None = None
        # One start runs this argv instead of spec.argv (aog_plugins.testing.fail_next_start).
        self._next_start_argv: tuple[str, ...] | None = None
        self._starting: StartGuard[Incarnation] | None = None  # the restart's start, if any

    def watch_connection(self, incarnation: Incarnation) -> None:
        """Multiplexed, the plugin has one connection: once it ends while the process runs
        (a protocol error, the plugin closing it), no call can reach the plugin again. It
        is then stopped, and its exit is judged by the restart policy like any other."""
        mux = incarnation.mux
        if mux is None:
            return

        def lost(reason: str) -> None:  # on the relay's event loop: never block there
            worker = threading.Thread(
                target=self._connection_lost,
                args=(incarnation, reason),
                name="aog-plugins-mux-lost",
                daemon=True,
            )
            start_thread(worker)

        mux.on_lost(lost)

    def _connection_lost(self, incarnation: Incarnation, reason: str) -> None:
        proc = incarnation.process
        if proc.wait(_LOST_GRACE):
            return  # the plugin exited (the connection ended with it): its exit says why
        plugin = self._plugin
        with plugin._cond:
            if not self._serving(incarnation):
                return
            incarnation.lost = reason
        plugin._lifecycle.warning(
            "plugin %d: its multiplexed connection ended (%s) while it runs, so no call can "
            "reach it: stopping it",
            proc.pid,
            reason,
        )
        proc.signal_group(signal.SIGKILL)

    def on_exit(self, incarnation: Incarnation) -> None:
        # On the process's lane (never the I/O thread): decide, hand slow work to a thread.
        plugin = self._plugin
        code = incarnation.process.exit_code
        uptime = time.monotonic() - incarnation.started_at
        reason = f"pid {incarnation.process.pid} {describe_exit(code)} after {uptime:.1f}s"
        if incarnation.lost is not None:
            reason += (
                f" (stopped by this host: its multiplexed connection ended: {incarnation.lost})"
            )
        with plugin._cond:
            if not self._serving(incarnation):
                return  # kill() got there first: it cleans up
            # Calls in flight fail now instead of hanging on a dead socket.
            close_channel(incarnation.channel)
            self._history.run_ended(uptime)
            delay = None
            if not self.policy.wants_restart(code):
                new, why = PluginState.EXITED, reason
            elif not self._history.budget_left(time.monotonic()):
                new, why = PluginState.FATAL, self._fatal_reason(f"{reason}; restart budget spent")
            else:
                delay = self._history.next_delay(time.monotonic())
                new, why = PluginState.BACKOFF, f"{reason}; restarting in {delay:.2f}s"
            plugin._transition(new, why, code)
            # Made and started under the lock that kill() takes to read it: kill() sees
            # either no worker (and this one is never made) or a started one it can join.
            worker = threading.Thread(
                target=incarnation.release if delay is None else self._restart,
                args=() if delay is None else (incarnation, delay),
                name="aog-plugins-restart",
                daemon=True,
            )
            self._worker = worker
            start_thread(worker)

    def _serving(self, incarnation: Incarnation) -> bool:
        """Whether ``incarnation`` is the running plugin's, not stopped (under its lock)."""
        plugin = self._plugin
        return (
            not plugin._killed
            and incarnation is plugin._current
            and plugin._state is PluginState.RUNNING
        )

    def cancel(self) -> None:
        """The plugin is being stopped or detached (under its lock): a restart waiting out
        its backoff gives up at once, and one starting is abandoned (its process killed, so
        a handshake it waits for fails now, not after the start timeout)."""
        self._wakeup.set()
        if self._starting is not None:
            self._starting.abandon()

    def join(self) -> None:
        """Wait for the thread :meth:`on_exit` started, if any."""
        with self._plugin._cond:
            worker = self._worker
        if worker is not None:
            # A restart in progress was abandoned by cancel(): it ends at once, and
            # nothing of it is left (it sees the kill and cleans up what it started).
            worker.join()

    def _fatal_reason(self, reason: str) -> str:
        policy = self.policy
        return f"{reason} ({policy.max_restarts} restarts within {policy.window:g}s)"

    def _restart(self, dead: Incarnation, delay: float) -> None:
        try:
            self._restart_loop(dead, delay)
        except Exception as exc:  # a defect of ours: end FATAL with the reason, not STARTING
            self._plugin._lifecycle.exception("the restart thread failed")
            self._plugin._transition(
                PluginState.FATAL,
                f"restart failed: {describe_error(exc)}",
                only_from=(PluginState.STARTING, PluginState.BACKOFF),
            )

    def _restart_loop(self, dead: Incarnation, delay: float) -> None:
        plugin = self._plugin
        dead.release()
        assert self.spec is not None
        while True:
            if self._wakeup.wait(delay):
                return  # killed while waiting
            if not plugin._transition(
                PluginState.STARTING, "restarting", only_from=(PluginState.BACKOFF,)
            ):
                return
            guard = StartGuard[Incarnation](lambda started: None)  # never run(): no discard
            with plugin._cond:
                if plugin._killed:
                    return
                self._starting = guard
            try:
                incarnation = start_incarnation(self._take_start_spec(), guard)
            except StartCancelled:
                return  # killed before the spawn; nothing was started
            except Exception as exc:
                # Any failure, typed or not (a hostile handshake, ENOSPC, ...): start_incarnation
                # has killed what it started; back off or give up, with the reason.
                exit_code = exc.exit_code if isinstance(exc, PluginStartError) else None
                why = describe_error(exc)
                with plugin._cond:
                    budget = self._history.budget_left(time.monotonic())
                    delay = self._history.next_delay(time.monotonic()) if budget else 0.0
                if not budget:
                    plugin._transition(
                        PluginState.FATAL,
                        self._fatal_reason(f"restart failed, budget spent: {why}"),
                        exit_code,
                        only_from=(PluginState.STARTING,),
                    )
                    return
                plugin._transition(
                    PluginState.BACKOFF,
                    f"restart failed: {why}; next try in {delay:.2f}s",
                    exit_code,
                    only_from=(PluginState.STARTING,),
                )
                continue
            finally:
                with plugin._cond:
                    self._starting = None
            if not plugin._adopt(incarnation, "restarted"):
                incarnation.stop(0.0, plugin.logger)  # killed while starting
                incarnation.release()
            return

    def _take_start_spec(self) -> StartSpec:
        assert self.spec is not None
        with self._plugin._cond:
            argv, self._next_start_argv = self._next_start_argv, None
        if argv is None:
            return self.spec
        # Not the plugin's file, so not its checksum either.
        return dataclasses.replace(self.spec, argv=argv, checksum=None)

    def run_next_start_as(self, argv: Sequence[str]) -> None:
        """For :func:`aog_plugins.testing.fail_next_start`: the next start (a restart)
        runs ``argv`` instead of the plugin's command, once; the one after is normal again.
        The plugin's own command stays untouched, so it always runs under its real path."""
        if self.spec is None:
            raise ConfigurationError(
                "this plugin was attached, not launched here: this host does not start it"
            )
        with self._plugin._cond:
            self._next_start_argv = tuple(argv)
