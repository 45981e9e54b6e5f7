"""``launch()``: start a plugin, read its handshake, connect, and own it until ``kill()``."""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from aog_plugins.errors import (
    ChecksumMismatchError,
    ConfigurationError,
    CookieRejectedError,
    HandshakeError,
    PluginConnectError,
    PluginExitedError,
    PluginStartError,
    ServerCertificateError,
    StartTimeoutError,
)
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    CertificateBundle,
    HandshakeConfig,
    HandshakeLine,
    check_host_acceptance,
    generate_certificate,
    grpcio_can_verify,
    host_plugin_env,
    parse_handshake_line,
)
from aog_plugins.process import _registry
from aog_plugins.process._connect import (
    BrokerStream,
    ClientTLS,
    StdioPump,
    health_check,
    open_channel,
    request_shutdown,
    wait_ready,
)
from aog_plugins.process._logs import LineSplitter
from aog_plugins.process._reattach import ReattachConfig
from aog_plugins.process._spawn import COOKIE_REJECTED_MARKER, PluginProcess, spawn

if TYPE_CHECKING:
    from aog_plugins.process._attach import AttachedProcess
from aog_plugins.process._relay import Relay, start_client_relay
from aog_plugins.process._tempdir import make_socket_dir, remove_socket_dir

if TYPE_CHECKING:
    from aog_plugins.client import GRPCProviderClient

__all__ = ["Plugin", "PluginState", "launch"]

Output = Callable[[bytes], None]
_PROTOCOL_ENV_PREFIX = "PLUGIN_"


class PluginState(enum.Enum):
    """Where a plugin is in its life (supervisor's states)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


class Plugin:
    """A connected plugin. Use as a context manager, or call :meth:`kill` when done.

    ``handshake`` is the parsed handshake line, ``channel`` a ready gRPC channel to it.
    """

    def __init__(
        self,
        *,
        handshake: HandshakeLine,
        channel: grpc.Channel,
        logger: logging.Logger,
        process: PluginProcess | AttachedProcess | None,
        socket_dir: str | None,
        kill_grace: float,
        pid: int,
    ) -> None:
        self.handshake = handshake
        self.channel = channel
        self.logger = logger
        self._process = process
        self._socket_dir = socket_dir
        self._kill_grace = kill_grace
        self._pid = pid
        self._state = PluginState.RUNNING
        self._kill_lock = threading.Lock()
        self._killed = False
        self._stdio: StdioPump | None = None
        self._broker: BrokerStream | None = None
        self._client: GRPCProviderClient | None = None
        self._client_lock = threading.Lock()
        self._relay: Relay | None = None
        if process is not None:
            process.add_exit_callback(self._on_process_exit)

    # ---- facts ----------------------------------------------------------------------
    @property
    def client(self) -> GRPCProviderClient:
        """A :class:`~aog_plugins.client.GRPCProviderClient` for this plugin (made once)."""
        with self._client_lock:
            if self._client is None:
                from aog_plugins.client import GRPCProviderClient

                self._client = GRPCProviderClient(self)
            return self._client

    def current_channel(self) -> grpc.Channel:
        """The channel to this plugin (ConnectionSource protocol of the client)."""
        return self.channel

    def exit_reason(self) -> str | None:
        """None while the plugin runs; else how it ended, with its last stderr lines."""
        if not self.exited:
            return None
        code = self.exit_code
        if code is None:
            how = "it exited"
        elif code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        tail = self.stderr_tail().strip()
        return how + (f"; last stderr lines:\n{tail}" if tail else "")

    @property
    def pid(self) -> int:
        """The plugin's process id."""
        return self._pid

    @property
    def app_version(self) -> int:
        """The negotiated app protocol version."""
        return self.handshake.app_version

    @property
    def state(self) -> PluginState:
        """The current :class:`PluginState`."""
        return self._state

    @property
    def exited(self) -> bool:
        """True once the plugin process has exited."""
        if self._process is None:
            return self._state is PluginState.EXITED
        return self._process.exited

    @property
    def exit_code(self) -> int | None:
        """Exit status (negative: the signal that killed it); None while running or unknown."""
        return self._process.exit_code if self._process is not None else None

    def stderr_tail(self) -> str:
        """The plugin's last stderr lines."""
        return self._process.stderr_tail() if self._process is not None else ""

    def reattach_config(self) -> ReattachConfig:
        """What another host needs to :func:`attach` to this plugin (not with AutoMTLS)."""
        return ReattachConfig(
            protocol=self.handshake.protocol,
            protocol_version=self.handshake.app_version,
            network=self.handshake.network,
            address=self.handshake.address,
            pid=self._pid,
        )

    def ping(self, timeout: float = 5.0) -> None:
        """Health-check the plugin now; raises :class:`PluginConnectError` if it fails."""
        health_check(self.channel, timeout)

    # ---- shutdown ---------------------------------------------------------------------
    def kill(self, grace: float | None = None) -> None:
        """Stop the plugin: Shutdown RPC, wait ``grace`` s, SIGTERM, then SIGKILL its group.

        Idempotent and safe from any thread; returns once the process is reaped and its
        socket directory removed.
        """
        grace = self._kill_grace if grace is None else grace
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
            self._state = PluginState.STOPPING
            deadline = time.monotonic() + grace
            if not self.exited:
                request_shutdown(self.channel, timeout=grace)
            self._stop_process(deadline)
            self._release()
            self._state = PluginState.EXITED
        _registry.unregister(self)

    def _stop_process(self, deadline: float) -> None:
        proc = self._process
        if proc is None:
            return
        if proc.wait(max(deadline - time.monotonic(), 0.0)):
            return
        self.logger.debug("plugin %d ignored Shutdown; sending SIGTERM", self._pid)
        proc.signal_group(15)
        if proc.wait(0.5):
            return
        self.logger.warning("plugin %d ignored SIGTERM; sending SIGKILL", self._pid)
        proc.signal_group(9)
        proc.wait(10.0)

    def _release(self) -> None:
        if self._stdio is not None:
            self._stdio.close()
        if self._broker is not None:
            self._broker.close()
        if self._client is not None:
            self._client.close()
        self.channel.close()
        if self._relay is not None:
            self._relay.close()
        remove_socket_dir(self._socket_dir)

    def _on_process_exit(self, proc: PluginProcess | AttachedProcess) -> None:
        if self._state is PluginState.RUNNING:
            self.logger.warning("plugin %d exited with %s", proc.pid, proc.exit_code)
            self._state = PluginState.EXITED
            remove_socket_dir(self._socket_dir)

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
            f"<Plugin pid={self._pid} {self.handshake.network}:{self.handshake.address} "
            f"state={self._state.value}>"
        )


