"""The plugin's GRPCBroker: extra connections to and from the host, by id.

The host opens ``plugin.GRPCBroker/StartStream``; each open stream gets its own
bookkeeping (a host that attaches later opens its own stream and numbers its ids from 1
again). :class:`Broker` works on the newest open stream.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from aog_plugins._proto import grpc_broker_pb2, grpc_broker_pb2_grpc
from aog_plugins.errors import BrokerError
from aog_plugins.transport import (
    DIAL_TIMEOUT,
    BrokerCore,
    BrokerServer,
    BrokerTLS,
    ConnInfo,
    Mux,
    conninfo_from_pb,
    conninfo_to_pb,
    dial_timeout,
    start_thread,
)

__all__ = ["Broker", "BrokerServicer", "current_broker"]

_log = logging.getLogger("aog_plugins.server")
_current: Broker | None = None


def current_broker() -> Broker:
    """The broker of the plugin server running in this process (started by ``serve()``
    or :meth:`PluginServer.start`); for servicers that need it during a call."""
    if _current is None:
        raise BrokerError("no plugin server is running in this process: call serve() first")
    return _current


class Broker:
    """Sub-connections between this plugin and its host, by numeric id.

    :meth:`next_id` reserves an id; :meth:`accept_and_serve` serves a gRPC server under
    it and tells the host where; :meth:`dial` connects to what the host serves under an
    id. Sub-connections use the main connection's network and AutoMTLS certificates and
    end when the host's broker stream ends or the plugin stops.
    """

    def __init__(
        self,
        *,
        network: str,
        socket_dir: str | None,
        tls: BrokerTLS | None,
        socket_group: str | None = None,
        port_range: tuple[int, int] = (10000, 25000),
    ) -> None:
        self._network = network
        self._socket_dir = socket_dir
        self._tls = tls
        self._group = socket_group
        self._ports = port_range
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._streams: list[BrokerCore] = []
        self._closed = False
        self._mux: Callable[[], Mux | None] | None = None
        self._on_close: dict[BrokerCore, Callable[[], None]] = {}

    def set_mux(self, source: Callable[[], Mux | None]) -> None:
        """Multiplexed connection: sub-connections are streams of this session."""
        self._mux = source

    def _open_stream(
        self, send: Callable[[ConnInfo], None], on_close: Callable[[], None]
    ) -> BrokerCore:
        core = BrokerCore(
            send,
            network=self._network,
            socket_dir=self._socket_dir,
            tls=self._tls,
            socket_group=self._group,
            port_range=self._ports,
            mux=self._mux,
        )
        core.on_info = self._wake
        with self._cond:
            if self._closed:
                core.close()
            else:
                self._streams.append(core)
                self._on_close[core] = on_close
                self._cond.notify_all()
        return core

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _end_stream(self, core: BrokerCore) -> None:
        with self._cond:
            if core in self._streams:
                self._streams.remove(core)
            self._on_close.pop(core, None)
        core.close()

    def _stream(self, timeout: float) -> BrokerCore:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise BrokerError("the broker is closed: the plugin is stopping")
                if self._streams:
                    return self._streams[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerError(
                        "the host has no broker stream open (go-plugin hosts open one right "
                        "after connecting)"
                    )
                self._cond.wait(left)

    def next_id(self) -> int:
        """A fresh broker id for :meth:`accept_and_serve`."""
        with self._cond:
            return next(self._ids) & 0xFFFFFFFF

    def accept_and_serve(
        self, service_id: int, register_servicers: Callable[[grpc.Server], None]
    ) -> BrokerServer:
        """Serve the servicers ``register_servicers(server)`` adds under ``service_id``
        and tell the host where. Returns at once; the server runs until ``.stop()``, the
        host's broker stream ends or the plugin stops."""
        return self._stream(DIAL_TIMEOUT).accept_and_serve(service_id, register_servicers)

    def dial(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> grpc.Channel:
        """A channel to what the host serves under ``service_id``; waits up to ``timeout``
        s for the host's connection info (:class:`BrokerError` after; multiplexed, for the
        host's answer to the knock for the id, and a refusal raises at once). With several
        hosts' streams open, the newest one that sent info for that id is used."""
        deadline = time.monotonic() + timeout
        core = self._stream(timeout)
        if core.multiplexed:
            return core.dial(service_id, timeout)
        with self._cond:
            while True:
                ready = [c for c in reversed(self._streams) if c.has_info(service_id)]
                left = deadline - time.monotonic()
                if ready or left <= 0 or self._closed or not self._streams:
                    break
                self._cond.wait(left)
        if ready:
            core = ready[0]
        elif self._streams:
            core = self._streams[-1]
        try:
            return core.dial(service_id, max(deadline - time.monotonic(), 0.0))
        except BrokerError as exc:
            if ready or self._closed or time.monotonic() < deadline:
                raise  # not the timeout of this dial
            # The wait above spent the time: say how long the whole dial waited.
            raise dial_timeout(service_id, timeout) from exc

    def close(self) -> None:
        """Close every stream's servers and channels (idempotent)."""
        with self._cond:
            self._closed = True
            streams, self._streams = self._streams, []
            wakers, self._on_close = list(self._on_close.values()), {}
            self._cond.notify_all()
        for core in streams:
            core.close()
        for wake in wakers:
            wake()


def set_current(broker: Broker | None) -> None:
    global _current
    _current = broker


class BrokerServicer(grpc_broker_pb2_grpc.GRPCBrokerServicer):
    """Serves the host's broker stream for :class:`Broker` until either side stops."""

    poll_interval = 0.25
    """How often the stream looks at its flags when nothing woke it (a fallback)."""

    def __init__(self, broker: Broker, stopped: threading.Event) -> None:
        self._broker = broker
        self._stopped = stopped

    def StartStream(
        self, request_iterator: Iterator[grpc_broker_pb2.ConnInfo], context: grpc.ServicerContext
    ) -> Iterator[grpc_broker_pb2.ConnInfo]:
        outbox: queue.Queue[ConnInfo | None] = queue.Queue()  # None: look at the flags
        ended = threading.Event()
        # Woken when the call ends or the broker closes, so a stop does not wait for a
        # poll: the plugin's exit joins the thread this runs on.
        context.add_callback(lambda: outbox.put(None))

        def send(info: ConnInfo) -> None:
            if ended.is_set():
                raise BrokerError("the host's broker stream has ended")
            outbox.put(info)

        core = self._broker._open_stream(send, lambda: outbox.put(None))

        def read() -> None:
            try:
                for msg in request_iterator:
                    core.received(conninfo_from_pb(msg))
            except grpc.RpcError:
                pass
            except Exception:
                _log.exception("broker stream reader failed")
            finally:
                ended.set()
                outbox.put(None)
                self._broker._end_stream(core)

        start_thread(threading.Thread(target=read, name="aog-plugin-broker", daemon=True))
        try:
            while context.is_active() and not self._stopped.is_set() and not core.closed:
                try:
                    info = outbox.get(timeout=self.poll_interval)
                except queue.Empty:
                    info = None
                if info is None:
                    if ended.is_set():
                        break
                    continue
                yield conninfo_to_pb(info)
        finally:
            ended.set()
            self._broker._end_stream(core)
