"""Reattach: the facts needed to connect to a plugin another host started.

The JSON form is Terraform's ``TF_REATTACH_PROVIDERS`` shape::

    {"name": {"Protocol": "grpc", "ProtocolVersion": 1, "Pid": 123, "Test": true,
              "Addr": {"Network": "unix", "String": "/tmp/plugin123"}}}

go-plugin cannot reattach to a plugin started with AutoMTLS (its config has no
certificates). Ours can: for such a plugin the object also carries ``"AutoMTLS"`` with
the launching host's client certificate and private key (PEM) and the plugin's
certificate (base64 DER, as in the handshake line), and :func:`attach` pins exactly that
certificate, as at launch. Hosts that do not know the key ignore it. Because it holds a
private key, persist it only with :meth:`ReattachConfig.write` (a file of mode 0600);
:meth:`ReattachConfig.read` refuses a file that others can read.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aog_plugins.errors import CertificateError, ReattachError, ServerCertificateError
from aog_plugins.handshake import (
    CertificateBundle,
    certificate_curve,
    decode_server_cert,
    encode_server_cert,
    pem_to_der,
)

_V = TypeVar("_V")

__all__ = ["ReattachConfig"]


@dataclass(frozen=True)
class ReattachConfig:
    """Protocol, version, address and pid of a running plugin; with AutoMTLS also the
    host's client certificate and key (PEM) and the plugin's certificate (DER)."""

    protocol: str
    protocol_version: int
    network: str
    address: str
    pid: int
    test: bool = False
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    server_cert_der: bytes | None = field(default=None, repr=False)

    @property
    def auto_mtls(self) -> bool:
        """Whether the plugin serves AutoMTLS (the config then holds a private key)."""
        return self.server_cert_der is not None

    def client_bundle(self) -> CertificateBundle | None:
        """The launching host's certificate and key, to present again (None: plaintext)."""
        if self.client_cert_pem is None or self.client_key_pem is None:
            return None
        der = pem_to_der(self.client_cert_pem)
        return CertificateBundle(
            cert_pem=self.client_cert_pem,
            key_pem=self.client_key_pem,
            cert_der=der,
            curve=certificate_curve(der),
        )

    def to_dict(self) -> dict[str, Any]:
        """The Terraform-style object for one plugin (plus ``AutoMTLS`` when it has TLS)."""
        obj: dict[str, Any] = {
            "Protocol": self.protocol,
            "ProtocolVersion": self.protocol_version,
            "Pid": self.pid,
            "Test": self.test,
            "Addr": {"Network": self.network, "String": self.address},
        }
        if self.auto_mtls:
            assert self.server_cert_der is not None
            obj["AutoMTLS"] = {
                "ClientCert": (self.client_cert_pem or b"").decode("ascii"),
                "ClientKey": (self.client_key_pem or b"").decode("ascii"),
                "ServerCert": encode_server_cert(self.server_cert_der),
            }
        return obj

    def write(self, path: str | os.PathLike[str], name: str = "plugin") -> None:
        """Write :meth:`to_json` to ``path`` as a new file of mode 0600 (it may hold a
        private key); an existing file or a symlink there is an error."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise ReattachError(
                f"cannot create the reattach file {os.fspath(path)!r}: {exc.strerror}; "
                "it must not exist yet (remove an old one first)"
            ) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(self.to_json(name))

    @classmethod
    def read(cls, path: str | os.PathLike[str], name: str | None = None) -> ReattachConfig:
        """Read a file :meth:`write` made; refuses one that group or others may read
        or write when it holds a private key."""
        try:
            with open(path, encoding="utf-8") as src:
                mode = os.fstat(src.fileno()).st_mode
                text = src.read()
        except OSError as exc:
            raise ReattachError(
                f"cannot read the reattach file {os.fspath(path)!r}: {exc.strerror}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ReattachError(
                f"{os.fspath(path)!r} is not a reattach file (not UTF-8 text: {exc.reason})"
            ) from exc
        config = cls.from_json(text, name)
        if config.auto_mtls and stat.S_IMODE(mode) & 0o077:
            raise ReattachError(
                f"the reattach file {os.fspath(path)!r} holds a private key but has mode "
                f"{stat.S_IMODE(mode):04o}: chmod 600 it (and regenerate the plugin's "
                "certificates if others may have read it)"
            )
        return config

    def to_json(self, name: str) -> str:
        """``{"<name>": {...}}`` as a JSON string (for an env var)."""
        return json.dumps({name: self.to_dict()})

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ReattachConfig:
        """Read one plugin's object; :class:`ReattachError` names what is wrong. Each
        field must have its JSON type (go-plugin writes them so): a pid of ``true`` or
        ``12.7``, an address of ``null`` or ``Test: "false"`` are refused, not coerced."""
        try:
            addr = obj["Addr"]
            config = cls(
                protocol=_typed(obj, "Protocol", str, "netrpc"),
                protocol_version=_typed(obj, "ProtocolVersion", int, 0),
                network=_typed(addr, "Network", str),
                address=_typed(addr, "String", str),
                pid=_typed(obj, "Pid", int),
                test=_typed(obj, "Test", bool, False),
                **_tls_fields(obj.get("AutoMTLS")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReattachError(
                f"invalid reattach config {dict(obj)!r}: needs Protocol, Pid and "
                f"Addr{{Network, String}}, and ProtocolVersion for a gRPC plugin ({exc})"
            ) from exc
        if config.network not in ("unix", "tcp"):
            raise ReattachError(f"reattach network must be unix or tcp, got {config.network!r}")
        if config.protocol != "grpc":
            raise ReattachError(
                f"reattach protocol {config.protocol!r} is not supported: only grpc plugins"
            )
        if config.pid <= 0:
            raise ReattachError(f"reattach pid must be positive, got {config.pid}")
        if config.protocol_version < 1:
            raise ReattachError(
                "reattach ProtocolVersion must be the app protocol version the plugin "
                f"negotiated (1 or more), got {config.protocol_version}"
            )
        return config

    @classmethod
    def from_json(cls, text: str, name: str | None = None) -> ReattachConfig:
        """Parse the JSON form; ``name`` picks an entry (optional when there is one)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReattachError(f"reattach config is not JSON: {exc}") from exc
        if not isinstance(data, dict) or not data:
            raise ReattachError("reattach config must be a JSON object of name -> config")
        if "Addr" in data:
            return cls.from_dict(data)
        if name is None:
            if len(data) != 1:
                raise ReattachError(f"reattach config has {sorted(data)}: pass name=")
            (entry,) = data.values()
        elif name in data:
            entry = data[name]
        else:
            raise ReattachError(f"reattach config has no entry {name!r} (has {sorted(data)})")
        if not isinstance(entry, dict):
            raise ReattachError(f"reattach entry must be an object, got {entry!r}")
        return cls.from_dict(entry)


