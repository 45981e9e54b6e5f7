"""``attach()``: connect to a plugin another host started, from a :class:`ReattachConfig`."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

import psutil

from aog_plugins.errors import AogPluginsError, PluginConnectError, ReattachError
from aog_plugins.handshake import HandshakeLine, grpcio_can_verify, split_host_port
from aog_plugins.process import _registry
from aog_plugins.process._broker import Broker
from aog_plugins.process._connect import health_check
from aog_plugins.process._incarnation import Incarnation
from aog_plugins.process._ioloop import io_loop
from aog_plugins.process._plugin import Plugin
from aog_plugins.process._reattach import ReattachConfig
from aog_plugins.process._tempdir import make_socket_dir, remove_socket_dir
from aog_plugins.transport import (
    BrokerTLS,
    ClientTLS,
    Relay,
    open_channel,
    seconds,
    start_client_relay,
)

__all__ = ["AttachedProcess", "attach"]


class AttachedProcess:
    """A plugin process we did not start: watched by pidfd, signalled only if still the same.

    (pid, create time) identifies it, so a recycled pid is never signalled. Its exit
    code is not ours to read (it is not our child).
    """

    def __init__(self, pid: int) -> None:
        try:
            self._proc = psutil.Process(pid)
            self.create_time = self._proc.create_time()
        except psutil.Error as exc:
            raise ReattachError(f"no process {pid} is running: the plugin is gone") from exc
        self.pid = pid
        self.exit_code: int | None = None
        self._exited = threading.Event()
        self._callbacks: list[Callable[[AttachedProcess], None]] = []
        self._lock = threading.Lock()
        # Without pidfd (old kernels) exit is noticed by polling in wait().
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(pid)
            io_loop().add_exit_watch(self._pidfd, self._on_exit)

    def release(self) -> None:
        """Stop watching the process (an attach that failed): its pidfd is closed."""
        with self._lock:
            pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            io_loop().remove(pidfd)

    def _on_exit(self) -> None:
        with self._lock:
            self._pidfd = None  # closed by the I/O loop when it fired
            self._exited.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(self)

    def _same_process(self) -> bool:
        try:
            return self._proc.is_running() and self._proc.create_time() == self.create_time
        except psutil.Error:
            return False

    @property
    def exited(self) -> bool:
        """True once the process is gone (or its pid now belongs to another process)."""
        if not self._exited.is_set() and not self._same_process():
            self._exited.set()
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the process to go away."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.exited:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._exited.wait(0.05 if left is None else min(left, 0.05))
        return True

    def signal_group(self, sig: int) -> None:
        """Signal the process itself (not its group: we did not make that group)."""
        if self._same_process():
            with contextlib.suppress(psutil.Error):
                self._proc.send_signal(sig)

    def add_exit_callback(self, callback: Callable[[AttachedProcess], None]) -> None:
        """Call ``callback(self)`` on exit."""
        with self._lock:
            if not self._exited.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def stderr_tail(self, drain: float = 0.0) -> str:
        """An attached plugin's stderr is not ours to read."""
        return ""


def attach(
    config: ReattachConfig,
    *,
    timeout: float = 10.0,
    kill_grace: float = 2.0,
    logger: logging.Logger | None = None,
    broker: bool = False,
) -> Plugin:
    """Connect to a running plugin; ``kill()`` then stops it (Shutdown, then its pid only),
    ``detach()`` leaves it running.

    ``timeout`` (seconds, > 0) bounds connecting and the health check together; the
    plugin's exit ends the wait sooner.

    A config with AutoMTLS presents the launching host's certificate again and pins
    exactly the plugin's certificate (through the TLS relay for Go's P-521 keys).
    ``broker=True`` also opens a GRPCBroker stream (``Plugin.broker``). It is off by
    default: a Go plugin has one broker for all its hosts' streams, and the end of a
    second host's stream closes it for the first host too.
    """
    if config.protocol != "grpc":
        raise ReattachError(f"only grpc plugins can be reattached, got {config.protocol!r}")
    timeout = seconds("timeout", timeout)
    kill_grace = seconds("kill_grace", kill_grace, zero=True)
    process = AttachedProcess(config.pid)
    try:
        return _attach(
            config, process, timeout=timeout, kill_grace=kill_grace, logger=logger, broker=broker
        )
    except BaseException:
        process.release()
        raise


