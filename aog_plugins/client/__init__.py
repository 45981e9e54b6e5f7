"""The host's typed view of an AOG provider plugin: :class:`GRPCProviderClient` and the
provider interfaces it satisfies."""

from aog_plugins.client import _methods as methods
from aog_plugins.client import _rpcs as rpcs
from aog_plugins.client._calls import limit_of
from aog_plugins.client._client import (
    DEFAULT_STREAM_TIMEOUT,
    DEFAULT_UNARY_TIMEOUT,
    GRPCProviderClient,
)
from aog_plugins.client._pull import stream_missing
from aog_plugins.client._source import (
    CLOSED_WAIT,
    ConnectionSource,
    ExitInfo,
    StaticSource,
    call_error,
    closed_error,
    exit_wait,
)
from aog_plugins.client._streams import BidiSender, ResponseStream, StreamRegistry
from aog_plugins.contract import (
    BidirectionalPlugin,
    LocalPluginProvider,
    PluginProvider,
    ProgressCallback,
    RemotePluginProvider,
    StreamablePlugin,
)

__all__ = [
    "CLOSED_WAIT",  # for the asyncio client, as the helpers below
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
    "StreamRegistry",
    "StreamablePlugin",
    # For aog_plugins.aio's client, so each RPC's semantics live in one place:
    "call_error",
    "closed_error",
    "exit_wait",
    "limit_of",
    "methods",
    "rpcs",
    "stream_missing",
]
