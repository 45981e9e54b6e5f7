"""The Go misbehave fixture's modes, seen through go-plugin's real host."""

from __future__ import annotations

import json

import pytest

from tests.gofixtures.conftest import RunHost
from tests.support.gobuild import GoBinaries

pytestmark = pytest.mark.timeout(600)  # the first test may pay for a cold Go build


def misbehave(go_bins: GoBinaries) -> list[str]:
    return [str(go_bins.misbehave)]


def test_ok_mode_serves_calls(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host("-calls", "InvokeService,GetManifest,ListModels", plugin=misbehave(go_bins))
    assert run.returncode == 0, run.stderr
    echo, manifest, unimplemented = run.calls
    assert json.loads(echo["payload"])["mode"] == "ok"
    assert json.loads(manifest["payload"])["provider"]["name"] == "misbehave"
    assert unimplemented["grpc_code"] == "Unimplemented"


def test_write_before_handshake_fails_start(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host(
        "-calls",
        "InvokeService",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": "write-before-handshake"},
    )
    assert run.returncode == 1
    (error,) = run.of("error")
    assert error["stage"] == "start"
    assert "Unrecognized remote plugin message" in error["error"]
    assert "this line is not a handshake" in error["error"]


def test_sleep_before_handshake_times_out(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host(
        "-start-timeout",
        "1s",
        "-calls",
        "HealthCheck",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": "sleep-before-handshake"},
    )
    assert run.returncode == 1
    assert "timeout while waiting for plugin to start" in run.of("error")[0]["error"]


def test_flood_stdout_drains_through_stdio_stream(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host(
        "-calls",
        "InvokeService:flood-wait,InvokeService",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": "flood-stdout"},
    )
    assert run.returncode == 0, run.stderr
    status, echo = run.calls
    assert json.loads(status["payload"]) == {"done": True, "bytes": 2 * 1024 * 1024}
    assert echo["code"] == 0


def test_exit_mid_stream(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host(
        "-calls",
        "InvokeServiceStream",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": "exit-mid-stream"},
    )
    (stream,) = run.calls
    assert len(stream["chunks"]) == 2
    assert stream["grpc_code"] == "Unavailable"
    assert run.of("end") == [{"event": "end", "plugin_exited": True}]


def test_hclog_levels_reach_the_host_log(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host(
        "-log-level",
        "trace",
        "-calls",
        "InvokeService",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": "hclog-levels"},
    )
    assert run.returncode == 0, run.stderr
    for level, message in [
        ("TRACE", "trace line"),
        ("DEBUG", "debug line"),
        ("INFO", "info line"),
        ("WARN", "warn line"),
        ("ERROR", "error line"),
    ]:
        assert any(f"[{level}]" in ln and message in ln for ln in run.stderr.splitlines()), level
    assert "nested=map[x:1]" in run.stderr


@pytest.mark.parametrize(
    ("mode", "offered", "negotiated"),
    [
        ("app-version-1-only", "2,1", 1),
        ("app-versions-1-2", "2,1", 2),
        ("app-versions-1-2", "1", 1),
    ],
)
def test_app_version_negotiation(
    run_host: RunHost, go_bins: GoBinaries, mode: str, offered: str, negotiated: int
) -> None:
    run = run_host(
        "-versions",
        offered,
        "-calls",
        "InvokeService",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": mode},
    )
    assert run.returncode == 0, run.stderr
    assert run.start["app_version"] == negotiated
    assert json.loads(run.calls[0]["payload"])["app_version"] == negotiated


def test_app_version_mismatch_is_rejected(run_host: RunHost, go_bins: GoBinaries) -> None:
    run = run_host(
        "-versions",
        "2",
        "-calls",
        "InvokeService",
        plugin=misbehave(go_bins),
        env={"AOG_FIXTURE_MODE": "app-version-1-only"},
    )
    assert run.returncode == 1
    assert "incompatible API version" in run.of("error")[0]["error"]
