"""Turn a plugin's stderr into ``logging`` records, the way go-plugin's host reads hclog.

Lines are JSON objects from hclog (``@level``, ``@message``, ``@timestamp``, ``@module``
and free key/values), text lines that may carry a ``[LEVEL]`` tag, or raw text. After a
``panic: `` or ``fatal error: `` line, every later line is an error (the Go stack trace).
Unlike Go's host we accept any JSON types: a non-string ``@message`` is logged as JSON.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aog_plugins.errors import printable

__all__ = ["TRACE", "LineSplitter", "ParsedLine", "StderrLogParser", "parse_line", "printable"]

TRACE = 5
"""hclog's TRACE, below ``logging.DEBUG``."""

logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# "[DEBUG] msg" or "2024-05-01T10:00:00.000Z [DEBUG] msg" (hclog's text format).
_TEXT_LEVEL = re.compile(
    r"^(?:\d{4}-\d\d-\d\dT\S*\s+)?\[(TRACE|DEBUG|INFO|WARN|WARNING|ERROR)\]\s*(.*)$", re.S
)
_PANIC_PREFIXES = ("panic: ", "fatal error: ")
TAIL_LINE_MAX = 1024
"""Characters of one stderr line kept for error messages (the log record gets it whole)."""
TAIL_MAX = 8 * 1024
"""Characters of stderr tail an error message carries at most, however long the lines."""


@dataclass(frozen=True)
class ParsedLine:
    """One stderr line as a log event."""

    level: int
    message: str
    module: str = ""
    timestamp: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except RecursionError:  # nested deeper than the stack this runs on allows
        return "[a JSON value nested too deeply to show]"


def parse_line(line: str, *, default_level: int = logging.DEBUG) -> ParsedLine:
    """Parse one line (without its newline) into a :class:`ParsedLine`."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply: plain text
            obj = None
        if isinstance(obj, dict):
            raw_level = obj.pop("@level", None)
            level = _LEVELS.get(str(raw_level).lower(), default_level)
            message = _as_text(obj.pop("@message", ""))
            module = _as_text(obj.pop("@module", ""))
            timestamp = _as_text(obj.pop("@timestamp", ""))
            return ParsedLine(level, message, module, timestamp, obj)
    match = _TEXT_LEVEL.match(line)
    if match:
        return ParsedLine(_LEVELS[match.group(1).lower()], match.group(2))
    return ParsedLine(default_level, line)


class LineSplitter:
    """Accumulates chunks and yields complete lines; caps runaway lines at ``max_line``."""

    def __init__(self, max_line: int = 64 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk``; return the complete lines it finished (without newlines)."""
        self._buf += chunk
        lines: list[bytes] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            lines.append(bytes(self._buf[:nl]).rstrip(b"\r"))
            del self._buf[: nl + 1]
        while len(self._buf) >= self._max:
            lines.append(bytes(self._buf[: self._max]))
            del self._buf[: self._max]
        return lines

    def flush(self) -> list[bytes]:
        """Return what is left as a last line (at EOF)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest] if rest else []


class StderrLogParser:
    """Feeds stderr lines to a logger and keeps the tail for error messages."""

    def __init__(self, logger: logging.Logger, *, pid: int, tail_lines: int = 40) -> None:
        self.logger = logger
        self.pid = pid
        self._panicking = False
        # Lines come from the pipe's lane and the GRPCStdio pump; tail() is read by any
        # thread (Plugin.stderr_tail(), a crash report) while the plugin keeps writing.
        self._tail_lock = threading.Lock()
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self.panic_text: str = ""

    def line(self, raw: bytes) -> None:
        """Log one stderr line."""
        text = raw.decode("utf-8", "replace")
        with self._tail_lock:
            self._tail.append(_clip(printable(text)))
        if not self._panicking and text.startswith(_PANIC_PREFIXES):
            self._panicking = True
            self.panic_text = text
        parsed = parse_line(text)
        level = logging.ERROR if self._panicking else parsed.level
        if self.logger.isEnabledFor(level):
            extra = {
                "plugin_pid": self.pid,
                "plugin_module": parsed.module,
                "plugin_timestamp": parsed.timestamp,
                "plugin_fields": parsed.fields,
            }
            suffix = ""
            if parsed.fields:
                suffix = " " + " ".join(f"{k}={_as_text(v)}" for k, v in parsed.fields.items())
            # Multi-line messages (a traceback) stay multi-line; escapes and CRs do not pass.
            message = printable(parsed.message + suffix, newlines=True)
            self.logger.log(level, "%s", message, extra=extra)

    def tail(self) -> str:
        """The last stderr lines, joined: at most ``tail_lines`` lines and TAIL_MAX
        characters (older lines go first; a long line is cut, saying how much was cut)."""
        with self._tail_lock:
            lines = list(self._tail)
        kept: list[str] = []
        size = 0
        for text in reversed(lines):
            size += len(text) + 1
            if size > TAIL_MAX and kept:
                kept.append(f"[{len(lines) - len(kept)} earlier lines not shown]")
                break
            kept.append(text)
        return "\n".join(reversed(kept))


def _clip(text: str) -> str:
    if len(text) <= TAIL_LINE_MAX:
        return text
    return f"{text[:TAIL_LINE_MAX]}... [{len(text) - TAIL_LINE_MAX} more characters]"
