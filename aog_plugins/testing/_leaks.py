"""Find what a stopped plugin left behind: processes that carry its marker in their
environment (the plugin's group and every child it forked inherit it, also children that
left the group), its socket dir, and unix sockets of this process (a TLS relay) still bound
inside that dir."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import psutil

__all__ = ["MARKER_ENV", "Leak", "find_leaks", "kill_leaks"]

MARKER_ENV = "AOG_PLUGINS_TESTING_ID"
"""Set in every harness-started plugin's environment (inherited by what it forks)."""

_SETTLE = 3.0
"""How long a just-killed group may take to be gone: SIGKILL is delivered, not instant."""


@dataclass(frozen=True)
class Leak:
    """One thing still alive: a process (``pid``) or a path (socket dir or socket)."""

    kind: str  # "process", "socket dir", "relay"
    what: str
    pid: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.what}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(proc: psutil.Process, why: str) -> str:
    try:
        cmd = " ".join(proc.cmdline())[:200]
    except psutil.Error:
        cmd = "?"
    return f"pid {proc.pid} ({cmd}) {why}"


def _processes(marker: str, groups: Collection[int]) -> dict[int, tuple[psutil.Process, str]]:
    found: dict[int, tuple[psutil.Process, str]] = {}
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            # Only processes carrying the marker: a pid of the plugin's group may have been
            # reused by a stranger's process since, and that must never be reported or killed.
            if proc.environ().get(MARKER_ENV) != marker:
                continue
            pgid = os.getpgid(proc.pid)
        except (psutil.Error, OSError):
            continue
        if pgid in groups:
            found[proc.pid] = (proc, f"still in the plugin's process group {pgid}")
        else:
            found[proc.pid] = (proc, "forked by the plugin, outside its process group")
    return {pid: item for pid, item in found.items() if _alive(item[0])}


def _bound_sockets(directories: Iterable[str]) -> list[str]:
    """Unix sockets this process still has bound under ``directories`` (a relay's)."""
    prefixes = tuple(os.path.join(d, "") for d in directories)
    if not prefixes:
        return []
    try:
        conns = psutil.Process().net_connections(kind="unix")
    except (psutil.Error, OSError):
        return []
    bound = {str(c.laddr) for c in conns if isinstance(c.laddr, str)}
    return sorted(path for path in bound if path.startswith(prefixes))


def find_leaks(marker: str, groups: Collection[int], socket_dirs: Collection[str]) -> list[Leak]:
    """Everything of a stopped plugin that is still there, after letting kills settle."""
    deadline = time.monotonic() + _SETTLE
    while True:
        procs = _processes(marker, groups)
        dirs = [d for d in socket_dirs if os.path.exists(d)]
        sockets = _bound_sockets(socket_dirs)
        if not (procs or dirs or sockets) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    leaks = [Leak("process", _describe(p, why), pid=pid) for pid, (p, why) in sorted(procs.items())]
    leaks += [Leak("relay", f"socket {s} still bound by this process", path=s) for s in sockets]
    leaks += [Leak("socket dir", f"{d} still exists", path=d) for d in dirs]
    return leaks


def kill_leaks(leaks: Iterable[Leak]) -> None:
    """SIGKILL leaked processes and remove leaked socket dirs (after they were reported)."""
    for leak in leaks:
        if leak.pid is not None:
            with contextlib.suppress(psutil.Error, OSError):
                psutil.Process(leak.pid).kill()
        elif leak.kind == "socket dir" and leak.path is not None:
            shutil.rmtree(leak.path, ignore_errors=True)
