"""parse_handshake_line / HandshakeLine: the real lines, every field form, every malformed case."""

from __future__ import annotations

import base64
import dataclasses
import itertools

import pytest

from aog_plugins.errors import (
    ConfigurationError,
    HandshakeError,
    IncompatibleCoreVersionError,
    MalformedHandshakeError,
    PluginStartError,
    ServerCertificateError,
    UnknownNetworkError,
    UnsupportedProtocolError,
)
from aog_plugins.handshake import (
    CertificateBundle,
    HandshakeLine,
    encode_server_cert,
    parse_handshake_line,
)

UNIX = "1|1|unix|/tmp/plugin946119306|grpc|"  # real lines, protocol.md section 1
TCP = "1|1|tcp|127.0.0.1:1234|grpc"


def test_real_unix_line() -> None:
    assert parse_handshake_line(UNIX) == HandshakeLine(
        core_version=1,
        app_version=1,
        network="unix",
        address="/tmp/plugin946119306",
        protocol="grpc",
        server_cert=None,
        multiplex=False,
    )


def test_real_unix_line_targets() -> None:
    line = parse_handshake_line(UNIX)
    assert line.grpc_target == "unix:/tmp/plugin946119306"
    assert line.tcp_host_port is None


def test_real_tcp_line_has_five_fields() -> None:
    line = parse_handshake_line(TCP)
    assert (line.network, line.address, line.protocol) == ("tcp", "127.0.0.1:1234", "grpc")
    assert line.server_cert is None
    assert line.multiplex is False
    assert line.tcp_host_port == ("127.0.0.1", 1234)
    assert line.grpc_target == "127.0.0.1:1234"


def test_four_fields_mean_netrpc() -> None:
    line = parse_handshake_line("1|3|unix|/tmp/p")
    assert (line.app_version, line.protocol, line.server_cert) == (3, "netrpc", None)


def test_explicit_netrpc_is_parsed() -> None:
    assert parse_handshake_line("1|1|tcp|127.0.0.1:1|netrpc|").protocol == "netrpc"


def test_six_fields_with_certificate(bundles: dict[str, CertificateBundle]) -> None:
    der = bundles["P-521"].cert_der
    line = parse_handshake_line(f"1|1|unix|/tmp/p|grpc|{encode_server_cert(der)}")
    assert line.server_cert == der


def test_padded_certificate_is_accepted(bundles: dict[str, CertificateBundle]) -> None:
    der = bundles["P-256"].cert_der
    padded = base64.b64encode(der).decode()
    assert parse_handshake_line(f"1|1|unix|/tmp/p|grpc|{padded}").server_cert == der


@pytest.mark.parametrize(
    ("field7", "expected"),
    [("true", True), ("false", False), ("", False), ("True", True), ("1", True), ("0", False)],
)
def test_seventh_field_multiplex(field7: str, expected: bool) -> None:
    assert parse_handshake_line(f"1|1|unix|/tmp/p|grpc||{field7}").multiplex is expected


@pytest.mark.parametrize(
    "field6",
    ["x", "A" * 50, "!" * 50, "legacy-extra-data", "=" * 50],
    ids=["one-char", "50-base64-chars", "50-junk-chars", "legacy-text", "50-padding"],
)
def test_legacy_short_field6_is_ignored(field6: str) -> None:
    assert parse_handshake_line(f"1|1|unix|/tmp/p|grpc|{field6}").server_cert is None


def test_empty_tcp_host_means_loopback() -> None:
    line = parse_handshake_line("1|1|tcp|:4321|grpc|")
    assert line.address == "127.0.0.1:4321"
    assert line.tcp_host_port == ("127.0.0.1", 4321)
    assert line.grpc_target == "127.0.0.1:4321"


@pytest.mark.parametrize(
    ("address", "host", "target"),
    [
        ("[::1]:1234", "::1", "[::1]:1234"),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", "[fe80::1%eth0]:80"),
        ("[2001:db8::42]:65535", "2001:db8::42", "[2001:db8::42]:65535"),
    ],
)
def test_ipv6_addresses(address: str, host: str, target: str) -> None:
    line = parse_handshake_line(f"1|1|tcp|{address}|grpc|")
    assert line.tcp_host_port == (host, int(target.rsplit(":", 1)[1]))
    assert line.grpc_target == target


