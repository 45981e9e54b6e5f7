"""Dial a plugin: grpcio channels, plaintext or pinned TLS, and whether one is connected."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

# grpc.insecure_channel() imports grpc._channel on first use (about 4 ms): imported here,
# it is paid with the import of this package, not by the first launch of a process.
import grpc
import grpc._channel
import grpc.aio

from aog_plugins.handshake import CertificateBundle, der_to_pem
from aog_plugins.transport._threads import signals_blocked

__all__ = [
    "CHANNEL_OPTIONS",
    "HEALTH_SERVICE",
    "ClientTLS",
    "DialTarget",
    "close_channel",
    "is_connected",
    "is_failing",
    "make_stub",
    "open_aio_channel",
    "open_channel",
]

HEALTH_SERVICE = "plugin"
"""The grpc.health.v1 service name every go-plugin server reports SERVING."""

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    # go-plugin's host lifts both limits; grpcio's default receive limit is 4 MiB.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # No keepalive pings: grpc-go servers answer them with GOAWAY too_many_pings.
    ("grpc.keepalive_time_ms", 2**31 - 1),
    # A plugin is a local socket: never route it through an HTTP(S)_PROXY from the
    # environment (go-plugin dials directly), and skip the proxy-mapper lookups.
    ("grpc.enable_http_proxy", 0),
    # grpcio's retry machinery costs ~10 us of host CPU per call; the client retries
    # idempotent reads itself (once, after a restart), and no service config asks for more.
    ("grpc.enable_retries", 0),
]


@dataclass(frozen=True)
class ClientTLS:
    """The host's certificate and the plugin's certificate it pins."""

    host: CertificateBundle
    plugin_cert_der: bytes


@dataclass(frozen=True)
class DialTarget:
    """Where a host's channels to one plugin process go (``target``), the pinned TLS
    they use, if any, and their receive cap: enough to open a second channel to the same
    process, e.g. a ``grpc.aio`` one."""

    target: str
    tls: ClientTLS | None = None
    max_receive: int | None = None


def _options(
    tls: ClientTLS | None, max_receive: int | None
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, int | str]]]:
    base = CHANNEL_OPTIONS
    if max_receive is not None:
        base = [
            *(o for o in CHANNEL_OPTIONS if o[0] != "grpc.max_receive_message_length"),
            ("grpc.max_receive_message_length", max_receive),
        ]
    if tls is None:
        return None, base
    creds = grpc.ssl_channel_credentials(
        root_certificates=der_to_pem(tls.plugin_cert_der),
        private_key=tls.host.key_pem,
        certificate_chain=tls.host.cert_pem,
    )
    # The certificate says localhost; the target is a socket path or 127.0.0.1.
    return creds, [*base, ("grpc.ssl_target_name_override", "localhost")]


def open_channel(
    target: str, tls: ClientTLS | None = None, *, max_receive: int | None = None
) -> grpc.Channel:
    """A channel to ``target`` (``unix:/path`` or ``host:port``), pinned TLS when given.

    ``max_receive`` caps the size of one received message (default: unlimited, like
    go-plugin's host); a bigger one fails that call with RESOURCE_EXHAUSTED.
    """
    creds, options = _options(tls, max_receive)
    with signals_blocked():  # the first channel starts grpcio's core threads
        if creds is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, creds, options=options)


def open_aio_channel(dial: DialTarget) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to the same place with the same pinning and options (call
    it on the event loop that will use the channel)."""
    creds, options = _options(dial.tls, dial.max_receive)
    with signals_blocked():  # and the first asyncio one, grpc.aio's poller thread
        if creds is None:
            return grpc.aio.insecure_channel(dial.target, options=options)
        return grpc.aio.secure_channel(dial.target, creds, options=options)


_CLOSING = threading.RLock()  # reentrant: a callback run by a close may make a stub
"""Held while the library closes a channel or makes a stub: see :func:`make_stub`."""

_S = TypeVar("_S")


def close_channel(channel: grpc.Channel) -> None:
    """Close ``channel``; a :func:`make_stub` for it runs wholly before or after."""
    with _CLOSING:
        channel.close()


def make_stub(factory: Callable[[grpc.Channel], _S], channel: grpc.Channel) -> _S:
    """``factory(channel)``, a generated stub, made only on an open channel.

    grpcio (1.85) crashes the process with a segmentation fault when a stub's registered
    method is made on a closed channel, and the library closes a plugin's channel when its
    process exits (calls in flight then fail at once): a call or a ping picking the channel
    that moment made its stub on it. Such a channel gives grpcio's own ``ValueError`` for
    a call on a closed channel instead; our closes (:func:`close_channel`) wait for a stub
    being made."""
    with _CLOSING:
        try:
            _core_state(channel)
        except ValueError:
            raise ValueError("Cannot invoke RPC on closed channel!") from None
        return factory(channel)


def _core_state(channel: grpc.Channel) -> int | None:
    """The connectivity state of grpcio's core channel behind ``channel``, asked on the
    caller's thread without starting to connect; None when it cannot be asked (not
    grpcio's own channel). Raises ``ValueError`` when the channel is closed."""
    check = getattr(getattr(channel, "_channel", None), "check_connectivity_state", None)
    return None if check is None else int(check(False))


def is_connected(channel: grpc.Channel) -> bool:
    """Whether ``channel`` is connected (READY) right now, asked on the caller's thread.

    grpcio's public ways to ask (``grpc.channel_ready_future``, ``subscribe``) start a
    thread that keeps polling after the answer; when the channel is closed under it, that
    thread dies with a "Channel closed!" traceback on stderr. The core channel answers
    synchronously instead. A channel that cannot be asked (closed, or not grpcio's own)
    counts as not connected.
    """
    try:
        state = _core_state(channel)
    except ValueError:  # closed
        return False
    return state is not None and state == int(grpc.ChannelConnectivity.READY.value[0])


def is_failing(channel: grpc.Channel) -> bool:
    """Whether ``channel``'s last connection attempt failed (TRANSIENT_FAILURE) and it has
    not connected since, asked on the caller's thread like :func:`is_connected`."""
    try:
        state = _core_state(channel)
    except ValueError:  # closed
        return False
    return state is not None and state == int(grpc.ChannelConnectivity.TRANSIENT_FAILURE.value[0])
