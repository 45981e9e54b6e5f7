"""Durations given by the caller, checked once for every API that takes one."""

from __future__ import annotations

import math

from aog_plugins.errors import ConfigurationError

__all__ = ["NO_LIMIT_BEYOND", "seconds"]

NO_LIMIT_BEYOND = 10 * 365 * 86400.0
"""A call timeout longer than this (ten years; infinity included) means no limit: grpcio's
deadline arithmetic overflows on far larger ones and expires the call at once. A duration
that must be finite may not be longer (the clocks a start waits on overflow too)."""


def _shown(value: object) -> str:
    """``value`` for an error message: an int too long to print (Python refuses more than
    4300 digits) is described instead."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


def seconds(name: str, value: object, *, finite: bool = True, zero: bool = False) -> float:
    """``value`` as a positive number of seconds (or 0 too, with ``zero``: a grace period
    of none), at most :data:`NO_LIMIT_BEYOND` when ``finite`` (else any, infinity
    included); anything else is a :class:`ConfigurationError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {_shown(value)}")
    # math.isnan() and float() overflow on an int beyond any float: compare it as it is.
    if (isinstance(value, float) and math.isnan(value)) or value < 0 or (value == 0 and not zero):
        kind = "a number of seconds >= 0" if zero else "a positive number of seconds"
        raise ConfigurationError(f"{name} must be {kind}, got {_shown(value)}")
    if finite and value > NO_LIMIT_BEYOND:
        raise ConfigurationError(
            f"{name} must be a finite number of seconds, at most {NO_LIMIT_BEYOND:g} (ten "
            f"years), got {_shown(value)}"
        )
    return float(value) if value <= NO_LIMIT_BEYOND else math.inf
