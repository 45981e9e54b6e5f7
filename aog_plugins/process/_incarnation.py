"""One incarnation of a plugin: its process and the resources that belong to it.

A supervised :class:`~aog_plugins.process.Plugin` may go through several incarnations
(restarts); each has its own process, socket dir, certificate, channel and streams.
:meth:`Incarnation.stop` runs the kill ladder on its process and
:meth:`Incarnation.release` releases the rest. Started by :mod:`._start`, or made by
:mod:`._attach` for a plugin another host launched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from aog_plugins.handshake import HandshakeLine
from aog_plugins.process._broker import Broker
from aog_plugins.process._connect import StdioPump, request_shutdown
from aog_plugins.process._tempdir import remove_socket_dir
from aog_plugins.transport import ClientTLS, DialTarget, Mux, Relay, close_channel

__all__ = ["Incarnation", "ProcessHandle"]


class ProcessHandle(Protocol):
    """What a plugin needs of its process: ours (PluginProcess) or an attached one."""

    pid: int
    exit_code: int | None

    @property
    def exited(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def signal_group(self, sig: int) -> None: ...

    def stderr_tail(self, drain: float = ...) -> str: ...

    def add_exit_callback(self, callback: Callable[[Any], None]) -> None: ...


@dataclass
class Incarnation:
    """One running process of a plugin and the resources that belong to it."""

    process: ProcessHandle
    line: HandshakeLine
    channel: grpc.Channel
    socket_dir: str | None
    relay: Relay | None = None
    stdio: StdioPump | None = None
    broker: Broker | None = None
    mux: Mux | None = None
    tls: ClientTLS | None = None
    """The host's certificate and the pinned plugin certificate (AutoMTLS), for reattach."""
    started_at: float = field(default_factory=time.monotonic)
    dial: DialTarget | None = None  # where ``channel`` goes, for a second (aio) channel
    lost: str | None = None
    """Why its multiplexed connection ended while the process ran (it was then stopped)."""
    _released: bool = False
    _release_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stop(self, grace: float, logger: logging.Logger) -> None:
        """Shutdown RPC, wait ``grace`` s, SIGTERM the group, 0.5 s, SIGKILL the group."""
        proc = self.process
        deadline = time.monotonic() + grace
        if not proc.exited:
            request_shutdown(self.channel, timeout=grace)
        if proc.wait(max(deadline - time.monotonic(), 0.0)):
            return
        logger.debug("plugin %d ignored Shutdown; sending SIGTERM", proc.pid)
        proc.signal_group(15)
        if proc.wait(0.5):
            return
        logger.warning("plugin %d ignored SIGTERM; sending SIGKILL", proc.pid)
        proc.signal_group(9)
        proc.wait(10.0)

    def release(self) -> None:
        """Close streams, channel and relay; remove the socket dir. Idempotent; a second
        caller waits until the first one is done, so "released" means released."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
            if self.stdio is not None:
                self.stdio.close()
            if self.broker is not None:
                self.broker.close()
            close_channel(self.channel)
            if self.mux is not None:
                self.mux.close()
            if self.relay is not None:
                self.relay.close()
            remove_socket_dir(self.socket_dir)
