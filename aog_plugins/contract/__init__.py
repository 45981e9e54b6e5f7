"""The provider contract: the AOG provider interfaces as ``typing.Protocol``s.

Both sides build on it: :class:`aog_plugins.client.GRPCProviderClient` satisfies these
interfaces, and :func:`aog_plugins.server.serve_provider` serves any object that
implements them. ``aog_plugins.client`` re-exports the same names.
"""

from aog_plugins.contract._protocols import (
    BidirectionalPlugin,
    LocalPluginProvider,
    PluginProvider,
    ProgressCallback,
    RemotePluginProvider,
    StreamablePlugin,
)

__all__ = [
    "BidirectionalPlugin",
    "LocalPluginProvider",
    "PluginProvider",
    "ProgressCallback",
    "RemotePluginProvider",
    "StreamablePlugin",
]
