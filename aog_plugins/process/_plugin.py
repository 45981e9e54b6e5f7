"""``launch()`` and :class:`Plugin`: a supervised plugin, restarted by its RestartPolicy.

States (supervisor's): STARTING -> RUNNING; on an unexpected exit RUNNING -> BACKOFF ->
STARTING -> RUNNING again, or -> EXITED (no restart wanted) or -> FATAL (budget spent);
``kill()`` goes through STOPPING to EXITED. Every transition emits a :class:`PluginEvent`
(to ``on_event`` and as a log record) that carries the reason. Events are delivered in
order on the plugin's own event lane (a thread that exists while there are events), never
on the shared I/O thread nor under a lock.

This module owns the state machine (the lock, the state, the current incarnation, the
events) and what callers see of a plugin. What an exit means and the restarts are
:mod:`._supervisor`'s; stopping for good (``kill()``, ``detach()``) is :mod:`._stopper`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from aog_plugins.errors import (
    BrokerError,
    ConfigurationError,
    PluginCallError,
    PluginConnectError,
    PluginFatalError,
    ReattachError,
)
from aog_plugins.handshake import HandshakeLine
from aog_plugins.process._broker import Broker
from aog_plugins.process._connect import health_check
from aog_plugins.process._events import PluginEvent, PluginState
from aog_plugins.process._incarnation import Incarnation
from aog_plugins.process._lane import Lane
from aog_plugins.process._policy import RestartPolicy
from aog_plugins.process._reattach import ReattachConfig
from aog_plugins.process._spawn import describe_exit
from aog_plugins.process._start import StartSpec
from aog_plugins.process._stopper import Stopper
from aog_plugins.process._supervisor import Supervisor
from aog_plugins.transport import NO_LIMIT_BEYOND, DialTarget, seconds

if TYPE_CHECKING:
    from aog_plugins.client import ExitInfo, GRPCProviderClient

__all__ = ["Plugin", "PluginEvent", "PluginState"]

_EXITED_KEPT = 8
"""Exited processes whose calls can still be told apart from the current process's."""

_EVENTS_AT_EXIT = 1.0
"""Seconds the host's own stop (at exit, on a signal) waits for ``on_event`` to take the
plugin's last events (STOPPING, EXITED) once the plugin is stopped."""

_FOR_GOOD = (PluginState.FATAL, PluginState.EXITED, PluginState.STOPPING)
"""States a plugin does not come back from: calls and pings fail at once."""


