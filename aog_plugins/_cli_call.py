"""``aog-plugins inspect`` and ``aog-plugins invoke``: start one plugin, talk to it, stop it.

Both start the plugin with ``RestartPolicy.never()``: a one-shot command reports a crash
instead of hiding it behind a restart. Credentials for ``invoke`` can come from the
command line, an environment variable, a file or stdin (only the first is visible to
other users in the process list).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from aog_plugins._cli_base import Command, seconds
from aog_plugins._cli_show import handshake_doc, table
from aog_plugins._cli_target import Target, add_target_args, open_target, resolve_target
from aog_plugins.errors import (
    ConfigurationError,
    ManifestKeyError,
    PluginCallError,
    PluginError,
)
from aog_plugins.types import PluginManifest

if TYPE_CHECKING:
    from aog_plugins.process import Plugin

__all__ = ["INSPECT", "INVOKE"]

NOT_IMPLEMENTED = "not implemented"


def _add_launch_args(parser: argparse.ArgumentParser, *, plugins_dir: bool = False) -> None:
    add_target_args(parser, plugins_dir=plugins_dir)
    parser.add_argument(
        "--auto-mtls",
        action="store_true",
        help="ask the plugin for AutoMTLS (mutual TLS with fresh certificates)",
    )
    parser.add_argument(
        "--start-timeout",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up when the plugin has not started within this time (default 60)",
    )
    parser.add_argument(
        "--plugin-arg",
        dest="plugin_args",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for the plugin executable (repeatable, in order)",
    )


def _launch(
    args: argparse.Namespace, target: Target, env: dict[str, str] | None = None
) -> AbstractContextManager[Plugin]:
    return open_target(args, target, env)


def _optional(call: Callable[[], object]) -> object:
    """A value, or a short note when the plugin does not offer it or answers an error."""
    try:
        return call()
    except PluginError as exc:
        # str() shows the plugin's message escaped and cut to size; .message is raw.
        return f"n/a (code {exc.code}: {str(exc).removeprefix(f'plugin error {exc.code}: ')})"
    except PluginCallError as exc:
        if exc.code == "UNIMPLEMENTED":
            return NOT_IMPLEMENTED
        raise


def _ok(call: Callable[..., object], timeout: float) -> Callable[[], str]:
    def run() -> str:
        call(timeout=timeout)
        return "ok"

    return run


def _fmt_timeout(value: float | None) -> str:
    return "none" if value is None else f"{value:g}s"


def _configure_inspect(parser: argparse.ArgumentParser) -> None:
    _add_launch_args(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of tables"
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="deadline of each call to the plugin (default 10)",
    )


def _inspect(args: argparse.Namespace) -> int:
    target = resolve_target(args.executable, plugins_dir=False)
    with _launch(args, target) as plugin:
        client = plugin.client
        timeout = args.timeout
        plugin.ping()
        manifest = _optional(lambda: client.get_manifest(timeout=timeout))
        doc: dict[str, Any] = {
            "executable": str(target.executable),
            "plugin_dir": str(target.path) if target.kind == "plugin-dir" else None,
            "pid": plugin.pid,
            "handshake": handshake_doc(plugin.handshake),
            "health": "SERVING",
            "provider_health": _optional(_ok(client.health_check, timeout)),
            "operate_status": _optional(lambda: client.get_operate_status(timeout=timeout)),
            "engine_version": _optional(lambda: client.get_version(timeout=timeout).version),
            "manifest": manifest.to_dict() if isinstance(manifest, PluginManifest) else manifest,
        }
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        _print_inspect(doc, manifest)
    return 0


def _print_inspect(doc: dict[str, Any], manifest: object) -> None:
    hs = doc["handshake"]
    rows: list[tuple[str, object]] = [
        *([("plugin dir", doc["plugin_dir"])] if doc["plugin_dir"] else []),
        ("executable", doc["executable"]),
        ("pid", doc["pid"]),
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
    ]
    if isinstance(manifest, PluginManifest):
        provider = manifest.provider
        rows.append(("provider", f"{provider.name} {provider.version} ({provider.type})"))
    else:
        rows.append(("manifest", manifest))
    rows.append(("engine version", doc["engine_version"]))
    print(table(rows))
    if isinstance(manifest, PluginManifest):
        services = [
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
        print(table(services, ("service", "mode", "task", "protocol", "timeout", "models")))


INSPECT = Command(
    name="inspect",
    summary="start a plugin and show what it offers",
    description=(
        "Start a plugin (an executable, or a plugin directory: this machine's executable\n"
        "from its plugin.yaml, run in that directory), show its handshake, health, status,\n"
        "manifest and services, then stop it. An RPC the plugin does not implement shows\n"
        "as 'not implemented'."
    ),
    examples="""\
