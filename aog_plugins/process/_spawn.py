"""Spawn a plugin executable and own its OS resources: pipes, exit watch, process group.

The plugin runs in a new session (``start_new_session``), so its pid is also its process
group id and one ``killpg`` reaches its children too. No ``preexec_fn`` is used (it can
deadlock with gRPC threads, grpc/grpc#37259). Exit is seen through a pidfd on the shared
I/O loop; when the plugin exits, whatever is left of its group is killed before the
zombie is reaped, so the group id cannot have been reused by then.

Exit is handled on a lane of its own, not behind the plugin's output: a chatty plugin and
a slow logging handler can queue a megabyte of lines, and its exit (the reaping that
``kill()`` waits for, the restart) must not wait for them. The output queued before the
exit still goes first, for up to :data:`OUTPUT_DRAIN` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

import psutil

from aog_plugins.errors import ConfigurationError, PluginExitedError, PluginStartError
from aog_plugins.process._execdiag import diagnose_exec_failure
from aog_plugins.process._ioloop import io_loop
from aog_plugins.process._lane import Lane
from aog_plugins.process._logs import LineSplitter, StderrLogParser, printable
from aog_plugins.process._reaper import reaper
from aog_plugins.transport import signals_unblocked, start_thread

__all__ = ["PluginProcess", "StdoutClosedError", "describe_exit", "diagnose_exit", "spawn"]

_log = logging.getLogger("aog_plugins.process")

COOKIE_REJECTED_MARKER = "This binary is a plugin"
OUTPUT_DRAIN = 1.0
"""Seconds an exit waits for the output read before it to be handled (lines logged,
the handshake line seen) before the exit callbacks run anyway."""


class StdoutClosedError(Exception):
    """The plugin's stdout reached end of file before a handshake line (internal: the
    start turns it into a typed error once it knows whether the plugin exited)."""


class PluginProcess:
    """A running plugin process: its pipes are read by the I/O loop, its exit is watched.

    ``handshake`` resolves with the first stdout line (bytes), or fails when the plugin
    exits first. Later stdout/stderr output goes to the callbacks and the logger.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        command: tuple[str, ...],
        logger: logging.Logger,
        on_stdout: Callable[[bytes], None] | None = None,
        create_time: float | None = None,
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.command = command
        self.logger = logger
        self.create_time = _create_time(self.pid) if create_time is None else create_time
        self.handshake: Future[bytes] = Future()
        self._handshake_lock = threading.Lock()  # resolved from the output or the exit lane
        self.stderr = StderrLogParser(logger, pid=self.pid)
        self._on_stdout = on_stdout
        self._exit_lock = threading.Lock()
        self._exited = threading.Event()
        self._stderr_eof = threading.Event()
        self._exit_callbacks: list[Callable[[PluginProcess], None]] = []
        self.exit_code: int | None = None
        self.exited_at: float | None = None
        self._stdout_lines = LineSplitter()
        self._stderr_lines = LineSplitter()
        loop = io_loop()
        assert popen.stdout is not None
        assert popen.stderr is not None
        self._output_lane = loop.lane_for(self._stdout_chunk)  # stdout's and stderr's
        loop.add_reader(os.dup(popen.stdout.fileno()), self._stdout_chunk)
        loop.add_reader(os.dup(popen.stderr.fileno()), self._stderr_chunk)
        popen.stdout.close()
        popen.stderr.close()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # pragma: no cover - kernels before 5.3
            start_thread(threading.Thread(target=self._wait_thread, daemon=True))
        else:
            loop.add_exit_watch(pidfd, self._on_exit, lane=Lane("aog-plugins-exit"))

    # ---- output -------------------------------------------------------------------
    def _stdout_chunk(self, chunk: bytes) -> None:
        lines = self._stdout_lines.feed(chunk) if chunk else self._stdout_lines.flush()
        if not chunk and not lines:  # end of file, and no line: there will be none
            self._fail_handshake(StdoutClosedError("stdout closed before a handshake line"))
        for line in lines:
            if not self.handshake.done() and self._resolve_handshake(line):
                continue
            if self._on_stdout is not None:
                self._on_stdout(line + b"\n")
            else:
                self.logger.info(
                    "%s",
                    printable(line.decode("utf-8", "replace")),
                    extra={"plugin_pid": self.pid},
                )

    def _stderr_chunk(self, chunk: bytes) -> None:
        lines = self._stderr_lines.feed(chunk) if chunk else self._stderr_lines.flush()
        for line in lines:
            self.stderr.line(line)
        if not chunk:
            self._stderr_eof.set()

    def _resolve_handshake(self, line: bytes) -> bool:
        """Make ``line`` the handshake line; False if the handshake is settled already."""
        with self._handshake_lock:
            if self.handshake.done():
                return False
            self.handshake.set_result(line)
            return True

    def _fail_handshake(self, error: Exception) -> None:
        with self._handshake_lock:
            if not self.handshake.done():
                self.handshake.set_exception(error)

    # ---- exit ---------------------------------------------------------------------
    def _wait_thread(self) -> None:  # pragma: no cover - fallback without pidfd
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self._on_exit()

    def _on_exit(self) -> None:
        # On the exit lane. The leader is a zombie now: its pid (= our group id) cannot be
        # reused yet, so killing the rest of the group is safe. Then reap.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        reaper().untrack(self.pid)  # before the wait: the group id is still ours
        with self._exit_lock:
            self.exit_code = self.popen.wait()
            self.exited_at = time.monotonic()
            self._exited.set()
            callbacks = list(self._exit_callbacks)
        # What the plugin wrote before it died is handled before the callbacks (a
        # handshake line printed just before exiting is still its handshake; its last
        # stderr lines are logged before a crash is reported), unless a slow consumer
        # holds that output up: then the exit goes first.
        self._output_lane.drain(OUTPUT_DRAIN)
        self._fail_handshake(PluginExitedError("plugin exited before its handshake"))
        for cb in callbacks:
            try:
                cb(self)
            except Exception:
                _log.exception("exit callback failed")

    def add_exit_callback(self, callback: Callable[[PluginProcess], None]) -> None:
        """Call ``callback(self)`` on exit (at once if it already exited)."""
        with self._exit_lock:
            if not self._exited.is_set():
                self._exit_callbacks.append(callback)
                return
        callback(self)

    @property
    def exited(self) -> bool:
        """True once the process has exited and been reaped."""
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for exit; True if it exited."""
        return self._exited.wait(timeout)

    def stderr_tail(self, drain: float = 0.3) -> str:
        """The last stderr lines; after exit, waits ``drain`` s for the pipe to finish."""
        if self.exited:
            self._stderr_eof.wait(drain)
        return self.stderr.tail()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the plugin's process group, unless it already exited."""
        with self._exit_lock:
            if self._exited.is_set():
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def start_error(self, error: PluginStartError, *, died_on_its_own: bool) -> PluginStartError:
        """Attach exit code, stderr tail and a diagnosis to ``error``.

        ``died_on_its_own`` is whether the plugin had exited before we killed it: only
        then is its exit status (and a diagnosis made from it) about the plugin. When we
        killed it (timeout, bad handshake) ``exit_code`` stays None and the error's own
        diagnosis stands, not "killed by signal 9".
        """
        tail = self.stderr_tail()
        if died_on_its_own:
            error.add_context(
                exit_code=self.exit_code,
                stderr_tail=tail,
                command=self.command,
                diagnosis=diagnose_exit(self.exit_code, tail),
            )
        else:
            error.add_context(exit_code=None, stderr_tail=tail, command=self.command)
        return error


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def diagnose_exit(exit_code: int | None, stderr_tail: str) -> str:
    """A one-line guess at why a plugin exited on its own before its handshake."""
    if COOKIE_REJECTED_MARKER in stderr_tail:
        return (
            "the plugin refused to run because the magic cookie did not match: "
            "check the HandshakeConfig's cookie key and value against the plugin's"
        )
    if "error while loading shared libraries" in stderr_tail or exit_code == 127:
        return "a shared library or the interpreter the plugin needs is missing"
    how = describe_exit(exit_code)
    if exit_code is not None and exit_code < 0:
        how = f"was killed by signal {-exit_code} ({_signal_name(-exit_code)}), not by this host"
    else:
        how = f"exited ({how})"
    if not stderr_tail.strip():
        return (
            f"the plugin {how} before printing its handshake line and wrote nothing on "
            "stderr: run the command by hand with the same environment to see why"
        )
    return f"the plugin {how} before printing its handshake line: its stderr is shown below"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "unknown"


