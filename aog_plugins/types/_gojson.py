"""JSON text exactly as Go's encoding/json writes and reads it, for byte-identical payloads.

Go differs from :func:`json.dumps` in string escaping (``<``, ``>``, ``&``, U+2028/U+2029),
float formatting (shortest digits, ES6-style exponent cutoffs, float32 vs float64) and
time formatting (RFC 3339 with nanoseconds). Only the parts AOG payloads need are here.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import re
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from aog_plugins.errors import PayloadError

__all__ = [
    "GO_ZERO_TIME",
    "Float32",
    "NanoDatetime",
    "format_go_time",
    "go_dumps",
    "go_loads",
    "parse_go_time",
]

_F32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
_F32_SMALL = struct.unpack("<f", struct.pack("<f", 1e-6))[0]
_F32_LARGE = struct.unpack("<f", struct.pack("<f", 1e21))[0]
_EXACT = Context(prec=200)
_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_NEED_ESCAPE = re.compile("[<>&\u2028\u2029]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class Float32(float):
    """A float that Go holds as float32: it is written with float32's shortest digits."""


def go_dumps(value: Any) -> bytes:
    """Encode a JSON tree (dict/list/str/int/float/bool/None) as compact Go-style JSON."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts).encode("utf-8")


def go_loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text like Go would accept it, raising :class:`PayloadError` otherwise."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        # Go replaces invalid UTF-8 with U+FFFD instead of failing, one per bad byte.
        text = bytes(data).decode("utf-8", errors=_GO_REPLACE)
    elif isinstance(data, str):
        text = data
    else:
        raise PayloadError(f"expected JSON text as bytes or str, got {type(data).__name__}")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("invalid JSON: nested too deeply") from exc
    except ValueError as exc:
        # int() refuses an integer of more than 4300 digits (sys.get_int_max_str_digits()):
        # converting one costs quadratic time. Go fails it in an integer field too.
        raise PayloadError(f"unusable JSON: an integer too long to read: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text) or _LONE_SURROGATE.search(text):
        value = _replace_lone_surrogates(value)
    return value


def go_fold(text: str) -> str:
    """The key encoding/json compares to fold ``text`` case-insensitively: each character
    on its own to the smallest one of its simple case folding (ASCII: the upper case).

    Not ``str.casefold()``: that folds ``"ß"`` to ``"ss"`` and ``"ﬆ"`` to ``"st"``, so
    ``"claß"`` would fill ``class``; Go leaves it an unknown key. Go does fold U+017F
    (long s) with ``s`` and U+212A (Kelvin sign) with ``k``.
    """
    if text.isascii():
        return text.upper()
    return "".join(_fold_char(c) if c > "\x7f" else c.upper() for c in text)


def _fold_char(char: str) -> str:
    orbit = {char}
    todo = [char]
    while todo:  # close over the one-character case mappings (Unicode's simple ones)
        c = todo.pop()
        for other in (c.lower(), c.upper(), c.title(), c.casefold()):
            if len(other) == 1 and other not in orbit:
                orbit.add(other)
                todo.append(other)
    return min(orbit)


def _go_replace(exc: UnicodeError) -> tuple[str, int]:
    """Go's U+FFFD for each byte that does not start valid UTF-8 (utf8.DecodeRune moves on
    one byte): a truncated 3-byte sequence is two U+FFFD in Go, where Python's "replace"
    gives one for the whole sequence."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "\ufffd", exc.start + 1


_GO_REPLACE = "aog_plugins.go_replace"
codecs.register_error(_GO_REPLACE, _go_replace)


