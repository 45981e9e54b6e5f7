"""AutoMTLS certificates: every field go-plugin sets, each curve, and the encodings."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aog_plugins.errors import CertificateError, ConfigurationError, ServerCertificateError
from aog_plugins.handshake import (
    CertificateBundle,
    certificate_curve,
    decode_server_cert,
    der_to_pem,
    encode_server_cert,
    generate_certificate,
    grpcio_can_verify,
    pem_to_der,
)
from tests.handshake.conftest import CURVES

HASHES = {"P-256": hashes.SHA256, "P-384": hashes.SHA384, "P-521": hashes.SHA512}
KEY_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}


def _cert(bundle: CertificateBundle) -> x509.Certificate:
    return x509.load_der_x509_certificate(bundle.cert_der)


@pytest.mark.parametrize("curve", CURVES)
def test_subject_issuer_and_san(curve: str, bundles: dict[str, CertificateBundle]) -> None:
    cert = _cert(bundles[curve])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "HashiCorp"
    assert cert.issuer == cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


@pytest.mark.parametrize("curve", CURVES)
def test_key_usages_and_ca(curve: str, bundles: dict[str, CertificateBundle]) -> None:
    cert = _cert(bundles[curve])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment
    assert ku.key_agreement
    assert ku.key_cert_sign
    assert not ku.crl_sign
    assert not ku.content_commitment
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca is True
    assert basic.critical


@pytest.mark.parametrize("curve", CURVES)
def test_validity_window(curve: str) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    cert = _cert(generate_certificate(curve))
    after = datetime.datetime.now(datetime.timezone.utc)
    start = cert.not_valid_before_utc
    # now - 30 s, within the second the certificate was made (X.509 time has 1 s resolution)
    assert (
        before - datetime.timedelta(seconds=31) <= start <= after - datetime.timedelta(seconds=29)
    )
    lifetime = cert.not_valid_after_utc - start
    assert datetime.timedelta(days=365 * 30) <= lifetime <= datetime.timedelta(days=365.25 * 30)


@pytest.mark.parametrize("curve", CURVES)
def test_key_signature_and_serial(curve: str, bundles: dict[str, CertificateBundle]) -> None:
    bundle = bundles[curve]
    cert = _cert(bundle)
    assert bundle.curve == curve
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, KEY_CURVES[curve])
    assert isinstance(cert.signature_hash_algorithm, HASHES[curve])
    cert.verify_directly_issued_by(cert)  # self-signed, signature valid
    assert cert.serial_number > 0
    assert cert.version is x509.Version.v3


@pytest.mark.parametrize("curve", CURVES)
def test_private_key_is_unencrypted_pkcs8_of_the_cert(
    curve: str, bundles: dict[str, CertificateBundle]
) -> None:
    bundle = bundles[curve]
    assert bundle.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == _cert(
        bundle
    ).public_key().public_bytes(serialization.Encoding.DER, spki)


@pytest.mark.parametrize("curve", CURVES)
def test_pem_and_der_agree(curve: str, bundles: dict[str, CertificateBundle]) -> None:
    bundle = bundles[curve]
    assert bundle.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert pem_to_der(bundle.cert_pem) == bundle.cert_der
    assert pem_to_der(bundle.cert_pem.decode()) == bundle.cert_der
    assert der_to_pem(bundle.cert_der) == bundle.cert_pem


def test_every_certificate_is_new() -> None:
    first, second = generate_certificate(), generate_certificate()
    assert _cert(first).serial_number != _cert(second).serial_number
    assert first.key_pem != second.key_pem


def test_default_curve_is_p256() -> None:
    bundle = generate_certificate()
    assert bundle.curve == "P-256"
    assert certificate_curve(bundle.cert_der) == "P-256"


@pytest.mark.parametrize("curve", ["P-224", "secp256r1", "p-256", "", "RSA"])
def test_unknown_curve_is_a_configuration_error(curve: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        generate_certificate(curve)
    assert repr(curve) in str(info.value)
    assert "P-256, P-384, P-521" in str(info.value)


def test_bundle_repr_hides_private_key(bundles: dict[str, CertificateBundle]) -> None:
    text = repr(bundles["P-256"])
    assert "PRIVATE" not in text
    assert "P-256" in text


@pytest.mark.parametrize("curve", CURVES)
def test_encode_decode_round_trip(curve: str, bundles: dict[str, CertificateBundle]) -> None:
    der = bundles[curve].cert_der
    text = encode_server_cert(der)
    assert "=" not in text
    assert text == base64.b64encode(der).decode().rstrip("=")
    assert decode_server_cert(text) == der


@pytest.mark.parametrize("extra", ["", "=", "=="])
def test_decode_tolerates_padding(extra: str, bundles: dict[str, CertificateBundle]) -> None:
    der = bundles["P-256"].cert_der
    assert decode_server_cert(encode_server_cert(der) + extra) == der


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("%%%%", "base64"),
        ("abc$def", "base64"),
        ("A", "base64"),  # a lone sextet cannot be decoded
        (base64.b64encode(b"hello, not a certificate").decode(), "X.509"),
    ],
    ids=["empty", "percent", "dollar", "one-char", "not-x509"],
)
def test_decode_garbage_is_typed(text: str, fragment: str) -> None:
    with pytest.raises(ServerCertificateError) as info:
        decode_server_cert(text)
    assert fragment in str(info.value)


def test_decode_rejects_urlsafe_alphabet(bundles: dict[str, CertificateBundle]) -> None:
    der = bundles["P-256"].cert_der
    urlsafe = base64.urlsafe_b64encode(der).decode().rstrip("=")
    if urlsafe == encode_server_cert(der):  # no '+' or '/' in this one: force one
        urlsafe = "-" + urlsafe[1:]
    with pytest.raises(ServerCertificateError):
        decode_server_cert(urlsafe)


@pytest.mark.parametrize(
    "bad", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]
)
def test_pem_to_der_garbage(bad: bytes) -> None:
    with pytest.raises(CertificateError):
        pem_to_der(bad)


def test_pem_to_der_rejects_a_private_key(bundles: dict[str, CertificateBundle]) -> None:
    with pytest.raises(CertificateError) as info:
        pem_to_der(bundles["P-256"].key_pem)
    assert "BEGIN CERTIFICATE" in str(info.value)


def test_pem_to_der_takes_the_first_of_several(bundles: dict[str, CertificateBundle]) -> None:
    chain = bundles["P-256"].cert_pem + bundles["P-384"].cert_pem
    assert pem_to_der(chain) == bundles["P-256"].cert_der


@pytest.mark.parametrize("bad", [b"", b"\x30\x03\x02\x01\x01", b"not der at all"])
def test_der_functions_reject_garbage(bad: bytes) -> None:
    for function in (der_to_pem, certificate_curve, grpcio_can_verify):
        with pytest.raises(CertificateError):
            function(bad)


@pytest.mark.parametrize("curve", CURVES)
def test_certificate_curve(curve: str, bundles: dict[str, CertificateBundle]) -> None:
    assert certificate_curve(bundles[curve].cert_der) == curve


def test_certificate_curve_of_other_keys(
    rsa_der: bytes, ed25519_der: bytes, secp256k1_der: bytes
) -> None:
    with pytest.raises(CertificateError, match="RSA"):
        certificate_curve(rsa_der)
    with pytest.raises(CertificateError, match="not ECDSA"):
        certificate_curve(ed25519_der)
    with pytest.raises(CertificateError, match="secp256k1"):
        certificate_curve(secp256k1_der)


@pytest.mark.parametrize(("curve", "ok"), [("P-256", True), ("P-384", True), ("P-521", False)])
def test_grpcio_can_verify(curve: str, ok: bool, bundles: dict[str, CertificateBundle]) -> None:
    assert grpcio_can_verify(bundles[curve].cert_der) is ok


def test_grpcio_can_verify_other_key_types(rsa_der: bytes, ed25519_der: bytes) -> None:
    assert grpcio_can_verify(rsa_der) is True
    assert grpcio_can_verify(ed25519_der) is False  # grpcio's TLS refuses it: the relay
