"""The ``aog-plugins`` command line."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from aog_plugins.errors import AogPluginsError

__all__ = ["main"]

EXAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "plugins"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG - 5)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _demo(args: argparse.Namespace) -> int:
    from aog_plugins import launch
    from aog_plugins._proto import provider_pb2, provider_pb2_grpc
    from aog_plugins.handshake import certificate_curve

    example = EXAMPLES / "echo_plugin.py"
    if not example.is_file():
        print(f"the demo needs the repository's example plugin at {example}", file=sys.stderr)
        return 2
    logger = logging.getLogger("aog_plugins.plugin.echo")
    logger.setLevel(logging.DEBUG - 5)
    logger.propagate = False
    collected = _Collect()
    logger.addHandler(collected)
    print(f"starting {example.name} with AutoMTLS ({'tcp' if args.tcp else 'unix socket'})")
    env = {"AOG_PLUGINS_NETWORK": "tcp"} if args.tcp else {}
    started = time.monotonic()
    plugin = launch([sys.executable, str(example)], auto_mtls=True, extra_env=env, logger=logger)
    with plugin:
        hs = plugin.handshake
        print(f"  started in {time.monotonic() - started:.2f}s, pid {plugin.pid}")
        print(
            f"  handshake: core {hs.core_version}, app {hs.app_version}, {hs.network} "
            f"{hs.address}, {hs.protocol}"
        )
        if hs.server_cert:
            fp = hashlib.sha256(hs.server_cert).hexdigest()[:16]
            print(f"  plugin certificate: {certificate_curve(hs.server_cert)}, sha256 {fp}...")
        plugin.ping()
        print("  health: SERVING")
        stub = provider_pb2_grpc.ProviderServiceStub(plugin.channel)
        manifest = json.loads(stub.GetManifest(provider_pb2.GetManifestRequest()).manifest_json)
        services = [s["service_name"] for s in manifest.get("services", [])]
        print(f"  manifest: provider {manifest['provider']['name']!r}, services {services}")
        request = provider_pb2.InvokeServiceRequest(
            service_name="chat", request_data=json.dumps({"hello": "aog"}).encode()
        )
        reply = stub.InvokeService(request, timeout=10)
        print(f"  InvokeService('chat') -> code {reply.code}, {reply.response_data.decode()}")
        print("  InvokeServiceStream('chat'):")
        request.request_data = json.dumps({"chunks": 3}).encode()
        for chunk in stub.InvokeServiceStream(request, timeout=10):
            print(f"    chunk {chunk.chunk_data.decode()!r} final={chunk.is_final}")
        time.sleep(0.2)  # let the plugin's last log lines arrive
        print("  plugin logs:")
        for record in collected.records:
            print(f"    [{record.levelname}] {record.getMessage()}")
        socket_dir = os.path.dirname(hs.address) if hs.network == "unix" else None
        pid = plugin.pid
    print("shut down:")
    print(f"  exit code {plugin.exit_code}, state {plugin.state.value}")
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    print(f"  process {pid} running: {'yes' if alive else 'no'}")
    if socket_dir:
        print(f"  socket dir {socket_dir} exists: {'yes' if os.path.exists(socket_dir) else 'no'}")
    children = psutil.Process().children(recursive=True)
    print(f"  child processes left: {len(children)}")
    return 0 if not alive and not children else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aog-plugins", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the bundled example plugin and talk to it")
    demo.add_argument("--tcp", action="store_true", help="serve over TCP instead of a unix socket")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except AogPluginsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code
