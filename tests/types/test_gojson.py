"""Go encoding/json rules on their own: strings, numbers, times, []byte, accepted input."""

from __future__ import annotations

import copy
import pickle
from datetime import datetime, timedelta, timezone

import pytest

from aog_plugins.errors import PayloadError
from aog_plugins.types import (
    GO_ZERO_TIME,
    NanoDatetime,
    format_go_time,
    go_dumps,
    go_loads,
    parse_go_time,
)
from aog_plugins.types._gojson import (
    Float32,
    decode_go_bytes,
    encode_go_bytes,
    format_go_float,
    go_string,
)


@pytest.mark.parametrize(
    ("text", "golden"),
    [
        # Go escapes <, > and & for HTML safety (encoding/json escapeHTML defaults to true).
        ("a<b>&c", '"a\\u003cb\\u003e\\u0026c"'),
        # U+2028 and U+2029 are always escaped (JSONP safety).
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        # Short escapes for \b \f \n \r \t, \u00XX with lowercase hex for other controls.
        ("\b\f\n\r\t\x00\x1f", '"\\b\\f\\n\\r\\t\\u0000\\u001f"'),
        # Quote and backslash are escaped; '/' and DEL are not.
        ('"\\/\x7f', '"\\"\\\\/\x7f"'),
        # Other non-ASCII is written as raw UTF-8.
        ("é😀", '"é😀"'),
        # Invalid UTF-16 (a lone surrogate) becomes U+FFFD, as Go does for invalid UTF-8.
        ("a\ud800b", '"a\ufffdb"'),
    ],
)
def test_string_escaping(text: str, golden: str) -> None:
    assert go_string(text) == golden


@pytest.mark.parametrize(
    ("value", "golden"),
    [
        (1.0, "1"),  # strconv 'f' with -1 precision: no trailing ".0"
        (100.0, "100"),
        (0.1, "0.1"),
        (-0.0, "-0"),
        (1e20, "100000000000000000000"),  # below 1e21: fixed notation
        (1e21, "1e+21"),  # from 1e21: exponent form
        (1e-6, "0.000001"),  # 1e-6 itself is still fixed notation
        (1e-7, "1e-7"),  # Go trims "e-07" to "e-7"
        (1.5e300, "1.5e+300"),
        (5e-324, "5e-324"),
    ],
)
def test_float64_formatting(value: float, golden: str) -> None:
    assert format_go_float(value) == golden


@pytest.mark.parametrize(
    ("value", "golden"),
    [
        (0.1, "0.1"),  # shortest digits of float32(0.1), not 0.10000000149011612
        (7.6, "7.6"),
        (123456789.0, "123456790"),  # float32 cannot hold 123456789
        (16777217.0, "16777216"),
        (3.4028235e38, "3.4028235e+38"),  # the largest float32
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
    ],
)
def test_float32_formatting(value: float, golden: str) -> None:
    assert format_go_float(value, 32) == golden
    assert go_dumps([Float32(value)]) == f"[{golden}]".encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_cannot_be_encoded(value: float) -> None:
    # Go: json.UnsupportedValueError.
    with pytest.raises(PayloadError):
        go_dumps({"x": value})


def test_float32_overflow_cannot_be_encoded() -> None:
    with pytest.raises(PayloadError, match="float32"):
        format_go_float(1e39, 32)


def test_dumps_is_compact_and_keeps_order() -> None:
    tree = {"b": [1, True, None, "x"], "a": {"z": False, "y": 2.5}}
    assert go_dumps(tree) == b'{"b":[1,true,null,"x"],"a":{"z":false,"y":2.5}}'


def test_dumps_rejects_what_json_cannot_hold() -> None:
    with pytest.raises(PayloadError):
        go_dumps({1: "non-string key"})
    with pytest.raises(PayloadError):
        go_dumps({"x": object()})


def test_loads_accepts_bytes_and_str_and_replaces_bad_utf8() -> None:
    assert go_loads(b'{"a":1}') == {"a": 1}
    assert go_loads('{"a":1}') == {"a": 1}
    assert go_loads(b'"\xff"') == "\ufffd"  # Go: invalid UTF-8 decodes to U+FFFD


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        # Checked against Go 1.26's json.Unmarshal: one U+FFFD per byte that does not start
        # valid UTF-8, so a truncated sequence gives as many as it has bytes.
        (b'"a\xe2\x82b"', "a\ufffd\ufffdb"),
        (b'"a\xf0\x9f\x98b"', "a\ufffd\ufffd\ufffdb"),
        (b'"a\xed\xa0\x80b"', "a\ufffd\ufffd\ufffdb"),  # an encoded surrogate
        (b'"\xc0\xaf"', "\ufffd\ufffd"),  # overlong
        (b'"\xf4\x90\x80\x80"', "\ufffd" * 4),  # past U+10FFFF
        (b'{"k\xe2\x82":"\xe2\x82\xac\xe2"}', {"k\ufffd\ufffd": "\u20ac\ufffd"}),
    ],
)
def test_loads_replaces_bad_utf8_byte_by_byte_like_go(raw: bytes, text: object) -> None:
    assert go_loads(raw) == text


@pytest.mark.parametrize("text", ["{", "NaN", '{"a":Infinity}', "\ufeff{}", "", "[1,]"])
def test_loads_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(PayloadError):
        go_loads(text)


