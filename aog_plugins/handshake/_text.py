"""Small text helpers shared by the handshake modules."""

from __future__ import annotations

import re

__all__ = ["GO_FALSE", "GO_TRUE", "parse_go_int", "preview"]

# What Go's strconv.ParseBool accepts; go-plugin parses its boolean fields with it.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_GO_INT = re.compile(r"[+-]?[0-9]+")


def parse_go_int(text: str) -> int | None:
    """Parse a decimal integer the way Go's strconv.Atoi does (ASCII digits, optional sign)."""
    if _GO_INT.fullmatch(text) is None:
        return None
    return int(text)


def preview(value: str | bytes, limit: int = 120) -> str:
    """A short, safe repr of untrusted input for error messages (control chars escaped)."""
    shown = repr(value[:limit])
    return f"{shown}... ({len(value)} characters in all)" if len(value) > limit else shown