def _tls_fields(obj: object) -> dict[str, bytes]:
    """The certificate fields of an ``AutoMTLS`` object (none when absent)."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise ReattachError(f"reattach AutoMTLS must be an object, got {obj!r}")
    try:
        cert = str(obj["ClientCert"]).encode("ascii")
        key = str(obj["ClientKey"]).encode("ascii")
        server = decode_server_cert(str(obj["ServerCert"]))
        pem_to_der(cert)
    except KeyError as exc:
        raise ReattachError(
            f"reattach AutoMTLS needs ClientCert, ClientKey and ServerCert (missing {exc})"
        ) from exc
    except (UnicodeError, CertificateError, ServerCertificateError) as exc:
        raise ReattachError(f"reattach AutoMTLS holds an unusable certificate: {exc}") from exc
    if b"PRIVATE KEY" not in key:
        raise ReattachError("reattach AutoMTLS ClientKey is not a PEM private key")
    return {"client_cert_pem": cert, "client_key_pem": key, "server_cert_der": server}


_NO_DEFAULT: Any = object()


def _typed(obj: Mapping[str, Any], key: str, kind: type[_V], default: _V = _NO_DEFAULT) -> _V:
    """``obj[key]`` when it has the JSON type ``kind`` (a bool is no int); ``default`` when
    absent or null, if there is one; else ValueError naming the field."""
    value = obj.get(key)
    if value is None:
        if default is _NO_DEFAULT:
            raise ValueError(f"{key} is missing")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key} must be a JSON {_JSON_NAMES[kind]}, got {value!r}")
    return value


_JSON_NAMES: dict[type, str] = {str: "string", int: "integer", bool: "boolean"}
