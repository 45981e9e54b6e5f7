"""Private per-plugin directories for unix sockets (mode 0700, owned by this host).

A directory is named ``aogp-<host pid>-<random>``. Hosts that died without cleaning up
(SIGKILL with no reaper, power loss) leave theirs behind; once per process, the first
start (while its plugin boots) or the first :func:`make_socket_dir` removes those of dead
hosts (:func:`remove_stale_dirs`). A Python
plugin whose host gave it no socket dir names its private TLS-relay dir the same way
(``aogp-<plugin pid>-relay-<random>``), so the same cleanup removes it once it is dead.

The reaper (:mod:`._reaper`) hears of a host's dir before it is made, so that a host
killed at any moment, even right after the ``mkdir``, leaves no dir for a sweep to find.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading

import psutil

from aog_plugins.process._reaper import reaper

__all__ = [
    "MAX_SOCKET_DIR_LEN",
    "make_socket_dir",
    "remove_socket_dir",
    "remove_stale_dirs",
    "remove_stale_dirs_once",
]

_log = logging.getLogger("aog_plugins.process")

PREFIX = "aogp-"
MAX_SOCKET_DIR_LEN = 60
"""Unix socket paths are limited to ~107 bytes; plugins add a file name of their own."""

_NAME = re.compile(rf"{PREFIX}(\d+)-.+\Z", re.DOTALL)
_cleaned_in: int | None = None
_clean_lock = threading.Lock()


def _temp_root() -> str:
    """The directory :func:`tempfile.gettempdir` would choose, without its probe.

    On its first call gettempdir() writes a randomly named file into each candidate and
    unlinks it: a host killed in between leaves that file in TMPDIR, where no sweep
    recognizes it. The same candidates (``tempfile.tempdir``, $TMPDIR, $TEMP, $TMP, then
    the usual dirs) are checked with access() instead; only when none is usable does
    gettempdir() decide (it also tries the current directory).
    """
    if tempfile.tempdir is not None:
        return os.fsdecode(tempfile.tempdir)
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    for candidate in [*candidates, "/tmp", "/var/tmp", "/usr/tmp"]:
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return os.path.abspath(candidate)
    return tempfile.gettempdir()


def _base_dir() -> str:
    base = _temp_root()
    if len(base) > MAX_SOCKET_DIR_LEN - 20:
        # A long TMPDIR would make the plugin's socket path too long to bind.
        base = "/tmp"
    return base


def make_socket_dir(*, clean_stale: bool = True) -> str:
    """Create a fresh 0700 directory named after this host's pid; unless ``clean_stale``
    is False (the caller then calls :func:`remove_stale_dirs_once` itself, later), the
    first call of the process removes the stale dirs of dead hosts first.

    The reaper is told of the dir before it exists (and removes it if this process dies
    before :func:`remove_socket_dir`); a plugin later started with it in its environment
    is covered by the same announcement until it is tracked.
    """
    if clean_stale:
        remove_stale_dirs_once()
    base = _base_dir()
    for _ in range(100):
        path = os.path.join(base, f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        announced = reaper().spawning(path)
        try:
            os.mkdir(path, 0o700)
        except BaseException as exc:
            if announced:
                reaper().spawn_failed(path)
            if isinstance(exc, FileExistsError):
                continue
            raise
        return path
    raise FileExistsError(f"no unused socket dir name in {base} after 100 tries")


def remove_stale_dirs_once() -> None:
    """:func:`remove_stale_dirs`, the first time it is called in this process."""
    global _cleaned_in
    if _cleaned_in != os.getpid():
        with _clean_lock:
            if _cleaned_in != os.getpid():
                _cleaned_in = os.getpid()
                remove_stale_dirs()


def remove_socket_dir(path: str | None) -> None:
    """Remove a socket directory and whatever the plugin left in it, then withdraw it
    from the reaper (:func:`make_socket_dir`)."""
    if path:
        shutil.rmtree(path, ignore_errors=True)
        reaper().spawn_failed(path)


def remove_stale_dirs() -> list[str]:
    """Remove our uid's socket dirs whose host is dead (or whose pid now names another process).

    Looks in the socket base dir and /tmp; never touches other users' dirs or those of
    live hosts, and never raises. Returns the paths removed.
    """
    removed: list[str] = []
    for base in dict.fromkeys((_base_dir(), "/tmp")):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            match = _NAME.match(entry.name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            if _host_alive(int(match.group(1)), min(st.st_mtime, st.st_ctime)):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    if removed:
        _log.debug("removed %d stale socket dirs: %s", len(removed), removed)
    return removed


def _host_alive(pid: int, dir_time: float) -> bool:
    """Whether ``pid`` may be the live process that made a dir last changed at ``dir_time``."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # A process born after the dir was last changed cannot have made it: the pid was
        # reused. 1 s of slack for coarse clocks: when unsure, keep the dir.
        return proc.create_time() <= dir_time + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: keep the dir
