"""The host's typed view of an AOG provider plugin: :class:`GRPCProviderClient` and the
provider interfaces it satisfies."""

from aog_plugins.client._client import (
    DEFAULT_STREAM_TIMEOUT,
    DEFAULT_UNARY_TIMEOUT,
    GRPCProviderClient,
)
from aog_plugins.client._source import ConnectionSource, ExitInfo, StaticSource
from aog_plugins.client._streams import BidiSender, ResponseStream
from aog_plugins.contract import (
    BidirectionalPlugin,
    LocalPluginProvider,
    PluginProvider,
    ProgressCallback,
    RemotePluginProvider,
    StreamablePlugin,
)

__all__ = [
    "DEFAULT_STREAM_TIMEOUT",
    "DEFAULT_UNARY_TIMEOUT",
    "BidiSender",
    "BidirectionalPlugin",
    "ConnectionSource",
    "ExitInfo",
    "GRPCProviderClient",
    "LocalPluginProvider",
    "PluginProvider",
    "ProgressCallback",
    "RemotePluginProvider",
    "ResponseStream",
    "StaticSource",
    "StreamablePlugin",
]
