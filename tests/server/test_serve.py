"""The Python plugin side, driven the way a host drives it: env in, handshake line out."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

from aog_plugins._proto import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
)
from aog_plugins.handshake import (
    AOG_HANDSHAKE,
    COOKIE_REJECTED_MESSAGE,
    generate_certificate,
    host_plugin_env,
    parse_handshake_line,
)
from aog_plugins.process._logs import parse_line
from aog_plugins.server import HclogFormatter
from aog_plugins.server._stdio import StdioBuffer
from aog_plugins.transport import MAX_UNIX_PATH
from tests.support.wait import wait_until

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "plugins"

VERSIONED = """
import _fixture_path, grpc
from aog_plugins.server import serve
serve({1: lambda s: None, 2: lambda s: None, 5: lambda s: None})
"""


Start = Callable[[str, dict[str, str]], "subprocess.Popen[bytes]"]


@pytest.fixture
def run_plugin(tmp_path: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(code_or_script: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        argv = (
            [sys.executable, str(FIXTURES / code_or_script)]
            if code_or_script.endswith(".py")
            else [sys.executable, "-c", code_or_script]
        )
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env, "PYTHONPATH": str(FIXTURES)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _env(
    tmp_path: Path,
    versions: list[int] | None = None,
    *,
    socket_group: str | None = None,
    min_port: int = 10000,
    max_port: int = 25000,
) -> dict[str, str]:
    return host_plugin_env(
        AOG_HANDSHAKE,
        versions or [1],
        socket_dir=str(tmp_path),
        socket_group=socket_group,
        min_port=min_port,
        max_port=max_port,
    )


def _handshake(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().decode().strip()


def test_missing_cookie_prints_go_message_and_exits_1(run_plugin: Start) -> None:
    env = {k: v for k, v in os.environ.items() if k != AOG_HANDSHAKE.magic_cookie_key}
    proc = subprocess.run(
        [sys.executable, str(FIXTURES / "echo_plugin.py")],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr.decode().startswith(COOKIE_REJECTED_MESSAGE.split(".")[0])


def test_highest_common_version_is_chosen(tmp_path: Path, run_plugin: Start) -> None:
    proc = run_plugin(VERSIONED, _env(tmp_path, [4, 2, 1]))
    line = parse_handshake_line(_handshake(proc))
    assert line.app_version == 2


def test_no_common_version_falls_back_to_lowest(tmp_path: Path, run_plugin: Start) -> None:
    proc = run_plugin(VERSIONED, _env(tmp_path, [9]))
    assert parse_handshake_line(_handshake(proc)).app_version == 1


def test_unix_socket_lives_in_socket_dir_with_group(tmp_path: Path, run_plugin: Start) -> None:
    env = _env(tmp_path, socket_group=str(os.getgid()))
    proc = run_plugin("echo_plugin.py", env)
    line = parse_handshake_line(_handshake(proc))
    path = Path(line.address)
    assert path.parent == tmp_path
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    _shutdown(line.grpc_target)
    assert proc.wait(timeout=10) == 0
    assert not path.exists(), "the plugin removes its socket on shutdown"


def test_tcp_port_is_within_the_range(tmp_path: Path, run_plugin: Start) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        busy = probe.getsockname()[1]
        # The first port of the range is taken: the plugin must skip it.
        env = _env(tmp_path, min_port=busy, max_port=min(busy + 50, 65535))
        env["AOG_PLUGINS_NETWORK"] = "tcp"
        proc = run_plugin("echo_plugin.py", env)
        line = parse_handshake_line(_handshake(proc))
    assert line.network == "tcp"
    host_port = line.tcp_host_port
    assert host_port is not None
    assert busy < host_port[1] <= busy + 50


def test_sigterm_stops_cleanly(tmp_path: Path, run_plugin: Start) -> None:
    proc = run_plugin("echo_plugin.py", _env(tmp_path))
    line = parse_handshake_line(_handshake(proc))
    proc.send_signal(signal.SIGINT)  # ignored, like a Go plugin
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not Path(line.address).exists()


def test_stdio_after_handshake_is_streamed(tmp_path: Path, run_plugin: Start) -> None:
    proc = run_plugin("echo_plugin.py", _env(tmp_path))
    line = parse_handshake_line(_handshake(proc))
    with grpc.insecure_channel(line.grpc_target) as channel:
        stream = grpc_stdio_pb2_grpc.GRPCStdioStub(channel).StreamStdio(
            empty_pb2.Empty(), timeout=10
        )
        seen: dict[int, bytes] = {}
        for item in stream:
            seen[item.channel] = seen.get(item.channel, b"") + item.data
            if len(seen) == 2:
                break
        stream.cancel()  # type: ignore[no-untyped-call]
    assert b"echo plugin ready" in seen[1]
    assert b"echo plugin stderr note" in seen[2]
    # Logs are not stdio: they stay on the real stderr as hclog JSON for the host to parse.
    _shutdown(line.grpc_target)
    _, err = proc.communicate(timeout=10)
    records = [json.loads(x) for x in err.decode().splitlines() if x.startswith("{")]
    assert any(r["@message"] == "echo plugin serving" and r["network"] == "unix" for r in records)


def _shutdown(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = grpc_controller_pb2_grpc.GRPCControllerStub(channel)
        # The server may go away mid-call, as go-plugin's does.
        with contextlib.suppress(grpc.RpcError):
            stub.Shutdown(grpc_controller_pb2.Empty(), timeout=10)


def test_stdio_buffer_drops_oldest_past_limit() -> None:
    buffer = StdioBuffer(limit=10)
    for chunk in (b"aaaa", b"bbbb", b"cccc"):
        buffer.put(1, chunk)
    assert buffer.dropped == 4
    assert buffer.get(0) == (1, b"bbbbcccc")
    assert buffer.get(0) is None
    buffer.close()
    assert buffer.get(1) is None


def test_hclog_formatter_output_is_parsed_by_the_host() -> None:
    record = logging.LogRecord("plug.mod", logging.WARNING, __file__, 1, "x=%d", (3,), None)
    record.count = 7
    record.thing = object()
    parsed = parse_line(HclogFormatter().format(record))
    assert parsed.level == logging.WARNING
    assert parsed.message == "x=3"
    assert parsed.module == "plug.mod"
    assert parsed.fields["count"] == 7
    assert parsed.fields["thing"].startswith("<object")
    assert parsed.timestamp.endswith("Z")
    assert len(parsed.timestamp.split(".")[1]) == 7


FAILS_ON_READY = """
import _fixture_path, grpc
from aog_plugins.server import serve
def ready():
    raise RuntimeError("on_ready broke")
