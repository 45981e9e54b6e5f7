"""The reverse direction: go-plugin's real host (fixtures/hosts/go) loads our Python plugins.

Every ProviderService RPC, over unix and TCP, plaintext and AutoMTLS. With AutoMTLS the Go
host presents a P-521 client certificate, which grpcio cannot accept, so these rows go
through our plugin-side TLS relay; the test checks the certificate the plugin was given.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aog_plugins.handshake import certificate_curve, grpcio_can_verify, pem_to_der
from tests.gofixtures.conftest import HostRun, RunHost
from tests.process.conftest import plugin_cmd
from tests.support.gobuild import GoBinaries

OK = [0, "success"]
NOT_LOCAL = [11, "not a local plugin"]
NOT_REMOTE = [11, "not a remote plugin"]
CHAT = json.dumps({"messages": [{"role": "user", "content": "hi there"}]})

# Each entry is a go-host call; "expect" ([code, message or None]) and "grpc" are ours
# (Go's JSON decoder ignores unknown keys).
LOCAL_SCRIPT: list[dict[str, Any]] = [
    {"rpc": "GetManifest", "expect": OK},
    {"rpc": "HealthCheck", "expect": OK},
    {"rpc": "GetOperateStatus"},
    {"rpc": "SetOperateStatus", "status": 2},
    {"rpc": "HealthCheck", "expect": [1005, "plugin is in error state"]},
    {"rpc": "SetOperateStatus", "status": 0},
    {"rpc": "CheckEngine", "expect": OK},
    {"rpc": "StartEngine", "mode": "daemon", "expect": [2001, "engine not installed"]},
    {"rpc": "InstallEngine", "expect": OK},
    {"rpc": "CheckEngine", "expect": OK},
    {"rpc": "StartEngine", "mode": "daemon", "expect": OK},
    {"rpc": "GetConfig", "expect": OK},
    {"rpc": "PullModel", "data": '{"model":"m1"}', "expect": OK},
    {"rpc": "PullModelStream", "data": '{"model":"m2"}', "expect": OK},
    {
        "rpc": "PullModelStream",
        "data": '{"model":"missing-x"}',
        "expect": [3000, "model 'missing-x' not found"],
        "grpc": "Unknown",  # grpc-go's status for a plain error, as the SDK ends it
    },
    {"rpc": "ListModels", "expect": OK},
    {"rpc": "LoadModel", "data": '{"model":"m1"}', "expect": OK},
    {"rpc": "GetRunningModels", "expect": OK},
    {"rpc": "UnloadModel", "data": '{"models":["m1"]}', "expect": OK},
    {"rpc": "DeleteModel", "data": '{"model":"m2"}', "expect": OK},
    {"rpc": "GetVersion", "data": '{"version":"9"}', "expect": OK},
    {"rpc": "StopEngine", "expect": OK},
    {"rpc": "InitEnv", "expect": OK},
    {"rpc": "UpgradeEngine", "expect": OK},
    {"rpc": "InvokeService", "service_name": "chat", "data": CHAT, "expect": OK},
    {"rpc": "InvokeServiceStream", "service_name": "chat", "data": CHAT, "expect": OK},
    {"rpc": "InvokeServiceStream", "service_name": "fail-stream", "expect": [4001, None]},
    {
        "rpc": "SetAuth",
        "auth_type": "apikey",
        "credentials": {"api_key": "k"},
        "expect": NOT_REMOTE,
    },
    {"rpc": "ValidateAuth", "expect": NOT_REMOTE},
    {"rpc": "RefreshAuth", "expect": NOT_REMOTE},
    {
        "rpc": "InvokeServiceBidi",
        "service_name": "chat",
        "data": "x",
        "expect": [11, "plugin does not implement bidirectional interface"],
    },
    {"rpc": "InvokeService", "service_name": "crash", "grpc": "Unavailable"},
]

REMOTE_SCRIPT: list[dict[str, Any]] = [
    {"rpc": "GetManifest", "expect": OK},
    {"rpc": "HealthCheck", "expect": OK},
    {"rpc": "ValidateAuth", "expect": [1002, "no api_key set: call SetAuth first"]},
    {"rpc": "SetAuth", "auth_type": "apikey", "credentials": {"api_key": "k"}, "expect": OK},
    {"rpc": "ValidateAuth", "expect": OK},
    {"rpc": "RefreshAuth", "expect": OK},
    {"rpc": "InvokeService", "service_name": "auth", "expect": OK},
    {
        "rpc": "InvokeService",
        "service_name": "chat",
        "data": CHAT,
        "auth_info": "tok",
        "expect": OK,
    },
    {"rpc": "InvokeService", "service_name": "nope", "expect": [4000, "unknown service 'nope'"]},
    {"rpc": "InvokeServiceStream", "service_name": "chat", "data": '{"chunks":2}', "expect": OK},
    {
        "rpc": "InvokeServiceStream",
        "service_name": "chat",
        "data": '{"chunks":2,"final":false}',
        "expect": OK,
    },
    {"rpc": "InvokeServiceStream", "service_name": "fail-chunk", "expect": [4004, None]},
    {
        "rpc": "InvokeServiceBidi",
        "service_name": "realtime",
        "auth_info": "tok",
        "metadata": {"ws_conn_id": "conn-7"},
        "messages": [
            {"type": "text", "data": "hello"},
            {"type": "ping", "data": "p"},
            {"type": "binary", "data": "raw"},
            {"type": "close", "data": "bye"},
        ],
        "expect": OK,
    },
    {
        "rpc": "InvokeServiceBidi",
        "service_name": "realtime",
        "not_first": True,
        "expect": [11, "first bidirectional message must set is_first=true"],
    },
    {
        "rpc": "InvokeServiceBidi",
        "service_name": "",
        "expect": [11, "service_name is required in first bidirectional message"],
    },
    {"rpc": "CheckEngine", "expect": NOT_LOCAL},
    {"rpc": "PullModelStream", "data": '{"model":"m"}', "expect": NOT_LOCAL},
    {"rpc": "ListModels", "expect": NOT_LOCAL},
    {"rpc": "InvokeServiceStream", "service_name": "crash", "grpc": "Unavailable"},
]

SCRIPTS = {
    "py-local": ("local_provider.py", LOCAL_SCRIPT),
    "py-remote": ("remote_provider.py", REMOTE_SCRIPT),
}
# go-plugin logs a plugin's hclog JSON as "[LEVEL]  go-host.<cmd>: message: k=v ...".
GO_LOG = r"\[{level}\]\s+go-host\.\S+: {message}:"


def _check_calls(run: HostRun, script: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    calls = run.calls
    assert [c["rpc"] for c in calls] == [s["rpc"] for s in script]
    for step, (sent, got) in enumerate(zip(script, calls, strict=True)):
        assert got["grpc_code"] == sent.get("grpc", "OK"), (step, got)
        if "expect" in sent:
            code, message = sent["expect"]
            assert got["code"] == code, (step, got)
            if message is not None:
                assert got["message"] == message, (step, got)
    by_rpc: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_rpc.setdefault(call["rpc"], []).append(call)
    return by_rpc


def _check_local(calls: dict[str, list[dict[str, Any]]]) -> None:
    assert json.loads(calls["GetManifest"][0]["payload"])["provider"]["type"] == "local"
    assert calls["GetOperateStatus"][0]["status"] == 0
    assert [c["installed"] for c in calls["CheckEngine"]] == [False, True]
    assert json.loads(calls["GetConfig"][0]["payload"])["device_type"] == "cpu"
    assert json.loads(calls["PullModel"][0]["payload"]) == {"status": "success"}
    pulled, missing = calls["PullModelStream"]
    steps = [json.loads(c["payload"])["status"] for c in pulled["chunks"]]
    assert (steps[0], steps[-1]) == ("pulling manifest", "success")
    assert len(missing["chunks"]) == 1
    assert [m["name"] for m in json.loads(calls["ListModels"][0]["payload"])["models"]] == [
        "m1",
        "m2",
    ]
    running = json.loads(calls["GetRunningModels"][0]["payload"])["models"]
    assert [m["name"] for m in running] == ["m1"]
    assert json.loads(calls["GetVersion"][0]["payload"]) == {"version": "0.1.0", "asked": "9"}
    reply = json.loads(calls["InvokeService"][0]["payload"])
    assert reply["message"]["content"] == "echo: hi there"
    stream, failing = calls["InvokeServiceStream"]
    assert [c.get("is_final", False) for c in stream["chunks"]] == [False] * 3 + [True]
    assert [(c["code"], c.get("is_final", False)) for c in failing["chunks"]] == [
        (0, False),
        (0, False),
        (4001, True),
    ]


def _check_remote(calls: dict[str, list[dict[str, Any]]]) -> None:
    assert json.loads(calls["InvokeService"][0]["payload"]) == {
        "auth_type": "apikey",
        "has_key": True,
        "refreshes": 1,
    }
    completion = json.loads(calls["InvokeService"][1]["payload"])
    assert completion["auth_info"] == "tok"
    assert completion["choices"][0]["message"]["content"] == "echo: hi there"
    final, open_ended, failing = calls["InvokeServiceStream"][:3]
    assert [c.get("is_final", False) for c in final["chunks"]] == [False, False, True]
    assert [c.get("is_final", False) for c in open_ended["chunks"]] == [False, False]
    assert final["chunks"][0]["metadata"] == {"content-type": "text/event-stream"}
    assert [c["code"] for c in failing["chunks"]] == [0, 4004]
    bidi = calls["InvokeServiceBidi"][0]["chunks"]
    assert [(c["message_type"], c["payload"]) for c in bidi] == [
        ("text", "echo: hello"),
        ("pong", "p"),
        ("binary", "raw"),
        ("close", "bye"),
    ]
    assert all(c["metadata"] == {"ws_conn_id": "conn-7"} for c in bidi)


@pytest.mark.parametrize("mux", [False, True], ids=["direct", "mux"])
@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "automtls"])
@pytest.mark.parametrize("network", ["unix", "tcp"])
@pytest.mark.parametrize("family", SCRIPTS.keys())
def test_go_host_drives_every_rpc_of_a_python_plugin(
    family: str, network: str, *, tls: bool, mux: bool, run_host: RunHost, tmp_path: Path
) -> None:
    program, script = SCRIPTS[family]
    cert_file = tmp_path / "client-cert.pem"
    # Records the certificate the Go host handed the plugin, then becomes the plugin.
    record = 'printf %s "$PLUGIN_CLIENT_CERT" > "$0"; exec "$@"'
    plugin = ["/bin/sh", "-c", record, str(cert_file), *plugin_cmd(program)]
    # mux: go-plugin's GRPCBrokerMultiplex, every call a stream of one yamux connection.
    flags = (["-automtls"] if tls else []) + (["-mux"] if mux else [])
    run = run_host(*flags, plugin=plugin, script=script, env={"AOG_PLUGINS_NETWORK": network})
    assert run.returncode == 0, run.stderr
    assert (run.start["network"], run.start["app_version"]) == (network, 1)
    calls = _check_calls(run, script)
    (_check_local if family == "py-local" else _check_remote)(calls)
    assert run.of("end") == [{"event": "end", "plugin_exited": True}]  # the crash call
    # Our hclog JSON on stderr is read by go-plugin at the right levels.
    assert re.search(GO_LOG.format(level="INFO", message="fixture provider serving"), run.stderr)
    assert re.search(GO_LOG.format(level="WARN", message="crashing on purpose"), run.stderr)
    if tls:
        host_cert = pem_to_der(cert_file.read_bytes())
        assert certificate_curve(host_cert) == "P-521"
        assert not grpcio_can_verify(host_cert)  # so the plugin served it through the relay
    else:
        assert cert_file.read_bytes() == b""


@pytest.mark.parametrize(("versions", "started"), [("2,1", True), ("2", False)])
def test_go_host_version_negotiation_with_a_python_plugin(
    versions: str, started: bool, run_host: RunHost
) -> None:
    run = run_host(
        "-versions", versions, "-calls", "HealthCheck", plugin=plugin_cmd("echo_plugin.py")
    )
    if started:
        assert run.returncode == 0, run.stderr
        assert run.start["app_version"] == 1
        assert run.calls[0]["code"] == 0
    else:
        assert run.returncode == 1
        (error,) = run.of("error")
        assert error["stage"] == "start"
        assert "incompatible API version with plugin. Plugin version: 1" in error["error"]


@pytest.fixture
def long_tmpdir() -> Iterator[Path]:
    """A 70-byte TMPDIR: go-host's socket dir in it ("go-host-" and up to 10 digits)
    leaves room for the plugin's socket name (up to 16 bytes), not for much more."""
    base = Path(tempfile.mkdtemp(prefix="aogp-long-", dir="/tmp"))
    directory = base / ("d" * (70 - len(str(base)) - 1))
    directory.mkdir()
    try:
        yield directory
    finally:
        left = list(directory.iterdir())
        shutil.rmtree(base)
        assert not left, f"left in TMPDIR: {left}"


