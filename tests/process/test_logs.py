"""Stderr parsing: hclog JSON, [LEVEL] text, panics; tolerant of odd types."""

from __future__ import annotations

import json
import logging

import pytest

from aog_plugins.process import TRACE, parse_line
from aog_plugins.process._logs import LineSplitter, StderrLogParser


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("trace", TRACE),
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("error", logging.ERROR),
        ("ERROR", logging.ERROR),
    ],
)
def test_hclog_json_levels(level: str, expected: int) -> None:
    line = json.dumps(
        {
            "@level": level,
            "@message": "hello",
            "@module": "plugin.x",
            "@timestamp": "2026-01-02T03:04:05.123456Z",
            "k": 1,
        }
    )
    parsed = parse_line(line)
    assert parsed.level == expected
    assert parsed.message == "hello"
    assert parsed.module == "plugin.x"
    assert parsed.timestamp == "2026-01-02T03:04:05.123456Z"
    assert parsed.fields == {"k": 1}


@pytest.mark.parametrize(
    ("message", "text"),
    [(42, "42"), ({"a": [1, None]}, '{"a": [1, null]}'), (None, "null"), ([1, "x"], '[1, "x"]')],
)
def test_non_string_message_is_logged_as_json(message: object, text: str) -> None:
    parsed = parse_line(json.dumps({"@level": "info", "@message": message}))
    assert parsed.message == text


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        ("[TRACE] deep", TRACE, "deep"),
        ("[DEBUG] dbg", logging.DEBUG, "dbg"),
        ("[INFO] fine", logging.INFO, "fine"),
        ("[WARN] careful", logging.WARNING, "careful"),
        ("[ERROR] bad", logging.ERROR, "bad"),
        (
            "2026-01-02T03:04:05.000Z [INFO]  plugin: started: a=1",
            logging.INFO,
            "plugin: started: a=1",
        ),
        ("plain text", logging.DEBUG, "plain text"),
        ("{not json", logging.DEBUG, "{not json"),
        ('["a json list"]', logging.DEBUG, '["a json list"]'),
    ],
)
def test_text_lines(line: str, level: int, message: str) -> None:
    parsed = parse_line(line)
    assert (parsed.level, parsed.message) == (level, message)


def test_unknown_json_level_uses_default() -> None:
    assert parse_line('{"@level": 7, "@message": "m"}').level == logging.DEBUG


def test_panic_makes_every_later_line_an_error(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.panic")
    parser = StderrLogParser(logger, pid=1)
    with caplog.at_level(TRACE, logger="test.panic"):
        for line in [
            b"[DEBUG] before",
            b"panic: boom",
            b"",
            b"goroutine 1 [running]:",
            b"[INFO] x",
        ]:
            parser.line(line)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.DEBUG, logging.ERROR, logging.ERROR, logging.ERROR, logging.ERROR]
    assert parser.panic_text == "panic: boom"
    assert "goroutine 1 [running]:" in parser.tail()


def test_fatal_error_counts_as_panic(caplog: pytest.LogCaptureFixture) -> None:
    parser = StderrLogParser(logging.getLogger("test.fatal"), pid=1)
    with caplog.at_level(logging.DEBUG, logger="test.fatal"):
        parser.line(b"fatal error: all goroutines are asleep")
        parser.line(b"[DEBUG] after")
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]


def test_fields_are_kept_on_the_record(caplog: pytest.LogCaptureFixture) -> None:
    parser = StderrLogParser(logging.getLogger("test.fields"), pid=77)
    with caplog.at_level(logging.DEBUG, logger="test.fields"):
        parser.line(json.dumps({"@level": "warn", "@message": "m", "n": [1, 2]}).encode())
    record = caplog.records[0]
    assert record.plugin_pid == 77  # type: ignore[attr-defined]
    assert record.plugin_fields == {"n": [1, 2]}  # type: ignore[attr-defined]
    assert record.getMessage() == "m n=[1, 2]"


def test_tail_is_bounded() -> None:
    parser = StderrLogParser(logging.getLogger("test.tail"), pid=1, tail_lines=3)
    for i in range(10):
        parser.line(f"line {i}".encode())
    assert parser.tail() == "line 7\nline 8\nline 9"


def test_line_splitter_handles_partial_crlf_and_runaway_lines() -> None:
    s = LineSplitter(max_line=8)
    assert s.feed(b"ab") == []
    assert s.feed(b"c\r\nde") == [b"abc"]
    assert s.feed(b"fghijklmn") == [b"defghijk"]
    assert s.flush() == [b"lmn"]
    assert s.flush() == []


def test_invalid_utf8_does_not_break_parsing(caplog: pytest.LogCaptureFixture) -> None:
    parser = StderrLogParser(logging.getLogger("test.utf8"), pid=1)
    with caplog.at_level(logging.DEBUG, logger="test.utf8"):
        parser.line(b"\xff\xfe [ERROR] x")
    assert caplog.records[0].levelno == logging.DEBUG
