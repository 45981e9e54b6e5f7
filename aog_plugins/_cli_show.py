"""Text tables and JSON documents for the CLI (kept apart from argument handling)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from aog_plugins.handshake import HandshakeLine, certificate_curve

__all__ = ["handshake_doc", "table"]


def handshake_doc(line: HandshakeLine) -> dict[str, Any]:
    """The handshake as plain data (the certificate as curve + SHA-256 fingerprint)."""
    doc: dict[str, Any] = {
        "core_version": line.core_version,
        "app_version": line.app_version,
        "network": line.network,
        "address": line.address,
        "protocol": line.protocol,
        "auto_mtls": line.server_cert is not None,
    }
    if line.server_cert is not None:
        doc["server_cert_curve"] = certificate_curve(line.server_cert)
        doc["server_cert_sha256"] = hashlib.sha256(line.server_cert).hexdigest()
    return doc


def table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in row] for row in ([header] if header else []) + list(rows)]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells
    ]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
