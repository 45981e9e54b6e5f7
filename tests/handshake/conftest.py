"""Certificates shared by the handshake tests: made once per session (they are immutable)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from aog_plugins.handshake import CertificateBundle, generate_certificate

CURVES = ("P-256", "P-384", "P-521")


@pytest.fixture(scope="session")
def bundles() -> dict[str, CertificateBundle]:
    """One AutoMTLS bundle per supported curve."""
    return {curve: generate_certificate(curve) for curve in CURVES}


def self_signed_der(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
) -> bytes:
    """A minimal self-signed certificate for ``key`` (other key types than ours)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other")])
    now = datetime.datetime.now(datetime.timezone.utc)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="session")
def rsa_der() -> bytes:
    return self_signed_der(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.fixture(scope="session")
def ed25519_der() -> bytes:
    return self_signed_der(ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="session")
def secp256k1_der() -> bytes:
    return self_signed_der(ec.generate_private_key(ec.SECP256K1()))
