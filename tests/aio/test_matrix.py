"""Every GRPCProviderClient method over grpc.aio, against the Go and Python fixture
providers, plaintext and AutoMTLS (the Go rows' P-521 certificates go through the relay).

Differential: the same script of calls runs through the sync client on one fresh plugin
and through AsyncGRPCProviderClient on another fresh plugin of the same row, and every
outcome (value, or error type and code) must be identical. The sync interop matrix
(tests/interop) pins what the sync answers are; this pins aio to them. A few absolute
checks keep a shared breakage from passing unnoticed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aog_plugins import GRPCProviderClient, Plugin
from aog_plugins.aio import AsyncGRPCProviderClient, AsyncPlugin, launch
from aog_plugins.errors import PluginCallError, PluginError
from aog_plugins.process import RestartPolicy
from aog_plugins.types import (
    BidiMessage,
    DeleteRequest,
    EngineVersionResponse,
    LoadRequest,
    ProgressResponse,
    PullModelRequest,
    UnloadModelRequest,
)
from tests.aio.conftest import run
from tests.interop.conftest import Target, targets
from tests.process.conftest import LeakCheck

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)?")
T = 30.0  # every call's timeout: a bound for a loaded machine, not a speed requirement


def _plain(value: object) -> object:
    """Values as plain data (dict order and timestamps do not count)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return _TIMESTAMP.sub("<t>", value)
    if isinstance(value, bytes):
        return _TIMESTAMP.sub("<t>", value.decode("latin-1"))
    return value


def _outcome(value: object) -> object:
    """A comparable form: errors by type and code, values as plain data."""
    if isinstance(value, PluginError):
        return ("PluginError", value.code, _TIMESTAMP.sub("<t>", value.message))
    if isinstance(value, PluginCallError):
        return (type(value).__name__, value.code, value.process_exited)
    if isinstance(value, BaseException):
        return ("UNEXPECTED", type(value).__name__, str(value))
    return _plain(value)


