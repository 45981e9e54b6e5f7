"""``aog-plugins demo``: the plugin manager end to end over the bundled example plugin.

The example ships inside the package (:mod:`aog_plugins.examples`); the demo writes a
runnable copy of it into a temporary plugins directory (a launcher naming this interpreter,
since an install keeps neither the execute bit nor a ``python3`` that has aog-plugins), so
it works after a plain ``pip install`` from any directory. Then: list, start on first use,
a unary and a streamed call, a plugin added and one replaced while the manager runs
(watched directory, zero-downtime swap), everything stopped, and a check that nothing is
left running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import psutil

from aog_plugins._cli_base import EXIT_FAILED, EXIT_OK, Command
from aog_plugins._cli_show import handshake_doc, table
from aog_plugins.errors import AogPluginsError
from aog_plugins.examples import ECHO_DIR, NETWORK_ENV, install_example
from aog_plugins.manager import ManagerEvent, PluginManager

__all__ = ["DEMO"]

STEP_TIMEOUT = 30.0
"""How long the demo waits for the manager to notice a change on disk (normally < 2 s)."""


class DemoStepError(AogPluginsError):
    """A step of the demo did not happen (the manager did not report it in time)."""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG - 5)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Events:
    """The manager's events, waited on by the main thread and printed by it (in order)."""

    def __init__(self) -> None:
        self._events: list[ManagerEvent] = []
        self._shown = 0
        self._cond = threading.Condition()

    def __call__(self, event: ManagerEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def wait(self, what: str, match: Callable[[ManagerEvent], bool]) -> ManagerEvent:
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(match(e) for e in self._events), timeout=STEP_TIMEOUT
            ):
                raise DemoStepError(
                    f"demo: the manager reported no {what} within {STEP_TIMEOUT:g}s "
                    "(is the machine overloaded? try again)"
                )
            return next(e for e in self._events if match(e))

    def show_new(self) -> None:
        with self._cond:
            new, self._shown = self._events[self._shown :], len(self._events)
        for event in new:
            print(f"    event: {event}")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _Seen:
    """Every plugin process the demo saw (with its children) and its socket dir."""

    def __init__(self, manager: PluginManager) -> None:
        self.manager = manager
        self.processes: dict[int, psutil.Process] = {}
        self.socket_dirs: set[str] = set()

    def note(self, name: str) -> int:
        plugin = self.manager.get(name)  # running already: no start
        process = psutil.Process(plugin.pid)
        for proc in (process, *process.children(recursive=True)):
            self.processes.setdefault(proc.pid, proc)
        if plugin.handshake.network == "unix":
            self.socket_dirs.add(os.path.dirname(plugin.handshake.address))
        return process.pid


def _chat(manager: PluginManager, name: str, body: object) -> str:
    return manager.client(name).invoke_service("chat", json.dumps(body).encode()).decode()


def _show_entries(manager: PluginManager) -> None:
    rows = [
        [e.name, e.manifest.provider.version if e.manifest else "-", ",".join(e.services),
         e.state.value, e.pid or "-"]
        for e in manager.entries()
    ]  # fmt: skip
    print(table(rows, ["NAME", "VERSION", "SERVICES", "STATE", "PID"]))


