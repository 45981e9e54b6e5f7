"""The reaper process: kills a host's plugin groups once the host is gone, however it died.

Run as ``python -I -S <this file> aog-plugins-reaper <host pid> <psutil's sys.path dir>``,
exec'd by the reaper's shell stage once the host is gone, with the lines of the groups
still tracked on stdin; or, where there is no ``/bin/sh``, with the host's pipe on stdin
(see :mod:`aog_plugins.process._reaper`). It imports
only the standard library while it waits (``-I -S``: no site, no aog_plugins package, so
it starts in milliseconds and stays small); psutil is imported only once the host is gone
and there is something to kill.

Protocol, one command per line: ``track <pgid> <create_time> <socket_dir|->``,
``untrack <pgid>``, ``spawn <socket_dir>`` and ``unspawn <socket_dir>``; anything else is
ignored. At EOF every tracked group that is provably the one the host started (the
leader's create time matches, or the leader is gone but the group still exists) gets
SIGKILL. A ``spawn`` line not yet withdrawn is a plugin the host was forking when it died,
before it could send its ``track`` line: the reaper looks (for up to
:data:`SPAWN_WAIT` s, as the fork may not have exec'd yet) for a process whose
environment carries ``PLUGIN_UNIX_SOCKET_DIR=<socket_dir>`` (the dir is unique to that
start) and SIGKILLs its group. Then each tracked or announced socket dir owned by our uid
is removed.
"""

from __future__ import annotations

# Only what waiting needs is imported up front: the reaper starts on a host's first
# launch, while the plugin boots, and every millisecond of its start is CPU taken from
# both (shutil, typing and contextlib cost the interpreter more than its own start). The
# signal module imports enum, which triples the start: its C half, _signal, is used (it has
# no type stub; CPython always has it).
import _signal  # type: ignore[import-not-found]
import os
import stat
import sys

TYPE_CHECKING = False  # typing's, without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import TypeAlias

    Tracked: TypeAlias = dict[int, tuple[float, bytes | None]]
    """pgid -> (the leader's create time, its socket dir or None)."""

_CREATE_TIME_SLACK = 0.01

SPAWN_WAIT = 2.0
"""How long to look for the plugin of a ``spawn`` the host died in: the host may have died
between fork and exec, and only the exec gives the plugin its environment."""

_DIR_VAR = b"PLUGIN_UNIX_SOCKET_DIR="


def apply_line(line: bytes, tracked: Tracked, spawning: set[bytes] | None = None) -> None:
    """Apply one protocol line to ``tracked`` (and the announced socket dirs to
    ``spawning``); a malformed line changes nothing."""
    if spawning is not None and line.startswith(b"spawn "):
        spawning.add(line[6:])
        return
    if spawning is not None and line.startswith(b"unspawn "):
        spawning.discard(line[8:])
        return
    parts = line.split(b" ", 3)
    try:
        if parts[0] == b"track" and len(parts) == 4:
            path = None if parts[3] == b"-" else parts[3]
            tracked[int(parts[1])] = (float(parts[2]), path)
        elif parts[0] == b"untrack" and len(parts) == 2:
            tracked.pop(int(parts[1]), None)
    except ValueError:
        pass


def read_commands(fd: int) -> tuple[Tracked, set[bytes]]:
    """Read commands from ``fd`` until EOF (the host is gone); return what is tracked and
    the socket dirs of spawns still announced."""
    tracked: Tracked = {}
    spawning: set[bytes] = set()
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        except OSError:
            chunk = b""
        if not chunk:
            return tracked, spawning
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            apply_line(line, tracked, spawning)


def reap(tracked: Tracked, psutil_dir: str, spawning: set[bytes] | None = None) -> None:
    """Kill every tracked group that is provably ours and the plugins of announced spawns,
    then remove the socket dirs."""
    if tracked:
        kill_tracked(tracked, psutil_dir)
    if spawning:
        kill_spawned(spawning)
    for _, path in tracked.values():
        if path is not None:
            remove_own_dir(path)
    for path in spawning or ():
        remove_own_dir(path)


def kill_tracked(tracked: Tracked, psutil_dir: str) -> None:
    """SIGKILL every tracked group that is provably the one the host started."""
    if psutil_dir not in sys.path:
        sys.path.append(psutil_dir)
    import contextlib

    import psutil

    def ours(pgid: int, create_time: float) -> bool:
        try:
            born = psutil.Process(pgid).create_time()
            return create_time > 0 and abs(born - create_time) < _CREATE_TIME_SLACK
        except psutil.NoSuchProcess:
            pass
        except psutil.Error:
            return False
        # The leader is gone: a pid cannot be reused while a live group carries it as its id.
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        return True

    for pgid, (create_time, _) in tracked.items():
        if ours(pgid, create_time):
            with contextlib.suppress(OSError):
                os.killpg(pgid, _signal.SIGKILL)


def kill_spawned(dirs: set[bytes], wait: float = SPAWN_WAIT) -> None:
    """SIGKILL the group of each process whose environment gives it one of ``dirs`` as its
    socket dir, looking again until each dir's process is found or ``wait`` s passed."""
    import time

    wanted = {_DIR_VAR + d for d in dirs}
    deadline = time.monotonic() + wait
    while True:
        matched: set[bytes] = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    found = wanted.intersection(f.read().split(b"\0"))
            except OSError:  # gone, or another user's
                continue
            if not found:
                continue
            pid = int(name)
            try:
                # Found by its environment, so it has exec'd, after its setsid: it leads
                # its own group, which holds whatever it started.
                if os.getpgid(pid) == pid:
                    os.killpg(pid, _signal.SIGKILL)
                else:
                    os.kill(pid, _signal.SIGKILL)
            except OSError:
                continue
            matched |= found
        wanted -= matched
        if not wanted or time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def remove_own_dir(path: bytes) -> None:
    """Remove ``path`` if it is a real directory (not a symlink) owned by our uid."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``argv``: [name, host pid, psutil's sys.path dir]."""
    if len(argv) != 3:
        sys.stderr.write("usage: reaper NAME HOST_PID PSUTIL_DIR (stdin: the host's pipe)\n")
        return 2
    # In its own session already; a terminal's Ctrl-C or hangup must not end it early.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    tracked, spawning = read_commands(0)
    reap(tracked, argv[2], spawning)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
