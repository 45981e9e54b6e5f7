"""The reaper process: kills a host's plugin groups once the host is gone, however it died.

Run as ``python -I -S <this file> aog-plugins-reaper <host pid> <psutil's sys.path dir>``,
exec'd by the reaper's shell stage once the host is gone, with the lines of the groups
still tracked on stdin; or, where there is no ``/bin/sh``, with the host's pipe on stdin
(see :mod:`aog_plugins.process._reaper`). It imports
only the standard library while it waits (``-I -S``: no site, no aog_plugins package, so
it starts in milliseconds and stays small); psutil is imported only once the host is gone
and there is something to kill.

Protocol, one command per line: ``track <pgid> <create_time> <socket_dir|->`` and
``untrack <pgid>``; anything else is ignored. At EOF every tracked group that is provably
the one the host started (the leader's create time matches, or the leader is gone but the
group still exists) gets SIGKILL, and each tracked socket dir owned by our uid is removed.
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


def apply_line(line: bytes, tracked: Tracked) -> None:
    """Apply one protocol line to ``tracked``; a malformed line changes nothing."""
    parts = line.split(b" ", 3)
    try:
        if parts[0] == b"track" and len(parts) == 4:
            path = None if parts[3] == b"-" else parts[3]
            tracked[int(parts[1])] = (float(parts[2]), path)
        elif parts[0] == b"untrack" and len(parts) == 2:
            tracked.pop(int(parts[1]), None)
    except ValueError:
        pass


def read_commands(fd: int) -> Tracked:
    """Read commands from ``fd`` until EOF (the host is gone) and return what is tracked."""
    tracked: Tracked = {}
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        except OSError:
            chunk = b""
        if not chunk:
            return tracked
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            apply_line(line, tracked)


def reap(tracked: Tracked, psutil_dir: str) -> None:
    """Kill every tracked group that is provably ours, then remove the socket dirs."""
    if not tracked:
        return
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
    for _, path in tracked.values():
        if path is not None:
            remove_own_dir(path)


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
    reap(read_commands(0), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
