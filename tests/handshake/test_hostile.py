"""Hostile handshake values: each ends in a typed error, never a bare ValueError and the like."""

from __future__ import annotations

import pytest

from aog_plugins.errors import (
    CertificateError,
    MalformedHandshakeError,
    ServerCertificateError,
)
from aog_plugins.handshake import (
    CertificateBundle,
    certificate_curve,
    decode_server_cert,
    encode_server_cert,
    grpcio_can_verify,
    parse_handshake_line,
)

_EC_PUBLIC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1
_UNKNOWN_OID = bytes.fromhex("06072a030405060708")  # 1.2.3.4.5.6.7.8, same length


def unknown_key_certificate(bundle: CertificateBundle) -> bytes:
    """A well-formed certificate whose key algorithm nobody knows (parsed lazily)."""
    assert bundle.cert_der.count(_EC_PUBLIC_KEY_OID) == 1
    return bundle.cert_der.replace(_EC_PUBLIC_KEY_OID, _UNKNOWN_OID)


@pytest.mark.parametrize("field", [0, 1])
@pytest.mark.parametrize("number", ["9" * 5000, "9" * 20, "-" + "9" * 19, "+" + "1" * 4400])
def test_huge_version_numbers_are_malformed(field: int, number: str) -> None:
    parts = ["1", "1", "unix", "/tmp/plugin1", "grpc", ""]
    parts[field] = number
    with pytest.raises(MalformedHandshakeError, match="not a 64-bit integer") as info:
        parse_handshake_line("|".join(parts))
    assert len(str(info.value)) < 1000, "the message shows a preview, not 5000 digits"


def test_largest_int64_is_still_a_number() -> None:
    line = parse_handshake_line(f"1|{2**63 - 1}|unix|/tmp/plugin1|grpc|")
    assert line.app_version == 2**63 - 1


def test_huge_port_is_malformed() -> None:
    with pytest.raises(MalformedHandshakeError, match="port"):
        parse_handshake_line("1|1|tcp|127.0.0.1:" + "9" * 5000 + "|grpc|")


def test_unknown_key_algorithm_in_server_cert(bundles: dict[str, CertificateBundle]) -> None:
    der = unknown_key_certificate(bundles["P-256"])
    field6 = encode_server_cert(der)
    with pytest.raises(ServerCertificateError, match=r"public key cannot be used"):
        decode_server_cert(field6)
    with pytest.raises(ServerCertificateError, match="handshake field 6"):
        parse_handshake_line(f"1|1|unix|/tmp/plugin1|grpc|{field6}")
    for check in (grpcio_can_verify, certificate_curve):
        with pytest.raises(CertificateError, match="public key cannot be used"):
            check(der)


def test_nul_in_unix_path_is_malformed() -> None:
    with pytest.raises(MalformedHandshakeError, match="NUL"):
        parse_handshake_line("1|1|unix|/tmp/aogp-1/plugin1\0/../../victim|grpc|")
