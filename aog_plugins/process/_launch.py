"""``launch()``: start a plugin and hand it to a supervising :class:`Plugin`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextvars import ContextVar

from aog_plugins.errors import ConfigurationError
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig
from aog_plugins.process import _registry
from aog_plugins.process._guard import StartGuard
from aog_plugins.process._plugin import Plugin, PluginEvent
from aog_plugins.process._policy import RestartPolicy
from aog_plugins.process._start import (
    Output,
    StartSpec,
    command_argv,
    offered_for,
    start_incarnation,
    verify_checksum,
)
from aog_plugins.process._startargs import check_launch_types
from aog_plugins.transport import seconds

__all__ = ["cancellable_start", "launch"]

_OWNER_GUARD: ContextVar[StartGuard[Plugin] | None] = ContextVar(
    "aog_plugins_owner_guard", default=None
)


@contextlib.contextmanager
def cancellable_start() -> Iterator[StartGuard[Plugin]]:
    """For an owner that may give a start up from another thread (a plugin manager being
    closed): a :func:`launch` made in the block runs under the yielded guard, and
    ``guard.abandon()`` ends it at once instead of after its start timeout."""
    guard = StartGuard[Plugin](lambda started: started.kill(0.0))
    token = _OWNER_GUARD.set(guard)
    try:
        yield guard
    finally:
        _OWNER_GUARD.reset(token)


def launch(
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
    stdout: Output | None = None,
    stderr: Output | None = None,
    logger: logging.Logger | None = None,
    checksum: str | None = None,
    unix_socket_group: str | None = None,
    cwd: str | None = None,
    install_signal_handlers: bool = True,
    multiplex: bool = False,
) -> Plugin:
    """Start a plugin and return it connected, health-checked and supervised.

    ``cmd`` is the executable's path or an argv list. ``versions`` are the app protocol
    versions offered (default: the handshake's). ``env`` replaces the inherited
    environment, ``extra_env`` adds to it; ``inherit_env=False`` (without ``env``) passes
    only PATH, LANG, LC_ALL and TZ of the host's environment, so no secret in it reaches
    the plugin. ``restart`` (default ``RestartPolicy()``:
    on failure, a few quick retries, then FATAL) governs restarts after the plugin dies;
    ``on_event`` sees every state transition. ``stdout``/``stderr`` receive what the plugin
    writes after its handshake (GRPCStdio); without them it goes to ``logger`` (default
    ``aog_plugins.plugin.<name>``). ``checksum`` (``sha256:<hex>``) is verified before
    anything runs. ``start_timeout`` bounds handshake, connect and health check. A failed
    first start is not retried: the typed error (see :mod:`aog_plugins.errors`) is raised
    after the process is killed, reaped and its socket dir removed.

    ``install_signal_handlers=False`` leaves SIGTERM/SIGINT to the application: no handler
    is installed by this call and this plugin is not stopped from one (it is still stopped
    at interpreter exit, and by the reaper if the host is SIGKILLed). See
    :func:`~aog_plugins.process.install_signal_handlers`.

    ``multiplex=True`` asks for gRPC broker multiplexing (PLUGIN_MULTIPLEX_GRPC): one
    connection carries every channel and broker sub-connection.
    """
    argv = command_argv(cmd)
    check_launch_types(
        handshake=handshake,
        auto_mtls=auto_mtls,
        env=env,
        extra_env=extra_env,
        inherit_env=inherit_env,
        on_event=on_event,
        stdout=stdout,
        stderr=stderr,
        logger=logger,
        checksum=checksum,
        unix_socket_group=unix_socket_group,
        cwd=os.fspath(cwd) if isinstance(cwd, os.PathLike) else cwd,
        install_signal_handlers=install_signal_handlers,
        multiplex=multiplex,
    )
    start_timeout = seconds("start_timeout", start_timeout)
    kill_grace = seconds("kill_grace", kill_grace, zero=True)
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
        inherit_env=inherit_env,
        multiplex=multiplex,
        checksum=checksum,
    )

    def start(guard: StartGuard[Plugin]) -> Plugin:
        incarnation = start_incarnation(spec, guard)
        try:
            plugin = Plugin(
                incarnation,
                logger=logger,
                kill_grace=kill_grace,
                spec=spec,
                restart=restart if restart is not None else RestartPolicy(),
                on_event=on_event,
            )
        except BaseException:
            incarnation.stop(0.0, logger)
            incarnation.release()
            raise
        # Handlers are installed below, on the caller's thread (only the main one can).
        _registry.register(plugin, signal_handlers=install_signal_handlers)
        return plugin

    # On the main thread the start runs where Ctrl-C cannot orphan the plugin (._guard).
    guard = _OWNER_GUARD.get() or StartGuard[Plugin](lambda started: started.kill(0.0))
    plugin = guard.run(start)
    if install_signal_handlers:
        try:
            _registry.install_signal_handlers()  # does nothing off the main thread
        except BaseException:
            plugin.kill(0.0)
            raise
    return plugin
