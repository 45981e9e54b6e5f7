"""AsyncBroker: the host's GRPCBroker of one plugin process (:class:`~aog_plugins.process.
Broker`) for asyncio code. Waiting for the plugin's connection info and starting a server
run on threads; a dialled sub-connection is a ``grpc.aio`` channel on the loop, to where
the sync broker would connect (the same transport and TLS as the main connection, the
relay for P-521)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import grpc
import grpc.aio

from aog_plugins.aio._source import close_quietly
from aog_plugins.aio._threads import in_thread
from aog_plugins.errors import BrokerError
from aog_plugins.process import Broker
from aog_plugins.transport import DIAL_TIMEOUT, BrokerServer, open_aio_channel

__all__ = ["AsyncBroker"]


class AsyncBroker:
    """Sub-connections between this host and one plugin process, by numeric id, from
    asyncio: ``next_id()``, ``await accept_and_serve(id, register_servicers)`` and
    ``await dial(id)`` (a ``grpc.aio.Channel``). Closed, with every channel it dialled,
    when the process exits or the plugin is killed; a restarted plugin has a new one."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._channels: list[grpc.aio.Channel] = []
        self._closed = False

    @property
    def sync(self) -> Broker:
        """The sync :class:`~aog_plugins.process.Broker` underneath."""
        return self._broker

    @property
    def closed(self) -> bool:
        return self._closed or self._broker.closed

    def next_id(self) -> int:
        """A fresh broker id for :meth:`accept_and_serve`."""
        return self._broker.next_id()

    async def accept_and_serve(
        self, service_id: int, register_servicers: Callable[[grpc.Server], None]
    ) -> BrokerServer:
        """Serve the servicers ``register_servicers(server)`` adds (on a ``grpc.Server``:
        they run on its threads) under ``service_id`` and tell the plugin where; returns
        once it serves. It runs until ``.stop()`` or until the plugin goes away."""
        self._check_open()
        work = partial(self._broker.accept_and_serve, service_id, register_servicers)
        return await in_thread(work, name="aog-aio-broker", orphan=lambda s: s.stop(None))

    async def dial(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> grpc.aio.Channel:
        """A ``grpc.aio`` channel to what the plugin serves under ``service_id``; waits
        (on a thread) up to ``timeout`` s for the plugin's connection info (multiplexed:
        its answer to the knock for the id), then raises
        :class:`~aog_plugins.errors.BrokerError`, as it does for a refused knock. Closing
        it early is fine."""
        self._check_open()
        target = await in_thread(
            partial(self._broker.dial_target, service_id, timeout), name="aog-aio-broker"
        )
        self._check_open()
        channel = open_aio_channel(target)
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        """Close the channels this broker dialled (the sync broker closes with its
        process). Idempotent."""
        self._closed = True
        channels, self._channels = self._channels, []
        for channel in channels:
            await close_quietly(channel)

    def _check_open(self) -> None:
        if self.closed:
            raise BrokerError("the broker is closed: the plugin or this host has gone away")

    def __repr__(self) -> str:
        return f"<AsyncBroker {'closed' if self.closed else 'open'}>"