def _replace_lone_surrogates(root: Any) -> Any:
    """Go decodes a ``\\u`` escape of a lone UTF-16 surrogate as U+FFFD; json.loads keeps
    the surrogate, a str that no encoding can write. Replace them (pairs were already
    joined), in keys too, without recursion (the tree may be as deep as the parser goes)."""

    def fix(text: str) -> str:
        return _LONE_SURROGATE.sub("\ufffd", text)

    if isinstance(root, str):
        return fix(root)

    def fixed(item: Any) -> Any:
        if isinstance(item, str):
            return fix(item)
        if isinstance(item, (dict, list)):
            stack.append(item)
        return item

    stack: list[Any] = [root] if isinstance(root, (dict, list)) else []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
            node.clear()  # refilled in order, under the fixed keys
            node.update((fix(key), fixed(item)) for key, item in items)
        else:
            node[:] = [fixed(item) for item in node]
    return root


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"invalid JSON: {name} is not a JSON value")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(go_string(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(format_go_float(value, 32 if isinstance(value, Float32) else 64))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise PayloadError(f"JSON object keys must be strings, got {key!r}")
            if i:
                out.append(",")
            out.append(go_string(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise PayloadError(f"cannot encode {type(value).__name__} as JSON")


def go_string(text: str) -> str:
    """Quote ``text`` as Go's encoder does (HTML-safe, U+2028/9 escaped, bad UTF-16 -> U+FFFD)."""
    text = _LONE_SURROGATE.sub("\ufffd", text)
    # json.dumps already matches Go for quotes, backslashes and control characters.
    quoted = json.dumps(text, ensure_ascii=False)
    return _NEED_ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], quoted)


def format_go_float(value: float, bits: int = 64) -> str:
    """Format like Go: shortest round-trip digits, 'e' form below 1e-6 or from 1e21."""
    if math.isnan(value) or math.isinf(value):
        raise PayloadError(f"unsupported value: {value!r} cannot be encoded as JSON")
    if bits == 32:
        try:
            struct.pack("<f", value)  # rounds to the nearest float32, fails past its range
        except OverflowError:
            raise PayloadError(f"unsupported value: {value!r} does not fit a float32") from None
    if bits == 32:
        # Go compares in float32 here, so the cutoffs are float32(1e-6) and float32(1e21).
        digits, magnitude = _shortest_f32(value), abs(_f32(value))
        small, large = _F32_SMALL, _F32_LARGE
    else:
        digits, magnitude = Decimal(repr(float(value))), abs(value)
        small, large = 1e-6, 1e21
    if magnitude != 0 and (magnitude < small or magnitude >= large):
        return _e_format(digits)
    return format(digits.normalize(_EXACT), "f")


def round_float32(value: float) -> float:
    """Round to float32 and return its shortest decimal as a float (7.6 stays 7.6).

    Raises OverflowError past float32's range.
    """
    struct.pack("<f", value)  # OverflowError when it does not fit
    return float(_shortest_f32(value))


def _e_format(number: Decimal) -> str:
    sign, digit_tuple, exponent = number.normalize(_EXACT).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    exp10 = exponent + len(digits) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exp_text = f"{exp10:+03d}"  # e+21, e-07 ...
    if exp_text.startswith("-0"):
        exp_text = "-" + exp_text[2:]  # ... and Go trims e-07 to e-7
    return ("-" if sign else "") + mantissa + "e" + exp_text


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def _f32_neighbor(value: float, up: bool) -> float:
    (bits,) = struct.unpack("<I", struct.pack("<f", value))
    bits += 1 if up else -1
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _shortest_f32(value: float) -> Decimal:
    """The shortest decimal that parses back to the same float32 (what Go's strconv prints)."""
    v = _f32(value)
    if v == 0:
        return Decimal("-0") if math.copysign(1.0, v) < 0 else Decimal(0)
    a = abs(v)
    exact = Decimal(a)
    lower = _f32_neighbor(a, up=False)
    upper = 2.0**128 if a == _F32_MAX else _f32_neighbor(a, up=True)  # next would-be value
    low = _EXACT.divide(exact + Decimal(lower), 2)
    high = _EXACT.divide(exact + Decimal(upper), 2)
    (bits,) = struct.unpack("<I", struct.pack("<f", a))
    inclusive = bits % 2 == 0  # round-half-even parses a midpoint to the even mantissa
    for places in range(1, 10):
        quantum = Decimal(1).scaleb(exact.adjusted() - places + 1)
        nearest = exact.quantize(quantum, rounding=ROUND_HALF_EVEN, context=_EXACT)
        candidates = [nearest, nearest - quantum, nearest + quantum]
        inside = [
            c for c in candidates if (low <= c <= high if inclusive else low < c < high) and c > 0
        ]
        if inside:
            best = min(inside, key=lambda c: abs(c - exact))
            return -best if v < 0 else best
    return Decimal(repr(v))  # unreachable: 9 digits always identify a float32


# --- time.Time -------------------------------------------------------------------------

GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)
"""Go's zero ``time.Time`` (``0001-01-01T00:00:00Z``): the default for non-optional times."""

_RFC3339 = re.compile(  # ASCII: Go reads no other digits ("\\d" alone matches "٢")
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|[+-]\d{2}:\d{2})\Z",
    re.ASCII,
)