def _attach(
    config: ReattachConfig,
    process: AttachedProcess,
    *,
    timeout: float,
    kill_grace: float,
    logger: logging.Logger | None,
    broker: bool,
) -> Plugin:
    # kill() signals this pid: it must be the plugin's, not a reused one (nor a typo).
    _check_listener(config.pid, config.network, config.address)
    line = HandshakeLine(
        core_version=1,
        app_version=config.protocol_version,
        network="tcp" if config.network == "tcp" else "unix",
        address=config.address,
        protocol="grpc",
        server_cert=config.server_cert_der,
    )
    logger = logger or logging.getLogger(f"aog_plugins.plugin.pid{config.pid}")
    bundle = config.client_bundle()
    tls = None
    if bundle is not None and config.server_cert_der is not None:
        tls = ClientTLS(host=bundle, plugin_cert_der=config.server_cert_der)
    private_dir: str | None = None
    relay: Relay | None = None
    try:
        if tls is not None and not grpcio_can_verify(tls.plugin_cert_der):
            private_dir = make_socket_dir()
            relay = start_client_relay(
                private_dir, (line.network, line.address), tls.host, tls.plugin_cert_der
            )
            channel = open_channel(f"unix:{relay.address}")
        else:
            channel = open_channel(line.grpc_target, tls)
    except (OSError, AogPluginsError) as exc:
        if relay is not None:
            relay.close()
        remove_socket_dir(private_dir)
        raise ReattachError(f"cannot reattach to plugin pid {config.pid}: {exc}") from exc
    incarnation = Incarnation(process, line, channel, socket_dir=private_dir, relay=relay, tls=tls)
    try:
        # One call waits for the connection and checks health, as at launch: no readiness
        # poll, whose thread would outlive a failed attach and die on the closed channel.
        # The plugin's exit ends the wait at once.
        health_check(channel, timeout, connecting=line, on_exit=process.add_exit_callback)
        if broker:
            incarnation.broker = Broker(
                channel,
                network=line.network,
                socket_dir=private_dir,
                tls=None if tls is None else BrokerTLS(tls.host, tls.plugin_cert_der),
            )
    except PluginConnectError as exc:
        incarnation.release()
        raise ReattachError(f"cannot reattach to plugin pid {config.pid}: {exc}") from exc
    plugin = Plugin(incarnation, logger=logger, kill_grace=kill_grace)
    _registry.register(plugin)
    return plugin


def _check_listener(pid: int, network: str, address: str) -> None:
    """:class:`ReattachError` unless process ``pid`` (or a child of it: a launcher that
    did not exec) listens at ``address``. Where its sockets may not be inspected (another
    user's process) nothing can be told, and the config is taken as it is."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return  # gone meanwhile: connecting says so
    port = None if network == "unix" else split_host_port(address)[1]
    for proc in procs:
        try:
            listing = getattr(proc, "net_connections", None) or proc.connections
            conns = listing(kind="unix" if port is None else "tcp")
        except psutil.AccessDenied:
            return
        except psutil.Error:
            continue
        for conn in conns:
            if port is None and conn.laddr == address:
                return
            listening = conn.status == psutil.CONN_LISTEN
            if port is not None and conn.laddr and conn.laddr.port == port and listening:
                return
    raise ReattachError(
        f"cannot reattach to plugin pid {pid}: it does not listen at {network} {address}, "
        "so the config's address is wrong, or its Pid is stale "
        "(the plugin is gone and its pid reused) or names another process; nothing was "
        "signalled. Reattach with the config the plugin's host wrote for it"
    )
