"""Threads for a plugin's gRPC server: go-plugin's own services never wait behind the
plugin's calls.

grpcio runs every call on a thread of a pool. With one bounded pool, long provider calls
(streams) can take every thread; health checks, ``Shutdown`` and the stdio stream then
queue behind them, and the host has to SIGKILL a plugin that never heard its Shutdown.
So go-plugin's services (health, controller, stdio, broker) get a pool of their own,
chosen per call by grpcio (a behaviour's ``experimental_thread_pool``) from a server
interceptor, which runs on grpcio's polling thread and so needs no pool thread itself.

The same interceptor guards the plugin's own handlers: grpcio answers a handler's
``Exception`` with UNKNOWN, but any other exception (``KeyboardInterrupt``, ``SystemExit``
from ``sys.exit()``, ``asyncio.CancelledError``) ends its thread's work and leaves the
host's call unanswered, silently, until its deadline; such an exception is turned into a
``RuntimeError`` naming it, which grpcio logs and answers as usual.

The plugin's own calls run on the other pool (:mod:`._executor`): ``max_workers`` threads
at most (calls beyond that wait for a free thread, grpcio's rule), or by default as many
as the calls need: quick calls share a thread or two, and a call that waits for a busy
thread gets one of its own a few milliseconds later (a Go plugin serves each call on its
own goroutine; a Python thread per quick call only adds GIL contention).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

import grpc

from aog_plugins.errors import ConfigurationError
from aog_plugins.server._executor import GrowingExecutor
from aog_plugins.transport import signals_blocked

__all__ = ["PLUMBING_SERVICES", "ServerThreads"]

PLUMBING_SERVICES = (
    "/grpc.health.v1.Health/",
    "/plugin.GRPCController/",
    "/plugin.GRPCStdio/",
    "/plugin.GRPCBroker/",
)
"""Method prefixes of the services go-plugin adds around a plugin's own."""

# ThreadPoolExecutor starts a thread only when no idle one is left, so a huge maximum
# means "as many as there are concurrent calls", never threads made up front.
_AS_NEEDED = 1 << 30
_In = TypeVar("_In")

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[object, object]
    _Handler = grpc.RpcMethodHandler[object, object]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class _OnPool(Generic[_In]):
    """A handler's behaviour that grpcio runs on ``pool`` instead of its default pool."""

    def __init__(
        self,
        behaviour: Callable[[_In, grpc.ServicerContext], object],
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        self._behaviour = behaviour
        self.experimental_thread_pool = pool

    def __call__(self, request: _In, context: grpc.ServicerContext) -> object:
        return self._behaviour(request, context)


def _on_pool(handler: _Handler, pool: concurrent.futures.ThreadPoolExecutor) -> _Handler:
    """The same handler, with its behaviour moved to ``pool``."""
    decode, encode = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _OnPool(handler.unary_unary, pool), decode, encode
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _OnPool(handler.unary_stream, pool), decode, encode
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _OnPool(handler.stream_unary, pool), decode, encode
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _OnPool(handler.stream_stream, pool), decode, encode
        )
    return handler


def _escaped(exc: BaseException) -> RuntimeError:
    try:
        text = str(exc)
    except Exception:  # a __str__ that raises
        text = ""
    name = type(exc).__name__
    return RuntimeError(
        f"the handler raised {name}: {text}" if text else f"the handler raised {name}"
    )


class _Guarded(Generic[_In]):
    """A handler's behaviour whose non-``Exception`` exceptions grpcio can answer."""

    def __init__(self, behaviour: Callable[[_In, grpc.ServicerContext], object]) -> None:
        self._behaviour = behaviour

    def __call__(self, request: _In, context: grpc.ServicerContext) -> object:
        try:
            return self._behaviour(request, context)
        except Exception:
            raise
        except BaseException as exc:
            raise _escaped(exc) from exc


def _guarded_stream(items: Iterable[object]) -> Iterator[object]:
    try:
        yield from items
    except (Exception, GeneratorExit):  # GeneratorExit: grpcio closed us, items is closed
        raise
    except BaseException as exc:
        raise _escaped(exc) from exc


class _GuardedStream(_Guarded[_In]):
    def __call__(self, request: _In, context: grpc.ServicerContext) -> object:
        items = super().__call__(request, context)
        return _guarded_stream(items) if isinstance(items, Iterable) else items


def _guard(handler: _Handler) -> _Handler:
    """The same handler, its behaviour wrapped in :class:`_Guarded`."""
    decode, encode = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_Guarded(handler.unary_unary), decode, encode)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _GuardedStream(handler.unary_stream), decode, encode
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_Guarded(handler.stream_unary), decode, encode)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _GuardedStream(handler.stream_stream), decode, encode
        )
    return handler


class _PlumbingFirst(_Interceptor):
    """Sends calls to go-plugin's services to the plumbing pool; guards the plugin's own
    handlers (see the module doc)."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self._pool = pool

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if not handler_call_details.method.startswith(PLUMBING_SERVICES):
            return _guard(handler)
        return _on_pool(handler, self._pool)


class _PlumbingPool(concurrent.futures.ThreadPoolExecutor):
    """A thread for every concurrent call, as ``ThreadPoolExecutor`` makes them, but a
    ``submit`` that never raises for want of a thread.

    grpcio calls ``submit`` on its one serving thread; a ``RuntimeError("can't start new
    thread")`` there (a thread limit, no address space for a stack) ends that thread, and
    the plugin answers nothing ever again, ``Shutdown`` included. The call is queued before
    the thread is started, so here it just waits: for a thread of the pool to finish its
    call, or for a later ``submit`` (the host's next health check), which then starts a
    thread for it as well as for its own call.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self._owed = 0  # calls queued while no thread could start (under _shutdown_lock)

    def _adjust_thread_count(self) -> None:
        # submit() calls this under its lock, once per call queued.
        self._owed += 1
        while self._owed:
            try:
                super()._adjust_thread_count()
            except RuntimeError:  # "can't start new thread": the next submit tries again
                return
            self._owed -= 1


class ServerThreads:
    """The two pools of one plugin server and the interceptor that picks between them."""

    def __init__(self, max_workers: int | None) -> None:
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise ConfigurationError(
                f"max_workers must be a positive int or None (a thread per call), "
                f"got {max_workers!r}"
            )
        self.max_workers = max_workers
        self.calls = GrowingExecutor(max_workers, thread_name_prefix="aog-plugin")
        self.plumbing = _PlumbingPool(_AS_NEEDED, thread_name_prefix="aog-plugin-plumbing")
        self.interceptor = _PlumbingFirst(self.plumbing)

    def server(self, options: list[tuple[str, object]]) -> grpc.Server:
        """A gRPC server that runs plugin calls and go-plugin's services apart."""
        with signals_blocked():  # grpcio's core threads, if this is the first server
            return grpc.server(self.calls, interceptors=[self.interceptor], options=options)