def _command(cmd: str | os.PathLike[str] | Sequence[str]) -> tuple[str, ...]:
    if isinstance(cmd, (str, os.PathLike)):
        return (os.fspath(cmd),)
    argv = tuple(os.fspath(a) for a in cmd)
    if not argv:
        raise ConfigurationError("cmd is empty: give the plugin's path or an argv list")
    return argv


def _offered(handshake: HandshakeConfig, versions: Collection[int] | None) -> tuple[int, ...]:
    if versions is None:
        return (handshake.protocol_version,)
    offered = tuple(sorted({int(v) for v in versions}, reverse=True))
    if not offered or offered[-1] < 1:
        raise ConfigurationError(f"versions must be positive integers, got {sorted(versions)}")
    return offered


def verify_checksum(path: str, checksum: str) -> None:
    """SecureConfig: compare ``algorithm:hexdigest`` (or a bare SHA-256 hex) with the file."""
    algo, _, expected = checksum.rpartition(":")
    algo = algo or "sha256"
    try:
        digest = hashlib.new(algo)
    except ValueError as exc:
        raise ConfigurationError(f"unknown checksum algorithm {algo!r}") from exc
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ChecksumMismatchError(f"cannot read {path} to verify its checksum: {exc}") from exc
    if digest.hexdigest() != expected.lower():
        raise ChecksumMismatchError(
            f"{path} has {algo} {digest.hexdigest()}, expected {expected}: "
            "the executable is not the one configured; refusing to start it"
        )


