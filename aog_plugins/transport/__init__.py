"""Transport: how bytes reach a plugin, for both the host and the plugin side.

Dialing and listening on unix sockets and loopback TCP, and the TLS relay that carries
AutoMTLS for certificates grpcio cannot handle (Go's P-521 keys), with exact-certificate
pinning. ``process/`` (host) and ``server/`` (plugin) both build on this package and never
on each other.
"""

from aog_plugins.transport._broker import (
    DIAL_TIMEOUT,
    BrokerCore,
    BrokerServer,
    BrokerTLS,
    ConnInfo,
    Knock,
    dial_timeout,
)
from aog_plugins.transport._brokerbind import conninfo_from_pb, conninfo_to_pb
from aog_plugins.transport._dial import (
    CHANNEL_OPTIONS,
    HEALTH_SERVICE,
    ClientTLS,
    DialTarget,
    close_channel,
    is_connected,
    is_failing,
    make_stub,
    open_aio_channel,
    open_channel,
)
from aog_plugins.transport._listen import (
    MAX_UNIX_PATH,
    Bind,
    add_unix_port,
    grpc_target,
    listen,
    pid_named_dir,
    private_socket_dir,
    resolve_group,
    set_group_writable,
    unix_socket_path,
)
from aog_plugins.transport._mux import Mux, MuxListener, StreamTLS
from aog_plugins.transport._relay import Relay
from aog_plugins.transport._seconds import NO_LIMIT_BEYOND, seconds
from aog_plugins.transport._threads import (
    ASYNC_SIGNALS,
    signals_blocked,
    signals_unblocked,
    start_thread,
)
from aog_plugins.transport._tlsconn import presented_certificate, verify_failure
from aog_plugins.transport._tlsrelay import (
    ClientRelayPlan,
    start_client_relay,
    start_server_relay,
)

__all__ = [
    "ASYNC_SIGNALS",
    "CHANNEL_OPTIONS",
    "DIAL_TIMEOUT",
    "HEALTH_SERVICE",
    "MAX_UNIX_PATH",
    "NO_LIMIT_BEYOND",
    "Bind",
    "BrokerCore",
    "BrokerServer",
    "BrokerTLS",
    "ClientRelayPlan",
    "ClientTLS",
    "ConnInfo",
    "DialTarget",
    "Knock",
    "Mux",
    "MuxListener",
    "Relay",
    "StreamTLS",
    "add_unix_port",
    "close_channel",
    "conninfo_from_pb",
    "conninfo_to_pb",
    "dial_timeout",
    "grpc_target",
    "is_connected",
    "is_failing",
    "listen",
    "make_stub",
    "open_aio_channel",
    "open_channel",
    "pid_named_dir",
    "presented_certificate",
    "private_socket_dir",
    "resolve_group",
    "seconds",
    "set_group_writable",
    "signals_blocked",
    "signals_unblocked",
    "start_client_relay",
    "start_server_relay",
    "start_thread",
    "unix_socket_path",
    "verify_failure",
]
