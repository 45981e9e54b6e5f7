"""``aog-plugins list DIR`` and ``aog-plugins run DIR``: the plugin manager on the command
line (:data:`LIST` and :data:`RUN`, listed in :data:`aog_plugins.cli.COMMANDS`)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from aog_plugins._cli_base import Command, path, seconds
from aog_plugins._cli_show import table
from aog_plugins._cli_target import refuse_manifest_file
from aog_plugins.manager import ManagerEvent, PluginEntry, PluginManager
from aog_plugins.process import printable

__all__ = ["LIST", "RUN", "entry_doc"]


def _configure_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", type=path, help="the plugins directory (one folder per plugin)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", type=path, help="the plugins directory (one folder per plugin)"
    )
    parser.add_argument("--eager", action="store_true", help="start every plugin now")
    parser.add_argument(
        "--no-auto-mtls", dest="auto_mtls", action="store_false", help="plaintext gRPC"
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="stop a plugin nobody called for this long (the next use starts it again)",
    )
    parser.add_argument("--aog-version", default=None, help="passed to plugins as AOG_VERSION")


def entry_doc(entry: PluginEntry) -> dict[str, Any]:
    """One plugin as plain data (what ``list --json`` prints)."""
    provider = entry.manifest.provider if entry.manifest is not None else None
    return {
        "name": entry.name,
        "directory": str(entry.directory),
        "type": provider.type if provider else None,
        "version": provider.version if provider else None,
        "services": list(entry.services),
        "executable": str(entry.executable) if entry.executable else None,
        "state": entry.state.value,
        "pid": entry.pid,
        "error": str(entry.error) if entry.error else None,
        "error_type": type(entry.error).__name__ if entry.error else None,
    }


def _list(args: argparse.Namespace) -> int:
    refuse_manifest_file(args.directory, plugins_dir_wanted=True)
    with PluginManager(args.directory, watch=False) as manager:
        docs = [entry_doc(e) for e in manager.entries()]
    if args.json:
        print(json.dumps({"directory": str(manager.directory), "plugins": docs}, indent=2))
        return 0
    if not docs:
        print(f"no plugins in {manager.directory}")
        return 0
    rows = [
        [
            d["name"],
            d["type"] or "-",
            d["version"] or "-",
            ",".join(d["services"]) or "-",
            d["executable"] or "-",
        ]
        for d in docs
    ]
    print(table(rows, ["NAME", "TYPE", "VERSION", "SERVICES", "EXECUTABLE"]))
    broken = [d for d in docs if d["error"]]
    if broken:
        print()
        for d in broken:
            print(printable(f"{d['name']}: {d['error_type']}: {d['error']}"))
    return 0


_out_lock = threading.Lock()


def _say(text: str) -> None:
    """One whole line per write: events come from another thread than the main one. An
    event names a plugin as its manifest does: control characters are shown escaped."""
    with _out_lock:
        sys.stdout.write(printable(text) + "\n")
        sys.stdout.flush()


class _EventPrinter:
    """The manager's ``on_event``: prints each event. Output that fails there (the reader
    of a pipe went away) is kept for the main thread, which ends the run with it, instead
    of being logged as a failing callback at each event."""

    def __init__(self) -> None:
        self.error: OSError | None = None

    def __call__(self, event: ManagerEvent) -> None:
        if self.error is not None:
            return
        try:
            _say(f"{time.strftime('%H:%M:%S')} {event}")
        except OSError as exc:
            self.error = exc


def _run(args: argparse.Namespace) -> int:
    refuse_manifest_file(args.directory, plugins_dir_wanted=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends the run like Ctrl-C
    try:
        return _supervise(args, _EventPrinter())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Only the first SIGTERM ends the run: another may follow at once (``timeout`` signals
    # its child, then its own process group), and it must not cut the cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _supervise(args: argparse.Namespace, show: _EventPrinter) -> int:
    try:
        manager = PluginManager(
            args.directory,
            eager=args.eager,
            auto_mtls=args.auto_mtls,
            idle_timeout=args.idle_timeout,
            aog_version=args.aog_version,
            on_event=show,
            install_signal_handlers=False,  # _run's own: SIGTERM ends the run like Ctrl-C
        )
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM while --eager starts the plugins: the constructor has closed
        # what it started; the run ends as it does once supervising.
        print("stopping every plugin", file=sys.stderr, flush=True)
        _say("all plugins stopped")
        return 0
    try:
        count = len(manager.entries())
        _say(f"supervising {count} plugin(s) in {manager.directory}; Ctrl-C stops")
        while True:
            # Short naps: a signal may land on one of gRPC's or the watcher's threads, and
            # Python runs its handler only once the main thread wakes up.
            time.sleep(0.2)
            if show.error is not None:
                raise show.error  # the CLI ends quietly (a broken pipe) or says why
    except KeyboardInterrupt:
        print("stopping every plugin", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl-C (or a signal sent to the whole group) must not cut the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        manager.close()
    _say("all plugins stopped")
    return 0


LIST = Command(
    name="list",
    summary="list a plugins directory without starting anything",
    description=(
        "List every plugin of an AOG plugins directory (one folder per plugin, each with\n"
        "plugin.yaml and its executable): name, type, version, services, the executable\n"
        "for this machine, and why a broken one cannot be used. Nothing is started."
    ),
    examples="""\
examples:
  aog-plugins list ./plugins
  aog-plugins list ./plugins --json""",
    configure=_configure_list,
    run=_list,
)

RUN = Command(
    name="run",
    summary="supervise every plugin of a directory until Ctrl-C",
    description=(
        "Keep every plugin of a plugins directory supervised (started on first use, or\n"
        "all at once with --eager), follow the directory (new, removed and replaced\n"
        "plugins) and print events as they happen. Ctrl-C or SIGTERM stops every plugin\n"
        "and exits 0."
    ),
    examples="""\
examples:
  aog-plugins run ./plugins --eager
  aog-plugins run ./plugins --idle-timeout 600 --aog-version 1.4.0""",
    configure=_configure_run,
    run=_run,
)
