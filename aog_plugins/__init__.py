"""aog-plugins: host plugins that speak HashiCorp's go-plugin protocol, AOG providers first.

The public namespace is curated here; submodules starting with ``_`` are private.
Errors live in :mod:`aog_plugins.errors` (one tree under :class:`AogPluginsError`).
"""

from aog_plugins.client import GRPCProviderClient
from aog_plugins.errors import AogPluginsError, PluginError
from aog_plugins.handshake import AOG_HANDSHAKE, HandshakeConfig
from aog_plugins.manager import PluginEntry, PluginManager
from aog_plugins.process import (
    Plugin,
    PluginEvent,
    PluginState,
    ReattachConfig,
    RestartPolicy,
    attach,
    launch,
)

__all__ = [
    "AOG_HANDSHAKE",
    "AogPluginsError",
    "GRPCProviderClient",
    "HandshakeConfig",
    "Plugin",
    "PluginEntry",
    "PluginError",
    "PluginEvent",
    "PluginManager",
    "PluginState",
    "ReattachConfig",
    "RestartPolicy",
    "attach",
    "launch",
]

__version__ = "0.1.0"