class Plugin:
    """A connected, supervised plugin. Use as a context manager, or call :meth:`kill`.

    ``handshake``, ``channel`` and ``pid`` are those of the current process; after a
    restart they change. ``client`` follows restarts by itself.
    """

    def __init__(
        self,
        incarnation: Incarnation,
        *,
        logger: logging.Logger,
        kill_grace: float,
        spec: StartSpec | None = None,
        restart: RestartPolicy | None = None,
        on_event: Callable[[PluginEvent], None] | None = None,
    ) -> None:
        self.logger = logger
        # Transitions get their own child logger so they never mix with the plugin's lines.
        self._lifecycle = logger.getChild("lifecycle")
        self._on_event = on_event
        self._kill_grace = kill_grace
        self._cond = threading.Condition()
        self._state = PluginState.STARTING
        self._reason = ""
        self._current = incarnation
        self._by_channel: dict[int, Incarnation] = {}
        self._killed = False
        self._events = Lane(f"aog-plugins-events-{logger.name.rsplit('.', 1)[-1]}")
        self._client: GRPCProviderClient | None = None
        self._client_lock = threading.Lock()
        # Before the first adopt: it hands the incarnation's exit to the supervisor.
        self._supervisor = Supervisor(self, spec, restart)
        self._stopper = Stopper(self)
        self._adopt(incarnation, "started")

    # ---- facts ------------------------------------------------------------------------
    @property
    def handshake(self) -> HandshakeLine:
        """The parsed handshake line of the current process."""
        return self._current.line

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel to the current process."""
        return self._current.channel

    @property
    def pid(self) -> int:
        """The current process id."""
        return self._current.process.pid

    @property
    def app_version(self) -> int:
        """The negotiated app protocol version."""
        return self.handshake.app_version

    @property
    def state(self) -> PluginState:
        """The current :class:`PluginState`."""
        return self._state

    @property
    def restart_policy(self) -> RestartPolicy:
        return self._supervisor.policy

    @property
    def exited(self) -> bool:
        """True once the current process has exited."""
        return self._current.process.exited

    @property
    def exit_code(self) -> int | None:
        """Exit status of the current process (negative: its signal); None while running."""
        return self._current.process.exit_code

    def stderr_tail(self) -> str:
        """The current process's last stderr lines."""
        return self._current.process.stderr_tail()

    @property
    def client(self) -> GRPCProviderClient:
        """A :class:`~aog_plugins.client.GRPCProviderClient` that follows restarts."""
        with self._client_lock:
            if self._client is None:
                from aog_plugins.client import GRPCProviderClient

                self._client = GRPCProviderClient(self)
            return self._client

    @property
    def broker(self) -> Broker:
        """The GRPCBroker of the current process: extra connections by id (see
        :class:`~aog_plugins.process.Broker`). A restarted plugin has a new broker."""
        broker = self._current.broker
        if broker is None:
            raise BrokerError(
                "this plugin has no broker stream: attach(config, broker=True) opens one"
            )
        return broker

    def reattach_config(self) -> ReattachConfig:
        """What another host process needs to :func:`attach` to this plugin. With
        AutoMTLS it holds this host's private key: persist it with
        :meth:`ReattachConfig.write` (mode 0600), never in a world-readable place. A
        multiplexed plugin cannot be reattached (its one connection is ours), as in
        go-plugin: :class:`ReattachError`."""
        if self.handshake.multiplex:
            raise ReattachError(
                "a plugin launched with multiplex=True serves one connection, this host's: "
                "launch it without multiplexing to reattach to it from another host"
            )
        tls = self._current.tls
        return ReattachConfig(
            protocol=self.handshake.protocol,
            protocol_version=self.handshake.app_version,
            network=self.handshake.network,
            address=self.handshake.address,
            pid=self.pid,
            client_cert_pem=None if tls is None else tls.host.cert_pem,
            client_key_pem=None if tls is None else tls.host.key_pem,
            server_cert_der=None if tls is None else tls.plugin_cert_der,
        )

    def _stopped_error(self) -> PluginFatalError:
        """What a call gets from a plugin stopped for good (:data:`_FOR_GOOD`)."""
        state = self._state
        message = f"the plugin is {state.value}: {self._reason}"
        if self._stopper.kill_reason is None and "last stderr lines" not in message:
            # It ended on its own (between calls, so no call saw the crash): say how.
            tail = self._current.process.stderr_tail().strip()
            if tail:
                message += f"; last stderr lines:\n{tail}"
        return PluginFatalError(message, code=state.value)

    def ping(self, timeout: float = 5.0) -> None:
        """Health-check the plugin now, without waiting for a restart: raises
        :class:`PluginFatalError` when it is FATAL or stopped, :class:`PluginConnectError`
        when it is not running (starting, in backoff) or the check fails."""
        # A positive number of seconds; infinity (or more than ten years) is no limit.
        limit = min(seconds("timeout", timeout, finite=False), NO_LIMIT_BEYOND)
        with self._cond:
            state, reason = self._state, self._reason
            if state in _FOR_GOOD:
                raise self._stopped_error()
            if state is not PluginState.RUNNING:
                raise PluginConnectError(
                    f"the plugin is {state.value} ({reason}): no process to health-check; "
                    "calls wait for the restart"
                )
            channel = self._current.channel
        try:
            health_check(channel, limit)
        except ValueError as exc:  # grpcio: "Channel closed!", a restart or kill meanwhile
            raise PluginConnectError(
                f"the plugin's connection closed during the health check ({exc}): it is "
                f"{self._state.value} now"
            ) from exc

    # ---- ConnectionSource (for the client) --------------------------------------------
    def current_channel(self, timeout: float | None = None) -> grpc.Channel:
        """The channel to the running plugin, waiting up to ``timeout`` s for a restart.

        Raises :class:`PluginFatalError` at once when FATAL or stopped for good.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                state = self._state
                if state is PluginState.RUNNING and not self._current.process.exited:
                    return self._current.channel
                if state in _FOR_GOOD:
                    raise self._stopped_error()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PluginCallError(
                        f"the plugin is {state.value} ({self._reason}) and did not come back "
                        f"within the call's timeout",
                        code="DEADLINE_EXCEEDED",
                        process_exited=True,
                    )
                self._cond.wait(remaining if remaining is not None else 1.0)

    def exit_info(self, channel: grpc.Channel, wait: float = 0.0) -> ExitInfo | None:
        """None while the process behind ``channel`` runs (waiting up to ``wait`` s for its
        exit to be seen); else how it ended, with its last stderr lines."""
        from aog_plugins.client import ExitInfo

        incarnation = self._by_channel.get(id(channel), self._current)
        proc = incarnation.process
        if not proc.exited and not (wait > 0 and proc.wait(wait)):
            return None
        tail = proc.stderr_tail().strip()
        reason = f"pid {proc.pid} {describe_exit(proc.exit_code)}"
        if self._stopper.kill_reason is not None:  # our doing, not the plugin's: say so
            reason += f", stopped by this host: {self._stopper.kill_reason}"
        if tail:
            reason += f"; last stderr lines:\n{tail}"
        return ExitInfo(reason, proc.exit_code, tail, self._stopper.kill_reason)

    def dial_target(self, channel: grpc.Channel) -> tuple[DialTarget, int]:
        """Where the process behind ``channel`` (from :meth:`current_channel`) listens, with
        its pinned TLS, and its pid: for a second channel to it (``aog_plugins.aio``)."""
        inc = self._by_channel.get(id(channel), self._current)
        dial = inc.dial  # None when attached: the relay's socket, or the address and TLS
        if dial is None and inc.relay is not None:
            dial = DialTarget(f"unix:{inc.relay.address}")
        return dial or DialTarget(inc.line.grpc_target, inc.tls), inc.process.pid

    # ---- supervision ------------------------------------------------------------------
    def _transition(
        self,
        new: PluginState,
        reason: str,
        exit_code: int | None = None,
        *,
        only_from: Collection[PluginState] | None = None,
        incarnation: Incarnation | None = None,
    ) -> bool:
        """Change state atomically and queue the event; False if the change no longer
        applies (killed meanwhile, or not in ``only_from``, or ``incarnation`` replaced)."""
        with self._cond:
            old = self._state
            if only_from is not None and (self._killed or old not in only_from):
                return False
            if incarnation is not None and incarnation is not self._current:
                return False
            self._state = new
            self._reason = reason
            self._cond.notify_all()
            # Queued under the lock, so events reach the lane in the order of the changes.
            event = PluginEvent(self, old, new, reason, self._current.process.pid, exit_code)
            self._events.submit(lambda: self._emit(event))
        return True

    def _emit(self, event: PluginEvent) -> None:
        # On the event lane: user code (logging handlers, on_event) runs here only.
        new = event.new
        level = logging.WARNING if new in (PluginState.FATAL, PluginState.BACKOFF) else logging.INFO
        self._lifecycle.log(
            level,
            "plugin %s -> %s: %s",
            event.old.value,
            new.value,
            event.reason,
            extra={"plugin_state": new.value, "plugin_pid": event.pid},
        )
        if self._on_event is not None and event.old is not new:
            try:
                self._on_event(event)
            except Exception:
                self._lifecycle.exception("plugin event callback failed")

    def _adopt(self, incarnation: Incarnation, reason: str) -> bool:
        with self._cond:
            if self._killed:
                return False
            self._current = incarnation
            # Exited processes are kept for a few restarts: a call on one of them may end
            # (a stream read later) after this restart, and must still be told that its
            # process is gone, not matched with the new one. Kept, their channels keep
            # their ids, so no new channel can be mistaken for one of them.
            exited = [k for k, inc in self._by_channel.items() if inc.process.exited]
            for key in exited[:-_EXITED_KEPT]:
                del self._by_channel[key]
            self._by_channel[id(incarnation.channel)] = incarnation
        reason = f"{reason} (pid {incarnation.process.pid})"
        if not self._transition(PluginState.RUNNING, reason, only_from=(PluginState.STARTING,)):
            return False
        incarnation.process.add_exit_callback(lambda proc: self._supervisor.on_exit(incarnation))
        self._supervisor.watch_connection(incarnation)
        return True

    def _run_next_start_as(self, argv: Sequence[str]) -> None:
        """For :func:`aog_plugins.testing.fail_next_start`: see
        :meth:`Supervisor.run_next_start_as`."""
        self._supervisor.run_next_start_as(argv)

    # ---- shutdown ---------------------------------------------------------------------
    def kill(self, grace: float | None = None) -> None:
        """Stop the plugin for good: Shutdown RPC, wait ``grace`` s, SIGTERM, then SIGKILL
        to its process group. Cancels a pending restart. Idempotent, any thread; returns
        once the process is reaped, its socket directory removed and every event up to
        EXITED delivered (except when called from ``on_event``, which cannot wait for
        itself). A second call while a first is running waits for it, sending SIGKILL
        after its own ``grace``. The work runs on a thread of its own, so an exception in
        the caller (KeyboardInterrupt) never leaves a stop half done.
        """
        grace = self._kill_grace if grace is None else seconds("grace", grace, zero=True)
        self._stopper.kill_for("kill() called", grace)

    def _kill_for(self, reason: str, grace: float) -> None:
        """:meth:`kill` for the host's own stop (``kill_all()``: at exit, on a signal),
        saying why. It waits for the last events only :data:`_EVENTS_AT_EXIT` s: an
        ``on_event`` that blocks must not keep the host from ending."""
        self._stopper.kill_for(reason, grace, events_wait=_EVENTS_AT_EXIT)

    def detach(self) -> None:
        """Disconnect from a plugin that :func:`attach` connected to, leaving it running
        (its launching host still owns it): closes the channel, streams and relay, and
        this host no longer stops it at exit. A plugin this host launched is stopped with
        :meth:`kill` instead (:class:`ConfigurationError`)."""
        if self._supervisor.spec is not None:
            raise ConfigurationError(
                "detach() is for plugins connected with attach(); a plugin this host "
                "launched is stopped with kill() (hand it over with reattach_config())"
            )
        self._stopper.detach()

    def __enter__(self) -> Plugin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def __repr__(self) -> str:
        return (
            f"<Plugin pid={self.pid} {self.handshake.network}:{self.handshake.address} "
            f"state={self._state.value}>"
        )
