"""What the CLI prints: tables, JSON documents, short errors and plugin log lines.

Kept apart from argument handling. Errors are rendered from their fields, not their full
text, so a user sees one short paragraph: the plugin's stderr tail is shown as parsed log
lines (hclog JSON becomes ``[WARN] message key=value``), never as raw JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from collections.abc import Sequence
from typing import Any

from aog_plugins.errors import (
    AogPluginsError,
    PluginCrashedError,
    PluginStartError,
)
from aog_plugins.handshake import HandshakeLine, certificate_curve
from aog_plugins.process import parse_line, printable

__all__ = [
    "CliLogFormatter",
    "describe_error",
    "handshake_doc",
    "hide_unimplemented_noise",
    "log_lines",
    "table",
]

TAIL_LINES = 12
"""At most this many of the plugin's last stderr lines go into an error."""
_LINE_CAP = 300
_TRACEBACK = "Traceback (most recent call last):"
_LEVEL_NAMES = {5: "TRACE", 10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR", 50: "ERROR"}


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
    """A plain aligned text table; control characters in a cell are shown escaped (a
    manifest's name, version or path cannot drive the terminal or break the layout)."""
    cells = [[printable(str(c)) for c in row] for row in ([header] if header else []) + list(rows)]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells
    ]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cap(text: str) -> str:
    return text if len(text) <= _LINE_CAP else text[:_LINE_CAP] + "..."


def _exit_text(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def log_lines(stderr_tail: str, limit: int = TAIL_LINES) -> list[str]:
    """The last ``limit`` stderr lines as ``[LEVEL] message key=value`` (hclog decoded)."""
    lines = [line for line in stderr_tail.splitlines() if line.strip()][-limit:]
    shown = []
    for line in lines:
        parsed = parse_line(line, default_level=0)
        if parsed.level == 0:
            shown.append(_cap(line))
            continue
        fields = " ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
            for k, v in parsed.fields.items()
        )
        level = _LEVEL_NAMES.get(parsed.level, str(parsed.level))
        # Decoding may bring back what the tail had escaped (a "\u001b" in the JSON):
        # one shown line per stderr line, nothing that drives the terminal.
        shown.append(_cap(printable(f"[{level}] {parsed.message} {fields}".rstrip())))
    return shown


def _with_tail(text: str, stderr_tail: str) -> str:
    lines = log_lines(stderr_tail)
    if not lines:
        return text
    return text + "\nthe plugin's last stderr lines:\n" + "\n".join(f"  {x}" for x in lines)


def describe_error(exc: AogPluginsError) -> str:
    """A short, human paragraph for ``exc`` (first line: what happened and what to do)."""
    if isinstance(exc, PluginStartError):
        parts = [exc.message]
        if exc.exit_code is not None:
            parts[0] += f" ({_exit_text(exc.exit_code)})"
        if exc.diagnosis:
            parts.append(exc.diagnosis)
        return _with_tail("; ".join(parts), exc.stderr_tail)
    if isinstance(exc, PluginCrashedError) and exc.stopped_by_host is not None:
        return f"the call was cut short: this command stopped the plugin ({exc.stopped_by_host})"
    if isinstance(exc, PluginCrashedError):
        text = (
            f"the plugin process died during the call ({_exit_text(exc.exit_code)}; "
            f"gRPC said {exc.code or 'nothing'}); it is not restarted by this command"
        )
        return _with_tail(text, exc.stderr_tail)
    return str(exc)


UNIMPLEMENTED_NOISE = "Exception calling application: Method not implemented!"
"""What a grpcio plugin logs (at ERROR, with a traceback) when an RPC it lacks is called."""


def hide_unimplemented_noise(record: logging.LogRecord) -> bool:
    """Filter: drop a plugin's log of a call to an RPC it does not implement.

    The CLI already reports that call ('not implemented'), and ``inspect`` makes such
    calls on purpose; ``--log-level DEBUG`` keeps them.
    """
    return not (
        record.name.startswith(CliLogFormatter.PLUGIN_PREFIX)
        and record.getMessage().startswith(UNIMPLEMENTED_NOISE)
    )


class CliLogFormatter(logging.Formatter):
    """``plugin <name> WARN: message`` lines; Python tracebacks only when ``verbose``.

    A Python plugin logs the traceback of an exception in one of its handlers (for
    example the generated base class answering UNIMPLEMENTED); the CLI already reports
    that call's outcome, so by default the traceback is replaced by a hint.
    """

    PLUGIN_PREFIX = "aog_plugins.plugin."

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if not self.verbose and _TRACEBACK in message:
            message = (
                message.split(_TRACEBACK, 1)[0] + "<traceback hidden: --log-level DEBUG shows it>"
            )
        name = record.name
        if name.startswith(self.PLUGIN_PREFIX):
            name = "plugin " + name[len(self.PLUGIN_PREFIX) :]
            # A plugin's multi-line message (a traceback, or a forged "plugin x ERROR: ..."
            # line) continues indented: every line at the margin is one of our records.
            message = message.replace("\n", "\n    ")
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        return f"{name} {level}: {message}"