serve(lambda s: None, on_ready=ready)
"""


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({"PLUGIN_MIN_PORT": "20000", "PLUGIN_MAX_PORT": "10000"}, "greater than PLUGIN_MAX_PORT"),
        ({"PLUGIN_MIN_PORT": "abc"}, "must be a port number"),
        ({"PLUGIN_CLIENT_CERT": "garbage"}, "not a PEM X.509 certificate"),
        ({"PLUGIN_UNIX_SOCKET_GROUP": "no-such-group-aogp"}, "unknown group"),
    ],
)
def test_a_host_setting_the_plugin_cannot_use_is_one_line_and_leaves_nothing(
    tmp_path: Path, run_plugin: Start, bad: dict[str, str], says: str
) -> None:
    proc = run_plugin("echo_plugin.py", {**_env(tmp_path), **bad})
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    text = err.decode()
    assert "Traceback" not in text, text
    assert "plugin init error" in text, text
    assert says in text, text
    assert [p.name for p in tmp_path.iterdir()] == [], "the socket was left behind"


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("missing", None, "No such file or directory"),
        ("a-file", "file", "it is not a directory"),
    ],
)
def test_a_socket_dir_the_plugin_cannot_use_is_named_with_its_reason(
    tmp_path: Path, run_plugin: Start, name: str, make: str | None, says: str
) -> None:
    # go-plugin's plugin says why (the error of creating its socket); grpcio alone says
    # only "cannot listen", after a log line of its own in another format on stderr.
    socket_dir = tmp_path / name
    if make == "file":
        socket_dir.write_text("not a directory")
    proc = run_plugin(
        "echo_plugin.py", {**_env(tmp_path), "PLUGIN_UNIX_SOCKET_DIR": str(socket_dir)}
    )
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines  # one hclog record, as go-plugin's "plugin init error"
    assert "plugin init error" in lines[0]
    assert says in lines[0]
    assert repr(str(socket_dir)) in json.loads(lines[0])["@message"]
    assert "PLUGIN_UNIX_SOCKET_DIR" in lines[0]


def test_without_the_cookie_bad_settings_are_not_looked_at(
    tmp_path: Path, run_plugin: Start
) -> None:
    env = {**_env(tmp_path), "PLUGIN_MIN_PORT": "abc"}
    env.pop(AOG_HANDSHAKE.magic_cookie_key)
    stripped = {k: v for k, v in os.environ.items() if k != AOG_HANDSHAKE.magic_cookie_key}
    proc = subprocess.run(
        [sys.executable, str(FIXTURES / "echo_plugin.py")],
        env={**stripped, **env, "PYTHONPATH": str(FIXTURES)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith(COOKIE_REJECTED_MESSAGE.split(".")[0])


def test_an_on_ready_that_raises_is_reported_and_leaves_nothing(
    tmp_path: Path, run_plugin: Start
) -> None:
    proc = run_plugin(FAILS_ON_READY, _env(tmp_path))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out.decode().startswith("1|1|unix|")  # the handshake was printed first
    assert "on_ready broke" in err.decode(), err.decode()
    assert [p.name for p in tmp_path.iterdir()] == [], "the socket was left behind"


OUTPUT_AFTER_SERVE = """
import _fixture_path, atexit, sys
from aog_plugins.server import serve
atexit.register(lambda: print("atexit note", file=sys.stderr))
serve(lambda s: None, on_ready=lambda: print("over stdio"))
print("after serve")
raise RuntimeError("crash after serve")
"""


def test_output_after_shutdown_reaches_the_real_stdout_and_stderr(
    tmp_path: Path, run_plugin: Start
) -> None:
    # GRPCStdio ends at Shutdown: what the plugin writes later (code after serve(), the
    # traceback it dies with, atexit output) used to go into a buffer nobody reads.
    proc = run_plugin(OUTPUT_AFTER_SERVE, _env(tmp_path))
    line = parse_handshake_line(_handshake(proc))
    _shutdown(line.grpc_target)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out.decode() == "after serve\n"
    assert "RuntimeError: crash after serve" in err.decode(), err.decode()
    assert "atexit note" in err.decode(), err.decode()


# The private sockets behind the relay (a Go host's P-521 certificate) and behind
# multiplexing sit one directory deeper than the announced socket, with a longer name.
PRIVATE_SOCKET_MODES = [
    pytest.param(
        {"PLUGIN_CLIENT_CERT": generate_certificate("P-521").cert_pem.decode()}, id="relay"
    ),
    pytest.param({"PLUGIN_MULTIPLEX_GRPC": "true"}, id="mux"),
]


def _dir_of_length(tmp_path: Path, length: int) -> Path:
    pad = length - len(str(tmp_path)) - 1
    assert pad > 0, f"tmp_path {tmp_path} is too long for this test"
    directory = tmp_path / ("d" * pad)
    directory.mkdir()
    assert len(str(directory).encode()) == length
    return directory


def _private_dirs(pid: int) -> list[str]:
    return glob.glob(f"/tmp/aogp-{pid}-*") + glob.glob(f"{tempfile.gettempdir()}/aogp-{pid}-*")


@pytest.mark.parametrize("mode", PRIVATE_SOCKET_MODES)
def test_a_socket_dir_that_fits_the_socket_fits_the_private_socket_too(
    tmp_path: Path, run_plugin: Start, mode: dict[str, str]
) -> None:
    # Room for "/plugin" and 9 digits, as go-plugin's own socket name needs: a Go plugin
    # serves here. The private socket used to go to "<dir>/aogp-<pid>-relay-XXXXXXXX/s",
    # too long for sun_path: grpcio's RuntimeError ended the plugin with a traceback.
    directory = _dir_of_length(tmp_path, MAX_UNIX_PATH - len("/plugin123456789"))
    env = {**_env(directory), **mode}
    proc = run_plugin("echo_plugin.py", env)
    line = parse_handshake_line(_handshake(proc))
    assert Path(line.address).parent == directory
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert list(directory.iterdir()) == [], "the socket was left behind"
    assert _private_dirs(proc.pid) == [], "the private socket dir was left behind"


@pytest.mark.parametrize("mode", PRIVATE_SOCKET_MODES)
def test_a_socket_dir_too_long_for_any_socket_is_one_line_and_leaves_nothing(
    tmp_path: Path, run_plugin: Start, mode: dict[str, str]
) -> None:
    directory = _dir_of_length(tmp_path, MAX_UNIX_PATH - 4)
    proc = run_plugin("echo_plugin.py", {**_env(directory), **mode})
    _out, err = proc.communicate(timeout=30)
    text = err.decode()
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    assert "plugin init error" in text, text
    assert f"longer than {MAX_UNIX_PATH} bytes" in text, text
    assert list(directory.iterdir()) == [], "a socket or private dir was left behind"
    assert _private_dirs(proc.pid) == [], "the private socket dir was left behind"


LOGS_ODD_TEXT = """
import _fixture_path, logging, os
from aog_plugins.server import serve
def ready():
    log = logging.getLogger("odd")
    log.warning("file %s", os.fsdecode(b"bad\\xff.gguf"), extra={"path": os.fsdecode(b"/m/\\xfe")})
    log.warning("\\u6a21\\u578b ready")