def test_host_name_and_port_normalisation() -> None:
    line = parse_handshake_line("1|1|tcp|localhost:08080|grpc|")
    assert line.tcp_host_port == ("localhost", 8080)
    assert line.address == "localhost:8080"


@pytest.mark.parametrize(
    ("path", "target"),
    [("/tmp/x", "unix:/tmp/x"), ("plugin.sock", "unix:plugin.sock"), ("/a b/c", "unix:/a b/c")],
)
def test_unix_paths(path: str, target: str) -> None:
    line = parse_handshake_line(f"1|1|unix|{path}|grpc|")
    assert line.address == path
    assert line.grpc_target == target


@pytest.mark.parametrize(
    "raw",
    [
        UNIX.encode() + b"\n",
        UNIX.encode() + b"\r\n",
        b"  " + UNIX.encode() + b" \t\r\n",
        bytearray(UNIX.encode()),
        UNIX + "\n",
        "\t" + UNIX + "\r\n",
    ],
    ids=["bytes-lf", "bytes-crlf", "bytes-spaces", "bytearray", "str-lf", "str-tab-crlf"],
)
def test_newlines_whitespace_and_bytes(raw: str | bytes) -> None:
    assert parse_handshake_line(raw) == parse_handshake_line(UNIX)


def test_go_atoi_sign_is_accepted() -> None:
    assert parse_handshake_line("+1|+2|unix|/p|grpc|").app_version == 2


