"""Start one incarnation of a plugin: spawn, handshake, connect, health-check.

A supervised :class:`~aog_plugins.process.Plugin` may go through several incarnations
(restarts); each has its own process, socket dir, certificate, channel and streams, and
releases all of them in :meth:`Incarnation.release`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    CertificateBundle,
    HandshakeConfig,
    HandshakeLine,
    check_host_acceptance,
    generate_certificate,
    grpcio_can_verify,
    host_plugin_env,
    parse_handshake_line,
)
from aog_plugins.process._connect import BrokerStream, StdioPump, health_check, request_shutdown
from aog_plugins.process._logs import LineSplitter
from aog_plugins.process._spawn import COOKIE_REJECTED_MARKER, PluginProcess, spawn
from aog_plugins.process._tempdir import make_socket_dir, remove_socket_dir
from aog_plugins.transport import ClientTLS, Relay, open_channel, start_client_relay, wait_ready

__all__ = [
    "Incarnation",
    "Output",
    "ProcessHandle",
    "StartSpec",
    "command_argv",
    "offered_for",
    "start_incarnation",
    "verify_checksum",
]

Output = Callable[[bytes], None]
_PROTOCOL_ENV_PREFIX = "PLUGIN_"


@dataclass(frozen=True)
class StartSpec:
    """Everything needed to start (and restart) a plugin."""

    argv: tuple[str, ...]
    handshake: HandshakeConfig
    offered: tuple[int, ...]
    auto_mtls: bool
    start_timeout: float
    env: Mapping[str, str] | None
    extra_env: Mapping[str, str] | None
    logger: logging.Logger
    stdout: Output | None = None
    stderr: Output | None = None
    unix_socket_group: str | None = None
    cwd: str | None = None
    checksum: str | None = None  # verified before every start, restarts included


class ProcessHandle(Protocol):
    """What a plugin needs of its process: ours (PluginProcess) or an attached one."""

    pid: int
    exit_code: int | None

    @property
    def exited(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def signal_group(self, sig: int) -> None: ...

    def stderr_tail(self, drain: float = ...) -> str: ...

    def add_exit_callback(self, callback: Callable[[Any], None]) -> None: ...


@dataclass
class Incarnation:
    """One running process of a plugin and the resources that belong to it."""

    process: ProcessHandle
    line: HandshakeLine
    channel: grpc.Channel
    socket_dir: str | None
    relay: Relay | None = None
    stdio: StdioPump | None = None
    broker: BrokerStream | None = None
    started_at: float = field(default_factory=time.monotonic)
    _released: bool = False
    _release_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stop(self, grace: float, logger: logging.Logger) -> None:
        """Shutdown RPC, wait ``grace`` s, SIGTERM the group, 0.5 s, SIGKILL the group."""
        proc = self.process
        deadline = time.monotonic() + grace
        if not proc.exited:
            request_shutdown(self.channel, timeout=grace)
        if proc.wait(max(deadline - time.monotonic(), 0.0)):
            return
        logger.debug("plugin %d ignored Shutdown; sending SIGTERM", proc.pid)
        proc.signal_group(15)
        if proc.wait(0.5):
            return
        logger.warning("plugin %d ignored SIGTERM; sending SIGKILL", proc.pid)
        proc.signal_group(9)
        proc.wait(10.0)

    def release(self) -> None:
        """Close streams, channel and relay; remove the socket dir. Idempotent; a second
        caller waits until the first one is done, so "released" means released."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
            if self.stdio is not None:
                self.stdio.close()
            if self.broker is not None:
                self.broker.close()
            self.channel.close()
            if self.relay is not None:
                self.relay.close()
            remove_socket_dir(self.socket_dir)


def start_incarnation(spec: StartSpec) -> Incarnation:
    """Start the plugin once and return it connected and health-checked.

    On any failure the process is killed, reaped and its socket dir removed before the
    typed error (see :mod:`aog_plugins.errors`) is raised.
    """
    logger = spec.logger
    if spec.checksum is not None:  # the file may have changed since the last start
        verify_checksum(spec.argv[0], spec.checksum)
    deadline = time.monotonic() + spec.start_timeout
    tls_bundle = generate_certificate() if spec.auto_mtls else None
    socket_dir = make_socket_dir()
    protocol_env = host_plugin_env(
        spec.handshake,
        spec.offered,
        client_cert_pem=tls_bundle.cert_pem if tls_bundle else None,
        socket_dir=socket_dir,
        socket_group=spec.unix_socket_group,
    )
    full_env = _plugin_env(spec.env, protocol_env)
    if spec.extra_env:
        full_env.update(spec.extra_env)
    try:
        proc = spawn(spec.argv, full_env, logger, cwd=spec.cwd)
    except BaseException:
        remove_socket_dir(socket_dir)
        raise
    relay: Relay | None = None
    try:
        line = _read_handshake(proc, deadline, spec.start_timeout)
        check_host_acceptance(line, spec.offered)
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
    incarnation = Incarnation(proc, line, channel, socket_dir, relay)
    pid = proc.pid
    try:
        wait_ready(channel, line, deadline - time.monotonic())
        health_check(channel, max(deadline - time.monotonic(), 0.1))
        incarnation.stdio = StdioPump(
            channel,
            spec.stdout or _line_logger(logger, logging.INFO, proc.pid),
            spec.stderr or _stderr_to_parser(proc),
            logger,
        )
        incarnation.broker = BrokerStream(channel)
    except (PluginConnectError, grpc.RpcError) as exc:
        died_on_its_own = proc.exited
        incarnation.stop(0.0, logger)
        incarnation.release()
        if not isinstance(exc, PluginConnectError):
            raise PluginConnectError(f"connecting to the plugin failed: {exc}") from exc
        tail = proc.stderr_tail()
        detail = f"; the plugin (pid {pid}) exited with {proc.exit_code}" if died_on_its_own else ""
        if tail:
            detail += f"\n--- plugin stderr (last lines) ---\n{tail}"
        raise type(exc)(f"{exc}{detail}") from None
    except BaseException:
        incarnation.stop(0.0, logger)
        incarnation.release()
        raise
    incarnation.started_at = time.monotonic()
    return incarnation


def command_argv(cmd: str | os.PathLike[str] | Sequence[str]) -> tuple[str, ...]:
    if isinstance(cmd, (str, os.PathLike)):
        return (os.fspath(cmd),)
    argv = tuple(os.fspath(a) for a in cmd)
    if not argv:
        raise ConfigurationError("cmd is empty: give the plugin's path or an argv list")
    return argv


def offered_for(handshake: HandshakeConfig, versions: Collection[int] | None) -> tuple[int, ...]:
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
