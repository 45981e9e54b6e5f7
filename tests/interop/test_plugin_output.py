"""What plugins write: GRPCStdio output, floods that must not stall calls, hclog levels."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from aog_plugins.process import TRACE
from tests.interop.conftest import FAMILY, Family, Records, Target
from tests.process.conftest import LeakCheck
from tests.support.wait import wait_until

GO_FLOOD_BYTES = 2 << 20  # fixtures/plugins/go/cmd/misbehave: floodBytes
PY_FLOOD_BYTES = 1536 * 1024  # fixtures/plugins/misbehave.py: FLOOD_BYTES


class Sink:
    """A thread-safe stdout/stderr callback that keeps everything it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = bytearray()

    def __call__(self, data: bytes) -> None:
        with self._lock:
            self._data += data

    @property
    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)


def _misbehave(mode: str, tls: bool = False) -> tuple[Target, dict[str, str]]:
    return Target(FAMILY["go-misbehave"], "unix", tls), {"AOG_FIXTURE_MODE": mode}


PY_ECHO = Family(id="py-echo", lang="py", kind="", program="echo_plugin.py", provider_name="echo")


def _py_misbehave(mode: str) -> Target:
    family = Family(
        id=f"py-misbehave-{mode}",
        lang="py",
        kind="",
        program="misbehave.py",
        provider_name="",
        args=(mode,),
    )
    return Target(family, "unix", False)


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "automtls"])
def test_go_flood_is_captured_and_does_not_stall_calls(tls: bool, leak_check: LeakCheck) -> None:
    """2 MiB of stdout after the handshake: only a host that reads GRPCStdio lets it finish."""
    target, env = _misbehave("flood-stdout", tls)
    out, err = Sink(), Sink()
    with target.launch(leak_check, env=env, stdout=out, stderr=err) as plugin:
        echo = json.loads(plugin.client.invoke_service("echo", b"during", timeout=30))
        assert echo["request"] == "during"
        status = json.loads(plugin.client.invoke_service("flood-wait", b"", timeout=30))
        assert status == {"done": True, "bytes": GO_FLOOD_BYTES}
        wait_until(
            lambda: len(out.data) == GO_FLOOD_BYTES, 10, lambda: f"all stdout: {len(out.data)}"
        )
        wait_until(lambda: err.data == b"flood-done\n", 10, lambda: f"flood-done: {err.data!r}")
        plugin.ping()
    lines = out.data.split(b"\n")
    assert lines[0] == b"flood 000000 " + b"x" * 1010
    assert lines[-2].startswith(b"flood 002047 ")


def test_py_flood_on_every_stream_does_not_stall_calls(leak_check: LeakCheck) -> None:
    """Our plugin server writes 1.5 MiB to each real pipe and each GRPCStdio channel."""
    out, err = Sink(), Sink()
    quiet = logging.getLogger("aog_plugins.plugin.interop-flood")  # 1.5 MiB of stderr lines
    quiet.setLevel(logging.WARNING)
    with _py_misbehave("flood").launch(leak_check, stdout=out, stderr=err, logger=quiet) as plugin:
        plugin.ping()
        wait_until(
            lambda: len(out.data) == len(err.data) == PY_FLOOD_BYTES,
            30,
            lambda: f"all output: {len(out.data)} stdout, {len(err.data)} stderr bytes",
        )
        plugin.ping()
    assert set(out.data) == set(err.data) == {ord("z"), ord("\n")}


def test_py_stdio_after_the_handshake_is_captured(leak_check: LeakCheck) -> None:
    out, err = Sink(), Sink()
    with Target(PY_ECHO, "unix", True).launch(leak_check, stdout=out, stderr=err) as plugin:
        wait_until(lambda: out.data == b"echo plugin ready\n", 10, lambda: f"stdout: {out.data!r}")
        wait_until(
            lambda: err.data == b"echo plugin stderr note\n", 10, lambda: f"stderr: {err.data!r}"
        )
        plugin.ping()


@dataclass(frozen=True)
class LogCase:
    target: Target
    env: dict[str, Any]
    expected: list[tuple[int, str, dict[str, Any]]]  # level, message, fields


LOG_CASES = {
    "go-misbehave": LogCase(
        Target(FAMILY["go-misbehave"], "unix", False),
        {"AOG_FIXTURE_MODE": "hclog-levels"},
        [
            (TRACE, "trace line", {"phase": "startup", "count": 1}),
            (logging.DEBUG, "debug line", {"phase": "startup", "ratio": 0.5, "enabled": True}),
            (logging.INFO, "info line", {"user": "alice", "tags": ["a", "b"]}),
            (logging.WARNING, "warn line", {"nested": {"x": 1}}),
            (logging.ERROR, "error line", {"phase": "startup", "error": "boom"}),
        ],
    ),
    "go-misbehave-bad-json-log": LogCase(  # go-plugin's own host panics on this line
        Target(FAMILY["go-misbehave"], "unix", False),
        {"AOG_FIXTURE_MODE": "bad-json-log"},
        [(logging.INFO, "12345", {}), (logging.WARNING, "after the bad line", {})],
    ),
    "py-misbehave": LogCase(
        _py_misbehave("hclog"),
        {},
        [
            (TRACE, "a trace line", {"attempt": 1}),
            (logging.DEBUG, "a debug line", {"ratio": 0.5, "flags": [1, "two", None]}),
            (logging.INFO, "an info line", {"nested": {"a": {"b": [1, 2]}}, "ok": True}),
            (logging.WARNING, "12345", {"note": "message is a number"}),
            (logging.ERROR, "null", {"err": "message is null"}),
            (logging.WARNING, "a plain text warning", {}),
            (logging.ERROR, "panic: something went badly wrong", {}),
            (logging.ERROR, "goroutine 1 [running]:", {}),
            (logging.ERROR, "\t/src/main.go:42 +0x1d", {}),
        ],
    ),
    "py-remote-formatter": LogCase(  # our HclogFormatter, read back by our parser
        Target(FAMILY["py-remote"], "tcp", False),
        {},
        [(logging.INFO, "fixture provider serving", {"provider": "RemoteFixture"})],
    ),
}


@pytest.mark.parametrize("case", LOG_CASES.values(), ids=LOG_CASES.keys())
def test_hclog_levels_become_log_records(
    case: LogCase, leak_check: LeakCheck, records: Records
) -> None:
    with case.target.launch(leak_check, env=case.env, logger=records.logger) as plugin:
        for level, message, fields in case.expected:
            record = records.wait_for(message)
            assert record.levelno == level, (message, logging.getLevelName(record.levelno))
            got = getattr(record, "plugin_fields", {})
            assert {k: got.get(k) for k in fields} == fields, message
            assert record.plugin_pid == plugin.pid  # type: ignore[attr-defined]
        if case.env.get("AOG_FIXTURE_MODE") == "hclog-levels":
            assert getattr(records.wait_for("trace line"), "plugin_module", "") == "misbehave"
            plugin.client.invoke_service("echo", b"", timeout=30)  # logs each level again
            wait_until(
                lambda: len(_phase(records, "call")) == 5,
                10,
                lambda: f"5 records of the call in {records.messages()}",
            )
            levels = [r.levelno for r in _phase(records, "call")]
            assert levels == [TRACE, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]


def _phase(records: Records, phase: str) -> list[logging.LogRecord]:
    return [
        r for r in list(records.records) if getattr(r, "plugin_fields", {}).get("phase") == phase
    ]