# (id, raw line, expected error class, fragments the message must contain)
MALFORMED: list[tuple[str, str | bytes, type[HandshakeError], tuple[str, ...]]] = [
    ("empty", "", MalformedHandshakeError, ("empty", "expected CORE|APP")),
    ("blank", "  \r\n", MalformedHandshakeError, ("empty", "nothing on stdout")),
    ("prose", "hello world", MalformedHandshakeError, ("'hello world'", "1 '|'", "4 to 7")),
    ("log-line", "[INFO] starting up", MalformedHandshakeError, ("'[INFO] starting up'",)),
    ("three-fields", "1|1|unix", MalformedHandshakeError, ("3 '|'", "'1|1|unix'")),
    ("eight-fields", "1|1|unix|/p|grpc||true|x", MalformedHandshakeError, ("8 '|'",)),
    ("two-lines", UNIX + "\n" + UNIX, MalformedHandshakeError, ("more than one line",)),
    ("core-word", "x|1|unix|/p|grpc|", MalformedHandshakeError, ("core", "'x'", "integer")),
    ("core-float", "1.0|1|unix|/p|grpc|", MalformedHandshakeError, ("core", "'1.0'")),
    ("core-space", "1 |1|unix|/p|grpc|", MalformedHandshakeError, ("core", "'1 '")),
    ("core-arabic-digit", "\u0661|1|unix|/p|grpc|", MalformedHandshakeError, ("core",)),
    ("core-underscore", "1_0|1|unix|/p|grpc|", MalformedHandshakeError, ("core", "'1_0'")),
    ("core-2", "2|1|unix|/p|grpc|", IncompatibleCoreVersionError, ("speaks 2", "expected 1")),
    ("core-0", "0|1|unix|/p|grpc|", IncompatibleCoreVersionError, ("speaks 0", "rebuild")),
    ("core-neg", "-1|1|unix|/p|grpc|", IncompatibleCoreVersionError, ("speaks -1",)),
    ("app-word", "1|v1|unix|/p|grpc|", MalformedHandshakeError, ("app", "'v1'", "integer")),
    ("app-empty", "1||unix|/p|grpc|", MalformedHandshakeError, ("app", "''")),
    ("net-udp", "1|1|udp|/p|grpc|", UnknownNetworkError, ("'udp'", "'unix' or 'tcp'")),
    ("net-upper", "1|1|UNIX|/p|grpc|", UnknownNetworkError, ("'UNIX'",)),
    ("net-empty", "1|1||/p|grpc|", UnknownNetworkError, ("''", "'unix' or 'tcp'")),
    ("net-unixgram", "1|1|unixgram|/p|grpc|", UnknownNetworkError, ("'unixgram'",)),
    ("addr-empty-unix", "1|1|unix||grpc|", MalformedHandshakeError, ("address", "empty")),
    ("addr-empty-tcp", "1|1|tcp||grpc|", MalformedHandshakeError, ("address", "empty")),
    ("tcp-no-port", "1|1|tcp|127.0.0.1|grpc|", MalformedHandshakeError, ("'127.0.0.1'", "PORT")),
    ("tcp-port-0", "1|1|tcp|127.0.0.1:0|grpc|", MalformedHandshakeError, ("'0'", "65535")),
    ("tcp-port-big", "1|1|tcp|127.0.0.1:65536|grpc|", MalformedHandshakeError, ("'65536'",)),
    ("tcp-port-name", "1|1|tcp|127.0.0.1:http|grpc|", MalformedHandshakeError, ("'http'",)),
    ("tcp-port-neg", "1|1|tcp|127.0.0.1:-1|grpc|", MalformedHandshakeError, ("'-1'",)),
    ("tcp-port-plus", "1|1|tcp|127.0.0.1:+80|grpc|", MalformedHandshakeError, ("'+80'",)),
    ("tcp-port-empty", "1|1|tcp|127.0.0.1:|grpc|", MalformedHandshakeError, ("port ''",)),
    ("tcp-v6-bare", "1|1|tcp|::1:1234|grpc|", MalformedHandshakeError, ("brackets", "[::1]")),
    ("tcp-v6-unclosed", "1|1|tcp|[::1:1234|grpc|", MalformedHandshakeError, ("']'",)),
    ("tcp-v6-no-colon", "1|1|tcp|[::1]1234|grpc|", MalformedHandshakeError, ("':PORT'",)),
    ("tcp-v6-not-ip", "1|1|tcp|[nope]:1234|grpc|", MalformedHandshakeError, ("'nope'", "IPv6")),
    ("tcp-v4-in-brackets", "1|1|tcp|[1.2.3.4]:1|grpc|", MalformedHandshakeError, ("IPv6",)),
    ("tcp-host-space", "1|1|tcp|local host:1|grpc|", MalformedHandshakeError, ("'local host'",)),
    ("proto-empty", "1|1|unix|/p||", UnsupportedProtocolError, ("''", "'grpc'")),
    ("proto-http2", "1|1|unix|/p|http2|", UnsupportedProtocolError, ("'http2'", "'grpc'")),
    ("proto-upper", "1|1|unix|/p|GRPC|", UnsupportedProtocolError, ("'GRPC'", "GRPC")),
    ("mux-maybe", "1|1|unix|/p|grpc||maybe", MalformedHandshakeError, ("'maybe'", "'true'")),
    ("mux-yes", "1|1|unix|/p|grpc||yes", MalformedHandshakeError, ("'yes'", "field 7")),
    ("cert-junk", "1|1|unix|/p|grpc|" + "!" * 51, ServerCertificateError, ("base64", "'!!!")),
    (
        "cert-urlsafe",
        "1|1|unix|/p|grpc|" + "-_" * 30,
        ServerCertificateError,
        ("base64", "standard alphabet"),
    ),
    (
        "cert-not-x509",
        "1|1|unix|/p|grpc|" + base64.b64encode(b"\x00" * 60).decode().rstrip("="),
        ServerCertificateError,
        ("60 bytes", "X.509"),
    ),
    (
        "cert-bad-length",
        "1|1|unix|/p|grpc|" + "A" * 53,
        ServerCertificateError,
        ("base64",),
    ),
    (
        "bytes-not-utf8",
        b"\xff\xfe1|1|unix|/p|grpc|",
        MalformedHandshakeError,
        ("UTF-8", "\\xff\\xfe", "nothing on stdout"),
    ),
]


