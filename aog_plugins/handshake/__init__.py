"""The go-plugin handshake, with no I/O: config, the handshake line, versions, env, certs.

Everything here takes strings or bytes and returns frozen values or raises the typed
errors of :mod:`aog_plugins.errors`, so host and plugin sides share one tested core.
"""

from aog_plugins.handshake._certs import (
    CertificateBundle,
    certificate_curve,
    decode_server_cert,
    der_to_pem,
    encode_server_cert,
    generate_certificate,
    grpcio_can_verify,
    pem_to_der,
)
from aog_plugins.handshake._config import AOG_HANDSHAKE, CORE_PROTOCOL_VERSION, HandshakeConfig
from aog_plugins.handshake._env import (
    COOKIE_REJECTED_MESSAGE,
    DEFAULT_MAX_PORT,
    DEFAULT_MIN_PORT,
    ENV_CLIENT_CERT,
    ENV_MAX_PORT,
    ENV_MIN_PORT,
    ENV_MULTIPLEX_GRPC,
    ENV_PROTOCOL_VERSIONS,
    ENV_UNIX_SOCKET_DIR,
    ENV_UNIX_SOCKET_GROUP,
    PluginEnv,
    host_plugin_env,
    read_plugin_env,
)
from aog_plugins.handshake._line import (
    HandshakeLine,
    check_host_acceptance,
    parse_handshake_line,
    split_host_port,
)
from aog_plugins.handshake._versions import (
    choose_plugin_version,
    format_protocol_versions,
    offered_versions,
    parse_protocol_versions,
    select_plugin_set,
)

__all__ = [
    "AOG_HANDSHAKE",
    "COOKIE_REJECTED_MESSAGE",
    "CORE_PROTOCOL_VERSION",
    "DEFAULT_MAX_PORT",
    "DEFAULT_MIN_PORT",
    "ENV_CLIENT_CERT",
    "ENV_MAX_PORT",
    "ENV_MIN_PORT",
    "ENV_MULTIPLEX_GRPC",
    "ENV_PROTOCOL_VERSIONS",
    "ENV_UNIX_SOCKET_DIR",
    "ENV_UNIX_SOCKET_GROUP",
    "CertificateBundle",
    "HandshakeConfig",
    "HandshakeLine",
    "PluginEnv",
    "certificate_curve",
    "check_host_acceptance",
    "choose_plugin_version",
    "decode_server_cert",
    "der_to_pem",
    "encode_server_cert",
    "format_protocol_versions",
    "generate_certificate",
    "grpcio_can_verify",
    "host_plugin_env",
    "offered_versions",
    "parse_handshake_line",
    "parse_protocol_versions",
    "pem_to_der",
    "read_plugin_env",
    "select_plugin_set",
    "split_host_port",
]
