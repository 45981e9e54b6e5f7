"""Small text helpers shared by the handshake modules."""

from __future__ import annotations

import re

__all__ = ["GO_FALSE", "GO_TRUE", "parse_go_int", "preview"]

# What Go's strconv.ParseBool accepts; go-plugin parses its boolean fields with it.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# A sign and at most 19 digits: anything longer is outside Go's int64 (and may be too
# long for Python's int() at all, which refuses more than 4300 digits with ValueError).
_GO_INT = re.compile(r"[+-]?[0-9]{1,19}")
_INT64 = range(-(2**63), 2**63)


def parse_go_int(text: str) -> int | None:
    """Parse a decimal integer the way Go's strconv.Atoi does (ASCII digits, optional sign).

    None for anything Atoi rejects, including values outside Go's 64-bit int range.
    """
    if _GO_INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value in _INT64 else None


def preview(value: str | bytes, limit: int = 120) -> str:
    """A short, safe repr of untrusted input for error messages (control chars escaped)."""
    shown = repr(value[:limit])
    return f"{shown}... ({len(value)} characters in all)" if len(value) > limit else shown