@pytest.mark.parametrize(
    ("raw", "error", "fragments"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_lines_raise_their_own_error(
    raw: str | bytes, error: type[HandshakeError], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_handshake_line(raw)
    exc = info.value
    assert type(exc) is error
    assert isinstance(exc, PluginStartError)
    message = str(exc)
    assert "expected" in message
    for fragment in fragments:
        assert fragment in message
    expected_line = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
    assert exc.line == expected_line


def test_malformed_message_is_truncated_and_safe() -> None:
    garbage = "\x1b[31m" + "A" * 5000
    with pytest.raises(MalformedHandshakeError) as info:
        parse_handshake_line(garbage)
    message = str(info.value)
    assert len(message) < 600
    assert "\x1b" not in message
    assert "\\x1b" in message
    assert "5005 characters" in message
    assert info.value.line == garbage


def test_cert_boundary_51_chars_is_decoded() -> None:
    with pytest.raises(ServerCertificateError):
        parse_handshake_line("1|1|unix|/p|grpc|" + "A" * 51 + "Q")  # 52: decodes, not X.509


def test_truncated_certificate_is_rejected(bundles: dict[str, CertificateBundle]) -> None:
    text = encode_server_cert(bundles["P-256"].cert_der[:-10])
    with pytest.raises(ServerCertificateError) as info:
        parse_handshake_line(f"1|1|unix|/p|grpc|{text}")
    assert "field 6" in str(info.value)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(ConfigurationError):
        parse_handshake_line(123)  # type: ignore[arg-type]


# --- format() and round trips -------------------------------------------------------------

ADDRESSES = [
    ("unix", "/tmp/plugin1"),
    ("unix", "rel/sock"),
    ("tcp", "127.0.0.1:1234"),
    ("tcp", "[::1]:65535"),
    ("tcp", "localhost:1"),
]


@pytest.mark.parametrize(
    ("where", "protocol", "curve", "multiplex"),
    list(itertools.product(ADDRESSES, ["grpc", "netrpc"], [None, "P-256", "P-521"], [False, True])),
)
def test_format_parse_round_trip(
    where: tuple[str, str],
    protocol: str,
    curve: str | None,
    multiplex: bool,
    bundles: dict[str, CertificateBundle],
) -> None:
    network, address = where
    line = HandshakeLine(
        core_version=1,
        app_version=7 if multiplex else 1,
        network=network,  # type: ignore[arg-type]
        address=address,
        protocol=protocol,  # type: ignore[arg-type]
        server_cert=None if curve is None else bundles[curve].cert_der,
        multiplex=multiplex,
    )
    text = line.format()
    assert "\n" not in text
    assert text.count("|") == (6 if multiplex else 5)
    assert parse_handshake_line(text) == line
    assert parse_handshake_line(text.encode() + b"\n") == line


def test_format_matches_real_line() -> None:
    assert parse_handshake_line(UNIX).format() == UNIX
    assert parse_handshake_line(TCP).format() == TCP + "|"  # Go plugins always print 6 fields


def test_format_certificate_is_unpadded_base64(bundles: dict[str, CertificateBundle]) -> None:
    der = bundles["P-384"].cert_der
    line = HandshakeLine(1, 1, "unix", "/p", "grpc", der)
    field6 = line.format().split("|")[5]
    assert "=" not in field6
    assert base64.b64decode(field6 + "=" * (-len(field6) % 4)) == der


@pytest.mark.parametrize(
    "change",
    [
        {"address": ""},
        {"address": "/a|b"},
        {"address": "/a\nb"},
        {"network": "udp"},
        {"protocol": "http"},
        {"app_version": "1"},
        {"core_version": True},
    ],
    ids=["empty-address", "pipe", "newline", "network", "protocol", "app-str", "core-bool"],
)
def test_format_refuses_unprintable_lines(change: dict[str, object]) -> None:
    line = dataclasses.replace(parse_handshake_line(UNIX), **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        line.format()


def test_line_is_frozen_and_repr_hides_certificate(bundles: dict[str, CertificateBundle]) -> None:
    line = HandshakeLine(1, 1, "unix", "/p", "grpc", bundles["P-256"].cert_der)
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.address = "/q"  # type: ignore[misc]
    assert "bytes DER" in repr(line)
    assert len(repr(line)) < 250


def test_targets_of_constructed_tcp_line() -> None:
    line = HandshakeLine(1, 1, "tcp", ":99", "grpc", None)
    assert line.tcp_host_port == ("127.0.0.1", 99)
    assert line.grpc_target == "127.0.0.1:99"
    with pytest.raises(ConfigurationError):
        _ = HandshakeLine(1, 1, "tcp", "no-port", "grpc", None).grpc_target
