"""The environment a host gives a plugin, built and read as plain dicts (no os.environ here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aog_plugins.errors import ConfigurationError
from aog_plugins.handshake._certs import pem_to_der
from aog_plugins.handshake._config import HandshakeConfig, check_env_text
from aog_plugins.handshake._text import GO_TRUE, parse_go_int
from aog_plugins.handshake._versions import format_protocol_versions, parse_protocol_versions

__all__ = [
    "COOKIE_REJECTED_MESSAGE",
    "DEFAULT_MAX_PORT",
    "DEFAULT_MIN_PORT",
    "ENV_CLIENT_CERT",
    "ENV_MAX_PORT",
    "ENV_MIN_PORT",
    "ENV_MULTIPLEX_GRPC",
    "ENV_PROTOCOL_VERSIONS",
    "ENV_UNIX_SOCKET_DIR",
    "ENV_UNIX_SOCKET_GROUP",
    "PluginEnv",
    "host_plugin_env",
    "read_plugin_env",
]

ENV_PROTOCOL_VERSIONS = "PLUGIN_PROTOCOL_VERSIONS"
ENV_MIN_PORT = "PLUGIN_MIN_PORT"
ENV_MAX_PORT = "PLUGIN_MAX_PORT"
ENV_CLIENT_CERT = "PLUGIN_CLIENT_CERT"
ENV_UNIX_SOCKET_DIR = "PLUGIN_UNIX_SOCKET_DIR"
ENV_UNIX_SOCKET_GROUP = "PLUGIN_UNIX_SOCKET_GROUP"
ENV_MULTIPLEX_GRPC = "PLUGIN_MULTIPLEX_GRPC"
DEFAULT_MIN_PORT = 10000
DEFAULT_MAX_PORT = 25000

COOKIE_REJECTED_MESSAGE = (
    "This binary is a plugin. These are not meant to be executed directly. "
    "Start the host program that uses this plugin instead: it launches the plugin itself "
    "and sets the environment the plugin needs (the magic cookie).\n"
)
"""What a plugin prints on stderr (then exits 1) when started without the magic cookie.

The first sentence is exactly Go's: hosts recognise cookie rejection by it.
"""


def _check_port(name: str, port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"{name} must be a port number from 1 to 65535, got {port!r}")
    return port


def _check_port_range(min_port: object, max_port: object) -> None:
    low = _check_port(ENV_MIN_PORT, min_port)
    high = _check_port(ENV_MAX_PORT, max_port)
    if low > high:
        raise ConfigurationError(
            f"{ENV_MIN_PORT} ({low}) is greater than {ENV_MAX_PORT} ({high}): "
            f"the plugin would have no TCP port to listen on"
        )


def host_plugin_env(
    config: HandshakeConfig,
    versions: Sequence[int],
    *,
    client_cert_pem: bytes | None = None,
    socket_dir: str | None = None,
    socket_group: str | None = None,
    min_port: int = DEFAULT_MIN_PORT,
    max_port: int = DEFAULT_MAX_PORT,
    multiplex: bool = False,
) -> dict[str, str]:
    """The variables a host adds to a plugin's environment (cookie, versions, ports, TLS).

    ``client_cert_pem`` turns on AutoMTLS in the plugin; ``multiplex`` asks for gRPC broker
    multiplexing (PLUGIN_MULTIPLEX_GRPC=true, as go-plugin's GRPCBrokerMultiplex).
    """
    if not versions:
        raise ConfigurationError("a host must offer at least one app protocol version")
    _check_port_range(min_port, max_port)
    env = {
        config.magic_cookie_key: config.magic_cookie_value,
        ENV_PROTOCOL_VERSIONS: format_protocol_versions(versions),
        ENV_MIN_PORT: str(min_port),
        ENV_MAX_PORT: str(max_port),
    }
    if client_cert_pem is not None:
        pem_to_der(client_cert_pem)  # CertificateError now rather than a confused plugin later
        env[ENV_CLIENT_CERT] = client_cert_pem.decode("ascii")
    if socket_dir is not None:
        env[ENV_UNIX_SOCKET_DIR] = check_env_text("socket_dir", socket_dir)
    if socket_group is not None:
        env[ENV_UNIX_SOCKET_GROUP] = check_env_text("socket_group", socket_group)
    if multiplex:
        env[ENV_MULTIPLEX_GRPC] = "true"
    return env


@dataclass(frozen=True)
class PluginEnv:
    """What a plugin learns from its environment; see :func:`read_plugin_env`."""

    cookie_ok: bool
    offered_versions: tuple[int, ...] = ()
    invalid_versions: tuple[str, ...] = ()
    client_cert_pem: bytes | None = None
    min_port: int = DEFAULT_MIN_PORT
    max_port: int = DEFAULT_MAX_PORT
    socket_dir: str | None = None
    socket_group: str | None = None
    multiplex: bool = False

    @property
    def auto_mtls(self) -> bool:
        """True when the host asked for AutoMTLS (it passed its client certificate)."""
        return self.client_cert_pem is not None


def _read_port(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "")
    if not text:
        return default
    port = parse_go_int(text.strip())
    if port is None:
        raise ConfigurationError(f"{name} must be a port number from 1 to 65535, got {text!r}")
    return port


def read_plugin_env(environ: Mapping[str, str], config: HandshakeConfig) -> PluginEnv:
    """Plugin side: read the host's variables from ``environ`` (e.g. a copy of os.environ).

    Tolerant like go-plugin: bad version entries are reported, not fatal; bad ports are.
    """
    offered, invalid = parse_protocol_versions(environ.get(ENV_PROTOCOL_VERSIONS, ""))
    min_port = _read_port(environ, ENV_MIN_PORT, DEFAULT_MIN_PORT)
    max_port = _read_port(environ, ENV_MAX_PORT, DEFAULT_MAX_PORT)
    _check_port_range(min_port, max_port)
    cert = environ.get(ENV_CLIENT_CERT, "")
    return PluginEnv(
        cookie_ok=environ.get(config.magic_cookie_key) == config.magic_cookie_value,
        offered_versions=offered,
        invalid_versions=invalid,
        client_cert_pem=cert.encode("utf-8") if cert else None,
        min_port=min_port,
        max_port=max_port,
        socket_dir=environ.get(ENV_UNIX_SOCKET_DIR) or None,
        socket_group=environ.get(ENV_UNIX_SOCKET_GROUP) or None,
        multiplex=environ.get(ENV_MULTIPLEX_GRPC, "") in GO_TRUE,
    )
