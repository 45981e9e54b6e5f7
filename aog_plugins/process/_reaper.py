"""Kill-on-exit that holds even when the host is SIGKILLed: one reaper process per host.

The reaper runs in its own session with a pipe from the host on its stdin. The host
sends ``track <pgid> <create_time> <socket_dir|->`` and ``untrack <pgid>`` lines; when
the pipe reaches EOF (the host died, however it died) the reaper SIGKILLs every group
still tracked that is provably the same group (psutil's (pid, create_time) identity),
removes the tracked socket dirs and exits. Before forking a plugin the host sends
``spawn <socket_dir>`` (withdrawn by ``unspawn <socket_dir>`` once the ``track`` line is
sent, or the spawn failed): a host that dies between the fork and its ``track`` line
leaves the reaper a plugin it finds by that unique dir in the plugin's environment.
PR_SET_PDEATHSIG cannot do this: it fires when the spawning *thread* exits, and plugins
may be started from short-lived pool threads.

It works in two stages, in one process. While the host lives it is ``/bin/sh`` running
:data:`_WAIT_STAGE`: it keeps the lines of the groups still tracked and nothing else
(about a millisecond of CPU to start, where even ``python -I -S`` costs eight, on a host's
first launch, just before the plugin is forked). At EOF, if anything is still tracked, it execs
``python -I -S`` :mod:`._reaper_main` with those lines on its stdin, which does the
killing and the cleanup; the pid stays the same. Without ``/bin/sh`` the Python program
reads the pipe itself.

The reaper ignores SIGINT/SIGHUP (it is in its own session anyway); if something kills it
while the host lives, the host starts a new one at its next call and replays the set.
Processes that leave their plugin's process group (setsid, setpgid) are out of reach.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

import psutil

from aog_plugins.transport import signals_unblocked, start_thread

__all__ = ["Reaper", "reaper", "reaper_argv"]

_log = logging.getLogger("aog_plugins.process")

_WRITE_TIMEOUT = 2.0
"""A reaper that has not drained its pipe in this long is wedged: replace it."""

_ENV_KEEP = ("PATH", "LD_LIBRARY_PATH", "SYSTEMROOT")
"""All the reaper inherits: enough to start the interpreter, no markers or secrets."""

_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper_main.py")
"""The reaper's program, run by path with ``-I -S``: stdlib only, no aog_plugins import."""

_SHELL = "/bin/sh"

_WAIT_STAGE = r"""
trap '' INT HUP
nl='
'
live=$nl
while IFS= read -r line; do
    case $line in
    'track '*)
        live=$live$line$nl ;;
    'untrack '*)
        key="${nl}track ${line#untrack } "
        while case $live in *"$key"*) true ;; *) false ;; esac; do
            rest=${live#*"$key"}
            live=${live%%"$key"*}$nl${rest#*"$nl"}
        done ;;
    'spawn '*)
        live=$live$line$nl ;;
    'unspawn '*)
        key="${nl}spawn ${line#unspawn }${nl}"
        while case $live in *"$key"*) true ;; *) false ;; esac; do
            live=${live%%"$key"*}$nl${live#*"$key"}
        done ;;
    esac
done
[ "$live" = "$nl" ] && exit 0
exec "$@" <<EOF
$live
EOF
"""
"""The reaper's first stage (``sh -c`` with the Python program's argv as arguments): it
keeps one ``track`` line per tracked group and one ``spawn`` line per spawn under way (an
``untrack``/``unspawn`` deletes the line, so it holds no more than the host tracks; a
partial line at EOF is dropped, as the program drops it) and, at EOF, execs the program
with them, or exits if nothing is tracked."""


def reaper_argv(host_pid: int, psutil_dir: str, *, shell: str | None = _SHELL) -> list[str]:
    """The reaper's command line: the shell stage when ``shell`` exists, else the
    Python program reading the host's pipe itself."""
    program = [
        sys.executable,
        "-I",
        "-S",
        _PROGRAM,
        "aog-plugins-reaper",
        str(host_pid),
        psutil_dir,
    ]
    if shell is None or not os.access(shell, os.X_OK):
        return program
    return [shell, "-c", _WAIT_STAGE, "aog-plugins-reaper", *program]


