"""``aog-plugins list DIR`` and ``aog-plugins run DIR``: the plugin manager on the command
line (registered by :mod:`aog_plugins.cli` through :func:`register`)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from aog_plugins._cli_show import table
from aog_plugins.manager import ManagerEvent, PluginEntry, PluginManager

__all__ = ["entry_doc", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``list`` and ``run`` subcommands to the CLI's subparsers."""
    listing = sub.add_parser("list", help="list a plugins directory without starting anything")
    listing.add_argument("directory", help="the plugins directory (one folder per plugin)")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    listing.set_defaults(func=_list)
    run = sub.add_parser("run", help="supervise every plugin of a directory until Ctrl-C")
    run.add_argument("directory", help="the plugins directory (one folder per plugin)")
    run.add_argument("--eager", action="store_true", help="start every plugin now")
    run.add_argument(
        "--no-auto-mtls", dest="auto_mtls", action="store_false", help="plaintext gRPC"
    )
    run.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS")
    run.add_argument("--aog-version", default=None, help="passed to plugins as AOG_VERSION")
    run.set_defaults(func=_run)


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
            print(f"{d['name']}: {d['error_type']}: {d['error']}")
    return 0


_out_lock = threading.Lock()


def _say(text: str) -> None:
    """One whole line per write: events come from another thread than the main one."""
    with _out_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _print_event(event: ManagerEvent) -> None:
    _say(f"{time.strftime('%H:%M:%S')} {event}")


def _run(args: argparse.Namespace) -> int:
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends the run like Ctrl-C
    try:
        return _supervise(args, _print_event)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _supervise(args: argparse.Namespace, show: Callable[[ManagerEvent], None]) -> int:
    manager = PluginManager(
        args.directory,
        eager=args.eager,
        auto_mtls=args.auto_mtls,
        idle_timeout=args.idle_timeout,
        aog_version=args.aog_version,
        on_event=show,
    )
    try:
        count = len(manager.entries())
        _say(f"supervising {count} plugin(s) in {manager.directory}; Ctrl-C stops")
        while True:
            # Short naps: a signal may land on one of gRPC's or the watcher's threads, and
            # Python runs its handler only once the main thread wakes up.
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("stopping every plugin", file=sys.stderr, flush=True)
    finally:
        # A second Ctrl-C (or a signal sent to the whole group) must not cut the cleanup.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        manager.close()
    _say("all plugins stopped")
    return 0