def _walk_through(manager: PluginManager, plugins: Path, events: _Events, seen: _Seen) -> None:
    print("1. listed, nothing started yet (aog-plugins list does this):")
    _show_entries(manager)
    print("2. first call starts the plugin (once, however many callers):")
    reply = _chat(manager, "echo", {"hello": "aog"})
    pid = seen.note("echo")
    print(f"  invoke_service('chat') -> {reply}")
    hs = handshake_doc(manager.get("echo").handshake)
    tls = f", AutoMTLS {hs['server_cert_curve']}" if hs["auto_mtls"] else ""
    print(f"  echo started on first use, pid {pid}: {hs['network']} {hs['address']}{tls}")
    print("  invoke_service_stream('chat'):")
    stream = manager.client("echo").invoke_service_stream("chat", b'{"chunks": 3}')
    for chunk in stream:
        print(f"    chunk {chunk.data.decode()!r} final={chunk.is_final}")
    events.show_new()
    print("3. a plugin added while running (the directory is watched):")
    install_example(plugins, "echo-2")
    events.wait("added echo-2", lambda e: e.kind == "added" and e.name == "echo-2")
    print(f"  wrote {plugins / 'echo-2'}; listed: {[e.name for e in manager.entries()]}")
    print(f"  plugins serving chat: {[e.name for e in manager.find(service='chat')]}")
    reply = _chat(manager, "echo-2", {"to": "echo-2"})
    print(f"  echo-2 -> {reply} (pid {seen.note('echo-2')})")
    events.wait("start of echo-2", lambda e: e.kind == "started" and e.name == "echo-2")
    events.show_new()
    print("4. echo replaced while running (new build started first, then the old one stopped):")
    install_example(plugins, "echo", version="0.2.0")
    events.wait("replace of echo", lambda e: e.kind == "replaced" and e.name == "echo")
    events.wait("stop of the old echo", lambda e: e.kind == "stopped" and e.pid == pid)
    version = manager.client("echo").get_manifest().provider.version
    new_pid = seen.note("echo")
    print(f"  echo now runs version {version}, pid {new_pid} (was {pid})")
    events.show_new()
    _show_entries(manager)


class _Terminated(BaseException):
    """SIGTERM, raised on the main thread so that the demo's ``with`` blocks unwind."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
    raise _Terminated


def _demo(args: argparse.Namespace) -> int:
    """SIGTERM ends the demo as it ends ``invoke``: dead of SIGTERM (143 in a shell), once
    its plugins are stopped and, unlike the default action, its temporary directory gone."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            return _run_demo(args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except _Terminated:  # also when it comes just as the demo ends
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("unreachable: SIGTERM's default action ends the process") from None


def _run_demo(args: argparse.Namespace) -> int:
    logger = logging.getLogger("aog_plugins.plugin")
    logger.setLevel(logging.DEBUG - 5)
    logger.propagate = False
    collected = _Collect()
    logger.addHandler(collected)
    network = "tcp" if args.tcp else "unix"
    events = _Events()
    with tempfile.TemporaryDirectory(prefix="aog-plugins-demo-") as tmp:
        plugins = Path(tmp) / "plugins"
        install_example(plugins, "echo")
        print(f"plugins directory {plugins}: a runnable copy of the bundled echo example")
        print(f"  ({ECHO_DIR}); plugins serve over {network} with AutoMTLS")
        with PluginManager(
            plugins, auto_mtls=True, env={NETWORK_ENV: network}, on_event=events
        ) as manager:
            seen = _Seen(manager)
            _walk_through(manager, plugins, events, seen)
            print("5. plugin logs (the host turns them into logging records):")
            for record in collected.records:
                source = record.name.removeprefix("aog_plugins.plugin.")
                print(f"    {source} [{record.levelname}] {record.getMessage()}")
            print("6. stopping the manager (every plugin, the watcher):")
        events.show_new()
    left = [p.pid for p in seen.processes.values() if _alive(p)]
    print(f"  plugin processes seen: {sorted(seen.processes)}")
    print(f"  plugin processes still running: {left or 'none'}")
    dirs_left = sorted(d for d in seen.socket_dirs if os.path.exists(d))
    if seen.socket_dirs:
        print(f"  socket dirs left: {dirs_left or 'none'}")
    return EXIT_FAILED if left or dirs_left else EXIT_OK


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tcp", action="store_true", help="serve over TCP on 127.0.0.1 instead of a unix socket"
    )


DEMO = Command(
    name="demo",
    summary="the plugin manager on the bundled example plugin",
    description=(
        "Copy the echo example plugin that ships with aog-plugins into a temporary plugins\n"
        "directory and run a PluginManager over it (AutoMTLS): list it, start it on first\n"
        "use, a unary and a streamed call, add a plugin and replace one while it runs,\n"
        "show the plugins' logs, stop everything and show that nothing is left running."
    ),
    examples="""\
examples:
  aog-plugins demo
  aog-plugins demo --tcp""",
    configure=_configure,
    run=_demo,
)
