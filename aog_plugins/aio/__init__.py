"""asyncio API: the same host for async applications, over the same process core.

``plugin = await launch(cmd, ...)`` (use ``async with await launch(...) as plugin:``)
starts and supervises a plugin with :func:`aog_plugins.launch`'s machinery, on its
threads, and never blocks the event loop; ``plugin.client`` is an
:class:`AsyncGRPCProviderClient` on ``grpc.aio``. See ``docs/asyncio.md``.
"""

from aog_plugins.aio._broker import AsyncBroker
from aog_plugins.aio._client import AsyncGRPCProviderClient, AsyncProgress
from aog_plugins.aio._manager import AsyncPluginManager
from aog_plugins.aio._plugin import AsyncPlugin, launch
from aog_plugins.aio._source import AsyncConnectionSource, Link, StaticAsyncSource
from aog_plugins.aio._streams import AsyncBidiCall, AsyncResponseStream

__all__ = [
    "AsyncBidiCall",
    "AsyncBroker",
    "AsyncConnectionSource",
    "AsyncGRPCProviderClient",
    "AsyncPlugin",
    "AsyncPluginManager",
    "AsyncProgress",
    "AsyncResponseStream",
    "Link",
    "StaticAsyncSource",
    "launch",
]