class _Wedged(Exception):
    """The reaper stopped reading its pipe."""


class Reaper:
    """The host side of the reaper: tracked process groups and the pipe to the process.

    Thread-safe. ``track``/``untrack`` never raise: a dead or wedged reaper is replaced
    and the tracked set replayed; failures are logged at WARNING. ``untrack`` never blocks
    (it runs on the thread that noticed a plugin's exit): what it cannot write at once is
    written by a flusher thread, in order, and at interpreter exit.
    """

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self._lock = threading.Lock()  # the state below; never held while blocking
        self._io_lock = threading.Lock()  # held while writing to or (re)starting the process
        self._tracked: dict[int, bytes] = {}
        self._spawning: dict[bytes, bytes] = {}  # socket dir -> its ``spawn`` line
        self._outbox = bytearray()  # commands not yet written, in order
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._retry_at = 0.0
        self._kick = threading.Event()
        self._flusher: threading.Thread | None = None
        atexit.register(self._flush_at_exit)

    @property
    def pid(self) -> int | None:
        """The reaper process's pid, None until the first ``track`` or ``spawning``."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def tracked_pids(self) -> list[int]:
        """The process group ids the reaper would kill if this process died now."""
        with self._lock:
            return list(self._tracked)

    def track(self, pid: int, create_time: float, socket_dir: str | None = None) -> None:
        """When this process dies, kill group ``pid`` (if it is still the one born at
        ``create_time``) and remove ``socket_dir``. Returns once the reaper has it."""
        path = os.fsencode(socket_dir) if socket_dir else b"-"
        if b"\n" in path:  # one command per line; such a dir is left to stale cleanup
            path = b"-"
        line = b"track %d %r %s\n" % (pid, float(create_time), path)
        with self._lock:
            self._tracked[pid] = line
            self._outbox += line
            if self._spawning.pop(path, None) is not None:  # after the track line: no gap
                self._outbox += b"unspawn %s\n" % path
        with self._io_lock:
            self._flush_locked()

    def spawning(self, socket_dir: str) -> bool:
        """Before a plugin is given ``socket_dir`` (or the dir is made): should this process
        die before :meth:`track`, the reaper kills the process whose environment names
        that dir and removes the dir. Returns once the reaper has it: True if this call
        announced it, False if it already was (or cannot be). :meth:`track` with the same
        dir (or :meth:`spawn_failed`) withdraws it."""
        path = os.fsencode(socket_dir)
        if b"\n" in path:  # one command per line; cannot be announced
            return False
        line = b"spawn %s\n" % path
        with self._lock:
            if path in self._spawning:
                return False
            self._spawning[path] = line
            self._outbox += line
        with self._io_lock:
            self._flush_locked()
        return True

    def spawn_failed(self, socket_dir: str) -> None:
        """Withdraw :meth:`spawning` (no process was started, or the dir is gone).
        Never blocks."""
        path = os.fsencode(socket_dir)
        with self._lock:
            if self._spawning.pop(path, None) is None:
                return
            self._outbox += b"unspawn %s\n" % path
        self._write_or_defer()

    def untrack(self, pid: int) -> None:
        """Forget group ``pid``: the host has killed or reaped it itself. Never blocks."""
        with self._lock:
            if self._tracked.pop(pid, None) is None:
                return
            self._outbox += b"untrack %d\n" % pid
        self._write_or_defer()

    def flush(self) -> None:
        """Write every pending command (blocking, bounded by the write timeout)."""
        with self._io_lock:
            self._flush_locked()

    # ---- internals ----------------------------------------------------------------------
    def _write_or_defer(self) -> None:
        """Write the outbox now if that needs no waiting, else leave it to the flusher."""
        if self._io_lock.acquire(blocking=False):
            try:
                if self._write_now():
                    return
            finally:
                self._io_lock.release()
        self._start_flusher()

    def _write_now(self) -> bool:
        """Write what fits without waiting (io lock held); True if nothing is left."""
        proc = self._proc
        if proc is None or self._fd < 0:
            return False
        with self._lock:
            data, self._outbox = bytes(self._outbox), bytearray()
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:  # full (BlockingIOError) or dead (EPIPE): the flusher takes over
            with self._lock:
                self._outbox[0:0] = data[done:]
            return False
        return True

    def _start_flusher(self) -> None:
        self._kick.set()
        with self._lock:
            flusher = self._flusher
            if flusher is not None and flusher.is_alive():
                return
            self._flusher = threading.Thread(
                target=self._flush_forever, name="aog-plugins-reaper-pipe", daemon=True
            )
            start_thread(self._flusher)

    def _flush_forever(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            self.flush()

    def _flush_at_exit(self) -> None:
        if self.owner_pid == os.getpid():  # not in a forked child: not its pipe
            self.flush()

    def _flush_locked(self) -> None:
        try:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with self._lock:
                    data, self._outbox = bytes(self._outbox), bytearray()
                try:
                    self._write_locked(data)
                    return
                except (BrokenPipeError, _Wedged) as exc:
                    why = "stopped reading" if isinstance(exc, _Wedged) else "died"
                    _log.warning("the plugin reaper (pid %d) %s; restarting it", proc.pid, why)
            elif proc is not None:
                _log.warning(
                    "the plugin reaper (pid %d) exited with %s; restarting it",
                    proc.pid,
                    proc.returncode,
                )
            self._restart_locked()
        except Exception:
            _log.warning("the plugin reaper is unavailable", exc_info=True)

    def _restart_locked(self) -> None:
        self._stop_locked()
        with self._lock:
            # A new reaper gets the whole tracked set; the pending commands are in it.
            replay = b"".join(self._tracked.values()) + b"".join(self._spawning.values())
            self._outbox = bytearray()
        if not replay or time.monotonic() < self._retry_at:
            return
        try:
            self._start_locked()
            self._write_locked(replay)
        except Exception:
            self._retry_at = time.monotonic() + 5.0
            self._stop_locked()
            raise

    def _start_locked(self) -> None:
        if not sys.executable or getattr(sys, "frozen", False):
            raise RuntimeError("no Python interpreter to run the reaper with")
        if not os.path.isfile(_PROGRAM):
            raise RuntimeError(f"the reaper program {_PROGRAM} is missing")
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        psutil_dir = os.path.dirname(os.path.dirname(os.path.abspath(psutil.__file__)))
        with signals_unblocked():  # like a plugin: the reaper gets a clean mask
            self._proc = subprocess.Popen(
                reaper_argv(os.getpid(), psutil_dir),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=env,
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)

    def _stop_locked(self) -> None:
        proc, self._proc, self._fd = self._proc, None, -1
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            # Wedged (or we gave up on it): it is our child, so its pid is still its own.
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)

    def _write_locked(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + _WRITE_TIMEOUT
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Wedged from None
                select.select([], [self._fd], [], remaining)

    def _abandon(self) -> None:
        """In a forked child: drop the parent's pipe so the parent's reaper still sees EOF."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.returncode = 0  # not our child: never wait for it or warn about it


_instance: Reaper | None = None
_instance_lock = threading.Lock()


def reaper() -> Reaper:
    """This process's :class:`Reaper` (made on first use; a forked child gets its own)."""
    global _instance
    inst = _instance
    if inst is not None and inst.owner_pid == os.getpid():
        return inst
    with _instance_lock:
        if _instance is None or _instance.owner_pid != os.getpid():
            _instance = Reaper()
        return _instance


def _after_fork_in_child() -> None:
    global _instance, _instance_lock
    _instance_lock = threading.Lock()
    inst, _instance = _instance, None
    if inst is not None:
        inst._abandon()


os.register_at_fork(after_in_child=_after_fork_in_child)
