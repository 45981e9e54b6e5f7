"""The plugin side of go-plugin in Python: check the cookie, negotiate, listen, announce.

A plugin author hands :func:`serve` a function that registers gRPC servicers; everything a
go-plugin host expects (health, controller, stdio, broker, AutoMTLS) is added around it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Literal, TypedDict

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aog_plugins._proto import (
    grpc_broker_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
)
from aog_plugins.errors import AogPluginsError, ConfigurationError
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    COOKIE_REJECTED_MESSAGE,
    CORE_PROTOCOL_VERSION,
    CertificateBundle,
    HandshakeConfig,
    HandshakeLine,
    PluginEnv,
    choose_plugin_version,
    generate_certificate,
    grpcio_can_verify,
    pem_to_der,
    read_plugin_env,
)
from aog_plugins.server._broker import Broker, BrokerServicer, set_current
from aog_plugins.server._hclog import configure_logging, log_thread_failures
from aog_plugins.server._mux import serve_multiplexed
from aog_plugins.server._pools import ServerThreads
from aog_plugins.server._stdio import StdioBuffer, StdioRedirect, StdioServicer
from aog_plugins.transport import (
    HEALTH_SERVICE,
    BrokerTLS,
    MuxListener,
    Relay,
    add_unix_port,
    grpc_target,
    listen,
    private_socket_dir,
    set_group_writable,
    signals_blocked,
    start_server_relay,
    start_thread,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "HEALTH_SERVICE",
    "CookieMissing",
    "PluginServer",
    "Register",
    "ServerOptions",
    "serve",
]

Register = Callable[[grpc.Server], None]
"""Adds the plugin's own servicers to the gRPC server (e.g. ``add_XServicer_to_server``)."""