def _plugin_env(base: Mapping[str, str] | None, protocol_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    # A host that is itself a plugin must not pass its own protocol vars down.
    for key in list(env):
        if key.startswith(_PROTOCOL_ENV_PREFIX) and key not in protocol_env:
            del env[key]
    env.update(protocol_env)
    return env


def launch(
    cmd: str | os.PathLike[str] | Sequence[str],
    *,
    handshake: HandshakeConfig = AOG_HANDSHAKE,
    versions: Collection[int] | None = None,
    auto_mtls: bool = False,
    start_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    kill_grace: float = 2.0,
    stdout: Output | None = None,
    stderr: Output | None = None,
    logger: logging.Logger | None = None,
    checksum: str | None = None,
    unix_socket_group: str | None = None,
    cwd: str | None = None,
) -> Plugin:
    """Start a plugin and return it connected and health-checked.

    ``cmd`` is the executable's path or an argv list. ``versions`` are the app protocol
    versions offered (default: the handshake's). ``env`` replaces the inherited
    environment, ``extra_env`` adds to it. ``stdout``/``stderr`` receive what the plugin
    writes after its handshake (GRPCStdio); without them it goes to ``logger``
    (default ``aog_plugins.plugin.<name>``). ``checksum`` (``sha256:<hex>``) is verified
    before anything runs. ``start_timeout`` bounds handshake, connect and health check.
    On any failure the process is killed, reaped and its socket dir removed before the
    typed error (see :mod:`aog_plugins.errors`) is raised.
    """
    argv = _command(cmd)
    if start_timeout <= 0:
        raise ConfigurationError(f"start_timeout must be positive, got {start_timeout}")
    offered = _offered(handshake, versions)
    if checksum is not None:
        verify_checksum(argv[0], checksum)
    name = os.path.basename(argv[0])
    logger = logger or logging.getLogger(f"aog_plugins.plugin.{name}")
    deadline = time.monotonic() + start_timeout
    tls_bundle = generate_certificate() if auto_mtls else None
    socket_dir = make_socket_dir()
    protocol_env = host_plugin_env(
        handshake,
        offered,
        client_cert_pem=tls_bundle.cert_pem if tls_bundle else None,
        socket_dir=socket_dir,
        socket_group=unix_socket_group,
    )
    full_env = _plugin_env(env, protocol_env)
    if extra_env:
        full_env.update(extra_env)
    try:
        proc = spawn(argv, full_env, logger, cwd=cwd)
    except BaseException:
        remove_socket_dir(socket_dir)
        raise
    relay: Relay | None = None
    try:
        line = _read_handshake(proc, deadline, start_timeout)
        check_host_acceptance(line, offered)
        tls = _client_tls(line, tls_bundle)
        if tls is not None and not grpcio_can_verify(tls.plugin_cert_der):
            # A Go plugin's P-521 certificate: grpcio cannot do this TLS, our relay can.
            relay = start_client_relay(
                socket_dir, (line.network, line.address), tls.host, tls.plugin_cert_der
            )
            channel = open_channel(f"unix:{relay.address}")
        else:
            channel = open_channel(line.grpc_target, tls)
    except PluginStartError as exc:
        if relay is not None:
            relay.close()
        _abort(proc, socket_dir)
        raise proc.start_error(exc) from None
    plugin = Plugin(
        handshake=line,
        channel=channel,
        logger=logger,
        process=proc,
        socket_dir=socket_dir,
        kill_grace=kill_grace,
        pid=proc.pid,
    )
    plugin._relay = relay
    _registry.register(plugin)
    try:
        wait_ready(channel, line, deadline - time.monotonic())
        health_check(channel, max(deadline - time.monotonic(), 0.1))
        plugin._stdio = StdioPump(
            channel,
            stdout or _line_logger(logger, logging.INFO, proc.pid),
            stderr or _stderr_to_parser(proc),
            logger,
        )
        plugin._broker = BrokerStream(channel)
    except (PluginConnectError, grpc.RpcError) as exc:
        died_on_its_own = proc.exited
        plugin.kill(grace=0.0)
        if not isinstance(exc, PluginConnectError):
            raise PluginConnectError(f"connecting to the plugin failed: {exc}") from exc
        tail = proc.stderr_tail()
        detail = f"; the plugin exited with {proc.exit_code}" if died_on_its_own else ""
        if tail:
            detail += f"\n--- plugin stderr (last lines) ---\n{tail}"
        raise type(exc)(f"{exc}{detail}") from None
    except BaseException:
        plugin.kill(grace=0.0)
        raise
    return plugin


def _read_handshake(proc: PluginProcess, deadline: float, start_timeout: float) -> HandshakeLine:
    try:
        raw = proc.handshake.result(timeout=max(deadline - time.monotonic(), 0.0))
    except FutureTimeout:
        raise StartTimeoutError(
            f"timeout while waiting for the plugin to start: no handshake line within "
            f"{start_timeout:g}s",
            diagnosis="the plugin did not print its handshake; it may be stuck, waiting for "
            "input, or not a go-plugin plugin (raise start_timeout if it is just slow)",
        ) from None
    except PluginExitedError:
        tail = proc.stderr_tail()
        if COOKIE_REJECTED_MARKER in tail:
            raise CookieRejectedError(
                "the plugin refused to start: it did not receive the magic cookie it expects"
            ) from None
        raise PluginExitedError(
            "plugin exited before we could connect: it printed no handshake line"
        ) from None
    try:
        return parse_handshake_line(raw)
    except HandshakeError as exc:
        if not exc.diagnosis:
            exc.diagnosis = (
                "the first line on the plugin's stdout must be its handshake; the plugin "
                "printed something else first, or is not a go-plugin plugin"
            )
        raise


def _client_tls(line: HandshakeLine, bundle: CertificateBundle | None) -> ClientTLS | None:
    if bundle is None:
        return None
    if line.server_cert is None:
        raise ServerCertificateError(
            "AutoMTLS was requested but the plugin's handshake carries no certificate: "
            "the plugin does not support AutoMTLS (launch with auto_mtls=False)",
            line=line.format(),
        )
    return ClientTLS(host=bundle, plugin_cert_der=line.server_cert)


def _abort(proc: PluginProcess, socket_dir: str) -> None:
    proc.signal_group(9)
    proc.wait(10.0)
    remove_socket_dir(socket_dir)


def _line_logger(logger: logging.Logger, level: int, pid: int) -> Output:
    splitter = LineSplitter()

    def emit(data: bytes) -> None:
        for line in splitter.feed(data):
            logger.log(level, "%s", line.decode("utf-8", "replace"), extra={"plugin_pid": pid})

    return emit


def _stderr_to_parser(proc: PluginProcess) -> Output:
    splitter = LineSplitter()

    def emit(data: bytes) -> None:
        for line in splitter.feed(data):
            proc.stderr.line(line)

    return emit