def describe_exit(code: int | None) -> str:
    """``exit code 3`` / ``killed by SIGKILL`` / ``it exited``."""
    if code is None:
        return "it exited"
    if code < 0:
        name = _signal_name(-code)
        return f"killed by signal {-code}" if name == "unknown" else f"killed by {name}"
    return f"exit code {code}"


def spawn(
    command: Sequence[str],
    env: Mapping[str, str],
    logger: logging.Logger,
    *,
    on_stdout: Callable[[bytes], None] | None = None,
    cwd: str | None = None,
) -> PluginProcess:
    """Start ``command`` with exactly ``env``; raise a typed start error if it cannot run."""
    argv = tuple(command)
    socket_dir = env.get("PLUGIN_UNIX_SOCKET_DIR")
    # Should this host die between the fork and the track() below, the reaper finds the
    # plugin by its socket dir, which only this plugin has in its environment (announced
    # here unless make_socket_dir already did; only what is announced here is withdrawn).
    announced = bool(socket_dir) and reaper().spawning(socket_dir or "")
    try:
        # A child inherits this thread's mask, and ours block signals (see transport):
        # the plugin starts with SIGTERM and SIGINT deliverable, whoever starts it.
        with signals_unblocked():
            popen = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        if announced and socket_dir:
            reaper().spawn_failed(socket_dir)
        raise diagnose_exec_failure(argv[0], exc, argv, env, cwd) from exc
    except (ValueError, TypeError) as exc:  # a NUL byte or a non-string in argv/env/cwd
        if announced and socket_dir:
            reaper().spawn_failed(socket_dir)
        raise ConfigurationError(
            f"cannot start {argv[0]!r}: {exc}; the command, its environment and cwd must "
            "be strings without NUL bytes",
        ) from exc
    try:
        # Kill-on-exit that holds even if this host is SIGKILLed (see _reaper).
        create_time = _create_time(popen.pid)
        reaper().track(popen.pid, create_time, socket_dir)
        return PluginProcess(popen, argv, logger, on_stdout=on_stdout, create_time=create_time)
    except BaseException:
        # E.g. EMFILE while setting up the pipes' readers: the plugin runs, nobody watches it.
        with contextlib.suppress(OSError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            reaper().untrack(popen.pid)
        popen.wait()
        if announced and socket_dir:
            reaper().spawn_failed(socket_dir)
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        raise
