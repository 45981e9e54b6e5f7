"""Reattach: the facts needed to connect to a plugin another host started.

The JSON form is Terraform's ``TF_REATTACH_PROVIDERS`` shape::

    {"name": {"Protocol": "grpc", "ProtocolVersion": 1, "Pid": 123, "Test": true,
              "Addr": {"Network": "unix", "String": "/tmp/plugin123"}}}

As in go-plugin there is no AutoMTLS with reattach: the plugin must serve plaintext.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aog_plugins.errors import ReattachError

__all__ = ["ReattachConfig"]


@dataclass(frozen=True)
class ReattachConfig:
    """Protocol, version, address and pid of a running plugin."""

    protocol: str
    protocol_version: int
    network: str
    address: str
    pid: int
    test: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The Terraform-style object for one plugin."""
        return {
            "Protocol": self.protocol,
            "ProtocolVersion": self.protocol_version,
            "Pid": self.pid,
            "Test": self.test,
            "Addr": {"Network": self.network, "String": self.address},
        }

    def to_json(self, name: str) -> str:
        """``{"<name>": {...}}`` as a JSON string (for an env var)."""
        return json.dumps({name: self.to_dict()})

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ReattachConfig:
        """Read one plugin's object; :class:`ReattachError` names what is wrong."""
        try:
            addr = obj["Addr"]
            config = cls(
                protocol=str(obj.get("Protocol") or "netrpc"),
                protocol_version=int(obj.get("ProtocolVersion") or 0),
                network=str(addr["Network"]),
                address=str(addr["String"]),
                pid=int(obj["Pid"]),
                test=bool(obj.get("Test", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReattachError(
                f"invalid reattach config {dict(obj)!r}: needs Protocol, ProtocolVersion, "
                f"Pid and Addr{{Network, String}} ({exc})"
            ) from exc
        if config.network not in ("unix", "tcp"):
            raise ReattachError(f"reattach network must be unix or tcp, got {config.network!r}")
        if config.protocol != "grpc":
            raise ReattachError(
                f"reattach protocol {config.protocol!r} is not supported: only grpc plugins"
            )
        if config.pid <= 0:
            raise ReattachError(f"reattach pid must be positive, got {config.pid}")
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
