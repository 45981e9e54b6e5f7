"""Shared helpers for the provider tests (no tests here): running the fixture providers as
real processes with their log lines collected, and stream/bidi request builders."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import grpc
import pytest

from aog_plugins import Plugin, RestartPolicy, launch
from aog_plugins._proto import provider_pb2 as pb
from aog_plugins._proto import provider_pb2_grpc
from tests.process.conftest import LeakCheck, leak_check, plugin_cmd
from tests.support.wait import wait_until

__all__ = [
    "AUTH_RPCS",
    "ENGINE_RPCS",
    "TIMEOUT",
    "Collected",
    "Running",
    "Sender",
    "StreamCall",
    "bidi_first",
    "collect",
    "leak_check",
    "local",
    "remote",
    "rpc_error",
    "run_fixture",
    "streaming",
    "text",
]

TIMEOUT = 10.0

# Every engine/model RPC (PullModelStream aside) and every auth RPC, with a request.
ENGINE_RPCS: list[tuple[str, Any]] = [
    ("StartEngine", pb.StartEngineRequest(mode="daemon")),
    ("StopEngine", pb.StopEngineRequest()),
    ("GetConfig", pb.GetConfigRequest()),
    ("CheckEngine", pb.CheckEngineRequest()),
    ("InstallEngine", pb.InstallEngineRequest(cover=True)),
    ("InitEnv", pb.InitEnvRequest()),
    ("UpgradeEngine", pb.UpgradeEngineRequest()),
    ("PullModel", pb.PullModelRequest(request_json=b'{"model":"m"}')),
    ("DeleteModel", pb.DeleteModelRequest(request_json=b'{"model":"m"}')),
    ("ListModels", pb.ListModelsRequest()),
    ("LoadModel", pb.LoadModelRequest(request_json=b'{"model":"m"}')),
    ("UnloadModel", pb.UnloadModelRequest(request_json=b'{"models":["m"]}')),
    ("GetRunningModels", pb.GetRunningModelsRequest()),
    ("GetVersion", pb.GetVersionRequest()),
]
AUTH_RPCS: list[tuple[str, Any]] = [
    ("SetAuth", pb.SetAuthRequest(auth_type="apikey", credentials={"api_key": "k"})),
    ("ValidateAuth", pb.ValidateAuthRequest()),
    ("RefreshAuth", pb.RefreshAuthRequest()),
]
_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class StreamCall(Protocol[_T_co]):
    """What a grpcio response-stream call really offers (grpc-stubs lacks ``__next__``)."""

    def __iter__(self) -> Iterator[_T_co]: ...

    def __next__(self) -> _T_co: ...

    def cancel(self) -> bool: ...

    def code(self) -> grpc.StatusCode: ...


def streaming(call: grpc.CallIterator[_T]) -> StreamCall[_T]:
    """Type a stream call as what it is at runtime."""
    return cast("StreamCall[_T]", call)


def collect(call: Iterable[_T], into: list[_T]) -> None:
    """Append every item of ``call`` to ``into`` (keeps them when the call then fails)."""
    for item in call:
        into.append(item)


class Collected(logging.Handler):
    """Keeps the messages of the plugin's stderr log lines, for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._messages: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self._messages.append(record.getMessage())

    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def count(self, text: str) -> int:
        """How many collected messages contain ``text``."""
        return sum(text in m for m in self.messages())

    def wait_for(self, text: str, timeout: float = 5.0, *, more_than: int = 0) -> None:
        """Wait until more than ``more_than`` collected messages contain ``text``."""
        wait_until(
            lambda: self.count(text) > more_than,
            timeout,
            lambda: f"more than {more_than} log lines with {text!r} in {self.messages()}",
        )


@dataclass
class Running:
    """A launched fixture provider: the plugin, a raw ProviderService stub and its logs."""

    plugin: Plugin
    stub: provider_pb2_grpc.ProviderServiceStub
    logs: Collected


@contextlib.contextmanager
def run_fixture(script: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    """Launch ``fixtures/plugins/<script>`` (never restarted) and kill it afterwards."""
    logger = logging.getLogger(f"tests.server.provider.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs = Collected()
    logger.addHandler(logs)
    try:
        with launch(
            plugin_cmd(script), extra_env=env, logger=logger, restart=RestartPolicy.never()
        ) as plugin:
            yield Running(plugin, provider_pb2_grpc.ProviderServiceStub(plugin.channel), logs)
    finally:
        logger.removeHandler(logs)


@contextlib.contextmanager
def _module_fixture(script: str) -> Iterator[Running]:
    check = LeakCheck()
    with run_fixture(script, check.env) as running:
        yield running
    check.verify(zombies=False, dirs=False)  # module scope: other tests' state differs


@pytest.fixture(scope="module")
def local() -> Iterator[Running]:
    """One local_provider.py per test module: tests must not depend on its engine state."""
    with _module_fixture("local_provider.py") as running:
        yield running


@pytest.fixture(scope="module")
def remote() -> Iterator[Running]:
    """One remote_provider.py per test module: tests must not depend on its auth state."""
    with _module_fixture("remote_provider.py") as running:
        yield running


def bidi_first(
    service: str = "realtime",
    *,
    ws_conn_id: str = "",
    auth_info: str = "",
    data: bytes = b"",
    message_type: str = "",
    is_first: bool = True,
) -> pb.InvokeServiceBidiRequest:
    """The opening bidi request as AOG's host sends it."""
    metadata = {"ws_conn_id": ws_conn_id} if ws_conn_id else {}
    return pb.InvokeServiceBidiRequest(
        service_name=service,
        is_first=is_first,
        auth_info=auth_info,
        metadata=metadata,
        data=data,
        message_type=message_type,
    )


def text(data: str | bytes, kind: str = "text") -> pb.InvokeServiceBidiRequest:
    """A later bidi request."""
    raw = data.encode() if isinstance(data, str) else data
    return pb.InvokeServiceBidiRequest(data=raw, message_type=kind)


class Sender:
    """A request iterator the test feeds one message at a time; ``close()`` half-closes."""

    _END = object()

    def __init__(self, first: Iterable[pb.InvokeServiceBidiRequest] = ()) -> None:
        self._items: list[object] = list(first)
        self._cond = threading.Condition()

    def send(self, request: pb.InvokeServiceBidiRequest) -> None:
        with self._cond:
            self._items.append(request)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._items.append(self._END)
            self._cond.notify_all()

    def __iter__(self) -> Iterator[pb.InvokeServiceBidiRequest]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._items))
                item = self._items.pop(0)
            if item is self._END:
                return
            assert isinstance(item, pb.InvokeServiceBidiRequest)
            yield item


def rpc_error(call: Iterable[object]) -> grpc.RpcError:
    """Drain ``call`` and return the RpcError that ended it (fails if it ended OK)."""
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            pass
    return info.value
