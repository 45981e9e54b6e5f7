"""The handshake line a plugin prints on stdout: parse it, format it, and check it host-side."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from aog_plugins.errors import (
    ConfigurationError,
    IncompatibleAppVersionError,
    IncompatibleCoreVersionError,
    MalformedHandshakeError,
    ServerCertificateError,
    UnknownNetworkError,
    UnsupportedProtocolError,
)
from aog_plugins.handshake._certs import decode_server_cert, encode_server_cert
from aog_plugins.handshake._config import CORE_PROTOCOL_VERSION
from aog_plugins.handshake._text import GO_FALSE, GO_TRUE, parse_go_int, preview

__all__ = ["HandshakeLine", "check_host_acceptance", "parse_handshake_line"]

Network = Literal["unix", "tcp"]
Protocol = Literal["grpc", "netrpc"]

_NETWORKS: tuple[Network, ...] = ("unix", "tcp")
_PROTOCOLS: tuple[Protocol, ...] = ("grpc", "netrpc")
_LEGACY_CERT_MAX = 50  # go-plugin ignores a field 6 this short (old plugins put junk there)
_EXPECTED = (
    "expected CORE|APP|NETWORK|ADDRESS[|PROTOCOL[|SERVERCERT[|MUX]]], "
    "e.g. '1|1|unix|/tmp/plugin123|grpc|'"
)
_DEFAULT_TCP_HOST = "127.0.0.1"


@dataclass(frozen=True)
class HandshakeLine:
    """A parsed handshake: where the plugin listens, what it speaks, and its TLS certificate.

    ``server_cert`` is the plugin's DER certificate (AutoMTLS) or None.
    """

    core_version: int
    app_version: int
    network: Network
    address: str
    protocol: Protocol
    server_cert: bytes | None
    multiplex: bool = False

    def __repr__(self) -> str:
        cert = "None" if self.server_cert is None else f"<{len(self.server_cert)} bytes DER>"
        return (
            f"HandshakeLine(core_version={self.core_version!r}, "
            f"app_version={self.app_version!r}, network={self.network!r}, "
            f"address={self.address!r}, protocol={self.protocol!r}, server_cert={cert}, "
            f"multiplex={self.multiplex!r})"
        )

    @property
    def tcp_host_port(self) -> tuple[str, int] | None:
        """``(host, port)`` for a tcp address (IPv6 without brackets); None for unix."""
        if self.network != "tcp":
            return None
        try:
            return split_host_port(self.address)
        except ValueError as exc:
            raise ConfigurationError(f"invalid tcp address {self.address!r}: {exc}") from None

    @property
    def grpc_target(self) -> str:
        """The target string for ``grpc.*_channel``: ``unix:<path>`` or ``host:port``."""
        if self.network == "unix":
            if not self.address:
                raise ConfigurationError("a unix handshake needs a non-empty socket path")
            return f"unix:{self.address}"
        host_port = self.tcp_host_port
        if host_port is None:
            raise ConfigurationError(f"unknown network {self.network!r}: expected 'unix' or 'tcp'")
        return _join_host_port(*host_port)

    def format(self) -> str:
        """The line a plugin prints (no newline): six fields, a seventh when multiplexing."""
        for name in ("core_version", "app_version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"{name} must be an integer, got {value!r}")
        if self.network not in _NETWORKS:
            raise ConfigurationError(f"network must be 'unix' or 'tcp', got {self.network!r}")
        if self.protocol not in _PROTOCOLS:
            raise ConfigurationError(f"protocol must be 'grpc' or 'netrpc', got {self.protocol!r}")
        if not self.address or any(c in self.address for c in "|\r\n"):
            raise ConfigurationError(
                f"address must be non-empty without '|' or line breaks, got {self.address!r}"
            )
        cert = "" if self.server_cert is None else encode_server_cert(self.server_cert)
        fields = [
            str(self.core_version),
            str(self.app_version),
            self.network,
            self.address,
            self.protocol,
            cert,
        ]
        if self.multiplex:
            fields.append("true")
        return "|".join(fields)


def parse_handshake_line(line: str | bytes) -> HandshakeLine:
    """Parse the first line a plugin printed on stdout into a HandshakeLine.

    Each problem raises its own HandshakeError subclass, carrying the text in ``.line``.
    """
    if isinstance(line, (bytes, bytearray, memoryview)):
        data = bytes(line)
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data.decode("utf-8", "backslashreplace")
            raise MalformedHandshakeError(
                f"not a go-plugin handshake: the line is not UTF-8 text ({exc.reason} at byte "
                f"{exc.start}), got {preview(data)}; {_EXPECTED}. A plugin must print nothing "
                f"on stdout before its handshake line.",
                line=text,
            ) from None
    elif isinstance(line, str):
        raw = line
    else:
        raise ConfigurationError(f"a handshake line is str or bytes, got {type(line).__name__}")
    return _parse(raw)


def _malformed(raw: str, problem: str) -> MalformedHandshakeError:
    return MalformedHandshakeError(
        f"not a go-plugin handshake: {problem}; got {preview(raw.strip())}; {_EXPECTED}. "
        f"A plugin must print nothing on stdout before its handshake line.",
        line=raw,
    )


def _parse(raw: str) -> HandshakeLine:
    text = raw.strip()
    if not text:
        raise _malformed(raw, "the plugin printed an empty line")
    if "\n" in text or "\r" in text:
        raise _malformed(raw, "the text holds more than one line")
    parts = text.split("|")
    if not 4 <= len(parts) <= 7:
        raise _malformed(raw, f"it has {len(parts)} '|'-separated fields, not 4 to 7")

    core = parse_go_int(parts[0])
    if core is None:
        raise _malformed(
            raw, f"the core protocol version {preview(parts[0], 40)} is not a 64-bit integer"
        )
    if core != CORE_PROTOCOL_VERSION:
        raise IncompatibleCoreVersionError(
            f"incompatible core protocol version: expected {CORE_PROTOCOL_VERSION}, but the "
            f"plugin speaks {core} (field 1 of {preview(text)}); it was built with a go-plugin "
            f"this host does not know: rebuild it with a go-plugin release that speaks core "
            f"protocol {CORE_PROTOCOL_VERSION}",
            line=raw,
        )
    app = parse_go_int(parts[1])
    if app is None:
        raise _malformed(
            raw, f"the app protocol version {preview(parts[1], 40)} is not a 64-bit integer"
        )

    network = parts[2]
    if network not in _NETWORKS:
        raise UnknownNetworkError(
            f"unknown address type {network!r} in handshake field 3 of {preview(text)}: "
            f"expected 'unix' or 'tcp'; the plugin is not a go-plugin plugin or uses a "
            f"transport this host does not support",
            line=raw,
        )
    address = parts[3]
    if not address:
        raise _malformed(raw, "the address (field 4) is empty")
    if network == "unix" and "\0" in address:
        # The kernel would stop at the NUL and dial a different, shorter path.
        raise _malformed(raw, "the unix socket path (field 4) contains a NUL byte")
    if network == "tcp":
        try:
            address = _join_host_port(*split_host_port(address))
        except ValueError as exc:
            raise _malformed(raw, f"the tcp address {address!r} is invalid: {exc}") from None

    protocol = parts[4] if len(parts) >= 5 else "netrpc"
    if protocol not in _PROTOCOLS:
        raise UnsupportedProtocolError(
            f"unsupported plugin protocol {protocol!r} in handshake field 5 of "
            f"{preview(text)}: expected 'grpc' (or 'netrpc', which a Python host cannot "
            f"speak); build the plugin with GRPC",
            line=raw,
        )

    cert: bytes | None = None
    if len(parts) >= 6 and len(parts[5]) > _LEGACY_CERT_MAX:
        try:
            cert = decode_server_cert(parts[5])
        except ServerCertificateError as exc:
            raise ServerCertificateError(
                f"{exc.message} (handshake field 6); the plugin's AutoMTLS certificate is "
                f"unusable: make the plugin print its DER certificate as unpadded standard "
                f"base64, or leave field 6 empty",
                line=raw,
            ) from None

    multiplex = False
    if len(parts) == 7:
        flag = parts[6]
        if flag in GO_TRUE:
            multiplex = True
        elif flag and flag not in GO_FALSE:
            raise _malformed(
                raw, f"the multiplex flag (field 7) is {flag!r}; expected 'true', 'false' or empty"
            )

    return HandshakeLine(
        core_version=core,
        app_version=app,
        network=network,
        address=address,
        protocol=protocol,
        server_cert=cert,
        multiplex=multiplex,
    )


def check_host_acceptance(
    line: HandshakeLine, offered_versions: Collection[int], *, multiplex: bool = False
) -> None:
    """Host side: reject a handshake this Python host cannot use, with a typed error.

    Checks the app version against what was offered, then grpc, then that field 7 matches
    ``multiplex`` (whether the host set PLUGIN_MULTIPLEX_GRPC).
    """
    shown = _safe_format(line)
    if line.core_version != CORE_PROTOCOL_VERSION:
        raise IncompatibleCoreVersionError(
            f"incompatible core protocol version: expected {CORE_PROTOCOL_VERSION}, but the "
            f"plugin speaks {line.core_version}",
            line=shown,
        )
    if line.app_version not in offered_versions:
        offered = ", ".join(str(v) for v in sorted(offered_versions, reverse=True)) or "none"
        raise IncompatibleAppVersionError(
            f"incompatible app protocol version: the plugin speaks version {line.app_version} "
            f"but the host offered {offered}; use a plugin built for one of the offered "
            f"versions, or make the host offer version {line.app_version}",
            line=shown,
        )
    if line.protocol != "grpc":
        raise UnsupportedProtocolError(
            f"unsupported plugin protocol {line.protocol!r}: expected 'grpc'; netrpc plugins "
            f"cannot be hosted from Python; build the plugin with GRPC",
            line=shown,
        )
    if line.multiplex and not multiplex:
        raise UnsupportedProtocolError(
            "the plugin announced gRPC broker multiplexing (handshake field 7 'true') that "
            "this host did not ask for: expected no 7th field or 'false'. The host did not set "
            "PLUGIN_MULTIPLEX_GRPC, so the plugin must not enable multiplexing on its own",
            line=shown,
        )
    if multiplex and not line.multiplex:
        raise UnsupportedProtocolError(
            "the host asked for gRPC broker multiplexing (PLUGIN_MULTIPLEX_GRPC) but the "
            "plugin does not support it (no 'true' in handshake field 7): rebuild a Go plugin "
            "with go-plugin >= 1.6, or launch without multiplex=True",
            line=shown,
        )


def _safe_format(line: HandshakeLine) -> str:
    try:
        return line.format()
    except ConfigurationError:
        return repr(line)


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; an empty host is 127.0.0.1. ValueError says why."""
    if address.startswith("["):
        end = address.find("]")
        if end == -1:
            raise ValueError("'[' without a closing ']'; expected '[IPv6]:PORT'")
        host, rest = address[1:end], address[end + 1 :]
        if not rest.startswith(":"):
            raise ValueError("expected ':PORT' after the bracketed IPv6 address")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT")
        if ":" in host:
            raise ValueError("an IPv6 host must be in brackets, like '[::1]:1234'")
        if any(c.isspace() or c in "[]/" for c in host):
            raise ValueError(f"{host!r} is not a host name or address")
        host = host or _DEFAULT_TCP_HOST
    port = parse_go_int(port_text) if port_text.isascii() and port_text.isdigit() else None
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"the port {port_text!r} is not an integer from 1 to 65535")
    return host, port


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