class NanoDatetime(datetime):
    """A datetime that also carries the nanoseconds below the microsecond, like Go's time.Time.

    Only parsing and formatting keep them; datetime arithmetic returns a plain datetime.
    """

    nanosecond: int

    def __new__(cls, *args: Any, nanosecond: int = 0, **kwargs: Any) -> NanoDatetime:
        obj = super().__new__(cls, *args, **kwargs)
        if not 0 <= nanosecond <= 999:
            raise ValueError("nanosecond must be in 0..999 (the part below one microsecond)")
        obj.nanosecond = nanosecond
        return obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, datetime):
            return NotImplemented
        return datetime.__eq__(self, other) is True and self.nanosecond == getattr(
            other, "nanosecond", 0
        )

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = datetime.__hash__

    def __reduce_ex__(self, protocol: Any) -> Any:  # keep nanoseconds through copy/pickle
        return (_rebuild_nano, (self._plain(), self.nanosecond))

    def _plain(self) -> datetime:
        return datetime(
            self.year, self.month, self.day, self.hour, self.minute, self.second,
            self.microsecond, self.tzinfo, fold=self.fold,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"{datetime.__repr__(self)[:-1]}, nanosecond={self.nanosecond})"


def _rebuild_nano(base: datetime, nanosecond: int) -> NanoDatetime:
    return NanoDatetime(
        base.year, base.month, base.day, base.hour, base.minute, base.second,
        base.microsecond, base.tzinfo, fold=base.fold, nanosecond=nanosecond,
    )  # fmt: skip


def parse_go_time(text: str) -> datetime:
    """Parse RFC 3339 the way Go's time.Time.UnmarshalJSON does (nanoseconds kept)."""
    match = _RFC3339.match(text)
    if match is None:
        raise PayloadError(f"cannot parse {text!r} as an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7) or "", match.group(8)
    nanos = int((fraction + "000000000")[:9])
    if zone == "Z":
        tz = timezone.utc
    else:
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 24 or minutes > 60:  # Go's bounds: "+00:60" is read as "+01:00"
            raise PayloadError(f"cannot parse {text!r} as an RFC 3339 time: bad offset")
        delta = timedelta(hours=hours, minutes=minutes)
        if delta >= timedelta(hours=24):  # Go reads it, but cannot write it back either
            raise PayloadError(
                f"cannot parse {text!r} as an RFC 3339 time: offset of 24 hours or more"
            )
        tz = timezone(-delta if zone[0] == "-" else delta)
    try:
        return NanoDatetime(
            year, month, day, hour, minute, second, nanos // 1000, tz, nanosecond=nanos % 1000
        )
    except ValueError as exc:
        raise PayloadError(f"cannot parse {text!r} as an RFC 3339 time: {exc}") from exc


def format_go_time(value: datetime) -> str:
    """Format as Go's time.Time.MarshalJSON: RFC3339Nano, no trailing zero digits, ``Z``.

    A naive datetime is taken as UTC (Go has no naive times).
    """
    offset = value.utcoffset() or timedelta(0)
    nanos = value.microsecond * 1000 + getattr(value, "nanosecond", 0)
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    seconds = math.trunc(offset.total_seconds())
    if seconds == 0:
        return text + "Z"
    # Go drops the offset's seconds (truncating toward zero, so -30 s is "+00:00") and
    # Python keeps offsets under 24 h, as Go requires.
    minutes = abs(seconds) // 60
    sign = "-" if seconds < 0 and minutes else "+"
    hours, minutes = divmod(minutes, 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


# --- []byte ------------------------------------------------------------------------------


def encode_go_bytes(data: bytes) -> str:
    """Go marshals []byte as standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def decode_go_bytes(text: str) -> bytes:
    """Go's []byte decoding: standard base64 with padding; CR and LF are ignored."""
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"invalid base64 data: {exc}") from exc