serve(lambda s: None, on_ready=ready)
"""
ASCII_LOCALE = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


def test_log_records_with_text_no_locale_can_encode_still_reach_the_host(
    tmp_path: Path, run_plugin: Start
) -> None:
    # A file name that is not UTF-8 (os.fsdecode gives lone surrogates) and, under an
    # ASCII locale, any non-ASCII text: the record was lost, and logging's "--- Logging
    # error ---" traceback went to GRPCStdio, which go-plugin's host discards by default.
    proc = run_plugin(LOGS_ODD_TEXT, {**_env(tmp_path), **ASCII_LOCALE})
    _handshake(proc)
    proc.send_signal(signal.SIGTERM)  # on_ready runs (and logs) all the same
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    parsed = [parse_line(line) for line in err.decode("utf-8").splitlines()]
    lines = [p for p in parsed if p.module == "odd"]
    assert [(p.level, p.message) for p in lines] == [
        (logging.WARNING, "file bad\ufffd.gguf"),  # as Go writes bytes that are not UTF-8
        (logging.WARNING, "\u6a21\u578b ready"),
    ]
    assert lines[0].fields["path"] == "/m/\ufffd"


PRINTS_ON_CALL = """
import _fixture_path
from aog_plugins._proto import provider_pb2, provider_pb2_grpc
from aog_plugins.server import serve
class Printer(provider_pb2_grpc.ProviderServiceServicer):
    def InvokeService(self, request, context):
        print(request.service_name, flush=True)
        return provider_pb2.InvokeServiceResponse(code=0)