@pytest.mark.parametrize(
    ("lang", "flags"),
    [
        ("go", ["-automtls"]),  # the control: a Go plugin serves there
        ("py", ["-automtls"]),
        ("py", ["-mux"]),
        ("py", ["-mux", "-automtls"]),
    ],
    ids=lambda v: "-".join(v).replace("-", "") if isinstance(v, list) else v,
)
def test_a_tmpdir_a_go_plugin_can_serve_in_does_for_a_python_plugin_too(
    lang: str, flags: list[str], long_tmpdir: Path, run_host: RunHost, go_bins: GoBinaries
) -> None:
    # Our plugin's private sockets (behind the relay for the Go host's P-521 certificate,
    # behind multiplexing, and those of the broker) sit a level deeper under longer names
    # than the announced socket; they did not fit in sun_path here and grpcio's
    # RuntimeError ended the plugin (or the broker call) with a traceback.
    plugin = [str(go_bins.aog_provider)] if lang == "go" else plugin_cmd("broker_plugin.py")
    run = run_host(*flags, "-broker", "hello", plugin=plugin, env={"TMPDIR": str(long_tmpdir)})
    assert run.returncode == 0, run.stderr
    assert run.start["address"].startswith(str(long_tmpdir))
    (broker,) = run.of("broker")
    assert broker.get("served") == "plugin answered hello", broker
    assert not broker.get("error"), broker
    assert glob.glob(f"/tmp/aogp-{run.start['pid']}-*") == [], "private dirs left behind"