def test_loads_rejects_non_text() -> None:
    with pytest.raises(PayloadError):
        go_loads(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "golden"),
    [
        # time.Time.MarshalJSON is RFC3339Nano: "Z" for a zero offset ...
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "2024-01-02T03:04:05Z"),
        # ... trailing zeros of the fraction removed ...
        (datetime(2024, 1, 2, 3, 4, 5, 120000, timezone.utc), "2024-01-02T03:04:05.12Z"),
        # ... and a numeric offset otherwise.
        (
            datetime(2024, 1, 2, 3, 4, 5, 1, timezone(timedelta(hours=8))),
            "2024-01-02T03:04:05.000001+08:00",
        ),
        (
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            "2024-01-02T03:04:05-05:30",
        ),
        # The zero time.Time.
        (GO_ZERO_TIME, "0001-01-01T00:00:00Z"),
        # A naive datetime is written as UTC.
        (datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z"),
        # Nanoseconds below the microsecond survive through NanoDatetime.
        (
            NanoDatetime(2024, 6, 4, 10, 39, 38, 926476, timezone.utc, nanosecond=538),
            "2024-06-04T10:39:38.926476538Z",
        ),
        # Go prints only whole minutes of an offset.
        (
            datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1, seconds=30))),
            "2024-01-01T00:00:00+01:00",
        ),
        # Checked against Go 1.26: an offset of -30 s is 0 minutes, written with "+".
        (
            datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=-30))),
            "2024-01-01T00:00:00+00:00",
        ),
        (
            datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=-90))),
            "2024-01-01T00:00:00-00:01",
        ),
    ],
)
def test_time_formatting(value: datetime, golden: str) -> None:
    assert format_go_time(value) == golden


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02T03:04:05Z",
        "2024-01-02T03:04:05.12Z",
        "2024-06-04T10:39:38.926476538+08:00",
        "2023-12-31T23:59:59.000000001-05:30",
    ],
)
def test_time_round_trip(text: str) -> None:
    assert format_go_time(parse_go_time(text)) == text


def test_time_parsing_details() -> None:
    parsed = parse_go_time("2024-06-04T10:39:38.9264765389+08:00")  # 10 digits: truncated
    assert parsed.utcoffset() == timedelta(hours=8)
    assert (parsed.microsecond, getattr(parsed, "nanosecond", 0)) == (926476, 538)
    assert format_go_time(parse_go_time("2024-01-01T00:00:00.000-00:00")) == "2024-01-01T00:00:00Z"
    # Go's time.Time.UnmarshalJSON takes a comma for the decimal point too (Go 1.26).
    assert format_go_time(parse_go_time("2024-01-01T00:00:00,5Z")) == "2024-01-01T00:00:00.5Z"
    comma = parse_go_time("2024-01-01T00:00:00,123456789123+01:00")
    assert format_go_time(comma) == "2024-01-01T00:00:00.123456789+01:00"


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02 03:04:05Z",  # no T
        "2024-01-02T03:04:05",  # no zone
        "2024-02-30T00:00:00Z",  # no such day
        "2024-01-02T03:04:05+24:00",  # Go reads it but cannot write it; Python cannot hold it
        "2024-01-02T03:04:05.Z",  # dot without digits
        # Checked against Go 1.26's json.Unmarshal: only ASCII digits, offsets up to 24:60.
        "\u0662024-01-02T03:04:05Z",  # ARABIC-INDIC DIGIT TWO
        "2024-01-02T03:04:05.\u0665Z",
        "2024-01-02T03:04:05+0\u0661:00",
        "2024-01-02T03:04:05+25:00",
        "2024-01-02T03:04:05+00:61",
    ],
)
def test_time_parsing_rejects(text: str) -> None:
    with pytest.raises(PayloadError):
        parse_go_time(text)


def test_time_offset_minutes_up_to_60_like_go() -> None:
    # Go 1.26 reads "-00:60" as -01:00 (it checks the minutes against 60, not 59).
    assert format_go_time(parse_go_time("2024-01-01T00:00:00-00:60")) == "2024-01-01T00:00:00-01:00"


def test_time_largest_offset() -> None:
    # Python offsets stay below 24 h, so Go's "timezone hour outside [0,23]" cannot happen.
    far = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59)))
    assert format_go_time(far).endswith("+23:59")


def test_nano_datetime_equality_copy_and_pickle() -> None:
    a = NanoDatetime(2024, 1, 1, tzinfo=timezone.utc, nanosecond=5)
    b = NanoDatetime(2024, 1, 1, tzinfo=timezone.utc, nanosecond=6)
    plain = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert a != b
    assert a != plain
    assert NanoDatetime(2024, 1, 1, tzinfo=timezone.utc) == plain
    for clone in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert clone == a
        assert isinstance(clone, NanoDatetime)
        assert clone.nanosecond == 5
    assert "nanosecond=5" in repr(a)
    with pytest.raises(ValueError, match="nanosecond"):
        NanoDatetime(2024, 1, 1, nanosecond=1000)


def test_bytes_are_standard_base64() -> None:
    # Go marshals []byte with base64.StdEncoding (padded) and ignores CR/LF when decoding.
    assert encode_go_bytes(b"\x00\x01\x02\xfa\xfb\xfc") == "AAEC+vv8"
    assert encode_go_bytes(b"hi") == "aGk="
    assert decode_go_bytes("aG\r\nk=") == b"hi"
    with pytest.raises(PayloadError):
        decode_go_bytes("aGk")  # missing padding
    with pytest.raises(PayloadError):
        decode_go_bytes("a_k=")  # URL alphabet
