"""AutoMTLS material: throwaway self-signed certificates and their handshake encoding."""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

# Loading cryptography's OpenSSL backend costs milliseconds and happens on its first use:
# with AutoMTLS that is the first launch's certificate, made before the plugin can even
# be spawned (its certificate goes into the plugin's environment). Loaded here, with the
# package, instead.
from cryptography.hazmat.backends import openssl as _openssl_backend  # noqa: F401
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aog_plugins.errors import CertificateError, ConfigurationError, ServerCertificateError
from aog_plugins.handshake._text import preview

__all__ = [
    "CertificateBundle",
    "certificate_curve",
    "decode_server_cert",
    "der_to_pem",
    "encode_server_cert",
    "generate_certificate",
    "grpcio_can_verify",
    "pem_to_der",
]

# Curve name (as go-plugin/NIST call it) -> (cryptography curve, signature hash).
_CURVES: dict[
    str, tuple[type[ec.EllipticCurve], type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]]
] = {
    "P-256": (ec.SECP256R1, hashes.SHA256),
    "P-384": (ec.SECP384R1, hashes.SHA384),
    "P-521": (ec.SECP521R1, hashes.SHA512),
}
_CURVE_BY_OPENSSL_NAME = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
# Curves whose ECDSA signatures grpcio's BoringSSL offers under TLS 1.3.
_GRPCIO_CURVES = frozenset({"secp256r1", "secp384r1"})
_BACKDATE = datetime.timedelta(seconds=30)
_LIFETIME = datetime.timedelta(hours=262980)  # 30 years of 365.25 days, like go-plugin


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate (PEM and DER) with its unencrypted PKCS8 private key and curve name."""

    cert_pem: bytes
    key_pem: bytes
    cert_der: bytes
    curve: str

    def __repr__(self) -> str:
        # Never print the private key, e.g. in a traceback's locals.
        return f"CertificateBundle(curve={self.curve!r}, cert_der=<{len(self.cert_der)} bytes>)"


def generate_certificate(curve: str = "P-256") -> CertificateBundle:
    """Make a self-signed ECDSA certificate shaped like go-plugin's AutoMTLS ones.

    P-256 is the default because grpcio can verify it; Go peers accept any of the three.
    """
    try:
        curve_type, hash_type = _CURVES[curve]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unsupported certificate curve {curve!r}; use one of {', '.join(_CURVES)}"
        ) from None
    key = ec.generate_private_key(curve_type())
    public_key = key.public_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp"),
        ]
    )
    not_before = datetime.datetime.now(datetime.timezone.utc) - _BACKDATE
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _LIFETIME)
        .add_extension(key_usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        # Strict verifiers (OpenSSL's X509_STRICT, Python 3.13's default) want these on a CA.
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hash_type())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return CertificateBundle(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem,
        cert_der=cert.public_bytes(serialization.Encoding.DER),
        curve=curve,
    )


def encode_server_cert(der: bytes) -> str:
    """Encode DER as handshake field 6: base64 standard alphabet without padding (Go's Raw)."""
    return base64.b64encode(der).decode("ascii").rstrip("=")


def decode_server_cert(text: str) -> bytes:
    """Decode handshake field 6 back to DER; padded input is accepted too.

    Raises ServerCertificateError when it is not base64 or not an X.509 certificate.
    """
    stripped = text.strip().rstrip("=")
    if not stripped:
        raise ServerCertificateError(
            "the server certificate field is empty; expected base64 (standard alphabet, "
            "no padding) of the plugin's DER certificate",
            line=text,
        )
    try:
        der = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServerCertificateError(
            f"error parsing the plugin's server certificate: not base64 of the standard "
            f"alphabet ({exc}); expected the DER certificate encoded like Go's "
            f"base64.RawStdEncoding, got {preview(text)}",
            line=text,
        ) from None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ServerCertificateError(
            f"error parsing the plugin's server certificate: the base64 decodes to "
            f"{len(der)} bytes that are not a DER X.509 certificate ({exc})",
            line=text,
        ) from None
    try:
        _public_key(cert)
    except CertificateError as exc:
        raise ServerCertificateError(
            f"error parsing the plugin's server certificate: {exc}", line=text
        ) from None
    return der


def pem_to_der(pem: bytes | str) -> bytes:
    """Convert a PEM certificate (the first one, if several) to DER."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if not isinstance(data, bytes):
        raise CertificateError(f"a PEM certificate must be bytes or str, got {type(pem).__name__}")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(
            f"not a PEM X.509 certificate ({exc}); expected text with a "
            f"'-----BEGIN CERTIFICATE-----' block, got {preview(data)}"
        ) from None
    return cert.public_bytes(serialization.Encoding.DER)


def der_to_pem(der: bytes) -> bytes:
    """Convert a DER certificate to PEM (what ssl and grpcio load)."""
    return _load_der(der).public_bytes(serialization.Encoding.PEM)


def certificate_curve(der: bytes) -> str:
    """Return the certificate key's curve: ``P-256``, ``P-384`` or ``P-521``."""
    key = _public_key(_load_der(der))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(
            f"the certificate's key is {type(key).__name__}, not ECDSA; expected a "
            f"P-256, P-384 or P-521 key"
        )
    try:
        return _CURVE_BY_OPENSSL_NAME[key.curve.name]
    except KeyError:
        raise CertificateError(
            f"the certificate's ECDSA key uses curve {key.curve.name}; expected "
            f"P-256, P-384 or P-521"
        ) from None


def grpcio_can_verify(der: bytes) -> bool:
    """Whether grpcio (BoringSSL, TLS 1.3) can verify a peer presenting this certificate.

    False for P-521 keys, which is what Go plugins use (protocol.md section 2), and for
    Ed25519/Ed448 keys (Go peers can use them; grpcio's TLS refuses them): those take the
    ssl relay.
    """
    key = _public_key(_load_der(der))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.name in _GRPCIO_CURVES
    return not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))


def _load_der(der: bytes) -> x509.Certificate:
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise CertificateError(f"a DER certificate must be bytes, got {type(der).__name__}")
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except ValueError as exc:
        raise CertificateError(
            f"not a DER X.509 certificate ({exc}); got {preview(bytes(der), 40)}"
        ) from None


def _public_key(cert: x509.Certificate) -> object:
    """The certificate's public key; its parsing is lazy in cryptography, so an unknown
    algorithm or a broken key only shows here (as UnsupportedAlgorithm or ValueError)."""
    try:
        return cert.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CertificateError(
            f"the certificate's public key cannot be used ({exc}); expected an ECDSA "
            f"P-256, P-384 or P-521 key like go-plugin's AutoMTLS certificates"
        ) from None