def _script(marker: str, bidi: bool) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Every method, in an order that walks the local engine and models and the remote
    auth through their states (each call fails with a typed error where it must)."""
    echo = json.dumps({"messages": [{"role": "user", "content": marker}], "q": marker}).encode()
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("get_manifest", (), {}),
        ("get_support_model_list", (), {}),
        ("health_check", (), {}),
        ("get_operate_status", (), {}),
        ("set_operate_status", (2,), {}),
        ("health_check", (), {}),
        ("set_operate_status", (1,), {}),
        ("invoke_service", ("echo", echo), {}),
        ("invoke_service", ("chat", echo), {"auth_info": "token"}),
        ("invoke_service", ("fail", b"{}"), {}),
        ("invoke_service", ("no-such-service", b"{}"), {}),
        ("invoke_service_stream", ("echo", b'{"chunks": 3}'), {}),
        ("invoke_service_stream", ("chat", echo), {}),
        ("invoke_service_stream", ("fail", b"{}"), {}),
        ("invoke_service_stream", ("fail-stream", b"{}"), {}),
        ("check_engine", (), {}),
        ("start_engine", ("daemon",), {}),
        ("install_engine", (), {}),
        ("install_engine", (), {}),
        ("install_engine", (True,), {}),
        ("check_engine", (), {}),
        ("init_env", (), {}),
        ("start_engine", ("daemon",), {}),
        ("upgrade_engine", (), {}),
        ("stop_engine", (), {}),
        ("get_config", (), {}),
        ("get_version", (), {}),
        ("get_version", (EngineVersionResponse(version="0.0.9"),), {}),
        ("pull_model", (PullModelRequest(model="fixture-small"),), {}),
        ("pull_model", (PullModelRequest(model="fixture-large"),), {"progress": True}),
        ("pull_model", (PullModelRequest(model="missing-x"),), {"progress": True}),
        ("pull_model_stream", (PullModelRequest(model="fixture-embed"),), {}),
        ("list_models", (), {}),
        ("load_model", (LoadRequest(model="fixture-small"),), {}),
        ("get_running_models", (), {}),
        ("unload_model", (UnloadModelRequest(models=["fixture-small"]),), {}),
        ("delete_model", (DeleteRequest(model="fixture-small"),), {}),
        ("list_models", (), {}),
        ("set_auth", ("apikey", {"api_key": "k"}), {}),
        ("validate_auth", (), {}),
        ("refresh_auth", (), {}),
        ("set_auth", ("apikey", {"api_key": "invalid"}), {}),
        ("validate_auth", (), {}),
        ("invoke_service_bidi", ("realtime" if bidi else "chat",), {"ws_conn_id": marker}),
        ("invoke_service_bidirectional", ("realtime" if bidi else "chat", marker, "t"), {}),
    ]
    return calls


def _bidi_inbound() -> list[BidiMessage]:
    return [
        BidiMessage(data=b"hello"),
        BidiMessage(data=b"\x00\x01", message_type=BidiMessage.BINARY),
        BidiMessage(data=b"bye", message_type=BidiMessage.CLOSE),
    ]


STREAMS = ("invoke_service_stream", "pull_model_stream")


def _sync_step(
    client: GRPCProviderClient, name: str, args: tuple[Any, ...], kw: dict[str, Any]
) -> object:
    if name in STREAMS:
        return list(getattr(client, name)(*args, timeout=T, **kw))
    if name == "pull_model" and kw:
        items: list[ProgressResponse] = []
        return client.pull_model(args[0], progress=items.append, timeout=T), items
    if name == "invoke_service_bidi":
        sender, replies = client.invoke_service_bidi(*args, timeout=T, **kw)
        for message in _bidi_inbound():
            sender.send(message)
        sender.close()
        return list(replies)
    if name == "invoke_service_bidirectional":
        service, conn, auth = args
        return list(
            client.invoke_service_bidirectional(service, conn, auth, _bidi_inbound(), timeout=T)
        )
    return getattr(client, name)(*args, timeout=T, **kw)


async def _aio_step(
    client: AsyncGRPCProviderClient, name: str, args: tuple[Any, ...], kw: dict[str, Any]
) -> object:
    if name in STREAMS:
        return [item async for item in await getattr(client, name)(*args, timeout=T, **kw)]
    if name == "pull_model" and kw:
        items: list[ProgressResponse] = []

        async def collect(item: ProgressResponse) -> None:  # an async progress callback
            await asyncio.sleep(0)
            items.append(item)

        return await client.pull_model(args[0], progress=collect, timeout=T), items
    if name == "invoke_service_bidi":
        call = await client.invoke_service_bidi(*args, timeout=T, **kw)
        for message in _bidi_inbound():
            await call.send(message)
        await call.close()
        return [message async for message in call]
    if name == "invoke_service_bidirectional":

        async def inbound() -> Any:
            for message in _bidi_inbound():
                yield message

        service, conn, auth = args
        replies = await client.invoke_service_bidirectional(
            service, conn, auth, inbound(), timeout=T
        )
        return [message async for message in replies]
    method: Callable[..., Awaitable[object]] = getattr(client, name)
    return await method(*args, timeout=T, **kw)


def _sync_outcomes(
    plugin: Plugin, script: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> list[object]:
    outcomes = []
    for name, args, kw in script:
        try:
            outcomes.append(_outcome(_sync_step(plugin.client, name, args, kw)))
        except Exception as exc:
            outcomes.append(_outcome(exc))
    return outcomes


async def _aio_outcomes(
    plugin: AsyncPlugin, script: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> list[object]:
    outcomes = []
    for name, args, kw in script:
        try:
            outcomes.append(_outcome(await _aio_step(plugin.client, name, args, kw)))
        except Exception as exc:
            outcomes.append(_outcome(exc))
    return outcomes


async def _launch(target: Target, check: LeakCheck, multiplex: bool) -> AsyncPlugin:
    env = {**target.family.plugin_env(target.network), **check.env}
    return await launch(
        target.family.argv(),
        auto_mtls=target.tls,
        extra_env=env,
        restart=RestartPolicy.never(),
        start_timeout=30.0,
        multiplex=multiplex,
    )


def _compare(target: Target, check: LeakCheck, multiplex: bool = False) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    script = _script(marker, target.family.bidi)
    with target.launch(check, multiplex=multiplex) as plugin:
        expected = _sync_outcomes(plugin, script)

    async def main() -> list[object]:
        async with await _launch(target, check, multiplex) as plugin:
            assert plugin.handshake.network == target.network
            assert (plugin.handshake.server_cert is not None) is target.tls
            assert plugin.handshake.multiplex is multiplex
            return await _aio_outcomes(plugin, script)

    got = run(main())
    for (name, _, _), want, have in zip(script, expected, got, strict=True):
        assert have == want, name
    assert not [o for o in got if isinstance(o, tuple) and o[0] == "UNEXPECTED"]
    echoed = [
        o
        for (n, a, _), o in zip(script, got, strict=True)
        if n == "invoke_service" and a[0] in ("echo", "chat")
    ]
    assert any(isinstance(o, str) and marker in o for o in echoed), echoed
    assert isinstance(got[0], dict)  # a manifest, not an error
    assert got[0]["provider"]["type"] == target.family.kind


@pytest.mark.parametrize("target", targets(lambda f: bool(f.kind)))
def test_every_method_answers_as_the_sync_client(leak_check: LeakCheck, target: Target) -> None:
    _compare(target, leak_check)


@pytest.mark.parametrize(
    "target",
    [t for t in targets(lambda f: f.id in ("go-local", "py-remote")) if "unix" in t.id],
)
def test_every_method_over_one_multiplexed_connection(
    leak_check: LeakCheck, target: Target
) -> None:
    """With PLUGIN_MULTIPLEX_GRPC the aio channel is one more yamux stream."""
    _compare(target, leak_check, multiplex=True)


def test_the_script_calls_every_method() -> None:
    public = {
        name
        for name, _ in inspect.getmembers(GRPCProviderClient, inspect.isfunction)
        if not name.startswith("_") and name != "close"
    }
    assert {name for name, _, _ in _script("m", True)} == public


def test_async_client_mirrors_every_sync_method() -> None:
    for name, sync_method in inspect.getmembers(GRPCProviderClient, inspect.isfunction):
        if name.startswith("_"):
            continue
        async_method = getattr(AsyncGRPCProviderClient, name, None)
        assert inspect.iscoroutinefunction(async_method), name
        want = list(inspect.signature(sync_method).parameters)
        assert list(inspect.signature(async_method).parameters) == want, name


def test_launch_takes_the_sync_arguments() -> None:
    from aog_plugins import launch as launch_sync

    sync = inspect.signature(launch_sync).parameters
    mine = inspect.signature(launch).parameters
    assert list(mine) == list(sync)
    assert [p.default for p in mine.values()] == [p.default for p in sync.values()]
