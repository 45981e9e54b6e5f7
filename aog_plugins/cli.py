"""The ``aog-plugins`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from aog_plugins._cli_manager import register as register_manager_commands
from aog_plugins._cli_show import handshake_doc, table
from aog_plugins.errors import AogPluginsError, ConfigurationError, PluginCallError, PluginError

if TYPE_CHECKING:
    from aog_plugins.process import Plugin

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
        hs = handshake_doc(plugin.handshake)
        print(f"  started in {time.monotonic() - started:.2f}s, pid {plugin.pid}")
        print(
            f"  handshake: core {hs['core_version']}, app {hs['app_version']}, {hs['network']} "
            f"{hs['address']}, {hs['protocol']}"
        )
        if hs["auto_mtls"]:
            print(
                f"  plugin certificate: {hs['server_cert_curve']}, "
                f"sha256 {hs['server_cert_sha256'][:16]}..."
            )
        plugin.ping()
        print("  health: SERVING")
        client = plugin.client
        manifest = client.get_manifest()
        services = [s.service_name for s in manifest.services]
        print(f"  manifest: provider {manifest.provider.name!r}, services {services}")
        reply = client.invoke_service("chat", json.dumps({"hello": "aog"}).encode())
        print(f"  invoke_service('chat') -> {reply.decode()}")
        print("  invoke_service_stream('chat'):")
        for chunk in client.invoke_service_stream("chat", json.dumps({"chunks": 3}).encode()):
            print(f"    chunk {chunk.data.decode()!r} final={chunk.is_final}")
        time.sleep(0.2)  # let the plugin's last log lines arrive
        print("  plugin logs:")
        for record in collected.records:
            print(f"    [{record.levelname}] {record.getMessage()}")
        socket_dir = os.path.dirname(plugin.handshake.address) if hs["network"] == "unix" else None
        pid = plugin.pid
    print("shut down:")
    print(f"  exit code {plugin.exit_code}, state {plugin.state.value}")
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    print(f"  process {pid} running: {'yes' if alive else 'no'}")
    if socket_dir:
        print(f"  socket dir {socket_dir} exists: {'yes' if os.path.exists(socket_dir) else 'no'}")
    from aog_plugins.process._reaper import reaper

    # The reaper (kills plugins if this host is SIGKILLed) is ours and expected.
    children = [c for c in psutil.Process().children(recursive=True) if c.pid != reaper().pid]
    print(f"  child processes left: {len(children)}")
    return 0 if not alive and not children else 1


def _launch_for(args: argparse.Namespace) -> Plugin:
    from aog_plugins import launch

    return launch(
        [args.executable, *args.plugin_args],
        auto_mtls=args.auto_mtls,
        start_timeout=args.start_timeout,
    )


def _optional(call: Callable[[], object]) -> object:
    """A value, or a short note when the plugin answers with an error (e.g. code 11)."""
    try:
        return call()
    except PluginError as exc:
        return f"n/a (code {exc.code}: {exc.message})"
    except PluginCallError as exc:
        return f"n/a ({exc.code})"


def _inspect(args: argparse.Namespace) -> int:
    with _launch_for(args) as plugin:
        client = plugin.client
        plugin.ping()
        manifest = client.get_manifest()
        version = _optional(lambda: client.get_version().version)
        doc: dict[str, Any] = {
            "pid": plugin.pid,
            "handshake": handshake_doc(plugin.handshake),
            "health": "SERVING",
            "provider_health": _optional(lambda: _ok(client.health_check)),
            "operate_status": _optional(client.get_operate_status),
            "engine_version": version,
            "manifest": manifest.to_dict(),
        }
        if args.json:
            print(json.dumps(doc, indent=2, default=str))
            return 0
        hs = doc["handshake"]
        provider = manifest.provider
        print(
            table(
                [
                    ("executable", args.executable),
                    ("pid", plugin.pid),
                    ("handshake", f"core {hs['core_version']}, app {hs['app_version']}"),
                    ("address", f"{hs['network']} {hs['address']} ({hs['protocol']})"),
                    (
                        "AutoMTLS",
                        f"{hs['server_cert_curve']} sha256 {hs['server_cert_sha256'][:16]}..."
                        if hs["auto_mtls"]
                        else "off",
                    ),
                    ("health", doc["health"]),
                    ("provider health", doc["provider_health"]),
                    ("operate status", doc["operate_status"]),
                    ("provider", f"{provider.name} {provider.version} ({provider.type})"),
                    ("engine version", version),
                ]
            )
        )
        rows = [
            (
                s.service_name,
                s.invoke_mode,
                s.task_type,
                s.protocol,
                _fmt_timeout(s.effective_timeout(s.invoke_mode != "unary")),
                ",".join(s.support_models or []),
            )
            for s in manifest.services
        ]
        print()
        print(table(rows, ("service", "mode", "task", "protocol", "timeout", "models")))
    return 0


def _ok(call: Callable[[], None]) -> str:
    call()
    return "ok"


def _fmt_timeout(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def _invoke(args: argparse.Namespace) -> int:
    data = args.data.encode()
    try:
        json.loads(data)
    except ValueError as exc:
        raise ConfigurationError(f"--data is not valid JSON: {exc}") from None
    credentials = {}
    for item in args.auth:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--auth wants KEY=VALUE, got {item!r}")
        credentials[key] = value
    with _launch_for(args) as plugin:
        client = plugin.client
        auth_info = args.auth_info
        if credentials:
            client.set_auth(args.auth_type, credentials)
            auth_info = auth_info or json.dumps(credentials)
        timeout = args.timeout
        if args.stream:
            for chunk in client.invoke_service_stream(
                args.service, data, auth_info, timeout=timeout
            ):
                if not chunk.data:
                    continue
                sys.stdout.buffer.write(chunk.data)
                if not chunk.data.endswith(b"\n"):
                    sys.stdout.buffer.write(b"\n")
                sys.stdout.flush()
        else:
            reply = client.invoke_service(args.service, data, auth_info, timeout=timeout)
            sys.stdout.buffer.write(reply + b"\n")
    return 0


def _add_launch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("executable", help="the plugin executable")
    parser.add_argument("--auto-mtls", action="store_true", help="use AutoMTLS")
    parser.add_argument("--start-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--plugin-arg",
        dest="plugin_args",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for the plugin executable (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aog-plugins", description=__doc__)
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="which plugin and library log records to show on stderr (default WARNING)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the bundled example plugin and talk to it")
    demo.add_argument("--tcp", action="store_true", help="serve over TCP instead of a unix socket")
    demo.set_defaults(func=_demo)
    inspect = sub.add_parser("inspect", help="start a plugin and show what it offers")
    _add_launch_args(inspect)
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.set_defaults(func=_inspect)
    invoke = sub.add_parser("invoke", help="start a plugin and call one of its services")
    _add_launch_args(invoke)
    invoke.add_argument("service", help="the service name, e.g. chat")
    invoke.add_argument("--data", default="{}", help="the JSON request (default {})")
    invoke.add_argument("--stream", action="store_true", help="use InvokeServiceStream")
    invoke.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a credential: calls SetAuth first and passes them as auth info (repeatable)",
    )
    invoke.add_argument("--auth-type", default="apikey", help="SetAuth's auth type")
    invoke.add_argument("--auth-info", default="", help="the auth info string to send")
    invoke.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    invoke.set_defaults(func=_invoke)
    register_manager_commands(sub)  # list, run
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except AogPluginsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code