ODD_LOG_PLUGIN = """
import logging, os, sys
sys.path.insert(0, {root!r})
from aog_plugins.server import serve
def ready():
    logging.getLogger("odd").warning("file %s", os.fsdecode(b"bad\\xff.gguf"))
    logging.getLogger("odd").error("\\u6a21\\u578b failed")
serve(lambda s: None, on_ready=ready)
"""


def test_go_host_logs_records_with_text_no_locale_can_encode(
    run_host: RunHost, tmp_path: Path
) -> None:
    # A name that is not UTF-8 and, under an ASCII locale, any non-ASCII text: the record
    # was lost, its "--- Logging error ---" went to GRPCStdio, which go-plugin discards.
    script = tmp_path / "odd_log_plugin.py"
    script.write_text(ODD_LOG_PLUGIN.format(root=str(Path(__file__).resolve().parents[2])))
    env = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    run = run_host("-calls", "HealthCheck", plugin=[sys.executable, str(script)], env=env)
    assert run.returncode == 0, run.stderr
    assert re.search(GO_LOG.format(level="WARN", message="file bad\ufffd\\.gguf"), run.stderr)
    assert re.search(GO_LOG.format(level="ERROR", message="\u6a21\u578b failed"), run.stderr)


BAD_REGISTER_PLUGIN = """
import sys
sys.path.insert(0, {root!r})
from aog_plugins.server import serve
def register(server):
    raise RuntimeError("cannot load model index")
serve(register)
"""


def test_go_host_shows_why_a_python_plugin_failed_to_start_at_error_level(
    run_host: RunHost, tmp_path: Path
) -> None:
    # The traceback was bare text on stderr, which go-plugin logs at DEBUG: at its default
    # level the Go host showed only "exit status 1" (a Go plugin's panic shows at ERROR).
    script = tmp_path / "bad_register_plugin.py"
    script.write_text(BAD_REGISTER_PLUGIN.format(root=str(Path(__file__).resolve().parents[2])))
    run = run_host("-calls", "HealthCheck", plugin=[sys.executable, str(script)])
    assert run.returncode == 1
    assert run.of("error")[0]["stage"] == "start"
    message = r"plugin init error: the plugin failed to start: " + re.escape(
        "RuntimeError('cannot load model index')"
    )
    assert re.search(GO_LOG.format(level="ERROR", message=message), run.stderr), run.stderr
