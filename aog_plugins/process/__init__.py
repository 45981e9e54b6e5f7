"""Process layer: spawn plugins, read their handshake and logs, connect, and kill them.

This layer owns every OS resource (processes, pipes, socket dirs, channels) and releases
them deterministically; see :func:`launch` and :class:`Plugin`.
"""

from aog_plugins.process._attach import attach
from aog_plugins.process._broker import Broker
from aog_plugins.process._events import wait_event
from aog_plugins.process._guard import StartCancelled
from aog_plugins.process._launch import cancellable_start, launch
from aog_plugins.process._logs import TRACE, parse_line, printable
from aog_plugins.process._plugin import Plugin, PluginEvent, PluginState
from aog_plugins.process._policy import RestartPolicy
from aog_plugins.process._reattach import ReattachConfig
from aog_plugins.process._registry import install_signal_handlers, kill_all
from aog_plugins.process._start import verify_checksum

__all__ = [
    "TRACE",
    "Broker",
    "Plugin",
    "PluginEvent",
    "PluginState",
    "ReattachConfig",
    "RestartPolicy",
    "StartCancelled",
    "attach",
    "cancellable_start",
    "install_signal_handlers",
    "kill_all",
    "launch",
    "parse_line",
    "printable",
    "verify_checksum",
    "wait_event",
]