_log = logging.getLogger("aog_plugins.server")
_SERVER_OPTIONS: list[tuple[str, object]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # grpcio sets SO_REUSEPORT by default: two plugins could then share one TCP port.
    ("grpc.so_reuseport", 0),
]


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`PluginServer` (``handshake`` aside) that
    :func:`serve` and ``serve_provider`` pass on; see :class:`PluginServer`."""

    network: Literal["unix", "tcp"]
    environ: Mapping[str, str] | None
    max_workers: int | None
    certificate_curve: str
    health_service: bool
    stdio_service: bool
    on_shutdown: Callable[[], None] | None


class CookieMissing(SystemExit):
    """Raised (as SystemExit 1) when the plugin was not started by a host."""


class _Controller(grpc_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, on_shutdown: Callable[[], None]) -> None:
        self._on_shutdown = on_shutdown

    def Shutdown(
        self, request: grpc_controller_pb2.Empty, context: grpc.ServicerContext
    ) -> grpc_controller_pb2.Empty:
        self._on_shutdown()
        return grpc_controller_pb2.Empty()


class PluginServer:
    """One plugin's gRPC server, from environment checks to the printed handshake line.

    ``start()`` checks the cookie, negotiates the app version, listens and starts serving;
    ``announce()`` prints the handshake and redirects sys.stdout/sys.stderr to GRPCStdio
    (until :meth:`stop`, which puts the real ones back);
    ``wait()`` blocks until the host calls Shutdown (or :meth:`stop`).

    ``max_workers`` caps how many of the plugin's own calls run at once (each holds a
    thread; calls beyond it wait for a free one); ``None``, the default, sets no limit:
    quick calls share a thread or two, and a call that waits for a busy thread gets its
    own within about 10 ms (see ``_executor``). Health checks, Shutdown, stdio and
    the broker stream never count against it: they run on threads of their own, so a
    plugin busy with long streams still answers the host (see ``_pools``).
    """

    def __init__(
        self,
        register: Register | Mapping[int, Register],
        *,
        handshake: HandshakeConfig = AOG_HANDSHAKE,
        network: Literal["unix", "tcp"] = "unix",
        environ: Mapping[str, str] | None = None,
        max_workers: int | None = None,
        certificate_curve: str = "P-256",
        health_service: bool = True,
        stdio_service: bool = True,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        if network not in ("unix", "tcp"):
            raise ConfigurationError(f"network must be 'unix' or 'tcp', got {network!r}")
        self._sets: Mapping[int, Register] = (
            {handshake.protocol_version: register} if callable(register) else dict(register)
        )
        if not self._sets:
            raise ConfigurationError("a plugin needs at least one versioned servicer set")
        self._handshake = handshake
        self._network = network
        self._environ = dict(os.environ if environ is None else environ)
        self._threads = ServerThreads(max_workers)
        self._curve = certificate_curve
        self._health_service = health_service
        self._stdio_service = stdio_service
        self._on_shutdown = on_shutdown or self.stop
        self._stopped = threading.Event()
        self._stdio = StdioBuffer()
        self._redirect = StdioRedirect(self._stdio)
        self._server: grpc.Server | None = None
        self._socket_path: str | None = None
        self._private_dir: str | None = None
        self._relay: Relay | None = None
        self._mux: MuxListener | None = None
        self._line: HandshakeLine | None = None
        self.health = health.HealthServicer()
        self.env: PluginEnv | None = None
        self._broker: Broker | None = None

    @property
    def broker(self) -> Broker:
        """The plugin's GRPCBroker (after :meth:`start`): extra connections by id."""
        if self._broker is None:
            raise RuntimeError("the server has not been started")
        return self._broker

    @property
    def handshake_line(self) -> HandshakeLine:
        if self._line is None:
            raise RuntimeError("the server has not been started")
        return self._line

    def start(self) -> HandshakeLine:
        """Check the environment, listen and serve; raise :class:`CookieMissing` when the
        magic cookie is absent (after printing go-plugin's message on stderr), before
        anything else is looked at. When anything else fails, whatever was made (socket,
        private dirs, relay, server) is removed before the error propagates."""
        cookie = self._handshake
        if self._environ.get(cookie.magic_cookie_key) != cookie.magic_cookie_value:
            sys.stderr.write(COOKIE_REJECTED_MESSAGE)
            sys.stderr.flush()
            raise CookieMissing(1)
        try:
            return self._start()
        except BaseException:
            self.stop(0.0)
            raise

    def _start(self) -> HandshakeLine:
        env = read_plugin_env(self._environ, self._handshake)
        self.env = env
        for entry in env.invalid_versions:
            _log.warning("ignoring invalid entry %r in PLUGIN_PROTOCOL_VERSIONS", entry)
        version = choose_plugin_version(env.offered_versions, self._sets, min(self._sets))
        bundle: CertificateBundle | None = None
        host_der: bytes | None = None
        if env.client_cert_pem is not None:
            bundle = generate_certificate(self._curve)
            host_der = pem_to_der(env.client_cert_pem)
        self._broker = Broker(
            network=self._network,
            socket_dir=env.socket_dir,
            tls=None if bundle is None or host_der is None else BrokerTLS(bundle, host_der),
            socket_group=env.socket_group,
            port_range=(env.min_port, env.max_port),
        )
        set_current(self._broker)
        server = self._threads.server(_SERVER_OPTIONS)
        self._sets[version](server)
        if self._health_service:
            self.health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(
            _Controller(self._on_shutdown), server
        )
        if self._stdio_service:
            grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(StdioServicer(self._stdio), server)
        grpc_broker_pb2_grpc.add_GRPCBrokerServicer_to_server(
            BrokerServicer(self._broker, self._stopped), server
        )
        cert_der = None if bundle is None else bundle.cert_der
        native = bundle is None or host_der is None or grpcio_can_verify(bundle.cert_der)
        native = native and (host_der is None or grpcio_can_verify(host_der))
        credentials: grpc.ServerCredentials | None = None
        if bundle is not None and native and env.client_cert_pem is not None:
            credentials = grpc.ssl_server_credentials(
                [(bundle.key_pem, bundle.cert_pem)],
                root_certificates=env.client_cert_pem,
                require_client_auth=True,
            )
        if env.multiplex:
            stream_tls = (
                None if native or bundle is None or host_der is None else (bundle, host_der)
            )
            address, self._mux, self._private_dir = serve_multiplexed(
                server,
                socket_dir=env.socket_dir,
                credentials=credentials,
                stream_tls=stream_tls,
                listen=lambda bind: self._listen(env, bind),
            )
            self._broker.set_mux(self._mux.current)
        elif native or bundle is None or host_der is None:
            address = self._bind(server, env, credentials)
        else:
            # A Go host's P-521 client cert: grpcio cannot accept it, our ssl relay can.
            address = self._bind_relay(server, env, bundle, host_der)
        with signals_blocked():  # the server's threads, and the pool threads they start
            server.start()
        self._server = server
        self._line = HandshakeLine(
            core_version=CORE_PROTOCOL_VERSION,
            app_version=version,
            network=self._network,
            address=address,
            protocol="grpc",
            server_cert=cert_der,
            multiplex=env.multiplex,
        )
        return self._line

    def _bind(
        self, server: grpc.Server, env: PluginEnv, credentials: grpc.ServerCredentials | None
    ) -> str:
        def add(target: str) -> int:
            try:
                if credentials is None:
                    return server.add_insecure_port(target)
                return server.add_secure_port(target, credentials)
            except RuntimeError:
                return 0

        return self._listen(env, lambda network, address: bool(add(grpc_target(network, address))))

    def _bind_relay(
        self, server: grpc.Server, env: PluginEnv, ours: CertificateBundle, host_der: bytes
    ) -> str:
        # In the host's socket dir when it gave one (it removes that); otherwise named like
        # a host's socket dir, with our pid, so stale cleanup removes it after a SIGKILL.
        self._private_dir, private = private_socket_dir("relay", env.socket_dir)
        if not add_unix_port(server, private):
            raise ConfigurationError(f"cannot listen on unix socket {private!r}")

        def listen(network: str, address: str) -> bool:
            try:
                self._relay = start_server_relay((network, address), private, ours, host_der)
            except OSError:
                return False
            return True

        return self._listen(env, listen)

    def _listen(self, env: PluginEnv, bind: Callable[[str, str], bool]) -> str:
        address = listen(
            self._network,
            bind,
            socket_dir=env.socket_dir,
            min_port=env.min_port,
            max_port=env.max_port,
        )
        if self._network == "unix":
            self._socket_path = address
            self._apply_group(env, address)
        return address

    @staticmethod
    def _apply_group(env: PluginEnv, path: str) -> None:
        # As go-plugin: the socket 0660 and owned by the group; the host made the dir 0770.
        if env.socket_group:
            set_group_writable(path, env.socket_group, 0o660)

    def announce(self, stdout: IO[str] | None = None) -> None:
        """Print the handshake line, then send sys.stdout/sys.stderr writes to GRPCStdio
        until :meth:`stop`."""
        line = self.handshake_line.format() + "\n"
        if stdout is not None:
            stdout.write(line)
            stdout.flush()
        else:
            if sys.stdout is not None:
                sys.stdout.flush()
            os.write(1, line.encode())
        if self._stdio_service:
            self._redirect.install()

    def wait(self) -> None:
        """Block until the host asks for shutdown or :meth:`stop` is called."""
        self._stopped.wait()
        if self._server is not None:
            self._server.wait_for_termination()

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and remove the socket;
        sys.stdout/sys.stderr are the process's own again (see ``StdioRedirect``)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._redirect.restore()
        self._stdio.wait_empty(0.5)
        self._stdio.close()
        if self._broker is not None:
            self._broker.close()
            set_current(None)
        if self._server is not None:
            # Returning from the Shutdown RPC first, then stopping, like go-plugin.
            self._server.stop(grace)
        if self._relay is not None:
            self._relay.close()
        if self._mux is not None:
            self._mux.close()
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)