examples:
  aog-plugins inspect ./my-plugin
  aog-plugins inspect ./plugins/ollama            # a plugin directory (plugin.yaml)
  aog-plugins inspect ./my-plugin --auto-mtls --json
  aog-plugins inspect /usr/bin/python3 --plugin-arg ./my_plugin.py""",
    configure=_configure_inspect,
    run=_inspect,
)


# ---- invoke -------------------------------------------------------------------------


def _utf8(text: str, what: str, fix: str) -> bytes:
    """``text`` as UTF-8, or a usage error: a byte of argv, the environment or stdin that
    is not UTF-8 arrives as a lone surrogate, which cannot go to the plugin."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(exc.object[exc.start])
        shown = f"byte 0x{bad - 0xDC00:02x}" if 0xDC80 <= bad <= 0xDCFF else f"U+{bad:04X}"
        raise ConfigurationError(f"{what} is not valid UTF-8 (it has {shown}); {fix}") from None


def _pair(item: str, option: str, what: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise ConfigurationError(f"{option} wants KEY={what}, got {item!r}")
    return key, value


SECRET_MAX = 1 << 20
"""The most characters ``--auth-file`` reads: a credential is short, and a wrong path
(``/dev/zero``, a disk image) must not fill the memory."""


def _read_secret(path: str, key: str) -> str:
    try:
        if path == "-":
            text = sys.stdin.read(SECRET_MAX + 1)
        else:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                text = handle.read(SECRET_MAX + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"--auth-file {key}: cannot read {path}: {exc}") from None
    if len(text) > SECRET_MAX:
        raise ConfigurationError(
            f"--auth-file {key}: {'stdin' if path == '-' else path} holds more than "
            f"{SECRET_MAX >> 20} MiB, too much for a credential: is it the right file?"
        )
    return text.rstrip("\r\n")


def _credentials(args: argparse.Namespace) -> tuple[dict[str, str], set[str]]:
    """The credentials from --auth, --auth-env and --auth-file, and the env vars used."""
    found: dict[str, str] = {}
    used_env: set[str] = set()

    def put(key: str, value: str, option: str, source: str) -> None:
        """``source`` says where the value came from, for errors (never the value)."""
        if key in found:
            raise ConfigurationError(f"credential {key!r} is given twice (again by {option})")
        if not value:  # as --auth KEY= is refused: an empty secret is always a mistake
            raise ConfigurationError(
                f"{option} {key}: {source} is empty; it must hold the credential"
            )
        _utf8(key, f"{option}: a credential name", "name it in UTF-8")
        _utf8(value, f"{option} {key}: {source}", "re-encode the credential as UTF-8")
        found[key] = value

    for item in args.auth:
        put(*_pair(item, "--auth", "VALUE"), "--auth", "the value")
    for item in args.auth_env:
        key, var = _pair(item, "--auth-env", "VAR")
        if var not in os.environ:
            raise ConfigurationError(
                f"--auth-env {key}: environment variable {var} is not set; export it first"
            )
        used_env.add(var)
        put(key, os.environ[var], "--auth-env", f"the environment variable {var}")
    files = [_pair(item, "--auth-file", "PATH") for item in args.auth_file]
    if sum(path == "-" for _key, path in files) > 1:  # before reading anything
        raise ConfigurationError("--auth-file: only one credential can come from stdin")
    for key, path in files:
        source = "stdin" if path == "-" else f"the file {path}"
        put(key, _read_secret(path, key), "--auth-file", source)
    return found, used_env


def _check_service(manifest: object, service: str) -> None:
    if isinstance(manifest, PluginManifest):
        manifest.service(service)  # ManifestKeyError (exit 2) lists the services it has


def _invoke(args: argparse.Namespace) -> int:
    data = _utf8(args.data, "--data", "the request must be UTF-8 JSON")
    try:
        json.loads(data)
    except ValueError as exc:
        raise ConfigurationError(f"--data is not valid JSON: {exc}") from None
    except RecursionError:  # Python's parser recurses once per level
        raise ConfigurationError(
            "--data is nested too deeply to check (thousands of levels of arrays or "
            "objects); send a flatter request"
        ) from None
    credentials, used_env = _credentials(args)
    _utf8(args.service, f"the service name {args.service!r}", "name a service of the manifest")
    _utf8(args.auth_type, "--auth-type", "pass a UTF-8 auth type")
    _utf8(args.auth_info, "--auth-info", "pass UTF-8 text")
    target = resolve_target(args.executable, plugins_dir=True)
    # The plugin inherits our environment, minus the variables that held secrets.
    env = {k: v for k, v in os.environ.items() if k not in used_env} if used_env else None
    with _launch(args, target, env=env) as plugin:
        client = plugin.client
        try:
            _check_service(_optional(lambda: client.get_manifest(timeout=30)), args.service)
        except ManifestKeyError as exc:
            raise ConfigurationError(f"unknown service: {exc}") from None
        auth_info = args.auth_info
        if credentials:
            client.set_auth(args.auth_type, credentials)
            auth_info = auth_info or json.dumps(credentials)
        timeout = args.timeout
        out = sys.stdout.buffer
        if args.stream:
            for chunk in client.invoke_service_stream(
                args.service, data, auth_info, timeout=timeout
            ):
                if chunk.data:
                    out.write(chunk.data if chunk.data.endswith(b"\n") else chunk.data + b"\n")
                    out.flush()
        else:
            reply = client.invoke_service(args.service, data, auth_info, timeout=timeout)
            out.write(reply + b"\n")
            out.flush()
    return 0


def _configure_invoke(parser: argparse.ArgumentParser) -> None:
    _add_launch_args(parser, plugins_dir=True)
    parser.add_argument("service", help="the service to call, as the manifest names it")
    parser.add_argument(
        "--plugin",
        default=None,
        metavar="NAME",
        help="with a plugins directory: the plugin to call (when several serve the service)",
    )
    parser.add_argument(
        "--data", default="{}", metavar="JSON", help="the JSON request body, UTF-8 (default {})"
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="call InvokeServiceStream and print each chunk as it arrives",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="deadline of the call (default: the manifest's timeout for the service)",
    )
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a credential for SetAuth (repeatable). Visible to every user in the process "
        "list: for secrets use --auth-env or --auth-file",
    )
    parser.add_argument(
        "--auth-env",
        action="append",
        default=[],
        metavar="KEY=VAR",
        help="credential KEY from environment variable VAR (repeatable); VAR is not "
        "passed on to the plugin",
    )
    parser.add_argument(
        "--auth-file",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="credential KEY from the file PATH, trailing newline removed (repeatable); "
        "PATH - reads it from stdin",
    )
    parser.add_argument(
        "--auth-type",
        default="apikey",
        metavar="TYPE",
        help="the auth type sent to SetAuth (default apikey)",
    )
    parser.add_argument(
        "--auth-info",
        default="",
        metavar="TEXT",
        help="the auth info string sent with the call (default: the credentials as JSON); "
        "visible in the process list like --auth",
    )


INVOKE = Command(
    name="invoke",
    summary="start a plugin and call one of its services",
    description=(
        "Start a plugin, call one service with a JSON request, print the answer (each\n"
        "chunk on its own line with --stream) and stop the plugin. With credentials,\n"
        "SetAuth is called first. The plugin is not restarted if it dies. PLUGIN may be a\n"
        "plugin directory, or a plugins directory: then the one plugin whose manifest lists\n"
        "the service is started (--plugin NAME picks one when several do)."
    ),
    examples="""\
examples:
  aog-plugins invoke ./my-plugin chat --data '{"messages": []}'
  aog-plugins invoke ./plugins chat --data '{}'   # the plugin of ./plugins serving chat
  aog-plugins invoke ./plugins chat --plugin ollama   # when several serve it
  aog-plugins invoke ./my-plugin chat --stream --data '{"stream": true}'
  aog-plugins invoke ./my-plugin chat --auth-env api_key=MY_API_KEY   # exported earlier
  aog-plugins invoke ./my-plugin chat --auth-file api_key=~/.config/my-plugin/key
  pass show my-plugin | aog-plugins invoke ./my-plugin chat --auth-file api_key=-""",
    configure=_configure_invoke,
    run=_invoke,
)
