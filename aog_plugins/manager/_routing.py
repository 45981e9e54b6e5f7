"""The channel a manager's client uses: counts calls per plugin process so a replaced or
idle plugin is stopped only when its calls are done, and sends a call that arrives after
the swap to the plugin serving now.

A :class:`TrackedChannel` stands for the channel of one plugin process. The stubs built
on it create multicallables that, at call time, ask the :class:`CallRouter` which
process takes the call (counting it) and tell it when the call is over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from aog_plugins.client import ExitInfo
from aog_plugins.process import Plugin

__all__ = ["CallRouter", "ManagedSource", "TrackedChannel"]

if TYPE_CHECKING:  # generic only in the type stubs
    _UU = grpc.UnaryUnaryMultiCallable[Any, Any]
    _US = grpc.UnaryStreamMultiCallable[Any, Any]
    _SU = grpc.StreamUnaryMultiCallable[Any, Any]
    _SS = grpc.StreamStreamMultiCallable[Any, Any]
else:
    _UU = grpc.UnaryUnaryMultiCallable
    _US = grpc.UnaryStreamMultiCallable
    _SU = grpc.StreamUnaryMultiCallable
    _SS = grpc.StreamStreamMultiCallable


class CallRouter(Protocol):
    """Picks the process for a call and counts it (see :class:`~._slot.Slot`)."""

    def begin_call(self, channel: TrackedChannel) -> tuple[Plugin, grpc.Channel]: ...

    def end_call(self, plugin: Plugin) -> None: ...


class ChannelOwner(Protocol):
    """Hands out the tracked channel of a plugin's running process (a Slot)."""

    def channel(self, timeout: float | None) -> TrackedChannel: ...


class ManagedSource:
    """The ConnectionSource of ``PluginManager.client(name)``: resolves the name on every
    call, so the client follows replacements, idle stops and re-added directories."""

    def __init__(self, resolve: Callable[[str], ChannelOwner], name: str) -> None:
        self._resolve = resolve
        self._name = name

    def current_channel(self, timeout: float | None = None) -> grpc.Channel:
        return self._resolve(self._name).channel(timeout)

    def exit_info(self, channel: grpc.Channel, wait: float = 0.0) -> ExitInfo | None:
        if isinstance(channel, TrackedChannel):
            return channel.plugin.exit_info(channel.raw, wait)
        return None


class TrackedChannel(grpc.Channel):
    """A view of ``raw`` (the channel of ``plugin``'s current process) whose calls the
    router counts. Closing it does nothing: the plugin owns the real channel."""

    def __init__(self, router: CallRouter, plugin: Plugin, raw: grpc.Channel) -> None:
        self.router = router
        self.plugin = plugin
        self.raw = raw

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        self.raw.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        self.raw.unsubscribe(callback)

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UU:
        return _UnaryUnary(
            _Route(self, "unary_unary", method, request_serializer, response_deserializer)
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _US:
        return _UnaryStream(
            _Route(self, "unary_stream", method, request_serializer, response_deserializer)
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _SU:
        return _StreamUnary(
            _Route(self, "stream_unary", method, request_serializer, response_deserializer)
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _SS:
        return _StreamStream(
            _Route(self, "stream_stream", method, request_serializer, response_deserializer)
        )

    def close(self) -> None:
        return None

    def __enter__(self) -> TrackedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Route:
    """One method on a tracked channel: finds the process for each call and counts it."""

    def __init__(
        self,
        channel: TrackedChannel,
        kind: str,
        method: str,
        serializer: Callable[..., Any] | None,
        deserializer: Callable[..., Any] | None,
    ) -> None:
        self.channel = channel
        self.kind = kind
        self.method = method
        self.serializer = serializer
        self.deserializer = deserializer
        self._cached: tuple[grpc.Channel, Any] | None = None

    def _callable(self, raw: grpc.Channel) -> Any:
        cached = self._cached
        if cached is not None and cached[0] is raw:
            return cached[1]
        factory = getattr(raw, self.kind)
        made = factory(self.method, self.serializer, self.deserializer)
        if raw is self.channel.raw:
            self._cached = (raw, made)
        return made

    def blocking(
        self, attr: str | None, arg: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call that returns when it is over (``__call__``/``with_call``)."""
        router = self.channel.router
        plugin, raw = router.begin_call(self.channel)
        try:
            target = self._callable(raw)
            return (getattr(target, attr) if attr else target)(arg, *args, **kwargs)
        finally:
            router.end_call(plugin)

    def open(
        self, attr: str | None, arg: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call that goes on after we return (streams, futures): counted until done."""
        router = self.channel.router
        plugin, raw = router.begin_call(self.channel)
        try:
            target = self._callable(raw)
            call = (getattr(target, attr) if attr else target)(arg, *args, **kwargs)
        except BaseException:
            router.end_call(plugin)
            raise
        call.add_done_callback(lambda _call: router.end_call(plugin))
        return call


class _UnaryUnary(_UU):
    def __init__(self, route: _Route) -> None:
        self._route = route

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.blocking(None, request, args, kwargs)

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.blocking("with_call", request, args, kwargs)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.open("future", request, args, kwargs)


class _UnaryStream(_US):
    def __init__(self, route: _Route) -> None:
        self._route = route

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.open(None, request, args, kwargs)


class _StreamUnary(_SU):
    def __init__(self, route: _Route) -> None:
        self._route = route

    def __call__(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.blocking(None, request_iterator, args, kwargs)

    def with_call(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.blocking("with_call", request_iterator, args, kwargs)

    def future(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.open("future", request_iterator, args, kwargs)


class _StreamStream(_SS):
    def __init__(self, route: _Route) -> None:
        self._route = route

    def __call__(self, request_iterator: Any, *args: Any, **kwargs: Any) -> Any:
        return self._route.open(None, request_iterator, args, kwargs)
