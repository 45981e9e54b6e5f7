"""``attach()``: connect to a plugin another host started, from a :class:`ReattachConfig`."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

import psutil

from aog_plugins.errors import PluginConnectError, ReattachError
from aog_plugins.handshake import HandshakeLine
from aog_plugins.process import _registry
from aog_plugins.process._connect import health_check
from aog_plugins.process._ioloop import io_loop
from aog_plugins.process._plugin import Plugin
from aog_plugins.process._reattach import ReattachConfig
from aog_plugins.process._start import Incarnation
from aog_plugins.transport import open_channel, wait_ready

__all__ = ["AttachedProcess", "attach"]


class AttachedProcess:
    """A plugin process we did not start: watched by pidfd, signalled only if still the same.

    (pid, create time) identifies it, so a recycled pid is never signalled. Its exit
    code is not ours to read (it is not our child).
    """

    def __init__(self, pid: int) -> None:
        try:
            self._proc = psutil.Process(pid)
            self.create_time = self._proc.create_time()
        except psutil.Error as exc:
            raise ReattachError(f"no process {pid} is running: the plugin is gone") from exc
        self.pid = pid
        self.exit_code: int | None = None
        self._exited = threading.Event()
        self._callbacks: list[Callable[[AttachedProcess], None]] = []
        self._lock = threading.Lock()
        # Without pidfd (old kernels) exit is noticed by polling in wait().
        with contextlib.suppress(AttributeError, OSError):
            io_loop().add_exit_watch(os.pidfd_open(pid), self._on_exit)

    def _on_exit(self) -> None:
        with self._lock:
            self._exited.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(self)

    def _same_process(self) -> bool:
        try:
            return self._proc.is_running() and self._proc.create_time() == self.create_time
        except psutil.Error:
            return False

    @property
    def exited(self) -> bool:
        """True once the process is gone (or its pid now belongs to another process)."""
        if not self._exited.is_set() and not self._same_process():
            self._exited.set()
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the process to go away."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.exited:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._exited.wait(0.05 if left is None else min(left, 0.05))
        return True

    def signal_group(self, sig: int) -> None:
        """Signal the process itself (not its group: we did not make that group)."""
        if self._same_process():
            with contextlib.suppress(psutil.Error):
                self._proc.send_signal(sig)

    def add_exit_callback(self, callback: Callable[[AttachedProcess], None]) -> None:
        """Call ``callback(self)`` on exit."""
        with self._lock:
            if not self._exited.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def stderr_tail(self, drain: float = 0.0) -> str:
        """An attached plugin's stderr is not ours to read."""
        return ""


def attach(
    config: ReattachConfig,
    *,
    timeout: float = 10.0,
    kill_grace: float = 2.0,
    logger: logging.Logger | None = None,
) -> Plugin:
    """Connect to a running plugin; ``kill()`` then stops it (Shutdown, then its pid only)."""
    if config.protocol != "grpc":
        raise ReattachError(f"only grpc plugins can be reattached, got {config.protocol!r}")
    process = AttachedProcess(config.pid)
    line = HandshakeLine(
        core_version=1,
        app_version=config.protocol_version,
        network=config.network,  # type: ignore[arg-type]
        address=config.address,
        protocol="grpc",
        server_cert=None,
    )
    logger = logger or logging.getLogger(f"aog_plugins.plugin.pid{config.pid}")
    channel = open_channel(line.grpc_target)
    try:
        wait_ready(channel, line, timeout)
        health_check(channel, timeout)
    except PluginConnectError as exc:
        channel.close()
        raise ReattachError(f"cannot reattach to plugin pid {config.pid}: {exc}") from exc
    plugin = Plugin(
        Incarnation(process, line, channel, socket_dir=None),
        logger=logger,
        kill_grace=kill_grace,
    )
    _registry.register(plugin)
    return plugin