def serve(
    register: Register | Mapping[int, Register],
    *,
    handshake: HandshakeConfig = AOG_HANDSHAKE,
    log_level: int = logging.DEBUG,
    on_ready: Callable[[], None] | None = None,
    **options: Unpack[ServerOptions],
) -> None:
    """Serve a plugin until the host shuts it down; exit 1 when not started by a host.

    ``register`` adds the plugin's servicers (or maps app versions to such functions);
    ``on_ready`` runs once the handshake is printed (output from then on goes to GRPCStdio).
    ``options`` are :class:`PluginServer`'s keywords (:class:`ServerOptions`), e.g.
    ``max_workers=32`` to run at most 32 of the plugin's calls at once (default: no fixed
    limit, a thread for every call that needs one; health, Shutdown and stdio never wait
    for them).
    Logs go to stderr as hclog JSON; SIGINT is ignored and SIGTERM stops cleanly.
    Host settings the plugin cannot serve with (ports, socket dir, certificate, group),
    and a ``register`` or ``on_ready`` that raises, end it with one "plugin init error"
    record and exit 1, nothing left behind. ``on_ready`` must return: the plugin serves
    after it.
    """
    configure_logging(log_level)
    log_thread_failures()
    server = PluginServer(register, handshake=handshake, **options)
    try:
        server.start()
    except CookieMissing:
        sys.exit(1)
    except (AogPluginsError, OSError) as exc:
        # A host's settings this plugin cannot serve with (a port range, a socket dir, a
        # certificate, a group): one line for the host to show, as go-plugin's "plugin init
        # error", nothing left behind (start() cleaned up).
        _log.error("plugin init error: %s", exc)
        sys.exit(1)
    except Exception as exc:
        # Its own code (the register function) failed: one error record, which go-plugin's
        # host shows at ERROR as it does a Go panic (a bare traceback is DEBUG there).
        _log.exception("plugin init error: the plugin failed to start: %r", exc)
        sys.exit(1)
    # Like Go plugins: a Ctrl-C meant for the host's terminal is not ours to act on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(
        signal.SIGTERM, lambda signum, frame: start_thread(threading.Thread(target=server.stop))
    )
    try:
        server.announce()
        if on_ready is not None:
            on_ready()
    except Exception:
        # The logger writes to the real stderr (sys.stderr goes to GRPCStdio by now).
        _log.exception("plugin init error: the plugin failed right after its handshake")
        server.stop(0.0)
        sys.exit(1)
    server.wait()
