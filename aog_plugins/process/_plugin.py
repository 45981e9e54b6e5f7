"""``launch()`` and :class:`Plugin`: a supervised plugin, restarted by its RestartPolicy.

States (supervisor's): STARTING -> RUNNING; on an unexpected exit RUNNING -> BACKOFF ->
STARTING -> RUNNING again, or -> EXITED (no restart wanted) or -> FATAL (budget spent);
``kill()`` goes through STOPPING to EXITED. Every transition emits a :class:`PluginEvent`
(to ``on_event`` and as a log record) that carries the reason.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from aog_plugins.errors import (
    AogPluginsError,
    ConfigurationError,
    PluginCallError,
    PluginFatalError,
    PluginStartError,
)
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig, HandshakeLine
from aog_plugins.process import _registry
from aog_plugins.process._connect import health_check
from aog_plugins.process._policy import RestartHistory, RestartPolicy
from aog_plugins.process._reattach import ReattachConfig
from aog_plugins.process._spawn import describe_exit
from aog_plugins.process._start import (
    Incarnation,
    Output,
    StartSpec,
    command_argv,
    offered_for,
    start_incarnation,
    verify_checksum,
)

if TYPE_CHECKING:
    from aog_plugins.client import ExitInfo, GRPCProviderClient

__all__ = ["Plugin", "PluginEvent", "PluginState", "launch"]


class PluginState(enum.Enum):
    """Where a plugin is in its life (supervisor's states)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


@dataclass(frozen=True)
class PluginEvent:
    """One state transition of a plugin, with why it happened."""

    plugin: Plugin
    old: PluginState
    new: PluginState
    reason: str
    pid: int | None
    exit_code: int | None = None


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
        self._spec = spec
        self._policy = (
            restart if spec is not None and restart is not None else RestartPolicy.never()
        )
        self._history = RestartHistory(self._policy)
        self._on_event = on_event
        self._kill_grace = kill_grace
        self._cond = threading.Condition()
        self._state = PluginState.STARTING
        self._reason = ""
        self._current = incarnation
        self._by_channel: dict[int, Incarnation] = {}
        self._killed = False
        self._kill_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._worker: threading.Thread | None = None
        self._client: GRPCProviderClient | None = None
        self._client_lock = threading.Lock()
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
        return self._policy

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

    def reattach_config(self) -> ReattachConfig:
        """What another host needs to :func:`attach` to this plugin (not with AutoMTLS)."""
        return ReattachConfig(
            protocol=self.handshake.protocol,
            protocol_version=self.handshake.app_version,
            network=self.handshake.network,
            address=self.handshake.address,
            pid=self.pid,
        )

    def ping(self, timeout: float = 5.0) -> None:
        """Health-check the plugin now; raises :class:`PluginConnectError` if it fails."""
        health_check(self.channel, timeout)

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
                if state in (PluginState.FATAL, PluginState.EXITED, PluginState.STOPPING):
                    raise PluginFatalError(
                        f"the plugin is {state.value}: {self._reason}", code=state.value
                    )
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
        if tail:
            reason += f"; last stderr lines:\n{tail}"
        return ExitInfo(reason, proc.exit_code, tail)

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
        """Change state atomically, then emit the event; False if the change no longer
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
        level = logging.WARNING if new in (PluginState.FATAL, PluginState.BACKOFF) else logging.INFO
        self._lifecycle.log(
            level,
            "plugin %s -> %s: %s",
            old.value,
            new.value,
            reason,
            extra={"plugin_state": new.value, "plugin_pid": self.pid},
        )
        if self._on_event is not None and old is not new:
            try:
                self._on_event(PluginEvent(self, old, new, reason, self.pid, exit_code))
            except Exception:
                self._lifecycle.exception("plugin event callback failed")
        return True

    def _adopt(self, incarnation: Incarnation, reason: str) -> bool:
        with self._cond:
            if self._killed:
                return False
            self._current = incarnation
            self._by_channel = {
                key: inc
                for key, inc in self._by_channel.items()
                if not inc.process.exited or inc is incarnation
            }
            self._by_channel[id(incarnation.channel)] = incarnation
        reason = f"{reason} (pid {incarnation.process.pid})"
        if not self._transition(PluginState.RUNNING, reason, only_from=(PluginState.STARTING,)):
            return False
        incarnation.process.add_exit_callback(lambda proc: self._on_exit(incarnation))
        return True

    def _on_exit(self, incarnation: Incarnation) -> None:
        # On the I/O loop thread: decide quickly, do slow work on another thread.
        code = incarnation.process.exit_code
        uptime = time.monotonic() - incarnation.started_at
        reason = f"pid {incarnation.process.pid} {describe_exit(code)} after {uptime:.1f}s"
        with self._cond:
            if incarnation is not self._current or self._state is not PluginState.RUNNING:
                return
            # Calls in flight fail now instead of hanging on a dead socket.
            incarnation.channel.close()
            self._history.run_ended(uptime)
            delay = None
            if not self._policy.wants_restart(code):
                new, why = PluginState.EXITED, reason
            elif not self._history.budget_left(time.monotonic()):
                new, why = PluginState.FATAL, self._fatal_reason(f"{reason}; restart budget spent")
            else:
                delay = self._history.next_delay(time.monotonic())
                new, why = PluginState.BACKOFF, f"{reason}; restarting in {delay:.2f}s"
        if not self._transition(
            new, why, code, only_from=(PluginState.RUNNING,), incarnation=incarnation
        ):
            return  # kill() got there first: it cleans up
        worker = threading.Thread(
            target=incarnation.release if delay is None else self._restart,
            args=() if delay is None else (incarnation, delay),
            name="aog-plugins-restart",
            daemon=True,
        )
        with self._cond:
            self._worker = worker
            worker.start()

    def _fatal_reason(self, reason: str) -> str:
        policy = self._policy
        return f"{reason} ({policy.max_restarts} restarts within {policy.window:g}s)"

    def _restart(self, dead: Incarnation, delay: float) -> None:
        dead.release()
        assert self._spec is not None
        while True:
            if self._wakeup.wait(delay):
                return  # killed while waiting
            if not self._transition(
                PluginState.STARTING, "restarting", only_from=(PluginState.BACKOFF,)
            ):
                return
            try:
                incarnation = start_incarnation(self._spec)
            except PluginStartError as exc:
                with self._cond:
                    budget = self._history.budget_left(time.monotonic())
                    delay = self._history.next_delay(time.monotonic()) if budget else 0.0
                if not budget:
                    self._transition(
                        PluginState.FATAL,
                        self._fatal_reason(f"restart failed, budget spent: {exc}"),
                        exc.exit_code,
                        only_from=(PluginState.STARTING,),
                    )
                    return
                self._transition(
                    PluginState.BACKOFF,
                    f"restart failed: {exc}; next try in {delay:.2f}s",
                    exc.exit_code,
                    only_from=(PluginState.STARTING,),
                )
                continue
            if not self._adopt(incarnation, "restarted"):
                incarnation.stop(0.0, self.logger)  # killed while starting
                incarnation.release()
            return

    # ---- shutdown ---------------------------------------------------------------------
    def kill(self, grace: float | None = None) -> None:
        """Stop the plugin for good: Shutdown RPC, wait ``grace`` s, SIGTERM, then SIGKILL
        to its process group. Cancels a pending restart. Idempotent, any thread; returns
        once the process is reaped and its socket directory removed.
        """
        grace = self._kill_grace if grace is None else grace
        with self._kill_lock:
            with self._cond:
                if self._killed:
                    return
                self._killed = True
                self._wakeup.set()
            self._transition(PluginState.STOPPING, "kill() called")
            worker = self._worker
            if worker is not None and worker is not threading.current_thread():
                # A restart in progress ends within its start timeout; then nothing of it
                # is left (it sees the kill and cleans up what it started).
                worker.join()
            incarnation = self._current
            incarnation.stop(grace, self.logger)
            if self._client is not None:
                self._client.close()
            incarnation.release()
            self._transition(
                PluginState.EXITED, f"stopped ({describe_exit(incarnation.process.exit_code)})"
            )
        _registry.unregister(self)

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


def launch(
    cmd: str | os.PathLike[str] | Sequence[str],
    *,
    handshake: HandshakeConfig = AOG_HANDSHAKE,
    versions: Collection[int] | None = None,
    auto_mtls: bool = False,
    start_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    restart: RestartPolicy | None = None,
    on_event: Callable[[PluginEvent], None] | None = None,
    kill_grace: float = 2.0,
    stdout: Output | None = None,
    stderr: Output | None = None,
    logger: logging.Logger | None = None,
    checksum: str | None = None,
    unix_socket_group: str | None = None,
    cwd: str | None = None,
) -> Plugin:
    """Start a plugin and return it connected, health-checked and supervised.

    ``cmd`` is the executable's path or an argv list. ``versions`` are the app protocol
    versions offered (default: the handshake's). ``env`` replaces the inherited
    environment, ``extra_env`` adds to it. ``restart`` (default ``RestartPolicy()``:
    on failure, a few quick retries, then FATAL) governs restarts after the plugin dies;
    ``on_event`` sees every state transition. ``stdout``/``stderr`` receive what the plugin
    writes after its handshake (GRPCStdio); without them it goes to ``logger`` (default
    ``aog_plugins.plugin.<name>``). ``checksum`` (``sha256:<hex>``) is verified before
    anything runs. ``start_timeout`` bounds handshake, connect and health check. A failed
    first start is not retried: the typed error (see :mod:`aog_plugins.errors`) is raised
    after the process is killed, reaped and its socket dir removed.
    """
    argv = command_argv(cmd)
    if start_timeout <= 0:
        raise ConfigurationError(f"start_timeout must be positive, got {start_timeout}")
    if restart is not None and not isinstance(restart, RestartPolicy):
        raise ConfigurationError(f"restart must be a RestartPolicy, got {restart!r}")
    offered = offered_for(handshake, versions)
    if checksum is not None:
        verify_checksum(argv[0], checksum)
    name = os.path.basename(argv[0])
    logger = logger or logging.getLogger(f"aog_plugins.plugin.{name}")
    spec = StartSpec(
        argv=argv,
        handshake=handshake,
        offered=offered,
        auto_mtls=auto_mtls,
        start_timeout=start_timeout,
        env=dict(env) if env is not None else None,
        extra_env=dict(extra_env) if extra_env else None,
        logger=logger,
        stdout=stdout,
        stderr=stderr,
        unix_socket_group=unix_socket_group,
        cwd=cwd,
        checksum=checksum,
    )
    incarnation = start_incarnation(spec)
    try:
        plugin = Plugin(
            incarnation,
            logger=logger,
            kill_grace=kill_grace,
            spec=spec,
            restart=restart if restart is not None else RestartPolicy(),
            on_event=on_event,
        )
    except AogPluginsError:
        incarnation.stop(0.0, logger)
        incarnation.release()
        raise
    _registry.register(plugin)
    return plugin
