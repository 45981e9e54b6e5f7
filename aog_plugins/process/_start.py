"""Start one incarnation of a plugin: spawn, handshake, connect, health-check.

A supervised :class:`~aog_plugins.process.Plugin` may go through several incarnations
(restarts); each has its own process, socket dir, certificate, channel and streams, and
releases all of them in :meth:`Incarnation.release` (:mod:`._incarnation`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import grpc

from aog_plugins.errors import (
    CookieRejectedError,
    HostResourceError,
    MalformedHandshakeError,
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
from aog_plugins.process._address import PinCheck, check_plugin_address
from aog_plugins.process._broker import Broker
from aog_plugins.process._connect import STDIO_MAX_MESSAGE, StdioPump, health_check
from aog_plugins.process._failures import default_diagnosis, typed_start_error
from aog_plugins.process._guard import StartGuard
from aog_plugins.process._incarnation import Incarnation
from aog_plugins.process._logs import LineSplitter, printable
from aog_plugins.process._spawn import (
    COOKIE_REJECTED_MARKER,
    PluginProcess,
    StdoutClosedError,
    describe_exit,
    spawn,
)
from aog_plugins.process._startargs import (
    MINIMAL_ENV,
    command_argv,
    offered_for,
    plugin_env,
    verify_checksum,
)
from aog_plugins.process._tempdir import (
    make_socket_dir,
    remove_socket_dir,
    remove_stale_dirs_once,
)
from aog_plugins.transport import (
    ClientRelayPlan,
    ClientTLS,
    DialTarget,
    Mux,
    Relay,
    open_channel,
    set_group_writable,
)

__all__ = [
    "MINIMAL_ENV",
    "Output",
    "StartSpec",
    "command_argv",
    "offered_for",
    "plugin_env",
    "start_incarnation",
    "verify_checksum",
]

Output = Callable[[bytes], None]


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
    inherit_env: bool = True
    multiplex: bool = False
    checksum: str | None = None  # verified before every start, restarts included


def start_incarnation(spec: StartSpec, guard: StartGuard[Any] | None = None) -> Incarnation:
    """Start the plugin once and return it connected and health-checked.

    On any failure the process is killed, reaped and its socket dir removed before the
    typed error (see :mod:`aog_plugins.errors`) is raised: whatever goes wrong, the caller
    gets an :class:`~aog_plugins.errors.AogPluginsError`, never a bare OSError or the like.
    With a ``guard`` (:mod:`._guard`) a cancel ends the start the same way.
    """
    if guard is not None:
        guard.check()
    if spec.checksum is not None:  # the file may have changed since the last start
        verify_checksum(spec.argv[0], spec.checksum)
    deadline = time.monotonic() + spec.start_timeout
    tls_bundle = generate_certificate() if spec.auto_mtls else None
    socket_dir = _prepare_socket_dir(spec)
    try:
        protocol_env = host_plugin_env(
            spec.handshake,
            spec.offered,
            client_cert_pem=tls_bundle.cert_pem if tls_bundle else None,
            socket_dir=socket_dir,
            socket_group=spec.unix_socket_group,
            multiplex=spec.multiplex,
        )
        full_env = plugin_env(spec.env, protocol_env, inherit=spec.inherit_env)
        if spec.extra_env:
            full_env.update(spec.extra_env)
        proc = spawn(spec.argv, full_env, spec.logger, cwd=spec.cwd)
    except BaseException as exc:
        remove_socket_dir(socket_dir)
        raise typed_start_error(exc, "spawning the plugin") from exc
    relay: Relay | None = None
    mux: Mux | None = None
    plan: ClientRelayPlan | None = None
    try:
        if guard is not None:
            guard.adopt(proc)  # a cancel kills it from now on; we reap it below
        # While the plugin boots, the first start's one-time work and the TLS relay's
        # context (in case the plugin's certificate needs it): nothing waits for them.
        remove_stale_dirs_once()
        if tls_bundle is not None and not spec.multiplex:
            plan = ClientRelayPlan(socket_dir, tls_bundle)
        line = _read_handshake(proc, deadline, spec.start_timeout)
        check_host_acceptance(line, spec.offered, multiplex=spec.multiplex)
        check_plugin_address(line, socket_dir, proc.pid)
        tls = _client_tls(line, tls_bundle)
        relayed = tls is not None and not grpcio_can_verify(tls.plugin_cert_der)
        if spec.multiplex:
            # One connection, yamux on it; each channel is a stream (TLS inside it).
            mux = Mux.dial(
                line.network, line.address, socket_dir, max(deadline - time.monotonic(), 0.1)
            )
            stream_tls = (tls.host, tls.plugin_cert_der) if tls is not None and relayed else None
            dial = _Dial(f"unix:{mux.forward(tls=stream_tls)}", None if relayed else tls)
        elif tls is not None and relayed:
            # A Go plugin's P-521 certificate: grpcio cannot do this TLS, our relay can.
            # The main channel's TLS connection is opened at once, while grpcio makes the
            # channel; the stdio stream's, opened next, resumes its TLS session.
            plan = plan or ClientRelayPlan(socket_dir, tls.host)
            relay = plan.start((line.network, line.address), tls.plugin_cert_der, ahead=1)
            dial = _Dial(f"unix:{relay.address}", None)
        else:
            dial = _Dial(line.grpc_target, tls)
        if plan is not None:
            plan.discard()  # unless started
        channel = dial()
    except BaseException as exc:
        died_on_its_own = proc.exited
        if plan is not None:
            plan.discard()
        if relay is not None:
            relay.close()
        if mux is not None:
            mux.close()
        _abort(proc, socket_dir)
        error = typed_start_error(exc, "reading the plugin's handshake")
        if isinstance(error, PluginStartError):
            error = proc.start_error(error, died_on_its_own=died_on_its_own)
            if not error.diagnosis:
                error.diagnosis = default_diagnosis(error)
        if error is exc:
            raise error from None
        raise error from exc
    incarnation = _connect(
        spec,
        proc=proc,
        line=line,
        dial=dial,
        channel=channel,
        socket_dir=socket_dir,
        relay=relay,
        deadline=deadline,
        tls=tls,
        mux=mux,
    )
    if guard is not None:
        guard.disown()
    return incarnation


def _connect(
    spec: StartSpec,
    *,
    proc: PluginProcess,
    line: HandshakeLine,
    dial: _Dial,
    channel: grpc.Channel,
    socket_dir: str,
    relay: Relay | None,
    deadline: float,
    tls: ClientTLS | None,
    mux: Mux | None,
) -> Incarnation:
    logger = spec.logger
    incarnation = Incarnation(
        proc,
        line,
        channel,
        socket_dir,
        relay,
        mux=mux,
        tls=tls,
        dial=DialTarget(dial.target, dial.tls),
    )
    pid = proc.pid
    try:
        # One call both waits for the connection and checks health (no readiness poll);
        # the plugin's exit ends the wait at once.
        health_check(
            channel,
            max(deadline - time.monotonic(), 0.1),
            connecting=line,
            on_exit=proc.add_exit_callback,
            on_lost=None if mux is None else mux.on_lost,
            diagnose=None if tls is None or mux is not None else PinCheck(line, tls, socket_dir),
        )
        incarnation.stdio = StdioPump(
            dial(max_receive=STDIO_MAX_MESSAGE),
            spec.stdout or _line_logger(logger, logging.INFO, proc.pid),
            spec.stderr or _stderr_to_parser(proc),
            logger,
        )
        incarnation.broker = Broker.for_launched(
            channel, line, socket_dir, pid, tls=tls, group=spec.unix_socket_group, mux=mux
        )
    except BaseException as exc:
        died_on_its_own = proc.exited
        incarnation.stop(0.0, logger)
        incarnation.release()
        if not isinstance(exc, (PluginConnectError, grpc.RpcError)):
            raise typed_start_error(exc, "connecting to the plugin") from exc
        if not isinstance(exc, PluginConnectError):
            raise PluginConnectError(f"connecting to the plugin failed: {exc}") from exc
        tail = proc.stderr_tail()
        detail = ""
        if died_on_its_own:
            detail = f"; the plugin (pid {pid}) exited on its own ({describe_exit(proc.exit_code)})"
        if tail:
            detail += f"\n--- plugin stderr (last lines) ---\n{tail}"
        raise type(exc)(f"{exc}{detail}") from None
    incarnation.started_at = time.monotonic()
    return incarnation


@dataclass(frozen=True)
class _Dial:
    """How to open (another) channel to this incarnation: the stdio pump has its own."""

    target: str
    tls: ClientTLS | None

    def __call__(self, *, max_receive: int | None = None) -> grpc.Channel:
        return open_channel(self.target, self.tls, max_receive=max_receive)


def _prepare_socket_dir(spec: StartSpec) -> str:
    try:
        socket_dir = make_socket_dir(clean_stale=False)  # cleaned while the plugin boots
    except OSError as exc:
        raise HostResourceError(
            f"cannot create the plugin's socket directory: {exc}",
            diagnosis="free space or inodes in the temp directory (TMPDIR), or point TMPDIR "
            "at a writable one",
            command=spec.argv,
        ) from exc
    if spec.unix_socket_group is not None:
        try:
            # As go-plugin: the dir group-accessible (0770), the plugin makes the socket 0660.
            set_group_writable(socket_dir, spec.unix_socket_group, 0o770)
        except BaseException:
            remove_socket_dir(socket_dir)
            raise
    return socket_dir


_EXIT_AFTER_EOF = 2.0
"""Seconds a plugin whose stdout ended without a handshake has to be seen exiting."""


def _read_handshake(proc: PluginProcess, deadline: float, start_timeout: float) -> HandshakeLine:
    try:
        try:
            raw = proc.handshake.result(timeout=max(deadline - time.monotonic(), 0.0))
        except StdoutClosedError:
            # Usually the plugin is exiting (its exit is seen a moment after its stdout
            # closes); one that closed stdout and lives on would never print a handshake:
            # say so now instead of waiting out start_timeout (go-plugin fails at once too).
            if not proc.wait(min(_EXIT_AFTER_EOF, max(deadline - time.monotonic(), 0.0))):
                raise MalformedHandshakeError(
                    "the plugin closed its stdout without printing a handshake line, and "
                    "keeps running: it will never print one",
                    diagnosis="a go-plugin plugin must print its handshake line on stdout; "
                    "this one closed or redirected its stdout first (a daemonizing "
                    "launcher, or a wrapper that closes file descriptors?)",
                ) from None
            raise PluginExitedError("plugin exited before its handshake") from None
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
    except MalformedHandshakeError as exc:
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
    """Kill (if still running), reap and clean up after a failed start."""
    proc.signal_group(9)
    proc.wait(10.0)
    remove_socket_dir(socket_dir)


def _line_logger(logger: logging.Logger, level: int, pid: int) -> Output:
    splitter = LineSplitter()

    def emit(data: bytes) -> None:
        for line in splitter.feed(data):
            text = printable(line.decode("utf-8", "replace"))
            logger.log(level, "%s", text, extra={"plugin_pid": pid})

    return emit


def _stderr_to_parser(proc: PluginProcess) -> Output:
    splitter = LineSplitter()

    def emit(data: bytes) -> None:
        for line in splitter.feed(data):
            proc.stderr.line(line)

    return emit