serve(lambda s: provider_pb2_grpc.add_ProviderServiceServicer_to_server(Printer(), s))
"""


def test_a_second_stdio_reader_waits_for_the_first_and_then_gets_the_output(
    tmp_path: Path, run_plugin: Start
) -> None:
    # It was answered ALREADY_EXISTS at once: a Go host attaching to a plugin another host
    # runs logged "[ERROR] ... error receiving data" (a Go plugin serves both readers).
    proc = run_plugin(PRINTS_ON_CALL, _env(tmp_path))
    line = parse_handshake_line(_handshake(proc))
    with grpc.insecure_channel(line.grpc_target) as channel:
        stdio = grpc_stdio_pb2_grpc.GRPCStdioStub(channel)
        provider = provider_pb2_grpc.ProviderServiceStub(channel)
        first = stdio.StreamStdio(empty_pb2.Empty(), timeout=30)
        provider.InvokeService(provider_pb2.InvokeServiceRequest(service_name="one"), timeout=10)
        assert _first_item(first) == b"one\n"
        second = stdio.StreamStdio(empty_pb2.Empty(), timeout=30)
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(_first_item(second)), daemon=True)
        reader.start()
        reader.join(0.5)
        assert got == [], f"the second reader did not wait: {got}"
        first.cancel()  # type: ignore[no-untyped-call]
        provider.InvokeService(provider_pb2.InvokeServiceRequest(service_name="two"), timeout=10)
        reader.join(10)
        second.cancel()  # type: ignore[no-untyped-call]
    assert got == [b"two\n"]
    _shutdown(line.grpc_target)
    assert proc.wait(timeout=10) == 0


def _first_item(stream: Iterable[grpc_stdio_pb2.StdioData]) -> object:
    try:
        for item in stream:
            return item.data
    except grpc.RpcError as exc:
        return exc
    return None


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_exception_ending_a_plugin_thread_is_an_error_record() -> None:
    # Python printed it to sys.stderr, which goes to GRPCStdio: go-plugin's host discards
    # that by default, so a Go host saw nothing. Now an ERROR record on the real stderr.
    from aog_plugins import RestartPolicy, launch
    from tests.process.conftest import plugin_cmd

    logger = logging.getLogger(f"test.thread-failure.{os.getpid()}")
    logger.propagate = False
    records = _Records()
    logger.addHandler(records)
    cmd = plugin_cmd("remote_provider.py")
    with launch(cmd, restart=RestartPolicy.never(), logger=logger) as plugin:
        assert plugin.client.invoke_service("thread-raises", b"{}") == b"started"
        plugin.ping()  # the plugin serves on

        def errors() -> list[str]:
            return [r.getMessage() for r in records.records if r.levelno == logging.ERROR]

        wait_until(lambda: bool(errors()), 10, "the ERROR record")
        assert "uncaught exception in thread fixture-worker" in errors()[0]
        assert "boom in a thread" in errors()[0]
