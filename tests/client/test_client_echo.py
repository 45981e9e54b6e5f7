"""GRPCProviderClient over a real plugin process: calls, streams, errors, concurrency."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aog_plugins import GRPCProviderClient, Plugin, RestartPolicy, launch
from aog_plugins.client import (
    BidirectionalPlugin,
    LocalPluginProvider,
    PluginProvider,
    RemotePluginProvider,
    StreamablePlugin,
)
from aog_plugins.errors import AogPluginsError, PluginCallError
from aog_plugins.types import PullModelRequest
from tests.process.conftest import LeakCheck, plugin_cmd
from tests.support.wait import wait_until


@pytest.fixture
def echo(leak_check: LeakCheck) -> Iterator[Plugin]:
    with launch(plugin_cmd("echo_plugin.py"), extra_env=leak_check.env) as plugin:
        yield plugin


def test_client_satisfies_every_provider_protocol(echo: Plugin) -> None:
    client = echo.client
    # Statically, mypy checks this assignment; at runtime, isinstance checks the members.
    views: tuple[
        PluginProvider,
        LocalPluginProvider,
        RemotePluginProvider,
        StreamablePlugin,
        BidirectionalPlugin,
    ] = (client, client, client, client, client)
    protocols = (
        PluginProvider,
        LocalPluginProvider,
        RemotePluginProvider,
        StreamablePlugin,
        BidirectionalPlugin,
    )
    for protocol, view in zip(protocols, views, strict=True):
        assert isinstance(view, protocol), protocol.__name__


def test_unary_and_manifest(echo: Plugin) -> None:
    client = echo.client
    assert client is echo.client  # one client per plugin
    manifest = client.get_manifest()
    assert manifest.provider.name == "echo"
    assert client.invoke_service("chat", b'{"a": 1}') == b'{"a": 1}'
    client.health_check()


def test_16_mib_response_arrives_intact(echo: Plugin) -> None:
    size = 16 * 1024 * 1024
    reply = echo.client.invoke_service("chat", json.dumps({"size": size}).encode(), timeout=60)
    assert len(reply) == size + len('{"data": ""}')
    assert json.loads(reply)["data"] == "x" * size


def test_stream_ends_after_final_chunk(echo: Plugin) -> None:
    chunks = list(echo.client.invoke_service_stream("chat", b'{"chunks": 4}'))
    assert [json.loads(c.data)["index"] for c in chunks[:-1]] == [0, 1, 2, 3]
    assert chunks[-1].is_final
    assert not any(c.is_final for c in chunks[:-1])


def test_leaving_a_stream_early_cancels_it(echo: Plugin) -> None:
    stream = echo.client.invoke_service_stream("chat", b'{"chunks": 100000}')
    for index, chunk in enumerate(stream):
        assert json.loads(chunk.data)["index"] == index
        if index == 5:
            break
    stream.close()
    assert list(stream) == []
    # The plugin is still fine.
    assert echo.client.invoke_service("chat", b"{}") == b"{}"


def test_unimplemented_rpc_is_a_typed_error(echo: Plugin) -> None:
    with pytest.raises(PluginCallError) as info:
        echo.client.get_operate_status()
    assert info.value.code == "UNIMPLEMENTED"
    assert not info.value.process_exited
    assert "does not implement" in str(info.value)


def test_dead_plugin_error_says_the_process_is_gone(leak_check: LeakCheck) -> None:
    never = RestartPolicy.never()
    with launch(plugin_cmd("echo_plugin.py"), restart=never, extra_env=leak_check.env) as plugin:
        client = plugin.client
        os.kill(plugin.pid, signal.SIGKILL)
        wait_until(lambda: plugin.exited, 5, "the SIGKILLed plugin to be seen exiting")
        with pytest.raises(PluginCallError) as info:
            client.invoke_service("chat", b"{}", timeout=5)
    assert info.value.process_exited
    assert "SIGKILL" in str(info.value)


def test_timeout_is_deadline_exceeded(echo: Plugin) -> None:
    with pytest.raises(PluginCallError) as info:
        # 64 MiB of JSON takes the Python plugin far longer than 1 ms to build.
        echo.client.invoke_service("chat", json.dumps({"size": 64 << 20}).encode(), timeout=0.001)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert "still running" in str(info.value)


def test_closed_client_refuses_calls(echo: Plugin) -> None:
    client = GRPCProviderClient(echo.channel)
    client.close()
    client.close()
    with pytest.raises(AogPluginsError, match="closed"):
        client.health_check()
    echo.client.health_check()  # closing another client left the channel alone


def test_16_threads_x_500_mixed_calls(echo: Plugin) -> None:
    client = GRPCProviderClient(echo.channel)
    before = set(threading.enumerate())
    errors: list[BaseException] = []
    counts = [0] * 16

    def worker(n: int) -> None:
        try:
            for i in range(500):
                kind = (n + i) % 5
                if kind == 0:
                    body = json.dumps({"n": n, "i": i}).encode()
                    assert client.invoke_service("chat", body) == body
                elif kind == 1:
                    assert client.get_manifest().provider.name == "echo"
                elif kind == 2:
                    client.health_check()
                elif kind == 3:
                    chunks = list(client.invoke_service_stream("chat", b'{"chunks": 2}'))
                    assert len(chunks) == 3
                else:
                    assert client.get_support_model_list() == []
                counts[n] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "deadlock: workers still running"
    assert not errors, errors[:3]
    assert counts == [500] * 16
    client.close()
    leaked = [t for t in set(threading.enumerate()) - before if t.name.startswith("aog-")]
    assert not leaked, leaked


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "5"])
def test_an_unusable_timeout_is_a_configuration_error(echo: Plugin, bad: object) -> None:
    from aog_plugins.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="timeout must be"):
        echo.client.invoke_service("chat", b"{}", timeout=bad)  # type: ignore[arg-type]


BAD_ARGUMENTS: dict[str, tuple[Callable[[Any], object], str]] = {
    # Each was a bare TypeError/ValueError/AttributeError/UnicodeEncodeError, or worse, sent:
    # bytes(5) is five zero bytes, None an empty service name.
    "int request": (lambda c: c.invoke_service("chat", 5), "request must be bytes, got int"),
    "str request": (
        lambda c: c.invoke_service_stream("chat", "{}"),
        "InvokeServiceStream: request must be bytes, got str",
    ),
    "None service": (
        lambda c: c.invoke_service(None, b"{}"),
        "InvokeService: service_name must be a str, got NoneType",
    ),
    "surrogate service": (
        lambda c: c.invoke_service("\udcff", b"{}"),
        "service_name is not UTF-8 text",
    ),
    "bytes auth_info": (lambda c: c.invoke_service("chat", b"{}", b"k"), "auth_info must be a str"),
    "bidi int service": (lambda c: c.invoke_service_bidi(5), "service_name must be a str"),
    "status out of int32": (
        lambda c: c.set_operate_status(2**40),
        "SetOperateStatus: the request cannot be sent",
    ),
    "int mode": (lambda c: c.start_engine(5), "StartEngine: mode must be a str"),
    "str cover": (lambda c: c.install_engine("yes"), "cover must be a bool"),
    "credentials not a mapping": (lambda c: c.set_auth("apikey", 5), "SetAuth: the request"),
    "dict pull": (
        lambda c: c.pull_model({"model": "m"}),
        "the request must be an aog_plugins.types.PullModelRequest, got dict",
    ),
    "str version request": (lambda c: c.get_version("1.0"), "GetVersion: the request must be"),
    "progress not callable": (
        lambda c: c.pull_model(PullModelRequest(model="m"), 5),
        "progress must be a callable",
    ),
}
"""Bad arguments to client methods, and what the ConfigurationError says (tests/aio too)."""


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_is_a_configuration_error(echo: Plugin, case: str) -> None:
    from aog_plugins.errors import ConfigurationError

    call, message = BAD_ARGUMENTS[case]
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        call(echo.client)


@pytest.mark.parametrize("none", [float("inf"), 1e12, 10**400], ids=["inf", "1e12", "10**400"])
def test_an_endless_timeout_means_no_limit(echo: Plugin, none: float) -> None:
    # 1e12 s used to expire the call at once (grpcio's deadline arithmetic overflows); an
    # int too large for a float raised a bare OverflowError.
    assert echo.client.invoke_service("chat", b'{"q": 1}', timeout=none)


def test_one_stream_read_from_two_threads(echo: Plugin) -> None:
    # grpcio fails a read made while another thread's read waits with a bare
    # "ValueError: Internal gRPC call error 8": reads now take turns, each chunk once.
    request = json.dumps({"chunks": 10, "interval": 0.05}).encode()
    stream = echo.client.invoke_service_stream("chat", request, timeout=60)
    chunks: list[bytes] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            chunks.extend(chunk.data for chunk in stream)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)
    assert not errors, errors
    chunks.sort()
    assert chunks[1:] == [json.dumps({"index": i}).encode() for i in range(10)]
    assert chunks[0] == b""  # the final chunk
